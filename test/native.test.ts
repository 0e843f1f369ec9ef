/**
 * Tests of the native addon against references computed by Python PyTorch (/usr/bin/python3)
 * on the same inputs: tensors, randperm, TorchScript modules, the classifier (initialisation,
 * forward, saved archive), AdamW, trainStep/evalStep, and errors instead of crashes.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { NativeBinding, NativeScriptModule, NativeTensor, StepBatch } from '../lib/addon/binding.js';
import { loadBinding } from '../lib/addon/loader.js';

const PYTHON = '/usr/bin/python3';
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const execFileAsync = promisify(execFile);

/** Runs Python code (argv after the code: `args`) and parses the last stdout line as JSON. */
function py<T = unknown>(code: string, ...args: string[]): T {
  const out = execFileSync(PYTHON, ['-c', code, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 256 * 1024 * 1024,
  });
  return JSON.parse(out.trim().split('\n').pop()!) as T;
}

async function makeEncoder(out: string, ...flags: string[]): Promise<string> {
  await execFileAsync(PYTHON, [
    path.join(repoRoot, 'scripts', 'python', 'make_encoder.py'),
    '--out',
    out,
    '--vocab-size',
    '100',
    '--layers',
    '1',
    '--hidden',
    '32',
    '--heads',
    '2',
    '--intermediate',
    '64',
    ...flags,
  ]);
  return out;
}

const PY_PRELUDE = 'import json, sys, torch\ntorch.set_num_threads(1)\n';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(Number(a[i]) - Number(b[i])));
  return m;
}

function values(t: NativeTensor): number[] {
  return Array.from(t.toArray() as ArrayLike<number>, Number);
}

/** Expects `fn` to fail with an Error (thrown, or a rejected Promise), never a crash. */
async function expectFailure(fn: () => unknown, pattern?: RegExp, type: ErrorConstructor = Error): Promise<void> {
  let error: unknown;
  try {
    const result = fn();
    if (result instanceof Promise) await result;
  } catch (e) {
    error = e;
  }
  expect(error, `expected ${fn.toString()} to fail`).toBeInstanceOf(type);
  if (pattern) expect((error as Error).message).toMatch(pattern);
}

let b: NativeBinding;
let dir: string;
let encTuple: string; // forward(ids, mask) -> (last_hidden_state, pooler_output)
let encDict3: string; // forward(ids, mask, token_type_ids) -> {'last_hidden_state', ...}
let encTensor: string; // forward(ids, mask) -> last_hidden_state
let encBad: string; // forward(ids, mask) -> [B, H]

// A batch with padding in the second row: ids < 100 (the encoders' vocabulary).
const IDS = [2, 15, 27, 33, 8, 3, 5, 61, 42, 0, 0, 0];
const MASK = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0];
const B = 2;
const T = 6;

function idTensors(): [NativeTensor, NativeTensor] {
  return [b.Tensor.fromArray(new Int32Array(IDS), [B, T], 'int64'), b.Tensor.fromArray(new Int32Array(MASK), [B, T], 'int64')];
}

beforeAll(async () => {
  b = loadBinding();
  dir = mkdtempSync(path.join(tmpdir(), 'torch-bert-native-'));
  [encTuple, encDict3, encTensor, encBad] = await Promise.all([
    makeEncoder(path.join(dir, 'tuple.pt'), '--output', 'tuple', '--signature', '2', '--seed', '1'),
    makeEncoder(path.join(dir, 'dict3.pt'), '--output', 'dict', '--signature', '3', '--seed', '2'),
    makeEncoder(path.join(dir, 'tensor.pt'), '--output', 'tensor', '--signature', '2', '--seed', '3'),
    makeEncoder(path.join(dir, 'bad.pt'), '--output', 'bad', '--signature', '2', '--seed', '4'),
  ]);
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('runtime', () => {
  it('reports versions consistent with the Python PyTorch on this machine', () => {
    const v = b.versions();
    const pyVersion = py<string>(PY_PRELUDE + 'print(json.dumps(torch.__version__))');
    const majorMinor = (s: string) => s.split('.').slice(0, 2).join('.');
    expect(majorMinor(v.libtorch)).toBe(majorMinor(pyVersion));
    expect(majorMinor(v.builtAgainst)).toBe(majorMinor(v.libtorch));
    if (b.cudaIsAvailable()) expect(v.cuda).toMatch(/^\d+\.\d+$/);
    if (v.cuda === null) expect(v.cudnn).toBeNull();
  });

  it('randperm equals torch.randperm with a seeded generator', () => {
    for (const [n, seed] of [
      [10, 0],
      [10, 42],
      [1000, 12345],
      [1000, 7],
    ]) {
      const expected = py<number[]>(
        PY_PRELUDE +
          'n, s = int(sys.argv[1]), int(sys.argv[2])\n' +
          'print(json.dumps(torch.randperm(n, generator=torch.Generator().manual_seed(s)).tolist()))',
        String(n),
        String(seed),
      );
      const perm = b.randperm(n, seed);
      expect(perm).toBeInstanceOf(Int32Array);
      expect(Array.from(perm)).toEqual(expected);
    }
    expect(b.randperm(0, 1).length).toBe(0);
  });

  it('sets and gets the thread count', () => {
    const before = b.getNumThreads();
    expect(before).toBeGreaterThanOrEqual(1);
    b.setNumThreads(1);
    expect(b.getNumThreads()).toBe(1);
    b.setNumThreads(before);
    expect(b.getNumThreads()).toBe(before);
  });

  it("sizes OpenBLAS's own thread pool, found where libtorch loaded it", () => {
    // OpenBLAS is the BLAS when a mapped file of this process is an OpenBLAS library.
    const openBlas = /openblas/i.test(readFileSync('/proc/self/maps', 'utf8'));
    const before = b.getBlasThreads();
    if (!openBlas) {
      expect(before).toBeNull();
      expect(b.setBlasThreads(1)).toBe(false);
      return;
    }
    expect(before).toBeGreaterThanOrEqual(1);
    expect(b.setBlasThreads(1)).toBe(true);
    expect(b.getBlasThreads()).toBe(1);
    // libtorch's intra-op setting does not move it.
    b.setNumThreads(b.getNumThreads());
    expect(b.getBlasThreads()).toBe(1);
    expect(b.setBlasThreads(before!)).toBe(true);
    expect(b.getBlasThreads()).toBe(before);
    // The pool found is the one OpenBLAS sized from the environment when libtorch loaded it.
    const dist = JSON.stringify(path.join(repoRoot, 'dist', 'index.js'));
    const code = `const { loadBinding } = await import(${dist}); console.log(loadBinding().getBlasThreads());`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', code], {
      env: { ...process.env, OPENBLAS_NUM_THREADS: '1' },
      encoding: 'utf8',
    });
    expect(out.trim()).toBe('1');
  });

  it('answers CUDA queries consistently, and refuses CUDA devices when there is none', async () => {
    const available = b.cudaIsAvailable();
    const count = b.cudaDeviceCount();
    expect(typeof available).toBe('boolean');
    expect(available).toBe(count > 0);
    if (!available) {
      await expectFailure(() => b.Tensor.fromArray(new Float32Array(1), [1], undefined, 'cuda'), /CUDA is not available/);
      await expectFailure(() => b.ScriptModule.load(encTuple, 'cuda:0'), /CUDA is not available/);
    }
  });

  it('manualSeed makes the default generator reproducible', () => {
    const spec = { numClasses: 2, headHidden: 8, dropout: 0.1, pooling: 'cls' as const, seed: 3 };
    const enc = b.ScriptModule.load(encTuple);
    const w1 = values(b.buildClassifier(enc, spec).module.namedParameters().at(-4)![1]);
    const w2 = values(
      b
        .buildClassifier(enc, { ...spec, seed: 4 })
        .module.namedParameters()
        .at(-4)![1],
    );
    const w3 = values(b.buildClassifier(enc, spec).module.namedParameters().at(-4)![1]);
    expect(w1).toEqual(w3);
    expect(w1).not.toEqual(w2);
    b.manualSeed(5);
  });
});

