/**
 * train() with `problemType: 'regression'` (Hugging Face's problem_type regression: one output,
 * MSELoss, Pearson and Spearman): parity with the plain-PyTorch reference trainer given the same
 * tokens and split, the saved model in Python and through loadClassifier/evaluate, a Hugging Face
 * regression model's head continued and exported, the CLI, and the refusals.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { InputError } from '../lib/addon/errors.js';
import { gatherRows } from '../lib/data/batching.js';
import { loadExamples } from '../lib/data/data.js';
import {
  Classifier,
  exportAdapterHub,
  exportHuggingFace,
  loadClassifier,
  regressionMetrics,
  type TrainResult,
  train,
} from '../lib/index.js';
import {
  classifierPtForward,
  demoReviews,
  demoTokenizer,
  INFORMATIVE_ENCODER,
  makeEncoder,
  makeHfFolder,
  PROBE_TEXTS,
  repoRoot,
} from './fixtures.js';
import { expectReferenceLosses, SMALL_RUN, smallReferenceRun, smallRunOptions } from './helpers/reference-runs.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-regression-'));

let encoder: string;
/** The demo reviews with a score each: 4 for a positive review, 1 for a negative one, plus a quarter per (row mod 3). */
let csv: string;
let texts: string[];
let scores: number[];

beforeAll(async () => {
  encoder = await makeEncoder(INFORMATIVE_ENCODER);
  const raw = await loadExamples(demoReviews);
  texts = raw.texts;
  scores = raw.labels!.map((l, i) => (l === 'positive' ? 4 : 1) + (i % 3) * 0.25);
  csv = join(work, 'scores.csv');
  const quote = (t: string) => `"${t.replace(/"/g, '""')}"`;
  writeFileSync(csv, `text,score\n${texts.map((t, i) => `${quote(t)},${scores[i]}`).join('\n')}\n`);
});

describe('parity with the plain-PyTorch reference trainer (MSELoss, one output)', () => {
  it('gives the reference losses and Pearson epoch by epoch; the kept model predicts what its classifier.pt gives in Python', async () => {
    const epochs = 3;
    const seed = 42;
    // The reference gets exactly our tokens and split (one stratum: a random split), then does the rest itself.
    const {
      tokenizer,
      split,
      epochs: reference,
    } = await smallReferenceRun(texts, (i) => scores[i]!, {
      encoder,
      numClasses: 1,
      problemType: 'regression',
      epochs,
      seed,
    });
    const outDir = join(work, 'parity');
    const ours: TrainResult<'regression'> = await train({
      data: { csv, labelColumn: 'score' },
      problemType: 'regression',
      ...smallRunOptions(encoder, epochs, seed),
      outDir,
      bestMetric: 'pearson',
    });
    try {
      expect(ours.labels).toEqual(['LABEL_0']);
      expect(ours.validationExamples).toBe(split.validation.length);
      // The encoder is informative: the scores are learned.
      expect(reference.at(-1)!.valPearson!).toBeGreaterThan(0.8);
      expectReferenceLosses(ours.history, reference);
      for (let e = 0; e < epochs; e++) {
        const [r, o] = [reference[e]!, ours.history[e]!];
        expect(Math.abs(o.validationPearson! - r.valPearson!)).toBeLessThan(0.02);
        // A regression run counts no accuracy.
        expect(o.trainAccuracy).toBeUndefined();
        expect(o.validationAccuracy).toBeUndefined();
      }
      // The kept epoch is the best by Pearson; its metrics are the result's.
      const best = ours.history.reduce((a, b) => (b.validationPearson! > a.validationPearson! ? b : a));
      expect(ours.best.epoch).toBe(best.epoch);
      expect(ours.metrics.pearson).toBeCloseTo(best.validationPearson!, 6);
      expect(ours.metrics.mse).toBeCloseTo(best.validationLoss, 5);

      const config = JSON.parse(readFileSync(join(outDir, 'config.json'), 'utf8'));
      expect(config).toMatchObject({ problemType: 'regression', output: 'values', labels: ['LABEL_0'], labelColumn: 'score' });
      expect(config.metrics.validationPearson).toBeCloseTo(best.validationPearson!, 10);
      // classifier.pt in Python: forward returns the values predict() gives.
      const rows = gatherRows(tokenizer.encodeBatch(PROBE_TEXTS, SMALL_RUN.maxLength), Int32Array.from(PROBE_TEXTS.keys()));
      const forward = await classifierPtForward(join(outDir, 'classifier.pt'), rows);
      const python = { attr: forward.problemType, values: forward.outputs.map((row) => row[0]!) };
      expect(python.attr).toBe('regression');
      const predictions = await ours.classifier.predict(PROBE_TEXTS);
      for (const [i, p] of predictions.entries()) expect(Math.abs(p.value - python.values[i]!)).toBeLessThan(1e-5);
      // Thresholds decide a multi-label classifier's classes; a regression model has none.
      await expect(ours.classifier.predict(PROBE_TEXTS, { threshold: 0.5 } as never)).rejects.toThrow(
        "predict(): threshold decides which classes of a multi-label classifier apply; this classifier's problem type is regression",
      );
      // Loaded back, evaluated on the training CSV's own column (config.json's labelColumn).
      const loaded = await loadClassifier(outDir, { problemType: 'regression' });
      try {
        const again = await loaded.evaluate({ texts: PROBE_TEXTS, labels: [4, 1, 2.5, 1] });
        const mse = [4, 1, 2.5, 1].reduce((s, t, i) => s + (python.values[i]! - t) ** 2, 0) / 4;
        expect(Math.abs(again.loss - mse)).toBeLessThan(1e-5 * Math.max(1, mse));
        const whole = await loaded.evaluate(csv);
        expect(whole.examples).toBe(texts.length);
        expect(whole.metrics.pearson).toBeGreaterThan(0.8);
      } finally {
        loaded.dispose();
      }
    } finally {
      ours.classifier.dispose();
    }
  });
});

