/**
 * SQuAD's official metrics: exact match and token F1 of predicted answers against the gold ones,
 * as evaluate-v2.0.py computes them (the squad_v2 metric of Hugging Face's evaluate,
 * metrics/squad_v2/compute_score.py), which on questions with answers gives evaluate-v1.1.py's
 * numbers (metrics/squad/compute_score.py) too. The official scripts report percentages (×100);
 * these are fractions in [0, 1].
 */

import { InputError } from '../addon/errors.js';
import type { QuestionExample } from './squad-data.js';

/** Python's string.punctuation: ASCII only, so a curly quote or a dash outside ASCII stays. */
const PUNCTUATION = new Set('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~');

/**
 * Python's `re.sub(r'\b(a|an|the)\b', ' ', s)` on a str: Python's \w is Unicode (letters, digits,
 * numbers, _) where JavaScript's \b is ASCII only, so the boundaries are written out: "thé" keeps
 * its "th", as in Python.
 */
const ARTICLES = /(?<![\p{L}\p{N}_])(a|an|the)(?![\p{L}\p{N}_])/gu;

/** Python's str.split() with no argument: the characters str.isspace() is true of (JavaScript's \s differs: \x1c-\x1f, \x85, \ufeff). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: Python's isspace() is true of the separators \x1c-\x1f.
const WHITESPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;

/** SQuAD's normalize_answer: lower case, no punctuation, no articles, whitespace collapsed to single spaces. */
export function normalizeAnswer(text: string): string {
  const lower = text.toLowerCase();
  const unpunctuated = [...lower].filter((c) => !PUNCTUATION.has(c)).join('');
  return tokens(unpunctuated.replace(ARTICLES, ' ')).join(' ');
}

/** Python's str.split(): no empty tokens at either end. */
function tokens(text: string): string[] {
  return text.split(WHITESPACE).filter((t) => t !== '');
}

export interface SquadScores {
  /** Mean over the examples of exact match: 1 where the normalized prediction equals a normalized gold answer. */
  exactMatch: number;
  /** Mean over the examples of the best token F1 against any gold answer. */
  f1: number;
  /** Examples scored. */
  total: number;
}

/** The scores of all examples, and (evaluate-v2.0's HasAns_ / NoAns_) of those with answers and those without, where there are any. */
export interface SquadMetrics extends SquadScores {
  hasAnswer?: SquadScores;
  noAnswer?: SquadScores;
}

/**
 * Score `predictions` (answer text by example id; "" says there is none) against the examples'
 * gold answers. Every example needs a prediction: a missing one is a bug upstream, not a zero.
 * Predictions of other ids are ignored, as evaluate-v2.0.py does.
 */
export function squadMetrics(predictions: ReadonlyMap<string, string>, examples: readonly QuestionExample[]): SquadMetrics {
  if (examples.length === 0) throw new InputError('no examples to score: SQuAD metrics need at least one question');
  const scored = examples.map((example) => {
    const predicted = predictions.get(example.id);
    if (predicted === undefined) throw new Error(`no prediction for question '${example.id}': every example needs an answer ("" for none)`);
    return { hasAnswer: example.answers.text.length > 0, ...exampleScores(predicted, example.answers.text) };
  });
  const withAnswer = scored.filter((s) => s.hasAnswer);
  const withoutAnswer = scored.filter((s) => !s.hasAnswer);
  return {
    ...mean(scored),
    ...(withAnswer.length > 0 ? { hasAnswer: mean(withAnswer) } : {}),
    ...(withoutAnswer.length > 0 ? { noAnswer: mean(withoutAnswer) } : {}),
  };
}

/**
 * get_raw_scores of one example: the best over its gold answers. Gold answers that normalize to
 * nothing are dropped, and an example left without any has the one gold answer "" (so only an
 * empty prediction scores on a question without answers).
 */
function exampleScores(predicted: string, answers: readonly string[]): { exact: number; f1: number } {
  const kept = answers.filter((a) => normalizeAnswer(a) !== '');
  const gold = kept.length > 0 ? kept : [''];
  const normalized = normalizeAnswer(predicted);
  return {
    exact: Math.max(...gold.map((g) => (normalizeAnswer(g) === normalized ? 1 : 0))),
    f1: Math.max(...gold.map((g) => tokenF1(g, predicted))),
  };
}

/** compute_f1: the harmonic mean of token precision and recall, the overlap counted as Counter's & does (each token its lesser count). */
function tokenF1(gold: string, predicted: string): number {
  const goldTokens = tokens(normalizeAnswer(gold));
  const predictedTokens = tokens(normalizeAnswer(predicted));
  // Without tokens on a side, only the other also empty agrees (compute_f1's int(gold_toks == pred_toks)).
  if (goldTokens.length === 0 || predictedTokens.length === 0) return goldTokens.length === predictedTokens.length ? 1 : 0;
  const goldCounts = new Map<string, number>();
  for (const t of goldTokens) goldCounts.set(t, (goldCounts.get(t) ?? 0) + 1);
  let same = 0;
  for (const t of predictedTokens) {
    const left = goldCounts.get(t) ?? 0;
    if (left > 0) {
      same += 1;
      goldCounts.set(t, left - 1);
    }
  }
  if (same === 0) return 0;
  const precision = same / predictedTokens.length;
  const recall = same / goldTokens.length;
  return (2 * precision * recall) / (precision + recall);
}

function mean(scores: ReadonlyArray<{ exact: number; f1: number }>): SquadScores {
  const total = scores.length;
  return {
    exactMatch: scores.reduce((sum, s) => sum + s.exact, 0) / total,
    f1: scores.reduce((sum, s) => sum + s.f1, 0) / total,
    total,
  };
}
