/**
 * loadClassifier() of a Hugging Face sequence classifier (lib/models/hf-sequence-classifier.ts): a
 * folder or Hub id whose config.json names a *ForSequenceClassification. Its probabilities against
 * the Python reference of transformers' math are checked for each family in
 * seq-classification-head.test.ts (each exported folder loaded back); here: a Hub id read from the
 * cache, evaluate(), the CLI, the classes of config.json, and the refusals.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProblemType } from '../lib/addon/binding.js';
import { loadBinding } from '../lib/addon/loader.js';
import type { Classifier, MultiLabelPrediction } from '../lib/classification/classifier.js';
import { gatherRows } from '../lib/data/batching.js';
import { exportHuggingFace, InputError, loadClassifier, ModelError, type TrainOptions, train } from '../lib/index.js';
import { loadEncoderSource } from '../lib/models/encoder-source.js';
import { sequenceClassifierLabels, sequenceClassifierProblem } from '../lib/models/hf-sequence-classifier.js';
import { asRows, demoTokenizer, makeHfFolder, PROBE_TEXTS, repoRoot, runPython, smallClassifierInputs } from './fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-hf-classifier-'));
/** The classifier trained here (head 'sequence-classification', BERT), and its export: a BertForSequenceClassification folder. */
let trained: Classifier;
let hfDir: string;
let data: { texts: string[]; labels: string[] };

beforeAll(async () => {
  const inputs = await smallClassifierInputs();
  data = inputs.data;
  const dir = join(work, 'trained');
  const result = await train({
    data,
    encoder: inputs.encoder,
    tokenizer: demoTokenizer,
    outDir: dir,
    epochs: 1,
    batchSize: 32,
    maxLength: 32,
    head: 'sequence-classification',
    technique: 'full',
    learningRate: 1e-3,
  });
  result.classifier.dispose();
  hfDir = join(work, 'hf');
  await exportHuggingFace({ classifier: dir, out: hfDir, heads: 4 });
  trained = await loadClassifier(dir);
}, 300_000);

afterAll(() => trained?.dispose());

const probabilities = async (c: Classifier, texts: readonly string[]) =>
  (await c.predict(texts)).map((p) => c.labels.map((l) => p.probabilities[l]!));

/** A copy of `from` as the Hugging Face cache holds repository `repoId` at one commit (refs/main → snapshots/<commit>/). */
function cacheRepo(cache: string, repoId: string, from: string): string {
  const commit = 'c0ffee'.padEnd(40, '0');
  const root = join(cache, `models--${repoId.replace('/', '--')}`);
  mkdirSync(join(root, 'refs'), { recursive: true });
  writeFileSync(join(root, 'refs', 'main'), commit);
  const snapshot = join(root, 'snapshots', commit);
  mkdirSync(snapshot, { recursive: true });
  for (const file of readdirSync(from)) copyFileSync(join(from, file), join(snapshot, file));
  return commit;
}

