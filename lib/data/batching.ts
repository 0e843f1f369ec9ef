/**
 * Batches: which rows go into which training batch, epoch by epoch, and the learning-rate
 * schedule over the optimizer steps (pure functions of (seed, epoch, sizes), so a resumed run
 * replays exactly the batches an uninterrupted run would have seen); how an inference pass cuts
 * its rows; gathering a batch's rows; and the one loop of inference passes (evaluation,
 * validation, the frozen encoding): batch → native call → results scattered back by row.
 */
import type { EvalStepResult, StepBatch } from '../addon/binding.js';
import type { EncodedTexts } from './tokenizer.js';

/**
 * Cut an epoch's permutation into batches. With `lengths` (length-grouped batching), the
 * permutation is split into mega-batches of 50 batches whose rows are sorted by length, so
 * each batch holds texts of similar length and dynamic padding wastes little — the batches
 * stay random in their membership and order across mega-batches, like Hugging Face's
 * LengthGroupedSampler.
 */
export function epochBatches(permutation: Int32Array, batchSize: number, lengths?: Int32Array): Int32Array[] {
  let order = permutation;
  if (lengths) {
    const megaBatch = batchSize * 50;
    order = new Int32Array(permutation.length);
    for (let start = 0; start < permutation.length; start += megaBatch) {
      const chunk = Array.from(permutation.subarray(start, start + megaBatch));
      // Stable sort, longest first, so ties keep the random order.
      chunk.sort((a, b) => lengths[b]! - lengths[a]!);
      order.set(chunk, start);
    }
  }
  const batches: Int32Array[] = [];
  for (let start = 0; start < order.length; start += batchSize) batches.push(order.subarray(start, start + batchSize));
  return batches;
}

/**
 * Tokens per forward batch (rows × the batch's longest row) of the inference passes: the frozen
 * encoding and evaluation. Chosen by measurement (bench/probe-forward.mjs; figures in the
 * README's Performance section): per-text time is lowest at 1-2k tokens per batch, and peak
 * memory grows with the batch.
 */
export const TOKENS_PER_FORWARD = 2048;

/**
 * Batches for an inference pass over texts of `lengths`: all rows, longest first (each batch is
 * padded only to lengths close to its own), each batch as many rows as fit `tokensPerBatch`
 * (at least 1, at most `maxRows`). `width` fixes every row's padded width (padding to the max
 * length) instead of the batch's longest. Returns the order and the batches (views of it).
 */
export function longestFirstBatches(
  lengths: Int32Array,
  options: { tokensPerBatch: number; maxRows?: number; width?: number },
): { order: Int32Array; batches: Int32Array[] } {
  const order = Int32Array.from(lengths.keys()).sort((a, b) => lengths[b]! - lengths[a]! || a - b);
  const batches: Int32Array[] = [];
  for (let start = 0; start < order.length; ) {
    // Longest first: this batch's first row sets its width.
    const width = options.width ?? Math.max(1, lengths[order[start]!]!);
    const rows = Math.min(options.maxRows ?? Infinity, Math.max(1, Math.floor(options.tokensPerBatch / width)));
    batches.push(order.subarray(start, start + rows));
    start += rows;
  }
  return { order, batches };
}

/** The learning-rate schedules: Hugging Face's `lr_scheduler_type`s of the same names. */
export const SCHEDULES = ['constant', 'linear', 'cosine'] as const;
export type Schedule = (typeof SCHEDULES)[number];

/**
 * The learning-rate multiplier for optimizer step `step` (0-based) of `totalSteps`, as Hugging
 * Face's get_constant_schedule_with_warmup / get_linear_schedule_with_warmup /
 * get_cosine_schedule_with_warmup (half a cosine wave, its default) compute it: linear warmup
 * from 0 over `warmupSteps`, then constant, a linear decay to 0 at the end, or a cosine one.
 */
export function learningRateFactor(schedule: Schedule, step: number, totalSteps: number, warmupSteps: number): number {
  if (step < warmupSteps) return step / Math.max(1, warmupSteps);
  if (schedule === 'constant') return 1;
  const remaining = Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmupSteps));
  if (schedule === 'linear') return remaining;
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * (1 - remaining))));
}

/**
 * Gather rows `indices` of encoded texts into one contiguous batch, padded to `seqLen`
 * (default: the longest row among them — dynamic padding; the attention mask keeps padding
 * out of the result, so only the cost changes).
 */
