/**
 * The frozen technique's speed-up over the tutorial: a frozen encoder gives the same features
 * every epoch, so each text is encoded once (no autograd, eval mode) and the head's epochs run
 * on the cached [N, H] tensor. Texts are encoded sorted by length so batches carry little
 * padding; the tensor stays in that order and `rowOf` maps an example to its row.
 *
 * With an on-disk cache the features are stored under a key made of what pins the encoder's
 * weights (the TorchScript file's hash, a model folder's weight files' hashes, or a Hub commit),
 * the pooling, the exact token ids (which pin the tokenizer, the max length and the texts) and
 * the libtorch version (another version may compute slightly different features), and reused
 * by later runs.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { NativeBinding, NativeScriptModule, NativeTensor } from '../addon/binding.js';
import { InputError, messageOf } from '../addon/errors.js';
import { gatherRows, longestFirstBatches, runBatches, stepBatch } from '../data/batching.js';
import type { EncodedTexts } from '../data/tokenizer.js';
import type { EncodeEvent } from './options.js';

export interface FeatureCache {
  /** [N, H] features, rows in encoding order. */
  features: NativeTensor;
  /** rowOf[example] = the row of `features` holding that example. */
  rowOf: Int32Array;
  fromDisk: boolean;
}

/** Map example indices to feature rows. */
export function featureRows(cache: FeatureCache, examples: ArrayLike<number>): Int32Array {
  return Int32Array.from({ length: examples.length }, (_, i) => cache.rowOf[examples[i]!]!);
}

function tokensDigest(encoded: EncodedTexts): string {
  const hash = createHash('sha256');
  hash.update(Buffer.from(encoded.lengths.buffer, encoded.lengths.byteOffset, encoded.lengths.byteLength));
  for (let row = 0; row < encoded.count; row++) {
    const from = row * encoded.seqLen;
    const ids = encoded.inputIds.subarray(from, from + encoded.lengths[row]!);
    hash.update(Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength));
    // A text pair's segments (absent for single texts, whose keys stay as they were): the same ids
    // in other segments are other features.
    const types = encoded.tokenTypeIds?.subarray(from, from + encoded.lengths[row]!);
    if (types) hash.update(Buffer.from(types.buffer, types.byteOffset, types.byteLength));
  }
  return hash.digest('hex');
}

/** The on-disk cache's file for these texts: keyed by the encoder's weights, the pooling, the tokens (and segments) and libtorch's version. */
function diskCacheFile(binding: NativeBinding, encoded: EncodedTexts, disk: { dir: string; weightsKey: string; pooling: string }): string {
  const key = createHash('sha256')
    .update(disk.weightsKey)
    .update(`\0${disk.pooling}\0${tokensDigest(encoded)}\0${binding.versions().libtorch}`)
    .digest('hex')
    .slice(0, 32);
  return join(disk.dir, `features-${key}.pt`);
}

/** The cached features of `count` texts, or null when the file is absent or holds something else. */
function readDiskCache(binding: NativeBinding, file: string, count: number): FeatureCache | null {
  if (!existsSync(file)) return null;
  const saved = binding.loadTensors(file);
  if (saved.features && saved.rowOf && saved.features.shape[0] === count) {
    const rowOf = Int32Array.from(saved.rowOf.toArray() as Int32Array);
    saved.rowOf.dispose();
    return { features: saved.features, rowOf, fromDisk: true };
  }
  for (const t of Object.values(saved)) t.dispose();
  return null;
}

/** Written beside and renamed into place: a reader never sees half a file. */
async function writeDiskCache(binding: NativeBinding, file: string, features: NativeTensor, rowOf: Int32Array): Promise<void> {
  try {
    await mkdir(dirname(file), { recursive: true });
  } catch (err) {
    throw new InputError(
      `feature cache directory ${dirname(file)} cannot be created: ${messageOf(err)}; choose another featureCacheDir / --cache-dir, or featureCache 'memory'`,
      { file: dirname(file), cause: err },
    );
  }
  const tmp = `${file}.tmp-${process.pid}`;
  const rowTensor = binding.Tensor.fromArray(rowOf, [rowOf.length], 'int32');
  try {
    binding.saveTensors(tmp, { features, rowOf: rowTensor });
  } finally {
    rowTensor.dispose();
  }
  await rename(tmp, file);
}

