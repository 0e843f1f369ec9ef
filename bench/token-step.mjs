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
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  alternateBlocks,
  batchRows,
  binding,
  blockSide,
  blocksNote,
  cacheDir,
  checkFirstStep,
  classifierTrainee,
  dataDescription,
  examples,
  f,
  hfFolder,
  logStep,
  median,
  root,
  SHAPES,
  seededRandom,
  startServer,
  stepPlan,
  stepRow,
  stepTable,
  tokenizer,
} from './lib.mjs';

export const name = 'token-step';

const TARGETS = { all: 1.0 };
/** CoNLL-2003's tags. */
const TAGS = ['O', 'B-PER', 'I-PER', 'B-ORG', 'I-ORG', 'B-LOC', 'I-LOC', 'B-MISC', 'I-MISC'];
const TAG_SEED = 2003;
const HEAD_SEED = 42;
const LOSS_TOLERANCE = 1e-4;
const GRAD_NORM_TOLERANCE = 1e-3;
const { encodeWords, wordBatch } = await import(join(root, 'dist', 'data', 'word-alignment.js'));

export async function run({ quick, threads, shapes }) {
  const plan = stepPlan(
    quick,
    {
      quick: [{ shape: SHAPES.tiny, batchSize: 32, warmup: 1, blocks: 2, blockSteps: 1 }],
      full: [
        { shape: SHAPES.tiny, batchSize: 32, warmup: 2, blocks: 6, blockSteps: 2 },
        { shape: SHAPES.small, batchSize: 32, warmup: 1, blocks: 4, blockSteps: 2 },
        { shape: SHAPES['bert-base'], batchSize: 8, warmup: 1, blocks: 4, blockSteps: 1 },
      ],
    },
    shapes,
  );
  if (threads) binding.setNumThreads(threads);
  const ourThreads = binding.getNumThreads();
  const tok = await tokenizer();
  const vocabSize = tok.maskingVocabulary().vocabSize;
  const maxLength = 128;
  const results = [];
  for (const p of plan) {
    const dir = hfFolder('token', p.shape, vocabSize, { layout: 'automodel', dropout: 0.1 });
    const { texts } = await examples(p.batchSize);
    const sentences = texts.map((t) => t.split(/\s+/).filter(Boolean));
    const random = seededRandom(TAG_SEED);
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
    const batchFile = join(cacheDir, `token-batch-${p.shape.name}-${p.batchSize}.json`);
    writeFileSync(
      batchFile,
      JSON.stringify({
        input_ids: batchRows(batch.inputIds, batch.batchSize, batch.seqLen),
        attention_mask: batchRows(batch.attentionMask, batch.batchSize, batch.seqLen),
        labels: batchRows(labels, batch.batchSize, batch.seqLen),
      }),
    );

    // PyTorch: a server holding its model, so that the sides alternate.
    const reference = await startServer(join(root, 'test', 'python', 'reference_token_step.py'), [
      ...['--serve', '--folder', dir, '--batch', batchFile, '--num-labels', String(TAGS.length)],
      ...['--seed', String(HEAD_SEED), '--threads', String(ourThreads)],
    ]);
    // Ours: the model and trainee as lib/tagging/token-trainer.ts builds them.
    let ours;
    let check;
    let refCheck;
    let timed;
    try {
      const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
      ours = await classifierTrainee(dir, maxLength, {
        head: 'token-classification',
        family: 'bert',
        numClasses: TAGS.length,
        headHidden: 1,
        pooling: 'cls',
        seed: HEAD_SEED,
        dropout: config.classifier_dropout ?? config.hidden_dropout_prob,
        initializerRange: config.initializer_range ?? 0.02,
      });
      // The check step, each side: eval mode (no dropout), untimed; it must agree.
      check = await ours.check(batch);
      refCheck = await reference.request({ cmd: 'check' });
      checkFirstStep(p.shape.name, check, refCheck, { loss: LOSS_TOLERANCE, gradNorm: GRAD_NORM_TOLERANCE });
      // Warm-up, then blocks in alternating order: ours, PyTorch, PyTorch, ours, ...
      timed = await alternateBlocks(
        (n) => ours.steps(batch, n),
        (n) => reference.request({ cmd: 'steps', n }),
        p,
      );
    } finally {
      ours?.dispose();
      await reference.close();
    }
    const { blocks, all } = timed;
    const tokens = p.batchSize * batch.seqLen;
    const ratio = median(blocks.ours) / median(blocks.reference);
    results.push({
      shape: p.shape.name,
      batch: `${p.batchSize}x${batch.seqLen}`,
      vocabSize,
      labelledWords: batch.positions.length,
      firstStep: { loss: check.loss, referenceLoss: refCheck.loss, gradNorm: check.gradNorm, referenceGradNorm: refCheck.gradNorm },
      ours: blockSide(blocks.ours, all.ours, tokens, ourThreads),
      reference: blockSide(blocks.reference, all.reference, tokens, reference.ready.threads),
      ratio,
      target: TARGETS.all,
    });
    logStep(name, p.shape.name, blocks, ratio);
  }
  const markdown = [
    `**Token-classification (NER) training step vs PyTorch as transformers computes it** (forward + loss + backward + AdamW lr 5e-5, no clipping; ` +
      `torch-bert: the token-classification head on the words' first tokens only; PyTorch: test/python/reference_token_step.py, the classifier over ` +
      `every position then the loss on the labelled ones; reviews split at whitespace, each word's first token tagged with one of ${TAGS.length} tags drawn ` +
      `from a fixed seed, max length ${maxLength}, vocabulary ${vocabSize}; ${dataDescription}; first step in eval mode and untimed, its losses agree ` +
      `within ${LOSS_TOLERANCE}; ${blocksNote(plan, ourThreads, results[0]?.reference.threads)}).`,
    '',
    stepTable(
      ['labelled words', 'first-step loss torch-bert / PyTorch'],
      results.map((r) => stepRow(r, [String(r.labelledWords), `${f(r.firstStep.loss, 6)} / ${f(r.firstStep.referenceLoss, 6)}`])),
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
