/**
 * Shared pieces of the benchmarks (`npm run bench`): paths, data, encoders, the Python side,
 * statistics, machine facts and Markdown tables.
 *
 * Data: IMDB reviews from ../shared/data/imdb with the real bert-base-uncased tokenizer when
 * both are present; else the embedded demo reviews and tokenizer (with a message saying so;
 * TORCH_BERT_BENCH_DATA=demo forces it).
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readlinkSync, realpathSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const PYTHON = '/usr/bin/python3';
export const cacheDir = join(root, 'bench', '.cache');
mkdirSync(cacheDir, { recursive: true });

const dist = join(root, 'dist');
if (!existsSync(join(dist, 'index.js'))) {
  console.error('bench: dist/ is missing; run `npx tsc -p tsconfig.json` (and `npm run build:native`) first');
  process.exit(1);
}
export const torchBert = await import(join(dist, 'index.js'));
export const dataModule = await import(join(dist, 'data', 'data.js'));
export const tokenizerModule = await import(join(dist, 'data', 'tokenizer.js'));
export const binding = torchBert.loadBinding();

// ---- data ------------------------------------------------------------------------------
const shared = resolve(root, '..', 'shared');
const imdbDir = join(shared, 'data', 'imdb');
const bertTokenizer = join(shared, 'models', 'bert-base-uncased', 'tokenizer.json');
/** TORCH_BERT_BENCH_DATA=demo forces the fallback (to test it where IMDB is present). */
const forceDemo = process.env.TORCH_BERT_BENCH_DATA === 'demo';
/** The first `count` of IMDB's ten parts of `split` ('train' or 'test'), in order. */
export const imdbParts = (split, count = 10) =>
  Array.from({ length: count }, (_, i) => join(imdbDir, `${split}-${String(i).padStart(2, '0')}-of-10.csv`));
export const useImdb = !forceDemo && existsSync(join(imdbDir, 'train-00-of-10.csv')) && existsSync(bertTokenizer);
export const tokenizerFile = useImdb ? bertTokenizer : join(root, 'assets', 'demo', 'tokenizer.json');
/** The reviews every benchmark draws from (IMDB train shard 0, or the demo reviews). */
export const dataFile = useImdb ? join(imdbDir, 'train-00-of-10.csv') : join(root, 'assets', 'demo', 'reviews.csv');
/** A disjoint set for making the small encoder informative (IMDB train shard 1, or the demo pre-training set). */
export const pretrainSource = useImdb ? join(imdbDir, 'train-01-of-10.csv') : join(root, 'assets', 'demo', 'pretrain.csv');
export const dataDescription = useImdb
  ? 'IMDB train-00-of-10 (bert-base-uncased tokenizer)'
  : 'embedded demo reviews (assets/demo; IMDB or the bert-base-uncased tokenizer not found under ../shared)';
if (!useImdb && !forceDemo) {
  console.error(
    `bench: ${join(imdbDir, 'train-00-of-10.csv')} or ${bertTokenizer} not found; ` +
      'using the embedded demo reviews and tokenizer (assets/demo) instead — numbers are not comparable with IMDB runs',
  );
}

let rawCache;
/** The first `n` examples (after `offset`) of the benchmark data: { texts, labels } (raw labels). */
export async function examples(n, offset = 0) {
  rawCache ??= await dataModule.loadExamples({ csv: dataFile, textColumn: 'text', labelColumn: 'label' });
  const end = Math.min(rawCache.texts.length, offset + n);
  if (end - offset < n) console.error(`bench: only ${end - offset} examples available (asked for ${n})`);
  return { texts: rawCache.texts.slice(offset, end), labels: rawCache.labels.slice(offset, end), origin: rawCache.origin };
}

let tokenizerCache;
export async function tokenizer() {
  tokenizerCache ??= await tokenizerModule.TextTokenizer.load(tokenizerFile);
  return tokenizerCache;
}

