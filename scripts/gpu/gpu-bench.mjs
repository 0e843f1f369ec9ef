#!/usr/bin/env node
/**
 * GPU benchmark (run by scripts/gpu/gpu-check.sh): training throughput in sequences/s of a bert-base
 * shape (12 layers, hidden 768, 12 heads, FF 3072, vocabulary 30522, random weights made by
 * scripts/python/make_encoder.py) at sequence lengths 128 and 256, in fp32 and bf16 (autocast),
 * for full fine-tuning, LoRA (r 8, alpha 16 on attention query and value) and a frozen encoder,
 * each set up by bench/technique-model.mjs:
 * torch-bert's binding.trainStep next to the same step in Python PyTorch (scripts/gpu/gpu-bench.py:
 * the file's weights in an eager BERT with SDPA attention as transformers runs it, PEFT-style
 * LoRA) on the same GPU. The rows run one at a time, torch-bert's then PyTorch's (the Python
 * process serves one row per request, so the two never share the GPU at once), and each row is
 * written as soon as both sides have it: a run stopped by a time limit keeps every row before. fp32 matmuls use TF32
 * on both sides exactly when torch-bert allows it (binding.allowTF32()). Model FLOP/s count
 * matmul FLOPs from the shapes (forward 24·T·H² + 4·T²·H per layer and sequence, the last layer
 * as token pruning runs it: 4·T·H² + 20·H² + 4·T·H; full training 3x forward, LoRA 2x (backward to the activations, not to the frozen weights), frozen 1x); MFU
 * is against GPU_PEAK_TFLOPS (default 989: H100/H200 SXM dense bf16).
 *
 *   node scripts/gpu/gpu-bench.mjs --python PY --out DIR [--batch 32] [--steps 20] [--warmup 5] [--seqs 128,256]
 *       [--techniques full,lora,frozen] [--precisions fp32,bf16] [--rows full/256/bf16,...] [--budget-s S]
 * --rows: these technique/seq/precision rows in this order (most wanted first) instead of every
 * seq x technique x precision. --budget-s: start no row that would end after S seconds from the
 * start (judged by the longest row so far); the rows left are reported as skipped, exit code 3.
 * Writes DIR/gpu-bench.json and DIR/gpu-bench.md after every row, prints one JSON line per row
 * on stdout as it is measured, and the table at the end. Exit code 1 when a torch-bert row failed.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { techniqueModel } from '../../bench/technique-model.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { values: opt } = parseArgs({
  options: {
    python: { type: 'string', default: 'python3' },
    out: { type: 'string', default: join(root, 'gpu-bench-out') },
    batch: { type: 'string', default: '32' },
    steps: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '5' },
    seqs: { type: 'string', default: '128,256' },
    techniques: { type: 'string', default: 'full,lora,frozen' },
    precisions: { type: 'string', default: 'fp32,bf16' },
    rows: { type: 'string' },
    'budget-s': { type: 'string' },
    // For a smoke test of this script on a CPU machine: --device cpu --shape tiny.
    device: { type: 'string', default: 'cuda' },
    shape: { type: 'string', default: 'base' },
  },
});
const B = Number(opt.batch);
const STEPS = Number(opt.steps);
const WARMUP = Number(opt.warmup);
const SEQS = opt.seqs.split(',').map(Number);
const TECHNIQUES = opt.techniques.split(',');
const PRECISIONS = opt.precisions.split(',');
const ROWS = opt.rows
  ? opt.rows.split(',').map((spec) => {
      const [technique, seq, precision] = spec.split('/');
      if (!['full', 'lora', 'frozen'].includes(technique) || !(Number(seq) > 0) || !['fp32', 'bf16'].includes(precision)) {
        throw new Error(`gpu-bench: --rows: '${spec}' is not technique/seq/precision (full|lora|frozen / N / fp32|bf16)`);
      }
      return { technique, seq: Number(seq), precision };
    })
  : SEQS.flatMap((seq) => TECHNIQUES.flatMap((technique) => PRECISIONS.map((precision) => ({ technique, seq, precision }))));
const BUDGET_MS = opt['budget-s'] ? Number(opt['budget-s']) * 1000 : Infinity;
const started = performance.now();
const SHAPE =
  opt.shape === 'tiny'
    ? { layers: 2, hidden: 64, heads: 2, intermediate: 256, vocab: 30522 }
    : { layers: 12, hidden: 768, heads: 12, intermediate: 3072, vocab: 30522 };
const DEVICE = opt.device;
const PEAK = Number(process.env.GPU_PEAK_TFLOPS ?? 989);
const log = (s) => console.error(`gpu-bench: ${s}`);

const { loadBinding } = await import(join(root, 'dist', 'addon', 'loader.js'));
const binding = loadBinding();
if (DEVICE.startsWith('cuda') && !binding.cudaIsAvailable()) throw new Error('gpu-bench: libtorch sees no CUDA device');

const work = mkdtempSync(join(tmpdir(), 'torch-bert-gpu-bench-'));
const encoder = join(work, 'bert-base.pt');
log(`making the ${opt.shape} TorchScript encoder (random weights)`);
execFileSync(
  opt.python,
  [
    join(root, 'scripts', 'python', 'make_encoder.py'),
    '--out',
    encoder,
    '--vocab-size',
    String(SHAPE.vocab),
    '--layers',
    String(SHAPE.layers),
    '--hidden',
    String(SHAPE.hidden),
    '--heads',
    String(SHAPE.heads),
    '--intermediate',
    String(SHAPE.intermediate),
    '--max-position',
    '512',
    '--seed',
    '0',
  ],
  { stdio: ['ignore', 'ignore', 'inherit'] },
);

// torch-bert computes the last layer for the [CLS] row alone (token pruning, on unless
// TORCH_BERT_TOKEN_PRUNING=0): there it runs the key and value projections for every token and
// the rest for one, so its FLOPs are counted as executed, not as the unpruned model's.
const TOKEN_PRUNING = process.env.TORCH_BERT_TOKEN_PRUNING !== '0';

function flopsPerStep(seq, technique) {
  const { layers: L, hidden: H } = SHAPE;
  const layer = 24 * seq * H * H + 4 * seq * seq * H;
  const lastLayer = TOKEN_PRUNING ? 4 * seq * H * H + 20 * H * H + 4 * seq * H : layer;
  const forward = B * ((L - 1) * layer + lastLayer);
  return forward * { frozen: 1, lora: 2, full: 3 }[technique];
}

/** A deterministic batch: ids in [1000, vocab), full masks, alternating labels. */
function batchOf(seq) {
  let s = 12345;
  const inputIds = new Int32Array(B * seq);
  for (let i = 0; i < inputIds.length; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    inputIds[i] = 1000 + (s % (SHAPE.vocab - 1000));
  }
  return {
    inputIds,
    attentionMask: new Int32Array(B * seq).fill(1),
    batchSize: B,
    seqLen: seq,
    labels: Int32Array.from({ length: B }, (_, i) => i % 2),
  };
}

