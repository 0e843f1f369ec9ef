/**
 * The techniques and the trainer's controls, through the public train() API on small
 * locally made encoders: what changes and what must not, exact equalities where the maths
 * says they hold (cache vs recompute, accumulation vs a big batch, resume vs uninterrupted,
 * same seed twice), and the schedule / weight-decay / metric bookkeeping.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { NativeTensor } from '../lib/addon/binding.js';
import { loadBinding } from '../lib/addon/loader.js';
import { epochBatches, gatherRows, learningRateFactor, longestFirstBatches } from '../lib/data/batching.js';
import { loadExamples } from '../lib/data/data.js';
import { Classifier, exportHuggingFace, type TrainOptions, train } from '../lib/index.js';
import { loadEncoderSource } from '../lib/models/encoder-source.js';
import { LORA_DEFAULTS } from '../lib/training/options.js';
import { isDecayed } from '../lib/training/trainable.js';
import { demoReviews, demoTokenizer, INFORMATIVE_ENCODER, makeEncoder, makeHfFolder, PYTHON, repoRoot } from './fixtures.js';
import { trainAbortedAt } from './helpers/train-abort.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-techniques-'));
const cli = join(repoRoot, 'dist', 'cli.js');
let encoder: string;
let data: { texts: string[]; labels: string[] };
beforeAll(async () => {
  encoder = await makeEncoder(INFORMATIVE_ENCODER);
  const raw = await loadExamples(demoReviews);
  data = { texts: raw.texts.slice(0, 320), labels: raw.labels!.slice(0, 320) };
});

const base = (): TrainOptions => ({
  data,
  encoder,
  tokenizer: demoTokenizer,
  epochs: 2,
  batchSize: 32,
  maxLength: 48,
  learningRate: 1e-3,
  headHidden: 32,
});
const values = (t: NativeTensor) => Array.from(t.toArray() as Float32Array);
const params = (c: Classifier) => new Map(c.module.namedParameters().map(([n, t]) => [n, values(t)]));
const maxAbsDiff = (a: number[], b: number[]) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

describe('frozen', () => {
  it('trains on features encoded once, equal to recomputing the encoder every epoch', async () => {
    const cached = await train({ ...base(), featureCache: 'memory' });
    const recomputed = await train({ ...base(), featureCache: 'none' });
    for (let e = 0; e < 2; e++) {
      expect(Math.abs(cached.history[e]!.trainLoss - recomputed.history[e]!.trainLoss)).toBeLessThan(1e-5);
      expect(Math.abs(cached.history[e]!.validationLoss - recomputed.history[e]!.validationLoss)).toBeLessThan(1e-5);
      expect(cached.history[e]!.validationAccuracy).toBe(recomputed.history[e]!.validationAccuracy);
    }
    const a = params(cached.classifier);
    const b = params(recomputed.classifier);
    for (const [name, v] of a) expect(maxAbsDiff(v, b.get(name)!)).toBeLessThan(1e-5);
    expect(cached.trainableEncoderFraction).toBe(0);
    cached.classifier.dispose();
    recomputed.classifier.dispose();
  });

  it('reuses the on-disk feature cache across runs with identical results', async () => {
    const cacheDir = join(work, 'feature-cache');
    const events: boolean[] = [];
    const first = await train({
      ...base(),
      featureCache: 'disk',
      featureCacheDir: cacheDir,
      onProgress: (e) => e.type === 'encode' && e.done === e.total && events.push(e.fromCache),
    });
    const second = await train({
      ...base(),
      featureCache: 'disk',
      featureCacheDir: cacheDir,
      onProgress: (e) => e.type === 'encode' && e.done === e.total && events.push(e.fromCache),
    });
    expect(events).toEqual([false, false, true, true]);
    expect(second.history.map((h) => h.validationLoss)).toEqual(first.history.map((h) => h.validationLoss));
    first.classifier.dispose();
    second.classifier.dispose();
  });
});

describe('full', () => {
  it('trains every encoder parameter, with its own learning rate', async () => {
    const binding = loadBinding();
    const original = binding.ScriptModule.load(encoder);
    const before = new Map(original.namedParameters().map(([n, t]) => [n, values(t)]));
    const result = await train({ ...base(), technique: 'full', learningRate: 1e-3, encoderLearningRate: 1e-4 });
    const after = params(result.classifier);
    const unchanged = [...before].filter(([name, v]) => maxAbsDiff(v, after.get(`encoder.${name}`)!) === 0).map(([n]) => n);
    // Every parameter the loss reaches moves; the pooler (unused under CLS pooling of the hidden
    // states) is frozen, reported as unused and not counted as trainable.
    expect(unchanged.sort()).toEqual(['pooler.dense.bias', 'pooler.dense.weight']);
    expect(result.unusedParameters.sort()).toEqual(['pooler.dense.bias', 'pooler.dense.weight']);
    const pooler = 64 * 64 + 64;
    const encoderSize = [...before.values()].reduce((n, v) => n + v.length, 0);
    expect(result.trainableParameters).toBe(result.totalParameters - pooler);
    expect(result.trainableEncoderFraction).toBeCloseTo((encoderSize - pooler) / encoderSize, 12);
    original.dispose();
    result.classifier.dispose();
  });
});

describe('lora', () => {
  it('changes only adapters and head; the merged export equals the adapted model; adapters reload onto the base encoder', async () => {
    const binding = loadBinding();
    const original = binding.ScriptModule.load(encoder);
    const before = new Map(original.namedParameters().map(([n, t]) => [n, values(t)]));
    const outDir = join(work, 'lora');
    const result = await train({ ...base(), technique: 'lora', lora: { rank: 4, alpha: 8 }, learningRate: 5e-3, outDir });
    // Merged export: only the adapted weights differ from the base encoder.
    const after = params(result.classifier);
    for (const [name, v] of before) {
      const adapted = /attention\.self\.(query|value)\.weight$/.test(name);
      if (adapted) expect(maxAbsDiff(v, after.get(`encoder.${name}`)!)).toBeGreaterThan(0);
      else expect(maxAbsDiff(v, after.get(`encoder.${name}`)!)).toBe(0);
    }
    // 2 layers x (query + value) x (A [4, 64] + B [64, 4])
    expect(result.trainableParameters - (32 * 64 + 32 + 2 * 32 + 2)).toBe(2 * 2 * (4 * 64 + 64 * 4));
    expect(result.trainableEncoderFraction).toBeCloseTo(
      (2 * 2 * (4 * 64 + 64 * 4)) / [...before.values()].reduce((n, v) => n + v.length, 0),
      10,
    );
    expect(existsSync(join(outDir, 'adapters.pt'))).toBe(true);

    const texts = data.texts.slice(0, 16);
    const merged = await result.classifier.predict(texts);
    const unmerged = await Classifier.loadAdapters(outDir, { encoder });
    const fromAdapters = await unmerged.predict(texts);
    merged.forEach((p, i) => {
      expect(fromAdapters[i]!.label).toBe(p.label);
      for (const label of result.labels)
        expect(Math.abs(fromAdapters[i]!.probabilities[label]! - p.probabilities[label]!)).toBeLessThan(1e-4);
    });
    unmerged.dispose();
    // The CLI builds it from the small files alone (no classifier.pt) on the base, as loadAdapters.
    const small = join(work, 'lora-small');
    mkdirSync(small);
    for (const file of ['config.json', 'tokenizer.json', 'adapters.pt', 'head.pt']) copyFileSync(join(outDir, file), join(small, file));
    const printed = execFileSync(process.execPath, [cli, 'predict', '--classifier', small, '--base', encoder, '--json', '--', ...texts], {
      encoding: 'utf8',
    })
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { label: string; probabilities: Record<string, number> });
    printed.forEach((p, i) => {
      expect(p.label).toBe(fromAdapters[i]!.label);
      for (const label of result.labels)
        expect(Math.abs(p.probabilities[label]! - fromAdapters[i]!.probabilities[label]!)).toBeLessThan(1e-6);
    });

    // On another base, the adapters and head would predict wrongly without a word: refused,
    // whether it is another checkpoint of the architecture or the run's own merged export
    // (LoRA applied twice).
    const merged_ = join(work, 'lora-merged-hf');
    await exportHuggingFace({ classifier: outDir, out: merged_, heads: 4 });
    const other = await makeEncoder({ ...INFORMATIVE_ENCODER, pretrain: undefined, seed: 2 });
    for (const [wrong, differing] of [
      [merged_, '4'], // 2 layers × query and value
      [other, '\\d+'],
    ] as const) {
      const refused = await Classifier.loadAdapters(outDir, { encoder: wrong }).catch((e: unknown) => e);
      expect(refused).toMatchObject({ name: 'InputError', code: 'OTHER_BASE' });
      expect((refused as Error).message).toMatch(
        new RegExp(`^${wrong} is not the base encoder ${outDir} was trained on: ${differing} of the \\d+ weight tensors recorded`),
      );
    }
    // Asked for (a base continued on purpose): built, with the other base's weights.
    const onOther = await Classifier.loadAdapters(outDir, { encoder: other, allowOtherBase: true });
    const onOtherPredicted = await onOther.predict(texts);
    expect(onOtherPredicted.map((p) => p.probabilities)).not.toEqual(fromAdapters.map((p) => p.probabilities));
    onOther.dispose();
    // The CLI: refused, naming its flag; with it, the same predictions.
    const cliOnOther = (...flags: string[]) =>
      execFileSync(process.execPath, [cli, 'predict', '--classifier', small, '--base', other, ...flags, '--json', '--', ...texts], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    expect(() => cliOnOther()).toThrow(/to apply them to another base on purpose, allowOtherBase: true \/ --allow-other-base\)\n/);
    cliOnOther('--allow-other-base')
      .trim()
      .split('\n')
      .forEach((line, i) => {
        const p = JSON.parse(line) as { probabilities: Record<string, number> };
        for (const label of result.labels)
          expect(Math.abs(p.probabilities[label]! - onOtherPredicted[i]!.probabilities[label]!)).toBeLessThan(1e-6);
      });
    original.dispose();
    result.classifier.dispose();
  });
  it('refuses a target of several that matches no module (a typo), rather than training the others alone', async () => {
    // Before: 'valu' matched nothing while 'query' did, and the run trained LoRA on query alone.
    await expect(train({ ...base(), technique: 'lora', lora: { rank: 2, targets: ['attention.self.query', 'valu'] } })).rejects.toThrow(
      "lora.targets 'valu' matches no module with a 2-D weight (the other targets adapt modules named 'query'): correct or remove it",
    );
    // Which targets matched is applyLora's own rule (a path is the target or ends in '.' + target),
    // reported by the adapters, not a copy of it: 'uery' ends a path but not after a dot.
    const model = loadBinding().ScriptModule.load(encoder);
    try {
      const adapters = loadBinding().applyLora(model, { targets: ['self.query', 'uery', 'valu'], rank: 2, alpha: 4, dropout: 0, seed: 1 });
      expect(adapters.unusedTargets).toEqual(['uery', 'valu']);
      expect(adapters.modules.every((path) => path.endsWith('.self.query'))).toBe(true);
      adapters.dispose();
    } finally {
      model.dispose();
    }
  });
});

describe('adapter', () => {
  /**
   * The saved classifier.pt of `dir` run in Python (nothing but torch) on `texts`, tokenized as
   * Node does, gives `classifier`'s predict probabilities to 1e-5, and those differ between the
   * texts by more than that (not a degenerate comparison). Returns the predictions.
   */
  async function expectPythonPredicts(dir: string, classifier: Classifier, texts: string[]) {
    const encoded = classifier.tokenizer.encodeBatch(texts, 48);
    const rows = (a: ArrayLike<number>) =>
      Array.from({ length: encoded.count }, (_, i) => Array.from(a).slice(i * encoded.seqLen, (i + 1) * encoded.seqLen));
    const out = execFileSync(
      PYTHON,
      [
        '-c',
        'import json, sys, torch\n' +
          'm = torch.jit.load(sys.argv[1]).eval(); x = json.loads(sys.argv[2])\n' +
          'print(json.dumps(m(torch.tensor(x["ids"]), torch.tensor(x["mask"])).exp().tolist()))',
        join(dir, 'classifier.pt'),
        JSON.stringify({ ids: rows(encoded.inputIds), mask: rows(encoded.attentionMask) }),
      ],
      { encoding: 'utf8' },
    );
    const inPython = JSON.parse(out.trim().split('\n').pop()!) as number[][];
    const predictions = await classifier.predict(texts);
    predictions.forEach((p, i) => {
      classifier.labels.forEach((label, c) => {
        expect(Math.abs(inPython[i]![c]! - p.probabilities[label]!)).toBeLessThan(1e-5);
      });
    });
    const first = inPython.map((row) => row[0]!);
    expect(Math.max(...first) - Math.min(...first)).toBeGreaterThan(1e-4);
    return predictions;
  }

  it("trains only adapters and head (the encoder's tensors bit-identical); classifier.pt in Python equals predict; adapters reload", async () => {
    const binding = loadBinding();
    const original = binding.ScriptModule.load(encoder);
    const before = new Map(original.namedParameters().map(([n, t]) => [n, values(t)]));
    const outDir = join(work, 'adapter');
    const result = await train({ ...base(), technique: 'adapter', adapter: { size: 8 }, learningRate: 5e-3, outDir });
    const after = params(result.classifier);
    for (const [name, v] of before) expect(after.get(`encoder.${name}`), name).toEqual(v);
    // The classifier holds the adapters: 2 layers x (attention, feed-forward) x (down [8, 64] + 8 + up [64, 8] + 64).
    const adapterNames = [...after.keys()].filter((n) => n.includes('.adapter.'));
    expect(adapterNames).toHaveLength(2 * 2 * 4);
    const head = 64 * 32 + 32 + 32 * 2 + 2;
    expect(result.trainableParameters).toBe(head + 2 * 2 * (8 * 64 + 8 + 64 * 8 + 64));
    const encoderSize = [...before.values()].reduce((n, v) => n + v.length, 0);
    expect(result.trainableEncoderFraction).toBeCloseTo((2 * 2 * 1096) / encoderSize, 12);
    expect(result.technique).toBe('adapter');
    const config = JSON.parse(readFileSync(join(outDir, 'config.json'), 'utf8'));
    expect(config.hyperparameters.adapter).toEqual({
      config: 'houlsby',
      size: 8,
      reductionFactor: null,
      activation: 'swish',
      trainLayerNorm: false,
    });
    expect(existsSync(join(outDir, 'adapters.pt'))).toBe(true);

    const texts = data.texts.slice(0, 12);
    const predictions = await expectPythonPredicts(outDir, result.classifier, texts);
    const loaded = await Classifier.load(outDir);
    const fromFile = await loaded.predict(texts);
    const fromAdapters = await Classifier.loadAdapters(outDir, { encoder });
    const rebuilt = await fromAdapters.predict(texts);
    predictions.forEach((p, i) => {
      for (const label of result.labels) {
        expect(Math.abs(fromFile[i]!.probabilities[label]! - p.probabilities[label]!)).toBeLessThan(1e-6);
        expect(Math.abs(rebuilt[i]!.probabilities[label]! - p.probabilities[label]!)).toBeLessThan(1e-6);
      }
    });
    for (const c of [loaded, fromAdapters, result.classifier]) c.dispose();
    original.dispose();
  });

  // Issue 19 on the natively built Hugging Face encoders (native/model/): the adapters go after
  // RoBERTa's attention.output.dense and output.dense as after BERT's, and after DistilBERT's
  // attention.out_lin and ffn.lin2.
  for (const family of ['roberta', 'distilbert'] as const) {
    it(`${family} folder (built natively): only adapters and head train, the encoder's tensors bit-identical; classifier.pt in Python equals predict`, async () => {
      const { dir: folder } = await makeHfFolder({ layout: family, layers: 2, hidden: 32, heads: 4, intermediate: 64, maxPosition: 64 });
      const source = await loadEncoderSource(folder, { device: 'cpu', fallbackMaxLength: 48 });
      const before = new Map(source.module.namedParameters().map(([n, t]) => [n, values(t)]));
      source.module.dispose();
      const outDir = join(work, `adapter-${family}`);
      const result = await train({ ...base(), encoder: folder, technique: 'adapter', adapter: { size: 8 }, learningRate: 5e-3, outDir });
      expect(result.classifier.config.encoder.source).toMatchObject({ kind: 'folder', family });
      const after = params(result.classifier);
      for (const [name, v] of before) expect(after.get(`encoder.${name}`), name).toEqual(v);
      const sublayers = family === 'distilbert' ? ['attention', 'ffn'] : ['attention.output', 'output'];
      const layer = family === 'distilbert' ? 'encoder.transformer.layer' : 'encoder.encoder.layer';
      expect([...after.keys()].filter((n) => n.includes('.adapter.')).sort()).toEqual(
        [0, 1]
          .flatMap((l) =>
            sublayers.flatMap((s) => ['down.weight', 'down.bias', 'up.weight', 'up.bias'].map((t) => `${layer}.${l}.${s}.adapter.${t}`)),
          )
          .sort(),
      );
      // The head's parameters and every adapter's: 2 layers x 2 sub-layers x (down [8, 32] + 8 + up [32, 8] + 32).
      expect(result.trainableParameters).toBe(32 * 32 + 32 + 32 * 2 + 2 + 2 * 2 * (8 * 32 + 8 + 32 * 8 + 32));
      expect(after.get(`${layer}.1.${sublayers[1]}.adapter.up.weight`)!.some((v) => v !== 0)).toBe(true);

      await expectPythonPredicts(outDir, result.classifier, data.texts.slice(0, 12));
      result.classifier.dispose();
    });
  }

  it('trainLayerNorm: the LayerNorms train too and travel with the adapters; Pfeiffer with a reduction factor', async () => {
    const binding = loadBinding();
    const original = binding.ScriptModule.load(encoder);
    const before = new Map(original.namedParameters().map(([n, t]) => [n, values(t)]));
    const outDir = join(work, 'adapter-ln');
    const result = await train({
      ...base(),
      technique: 'adapter',
      adapter: { config: 'pfeiffer', reductionFactor: 16, trainLayerNorm: true },
      learningRate: 5e-3,
      outDir,
    });
    const after = params(result.classifier);
    for (const [name, v] of before) {
      if (/LayerNorm/.test(name)) expect(maxAbsDiff(v, after.get(`encoder.${name}`)!), name).toBeGreaterThan(0);
      else expect(after.get(`encoder.${name}`), name).toEqual(v);
    }
    // Pfeiffer: the feed-forward output of 2 layers, width 64 / 16 = 4.
    expect([...after.keys()].filter((n) => n.includes('.adapter.')).sort()).toEqual(
      [0, 1].flatMap((l) =>
        ['down.bias', 'down.weight', 'up.bias', 'up.weight'].map((t) => `encoder.encoder.layer.${l}.output.adapter.${t}`),
      ),
    );
    expect(after.get('encoder.encoder.layer.0.output.adapter.down.weight')).toHaveLength(4 * 64);
    const texts = data.texts.slice(0, 12);
    const predictions = await result.classifier.predict(texts);
    const fromAdapters = await Classifier.loadAdapters(outDir, { encoder });
    const rebuilt = await fromAdapters.predict(texts);
    predictions.forEach((p, i) => {
      for (const label of result.labels) expect(Math.abs(rebuilt[i]!.probabilities[label]! - p.probabilities[label]!)).toBeLessThan(1e-6);
    });
    fromAdapters.dispose();
    result.classifier.dispose();
    original.dispose();
  });
});