/** A training batch of `batchSize` real reviews (their class ids as labels), tokenized, truncated or padded to `seqLen`. */
export async function reviewBatch(batchSize, seqLen) {
  const data = await examples(batchSize);
  const names = dataModule.inferLabelNames(data.labels, data.origin);
  const encoded = (await tokenizer()).encodeBatch(data.texts, seqLen);
  return {
    inputIds: encoded.inputIds,
    attentionMask: encoded.attentionMask,
    batchSize: encoded.count,
    seqLen: encoded.seqLen,
    labels: dataModule.labelIds(data.labels, names, data.origin),
  };
}

// ---- encoders --------------------------------------------------------------------------
export const SHAPES = {
  tiny: { name: 'tiny', layers: 2, hidden: 128, heads: 2, intermediate: 512 },
  small: { name: 'small', layers: 4, hidden: 256, heads: 4, intermediate: 1024 },
  'bert-base': { name: 'bert-base', layers: 12, hidden: 768, heads: 12, intermediate: 3072 },
};

export const shapeLabel = (s) => `${s.name} (${s.layers}L, H=${s.hidden})`;
/** A shape as the flags scripts/python/make_encoder.py and make_hf_folder.py both take. */
export const shapeFlags = (s) => [
  ...['--layers', String(s.layers), '--hidden', String(s.hidden)],
  ...['--heads', String(s.heads), '--intermediate', String(s.intermediate)],
];

/** Pre-training set for the informative encoder: `rows` labelled reviews disjoint from `dataFile`, as a CSV in the cache. */
async function pretrainCsv(rows) {
  const file = join(cacheDir, `pretrain-${useImdb ? 'imdb' : 'demo'}-${rows}.csv`);
  if (existsSync(file)) return file;
  const raw = await dataModule.loadExamples({ csv: pretrainSource, textColumn: 'text', labelColumn: 'label' });
  const quote = (s) => `"${String(s).replace(/"/g, '""')}"`;
  const n = Math.min(rows, raw.texts.length);
  const lines = ['text,label'];
  for (let i = 0; i < n; i++) lines.push(`${quote(raw.texts[i])},${quote(raw.labels[i])}`);
  writeFileSync(`${file}.tmp`, lines.join('\n') + '\n');
  renameSync(`${file}.tmp`, file);
  return file;
}

/**
 * A TorchScript BERT of `shape` made by scripts/python/make_encoder.py (cached in bench/.cache).
 * Random weights, or with `pretrain` ({ rows, epochs, maxLength }) first fine-tuned on a
 * disjoint labelled set so that its [CLS] features carry information.
 * Returns { file, made: seconds spent making it now (0 when cached) }.
 */
export async function encoder(shape, pretrain) {
  const tag = pretrain ? `-pretrained${pretrain.rows}x${pretrain.epochs}-len${pretrain.maxLength}-lr${pretrain.lr}` : '';
  const file = join(cacheDir, `${shape.name}-${useImdb ? 'bert' : 'demo'}${tag}.pt`);
  if (existsSync(file)) return { file, made: 0 };
  const t0 = performance.now();
  const args = [
    join(root, 'scripts', 'python', 'make_encoder.py'),
    '--out',
    file,
    '--tokenizer',
    tokenizerFile,
    ...shapeFlags(shape),
    '--seed',
    '0',
  ];
  if (pretrain) {
    const csv = await pretrainCsv(pretrain.rows);
    console.error(
      `bench: making the ${shape.name} encoder informative: pre-training on ${csv} (${pretrain.epochs} epochs; once, then cached) ...`,
    );
    args.push(
      '--pretrain',
      csv,
      '--pretrain-epochs',
      String(pretrain.epochs),
      '--pretrain-max-length',
      String(pretrain.maxLength),
      '--pretrain-lr',
      String(pretrain.lr),
    );
  } else {
    console.error(`bench: making the ${shape.name} encoder (random weights) ...`);
  }
  const { stderr } = await execFileAsync(PYTHON, args, { maxBuffer: 64 << 20 });
  writeFileSync(`${file}.log`, stderr);
  if (pretrain) console.error(`bench:   ${pretrainSummary(file)}`);
  return { file, made: (performance.now() - t0) / 1000 };
}

