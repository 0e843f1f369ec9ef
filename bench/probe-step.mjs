/**
 * One technique's training step (binding.trainStep, as train() calls it) in this process, on the
 * encoder and batch the techniques-step benchmark caches in bench/.cache: the command behind the
 * before/after figures of README "What the measurements chose". Compare settings by running it
 * once per setting, alternating, e.g.
 *
 *   node bench/probe-step.mjs --shape small --technique lora
 *   TORCH_BERT_HUGE_PAGES=0 node bench/probe-step.mjs --shape small --technique lora
 *   TORCH_BERT_LORA_WEIGHT_SPACE=1 node bench/probe-step.mjs --shape bert-base --technique lora --steps 5
 *
 * The model is set up as techniques-step does it (bench/technique-model.mjs; no clipping). Prints the median and minimum step
 * time in ms over --steps steps after 3 warm-up steps, as one JSON line. --batch 1x8 picks
 * another cached batch (the benchmark writes one file per shape and batch). --threads N sets
 * libtorch's intra-op threads (default: libtorch's, 1 here). --max-grad-norm N clips as
 * train() does (default 0: none). --eval times binding.evalStep (the evaluation batch) instead.
 * To compare two builds, alternate TORCH_BERT_BINARY=path/to/torch_bert.node between runs.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { binding as b, cacheDir } from './lib.mjs';
import { techniqueModel } from './technique-model.mjs';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'small' },
    technique: { type: 'string', default: 'lora' },
    steps: { type: 'string', default: '10' },
    threads: { type: 'string' },
    batch: { type: 'string' },
    'max-grad-norm': { type: 'string', default: '0' },
    eval: { type: 'boolean', default: false },
  },
});
if (values.threads) b.setNumThreads(Number(values.threads));
const { shape, technique } = values;
const steps = Number(values.steps);
// The batch as ROWSxLENGTH (default the benchmark's: 8x128 for bert-base, 32x128 otherwise).
const batchShape = values.batch ?? (shape === 'bert-base' ? '8x128' : '32x128');
const encoderFile = join(cacheDir, `${shape}-bert.pt`);
const batchFile = join(cacheDir, `step-batch-${shape}-${batchShape}.json`);
for (const f of [encoderFile, batchFile]) {
  if (!existsSync(f)) throw new Error(`${f} is missing: run \`npm run bench -- --only techniques-step --shapes ${shape}\` first`);
}
const json = JSON.parse(readFileSync(batchFile, 'utf8'));
const batch = {
  inputIds: Int32Array.from(json.input_ids.flat()),
  attentionMask: Int32Array.from(json.attention_mask.flat()),
  batchSize: json.input_ids.length,
  seqLen: json.input_ids[0].length,
  labels: Int32Array.from(json.labels),
};
const encoder = b.ScriptModule.load(encoderFile);
const { model, optimizer } = techniqueModel(b, encoder, technique);
const ms = [];
for (let i = 0; i < steps + 3; i++) {
  const t0 = performance.now();
  if (values.eval) await b.evalStep(model, batch);
  else await b.trainStep(model, optimizer, batch, { maxGradNorm: Number(values['max-grad-norm']) });
  if (i >= 3) ms.push(performance.now() - t0);
}
ms.sort((x, y) => x - y);
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => /^(TORCH_BERT_|OPENBLAS_|OMP_)/.test(k)));
const threads = b.getNumThreads();
const cache = b.cpuCacheStats();
console.log(
  JSON.stringify({
    shape,
    batch: batchShape,
    technique,
    step: values.eval ? 'eval' : 'train',
    maxGradNorm: Number(values['max-grad-norm']),
    steps,
    threads,
    env,
    cache: {
      hits: cache.hits,
      misses: cache.misses,
      evictedMB: Math.round(cache.evictedBytes / 2 ** 20),
      hugePageBlocks: cache.hugePageBlocks,
    },
    medianMs: +ms[ms.length >> 1].toFixed(3),
    minMs: +ms[0].toFixed(3),
  }),
);