describe('batching', () => {
  it('gives the same outputs whatever the padding', async () => {
    const result = await train({ ...base(), epochs: 1 });
    const binding = loadBinding();
    const encoded = result.classifier.tokenizer.encodeBatch(data.texts.slice(0, 8), 48);
    const rows = [0, 1, 2, 3, 4, 5, 6, 7];
    const tight = gatherRows(encoded, rows);
    const wide = gatherRows(encoded, rows, 48);
    expect(tight.seqLen).toBeLessThan(48);
    const run = (b: typeof tight) =>
      binding.evalStep(result.classifier.module, {
        inputIds: b.inputIds,
        attentionMask: b.attentionMask,
        batchSize: b.count,
        seqLen: b.seqLen,
      });
    const [p1, p2] = [await run(tight), await run(wide)];
    expect(maxAbsDiff(Array.from(p1.probabilities), Array.from(p2.probabilities))).toBeLessThan(1e-5);
    result.classifier.dispose();
  });

  it('groups texts of similar length without losing or repeating any', () => {
    const lengths = Int32Array.from({ length: 100 }, (_, i) => (i * 37) % 50);
    const permutation = Int32Array.from({ length: 100 }, (_, i) => (i * 13) % 100);
    const batches = epochBatches(permutation, 10, lengths);
    expect(batches).toHaveLength(10);
    expect(new Set(batches.flatMap((b) => Array.from(b))).size).toBe(100);
    // Sorted longest first within the mega-batch.
    const flat = batches.flatMap((b) => Array.from(b, (i) => lengths[i]!));
    expect(flat).toEqual([...flat].sort((a, b) => b - a));
  });

  it('batches inference passes longest first within a token budget (and a row limit, and a fixed width)', () => {
    const lengths = Int32Array.from([3, 10, 5, 10, 1]);
    const asArrays = (r: { batches: Int32Array[] }) => r.batches.map((b) => Array.from(b));
    const budget = longestFirstBatches(lengths, { tokensPerBatch: 20 });
    expect(Array.from(budget.order)).toEqual([1, 3, 2, 0, 4]);
    // Width 10 fits 2 rows; then width 5 fits 4, and 3 remain.
    expect(asArrays(budget)).toEqual([
      [1, 3],
      [2, 0, 4],
    ]);
    expect(asArrays(longestFirstBatches(lengths, { tokensPerBatch: 20, maxRows: 2 }))).toEqual([[1, 3], [2, 0], [4]]);
    expect(asArrays(longestFirstBatches(lengths, { tokensPerBatch: 20, width: 10 }))).toEqual([[1, 3], [2, 0], [4]]);
    // A row longer than the budget still goes, alone.
    expect(asArrays(longestFirstBatches(lengths, { tokensPerBatch: 4 }))).toEqual([[1], [3], [2], [0], [4]]);
  });
});