export function gatherRows(encoded: EncodedTexts, indices: ArrayLike<number>, seqLen?: number): EncodedTexts {
  let width = seqLen ?? 0;
  if (seqLen === undefined) for (let r = 0; r < indices.length; r++) width = Math.max(width, encoded.lengths[indices[r]!]!);
  width = Math.max(1, Math.min(width, encoded.seqLen));
  const inputIds = new Int32Array(indices.length * width);
  const attentionMask = new Int32Array(indices.length * width);
  const tokenTypeIds = encoded.tokenTypeIds && new Int32Array(indices.length * width);
  const lengths = new Int32Array(indices.length);
  for (let r = 0; r < indices.length; r++) {
    const from = indices[r]! * encoded.seqLen;
    inputIds.set(encoded.inputIds.subarray(from, from + width), r * width);
    attentionMask.set(encoded.attentionMask.subarray(from, from + width), r * width);
    tokenTypeIds?.set(encoded.tokenTypeIds!.subarray(from, from + width), r * width);
    lengths[r] = encoded.lengths[indices[r]!]!;
  }
  return { inputIds, attentionMask, ...(tokenTypeIds ? { tokenTypeIds } : {}), count: indices.length, seqLen: width, lengths };
}

/** Gathered rows as the native steps take a batch (with the rows' class ids, when given). */
export function stepBatch(rows: EncodedTexts, labels?: Int32Array | Float32Array): StepBatch {
  return {
    inputIds: rows.inputIds,
    attentionMask: rows.attentionMask,
    ...(rows.tokenTypeIds ? { tokenTypeIds: rows.tokenTypeIds } : {}),
    batchSize: rows.count,
    seqLen: rows.seqLen,
    ...(labels ? { labels } : {}),
  };
}

/**
 * The loop of every inference pass: for each batch of rows, in order, `run` makes the native
 * call (given the rows and the batch's index) and `scatter` puts its result back where those
 * rows belong. An abort stops it before the next batch (a native call in flight finishes).
 */
export async function runBatches<T>(
  batches: readonly Int32Array[],
  run: (rows: Int32Array, batch: number) => Promise<T>,
  scatter: (result: T, rows: Int32Array) => void,
  signal?: AbortSignal,
): Promise<void> {
  for (const [batch, rows] of batches.entries()) {
    signal?.throwIfAborted();
    scatter(await run(rows, batch), rows);
  }
}

/**
 * Texts an inference pass over many texts (predict(), evaluate()) tokenizes at a time: the rows
 * of consecutive batches, at least this many (the last chunk may have fewer). One chunk's rows
 * are held at a time, not every text's: 4,096 rows of max length 512 are 16 MB of ids and masks.
 * An object so that a test can set a small one and cross chunk boundaries with few texts; not an
 * option.
 */
export const INFERENCE_CHUNK = { rows: 4096 };

/**
 * A batch's rows (dynamically padded, as `gatherRows` pads them) for `runBatches`' `run`, from
 * texts tokenized a chunk of consecutive batches at a time (`INFERENCE_CHUNK`): `tokenize` gets
 * a chunk's rows in batch order and gives them encoded in that order, when its first batch is
 * asked for. Batches must be asked for in order. Tokenizing the next chunk while the current
 * one's batches ran was slower on 2 cores (200,000 short texts: 31.7 s against 25.3 s; the main
 * thread's tokenizing took CPU from libtorch's threads), so it is not done.
 */
export function rowsByChunk(
  batches: readonly Int32Array[],
  rowsPerChunk: number,
  tokenize: (rows: Int32Array) => Promise<EncodedTexts>,
): (batch: number) => Promise<EncodedTexts> {
  const { chunks, chunkOf, offsetOf } = cutIntoChunks(batches, rowsPerChunk);
  let current: { chunk: number; encoded: EncodedTexts } | undefined;
  return async (batch) => {
    const chunk = chunkOf[batch]!;
    if (current?.chunk !== chunk) {
      // The previous chunk's rows go before the next chunk's are made.
      current = undefined;
      current = { chunk, encoded: await tokenize(chunks[chunk]!) };
    }
    const { encoded } = current;
    const first = offsetOf[batch]!;
    return gatherRows(
      encoded,
      Int32Array.from(batches[batch]!, (_, r) => first + r),
    );
  };
}

/** Consecutive batches grouped into chunks of at least `rowsPerChunk` rows: each chunk's rows, each batch's chunk and its first row's place there. */
function cutIntoChunks(batches: readonly Int32Array[], rowsPerChunk: number) {
  const chunks: Int32Array[] = [];
  const chunkOf = new Int32Array(batches.length);
  const offsetOf = new Int32Array(batches.length);
  for (let first = 0; first < batches.length; ) {
    let end = first;
    let rows = 0;
    while (end < batches.length && (end === first || rows < rowsPerChunk)) {
      chunkOf[end] = chunks.length;
      offsetOf[end] = rows;
      rows += batches[end++]!.length;
    }
    const chunk = new Int32Array(rows);
    for (let b = first; b < end; b++) chunk.set(batches[b]!, offsetOf[b]!);
    chunks.push(chunk);
    first = end;
  }
  return { chunks, chunkOf, offsetOf };
}

/** Each model's last native call made through `afterModelCalls`, settled or not. */
const lastModelCall = new WeakMap<object, Promise<unknown>>();

