/**
 * Question-answering training step vs PyTorch as transformers computes it: one step of
 * BertForQuestionAnswering training on windows of real reviews, each asked the same question
 * ("what did the reviewer think ?") with the review as its context, windowed as run_qa.py does
 * (`questionWindows`: max length 384, doc stride 128, token types of the pair, every row padded to
 * 384: run_qa.py's pad_to_max_length default). Each review's answer is one of its words, drawn
 * from a fixed seed, at its character offset, so a window is labelled with that word's first and
 * last token where it holds it, else with [CLS] twice (run_qa.py's labels). At the tiny, small
 * and bert-base shapes (batch 16, 16, 4 windows), with bert-base-uncased's vocabulary when the
 * IMDB data and tokenizer are present (else the demo's).
 *
 * Ours: `binding.trainStep` on `buildClassifier`'s 'question-answering' module as
 * lib/answering/qa-trainer.ts builds it (no head dropout, BERT's head has none) and the batch
 * lib/answering/answer-task.ts's windowBatch makes (`positions` 0..2B-1, the labels start, end
 * of each window), AdamW lr 5e-5, no clipping, timed in JS around the awaited call. PyTorch:
 * test/python/reference_qa_step.py (qa_outputs over every token, (CE(start) + CE(end)) / 2 over
 * the padded rows). Same random weights (scripts/python/make_hf_folder.py, hidden and attention
 * dropout 0.1: token-step's folder), same qa_outputs init (the seed), same batch, same intra-op
 * thread count. Each side's first step runs in eval mode and untimed: its losses must agree
 * within 1e-4 (the gradient norms within 1e-3 relative), or the row fails. Then warm-up and
 * alternating blocks of timed steps in train mode, as token-step.
 */
import { writeFileSync } from 'node:fs';
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

export const name = 'qa-step';

const TARGETS = { all: 1.0 };
const QUESTION = 'what did the reviewer think ?';
const ANSWER_SEED = 2016;
const HEAD_SEED = 42;
const MAX_LENGTH = 384;
const DOC_STRIDE = 128;
const TOLERANCE = { loss: 1e-4, gradNorm: 1e-3 };
const { questionWindows } = await import(join(root, 'dist', 'answering', 'question-windows.js'));
const { windowBatch } = await import(join(root, 'dist', 'answering', 'answer-task.js'));

/**
 * The first `windows` windows of reviews asked QUESTION, each review's answer a word of it (a
 * run of letters, digits or _) drawn from ANSWER_SEED, as windowBatch makes the training batch.
 */
async function qaBatch(tok, windows) {
  const { texts } = await examples(windows);
  const random = seededRandom(ANSWER_SEED);
  const questions = texts.map((review, i) => {
    const words = Array.from(review.matchAll(/\w+/g));
    const word = words[Math.floor(random() * words.length)];
    return {
      id: `review-${i}`,
      question: QUESTION,
      context: review,
      answers: word ? { text: [word[0]], answerStart: [word.index] } : { text: [], answerStart: [] },
    };
  });
  const set = {
    examples: questions,
    windows: questionWindows(tok, questions, { maxLength: MAX_LENGTH, docStride: DOC_STRIDE, tokenTypes: true }),
    padToMaxLength: true,
  };
  const rows = Int32Array.from({ length: Math.min(windows, set.windows.encoded.count) }, (_, i) => i);
  const batch = windowBatch(set, rows, true);
  const reviews = new Set(Array.from(rows, (r) => set.windows.example[r])).size;
  return { batch, reviews };
}