describe('Tensor', () => {
  it('round-trips every dtype through typed arrays', () => {
    const cases: Array<[ArrayLike<number | bigint>, any, string | undefined, string, any]> = [
      [new Float32Array([1.5, -2, 3.25, 0, 1e-3, 7]), Float32Array, undefined, 'float32', [1.5, -2, 3.25, 0, Math.fround(1e-3), 7]],
      [new Float64Array([1.5, -2, Math.PI, 0, 1e-300, 7]), Float64Array, undefined, 'float64', [1.5, -2, Math.PI, 0, 1e-300, 7]],
      [
        new BigInt64Array([1n, -2n, 2n ** 40n, 0n, -(2n ** 62n), 7n]),
        BigInt64Array,
        undefined,
        'int64',
        [1n, -2n, 2n ** 40n, 0n, -(2n ** 62n), 7n],
      ],
      [new Int32Array([1, -2, 2 ** 30, 0, -(2 ** 31), 7]), Int32Array, undefined, 'int32', [1, -2, 2 ** 30, 0, -(2 ** 31), 7]],
      [new Uint8Array([0, 1, 255, 128, 3, 7]), Uint8Array, undefined, 'uint8', [0, 1, 255, 128, 3, 7]],
      [new Uint8Array([0, 1, 2, 0, 255, 1]), Uint8Array, 'bool', 'bool', [0, 1, 1, 0, 1, 1]],
      [new Int32Array([1, -2, 3, 0, 5, 7]), Float32Array, 'float32', 'float32', [1, -2, 3, 0, 5, 7]],
    ];
    for (const [data, arrayType, dtype, name, expected] of cases) {
      const t = b.Tensor.fromArray(data as any, [2, 3], dtype as any);
      expect(t.dtype).toBe(name);
      expect(t.shape).toEqual([2, 3]);
      expect(t.device).toBe('cpu');
      expect(t.requiresGrad).toBe(false);
      const out = t.toArray();
      expect(out).toBeInstanceOf(arrayType);
      expect(Array.from(out as ArrayLike<number | bigint>)).toEqual(expected);
      t.dispose();
    }
  });

  it('rounds float16 and bfloat16 exactly as PyTorch does, reading back as Float32Array', () => {
    // biome-ignore lint/suspicious/noApproximativeNumericConstant: an arbitrary value to round, not pi
    const input = [0.1, -1.25, 2049, 3.14159, 1e-5, 65504];
    const expected = py<Record<string, number[]>>(
      PY_PRELUDE +
        'x = torch.tensor(json.loads(sys.argv[1]), dtype=torch.float32)\n' +
        'print(json.dumps({"float16": x.half().float().tolist(), "bfloat16": x.bfloat16().float().tolist()}))',
      JSON.stringify(input),
    );
    for (const dtype of ['float16', 'bfloat16'] as const) {
      const t = b.Tensor.fromArray(new Float32Array(input), [6], dtype);
      expect(t.dtype).toBe(dtype);
      const out = t.toArray();
      expect(out).toBeInstanceOf(Float32Array);
      expect(Array.from(out as Float32Array)).toEqual(expected[dtype]);
      // Through `to` as well.
      const back = t.to('cpu', 'float64');
      expect(back.dtype).toBe('float64');
      expect(Array.from(back.toArray() as Float64Array)).toEqual(expected[dtype]);
    }
  });

  it('handles empty and scalar shapes, item(), to(), clone()', () => {
    const empty = b.Tensor.fromArray(new Float32Array(0), [0, 3]);
    expect(empty.shape).toEqual([0, 3]);
    expect((empty.toArray() as Float32Array).length).toBe(0);
    const scalar = b.Tensor.fromArray(new Float64Array([2.5]), []);
    expect(scalar.shape).toEqual([]);
    expect(scalar.item()).toBe(2.5);
    expect(b.Tensor.fromArray(new BigInt64Array([-7n]), [1]).item()).toBe(-7);

    const t = b.Tensor.fromArray(new Float32Array([1, 2, 3]), [3]);
    const c = t.clone();
    const i = t.to('cpu', 'int32');
    t.dispose();
    expect(Array.from(c.toArray() as Float32Array)).toEqual([1, 2, 3]);
    expect(i.dtype).toBe('int32');
    expect(Array.from(i.toArray() as Int32Array)).toEqual([1, 2, 3]);
  });

  it('dispose is idempotent and a disposed tensor throws on use', async () => {
    const t = b.Tensor.fromArray(new Float32Array([1, 2]), [2]);
    expect(t.disposed).toBe(false);
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    await expectFailure(() => t.toArray(), /disposed/);
    await expectFailure(() => t.shape, /disposed/);
    await expectFailure(() => b.nllLoss(t, t), /disposed/);
    const enc = b.ScriptModule.load(encTuple);
    const [ids] = idTensors();
    ids.dispose();
    await expectFailure(() => enc.forward(ids, ids), /disposed/);
    await expectFailure(() => enc.forwardAsync(ids, ids), /disposed/);
  });

  it('computes losses and gradients like torch.nn.functional', () => {
    const logits = [0.2, -1.3, 2.1, 0.5, 0.0, -0.7, 1.1, 1.2, -2.0];
    const target = [2, 0, 1];
    const ref = py<{ ce: number; grad: number[]; nll: number }>(
      PY_PRELUDE +
        'import torch.nn.functional as F\n' +
        'x = torch.tensor(json.loads(sys.argv[1])).view(3, 3).requires_grad_()\n' +
        't = torch.tensor(json.loads(sys.argv[2]))\n' +
        'ce = F.cross_entropy(x, t); ce.backward()\n' +
        'nll = F.nll_loss(torch.log_softmax(x.detach(), 1), t)\n' +
        'print(json.dumps({"ce": ce.item(), "grad": x.grad.flatten().tolist(), "nll": nll.item()}))',
      JSON.stringify(logits),
      JSON.stringify(target),
    );
    const x = b.Tensor.fromArray(new Float32Array(logits), [3, 3]);
    x.setRequiresGrad(true);
    expect(x.requiresGrad).toBe(true);
    expect(x.grad()).toBeNull();
    const ce = b.crossEntropy(x, b.Tensor.fromArray(new Int32Array(target), [3]));
    expect(ce.requiresGrad).toBe(true);
    expect(Math.abs(ce.item() - ref.ce)).toBeLessThan(1e-6);
    ce.backward();
    expect(maxAbsDiff(values(x.grad()!), ref.grad)).toBeLessThan(1e-6);

    const logp = b.Tensor.fromArray(new Float32Array(logits), [3, 3]);
    // log_softmax through the classifier-free path: nll of log-probabilities computed in JS.
    const rows = [0, 1, 2].map((r) => logits.slice(r * 3, r * 3 + 3));
    const lsm = rows.flatMap((row) => {
      const m = Math.max(...row);
      const lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
      return row.map((v) => v - lse);
    });
    const nll = b.nllLoss(
      b.Tensor.fromArray(new Float32Array(lsm), [3, 3]),
      b.Tensor.fromArray(new BigInt64Array(target.map(BigInt)), [3]),
    );
    expect(Math.abs(nll.item() - ref.nll)).toBeLessThan(1e-6);
    logp.dispose();
  });

  it('noGrad disables autograd for the callback only, and passes through its result and errors', async () => {
    const x = b.Tensor.fromArray(new Float32Array([1, 2, 3, 4]), [2, 2]);
    x.setRequiresGrad(true);
    const target = b.Tensor.fromArray(new Int32Array([0, 1]), [2]);
    const inside = b.noGrad(() => b.crossEntropy(x, target));
    expect(inside.requiresGrad).toBe(false);
    expect(b.noGrad(() => 42)).toBe(42);
    await expectFailure(
      () =>
        b.noGrad(() => {
          throw new RangeError('from the callback');
        }),
      /from the callback/,
      RangeError,
    );
    expect(b.crossEntropy(x, target).requiresGrad).toBe(true);
  });
});

