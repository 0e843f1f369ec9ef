/**
 * Reading a bert-base-shaped checkpoint with readSafetensors (native/tensor/safetensors.cc).
 *
 * The file: bert-base's 199 tensors under Hugging Face's names (BertModel, fp32, about 110M
 * parameters, 418 MB), written once by writeSafetensors into bench/.cache and reused. Each run
 * reads it in a child process of its own, from a warm page cache (the parent reads the file
 * first), and reports the read's wall time and the peak RSS it added (the child's VmHWM after
 * the read minus its VmRSS just before; peak-rss.cjs says why VmHWM). The mapping's pages are
 * released behind the copy, so the added peak should be the tensors themselves.
 *
 * Targets: at most 1 s, and a peak added of at most 1.2x the fp32 weights' size.
 */
import { execFile } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

export const name = 'safetensors-read';

const MB = 2 ** 20;
const RUNS = 7;
const self = fileURLToPath(import.meta.url);
const { peakRssBytes } = createRequire(import.meta.url)('./peak-rss.cjs');

/** [name, shape] of bert-base's state dict (BertModel: embeddings, 12 layers, pooler). */
export function bertBaseShapes({ layers = 12, hidden = 768, intermediate = 3072, vocab = 30522, positions = 512 } = {}) {
  const shapes = [
    ['embeddings.word_embeddings.weight', [vocab, hidden]],
    ['embeddings.position_embeddings.weight', [positions, hidden]],
    ['embeddings.token_type_embeddings.weight', [2, hidden]],
    ['embeddings.LayerNorm.weight', [hidden]],
    ['embeddings.LayerNorm.bias', [hidden]],
  ];
  for (let l = 0; l < layers; l++) {
    const p = `encoder.layer.${l}`;
    for (const m of ['query', 'key', 'value']) {
      shapes.push([`${p}.attention.self.${m}.weight`, [hidden, hidden]], [`${p}.attention.self.${m}.bias`, [hidden]]);
    }
    shapes.push(
      [`${p}.attention.output.dense.weight`, [hidden, hidden]],
      [`${p}.attention.output.dense.bias`, [hidden]],
      [`${p}.attention.output.LayerNorm.weight`, [hidden]],
      [`${p}.attention.output.LayerNorm.bias`, [hidden]],
      [`${p}.intermediate.dense.weight`, [intermediate, hidden]],
      [`${p}.intermediate.dense.bias`, [intermediate]],
      [`${p}.output.dense.weight`, [hidden, intermediate]],
      [`${p}.output.dense.bias`, [hidden]],
      [`${p}.output.LayerNorm.weight`, [hidden]],
      [`${p}.output.LayerNorm.bias`, [hidden]],
    );
  }
  shapes.push(['pooler.dense.weight', [hidden, hidden]], ['pooler.dense.bias', [hidden]]);
  return shapes;
}

/** Writes the checkpoint unless it is cached; returns its path and parameter count. */
async function checkpoint(quick) {
  const { binding, cacheDir } = await import('./lib.mjs');
  const shapes = quick ? bertBaseShapes({ layers: 2, hidden: 128, intermediate: 512 }) : bertBaseShapes();
  const params = shapes.reduce((s, [, shape]) => s + shape.reduce((a, d) => a * d, 1), 0);
  const file = join(cacheDir, quick ? 'tiny-bert-fp32.safetensors' : 'bert-base-fp32.safetensors');
  if (existsSync(file) && statSync(file).size > params * 4) return { file, params };
  console.error(`bench: writing ${file} (${(params / 1e6).toFixed(1)}M parameters, once) ...`);
  const tensors = [];
  for (const [n, shape] of shapes) {
    const count = shape.reduce((a, d) => a * d, 1);
    const data = new Float32Array(count);
    for (let i = 0; i < count; i++) data[i] = ((i * 2654435761) % 2001) / 1000 - 1;
    tensors.push([n, binding.Tensor.fromArray(data, shape)]);
  }
  binding.writeSafetensors(file, tensors, { format: 'pt' });
  for (const [, t] of tensors) t.dispose();
  return { file, params };
}

/** Reads the file through once, so the child's read finds it in the page cache. */
function warmPageCache(file) {
  const fd = openSync(file, 'r');
  const buffer = Buffer.alloc(16 * MB);
  try {
    while (readSync(fd, buffer, 0, buffer.length, null) > 0);
  } finally {
    closeSync(fd);
  }
}

function rssBytes() {
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return Number(kb[1]) * 1024;
}

/** The child: one read, timed, with the peak RSS it added. */
async function child(file) {
  const { loadBinding } = await import(join(self, '..', '..', 'dist', 'index.js'));
  const binding = loadBinding();
  const before = rssBytes();
  const t0 = performance.now();
  const { tensors } = binding.readSafetensors(file);
  const seconds = (performance.now() - t0) / 1000;
  const peakAdded = peakRssBytes() - before;
  let bytes = 0;
  for (const [, t] of tensors) bytes += t.shape.reduce((a, d) => a * d, 1) * 4;
  console.log(JSON.stringify({ seconds, peakAdded, tensors: tensors.length, bytes }));
}

const execFileAsync = promisify(execFile);

export async function run({ quick }) {
  const { f, table } = await import('./lib.mjs');
  const { file, params } = await checkpoint(quick);
  const weightBytes = params * 4;
  const runs = [];
  for (let i = 0; i < RUNS; i++) {
    warmPageCache(file);
    const { stdout } = await execFileAsync(process.execPath, [self, '--child', file], { maxBuffer: 1 << 20 });
    runs.push(JSON.parse(stdout.trim().split('\n').at(-1)));
  }
  const seconds = runs.map((r) => r.seconds).sort((a, b) => a - b);
  const median = seconds[runs.length >> 1];
  const peak = Math.max(...runs.map((r) => r.peakAdded));
  const results = {
    file,
    fileBytes: statSync(file).size,
    params,
    weightBytes,
    tensors: runs[0].tensors,
    seconds: { median, min: seconds[0], max: seconds.at(-1), runs: runs.map((r) => r.seconds) },
    peakAddedBytes: peak,
    peakRatio: peak / weightBytes,
    timeMet: median <= 1,
    memoryMet: peak <= 1.2 * weightBytes,
  };
  const markdown = [
    `**readSafetensors of a ${quick ? 'tiny' : 'bert-base'}-shaped fp32 checkpoint** (${results.tensors} tensors, ${(params / 1e6).toFixed(1)}M parameters, ` +
      `${f(results.fileBytes / MB, 0)} MB), warm page cache, ${RUNS} runs each in a fresh process. Peak RSS added = VmHWM after the read − VmRSS before it. ` +
      'Targets: ≤ 1 s; peak added ≤ 1.2x the fp32 weights.',
    '',
    table(
      ['read s (median)', 'spread', 'peak RSS added MB', 'fp32 weights MB', 'ratio', 'targets met'],
      [
        [
          f(median, 3),
          `${f(seconds[0], 3)}–${f(seconds.at(-1), 3)}`,
          f(peak / MB, 0),
          f(weightBytes / MB, 0),
          `${f(results.peakRatio, 2)}x`,
          results.timeMet && results.memoryMet
            ? 'yes'
            : `**no** (time ${results.timeMet ? 'met' : 'missed'}, memory ${results.memoryMet ? 'met' : 'missed'})`,
        ],
      ],
    ),
  ].join('\n');
  return { settings: { runs: RUNS, quick }, results, markdown };
}

if (process.argv[2] === '--child') await child(process.argv[3]);