/** `fn` with the Hub read from `cache` alone (HF_HUB_OFFLINE: no request is made), the variables restored after. */
async function offlineFrom<T>(cache: string, fn: () => Promise<T>): Promise<T> {
  const saved = { HF_HUB_CACHE: process.env.HF_HUB_CACHE, HF_HUB_OFFLINE: process.env.HF_HUB_OFFLINE };
  process.env.HF_HUB_CACHE = cache;
  process.env.HF_HUB_OFFLINE = '1';
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** The Python reference of transformers' heads on `dir`'s folder (PROBE_TEXTS, given the classifier's own token rows): softmax probabilities and logits. */
async function reference(dir: string, c: Classifier<ProblemType>): Promise<{ probabilities: number[][]; logits: number[][] }> {
  const rows = gatherRows(
    await c.tokenizer.encodeBatchAsync(PROBE_TEXTS, c.config.maxLength),
    PROBE_TEXTS.map((_, i) => i),
  );
  const input = {
    mode: 'export',
    dir,
    input_ids: asRows(rows.inputIds, rows.seqLen),
    attention_mask: asRows(rows.attentionMask, rows.seqLen),
  };
  return JSON.parse(await runPython('test/python/seq_classification_reference.py', [], JSON.stringify(input)));
}

describe('a Hugging Face sequence classifier as a classifier', () => {
  it("a folder: id2label's classes, the family's head, the folder's max length; evaluate() reports what the trained classifier's does", async () => {
    const loaded = await loadClassifier(hfDir);
    try {
      expect(loaded.labels).toEqual(trained.labels);
      expect(loaded.config).toMatchObject({ head: 'sequence-classification', headFamily: 'bert', maxLength: 32, pooling: 'cls' });
      const own = await probabilities(trained, PROBE_TEXTS);
      const back = await probabilities(loaded, PROBE_TEXTS);
      expect(Math.max(...own.flatMap((row, r) => row.map((v, c) => Math.abs(v - back[r]![c]!))))).toBeLessThan(1e-6);
      const [a, b] = await Promise.all([trained.evaluate(data), loaded.evaluate(data)]);
      expect(b.predictions).toEqual(a.predictions);
      expect(Math.abs(b.loss - a.loss)).toBeLessThan(1e-6);
      expect(b.accuracy).toBe(a.accuracy);
    } finally {
      loaded.dispose();
    }
  });

  for (const family of ['bert', 'roberta', 'distilbert'] as const) {
    it(`${family}: a ForSequenceClassification folder as transformers writes it (a Python writer of its names) predicts the Python reference's probabilities (1e-5)`, async () => {
      const { dir } = await makeHfFolder({ layout: `${family}-seqcls` });
      const loaded = await loadClassifier(dir);
      try {
        expect(loaded.labels).toEqual(['negative', 'neutral', 'positive']);
        expect(loaded.config.headFamily).toBe(family);
        const ref = await reference(dir, loaded);
        const own = await probabilities(loaded, PROBE_TEXTS);
        expect(Math.max(...own.flatMap((row, r) => row.map((v, c) => Math.abs(v - ref.probabilities[r]![c]!))))).toBeLessThan(1e-5);
        // Not a degenerate comparison: the classes' probabilities differ, and differ between texts.
        expect(Math.max(...own[0]!) - Math.min(...own[0]!)).toBeGreaterThan(0.05);
        expect(Math.max(...own[0]!.map((p, c) => Math.abs(p - own[1]![c]!)))).toBeGreaterThan(1e-3);
      } finally {
        loaded.dispose();
      }
    });
  }

  it('an old save (transformers 2.x/3.x: pytorch_model.bin, LayerNorm.gamma/beta, a position_ids buffer) predicts as the same weights saved today', async () => {
    const [legacy, current] = await Promise.all([makeHfFolder({ layout: 'bert-seqcls-legacy' }), makeHfFolder({ layout: 'bert-seqcls' })]);
    expect(readdirSync(legacy.dir)).toContain('pytorch_model.bin');
    const [old, now] = [await loadClassifier(legacy.dir), await loadClassifier(current.dir)];
    try {
      expect(old.labels).toEqual(now.labels);
      const [a, b] = [await probabilities(old, PROBE_TEXTS), await probabilities(now, PROBE_TEXTS)];
      expect(Math.max(...a.flatMap((row, r) => row.map((v, c) => Math.abs(v - b[r]![c]!))))).toBeLessThan(1e-6);
      expect(Math.max(...a[0]!) - Math.min(...a[0]!)).toBeGreaterThan(0.05);
    } finally {
      old.dispose();
      now.dispose();
    }
  });

  it('a Hub id, from the Hugging Face cache with no request made: the same classifier, its repository and commit recorded', async () => {
    const cache = join(work, 'cache');
    const commit = cacheRepo(cache, 'org/tiny-sentiment', hfDir);
    const [fromHub, fromFolder] = await offlineFrom(cache, async () => [
      await loadClassifier('org/tiny-sentiment'),
      await loadClassifier(hfDir),
    ]);
    try {
      expect(fromHub.labels).toEqual(fromFolder.labels);
      expect(fromHub.config.encoder.source).toMatchObject({ kind: 'folder', repoId: 'org/tiny-sentiment', commit });
      expect(await probabilities(fromHub, PROBE_TEXTS)).toEqual(await probabilities(fromFolder, PROBE_TEXTS));
    } finally {
      fromHub.dispose();
      fromFolder.dispose();
    }
  });

  it('torch-bert predict --classifier takes the folder', async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [join(repoRoot, 'dist', 'cli.js'), 'predict', '--classifier', hfDir, '--json', PROBE_TEXTS[0]!],
      { encoding: 'utf8' },
    );
    // One JSON object per line.
    const prediction = JSON.parse(stdout.trim().split('\n')[0]!) as { label: string; probabilities: Record<string, number> };
    const [own] = await trained.predict([PROBE_TEXTS[0]!]);
    expect(prediction!.label).toBe(own!.label);
    for (const label of trained.labels) expect(Math.abs(prediction!.probabilities[label]! - own!.probabilities[label]!)).toBeLessThan(1e-6);
  });
});