describe('ScriptModule', () => {
  it('loads a traced encoder and runs it exactly like Python', async () => {
    const enc = b.ScriptModule.load(encTuple);
    expect(enc.device).toBe('cpu');
    expect(enc.forwardArity).toBe(2);
    expect(enc.methodSchema('forward')).toMatch(
      /^forward\(__torch__\.\S+ self, Tensor input_ids, Tensor attention_mask\) -> \(\(Tensor, Tensor\)\)$/,
    );
    const [ids, mask] = idTensors();
    const out = enc.forward(ids, mask) as NativeTensor[];
    expect(Array.isArray(out)).toBe(true);
    expect(out).toHaveLength(2);
    expect(out[0].shape).toEqual([B, T, 32]);
    expect(out[1].shape).toEqual([B, 32]);

    const ref = py<{ h: number[]; p: number[]; names: string[]; first: number[] }>(
      PY_PRELUDE +
        'm = torch.jit.load(sys.argv[1])\n' +
        'ids = torch.tensor(json.loads(sys.argv[2])).view(2, -1); mask = torch.tensor(json.loads(sys.argv[3])).view(2, -1)\n' +
        'h, p = m(ids, mask)\n' +
        'names = [n for n, _ in m.named_parameters()]\n' +
        'print(json.dumps({"h": h.flatten().tolist(), "p": p.flatten().tolist(), "names": names,' +
        ' "first": next(m.parameters()).flatten().tolist()}))',
      encTuple,
      JSON.stringify(IDS),
      JSON.stringify(MASK),
    );
    expect(maxAbsDiff(values(out[0]), ref.h)).toBeLessThan(1e-6);
    expect(maxAbsDiff(values(out[1]), ref.p)).toBeLessThan(1e-6);

    const asyncOut = (await enc.forwardAsync(ids, mask)) as NativeTensor[];
    expect(values(asyncOut[0])).toEqual(values(out[0]));
    const viaRun = enc.runMethod('forward', ids, mask) as NativeTensor[];
    expect(values(viaRun[1])).toEqual(values(out[1]));

    const params = enc.namedParameters();
    expect(params.map(([n]) => n)).toEqual(ref.names);
    expect(values(params[0][1])).toEqual(ref.first);
  });

  it('converts dict outputs to objects and takes three inputs when traced so', () => {
    const enc = b.ScriptModule.load(encDict3);
    expect(enc.forwardArity).toBe(3);
    const [ids, mask] = idTensors();
    const tt = b.Tensor.fromArray(new BigInt64Array(B * T), [B, T]);
    const out = enc.forward(ids, mask, tt) as Record<string, NativeTensor>;
    expect(Object.keys(out)).toEqual(['last_hidden_state', 'pooler_output']);
    expect(out.last_hidden_state.shape).toEqual([B, T, 32]);
  });

  it('loads asynchronously, and names the file when loading fails', async () => {
    const enc = await b.ScriptModule.loadAsync(encTensor);
    expect(enc.forwardArity).toBe(2);
    const missing = path.join(dir, 'missing.pt');
    await expectFailure(() => b.ScriptModule.load(missing), /missing\.pt.*no such file/);
    await expectFailure(() => b.ScriptModule.loadAsync(missing), /missing\.pt/);
    const text = path.join(dir, 'not-a-model.pt');
    writeFileSync(text, 'this is not a TorchScript archive\n');
    await expectFailure(() => b.ScriptModule.load(text), /not-a-model\.pt/);
    await expectFailure(() => b.ScriptModule.loadAsync(text), /not-a-model\.pt/);
    // A torch.save() file (a zip archive, but not TorchScript).
    const eager = path.join(dir, 'state_dict.pt');
    py(PY_PRELUDE + 'torch.save({"w": torch.zeros(2)}, sys.argv[1]); print("null")', eager);
    await expectFailure(() => b.ScriptModule.load(eager), /state_dict\.pt/);
    await expectFailure(() => b.ScriptModule.load(dir), /not a regular file/);
  });

  it('validates method names and inputs', async () => {
    const enc = b.ScriptModule.load(encTuple);
    const [ids, mask] = idTensors();
    await expectFailure(() => enc.runMethod('nope', ids), /no method 'nope'/);
    await expectFailure(() => enc.methodSchema('nope'), /no method 'nope'/);
    await expectFailure(() => enc.forward(ids), /takes 2 input\(s\), got 1/);
    await expectFailure(() => enc.forward(ids, mask, mask), /takes 2 input\(s\), got 3/);
    await expectFailure(() => (enc.forward as any)(1, 2), /must be a Tensor/, TypeError);
    await expectFailure(() => (enc.forwardAsync as any)('x', mask), /must be a Tensor/, TypeError);
    // Shape mismatch between ids and mask: libtorch's own error, as a JS Error.
    const badMask = b.Tensor.fromArray(new BigInt64Array(3 * 4).fill(1n), [3, 4]);
    await expectFailure(() => enc.forward(ids, badMask));
    await expectFailure(() => enc.forwardAsync(ids, badMask));
    await expectFailure(() => enc.setRequiresGrad(false, 'no_such_prefix.'), /no parameter name starts with/);
  });

  it('forwardAsync computes on its inputs as they were at the call, whatever is written into them before it settles', async () => {
    // Before the fix, the worker thread read the caller's input tensors when its turn came, so a
    // copyFrom into an input (reusing it for the next batch) silently changed a pending forward's
    // result; the batch calls (trainStep, ...) already copied their batch at the call.
    const enc = b.ScriptModule.load(encTuple);
    const [ids, mask] = idTensors();
    const [reference] = enc.forward(ids, mask) as NativeTensor[];
    // A forward of many rows ahead of it on the same module, so that the one under test is still
    // waiting for the module when its input is overwritten.
    const rows = 4096;
    const bigIds = b.Tensor.fromArray(new Int32Array(rows * T).fill(7), [rows, T], 'int64');
    const bigMask = b.Tensor.fromArray(new Int32Array(rows * T).fill(1), [rows, T], 'int64');
    const ahead = enc.forwardAsync(bigIds, bigMask);
    const pending = enc.forwardAsync(ids, mask);
    ids.copyFrom(b.Tensor.fromArray(new Int32Array(B * T).fill(9), [B, T], 'int64'));
    await ahead;
    const [got] = (await pending) as NativeTensor[];
    expect(maxAbsDiff(values(got), values(reference))).toBe(0);
  });

  it('an input array whose getter uses or disposes the module: forward and forwardAsync still compute, in a child process', () => {
    // Before the fix, forward and forwardAsync read their inputs from JS holding the module's
    // lock: a getter that used the module (isTraining) took that lock again on the same thread
    // and the process hung for good; one that disposed it freed the module under the lock
    // (segfault).
    const script = path.join(dir, 'list-input.py');
    writeFileSync(
      script,
      [
        'import sys, torch',
        'from typing import List',
        'class M(torch.nn.Module):',
        '    def forward(self, xs: List[torch.Tensor]):',
        '        return xs[0] * 2',
        'torch.jit.script(M()).save(sys.argv[1])',
      ].join('\n'),
    );
    const model = path.join(dir, 'list-input.pt');
    execFileSync(PYTHON, [script, model]);
    const child = path.join(dir, 'list-input.mjs');
    writeFileSync(
      child,
      `
      import { loadAddon } from ${JSON.stringify(path.join(repoRoot, 'scripts', 'native-binary.mjs'))};
      const b = loadAddon(${JSON.stringify(repoRoot)}).binding;
      const out = {};
      for (const call of ['forward', 'forwardAsync']) {
        for (const getter of ['uses', 'disposes']) {
          const m = b.ScriptModule.load(${JSON.stringify(model)});
          const x = b.Tensor.fromArray(new Float32Array([1, 2]), [2]);
          const xs = [];
          let seen;
          Object.defineProperty(xs, 0, { get: () => { seen = getter === 'uses' ? m.isTraining : (m.dispose(), m.disposed); return x; } });
          const result = await m[call](xs);
          out[call + ' ' + getter] = { result: Array.from(result.toArray()), seen };
        }
      }
      console.log(JSON.stringify(out));
      `,
    );
    const run = spawnSync(process.execPath, [child], { encoding: 'utf8', timeout: 30_000, killSignal: 'SIGKILL' });
    expect(run.signal, `the child ${run.signal === 'SIGKILL' ? 'hung' : 'crashed'}: ${run.stderr.slice(-2000)}`).toBeNull();
    expect(run.status, run.stderr.slice(-2000)).toBe(0);
    const trained = py<boolean>(PY_PRELUDE + 'print(json.dumps(torch.jit.load(sys.argv[1]).training))', model);
    expect(JSON.parse(run.stdout.trim().split('\n').pop()!)).toEqual({
      'forward uses': { result: [2, 4], seen: trained },
      'forward disposes': { result: [2, 4], seen: true },
      'forwardAsync uses': { result: [2, 4], seen: trained },
      'forwardAsync disposes': { result: [2, 4], seen: true },
    });
  });

  it('toggles training mode, moves, clones and disposes', async () => {
    const enc = b.ScriptModule.load(encTuple);
    enc.train(true);
    expect(enc.isTraining).toBe(true);
    enc.train(false);
    expect(enc.isTraining).toBe(false);
    enc.to('cpu');
    expect(enc.device).toBe('cpu');

    const copy = enc.clone();
    const [name, p] = copy.namedParameters()[0];
    expect(name).toBe(enc.namedParameters()[0][0]);
    expect(p.requiresGrad).toBe(true);
    const before = values(enc.namedParameters()[0][1]);
    copy.setRequiresGrad(false);
    expect(copy.namedParameters().every(([, t]) => !t.requiresGrad)).toBe(true);
    expect(enc.namedParameters().every(([, t]) => t.requiresGrad)).toBe(true);

    expect(enc.disposed).toBe(false);
    enc.dispose();
    enc.dispose();
    expect(enc.disposed).toBe(true);
    await expectFailure(() => enc.forwardArity, /disposed/);
    await expectFailure(() => enc.namedParameters(), /disposed/);
    await expectFailure(() => enc.saveAsync(path.join(dir, 'x.pt')), /disposed/);
    expect(values(copy.namedParameters()[0][1])).toEqual(before);
  });
});

