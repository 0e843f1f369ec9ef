/**
 * Entity-level metrics of token classification (NER), computed as Python's seqeval 1.2.2 computes
 * them in its default mode (not `mode='strict'`, `suffix=False`) and Hugging Face's run_ner.py
 * reports them, so a tagger trained here can be compared with one trained there:
 *   - an entity is a (type, first word, last word) span found by seqeval's get_entities, which
 *     reads IOB1, IOB2 and IOBES tags alike and forgives ill-formed sequences (an I- after an O
 *     starts an entity); a predicted entity is right only when gold has the same type and span;
 *   - precision, recall and F1 are micro averages over every entity (seqeval's f1_score default,
 *     run_ner's overall_*), each type's as a row of classification_report; a zero denominator
 *     gives 0 (seqeval's zero_division default, which also warns);
 *   - accuracy is over words (seqeval's accuracy_score), not entities.
 * Where seqeval has no number, these give 0: accuracy of no words (seqeval raises
 * ZeroDivisionError) and macro-F1 of no entity types (seqeval's np.average of nothing is NaN).
 */
import { InputError } from '../addon/errors.js';
import { alignColumns } from './metrics.js';

/** One entity type's scores: seqeval's classification_report row. */
export interface EntityTypeMetrics {
  precision: number;
  recall: number;
  f1: number;
  /** gold entities of the type */
  support: number;
  /** predicted entities of the type */
  predicted: number;
}

export interface EntityMetrics {
  /** micro averages over every entity (seqeval's default, run_ner's overall_*) */
  precision: number;
  recall: number;
  f1: number;
  /** unweighted mean of the types' F1 (types in gold or predicted: seqeval's macro avg) */
  macroF1: number;
  /** words tagged right / words */
  accuracy: number;
  /** per entity type, types sorted by name (a numeric-looking name still comes first among an object's keys) */
  perType: Record<string, EntityTypeMetrics>;
  /** gold entities, predicted entities, words */
  entities: number;
  predictedEntities: number;
  words: number;
}

/** A tag's letter and entity type, as seqeval reads them: tag = chunk[0], type = chunk[1:].split('-', 1)[-1] or '_' ('B-PER': B, PER; 'O': O, _). */
function splitTag(chunk: string): [string, string] {
  const rest = chunk.slice(1);
  return [chunk[0]!, rest.slice(rest.indexOf('-') + 1) || '_'];
}

/** seqeval's end_of_chunk: the entity open before this word ends at the word before. */
function endsBefore(prevTag: string, tag: string, prevType: string, type: string): boolean {
  return (
    prevTag === 'E' ||
    prevTag === 'S' ||
    ((prevTag === 'B' || prevTag === 'I') && (tag === 'B' || tag === 'S' || tag === 'O')) ||
    (prevTag !== 'O' && prevTag !== '.' && prevType !== type)
  );
}

/** seqeval's start_of_chunk: an entity begins at this word. */
function startsAt(prevTag: string, tag: string, prevType: string, type: string): boolean {
  return (
    tag === 'B' ||
    tag === 'S' ||
    ((prevTag === 'E' || prevTag === 'S' || prevTag === 'O') && (tag === 'E' || tag === 'I')) ||
    (tag !== 'O' && tag !== '.' && prevType !== type)
  );
}

/** The entities of tagged sentences (seqeval's get_entities, above): [type, first word, last word] with word indices into the sentences joined one after another, each followed by one 'O'. */
export function entitySpans(sentences: readonly (readonly string[])[]): Array<[string, number, number]> {
  sentences.forEach((sentence, s) => {
    const w = sentence.findIndex((tag) => typeof tag !== 'string' || tag === '');
    // seqeval fails on these too (an IndexError reading the first letter).
    if (w >= 0) throw new InputError(`sentence ${s}, word ${w}: a tag must be a non-empty string like 'O' or 'B-PER'`);
  });
  // The 'O' after each sentence ends an entity at its last word; the one after all ends the last.
  const chunks = [...sentences.flatMap((sentence) => [...sentence, 'O']), 'O'];
  const spans: Array<[string, number, number]> = [];
  let prevTag = 'O';
  let prevType = '';
  let begin = 0;
  chunks.forEach((chunk, i) => {
    const [tag, type] = splitTag(chunk);
    if (endsBefore(prevTag, tag, prevType, type)) spans.push([prevType, begin, i - 1]);
    if (startsAt(prevTag, tag, prevType, type)) begin = i;
    prevTag = tag;
    prevType = type;
  });
  return spans;
}