describe('several outputs: a label column per output', () => {
  it("trains as the reference does with a target per output; evaluate() reads the columns and gives each output's metrics", async () => {
    const [epochs, seed] = [2, 5];
    // Two targets per review: its score, and its length in words / 10.
    const lengths = texts.map((t) => t.split(/\s+/).length / 10);
    const columns = join(work, 'two-outputs.csv');
    const quote = (t: string) => `"${t.replace(/"/g, '""')}"`;
    writeFileSync(columns, `length,text,score\n${texts.map((t, i) => `${lengths[i]},${quote(t)},${scores[i]}`).join('\n')}\n`);
    const { tokenizer, epochs: reference } = await smallReferenceRun(texts, (i) => [scores[i]!, lengths[i]!], {
      encoder,
      numClasses: 2,
      problemType: 'regression',
      epochs,
      seed,
    });
    const outDir = join(work, 'two-outputs');
    const ours = await train({
      data: { csv: columns, labelColumns: ['score', 'length'] },
      problemType: 'regression',
      ...smallRunOptions(encoder, epochs, seed),
      outDir,
    });
    try {
      // The outputs are the columns, in their order; the loss is MSELoss over both.
      expect(ours.labels).toEqual(['score', 'length']);
      expectReferenceLosses(ours.history, reference);
      // Each output's r, averaged.
      for (const [e, o] of ours.history.entries()) expect(Math.abs(o.validationPearson! - reference[e]!.valPearson!)).toBeLessThan(0.02);
      expect(ours.metrics.perOutput!.map((m) => m.output)).toEqual(['score', 'length']);
      expect(ours.metrics.pearson).toBeCloseTo((ours.metrics.perOutput![0]!.pearson + ours.metrics.perOutput![1]!.pearson) / 2, 12);
      const config = JSON.parse(readFileSync(join(outDir, 'config.json'), 'utf8'));
      expect(config).toMatchObject({ labels: ['score', 'length'], labelColumns: ['score', 'length'] });
      // evaluate() reads config.json's columns; each output's Pearson is the Python forward's.
      const rows = gatherRows(tokenizer.encodeBatch(texts, SMALL_RUN.maxLength), Int32Array.from(texts.keys()));
      const python = (await classifierPtForward(join(outDir, 'classifier.pt'), rows)).outputs;
      const loaded = await loadClassifier(outDir, { problemType: 'regression' });
      try {
        const evaluation = await loaded.evaluate(columns);
        for (const [k, targets] of [scores, lengths].entries()) {
          const expected = regressionMetrics(
            Float32Array.from(python, (row) => row[k]!),
            Float32Array.from(targets),
          );
          expect(Math.abs(evaluation.metrics.perOutput![k]!.pearson - expected.pearson)).toBeLessThan(1e-5);
          expect(Math.abs(evaluation.metrics.perOutput![k]!.mse - expected.mse)).toBeLessThan(1e-5);
        }
        // One label column for a model of two outputs: a target per output is needed.
        await expect(loaded.evaluate({ csv, labelColumn: 'score' })).rejects.toThrow(
          `${csv}: a regression model of 2 outputs (score, length) reads a target per output: name their columns with labelColumns (--label-columns)`,
        );
        // The CLI: a column per output, the values predict() gives; eval's row per output.
        const cli = (...args: string[]) =>
          promisify(execFile)(process.execPath, [join(repoRoot, 'dist', 'cli.js'), ...args], { encoding: 'utf8' }).then((r) => r.stdout);
        const printed = (await cli('predict', '--classifier', outDir, PROBE_TEXTS[0]!)).split('\n');
        const [predicted] = await loaded.predict([PROBE_TEXTS[0]!]);
        expect(printed[0]).toMatch(/^\s*score\s+length\s+text$/);
        expect(printed[2]).toMatch(new RegExp(`^\\s*${predicted!.values.score!.toFixed(4)}\\s+${predicted!.values.length!.toFixed(4)}\\s`));
        const table = await cli('eval', '--classifier', outDir, '--data', columns);
        expect(table).toMatch(new RegExp(`^length\\s+${evaluation.metrics.perOutput![1]!.mse.toFixed(4)}\\s`, 'm'));
        await expect(loaded.evaluate({ csv: columns, labelColumns: ['score'] })).rejects.toThrow(
          `${columns}: the label columns must be the outputs (score, length), one column each: no column for 'length'`,
        );
      } finally {
        loaded.dispose();
      }
    } finally {
      ours.classifier.dispose();
    }
  });
});

