/**
 * Predicting: Classifier.predict() through the public API (dist/index.js) on real IMDB test
 * reviews, against PyTorch's inference forward of the same saved classifier on the same token ids.
 *
 * The classifier: one saved by train() per shape and max length (frozen, 1 epoch on 40 reviews of
 * the training data; cached in bench/.cache: the weights do not matter for speed), on the
 * random-weight encoder of bench/.cache.
 *
 * Three sides per row, each run one pass over the texts; predict alternates with the other two in
 * blocks (predict first, then last), and forward and PyTorch take turns every few batches:
 *   predict  `classifier.predict(texts)` (batchSize 32, its default), wall time of the awaited call:
 *            tokenizing, batching, and the batches' native evaluation steps;
 *   forward  the native calls alone: `binding.evalStep` on the classifier's module with the
 *            batches predict ran, in its order (recorded from a first, untimed predict()), timed
 *            in JS around the awaited calls. What predict spends outside the model (tokenizing,
 *            above 4,096 texts first measuring each text's length, batching) is its time outside
 *            its own evalStep calls, measured within the same call;
 *   PyTorch  bench/predict.py: classifier.pt loaded with torch.jit.load (the traced encoder and
 *            the head), under torch.inference_mode(), the same batches (rows, order, padding),
 *            softmax; timed by the Python process itself. No tokenizing (no `tokenizers` there).
 * ours/PyTorch = forward / PyTorch: equal work. Target ≤ 1.0 (the same kernels; token pruning,
 * the last layer for the [CLS] row alone, may put ours below). Before timing, the recorded
 * probabilities of predict() must equal PyTorch's within 1e-4 on every text, or the benchmark fails.
 *
 * Peak RSS: predict() over 25,000 test reviews in a fresh process (VmHWM, bench/peak-rss.cjs).
 */
import { execFile } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  binding,
  cacheDir,
  dataModule,
  encoder,
  examples,
  f,
  imdbParts,
  pct,
  root,
  SHAPES,
  shapeLabel,
  spread,
  startServer,
  stats,
  table,
  tokenizerFile,
  torchBert,
  useImdb,
} from './lib.mjs';

export const name = 'predict';

const PLAN = [
  // Above INFERENCE_CHUNK (4,096): predict's chunked way (lengths first, then 4,096 rows at a time).
  { shape: SHAPES.tiny, maxLength: 128, texts: 4200, runs: 3 },
  { shape: SHAPES.tiny, maxLength: 512, texts: 500, runs: 3 },
  { shape: SHAPES.small, maxLength: 128, texts: 500, runs: 3 },
  { shape: SHAPES['bert-base'], maxLength: 128, texts: 48, runs: 2 },
];
const QUICK_PLAN = [{ shape: SHAPES.tiny, maxLength: 128, texts: 300, runs: 1 }];
const RSS_POINT = { shape: SHAPES.tiny, maxLength: 512, texts: 25000 };
// Just above INFERENCE_CHUNK, for the chunked way.
const QUICK_RSS_POINT = { shape: SHAPES.tiny, maxLength: 128, texts: 4500 };
/** predict()'s default batch size, named so that both sides say what they ran. */
const BATCH_SIZE = 32;
const TOLERANCE = 1e-4;
const TARGET = 1.0;
const TRAIN_TEXTS = 40;
/** Batches each of the forward and PyTorch sides runs before the other takes its turn. */
const SLICE = 4;
const MB = 2 ** 20;

const { peakRssBytes } = createRequire(import.meta.url)('./peak-rss.cjs');
const execFileAsync = promisify(execFile);
const self = fileURLToPath(import.meta.url);

/** The first `n` IMDB test reviews, the parts read in order. */
async function testTexts(n) {
  const raw = await dataModule.loadExamples({ csv: imdbParts('test'), textColumn: 'text', labelColumn: 'label' });
  if (raw.texts.length < n) throw new Error(`only ${raw.texts.length} IMDB test reviews (asked for ${n})`);
  return raw.texts.slice(0, n);
}

/** A classifier folder saved by train() for `shape` at `maxLength` (made once, then cached). */
async function classifierFolder(shape, maxLength) {
  const enc = await encoder(shape);
  const dir = join(cacheDir, `predict-${basename(enc.file, '.pt')}-len${maxLength}`);
  if (existsSync(join(dir, 'config.json'))) return dir;
  // A folder without config.json is a run that did not finish: train() refuses to write over it.
  rmSync(dir, { recursive: true, force: true });
  console.error(`bench: predict: training a ${shape.name} classifier at max length ${maxLength} (once, then cached) ...`);
  const data = await examples(TRAIN_TEXTS);
  const result = await torchBert.train({
    data: { texts: data.texts, labels: data.labels },
    encoder: enc.file,
    tokenizer: tokenizerFile,
    technique: 'frozen',
    maxLength,
    epochs: 1,
    batchSize: 16,
    seed: 42,
    outDir: dir,
  });
  result.classifier.dispose();
  return dir;
}

