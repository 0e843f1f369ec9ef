/**
 * `ddp-step`: a data-parallel training step, 2 Gloo ranks on this machine (one intra-op thread
 * each), full fine-tuning of the step benchmarks' classifier (bench/technique-model.mjs) on the
 * same batch of reviews on every rank, side by side with:
 *   (a) the same 2 torch-bert ranks with the all-reduce skipped (trainStep without
 *       averageGradients): what communication costs once the overlap has hidden what it can;
 *   (b) PyTorch 1.13's DistributedDataParallel with Gloo, 2 processes (bench/ddp-step.py, the same
 *       eager model as test/python/reference_step.py), and for information the same 2 PyTorch
 *       processes without DDP.
 * Target: torch-bert's 2-rank step / PyTorch DDP's ≤ 1.0. A step's time is the slower rank's.
 * Also reported, from the reducer's own timings (TORCH_BERT_DDP_TIMING, rank 0): what the overlap
 * hides — backward's duration, when each bucket's all-reduce was launched from the autograd
 * hooks and how long it took, and how much of the communication was left after the last
 * gradient (exposed). Sides alternate in blocks; each block starts fresh processes.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { cacheDir, encoder, f, median, PYTHON, reviewBatch, root, SHAPES, shapeLabel, spread, stats, table } from './lib.mjs';

export const name = 'ddp-step';

const TARGET = 1.0;
const WORLD = 2;
const execFileAsync = promisify(execFile);
const { freePort, rankVariables } = await import(join(root, 'dist', 'cli', 'launcher.js'));

/** Starts WORLD ranks of `command args` with torchrun's variables; their stdout JSON and stderr, in rank order. */
async function job(command, args, extraEnv = {}) {
  const port = await freePort();
  const ranks = Array.from({ length: WORLD }, async (_, rank) => {
    const env = {
      ...process.env,
      ...extraEnv,
      ...rankVariables(rank, WORLD, port),
      OMP_NUM_THREADS: '1',
    };
    // execFile rejects on a non-zero exit (or a signal), its output attached to the error.
    const { stdout, stderr, code } = await execFileAsync(command, args, { env, maxBuffer: 64 << 20 }).catch((e) => ({
      stdout: '',
      stderr: String(e.stderr || e.message),
      code: e.code ?? e.signal,
    }));
    const line = stdout.trim().split('\n').at(-1);
    if (!line)
      throw new Error(`ddp-step rank ${rank} (${command}) exited ${code ?? 0}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`);
    return { ...JSON.parse(line), stderr };
  });
  return Promise.all(ranks);
}

/** Per timed step, the slower rank's seconds. */
const jobSteps = (ranks) => ranks[0].steps.map((_, i) => Math.max(...ranks.map((r) => r.steps[i])));

/** The reducer's timing lines of a rank's stderr, the warm-up's dropped. */
function bucketTimings(stderr, warmup) {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('torch-bert ddp-timing '))
    .map((l) => JSON.parse(l.slice('torch-bert ddp-timing '.length)))
    .slice(warmup);
}

/** Medians over steps: backward, per bucket (launch, all-reduce), the last launch, the communication left after it. */
function overlapSummary(timings) {
  const buckets = timings[0].buckets.map((b, i) => ({
    bytes: b.bytes,
    launchMs: median(timings.map((t) => t.buckets[i].launchMs)),
    allReduceMs: median(timings.map((t) => t.buckets[i].doneMs - t.buckets[i].launchMs)),
  }));
  const lastLaunch = (t) => Math.max(...t.buckets.map((b) => b.launchMs));
  return {
    backwardMs: median(timings.map((t) => t.backwardMs)),
    computeMs: median(timings.map(lastLaunch)),
    exposedMs: median(timings.map((t) => t.backwardMs - lastLaunch(t))),
    allReduceTotalMs: median(timings.map((t) => t.buckets.reduce((a, b) => a + b.doneMs - b.launchMs, 0))),
    buckets,
  };
}

