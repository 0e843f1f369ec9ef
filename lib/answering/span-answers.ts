/**
 * An example's answer from a question-answering model's start and end logits over its windows
 * (a long context is read in overlapping windows, each window's logits scoring its own tokens):
 * Hugging Face's examples/pytorch/question-answering/utils_qa.py, `postprocess_qa_predictions`,
 * for one example. The best spans of every window compete by start logit + end logit; with
 * `versionTwo` (SQuAD 2.0) the [CLS] position's score says "no answer" when it beats the best
 * span by more than `nullScoreDiffThreshold`.
 *
 * utils_qa.py adds numpy float32 logits, so its scores are float32 sums; the sums here are rounded
 * to float32 the same way (Math.fround of the float32 operands' sum) so that scores, and so the
 * order of the candidates and the null decision, equal the Python reference's bit for bit. The
 * probabilities are computed in float64 (utils_qa's numpy softmax runs in float32), so they may
 * differ from it in the last bits of float32.
 */

import { InputError } from '../addon/errors.js';

/**
 * One window of an example: the model's start and end logits of its positions (at least
 * `offsets.length` of each; positions past `offsets.length` are padding), and for each position
 * the context's characters of its token: [start, end) as offsets into the context string, or null
 * for every position that is not the context's (the question, special tokens).
 */
export interface WindowLogits {
  start: ArrayLike<number>;
  end: ArrayLike<number>;
  offsets: ReadonlyArray<readonly [number, number] | null>;
}

export interface SpanOptions {
  /** Candidates kept: the n best start and end positions of each window are paired, and the n best spans kept (run_qa.py's n_best_size). */
  nBest: number;
  /** Longest answer, in tokens (max_answer_length). */
  maxAnswerLength: number;
  /** Questions may have no answer (SQuAD 2.0: version_2_with_negative): "" is then an answer. */
  versionTwo: boolean;
  /** With versionTwo, "" wins when the null score beats the best span's by more than this (null_score_diff_threshold). */
  nullScoreDiffThreshold: number;
}

/** run_qa.py's defaults. */
export const SPAN_DEFAULTS: SpanOptions = { nBest: 20, maxAnswerLength: 30, versionTwo: false, nullScoreDiffThreshold: 0 };

/** A span the model scored: its text and characters [start, end) in the context, its float32 score, logits, and softmax share. */
export interface SpanCandidate {
  text: string;
  start: number;
  end: number;
  score: number;
  startLogit: number;
  endLogit: number;
  probability: number;
}

/**
 * The answer: text "" says there is none (versionTwo), at characters 0, 0; else the chosen
 * candidate's text and characters. `probability` is the chosen candidate's softmax share among
 * `candidates` (best first).
 */
export interface SpanAnswer {
  text: string;
  start: number;
  end: number;
  probability: number;
  candidates: SpanCandidate[];
}

type Scored = Omit<SpanCandidate, 'text' | 'probability'>;

/** float32 addition, as numpy adds two float32 logits. */
function add32(a: number, b: number): number {
  return Math.fround(Math.fround(a) + Math.fround(b));
}

/** One example's answer from its windows (postprocess_qa_predictions' loop body). */
export function answerSpan(context: string, windows: readonly WindowLogits[], options: SpanOptions): SpanAnswer {
  checkOptions(options);
  if (windows.length === 0) throw new Error('answerSpan: an example has at least one window');
  const { spans, minNull } = windowSpans(windows, options);
  if (options.versionTwo) spans.push(minNull);
  // Array.prototype.sort is stable, as Python's sorted(reverse=True) is: equal scores keep the windows' order.
  const best = spans.sort((a, b) => b.score - a.score).slice(0, options.nBest);
  if (options.versionTwo && !best.some((s) => s.start === 0 && s.end === 0)) best.push(minNull);
  const texts = best.map((s) => context.slice(s.start, s.end));
  // No candidate, or only the null one: utils_qa.py puts a span "empty" of score 0 first (so a v1 model always answers).
  if (best.length === 0 || (best.length === 1 && texts[0] === '')) {
    best.unshift({ start: 0, end: 0, score: 0, startLogit: 0, endLogit: 0 });
    texts.unshift('empty');
  }
  const candidates = withProbabilities(best, texts);
  if (!options.versionTwo) return answerOf(candidates[0]!, candidates);
  // utils_qa.py fails (IndexError) where every candidate's text is empty; here no span means no answer.
  const bestSpan = candidates.find((c) => c.text !== '');
  if (bestSpan !== undefined && !nullWins(minNull.score, bestSpan, options.nullScoreDiffThreshold)) return answerOf(bestSpan, candidates);
  // The null candidate is among the candidates unless a span of characters (0, 0) stood in for it (utils_qa's any(offsets == (0, 0))).
  const nullCandidate = candidates[best.indexOf(minNull)] ?? candidates.find((c) => c.text === '');
  return { text: '', start: 0, end: 0, probability: nullCandidate?.probability ?? 0, candidates };
}

