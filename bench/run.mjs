#!/usr/bin/env node
/**
 * `npm run bench [-- --quick] [-- --only NAME[,NAME]] [-- --shapes NAME[,NAME]] [-- --threads N]`: every benchmark, in one
 * run on one machine, each comparison side by side (ratios, since the machine is shared and noisy:
 * sides alternate, runs repeat, medians and spreads are reported):
 *
 *   hardware          bert-base encoder forward GFLOP/s vs plain GEMM GFLOP/s, per thread configuration (bench/hardware.mjs)
 *   frozen-step       frozen training step through train() vs the PyTorch reference trainer (bench/frozen-step.mjs)
 *   techniques-step   frozen / full / lora / adapter step vs eager PyTorch (test/python/reference_step.py), tiny, small, bert-base shapes
 *   mlm-step          masked-LM pretraining step vs PyTorch as transformers computes it (test/python/reference_mlm_step.py)
 *   token-step        token-classification (NER) training step vs PyTorch as transformers computes it (test/python/reference_token_step.py)
 *   qa-step           question-answering training step (windows of 384, doc stride 128) vs PyTorch as transformers computes it (test/python/reference_qa_step.py)
 *   frozen-e2e        frozen end to end, 5 epochs: cached features vs recomputing every epoch
 *   scaling           frozen end to end as reviews (1k, 5k) and max length (64-512) grow: time, peak RSS, tokenizer share (bench/scaling.mjs)
 *   predict           Classifier.predict() on IMDB test reviews: texts/s with and without tokenizing vs PyTorch's inference forward on the same batches, peak RSS over 25k texts (bench/predict.mjs)
 *   imdb-job          (opt-in: --only imdb-job; 3 min 29 s in the README's run) the real job: frozen on the full IMDB (25k train, 25k test) through the CLI
 *   imdb-mlm          (opt-in: --only imdb-mlm; 552 s in the README's run) MLM pretraining of a small random BERT on IMDB train texts, the frozen job before/after, zero- and 16-shot prompting (bench/imdb-mlm.mjs)
 *   techniques-table  validation accuracy and s/epoch of frozen / full / lora on the same data and encoder
 *   built-vs-traced   a training step of the natively built Hugging Face encoder vs the same weights traced, per technique and shape (bench/built-vs-traced.mjs)
 *   safetensors-read  readSafetensors of a bert-base-shaped fp32 checkpoint: time and peak RSS added (bench/safetensors-read.mjs)
 *   ddp-step          a 2-rank Gloo training step vs the same ranks without the all-reduce and vs PyTorch's DistributedDataParallel; what the overlap hides (bench/ddp-step.mjs)
 *
 * Writes bench/results.json (bench/results-quick.json with --quick): one object per benchmark
 * with the command line, date, machine (cores, CPU, libtorch, BLAS, thread counts) and results;
 * with --only, the other benchmarks' entries of an existing file are kept. Prints Markdown tables
 * on stdout; progress goes to stderr.
 *
 * --quick: a smoke run (tiny shape only, few steps, a random-weight encoder for the end-to-end runs).
 * --shapes tiny,small,bert-base: the step benchmarks' shapes (default all three).
 * --max-length N: max length of the end-to-end runs (default: frozen-e2e 250, the tutorial's; techniques-table 128); results go to bench/results-max-length-N.json.
 * --threads N: intra-op threads for both torch-bert and PyTorch (default: each library's own default).
 * Encoders are made once by scripts/python/make_encoder.py and cached in bench/.cache (the first
 * full run also pre-trains the small encoder).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as builtVsTraced from './built-vs-traced.mjs';
import * as ddpStep from './ddp-step.mjs';
import * as frozenE2e from './frozen-e2e.mjs';
import * as frozenStep from './frozen-step.mjs';
import * as hardware from './hardware.mjs';
import * as imdbJob from './imdb-job.mjs';
import * as imdbMlm from './imdb-mlm.mjs';
import { machine, root } from './lib.mjs';
import * as mlmStep from './mlm-step.mjs';
import * as predict from './predict.mjs';
import * as qaStep from './qa-step.mjs';
import * as safetensorsRead from './safetensors-read.mjs';
import * as scaling from './scaling.mjs';
import * as techniquesStep from './techniques-step.mjs';
import * as techniquesTable from './techniques-table.mjs';
import * as tokenStep from './token-step.mjs';

const ALL = [
  hardware,
  frozenStep,
  techniquesStep,
  mlmStep,
  tokenStep,
  qaStep,
  builtVsTraced,
  frozenE2e,
  techniquesTable,
  scaling,
  predict,
  safetensorsRead,
  ddpStep,
  imdbJob,
  imdbMlm,
];

function parseArgs(argv) {
  const args = { quick: false, only: null, threads: undefined, shapes: null, maxLength: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const [, inline] = a.split('=');
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--quick') args.quick = true;
    else if (a.startsWith('--only')) args.only = value().split(',').filter(Boolean);
    else if (a.startsWith('--shapes')) {
      args.shapes = value().split(',').filter(Boolean);
      const unknown = args.shapes.filter((n) => !['tiny', 'small', 'bert-base'].includes(n));
      if (unknown.length) throw new Error(`unknown shape(s) ${unknown.join(', ')}; choose from tiny, small, bert-base`);
    } else if (a.startsWith('--max-length')) {
      args.maxLength = Number(value());
      if (!Number.isInteger(args.maxLength) || args.maxLength < 8) throw new Error('--max-length needs an integer ≥ 8');
    } else if (a.startsWith('--threads')) {
      args.threads = Number(value());
      if (!Number.isInteger(args.threads) || args.threads < 1) throw new Error('--threads needs a positive integer');
    } else if (a === '--help' || a === '-h') {
      console.log(
        `usage: npm run bench [-- --quick] [-- --only ${ALL.map((b) => b.name).join(',')}] [-- --shapes tiny,small,bert-base] [-- --max-length N] [-- --threads N]`,
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a} (see --help)`);
  }
  if (args.only) {
    const unknown = args.only.filter((n) => !ALL.some((b) => b.name === n));
    if (unknown.length) throw new Error(`unknown benchmark(s) ${unknown.join(', ')}; choose from ${ALL.map((b) => b.name).join(', ')}`);
  }
  return args;
}

let args;
try {
  args = parseArgs(process.argv.slice(2));
} catch (err) {
  console.error(`bench: ${err.message}`);
  process.exit(2);
}

const command = ['npm run bench', ...(process.argv.length > 2 ? ['--', ...process.argv.slice(2)] : [])].join(' ');
const machineInfo = machine();
const outFile = join(
  root,
  'bench',
  args.quick ? 'results-quick.json' : args.maxLength ? `results-max-length-${args.maxLength}.json` : 'results.json',
);
// Opt-in benchmarks (the full-IMDB job) run only when named with --only.
const selected = ALL.filter((b) => (args.only ? args.only.includes(b.name) : !b.optIn));
const started = performance.now();
const entries = [];
let failed = false;
const py = machineInfo.python;
console.log(
  `# torch-bert benchmarks\n\n\`${command}\` — ${new Date().toISOString()}; ${machineInfo.cores} cores (${machineInfo.cpu}), ` +
    `libtorch ${machineInfo.libtorch}, BLAS ${machineInfo.blas ?? 'unknown'}${py.openblasThreads ? ` (${py.openblasThreads} OpenBLAS threads)` : ''}, ` +
    `intra-op threads torch-bert ${machineInfo.torchBertThreads} / PyTorch ${py.threads ?? '?'} (${py.torch ?? 'no Python torch'}), Node ${machineInfo.node}, ` +
    `load average at start ${machineInfo.loadAverageAtStart.join(' ')}\n`,
);
for (const bench of selected) {
  const date = new Date().toISOString();
  const t0 = performance.now();
  console.error(`bench: ${bench.name} ...`);
  try {
    const out = await bench.run({ quick: args.quick, threads: args.threads, shapes: args.shapes, maxLength: args.maxLength });
    const seconds = (performance.now() - t0) / 1000;
    entries.push({
      name: bench.name,
      command,
      date,
      seconds,
      quick: args.quick,
      machine: machineInfo,
      settings: out.settings,
      results: out.results,
      markdown: out.markdown,
    });
    console.log(`## ${bench.name}\n\n${out.markdown}\n\n_${seconds.toFixed(0)} s_\n`);
  } catch (err) {
    failed = true;
    const seconds = (performance.now() - t0) / 1000;
    console.error(`bench: ${bench.name} failed: ${err?.stack ?? err}`);
    entries.push({ name: bench.name, command, date, seconds, quick: args.quick, machine: machineInfo, error: String(err?.message ?? err) });
    console.log(`## ${bench.name}\n\nFAILED: ${String(err?.message ?? err).split('\n')[0]}\n`);
  }
}

let benchmarks = entries;
if (args.only && existsSync(outFile)) {
  try {
    const previous = JSON.parse(readFileSync(outFile, 'utf8'));
    if (Array.isArray(previous.benchmarks)) {
      benchmarks = ALL.map((b) => entries.find((e) => e.name === b.name) ?? previous.benchmarks.find((e) => e.name === b.name)).filter(
        Boolean,
      );
    }
  } catch {
    /* start afresh */
  }
}
const totalSeconds = (performance.now() - started) / 1000;
writeFileSync(
  outFile,
  JSON.stringify({ command, date: new Date().toISOString(), totalSeconds, machine: machineInfo, benchmarks }, null, 2) + '\n',
);
console.error(`bench: wrote ${outFile} (${totalSeconds.toFixed(0)} s)`);
console.log(`_total ${totalSeconds.toFixed(0)} s_`);
process.exitCode = failed ? 1 : 0;