/**
 * Makes `call` (a native batch call on `model`) once the calls made before it on that model have
 * settled. A call waiting for the model's lock holds one of libuv's threads (4 by default):
 * concurrent predict() calls each queuing a batch would otherwise stall every fs, dns, zlib and
 * crypto call of the process until the model's queue drained.
 */
export function afterModelCalls<T>(model: object, call: () => Promise<T>): Promise<T> {
  const turn = (lastModelCall.get(model) ?? Promise.resolve()).then(call);
  lastModelCall.set(
    model,
    turn.catch(() => undefined),
  );
  return turn;
}

/**
 * How many values `labels` holds per example, of `count` examples: one class id, or one
 * regression target, or a multi-label classifier's row of classes.
 */
export function labelWidth(labels: Int32Array | Float32Array, count: number): number {
  return count === 0 ? 1 : labels.length / count;
}

/** The labels of the examples at `indices`, of the `count` examples `labels` holds (labelWidth values each). */
export function labelsAt<L extends Int32Array | Float32Array>(labels: L, indices: Int32Array, count: number): L {
  const width = labelWidth(labels, count);
  const picked = labels instanceof Float32Array ? new Float32Array(indices.length * width) : new Int32Array(indices.length * width);
  indices.forEach((example, r) => {
    picked.set(labels.subarray(example * width, (example + 1) * width), r * width);
  });
  return picked as L;
}

/** What an evaluation pass over `count` examples gives, in example order. */
export interface BatchedEvaluation {
  /**
   * The loss over every example, as one batch of them all would give it: the batches' mean
   * losses weighted by what each mean divided by (`lossWeight`); null without labels.
   */
  loss: number | null;
  /** What the loss divides by: the examples, or with class weights their weights' sum. */
  lossWeight: number;
  /** Single-label classification with labels; else null. */
  accuracy: number | null;
  /** Argmax class per example (single-label classification; else zeros). */
  predictions: Int32Array;
  /** Row-major [count, classes]: softmax probabilities, or a sigmoid per class (multi-label); empty for regression. */
  probabilities: Float32Array;
  /** Regression: the outputs, row-major [count, outputs]; else empty. */
  values: Float32Array;
}

/** A growing [count, width] table, each batch's rows put at their examples' places (the width: the first batch's). */
function rowTable(count: number): { table: () => Float32Array; put: (batch: Float32Array, rows: Int32Array) => void } {
  let table = new Float32Array(0);
  return {
    table: () => table,
    put(batch, rows) {
      if (batch.length === 0) return;
      const width = batch.length / rows.length;
      if (table.length === 0) table = new Float32Array(count * width);
      rows.forEach((example, r) => {
        table.set(batch.subarray(r * width, (r + 1) * width), example * width);
      });
    },
  };
}

/**
 * An evaluation pass (`evalStep` on tokens, `headEvalStep` on cached features) over `count`
 * examples cut into `batches` of example indices: each batch's predictions, probabilities and
 * values go back to its examples' places, and its loss counts by its `lossWeight` (its rows, or with
 * class weights the sum of its rows' weights, what the weighted cross-entropy's mean divides by:
 * so the loss does not depend on how the examples are cut into batches).
 */
export async function evaluateInBatches(
  count: number,
  batches: readonly Int32Array[],
  evaluate: (rows: Int32Array, batch: number) => Promise<EvalStepResult>,
  withLabels: boolean,
  signal?: AbortSignal,
  lossWeight: (rows: Int32Array) => number = (rows) => rows.length,
): Promise<BatchedEvaluation> {
  const predictions = new Int32Array(count);
  const probabilities = rowTable(count);
  const values = rowTable(count);
  let lossSum = 0;
  let weightSum = 0;
  let correct: number | null = null;
  await runBatches(
    batches,
    evaluate,
    (result, rows) => {
      if (result.predictions.length > 0) {
        rows.forEach((example, r) => {
          predictions[example] = result.predictions[r]!;
        });
      }
      probabilities.put(result.probabilities, rows);
      values.put(result.values, rows);
      if (withLabels) {
        const weight = lossWeight(rows);
        // A batch whose rows all weigh 0 has a NaN mean (0/0) and adds nothing.
        if (weight > 0) lossSum += result.loss! * weight;
        weightSum += weight;
        if (result.correct !== null) correct = (correct ?? 0) + result.correct;
      }
    },
    signal,
  );
  return {
    loss: withLabels ? lossSum / weightSum : null,
    lossWeight: weightSum,
    accuracy: correct === null ? null : correct / count,
    predictions,
    probabilities: probabilities.table(),
    values: values.table(),
  };
}

/** Rows `[0, count)` in order, cut into batches of at most `batchSize`. */
export function consecutiveBatches(count: number, batchSize: number): Int32Array[] {
  const all = Int32Array.from({ length: count }, (_, i) => i);
  const batches: Int32Array[] = [];
  for (let start = 0; start < count; start += batchSize) batches.push(all.subarray(start, start + batchSize));
  return batches;
}
