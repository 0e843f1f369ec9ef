/**
 * Against the hardware: the encoder forward of a bert-base shape in achieved GFLOP/s, next to
 * plain GEMMs measured in the same process, under each thread configuration worth considering
 * on this machine (torch intra-op threads x OpenBLAS threads), each in its own child process
 * (OpenBLAS reads its thread count once, at load).
 *
 * FLOPs are counted from the shapes, for the matrix products only (2·m·n·k each): per layer the
 * Q, K, V and output projections (4 · 2·N·H²), the feed-forward pair (2 · 2·N·H·I) and the two
 * attention products (2 · 2·B·T²·H), with N = B·T tokens; the pooler (2·B·H²). Embeddings,
 * LayerNorm, softmax, GELU and masking are not counted: they cost time, not FLOPs, so they lower
 * the achieved rate, as they should. The forward is the one the frozen technique runs
 * (binding.extractFeatures: inference mode, every token real, no padding), with token pruning
 * off: with [CLS] pooling the pass skips most of the last layer's products, which this count
 * would still include; the question here is how fast the arithmetic runs, not how much is skipped.
 *
 * The GEMM reference is the encoder's own biggest products, N×H·H×I and N×I·I×H (the
 * feed-forward, 2/3 of the FLOPs), plus a square 2048³ as the machine's GEMM rate. Target:
 * encoder forward ≥ 80% of the feed-forward GEMM rate of the same run.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { binding, encoder, f, median, pct, SHAPES, shapeLabel, table } from './lib.mjs';

export const name = 'hardware';

const BATCHES = [
  { batch: 8, seqLen: 128 },
  { batch: 32, seqLen: 64 },
];
const QUICK_BATCHES = [{ batch: 2, seqLen: 64 }];
/** [torch intra-op threads, OpenBLAS threads]; the first is the shipped default. */
const CONFIGS = [
  [1, 2],
  [2, 1],
  [2, 2],
  [1, 1],
];

/** Matrix-product FLOPs of one encoder forward (see the top of this file). */
export function encoderFlops(shape, batch, seqLen) {
  const n = batch * seqLen;
  const h = shape.hidden;
  const perLayer = 4 * 2 * n * h * h + 2 * 2 * n * h * shape.intermediate + 2 * 2 * batch * seqLen * seqLen * h;
  return shape.layers * perLayer + 2 * batch * h * h;
}

function randomTensor(rows, cols, seed) {
  const data = new Float32Array(rows * cols);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < data.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    data[i] = ((x >>> 0) / 2 ** 32 - 0.5) * 0.1;
  }
  return binding.Tensor.fromArray(data, [rows, cols]);
}

/** Median GFLOP/s of `reps` timed calls after one warm-up, and the spread. */
async function rate(flops, reps, call) {
  await call();
  const seconds = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    await call();
    seconds.push((performance.now() - t0) / 1000);
  }
  const gflops = seconds.map((s) => flops / s / 1e9);
  return { seconds: median(seconds), gflops: median(gflops), min: Math.min(...gflops), max: Math.max(...gflops) };
}

async function gemm(m, k, n, reps) {
  const a = randomTensor(m, k, 1);
  const b = randomTensor(k, n, 2);
  const out = await rate(2 * m * n * k, reps, () => binding.matmul(a, b).dispose());
  a.dispose();
  b.dispose();
  return out;
}

/** One configuration's measurements, in this (child) process. */
async function measure({ quick }) {
  const shape = quick ? SHAPES.tiny : SHAPES['bert-base'];
  const reps = quick ? 2 : 3;
  binding.setTokenPruning(false); // every counted FLOP is computed (see the top of this file)
  const enc = await encoder(shape);
  const encoderModule = binding.ScriptModule.load(enc.file);
  const { module } = binding.buildClassifier(encoderModule, { numClasses: 2, headHidden: 16, dropout: 0, pooling: 'cls', seed: 0 });
  module.train(false);
  const rows = [];
  for (const { batch, seqLen } of quick ? QUICK_BATCHES : BATCHES) {
    const n = batch * seqLen;
    const inputIds = new Int32Array(n);
    for (let i = 0; i < n; i++) inputIds[i] = 100 + ((i * 7919) % 900); // any valid ids: speed does not depend on them
    const stepBatch = { inputIds, attentionMask: new Int32Array(n).fill(1), batchSize: batch, seqLen };
    const flops = encoderFlops(shape, batch, seqLen);
    const forward = await rate(flops, reps, async () => (await binding.extractFeatures(module, stepBatch)).dispose());
    const up = await gemm(n, shape.hidden, shape.intermediate, reps + 2);
    const down = await gemm(n, shape.intermediate, shape.hidden, reps + 2);
    const ffnGemm = (up.gflops + down.gflops) / 2;
    rows.push({
      batch,
      seqLen,
      flops,
      forward,
      gemmUp: up,
      gemmDown: down,
      ffnGemmGflops: ffnGemm,
      fractionOfGemm: forward.gflops / ffnGemm,
    });
  }
  const square = quick ? await gemm(512, 512, 512, 3) : await gemm(2048, 2048, 2048, 5);
  module.dispose();
  encoderModule.dispose();
  return { shape: shape.name, rows, square, threads: binding.getNumThreads() };
}

