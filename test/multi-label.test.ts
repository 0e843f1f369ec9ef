/**
 * train() with `problemType: 'multi_label_classification'` (Hugging Face's problem_type: a sigmoid
 * per class, BCEWithLogitsLoss): parity with the plain-PyTorch reference trainer given the same
 * tokens and split, the saved model in Python and through loadClassifier/evaluate, the export, the
 * CLI, and the refusals.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { gatherRows } from '../lib/data/batching.js';
import { loadExamples } from '../lib/data/data.js';
import { exportHuggingFace, loadClassifier, type TrainResult, train } from '../lib/index.js';
import { classifierPtForward, demoReviews, demoTokenizer, INFORMATIVE_ENCODER, makeEncoder, PROBE_TEXTS, repoRoot } from './fixtures.js';
import { expectReferenceLosses, SMALL_RUN, smallReferenceRun, smallRunOptions } from './helpers/reference-runs.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-multi-label-'));
/** The classes, sorted as inferred from the data. */
const CLASSES = ['long', 'negative', 'positive'];

let encoder: string;
let texts: string[];
/** Each review's classes: its sentiment, and 'long' for more than 10 words (the reviews have 5 to 16). */
let sets: string[][];
let csv: string;
/** The same examples with a 0/1 column per class (Jigsaw's layout); some cells written true/false, as pandas writes booleans. */
let columnsCsv: string;

beforeAll(async () => {
  encoder = await makeEncoder(INFORMATIVE_ENCODER);
  const raw = await loadExamples(demoReviews);
  texts = raw.texts;
  sets = raw.labels!.map((sentiment, i) => [sentiment, ...(texts[i]!.split(/\s+/).length > 10 ? ['long'] : [])]);
  csv = join(work, 'tags.csv');
  const quote = (t: string) => `"${t.replace(/"/g, '""')}"`;
  writeFileSync(csv, `text,tags\n${texts.map((t, i) => `${quote(t)},${quote(sets[i]!.join(', '))}`).join('\n')}\n`);
  columnsCsv = join(work, 'columns.csv');
  const cell = (applies: boolean, i: number) => (i % 7 === 0 ? (applies ? 'True' : 'false') : applies ? '1' : '0');
  writeFileSync(
    columnsCsv,
    `id,positive,text,long,negative,spam\n${texts
      .map((t, i) =>
        [
          i,
          cell(sets[i]!.includes('positive'), i),
          quote(t),
          cell(sets[i]!.includes('long'), i),
          cell(sets[i]!.includes('negative'), i),
          0,
        ].join(','),
      )
      .join('\n')}\n`,
  );
});

/** Multi-hot rows of `CLASSES`. */
const multiHot = (rows: string[][]) => rows.map((set) => CLASSES.map((c) => (set.includes(c) ? 1 : 0)));