describe('buildClassifier', () => {
  const spec = { numClasses: 3, headHidden: 512, dropout: 0.1, pooling: 'cls' as const, seed: 1234 };

  it('probes the encoder: arity, output kind, hidden size', async () => {
    const cases: Array<[string, object]> = [
      [encTuple, { arity: 2, outputKind: 'tuple', outputKey: null, hiddenSize: 32 }],
      [encDict3, { arity: 3, outputKind: 'dict', outputKey: 'last_hidden_state', hiddenSize: 32 }],
      [encTensor, { arity: 2, outputKind: 'tensor', outputKey: null, hiddenSize: 32 }],
    ];
    for (const [file, info] of cases) {
      const enc = b.ScriptModule.load(file);
      enc.train(true);
      const built = b.buildClassifier(enc, spec);
      expect(built.encoder).toEqual(info);
      // The probe ran in eval mode and put the mode back.
      expect(enc.isTraining).toBe(true);
      expect(built.module.methodSchema('forward')).toBe(
        'forward(__torch__.TorchBertClassifier self, Tensor input_ids, Tensor attention_mask) -> Tensor',
      );
      expect(built.module.forwardArity).toBe(2);
    }
    await expectFailure(
      () => b.buildClassifier(b.ScriptModule.load(encBad), spec),
      /encoder output must be a \[batch, seq, hidden\] tensor \(or a tuple\/dict whose first item is one\); got .*\[2, 32\]/,
    );
  });

  it("initialises the head exactly like Python's nn.Linear after torch.manual_seed", () => {
    const { module } = b.buildClassifier(b.ScriptModule.load(encTuple), spec);
    const params = module.namedParameters();
    const head = params.slice(-4);
    expect(head.map(([n, t]) => [n, t.shape])).toEqual([
      ['head.dense.weight', [512, 32]],
      ['head.dense.bias', [512]],
      ['head.out_proj.weight', [3, 512]],
      ['head.out_proj.bias', [3]],
    ]);
    expect(params.slice(0, -4).every(([n]) => n.startsWith('encoder.'))).toBe(true);
    const ref = py<number[][]>(
      PY_PRELUDE +
        'from torch import nn\n' +
        'torch.manual_seed(int(sys.argv[1]))\n' +
        'd = nn.Linear(32, 512); o = nn.Linear(512, 3)\n' +
        'print(json.dumps([p.detach().flatten().tolist() for p in (d.weight, d.bias, o.weight, o.bias)]))',
      String(spec.seed),
    );
    head.forEach(([, t], i) => {
      expect(t.requiresGrad).toBe(true);
      expect(values(t)).toEqual(ref[i]); // bit-identical
    });
  });

  for (const [label, pooling, encoder] of [
    ['cls pooling, tuple encoder', 'cls', () => encTuple],
    ['mean pooling, dict encoder with token_type_ids', 'mean', () => encDict3],
  ] as const) {
    it(`saves an archive Python loads and runs identically (${label})`, async () => {
      const enc = b.ScriptModule.load(encoder());
      const { module } = b.buildClassifier(enc, { ...spec, pooling, dropout: 0.5 });
      module.train(false);
      const [ids, mask] = idTensors();
      const logp = module.forward(ids, mask) as NativeTensor;
      expect(logp.shape).toEqual([B, 3]);
      const features = module.runMethod('features', ids, mask) as NativeTensor;
      expect(features.shape).toEqual([B, 32]);
      const viaHead = module.runMethod('head_forward', features) as NativeTensor;
      expect(values(viaHead)).toEqual(values(logp));

      const file = path.join(dir, `classifier-${pooling}.pt`);
      await module.saveAsync(file);
      const ref = py<{ logp: number[]; features: number[]; attrs: unknown[]; names: string[]; dropoutDiffers: boolean }>(
        PY_PRELUDE +
          'm = torch.jit.load(sys.argv[1]); m.eval()\n' +
          'ids = torch.tensor(json.loads(sys.argv[2])).view(2, -1); mask = torch.tensor(json.loads(sys.argv[3])).view(2, -1)\n' +
          'with torch.no_grad():\n' +
          '    logp = m(ids, mask); f = m.features(ids, mask)\n' +
          '    m.train(); a = m(ids, mask); c = m(ids, mask)\n' +
          'print(json.dumps({"logp": logp.flatten().tolist(), "features": f.flatten().tolist(),' +
          ' "attrs": [m.pooling, m.num_labels, m.hidden_size, m.dropout_p],' +
          ' "names": [n for n, _ in m.named_parameters()], "dropoutDiffers": not torch.equal(a, c)}))',
        file,
        JSON.stringify(IDS),
        JSON.stringify(MASK),
      );
      expect(maxAbsDiff(values(logp), ref.logp)).toBeLessThan(1e-5);
      expect(maxAbsDiff(values(features), ref.features)).toBeLessThan(1e-5);
      expect(ref.attrs).toEqual([pooling, 3, 32, 0.5]);
      expect(ref.names).toEqual(module.namedParameters().map(([n]) => n));
      // train() in Python reaches the head's dropout through the `training` attribute.
      expect(ref.dropoutDiffers).toBe(true);

      // ...and in JS: dropout on in training mode, off in eval mode.
      module.train(true);
      const a = values(module.forward(ids, mask) as NativeTensor);
      const c = values(module.forward(ids, mask) as NativeTensor);
      expect(a).not.toEqual(c);
      module.train(false);
      expect(values(module.forward(ids, mask) as NativeTensor)).toEqual(values(logp));

      // A reloaded archive is a full ScriptModule again.
      const reloaded = b.ScriptModule.load(file);
      reloaded.train(false);
      expect(values(reloaded.forward(ids, mask) as NativeTensor)).toEqual(values(logp));
    });
  }

  it('validates the spec', async () => {
    const enc = b.ScriptModule.load(encTuple);
    await expectFailure(() => b.buildClassifier(enc, { ...spec, numClasses: 0 }), /numClasses/);
    await expectFailure(() => b.buildClassifier(enc, { ...spec, pooling: 'max' as any }), /pooling/);
    await expectFailure(() => b.buildClassifier(enc, { ...spec, dropout: 1.5 }), /dropout/);
    await expectFailure(() => b.buildClassifier(enc, { ...spec, seed: 'x' as any }), /seed/, TypeError);
    await expectFailure(() => b.buildClassifier(enc, null as any), /spec/, TypeError);
    await expectFailure(() => b.buildClassifier({} as any, spec), /ScriptModule/, TypeError);
  });
});