describe('a sequence classifier as an encoder', () => {
  it('its head is left out, with the note naming its tensors; nothing of it is kept', async () => {
    const loaded = await loadEncoderSource(hfDir, { device: 'cpu', fallbackMaxLength: 32 });
    try {
      expect(loaded.classificationHead).toEqual([]);
      expect(loaded.notes).toContain(
        "the checkpoint's other heads are not part of the encoder and were left out: classifier.weight, classifier.bias",
      );
      expect(loaded.module.namedParameters().some(([name]) => name.includes('classifier'))).toBe(false);
    } finally {
      loaded.module.dispose();
    }
  });
});

describe("train() from a sequence classifier, head 'sequence-classification'", () => {
  /** train() on the exported folder, learning rate 0 (nothing moves: what the run starts from is what it saves). */
  const untrained = (name: string, extra: Partial<TrainOptions> = {}) =>
    train({
      data,
      encoder: hfDir,
      outDir: join(work, name),
      epochs: 1,
      batchSize: 32,
      maxLength: 32,
      head: 'sequence-classification',
      technique: 'full',
      learningRate: 0,
      ...extra,
    });

  it("the head starts from the checkpoint's: the run's classifier predicts what the checkpoint does, in either class order", async () => {
    const hf = await loadClassifier(hfDir);
    try {
      const expected = await probabilities(hf, PROBE_TEXTS);
      const same = await untrained('same-order');
      const reversed = await untrained('reversed', { labels: [...hf.labels].reverse() });
      try {
        expect(same.notes).toContain(`the head starts from the checkpoint's classification head (its classes ${hf.labels.join(', ')})`);
        expect(same.classifier.labels).toEqual(hf.labels);
        expect(reversed.classifier.labels).toEqual([...hf.labels].reverse());
        for (const run of [same, reversed]) {
          // By class name: the reversed run's output rows follow its class order.
          const got = (await run.classifier.predict(PROBE_TEXTS)).map((p) => hf.labels.map((l) => p.probabilities[l]!));
          expect(Math.max(...expected.flatMap((row, r) => row.map((v, c) => Math.abs(v - got[r]![c]!))))).toBeLessThan(1e-6);
        }
      } finally {
        same.classifier.dispose();
        reversed.classifier.dispose();
      }
    } finally {
      hf.dispose();
    }
  });

  it("classes other than the checkpoint's: the head starts initialised, and the notes say why", async () => {
    const other = { texts: data.texts, labels: data.labels.map((l) => `other-${l}`) };
    const run = await untrained('other-classes', { data: other });
    try {
      const theirs = trained.labels.join(', ');
      const ours = run.classifier.labels.join(', ');
      expect(run.notes).toContain(
        `the checkpoint's classification head classifies ${theirs}; this run's classes are ${ours}, so the head starts initialised (labels with the checkpoint's names would start it from the checkpoint's)`,
      );
      // Initialised as transformers does: another head than the checkpoint's.
      const hf = await loadClassifier(hfDir);
      try {
        const head = (c: Classifier) =>
          c.module
            .namedParameters()
            .find(([n]) => n === 'head.classifier.weight')![1]
            .toArray() as Float32Array;
        expect(Array.from(head(run.classifier))).not.toEqual(Array.from(head(hf)));
      } finally {
        hf.dispose();
      }
    } finally {
      run.classifier.dispose();
    }
  });
});