describe("a Hugging Face regression model's head, continued (head 'sequence-classification')", () => {
  it("starts from the checkpoint's head (learning rate 0: the run predicts what the checkpoint does); the export says problem_type regression", async () => {
    const { dir } = await makeHfFolder({ layout: 'bert-seqcls', problemType: 'regression' });
    const hf = await loadClassifier(dir, { problemType: 'regression' });
    const outDir = join(work, 'continued');
    const run = await train({
      data: { texts: texts.slice(0, 64), labels: scores.slice(0, 64) },
      problemType: 'regression',
      encoder: dir,
      outDir,
      epochs: 1,
      batchSize: 32,
      maxLength: 32,
      head: 'sequence-classification',
      technique: 'full',
      learningRate: 0,
    });
    try {
      expect(run.notes).toContain("the head starts from the checkpoint's regression head");
      const [expected, got] = [await hf.predict(PROBE_TEXTS), await run.classifier.predict(PROBE_TEXTS)];
      for (const [i, p] of got.entries()) expect(Math.abs(p.value - expected[i]!.value)).toBeLessThan(1e-6);
      // Not a degenerate comparison: the values differ between texts.
      expect(Math.abs(got[0]!.value - got[1]!.value)).toBeGreaterThan(1e-3);
      const exported = join(work, 'continued-hf');
      await exportHuggingFace({ classifier: outDir, out: exported });
      const hfConfig = JSON.parse(readFileSync(join(exported, 'config.json'), 'utf8'));
      expect(hfConfig).toMatchObject({ problem_type: 'regression', num_labels: 1, id2label: { '0': 'LABEL_0' } });
      const back = await loadClassifier(exported, { problemType: 'regression' });
      try {
        const values = await back.predict(PROBE_TEXTS);
        for (const [i, p] of values.entries()) expect(Math.abs(p.value - got[i]!.value)).toBeLessThan(1e-5);
      } finally {
        back.dispose();
      }
      // A single-label run from the same checkpoint starts its head initialised, and says why.
      const single = await train({
        data: { texts: texts.slice(0, 64), labels: scores.slice(0, 64).map((s) => (s > 2 ? 'high' : 'low')) },
        encoder: dir,
        epochs: 1,
        batchSize: 32,
        maxLength: 32,
        head: 'sequence-classification',
        technique: 'full',
        learningRate: 0,
      });
      single.classifier.dispose();
      expect(single.notes).toContain(
        "the checkpoint's classification head was not used (it is a regression head; this run's problem type is single_label_classification); the head starts initialised",
      );
    } finally {
      hf.dispose();
      run.classifier.dispose();
    }
  });
});