export async function run({ quick, threads, shapes }) {
  const plan = stepPlan(
    quick,
    {
      quick: [{ shape: SHAPES.tiny, batchSize: 16, warmup: 1, blocks: 2, blockSteps: 1 }],
      full: [
        { shape: SHAPES.tiny, batchSize: 16, warmup: 2, blocks: 6, blockSteps: 2 },
        { shape: SHAPES.small, batchSize: 16, warmup: 1, blocks: 4, blockSteps: 2 },
        { shape: SHAPES['bert-base'], batchSize: 4, warmup: 1, blocks: 4, blockSteps: 1 },
      ],
    },
    shapes,
  );
  if (threads) binding.setNumThreads(threads);
  const ourThreads = binding.getNumThreads();
  const tok = await tokenizer();
  const vocabSize = tok.maskingVocabulary().vocabSize;
  const results = [];
  for (const p of plan) {
    // The encoder token-step trains (the same folder: random weights, dropout 0.1).
    const dir = hfFolder('token', p.shape, vocabSize, { layout: 'automodel', dropout: 0.1 });
    const { batch, reviews } = await qaBatch(tok, p.batchSize);
    if (batch.batchSize < p.batchSize) throw new Error(`${p.shape.name}: only ${batch.batchSize} windows (asked for ${p.batchSize})`);
    const starts = batch.labels.filter((_, i) => i % 2 === 0);
    const ends = batch.labels.filter((_, i) => i % 2 === 1);
    const answered = starts.filter((s, i) => s !== 0 || ends[i] !== 0).length;
    const batchFile = join(cacheDir, `qa-batch-${p.shape.name}-${p.batchSize}.json`);
    writeFileSync(
      batchFile,
      JSON.stringify({
        input_ids: batchRows(batch.inputIds, batch.batchSize, batch.seqLen),
        attention_mask: batchRows(batch.attentionMask, batch.batchSize, batch.seqLen),
        token_type_ids: batchRows(batch.tokenTypeIds, batch.batchSize, batch.seqLen),
        start_positions: Array.from(starts),
        end_positions: Array.from(ends),
      }),
    );

    // PyTorch: a server holding its model, so that the sides alternate.
    const reference = await startServer(join(root, 'test', 'python', 'reference_qa_step.py'), [
      ...['--serve', '--folder', dir, '--batch', batchFile],
      ...['--seed', String(HEAD_SEED), '--threads', String(ourThreads)],
    ]);
    // Ours: the model and trainee as lib/answering/qa-trainer.ts (answerTrainee) builds them.
    let ours;
    let check;
    let refCheck;
    let timed;
    try {
      ours = await classifierTrainee(dir, MAX_LENGTH, {
        head: 'question-answering',
        family: 'bert',
        numClasses: 2,
        headHidden: 1,
        pooling: 'cls',
        seed: HEAD_SEED,
        dropout: 0,
        initializerRange: 0.02,
      });
      check = await ours.check(batch);
      refCheck = await reference.request({ cmd: 'check' });
      checkFirstStep(p.shape.name, check, refCheck, TOLERANCE);
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
    const tokens = batch.batchSize * batch.seqLen;
    const ratio = median(blocks.ours) / median(blocks.reference);
    results.push({
      shape: p.shape.name,
      batch: `${batch.batchSize}x${batch.seqLen}`,
      vocabSize,
      reviews,
      answeredWindows: answered,
      realTokens: batch.attentionMask.reduce((a, b) => a + b, 0),
      firstStep: { loss: check.loss, referenceLoss: refCheck.loss, gradNorm: check.gradNorm, referenceGradNorm: refCheck.gradNorm },
      ours: blockSide(blocks.ours, all.ours, tokens, ourThreads),
      reference: blockSide(blocks.reference, all.reference, tokens, reference.ready.threads),
      ratio,
      target: TARGETS.all,
    });
    logStep(name, p.shape.name, blocks, ratio);
  }
  const markdown = [
    `**Question-answering training step vs PyTorch as transformers computes it** (forward + loss + backward + AdamW lr 5e-5, no clipping; ` +
      `torch-bert: buildClassifier's question-answering head, the 2B start and end rows; PyTorch: test/python/reference_qa_step.py, ` +
      `qa_outputs over every token, (CE(start) + CE(end)) / 2; reviews as contexts of the question "${QUESTION}", windows of ${MAX_LENGTH} ` +
      `tokens with doc stride ${DOC_STRIDE} and token types, padded to ${MAX_LENGTH}, each review's answer one of its words drawn from a fixed seed; ` +
      `vocabulary ${vocabSize}; ${dataDescription}; dropout 0.1 in the encoder; first step in eval mode and untimed, its losses agree ` +
      `within ${TOLERANCE.loss}; ${blocksNote(plan, ourThreads, results[0]?.reference.threads)}; tokens/s counts the padded rows).`,
    '',
    stepTable(
      ['reviews', 'windows holding the answer', 'real tokens', 'first-step loss torch-bert / PyTorch'],
      results.map((r) =>
        stepRow(r, [
          String(r.reviews),
          String(r.answeredWindows),
          String(r.realTokens),
          `${f(r.firstStep.loss, 6)} / ${f(r.firstStep.referenceLoss, 6)}`,
        ]),
      ),
    ),
  ].join('\n');
  return {
    settings: {
      maxLength: MAX_LENGTH,
      docStride: DOC_STRIDE,
      padToMaxLength: true,
      question: QUESTION,
      lr: 5e-5,
      weightDecay: 0.01,
      maxGradNorm: 0,
      dropout: 0.1,
      answerSeed: ANSWER_SEED,
      headSeed: HEAD_SEED,
      lossTolerance: TOLERANCE.loss,
      gradNormTolerance: TOLERANCE.gradNorm,
      plan: plan.map((p) => ({ ...p, shape: p.shape.name })),
    },
    results,
    markdown,
  };
}