describe('regression and multi-label sequence classifiers (problem_type)', () => {
  it("regression (BERT): loaded only when asked for; predict()'s values and evaluate()'s loss and correlations are the reference's", async () => {
    const { dir } = await makeHfFolder({ layout: 'bert-seqcls', problemType: 'regression' });
    await expect(loadClassifier(dir)).rejects.toThrow(
      `${dir} is a regression model (problem_type regression), not a single-label classifier: load it with loadClassifier(dir, { problemType: 'regression' }), whose predict() gives values`,
    );
    const model = await loadClassifier(dir, { problemType: 'regression' });
    try {
      expect(model.problemType).toBe('regression');
      expect(model.config).toMatchObject({ labels: ['LABEL_0'], output: 'values', problemType: 'regression' });
      const { logits } = await reference(dir, model);
      const predictions = await model.predict(PROBE_TEXTS);
      predictions.forEach((p, i) => {
        expect(Math.abs(p.value - logits[i]![0]!)).toBeLessThan(1e-5);
        expect(p.values).toEqual({ LABEL_0: p.value });
      });
      // Not a degenerate comparison: the values differ between texts.
      expect(Math.abs(predictions[0]!.value - predictions[1]!.value)).toBeGreaterThan(1e-3);
      const targets = [0.5, -1, 2.25, 0];
      const result = await model.evaluate({ texts: PROBE_TEXTS, labels: targets });
      const mse = targets.reduce((sum, t, i) => sum + (logits[i]![0]! - t) ** 2, 0) / targets.length;
      expect(Math.abs(result.loss - mse)).toBeLessThan(1e-5 * Math.max(1, mse));
      expect(Math.abs(result.metrics.mse - mse)).toBeLessThan(1e-5 * Math.max(1, mse));
      expect(result.metrics.examples).toBe(4);
      expect(Array.from(result.values)).toEqual(predictions.map((p) => Math.fround(p.value)));
      // Spearman: the ranks of the values against those of the targets, from the reference's order.
      const rank = (xs: number[]) => xs.map((x) => xs.filter((y) => y < x).length + 1);
      const [rv, rt] = [rank(logits.map((l) => l[0]!)), rank(targets)];
      const d2 = rv.reduce((sum, r, i) => sum + (r - rt[i]!) ** 2, 0);
      expect(result.metrics.spearman).toBeCloseTo(1 - (6 * d2) / (4 * 15), 10);
      await expect(model.evaluate({ texts: PROBE_TEXTS, labels: ['0.5', 'high', '1', '2'] })).rejects.toThrow(
        "example 1: label 'high' is not a number a float32 holds; a regression model's labels are its target values",
      );
    } finally {
      model.dispose();
    }
  });

  it("multi-label (RoBERTa): a sigmoid per class as transformers' pipeline gives it, the classes at 0.5 or more; evaluate()'s loss is the reference's BCE", async () => {
    const { dir } = await makeHfFolder({ layout: 'roberta-seqcls', problemType: 'multi_label_classification' });
    await expect(loadClassifier(dir, { problemType: 'regression' })).rejects.toThrow(
      /is a multi-label classifier \(problem_type multi_label_classification\), not a regression model: load it with loadClassifier\(dir, \{ problemType: 'multi_label_classification' \}\)/,
    );
    const model = await loadClassifier(dir, { problemType: ['single_label_classification', 'multi_label_classification'] });
    try {
      expect(model.problemType).toBe('multi_label_classification');
      expect(model.config.output).toBe('logits');
      const { logits } = await reference(dir, model);
      const predictions = (await model.predict(PROBE_TEXTS)) as MultiLabelPrediction[];
      let applied = 0;
      predictions.forEach((p, i) => {
        const expected = logits[i]!.map((z) => 1 / (1 + Math.exp(-z)));
        expect(Math.max(...model.labels.map((l, c) => Math.abs(p.probabilities[l]! - expected[c]!)))).toBeLessThan(1e-5);
        expect(p.labels).toEqual(model.labels.filter((_, c) => expected[c]! >= 0.5));
        applied += p.labels.length;
      });
      // Not a degenerate comparison: some classes apply, not all.
      expect(applied).toBeGreaterThan(0);
      expect(applied).toBeLessThan(PROBE_TEXTS.length * 3);
      // evaluate(): the mean BCE of the reference's logits against each text's classes.
      const sets = [['negative'], ['neutral', 'positive'], [], model.labels];
      const evaluation = await model.evaluate({ texts: PROBE_TEXTS, labels: sets });
      const bce = sets.flatMap((set, i) =>
        model.labels.map((l, c) => {
          const z = logits[i]![c]!;
          return Math.max(z, 0) - (set.includes(l) ? z : 0) + Math.log1p(Math.exp(-Math.abs(z)));
        }),
      );
      expect(Math.abs(evaluation.loss - bce.reduce((a, b) => a + b) / bce.length)).toBeLessThan(1e-5);
      expect(evaluation.examples).toBe(4);
    } finally {
      model.dispose();
    }
  });

  it("torch-bert predict and eval print a regression model's values and metrics", async () => {
    const { dir } = await makeHfFolder({ layout: 'bert-seqcls', problemType: 'regression' });
    const csv = join(work, 'sts.csv');
    writeFileSync(csv, `text,label\n${PROBE_TEXTS.map((t, i) => `"${t}",${[0.5, -1, 2.25, 0][i]}`).join('\n')}\n`);
    const cli = (...args: string[]) =>
      promisify(execFile)(process.execPath, [join(repoRoot, 'dist', 'cli.js'), ...args], { encoding: 'utf8' }).then((r) => r.stdout);
    const model = await loadClassifier(dir, { problemType: 'regression' });
    try {
      const [own, evaluation] = [await model.predict(PROBE_TEXTS), await model.evaluate(csv)];
      const lines = (await cli('predict', '--classifier', dir, '--json', ...PROBE_TEXTS))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { text: string; value: number; values: Record<string, number> });
      expect(lines.map((l) => l.text)).toEqual(PROBE_TEXTS);
      for (const [i, l] of lines.entries()) expect(Math.abs(l.value - own[i]!.value)).toBeLessThan(1e-6);
      const table = await cli('predict', '--classifier', dir, PROBE_TEXTS[0]!);
      expect(table).toContain(own[0]!.value.toFixed(4));
      const json = JSON.parse(await cli('eval', '--classifier', dir, '--data', csv, '--json')) as {
        loss: number;
        metrics: Record<string, number>;
      };
      expect(Math.abs(json.loss - evaluation.loss)).toBeLessThan(1e-6);
      expect(json.metrics.pearson).toBeCloseTo(evaluation.metrics.pearson, 6);
      const text = await cli('eval', '--classifier', dir, '--data', csv);
      expect(text).toMatch(new RegExp(`spearman\\s+${evaluation.metrics.spearman.toFixed(4)}`));
    } finally {
      model.dispose();
    }
  });
});