describe('parity with the plain-PyTorch reference trainer (BCEWithLogitsLoss, a sigmoid per class)', () => {
  it("gives the reference losses and subset accuracy epoch by epoch; the kept model's classifier.pt returns the logits predict() reads", async () => {
    const epochs = 3;
    const seed = 42;
    expect(sets.filter((s) => s.includes('long')).length).toBeGreaterThan(20);
    const {
      tokenizer,
      split,
      epochs: reference,
    } = await smallReferenceRun(texts, (i) => multiHot([sets[i]!])[0], {
      encoder,
      numClasses: CLASSES.length,
      problemType: 'multi_label_classification',
      epochs,
      seed,
    });
    const outDir = join(work, 'parity');
    const ours: TrainResult<'multi_label_classification'> = await train({
      data: { csv, labelColumn: 'tags' },
      problemType: 'multi_label_classification',
      ...smallRunOptions(encoder, epochs, seed),
      outDir,
    });
    try {
      expect(ours.labels).toEqual(CLASSES);
      expect(ours.validationExamples).toBe(split.validation.length);
      // The sentiments are learned: most validation examples have every class right.
      expect(reference.at(-1)!.valAccuracy!).toBeGreaterThan(0.6);
      expectReferenceLosses(ours.history, reference);
      for (let e = 0; e < epochs; e++) {
        const [r, o] = [reference[e]!, ours.history[e]!];
        expect(Math.abs(o.validationAccuracy! - r.valAccuracy!)).toBeLessThanOrEqual(0.015);
        // A multi-label step predicts no one class: no training accuracy is counted.
        expect(o.trainAccuracy).toBeUndefined();
      }
      expect(ours.metrics.accuracy).toBeCloseTo(ours.best.validationAccuracy!, 10);
      expect(ours.metrics.perClass.map((c) => c.label)).toEqual(CLASSES);

      const config = JSON.parse(readFileSync(join(outDir, 'config.json'), 'utf8'));
      expect(config).toMatchObject({ problemType: 'multi_label_classification', output: 'logits', labels: CLASSES, labelColumn: 'tags' });
      const rows = gatherRows(tokenizer.encodeBatch(PROBE_TEXTS, SMALL_RUN.maxLength), Int32Array.from(PROBE_TEXTS.keys()));
      const forward = await classifierPtForward(join(outDir, 'classifier.pt'), rows);
      const python = { attr: forward.problemType, sigmoid: forward.outputs.map((row) => row.map((z) => 1 / (1 + Math.exp(-z)))) };
      expect(python.attr).toBe('multi_label_classification');
      const predictions = await ours.classifier.predict(PROBE_TEXTS);
      for (const [i, p] of predictions.entries()) {
        expect(Math.max(...CLASSES.map((c, k) => Math.abs(p.probabilities[c]! - python.sigmoid[i]![k]!)))).toBeLessThan(1e-5);
        expect(p.labels).toEqual(CLASSES.filter((_, k) => python.sigmoid[i]![k]! >= 0.5));
      }
      // Loaded back and evaluated on the training CSV (config.json's label column, comma-separated
      // cells): the loss is the BCE of the Python sigmoids on the probe texts' classes.
      const loaded = await loadClassifier(outDir, { problemType: 'multi_label_classification' });
      try {
        const probeSets = [['positive'], ['negative', 'long'], [], ['positive']];
        const evaluation = await loaded.evaluate({ texts: PROBE_TEXTS, labels: probeSets });
        const targets = multiHot(probeSets);
        const bce =
          -targets
            .flatMap((row, i) => row.map((t, k) => t * Math.log(python.sigmoid[i]![k]!) + (1 - t) * Math.log(1 - python.sigmoid[i]![k]!)))
            .reduce((a, b) => a + b) /
          (4 * CLASSES.length);
        expect(Math.abs(evaluation.loss - bce)).toBeLessThan(1e-5);
        const exact = targets.filter((row, i) => row.every((t, k) => (python.sigmoid[i]![k]! >= 0.5 ? 1 : 0) === t)).length;
        expect(evaluation.metrics.accuracy).toBe(exact / 4);
        const whole = await loaded.evaluate(csv);
        expect(whole.examples).toBe(texts.length);
        expect(whole.metrics.accuracy).toBeGreaterThan(0.6);

        // Thresholds other than 0.5: one for every class, or one per class by name.
        const perClass = { long: 0.8, negative: 0.3, positive: 0.6 };
        for (const threshold of [0.3, 0.7, perClass]) {
          const at = CLASSES.map((c) => (typeof threshold === 'number' ? threshold : perClass[c as keyof typeof perClass]));
          const thresholded = await loaded.predict(PROBE_TEXTS, { threshold });
          for (const [i, p] of thresholded.entries()) expect(p.labels).toEqual(CLASSES.filter((_, k) => python.sigmoid[i]![k]! >= at[k]!));
          const scored = await loaded.evaluate({ texts: PROBE_TEXTS, labels: probeSets }, { threshold });
          const right = targets.filter((row, i) => row.every((t, k) => (python.sigmoid[i]![k]! >= at[k]! ? 1 : 0) === t)).length;
          expect(scored.metrics.accuracy).toBe(right / 4);
          expect(scored.loss).toBe(evaluation.loss);
        }
        // The thresholds differ somewhere from 0.5's predictions, or the loop above proves nothing.
        const at05 = (await loaded.predict(PROBE_TEXTS)).map((p) => p.labels);
        const at03 = (await loaded.predict(PROBE_TEXTS, { threshold: 0.3 })).map((p) => p.labels);
        expect(at03).not.toEqual(at05);
        await expect(loaded.predict(PROBE_TEXTS, { threshold: 1.5 })).rejects.toThrow('threshold must be a number in [0, 1]; got 1.5');
        await expect(loaded.evaluate(csv, { threshold: { long: 0.5, negative: 0.5, spam: 0.5 } })).rejects.toThrow(
          'threshold names every class once (long, negative, positive): missing positive; spam is not a class',
        );
      } finally {
        loaded.dispose();
      }
    } finally {
      ours.classifier.dispose();
    }
  });
});