describe('AdamW', () => {
  const P1 = [0.5, -0.3, 0.8, 1.2, -1.1, 0.05, 0.0, 0.7, -0.4, 0.9, 0.3, -0.6];
  const P2 = [-0.2, -1.5, -0.7, -2.2, -0.1, -0.9, -1.3, -0.4, -2.8, -0.6];
  const T1 = [2, 0, 1, 1];
  const T2 = [4, 1];

  /** Gradients from losses both sides can compute: cross-entropy on p1, NLL on p2. */
  function backward(p1: NativeTensor, p2: NativeTensor): void {
    b.crossEntropy(p1, b.Tensor.fromArray(new Int32Array(T1), [4])).backward();
    b.nllLoss(p2, b.Tensor.fromArray(new Int32Array(T2), [2])).backward();
  }

  function params(): [NativeTensor, NativeTensor] {
    const p1 = b.Tensor.fromArray(new Float32Array(P1), [4, 3]);
    const p2 = b.Tensor.fromArray(new Float32Array(P2), [2, 5]);
    p1.setRequiresGrad(true);
    p2.setRequiresGrad(true);
    return [p1, p2];
  }

  it('matches torch.optim.AdamW over several steps, with two groups and an lr change', () => {
    const [p1, p2] = params();
    const opt = new b.AdamW([
      { params: [p1], lr: 0.01, betas: [0.8, 0.99], eps: 1e-6, weightDecay: 0.1 },
      { params: [p2], lr: 0.03, weightDecay: 0 },
    ]);
    expect(opt.getLr()).toEqual([0.01, 0.03]);
    for (let step = 0; step < 3; step++) {
      backward(p1, p2);
      opt.step();
      opt.zeroGrad();
      expect(p1.grad()).toBeNull();
      if (step === 0) opt.setLr(1, 0.05);
    }
    expect(opt.getLr()).toEqual([0.01, 0.05]);
    const ref = py<number[][]>(
      PY_PRELUDE +
        'import torch.nn.functional as F\n' +
        'p1 = torch.tensor(json.loads(sys.argv[1])).view(4, 3).requires_grad_()\n' +
        'p2 = torch.tensor(json.loads(sys.argv[2])).view(2, 5).requires_grad_()\n' +
        't1 = torch.tensor(json.loads(sys.argv[3])); t2 = torch.tensor(json.loads(sys.argv[4]))\n' +
        'opt = torch.optim.AdamW([{"params": [p1], "lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},' +
        ' {"params": [p2], "lr": 0.03, "weight_decay": 0.0}])\n' +
        'for step in range(3):\n' +
        '    F.cross_entropy(p1, t1).backward(); F.nll_loss(p2, t2).backward()\n' +
        '    opt.step(); opt.zero_grad()\n' +
        '    if step == 0: opt.param_groups[1]["lr"] = 0.05\n' +
        'print(json.dumps([p1.detach().flatten().tolist(), p2.detach().flatten().tolist()]))',
      JSON.stringify(P1),
      JSON.stringify(P2),
      JSON.stringify(T1),
      JSON.stringify(T2),
    );
    expect(maxAbsDiff(values(p1), ref[0])).toBeLessThan(1e-6);
    expect(maxAbsDiff(values(p2), ref[1])).toBeLessThan(1e-6);
    // The parameters did move (the comparison is not vacuous).
    expect(maxAbsDiff(values(p1), P1)).toBeGreaterThan(1e-3);
  });

  it('saves and loads its state so that training resumes identically', async () => {
    const [a1, a2] = params();
    const optA = new b.AdamW([{ params: [a1, a2], lr: 0.02 }]);
    for (let i = 0; i < 2; i++) {
      backward(a1, a2);
      optA.step();
      optA.zeroGrad();
    }
    const file = path.join(dir, 'adamw.pt');
    optA.save(file);

    const b1 = a1.clone();
    const b2 = a2.clone();
    b1.setRequiresGrad(true);
    b2.setRequiresGrad(true);
    const optB = new b.AdamW([{ params: [b1, b2], lr: 0.02 }]);
    optB.load(file);
    const fresh1 = a1.clone();
    const fresh2 = a2.clone();
    fresh1.setRequiresGrad(true);
    fresh2.setRequiresGrad(true);
    const optC = new b.AdamW([{ params: [fresh1, fresh2], lr: 0.02 }]); // no state: differs

    for (const [opt, x, y] of [
      [optA, a1, a2],
      [optB, b1, b2],
      [optC, fresh1, fresh2],
    ] as const) {
      backward(x, y);
      opt.step();
      opt.zeroGrad();
    }
    expect(values(b1)).toEqual(values(a1));
    expect(values(b2)).toEqual(values(a2));
    expect(values(fresh1)).not.toEqual(values(a1));

    await expectFailure(() => optB.load(path.join(dir, 'no-such-state.pt')), /no-such-state\.pt/);
    const garbage = path.join(dir, 'garbage-state.pt');
    writeFileSync(garbage, 'garbage');
    await expectFailure(() => optB.load(garbage), /garbage-state\.pt/);
  });

  it('setGradScaler with options whose getter uses or disposes the optimizer: set, or a clear Error, in a child process', () => {
    // Before the fix, the options were read holding the optimizer's lock: a getter that read
    // gradScaler() took the lock again on the same thread and the process hung for good; one that
    // disposed the optimizer freed it under the lock.
    const child = path.join(dir, 'scaler-getter.mjs');
    writeFileSync(
      child,
      `
      import { loadAddon } from ${JSON.stringify(path.join(repoRoot, 'scripts', 'native-binary.mjs'))};
      const b = loadAddon(${JSON.stringify(repoRoot)}).binding;
      const make = () => {
        const p = b.Tensor.fromArray(new Float32Array([1, 2]), [2]);
        p.setRequiresGrad(true);
        return new b.AdamW([{ params: [p], lr: 0.1 }]);
      };
      const uses = make();
      uses.setGradScaler({ get scale() { return uses.gradScaler().scale * 2; } });
      const disposes = make();
      let error = null;
      try {
        disposes.setGradScaler({ get growthTracker() { disposes.dispose(); return 3; } });
      } catch (e) {
        error = e.message;
      }
      console.log(JSON.stringify({ scale: uses.gradScaler().scale, error }));
      `,
    );
    const run = spawnSync(process.execPath, [child], { encoding: 'utf8', timeout: 30_000, killSignal: 'SIGKILL' });
    expect(run.signal, `the child ${run.signal === 'SIGKILL' ? 'hung' : 'crashed'}: ${run.stderr.slice(-2000)}`).toBeNull();
    expect(run.status, run.stderr.slice(-2000)).toBe(0);
    // torch.amp.GradScaler's initial scale, doubled by the getter.
    const initial = py<number>(
      PY_PRELUDE + "import inspect\nprint(json.dumps(inspect.signature(torch.cuda.amp.GradScaler).parameters['init_scale'].default))",
    );
    expect(JSON.parse(run.stdout.trim().split('\n').pop()!)).toEqual({
      scale: initial * 2,
      error: 'AdamW has been disposed',
    });
  });

  it('validates its groups', async () => {
    const [p1] = params();
    await expectFailure(() => new b.AdamW([]), /empty/);
    await expectFailure(() => new b.AdamW('x' as any), /groups/, TypeError);
    await expectFailure(() => new b.AdamW([{ params: [1 as any], lr: 0.1 }]), /must be a Tensor/, TypeError);
    await expectFailure(() => new b.AdamW([{ params: [p1], lr: -1 }]), /lr/);
    await expectFailure(() => new b.AdamW([{ params: [p1], lr: 0.1, betas: [0.9, 1.5] }]), /betas/);
    await expectFailure(() => new b.AdamW([{ params: [p1, p1], lr: 0.1 }]), /more than once/);
    await expectFailure(() => new b.AdamW([{ params: [b.Tensor.fromArray(new Int32Array(2), [2])], lr: 0.1 }]), /floating-point/);
    const nonLeaf = b.crossEntropy(p1, b.Tensor.fromArray(new Int32Array(T1), [4]));
    await expectFailure(() => new b.AdamW([{ params: [nonLeaf], lr: 0.1 }]), /leaf/);
    await expectFailure(() => (b.AdamW as any)([{ params: [p1], lr: 0.1 }]), /new/);
    const opt = new b.AdamW([{ params: [p1], lr: 0.1 }]);
    await expectFailure(() => opt.setLr(1, 0.1), /group/);
    opt.dispose();
    opt.dispose();
    expect(opt.disposed).toBe(true);
    await expectFailure(() => opt.step(), /disposed/);
  });
});