describe("a sequence classifier's classes (config.json)", () => {
  const file = 'config.json';
  it("id2label's names by id, whatever the key order; transformers' LABEL_i where there is none", () => {
    expect(sequenceClassifierLabels({ id2label: { '1': 'pos', '0': 'neg' }, num_labels: 2 }, 2, file)).toEqual(['neg', 'pos']);
    expect(sequenceClassifierLabels({ problem_type: 'single_label_classification' }, 3, file)).toEqual(['LABEL_0', 'LABEL_1', 'LABEL_2']);
  });

  it("the problem type: config.json's problem_type, else regression for one output (as transformers' loss decides)", () => {
    expect(sequenceClassifierProblem({ problem_type: 'regression' }, 1, file)).toBe('regression');
    expect(sequenceClassifierProblem({}, 1, file)).toBe('regression');
    expect(sequenceClassifierProblem({}, 3, file)).toBe('single_label_classification');
    expect(sequenceClassifierProblem({ problem_type: 'multi_label_classification' }, 3, file)).toBe('multi_label_classification');
    expect(() => sequenceClassifierProblem({ problem_type: 'ordinal' }, 3, file)).toThrow(
      /problem_type "ordinal" is none of transformers'/,
    );
    expect(() => sequenceClassifierProblem({ problem_type: 'single_label_classification' }, 1, file)).toThrow(
      'config.json: problem_type single_label_classification with a head of one output; a classifier has two classes or more',
    );
  });

  it('refuses classes that disagree with the head or repeat a name', () => {
    const refusal = (config: Record<string, unknown>, classes: number) => {
      try {
        sequenceClassifierLabels(config, classes, file);
      } catch (err) {
        expect(err).toBeInstanceOf(ModelError);
        return (err as Error).message;
      }
      throw new Error('not refused');
    };
    expect(refusal({ num_labels: 3 }, 2)).toBe("config.json says num_labels 3, but the model's head has 2 outputs");
    expect(refusal({ id2label: { '0': 'a' } }, 2)).toMatch(
      /^config\.json: id2label must name each of the head's 2 classes by its id \(0 to 1\)/,
    );
    expect(refusal({ id2label: { '0': 'a', '2': 'b' } }, 2)).toMatch(/id2label must name each/);
    expect(refusal({ id2label: { '0': 'a', '1': 'a' } }, 2)).toMatch(/gives two classes the name 'a'/);
  });
});

