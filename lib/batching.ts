/**
 * Which rows go into which batch, epoch by epoch, and the learning-rate schedule over the
 * optimizer steps. Everything here is a pure function of (seed, epoch, sizes), so a resumed
 * run replays exactly the batches an uninterrupted run would have seen.
 */

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

export type Schedule = 'constant' | 'linear';

/**
 * The learning-rate multiplier for optimizer step `step` (0-based) of `totalSteps`, as
 * Hugging Face's get_linear_schedule_with_warmup / get_constant_schedule_with_warmup compute
 * it: linear warmup from 0 over `warmupSteps`, then constant, or linear decay to 0 at the end.
 */
export function learningRateFactor(schedule: Schedule, step: number, totalSteps: number, warmupSteps: number): number {
  if (step < warmupSteps) return step / Math.max(1, warmupSteps);
  if (schedule === 'constant') return 1;
  return Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmupSteps));
}