async function ours(seq, technique, precision) {
  const enc = binding.ScriptModule.load(encoder, DEVICE);
  const { model, optimizer, dispose } = techniqueModel(binding, enc, technique, { device: DEVICE });
  const batch = batchOf(seq);
  const options = { precision, maxGradNorm: 0 };
  try {
    for (let i = 0; i < WARMUP; i++) await binding.trainStep(model, optimizer, batch, options);
    const t0 = performance.now();
    for (let i = 0; i < STEPS; i++) await binding.trainStep(model, optimizer, batch, options); // returns the loss: synchronised
    const dt = (performance.now() - t0) / 1000;
    return { secondsPerStep: dt / STEPS, sequencesPerSecond: (B * STEPS) / dt };
  } finally {
    dispose();
    enc.dispose();
  }
}

/**
 * The PyTorch side, one process for the whole run (Python's start and CUDA's initialisation
 * once): it answers its header line, then one line per row asked for on its stdin.
 */
function startPython() {
  const child = spawn(
    opt.python,
    [
      join(root, 'scripts', 'gpu', 'gpu-bench.py'),
      '--encoder',
      encoder,
      '--serve',
      '--batch',
      String(B),
      '--steps',
      String(STEPS),
      '--warmup',
      String(WARMUP),
      '--vocab',
      String(SHAPE.vocab),
      '--heads',
      String(SHAPE.heads),
      '--device',
      DEVICE,
      '--tf32',
      binding.allowTF32() ? '1' : '0',
    ],
    { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, PYTHONUNBUFFERED: '1' } },
  );
  const waiting = [];
  const lines = [];
  let ended = null;
  const settle = () => {
    while (waiting.length && (lines.length || ended)) {
      const w = waiting.shift();
      if (lines.length) w.resolve(lines.shift());
      else w.reject(new Error(ended));
    }
  };
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (line.trim().startsWith('{')) lines.push(line);
    settle();
  });
  child.on('error', (err) => {
    ended = `cannot run ${opt.python}: ${err.message}`;
    settle();
  });
  child.on('exit', (code, signal) => {
    ended = `the PyTorch side exited (${signal ?? `code ${code}`})`;
    settle();
  });
  const next = () =>
    new Promise((resolve, reject) => {
      waiting.push({ resolve, reject });
      settle();
    }).then((l) => JSON.parse(l));
  return {
    header: next(),
    measure: (row) => {
      if (ended) return Promise.reject(new Error(ended));
      child.stdin.write(JSON.stringify(row) + '\n');
      return next();
    },
    close: () => child.stdin.end(),
  };
}