describe('LoRA and bottleneck adapters, loaded back; the exports', () => {
  for (const technique of ['lora', 'adapter'] as const) {
    it(`${technique}: loadAdapters rebuilds the regression model (its values), asked for by problemType; AdapterHub refuses it, naming the Hugging Face export`, async () => {
      const outDir = join(work, technique);
      const run = await train({
        data: { texts: texts.slice(0, 96), labels: scores.slice(0, 96) },
        problemType: 'regression',
        technique,
        encoder,
        tokenizer: demoTokenizer,
        outDir,
        epochs: 1,
        ...SMALL_RUN,
      });
      try {
        await expect(Classifier.loadAdapters(outDir, { encoder })).rejects.toThrow(
          `${outDir} is a regression model (problem_type regression), not a single-label classifier: load it with Classifier.loadAdapters(dir, { encoder, problemType: 'regression' })`,
        );
        const unmerged = await Classifier.loadAdapters(outDir, { encoder, problemType: 'regression' });
        try {
          const [a, b] = [await run.classifier.predict(PROBE_TEXTS), await unmerged.predict(PROBE_TEXTS)];
          for (const [i, p] of b.entries()) expect(Math.abs(p.value - a[i]!.value)).toBeLessThan(1e-5);
          // Not a degenerate comparison: the values differ between texts.
          expect(Math.abs(a[0]!.value - a[1]!.value)).toBeGreaterThan(1e-3);
        } finally {
          unmerged.dispose();
        }
        await expect(exportAdapterHub({ classifier: outDir, out: join(work, `${technique}-adapterhub`) })).rejects.toThrow(
          /it is a regression model, and AdapterHub's format here holds single-label classifiers; export it with exportHuggingFace/,
        );
      } finally {
        run.classifier.dispose();
      }
    });
  }
});

describe('text pairs, resumed runs', () => {
  it("pairs (STS-B's shape): each text's second text read, the segments the encoder's; predict() needs the pairs", async () => {
    const pairs = texts.slice(0, 96).map((_, i) => texts[(i + 7) % 96]!);
    const run = await train({
      data: { texts: texts.slice(0, 96), pairs, labels: scores.slice(0, 96) },
      problemType: 'regression',
      technique: 'full',
      encoder: (await makeHfFolder({ layout: 'bert-seqcls', problemType: 'regression' })).dir,
      head: 'sequence-classification',
      epochs: 1,
      batchSize: 32,
      maxLength: 48,
      learningRate: 1e-4,
    });
    try {
      expect(run.classifier.config.input).toBe('text-pair');
      const paired = await run.classifier.predict(PROBE_TEXTS, { pairs: [...PROBE_TEXTS].reverse() });
      const other = await run.classifier.predict(PROBE_TEXTS, { pairs: PROBE_TEXTS });
      // The second texts move the values.
      expect(Math.max(...paired.map((p, i) => Math.abs(p.value - other[i]!.value)))).toBeGreaterThan(1e-3);
      await expect(run.classifier.predict(PROBE_TEXTS)).rejects.toThrow(/trained on text pairs/);
    } finally {
      run.classifier.dispose();
    }
  });

  it('a run stopped after its first epoch and resumed ends as the uninterrupted run does (history and weights)', async () => {
    const options = {
      data: { csv, labelColumn: 'score' },
      problemType: 'regression',
      encoder,
      tokenizer: demoTokenizer,
      epochs: 2,
      ...SMALL_RUN,
    } as const;
    const whole = await train({ ...options, outDir: join(work, 'whole') });
    const outDir = join(work, 'stopped');
    const controller = new AbortController();
    await expect(
      train({ ...options, outDir, signal: controller.signal, onProgress: (e) => e.type === 'epoch' && controller.abort() }),
    ).rejects.toThrow(/training aborted/);
    // The state keeps the problem type: resumed as a classifier, the run is refused, naming it.
    await expect(train({ ...options, problemType: 'single_label_classification', resumeFrom: outDir })).rejects.toThrow(/problemType/);
    const resumed = await train({ ...options, resumeFrom: outDir });
    try {
      expect(resumed.history.map((h) => [h.trainLoss, h.validationLoss, h.validationPearson])).toEqual(
        whole.history.map((h) => [h.trainLoss, h.validationLoss, h.validationPearson]),
      );
      const [a, b] = [await whole.classifier.predict(PROBE_TEXTS), await resumed.classifier.predict(PROBE_TEXTS)];
      for (const [i, p] of b.entries()) expect(p.value).toBe(a[i]!.value);
    } finally {
      whole.classifier.dispose();
      resumed.classifier.dispose();
    }
  });
});

