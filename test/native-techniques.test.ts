/**
 * Tests of the native training techniques against Python PyTorch (/usr/bin/python3) on the same
 * inputs: loss options (class weights, label smoothing), gradient accumulation and the gradient
 * norm, the frozen-encoder path (extractFeatures / cat / headTrainStep / headEvalStep), LoRA
 * adapters, bottleneck adapters, tensor files, RNG state and Tensor.copyFrom.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type {
  ClassifierSpec,
  NativeAdamW,
  NativeBinding,
  NativeBottleneckAdapters,
  NativeScriptModule,
  NativeTensor,
  StepBatch,
} from '../lib/addon/binding.js';
import { loadBinding } from '../lib/addon/loader.js';
import { makeEncoder, makeEncoderConfig, PYTHON, repoRoot } from './fixtures.js';

/** Runs Python code (argv after the code: `args`) and parses the last stdout line as JSON. */
function py<T = unknown>(code: string, ...args: string[]): T {
  const out = execFileSync(PYTHON, ['-c', PY_PRELUDE + code, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 256 * 1024 * 1024,
  });
  return JSON.parse(out.trim().split('\n').pop()!) as T;
}

const PY_PRELUDE =
  'import json, math, sys, torch\nimport torch.nn.functional as F\ntorch.set_num_threads(1)\n' +
  // JSON has no NaN/Infinity; the references never produce them.
  'def flat(t): return t.detach().flatten().tolist()\n' +
  'def batch(a, b): return torch.tensor(json.loads(a)).view(-1, T), torch.tensor(json.loads(b)).view(-1, T)\n';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(Number(a[i]) - Number(b[i])));
  return m;
}

function values(t: NativeTensor): number[] {
  return Array.from(t.toArray() as ArrayLike<number>, Number);
}

function param(m: NativeScriptModule, name: string): NativeTensor {
  const found = m.namedParameters().find(([n]) => n === name);
  if (!found) throw new Error(`no parameter ${name}`);
  return found[1];
}

function snapshot(m: NativeScriptModule): Map<string, number[]> {
  return new Map(m.namedParameters().map(([n, t]) => [n, values(t)]));
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
let enc: string; // ENC_SIZES, forward(ids, mask) -> (last_hidden_state, pooler_output)
/** The small encoder's sizes: 2 layers of width 32 (2 heads), 100 ids. */
const ENC_SIZES = { vocabSize: 100, layers: 2, hidden: 32, heads: 2, intermediate: 64 };
let encBase: string; // 12 layers, hidden 768: the bert-base shape

// Four rows of six tokens (ids < 100, the small encoder's vocabulary), padding in rows 1 and 2.
const T = 6;
const IDS = [2, 15, 27, 33, 8, 3, 5, 61, 42, 0, 0, 0, 7, 7, 19, 88, 4, 0, 9, 12, 14, 16, 18, 20];
const MASK = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1];
const LABELS = [2, 0, 1, 2];
const PY_T = 'T = 6\n';

function batch(rows: number[], labels = true): StepBatch {
  const out: StepBatch = {
    inputIds: new Int32Array(rows.flatMap((r) => IDS.slice(r * T, r * T + T))),
    attentionMask: new Int32Array(rows.flatMap((r) => MASK.slice(r * T, r * T + T))),
    batchSize: rows.length,
    seqLen: T,
  };
  if (labels) out.labels = new Int32Array(rows.map((r) => LABELS[r]));
  return out;
}
const ALL = [0, 1, 2, 3];

const SPEC: ClassifierSpec = { numClasses: 3, headHidden: 16, dropout: 0, pooling: 'mean', seed: 9 };

/** A classifier on a fresh copy of the small encoder (two calls give identical models). */
function classifier(spec: Partial<ClassifierSpec> = {}): NativeScriptModule {
  const { module } = b.buildClassifier(b.ScriptModule.load(enc), { ...SPEC, ...spec });
  module.train(true);
  return module;
}

/** AdamW with weight decay 0.01; `eps` AdamW's (default 1e-8). */
function adamw(params: NativeTensor[], lr = 1e-3, eps?: number): NativeAdamW {
  return new b.AdamW([{ params, lr, weightDecay: 0.01, ...(eps !== undefined ? { eps } : {}) }]);
}

function trainable(m: NativeScriptModule): NativeTensor[] {
  return m
    .namedParameters()
    .filter(([, t]) => t.requiresGrad)
    .map(([, t]) => t);
}

function file(name: string): string {
  return path.join(dir, name);
}