describe('optimisation', () => {
  it('follows Hugging Face linear and constant schedules with warmup', () => {
    expect([0, 1, 2, 3, 4, 5, 9].map((s) => learningRateFactor('linear', s, 10, 2))).toEqual([0, 0.5, 1, 7 / 8, 6 / 8, 5 / 8, 1 / 8]);
    expect([0, 1, 2, 9].map((s) => learningRateFactor('constant', s, 10, 2))).toEqual([0, 0.5, 1, 1]);
    expect(learningRateFactor('linear', 0, 10, 0)).toBe(1);
  });

  it("follows Hugging Face's cosine schedule with warmup (half a wave: 1 after warmup, 1/2 halfway, 0 at the end); each batch event reports its rate", async () => {
    // 2 warmup steps, then 6 decaying: progress 0, 1/6, ..., 5/6 gives (1 + cos(π·progress)) / 2.
    const cosine = [0, 1, 2, 3, 4, 5, 6, 7].map((s) => learningRateFactor('cosine', s, 8, 2));
    const expected = [0, 0.5, 1, (2 + Math.sqrt(3)) / 4, 0.75, 0.5, 0.25, (2 - Math.sqrt(3)) / 4];
    for (const [i, f] of cosine.entries()) expect(f, `step ${i}`).toBeCloseTo(expected[i]!, 12);
    expect(learningRateFactor('cosine', 8, 8, 2)).toBeCloseTo(0, 12);
    // Through train(): 2 epochs of 5 batches, warmupRatio 0.2 (2 steps); each batch event's rate.
    const rates: number[] = [];
    const run = await train({
      ...base(),
      data: { texts: data.texts.slice(0, 80), labels: data.labels.slice(0, 80) },
      validationData: { texts: data.texts.slice(80, 96), labels: data.labels.slice(80, 96) },
      batchSize: 16,
      schedule: 'cosine',
      warmupRatio: 0.2,
      onProgress: (e) => {
        if (e.type === 'batch') rates.push(e.learningRate);
      },
    });
    run.classifier.dispose();
    expect(rates).toHaveLength(10);
    const wave = (step: number) => (step < 2 ? step / 2 : (1 + Math.cos((Math.PI * (step - 2)) / 8)) / 2);
    for (const [step, rate] of rates.entries()) expect(rate, `step ${step}`).toBeCloseTo(1e-3 * wave(step), 15);
  });

  it('puts every weight matrix in the decayed AdamW group, LoRA A and B alike, and biases and LayerNorm weights in the other', () => {
    // Hugging Face's Trainer decays all but biases and LayerNorm weights; on BERT with LoRA
    // (and the head) those are exactly the parameters of one dimension.
    const binding = loadBinding();
    const { module } = binding.buildClassifier(binding.ScriptModule.load(encoder), {
      numClasses: 2,
      headHidden: 8,
      dropout: 0,
      pooling: 'cls',
      seed: 0,
    });
    const adapters = binding.applyLora(module, { ...LORA_DEFAULTS, seed: 0 });
    const all = [...module.namedParameters(), ...adapters.parameters()];
    const decayed = all.filter(([name]) => isDecayed(name)).map(([name]) => name);
    expect(decayed).toEqual(all.filter(([, t]) => t.shape.length >= 2).map(([name]) => name));
    expect(decayed.filter((name) => /lora_[AB]$/.test(name))).toHaveLength(2 * 2 * 2); // 2 layers x (query, value) x (A, B)
    expect(all.filter(([name]) => !isDecayed(name)).some(([name]) => /LayerNorm\.weight$/.test(name))).toBe(true);
    adapters.dispose();
    module.dispose();
  });

  it('accumulating 2 batches of 16 equals one batch of 32', async () => {
    const common = { ...base(), dropout: 0, epochs: 1, maxGradNorm: 1 };
    const big = await train({ ...common, batchSize: 32 });
    // Same rows per optimizer step: batches of 16 cut the same permutation in the same order.
    const small = await train({ ...common, batchSize: 16, gradientAccumulationSteps: 2 });
    const a = params(big.classifier);
    const b = params(small.classifier);
    for (const [name, v] of a) if (name.startsWith('head.')) expect(maxAbsDiff(v, b.get(name)!)).toBeLessThan(2e-6);
    big.classifier.dispose();
    small.classifier.dispose();
  });

  it('applies class weights and label smoothing to the loss it reports', async () => {
    const plain = await train({ ...base(), epochs: 1, learningRate: 0 });
    const smoothed = await train({ ...base(), epochs: 1, learningRate: 0, labelSmoothing: 0.2 });
    const weighted = await train({ ...base(), epochs: 1, learningRate: 0, classWeights: [1, 3] });
    // lr 0: the same untrained head, so only the loss formula differs.
    expect(smoothed.history[0]!.validationAccuracy).toBe(plain.history[0]!.validationAccuracy);
    expect(smoothed.history[0]!.validationLoss).not.toBeCloseTo(plain.history[0]!.validationLoss, 4);
    expect(weighted.history[0]!.validationLoss).not.toBeCloseTo(plain.history[0]!.validationLoss, 4);
    for (const r of [plain, smoothed, weighted]) r.classifier.dispose();
  });
});

