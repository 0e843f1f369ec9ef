/**
 * Precision (autocast, gradient scaling), device handling and the diagnostics the doctor uses.
 * On this CPU machine: bf16 against fp32, fp16 refused, the gradient scaler on a forced
 * overflow, device error messages through the same path real CUDA failures take, buildInfo /
 * showConfig. With a GPU (scripts/gpu/gpu-check.sh): pinned transfers, autocast bf16/fp16 with the
 * scaler, TF32, device properties and device errors on CUDA.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NativeAdamW, NativeBinding, NativeScriptModule, Precision, StepBatch } from '../lib/addon/binding.js';
import { loadBinding } from '../lib/addon/loader.js';
import { makeEncoder } from './fixtures.js';

const b: NativeBinding = loadBinding();
const cuda = b.cudaIsAvailable();

function batchOf(size: number, seqLen: number, seed = 0): StepBatch {
  return {
    inputIds: Int32Array.from({ length: size * seqLen }, (_, i) => 1 + ((i * 7 + seed * 13) % 99)),
    attentionMask: Int32Array.from({ length: size * seqLen }, (_, i) => (i % seqLen < seqLen - 2 || i < seqLen ? 1 : 0)),
    batchSize: size,
    seqLen,
    labels: Int32Array.from({ length: size }, (_, i) => (i + seed) % 3),
  };
}

let encoderPath: string;

beforeAll(async () => {
  encoderPath = await makeEncoder({ layers: 2, hidden: 64, heads: 4, intermediate: 128, vocabSize: 100, seed: 5 });
});

/** A fresh classifier (encoder + head, all trainable, no dropout) on `device` and its AdamW. */
function classifier(device = 'cpu'): { model: NativeScriptModule; optimizer: NativeAdamW; dispose(): void } {
  const encoder = b.ScriptModule.load(encoderPath, device);
  const model = b.buildClassifier(encoder, { numClasses: 3, headHidden: 32, dropout: 0, pooling: 'cls', seed: 7 }).module;
  encoder.dispose();
  const optimizer = new b.AdamW([{ params: model.namedParameters().map(([, t]) => t), lr: 1e-3 }]);
  return {
    model,
    optimizer,
    dispose() {
      optimizer.dispose();
      model.dispose();
    },
  };
}

function parameterValues(model: NativeScriptModule): number[][] {
  return model.namedParameters().map(([, t]) => Array.from(t.toArray() as Float32Array));
}

const relative = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);