describe("positiveWeights: BCEWithLogitsLoss's pos_weight", () => {
  it("'balanced' gives the reference's losses with each class's negatives / positives as pos_weight; config.json records the weights", async () => {
    const [epochs, seed] = [2, 11];
    const { split, epochs: reference } = await smallReferenceRun(texts, (i) => multiHot([sets[i]!])[0], {
      encoder,
      numClasses: CLASSES.length,
      problemType: 'multi_label_classification',
      positiveWeights: 'balanced',
      epochs,
      seed,
    });
    const outDir = join(work, 'positive-weights');
    const ours = await train({
      data: { csv, labelColumn: 'tags' },
      problemType: 'multi_label_classification',
      positiveWeights: 'balanced',
      ...smallRunOptions(encoder, epochs, seed),
      outDir,
    });
    try {
      // Each class's negatives / positives among the training rows: 'long' is the rare one.
      const trained = Array.from(split.train, (i) => multiHot([sets[i]!])[0]!);
      const balanced = CLASSES.map((_, k) => {
        const positives = trained.filter((row) => row[k] === 1).length;
        return (trained.length - positives) / positives;
      });
      expect(balanced[0]).toBeGreaterThan(1.5);
      const config = JSON.parse(readFileSync(join(outDir, 'config.json'), 'utf8'));
      for (const [k, w] of balanced.entries()) expect(config.hyperparameters.positiveWeights[k]).toBeCloseTo(w, 5);
      expectReferenceLosses(ours.history, reference);
    } finally {
      ours.classifier.dispose();
    }
  });

  it('are refused for other problem types, and when not one finite weight ≥ 0 per class', async () => {
    const base = { encoder, tokenizer: demoTokenizer, outDir: join(work, 'never') } as const;
    await expect(train({ ...base, data: demoReviews, positiveWeights: 'balanced' })).rejects.toThrow(
      "positiveWeights weigh a multi-label run's positive targets (problemType 'multi_label_classification'); a single-label run weighs its classes with classWeights",
    );
    await expect(
      train({ ...base, data: { csv, labelColumn: 'tags' }, problemType: 'multi_label_classification', positiveWeights: [1, 2] }),
    ).rejects.toThrow("positiveWeights must be 'balanced' or 3 finite numbers ≥ 0 (one per class: long, negative, positive)");
  });
});