const rows = [];
let python = null;
log('PyTorch side: starting');
const py = startPython();
try {
  python = await py.header;
  log(`PyTorch side: torch ${python.torch}, ${python.gpu}, attention ${python.attention}`);
} catch (err) {
  log(`the PyTorch side failed: ${err.message.split('\n')[0]}`);
}
const v = binding.versions();
const cell = (r) => (r.sequencesPerSecond ? r.sequencesPerSecond.toFixed(1) : `error: ${r.error}`);
const header =
  `GPU ${python?.gpu ?? '?'}; torch-bert on libtorch ${v.libtorch} (CUDA ${v.cuda}, cuDNN ${v.cudnn}); PyTorch ${python?.torch ?? '?'} (attention: ${python?.attention ?? '?'}); TF32 in fp32 ${binding.allowTF32() ? 'on' : 'off'}; ` +
  `${opt.shape === 'tiny' ? 'tiny (smoke test)' : 'bert-base'} shape on ${DEVICE}, batch ${B}, ${WARMUP} warm-up + ${STEPS} timed steps; ${new Date().toISOString()}`;
/** Writes the table so far (after every row, so that a run cut short by a time limit still leaves one). */
function write() {
  const md = [
    header,
    '',
    '| technique | seq | precision | torch-bert seq/s | PyTorch seq/s | ratio | torch-bert TFLOP/s | MFU (vs bf16 peak) |',
    '|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => {
      const ratio =
        r.torchBert.sequencesPerSecond && r.pytorch.sequencesPerSecond
          ? (r.torchBert.sequencesPerSecond / r.pytorch.sequencesPerSecond).toFixed(2)
          : '-';
      return `| ${r.technique} | ${r.seq} | ${r.precision} | ${cell(r.torchBert)} | ${cell(r.pytorch)} | ${ratio} | ${r.torchBertTflops?.toFixed(1) ?? '-'} | ${r.mfu === null ? '-' : (100 * r.mfu).toFixed(1) + '%'} |`;
    }),
  ].join('\n');
  mkdirSync(opt.out, { recursive: true });
  writeFileSync(join(opt.out, 'gpu-bench.json'), JSON.stringify({ header, peakTflops: PEAK, versions: v, python, rows }, null, 2) + '\n');
  writeFileSync(join(opt.out, 'gpu-bench.md'), md + '\n');
  return md;
}
let longest = 0;
for (const { technique, seq, precision } of ROWS) {
  const t0 = performance.now();
  if (t0 - started + longest > BUDGET_MS) {
    const skipped = { error: 'skipped: time budget' };
    rows.push({
      technique,
      seq,
      batch: B,
      precision,
      torchBert: skipped,
      pytorch: skipped,
      torchBertTflops: null,
      mfu: null,
      skipped: true,
    });
    log(`skipped ${technique}, seq ${seq}, ${precision}: the time budget (${BUDGET_MS / 1000} s) would run out`);
    continue;
  }
  log(`torch-bert: ${technique}, seq ${seq}, ${precision}`);
  let mine;
  try {
    mine = await ours(seq, technique, precision);
  } catch (err) {
    mine = { error: String(err?.message ?? err).split('\n')[0] };
  }
  log(`PyTorch: ${technique}, seq ${seq}, ${precision}`);
  let theirs;
  try {
    theirs = await py.measure({ technique, seq, precision });
  } catch (err) {
    theirs = { error: String(err?.message ?? err).split('\n')[0] };
  }
  const tflops = mine.secondsPerStep ? flopsPerStep(seq, technique) / mine.secondsPerStep / 1e12 : null;
  const row = {
    technique,
    seq,
    batch: B,
    precision,
    torchBert: mine,
    pytorch: theirs,
    torchBertTflops: tflops,
    mfu: tflops === null ? null : tflops / PEAK,
  };
  rows.push(row);
  write();
  process.stdout.write(JSON.stringify(row) + '\n');
  longest = Math.max(longest, performance.now() - t0);
}
py.close();
rmSync(work, { recursive: true, force: true });
console.log(write());
process.exitCode = rows.some((r) => !r.skipped && !r.torchBert.sequencesPerSecond) ? 1 : rows.some((r) => r.skipped) ? 3 : 0;