describe('trainStep / evalStep', () => {
  function batch(ids: number[], mask: number[], labels?: number[]): StepBatch {
    const out: StepBatch = {
      inputIds: new Int32Array(ids),
      attentionMask: new Int32Array(mask),
      batchSize: ids.length / T,
      seqLen: T,
    };
    if (labels) out.labels = new Int32Array(labels);
    return out;
  }

  function snapshot(m: NativeScriptModule): Map<string, number[]> {
    return new Map(m.namedParameters().map(([n, t]) => [n, values(t)]));
  }

  it('one step equals the same step in Python (clipping on, all parameters trained)', async () => {
    const enc = b.ScriptModule.load(encTuple);
    const { module } = b.buildClassifier(enc, { numClasses: 3, headHidden: 16, dropout: 0, pooling: 'mean', seed: 9 });
    module.train(true);
    const file = path.join(dir, 'before-step.pt');
    module.save(file);
    const opt = new b.AdamW([{ params: module.namedParameters().map(([, t]) => t), lr: 1e-3, weightDecay: 0.01 }]);
    const labels = [2, 0];
    const result = await b.trainStep(module, opt, batch(IDS, MASK, labels), { maxGradNorm: 0.05 });
    const ref = py<{ loss: number; preds: number[]; params: Record<string, number[]>; norm: number }>(
      PY_PRELUDE +
        'm = torch.jit.load(sys.argv[1]); m.train()\n' +
        'ids = torch.tensor(json.loads(sys.argv[2])).view(2, -1); mask = torch.tensor(json.loads(sys.argv[3])).view(2, -1)\n' +
        'labels = torch.tensor(json.loads(sys.argv[4]))\n' +
        'opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)\n' +
        'logp = m(ids, mask); loss = torch.nn.functional.nll_loss(logp, labels); loss.backward()\n' +
        'norm = torch.nn.utils.clip_grad_norm_(m.parameters(), 0.05)\n' +
        'opt.step()\n' +
        'print(json.dumps({"loss": loss.item(), "preds": logp.argmax(1).tolist(), "norm": norm.item(),' +
        ' "params": {n: p.detach().flatten().tolist() for n, p in m.named_parameters()}}))',
      file,
      JSON.stringify(IDS),
      JSON.stringify(MASK),
      JSON.stringify(labels),
    );
    expect(ref.norm).toBeGreaterThan(0.05); // clipping was active
    expect(Math.abs(result.loss - ref.loss)).toBeLessThan(1e-6);
    expect(Array.from(result.predictions)).toEqual(ref.preds);
    expect(result.correct).toBe(ref.preds.filter((p, i) => p === labels[i]).length);
    const after = snapshot(module);
    expect([...after.keys()]).toEqual(Object.keys(ref.params));
    for (const [name, v] of after) expect(maxAbsDiff(v, ref.params[name]), name).toBeLessThan(1e-5);
    // Gradients are dropped after the step.
    expect(module.namedParameters().every(([, t]) => t.grad() === null)).toBe(true);
  });

  it('leaves a frozen encoder untouched while the head trains', async () => {
    const enc = b.ScriptModule.load(encTuple);
    const { module } = b.buildClassifier(enc, { numClasses: 2, headHidden: 16, dropout: 0.1, pooling: 'cls', seed: 1 });
    module.setRequiresGrad(false, 'encoder.');
    const params = module.namedParameters();
    expect(params.filter(([n]) => n.startsWith('encoder.')).every(([, t]) => !t.requiresGrad)).toBe(true);
    expect(params.filter(([n]) => n.startsWith('head.')).every(([, t]) => t.requiresGrad)).toBe(true);
    const before = snapshot(module);
    const opt = new b.AdamW([{ params: params.map(([, t]) => t), lr: 1e-2 }]);
    module.train(true);
    for (let i = 0; i < 2; i++) await b.trainStep(module, opt, batch(IDS, MASK, [1, 0]));
    const after = snapshot(module);
    for (const [name, v] of after) {
      if (name.startsWith('encoder.')) expect(v, name).toEqual(before.get(name));
      else expect(v, name).not.toEqual(before.get(name));
    }
    // Tensors from namedParameters() share storage with the module: the old handles see the update.
    expect(values(params.at(-1)![1])).toEqual(after.get('head.out_proj.bias'));
    // The encoder handle shares the parameters too.
    expect(values(enc.namedParameters()[0][1])).toEqual(before.get('encoder.' + enc.namedParameters()[0][0]));
  });

  it('learns a separable toy problem, and evalStep reports consistent results', async () => {
    // Label 1 iff the tokens come from the upper half of the vocabulary.
    const rows: number[][] = [];
    const labels: number[] = [];
    for (let i = 0; i < 8; i++) {
      const high = i % 2 === 1;
      rows.push([1, ...Array.from({ length: T - 1 }, (_, j) => (high ? 60 : 10) + ((i * 7 + j * 3) % 30))]);
      labels.push(high ? 1 : 0);
    }
    const data = batch(rows.flat(), new Array(rows.length * T).fill(1), labels);
    const enc = b.ScriptModule.load(encTuple);
    const { module } = b.buildClassifier(enc, { numClasses: 2, headHidden: 32, dropout: 0.1, pooling: 'mean', seed: 2 });
    module.train(true);
    const opt = new b.AdamW([{ params: module.namedParameters().map(([, t]) => t), lr: 3e-3 }]);

    const first = await b.evalStep(module, data);
    expect(module.isTraining).toBe(true); // restored after evalStep
    for (let i = 0; i < 25; i++) await b.trainStep(module, opt, data, { maxGradNorm: 1 });
    const last = await b.evalStep(module, data);
    expect(last.loss!).toBeLessThan(first.loss! * 0.5);
    expect(last.correct).toBe(8);

    // Probabilities are a softmax; predictions their argmax; the loss their mean NLL.
    expect(last.probabilities).toBeInstanceOf(Float32Array);
    expect(last.probabilities.length).toBe(8 * 2);
    let nll = 0;
    for (let r = 0; r < 8; r++) {
      const row = last.probabilities.slice(r * 2, r * 2 + 2);
      expect(Math.abs(row[0] + row[1] - 1)).toBeLessThan(1e-5);
      expect(last.predictions[r]).toBe(row[1] > row[0] ? 1 : 0);
      nll -= Math.log(row[labels[r]]);
    }
    expect(Math.abs(nll / 8 - last.loss!)).toBeLessThan(1e-4);

    const unlabelled = await b.evalStep(module, { ...data, labels: undefined });
    expect(unlabelled.loss).toBeNull();
    expect(unlabelled.correct).toBeNull();
    expect(Array.from(unlabelled.predictions)).toEqual(Array.from(last.predictions));
  });

  it('serialises concurrent steps on the same model', async () => {
    // Every trainStep reads the weights the one before it wrote, so steps started together give
    // a serial run's results only if they never overlap: N identical steps in any order give
    // the serial losses after 0..N-1 steps and the weights after N, and an evalStep the loss
    // after some k of them. Overlapping steps would read the same weights twice, sum each
    // other's gradients, or evaluate half-updated weights.
    const N = 6;
    const make = () => {
      const enc = b.ScriptModule.load(encTuple);
      const { module } = b.buildClassifier(enc, { numClasses: 2, headHidden: 8, dropout: 0, pooling: 'cls', seed: 5 });
      const opt = new b.AdamW([{ params: module.namedParameters().map(([, t]) => t), lr: 0.05 }]);
      return { enc, module, opt };
    };
    // Enough rows that a step takes long enough for unserialised ones to overlap.
    const rows = 1024;
    const data = batch(
      Array.from({ length: rows * T }, (_, i) => (i % T === 0 ? 2 : 5 + ((Math.floor(i / T) * 7 + (i % T) * 3) % 90))),
      new Array(rows * T).fill(1),
      Array.from({ length: rows }, (_, r) => r % 2),
    );

    const serial = make();
    const serialLosses: number[] = [];
    const serialEvalLosses = [(await b.evalStep(serial.module, data)).loss!];
    for (let k = 0; k < N; k++) {
      serialLosses.push((await b.trainStep(serial.module, serial.opt, data)).loss);
      serialEvalLosses.push((await b.evalStep(serial.module, data)).loss!);
    }
    // Each step changes the loss, so a step that saw stale weights would show.
    for (let k = 1; k <= N; k++) expect(Math.abs(serialEvalLosses[k]! - serialEvalLosses[k - 1]!)).toBeGreaterThan(1e-3);

    const { enc, module, opt } = make();
    const [ids, mask] = idTensors();
    const steps: Array<Promise<{ loss: number }>> = [];
    const evals: Array<Promise<{ loss: number | null }>> = [];
    const forwards: Array<Promise<unknown>> = [];
    for (let k = 0; k < N; k++) {
      steps.push(b.trainStep(module, opt, data));
      evals.push(b.evalStep(module, data));
      forwards.push(k % 2 ? module.forwardAsync(ids, mask) : enc.forwardAsync(ids, mask));
    }
    // A synchronous call meanwhile waits for its turn instead of racing.
    expect((module.forward(ids, mask) as NativeTensor).shape).toEqual([2, 2]);
    const losses = (await Promise.all(steps)).map((r) => r.loss);
    const evalLosses = (await Promise.all(evals)).map((r) => r.loss!);
    expect((await Promise.all(forwards)).length).toBe(N);

    const sorted = (xs: number[]) => [...xs].sort((x, y) => x - y);
    expect(maxAbsDiff(sorted(losses), sorted(serialLosses))).toBeLessThan(1e-6);
    for (const loss of evalLosses) expect(Math.min(...serialEvalLosses.map((l) => Math.abs(l - loss)))).toBeLessThan(1e-6);
    const expected = serial.module.namedParameters();
    module.namedParameters().forEach(([name, t], i) => {
      expect(maxAbsDiff(values(t), values(expected[i]![1])), name).toBeLessThan(1e-6);
    });
  });

  it('rejects bad batches with clear errors', async () => {
    const enc = b.ScriptModule.load(encTuple);
    const { module } = b.buildClassifier(enc, { numClasses: 2, headHidden: 8, dropout: 0, pooling: 'cls', seed: 5 });
    const opt = new b.AdamW([{ params: module.namedParameters().map(([, t]) => t), lr: 1e-3 }]);
    const good = batch(IDS, MASK, [0, 1]);
    await expectFailure(() => b.trainStep(module, opt, { ...good, labels: undefined }), /labels is required/, TypeError);
    await expectFailure(() => b.trainStep(module, opt, { ...good, seqLen: 5 }), /inputIds has 12 elements, expected/);
    await expectFailure(() => b.trainStep(module, opt, { ...good, labels: new Int32Array([0]) }), /labels has 1 elements/);
    await expectFailure(() => b.trainStep(module, opt, { ...good, labels: new Int32Array([0, 7]) }), /label 7 is out of range/);
    await expectFailure(() => b.trainStep(module, opt, { ...good, labels: new Int32Array([0, -100]) }), /negative/);
    await expectFailure(() => b.trainStep(module, opt, { ...good, inputIds: new Float32Array(12) as any }), /Int32Array/, TypeError);
    await expectFailure(() => b.evalStep(module, { ...good, batchSize: 0 }), /batchSize/);
    // Text pairs' segments: one per token, none negative, and only for a classifier whose encoder takes them (this one's does not).
    await expectFailure(() => b.evalStep(module, { ...good, tokenTypeIds: new Int32Array(5) }), /tokenTypeIds has 5 elements, expected/);
    await expectFailure(() => b.evalStep(module, { ...good, tokenTypeIds: new Int32Array(12).fill(-1) }), /tokenTypeIds\[0\] is negative/);
    await expectFailure(() => b.evalStep(module, { ...good, tokenTypeIds: new Int32Array(12) }), /no 'forward_token_types' method/);
    await expectFailure(() => b.extractFeatures(module, { ...good, tokenTypeIds: new Int32Array(12) }), /no 'features_token_types' method/);
    await expectFailure(() => b.trainStep(opt as any, opt, good), /ScriptModule/, TypeError);
    await expectFailure(() => b.trainStep(module, module as any, good), /AdamW/, TypeError);
    await expectFailure(() => b.trainStep(module, opt, good, { maxGradNorm: -1 }), /maxGradNorm/);
    // Ids outside the vocabulary: libtorch's error, as a rejection.
    await expectFailure(
      () =>
        b.evalStep(
          module,
          batch(
            IDS.map((x) => x + 1000),
            MASK,
          ),
        ),
      /index|range/i,
    );
    // A model whose forward is not [B, C] log-probabilities.
    await expectFailure(() => b.evalStep(b.ScriptModule.load(encTensor), good), /must return a tensor|outputs of shape/);
    // The model still works after all that.
    expect((await b.trainStep(module, opt, good)).predictions).toHaveLength(2);
  });
});