/** The last pre-training epoch's line of make_encoder.py's log (kept next to the encoder), e.g. "pretrain epoch 3: loss ... | held-out loss ... acc 0.74". */
export function pretrainSummary(file) {
  if (!existsSync(`${file}.log`)) return null;
  const line = readFileSync(`${file}.log`, 'utf8')
    .split('\n')
    .filter((l) => l.includes('pretrain epoch'))
    .at(-1);
  return line ? line.replace(/^\[make_encoder\] /, '').replace(/\s*\([\d.]+s\)$/, '') : null;
}

// ---- Python ----------------------------------------------------------------------------
/** Run a Python reference of test/python with the system Python; its stdout parsed as JSON. */
export async function python(script, args) {
  const { stdout } = await execFileAsync(PYTHON, [join(root, 'test', 'python', script), ...args], { maxBuffer: 256 << 20 });
  return JSON.parse(stdout);
}

/**
 * A persistent Python process (the system Python running `script` with `args`) that both sides
 * of a comparison keep alive, so that their runs can alternate in blocks: it prints one JSON
 * ready line, then answers each JSON request line with one JSON reply line ({"error"} throws).
 */
export async function startServer(script, args) {
  const label = basename(script);
  const child = spawn(PYTHON, [script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  const next = async () => {
    const got = await Promise.race([lines.next(), exited.then((code) => ({ exit: code }))]);
    if ('exit' in got || got.done)
      throw new Error(`${label} exited (${got.exit ?? 'eof'}): ${stderr.trim().split('\n').slice(-3).join(' | ')}`);
    const reply = JSON.parse(got.value);
    if (reply.error) throw new Error(`${label}: ${reply.error}`);
    return reply;
  };
  const ready = await next();
  return {
    ready,
    async request(req) {
      child.stdin.write(JSON.stringify(req) + '\n');
      return next();
    },
    async close() {
      child.stdin.end(JSON.stringify({ cmd: 'quit' }) + '\n');
      await exited;
    },
  };
}

// ---- statistics ------------------------------------------------------------------------
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
export const stats = (xs) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs), runs: xs });
export const f = (x, digits = 4) => (x === null || x === undefined || Number.isNaN(x) ? '—' : x.toFixed(digits));
export const spread = (xs, digits = 4) => `${f(Math.min(...xs), digits)}–${f(Math.max(...xs), digits)}`;
export const pct = (x, digits = 1) => `${(100 * x).toFixed(digits)}%`;

/** A Markdown table. */
export function table(headers, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n');
}

// ---- machine ---------------------------------------------------------------------------
function blasLibrary() {
  for (const link of ['/etc/alternatives/libblas.so.3-x86_64-linux-gnu', '/etc/alternatives/libblas.so.3']) {
    try {
      readlinkSync(link);
      return realpathSync(link);
    } catch {
      /* next */
    }
  }
  return null;
}