describe('precision on the CPU', () => {
  it('bf16 evalStep and extractFeatures are close to fp32, and differ (autocast ran)', async () => {
    const { model, dispose } = classifier();
    try {
      const batch = batchOf(6, 10);
      const fp32 = await b.evalStep(model, batch, { precision: 'fp32' });
      const bf16 = await b.evalStep(model, batch, { precision: 'bf16' });
      expect(relative(bf16.loss!, fp32.loss!)).toBeLessThan(5e-2);
      expect(bf16.loss).not.toBe(fp32.loss);
      expect(bf16.probabilities).toBeInstanceOf(Float32Array);
      const f32 = await b.extractFeatures(model, batch);
      const f16 = await b.extractFeatures(model, batch, { precision: 'bf16' });
      expect(f16.dtype).toBe('float32'); // returned as float32 whatever the precision
      const x = f32.toArray() as Float32Array;
      const y = f16.toArray() as Float32Array;
      let num = 0;
      let den = 0;
      for (let i = 0; i < x.length; i++) {
        num += (x[i]! - y[i]!) ** 2;
        den += x[i]! ** 2;
      }
      expect(Math.sqrt(num / den)).toBeLessThan(5e-2);
      expect(Math.sqrt(num / den)).toBeGreaterThan(0);
      f32.dispose();
      f16.dispose();
    } finally {
      dispose();
    }
  });

  it('bf16 training steps track fp32 losses, and the parameters stay float32', async () => {
    const runs: Record<string, number[]> = {};
    for (const precision of ['fp32', 'bf16'] as Precision[]) {
      const { model, optimizer, dispose } = classifier();
      try {
        model.train(true);
        const losses: number[] = [];
        for (let step = 0; step < 4; step++) {
          const result = await b.trainStep(model, optimizer, batchOf(6, 10, step % 2), { precision, maxGradNorm: 1 });
          expect(result.skipped).toBe(false);
          expect(result.overflow).toBe(false);
          expect(result.gradScale).toBeNull(); // no scaling outside fp16
          expect(Number.isFinite(result.gradNorm!)).toBe(true);
          losses.push(result.loss);
        }
        expect(model.namedParameters().every(([, t]) => t.dtype === 'float32')).toBe(true);
        runs[precision] = losses;
      } finally {
        dispose();
      }
    }
    for (let i = 0; i < 4; i++) expect(relative(runs.bf16![i]!, runs.fp32![i]!)).toBeLessThan(5e-2);
    // Training worked: the loss on the repeated batch went down.
    expect(runs.bf16![2]!).toBeLessThan(runs.bf16![0]!);
  });

  it('bf16 headTrainStep / headEvalStep on cached features', async () => {
    const { model, optimizer, dispose } = classifier();
    try {
      const features = await b.extractFeatures(model, batchOf(8, 10));
      const rows = Int32Array.from([0, 1, 2, 3, 4, 5]);
      const labels = Int32Array.from([0, 1, 2, 0, 1, 2]);
      const fp32 = await b.headEvalStep(model, features, rows, labels);
      const bf16 = await b.headEvalStep(model, features, rows, labels, { precision: 'bf16' });
      expect(relative(bf16.loss!, fp32.loss!)).toBeLessThan(5e-2);
      const step = await b.headTrainStep(model, optimizer, features, rows, labels, { precision: 'bf16' });
      expect(relative(step.loss, fp32.loss!)).toBeLessThan(5e-2);
      expect(step.skipped).toBe(false);
      features.dispose();
    } finally {
      dispose();
    }
  });

  it.skipIf(cuda)('fp16 on a CPU model is a clear error, and nothing changed', async () => {
    const { model, optimizer, dispose } = classifier();
    try {
      const before = parameterValues(model);
      const batch = batchOf(4, 8);
      const message = /precision 'fp16' needs a CUDA device, but the model is on cpu.*use precision 'bf16' or 'fp32'/;
      await expect(b.trainStep(model, optimizer, batch, { precision: 'fp16' })).rejects.toThrow(message);
      await expect(b.evalStep(model, batch, { precision: 'fp16' })).rejects.toThrow(message);
      await expect(b.extractFeatures(model, batch, { precision: 'fp16' })).rejects.toThrow(message);
      expect(parameterValues(model)).toEqual(before);
      expect(model.namedParameters().every(([, t]) => t.grad() === null)).toBe(true);
    } finally {
      dispose();
    }
  });

  it('rejects unknown precisions and option types', async () => {
    const { model, optimizer, dispose } = classifier();
    try {
      const batch = batchOf(2, 4);
      await expect(b.trainStep(model, optimizer, batch, { precision: 'fp8' as Precision })).rejects.toThrow(
        /trainStep: options.precision must be 'fp32', 'bf16' or 'fp16', got 'fp8'/,
      );
      await expect(b.evalStep(model, batch, { precision: 16 as unknown as Precision })).rejects.toThrow(TypeError);
      await expect(b.extractFeatures(model, batch, 'bf16' as never)).rejects.toThrow(/extractFeatures: options must be an object/);
      await expect(b.trainStep(model, optimizer, batch, { gradScaling: 1 as unknown as boolean })).rejects.toThrow(
        /options.gradScaling must be a boolean/,
      );
    } finally {
      dispose();
    }
  });
});

