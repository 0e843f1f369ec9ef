/**
 * Scaling and memory of the frozen technique end to end, and the tokenizer's share of it.
 *
 * Each point is one train() call (featureCache 'memory', 5 epochs, the small pre-trained encoder
 * of frozen-e2e) in a child process of its own, so that its peak RSS (getrusage's ru_maxrss,
 * the child's VmHWM, read at its end) is that run's alone. Grows the dataset (1k, 5k reviews at max
 * length 128) and the max length (64, 128, 256, 512 at 1k reviews). The 25k-review point is the
 * real job (bench/imdb-job.mjs, `npm run bench -- --only imdb-job`), too long for this suite.
 *
 * Memory bound checked per point: peak RSS ≤ model (encoder file size) + cached features
 * (examples × hidden × 4 bytes) + 500 MB.
 *
 * Tokenization: after its train() call each child tokenizes the same texts again alone
 * (TextTokenizer.encodeBatchAsync, what train() calls: worker threads from 1,024 texts), for reviews/s, MB/s of UTF-8 text, and its
 * share of the train() wall time. Target: ≤ 10% of the frozen end-to-end time.
 */
import { execFile } from 'node:child_process';
import { statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  dataDescription,
  dataModule,
  e2eSetup,
  examples,
  f,
  imdbParts,
  pct,
  table,
  timedTrain,
  tokenizer,
  tokenizerFile,
  useImdb,
} from './lib.mjs';

export const name = 'scaling';

const POINTS = [
  { examples: 1000, maxLength: 64 },
  { examples: 1000, maxLength: 128 },
  { examples: 1000, maxLength: 256 },
  { examples: 1000, maxLength: 512 },
  { examples: 5000, maxLength: 128 },
];
const QUICK_POINTS = [
  { examples: 100, maxLength: 64 },
  { examples: 200, maxLength: 64 },
];
const EPOCHS = 5;
const MB = 2 ** 20;

/** One point, in this (child) process. */
async function point({ quick, examples: n, maxLength }) {
  const setup = await e2eSetup(quick);
  // More than one shard's worth: read the train parts in order (examples() reads one file).
  const data = n <= 2500 ? await examples(n) : await examplesAcrossShards(n);
  const result = await timedTrain({
    data: { texts: data.texts, labels: data.labels },
    encoder: setup.encoder,
    tokenizer: tokenizerFile,
    technique: 'frozen',
    featureCache: 'memory',
    maxLength,
    batchSize: setup.batchSize,
    epochs: quick ? 2 : EPOCHS,
    learningRate: 1e-3,
    seed: 42,
  });
  const tok = await tokenizer();
  const t0 = performance.now();
  const encoded = await tok.encodeBatchAsync(data.texts, maxLength);
  const tokenizeSeconds = (performance.now() - t0) / 1000;
  const bytes = data.texts.reduce((s, t) => s + Buffer.byteLength(t, 'utf8'), 0);
  let realTokens = 0;
  for (const l of encoded.lengths) realTokens += l;
  return {
    examples: data.texts.length,
    maxLength,
    seconds: result.seconds,
    beforeFirstStepSeconds: result.beforeFirstStepSeconds,
    epochSeconds: result.epochSeconds,
    validationAccuracyBest: result.best.validationAccuracy,
    tokenizeSeconds,
    textBytes: bytes,
    realTokens,
    maxRssBytes: peakRssBytes(),
    encoderBytes: statSync(setup.encoder).size,
    hidden: setup.shape.hidden,
  };
}

/** The first `n` IMDB training reviews across the train parts, in order (read as one dataset). */
async function examplesAcrossShards(n) {
  if (!useImdb) return examples(n);
  const raw = await dataModule.loadExamples({ csv: imdbParts('train') });
  return { texts: raw.texts.slice(0, n), labels: raw.labels.slice(0, n) };
}

// VmHWM, not ru_maxrss (which Linux carries over from the parent across exec): see peak-rss.cjs.
const { peakRssBytes } = createRequire(import.meta.url)('./peak-rss.cjs');
const execFileAsync = promisify(execFile);
const self = fileURLToPath(import.meta.url);