describe('label columns: one 0/1 column per class', () => {
  it('train the run that the same sets as arrays train; config.json records the columns, which evaluate() then reads', async () => {
    const order = ['positive', 'negative', 'long'];
    const common = {
      problemType: 'multi_label_classification',
      encoder,
      tokenizer: demoTokenizer,
      epochs: 1,
      seed: 7,
      ...SMALL_RUN,
    } as const;
    const fromColumns = await train({ ...common, data: { csv: columnsCsv, labelColumns: order }, outDir: join(work, 'columns') });
    const fromArrays = await train({ ...common, data: { texts, labels: sets }, labels: order, outDir: join(work, 'columns-arrays') });
    // JSON Lines, each label a list of names, or of class ids by `labels` (as datasets' to_json() writes a Sequence feature).
    const withoutTime = (history: Array<{ seconds: number }>) => history.map(({ seconds: _, ...epoch }) => epoch);
    for (const [name, label] of [
      ['names', (set: string[]) => set],
      ['ids', (set: string[]) => set.map((c) => order.indexOf(c))],
    ] as const) {
      const jsonl = join(work, `sets-${name}.jsonl`);
      writeFileSync(jsonl, texts.map((text, i) => JSON.stringify({ text, labels: label(sets[i]!) })).join('\n'));
      const fromJson = await train({
        ...common,
        data: { csv: jsonl, labelColumn: 'labels' },
        labels: order,
        outDir: join(work, `json-${name}`),
      });
      fromJson.classifier.dispose();
      expect(withoutTime(fromJson.history), name).toEqual(withoutTime(fromArrays.history));
    }
    try {
      // The columns are the classes, in their order (not sorted, as inferred classes are).
      expect(fromColumns.labels).toEqual(order);
      expect(fromColumns.history.map((e) => [e.trainLoss, e.validationLoss, e.validationAccuracy])).toEqual(
        fromArrays.history.map((e) => [e.trainLoss, e.validationLoss, e.validationAccuracy]),
      );
      const config = JSON.parse(readFileSync(join(work, 'columns', 'config.json'), 'utf8'));
      expect(config).toMatchObject({ labels: order, labelColumns: order, textColumn: 'text' });
      expect(config.labelColumn).toBeUndefined();
      const loaded = await loadClassifier(join(work, 'columns'), { problemType: 'multi_label_classification' });
      try {
        const [byColumns, bySets] = [await loaded.evaluate(columnsCsv), await loaded.evaluate({ texts, labels: sets })];
        expect(byColumns.examples).toBe(texts.length);
        expect(byColumns.loss).toBe(bySets.loss);
        expect(byColumns.metrics).toEqual(bySets.metrics);
        // The same columns named in any order give the same targets; the comma-separated cells too.
        const reordered = await loaded.evaluate({ csv: columnsCsv, labelColumns: ['long', 'negative', 'positive'] });
        expect(reordered.loss).toBe(bySets.loss);
        expect((await loaded.evaluate({ csv, labelColumn: 'tags' })).loss).toBe(bySets.loss);
        // Columns that are not the classes: a class without one would read as never applying.
        await expect(loaded.evaluate({ csv: columnsCsv, labelColumns: ['positive', 'negative'] })).rejects.toThrow(
          `${columnsCsv}: the label columns must be the classes (positive, negative, long), one column each: no column for 'long'`,
        );
        await expect(loaded.evaluate({ csv: columnsCsv, labelColumns: ['positive', 'negative', 'long', 'spam'] })).rejects.toThrow(
          "one column each: 'spam' is not a class",
        );
      } finally {
        loaded.dispose();
      }
    } finally {
      fromColumns.classifier.dispose();
      fromArrays.classifier.dispose();
    }
  });

  it('refuses a cell other than 1/0 (true/false), both label options, a column named twice, columns for other problem types', async () => {
    const bad = join(work, 'bad-cell.csv');
    writeFileSync(bad, 'text,a,b\nfirst text,1,0\nsecond text,0,yes\n');
    await expect(loadExamples({ csv: bad, labelColumns: ['a', 'b'] }, { labelKind: 'set' })).rejects.toThrow(
      `${bad} line 3: column 'b' holds 'yes'; a label column's cell says whether its class applies: 1 or 0 (true or false)`,
    );
    await expect(loadExamples({ csv: bad, labelColumns: ['a', 'c'] }, { labelKind: 'set' })).rejects.toThrow(
      `data file ${bad} has no column 'c' (its columns: text, a, b); choose the label columns with labelColumns / --label-columns`,
    );
    await expect(loadExamples({ csv: bad, labelColumn: 'a', labelColumns: ['a'] }, { labelKind: 'set' })).rejects.toThrow(
      "a data source reads its labels from labelColumn ('a') or labelColumns (one per class), not both",
    );
    await expect(loadExamples({ csv: bad, labelColumns: ['a', 'a'] }, { labelKind: 'set' })).rejects.toThrow(
      "a data source's labelColumns name 'a' twice; name each class's column once",
    );
    await expect(loadExamples({ csv: bad, labelColumns: [] }, { labelKind: 'set' })).rejects.toThrow(
      "a data source's labelColumns must list the label columns (one per class); got []",
    );
    await expect(
      train({ encoder, tokenizer: demoTokenizer, data: { csv: columnsCsv, labelColumns: ['positive'] }, outDir: join(work, 'never') }),
    ).rejects.toThrow(
      "labelColumns reads a column per class (problemType 'multi_label_classification') or per output (a regression model of several); a single-label classifier reads one label per example, from labelColumn",
    );
  });
});

describe("head 'sequence-classification', exported", () => {
  it('writes problem_type multi_label_classification; the exported folder predicts what the run does', async () => {
    const outDir = join(work, 'seqcls');
    const run = await train({
      data: { texts: texts.slice(0, 96), labels: sets.slice(0, 96) },
      validationData: { texts: texts.slice(96, 128), labels: sets.slice(96, 128) },
      problemType: 'multi_label_classification',
      encoder,
      tokenizer: demoTokenizer,
      outDir,
      epochs: 1,
      technique: 'full',
      head: 'sequence-classification',
      maxLength: 48,
      learningRate: 1e-3,
    });
    try {
      expect([run.trainExamples, run.validationExamples]).toEqual([96, 32]);
      const exported = join(work, 'seqcls-hf');
      await exportHuggingFace({ classifier: outDir, out: exported, heads: 4 });
      const hfConfig = JSON.parse(readFileSync(join(exported, 'config.json'), 'utf8'));
      expect(hfConfig).toMatchObject({ problem_type: 'multi_label_classification', num_labels: 3, id2label: { '0': 'long' } });
      const back = await loadClassifier(exported, { problemType: 'multi_label_classification' });
      try {
        const [a, b] = [await run.classifier.predict(PROBE_TEXTS), await back.predict(PROBE_TEXTS)];
        for (const [i, p] of b.entries()) {
          expect(Math.max(...CLASSES.map((c) => Math.abs(p.probabilities[c]! - a[i]!.probabilities[c]!)))).toBeLessThan(1e-5);
        }
      } finally {
        back.dispose();
      }
    } finally {
      run.classifier.dispose();
    }
  });
});