beforeAll(async () => {
  b = loadBinding();
  dir = mkdtempSync(path.join(tmpdir(), 'torch-bert-techniques-'));
  [enc, encBase] = await Promise.all([
    makeEncoder({ ...ENC_SIZES, seed: 11 }),
    makeEncoder({ layers: 12, hidden: 768, heads: 12, intermediate: 3072, vocabSize: 30522 }),
  ]);
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('loss options and gradNorm', () => {
  it('class weights + label smoothing equal F.cross_entropy on the logits; gradNorm is the pre-clipping norm', async () => {
    const weights = [0.5, 2, 1.25];
    const smoothing = 0.1;
    const clipped = classifier();
    const unclipped = classifier();
    const before = file('loss-before.pt');
    clipped.save(before);
    const loss = { classWeights: new Float32Array(weights), labelSmoothing: smoothing };
    const r1 = await b.trainStep(clipped, adamw(trainable(clipped)), batch(ALL), { ...loss, maxGradNorm: 0.05 });
    const r2 = await b.trainStep(unclipped, adamw(trainable(unclipped)), batch(ALL), loss);
    const ev = await b.evalStep(classifier(), batch(ALL), loss);
    const evPlain = await b.evalStep(classifier(), batch(ALL));

    const ref = py<{ loss: number; plain: number; norm: number; clipped: Record<string, number[]>; unclipped: Record<string, number[]> }>(
      PY_T +
        'ids, mask = batch(sys.argv[2], sys.argv[3]); y = torch.tensor(json.loads(sys.argv[4]))\n' +
        'w = torch.tensor(json.loads(sys.argv[5])); eps = float(sys.argv[6])\n' +
        'out = {}\n' +
        'for clip in (True, False):\n' +
        '    m = torch.jit.load(sys.argv[1]); m.train()\n' +
        '    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)\n' +
        // The logits, without the classifier's log_softmax (dropout is 0).
        '    logits = m.head.out_proj(torch.relu(m.head.dense(m.features(ids, mask))))\n' +
        '    loss = F.cross_entropy(logits, y, weight=w, label_smoothing=eps)\n' +
        '    out["loss"] = loss.item(); out["plain"] = F.cross_entropy(logits, y).item()\n' +
        '    loss.backward()\n' +
        '    norm = torch.nn.utils.clip_grad_norm_(m.parameters(), 0.05 if clip else float("inf"))\n' +
        '    out["norm"] = norm.item()\n' +
        '    opt.step()\n' +
        '    out["clipped" if clip else "unclipped"] = {n: flat(p) for n, p in m.named_parameters()}\n' +
        'print(json.dumps(out))',
      before,
      JSON.stringify(IDS),
      JSON.stringify(MASK),
      JSON.stringify(LABELS),
      JSON.stringify(weights),
      String(smoothing),
    );
    expect(ref.norm).toBeGreaterThan(0.05); // clipping was active
    expect(Math.abs(r1.loss - ref.loss)).toBeLessThan(1e-6);
    expect(Math.abs(r2.loss - ref.loss)).toBeLessThan(1e-6);
    expect(Math.abs(ev.loss! - ref.loss)).toBeLessThan(1e-6);
    expect(Math.abs(evPlain.loss! - ref.plain)).toBeLessThan(1e-6);
    expect(Math.abs(r1.gradNorm! - ref.norm)).toBeLessThan(1e-5 * ref.norm);
    expect(Math.abs(r2.gradNorm! - ref.norm)).toBeLessThan(1e-5 * ref.norm);
    for (const [m, expected] of [
      [clipped, ref.clipped],
      [unclipped, ref.unclipped],
    ] as const) {
      for (const [name, v] of snapshot(m)) expect(maxAbsDiff(v, expected[name]), name).toBeLessThan(1e-5);
    }
  });

  it('a batch whose rows all weigh zero: a zero loss with zero gradients, not the 0/0 of a weighted mean', async () => {
    // Rows 0 and 3 are both class 2; class 2 weighs 0. (PyTorch's weighted mean would be NaN.)
    const rows = [0, 3];
    expect(rows.map((r) => LABELS[r])).toEqual([2, 2]);
    for (const labelSmoothing of [0, 0.1]) {
      const loss = { classWeights: new Float32Array([1, 1, 0]), labelSmoothing };
      const m = classifier();
      const r = await b.trainStep(m, adamw(trainable(m)), batch(rows), loss);
      // (A zero times the log-probabilities' sum: -0 counts as 0.)
      expect(Math.abs(r.loss)).toBe(0);
      expect(Math.abs(r.gradNorm!)).toBe(0);
      expect(Math.abs((await b.evalStep(classifier(), batch(rows), loss)).loss!)).toBe(0);
      // One row of a weighed class beside them, and the loss is a real one again (without smoothing,
      // that row's own: a zero-weight row adds nothing to the weighted mean; smoothing's term does).
      const mixed = await b.evalStep(classifier(), batch([0, 1]), loss);
      expect(mixed.loss!).toBeGreaterThan(0);
      if (labelSmoothing === 0) {
        const alone = await b.evalStep(classifier(), batch([1]), loss);
        expect(Math.abs(mixed.loss! - alone.loss!)).toBeLessThan(1e-6);
      }
    }
  });

  it("the fused AdamW pass (clipping coefficient and gradient norm taken in it) equals torch's step after clip_grad_norm_", () => {
    // Both in fresh processes, one with TORCH_BERT_FUSED_ADAMW=0; clipped and unclipped steps.
    const run = (env: Record<string, string>) => {
      const code = `
        const { loadBinding } = await import(${JSON.stringify(path.join(repoRoot, 'dist', 'index.js'))});
        const b = loadBinding();
        const out = {};
        for (const maxGradNorm of [0, 0.05]) {
          const { module } = b.buildClassifier(b.ScriptModule.load(${JSON.stringify(enc)}), ${JSON.stringify({ ...SPEC, pooling: 'cls' })});
          module.train(true);
          const params = module.namedParameters().map(([, t]) => t);
          const opt = new b.AdamW([{ params, lr: 1e-3, weightDecay: 0.01 }]);
          const batch = ${JSON.stringify({ ids: IDS, mask: MASK, labels: LABELS })};
          const step = { inputIds: Int32Array.from(batch.ids), attentionMask: Int32Array.from(batch.mask), batchSize: 4, seqLen: ${T}, labels: Int32Array.from(batch.labels) };
          const norms = [];
          for (let i = 0; i < 2; i++) norms.push((await b.trainStep(module, opt, step, { maxGradNorm })).gradNorm);
          out[maxGradNorm] = { norms, weights: module.namedParameters().map(([, t]) => Array.from(t.toArray())) };
        }
        console.log(JSON.stringify(out));`;
      const text = execFileSync(process.execPath, ['--input-type=module', '-e', code], {
        env: { ...process.env, ...env },
        encoding: 'utf8',
        maxBuffer: 64 * 1024 * 1024,
      });
      return JSON.parse(text.trim().split('\n').pop()!) as Record<string, { norms: number[]; weights: number[][] }>;
    };
    const fused = run({});
    const torchStep = run({ TORCH_BERT_FUSED_ADAMW: '0' });
    for (const clip of ['0', '0.05']) {
      fused[clip].norms.forEach((n, i) => {
        expect(Math.abs(n - torchStep[clip].norms[i])).toBeLessThan(1e-6 * n);
      });
      fused[clip].weights.forEach((w, i) => {
        expect(maxAbsDiff(w, torchStep[clip].weights[i])).toBeLessThan(1e-6);
      });
    }
    expect(fused['0.05'].norms[0]).toBeGreaterThan(0.05); // the clipped run did clip
  });

  it('empty loss options are the plain NLL loss', async () => {
    const first = classifier();
    const a = await b.trainStep(first, adamw(trainable(first)), batch(ALL));
    const m = classifier();
    const c = await b.trainStep(m, adamw(trainable(m)), batch(ALL), { labelSmoothing: 0 });
    expect(c.loss).toBe(a.loss);
  });

  it('reports NaN and Infinity gradient norms instead of throwing', async () => {
    const nan = classifier();
    const w = param(nan, 'head.out_proj.weight');
    w.copyFrom(b.Tensor.fromArray(new Float32Array(w.shape[0] * w.shape[1]).fill(NaN), w.shape));
    const r1 = await b.trainStep(nan, adamw(trainable(nan)), batch(ALL));
    expect(r1.loss).toBeNaN();
    expect(r1.gradNorm).toBeNaN();
    const r2 = await b.trainStep(nan, adamw(trainable(nan)), batch(ALL), { maxGradNorm: 1 });
    expect(r2.gradNorm).toBeNaN();
    const inf = classifier();
    const r3 = await b.trainStep(inf, adamw(trainable(inf)), batch(ALL), { lossScale: 1e30 });
    expect(r3.gradNorm).toBe(Infinity);
    expect(Number.isFinite(r3.loss)).toBe(true); // the reported loss is unscaled
  });

  it('validates loss options', async () => {
    const m = classifier();
    const opt = adamw(trainable(m));
    await expectFailure(() => b.trainStep(m, opt, batch(ALL), { classWeights: [1, 2, 3] as any }), /Float32Array/, TypeError);
    await expectFailure(
      () => b.trainStep(m, opt, batch(ALL), { classWeights: new Float32Array([1, 2]) }),
      /classWeights has 2 values but the model has 3 classes/,
    );
    await expectFailure(() => b.trainStep(m, opt, batch(ALL), { classWeights: new Float32Array([1, -1, 1]) }), /classWeights\[1\]/);
    await expectFailure(() => b.evalStep(m, batch(ALL), { labelSmoothing: 1 }), /labelSmoothing must be in \[0, 1\)/);
    await expectFailure(() => b.evalStep(m, batch(ALL), 'x' as any), /loss must be an object/, TypeError);
    await expectFailure(() => b.trainStep(m, opt, batch(ALL), { lossScale: 0 }), /lossScale must be > 0/);
    await expectFailure(() => b.trainStep(m, opt, batch(ALL), { accumulateOnly: 1 as any }), /accumulateOnly must be a boolean/, TypeError);
    expect((await b.trainStep(m, opt, batch(ALL))).predictions).toHaveLength(4);
  });
});

describe('problem types: regression and multi-label classification (native/module/problem_type.h)', () => {
  // Targets, row-major [4 rows, outputs]: one value per row for regression, three 0/1 per row for multi-label.
  const VALUES = [0.5, -1.25, 2, 0.75];
  const MULTI = [1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0];
  const CASES = [
    { problemType: 'regression', numClasses: 1, targets: VALUES, loss: 'F.mse_loss(logits, y.view_as(logits))', scores: 'logits' },
    {
      problemType: 'multi_label_classification',
      numClasses: 3,
      targets: MULTI,
      loss: 'F.binary_cross_entropy_with_logits(logits, y.view_as(logits))',
      scores: 'torch.sigmoid(logits)',
    },
    {
      problemType: 'multi_label_classification',
      numClasses: 3,
      targets: MULTI,
      positiveWeights: [3, 0.5, 1.5],
      loss: 'F.binary_cross_entropy_with_logits(logits, y.view_as(logits), pos_weight=torch.tensor([3, 0.5, 1.5]))',
      scores: 'torch.sigmoid(logits)',
    },
  ] as const;

  for (const c of CASES) {
    const loss = 'positiveWeights' in c ? { positiveWeights: Float32Array.from(c.positiveWeights) } : {};
    it(`${c.problemType}: forward returns the head's logits; the step's loss, update and evaluation equal ${c.loss.split('(')[0]}${'positiveWeights' in c ? ' with pos_weight' : ''}`, async () => {
      const spec = { numClasses: c.numClasses, problemType: c.problemType };
      const m = classifier(spec);
      const before = file(`${c.problemType}-before.pt`);
      m.save(before);
      const targets = (rows: number[]) => new Float32Array(rows.flatMap((r) => c.targets.slice(r * c.numClasses, (r + 1) * c.numClasses)));
      const step = await b.trainStep(m, adamw(trainable(m)), { ...batch(ALL, false), labels: targets(ALL) }, loss);
      const trained = file(`${c.problemType}-trained.pt`);
      m.save(trained);
      m.train(false);
      const ev = await b.evalStep(m, { ...batch(ALL, false), labels: targets(ALL) }, loss);
      const predicted = await b.evalStep(m, batch(ALL, false));
      const ref = py<{ attr: string; forward: number; loss: number; params: Record<string, number[]>; evalLoss: number; scores: number[] }>(
        PY_T +
          'ids, mask = batch(sys.argv[2], sys.argv[3]); y = torch.tensor(json.loads(sys.argv[4]), dtype=torch.float)\n' +
          'm = torch.jit.load(sys.argv[1]); m.train()\n' +
          'opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01)\n' +
          // The MLP head's logits (dropout 0), which forward must return as they are.
          'logits = m.head.out_proj(torch.relu(m.head.dense(m.features(ids, mask))))\n' +
          'out = {"attr": m.problem_type, "forward": (m(ids, mask) - logits).abs().max().item()}\n' +
          `loss = ${c.loss}\n` +
          'out["loss"] = loss.item(); loss.backward(); opt.step()\n' +
          'out["params"] = {n: flat(p) for n, p in m.named_parameters()}\n' +
          'm.eval()\n' +
          'with torch.no_grad():\n' +
          '    logits = m.head.out_proj(torch.relu(m.head.dense(m.features(ids, mask))))\n' +
          `    out["evalLoss"] = (${c.loss}).item(); out["scores"] = flat(${c.scores})\n` +
          'print(json.dumps(out))',
        before,
        JSON.stringify(IDS),
        JSON.stringify(MASK),
        JSON.stringify(c.targets),
      );
      expect(ref.attr).toBe(c.problemType);
      expect(ref.forward).toBe(0);
      expect(Math.abs(step.loss - ref.loss)).toBeLessThan(1e-6);
      for (const [name, v] of snapshot(m)) expect(maxAbsDiff(v, ref.params[name]!), name).toBeLessThan(1e-6);
      // No class per row: no argmax, nothing counted correct.
      expect([step.correct, step.predictions.length]).toEqual([0, 0]);
      expect([ev.correct, ev.predictions.length]).toEqual([null, 0]);
      expect(Math.abs(ev.loss! - ref.evalLoss)).toBeLessThan(1e-6);
      const [scores, empty] = c.problemType === 'regression' ? [ev.values, ev.probabilities] : [ev.probabilities, ev.values];
      expect(maxAbsDiff(scores, ref.scores)).toBeLessThan(1e-6);
      expect(empty.length).toBe(0);
      expect(predicted.loss).toBeNull();
      expect(maxAbsDiff(c.problemType === 'regression' ? predicted.values : predicted.probabilities, ref.scores)).toBeLessThan(1e-6);
      // The attribute survives the file: a classifier.pt loaded again trains with the same loss.
      const reloaded = b.ScriptModule.load(trained);
      const again = await b.evalStep(reloaded, { ...batch(ALL, false), labels: targets(ALL) }, loss);
      expect(Math.abs(again.loss! - ref.evalLoss)).toBeLessThan(1e-6);
    });
  }

  it('cached features: headTrainStep and headEvalStep take targets as trainStep and evalStep do', async () => {
    const spec = { numClasses: 3, problemType: 'multi_label_classification' } as const;
    const targets = new Float32Array(MULTI);
    const tokens = classifier(spec);
    const cached = classifier(spec);
    // Only the head trains on cached features: freeze the encoder of both.
    for (const m of [tokens, cached]) m.setRequiresGrad(false, 'encoder.');
    const features = await b.extractFeatures(cached, batch(ALL, false));
    const viaTokens = await b.trainStep(tokens, adamw(trainable(tokens)), { ...batch(ALL, false), labels: targets });
    const viaFeatures = await b.headTrainStep(cached, adamw(trainable(cached)), features, new Int32Array(ALL), targets);
    expect(Math.abs(viaTokens.loss - viaFeatures.loss)).toBeLessThan(1e-6);
    const after = snapshot(tokens);
    for (const [name, v] of snapshot(cached)) expect(maxAbsDiff(v, after.get(name)!), name).toBeLessThan(1e-6);
    const ev = await b.headEvalStep(cached, features, new Int32Array([2, 0]), new Float32Array([0, 1, 1, 1, 0, 1]));
    expect(ev.probabilities.length).toBe(6);
    expect(ev.loss).toBeGreaterThan(0);
  });

  it('labels of the wrong kind, count or range, and options of single-label classification, are refused with what is wrong', async () => {
    const regression = classifier({ numClasses: 1, problemType: 'regression' });
    const multi = classifier({ numClasses: 3, problemType: 'multi_label_classification' });
    const single = classifier();
    const opt = adamw(trainable(regression));
    const withLabels = (labels: Int32Array | Float32Array): StepBatch => ({ ...batch(ALL, false), labels });
    await expectFailure(
      () => b.evalStep(regression, batch(ALL)),
      /problem type is regression: its labels are targets, one per output \(a Float32Array\)/,
    );
    await expectFailure(
      () => b.evalStep(single, withLabels(new Float32Array(4))),
      /problem type is single_label_classification: its labels are class ids/,
    );
    await expectFailure(
      () => b.evalStep(multi, withLabels(new Float32Array(4))),
      /the labels hold 4 targets for 4 rows, but the model has 3 outputs per row/,
    );
    await expectFailure(
      () => b.evalStep(multi, withLabels(new Float32Array(MULTI).fill(1.5, 2, 3))),
      /multi-label targets must be in \[0, 1\].*1\.5/,
    );
    await expectFailure(
      () => b.trainStep(regression, opt, withLabels(new Float32Array([1, Number.NaN, 0, 0]))),
      /batch\.labels\[1\] is not a finite number/,
    );
    await expectFailure(
      () => b.trainStep(regression, opt, withLabels(new Float32Array(6))),
      /6 targets, not a positive multiple of batchSize = 4/,
    );
    await expectFailure(
      () => b.trainStep(regression, opt, withLabels(new Float64Array(4) as any)),
      /Int32Array of class ids or a Float32Array of targets/,
      TypeError,
    );
    await expectFailure(
      () => b.trainStep(regression, opt, withLabels(new Float32Array(4)), { labelSmoothing: 0.1 }),
      /class weights and label smoothing are single-label classification's; this model's problem type is regression/,
    );
    await expectFailure(
      () => b.evalStep(single, batch(ALL), { positiveWeights: new Float32Array([1, 1, 1]) }),
      /positive weights are multi-label classification's; this model's problem type is single_label_classification/,
    );
    await expectFailure(
      () => b.evalStep(multi, withLabels(new Float32Array(MULTI)), { positiveWeights: new Float32Array([1, 2]) }),
      /positiveWeights has 2 values but the model has 3 classes/,
    );
    await expectFailure(
      () => b.evalStep(multi, withLabels(new Float32Array(MULTI)), { positiveWeights: new Float32Array([1, -2, 1]) }),
      /positiveWeights\[1\] must be a finite number >= 0/,
    );
    expect(() => classifier({ problemType: 'ordinal' as any })).toThrow(
      /spec\.problemType must be 'single_label_classification', 'multi_label_classification' or 'regression', got 'ordinal'/,
    );
  });
});

describe('gradient accumulation', () => {
  it('two accumulated half-batches (lossScale 0.5) then a step equal one full-batch step', async () => {
    const full = classifier();
    const halves = classifier();
    const fullOpt = adamw(trainable(full));
    const halvesOpt = adamw(trainable(halves));
    const a = await b.trainStep(full, fullOpt, batch(ALL), { maxGradNorm: 0.05 });

    const before = snapshot(halves);
    const h1 = await b.trainStep(halves, halvesOpt, batch([0, 1]), { accumulateOnly: true, lossScale: 0.5, maxGradNorm: 0.05 });
    expect(h1.gradNorm).toBeNull();
    // Accumulate-only: gradients kept, nothing stepped.
    const used = (m: NativeScriptModule) => m.namedParameters().filter(([n]) => !n.startsWith('encoder.pooler.'));
    expect(used(halves).every(([, t]) => t.grad() !== null)).toBe(true); // the pooler's output is unused
    expect(snapshot(halves)).toEqual(before);
    const h2 = await b.trainStep(halves, halvesOpt, batch([2, 3]), { lossScale: 0.5, maxGradNorm: 0.05 });
    expect(halves.namedParameters().every(([, t]) => t.grad() === null)).toBe(true);

    // Reported losses are unscaled means over each half.
    expect(Math.abs((h1.loss + h2.loss) / 2 - a.loss)).toBeLessThan(1e-6);
    expect(Math.abs(h2.gradNorm! - a.gradNorm!)).toBeLessThan(1e-6 * a.gradNorm!);
    expect(a.gradNorm!).toBeGreaterThan(0.05); // the window's final step clipped
    const expected = snapshot(full);
    for (const [name, v] of snapshot(halves)) expect(maxAbsDiff(v, expected.get(name)!), name).toBeLessThan(1e-6);
  });

  it('a failed step drops the gradients accumulated so far', async () => {
    const m = classifier();
    const opt = adamw(trainable(m));
    await b.trainStep(m, opt, batch([0, 1]), { accumulateOnly: true });
    expect(m.namedParameters().filter(([, t]) => t.grad() !== null).length).toBeGreaterThan(10);
    await expectFailure(
      () => b.trainStep(m, opt, { ...batch([0, 1]), labels: new Int32Array([0, 9]) }, { accumulateOnly: true }),
      /label 9 is out of range/,
    );
    expect(m.namedParameters().every(([, t]) => t.grad() === null)).toBe(true);
  });
});

describe('cached features (frozen encoder)', () => {
  it('extractFeatures runs `features` in eval mode without autograd and restores the mode', async () => {
    const m = classifier({ dropout: 0.5 });
    const f = await b.extractFeatures(m, batch(ALL));
    expect(m.isTraining).toBe(true);
    expect(f.shape).toEqual([4, 32]);
    expect(f.dtype).toBe('float32');
    expect(f.requiresGrad).toBe(false);
    m.train(false);
    const direct = m.runMethod('features', ...tokenTensors(ALL)) as NativeTensor;
    expect(values(f)).toEqual(values(direct));
  });

  it('headTrainStep on cached features equals trainStep on the tokens (dropout 0)', async () => {
    const tokens = classifier();
    const cached = classifier();
    for (const m of [tokens, cached]) m.setRequiresGrad(false, 'encoder.');
    const tokensOpt = adamw(trainable(tokens), 1e-2);
    const cachedOpt = adamw(trainable(cached), 1e-2);
    expect(trainable(cached)).toHaveLength(4);

    // The cache holds the batch's rows out of order; `rows` puts them back.
    const cache = b.cat([await b.extractFeatures(cached, batch([2, 3])), await b.extractFeatures(cached, batch([0, 1]))]);
    expect(cache.shape).toEqual([4, 32]);
    const rows = new Int32Array([2, 3, 0, 1]);
    const labels = new Int32Array(LABELS);
    for (let step = 0; step < 3; step++) {
      const a = await b.trainStep(tokens, tokensOpt, batch(ALL), { maxGradNorm: 1 });
      const c = await b.headTrainStep(cached, cachedOpt, cache, rows, labels, { maxGradNorm: 1 });
      expect(Math.abs(c.loss - a.loss)).toBeLessThan(1e-6);
      expect(Math.abs(c.gradNorm! - a.gradNorm!)).toBeLessThan(1e-6);
      expect(Array.from(c.predictions)).toEqual(Array.from(a.predictions));
      expect(c.correct).toBe(a.correct);
    }
    const expected = snapshot(tokens);
    for (const [name, v] of snapshot(cached)) {
      const tolerance = name.startsWith('encoder.') ? 0 : 1e-6;
      expect(maxAbsDiff(v, expected.get(name)!), name).toBeLessThanOrEqual(tolerance);
    }

    const e1 = await b.evalStep(tokens, batch(ALL));
    const e2 = await b.headEvalStep(cached, cache, rows, labels);
    expect(Math.abs(e2.loss! - e1.loss!)).toBeLessThan(1e-6);
    expect(maxAbsDiff(e2.probabilities, e1.probabilities)).toBeLessThan(1e-6);
    const unlabelled = await b.headEvalStep(cached, cache, rows, null);
    expect(unlabelled.loss).toBeNull();
    expect(Array.from(unlabelled.predictions)).toEqual(Array.from(e2.predictions));
    const weighted = await b.headEvalStep(cached, cache, rows, labels, { classWeights: new Float32Array([1, 1, 1]) });
    expect(Math.abs(weighted.loss! - e2.loss!)).toBeLessThan(1e-6);
    expect(cached.isTraining).toBe(true);
  });

  it('headTrainStep uses the model mode: head dropout only in training mode', async () => {
    const m = classifier({ dropout: 0.5 });
    const features = await b.extractFeatures(m, batch(ALL));
    const opt = adamw(trainable(m), 0);
    const labels = new Int32Array(LABELS);
    const rows = new Int32Array([0, 1, 2, 3]);
    m.train(false);
    const e1 = await b.headTrainStep(m, opt, features, rows, labels);
    const e2 = await b.headTrainStep(m, opt, features, rows, labels);
    expect(e2.loss).toBe(e1.loss);
    m.train(true);
    const losses = new Set<number>();
    for (let i = 0; i < 4; i++) losses.add((await b.headTrainStep(m, opt, features, rows, labels)).loss);
    expect(losses.size).toBeGreaterThan(1);
  });

  it('validates features, rows and labels', async () => {
    const m = classifier();
    const opt = adamw(trainable(m));
    const f = await b.extractFeatures(m, batch(ALL));
    const rows = new Int32Array([0, 1]);
    const labels = new Int32Array([0, 1]);
    await expectFailure(
      () => b.headTrainStep(m, opt, f, new Int32Array([0, 4]), labels),
      /rows\[1\] = 4 is out of range for features with 4 rows/,
    );
    await expectFailure(() => b.headTrainStep(m, opt, f, new Int32Array([-1, 0]), labels), /rows\[0\] = -1/);
    await expectFailure(() => b.headTrainStep(m, opt, f, new Int32Array(0), new Int32Array(0)), /rows must not be empty/);
    await expectFailure(() => b.headTrainStep(m, opt, f, rows, new Int32Array([0])), /labels has 1 elements, expected rows.length = 2/);
    await expectFailure(() => b.headTrainStep(m, opt, f, rows, null as any), /labels is required/, TypeError);
    await expectFailure(() => b.headTrainStep(m, opt, f, rows, new Int32Array([0, 5])), /label 5 is out of range/);
    await expectFailure(() => b.headTrainStep(m, opt, f, [0, 1] as any, labels), /Int32Array/, TypeError);
    await expectFailure(() => b.headTrainStep(m, opt, b.Tensor.fromArray(new Float32Array(8), [8]), rows, labels), /\[N, hidden\]/);
    await expectFailure(() => b.headEvalStep(m, b.Tensor.fromArray(new Int32Array(8), [2, 4]), rows, null), /floating-point/);
    await expectFailure(
      () => b.headEvalStep(m, b.Tensor.fromArray(new Float32Array(8), [2, 4]), rows, null),
      /features have 4 columns but the model's hidden size is 32/,
    );
    const encoderOnly = b.ScriptModule.load(enc);
    await expectFailure(() => b.headEvalStep(encoderOnly, f, rows, null), /no 'head_forward' method/);
    await expectFailure(() => b.extractFeatures(encoderOnly, batch(ALL)), /no 'features' method/);
    await expectFailure(() => b.extractFeatures(m, { ...batch(ALL), seqLen: 5 }), /inputIds has 24 elements/);
    await expectFailure(() => b.cat([]), /must not be empty/);
    await expectFailure(() => b.cat([f, b.Tensor.fromArray(new Float32Array(3), [1, 3])]));
    await expectFailure(() => b.cat([f, 1 as any]), /cat: tensors\[1\] must be a Tensor/, TypeError);
    expect((await b.headTrainStep(m, opt, f, rows, labels)).predictions).toHaveLength(2);
  });
});

function tokenTensors(rows: number[]): [NativeTensor, NativeTensor] {
  const x = batch(rows, false);
  return [b.Tensor.fromArray(x.inputIds, [rows.length, T], 'int64'), b.Tensor.fromArray(x.attentionMask, [rows.length, T], 'int64')];
}

const QV = ['attention.self.query', 'attention.self.value'];

/** What a technique's adapters are to the shared set-ups below: their named tensors and a file load. */
interface Adapters {
  parameters(): Array<[string, NativeTensor]>;
  load(path: string): void;
}

/**
 * The set-up both techniques' "trains only adapters and head" tests share: a classifier (head
 * dropout 0.1) with its encoder frozen and `apply`'s adapters trains three steps; the encoder's
 * tensors stay bit-identical, the head's and every adapter tensor change. Then, in eval mode, the
 * adapted model's outputs on every row: the same from every forward path, and not the plain
 * classifier's.
 */
async function trainAdaptersAndHead<A extends Adapters>(apply: (m: NativeScriptModule) => A) {
  const m = classifier({ dropout: 0.1 });
  m.setRequiresGrad(false, 'encoder.');
  const adapters = apply(m);
  const before = snapshot(m);
  const adaptersBefore = adapters.parameters().map(([, t]) => values(t));
  const opt = adamw([...trainable(m), ...adapters.parameters().map(([, t]) => t)], 1e-2);
  for (let i = 0; i < 3; i++) {
    const r = await b.trainStep(m, opt, batch(ALL), { maxGradNorm: 1 });
    expect(Number.isFinite(r.gradNorm!)).toBe(true);
  }
  const after = snapshot(m);
  for (const [name, v] of after) {
    if (name.startsWith('encoder.'))
      expect(v, name).toEqual(before.get(name)); // the encoder bit-identical
    else expect(v, name).not.toEqual(before.get(name));
  }
  adapters.parameters().forEach(([name, t], i) => {
    expect(values(t), name).not.toEqual(adaptersBefore[i]);
  });

  m.train(false);
  const ids = tokenTensors(ALL);
  const out = values(m.forward(...ids) as NativeTensor);
  expect(values((await m.forwardAsync(...ids)) as NativeTensor)).toEqual(out);
  expect(values(m.runMethod('forward', ...ids) as NativeTensor)).toEqual(out);
  const base = classifier({ dropout: 0.1 });
  base.train(false);
  expect(maxAbsDiff(values(base.forward(...ids) as NativeTensor), out)).toBeGreaterThan(1e-4);
  return { m, adapters, before, after, ids, out };
}

/**
 * Adapters saved in `adapterFile` (+ `m`'s head) onto a fresh classifier on the same base encoder,
 * by `apply` with another seed, reproduce `m`'s outputs `out` on `ids` and its evaluation.
 */
async function expectAdaptersReload(
  m: NativeScriptModule,
  apply: (fresh: NativeScriptModule) => Adapters,
  adapterFile: string,
  ids: [NativeTensor, NativeTensor],
  out: number[],
): Promise<NativeScriptModule> {
  const fresh = classifier({ dropout: 0.1 });
  fresh.train(false);
  apply(fresh).load(adapterFile);
  for (const [name, t] of fresh.namedParameters()) if (name.startsWith('head.')) t.copyFrom(param(m, name));
  expect(maxAbsDiff(values(fresh.forward(...ids) as NativeTensor), out)).toBeLessThan(1e-6);
  const e1 = await b.evalStep(m, batch(ALL));
  const e2 = await b.evalStep(fresh, batch(ALL));
  expect(maxAbsDiff(e1.probabilities, e2.probabilities)).toBeLessThan(1e-6);
  return fresh;
}

describe('LoRA', () => {
  it('bert-base shape: r=8 on query and value trains 294,912 values (~0.27% of the encoder)', () => {
    const encoder = b.ScriptModule.load(encBase);
    const encoderCount = encoder.namedParameters().reduce((s, [, t]) => s + t.shape.reduce((x, y) => x * y, 1), 0);
    expect(encoderCount).toBe(109_482_240);
    const { module } = b.buildClassifier(encoder, { ...SPEC, headHidden: 512 });
    const adapters = b.applyLora(module, { targets: QV, rank: 8, alpha: 16, dropout: 0.1, seed: 0 });
    expect(adapters.modules).toHaveLength(24);
    expect(adapters.modules[0]).toBe('encoder.encoder.layer.0.attention.self.query');
    expect(adapters.modules[1]).toBe('encoder.encoder.layer.0.attention.self.value');
    expect(adapters.trainableCount).toBe(12 * 2 * (8 * 768 + 768 * 8));
    expect(adapters.trainableCount).toBe(294_912);
    expect((100 * adapters.trainableCount) / encoderCount).toBeCloseTo(0.27, 2);
    module.dispose();
    encoder.dispose();
  });

  it('initialises like PEFT, starts as the un-adapted model exactly, and keeps the real parameters', async () => {
    const m = classifier();
    const names = m.namedParameters().map(([n]) => n);
    const before = snapshot(m);
    const out0 = values(m.forward(...tokenTensors(ALL)) as NativeTensor);
    const eval0 = await b.evalStep(m, batch(ALL));
    const adapters = b.applyLora(m, { targets: QV, rank: 4, alpha: 8, dropout: 0, seed: 21 });
    expect(adapters.modules).toEqual([
      'encoder.encoder.layer.0.attention.self.query',
      'encoder.encoder.layer.0.attention.self.value',
      'encoder.encoder.layer.1.attention.self.query',
      'encoder.encoder.layer.1.attention.self.value',
    ]);
    const params = adapters.parameters();
    expect(params.map(([n, t]) => [n, t.shape, t.requiresGrad])).toEqual(
      adapters.modules.flatMap((p) => [
        [`${p}.lora_A`, [4, 32], true],
        [`${p}.lora_B`, [32, 4], true],
      ]),
    );
    const ref = py<number[][]>(
      'm = torch.jit.load(sys.argv[1]); mods = dict(m.named_modules())\n' +
        // PEFT: nn.init.kaiming_uniform_(lora_A.weight, a=math.sqrt(5)), one module after the other.
        'torch.manual_seed(21); out = []\n' +
        'for name in json.loads(sys.argv[2]):\n' +
        '    a = torch.empty(4, mods[name].weight.shape[1]); torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5)); out.append(flat(a))\n' +
        'print(json.dumps(out))',
      enc,
      JSON.stringify(adapters.modules.map((p) => p.slice('encoder.'.length))),
    );
    params.forEach(([, t], i) => {
      if (i % 2 === 0) expect(values(t)).toEqual(ref[i / 2]);
      else expect(values(t).every((v) => v === 0)).toBe(true);
    });
    // B = 0: exactly the un-adapted model.
    expect(values(m.forward(...tokenTensors(ALL)) as NativeTensor)).toEqual(out0);
    expect((await b.evalStep(m, batch(ALL))).probabilities).toEqual(eval0.probabilities);
    // namedParameters() still lists the real parameters; W0 is frozen.
    expect(m.namedParameters().map(([n]) => n)).toEqual(names);
    expect(snapshot(m)).toEqual(before);
    for (const p of adapters.modules) expect(param(m, `${p}.weight`).requiresGrad).toBe(false);
    expect(param(m, 'encoder.encoder.layer.0.attention.self.key.weight').requiresGrad).toBe(true);
  });

  it('trains only adapters and head; exports merged weights that Python runs; adapters round-trip', async () => {
    const { m, adapters, before, after, ids, out } = await trainAdaptersAndHead((c) =>
      b.applyLora(c, { targets: QV, rank: 4, alpha: 8, dropout: 0.1, seed: 5 }),
    );

    // Merged export: plain parameters with the original names, no adapter tensors.
    const exported = file('lora-merged.pt');
    m.save(exported);
    await m.saveAsync(file('lora-merged-async.pt'));
    const adapterFile = file('adapters.pt');
    adapters.save(adapterFile);
    const ref = py<{ out: number[]; names: string[]; adapters: Record<string, unknown> }>(
      PY_T +
        'm = torch.jit.load(sys.argv[1]); m.eval(); ids, mask = batch(sys.argv[2], sys.argv[3])\n' +
        'ad = torch.load(sys.argv[4])\n' +
        'print(json.dumps({"out": flat(m(ids, mask)), "names": [n for n, _ in m.named_parameters()],' +
        ' "adapters": {k: (list(v.shape) if isinstance(v, torch.Tensor) else v) for k, v in ad.items()}}))',
      exported,
      JSON.stringify(IDS),
      JSON.stringify(MASK),
      adapterFile,
    );
    expect(maxAbsDiff(ref.out, out)).toBeLessThan(1e-4);
    expect(ref.names).toEqual([...after.keys()]);
    expect(ref.names.some((n) => n.includes('lora'))).toBe(false);
    expect(ref.adapters).toEqual({
      ...Object.fromEntries(adapters.parameters().map(([n, t]) => [n, t.shape])),
      rank: 4,
      alpha: 8,
      dropout: 0.1,
      seed: 5,
      targets: QV,
    });
    // Saving did not disturb the model: W0 still in place, training goes on.
    expect(snapshot(m)).toEqual(after);
    expect(values(m.forward(...ids) as NativeTensor)).toEqual(out);

    // Adapters (+ head) onto a fresh classifier on the same base encoder reproduce the outputs.
    const fresh = await expectAdaptersReload(
      m,
      (c) => b.applyLora(c, { targets: QV, rank: 4, alpha: 8, dropout: 0.1, seed: 99 }),
      adapterFile,
      ids,
      out,
    );
    const f1 = await b.extractFeatures(m, batch(ALL));
    const f2 = await b.extractFeatures(fresh, batch(ALL));
    expect(maxAbsDiff(values(f1), values(f2))).toBeLessThan(1e-6);

    // A clone is the adapted model with merged weights.
    const copy = m.clone();
    expect(maxAbsDiff(values(copy.forward(...ids) as NativeTensor), out)).toBeLessThan(1e-6);

    // merge(): the same function, now in the weights; the adapters are gone from the model.
    const frozen = param(m, 'encoder.encoder.layer.1.attention.self.value.weight');
    adapters.merge();
    expect(maxAbsDiff(values(m.forward(...ids) as NativeTensor), out)).toBeLessThan(1e-6);
    expect(values(frozen)).not.toEqual(before.get('encoder.encoder.layer.1.attention.self.value.weight'));
    expect(frozen.requiresGrad).toBe(false); // LoRA froze it; merging keeps it frozen
    await expectFailure(() => adapters.merge(), /already merged/);
    await expectFailure(() => adapters.load(adapterFile), /merged/);
    adapters.save(file('after-merge.pt')); // still allowed: the tensors are kept
    // A second round of adapters on the merged model.
    const again = b.applyLora(m, { targets: ['attention.self.key'], rank: 2, alpha: 2, dropout: 0, seed: 1 });
    expect(again.trainableCount).toBe(2 * (2 * 32 + 32 * 2));
    expect(maxAbsDiff(values(m.forward(...ids) as NativeTensor), out)).toBeLessThan(1e-6);
  });

  it('gradients of one step equal a Python re-implementation (W0 + s·B·A)', async () => {
    const m = classifier();
    const plain = file('grad-check-model.pt');
    m.save(plain);
    m.setRequiresGrad(false, 'encoder.');
    const adapters = b.applyLora(m, {
      targets: ['attention.self.query', 'attention.output.dense'],
      rank: 3,
      alpha: 6,
      dropout: 0,
      seed: 8,
    });
    // Non-zero B so that A gets a gradient too.
    let k = 0;
    for (const [name, t] of adapters.parameters()) {
      if (!name.endsWith('lora_B')) continue;
      const n = t.shape[0] * t.shape[1];
      t.copyFrom(
        b.Tensor.fromArray(
          Float32Array.from({ length: n }, () => Math.sin(++k) * 0.05),
          t.shape,
        ),
      );
    }
    const adapterFile = file('grad-check-adapters.pt');
    adapters.save(adapterFile);
    const opt = adamw([...trainable(m), ...adapters.parameters().map(([, t]) => t)], 1e-2);
    const r = await b.trainStep(m, opt, batch(ALL), { accumulateOnly: true });
    const grads = Object.fromEntries(
      [...adapters.parameters(), ...m.namedParameters().filter(([n]) => n.startsWith('head.'))].map(([n, t]) => [n, values(t.grad()!)]),
    );
    opt.step();
    const stepped = Object.fromEntries(
      [...adapters.parameters(), ...m.namedParameters().filter(([n]) => n.startsWith('head.'))].map(([n, t]) => [n, values(t)]),
    );
    opt.zeroGrad();

    const ref = py<{ loss: number; grads: Record<string, number[]>; stepped: Record<string, number[]> }>(
      PY_T +
        'm = torch.jit.load(sys.argv[1]); m.train(); ids, mask = batch(sys.argv[2], sys.argv[3])\n' +
        'y = torch.tensor(json.loads(sys.argv[4])); ad = torch.load(sys.argv[5]); s = ad["alpha"] / ad["rank"]\n' +
        'mods = dict(m.named_modules()); tensors = {}\n' +
        'for name in sorted({k.rsplit(".lora_", 1)[0] for k in ad if ".lora_" in k}):\n' +
        '    A = ad[name + ".lora_A"].clone().requires_grad_(); B = ad[name + ".lora_B"].clone().requires_grad_()\n' +
        '    W0 = mods[name].weight.detach().clone()\n' +
        '    mods[name]._c.setattr("weight", W0 + s * (B @ A))\n' +
        '    tensors[name + ".lora_A"] = A; tensors[name + ".lora_B"] = B\n' +
        'for n, p in m.named_parameters():\n' +
        '    if n.startswith("head."): tensors[n] = p\n' +
        'loss = F.nll_loss(m(ids, mask), y); loss.backward()\n' +
        'grads = {n: flat(t.grad) for n, t in tensors.items()}\n' +
        'torch.optim.AdamW(list(tensors.values()), lr=1e-2, weight_decay=0.01).step()\n' +
        'print(json.dumps({"loss": loss.item(), "grads": grads, "stepped": {n: flat(t) for n, t in tensors.items()}}))',
      plain,
      JSON.stringify(IDS),
      JSON.stringify(MASK),
      JSON.stringify(LABELS),
      adapterFile,
    );
    expect(Math.abs(r.loss - ref.loss)).toBeLessThan(1e-6);
    expect(Object.keys(grads).sort()).toEqual(Object.keys(ref.grads).sort());
    for (const [name, g] of Object.entries(grads)) {
      expect(
        g.some((v) => v !== 0),
        name,
      ).toBe(true);
      expect(maxAbsDiff(g, ref.grads[name]), name).toBeLessThan(1e-5);
      expect(maxAbsDiff(stepped[name], ref.stepped[name]), name).toBeLessThan(1e-5);
    }
  });

  it('runs adapters on linear layers in activation space and other uses of a weight in weight space, with equal results', async () => {
    // `a` is called as a linear layer; `b`'s weight is used in a matmul. Expected:
    // x·(W0 + s·B·A)ᵀ + bias for both.
    const plain = file('mixed-use.pt');
    py(
      'import torch.nn as nn\n' +
        'class M(nn.Module):\n' +
        '    def __init__(self):\n' +
        '        super().__init__(); torch.manual_seed(0); self.a = nn.Linear(4, 3); self.b = nn.Linear(4, 3)\n' +
        '    def forward(self, x):\n' +
        '        return self.a(x) + torch.matmul(x, self.b.weight.t()) + self.b.bias\n' +
        'torch.jit.trace(M(), torch.zeros(2, 4)).save(sys.argv[1]); print("{}")',
      plain,
    );
    const m = b.ScriptModule.load(plain);
    const adapters = b.applyLora(m, { targets: ['a', 'b'], rank: 2, alpha: 3, dropout: 0, seed: 5 });
    expect(adapters.plan()).toEqual({ activation: ['a'], weightSpace: ['b'] });
    let k = 0;
    for (const [name, t] of adapters.parameters()) {
      if (name.endsWith('lora_B'))
        t.copyFrom(
          b.Tensor.fromArray(
            Float32Array.from({ length: 6 }, () => Math.sin(++k)),
            t.shape,
          ),
        );
    }
    const adapterFile = file('mixed-use-adapters.pt');
    adapters.save(adapterFile);
    const x = b.Tensor.fromArray(
      Float32Array.from({ length: 8 }, (_, i) => Math.cos(i)),
      [2, 4],
    );
    const out = values(m.forward(x) as NativeTensor);
    const outAsync = values((await m.forwardAsync(x)) as NativeTensor);
    const merged = file('mixed-use-merged.pt');
    m.save(merged);
    const ref = py<{ want: number[]; merged: number[]; params: string[] }>(
      'm = torch.jit.load(sys.argv[1]); ad = torch.load(sys.argv[2]); s = ad["alpha"] / ad["rank"]\n' +
        'x = torch.tensor([math.cos(i) for i in range(8)]).reshape(2, 4)\n' +
        'w = {n: getattr(m, n).weight + s * ad[n + ".lora_B"] @ ad[n + ".lora_A"] for n in ("a", "b")}\n' +
        'want = x @ w["a"].t() + m.a.bias + x @ w["b"].t() + m.b.bias\n' +
        'mm = torch.jit.load(sys.argv[3])\n' +
        'print(json.dumps({"want": flat(want), "merged": flat(mm(x)), "params": [n for n, _ in mm.named_parameters()]}))',
      plain,
      adapterFile,
      merged,
    );
    expect(maxAbsDiff(out, ref.want)).toBeLessThan(1e-5);
    expect(outAsync).toEqual(out);
    expect(maxAbsDiff(ref.merged, ref.want)).toBeLessThan(1e-5);
    expect(ref.params).toEqual(['a.weight', 'a.bias', 'b.weight', 'b.bias']);
    // TORCH_BERT_LORA_WEIGHT_SPACE=1 puts every adapter in weight space, with the same output.
    const forced = JSON.parse(
      execFileSync(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          `const { loadBinding } = await import(${JSON.stringify(path.join(repoRoot, 'dist', 'index.js'))});
           const b = loadBinding(); const m = b.ScriptModule.load(${JSON.stringify(plain)});
           const ad = b.applyLora(m, { targets: ['a', 'b'], rank: 2, alpha: 3, dropout: 0, seed: 5 });
           ad.load(${JSON.stringify(adapterFile)});
           const x = b.Tensor.fromArray(Float32Array.from({ length: 8 }, (_, i) => Math.cos(i)), [2, 4]);
           console.log(JSON.stringify({ plan: ad.plan(), out: Array.from(m.forward(x).toArray()) }));`,
        ],
        { env: { ...process.env, TORCH_BERT_LORA_WEIGHT_SPACE: '1' }, encoding: 'utf8' },
      ).trim(),
    );
    expect(forced.plan).toEqual({ activation: [], weightSpace: ['a', 'b'] });
    expect(maxAbsDiff(forced.out, out)).toBeLessThan(1e-5);
    // The adapters change the output (B ≠ 0), and merging keeps it.
    const base = values(b.ScriptModule.load(plain).forward(x) as NativeTensor);
    expect(maxAbsDiff(out, base)).toBeGreaterThan(0.1);
    adapters.merge();
    expect(maxAbsDiff(values(m.forward(x) as NativeTensor), out)).toBeLessThan(1e-5);
  });

  it("adapter dropout is PEFT's: per element of each adapter's input, in train steps in training mode only, from the global RNG", async () => {
    // Head dropout on too, so that the order in which dropouts draw from the RNG is checked.
    const m = classifier({ dropout: 0.25 });
    const plain = file('dropout-check-model.pt');
    m.save(plain);
    m.setRequiresGrad(false, 'encoder.');
    const adapters = b.applyLora(m, { targets: QV, rank: 2, alpha: 4, dropout: 0.5, seed: 3 });
    expect(adapters.plan()).toEqual({ activation: adapters.modules, weightSpace: [] });
    let k = 0;
    for (const [name, t] of adapters.parameters()) {
      if (!name.endsWith('lora_B')) continue;
      t.copyFrom(
        b.Tensor.fromArray(
          Float32Array.from({ length: t.shape[0] * t.shape[1] }, () => Math.cos(++k) * 0.1),
          t.shape,
        ),
      );
    }
    const adapterFile = file('dropout-check-adapters.pt');
    adapters.save(adapterFile);
    const opt = adamw(
      adapters.parameters().map(([, t]) => t),
      0,
    );
    const step = async () => {
      const r = await b.trainStep(m, opt, batch(ALL), { accumulateOnly: true });
      const grads = Object.fromEntries(adapters.parameters().map(([n, t]) => [n, values(t.grad()!)]));
      opt.zeroGrad();
      return { loss: r.loss, grads };
    };
    const rng = b.getRngState();
    // The CPU generator's bytes (torch.get_rng_state()): after the 8-byte magic, the count, and
    // the first entry's type, index and 8-byte size.
    const cpuState = rng.subarray(8 + 4 + 4 + 4 + 8);
    expect(new DataView(rng.buffer, rng.byteOffset).getUint32(12, true)).toBe(0); // type: CPU
    const stateFile = file('dropout-check-rng.bin');
    writeFileSync(stateFile, cpuState);
    const s1 = await step();
    const s2 = await step();
    b.setRngState(rng);
    const s3 = await step();
    m.train(false);
    const e1 = await step();
    const e2 = await step();

    const ref = py<Record<'train' | 'eval', { loss: number; grads: Record<string, number[]> }>>(
      PY_T +
        'sys.path.insert(0, sys.argv[8]); from reference_step import EagerEncoder, apply_lora\n' +
        'ids, mask = batch(sys.argv[2], sys.argv[3]); y = torch.tensor(json.loads(sys.argv[4]))\n' +
        'ad = torch.load(sys.argv[5]); cls = torch.jit.load(sys.argv[6]); p_head = float(sys.argv[9])\n' +
        'state = torch.frombuffer(bytearray(open(sys.argv[7], "rb").read()), dtype=torch.uint8)\n' +
        'E = EagerEncoder(sys.argv[1], None); out = {}\n' +
        'for mode in ("train", "eval"):\n' +
        '    model = E.build(); apply_lora(model, ad["targets"], ad["rank"], ad["alpha"], ad["dropout"])\n' +
        '    mods = dict(model.named_modules()); tensors = {}\n' +
        '    for k, v in ad.items():\n' +
        '        if ".lora_" not in k: continue\n' +
        '        path, which = k.rsplit(".lora_", 1)\n' +
        '        lin = getattr(mods[path[len("encoder."):]], "lora_" + which)\n' +
        '        with torch.no_grad(): lin.weight.copy_(v)\n' +
        '        tensors[k] = lin.weight\n' +
        '    model.train(mode == "train"); torch.set_rng_state(state)\n' +
        '    h = model.encode(ids, mask, None)[0]\n' +
        '    mm = mask.unsqueeze(-1).to(h.dtype); pooled = (h * mm).sum(1) / torch.clamp(mm.sum(1), min=1e-9)\n' +
        '    x = torch.relu(F.linear(pooled, cls.head.dense.weight.detach(), cls.head.dense.bias.detach()))\n' +
        '    x = F.dropout(x, p_head, training=(mode == "train"))\n' +
        '    logp = F.log_softmax(F.linear(x, cls.head.out_proj.weight.detach(), cls.head.out_proj.bias.detach()), -1)\n' +
        '    loss = F.nll_loss(logp, y); loss.backward()\n' +
        '    out[mode] = {"loss": loss.item(), "grads": {k: flat(t.grad) for k, t in tensors.items()}}\n' +
        'print(json.dumps(out))',
      enc,
      JSON.stringify(IDS),
      JSON.stringify(MASK),
      JSON.stringify(LABELS),
      adapterFile,
      plain,
      stateFile,
      path.join(repoRoot, 'test', 'python'),
      '0.25',
    );
    const names = Object.keys(s1.grads).sort();
    expect(Object.keys(ref.train.grads).sort()).toEqual(names);
    // Relative to the gradient's size (these are ~1e-4).
    const rel = (a: number[], b: number[]) => maxAbsDiff(a, b) / Math.max(...b.map(Math.abs));
    // The same masks as PEFT's eager modules drawing from the same RNG state: equal loss and
    // gradients. Without dropout (eval mode), equal to the eager eval-mode step.
    expect(Math.abs(s1.loss - ref.train.loss)).toBeLessThan(1e-6);
    expect(Math.abs(e1.loss - ref.eval.loss)).toBeLessThan(1e-6);
    for (const n of names) {
      expect(rel(s1.grads[n], ref.train.grads[n]), n).toBeLessThan(1e-4);
      expect(rel(e1.grads[n], ref.eval.grads[n]), n).toBeLessThan(1e-4);
      // ... which dropout changes by far more than that.
      expect(rel(ref.train.grads[n], ref.eval.grads[n]), n).toBeGreaterThan(0.05);
      // Restoring the RNG state replays the masks (to float rounding: with the MKL-backed 2.x
      // wheels two identical backward passes differed in the 7th digit, measured with 2.13);
      // the next step draws new ones; eval mode draws none.
      expect(rel(s3.grads[n], s1.grads[n]), n).toBeLessThan(1e-4);
      expect(rel(s2.grads[n], s1.grads[n]), n).toBeGreaterThan(0.05);
      expect(maxAbsDiff(e2.grads[n], e1.grads[n]), n).toBe(0);
    }
    // Outside train steps adapters never drop.
    m.train(true);
    const p1 = await b.evalStep(m, batch(ALL));
    const p2 = await b.evalStep(m, batch(ALL));
    expect(p2.probabilities).toEqual(p1.probabilities);
  });

  it('validates specs, refuses a second set of adapters, and checks files on load', async () => {
    const m = classifier();
    const spec = { targets: QV, rank: 4, alpha: 8, dropout: 0, seed: 1 };
    await expectFailure(
      () => b.applyLora(m, { ...spec, targets: ['attention.self.qeury'] }),
      /no module with a 2-D weight has a path ending in 'attention\.self\.qeury' \(such modules: .*'encoder\.encoder\.layer\.0\.attention\.self\.query'/,
    );
    const m2 = classifier();
    await expectFailure(() => b.applyLora(m2, { ...spec, targets: [] }), /targets must not be empty/);
    await expectFailure(() => b.applyLora(m2, { ...spec, targets: 'query' as any }), /targets must be an array/, TypeError);
    await expectFailure(() => b.applyLora(m2, { ...spec, rank: 0 }), /rank must be in/);
    await expectFailure(() => b.applyLora(m2, { ...spec, alpha: 0 }), /alpha must be > 0/);
    await expectFailure(() => b.applyLora(m2, { ...spec, dropout: 1 }), /dropout must be in \[0, 1\)/);
    await expectFailure(() => b.applyLora(m2, { ...spec, seed: 0.5 }), /seed must be an integer/);
    await expectFailure(() => b.applyLora({} as any, spec), /ScriptModule/, TypeError);
    const adapters = b.applyLora(m2, spec);
    await expectFailure(() => b.applyLora(m2, spec), /already has LoRA adapters/);

    const good = file('check-good.pt');
    adapters.save(good);
    const other = classifier();
    const rank2 = b.applyLora(other, { ...spec, rank: 2 });
    await expectFailure(() => rank2.load(good), /holds rank-4 adapters; these have rank 2/);
    const other2 = classifier();
    const keyOnly = b.applyLora(other2, { ...spec, targets: ['attention.self.key'] });
    await expectFailure(() => keyOnly.load(good), /targets/);
    const other3 = classifier();
    const alpha = b.applyLora(other3, { ...spec, alpha: 16 });
    await expectFailure(() => alpha.load(good), /alpha 8; these have alpha 16/);
    const edited = file('check-edited.pt');
    py(
      'd = torch.load(sys.argv[1]); k = "encoder.encoder.layer.1.attention.self.value.lora_B"\n' +
        'd[k] = torch.zeros(31, 4); torch.save(d, sys.argv[2]); print("null")',
      good,
      edited,
    );
    await expectFailure(
      () => adapters.load(edited),
      /has 'encoder\.encoder\.layer\.1\.attention\.self\.value\.lora_B' of shape \[31, 4\], expected \[32, 4\]/,
    );
    await expectFailure(() => adapters.load(file('missing.pt')), /no such file/);
    await expectFailure(() => adapters.save('/nonexistent-dir/a.pt'), /nonexistent-dir/);
    adapters.load(good); // a failed load changed nothing; a good one still works
    adapters.dispose();
    adapters.dispose();
    await expectFailure(() => adapters.parameters(), /disposed/);
    // Disposing the handle leaves the adapters on the model.
    await expectFailure(() => b.applyLora(m2, spec), /already has LoRA adapters/);
  });
});

describe('bottleneck adapters', () => {
  const HOULSBY = { config: 'houlsby' as const, size: 8, activation: 'swish' as const, seed: 5 };

  function adapterTensors(adapters: NativeBottleneckAdapters): Map<string, number[]> {
    return new Map(adapters.parameters().map(([n, t]) => [n, values(t)]));
  }

  /** Every adapter tensor set to a deterministic non-zero pattern (so that every gradient is non-zero). */
  function fillAdapters(adapters: NativeBottleneckAdapters): void {
    let k = 0;
    for (const [, t] of adapters.parameters()) {
      const n = t.shape.reduce((x, y) => x * y, 1);
      t.copyFrom(
        b.Tensor.fromArray(
          Float32Array.from({ length: n }, () => Math.sin(++k) * 0.1),
          t.shape,
        ),
      );
    }
  }

  it('bert-base shape: Houlsby with size 64 puts 24 adapters, 2,379,264 values (~2.2% of the encoder)', () => {
    const encoder = b.ScriptModule.load(encBase);
    const { module } = b.buildClassifier(encoder, { ...SPEC, headHidden: 512 });
    const adapters = b.applyAdapters(module, { config: 'houlsby', size: 64, activation: 'swish', seed: 0 });
    expect(adapters.modules).toHaveLength(24);
    expect(adapters.modules.slice(0, 2)).toEqual(['encoder.encoder.layer.0.attention.output', 'encoder.encoder.layer.0.output']);
    expect(adapters.size).toBe(64);
    expect(adapters.trainableCount).toBe(24 * (64 * 768 + 64 + 768 * 64 + 768));
    expect(adapters.trainableCount).toBe(2_379_264);
    expect((100 * adapters.trainableCount) / 109_482_240).toBeCloseTo(2.17, 2);
    module.dispose();
    encoder.dispose();
  });

  it('Pfeiffer adapts the feed-forward output only; a reduction factor sets the width as AdapterHub', () => {
    const pfeiffer = b.applyAdapters(classifier(), { ...HOULSBY, config: 'pfeiffer' });
    expect(pfeiffer.modules).toEqual(['encoder.encoder.layer.0.output', 'encoder.encoder.layer.1.output']);
    expect(pfeiffer.trainableCount).toBe(2 * (8 * 32 + 8 + 32 * 8 + 32));
    const factor = b.applyAdapters(classifier(), { config: 'houlsby', reductionFactor: 5, activation: 'relu', seed: 0 });
    expect(factor.size).toBe(6); // floor(32 / 5), as AdapterHub's int(hidden // reduction_factor)
    expect(factor.parameters()[0]).toEqual(['encoder.encoder.layer.0.attention.output.adapter.down.weight', expect.anything()]);
    expect(factor.parameters()[0]![1].shape).toEqual([6, 32]);
  });

  it('initialises down from N(0, 0.02) with the seed, up and biases zero: starts as the un-adapted model exactly', async () => {
    const m = classifier();
    const names = m.namedParameters().map(([n]) => n);
    const before = snapshot(m);
    const out0 = values(m.forward(...tokenTensors(ALL)) as NativeTensor);
    const eval0 = await b.evalStep(m, batch(ALL));
    const adapters = b.applyAdapters(m, { ...HOULSBY, seed: 21 });
    expect(adapters.modules).toEqual([
      'encoder.encoder.layer.0.attention.output',
      'encoder.encoder.layer.0.output',
      'encoder.encoder.layer.1.attention.output',
      'encoder.encoder.layer.1.output',
    ]);
    const params = adapters.parameters();
    expect(params.map(([n, t]) => [n, t.shape, t.requiresGrad])).toEqual(
      adapters.modules.flatMap((p) => [
        [`${p}.adapter.down.weight`, [8, 32], true],
        [`${p}.adapter.down.bias`, [8], true],
        [`${p}.adapter.up.weight`, [32, 8], true],
        [`${p}.adapter.up.bias`, [32], true],
      ]),
    );
    const ref = py<number[][]>(
      'g = torch.Generator().manual_seed(21)\n' +
        'print(json.dumps([flat(torch.empty(8, 32).normal_(0, 0.02, generator=g)) for _ in range(4)]))',
    );
    params.forEach(([name, t], i) => {
      if (i % 4 === 0) expect(values(t), name).toEqual(ref[i / 4]);
      else expect(values(t).every((v) => v === 0)).toBe(true);
    });
    // up = 0: exactly the un-adapted model; the model's own parameters untouched, still listed.
    expect(values(m.forward(...tokenTensors(ALL)) as NativeTensor)).toEqual(out0);
    expect((await b.evalStep(m, batch(ALL))).probabilities).toEqual(eval0.probabilities);
    expect(m.namedParameters().map(([n]) => n)).toEqual(names);
    expect(snapshot(m)).toEqual(before);
  });

  it('trains only adapters and head; the saved classifier carries them in its graph and runs in Python; adapters round-trip', async () => {
    const { m, adapters, after, ids, out } = await trainAdaptersAndHead((c) => b.applyAdapters(c, HOULSBY));
    const trained = adapterTensors(adapters);
    const features = values(await b.extractFeatures(m, batch(ALL)));

    // The saved classifier: the adapters as submodules of their sub-layers, in the graph of
    // forward, features and the encoder's own forward; plain torch runs it.
    const exported = file('adapter-classifier.pt');
    m.save(exported);
    await m.saveAsync(file('adapter-classifier-async.pt'));
    const adapterFile = file('bottleneck-adapters.pt');
    adapters.save(adapterFile);
    const ref = py<{
      out: number[];
      asyncOut: number[];
      features: number[];
      encoderRuns: boolean;
      params: Record<string, number[]>;
      adapters: Record<string, unknown>;
    }>(
      PY_T +
        'm = torch.jit.load(sys.argv[1]); m.eval(); ids, mask = batch(sys.argv[2], sys.argv[3])\n' +
        'a = torch.jit.load(sys.argv[5]); a.eval(); ad = torch.load(sys.argv[4])\n' +
        'h = m.encoder(ids, mask)[0]; pooled = m.features(ids, mask)\n' +
        'mk = mask.unsqueeze(-1).float()\n' +
        'print(json.dumps({"out": flat(m(ids, mask)), "asyncOut": flat(a(ids, mask)), "features": flat(pooled),' +
        ' "encoderRuns": bool(torch.allclose((h * mk).sum(1) / mk.sum(1), pooled, atol=1e-6)),' +
        ' "params": {n: flat(p) for n, p in m.named_parameters()},' +
        ' "adapters": {k: (list(v.shape) if isinstance(v, torch.Tensor) else v) for k, v in ad.items()}}))',
      exported,
      JSON.stringify(IDS),
      JSON.stringify(MASK),
      adapterFile,
      file('adapter-classifier-async.pt'),
    );
    expect(maxAbsDiff(ref.out, out)).toBeLessThan(1e-5);
    expect(ref.asyncOut).toEqual(ref.out);
    expect(maxAbsDiff(ref.features, features)).toBeLessThan(1e-5);
    expect(ref.encoderRuns).toBe(true); // m.encoder(...) runs the adapters too
    // Its parameters: the model's own, unchanged, and the adapters' under their names.
    expect(Object.keys(ref.params).sort()).toEqual([...after.keys(), ...trained.keys()].sort());
    for (const [name, v] of after) expect(ref.params[name], name).toEqual(v);
    for (const [name, v] of trained) expect(ref.params[name], name).toEqual(v);
    expect(ref.adapters).toEqual({
      ...Object.fromEntries(adapters.parameters().map(([n, t]) => [n, t.shape])),
      config: 'houlsby',
      size: 8,
      activation: 'swish',
      seed: 5,
    });
    // Saving did not disturb the model.
    expect(snapshot(m)).toEqual(after);
    expect(values(m.forward(...ids) as NativeTensor)).toEqual(out);
    // The saved file back in Node (its own graphs now carry the adapters), and a clone.
    const loaded = b.ScriptModule.load(exported);
    loaded.train(false);
    expect(maxAbsDiff(values(loaded.forward(...ids) as NativeTensor), out)).toBeLessThan(1e-6);
    const copy = m.clone();
    expect(maxAbsDiff(values(copy.forward(...ids) as NativeTensor), out)).toBeLessThan(1e-6);
    expect(copy.namedParameters().filter(([n]) => n.includes('.adapter.')).length).toBe(16);

    // Adapters (+ head) onto a fresh classifier on the same base encoder reproduce the outputs.
    await expectAdaptersReload(m, (c) => b.applyAdapters(c, { ...HOULSBY, seed: 99 }), adapterFile, ids, out);
  });

  for (const [label, spec, pooling] of [
    ['Houlsby, GELU, mean pooling', { config: 'houlsby', size: 5, activation: 'gelu', seed: 3 }, 'mean'],
    ['Pfeiffer, ReLU, [CLS] pooling (token-pruned)', { config: 'pfeiffer', size: 6, activation: 'relu', seed: 4 }, 'cls'],
  ] as const) {
    it(`gradients and one AdamW step equal the eager Python reference (${label})`, async () => {
      const m = classifier({ pooling });
      const plain = file(`adapter-grad-${pooling}.pt`);
      m.save(plain);
      m.setRequiresGrad(false, 'encoder.');
      const adapters = b.applyAdapters(m, spec);
      fillAdapters(adapters);
      const adapterFile = file(`adapter-grad-${pooling}-adapters.pt`);
      adapters.save(adapterFile);
      const opt = adamw([...trainable(m), ...adapters.parameters().map(([, t]) => t)], 1e-2);
      const r = await b.trainStep(m, opt, batch(ALL), { accumulateOnly: true });
      const tensors = [...adapters.parameters(), ...m.namedParameters().filter(([n]) => n.startsWith('head.'))];
      const grads = Object.fromEntries(tensors.map(([n, t]) => [n, values(t.grad()!)]));
      opt.step();
      const stepped = Object.fromEntries(tensors.map(([n, t]) => [n, values(t)]));
      opt.zeroGrad();
      if (pooling === 'cls') expect(m.prunedOps()).toContain('aten::relu'); // the last layer's adapter runs for [CLS] alone

      const out = execFileSync(
        PYTHON,
        [
          path.join(repoRoot, 'test', 'python', 'reference_adapter.py'),
          ...['--classifier', plain, '--adapters', adapterFile, '--heads', '2', '--pooling', pooling],
          ...['--lr', '1e-2', '--weight-decay', '0.01', '--batch'],
          JSON.stringify({
            input_ids: ALL.map((row) => IDS.slice(row * T, row * T + T)),
            attention_mask: ALL.map((row) => MASK.slice(row * T, row * T + T)),
            labels: LABELS,
          }),
        ],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
      );
      const ref = JSON.parse(out.trim().split('\n').pop()!) as {
        loss: number;
        grads: Record<string, number[]>;
        stepped: Record<string, number[]>;
      };
      expect(Math.abs(r.loss - ref.loss)).toBeLessThan(1e-6);
      expect(Object.keys(grads).sort()).toEqual(Object.keys(ref.grads).sort());
      for (const [name, g] of Object.entries(grads)) {
        expect(
          g.some((v) => v !== 0),
          name,
        ).toBe(true);
        expect(maxAbsDiff(g, ref.grads[name]!), name).toBeLessThan(1e-5);
        expect(maxAbsDiff(stepped[name]!, ref.stepped[name]!), name).toBeLessThan(1e-5);
      }
    });
  }

  it('on a natively built BERT (buildEncoder) as on the traced one with the same weights: the same loss and gradients; its classifier.pt runs in Python', async () => {
    const traced = b.ScriptModule.load(enc);
    // Copies: the built encoder would otherwise share the traced module's float32 tensors.
    const weights = traced.namedParameters().map(([n, t]): [string, NativeTensor] => [n, t.clone()]);
    // The traced encoder has no dropout (traced in eval mode).
    const built = b.buildEncoder(
      { ...makeEncoderConfig(ENC_SIZES), hiddenDropoutProb: 0, attentionDropoutProb: 0 },
      weights,
      'cpu',
    ).encoder;
    const runs = [];
    for (const encoder of [traced, built]) {
      const { module: m } = b.buildClassifier(encoder, { ...SPEC, pooling: 'cls' });
      m.train(true);
      m.setRequiresGrad(false, 'encoder.');
      const adapters = b.applyAdapters(m, HOULSBY);
      fillAdapters(adapters);
      const opt = adamw([...trainable(m), ...adapters.parameters().map(([, t]) => t)], 1e-2);
      const r = await b.trainStep(m, opt, batch(ALL), { accumulateOnly: true });
      const grads = new Map(adapters.parameters().map(([n, t]) => [n, values(t.grad()!)]));
      opt.zeroGrad();
      runs.push({ m, adapters, loss: r.loss, grads, ops: m.prunedOps() });
    }
    const [t, n] = runs as [(typeof runs)[0], (typeof runs)[0]];
    expect(n.adapters.modules).toEqual(t.adapters.modules);
    expect(n.adapters.modules).toHaveLength(4);
    expect(Math.abs(n.loss - t.loss)).toBeLessThan(1e-6);
    for (const [name, g] of t.grads) expect(maxAbsDiff(n.grads.get(name)!, g), name).toBeLessThan(1e-5);
    expect(n.ops!.filter((op) => op === 'aten::silu')).toHaveLength(2); // token pruning through the last layer's adapters

    n.m.train(false);
    const out = values(n.m.forward(...tokenTensors(ALL)) as NativeTensor);
    expect(maxAbsDiff(out, values(t.m.forward(...tokenTensors(ALL)) as NativeTensor))).toBeLessThan(1e-5);
    const saved = file('built-adapter-classifier.pt');
    n.m.save(saved);
    const ref = py<{ out: number[]; adapters: number }>(
      PY_T +
        'm = torch.jit.load(sys.argv[1]); m.eval(); ids, mask = batch(sys.argv[2], sys.argv[3])\n' +
        'print(json.dumps({"out": flat(m(ids, mask)), "adapters": sum(1 for n, _ in m.named_parameters() if ".adapter." in n)}))',
      saved,
      JSON.stringify(IDS),
      JSON.stringify(MASK),
    );
    expect(maxAbsDiff(ref.out, out)).toBeLessThan(1e-5);
    expect(ref.adapters).toBe(16);
  });

  it('on a natively built DistilBERT: after attention.out_lin and ffn.lin2; its classifier.pt runs in Python', async () => {
    const H = 32;
    const shapes: Array<[string, number[]]> = [
      ['embeddings.word_embeddings.weight', [100, H]],
      ['embeddings.position_embeddings.weight', [40, H]],
      ['embeddings.LayerNorm.weight', [H]],
      ['embeddings.LayerNorm.bias', [H]],
    ];
    for (const l of [0, 1]) {
      const p = `transformer.layer.${l}`;
      for (const lin of ['q_lin', 'k_lin', 'v_lin', 'out_lin'])
        shapes.push([`${p}.attention.${lin}.weight`, [H, H]], [`${p}.attention.${lin}.bias`, [H]]);
      shapes.push([`${p}.sa_layer_norm.weight`, [H]], [`${p}.sa_layer_norm.bias`, [H]]);
      shapes.push(
        [`${p}.ffn.lin1.weight`, [64, H]],
        [`${p}.ffn.lin1.bias`, [64]],
        [`${p}.ffn.lin2.weight`, [H, 64]],
        [`${p}.ffn.lin2.bias`, [H]],
      );
      shapes.push([`${p}.output_layer_norm.weight`, [H]], [`${p}.output_layer_norm.bias`, [H]]);
    }
    let k = 0;
    const weights = shapes.map(([name, shape]): [string, NativeTensor] => {
      const n = shape.reduce((x, y) => x * y, 1);
      const norm = name.includes('layer_norm') || name.includes('LayerNorm');
      const v = Float32Array.from({ length: n }, () => (norm && name.endsWith('weight') ? 1 : 0) + Math.sin(++k) * 0.1);
      return [name, b.Tensor.fromArray(v, shape)];
    });
    const built = b.buildEncoder(
      {
        family: 'distilbert',
        vocabSize: 100,
        hiddenSize: H,
        numLayers: 2,
        numHeads: 2,
        intermediateSize: 64,
        maxPositions: 40,
        typeVocabSize: 0,
        layerNormEps: 1e-12,
        padTokenId: 0,
        hiddenAct: 'gelu',
        pooler: false,
        mlmHead: false,
        hiddenDropoutProb: 0,
        attentionDropoutProb: 0,
      },
      weights,
      'cpu',
    ).encoder;
    const { module: m } = b.buildClassifier(built, { ...SPEC, pooling: 'cls' });
    m.train(false);
    const base = values(m.forward(...tokenTensors(ALL)) as NativeTensor);
    const adapters = b.applyAdapters(m, HOULSBY);
    expect(adapters.modules).toEqual([
      'encoder.transformer.layer.0.attention',
      'encoder.transformer.layer.0.ffn',
      'encoder.transformer.layer.1.attention',
      'encoder.transformer.layer.1.ffn',
    ]);
    expect(values(m.forward(...tokenTensors(ALL)) as NativeTensor)).toEqual(base); // up = 0
    fillAdapters(adapters);
    const out = values(m.forward(...tokenTensors(ALL)) as NativeTensor);
    expect(maxAbsDiff(out, base)).toBeGreaterThan(1e-4);
    expect(m.prunedOps()!.filter((op) => op === 'aten::silu')).toHaveLength(2);
    const saved = file('distilbert-adapter-classifier.pt');
    m.save(saved);
    const ref = py<{ out: number[]; adapters: string[] }>(
      PY_T +
        'm = torch.jit.load(sys.argv[1]); m.eval(); ids, mask = batch(sys.argv[2], sys.argv[3])\n' +
        'print(json.dumps({"out": flat(m(ids, mask)), "adapters": sorted({n.rsplit(".adapter.", 1)[0] for n, _ in m.named_parameters() if ".adapter." in n})}))',
      saved,
      JSON.stringify(IDS),
      JSON.stringify(MASK),
    );
    expect(maxAbsDiff(ref.out, out)).toBeLessThan(1e-5);
    expect(ref.adapters).toEqual(adapters.modules);
  });

  it('token pruning applies through the adapters: the same losses and weights as the full computation', async () => {
    async function run(prune: boolean) {
      b.setTokenPruning(prune);
      try {
        b.manualSeed(3);
        const m = classifier({ pooling: 'cls', dropout: 0.1 });
        m.setRequiresGrad(false, 'encoder.');
        const adapters = b.applyAdapters(m, HOULSBY);
        fillAdapters(adapters);
        const opt = adamw([...trainable(m), ...adapters.parameters().map(([, t]) => t)], 1e-3);
        const losses: number[] = [];
        for (let i = 0; i < 3; i++) losses.push((await b.trainStep(m, opt, batch(ALL))).loss);
        return { losses, weights: new Map([...snapshot(m), ...adapterTensors(adapters)]), ops: m.prunedOps() };
      } finally {
        b.setTokenPruning(true);
      }
    }
    const full = await run(false);
    const pruned = await run(true);
    expect(full.ops).toBeNull();
    // The last layer's two adapters (down, swish, up, add) run on the [CLS] row alone.
    expect(pruned.ops!.filter((op) => op === 'aten::silu')).toHaveLength(2);
    for (let i = 0; i < 3; i++) expect(Math.abs(pruned.losses[i]! - full.losses[i]!)).toBeLessThan(1e-6);
    for (const [name, v] of pruned.weights) expect(maxAbsDiff(v, full.weights.get(name)!), name).toBeLessThan(1e-5);
  });

  it('validates specs, refuses mixing with LoRA or a second set, and checks files on load', async () => {
    const m = classifier();
    await expectFailure(() => b.applyAdapters(m, { ...HOULSBY, config: 'parallel' as any }), /config must be 'houlsby' or 'pfeiffer'/);
    await expectFailure(() => b.applyAdapters(m, { ...HOULSBY, reductionFactor: 4 }), /one of size and reductionFactor/);
    await expectFailure(() => b.applyAdapters(m, { ...HOULSBY, size: 0 }), /size must be in/);
    await expectFailure(
      () => b.applyAdapters(m, { ...HOULSBY, activation: 'tanh' as any }),
      /activation must be 'relu', 'gelu' or 'swish'/,
    );
    await expectFailure(() => b.applyAdapters({} as any, HOULSBY), /ScriptModule/, TypeError);
    // A model without BERT's sub-layer names.
    const headOnly = file('no-sublayers.pt');
    py('import torch.nn as nn\ntorch.jit.script(nn.Sequential(nn.Linear(4, 4))).save(sys.argv[1]); print("null")', headOnly);
    await expectFailure(() => b.applyAdapters(b.ScriptModule.load(headOnly), HOULSBY), /no sub-layer '<layer>\.attention\.output'/);

    const adapters = b.applyAdapters(m, HOULSBY);
    await expectFailure(() => b.applyAdapters(m, HOULSBY), /already has bottleneck adapters/);
    await expectFailure(() => b.applyLora(m, { targets: QV, rank: 2, alpha: 2, dropout: 0, seed: 0 }), /bottleneck adapters/);
    const withLora = classifier();
    b.applyLora(withLora, { targets: QV, rank: 2, alpha: 2, dropout: 0, seed: 0 });
    await expectFailure(() => b.applyAdapters(withLora, HOULSBY), /has LoRA adapters/);

    const good = file('bottleneck-good.pt');
    adapters.save(good);
    await expectFailure(() => b.applyAdapters(classifier(), { ...HOULSBY, size: 4 }).load(good), /of shape \[8, 32\], expected \[4, 32\]/);
    await expectFailure(() => b.applyAdapters(classifier(), { ...HOULSBY, config: 'pfeiffer' }).load(good), /config 'houlsby'/);
    await expectFailure(() => b.applyAdapters(classifier(), { ...HOULSBY, activation: 'relu' }).load(good), /activation 'swish'/);
    await expectFailure(() => adapters.load(file('missing.pt')), /no such file/);
    adapters.load(good);
    adapters.dispose();
    await expectFailure(() => adapters.parameters(), /disposed/);
    await expectFailure(() => b.applyAdapters(m, HOULSBY), /already has bottleneck adapters/);
  });
});

describe('token pruning (native/graph/token_pruning.h)', () => {
  // What the pass narrows to the [CLS] row in make_encoder.py's traced BERT (the HF layout):
  // the last layer's query projection, its attention row, output projection, LayerNorms and
  // feed-forward block; the keys and values keep every token.
  const LAST_LAYER_FOR_CLS = [
    'aten::linear',
    'aten::view',
    'aten::permute',
    'aten::matmul',
    'aten::div',
    'aten::add',
    'aten::softmax',
    'aten::dropout',
    'aten::matmul',
    'aten::permute',
    'aten::contiguous',
    'aten::view',
    'aten::linear',
    'aten::dropout',
    'aten::add',
    'aten::layer_norm',
    'aten::linear',
    'aten::gelu',
    'aten::linear',
    'aten::dropout',
    'aten::add',
    'aten::layer_norm',
    'aten::slice',
  ];
  const CLS = { pooling: 'cls' as const, dropout: 0.1 };

  /** Three seeded full fine-tuning steps of a fresh [CLS] classifier, pruning on or off. */
  async function run(prune: boolean, spec: Partial<ClassifierSpec> = CLS, lora = false) {
    b.setTokenPruning(prune);
    try {
      b.manualSeed(3);
      const m = classifier(spec);
      const params = trainable(m);
      if (lora)
        params.push(
          ...b
            .applyLora(m, { targets: QV, rank: 4, alpha: 8, dropout: 0.2, seed: 5 })
            .parameters()
            .map(([, t]) => t),
        );
      // eps 1e-6: the pruned and the full run compare equal arithmetic in another order (below).
      const opt = adamw(params, 1e-3, 1e-6);
      const losses: number[] = [];
      for (let i = 0; i < 3; i++) losses.push((await b.trainStep(m, opt, batch(ALL))).loss);
      return { m, losses, weights: snapshot(m), ops: m.prunedOps() };
    } finally {
      b.setTokenPruning(true);
    }
  }

  it('computes the last layer for the [CLS] row alone: the same losses and weights as the full computation', async () => {
    const full = await run(false);
    const pruned = await run(true);
    expect(full.ops).toBeNull(); // never built: pruning was off
    expect(pruned.ops).toEqual(LAST_LAYER_FOR_CLS);
    // The head's dropout (after the encoder) drew the same masks: same random stream.
    for (let i = 0; i < 3; i++) expect(Math.abs(pruned.losses[i] - full.losses[i])).toBeLessThan(1e-6);
    // Weights: fp32 rounding differs in the narrowed GEMMs; AdamW's step (~lr · g / (|g| + eps))
    // magnifies that for a gradient near zero, up to lr itself with the default eps (1e-8): on a
    // CPU with AVX-512 kernels the weights were 1.35e-5 apart after 3 steps. With eps 1e-6 (run's
    // optimizer) rounding stays rounding (measured 2.9e-7), and the tolerance is the one the
    // Python comparisons use.
    for (const [name, v] of pruned.weights) expect(maxAbsDiff(v, full.weights.get(name)!), name).toBeLessThan(1e-5);
  });

  it('trains as Python does on the unpruned model (loss and every weight after two AdamW steps)', async () => {
    const m = classifier({ pooling: 'cls', dropout: 0 });
    const before = file('prune-before.pt');
    m.save(before);
    const opt = adamw(trainable(m), 1e-3);
    const losses = [(await b.trainStep(m, opt, batch(ALL))).loss, (await b.trainStep(m, opt, batch(ALL))).loss];
    expect(m.prunedOps()).toEqual(LAST_LAYER_FOR_CLS);
    const ref = py<{ losses: number[]; weights: Record<string, number[]> }>(
      PY_T +
        'ids, mask = batch(sys.argv[2], sys.argv[3]); y = torch.tensor(json.loads(sys.argv[4]))\n' +
        'm = torch.jit.load(sys.argv[1]); m.train()\n' +
        'opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01); losses = []\n' +
        'for _ in range(2):\n' +
        '    opt.zero_grad(); loss = F.nll_loss(m(ids, mask), y); loss.backward(); opt.step(); losses.append(loss.item())\n' +
        'print(json.dumps({"losses": losses, "weights": {n: flat(p) for n, p in m.named_parameters()}}))',
      before,
      JSON.stringify(IDS),
      JSON.stringify(MASK),
      JSON.stringify(LABELS),
    );
    for (let i = 0; i < 2; i++) expect(Math.abs(losses[i] - ref.losses[i])).toBeLessThan(1e-6);
    for (const [name, v] of snapshot(m)) expect(maxAbsDiff(v, ref.weights[name]), name).toBeLessThan(1e-5);
  });

  it('stops at random ops: LoRA adapter dropout draws the same numbers, so the seeded run is unchanged', async () => {
    const full = await run(false, CLS, true);
    const pruned = await run(true, CLS, true);
    // The query adapter's dropout keeps its full input; everything after it is narrowed.
    expect(pruned.ops).toEqual(['aten::linear', 'aten::linear', 'aten::linear', 'aten::add', ...LAST_LAYER_FOR_CLS.slice(1)]);
    for (let i = 0; i < 3; i++) expect(Math.abs(pruned.losses[i] - full.losses[i])).toBeLessThan(1e-6);
    for (const [name, v] of pruned.weights) expect(maxAbsDiff(v, full.weights.get(name)!), name).toBeLessThan(1e-5);
  });

  it('bf16 autocast: the size probe leaves no cast weights behind, so the first step trains the head', async () => {
    // Autocast caches the bf16 casts of weights for its region: a probe run without autograd
    // inside it would leave casts without gradients for the real call.
    const steps = async (prune: boolean) => {
      b.setTokenPruning(prune);
      try {
        const m = classifier({ pooling: 'cls', dropout: 0 });
        const opt = adamw(trainable(m), 1e-3);
        const head = values(param(m, 'head.dense.weight'));
        const r = await b.trainStep(m, opt, batch(ALL), { precision: 'bf16' });
        return { loss: r.loss, gradNorm: r.gradNorm!, moved: maxAbsDiff(values(param(m, 'head.dense.weight')), head) };
      } finally {
        b.setTokenPruning(true);
      }
    };
    const full = await steps(false);
    const pruned = await steps(true);
    expect(full.moved).toBeGreaterThan(5e-4); // AdamW's first step moves every weight by ~lr
    expect(pruned.moved).toBeGreaterThan(5e-4);
    expect(Math.abs(pruned.loss - full.loss)).toBeLessThan(1e-3 * Math.abs(full.loss));
    // The gradient of every parameter, the head's included (weights after AdamW's first step,
    // lr * sign(gradient), would not compare: bf16 flips the sign of near-zero gradients).
    expect(Math.abs(pruned.gradNorm - full.gradNorm)).toBeLessThan(1e-2 * full.gradNorm);
  });

  it('leaves mean pooling alone (every row counts) and applies to the features method', async () => {
    const mean = await run(true, { pooling: 'mean', dropout: 0 });
    expect(mean.ops).toEqual([]);
    const ids = tokenTensors(ALL);
    b.setTokenPruning(false);
    const m0 = classifier(CLS);
    const full = values(m0.runMethod('features', ...ids) as NativeTensor);
    b.setTokenPruning(true);
    const m1 = classifier(CLS);
    expect(m1.prunedOps('features')).toBeNull();
    const pruned = values(m1.runMethod('features', ...ids) as NativeTensor);
    expect(full).toHaveLength(4 * 32);
    expect(maxAbsDiff(pruned, full)).toBeLessThan(1e-6);
    expect(m1.prunedOps('features')).toEqual(LAST_LAYER_FOR_CLS);
  });

  it('prunes encoders that return a dict or a bare tensor, and three-input ones, alike', async () => {
    for (const variant of [
      { output: 'dict', signature: 3 },
      { output: 'tensor', signature: 2 },
    ] as const) {
      const file = await makeEncoder({ ...ENC_SIZES, seed: 11, ...variant });
      const features = (prune: boolean) => {
        b.setTokenPruning(prune);
        try {
          const { module } = b.buildClassifier(b.ScriptModule.load(file), { ...SPEC, pooling: 'cls' });
          const x = values(module.runMethod('features', ...tokenTensors(ALL)) as NativeTensor);
          return { x, ops: module.prunedOps('features') };
        } finally {
          b.setTokenPruning(true);
        }
      };
      const full = features(false);
      const pruned = features(true);
      expect(pruned.ops, variant.output).toEqual(LAST_LAYER_FOR_CLS);
      expect(maxAbsDiff(pruned.x, full.x)).toBeLessThan(1e-6);
    }
  });

  it('plans from the first example of a call: a first call of one row, then four rows, equal the full computation', async () => {
    b.setTokenPruning(false);
    const full = values(classifier(CLS).runMethod('features', ...tokenTensors(ALL)) as NativeTensor);
    b.setTokenPruning(true);
    const m = classifier(CLS);
    m.runMethod('features', ...tokenTensors([2]));
    expect(m.prunedOps('features')).toEqual(LAST_LAYER_FOR_CLS);
    expect(maxAbsDiff(values(m.runMethod('features', ...tokenTensors(ALL)) as NativeTensor), full)).toBeLessThan(1e-6);
  });

  it('leaves alone a graph whose ranks could depend on sizes (squeeze), and prunes the same graph without it', () => {
    const trace = (squeeze: boolean) => {
      const file = path.join(dir, `custom-encoder-${squeeze}.pt`);
      py(
        'class E(torch.nn.Module):\n' +
          '    def __init__(self):\n' +
          '        super().__init__(); self.emb = torch.nn.Embedding(100, 32); self.lin = torch.nn.Linear(32, 32); self.ff = torch.nn.Linear(32, 32)\n' +
          '    def forward(self, ids, mask):\n' +
          '        h = self.lin(self.emb(ids))\n' +
          (squeeze ? '        h = h.unsqueeze(0).squeeze(0)\n' : '') +
          '        return (torch.relu(self.ff(h)) * mask.unsqueeze(-1),)\n' +
          'torch.manual_seed(0); ids = torch.randint(0, 100, (2, 6))\n' +
          'torch.jit.trace(E().eval(), (ids, torch.ones(2, 6, dtype=torch.long))).save(sys.argv[1]); print(1)',
        file,
      );
      return file;
    };
    for (const squeeze of [true, false]) {
      const file = trace(squeeze);
      const run = (prune: boolean) => {
        b.setTokenPruning(prune);
        try {
          const { module } = b.buildClassifier(b.ScriptModule.load(file), { ...SPEC, pooling: 'cls' });
          return { x: values(module.runMethod('features', ...tokenTensors(ALL)) as NativeTensor), ops: module.prunedOps('features') };
        } finally {
          b.setTokenPruning(true);
        }
      };
      const full = run(false);
      const pruned = run(true);
      if (squeeze) expect(pruned.ops).toEqual([]);
      else expect(pruned.ops).toEqual(['aten::embedding', 'aten::linear', 'aten::linear', 'aten::relu', 'aten::mul', 'aten::slice']);
      expect(maxAbsDiff(pruned.x, full.x)).toBeLessThan(1e-6);
    }
  });

  it('TORCH_BERT_TOKEN_PRUNING=0 turns it off in a fresh process; on by default', () => {
    const script = (env: Record<string, string>) => {
      const code = `
        const { loadBinding } = await import(${JSON.stringify(path.join(repoRoot, 'dist', 'index.js'))});
        const b = loadBinding();
        const { module } = b.buildClassifier(b.ScriptModule.load(${JSON.stringify(enc)}), { numClasses: 2, headHidden: 8, dropout: 0, pooling: 'cls', seed: 1 });
        const ids = b.Tensor.fromArray(new Int32Array(12).fill(5), [2, 6], 'int64');
        const mask = b.Tensor.fromArray(new Int32Array(12).fill(1), [2, 6], 'int64');
        module.runMethod('features', ids, mask);
        console.log(JSON.stringify({ on: b.tokenPruning(), ops: module.prunedOps('features') }));`;
      const out = execFileSync(process.execPath, ['--input-type=module', '-e', code], {
        env: { ...process.env, ...env },
        encoding: 'utf8',
      });
      return JSON.parse(out.trim().split('\n').pop()!) as { on: boolean; ops: string[] | null };
    };
    expect(script({ TORCH_BERT_TOKEN_PRUNING: '0' })).toEqual({ on: false, ops: null });
    expect(script({ TORCH_BERT_TOKEN_PRUNING: '1' })).toEqual({ on: true, ops: LAST_LAYER_FOR_CLS });
  });

  it('a first call with bad inputs fails as before and the next call still prunes', async () => {
    const m = classifier(CLS);
    const bad = b.Tensor.fromArray(new Int32Array(ALL.length * T).fill(1000), [ALL.length, T], 'int64');
    await expectFailure(() => m.runMethod('features', bad, tokenTensors(ALL)[1]), /index out of range/i);
    expect(m.prunedOps('features')).toBeNull();
    m.runMethod('features', ...tokenTensors(ALL));
    expect(m.prunedOps('features')).toEqual(LAST_LAYER_FOR_CLS);
    await expectFailure(() => m.prunedOps('nope'), /no method 'nope'|nope/);
    await expectFailure(() => (b.setTokenPruning as (x: unknown) => void)('yes'), /boolean/, TypeError);
  });
});

describe('saveTensors / loadTensors', () => {
  it('writes a dict Python torch.load reads, and reads dicts Python torch.save writes', () => {
    const out = file('tensors.pt');
    const w = b.Tensor.fromArray(new Float32Array([1.5, -2, 3.25, 0.125, 7, 8]), [2, 3]);
    w.setRequiresGrad(true);
    b.saveTensors(out, {
      'head.weight': w,
      step: b.Tensor.fromArray(new BigInt64Array([42n]), []),
      mask: b.Tensor.fromArray(new Uint8Array([1, 0, 1]), [3], 'bool'),
    });
    const seen = py<Record<string, [string, number[], unknown]>>(
      // weights_only: no TorchScript type tags or other globals beyond what torch.save writes.
      'd = torch.load(sys.argv[1], weights_only=True)\n' +
        'print(json.dumps({k: [str(v.dtype), list(v.shape), v.tolist()] for k, v in d.items()}))',
      out,
    );
    expect(seen).toEqual({
      'head.weight': [
        'torch.float32',
        [2, 3],
        [
          [1.5, -2, 3.25],
          [0.125, 7, 8],
        ],
      ],
      step: ['torch.int64', [], 42],
      mask: ['torch.bool', [3], [true, false, true]],
    });
    const back = b.loadTensors(out);
    expect(Object.keys(back)).toEqual(['head.weight', 'step', 'mask']);
    expect(values(back['head.weight'])).toEqual(values(w));

    const fromPython = file('from-python.pt');
    py(
      'torch.save({"a": torch.arange(6, dtype=torch.float64).view(2, 3), "b": torch.tensor([3, -1]), "c": torch.ones(2, dtype=torch.float16)}, sys.argv[1]); print("null")',
      fromPython,
    );
    const loaded = b.loadTensors(fromPython);
    expect(Object.entries(loaded).map(([k, t]) => [k, t.dtype, t.shape])).toEqual([
      ['a', 'float64', [2, 3]],
      ['b', 'int64', [2]],
      ['c', 'float16', [2]],
    ]);
    expect(values(loaded.a)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('fails clearly on files that are not a dict of tensors', async () => {
    const list = file('list.pt');
    const mixed = file('mixed.pt');
    py('torch.save([torch.zeros(1)], sys.argv[1]); torch.save({"a": torch.zeros(1), "n": 3}, sys.argv[2]); print("null")', list, mixed);
    // The C++ unpickler reads the subset of pickle that dicts of tensors need, so a list
    // written by Python may fail earlier than the type check; either way, an Error naming the file.
    await expectFailure(() => b.loadTensors(list), /list\.pt/);
    await expectFailure(() => b.loadTensors(mixed), /'n' is a Int/);
    await expectFailure(() => b.loadTensors(file('nope.pt')), /nope\.pt': no such file/);
    await expectFailure(() => b.loadTensors(dir), /not a regular file/);
    await expectFailure(() => b.saveTensors(file('x.pt'), { a: 1 as any }), /tensors\['a'\] must be a Tensor/, TypeError);
    await expectFailure(() => b.saveTensors(file('x.pt'), null as any), /must be an object/, TypeError);
    await expectFailure(() => b.saveTensors('/nonexistent-dir/x.pt', {}), /nonexistent-dir/);
  });
});

describe('RNG state', () => {
  it('restoring the state redraws the same dropout masks', () => {
    const m = classifier({ dropout: 0.5 });
    const x = b.Tensor.fromArray(
      Float32Array.from({ length: 4 * 32 }, (_, i) => Math.sin(i)),
      [4, 32],
    );
    const draw = () => values(m.runMethod('head_forward', x) as NativeTensor);
    const state = b.getRngState();
    expect(state).toBeInstanceOf(Uint8Array);
    expect(state.length).toBeGreaterThan(5000);
    const first = [draw(), draw()];
    b.setRngState(state);
    const second = [draw(), draw()];
    expect(second).toEqual(first);
    expect(first[1]).not.toEqual(first[0]);
    expect(b.getRngState()).not.toEqual(state);
    b.manualSeed(7);
    const seeded = b.getRngState();
    b.manualSeed(7);
    expect(b.getRngState()).toEqual(seeded);
  });

  it('rejects states that getRngState did not produce', async () => {
    const state = b.getRngState();
    await expectFailure(() => b.setRngState(state.slice(0, 100)), /truncated/);
    await expectFailure(() => b.setRngState(new Uint8Array(5084)), /bad header/);
    const extended = new Uint8Array(state.length + 1);
    extended.set(state);
    await expectFailure(() => b.setRngState(extended), /trailing bytes/);
    await expectFailure(() => b.setRngState([1, 2] as any), /Uint8Array/, TypeError);
    b.setRngState(state);
    expect(b.getRngState()).toEqual(state);
  });
});

describe('Tensor.copyFrom', () => {
  it('copies in place without autograd, converting dtype; the module sees parameter copies', () => {
    const t = b.Tensor.fromArray(new Float32Array([1, 2, 3, 4]), [2, 2]);
    t.copyFrom(b.Tensor.fromArray(new BigInt64Array([5n, 6n, 7n, 8n]), [2, 2]));
    expect(t.dtype).toBe('float32');
    expect(values(t)).toEqual([5, 6, 7, 8]);

    const m = classifier();
    const ids = tokenTensors(ALL);
    const before = values(m.forward(...ids) as NativeTensor);
    const bias = param(m, 'head.out_proj.bias');
    expect(bias.requiresGrad).toBe(true);
    bias.copyFrom(b.Tensor.fromArray(new Float32Array([10, 0, 0]), [3]));
    expect(bias.requiresGrad).toBe(true);
    expect(values(param(m, 'head.out_proj.bias'))).toEqual([10, 0, 0]);
    expect(values(m.forward(...ids) as NativeTensor)).not.toEqual(before);
  });

  it('checks shapes and arguments', async () => {
    const t = b.Tensor.fromArray(new Float32Array(4), [2, 2]);
    await expectFailure(() => t.copyFrom(b.Tensor.fromArray(new Float32Array(4), [4])), /source has shape \[4\], this tensor has \[2, 2\]/);
    await expectFailure(() => t.copyFrom([1, 2, 3, 4] as any), /must be a Tensor/, TypeError);
    const gone = b.Tensor.fromArray(new Float32Array(4), [2, 2]);
    gone.dispose();
    await expectFailure(() => t.copyFrom(gone), /disposed/);
    await expectFailure(() => gone.copyFrom(t), /disposed/);
  });
});

describe('garbage in, errors out (techniques)', () => {
  it('every new entry point throws or rejects an Error for wrong arguments, and the process survives', async () => {
    const m = classifier();
    const opt = adamw(trainable(m));
    const f = await b.extractFeatures(m, batch(ALL));
    const adapters = b.applyLora(classifier(), { targets: QV, rank: 2, alpha: 2, dropout: 0, seed: 0 });
    // A garbage string like 'x' is a valid relative path for the save functions: keep such files out of the checkout.
    const startDir = process.cwd();
    process.chdir(mkdtempSync(path.join(tmpdir(), 'torch-bert-garbage-')));
    onTestFinished(() => process.chdir(startDir));
    const garbage: unknown[] = [undefined, null, 0, -1, 1.5, NaN, 'x', {}, [], () => 1, Symbol('s'), 10n, new Float32Array(2)];
    const calls: Array<(g: any) => unknown> = [
      (g) => b.extractFeatures(g, batch(ALL)),
      (g) => b.extractFeatures(m, g),
      (g) => b.cat(g),
      (g) => b.cat([f, g]),
      (g) => b.headTrainStep(g, opt, f, new Int32Array([0]), new Int32Array([0])),
      (g) => b.headTrainStep(m, g, f, new Int32Array([0]), new Int32Array([0])),
      (g) => b.headTrainStep(m, opt, g, new Int32Array([0]), new Int32Array([0])),
      (g) => b.headTrainStep(m, opt, f, g, new Int32Array([0])),
      (g) => b.headTrainStep(m, opt, f, new Int32Array([0]), g),
      (g) => b.headTrainStep(m, opt, f, new Int32Array([0]), new Int32Array([0]), g),
      (g) => b.headEvalStep(m, f, new Int32Array([0]), g, g),
      (g) => b.trainStep(m, opt, batch(ALL), { maxGradNorm: 1, classWeights: g, labelSmoothing: g, accumulateOnly: g, lossScale: g }),
      (g) => b.evalStep(m, batch(ALL), g),
      (g) => b.applyLora(m, g),
      (g) => b.applyLora(g, { targets: QV, rank: 2, alpha: 2, dropout: 0, seed: 0 }),
      (g) => b.applyLora(classifier(), { targets: [g], rank: g, alpha: g, dropout: g, seed: g }),
      (g) => adapters.save(g === undefined || typeof g === 'string' ? '/nonexistent-dir/x.pt' : g),
      (g) => adapters.load(g),
      (g) => b.saveTensors(g, {}),
      (g) => b.saveTensors(file('garbage.pt'), g),
      (g) => b.loadTensors(g),
      (g) => b.setRngState(g),
      (g) => f.copyFrom(g),
    ];
    for (const call of calls) {
      for (const g of garbage) {
        try {
          const r = call(g);
          if (r instanceof Promise) await r.catch((e: unknown) => expect(e).toBeInstanceOf(Error));
        } catch (e) {
          expect(e).toBeInstanceOf(Error);
        }
      }
    }
    // Still alive and computing.
    expect((await b.headTrainStep(m, opt, f, new Int32Array([0, 1]), new Int32Array([0, 1]))).predictions).toHaveLength(2);
    expect(b.getRngState().length).toBeGreaterThan(5000);
  });
});