/**
 * One predict() of `texts`, untimed, with every batch it hands to `binding.evalStep` recorded
 * (its ids, mask and the probabilities it got back): the batches the other two sides run.
 */
async function recordPredict(classifier, texts) {
  const evalStep = binding.evalStep;
  const batches = [];
  binding.evalStep = async (model, batch, loss) => {
    const inputs = {
      inputIds: batch.inputIds.slice(),
      attentionMask: batch.attentionMask.slice(),
      batchSize: batch.batchSize,
      seqLen: batch.seqLen,
    };
    const result = await evalStep.call(binding, model, batch, loss);
    batches.push({ inputs, probabilities: result.probabilities.slice() });
    return result;
  };
  try {
    await classifier.predict(texts, { batchSize: BATCH_SIZE });
  } finally {
    binding.evalStep = evalStep;
  }
  const rows = batches.reduce((n, b) => n + b.inputs.batchSize, 0);
  if (rows !== texts.length) {
    throw new Error(
      `predict() of ${texts.length} texts ran ${rows} rows through binding.evalStep: this benchmark no longer sees predict's batches`,
    );
  }
  return batches;
}

/** The recorded batches as bench/predict.py reads them: raw int32 ids then mask per batch, and their shapes. */
function writeBatches(batches, file) {
  const parts = batches.flatMap(({ inputs }) => [inputs.inputIds, inputs.attentionMask]);
  writeFileSync(`${file}.bin`, Buffer.concat(parts.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))));
  writeFileSync(
    `${file}.json`,
    JSON.stringify({ file: `${file}.bin`, shapes: batches.map(({ inputs }) => [inputs.batchSize, inputs.seqLen]) }),
  );
  return `${file}.json`;
}

/** Largest absolute difference between our recorded probabilities and PyTorch's (both in batch order). */
function largestDifference(batches, reference) {
  const ours = batches.flatMap((b) => Array.from(b.probabilities));
  if (ours.length !== reference.length) throw new Error(`PyTorch gave ${reference.length} probabilities, predict() ${ours.length}`);
  let worst = 0;
  for (let i = 0; i < ours.length; i++) worst = Math.max(worst, Math.abs(ours[i] - reference[i]));
  return worst;
}

/**
 * One timed predict(): its seconds, and the seconds inside its `binding.evalStep` calls (the rest
 * is tokenizing and batching; measured within the call, since passes apart see different loads).
 */
async function timePredict(classifier, texts) {
  const evalStep = binding.evalStep;
  let model = 0;
  binding.evalStep = async (...args) => {
    const t0 = performance.now();
    try {
      return await evalStep.apply(binding, args);
    } finally {
      model += performance.now() - t0;
    }
  };
  const t0 = performance.now();
  try {
    await classifier.predict(texts, { batchSize: BATCH_SIZE });
  } finally {
    binding.evalStep = evalStep;
  }
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, outsideShare: 1 - model / 1000 / seconds };
}

async function timeForward(module, batches) {
  const t0 = performance.now();
  for (const { inputs } of batches) await binding.evalStep(module, inputs);
  return (performance.now() - t0) / 1000;
}

/**
 * One pass of the forward and PyTorch sides over every batch, taking turns every `SLICE` batches
 * (who goes first alternates), each side's time summed: on a shared machine both see the same
 * load, which whole passes one after the other did not (the same pass took 4.6 to 13.1 s).
 */
async function forwardAndPytorch(module, batches, reference) {
  const seconds = { forward: 0, pytorch: 0 };
  for (let start = 0; start < batches.length; start += SLICE) {
    const end = Math.min(batches.length, start + SLICE);
    const sides = (start / SLICE) % 2 === 0 ? ['forward', 'pytorch'] : ['pytorch', 'forward'];
    for (const side of sides) {
      if (side === 'forward') seconds.forward += await timeForward(module, batches.slice(start, end));
      else seconds.pytorch += (await reference.request({ cmd: 'batches', start, end })).seconds;
    }
  }
  return seconds;
}