/** What the reference side runs with: Python PyTorch's version and threads, OpenBLAS's thread count. */
function pythonSide() {
  const script =
    'import ctypes, json, torch\n' +
    'try:\n    blas = ctypes.CDLL("libopenblas.so.0").openblas_get_num_threads()\nexcept Exception:\n    blas = None\n' +
    'print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "interopThreads": torch.get_num_interop_threads(), "openblasThreads": blas}))';
  try {
    return JSON.parse(execFileSync(PYTHON, ['-c', script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
  } catch (err) {
    return { error: String(err?.message ?? err).split('\n')[0] };
  }
}

export function machine() {
  const cpus = os.cpus();
  const versions = binding.versions();
  return {
    cores: cpus.length,
    cpu: cpus[0]?.model ?? null,
    memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    libtorch: versions.libtorch,
    libtorchBuiltAgainst: versions.builtAgainst,
    blas: blasLibrary(),
    torchBertThreads: binding.getNumThreads(),
    python: pythonSide(),
    env: Object.fromEntries(
      ['OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_CORETYPE'].map((k) => [k, process.env[k] ?? null]),
    ),
    loadAverageAtStart: os.loadavg().map((x) => +x.toFixed(2)),
  };
}

// ---- the head-on-the-batch step benchmarks (mlm-step, token-step, qa-step) -------------
/**
 * What mlm-step, token-step and qa-step share: their plan per shape, the Hugging Face folder of
 * random weights both sides load, the batch file the Python side reads, a seeded generator, the
 * alternating blocks of steps (token-step, qa-step), and their table's first and last columns
 * (stepTable, stepRow).
 */
const { loadEncoderSource } = await import(join(dist, 'models', 'encoder-source.js'));

/** The rows of `plans` (quick or full) whose shape --shapes asked for (all without it). */
export const stepPlan = (quick, plans, shapes) =>
  (quick ? plans.quick : plans.full).filter((p) => !shapes || shapes.includes(p.shape.name));

/**
 * A BERT Hugging Face folder of `shape` with seeded random weights, made once by
 * scripts/python/make_hf_folder.py as bench/.cache/PREFIX-SHAPE-vVOCAB: `layout` its
 * --layout, `dropout` (when given) its hidden and attention dropout (make_hf_folder.py's default
 * is 0.1).
 */
export function hfFolder(prefix, shape, vocabSize, { layout, dropout }) {
  const dir = join(cacheDir, `${prefix}-${shape.name}-v${vocabSize}`);
  if (!existsSync(join(dir, 'config.json'))) {
    execFileSync(PYTHON, [
      join(root, 'scripts', 'python', 'make_hf_folder.py'),
      ...['--out', dir, '--layout', layout, '--tokenizer', 'none', '--vocab-size', String(vocabSize), '--max-position', '512'],
      ...(dropout === undefined ? [] : ['--dropout', String(dropout)]),
      ...shapeFlags(shape),
    ]);
  }
  return dir;
}

/** mulberry32: a small seeded generator of floats in [0, 1). */
export function seededRandom(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A flat [batchSize * seqLen] array as batchSize rows (a batch file's JSON for the Python side). */
export const batchRows = (a, batchSize, seqLen) =>
  Array.from({ length: batchSize }, (_, r) => Array.from(a).slice(r * seqLen, (r + 1) * seqLen));

/**
 * Ours, as the task trainers build it (lib/tagging/token-trainer.ts, lib/answering/qa-trainer.ts):
 * the folder's encoder, `buildClassifier(encoder, spec)`, its reachable parameters (the pooler
 * left out) trainable under AdamW lr 5e-5, weight decay 0.01, in train mode. `steps(batch, n)`
 * times n awaited `trainStep`s (no clipping) in JS; `check(batch)` is one step in eval mode (no
 * dropout masks), untimed: its { loss, gradNorm }.
 */
export async function classifierTrainee(dir, maxLength, spec) {
  const loaded = await loadEncoderSource(dir, {
    device: 'cpu',
    tokenizer: tokenizerFile,
    maxLength,
    fallbackMaxLength: maxLength,
    classificationHead: true,
  });
  for (const [, t] of loaded.classificationHead) t.dispose();
  const built = binding.buildClassifier(loaded.module, spec);
  const unused = new Set(built.unusedParameters);
  const params = built.module.namedParameters().filter(([n]) => !unused.has(n) && !n.startsWith('encoder.pooler.'));
  for (const [, t] of params) t.setRequiresGrad(true);
  const optimizer = new binding.AdamW([{ params: params.map(([, t]) => t), lr: 5e-5, weightDecay: 0.01 }]);
  built.module.train(true);
  return {
    async check(batch) {
      built.module.train(false);
      try {
        return await binding.trainStep(built.module, optimizer, batch, { maxGradNorm: 0 });
      } finally {
        built.module.train(true);
      }
    },
    async steps(batch, n) {
      const seconds = [];
      for (let i = 0; i < n; i++) {
        const t0 = performance.now();
        await binding.trainStep(built.module, optimizer, batch, { maxGradNorm: 0 });
        seconds.push((performance.now() - t0) / 1000);
      }
      return { seconds };
    },
    dispose() {
      optimizer.dispose();
      built.module.dispose();
      loaded.module.dispose();
    },
  };
}

/** The first-step check: the two sides' eval-mode losses within `loss`, gradient norms within `gradNorm` relative, or it throws. */
export function checkFirstStep(label, ours, reference, tolerance) {
  const lossGap = Math.abs(ours.loss - reference.loss);
  const normGap = Math.abs(ours.gradNorm - reference.gradNorm) / Math.abs(reference.gradNorm);
  if (!(lossGap <= tolerance.loss) || !(normGap <= tolerance.gradNorm)) {
    throw new Error(
      `${label}: the first step's loss or gradient norm differs from PyTorch's: loss ${ours.loss} vs ${reference.loss} ` +
        `(|Δ| ${lossGap.toExponential(2)}, tolerance ${tolerance.loss}), gradient norm ${ours.gradNorm} vs ${reference.gradNorm} ` +
        `(relative ${normGap.toExponential(2)}, tolerance ${tolerance.gradNorm})`,
    );
  }
}

/**
 * Warm-up on both sides, then `p.blocks` blocks of `p.blockSteps` steps in alternating order
 * (ours, PyTorch, PyTorch, ours, ...), so that load on the shared machine falls on both.
 * `ours(n)` and `reference(n)` run n steps and resolve to { seconds: [...] }. Returns each side's
 * block medians and every timed step.
 */
export async function alternateBlocks(ours, reference, p) {
  const blocks = { ours: [], reference: [] };
  const all = { ours: [], reference: [] };
  await ours(p.warmup);
  await reference(p.warmup);
  for (let b = 0; b < p.blocks; b++) {
    for (const side of b % 2 === 0 ? ['ours', 'reference'] : ['reference', 'ours']) {
      const out = side === 'ours' ? await ours(p.blockSteps) : await reference(p.blockSteps);
      blocks[side].push(median(out.seconds));
      all[side].push(...out.seconds);
    }
  }
  return { blocks, all };
}

/** One side of an alternating comparison in results.json: s/step (median of its blocks' medians), the blocks, every step, tokens/s. */
export const blockSide = (blocks, steps, tokens, threads) => ({
  median: median(blocks),
  blocks,
  steps,
  tokensPerSecond: tokens / median(blocks),
  threads,
});

/** The alternation in a table's caption: block sizes and counts per shape, how s/step and its spread are read, the thread counts. */
export const blocksNote = (plan, ourThreads, referenceThreads) =>
  `both sides hold the model and alternate blocks of ${plan.map((p) => p.blockSteps).join('/')} step(s), ` +
  `${plan.map((p) => p.blocks).join('/')} blocks each after warm-up; s/step = median of the blocks' medians (spread: min–max of them); ` +
  `torch-bert ${ourThreads} / PyTorch ${referenceThreads ?? '?'} thread(s)`;

/** The last columns of every step benchmark's table (mlm-step, token-step, qa-step). */
export const STEP_COLUMNS = [
  'torch-bert s/step (spread)',
  'PyTorch s/step (spread)',
  'torch-bert tokens/s',
  'PyTorch tokens/s',
  'ours/PyTorch',
  'target',
];

/**
 * A step benchmark's table row: the shape, the batch, the benchmark's own `cells`, then
 * STEP_COLUMNS' cells from a result { shape, batch, ours, reference, ratio, target } whose sides
 * have { median, tokensPerSecond } and the values their spread is read from under `spreadOf`
 * ('blocks': block medians; 'runs': sequential steps).
 */
export function stepRow(r, cells, spreadOf = 'blocks') {
  return [
    shapeLabel(SHAPES[r.shape]),
    r.batch,
    ...cells,
    `${f(r.ours.median)} (${spread(r.ours[spreadOf])})`,
    `${f(r.reference.median)} (${spread(r.reference[spreadOf])})`,
    r.ours.tokensPerSecond.toFixed(0),
    r.reference.tokensPerSecond.toFixed(0),
    f(r.ratio, 3),
    `≤ ${r.target.toFixed(1)} ${r.ratio <= r.target ? 'yes' : '**no**'}`,
  ];
}

/** A step benchmark's table: shape, batch, its own `headers`, STEP_COLUMNS; rows from stepRow. */
export const stepTable = (headers, rows) => table(['shape', 'batch', ...headers, ...STEP_COLUMNS], rows);

/** The progress line of a shape's comparison (stderr). */
export function logStep(name, shape, blocks, ratio) {
  console.error(
    `bench: ${name} ${shape}: ours ${f(median(blocks.ours))} (${spread(blocks.ours)}), ` +
      `PyTorch ${f(median(blocks.reference))} (${spread(blocks.reference)}) s/step, ratio ${f(ratio, 3)}`,
  );
}

// ---- the end-to-end runs (frozen-e2e, techniques-table) --------------------------------
/**
 * The data and encoder of the end-to-end benchmarks: a subset of the reviews and a small BERT
 * made informative by pre-training on a disjoint set (a random BERT's [CLS] features are
 * near-constant, and no pretrained weights exist offline). Quick runs: the tiny shape with
 * random weights on a few reviews (a smoke run: accuracies mean nothing).
 */
export const E2E = {
  full: {
    shape: SHAPES.small,
    examples: 1000,
    maxLength: 128,
    batchSize: 32,
    pretrain: { rows: 2000, epochs: 3, maxLength: 64, lr: 5e-4 },
  },
  quick: { shape: SHAPES.tiny, examples: 200, maxLength: 128, batchSize: 32, pretrain: null },
};

export async function e2eSetup(quick, maxLength) {
  const plan = { ...(quick ? E2E.quick : E2E.full), ...(maxLength ? { maxLength } : {}) };
  const enc = await encoder(plan.shape, plan.pretrain ?? undefined);
  const data = await examples(plan.examples);
  const encoderDescription = plan.pretrain
    ? `${shapeLabel(plan.shape)} encoder, random init then pre-trained by make_encoder.py --pretrain on ${plan.pretrain.rows.toLocaleString('en-US')} ` +
      `${useImdb ? 'IMDB reviews from train-01-of-10 (disjoint from the data)' : 'demo pre-training reviews'} for ${plan.pretrain.epochs} epochs ` +
      `(max length ${plan.pretrain.maxLength}, lr ${plan.pretrain.lr}) — no pretrained weights exist offline, so accuracies are this stand-in's, not bert-base-uncased's`
    : `${shapeLabel(plan.shape)} encoder with random weights (quick smoke run: accuracies are meaningless)`;
  const pretrained = plan.pretrain ? pretrainSummary(enc.file) : null;
  const held = pretrained?.match(/held-out loss [\d.]+ acc ([\d.]+)/);
  const description = held
    ? `${encoderDescription}; its held-out accuracy after pre-training: ${(100 * Number(held[1])).toFixed(1)}%`
    : encoderDescription;
  return { ...plan, encoder: enc.file, encoderMadeSeconds: enc.made, pretrainSummary: pretrained, data, encoderDescription: description };
}

/**
 * train() timed end to end (tokenize + load + encode + epochs + evaluation + best-checkpoint
 * handling), with the time until the first training step (everything before the epochs, which
 * for the cached frozen technique includes encoding every text once) and the epochs' seconds.
 */
export async function timedTrain(options) {
  const t0 = performance.now();
  let firstStep = null;
  let encodeEvents = 0;
  const result = await torchBert.train({
    ...options,
    onProgress: (e) => {
      if (e.type === 'step' && firstStep === null) firstStep = performance.now();
      if (e.type === 'encode') encodeEvents++;
    },
  });
  const seconds = (performance.now() - t0) / 1000;
  result.classifier.dispose();
  const epochSeconds = result.history.map((h) => h.seconds);
  return {
    seconds,
    beforeFirstStepSeconds: firstStep === null ? null : (firstStep - t0) / 1000,
    epochSeconds,
    encodeEvents,
    best: result.best,
    last: result.history.at(-1),
    history: result.history.map((h) => ({
      epoch: h.epoch,
      trainLoss: h.trainLoss,
      trainAccuracy: h.trainAccuracy,
      validationLoss: h.validationLoss,
      validationAccuracy: h.validationAccuracy,
      seconds: h.seconds,
    })),
    trainableParameters: result.trainableParameters,
    totalParameters: result.totalParameters,
    trainableEncoderFraction: result.trainableEncoderFraction,
    trainExamples: result.trainExamples,
    validationExamples: result.validationExamples,
  };
}