const execFileAsync = promisify(execFile);
const self = fileURLToPath(import.meta.url);

export async function run({ quick }) {
  const shape = quick ? SHAPES.tiny : SHAPES['bert-base'];
  await encoder(shape); // made (and cached) once, before the children race to make it
  const configs = quick ? CONFIGS.slice(0, 2) : CONFIGS;
  const results = [];
  for (const [torchThreads, blasThreads] of configs) {
    const env = { ...process.env, OPENBLAS_NUM_THREADS: String(blasThreads), TORCH_BERT_NUM_THREADS: String(torchThreads) };
    const { stdout } = await execFileAsync(process.execPath, [self, '--child', quick ? '--quick' : ''], { env, maxBuffer: 16 << 20 });
    const out = JSON.parse(stdout.trim().split('\n').at(-1));
    if (out.threads !== torchThreads) throw new Error(`child ran with ${out.threads} intra-op threads, asked for ${torchThreads}`);
    results.push({ torchThreads, blasThreads, ...out });
    for (const r of out.rows) {
      console.error(
        `bench: hardware torch ${torchThreads} / BLAS ${blasThreads} ${r.batch}x${r.seqLen}: encoder ${f(r.forward.gflops, 1)} GFLOP/s, ` +
          `FFN GEMM ${f(r.ffnGemmGflops, 1)} GFLOP/s (${pct(r.fractionOfGemm)}); square GEMM ${f(out.square.gflops, 1)}`,
      );
    }
  }
  const shipped = results[0];
  const best = results.reduce((a, b) =>
    median(b.rows.map((r) => r.forward.gflops)) > median(a.rows.map((r) => r.forward.gflops)) ? b : a,
  );
  const met = shipped.rows.every((r) => r.fractionOfGemm >= 0.8);
  const rowsMd = results.flatMap((c) =>
    c.rows.map((r) => [
      `${c.torchThreads} / ${c.blasThreads}${c === shipped ? ' (default)' : ''}`,
      `${r.batch}x${r.seqLen}`,
      f(r.flops / 1e9, 1),
      f(r.forward.seconds, 3),
      `${f(r.forward.gflops, 1)} (${f(r.forward.min, 1)}–${f(r.forward.max, 1)})`,
      `${f(r.gemmUp.gflops, 1)} / ${f(r.gemmDown.gflops, 1)}`,
      `**${pct(r.fractionOfGemm)}**`,
      f(c.square.gflops, 1),
    ]),
  );
  const markdown = [
    `**Encoder forward against the machine's GEMM rate** — ${shapeLabel(shape)} forward as the frozen technique runs it ` +
      `(extractFeatures: inference mode, fp32, every token real, token pruning off), achieved GFLOP/s = matrix-product FLOPs counted from the shapes ` +
      `(per layer 8·N·H² + 4·N·H·I + 4·B·T²·H, N = B·T tokens, plus the pooler; elementwise work not counted) / median time of ` +
      `${quick ? 2 : 3} forwards; next to plain fp32 GEMMs (binding.matmul) of the encoder's feed-forward shapes N×H·H×I / N×I·I×H ` +
      `and a square ${quick ? 512 : 2048}³, in the same child process. One child per thread configuration (torch intra-op / OpenBLAS threads).`,
    '',
    table(
      [
        'threads torch / BLAS',
        'batch',
        'GFLOP per forward',
        'forward s',
        'encoder GFLOP/s (spread)',
        'FFN GEMM GFLOP/s up / down',
        'encoder / FFN GEMM',
        `square GEMM GFLOP/s`,
      ],
      rowsMd,
    ),
    '',
    `Target ≥ 80% of the GEMM rate with the default configuration: ${met ? 'met' : '**not met**'}. ` +
      `Fastest encoder configuration: torch ${best.torchThreads} / BLAS ${best.blasThreads} threads` +
      `${best === shipped ? ' (the default).' : ` (the default is torch ${shipped.torchThreads} / BLAS ${shipped.blasThreads}).`}`,
  ].join('\n');
  return {
    settings: { shape: shape.name, batches: quick ? QUICK_BATCHES : BATCHES, configs },
    results: { configs: results, met, bestConfig: [best.torchThreads, best.blasThreads] },
    markdown,
  };
}

if (process.argv.includes('--child')) {
  const threads = Number(process.env.TORCH_BERT_NUM_THREADS);
  if (threads) binding.setNumThreads(threads);
  const out = await measure({ quick: process.argv.includes('--quick') });
  console.log(JSON.stringify(out));
}