// The measurement behind TrainOptions.precision's note on CPU bf16 (minutes; opt-in):
//   TORCH_BERT_BENCH_PRECISION=1 npx vitest run test/native-devices.test.ts -t 'CPU step time'
describe.skipIf(!process.env.TORCH_BERT_BENCH_PRECISION)('CPU step time, bf16 vs fp32', () => {
  it('full fine-tuning, 4 layers, hidden 256, batch 32 x 128', { timeout: 1_200_000 }, async () => {
    const file = await makeEncoder({ layers: 4, hidden: 256, heads: 4, intermediate: 1024, vocabSize: 30522 });
    const threads = b.getNumThreads();
    b.setNumThreads(Number(process.env.TORCH_BERT_BENCH_THREADS ?? 2));
    const encoder = b.ScriptModule.load(file, 'cpu');
    const model = b.buildClassifier(encoder, { numClasses: 2, headHidden: 512, dropout: 0.1, pooling: 'cls', seed: 1 }).module;
    encoder.dispose();
    const optimizer = new b.AdamW([{ params: model.namedParameters().map(([, t]) => t), lr: 1e-5 }]);
    const B = 32;
    const T = 128;
    const batch: StepBatch = {
      inputIds: Int32Array.from({ length: B * T }, (_, i) => 1000 + ((i * 7919) % 29000)),
      attentionMask: new Int32Array(B * T).fill(1),
      batchSize: B,
      seqLen: T,
      labels: Int32Array.from({ length: B }, (_, i) => i % 2),
    };
    const rows: string[] = [];
    try {
      for (let round = 0; round < 3; round++) {
        for (const precision of ['fp32', 'bf16'] as Precision[]) {
          model.train(true);
          for (let i = 0; i < 2; i++) await b.trainStep(model, optimizer, batch, { precision, maxGradNorm: 1 });
          let t0 = performance.now();
          for (let i = 0; i < 5; i++) await b.trainStep(model, optimizer, batch, { precision, maxGradNorm: 1 });
          const train = (performance.now() - t0) / 5000;
          t0 = performance.now();
          for (let i = 0; i < 5; i++) await b.evalStep(model, batch, { precision });
          const evaluation = (performance.now() - t0) / 5000;
          rows.push(`${precision}: trainStep ${train.toFixed(3)} s, evalStep ${evaluation.toFixed(3)} s`);
        }
      }
      console.log(`libtorch ${b.versions().libtorch}, ${b.getNumThreads()} threads:\n  ${rows.join('\n  ')}`);
    } finally {
      b.setNumThreads(threads);
      optimizer.dispose();
      model.dispose();
    }
  });
});

