/**
 * Token-classification (NER) training step vs PyTorch as transformers computes it: one step of
 * BertForTokenClassification training on a batch of real reviews split into words (at whitespace,
 * each word tokenized alone and its tag on its first token, cut to 128 tokens as encodeWords
 * does), 9 tags (CoNLL-2003's) drawn from a fixed seed, at the tiny, small and bert-base shapes
 * (batch 32, 32, 8), with bert-base-uncased's vocabulary when the IMDB data and tokenizer are
 * present (else the demo's).
 *
 * Ours: `binding.trainStep` on `buildClassifier`'s 'token-classification' module (the head on the
 * words' first tokens only, StepBatch.positions), AdamW lr 5e-5, no clipping, timed in JS around
 * the awaited call. PyTorch: test/python/reference_token_step.py (the classifier over every
 * position, then the loss on the labelled ones). Same random weights (scripts/python/
 * make_hf_folder.py, hidden and attention dropout 0.1), same classifier init (the seed), same
 * batch, same intra-op thread count. Each side's first step runs in eval mode (no dropout
 * masks) and untimed: its losses must agree within 1e-4 (and the gradient norms within 1e-3
 * relative), or the row fails. Then warm-up and timed steps in train mode (dropout 0.1, as
 * transformers trains). Both sides hold their model (PyTorch's in a --serve process) and
 * alternate blocks of steps, ours first then PyTorch first, as techniques-step does, so that
 * load on the shared machine falls on both; s/step is the median of the blocks' medians.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  binding,
  cacheDir,
  dataDescription,
  examples,
  f,
  median,
  PYTHON,
  root,
  SHAPES,
  shapeFlags,
  shapeLabel,
  spread,
  startServer,
  table,
  tokenizer,
  tokenizerFile,
} from './lib.mjs';

export const name = 'token-step';

const TARGETS = { all: 1.0 };
/** CoNLL-2003's tags. */
const TAGS = ['O', 'B-PER', 'I-PER', 'B-ORG', 'I-ORG', 'B-LOC', 'I-LOC', 'B-MISC', 'I-MISC'];
const TAG_SEED = 2003;
const HEAD_SEED = 42;
const LOSS_TOLERANCE = 1e-4;
const GRAD_NORM_TOLERANCE = 1e-3;
const dist = join(root, 'dist');
const { loadEncoderSource } = await import(join(dist, 'models', 'encoder-source.js'));
const { encodeWords, wordBatch } = await import(join(dist, 'data', 'word-alignment.js'));

/** A BERT AutoModel folder of `shape` with seeded random weights (cached). */
function folder(shape, vocabSize) {
  const dir = join(cacheDir, `token-${shape.name}-v${vocabSize}`);
  if (!existsSync(join(dir, 'config.json'))) {
    execFileSync(PYTHON, [
      join(root, 'scripts', 'python', 'make_hf_folder.py'),
      ...['--out', dir, '--layout', 'automodel', '--tokenizer', 'none', '--vocab-size', String(vocabSize), '--max-position', '512'],
      ...['--dropout', '0.1'],
      ...shapeFlags(shape),
    ]);
  }
  return dir;
}

