/**
 * Frozen step through the public API: one training step of the seed's frozen job in torch-bert's
 * train() next to the same step in the plain-PyTorch reference trainer
 * (test/python/reference_train.py: the traced encoder under torch.no_grad + the head), on
 * the same data, tokens, encoder and batch.
 *
 * Per step, both sides time the batch's encoder forward, the head forward, NLL loss, backward
 * and the AdamW step. Ours is measured through train() (featureCache 'none' so the encoder runs
 * in every step as in the reference; padding 'max' and no clipping, as the reference does) from
 * the wall time between consecutive onProgress step events, so JS-side batch assembly is
 * included. Each side reports the median over the steps of one epoch; the two sides are run
 * `repeats` times, alternating, and the median and spread of those medians are reported.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  binding,
  cacheDir,
  dataDescription,
  dataModule,
  encoder,
  examples,
  f,
  median,
  python,
  SHAPES,
  shapeLabel,
  spread,
  stats,
  table,
  tokenizer,
  tokenizerFile,
  tokenizerModule,
  torchBert,
} from './lib.mjs';

export const name = 'frozen-step';

export async function run({ quick, threads, shapes }) {
  const plan = (
    quick
      ? [{ shape: SHAPES.tiny, examples: 160, batchSize: 32, maxLength: 128, repeats: 1 }]
      : [
          { shape: SHAPES.tiny, examples: 640, batchSize: 32, maxLength: 128, repeats: 3 },
          { shape: SHAPES.small, examples: 320, batchSize: 32, maxLength: 128, repeats: 3 },
          { shape: SHAPES['bert-base'], examples: 80, batchSize: 16, maxLength: 128, repeats: 2 },
        ]
  ).filter((p) => !shapes || shapes.includes(p.shape.name));
  const tok = await tokenizer();
  const results = [];
  for (const p of plan) {
    const enc = (await encoder(p.shape)).file;
    const data = await examples(p.examples);
    const names = dataModule.inferLabelNames(data.labels, data.origin);
    const ids = dataModule.labelIds(data.labels, names, data.origin);
    const split = dataModule.stratifiedSplit(ids, 0.2, 42, binding.randperm);
    const encoded = tok.encodeBatch(data.texts, p.maxLength);
    const rowsOf = (indices) => {
      const rows = tokenizerModule.gatherRows(encoded, indices, p.maxLength);
      const chunk = (a) => Array.from({ length: rows.count }, (_, r) => Array.from(a.subarray(r * rows.seqLen, (r + 1) * rows.seqLen)));
      return { input_ids: chunk(rows.inputIds), attention_mask: chunk(rows.attentionMask), labels: Array.from(indices, (i) => ids[i]) };
    };
    const common = {
      epochs: 1,
      batchSize: p.batchSize,
      lr: 1e-5,
      weightDecay: 0.01,
      seed: 42,
      headHidden: 512,
      dropout: 0.1,
      pooling: 'cls',
    };
    const specFile = join(cacheDir, `spec-${p.shape.name}.json`);
    writeFileSync(
      specFile,
      JSON.stringify({
        encoder: enc,
        train: rowsOf(split.train),
        validation: rowsOf(split.validation),
        numClasses: names.length,
        ...common,
      }),
    );

    const oursRuns = [];
    const referenceRuns = [];
    for (let r = 0; r < p.repeats; r++) {
      const runReference = async () => {
        const out = await python('reference_train.py', ['--spec', specFile, ...(threads ? ['--threads', String(threads)] : [])]);
        referenceRuns.push(out.stepSeconds);
      };
      const runOurs = async () => {
        const stepTimes = [];
        let last = 0;
        const result = await torchBert.train({
          data: { texts: data.texts, labels: data.labels },
          encoder: enc,
          tokenizer: tokenizerFile,
          technique: 'frozen',
          featureCache: 'none',
          padding: 'max',
          maxGradNorm: 0,
          epochs: 1,
          batchSize: p.batchSize,
          maxLength: p.maxLength,
          learningRate: 1e-5,
          threads,
          onProgress: (e) => {
            if (e.type !== 'step') return;
            const now = performance.now();
            if (e.step > 1) stepTimes.push((now - last) / 1000);
            last = now;
          },
        });
        result.classifier.dispose();
        oursRuns.push(median(stepTimes));
      };
      // Alternate which side goes first.
      if (r % 2 === 0) {
        await runReference();
        await runOurs();
      } else {
        await runOurs();
        await runReference();
      }
    }
    const row = {
      shape: p.shape.name,
      layers: p.shape.layers,
      hidden: p.shape.hidden,
      batch: `${p.batchSize}x${p.maxLength}`,
      trainExamples: split.train.length,
      repeats: p.repeats,
      ours: stats(oursRuns),
      reference: stats(referenceRuns),
      ratio: median(oursRuns) / median(referenceRuns),
    };
    results.push(row);
    console.error(
      `bench: frozen-step ${p.shape.name}: ours ${f(row.ours.median)} s/step, PyTorch ${f(row.reference.median)} s/step, ratio ${f(row.ratio, 3)}`,
    );
  }
  const markdown = [
    `**Frozen-encoder training step through train()** (encoder forward + head + NLL + backward + AdamW; featureCache 'none'), ` +
      `median of ${plan.map((p) => p.repeats).join('/')} alternating run(s), each the median step of one epoch (spread: min–max of the runs); ${dataDescription}; random-weight encoders. ` +
      `PyTorch = test/python/reference_train.py (traced encoder under no_grad); torch-bert with token pruning (the last layer for [CLS] alone but its keys and values).`,
    '',
    table(
      ['shape', 'batch', 'torch-bert s/step (spread)', 'PyTorch s/step (spread)', 'ratio'],
      results.map((r) => [
        `${shapeLabel(SHAPES[r.shape])}`,
        r.batch,
        `${f(r.ours.median)} (${spread(r.ours.runs)})`,
        `${f(r.reference.median)} (${spread(r.reference.runs)})`,
        f(r.ratio, 3),
      ]),
    ),
  ].join('\n');
  return { settings: { plan: plan.map((p) => ({ ...p, shape: p.shape.name })) }, results, markdown };
}