/** One row of the table: the three sides over `p.texts` reviews. */
async function measure(p, threads) {
  const dir = await classifierFolder(p.shape, p.maxLength);
  const texts = await testTexts(p.texts);
  const classifier = await torchBert.loadClassifier(dir);
  let reference;
  try {
    const batches = await recordPredict(classifier, texts);
    const batchesFile = writeBatches(batches, join(cacheDir, `predict-batches-${p.shape.name}-len${p.maxLength}-${p.texts}`));
    reference = await startServer(join(root, 'bench', 'predict.py'), [
      '--classifier',
      join(dir, 'classifier.pt'),
      '--batches',
      batchesFile,
      ...(threads ? ['--threads', String(threads)] : []),
    ]);
    // Warm-up, untimed: PyTorch's first pass gives the probabilities to check (its profiling
    // executor's first calls run differently), then one more pass of each side (ours had the
    // recording predict()).
    const difference = largestDifference(batches, (await reference.request({ cmd: 'probabilities' })).probabilities);
    if (!(difference <= TOLERANCE)) {
      throw new Error(
        `${p.shape.name} at max length ${p.maxLength}: predict()'s probabilities differ from PyTorch's by ${difference} (> ${TOLERANCE}): the sides do not compute the same thing`,
      );
    }
    await forwardAndPytorch(classifier.module, batches, reference);
    const runs = { predict: [], outsideShare: [], forward: [], pytorch: [] };
    for (let r = 0; r < p.runs; r++) {
      const order = r % 2 === 0 ? ['predict', 'model'] : ['model', 'predict'];
      for (const side of order) {
        if (side === 'predict') {
          const { seconds, outsideShare } = await timePredict(classifier, texts);
          runs.predict.push(seconds);
          runs.outsideShare.push(outsideShare);
        } else {
          const seconds = await forwardAndPytorch(classifier.module, batches, reference);
          runs.forward.push(seconds.forward);
          runs.pytorch.push(seconds.pytorch);
        }
      }
      console.error(
        `bench: predict ${p.shape.name} x${p.maxLength} run ${r + 1}: predict ${f(runs.predict.at(-1), 2)} s, ` +
          `forward ${f(runs.forward.at(-1), 2)} s, PyTorch ${f(runs.pytorch.at(-1), 2)} s (${p.texts} texts)`,
      );
    }
    let realTokens = 0;
    let paddedTokens = 0;
    for (const { inputs } of batches) {
      for (const m of inputs.attentionMask) realTokens += m;
      paddedTokens += inputs.batchSize * inputs.seqLen;
    }
    const predict = stats(runs.predict);
    const forward = stats(runs.forward);
    const pytorch = stats(runs.pytorch);
    return {
      shape: p.shape.name,
      maxLength: p.maxLength,
      texts: p.texts,
      batches: batches.length,
      meanTokens: realTokens / p.texts,
      paddingShare: 1 - realTokens / paddedTokens,
      runs: p.runs,
      predict,
      forward,
      pytorch,
      outsideModelShare: stats(runs.outsideShare),
      ratio: forward.median / pytorch.median,
      predictOverPytorch: predict.median / pytorch.median,
      largestProbabilityDifference: difference,
      threads: { ours: binding.getNumThreads(), reference: reference.ready.threads },
      met: forward.median / pytorch.median <= TARGET,
    };
  } finally {
    classifier.dispose();
    await reference?.close();
  }
}

/** The peak RSS point, in this (child) process: load, then one predict() over the texts. */
async function rssPoint({ dir, texts: n }) {
  const texts = await testTexts(n);
  const classifier = await torchBert.loadClassifier(dir);
  const beforePredict = peakRssBytes();
  const t0 = performance.now();
  await classifier.predict(texts, { batchSize: BATCH_SIZE });
  const seconds = (performance.now() - t0) / 1000;
  classifier.dispose();
  return { texts: n, seconds, peakBeforePredictBytes: beforePredict, peakBytes: peakRssBytes() };
}

async function measureRss(point) {
  const dir = await classifierFolder(point.shape, point.maxLength);
  const { stdout } = await execFileAsync(process.execPath, [self, '--child', JSON.stringify({ dir, texts: point.texts })], {
    maxBuffer: 16 << 20,
    env: process.env,
  });
  const r = JSON.parse(stdout.trim().split('\n').at(-1));
  console.error(
    `bench: predict peak RSS ${point.shape.name} x${point.maxLength}, ${point.texts} texts: ${f(r.peakBytes / MB, 0)} MB ` +
      `(${f(r.peakBeforePredictBytes / MB, 0)} MB before predict), ${f(r.seconds, 1)} s`,
  );
  return { shape: point.shape.name, maxLength: point.maxLength, ...r };
}

