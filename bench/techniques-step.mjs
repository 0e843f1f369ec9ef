/**
 * Techniques step time vs PyTorch: one optimisation step of frozen, full, LoRA and bottleneck
 * adapter (Houlsby, size 64, swish) training, in
 * torch-bert and in plain eager PyTorch (test/python/reference_step.py), on the same encoder
 * weights, the same batch of real tokenized reviews, for a tiny, a small and a bert-base shape.
 *
 * Ours is measured through the native surface, `binding.trainStep` on the same batch every step
 * (the call train() makes for frozen with featureCache 'none', full and lora), timed in JS around
 * the awaited call, so the copy of the batch into libtorch and the worker-thread round trip are
 * included. The model is set up as train() does it: buildClassifier (head seeded like
 * nn.Linear), encoder parameters frozen for frozen/lora, `applyLora` on attention query and
 * value (rank 8, alpha 16, no dropout), one AdamW group (lr 1e-5, weight decay 0.01), no
 * gradient clipping (the reference does not clip either).
 *
 * Noise control (the machine is shared): the reference runs as a persistent process
 * (`reference_step.py --serve`), so both sides hold their model for a technique at the same time
 * and their steps are interleaved in blocks — ours, PyTorch, PyTorch, ours, ... — after warm-up
 * steps on both. Each block's median step is one sample; the table shows the median of the
 * blocks and their spread (min–max).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  binding,
  cacheDir,
  dataDescription,
  encoder,
  f,
  median,
  reviewBatch,
  root,
  SHAPES,
  shapeLabel,
  spread,
  startServer,
  stats,
  table,
} from './lib.mjs';
import { ADAPTER, LORA, STEP_TECHNIQUES as TECHNIQUES, techniqueModel } from './technique-model.mjs';

export const name = 'techniques-step';

const TARGETS = { tinyRatio: 0.8, ratio: 1.0 };

const count = (tensors) => tensors.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);

/** Our side of one technique: a fresh classifier around a clone of `base`, set up as train() does. */
function oursSetup(base, technique, batch) {
  const enc = base.clone();
  const { model, optimizer, params, dispose } = techniqueModel(binding, enc, technique);
  return {
    trainableParameters: count(params),
    async steps(n) {
      const seconds = [];
      const losses = [];
      for (let i = 0; i < n; i++) {
        const t0 = performance.now();
        const result = await binding.trainStep(model, optimizer, batch, { maxGradNorm: 0 });
        seconds.push((performance.now() - t0) / 1000);
        losses.push(result.loss);
      }
      return { seconds, losses };
    },
    dispose() {
      dispose();
      enc.dispose();
    },
  };
}