export async function run({ quick, shapes }) {
  const plan = (
    quick
      ? [{ shape: SHAPES.tiny, batchSize: 8, seqLen: 64, warmup: 2, steps: 3, blocks: 1 }]
      : [
          { shape: SHAPES.small, batchSize: 16, seqLen: 128, warmup: 2, steps: 6, blocks: 2 },
          { shape: SHAPES['bert-base'], batchSize: 4, seqLen: 128, warmup: 2, steps: 3, blocks: 1 },
        ]
  ).filter((p) => !shapes || shapes.includes(p.shape.name));
  const results = [];
  for (const p of plan) {
    const encoderFile = (await encoder(p.shape)).file;
    const batch = await reviewBatch(p.batchSize, p.seqLen);
    const rows = (a) => Array.from({ length: batch.batchSize }, (_, r) => Array.from(a.subarray(r * batch.seqLen, (r + 1) * batch.seqLen)));
    const batchFile = join(cacheDir, `ddp-batch-${p.shape.name}-${p.batchSize}x${p.seqLen}.json`);
    writeFileSync(
      batchFile,
      JSON.stringify({ input_ids: rows(batch.inputIds), attention_mask: rows(batch.attentionMask), labels: Array.from(batch.labels) }),
    );
    const ours = (mode) => {
      const config = { encoderFile, batchSize: p.batchSize, seqLen: p.seqLen, warmup: p.warmup, steps: p.steps, mode, threads: 1 };
      return job(process.execPath, [join(root, 'bench', 'ddp-step-rank.mjs'), JSON.stringify(config)], { TORCH_BERT_DDP_TIMING: '1' });
    };
    const pytorch = (mode) =>
      job(PYTHON, [
        join(root, 'bench', 'ddp-step.py'),
        '--encoder',
        encoderFile,
        '--batch',
        batchFile,
        '--mode',
        mode,
        '--warmup',
        String(p.warmup),
        '--steps',
        String(p.steps),
        '--threads',
        '1',
      ]);
    const sides = {
      ours: () => ours('ddp'),
      oursLocal: () => ours('local'),
      pytorch: () => pytorch('ddp'),
      pytorchLocal: () => pytorch('local'),
    };
    const steps = { ours: [], oursLocal: [], pytorch: [], pytorchLocal: [] };
    const timings = [];
    for (let b = 0; b < p.blocks; b++) {
      const order = b % 2 === 0 ? ['ours', 'pytorch', 'oursLocal', 'pytorchLocal'] : ['pytorch', 'ours', 'pytorchLocal', 'oursLocal'];
      for (const s of order) {
        const ranks = await sides[s]();
        steps[s].push(...jobSteps(ranks));
        if (s === 'ours') timings.push(...bucketTimings(ranks[0].stderr, p.warmup));
      }
    }
    const r = {
      shape: p.shape,
      batch: `${WORLD}x${p.batchSize}x${p.seqLen}`,
      ours: stats(steps.ours),
      oursLocal: stats(steps.oursLocal),
      pytorch: stats(steps.pytorch),
      pytorchLocal: stats(steps.pytorchLocal),
      ratio: median(steps.ours) / median(steps.pytorch),
      communication: median(steps.ours) / median(steps.oursLocal),
      overlap: overlapSummary(timings),
    };
    console.error(
      `bench: ddp-step ${p.shape.name}: ours ${f(r.ours.median)} s (${spread(steps.ours)}), without all-reduce ${f(r.oursLocal.median)}, ` +
        `PyTorch DDP ${f(r.pytorch.median)} (${spread(steps.pytorch)}), without DDP ${f(r.pytorchLocal.median)}, ratio ${f(r.ratio, 2)}; ` +
        `backward ${f(r.overlap.backwardMs, 1)} ms, all-reduces ${f(r.overlap.allReduceTotalMs, 1)} ms, exposed ${f(r.overlap.exposedMs, 1)} ms`,
    );
    results.push(r);
  }
  const markdown = [
    table(
      [
        'shape',
        'ranks × batch',
        'torch-bert 2 ranks',
        'without all-reduce',
        'PyTorch DDP',
        'PyTorch without DDP',
        'ours / DDP',
        `≤ ${TARGET}`,
      ],
      results.map((r) => [
        shapeLabel(r.shape),
        r.batch,
        `${f(r.ours.median * 1000, 1)} ms`,
        `${f(r.oursLocal.median * 1000, 1)} ms`,
        `${f(r.pytorch.median * 1000, 1)} ms`,
        `${f(r.pytorchLocal.median * 1000, 1)} ms`,
        f(r.ratio, 2),
        r.ratio <= TARGET ? 'met' : 'missed',
      ]),
    ),
    '',
    'What the overlap hides (torch-bert, rank 0, medians over the timed steps; times from the start of backward):',
    '',
    table(
      ['shape', 'bucket', 'size', 'launched at', 'all-reduce', 'backward', 'last gradient at', 'exposed after it'],
      results.flatMap((r) =>
        r.overlap.buckets.map((b, i) => [
          shapeLabel(r.shape),
          String(i),
          `${f(b.bytes / 2 ** 20, 2)} MB`,
          `${f(b.launchMs, 1)} ms`,
          `${f(b.allReduceMs, 1)} ms`,
          i === 0 ? `${f(r.overlap.backwardMs, 1)} ms` : '',
          i === 0 ? `${f(r.overlap.computeMs, 1)} ms` : '',
          i === 0 ? `${f(r.overlap.exposedMs, 1)} ms` : '',
        ]),
      ),
    ),
  ].join('\n');
  return { settings: { plan, world: WORLD, threadsPerRank: 1, target: TARGET }, results, markdown };
}
