/**
 * Native safety, systematically: every export of the addon and every method of its classes
 * (the table below must list them all — a new export without an entry fails the first test) is
 * called with
 *   - garbage in each argument position (wrong JS types: a TypeError; odd values of the right
 *     type: an Error or a result, never a crash),
 *   - disposed tensors / modules / optimizers / adapters in each object position (an Error
 *     naming the disposal), objects that only inherit a class's prototype, objects of another
 *     class, and argument objects whose getters throw or dispose the other arguments,
 *   - tensors of wrong dtypes and shapes,
 *   - a disposed receiver (every method: an Error; dispose() again: harmless), a receiver of
 *     another class (TypeError),
 *   - and their asynchronous work's arguments disposed while it is in flight.
 * test/native.test.ts and test/native-techniques.test.ts check messages of specific cases; this
 * file checks that nothing is left out. A crash here ends the test run (the point of the file);
 * the one class of cases known to corrupt memory (objects re-prototyped to another addon class)
 * runs in a child process.
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NativeBinding, NativeScriptModule, NativeTensor, StepBatch } from '../../lib/addon/binding.js';
import { loadBinding } from '../../lib/addon/loader.js';
import { makeEncoder, makeEncoderConfig, repoRoot } from '../fixtures.js';

let b: NativeBinding;
let dir: string;
let encoderFile: string;
/** The fixture encoder's sizes: a 1-layer BERT of width 16 (2 heads, 100 ids). */
const FIXTURE_ENCODER = { layers: 1, hidden: 16, heads: 2, intermediate: 32, vocabSize: 100 };

const startDir = process.cwd();

beforeAll(async () => {
  b = loadBinding();
  dir = mkdtempSync(path.join(tmpdir(), 'torch-bert-native-args-'));
  // Garbage paths such as 'x' are relative: let them land in the temporary folder, not the checkout.
  process.chdir(dir);
  encoderFile = await makeEncoder({ ...FIXTURE_ENCODER, seed: 7 });
});