/** Each predicted sentence pairs with a gold one of as many words (seqeval's check_consistent_length); else which sentence first differs. */
function checkPairing(predicted: readonly (readonly string[])[], gold: readonly (readonly string[])[]): void {
  for (let s = 0; s < Math.max(predicted.length, gold.length); s++) {
    const [p, g] = [predicted[s]?.length, gold[s]?.length];
    if (p === g) continue;
    if (p === undefined || g === undefined) {
      throw new InputError(
        `entityMetrics(): ${predicted.length} predicted sentences but ${gold.length} gold ones; sentence ${s} is only in ${p === undefined ? 'gold' : 'predicted'}`,
      );
    }
    throw new InputError(`entityMetrics(): sentence ${s} has ${p} predicted tags but ${g} gold tags; they must pair up word by word`);
  }
}

/** Precision, recall and F1 of one row of counts, as seqeval's precision_recall_fscore_support: 0 on a zero denominator, F1 from precision and recall (2pr/(p+r)). */
function scores(truePositives: number, predicted: number, support: number): Pick<EntityTypeMetrics, 'precision' | 'recall' | 'f1'> {
  const precision = predicted === 0 ? 0 : truePositives / predicted;
  const recall = support === 0 ? 0 : truePositives / support;
  const sum = precision + recall;
  return { precision, recall, f1: sum === 0 ? 0 : (2 * precision * recall) / sum };
}

/** seqeval's scores of predicted tags against gold tags (same sentences, same lengths: else an InputError naming the first sentence that differs). */
export function entityMetrics(predicted: readonly (readonly string[])[], gold: readonly (readonly string[])[]): EntityMetrics {
  checkPairing(predicted, gold);
  // seqeval's _extract_tp_actual_correct: per type, the gold spans, the predicted ones and those in both.
  const goldSpans = entitySpans(gold);
  const predictedSpans = entitySpans(predicted);
  const key = ([type, first, last]: [string, number, number]) => `${first} ${last} ${type}`;
  const inGold = new Set(goldSpans.map(key));
  const counts = new Map<string, { truePositives: number; predicted: number; support: number }>();
  const countsOf = (type: string) => counts.get(type) ?? counts.set(type, { truePositives: 0, predicted: 0, support: 0 }).get(type)!;
  for (const span of goldSpans) countsOf(span[0]).support++;
  for (const span of predictedSpans) {
    const c = countsOf(span[0]);
    c.predicted++;
    if (inGold.has(key(span))) c.truePositives++;
  }

  const types = [...counts.keys()].sort();
  const perType = Object.fromEntries(
    types.map((type) => {
      const c = counts.get(type)!;
      return [type, { ...scores(c.truePositives, c.predicted, c.support), support: c.support, predicted: c.predicted }];
    }),
  );
  // average='micro': the counts summed over types, then divided.
  const truePositives = [...counts.values()].reduce((sum, c) => sum + c.truePositives, 0);
  const micro = scores(truePositives, predictedSpans.length, goldSpans.length);
  // accuracy_score: the words of the flattened lists whose tag equals gold's.
  const words = gold.reduce((sum, sentence) => sum + sentence.length, 0);
  const correct = gold.reduce((sum, sentence, s) => sum + sentence.filter((tag, w) => tag === predicted[s]![w]).length, 0);
  return {
    ...micro,
    macroF1: types.length === 0 ? 0 : types.reduce((sum, type) => sum + perType[type]!.f1, 0) / types.length,
    accuracy: words === 0 ? 0 : correct / words,
    perType,
    entities: goldSpans.length,
    predictedEntities: predictedSpans.length,
    words,
  };
}

/** The metrics as a text table like seqeval's classification_report (a row per type, then micro avg and macro avg rows, then accuracy). */
export function formatEntityMetrics(m: EntityMetrics): string {
  const fixed = (x: number): string => x.toFixed(4);
  const types = Object.keys(m.perType).sort(); // the object's own order puts numeric-looking names first
  const macro = (key: 'precision' | 'recall') =>
    types.length === 0 ? 0 : types.reduce((sum, t) => sum + m.perType[t]![key], 0) / types.length;
  return alignColumns([
    ['type', 'precision', 'recall', 'f1', 'support'],
    ...types.map((t) => {
      const r = m.perType[t]!;
      return [t, fixed(r.precision), fixed(r.recall), fixed(r.f1), String(r.support)];
    }),
    [],
    ['micro avg', fixed(m.precision), fixed(m.recall), fixed(m.f1), String(m.entities)],
    ['macro avg', fixed(macro('precision')), fixed(macro('recall')), fixed(m.macroF1), String(m.entities)],
    ['accuracy', '', '', fixed(m.accuracy), String(m.words)],
  ]);
}