describe('gradient scaler', () => {
  let work: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'torch-bert-scaler-'));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('has GradScaler defaults; scaled steps give the unscaled results', async () => {
    const plain = classifier();
    const scaled = classifier();
    try {
      expect(scaled.optimizer.gradScaler()).toEqual({
        scale: 65536,
        growthFactor: 2,
        backoffFactor: 0.5,
        growthInterval: 2000,
        growthTracker: 0,
      });
      const batch = batchOf(6, 10);
      const a = await b.trainStep(plain.model, plain.optimizer, batch, { maxGradNorm: 1 });
      const c = await b.trainStep(scaled.model, scaled.optimizer, batch, { maxGradNorm: 1, gradScaling: true });
      expect(c.gradScale).toBe(65536);
      expect(c.overflow).toBe(false);
      expect(c.loss).toBe(a.loss);
      expect(relative(c.gradNorm!, a.gradNorm!)).toBeLessThan(1e-4); // a power of two: exact up to summation order
      const pa = parameterValues(plain.model);
      const pc = parameterValues(scaled.model);
      for (let i = 0; i < pa.length; i++) for (let j = 0; j < pa[i]!.length; j++) expect(pc[i]![j]).toBeCloseTo(pa[i]![j]!, 5);
      expect(scaled.optimizer.gradScaler().growthTracker).toBe(1);
    } finally {
      plain.dispose();
      scaled.dispose();
    }
  });

  it('an Inf gradient skips the step and halves the scale; growth after growthInterval good steps', async () => {
    const { model, optimizer, dispose } = classifier();
    try {
      // The largest float32 scale: the loss stays finite, the scaled gradients overflow to Inf.
      optimizer.setGradScaler({ scale: 3e38, growthInterval: 2 });
      const before = parameterValues(model);
      const features = await b.extractFeatures(model, batchOf(6, 10));
      const big = b.Tensor.fromArray(
        (features.toArray() as Float32Array).map((v) => v * 1000),
        features.shape,
      );
      const rows = Int32Array.from([0, 1, 2, 3, 4, 5]);
      const labels = Int32Array.from([0, 1, 2, 2, 1, 0]);
      const overflow = await b.headTrainStep(model, optimizer, big, rows, labels, { gradScaling: true, maxGradNorm: 1 });
      expect(overflow.overflow).toBe(true);
      expect(overflow.skipped).toBe(false);
      expect(overflow.gradNorm).toBeNull();
      expect(overflow.gradScale).toBe(3e38);
      expect(Number.isFinite(overflow.loss)).toBe(true);
      expect(optimizer.gradScaler()).toMatchObject({ scale: 1.5e38, growthTracker: 0 });
      expect(parameterValues(model)).toEqual(before); // no update applied
      expect(model.namedParameters().every(([, t]) => t.grad() === null)).toBe(true); // gradients dropped

      // Two good steps at a sane scale: the scale doubles after growthInterval = 2.
      optimizer.setGradScaler({ scale: 1024 });
      for (let i = 0; i < 2; i++) {
        const ok = await b.headTrainStep(model, optimizer, features, rows, labels, { gradScaling: true });
        expect(ok.overflow).toBe(false);
        expect(ok.gradScale).toBe(1024);
      }
      expect(optimizer.gradScaler()).toMatchObject({ scale: 2048, growthTracker: 0 });
      expect(parameterValues(model)).not.toEqual(before);
      big.dispose();
      features.dispose();
    } finally {
      dispose();
    }
  });

  it('accumulates scaled gradients over a window and unscales once', async () => {
    const plain = classifier();
    const scaled = classifier();
    try {
      scaled.optimizer.setGradScaler({ scale: 256 });
      for (const [run, scaling] of [
        [plain, false],
        [scaled, true],
      ] as const) {
        await b.trainStep(run.model, run.optimizer, batchOf(4, 8, 0), { accumulateOnly: true, lossScale: 0.5, gradScaling: scaling });
        const end = await b.trainStep(run.model, run.optimizer, batchOf(4, 8, 1), { lossScale: 0.5, gradScaling: scaling });
        expect(end.overflow).toBe(false);
      }
      const pa = parameterValues(plain.model);
      const pc = parameterValues(scaled.model);
      for (let i = 0; i < pa.length; i++) for (let j = 0; j < pa[i]!.length; j++) expect(pc[i]![j]).toBeCloseTo(pa[i]![j]!, 5);
      expect(scaled.optimizer.gradScaler().growthTracker).toBe(1); // one window, one update
    } finally {
      plain.dispose();
      scaled.dispose();
    }
  });

  it('is saved and loaded with the optimizer; older files leave it alone', async () => {
    const { model, optimizer, dispose } = classifier();
    try {
      await b.trainStep(model, optimizer, batchOf(4, 8), { gradScaling: true });
      optimizer.setGradScaler({ scale: 512, growthTracker: 17, growthInterval: 100 });
      const file = join(work, 'optimizer.pt');
      optimizer.save(file);
      optimizer.setGradScaler({ scale: 8, growthTracker: 0, growthInterval: 2000 });
      optimizer.load(file);
      expect(optimizer.gradScaler()).toEqual({ scale: 512, growthFactor: 2, backoffFactor: 0.5, growthInterval: 100, growthTracker: 17 });

      const other = classifier();
      other.optimizer.load(file);
      expect(other.optimizer.gradScaler().scale).toBe(512);
      other.dispose();

      expect(() => optimizer.setGradScaler({ scale: 0 })).toThrow(/scale must be > 0/);
      expect(() => optimizer.setGradScaler({ backoffFactor: 1 })).toThrow(/backoffFactor must be in \(0, 1\)/);
      expect(() => optimizer.setGradScaler({ growthFactor: 0.5 })).toThrow(/growthFactor must be > 1/);
      expect(() => optimizer.setGradScaler({ growthInterval: 0 })).toThrow(/growthInterval must be in/);
      expect(optimizer.gradScaler().scale).toBe(512); // a rejected update changes nothing
    } finally {
      dispose();
    }
  });
});