/** utils_qa.py's score_diff, null_score - start_logit - end_logit subtracted in float32 as numpy does, above the threshold. */
function nullWins(nullScore: number, span: SpanCandidate, threshold: number): boolean {
  return Math.fround(Math.fround(nullScore - span.startLogit) - span.endLogit) > threshold;
}

function answerOf(chosen: SpanCandidate, candidates: SpanCandidate[]): SpanAnswer {
  return { text: chosen.text, start: chosen.start, end: chosen.end, probability: chosen.probability, candidates };
}

/**
 * Every window's spans of its nBest start and nBest end positions that are the context's tokens,
 * in order and at most maxAnswerLength tokens long; and the lowest null score ([CLS]'s start +
 * end) of the windows, the first window's where they tie.
 */
function windowSpans(windows: readonly WindowLogits[], options: SpanOptions): { spans: Scored[]; minNull: Scored } {
  const spans: Scored[] = [];
  let minNull: Scored | undefined;
  for (const [w, { start, end, offsets }] of windows.entries()) {
    if (start.length < offsets.length || end.length < offsets.length) {
      throw new Error(`answerSpan: window ${w} has ${start.length} start and ${end.length} end logits for ${offsets.length} positions`);
    }
    const nullScore = add32(start[0]!, end[0]!);
    if (minNull === undefined || minNull.score > nullScore) {
      minNull = { start: 0, end: 0, score: nullScore, startLogit: Math.fround(start[0]!), endLogit: Math.fround(end[0]!) };
    }
    const ends = topIndexes(end, options.nBest);
    for (const s of topIndexes(start, options.nBest)) {
      for (const e of ends) {
        const first = offsets[s];
        const last = offsets[e];
        if (first == null || last == null || e < s || e - s + 1 > options.maxAnswerLength) continue;
        const startLogit = Math.fround(start[s]!);
        const endLogit = Math.fround(end[e]!);
        spans.push({ start: first[0], end: last[1], score: add32(startLogit, endLogit), startLogit, endLogit });
      }
    }
  }
  return { spans, minNull: minNull! };
}

/**
 * The positions of the n largest logits, largest first: np.argsort(logits)[-1:-n-1:-1]. numpy's
 * default argsort leaves the order of equal logits to its sort; here the later position comes
 * first, as with np.argsort(logits, kind='stable') (and numpy's default on short arrays). NaN
 * counts as the largest, as numpy sorts it last. Positions past `offsets` (padding) are kept, as
 * utils_qa.py keeps them: they take a place among the n and are skipped as spans.
 */
function topIndexes(logits: ArrayLike<number>, n: number): number[] {
  const order = Array.from({ length: logits.length }, (_, i) => i);
  return order.sort((a, b) => numpyDescending(logits[a]!, logits[b]!) || b - a).slice(0, n);
}

/** Larger first, NaN above everything (numpy's sort order, reversed); 0 where equal. */
function numpyDescending(x: number, y: number): number {
  if (Number.isNaN(x) || Number.isNaN(y)) return Number(Number.isNaN(y)) - Number(Number.isNaN(x));
  return x === y ? 0 : x > y ? -1 : 1;
}

/** The candidates with their texts and softmax probabilities (exp(score - max) / sum). */
function withProbabilities(scored: Scored[], texts: string[]): SpanCandidate[] {
  const max = Math.max(...scored.map((s) => s.score));
  const exps = scored.map((s) => Math.exp(s.score - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return scored.map((s, i) => ({ text: texts[i]!, ...s, probability: exps[i]! / sum }));
}

function checkOptions(options: SpanOptions): void {
  for (const name of ['nBest', 'maxAnswerLength'] as const) {
    const value = options[name];
    if (!Number.isInteger(value) || value < 1) throw new InputError(`${name} is ${value}; it is a whole number of at least 1`);
  }
  if (typeof options.versionTwo !== 'boolean') throw new InputError(`versionTwo is ${options.versionTwo}; it is true or false`);
  if (!Number.isFinite(options.nullScoreDiffThreshold)) {
    throw new InputError(`nullScoreDiffThreshold is ${options.nullScoreDiffThreshold}; it is a finite number`);
  }
}
