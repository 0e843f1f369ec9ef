#!/usr/bin/env node
/**
 * A probe behind two configuration choices (README "What the measurements chose"): the time
 * per text and the peak RSS of the frozen encoder forward (binding.extractFeatures) for one max
 * length and several batch sizes, in this process. Not part of `npm run bench`.
 *
 *   node bench/probe-forward.mjs [--shape small] [--length 128] [--batches 16,64]
 *   TORCH_BERT_CPU_CACHE_MB=0 node bench/probe-forward.mjs ...   # libtorch's default allocator
 *
 * Prints, per batch size: median ms per text over ~256 texts (after one warm-up batch), and the
 * process's peak RSS so far (VmHWM; run one batch size per process to read each alone).
 */
import { createRequire } from 'node:module';
import { binding, encoder, SHAPES } from './lib.mjs';

const { peakRssBytes } = createRequire(import.meta.url)('./peak-rss.cjs');
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const shape = SHAPES[arg('shape', 'small')];
if (!shape) throw new Error(`--shape: one of ${Object.keys(SHAPES).join(', ')}`);
const length = Number(arg('length', '128'));
const batches = arg('batches', '16,64').split(',').map(Number);

const enc = binding.ScriptModule.load((await encoder(shape)).file);
const { module } = binding.buildClassifier(enc, { numClasses: 2, headHidden: 512, dropout: 0.1, pooling: 'cls', seed: 1 });
module.train(false);
const cache = binding.cpuCacheStats();
console.log(
  `${shape.name} encoder, length ${length}, allocator: ${cache.installed ? `torch-bert cache (${cache.limitBytes / 2 ** 20} MiB)` : "libtorch's default"}`,
);
for (const batchSize of batches) {
  const n = batchSize * length;
  // Any valid ids: the time does not depend on them. Every token real (no padding).
  const batch = {
    inputIds: new Int32Array(n).map((_, i) => 100 + (i % 900)),
    attentionMask: new Int32Array(n).fill(1),
    batchSize,
    seqLen: length,
  };
  const times = [];
  const repeats = Math.max(3, Math.round(256 / batchSize));
  for (let r = 0; r <= repeats; r++) {
    const t0 = performance.now();
    (await binding.extractFeatures(module, batch)).dispose();
    if (r > 0) times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const perText = times[times.length >> 1] / batchSize;
  console.log(
    `batch ${batchSize}x${length}: ${perText.toFixed(2)} ms/text (${(perText * batchSize).toFixed(0)} ms/batch), peak RSS ${(peakRssBytes() / 2 ** 20).toFixed(0)} MB`,
  );
}