describe('device errors', () => {
  it('CUDA out of memory names the device and the batch size and suggests a smaller batch', async () => {
    const error = await b.simulateDeviceError('oom', 'cuda:1', 64).catch((e: unknown) => e as Error & { code?: string });
    expect(error).toBeInstanceOf(Error);
    expect(error.code).toBe('TORCH_BERT_OUT_OF_MEMORY');
    expect(error.message).toMatch(/^out of memory on cuda:1 \(batch size 64\): CUDA out of memory\. Tried to allocate/);
    expect(error.message).toMatch(/Try a smaller batch size \(batchSize \/ --batch-size\), a shorter maxLength, or precision 'bf16'\.$/);
  });

  it('CPU out of memory too, without the CUDA-only advice', async () => {
    const error = await b.simulateDeviceError('cpu-oom', 'cpu', 8).catch((e: unknown) => e as Error & { code?: string });
    expect(error.code).toBe('TORCH_BERT_OUT_OF_MEMORY');
    expect(error.message).toMatch(/^out of memory on cpu \(batch size 8\): DefaultCPUAllocator: not enough memory/);
    expect(error.message).not.toMatch(/bf16/);
  });

  it('other CUDA errors name the device and the batch size, on one line', async () => {
    const error = await b.simulateDeviceError('cuda', 'cuda:0', 32).catch((e: unknown) => e as Error & { code?: string });
    expect(error.code).toBe('TORCH_BERT_DEVICE_ERROR');
    expect(error.message).toMatch(
      /^CUDA error on cuda:0 \(batch size 32\): CUDA error: device-side assert triggered \(.*CUDA_LAUNCH_BLOCKING=1/,
    );
    expect(error.message).not.toMatch(/\n/);
  });

  it('errors that are not device errors pass unchanged', async () => {
    const error = await b.simulateDeviceError('other', 'cuda:0', 32).catch((e: unknown) => e as Error & { code?: string });
    expect(error.message).toBe('label 7 is out of range');
    expect(error.code).toBeUndefined();
    await expect(b.simulateDeviceError('disk' as never, 'cpu', 1)).rejects.toThrow(/kind must be/);
  });

  it('a real step error on the CPU keeps its message', async () => {
    const { model, optimizer, dispose } = classifier();
    try {
      const batch = { ...batchOf(2, 4), labels: Int32Array.from([0, 9]) };
      await expect(b.trainStep(model, optimizer, batch)).rejects.toThrow(/^label 9 is out of range for a model with 3 classes$/);
    } finally {
      dispose();
    }
  });
});

describe('diagnostics', () => {
  it('buildInfo is what the addon was compiled with', () => {
    const info = b.buildInfo();
    expect(info.libtorch).toBe(b.versions().builtAgainst);
    expect(info.cxx11Abi === 0 || info.cxx11Abi === 1).toBe(true);
    expect(info.compiler).toMatch(/\d+\.\d+/);
    expect(info.cplusplus).toBeGreaterThanOrEqual(201703);
    expect(info.napiVersion).toBeGreaterThanOrEqual(8);
    expect(['package', 'manual']).toContain(info.torchFrom);
    if (!info.torchCudaLinked) expect(info.cuda).toBeNull();
    if (cuda) expect(info.torchCudaLinked).toBe(true);
  });

  it("showConfig, parallelInfo and the thread counts are libtorch's", () => {
    const config = b.showConfig();
    expect(config).toMatch(/PyTorch built with/);
    expect(config).toMatch(/BLAS_INFO=\w+/);
    expect(config).toContain(`TORCH_VERSION=${b.versions().libtorch}`);
    const parallel = b.parallelInfo();
    expect(parallel).toMatch(/ATen\/Parallel/);
    expect(parallel).toMatch(/at::get_num_interop_threads\(\) : \d+/);
    expect(b.getNumInteropThreads()).toBeGreaterThanOrEqual(1);
  });

  it('matmul multiplies (and touches BLAS)', () => {
    const a = b.Tensor.fromArray(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
    const c = b.Tensor.fromArray(new Float32Array([1, 0, 0, 1, 1, 1]), [3, 2]);
    const p = b.matmul(a, c);
    expect(p.shape).toEqual([2, 2]);
    expect(Array.from(p.toArray() as Float32Array)).toEqual([4, 5, 10, 11]);
    expect(() => b.matmul(a, a)).toThrow(/mat1 and mat2 shapes cannot be multiplied|size mismatch|shapes cannot be multiplied/);
    for (const t of [a, c, p]) t.dispose();
  });

  it('setAllowTF32 sets and allowTF32 reads the process-wide flag', () => {
    const before = b.allowTF32();
    try {
      b.setAllowTF32(true);
      expect(b.allowTF32()).toBe(true);
      b.setAllowTF32(false);
      expect(b.allowTF32()).toBe(false);
    } finally {
      b.setAllowTF32(before);
    }
  });

  it.skipIf(cuda)('cudaDeviceProperties without CUDA is a clear error', () => {
    const cudaBuild = b.versions().cuda !== null; // libtorch's CUDA hooks are there
    expect(() => b.cudaDeviceProperties(0)).toThrow(
      cudaBuild
        ? /cudaDeviceProperties: no CUDA device 0 \(libtorch sees 0 devices\)/
        : /cudaDeviceProperties: the libtorch loaded \(.*\) is a CPU-only build/,
    );
  });
});

describe('CUDA', () => {
  it.skipIf(!cuda)('cudaDeviceProperties describes every device libtorch sees', () => {
    const count = b.cudaDeviceCount();
    for (let i = 0; i < count; i++) {
      const p = b.cudaDeviceProperties(i);
      expect(p.index).toBe(i);
      expect(p.name.length).toBeGreaterThan(0);
      expect(p.totalMemory).toBeGreaterThan(2 ** 30);
      expect(p.computeCapability).toMatch(/^\d+\.\d+$/);
      expect(p.multiProcessorCount).toBeGreaterThan(0);
    }
    expect(() => b.cudaDeviceProperties(count)).toThrow(new RegExp(`no CUDA device ${count}`));
  });

  it.skipIf(!cuda)('steps on CUDA (pinned, non-blocking batch copies) match the CPU', async () => {
    const cpu = classifier('cpu');
    const gpu = classifier('cuda');
    try {
      const batch = batchOf(6, 10);
      const a = await b.evalStep(cpu.model, batch);
      const c = await b.evalStep(gpu.model, batch);
      expect(c.predictions).toEqual(a.predictions);
      expect(relative(c.loss!, a.loss!)).toBeLessThan(1e-4);
      for (let i = 0; i < 3; i++) {
        const x = await b.trainStep(cpu.model, cpu.optimizer, batchOf(6, 10, i), { maxGradNorm: 1 });
        const y = await b.trainStep(gpu.model, gpu.optimizer, batchOf(6, 10, i), { maxGradNorm: 1 });
        expect(relative(y.loss, x.loss)).toBeLessThan(1e-3);
      }
      const f = await b.extractFeatures(gpu.model, batch);
      expect(f.device).toBe('cuda:0');
      f.dispose();
    } finally {
      cpu.dispose();
      gpu.dispose();
    }
  });

  it.skipIf(!cuda)('bf16 and fp16 autocast on CUDA track fp32; fp16 scales the loss', async () => {
    const runs: Record<string, number[]> = {};
    for (const precision of ['fp32', 'bf16', 'fp16'] as Precision[]) {
      const { model, optimizer, dispose } = classifier('cuda');
      try {
        const losses: number[] = [];
        for (let step = 0; step < 4; step++) {
          const r = await b.trainStep(model, optimizer, batchOf(6, 10, step % 2), { precision, maxGradNorm: 1 });
          if (precision === 'fp16') expect(r.gradScale).not.toBeNull();
          else expect(r.gradScale).toBeNull();
          if (!r.overflow) losses.push(r.loss);
        }
        expect(model.namedParameters().every(([, t]) => t.dtype === 'float32')).toBe(true);
        runs[precision] = losses;
        if (precision === 'fp16') expect(optimizer.gradScaler().scale).toBeGreaterThan(0);
      } finally {
        dispose();
      }
    }
    expect(relative(runs.bf16![0]!, runs.fp32![0]!)).toBeLessThan(5e-2);
    expect(relative(runs.fp16![0]!, runs.fp32![0]!)).toBeLessThan(1e-2);
  });

  it.skipIf(!cuda)('the fp16 scaler skips a step with Inf gradients on CUDA and halves the scale', async () => {
    const { model, optimizer, dispose } = classifier('cuda');
    try {
      optimizer.setGradScaler({ scale: 3e38 });
      const before = parameterValues(model);
      const r = await b.trainStep(model, optimizer, batchOf(6, 10), { precision: 'fp16' });
      expect(r.overflow).toBe(true);
      expect(optimizer.gradScaler().scale).toBe(1.5e38);
      expect(parameterValues(model)).toEqual(before);
    } finally {
      dispose();
    }
  });

  it.skipIf(!cuda)('a real CUDA out-of-memory names the device and the batch size', async () => {
    const { model, optimizer, dispose } = classifier('cuda');
    try {
      // Attention scores alone ([batch, heads 4, 512, 512] float32) take twice the device's memory.
      const seqLen = 512;
      const size = 2 * Math.ceil(b.cudaDeviceProperties(0).totalMemory / (4 * seqLen * seqLen * 4));
      const batch: StepBatch = {
        inputIds: new Int32Array(size * seqLen).fill(5),
        attentionMask: new Int32Array(size * seqLen).fill(1),
        batchSize: size,
        seqLen,
        labels: new Int32Array(size),
      };
      const error = await b.trainStep(model, optimizer, batch).then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
      expect(error).toBeInstanceOf(Error);
      expect(error?.code).toBe('TORCH_BERT_OUT_OF_MEMORY');
      expect(error?.message).toMatch(new RegExp(`^out of memory on cuda:0 \\(batch size ${batch.batchSize}\\)`));
      // The device is usable afterwards.
      const ok = await b.trainStep(model, optimizer, batchOf(4, 8));
      expect(Number.isFinite(ok.loss)).toBe(true);
    } finally {
      dispose();
    }
  });

  it.skipIf(!cuda)('fp16 is accepted on CUDA for evalStep and extractFeatures', async () => {
    const { model, dispose } = classifier('cuda');
    try {
      const batch = batchOf(6, 10);
      const a = await b.evalStep(model, batch);
      const c = await b.evalStep(model, batch, { precision: 'fp16' });
      expect(relative(c.loss!, a.loss!)).toBeLessThan(1e-2);
      const f = await b.extractFeatures(model, batch, { precision: 'fp16' });
      expect(f.dtype).toBe('float32');
      f.dispose();
    } finally {
      dispose();
    }
  });
});