export async function run({ quick }) {
  const setup = await e2eSetup(quick); // the encoder made (and cached) once, before the children
  const rows = [];
  for (const p of quick ? QUICK_POINTS : POINTS) {
    const { stdout } = await execFileAsync(process.execPath, [self, '--child', JSON.stringify({ quick, ...p })], {
      maxBuffer: 16 << 20,
      env: process.env,
    });
    const r = JSON.parse(stdout.trim().split('\n').at(-1));
    const featureBytes = r.examples * r.hidden * 4;
    const boundBytes = r.encoderBytes + featureBytes + 500 * MB;
    const row = { ...r, featureBytes, boundBytes, withinBound: r.maxRssBytes <= boundBytes, tokenizeShare: r.tokenizeSeconds / r.seconds };
    rows.push(row);
    console.error(
      `bench: scaling ${r.examples} x ${r.maxLength}: ${f(r.seconds, 1)} s, peak RSS ${f(r.maxRssBytes / MB, 0)} MB ` +
        `(bound ${f(boundBytes / MB, 0)}), tokenize ${f(r.tokenizeSeconds, 2)} s (${pct(row.tokenizeShare)})`,
    );
  }
  const base = rows.find((r) => r.examples === (quick ? 100 : 1000) && r.maxLength === (quick ? 64 : 128)) ?? rows[0];
  const md = rows.map((r) => [
    r.examples.toLocaleString('en-US'),
    String(r.maxLength),
    (r.realTokens / r.examples).toFixed(0),
    f(r.seconds, 1),
    `${f(r.seconds / base.seconds, 2)}x`,
    f(r.beforeFirstStepSeconds, 1),
    f(r.maxRssBytes / MB, 0),
    `${f((r.encoderBytes + r.featureBytes) / MB, 0)} + 500`,
    r.withinBound ? 'yes' : '**no**',
    `${f(r.examples / r.tokenizeSeconds, 0)} / ${f(r.textBytes / MB / r.tokenizeSeconds, 2)}`,
    pct(r.tokenizeShare),
  ]);
  const tokenizeMet = rows.every((r) => r.tokenizeShare <= 0.1);
  const memoryMet = rows.every((r) => r.withinBound);
  const markdown = [
    `**Scaling and memory of the frozen technique end to end** — one train() call per row (featureCache 'memory', ${quick ? 2 : EPOCHS} epochs, ` +
      `batch ${setup.batchSize}, 80/20 split), each in its own process; ${dataDescription} (more than 2,500 reviews: the train parts in order); ` +
      `${setup.encoderDescription}. Peak RSS = the process's VmHWM. Tokenizing: the same texts tokenized again alone ` +
      `(TextTokenizer.encodeBatchAsync, what train() runs: worker threads on all cores from 1,024 texts), reviews/s and MB/s of UTF-8 text, and its share of the train() time.`,
    '',
    table(
      [
        'reviews',
        'max length',
        'mean tokens',
        'train() s',
        `vs ${base.examples.toLocaleString('en-US')}×${base.maxLength}`,
        's before 1st step',
        'peak RSS MB',
        'bound MB (model + features + 500)',
        'within',
        'tokenize reviews/s / MB/s',
        'tokenize share',
      ],
      md,
    ),
    '',
    `Peak RSS within model + cached features + 500 MB: ${memoryMet ? 'met' : '**not met**'} for every row. ` +
      `Tokenization ≤ 10% of the end-to-end time: ${tokenizeMet ? 'met' : '**not met**'} for every row.`,
  ].join('\n');
  return {
    settings: { points: quick ? QUICK_POINTS : POINTS, epochs: quick ? 2 : EPOCHS, encoderDescription: setup.encoderDescription },
    results: { rows, memoryMet, tokenizeMet },
    markdown,
  };
}

if (process.argv.includes('--child')) {
  const spec = JSON.parse(process.argv[process.argv.indexOf('--child') + 1]);
  console.log(JSON.stringify(await point(spec)));
}