/** Data-parallel encoding's result: this rank's batches in their places, zeros elsewhere, summed over the ranks. */
function shardedFeatures(
  binding: NativeBinding,
  batches: Int32Array[],
  mine: NativeTensor[],
  shard: NonNullable<EncodeOptions['shard']>,
): NativeTensor {
  // The feature width, from a rank that encoded something (every rank but in a tiny run).
  const width = shard.max([mine[0]?.shape[1] ?? 0])[0]!;
  const zeros: NativeTensor[] = [];
  try {
    const all = batches.map((batch, i) => {
      if (i % shard.worldSize === shard.rank) return mine[Math.floor(i / shard.worldSize)]!;
      const zero = binding.Tensor.fromArray(new Float32Array(batch.length * width), [batch.length, width]);
      zeros.push(zero);
      return zero;
    });
    const features = binding.cat(all);
    shard.sum(features);
    return features;
  } finally {
    for (const z of zeros) z.dispose();
  }
}

/** How encodeOnce batches, where it keeps the features, and what it reports. */
export interface EncodeOptions {
  /**
   * Tokens per encoder batch (rows × the batch's longest row). A budget rather than a row
   * count, so that batches of short texts hold more rows and the activations of long ones
   * (attention grows with the square of the length) stay bounded.
   */
  tokensPerBatch: number;
  split: 'train' | 'validation';
  /** `weightsKey` pins the encoder's weights (encoder-source.ts `weightsKey`: file hashes, or a Hub commit). */
  disk?: { dir: string; weightsKey: string; pooling: string };
  onProgress?: (e: EncodeEvent) => void;
  signal?: AbortSignal;
  /**
   * Data-parallel (distributed.ts): rank `rank` encodes every `worldSize`-th batch, leaves the
   * others' rows zero, and the ranks' tensors are summed, so every rank ends with the features
   * one process computes (the same batches; x + 0 is exact).
   */
  shard?: { rank: number; worldSize: number; sum(tensor: NativeTensor): void; max(values: number[]): Float64Array };
}

/** Every text of `encoded` through the encoder once, or its features read from the disk cache that holds them. */
export async function encodeOnce(
  binding: NativeBinding,
  model: NativeScriptModule,
  encoded: EncodedTexts,
  options: EncodeOptions,
): Promise<FeatureCache> {
  const file = options.disk ? diskCacheFile(binding, encoded, options.disk) : undefined;
  const cached = file ? readDiskCache(binding, file, encoded.count) : null;
  if (cached) {
    options.onProgress?.({ type: 'encode', split: options.split, done: encoded.count, total: encoded.count, fromCache: true });
    return cached;
  }

  // Longest first: batch widths shrink as encoding proceeds, so padding is minimal.
  const { order, batches } = longestFirstBatches(encoded.lengths, { tokensPerBatch: options.tokensPerBatch });
  const rowOf = new Int32Array(encoded.count);
  order.forEach((example, row) => {
    rowOf[example] = row;
  });
  const parts: NativeTensor[] = [];
  const { shard } = options;
  const mine = shard ? batches.filter((_, i) => i % shard.worldSize === shard.rank) : batches;
  try {
    let done = 0;
    await runBatches(
      mine,
      (batch) => {
        return binding.extractFeatures(model, stepBatch(gatherRows(encoded, batch)));
      },
      // The batches follow `order`, so the features of each come next in the tensor.
      (features, batch) => {
        parts.push(features);
        done += batch.length;
        options.onProgress?.({ type: 'encode', split: options.split, done, total: encoded.count, fromCache: false });
      },
      options.signal,
    );
    const features = shard ? shardedFeatures(binding, batches, parts, shard) : binding.cat(parts);
    if (file) await writeDiskCache(binding, file, features, rowOf);
    return { features, rowOf, fromDisk: false };
  } finally {
    for (const p of parts) p.dispose();
  }
}