describe('garbage in, errors out', () => {
  it('every entry point throws or rejects an Error for wrong arguments, and the process survives', async () => {
    const enc = b.ScriptModule.load(encTuple);
    const t = b.Tensor.fromArray(new Float32Array([1, 2, 3, 4]), [2, 2]);
    // A garbage string like 'x' is a valid relative path for the save functions: keep such files out of the checkout.
    const startDir = process.cwd();
    process.chdir(mkdtempSync(path.join(tmpdir(), 'torch-bert-garbage-')));
    onTestFinished(() => process.chdir(startDir));
    const garbage: unknown[] = [undefined, null, 0, -1, 1.5, NaN, 'x', {}, [], () => 1, Symbol('s'), 10n, new Float32Array(2)];
    const fake = Object.create(Object.getPrototypeOf(t));
    const calls: Array<(g: any) => unknown> = [
      (g) => b.Tensor.fromArray(g, [1]),
      (g) => b.Tensor.fromArray(new Float32Array(1), g),
      (g) => b.Tensor.fromArray(new Float32Array(1), [1], g === undefined ? 'float8' : g),
      (g) => b.Tensor.fromArray(new Float32Array(1), [1], 'float32', g === undefined ? 'tpu' : g),
      (g) => (b.Tensor as any)(g),
      (g) => new (b.Tensor as any)(g),
      (g) => b.ScriptModule.load(g),
      (g) => b.ScriptModule.loadAsync(g),
      (g) => b.ScriptModule.load(encTuple, g === undefined ? 'gpu' : g),
      (g) => new (b.ScriptModule as any)(g),
      (g) => enc.forward(g),
      (g) => enc.forwardAsync(g),
      (g) => enc.runMethod(g),
      (g) => enc.methodSchema(g),
      (g) => enc.setRequiresGrad(g),
      (g) => enc.setRequiresGrad(true, g === undefined ? 'zzz' : g),
      (g) => enc.train(g),
      (g) => enc.to(g),
      (g) => enc.save(g === undefined || typeof g === 'string' ? '/nonexistent-dir/x.pt' : g),
      (g) => enc.saveAsync(g === undefined || typeof g === 'string' ? '/nonexistent-dir/x.pt' : g),
      (g) => t.to(g),
      (g) => t.to('cpu', g === undefined ? 'complex' : g),
      (g) => t.setRequiresGrad(g),
      (g) => b.buildClassifier(g, g),
      (g) => b.buildClassifier(enc, g),
      (g) => new b.AdamW(g),
      (g) => new b.AdamW([{ params: g, lr: 0.1 }]),
      (g) => new b.AdamW([{ params: [], lr: g }]),
      (g) => b.trainStep(g, g, g),
      (g) => b.trainStep(enc, g, g),
      (g) => b.evalStep(g, g),
      (g) => b.evalStep(enc, g),
      (g) => b.nllLoss(g, t),
      (g) => b.crossEntropy(t, g),
      (g) => b.noGrad(g),
      (g) => b.manualSeed(g),
      (g) => b.randperm(g, 1),
      (g) => b.randperm(10, g),
      (g) => b.setNumThreads(g === undefined ? 0 : g),
      (_g) => b.nllLoss(fake, t),
    ];
    for (const call of calls) {
      for (const g of garbage) {
        // Some garbage is acceptable for some arguments (e.g. undefined for an optional one);
        // those calls must then succeed or fail cleanly; never crash.
        try {
          const r = call(g);
          if (r instanceof Promise) await r.catch((e: unknown) => expect(e).toBeInstanceOf(Error));
        } catch (e) {
          expect(e).toBeInstanceOf(Error);
        }
      }
    }
    // Calls that must fail whatever else happens.
    await expectFailure(() => t.item(), /one-element/);
    await expectFailure(() => t.backward(), /scalar/);
    await expectFailure(() => b.Tensor.fromArray(new Int32Array(2), [2]).setRequiresGrad(true));
    await expectFailure(() => b.crossEntropy(t, b.Tensor.fromArray(new Int32Array(3), [3])));
    await expectFailure(() => b.Tensor.fromArray(new Float32Array(3), [2, 2]), /holds 4 elements but data has 3/);
    await expectFailure(() => b.Tensor.fromArray(new Int16Array(3) as any, [3]), /unsupported typed array/, TypeError);
    await expectFailure(() => b.nllLoss(fake, t), /Tensor/, TypeError);
    await expectFailure(() => b.randperm(-1, 0), /randperm: n/);
    await expectFailure(() => b.manualSeed(1.5), /integer/);
    await expectFailure(() => enc.save('/nonexistent-dir/x.pt'), /nonexistent-dir/);
    await expectFailure(() => enc.saveAsync('/nonexistent-dir/x.pt'), /nonexistent-dir/);
    await expectFailure(() => t.to('tpu'));
    // Still alive and computing.
    expect(b.randperm(5, 0)).toHaveLength(5);
    expect(values(t)).toEqual([1, 2, 3, 4]);
  });
});