describe('torch-bert train --problem-type regression', () => {
  it("prints the epochs' Pearson and Spearman and the kept weights' errors and correlations", async () => {
    const outDir = join(work, 'cli');
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        join(repoRoot, 'dist', 'cli.js'),
        'train',
        '--data',
        csv,
        '--label-column',
        'score',
        '--problem-type',
        'regression',
        '--model',
        encoder,
        '--tokenizer',
        demoTokenizer,
        '--out',
        outDir,
        '--epochs',
        '1',
        '--max-length',
        '48',
        '--json',
      ],
      { encoding: 'utf8' },
    );
    const result = JSON.parse(stdout.trim().split('\n').at(-1)!) as {
      history: Array<Record<string, number>>;
      metrics: Record<string, number>;
    };
    expect(Object.keys(result.history[0]!)).toEqual(
      expect.arrayContaining(['trainLoss', 'validationLoss', 'validationPearson', 'validationSpearman']),
    );
    expect(result.history[0]!.validationAccuracy).toBeUndefined();
    expect(result.metrics.pearson).toBeCloseTo(result.history[0]!.validationPearson!, 6);
    const loaded = await loadClassifier(outDir, { problemType: 'regression' });
    loaded.dispose();
  });
});

describe('refusals', () => {
  const base = { encoder: 'unused.pt', tokenizer: demoTokenizer, problemType: 'regression' } as const;
  it('options of classes, a metric of classification, and a label that is not a number', async () => {
    await expect(train({ ...base, data: csv, classWeights: 'balanced' })).rejects.toThrow(
      "classWeights cannot be used with problemType 'regression': its labels are values, not classes",
    );
    await expect(train({ ...base, data: csv, labelSmoothing: 0.1, fewShot: 4 })).rejects.toThrow(/^labelSmoothing, fewShot cannot be used/);
    await expect(train({ ...base, data: csv, bestMetric: 'accuracy' })).rejects.toThrow(
      "bestMetric must be one of loss, pearson, spearman; got 'accuracy'",
    );
    await expect(train({ data: csv, encoder: 'unused.pt', bestMetric: 'pearson' })).rejects.toThrow(
      "bestMetric must be one of loss, accuracy, macroF1; got 'pearson'",
    );
    await expect(train({ ...base, data: csv, problemType: 'ordinal' as never })).rejects.toThrow(
      "problemType must be one of single_label_classification, regression, multi_label_classification; got 'ordinal'",
    );
    await expect(train({ ...base, encoder, data: { texts: ['a', 'b', 'c'], labels: [1, 'much', 2] } })).rejects.toThrow(
      "example 1: label 'much' is not a number a float32 holds; a regression model's labels are its target values",
    );
    await expect(train({ ...base, encoder, data: { texts: ['a', 'b'], labels: [1, Number.NaN] } })).rejects.toThrow(InputError);
  });
});