describe('refusals', () => {
  it('a checkpoint that lacks a tensor of the head is refused, naming it', async () => {
    const broken = join(work, 'no-bias');
    mkdirSync(broken);
    for (const f of readdirSync(hfDir)) if (f !== 'model.safetensors') copyFileSync(join(hfDir, f), join(broken, f));
    const b = loadBinding();
    const { tensors } = b.readSafetensors(join(hfDir, 'model.safetensors'));
    b.writeSafetensors(
      join(broken, 'model.safetensors'),
      tensors.filter(([name]) => name !== 'classifier.bias'),
      { format: 'pt' },
    );
    for (const [, t] of tensors) t.dispose();
    const err = await loadClassifier(broken).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelError);
    expect((err as Error).message).toBe(`${broken}: its checkpoint lacks classifier.bias, a tensor of the head`);
  });

  it('a Hub id of an encoder (no sequence-classification head) says to train a classifier on it', async () => {
    const { dir } = await makeHfFolder({ layout: 'automodel' });
    const cache = join(work, 'cache-encoder');
    cacheRepo(cache, 'org/encoder', dir);
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { architectures?: string[] };
    const err = await offlineFrom(cache, () => loadClassifier('org/encoder')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(
      new RegExp(
        `^org/encoder@c0ffee0+ \\(.*\\) is a Hugging Face model without a sequence-classification head \\(architectures ${JSON.stringify(config.architectures ?? null).replace(/[[\]]/g, '\\$&')}\\): train a classifier on it`,
      ),
    );
  });
});