/** mulberry32: a small seeded generator of floats in [0, 1). */
function generator(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function run({ quick, threads, shapes }) {
  const plan = (
    quick
      ? [{ shape: SHAPES.tiny, batchSize: 32, warmup: 1, blocks: 2, blockSteps: 1 }]
      : [
          { shape: SHAPES.tiny, batchSize: 32, warmup: 2, blocks: 6, blockSteps: 2 },
          { shape: SHAPES.small, batchSize: 32, warmup: 1, blocks: 4, blockSteps: 2 },
          { shape: SHAPES['bert-base'], batchSize: 8, warmup: 1, blocks: 4, blockSteps: 1 },
        ]
  ).filter((p) => !shapes || shapes.includes(p.shape.name));
  if (threads) binding.setNumThreads(threads);
  const ourThreads = binding.getNumThreads();
  const tok = await tokenizer();
  const vocabSize = tok.maskingVocabulary().vocabSize;
  const maxLength = 128;
  const results = [];
  for (const p of plan) {
    const dir = folder(p.shape, vocabSize);
    const { texts } = await examples(p.batchSize);
    const sentences = texts.map((t) => t.split(/\s+/).filter(Boolean));
    const random = generator(TAG_SEED);
    const tags = sentences.map((words) => Int32Array.from(words, () => Math.floor(random() * TAGS.length)));
    const rows = encodeWords(tok, sentences, maxLength);
    const batch = wordBatch(
      rows,
      Array.from({ length: sentences.length }, (_, i) => i),
      tags,
    );
    const labels = new Array(batch.batchSize * batch.seqLen).fill(-100);
    batch.positions.forEach((at, k) => {
      labels[at] = batch.labels[k];
    });
    const byRow = (a) => Array.from({ length: batch.batchSize }, (_, r) => Array.from(a).slice(r * batch.seqLen, (r + 1) * batch.seqLen));
    const batchFile = join(cacheDir, `token-batch-${p.shape.name}-${p.batchSize}.json`);
    writeFileSync(
      batchFile,
      JSON.stringify({ input_ids: byRow(batch.inputIds), attention_mask: byRow(batch.attentionMask), labels: byRow(labels) }),
    );

    // PyTorch: a server holding its model, so that the sides alternate.
    const reference = await startServer(join(root, 'test', 'python', 'reference_token_step.py'), [
      ...['--serve', '--folder', dir, '--batch', batchFile, '--num-labels', String(TAGS.length)],
      ...['--seed', String(HEAD_SEED), '--threads', String(ourThreads)],
    ]);
    // Ours: the model and trainee as lib/tagging/token-trainer.ts builds them.
    const loaded = await loadEncoderSource(dir, {
      device: 'cpu',
      tokenizer: tokenizerFile,
      maxLength,
      fallbackMaxLength: maxLength,
      classificationHead: true,
    });
    for (const [, t] of loaded.classificationHead) t.dispose();
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    const built = binding.buildClassifier(loaded.module, {
      head: 'token-classification',
      family: 'bert',
      numClasses: TAGS.length,
      headHidden: 1,
      pooling: 'cls',
      seed: HEAD_SEED,
      dropout: config.classifier_dropout ?? config.hidden_dropout_prob,
      initializerRange: config.initializer_range ?? 0.02,
    });
    const unused = new Set(built.unusedParameters);
    const params = built.module.namedParameters().filter(([n]) => !unused.has(n) && !n.startsWith('encoder.pooler.'));
    for (const [, t] of params) t.setRequiresGrad(true);
    const optimizer = new binding.AdamW([{ params: params.map(([, t]) => t), lr: 5e-5, weightDecay: 0.01 }]);
    const ours = {
      async steps(n) {
        const seconds = [];
        for (let i = 0; i < n; i++) {
          const t0 = performance.now();
          await binding.trainStep(built.module, optimizer, batch, { maxGradNorm: 0 });
          seconds.push((performance.now() - t0) / 1000);
        }
        return { seconds };
      },
    };
    const blocks = { ours: [], reference: [] };
    const all = { ours: [], reference: [] };
    let check;
    let refCheck;
    try {
      // The check step, each side: eval mode (no dropout), untimed; it must agree.
      built.module.train(false);
      check = await binding.trainStep(built.module, optimizer, batch, { maxGradNorm: 0 });
      built.module.train(true);
      refCheck = await reference.request({ cmd: 'check' });
      const lossGap = Math.abs(check.loss - refCheck.loss);
      const normGap = Math.abs(check.gradNorm - refCheck.gradNorm) / Math.abs(refCheck.gradNorm);
      if (!(lossGap <= LOSS_TOLERANCE) || !(normGap <= GRAD_NORM_TOLERANCE)) {
        throw new Error(
          `${p.shape.name}: the first step's loss or gradient norm differs from PyTorch's: loss ${check.loss} vs ${refCheck.loss} ` +
            `(|Δ| ${lossGap.toExponential(2)}, tolerance ${LOSS_TOLERANCE}), gradient norm ${check.gradNorm} vs ${refCheck.gradNorm} ` +
            `(relative ${normGap.toExponential(2)}, tolerance ${GRAD_NORM_TOLERANCE})`,
        );
      }
      // Warm-up, then blocks in alternating order: ours, PyTorch, PyTorch, ours, ...
      await ours.steps(p.warmup);
      await reference.request({ cmd: 'steps', n: p.warmup });
      for (let b = 0; b < p.blocks; b++) {
        for (const side of b % 2 === 0 ? ['ours', 'reference'] : ['reference', 'ours']) {
          const out = side === 'ours' ? await ours.steps(p.blockSteps) : await reference.request({ cmd: 'steps', n: p.blockSteps });
          blocks[side].push(median(out.seconds));
          all[side].push(...out.seconds);
        }
      }
    } finally {
      optimizer.dispose();
      built.module.dispose();
      loaded.module.dispose();
      await reference.close();
    }
    const tokens = p.batchSize * batch.seqLen;
    const ratio = median(blocks.ours) / median(blocks.reference);
    results.push({
      shape: p.shape.name,
      batch: `${p.batchSize}x${batch.seqLen}`,
      vocabSize,
      labelledWords: batch.positions.length,
      firstStep: { loss: check.loss, referenceLoss: refCheck.loss, gradNorm: check.gradNorm, referenceGradNorm: refCheck.gradNorm },
      ours: {
        median: median(blocks.ours),
        blocks: blocks.ours,
        steps: all.ours,
        tokensPerSecond: tokens / median(blocks.ours),
        threads: ourThreads,
      },
      reference: {
        median: median(blocks.reference),
        blocks: blocks.reference,
        steps: all.reference,
        tokensPerSecond: tokens / median(blocks.reference),
        threads: reference.ready.threads,
      },
      ratio,
      target: TARGETS.all,
    });
    console.error(
      `bench: token-step ${p.shape.name}: ours ${f(median(blocks.ours))} (${spread(blocks.ours)}), ` +
        `PyTorch ${f(median(blocks.reference))} (${spread(blocks.reference)}) s/step, ratio ${f(ratio, 3)}`,
    );
  }
  const markdown = [
    `**Token-classification (NER) training step vs PyTorch as transformers computes it** (forward + loss + backward + AdamW lr 5e-5, no clipping; ` +
      `torch-bert: the token-classification head on the words' first tokens only; PyTorch: test/python/reference_token_step.py, the classifier over ` +
      `every position then the loss on the labelled ones; reviews split at whitespace, each word's first token tagged with one of ${TAGS.length} tags drawn ` +
      `from a fixed seed, max length ${maxLength}, vocabulary ${vocabSize}; ${dataDescription}; first step in eval mode and untimed, its losses agree ` +
      `within ${LOSS_TOLERANCE}; both sides hold the model and alternate blocks of ` +
      `${plan.map((p) => p.blockSteps).join('/')} step(s), ${plan.map((p) => p.blocks).join('/')} blocks each after warm-up; ` +
      `s/step = median of the blocks' medians (spread: min–max of them); torch-bert ${ourThreads} / PyTorch ${results[0]?.reference.threads ?? '?'} thread(s)).`,
    '',
    table(
      [
        'shape',
        'batch',
        'labelled words',
        'first-step loss torch-bert / PyTorch',
        'torch-bert s/step (spread)',
        'PyTorch s/step (spread)',
        'torch-bert tokens/s',
        'PyTorch tokens/s',
        'ours/PyTorch',
        'target',
      ],
      results.map((r) => [
        shapeLabel(SHAPES[r.shape]),
        r.batch,
        String(r.labelledWords),
        `${f(r.firstStep.loss, 6)} / ${f(r.firstStep.referenceLoss, 6)}`,
        `${f(r.ours.median)} (${spread(r.ours.blocks)})`,
        `${f(r.reference.median)} (${spread(r.reference.blocks)})`,
        r.ours.tokensPerSecond.toFixed(0),
        r.reference.tokensPerSecond.toFixed(0),
        f(r.ratio, 3),
        `≤ ${r.target.toFixed(1)} ${r.ratio <= r.target ? 'yes' : '**no**'}`,
      ]),
    ),
  ].join('\n');
  return {
    settings: {
      maxLength,
      lr: 5e-5,
      weightDecay: 0.01,
      maxGradNorm: 0,
      dropout: 0.1,
      tags: TAGS,
      tagSeed: TAG_SEED,
      headSeed: HEAD_SEED,
      lossTolerance: LOSS_TOLERANCE,
      gradNormTolerance: GRAD_NORM_TOLERANCE,
      plan: plan.map((p) => ({ ...p, shape: p.shape.name })),
    },
    results,
    markdown,
  };
}