// Each worker_threads Worker loads the addon into its own environment (addon/addon_data.h).
// Before the fix, a Worker terminated, or calling process.exit(), while its batches were queued
// aborted the whole process ("terminate called after throwing an instance of 'Napi::Error'"):
// the worker thread settled their promises during its teardown, when no JS can run, and the
// failure escaped into Node-API.
describe('worker_threads', () => {
  it.each(['terminate', 'exit'])(
    'a Worker with batches pending at its %s ends alone; its results before and the main thread after equal the main thread before',
    (end) => {
      const common = `
        import { loadAddon } from ${JSON.stringify(path.join(repoRoot, 'scripts', 'native-binary.mjs'))};
        const b = loadAddon(${JSON.stringify(repoRoot)}).binding;
        const ROWS = 256, T = 6;
        const ids = new Int32Array(ROWS * T).map((_, i) => (i % T === 0 ? 2 : 5 + ((i * 7) % 90)));
        const data = { inputIds: ids, attentionMask: new Int32Array(ROWS * T).fill(1), batchSize: ROWS, seqLen: T, labels: new Int32Array(ROWS).map((_, r) => r % 2) };
        const classifier = () => b.buildClassifier(b.ScriptModule.load(${JSON.stringify(encTuple)}), { numClasses: 2, headHidden: 8, dropout: 0, pooling: 'cls', seed: 5 }).module;
      `;
      const workerFile = path.join(dir, `worker-${end}.mjs`);
      writeFileSync(
        workerFile,
        `${common}
        import { parentPort } from 'node:worker_threads';
        const model = classifier();
        parentPort.postMessage({ loss: (await b.evalStep(model, data)).loss });
        // Enough batches that some are still queued when the worker ends, whatever the timing.
        for (let i = 0; i < 8; i++) b.evalStep(model, data);
        ${end === 'exit' ? 'process.exit(0);' : "parentPort.postMessage('queued');"}
      `,
      );
      const mainFile = path.join(dir, `main-${end}.mjs`);
      writeFileSync(
        mainFile,
        `${common}
        import { Worker } from 'node:worker_threads';
        const model = classifier();
        const before = (await b.evalStep(model, data)).loss;
        const worker = new Worker(${JSON.stringify(workerFile)});
        let workerLoss = null;
        worker.on('message', (m) => {
          if (m === 'queued') worker.terminate();
          else workerLoss = m.loss;
        });
        const exitCode = await new Promise((resolve) => worker.on('exit', resolve));
        const after = (await b.evalStep(model, data)).loss;
        console.log(JSON.stringify({ before, workerLoss, after, exitCode }));
      `,
      );
      const child = spawnSync(process.execPath, [mainFile], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
      expect(child.signal, child.stderr.slice(-2000)).toBeNull();
      expect(child.status, child.stderr.slice(-2000)).toBe(0);
      const out = JSON.parse(child.stdout.trim().split('\n').pop()!) as {
        before: number;
        workerLoss: number;
        after: number;
        exitCode: number;
      };
      expect(out.exitCode).toBe(end === 'exit' ? 0 : 1);
      expect(out.before).toBeGreaterThan(0);
      expect(out.workerLoss).toBe(out.before);
      expect(out.after).toBe(out.before);
    },
  );
});

describe('scripts/find-libtorch.mjs', () => {
  it('finds a libtorch on this machine and reports each candidate', async () => {
    const { findLibtorch } = await import('../scripts/find-libtorch.mjs');
    const seen: Array<{ source: string; usable: boolean }> = [];
    const found = findLibtorch({ report: (c: { source: string; usable: boolean }) => seen.push(c) });
    expect(['LIBTORCH', 'python', 'system']).toContain(found.source);
    expect(found.flavor).toMatch(/^(cpu|cu\d+|cuda)$/);
    expect(seen.some((c) => c.usable && c.source === found.source)).toBe(true);
    expect(found.version?.split('.').slice(0, 2).join('.')).toBe(b.versions().builtAgainst.split('.').slice(0, 2).join('.'));
  });

  it('prefers LIBTORCH, reading its version and CUDA flavor, and refuses one that is not a libtorch (never falls through)', async () => {
    const { findLibtorch } = await import('../scripts/find-libtorch.mjs');
    const fake = path.join(dir, 'libtorch');
    const cmake = path.join(fake, 'share', 'cmake', 'Torch');
    mkdirSync(cmake, { recursive: true });
    mkdirSync(path.join(fake, 'lib'), { recursive: true });
    writeFileSync(path.join(cmake, 'TorchConfig.cmake'), '# fake\n');
    writeFileSync(path.join(fake, 'build-version'), '2.11.0+cu130\n');
    const saved = process.env.LIBTORCH;
    try {
      process.env.LIBTORCH = fake;
      expect(findLibtorch()).toEqual({
        cmakePrefixPath: path.join(fake, 'share', 'cmake'),
        libDir: path.join(fake, 'lib'),
        version: '2.11.0+cu130',
        flavor: 'cu130',
        source: 'LIBTORCH',
      });
      // A mistyped path to a CUDA libtorch used to fall through to the next candidate (here the
      // system's CPU one), and the user trained on the CPU without a word.
      const typo = path.join(dir, 'no-such-libtorch');
      process.env.LIBTORCH = typo;
      const seen: Array<{ source: string; usable: boolean }> = [];
      expect(() => findLibtorch({ report: (c: { source: string; usable: boolean }) => seen.push(c) })).toThrow(
        `torch-bert: LIBTORCH=${typo} is not a libtorch folder (no share/cmake/Torch/TorchConfig.cmake in it): ` +
          'point it at an unpacked libtorch, or unset it to use a Python PyTorch or the system install.',
      );
      expect(seen).toEqual([expect.objectContaining({ source: 'LIBTORCH', usable: false })]);
    } finally {
      if (saved === undefined) delete process.env.LIBTORCH;
      else process.env.LIBTORCH = saved;
    }
  });
});
