/**
 * CUDA through the native binding. Every test is skipped where libtorch sees no GPU (this CPU
 * machine); scripts/gpu/gpu-check.sh runs them on a GPU machine. One test is not skipped on a
 * CUDA build with a GPU present: that CUDA is then really available (the addon links
 * libtorch_cuda even though it references none of its symbols).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { NativeBinding, NativeScriptModule, StepBatch } from '../lib/addon/binding.js';
import { loadBinding, loadedBinaryInfo } from '../lib/addon/loader.js';
import { repoRoot } from './fixtures.js';

const b: NativeBinding = loadBinding();
const cuda = b.cudaIsAvailable();
const info = loadedBinaryInfo();
const cudaBuild = /^cu/.test(info?.libtorch?.flavor ?? '');

function gpuPresent(): boolean {
  try {
    return execFileSync('nvidia-smi', ['-L'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 }).includes('GPU');
  } catch {
    return false;
  }
}

describe('CUDA', () => {
  // Made by the test that needs it: hooks do not run when every test is skipped.
  let work: string | undefined;
  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it.skipIf(!(cudaBuild && gpuPresent()))('a CUDA libtorch with a GPU present has CUDA available', () => {
    expect(cuda).toBe(true);
    expect(b.versions().cuda).not.toBeNull();
  });

  it.skipIf(!cuda)('reports the CUDA and cuDNN versions and the devices', () => {
    const v = b.versions();
    expect(v.cuda).toMatch(/^\d+\.\d+$/);
    expect(b.cudaDeviceCount()).toBeGreaterThanOrEqual(1);
    if (info?.libtorch?.flavor && /^cu\d+$/.test(info.libtorch.flavor)) {
      // cu130 <-> 13.0, cu126 <-> 12.6
      expect(info.libtorch.flavor).toBe('cu' + v.cuda!.replace('.', ''));
    }
  });

  it.skipIf(!cuda)('round-trips tensors through the GPU', () => {
    const data = new Float32Array([1.5, -2, 3.25, 4, 0.125, 6]);
    const t = b.Tensor.fromArray(data, [2, 3], undefined, 'cuda');
    expect(t.device).toBe('cuda:0');
    expect(Array.from(t.toArray() as Float32Array)).toEqual(Array.from(data));
    const back = t.to('cpu');
    expect(back.device).toBe('cpu');
    expect(Array.from(back.toArray() as Float32Array)).toEqual(Array.from(data));
    const half = b.Tensor.fromArray(data, [2, 3], 'bfloat16', 'cuda:0');
    expect(half.dtype).toBe('bfloat16');
    expect(Array.from(half.toArray() as Float32Array)).toEqual(Array.from(data)); // all exactly representable in bf16
    for (const x of [t, back, half]) x.dispose();
  });

  it.skipIf(!cuda)('a train step on the GPU computes what it computes on the CPU', async () => {
    // A small encoder, made by the Python PyTorch libtorch was found through (or the system one).
    const python = info?.libtorch?.python ?? '/usr/bin/python3';
    work = mkdtempSync(join(tmpdir(), 'torch-bert-cuda-'));
    const encoder = join(work, 'encoder.pt');
    execFileSync(
      python,
      [
        join(repoRoot, 'scripts', 'python', 'make_encoder.py'),
        '--out',
        encoder,
        '--vocab-size',
        '100',
        '--layers',
        '2',
        '--hidden',
        '32',
        '--heads',
        '2',
        '--seed',
        '3',
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    const batch: StepBatch = {
      inputIds: Int32Array.from({ length: 4 * 12 }, (_, i) => 1 + ((i * 7) % 99)),
      attentionMask: Int32Array.from({ length: 4 * 12 }, (_, i) => (i % 12 < 9 || i < 12 ? 1 : 0)),
      batchSize: 4,
      seqLen: 12,
      labels: Int32Array.from([0, 1, 1, 0]),
    };
    const step = async (device: string) => {
      const enc: NativeScriptModule = b.ScriptModule.load(encoder, device);
      const { module: model } = b.buildClassifier(enc, { numClasses: 2, headHidden: 16, dropout: 0, pooling: 'cls', seed: 7 });
      model.to(device);
      expect(model.device).toBe(device === 'cuda' ? 'cuda:0' : 'cpu');
      const optimizer = new b.AdamW([{ params: model.namedParameters().map(([, t]) => t), lr: 1e-3, weightDecay: 0.01 }]);
      model.train(true);
      const first = await b.trainStep(model, optimizer, batch);
      const second = await b.trainStep(model, optimizer, batch);
      model.train(false);
      const evaluated = await b.evalStep(model, batch);
      optimizer.dispose();
      model.dispose();
      enc.dispose();
      return { first, second, evaluated };
    };
    const cpu = await step('cpu');
    const gpu = await step('cuda');
    expect(gpu.first.loss).toBeCloseTo(cpu.first.loss, 4);
    expect(gpu.second.loss).toBeCloseTo(cpu.second.loss, 4);
    expect(Array.from(gpu.first.predictions)).toEqual(Array.from(cpu.first.predictions));
    const pc = Array.from(cpu.evaluated.probabilities);
    Array.from(gpu.evaluated.probabilities).forEach((p, i) => {
      expect(p).toBeCloseTo(pc[i]!, 4);
    });
  });
});