describe('torch-bert train and eval --problem-type multi_label_classification', () => {
  it('trains from a CSV of comma-separated classes; eval prints the per-class table and the averages', async () => {
    const outDir = join(work, 'cli');
    const cli = (...args: string[]) =>
      promisify(execFile)(process.execPath, [join(repoRoot, 'dist', 'cli.js'), ...args], { encoding: 'utf8' }).then((r) => r.stdout);
    const trained = JSON.parse(
      (
        await cli(
          'train',
          '--data',
          csv,
          '--label-column',
          'tags',
          '--problem-type',
          'multi_label_classification',
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
        )
      )
        .trim()
        .split('\n')
        .at(-1)!,
    ) as { labels: string[]; metrics: { microF1: number; accuracy: number } };
    expect(trained.labels).toEqual(CLASSES);
    expect(trained.metrics.microF1).toBeGreaterThan(0);
    const table = await cli('eval', '--classifier', outDir, '--data', csv);
    expect(table).toMatch(/^class\s+precision\s+recall\s+f1\s+support$/m);
    expect(table).toMatch(new RegExp(`^subset accuracy\\s+\\d\\.\\d{4}\\s+${texts.length}$`, 'm'));
    expect(table).toMatch(new RegExp(`^micro F1\\s+\\d\\.\\d{4}\\s+${texts.length}$`, 'm'));
    // At threshold 0 every class is predicted for every text: each class's recall is 1.
    const everything = await cli('eval', '--classifier', outDir, '--data', csv, '--threshold', '0');
    for (const c of CLASSES) expect(everything).toMatch(new RegExp(`^${c}\\s+\\d\\.\\d{4}\\s+1\\.0000\\s`, 'm'));
    expect(everything).not.toBe(table);
    // The same labels read from a column per class: the same table.
    expect(await cli('eval', '--classifier', outDir, '--data', columnsCsv, '--label-columns', 'negative,long,positive')).toBe(table);
    const predicted = JSON.parse((await cli('predict', '--classifier', outDir, '--json', PROBE_TEXTS[0]!)).trim()) as {
      labels: string[];
      probabilities: Record<string, number>;
    };
    expect(Object.keys(predicted.probabilities)).toEqual(CLASSES);
    expect(predicted.labels).toEqual(CLASSES.filter((c) => predicted.probabilities[c]! >= 0.5));
    // Per-class thresholds: each class at its own (long always, negative never, positive at 0.5).
    const thresholded = JSON.parse(
      (await cli('predict', '--classifier', outDir, '--json', '--threshold', 'long=0,negative=1.0,positive=0.5', PROBE_TEXTS[0]!)).trim(),
    ) as { labels: string[] };
    expect(thresholded.labels).toEqual(['long', ...(predicted.probabilities.positive! >= 0.5 ? ['positive'] : [])]);
    await expect(cli('predict', '--classifier', outDir, '--threshold', 'high', PROBE_TEXTS[0]!)).rejects.toThrow(
      "--threshold expects a number like 0.3, or one per class like toxic=0.3,threat=0.1; got 'high'",
    );
  });
});

describe('refusals', () => {
  const base = { encoder: 'unused.pt', tokenizer: demoTokenizer, problemType: 'multi_label_classification' } as const;
  it('options of single classes, a metric of regression, a label that is not a set of names, a class the run does not have', async () => {
    await expect(train({ ...base, data: csv, classWeights: 'balanced', labelSmoothing: 0.1 })).rejects.toThrow(
      "classWeights, labelSmoothing cannot be used with problemType 'multi_label_classification': each example has a set of classes, not one",
    );
    await expect(train({ ...base, data: csv, bestMetric: 'pearson' })).rejects.toThrow(
      "bestMetric must be one of loss, accuracy, macroF1; got 'pearson'",
    );
    await expect(train({ ...base, encoder, data: { texts: ['a', 'b'], labels: [['x'], 'y'] } })).rejects.toThrow(
      `example 1: a multi-label example's label is an array of class names or ids (empty when none applies), got "y"`,
    );
    await expect(
      train({
        ...base,
        encoder,
        data: { texts: ['a', 'b'], labels: [['x'], ['y']] },
        validationData: { texts: ['c'], labels: [['x', 'z']] },
      }),
    ).rejects.toThrow(/example 0: label 'z' is not one of the known classes \(x, y\)/);
  });
});