export async function run({ quick, threads, shapes }) {
  if (!useImdb || !existsSync(imdbParts('test')[0])) {
    const reason = `the IMDB test reviews (${imdbParts('test')[0]}) or the bert-base-uncased tokenizer are not under ../shared: predict is measured on them only`;
    console.error(`bench: predict skipped: ${reason}`);
    return { settings: {}, results: { skipped: reason }, markdown: `Skipped: ${reason}.` };
  }
  if (threads) binding.setNumThreads(threads);
  const plan = (quick ? QUICK_PLAN : PLAN).filter((p) => !shapes || shapes.includes(p.shape.name));
  const rows = [];
  for (const p of plan) rows.push(await measure(p, threads));
  const rss = await measureRss(quick ? QUICK_RSS_POINT : RSS_POINT);

  const perSecond = (n, s) => f(n / s.median, n / s.median < 10 ? 2 : 0);
  const md = rows.map((r) => [
    shapeLabel(SHAPES[r.shape]),
    String(r.maxLength),
    r.texts.toLocaleString('en-US'),
    `${f(r.meanTokens, 0)} / ${pct(r.paddingShare)}`,
    `${perSecond(r.texts, r.predict)} (${f(r.predict.median, 2)} s, ${spread(r.predict.runs, 2)})`,
    `${perSecond(r.texts, r.forward)} (${f(r.forward.median, 2)} s, ${spread(r.forward.runs, 2)})`,
    `${perSecond(r.texts, r.pytorch)} (${f(r.pytorch.median, 2)} s, ${spread(r.pytorch.runs, 2)})`,
    `${pct(r.outsideModelShare.median)} (${pct(Math.min(...r.outsideModelShare.runs))}–${pct(Math.max(...r.outsideModelShare.runs))})`,
    f(r.ratio, 3),
    f(r.predictOverPytorch, 3),
    `≤ ${TARGET.toFixed(1)} ${r.met ? 'yes' : '**no**'}`,
  ]);
  const threadNote = rows[0] ? `torch-bert ${rows[0].threads.ours} / PyTorch ${rows[0].threads.reference} intra-op thread(s)` : '';
  const worst = Math.max(...rows.map((r) => r.largestProbabilityDifference));
  const markdown = [
    `**Predicting: \`classifier.predict(texts)\` vs PyTorch's inference forward** — IMDB test reviews in order (bert-base-uncased tokenizer), ` +
      `a classifier saved by train() (frozen; random-weight encoder), batch size ${BATCH_SIZE} (predict's default: longest texts first, ` +
      `at most 2,048 tokens a batch, each padded to its longest). predict = the awaited call through dist/index.js, tokenizing included; ` +
      `outside the model = predict's time outside its binding.evalStep calls (tokenizing, batching), measured within each call; ` +
      `forward = the same evaluation steps (binding.evalStep on predict's recorded batches) without tokenizing; PyTorch = bench/predict.py, ` +
      `classifier.pt under torch.jit.load and torch.inference_mode() on the same batches, timed by Python, no tokenizing. ` +
      `Texts/s (median s of ${rows.map((r) => r.runs).join('/')} run(s), spread); forward and PyTorch take turns every ${SLICE} batches ` +
      `within a pass, predict alternates with that pass; ${threadNote}. ` +
      `Probabilities of predict() and PyTorch agree within ${worst.toExponential(1)} on every text (checked ≤ ${TOLERANCE}).`,
    '',
    table(
      [
        'shape',
        'max length',
        'texts',
        'mean tokens / padding',
        'predict texts/s (s, spread)',
        'forward texts/s (s, spread)',
        'PyTorch texts/s (s, spread)',
        "predict's time outside the model (spread)",
        'forward / PyTorch',
        'predict / PyTorch',
        'target',
      ],
      md,
    ),
    '',
    `Peak RSS of predict() over ${rss.texts.toLocaleString('en-US')} test reviews in a fresh process (${shapeLabel(SHAPES[rss.shape])}, ` +
      `max length ${rss.maxLength}; VmHWM): ${f(rss.peakBytes / MB, 0)} MB (${f(rss.peakBeforePredictBytes / MB, 0)} MB after loading ` +
      `the reviews and the classifier), ${f(rss.seconds, 1)} s (${f(rss.texts / rss.seconds, 0)} texts/s).`,
  ].join('\n');
  return {
    settings: { plan: plan.map((p) => ({ ...p, shape: p.shape.name })), batchSize: BATCH_SIZE, tolerance: TOLERANCE, target: TARGET },
    results: { rows, rss, met: rows.every((r) => r.met) },
    markdown,
  };
}

if (process.argv.includes('--child')) {
  const spec = JSON.parse(process.argv[process.argv.indexOf('--child') + 1]);
  console.log(JSON.stringify(await rssPoint(spec)));
}