describe('control', () => {
  it('evaluates every N steps, keeps the best by the chosen metric, and stops early', async () => {
    const steps = Math.ceil(256 / 32); // 320 examples, 20% validation
    const result = await train({ ...base(), epochs: 3, evaluateEvery: 3, bestMetric: 'macroF1' });
    // Every 3rd step within each epoch's 8 (steps 3, 6 | 9, 12, 15 | 18, 21, 24 — not at an epoch's last step) + each epoch's end.
    const mid = Array.from({ length: 3 * steps }, (_, i) => i + 1).filter((s) => s % 3 === 0 && s % steps !== 0).length;
    expect(result.evaluations).toHaveLength(mid + 3);
    const best = result.evaluations.filter((e) => e.isBest).at(-1)!;
    expect(best.validationMacroF1).toBe(Math.max(...result.evaluations.map((e) => e.validationMacroF1!)));
    expect(result.metrics.macroF1).toBeCloseTo(best.validationMacroF1!, 10);
    result.classifier.dispose();

    // lr 0: nothing improves after the first evaluation, so patience 2 ends the run after epoch 3 of 10.
    const stopped = await train({ ...base(), epochs: 10, learningRate: 0, earlyStoppingPatience: 2 });
    expect(stopped.stoppedEarly).toBe(true);
    expect(stopped.history).toHaveLength(3);
    stopped.classifier.dispose();
  });

  it('gives identical results for the same seed', async () => {
    const a = await train({ ...base(), technique: 'lora', lora: { rank: 2, dropout: 0.1 } });
    const b = await train({ ...base(), technique: 'lora', lora: { rank: 2, dropout: 0.1 } });
    expect(b.history.map((h) => [h.trainLoss, h.validationLoss])).toEqual(a.history.map((h) => [h.trainLoss, h.validationLoss]));
    const pa = params(a.classifier);
    const pb = params(b.classifier);
    for (const [name, v] of pa) expect(pb.get(name)).toEqual(v);
    a.classifier.dispose();
    b.classifier.dispose();
  });

  /**
   * Trains `opts` uninterrupted into `<name>-whole`, and into `<name>-interrupted` aborted after
   * the batch `abortAt` then resumed: history and final weights must be identical. `rewriteState`
   * may change the saved training state before the resume; `started` and `resumed` are options
   * the interrupted run starts, and resumes, with beside `opts`. Returns the interrupted run's directory.
   */
  async function expectResumeMatchesWhole(
    opts: TrainOptions,
    name: string,
    abortAt: { epoch: number; step: number },
    aborted: RegExp,
    {
      rewriteState,
      started = {},
      resumed: resumedWith = {},
    }: { rewriteState?: (stateFile: string) => void; started?: Partial<TrainOptions>; resumed?: Partial<TrainOptions> } = {},
  ): Promise<string> {
    const whole = await train({ ...opts, outDir: join(work, `${name}-whole`) });
    const outDir = join(work, `${name}-interrupted`);
    // 'step', the deprecated event name, which must keep working for one release.
    await expect(
      trainAbortedAt({ ...opts, ...started, outDir }, (e) => e.type === 'step' && e.epoch === abortAt.epoch && e.step === abortAt.step),
    ).rejects.toThrow(aborted);
    rewriteState?.(join(outDir, 'training-state', 'state.json'));
    const resumed = await train({ ...opts, ...resumedWith, resumeFrom: outDir });
    // A run that ends well leaves no training state (the last epoch's start, 3x the trained weights).
    for (const dir of [outDir, join(work, `${name}-whole`)])
      expect(readdirSync(dir).filter((n) => n.startsWith('training-state'))).toEqual([]);
    expect(resumed.history.map((h) => [h.trainLoss, h.validationLoss])).toEqual(whole.history.map((h) => [h.trainLoss, h.validationLoss]));
    expect(resumed.evaluations).toEqual(whole.evaluations);
    const a = params(whole.classifier);
    const b = params(resumed.classifier);
    expect([...b.keys()]).toEqual([...a.keys()]);
    for (const [key, v] of a) expect(b.get(key), key).toEqual(v);
    whole.classifier.dispose();
    resumed.classifier.dispose();
    return outDir;
  }

  it('resumes an interrupted run to the same final weights as an uninterrupted one', async () => {
    const opts = {
      ...base(),
      technique: 'full' as const,
      learningRate: 1e-3,
      epochs: 3,
      dropout: 0.2,
      schedule: 'linear' as const,
      warmupRatio: 0.2,
    };
    const outDir = await expectResumeMatchesWhole(
      opts,
      'full',
      { epoch: 2, step: 3 },
      /aborted at epoch 2, batch 4\/8; resume with the same options and resumeFrom/,
    );
    const saved = JSON.parse(readFileSync(join(outDir, 'history.json'), 'utf8'));
    expect(saved).toHaveLength(3);
  });

  it('resumes an interrupted LoRA run with adapter dropout to the same final weights', async () => {
    // Dropout masks are drawn inside the rewritten graph: the resumed process's first step must
    // draw them as the uninterrupted run's later steps do.
    const opts = {
      ...base(),
      technique: 'lora' as const,
      learningRate: 1e-2,
      epochs: 2,
      dropout: 0.2,
      lora: { rank: 4, alpha: 8, dropout: 0.3 },
    };
    await expectResumeMatchesWhole(
      opts,
      'lora',
      { epoch: 1, step: 5 },
      /aborted at epoch 1, batch 6\/8; resume with the same options and resumeFrom/,
    );
  });

  it('resumes an interrupted adapter run to the same final weights', async () => {
    const opts = {
      ...base(),
      technique: 'adapter' as const,
      learningRate: 1e-2,
      epochs: 2,
      dropout: 0.2,
      adapter: { size: 4, trainLayerNorm: true },
    };
    await expectResumeMatchesWhole(
      opts,
      'adapter',
      { epoch: 1, step: 5 },
      /aborted at epoch 1, batch 6\/8; resume with the same options and resumeFrom/,
    );
  });

  it('with gradient accumulation, stops at the next optimizer step and resumes to the same final weights', async () => {
    // Batches of 16, two per optimizer step: an abort after batch 3 (the first of step 2's pair)
    // takes effect before batch 5, where the saved state holds no half-accumulated gradient.
    const opts = { ...base(), batchSize: 16, gradientAccumulationSteps: 2, technique: 'full' as const, epochs: 2, dropout: 0.2 };
    await expectResumeMatchesWhole(
      opts,
      'accumulated',
      { epoch: 1, step: 3 },
      /aborted at epoch 1, batch 5\/16; resume with the same options and resumeFrom/,
    );
  });

  it('resumes a training state written before the batch/step renames', async () => {
    // States written before this release have no `skippedBatches` in their position (the one
    // field the renames added); such a state resumes to the uninterrupted run's result.
    const opts = { ...base(), technique: 'full' as const, epochs: 2, dropout: 0.2, evaluateEvery: 3 };
    const rewriteState = (file: string) => {
      const state = JSON.parse(readFileSync(file, 'utf8'));
      expect(state.position.skippedBatches).toEqual([]);
      delete state.position.skippedBatches;
      // Nor the run's options in their fingerprint (compared since): the rest is compared.
      expect(state.fingerprint.options.learningRate).toBe(1e-3);
      delete state.fingerprint.options;
      // Nor the contents (compared since).
      expect(Object.keys(state.fingerprint.contents).sort()).toEqual(["model's weights", 'tokenizer', 'training data', 'validation data']);
      delete state.fingerprint.contents;
      writeFileSync(file, JSON.stringify(state, null, 2) + '\n');
    };
    await expectResumeMatchesWhole(opts, 'old-state', { epoch: 1, step: 4 }, /aborted at epoch 1, batch 5\/8/, { rewriteState });
  });

  it('resumes with options given at what leaving them out means (the encoder at learningRate, class weights all 1), to the uninterrupted result', async () => {
    // The same run spelt two ways: the one given explicitly on resume, and the one whose state saved them as given.
    const opts = { ...base(), technique: 'full' as const, epochs: 2, dropout: 0.2 };
    const explicit = { encoderLearningRate: opts.learningRate, classWeights: [1, 1] };
    const abortAt = { epoch: 1, step: 4 };
    await expectResumeMatchesWhole(opts, 'explicit-on-resume', abortAt, /aborted at epoch 1, batch 5\/8/, { resumed: explicit });
    await expectResumeMatchesWhole(opts, 'explicit-in-state', abortAt, /aborted at epoch 1, batch 5\/8/, {
      started: explicit,
      // Saved as given, as every version saves them: the state compares by meaning, not by its spelling.
      rewriteState: (file) => expect(JSON.parse(readFileSync(file, 'utf8')).fingerprint.options).toMatchObject(explicit),
    });
  });

  it('refuses to resume a different run, naming what differs, and a run that has ended', async () => {
    const outDir = join(work, 'resume-refused');
    const opts: TrainOptions = { ...base(), epochs: 3, technique: 'full' };
    await expect(trainAbortedAt({ ...opts, outDir }, (e) => e.type === 'batch' && e.epoch === 1 && e.batch === 2)).rejects.toThrow(
      /aborted/,
    );
    await expect(train({ ...opts, resumeFrom: outDir, batchSize: 16 })).rejects.toThrow(
      /cannot resume .* settings differ \(.*batchSize: saved 32, now 16/,
    );
    // A run that ended well left no state to resume (it would have trained its last epoch again).
    await expect(train({ ...opts, resumeFrom: join(work, 'full-interrupted') })).rejects.toThrow(/holds no resumable training state/);
  });

  it('refuses to resume with other options than the run started with, naming each, and leaves the state to resume', async () => {
    // The state's tensors and AdamW moments continued under another learning rate or pooling would
    // end as no run of either options; another head width would fail copying the saved head.
    const outDir = join(work, 'resume-other-options');
    const opts: TrainOptions = { ...base(), epochs: 3, technique: 'full', outDir };
    await expect(trainAbortedAt(opts, (e) => e.type === 'batch' && e.epoch === 1 && e.batch === 2)).rejects.toThrow(/aborted/);
    await expect(train({ ...opts, resumeFrom: outDir, learningRate: 5e-4 })).rejects.toThrow(
      /cannot resume .* the run's settings differ \(learningRate: saved 0\.001, now 0\.0005\)$/,
    );
    // Another encoder learning rate, other class weights: named with both values ('unset': left out).
    await expect(train({ ...opts, resumeFrom: outDir, encoderLearningRate: 5e-4, classWeights: [1, 2] })).rejects.toThrow(
      /settings differ \(encoderLearningRate: saved unset, now 0\.0005; classWeights: saved unset, now \[1,2\]\)$/,
    );
    const refused = train({ ...opts, resumeFrom: outDir, pooling: 'mean', headHidden: 16 });
    await expect(refused).rejects.toThrow(/settings differ \(.*headHidden: saved 32, now 16/);
    await expect(refused).rejects.toThrow(/settings differ \(.*pooling: saved "cls", now "mean"/);
    // The same options on other texts (as many rows, one edited): refused by content, which no
    // option or row count shows.
    const edited = { texts: data.texts.map((t, i) => (i === 7 ? `${t} Not really.` : t)), labels: data.labels };
    await expect(train({ ...opts, resumeFrom: outDir, data: edited })).rejects.toThrow(
      /cannot resume .* the run's settings differ \(the training data differs\)$/,
    );
    // Refused before anything was touched: the same options still resume, to the end.
    const resumed = await train({ ...opts, resumeFrom: outDir });
    expect(resumed.history.map((h) => h.epoch)).toEqual([1, 2, 3]);
    resumed.classifier.dispose();
  });

  it('stops on a NaN loss naming epoch and batch, keeping the best checkpoint; or skips such steps', async () => {
    // Warmup makes step 1 a no-op (lr factor 0), so the evaluation after it is finite and saved;
    // then a learning rate of 1e30 blows the head up and the loss becomes NaN/Inf.
    const exploding = {
      ...base(),
      learningRate: 1e30,
      maxGradNorm: 0,
      warmupRatio: 0.5,
      schedule: 'constant' as const,
      evaluateEvery: 1,
      epochs: 1,
    };
    const outDir = join(work, 'nan');
    const stopped = await train({ ...exploding, outDir }).then(
      () => new Error('train() resolved'),
      (e: Error) => e,
    );
    expect(stopped).toMatchObject({
      name: 'NumericalError',
      message: expect.stringMatching(
        /training (loss|gradient norm) became (NaN|Infinity|-Infinity) at epoch 1, batch \d+ \(training rows \d+/,
      ),
    });
    // What to do next, and, in the same outDir, what a new run must find gone (a fresh run over an
    // unfinished run's state is refused).
    const next =
      `; the best checkpoint so far (epoch 1, step 1) is kept in ${outDir}; lower the learning rate, or set onNonFinite: 'skip', ` +
      `and start again (in ${outDir}: delete ${join(outDir, 'training-state')} first, which resumes only this run)`;
    expect(stopped.message.slice(-next.length)).toBe(next);
    const kept = await Classifier.load(outDir);
    expect(kept.config.metrics.step).toBe(1);
    const probabilities = await kept.predict(['a fine film']);
    expect(Number.isFinite(probabilities[0]!.probabilities.positive)).toBe(true);
    kept.dispose();

    // As the message says: the state deleted, the new run writes the same folder.
    rmSync(join(outDir, 'training-state'), { recursive: true });
    const skipped = await train({ ...exploding, onNonFinite: 'skip', outDir });
    expect(skipped.skippedBatches.length).toBeGreaterThan(0);
    expect(skipped.skippedBatches[0]).toMatchObject({ epoch: 1, reason: expect.stringMatching(/became/) });
    // The deprecated alias is the same list.
    expect(skipped.skippedSteps.length).toBeGreaterThan(0);
    expect(skipped.skippedSteps[0]).toMatchObject({ epoch: 1, reason: expect.stringMatching(/became/) });
    expect(skipped.skippedSteps).toEqual(skipped.skippedBatches);
    for (const [, t] of skipped.classifier.module.namedParameters()) expect(values(t).every(Number.isFinite)).toBe(true);
    skipped.classifier.dispose();
  });

  it('reports metrics and writes the HTML report', async () => {
    const outDir = join(work, 'report');
    const result = await train({ ...base(), outDir, report: true });
    expect(result.metrics.confusionMatrix.flat().reduce((a, b) => a + b, 0)).toBe(result.validationExamples);
    expect(result.metrics.accuracy).toBeCloseTo(result.best.validationAccuracy!, 10);
    const html = readFileSync(join(outDir, 'report.html'), 'utf8');
    expect(html).toContain('<svg');
    for (const label of result.labels) expect(html).toContain(label);
    result.classifier.dispose();
  });
});
