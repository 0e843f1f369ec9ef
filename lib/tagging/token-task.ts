/**
 * Token classification as a training task: its batch (sentences, the head on their words' first
 * tokens, a tag per word: word-alignment.ts), its loss (cross-entropy over those words, computed
 * in the native step) and its validation pass (seqeval's scores, entity-metrics.ts). The loop that
 * drives it is training-loop.ts's; token-trainer.ts sets the run up, and TokenClassifier
 * evaluates with the same pass.
 */
import type { NativeBinding, NativeScriptModule, Precision } from '../addon/binding.js';
import { AbortError } from '../addon/errors.js';
import { consecutiveBatches } from '../data/batching.js';
import { type TaggedSentences, tagIds } from '../data/tagged-words.js';
import type { TextTokenizer } from '../data/tokenizer.js';
import { encodeWords, everyTokenTagged, perWord, type WordRows, wordBatch } from '../data/word-alignment.js';
import type { ValidationShard } from '../training/distributed.js';
import { type EntityMetrics, entityMetrics } from '../training/entity-metrics.js';
import type { Validation } from '../training/run-keeper.js';
import { nativeStepOptions, type StepSettings, type Task } from '../training/training-loop.js';

/** A validation pass of a token classifier: seqeval's entity scores, the word accuracy, and the loss over the words. */
export type TokenMetrics = EntityMetrics & { loss: number };

/** Tagged sentences as token rows, and the class ids of the words they label (each token, with labelAllTokens). */
export interface TaggedSet {
  tags: Int32Array[];
  rows: WordRows;
}

/**
 * Sentences as token rows and their tags' class ids, each word's tag on its first token; with
 * `labelAllTokens`, on each of its tokens (everyTokenTagged: B-X on the first, I-X on the rest).
 */
export function taggedSet(
  tokenizer: TextTokenizer,
  maxLength: number,
  sentences: TaggedSentences,
  names: readonly string[],
  labelAllTokens = false,
): TaggedSet {
  const set = { tags: tagIds(sentences, names), rows: encodeWords(tokenizer, sentences.words, maxLength) };
  return labelAllTokens ? everyTokenTagged(set.rows, set.tags, continuationTags(names)) : set;
}

/** run_ner.py's `b_to_i_label`: each tag's id on a word's later tokens, B-X's I-X where there is one, else its own. */
export function continuationTags(names: readonly string[]): Int32Array {
  return Int32Array.from(names, (name, id) => {
    const inside = name.startsWith('B-') ? names.indexOf(`I-${name.slice(2)}`) : -1;
    return inside >= 0 ? inside : id;
  });
}

/**
 * The token-classification task: a batch of sentences, the head on their words' first tokens,
 * cross-entropy averaged over those words (transformers' loss with -100 on every other token).
 */
export function tokenClassificationTask(
  binding: NativeBinding,
  model: NativeScriptModule,
  optimizer: InstanceType<NativeBinding['AdamW']>,
  train: TaggedSet,
  settings: StepSettings,
): Task<ReturnType<typeof wordBatch>> {
  return {
    batch: (rows) => wordBatch(train.rows, rows, train.tags),
    // `correct` counts words: the loop's training accuracy is the words'.
    batchLossNormaliser: (batch) => batch.positions.length,
    accuracyNormaliser: (batch) => batch.positions.length,
    step: (batch, step) => binding.trainStep(model, optimizer, batch, nativeStepOptions(settings, step)),
  };
}

/**
 * Validation: the loss over every word with a position (a token-weighted mean, as one batch of
 * them all), each word's predicted tag, and seqeval's scores of those words, as run_ner.py
 * computes them (words cut by maxLength, having no position, are left out of both). With a shard
 * (data-parallel), the rank's sentences only: each word's prediction (its tag id + 1, 0 for none)
 * and the loss sums are summed over the ranks, so every rank scores the whole set as one process.
 */
export async function validateTokenClassifier(
  binding: NativeBinding,
  model: NativeScriptModule,
  data: TaggedSet,
  names: readonly string[],
  settings: { batchSize: number; precision: Precision; signal?: AbortSignal; shard?: ValidationShard },
): Promise<Validation<TokenMetrics>> {
  const count = data.rows.encoded.count;
  const rows = settings.shard?.rows ?? Int32Array.from({ length: count }, (_, i) => i);
  // Where each sentence's words start among all words, then the loss sum and the words predicted.
  const offsets = new Int32Array(count + 1);
  data.tags.forEach((tags, i) => {
    offsets[i + 1] = offsets[i]! + tags.length;
  });
  const sums = new Float64Array(offsets[count]! + 2);
  for (const batchRows of consecutiveBatches(rows.length, settings.batchSize)) {
    if (settings.signal?.aborted) throw new AbortError('validation was aborted', { cause: settings.signal.reason });
    const sentences = Int32Array.from(batchRows, (i) => rows[i]!);
    const batch = wordBatch(data.rows, sentences, data.tags);
    if (batch.positions.length === 0) continue;
    const result = await binding.evalStep(model, batch, { precision: settings.precision });
    sums[sums.length - 2]! += result.loss! * batch.positions.length;
    sums[sums.length - 1]! += batch.positions.length;
    for (const [r, ids] of perWord(data.rows, sentences, result.predictions, -1).entries())
      sums.set(
        Array.from(ids, (c) => c + 1),
        offsets[sentences[r]!]!,
      );
  }
  const all = settings.shard ? settings.shard.sum(sums) : sums;
  const [lossSum, words] = [all[all.length - 2]!, all[all.length - 1]!];
  const predicted: string[][] = [];
  const gold: string[][] = [];
  data.tags.forEach((tags, i) => {
    const seen = [...tags.keys()].filter((w) => all[offsets[i]! + w]! > 0);
    predicted.push(seen.map((w) => names[all[offsets[i]! + w]! - 1]!));
    gold.push(seen.map((w) => names[tags[w]!]!));
  });
  const loss = words > 0 ? lossSum / words : Number.NaN;
  const metrics = { ...entityMetrics(predicted, gold), loss };
  return { loss, scores: { accuracy: metrics.accuracy, macroF1: metrics.macroF1, f1: metrics.f1 }, metrics };
}
