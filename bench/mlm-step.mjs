/**
 * Masked-language-model pretraining step vs PyTorch as transformers computes it: one step of
 * BertForMaskedLM training on a batch of real reviews masked as DataCollatorForLanguageModeling
 * does (15%), at the tiny, small and bert-base shapes, length 128 (batch 32, 32, 8), with
 * bert-base-uncased's vocabulary size when the IMDB data and tokenizer are present (else the
 * demo's).
 *
 * Ours: `binding.trainStep` on `buildMlmModel`'s module (the head — transform and decoder — on
 * the masked rows only), AdamW lr 5e-5, no clipping, timed in JS around the awaited call.
 * PyTorch: test/python/reference_mlm_step.py (the decoder over every position, then the loss on
 * the masked ones). Same random weights (scripts/python/make_hf_folder.py), same batch. Runs are
 * sequential (ours, then PyTorch), so load on the shared machine affects them one at a time:
 * read the ratio with the spread.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  batchRows,
  binding,
  cacheDir,
  dataDescription,
  hfFolder,
  median,
  python,
  reviewBatch,
  root,
  SHAPES,
  stepPlan,
  stepRow,
  stepTable,
  tokenizer,
  tokenizerFile,
} from './lib.mjs';

export const name = 'mlm-step';

const TARGETS = { 'bert-base': 0.7, other: 1.0 };
const dist = join(root, 'dist');
const { loadEncoderSource } = await import(join(dist, 'models', 'encoder-source.js'));
const { maskedBatch } = await import(join(dist, 'data', 'mlm-data.js'));
const { wordContinuation } = await import(join(dist, 'data', 'mlm-masking.js'));

export async function run({ quick, threads, shapes }) {
  const plan = stepPlan(
    quick,
    {
      quick: [{ shape: SHAPES.tiny, batchSize: 32, warmup: 1, steps: 2 }],
      full: [
        { shape: SHAPES.tiny, batchSize: 32, warmup: 2, steps: 6 },
        { shape: SHAPES.small, batchSize: 32, warmup: 1, steps: 4 },
        { shape: SHAPES['bert-base'], batchSize: 8, warmup: 1, steps: 3 },
      ],
    },
    shapes,
  );
  if (threads) binding.setNumThreads(threads);
  const tok = await tokenizer();
  const words = tok.maskingVocabulary();
  const vocab = {
    maskId: words.maskId,
    vocabSize: words.vocabSize,
    specialIds: words.specialIds,
    continuesWord: wordContinuation(words.tokens, words.byteLevel),
  };
  const seqLen = 128;
  const results = [];
  for (const p of plan) {
    const dir = hfFolder('mlm', p.shape, words.vocabSize, { layout: 'mlm' });
    const review = await reviewBatch(p.batchSize, seqLen);
    const encoded = {
      ...review,
      count: review.batchSize,
      lengths: Int32Array.from({ length: review.batchSize }, (_, r) =>
        review.attentionMask.subarray(r * seqLen, (r + 1) * seqLen).reduce((a, b) => a + b, 0),
      ),
    };
    const batch = maskedBatch(
      encoded,
      Array.from({ length: review.batchSize }, (_, i) => i),
      1,
      vocab,
      { mlmProbability: 0.15, wholeWordMask: false, seed: 42 },
    );
    const labels = new Array(batch.batchSize * batch.seqLen).fill(-100);
    batch.positions.forEach((at, k) => {
      labels[at] = batch.labels[k];
    });
    const batchFile = join(cacheDir, `mlm-batch-${p.shape.name}-${p.batchSize}.json`);
    writeFileSync(
      batchFile,
      JSON.stringify({
        input_ids: batchRows(batch.inputIds, batch.batchSize, batch.seqLen),
        attention_mask: batchRows(batch.attentionMask, batch.batchSize, batch.seqLen),
        labels: batchRows(labels, batch.batchSize, batch.seqLen),
      }),
    );

    // Ours.
    const loaded = await loadEncoderSource(dir, {
      device: 'cpu',
      tokenizer: tokenizerFile,
      maxLength: seqLen,
      fallbackMaxLength: seqLen,
      mlmHead: true,
    });
    const built = binding.buildMlmModel(loaded.module, loaded.mlmHead);
    const aliases = new Set(built.tiedParameters.map(([a]) => a));
    const params = built.module.namedParameters().filter(([n]) => !aliases.has(n) && !n.startsWith('encoder.pooler.'));
    for (const [, t] of params) t.setRequiresGrad(true);
    const optimizer = new binding.AdamW([{ params: params.map(([, t]) => t), lr: 5e-5, weightDecay: 0.01 }]);
    built.module.train(true);
    const ours = [];
    for (let i = 0; i < p.warmup + p.steps; i++) {
      const t0 = performance.now();
      await binding.trainStep(built.module, optimizer, batch, { maxGradNorm: 0 });
      if (i >= p.warmup) ours.push((performance.now() - t0) / 1000);
    }
    optimizer.dispose();
    built.module.dispose();
    loaded.mlmHead.dispose();
    loaded.module.dispose();

    // PyTorch.
    const config = {
      family: 'bert',
      vocabSize: words.vocabSize,
      hiddenSize: p.shape.hidden,
      numLayers: p.shape.layers,
      numHeads: p.shape.heads,
      intermediateSize: p.shape.intermediate,
      maxPositions: 512,
      typeVocabSize: 2,
      layerNormEps: 1e-12,
      padTokenId: 0,
      hiddenAct: 'gelu',
      pooler: false,
      mlmHead: true,
    };
    const configFile = join(cacheDir, `mlm-config-${p.shape.name}.json`);
    writeFileSync(configFile, JSON.stringify(config));
    const ref = await python('reference_mlm_step.py', [
      '--config',
      configFile,
      '--weights',
      join(dir, 'model.safetensors'),
      '--batch',
      batchFile,
      '--warmup',
      String(p.warmup),
      '--steps',
      String(p.steps),
    ]);
    const tokens = p.batchSize * seqLen;
    const ratio = median(ours) / median(ref.seconds);
    results.push({
      shape: p.shape.name,
      batch: `${p.batchSize}x${seqLen}`,
      vocabSize: words.vocabSize,
      maskedTokens: batch.labels.length,
      ours: { median: median(ours), runs: ours, tokensPerSecond: tokens / median(ours) },
      reference: { median: median(ref.seconds), runs: ref.seconds, tokensPerSecond: tokens / median(ref.seconds), threads: ref.threads },
      ratio,
      target: p.shape.name === 'bert-base' ? TARGETS['bert-base'] : TARGETS.other,
    });
  }
  const markdown = [
    `**Masked-LM pretraining step vs PyTorch as transformers computes it** (forward + loss + backward + AdamW; torch-bert: the MLM head on ` +
      `the masked rows only; PyTorch: test/python/reference_mlm_step.py, the decoder over every position then the loss on the masked ones; ` +
      `15% masked, vocabulary ${results[0]?.vocabSize ?? '?'}; ${dataDescription}; sequential runs, median (spread); torch-bert ${binding.getNumThreads()} / PyTorch ${results[0]?.reference.threads ?? '?'} thread(s)).`,
    '',
    stepTable(
      ['masked tokens'],
      results.map((r) => stepRow(r, [String(r.maskedTokens)], 'runs')),
    ),
  ].join('\n');
  return {
    settings: {
      seqLen,
      lr: 5e-5,
      weightDecay: 0.01,
      maxGradNorm: 0,
      mlmProbability: 0.15,
      plan: plan.map((p) => ({ ...p, shape: p.shape.name })),
    },
    results,
    markdown,
  };
}