afterAll(() => {
  process.chdir(startDir);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// ---- fresh, valid objects ------------------------------------------------------------------

const T = 5;
const tensor = () => b.Tensor.fromArray(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
const param = () => {
  const p = b.Tensor.fromArray(new Float32Array([0.1, -0.2, 0.3, 0.4, -0.5, 0.6]), [2, 3]);
  p.setRequiresGrad(true);
  return p;
};
const encoder = () => b.ScriptModule.load(encoderFile);
const classifier = () => {
  const { module } = b.buildClassifier(encoder(), { numClasses: 2, headHidden: 8, dropout: 0.1, pooling: 'cls', seed: 1 });
  return module;
};
const optimizerFor = (m: NativeScriptModule) => new b.AdamW([{ params: m.namedParameters().map(([, t]) => t), lr: 1e-3 }]);
const optimizer = () => new b.AdamW([{ params: [param()], lr: 1e-3 }]);
const batch = (labels = true): StepBatch => ({
  inputIds: new Int32Array([2, 11, 12, 13, 3, 2, 14, 3, 0, 0]),
  attentionMask: new Int32Array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0]),
  batchSize: 2,
  seqLen: T,
  ...(labels ? { labels: new Int32Array([0, 1]) } : {}),
});
const features = () =>
  b.Tensor.fromArray(
    new Float32Array(4 * 16).map((_, i) => Math.sin(i)),
    [4, 16],
  );
const adapters = (m = classifier()) => b.applyLora(m, { targets: ['attention.self.query'], rank: 2, alpha: 4, dropout: 0, seed: 1 });
const bottleneck = (m = classifier()) => b.applyAdapters(m, { config: 'houlsby', size: 2, activation: 'relu', seed: 1 });
const file = (name: string) => path.join(dir, name);
const disposed = <T extends { dispose(): void }>(x: T): T => {
  x.dispose();
  return x;
};

// ---- the table -------------------------------------------------------------------------------

/**
 * Argument kinds. A trailing `?` marks an optional argument (undefined is fine). `path` is a
 * string naming a file (also checked for NUL characters). `any` accepts every value (its garbage
 * only has to fail cleanly or succeed).
 */
type Kind =
  | 'tensor'
  | 'module'
  | 'optimizer'
  | 'string'
  | 'path'
  | 'int'
  | 'number'
  | 'bool'
  | 'object'
  | 'int32array'
  // A batch's labels: class ids (Int32Array) or a regression or multi-label model's targets (Float32Array).
  | 'labels'
  | 'uint8array'
  | 'typedarray'
  | 'array'
  | 'function'
  | 'any';

interface Entry {
  /** `name` for exports, `Class#method` / `Class.static` for methods. */
  name: string;
  kinds: Array<Kind | `${Kind}?`>;
  /** Fresh valid arguments. */
  args: () => unknown[];
  call: (...args: any[]) => unknown;
  /** Valid arguments still fail (by design, or for want of a device). */
  validFails?: () => boolean;
}

/** buildEncoder's config of the fixture encoder. */
const FIXTURE_ENCODER_CONFIG = makeEncoderConfig(FIXTURE_ENCODER);

const entries = (): Entry[] => [
  // Tensor
  {
    name: 'Tensor.fromArray',
    kinds: ['typedarray', 'array', 'string?', 'string?'],
    args: () => [new Float32Array(6), [2, 3], 'float64', 'cpu'],
    call: (...a) => (b.Tensor.fromArray as any)(...a),
  },
  { name: 'Tensor#toArray', kinds: [], args: () => [], call: () => tensor().toArray() },
  { name: 'Tensor#item', kinds: [], args: () => [], call: () => b.Tensor.fromArray(new Float32Array([3]), [1]).item() },
  { name: 'Tensor#to', kinds: ['string', 'string?'], args: () => ['cpu', 'float64'], call: (...a) => (tensor().to as any)(...a) },
  { name: 'Tensor#clone', kinds: [], args: () => [], call: () => tensor().clone() },
  { name: 'Tensor#setRequiresGrad', kinds: ['bool'], args: () => [true], call: (on) => tensor().setRequiresGrad(on) },
  { name: 'Tensor#grad', kinds: [], args: () => [], call: () => param().grad() },
  {
    name: 'Tensor#backward',
    kinds: [],
    args: () => [],
    call: () => b.nllLoss(param(), b.Tensor.fromArray(new Int32Array([0, 1]), [2])).backward(),
  },
  { name: 'Tensor#copyFrom', kinds: ['tensor'], args: () => [tensor()], call: (src) => tensor().copyFrom(src) },
  { name: 'Tensor#dispose', kinds: [], args: () => [], call: () => tensor().dispose() },
  // ScriptModule
  {
    name: 'ScriptModule.load',
    kinds: ['path', 'string?'],
    args: () => [encoderFile, 'cpu'],
    call: (...a) => (b.ScriptModule.load as any)(...a),
  },
  {
    name: 'ScriptModule.loadAsync',
    kinds: ['path', 'string?'],
    args: () => [encoderFile, 'cpu'],
    call: (...a) => (b.ScriptModule.loadAsync as any)(...a),
  },
  {
    name: 'ScriptModule#forward',
    kinds: ['tensor', 'tensor'],
    args: () => [b.Tensor.fromArray(batch().inputIds, [2, T]), b.Tensor.fromArray(batch().attentionMask, [2, T])],
    call: (...a) => (encoder().forward as any)(...a),
  },
  {
    name: 'ScriptModule#forwardAsync',
    kinds: ['tensor', 'tensor'],
    args: () => [b.Tensor.fromArray(batch().inputIds, [2, T]), b.Tensor.fromArray(batch().attentionMask, [2, T])],
    call: (...a) => (encoder().forwardAsync as any)(...a),
  },
  {
    name: 'ScriptModule#runMethod',
    kinds: ['string', 'tensor'],
    args: () => ['head_forward', features()],
    call: (...a) => (classifier().runMethod as any)(...a),
  },
  { name: 'ScriptModule#methodSchema', kinds: ['string'], args: () => ['forward'], call: (n) => encoder().methodSchema(n) },
  { name: 'ScriptModule#prunedOps', kinds: ['string?'], args: () => ['forward'], call: (...a) => (classifier().prunedOps as any)(...a) },
  { name: 'ScriptModule#namedParameters', kinds: [], args: () => [], call: () => encoder().namedParameters() },
  {
    name: 'ScriptModule#setRequiresGrad',
    kinds: ['bool', 'string?'],
    args: () => [false, 'head.'],
    call: (...a) => (classifier().setRequiresGrad as any)(...a),
  },
  { name: 'ScriptModule#train', kinds: ['bool'], args: () => [true], call: (on) => encoder().train(on) },
  { name: 'ScriptModule#to', kinds: ['string'], args: () => ['cpu'], call: (d) => encoder().to(d) },
  { name: 'ScriptModule#save', kinds: ['path'], args: () => [file('m.pt')], call: (p) => encoder().save(p) },
  { name: 'ScriptModule#saveAsync', kinds: ['path'], args: () => [file('m2.pt')], call: (p) => encoder().saveAsync(p) },
  { name: 'ScriptModule#clone', kinds: [], args: () => [], call: () => encoder().clone() },
  { name: 'ScriptModule#dispose', kinds: [], args: () => [], call: () => encoder().dispose() },
  // AdamW
  {
    name: 'AdamW',
    kinds: ['array'],
    args: () => [[{ params: [param()], lr: 0.1, betas: [0.9, 0.99], eps: 1e-8, weightDecay: 0.01 }]],
    call: (g) => new b.AdamW(g),
  },
  {
    name: 'AdamW#step',
    kinds: [],
    args: () => [],
    call: () => {
      const p = param();
      const opt = new b.AdamW([{ params: [p], lr: 0.1 }]);
      b.nllLoss(p, b.Tensor.fromArray(new Int32Array([0, 1]), [2])).backward();
      opt.step();
    },
  },
  { name: 'AdamW#zeroGrad', kinds: [], args: () => [], call: () => optimizer().zeroGrad() },
  { name: 'AdamW#getLr', kinds: [], args: () => [], call: () => optimizer().getLr() },
  { name: 'AdamW#setLr', kinds: ['int', 'number'], args: () => [0, 0.5], call: (g, lr) => optimizer().setLr(g, lr) },
  { name: 'AdamW#save', kinds: ['path'], args: () => [file('opt.pt')], call: (p) => optimizer().save(p) },
  {
    name: 'AdamW#load',
    kinds: ['path'],
    args: () => {
      optimizer().save(file('opt-load.pt'));
      return [file('opt-load.pt')];
    },
    call: (p) => optimizer().load(p),
  },
  { name: 'AdamW#dispose', kinds: [], args: () => [], call: () => optimizer().dispose() },
  // Classifier, steps, frozen technique
  {
    name: 'buildClassifier',
    kinds: ['module', 'object'],
    args: () => [encoder(), { numClasses: 2, headHidden: 4, dropout: 0, pooling: 'mean', seed: 3 }],
    call: (m, s) => b.buildClassifier(m, s),
  },
  {
    name: 'trainStep',
    kinds: ['module', 'optimizer', 'object', 'object?'],
    args: () => {
      const m = classifier();
      return [m, optimizerFor(m), batch(), { maxGradNorm: 1, lossScale: 0.5, labelSmoothing: 0.1, classWeights: new Float32Array([1, 2]) }];
    },
    call: (...a) => (b.trainStep as any)(...a),
  },
  {
    name: 'evalStep',
    kinds: ['module', 'object', 'object?'],
    args: () => [classifier(), batch(), { labelSmoothing: 0.1 }],
    call: (...a) => (b.evalStep as any)(...a),
  },
  {
    name: 'extractFeatures',
    kinds: ['module', 'object'],
    args: () => [classifier(), batch(false)],
    call: (m, x) => b.extractFeatures(m, x),
  },
  { name: 'cat', kinds: ['array'], args: () => [[features(), features()]], call: (ts) => b.cat(ts) },
  {
    name: 'headTrainStep',
    kinds: ['module', 'optimizer', 'tensor', 'int32array', 'labels', 'object?'],
    args: () => {
      const m = classifier();
      m.setRequiresGrad(false, 'encoder.');
      return [m, optimizerFor(m), features(), new Int32Array([0, 3]), new Int32Array([1, 0]), { maxGradNorm: 1 }];
    },
    call: (...a) => (b.headTrainStep as any)(...a),
  },
  {
    name: 'headEvalStep',
    kinds: ['module', 'tensor', 'int32array', 'any', 'object?'],
    args: () => [classifier(), features(), new Int32Array([0, 3]), new Int32Array([1, 0]), {}],
    call: (...a) => (b.headEvalStep as any)(...a),
  },
  // LoRA
  {
    name: 'applyLora',
    kinds: ['module', 'object'],
    args: () => [classifier(), { targets: ['attention.self.query'], rank: 2, alpha: 4, dropout: 0.1, seed: 1 }],
    call: (m, s) => b.applyLora(m, s),
  },
  { name: 'LoraAdapters#modules', kinds: [], args: () => [], call: () => adapters().modules },
  { name: 'LoraAdapters#trainableCount', kinds: [], args: () => [], call: () => adapters().trainableCount },
  { name: 'LoraAdapters#unusedTargets', kinds: [], args: () => [], call: () => adapters().unusedTargets },
  { name: 'LoraAdapters#parameters', kinds: [], args: () => [], call: () => adapters().parameters() },
  { name: 'LoraAdapters#merge', kinds: [], args: () => [], call: () => adapters().merge() },
  { name: 'LoraAdapters#plan', kinds: ['string?'], args: () => ['forward'], call: (...a) => (adapters().plan as any)(...a) },
  { name: 'LoraAdapters#save', kinds: ['path'], args: () => [file('lora.pt')], call: (p) => adapters().save(p) },
  {
    name: 'LoraAdapters#load',
    kinds: ['path'],
    args: () => {
      adapters().save(file('lora-load.pt'));
      return [file('lora-load.pt')];
    },
    call: (p) => adapters().load(p),
  },
  { name: 'LoraAdapters#dispose', kinds: [], args: () => [], call: () => adapters().dispose() },
  // Bottleneck adapters
  {
    name: 'applyAdapters',
    kinds: ['module', 'object'],
    args: () => [classifier(), { config: 'pfeiffer', size: 2, activation: 'gelu', seed: 1 }],
    call: (m, s) => b.applyAdapters(m, s),
  },
  { name: 'BottleneckAdapters#parameters', kinds: [], args: () => [], call: () => bottleneck().parameters() },
  { name: 'BottleneckAdapters#save', kinds: ['path'], args: () => [file('bottleneck.pt')], call: (p) => bottleneck().save(p) },
  {
    name: 'BottleneckAdapters#load',
    kinds: ['path'],
    args: () => {
      bottleneck().save(file('bottleneck-load.pt'));
      return [file('bottleneck-load.pt')];
    },
    call: (p) => bottleneck().load(p),
  },
  { name: 'BottleneckAdapters#dispose', kinds: [], args: () => [], call: () => bottleneck().dispose() },
  // Tensor files and RNG state
  {
    name: 'saveTensors',
    kinds: ['path', 'object'],
    args: () => [file('t.pt'), { a: tensor(), 'b.c': param() }],
    call: (p, r) => b.saveTensors(p, r),
  },
  {
    name: 'loadTensors',
    kinds: ['path'],
    args: () => {
      b.saveTensors(file('t-load.pt'), { a: tensor() });
      return [file('t-load.pt')];
    },
    call: (p) => b.loadTensors(p),
  },
  // Weight files and Hugging Face models
  {
    name: 'writeSafetensors',
    kinds: ['path', 'array', 'object?'],
    args: () => [file('w.safetensors'), [['a', tensor()]], { format: 'pt' }],
    call: (...a) => (b.writeSafetensors as any)(...a),
  },
  {
    name: 'readSafetensors',
    kinds: ['path'],
    args: () => {
      b.writeSafetensors(file('r.safetensors'), [['a', tensor()]]);
      return [file('r.safetensors')];
    },
    call: (p) => b.readSafetensors(p),
  },
  {
    name: 'readSafetensorsHeader',
    kinds: ['path'],
    args: () => {
      b.writeSafetensors(file('h.safetensors'), [['a', tensor()]]);
      return [file('h.safetensors')];
    },
    call: (p) => b.readSafetensorsHeader(p),
  },
  {
    name: 'readTorchStateDict',
    kinds: ['path'],
    args: () => {
      b.saveTensors(file('sd.bin'), { a: tensor() });
      return [file('sd.bin')];
    },
    call: (p) => b.readTorchStateDict(p),
  },
  {
    name: 'buildEncoder',
    kinds: ['object', 'array', 'string?'],
    // The fixture encoder's own weights: a 1-layer BERT of width 16 (2 heads, 100 ids).
    args: () => [
      FIXTURE_ENCODER_CONFIG,
      encoder()
        .namedParameters()
        .map(([n, t]) => [n, t.clone()]),
      'cpu',
    ],
    call: (...a) => (b.buildEncoder as any)(...a),
  },
  {
    name: 'buildMlmModel',
    kinds: ['module', 'module'],
    // The encoder and its MLM head from one buildEncoder call (buildMlmModel refuses a head from another).
    args: () => {
      const { hiddenSize: h, vocabSize: v } = FIXTURE_ENCODER_CONFIG;
      const t = (n: number, dims: number[], fill = 0) => b.Tensor.fromArray(new Float32Array(n).fill(fill), dims);
      const built = b.buildEncoder(
        { ...FIXTURE_ENCODER_CONFIG, mlmHead: true },
        [
          ...encoder()
            .namedParameters()
            .map(([n, x]) => [n, x.clone()] as [string, NativeTensor]),
          ['cls.predictions.transform.dense.weight', t(h * h, [h, h], 0.01)],
          ['cls.predictions.transform.dense.bias', t(h, [h])],
          ['cls.predictions.transform.LayerNorm.weight', t(h, [h], 1)],
          ['cls.predictions.transform.LayerNorm.bias', t(h, [h])],
          ['cls.predictions.bias', t(v, [v])],
        ],
        'cpu',
      );
      return [built.encoder, built.mlmHead!];
    },
    call: (e, h) => b.buildMlmModel(e, h),
  },
  { name: 'getRngState', kinds: [], args: () => [], call: () => b.getRngState() },
  { name: 'setRngState', kinds: ['uint8array'], args: () => [b.getRngState()], call: (s) => b.setRngState(s) },
  // Losses and runtime
  {
    name: 'nllLoss',
    kinds: ['tensor', 'tensor'],
    args: () => [tensor(), b.Tensor.fromArray(new Int32Array([0, 2]), [2])],
    call: (x, y) => b.nllLoss(x, y),
  },
  {
    name: 'crossEntropy',
    kinds: ['tensor', 'tensor'],
    args: () => [tensor(), b.Tensor.fromArray(new Int32Array([0, 2]), [2])],
    call: (x, y) => b.crossEntropy(x, y),
  },
  { name: 'noGrad', kinds: ['function'], args: () => [() => 1], call: (f) => b.noGrad(f) },
  { name: 'manualSeed', kinds: ['int'], args: () => [5], call: (s) => b.manualSeed(s) },
  { name: 'randperm', kinds: ['int', 'int'], args: () => [7, 1], call: (n, s) => b.randperm(n, s) },
  { name: 'setNumThreads', kinds: ['int'], args: () => [b.getNumThreads()], call: (n) => b.setNumThreads(n) },
  { name: 'setBlasThreads', kinds: ['int'], args: () => [b.getBlasThreads() ?? 1], call: (n) => b.setBlasThreads(n) },
  // A descriptor of a file of this test's own (a lock taken again by this process is granted).
  { name: 'tryLockFile', kinds: ['int'], args: () => [openSync(path.join(dir, 'lock'), 'w')], call: (fd) => b.tryLockFile(fd) },
  { name: 'tokenPruning', kinds: [], args: () => [], call: () => b.tokenPruning() },
  // Distributed: this process joins no group (no RANK/WORLD_SIZE), so joining and the collectives fail by design.
  { name: 'distributedBackends', kinds: [], args: () => [], call: () => b.distributedBackends() },
  { name: 'distributedJoinAsync', kinds: ['int'], args: () => [1000], call: (t) => b.distributedJoinAsync(t), validFails: () => true },
  { name: 'distributedCancelJoin', kinds: [], args: () => [], call: () => b.distributedCancelJoin() },
  {
    name: 'distributedAllReduce',
    kinds: ['typedarray', 'string'],
    args: () => [new Float64Array(2), 'sum'],
    call: (v, op) => b.distributedAllReduce(v, op),
    validFails: () => true,
  },
  {
    name: 'distributedAllReduceTensor',
    kinds: ['tensor', 'string'],
    args: () => [tensor(), 'sum'],
    call: (t, op) => b.distributedAllReduceTensor(t, op),
    validFails: () => true,
  },
  {
    name: 'distributedBroadcast',
    kinds: ['array', 'int'],
    args: () => [[tensor()], 0],
    call: (t, root) => b.distributedBroadcast(t, root),
    validFails: () => true,
  },
  { name: 'distributedLeave', kinds: [], args: () => [], call: () => b.distributedLeave() },
  { name: 'setTokenPruning', kinds: ['bool'], args: () => [true], call: (on) => b.setTokenPruning(on) },
  { name: 'getNumThreads', kinds: [], args: () => [], call: () => b.getNumThreads() },
  { name: 'getBlasThreads', kinds: [], args: () => [], call: () => b.getBlasThreads() },
  { name: 'cudaIsAvailable', kinds: [], args: () => [], call: () => b.cudaIsAvailable() },
  { name: 'cudaDeviceCount', kinds: [], args: () => [], call: () => b.cudaDeviceCount() },
  { name: 'versions', kinds: [], args: () => [], call: () => b.versions() },
  // Precision and diagnostics
  { name: 'AdamW#gradScaler', kinds: [], args: () => [], call: () => optimizer().gradScaler() },
  {
    name: 'AdamW#setGradScaler',
    kinds: ['object'],
    args: () => [{ scale: 1024, growthInterval: 10 }],
    call: (o) => optimizer().setGradScaler(o),
  },
  { name: 'setAllowTF32', kinds: ['bool'], args: () => [b.allowTF32()], call: (on) => b.setAllowTF32(on) },
  { name: 'allowTF32', kinds: [], args: () => [], call: () => b.allowTF32() },
  { name: 'showConfig', kinds: [], args: () => [], call: () => b.showConfig() },
  { name: 'parallelInfo', kinds: [], args: () => [], call: () => b.parallelInfo() },
  { name: 'cpuCacheStats', kinds: [], args: () => [], call: () => b.cpuCacheStats() },
  { name: 'emptyCpuCache', kinds: [], args: () => [], call: () => b.emptyCpuCache() },
  { name: 'getNumInteropThreads', kinds: [], args: () => [], call: () => b.getNumInteropThreads() },
  {
    name: 'matmul',
    kinds: ['tensor', 'tensor'],
    args: () => [tensor(), b.Tensor.fromArray(new Float32Array(6), [3, 2])],
    call: (x, y) => b.matmul(x, y),
  },
  { name: 'buildInfo', kinds: [], args: () => [], call: () => b.buildInfo() },
  // Without CUDA even valid arguments fail (cleanly); with CUDA, device 0 exists.
  {
    name: 'cudaDeviceProperties',
    kinds: ['int'],
    args: () => [0],
    call: (i) => b.cudaDeviceProperties(i),
    validFails: () => !b.cudaIsAvailable(),
  },
  // Testing only: rejects by design.
  {
    name: 'simulateDeviceError',
    kinds: ['string', 'string', 'int'],
    args: () => ['oom', 'cpu', 8],
    call: (k, d, n) => b.simulateDeviceError(k, d, n),
    validFails: () => true,
  },
];

/** Accessors are read, not called; listed so that the coverage check knows them. */
const ACCESSORS: Record<string, string[]> = {
  Tensor: ['shape', 'dtype', 'device', 'requiresGrad', 'disposed'],
  ScriptModule: ['device', 'isTraining', 'disposed', 'forwardArity'],
  AdamW: ['disposed'],
  LoraAdapters: ['modules', 'trainableCount', 'unusedTargets'],
  BottleneckAdapters: ['modules', 'trainableCount', 'size'],
};

// ---- running calls ------------------------------------------------------------------------------

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/** NATIVE_ARGS_TRACE=<file>: append each call to that file before making it (to find a call that hangs or crashes). */
const TRACE = process.env.NATIVE_ARGS_TRACE;
let traceLabel = '';
function traceAs(label: string): void {
  traceLabel = label;
}

async function outcome(fn: () => unknown): Promise<Outcome> {
  if (TRACE) appendFileSync(TRACE, `${traceLabel} :: ${fn.toString().slice(0, 160).replace(/\s+/g, ' ')}\n`);
  try {
    const value = fn();
    return { ok: true, value: value instanceof Promise ? await value : value };
  } catch (error) {
    return { ok: false, error };
  }
}

/** Garbage values, with the kinds each one is a *right JS type* for (it may still be a bad value). */
function garbage(): Array<{ label: string; value: unknown; typeOk: string[] }> {
  const fake = Object.create(b.Tensor.prototype);
  const fakeModule = Object.create(b.ScriptModule.prototype);
  return [
    { label: 'undefined', value: undefined, typeOk: [] },
    { label: 'null', value: null, typeOk: [] },
    { label: '0', value: 0, typeOk: ['int', 'number'] },
    { label: '-1', value: -1, typeOk: ['int', 'number'] },
    { label: '1.5', value: 1.5, typeOk: ['number'] },
    { label: 'NaN', value: NaN, typeOk: ['number'] },
    { label: 'Infinity', value: Infinity, typeOk: ['number'] },
    { label: '2^53', value: 2 ** 53, typeOk: ['int', 'number'] },
    { label: '-2^63', value: -(2 ** 63), typeOk: ['int', 'number'] },
    { label: "''", value: '', typeOk: ['string', 'path'] },
    { label: "'x'", value: 'x', typeOk: ['string', 'path'] },
    { label: 'a 100 kB string', value: 'y'.repeat(100_000), typeOk: ['string', 'path'] },
    { label: 'a string with NUL', value: 'a\0b', typeOk: ['string', 'path'] },
    { label: 'true', value: true, typeOk: ['bool'] },
    { label: '{}', value: {}, typeOk: ['object'] },
    { label: '[]', value: [], typeOk: ['array', 'object'] },
    { label: '[1, "x"]', value: [1, 'x'], typeOk: ['array', 'object'] },
    // biome-ignore lint/suspicious/noSparseArray: the garbage under test is a sparse array
    { label: 'a sparse array', value: [, , 3], typeOk: ['array', 'object'] },
    { label: 'a function', value: () => 1, typeOk: ['function'] },
    { label: 'a symbol', value: Symbol('s'), typeOk: [] },
    { label: '10n', value: 10n, typeOk: [] },
    { label: 'Float32Array(2)', value: new Float32Array(2), typeOk: ['labels', 'typedarray', 'object'] },
    { label: 'Int32Array(0)', value: new Int32Array(0), typeOk: ['int32array', 'labels', 'typedarray', 'object'] },
    { label: 'Uint8Array(3)', value: new Uint8Array(3), typeOk: ['uint8array', 'typedarray', 'object'] },
    { label: 'Int16Array(2)', value: new Int16Array(2), typeOk: ['object'] },
    { label: 'a DataView', value: new DataView(new ArrayBuffer(8)), typeOk: ['object'] },
    { label: 'an object inheriting Tensor.prototype', value: fake, typeOk: ['object'] },
    { label: 'an object inheriting ScriptModule.prototype', value: fakeModule, typeOk: ['object'] },
    { label: 'a Tensor', value: tensor(), typeOk: ['tensor', 'object'] },
    { label: 'a ScriptModule', value: encoder(), typeOk: ['module', 'object'] },
    { label: 'an AdamW', value: optimizer(), typeOk: ['optimizer', 'object'] },
    {
      label: 'an object whose getters throw',
      value: new Proxy(
        {},
        {
          get: () => {
            throw new Error('getter trap');
          },
          has: () => true,
        },
      ),
      typeOk: ['object'],
    },
  ];
}

/** The right JS type for the kind? (Optional kinds also take undefined; `any` takes all.) */
function typeOk(kind: string, g: { label: string; typeOk: string[] }): boolean {
  const base = kind.replace('?', '');
  if (base === 'any') return true;
  // Optional arguments take undefined or null (absent).
  if (kind.endsWith('?') && (g.label === 'undefined' || g.label === 'null')) return true;
  // An integer argument given a non-integer number has the right type and a bad value.
  if (base === 'int') return g.typeOk.includes('number');
  return g.typeOk.includes(base);
}

function describeError(e: unknown): string {
  return e instanceof Error ? `${e.constructor.name}: ${e.message.slice(0, 200)}` : `a non-Error ${String(e)}`;
}

// ---- the tests -------------------------------------------------------------------------------

describe('every native export and method, with wrong arguments', () => {
  it('the table lists every export and every method of the addon', () => {
    const listed = new Set(entries().map((e) => e.name));
    const missing: string[] = [];
    for (const key of Object.keys(b)) {
      const value = (b as unknown as Record<string, unknown>)[key];
      if (['Tensor', 'ScriptModule', 'AdamW'].includes(key)) continue;
      if (!listed.has(key)) missing.push(key);
      expect(typeof value).toBe('function');
    }
    const classes: Array<[string, object]> = [
      ['Tensor', b.Tensor as object],
      ['ScriptModule', b.ScriptModule as object],
      ['AdamW', b.AdamW as object],
      ['LoraAdapters', (Object.getPrototypeOf(adapters()) as { constructor: object }).constructor],
      ['BottleneckAdapters', (Object.getPrototypeOf(bottleneck()) as { constructor: object }).constructor],
    ];
    for (const [cls, ctor] of classes) {
      const proto = (ctor as { prototype: object }).prototype;
      for (const name of Object.getOwnPropertyNames(proto)) {
        if (name === 'constructor') continue;
        const accessor = Object.getOwnPropertyDescriptor(proto, name)!.get !== undefined;
        if (accessor ? !ACCESSORS[cls]!.includes(name) && !listed.has(`${cls}#${name}`) : !listed.has(`${cls}#${name}`))
          missing.push(`${cls}#${name}`);
      }
      for (const name of Object.getOwnPropertyNames(ctor)) {
        if (['length', 'name', 'prototype', 'arguments', 'caller'].includes(name)) continue;
        if (!listed.has(`${cls}.${name}`)) missing.push(`${cls}.${name}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('valid arguments succeed (so that each failure below is caused by the one bad argument)', async () => {
    for (const e of entries()) {
      const o = await outcome(() => e.call(...e.args()));
      if (e.validFails?.())
        expect(!o.ok && o.error instanceof Error, `${e.name}: ${o.ok ? 'succeeded' : describeError(o.error)}`).toBe(true);
      else expect(o.ok, `${e.name}: ${o.ok ? '' : describeError(o.error)}`).toBe(true);
    }
  });

  it('garbage in any argument position: a TypeError for a wrong JS type, else an Error or a result; the process survives', async () => {
    let calls = 0;
    let failures = 0;
    const wrong: string[] = [];
    for (const e of entries()) {
      for (let position = 0; position < e.kinds.length; position++) {
        const kind = e.kinds[position]!;
        for (const g of garbage()) {
          const args = e.args();
          args[position] = g.value;
          const where = `${e.name} argument ${position} (${kind}) = ${g.label}`;
          traceAs(where);
          const o = await outcome(() => e.call(...args));
          calls++;
          if (!o.ok) {
            failures++;
            if (!(o.error instanceof Error)) wrong.push(`${where}: threw ${describeError(o.error)}`);
          }
          if (!typeOk(kind, g)) {
            if (o.ok) wrong.push(`${where}: accepted`);
            else if (!(o.error instanceof TypeError) && !/getter trap/.test(String((o.error as Error).message))) {
              wrong.push(`${where}: ${describeError(o.error)} (expected a TypeError)`);
            }
          }
        }
      }
      // Missing arguments altogether.
      if (e.kinds.some((k) => !k.endsWith('?') && k !== 'any')) {
        const o = await outcome(() => e.call());
        calls++;
        // Variadic forward(): an arity Error; everything else: a TypeError for the missing argument.
        const variadic = /#forward|#runMethod/.test(e.name);
        if (o.ok) wrong.push(`${e.name}(): accepted no arguments`);
        else if (!(o.error instanceof (variadic ? Error : TypeError)))
          wrong.push(`${e.name}(): ${describeError(o.error)} (expected a TypeError)`);
      }
    }
    console.log(`native-args: ${calls} calls with garbage, ${failures} failed cleanly`);
    expect(wrong).toEqual([]);
    // Still alive and computing.
    expect(Array.from(b.randperm(5, 0)).sort()).toEqual([0, 1, 2, 3, 4]);
  });

  it('garbage inside argument objects (batches, specs, options, groups, tensor lists and records)', async () => {
    const m = classifier();
    const opt = optimizerFor(m);
    const bad: unknown[] = [
      undefined,
      null,
      -1,
      0,
      1.5,
      NaN,
      2 ** 40,
      'x',
      {},
      [],
      new Float32Array(10),
      new Int32Array(3),
      tensor(),
      () => 1,
    ];
    const cases: Array<[string, (v: unknown) => unknown]> = [];
    for (const key of ['inputIds', 'attentionMask', 'batchSize', 'seqLen', 'labels']) {
      cases.push([`trainStep batch.${key}`, (v) => b.trainStep(m, opt, { ...batch(), [key]: v } as StepBatch)]);
      cases.push([`evalStep batch.${key}`, (v) => b.evalStep(m, { ...batch(), [key]: v } as StepBatch)]);
      cases.push([`extractFeatures batch.${key}`, (v) => b.extractFeatures(m, { ...batch(false), [key]: v } as StepBatch)]);
    }
    for (const key of ['maxGradNorm', 'accumulateOnly', 'lossScale', 'labelSmoothing', 'classWeights', 'skipNonFinite']) {
      cases.push([`trainStep options.${key}`, (v) => b.trainStep(m, opt, batch(), { [key]: v } as never)]);
    }
    for (const key of ['numClasses', 'headHidden', 'dropout', 'pooling', 'seed']) {
      cases.push([
        `buildClassifier spec.${key}`,
        (v) => b.buildClassifier(encoder(), { numClasses: 2, headHidden: 4, dropout: 0, pooling: 'cls', seed: 1, [key]: v } as never),
      ]);
    }
    for (const key of ['targets', 'rank', 'alpha', 'dropout', 'seed']) {
      cases.push([
        `applyLora spec.${key}`,
        (v) => b.applyLora(classifier(), { targets: ['attention.self.query'], rank: 2, alpha: 4, dropout: 0, seed: 1, [key]: v } as never),
      ]);
    }
    for (const key of ['config', 'size', 'activation', 'seed']) {
      cases.push([
        `applyAdapters spec.${key}`,
        (v) => b.applyAdapters(classifier(), { config: 'houlsby', size: 2, activation: 'relu', seed: 1, [key]: v } as never),
      ]);
    }
    for (const key of ['params', 'lr', 'betas', 'eps', 'weightDecay']) {
      cases.push([`AdamW group.${key}`, (v) => new b.AdamW([{ params: [param()], lr: 0.1, [key]: v } as never])]);
    }
    cases.push(['cat tensors[1]', (v) => b.cat([features(), v as NativeTensor])]);
    cases.push(['saveTensors record value', (v) => b.saveTensors(file('g.pt'), { a: v as NativeTensor })]);
    cases.push([
      'ScriptModule#forward extra input',
      (v) => encoder().forward(b.Tensor.fromArray(batch().inputIds, [2, T]), v as NativeTensor),
    ]);
    cases.push(['ScriptModule#runMethod input', (v) => classifier().runMethod('features', v as NativeTensor, v as NativeTensor)]);
    cases.push(['ScriptModule#forward too many inputs', (v) => encoder().forward(...Array.from({ length: 20 }, () => v as NativeTensor))]);
    const wrong: string[] = [];
    let calls = 0;
    for (const [label, call] of cases) {
      for (const v of bad) {
        const o = await outcome(() => call(v));
        calls++;
        if (!o.ok && !(o.error instanceof Error)) wrong.push(`${label} = ${String(v)}: threw ${describeError(o.error)}`);
      }
    }
    console.log(`native-args: ${calls} calls with garbage inside argument objects`);
    expect(wrong).toEqual([]);
    // The model still trains.
    expect(Number.isFinite((await b.trainStep(m, opt, batch())).loss)).toBe(true);
  });

  it('a path with a NUL character is rejected, and no file is written at the path cut short before it', async () => {
    const wrong: string[] = [];
    let checked = 0;
    for (const e of entries()) {
      const position = e.kinds.indexOf('path');
      if (position < 0) continue;
      const args = e.args();
      const cut = file(`nul-${checked++}.pt`);
      args[position] = `${cut}\0.ignored`;
      const o = await outcome(() => e.call(...args));
      if (o.ok || !/NUL character/.test((o.error as Error).message)) wrong.push(`${e.name}: ${o.ok ? 'accepted' : describeError(o.error)}`);
      if (existsSync(cut)) wrong.push(`${e.name}: wrote ${cut}`);
    }
    expect(checked).toBe(16); // every path position: the weight files' and BottleneckAdapters' save and load included
    expect(wrong).toEqual([]);
  });

  it('tensors of wrong dtypes and shapes in every tensor position: an Error or a result, never a crash', async () => {
    const odd = (): Array<[string, NativeTensor]> => [
      ['int32 [2,3]', b.Tensor.fromArray(new Int32Array(6), [2, 3])],
      ['int64 [2]', b.Tensor.fromArray(new BigInt64Array([0n, 5n]), [2])],
      ['bool [2,3]', b.Tensor.fromArray(new Uint8Array(6), [2, 3], 'bool')],
      ['float16 [4,16]', b.Tensor.fromArray(new Float32Array(64), [4, 16], 'float16')],
      ['float64 [4,16]', b.Tensor.fromArray(new Float64Array(64), [4, 16])],
      ['0-d', b.Tensor.fromArray(new Float32Array([1]), [])],
      ['empty [0]', b.Tensor.fromArray(new Float32Array(0), [0])],
      ['empty [0,16]', b.Tensor.fromArray(new Float32Array(0), [0, 16])],
      ['[1,1,1,1,6]', b.Tensor.fromArray(new Float32Array(6), [1, 1, 1, 1, 6])],
      ['NaN [2,3]', b.Tensor.fromArray(new Float32Array(6).fill(NaN), [2, 3])],
      ['huge ids int64', b.Tensor.fromArray(new BigInt64Array([2n ** 62n, -(2n ** 62n)]), [2])],
      ['requiresGrad [2,3]', param()],
      ['a parameter of a module', classifier().namedParameters()[0]![1]],
    ];
    const wrong: string[] = [];
    let calls = 0;
    for (const e of entries()) {
      for (let position = 0; position < e.kinds.length; position++) {
        if (e.kinds[position] !== 'tensor') continue;
        for (const [label, t] of odd()) {
          const args = e.args();
          args[position] = t;
          const o = await outcome(() => e.call(...args));
          calls++;
          if (!o.ok && !(o.error instanceof Error))
            wrong.push(`${e.name} argument ${position} = ${label}: threw ${describeError(o.error)}`);
        }
      }
    }
    // Tensor lists and records, and features for the head steps.
    for (const [label, t] of odd()) {
      for (const call of [
        () => b.cat([t, t]),
        () => b.cat([features(), t]),
        () => b.saveTensors(file('odd.pt'), { t }),
        () => new b.AdamW([{ params: [t], lr: 0.1 }]),
        () => tensor().copyFrom(t),
        () => t.copyFrom(tensor()),
        () => t.to('cpu', 'int32'),
        () => t.toArray(),
        () => t.item(),
        () => t.backward(),
      ]) {
        const o = await outcome(call);
        calls++;
        if (!o.ok && !(o.error instanceof Error)) wrong.push(`${label}: ${call.toString()}: threw ${describeError(o.error)}`);
      }
    }
    console.log(`native-args: ${calls} calls with tensors of odd dtypes and shapes`);
    expect(wrong).toEqual([]);
  });
});

describe('disposed objects, wrong receivers, hostile getters', () => {
  it('a disposed tensor, module or optimizer in any argument position is an Error that says so', async () => {
    const wrong: string[] = [];
    for (const e of entries()) {
      for (let position = 0; position < e.kinds.length; position++) {
        const kind = e.kinds[position]!;
        if (!['tensor', 'module', 'optimizer'].includes(kind)) continue;
        const args = e.args();
        (args[position] as { dispose(): void }).dispose();
        const o = await outcome(() => e.call(...args));
        if (o.ok || !/disposed/.test((o.error as Error).message)) {
          wrong.push(`${e.name} argument ${position}: ${o.ok ? 'accepted' : describeError(o.error)}`);
        }
      }
    }
    // Inside lists, records and groups.
    const inside: Array<[string, () => unknown]> = [
      ['cat', () => b.cat([features(), disposed(features())])],
      ['saveTensors', () => b.saveTensors(file('d.pt'), { a: tensor(), b: disposed(tensor()) })],
      ['AdamW params', () => new b.AdamW([{ params: [param(), disposed(param())], lr: 0.1 }])],
      [
        'forward second input',
        () => encoder().forward(b.Tensor.fromArray(batch().inputIds, [2, T]), disposed(b.Tensor.fromArray(batch().attentionMask, [2, T]))),
      ],
      [
        'buildClassifier encoder',
        () => b.buildClassifier(disposed(encoder()), { numClasses: 2, headHidden: 4, dropout: 0, pooling: 'cls', seed: 1 }),
      ],
      [
        'applyLora model',
        () => b.applyLora(disposed(classifier()), { targets: ['attention.self.query'], rank: 2, alpha: 4, dropout: 0, seed: 1 }),
      ],
    ];
    for (const [label, call] of inside) {
      const o = await outcome(call);
      if (o.ok || !/disposed/.test((o.error as Error).message)) wrong.push(`${label}: ${o.ok ? 'accepted' : describeError(o.error)}`);
    }
    expect(wrong).toEqual([]);
  });

  it('every method of a disposed object is an Error; dispose() again is harmless; `disposed` reads true', async () => {
    const objects: Array<[string, () => { dispose(): void; disposed?: boolean }]> = [
      ['Tensor', tensor],
      ['ScriptModule', classifier],
      ['AdamW', optimizer],
      ['LoraAdapters', () => adapters()],
      ['BottleneckAdapters', () => bottleneck()],
    ];
    const wrong: string[] = [];
    for (const [cls, make] of objects) {
      const proto = Object.getPrototypeOf(make()) as object;
      for (const name of Object.getOwnPropertyNames(proto)) {
        if (['constructor', 'dispose', 'disposed'].includes(name)) continue;
        const entry = entries().find((e) => e.name === `${cls}#${name}`);
        const obj = make();
        obj.dispose();
        const descriptor = Object.getOwnPropertyDescriptor(proto, name)!;
        const o = await outcome(() =>
          descriptor.get
            ? (obj as unknown as Record<string, unknown>)[name]
            : (obj as unknown as Record<string, (...a: unknown[]) => unknown>)[name]!(...(entry?.args() ?? [])),
        );
        if (o.ok || !/disposed/.test((o.error as Error).message))
          wrong.push(`${cls}#${name} after dispose: ${o.ok ? 'succeeded' : describeError(o.error)}`);
      }
      const obj = make();
      obj.dispose();
      expect(() => obj.dispose(), `${cls}: second dispose`).not.toThrow();
      expect(() => obj.dispose(), `${cls}: third dispose`).not.toThrow();
      if ('disposed' in obj) expect(obj.disposed, `${cls}.disposed`).toBe(true);
    }
    expect(wrong).toEqual([]);
  });

  it('disposing a module frees neither the tensors handed out from it nor the adapters nor the optimizer built on them', async () => {
    const m = classifier();
    const params = m.namedParameters();
    const a = adapters(m);
    const opt = optimizerFor(m);
    const before = Array.from(params.at(-1)![1].toArray() as Float32Array);
    m.dispose();
    // The handles stay valid (they share storage with the module, which they keep alive).
    expect(Array.from(params.at(-1)![1].toArray() as Float32Array)).toEqual(before);
    expect(a.parameters().length).toBeGreaterThan(0);
    opt.zeroGrad();
    // But steps on the disposed module refuse.
    await expect(b.trainStep(m, opt, batch())).rejects.toThrow(/disposed/);
    a.dispose();
    opt.dispose();
    for (const [, t] of params) t.dispose();
  });

  it('methods and accessors called on another class or a plain object are TypeErrors naming the class', async () => {
    const receivers: Array<[string, unknown]> = [
      ['{}', {}],
      ['a Tensor', tensor()],
      ['a ScriptModule', encoder()],
      ['an AdamW', optimizer()],
      ['LoraAdapters', adapters()],
      ['BottleneckAdapters', bottleneck()],
      ['an object inheriting Tensor.prototype', Object.create(b.Tensor.prototype)],
    ];
    const classes: Array<[string, object]> = [
      ['Tensor', b.Tensor.prototype],
      ['ScriptModule', b.ScriptModule.prototype],
      ['AdamW', b.AdamW.prototype],
      ['LoraAdapters', Object.getPrototypeOf(adapters()) as object],
      ['BottleneckAdapters', Object.getPrototypeOf(bottleneck()) as object],
    ];
    const wrong: string[] = [];
    let calls = 0;
    for (const [cls, proto] of classes) {
      for (const name of Object.getOwnPropertyNames(proto)) {
        if (name === 'constructor') continue;
        const d = Object.getOwnPropertyDescriptor(proto, name)!;
        const fn = (d.get ?? d.value) as (...a: unknown[]) => unknown;
        for (const [label, receiver] of receivers) {
          if (label === `a ${cls}` || label === `an ${cls}` || label === cls) continue;
          traceAs(`${cls}#${name} on ${label}`);
          const o = await outcome(() => fn.call(receiver, 'cpu'));
          calls++;
          // Methods: V8's receiver check ("Illegal invocation") or the addon's type-tag check;
          // accessors: the type-tag check, which names the class expected and the one given.
          if (o.ok) {
            wrong.push(`${cls}#${name} on ${label}: succeeded`);
            continue;
          }
          const named = d.get ? (o.error as Error).message?.includes(`must be a${cls === 'AdamW' ? 'n' : ''} ${cls}, got`) : true;
          if (!(o.error instanceof TypeError) || !named) wrong.push(`${cls}#${name} on ${label}: ${describeError(o.error)}`);
        }
      }
    }
    // Constructors called directly, or with forged externals.
    for (const ctor of [
      b.Tensor,
      b.ScriptModule,
      (Object.getPrototypeOf(adapters()) as { constructor: unknown }).constructor,
      (Object.getPrototypeOf(bottleneck()) as { constructor: unknown }).constructor,
    ]) {
      for (const args of [[], [1], [{}], [tensor()]]) {
        const o = await outcome(() => new (ctor as new (...a: unknown[]) => unknown)(...args));
        calls++;
        if (o.ok || !(o.error instanceof TypeError))
          wrong.push(`new ${(ctor as { name: string }).name}(${args.length} args): ${o.ok ? 'succeeded' : describeError(o.error)}`);
      }
    }
    console.log(`native-args: ${calls} calls on wrong receivers`);
    expect(wrong).toEqual([]);
  });

  it('argument objects whose getters throw or dispose the other arguments mid-call', async () => {
    const wrong: string[] = [];
    for (let trial = 0; trial < 3; trial++) {
      const m = classifier();
      const opt = optimizerFor(m);
      const f = features();
      const good = batch();
      const hostile = {
        get inputIds() {
          m.dispose();
          opt.dispose();
          f.dispose();
          return good.inputIds;
        },
        attentionMask: good.attentionMask,
        batchSize: 2,
        seqLen: T,
        labels: good.labels,
      };
      for (const call of [
        () => b.trainStep(m, opt, hostile as StepBatch),
        () => b.evalStep(m, hostile as StepBatch),
        () => b.extractFeatures(m, hostile as StepBatch),
        () =>
          b.headTrainStep(m, opt, f, new Int32Array([0]), new Int32Array([1]), {
            get maxGradNorm() {
              m.dispose();
              opt.dispose();
              f.dispose();
              return 1;
            },
          }),
        () =>
          b.headEvalStep(m, f, new Int32Array([0]), new Int32Array([1]), {
            get labelSmoothing() {
              m.dispose();
              f.dispose();
              return 0;
            },
          }),
        () =>
          b.buildClassifier(m, {
            numClasses: 2,
            headHidden: 4,
            dropout: 0,
            pooling: 'cls',
            get seed() {
              m.dispose();
              return 1;
            },
          } as never),
        () =>
          b.applyLora(m, {
            get targets() {
              m.dispose();
              return ['attention.self.query'];
            },
            rank: 2,
            alpha: 4,
            dropout: 0,
            seed: 1,
          } as never),
        () =>
          new b.AdamW([
            {
              get params() {
                f.dispose();
                return [f];
              },
              lr: 0.1,
            } as never,
          ]),
      ]) {
        const o = await outcome(call);
        if (!o.ok && !(o.error instanceof Error)) wrong.push(`${call.toString().slice(0, 80)}: threw ${describeError(o.error)}`);
      }
    }
    // Throwing getters anywhere in a batch: the getter's error comes through.
    const m = classifier();
    for (const key of ['inputIds', 'attentionMask', 'batchSize', 'seqLen', 'labels']) {
      const throwing = {
        ...batch(),
        get [key]() {
          throw new RangeError(`getter ${key}`);
        },
      };
      const o = await outcome(() => b.evalStep(m, throwing as StepBatch));
      if (o.ok || !/getter/.test((o.error as Error).message))
        wrong.push(`evalStep with a throwing ${key} getter: ${o.ok ? 'succeeded' : describeError(o.error)}`);
    }
    // noGrad: a throwing callback's error comes through, and grad mode is restored.
    const o = await outcome(() =>
      b.noGrad(() => {
        throw new SyntaxError('inside noGrad');
      }),
    );
    expect(o.ok).toBe(false);
    expect((o as { error: Error }).error.message).toMatch(/inside noGrad/);
    const p = param();
    const loss = b.nllLoss(p, b.Tensor.fromArray(new Int32Array([0, 1]), [2]));
    expect(loss.requiresGrad).toBe(true);
    expect(wrong).toEqual([]);
  });

  it('disposing the arguments of asynchronous work while it runs: the work finishes or fails cleanly', async () => {
    const wrong: string[] = [];
    for (let i = 0; i < 5; i++) {
      const m = classifier();
      const opt = optimizerFor(m);
      const f = features();
      const enc = encoder();
      const ids = b.Tensor.fromArray(batch().inputIds, [2, T]);
      const mask = b.Tensor.fromArray(batch().attentionMask, [2, T]);
      const pending = [
        outcome(() => b.trainStep(m, opt, batch())),
        outcome(() => b.evalStep(m, batch())),
        outcome(() => b.extractFeatures(m, batch(false))),
        outcome(() => b.headEvalStep(m, f, new Int32Array([0, 1]), null)),
        outcome(() => b.headTrainStep(m, opt, f, new Int32Array([0, 1]), new Int32Array([0, 1]))),
        outcome(() => enc.forwardAsync(ids, mask)),
        outcome(() => m.saveAsync(file(`async-${i}.pt`))),
        outcome(() => b.ScriptModule.loadAsync(encoderFile)),
      ];
      // Dispose everything right away (while the first calls are on the worker thread), and GC.
      m.dispose();
      opt.dispose();
      f.dispose();
      enc.dispose();
      ids.dispose();
      mask.dispose();
      (globalThis as { gc?: () => void }).gc?.();
      for (const o of await Promise.all(pending)) {
        if (!o.ok && !(o.error instanceof Error)) wrong.push(`iteration ${i}: threw ${describeError(o.error)}`);
      }
    }
    expect(wrong).toEqual([]);
  });
});

/**
 * Runs `body` (TypeScript, with `b` the binding, `encoderFile`, and `make` / `protos` for each
 * class) in a child process and returns the JSON it prints last; a crash or a hang fails. A hang
 * (the garbage mutex above) never ends; the deadline is what a loaded machine needs to start
 * vite-node and libtorch and run the calls (15 s was once exceeded at load average 10).
 */
const CHILD_DEADLINE_SECONDS = 60;

function inChild(body: string): string[] {
  const script = `
    import { loadBinding } from ${JSON.stringify(path.join(repoRoot, 'lib', 'addon', 'loader.ts'))};
    const b = loadBinding();
    const encoderFile = ${JSON.stringify(encoderFile)};
    const classifier = () => b.buildClassifier(b.ScriptModule.load(encoderFile), { numClasses: 2, headHidden: 4, dropout: 0, pooling: 'cls', seed: 1 }).module;
    const param = () => { const p = b.Tensor.fromArray(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]); p.setRequiresGrad(true); return p; };
    const make = {
      Tensor: () => b.Tensor.fromArray(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]),
      ScriptModule: classifier,
      AdamW: () => new b.AdamW([{ params: [param()], lr: 0.1 }]),
      LoraAdapters: () => b.applyLora(classifier(), { targets: ['attention.self.query'], rank: 2, alpha: 4, dropout: 0, seed: 1 }),
      BottleneckAdapters: () => b.applyAdapters(classifier(), { config: 'houlsby', size: 2, activation: 'relu', seed: 1 }),
    };
    const protos = { Tensor: b.Tensor.prototype, ScriptModule: b.ScriptModule.prototype, AdamW: b.AdamW.prototype, LoraAdapters: Object.getPrototypeOf(make.LoraAdapters()), BottleneckAdapters: Object.getPrototypeOf(make.BottleneckAdapters()) };
    const results = [];
    const record = async (label, fn) => {
      let r;
      try { const v = fn(); r = v instanceof Promise ? await v.then(() => 'ok', (e) => e.constructor.name) : 'ok'; } catch (e) { r = e.constructor.name; }
      results.push(label + ': ' + r);
    };
    ${body}
    console.log(JSON.stringify(results));
  `;
  const scriptFile = path.join(dir, `child-${Math.random().toString(36).slice(2)}.ts`);
  writeFileSync(scriptFile, script);
  const child = spawnSync(process.execPath, [path.join(repoRoot, 'node_modules', 'vite-node', 'vite-node.mjs'), scriptFile], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: CHILD_DEADLINE_SECONDS * 1000,
    killSignal: 'SIGKILL',
  });
  expect(
    child.signal,
    `the child ${child.signal === 'SIGKILL' ? `hung (killed after ${CHILD_DEADLINE_SECONDS} s)` : 'crashed'}: ${child.stderr.slice(-2000)}`,
  ).toBeNull();
  expect(child.status, child.stderr.slice(-2000)).toBe(0);
  return JSON.parse(child.stdout.trim().split('\n').pop()!) as string[];
}

// An object of one addon class must never be read as another: `instanceof` is fooled by
// Object.setPrototypeOf, and napi_unwrap would then return the other class's pointer (before the
// fix, an AdamW passed as a Tensor read as "disposed", and `ScriptModule.prototype.device` read on
// a Tensor locked a garbage mutex and hung). native/wrap_tag.h tags every instance in its
// constructor and checks the tag in each Get() and before every method and accessor.
describe('objects of one addon class used as another (type confusion), in a child process', () => {
  it('an object re-prototyped to another class, passed where that class is expected, is a TypeError', () => {
    const results = inChild(`
      const batch = { inputIds: new Int32Array(4), attentionMask: new Int32Array(4).fill(1), batchSize: 2, seqLen: 2, labels: new Int32Array(2) };
      const uses = {
        Tensor: [(x) => b.nllLoss(x, b.Tensor.fromArray(new Int32Array([0, 1]), [2])), (x) => param().copyFrom(x), (x) => b.cat([x]), (x) => b.saveTensors(${JSON.stringify(path.join(dir, 'c.pt'))}, { x })],
        ScriptModule: [(x) => b.buildClassifier(x, { numClasses: 2, headHidden: 4, dropout: 0, pooling: 'cls', seed: 1 }), (x) => b.evalStep(x, batch), (x) => b.applyLora(x, { targets: ['attention.self.query'], rank: 2, alpha: 4, dropout: 0, seed: 1 }), (x) => b.applyAdapters(x, { config: 'houlsby', size: 2, activation: 'relu', seed: 1 })],
        AdamW: [(x) => b.trainStep(classifier(), x, batch)],
        LoraAdapters: [],
        BottleneckAdapters: [],
      };
      for (const from of Object.keys(make)) for (const to of Object.keys(protos)) {
        if (from === to) continue;
        for (const use of uses[to]) {
          const x = make[from]();
          Object.setPrototypeOf(x, protos[to]);
          await record(from + ' as ' + to + ' in ' + use.toString().slice(0, 50), () => use(x));
        }
      }
    `);
    expect(results.length).toBeGreaterThan(20);
    expect(results.filter((r) => !r.endsWith(': TypeError'))).toEqual([]);
  });

  it("every method and accessor read on another class's instance is a TypeError", () => {
    const results = inChild(`
      for (const [cls, proto] of Object.entries(protos)) for (const name of Object.getOwnPropertyNames(proto)) {
        if (name === 'constructor') continue;
        const d = Object.getOwnPropertyDescriptor(proto, name);
        for (const other of Object.keys(make)) {
          if (other === cls) continue;
          await record(cls + '#' + name + ' on ' + other, () => (d.get ?? d.value).call(make[other](), 'cpu'));
        }
      }
    `);
    expect(results.length).toBeGreaterThan(50);
    expect(results.filter((r) => !r.endsWith(': TypeError'))).toEqual([]);
  });
});