export async function run({ quick, threads, shapes }) {
  const plan = (
    quick
      ? [{ shape: SHAPES.tiny, batchSize: 32, seqLen: 128, warmup: 2, blocks: 2, blockSteps: 2 }]
      : [
          { shape: SHAPES.tiny, batchSize: 32, seqLen: 128, warmup: 3, blocks: 6, blockSteps: 4 },
          // The tiny shape where per-step overhead dominates (its kernels take microseconds): what
          // the "≤ 0.8 for the tiny shape" is about; at 32x128 kernels are ~90% of the step.
          { shape: SHAPES.tiny, batchSize: 1, seqLen: 8, warmup: 10, blocks: 6, blockSteps: 20 },
          { shape: SHAPES.small, batchSize: 32, seqLen: 128, warmup: 2, blocks: 4, blockSteps: 3 },
          { shape: SHAPES['bert-base'], batchSize: 8, seqLen: 128, warmup: 1, blocks: 4, blockSteps: 1 },
        ]
  ).filter((p) => !shapes || shapes.includes(p.shape.name));
  if (threads) binding.setNumThreads(threads);
  const results = [];
  for (const p of plan) {
    const enc = (await encoder(p.shape)).file;
    // A batch of real reviews, truncated/padded to seqLen (at 128 tokens nearly every IMDB review fills it).
    const batch = await reviewBatch(p.batchSize, p.seqLen);
    const { labels } = batch;
    const encoded = { inputIds: batch.inputIds, attentionMask: batch.attentionMask, count: batch.batchSize, seqLen: batch.seqLen };
    const rows = (a) =>
      Array.from({ length: encoded.count }, (_, r) => Array.from(a.subarray(r * encoded.seqLen, (r + 1) * encoded.seqLen)));
    const batchFile = join(cacheDir, `step-batch-${p.shape.name}-${p.batchSize}x${p.seqLen}.json`);
    writeFileSync(
      batchFile,
      JSON.stringify({ input_ids: rows(encoded.inputIds), attention_mask: rows(encoded.attentionMask), labels: Array.from(labels) }),
    );
    const realTokens = encoded.attentionMask.reduce((a, b) => a + b, 0);

    const reference = await startServer(join(root, 'test', 'python', 'reference_step.py'), [
      '--serve',
      '--encoder',
      enc,
      '--batch',
      batchFile,
      '--lora-rank',
      String(LORA.rank),
      '--lora-alpha',
      String(LORA.alpha),
      '--lora-dropout',
      String(LORA.dropout),
      '--adapter-size',
      String(ADAPTER.size),
      '--adapter-activation',
      ADAPTER.activation,
      '--heads',
      String(p.shape.heads),
      ...(threads ? ['--threads', String(threads)] : []),
    ]);
    const base = await binding.ScriptModule.loadAsync(enc, 'cpu');
    const techniques = {};
    try {
      for (const t of TECHNIQUES) {
        const ours = oursSetup(base, t, batch);
        try {
          const setup = await reference.request({ cmd: 'setup', technique: t });
          const first = {
            ours: (await ours.steps(p.warmup)).losses[0],
            reference: (await reference.request({ cmd: 'steps', n: p.warmup })).losses[0],
          };
          const blocks = { ours: [], reference: [] };
          const all = { ours: [], reference: [] };
          for (let b = 0; b < p.blocks; b++) {
            const order = b % 2 === 0 ? ['ours', 'reference'] : ['reference', 'ours'];
            for (const side of order) {
              const out = side === 'ours' ? await ours.steps(p.blockSteps) : await reference.request({ cmd: 'steps', n: p.blockSteps });
              blocks[side].push(median(out.seconds));
              all[side].push(...out.seconds);
            }
          }
          techniques[t] = {
            ours: stats(blocks.ours),
            reference: stats(blocks.reference),
            ratio: median(blocks.ours) / median(blocks.reference),
            allSteps: { ours: all.ours, reference: all.reference },
            trainableParameters: { ours: ours.trainableParameters, reference: setup.trainableParameters },
            firstLoss: first,
          };
          const cache = binding.cpuCacheStats();
          techniques[t].cpuCache = {
            hits: cache.hits,
            misses: cache.misses,
            evictedBytes: cache.evictedBytes,
            cachedBytes: cache.cachedBytes,
          };
          console.error(
            `bench: techniques-step ${p.shape.name} ${t}: CPU cache so far ${cache.hits} hits, ${cache.misses} misses, ` +
              `${Math.round(cache.evictedBytes / 2 ** 20)} MB evicted, ${Math.round(cache.cachedBytes / 2 ** 20)} MB cached`,
          );
          console.error(
            `bench: techniques-step ${p.shape.name} ${t}: ours ${f(techniques[t].ours.median)} (${spread(blocks.ours)}), ` +
              `PyTorch ${f(techniques[t].reference.median)} (${spread(blocks.reference)}) s/step, ratio ${f(techniques[t].ratio, 3)}`,
          );
        } finally {
          ours.dispose();
        }
      }
    } finally {
      base.dispose();
      await reference.close();
    }
    results.push({
      shape: p.shape.name,
      layers: p.shape.layers,
      hidden: p.shape.hidden,
      batch: `${p.batchSize}x${p.seqLen}`,
      realTokenShare: realTokens / (p.batchSize * p.seqLen),
      warmup: p.warmup,
      blocks: p.blocks,
      blockSteps: p.blockSteps,
      threads: { ours: binding.getNumThreads(), reference: reference.ready.threads },
      techniques,
      loraOverFull: {
        ours: techniques.lora.ours.median / techniques.full.ours.median,
        reference: techniques.lora.reference.median / techniques.full.reference.median,
      },
      adapterOverFull: {
        ours: techniques.adapter.ours.median / techniques.full.ours.median,
        reference: techniques.adapter.reference.median / techniques.full.reference.median,
      },
      target: p.shape.name === 'tiny' ? TARGETS.tinyRatio : TARGETS.ratio,
    });
  }

  const rows = [];
  for (const r of results) {
    for (const t of TECHNIQUES) {
      const x = r.techniques[t];
      rows.push([
        shapeLabel(SHAPES[r.shape]),
        r.batch,
        t,
        `${f(x.ours.median)} (${spread(x.ours.runs)})`,
        `${f(x.reference.median)} (${spread(x.reference.runs)})`,
        f(x.ratio, 3),
        `≤ ${r.target.toFixed(1)} ${x.ratio <= r.target ? 'yes' : '**no**'}`,
      ]);
    }
  }
  const params = (x) =>
    `${x.trainableParameters.ours.toLocaleString('en-US')} / ${x.trainableParameters.reference.toLocaleString('en-US')}`;
  const loraRows = results.map((r) => [
    shapeLabel(SHAPES[r.shape]),
    r.batch,
    f(r.loraOverFull.ours, 3),
    f(r.loraOverFull.reference, 3),
    params(r.techniques.lora),
    f(r.adapterOverFull.ours, 3),
    f(r.adapterOverFull.reference, 3),
    params(r.techniques.adapter),
  ]);
  const threadNote = results[0] ? `torch-bert ${results[0].threads.ours} / PyTorch ${results[0].threads.reference} intra-op thread(s)` : '';
  const markdown = [
    `**Training step per technique vs plain PyTorch** (forward + NLL + backward + AdamW on one batch of real reviews; ` +
      `torch-bert: binding.trainStep, the call train() makes, with token pruning (CLS pooling: the last layer runs the [CLS] row alone ` +
      `but for its keys and values; same loss and gradients); PyTorch: test/python/reference_step.py, eager BERT with the same weights, ` +
      `PEFT-style LoRA r=8, alpha=16 on query/value, Houlsby bottleneck adapters of width 64 with swish after both sub-layers). Both sides hold the model and alternate blocks of ` +
      `${plan.map((p) => p.blockSteps).join('/')} step(s), ${plan.map((p) => p.blocks).join('/')} blocks each after warm-up; ` +
      `s/step = median of the blocks' medians (spread: min–max of them); ${dataDescription}; random-weight encoders; ${threadNote}. ` +
      `A 1x8 batch measures per-step overhead (libtorch's kernels take microseconds there).`,
    '',
    table(['shape', 'batch', 'technique', 'torch-bert s/step (spread)', 'PyTorch s/step (spread)', 'ours/PyTorch', 'target'], rows),
    '',
    '**LoRA and adapter step cost relative to full fine-tuning** (lower is cheaper) and trainable parameters (adapters + head):',
    '',
    table(
      [
        'shape',
        'batch',
        'lora/full torch-bert',
        'lora/full PyTorch',
        'LoRA trainable params torch-bert / PyTorch',
        'adapter/full torch-bert',
        'adapter/full PyTorch',
        'adapter trainable params torch-bert / PyTorch',
      ],
      loraRows,
    ),
  ].join('\n');
  return {
    settings: {
      lora: LORA,
      adapter: ADAPTER,
      lr: 1e-5,
      weightDecay: 0.01,
      maxGradNorm: 0,
      plan: plan.map((p) => ({ ...p, shape: p.shape.name })),
    },
    results,
    markdown,
  };
}
