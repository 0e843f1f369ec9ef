import { describe, expect, it } from 'vitest';
import { InputError } from '../lib/addon/errors.js';
import {
  type ClassificationMetrics,
  classificationMetrics,
  formatMetricsTable,
  formatRegressionMetrics,
  multiLabelMetrics,
  regressionMetrics,
} from '../lib/training/metrics.js';
import { rng } from './helpers/reliability.js';

const ids = (xs: number[]): Int32Array => Int32Array.from(xs);

function expectClose(
  actual: ClassificationMetrics,
  expected: Omit<ClassificationMetrics, 'perClass'> & {
    perClass: Array<{ precision: number; recall: number; f1: number; support: number }>;
  },
): void {
  expect(actual.examples).toBe(expected.examples);
  expect(actual.confusionMatrix).toEqual(expected.confusionMatrix);
  expect(actual.accuracy).toBeCloseTo(expected.accuracy, 12);
  expect(actual.macroF1).toBeCloseTo(expected.macroF1, 12);
  expect(actual.perClass).toHaveLength(expected.perClass.length);
  actual.perClass.forEach((c, i) => {
    const e = expected.perClass[i]!;
    expect(c.precision, `precision of class ${i}`).toBeCloseTo(e.precision, 12);
    expect(c.recall, `recall of class ${i}`).toBeCloseTo(e.recall, 12);
    expect(c.f1, `f1 of class ${i}`).toBeCloseTo(e.f1, 12);
    expect(c.support, `support of class ${i}`).toBe(e.support);
  });
}

describe('classificationMetrics, hand-computed', () => {
  it('two classes', () => {
    const m = classificationMetrics(ids([0, 1, 0, 1, 1]), ids([0, 0, 0, 1, 1]), ['neg', 'pos']);
    expect(m.perClass.map((c) => c.label)).toEqual(['neg', 'pos']);
    expectClose(m, {
      examples: 5,
      accuracy: 0.8,
      macroF1: 0.8,
      confusionMatrix: [
        [2, 1],
        [0, 2],
      ],
      perClass: [
        { precision: 1, recall: 2 / 3, f1: 0.8, support: 3 },
        { precision: 2 / 3, recall: 1, f1: 0.8, support: 2 },
      ],
    });
  });

  it('four classes: one never predicted, one absent from the labels; macro-F1 counts both as 0', () => {
    const labels = ids([0, 0, 1, 1, 2, 2, 0, 1]);
    const predictions = ids([0, 1, 1, 3, 0, 1, 0, 1]);
    expectClose(classificationMetrics(predictions, labels, ['a', 'b', 'c', 'd']), {
      examples: 8,
      accuracy: 0.5,
      macroF1: (2 / 3 + 4 / 7 + 0 + 0) / 4,
      confusionMatrix: [
        [2, 1, 0, 0],
        [0, 2, 0, 1],
        [1, 1, 0, 0],
        [0, 0, 0, 0],
      ],
      perClass: [
        { precision: 2 / 3, recall: 2 / 3, f1: 2 / 3, support: 3 },
        { precision: 0.5, recall: 2 / 3, f1: 4 / 7, support: 3 },
        // never predicted: precision 0 (zero_division=0), recall 0/2
        { precision: 0, recall: 0, f1: 0, support: 2 },
        // no support, predicted once: precision 0/1, recall 0 (zero_division=0)
        { precision: 0, recall: 0, f1: 0, support: 0 },
      ],
    });
  });

  it('a class neither present nor predicted still counts in macro-F1', () => {
    const m = classificationMetrics(ids([0, 1, 1]), ids([0, 1, 1]), ['a', 'b', 'unused']);
    expect(m.accuracy).toBe(1);
    expect(m.perClass[2]).toEqual({ label: 'unused', precision: 0, recall: 0, f1: 0, support: 0 });
    expect(m.macroF1).toBeCloseTo(2 / 3, 12);
  });

  it('no examples: zeros, not NaN', () => {
    const m = classificationMetrics(ids([]), ids([]), ['a', 'b']);
    expect(m).toEqual({
      accuracy: 0,
      macroF1: 0,
      examples: 0,
      confusionMatrix: [
        [0, 0],
        [0, 0],
      ],
      perClass: [
        { label: 'a', precision: 0, recall: 0, f1: 0, support: 0 },
        { label: 'b', precision: 0, recall: 0, f1: 0, support: 0 },
      ],
    });
  });

  it('matches values computed with torch (5 classes, class 2 never predicted, class 4 absent)', () => {
    // Generated once with /usr/bin/python3 + torch (Generator seed 7): confusion matrix by
    // index_put_, precision/recall with zero division → 0, F1 = 2PR/(P+R).
    const labels = [3, 0, 1, 2, 3, 3, 3, 3, 0, 1, 2, 3, 0, 1, 2, 2, 2, 0, 3, 2, 0, 0, 3, 3, 0, 0, 3, 3, 2, 2, 3, 0, 0, 3, 1, 0, 0, 3, 1, 0];
    const predictions = [
      4, 1, 4, 3, 3, 1, 4, 3, 3, 3, 4, 4, 3, 3, 0, 3, 0, 0, 3, 3, 0, 3, 3, 3, 0, 0, 3, 4, 3, 4, 1, 3, 1, 0, 3, 3, 0, 1, 3, 3,
    ];
    const precision = [0.625, 0.0, 0.0, 0.3, 0.0];
    const recall = [0.38461538461538464, 0.0, 0.0, 0.42857142857142855, 0.0];
    const f1 = [0.4761904761904762, 0.0, 0.0, 0.3529411764705882, 0.0];
    const support = [13, 5, 8, 14, 0];
    expectClose(classificationMetrics(ids(predictions), ids(labels), ['a', 'b', 'c', 'd', 'e']), {
      examples: 40,
      accuracy: 0.275,
      macroF1: 0.16582633053221288,
      confusionMatrix: [
        [5, 2, 0, 6, 0],
        [0, 0, 0, 4, 1],
        [2, 0, 0, 4, 2],
        [1, 3, 0, 6, 4],
        [0, 0, 0, 0, 0],
      ],
      perClass: precision.map((p, i) => ({ precision: p, recall: recall[i]!, f1: f1[i]!, support: support[i]! })),
    });
  });
});

/** The textbook definitions, one class at a time, by filtering: deliberately unlike the module's single pass. */
function reference(predictions: number[], labels: number[], numClasses: number) {
  const perClass = [];
  for (let c = 0; c < numClasses; c++) {
    const tp = labels.filter((y, i) => y === c && predictions[i] === c).length;
    const predicted = predictions.filter((p) => p === c).length;
    const support = labels.filter((y) => y === c).length;
    const precision = predicted ? tp / predicted : 0;
    const recall = support ? tp / support : 0;
    const f1 = precision + recall ? (2 * precision * recall) / (precision + recall) : 0;
    perClass.push({ precision, recall, f1, support });
  }
  const confusionMatrix = Array.from({ length: numClasses }, (_, t) =>
    Array.from({ length: numClasses }, (_, p) => labels.filter((y, i) => y === t && predictions[i] === p).length),
  );
  return {
    examples: labels.length,
    accuracy: labels.length ? labels.filter((y, i) => y === predictions[i]).length / labels.length : 0,
    macroF1: perClass.reduce((s, c) => s + c.f1, 0) / numClasses,
    confusionMatrix,
    perClass,
  };
}

describe('classificationMetrics, randomized against a reference implementation', () => {
  it('agrees on 200 random cases (1–9 classes, 0–300 examples, skewed and missing classes)', () => {
    const random = rng(12345);
    for (let trial = 0; trial < 200; trial++) {
      const numClasses = 1 + Math.floor(random() * 9);
      const n = Math.floor(random() * 301);
      // Skewed class weights, some zero, so classes go missing from labels or predictions.
      const weights: number[] = Array.from({ length: numClasses }, () => (random() < 0.2 ? 0 : random()));
      if (!weights.some((w) => w > 0)) weights[0] = 1;
      const total = weights.reduce((s, w) => s + w, 0);
      const draw = (): number => {
        let r = random() * total;
        for (let c = 0; c < numClasses; c++) {
          r -= weights[c]!;
          if (r < 0 && weights[c]! > 0) return c;
        }
        // Rounding left r ≥ 0 past the last class: the last class with weight.
        let c = numClasses - 1;
        while (weights[c] === 0) c--;
        return c;
      };
      const labels = Array.from({ length: n }, draw);
      // Mostly right, sometimes a uniformly random class (which may be one absent from labels).
      const accuracyBias = random();
      const predictions = labels.map((y) => (random() < accuracyBias ? y : Math.floor(random() * numClasses)));
      const names = Array.from({ length: numClasses }, (_, c) => `c${c}`);
      expectClose(classificationMetrics(ids(predictions), ids(labels), names), reference(predictions, labels, numClasses));
    }
  });
});

describe('classificationMetrics, input checks', () => {
  it('rejects unequal lengths, ids out of range, no classes, plain arrays', () => {
    expect(() => classificationMetrics(ids([0, 1]), ids([0]), ['a', 'b'])).toThrow(/2 predictions but 1 labels/);
    expect(() => classificationMetrics(ids([0, 2]), ids([0, 1]), ['a', 'b'])).toThrow(/predictions\[1\] is class id 2, outside 0\.\.1/);
    expect(() => classificationMetrics(ids([0, 1]), ids([-1, 1]), ['a', 'b'])).toThrow(/labels\[0\] is class id -1/);
    expect(() => classificationMetrics(ids([]), ids([]), [])).toThrow(/at least one class/);
    expect(() => classificationMetrics([0] as unknown as Int32Array, ids([0]), ['a'])).toThrow(/Int32Arrays/);
    expect(() => classificationMetrics(ids([0, 1]), ids([0]), ['a', 'b'])).toThrow(InputError);
  });
});

describe('formatMetricsTable', () => {
  it('prints per-class rows, accuracy, macro-F1 and the labelled confusion matrix, aligned', () => {
    const m = classificationMetrics(ids([0, 1, 0, 1, 1]), ids([0, 0, 0, 1, 1]), ['negative', 'positive']);
    expect(formatMetricsTable(m)).toBe(
      [
        'class     precision  recall      f1  support',
        'negative     1.0000  0.6667  0.8000        3',
        'positive     0.6667  1.0000  0.8000        2',
        '',
        'accuracy                     0.8000        5',
        'macro F1                     0.8000        5',
        '',
        'confusion matrix (rows: true class, columns: predicted class)',
        'true \\ predicted  negative  positive',
        'negative                 2         1',
        'positive                 0         2',
      ].join('\n'),
    );
  });

  it('heads the matrix columns with ids when class names are long', () => {
    const m = classificationMetrics(ids([0, 1, 2]), ids([0, 1, 1]), ['short', 'a rather long class name', 'x']);
    const text = formatMetricsTable(m);
    expect(text).toMatch(/^true \\ predicted +#0 {2}#1 {2}#2$/m);
    expect(text).toContain('#1 a rather long class name   0   1   1');
  });
});

describe('regressionMetrics, hand-computed (scipy.stats.pearsonr / spearmanr, sklearn mean_squared_error / mean_absolute_error)', () => {
  const f32 = (xs: number[]) => Float32Array.from(xs);

  it('errors and correlations of four values', () => {
    // values 1, 2, 3, 4 against targets 1, 3, 2, 4: errors 0, -1, 1, 0.
    const m = regressionMetrics(f32([1, 2, 3, 4]), f32([1, 3, 2, 4]));
    expect(m.examples).toBe(4);
    expect(m.mse).toBeCloseTo(0.5, 12);
    expect(m.mae).toBeCloseTo(0.5, 12);
    // Pearson: Σdxdy = 4, Σdx² = Σdy² = 5. Spearman (no ties): 1 - 6·Σd²/(n(n²-1)) = 1 - 12/60.
    expect(m.pearson).toBeCloseTo(0.8, 12);
    expect(m.spearman).toBeCloseTo(0.8, 12);
  });

  it("ties share their average rank (scipy's spearmanr([1, 2, 2, 3], [1, 2, 3, 4]) = 0.9486833)", () => {
    const m = regressionMetrics(f32([1, 2, 2, 3]), f32([1, 2, 3, 4]));
    // Ranks 1, 2.5, 2.5, 4 against 1, 2, 3, 4: 4.5 / √(4.5·5).
    expect(m.spearman).toBeCloseTo(4.5 / Math.sqrt(22.5), 12);
    expect(m.spearman).toBeCloseTo(0.9486833, 7);
    // A monotone map changes Pearson's r, never Spearman's ρ.
    const cubed = regressionMetrics(f32([1, 8, 8, 27]), f32([1, 2, 3, 4]));
    expect(cubed.spearman).toBeCloseTo(m.spearman, 12);
    expect(Math.abs(cubed.pearson - m.pearson)).toBeGreaterThan(1e-3);
  });

  it("several outputs: each output's metrics, errors over every value, correlations averaged (multioutput='uniform_average')", () => {
    // Two outputs, rows [a, b]: a's values and targets are the four-value case above, b's the tie case.
    const a = { values: [1, 2, 3, 4], targets: [1, 3, 2, 4] };
    const b = { values: [1, 2, 2, 3], targets: [1, 2, 3, 4] };
    const rows = (x: number[], y: number[]) => f32(x.flatMap((v, i) => [v, y[i]!]));
    const m = regressionMetrics(rows(a.values, b.values), rows(a.targets, b.targets), ['a', 'b']);
    const [ma, mb] = [regressionMetrics(f32(a.values), f32(a.targets)), regressionMetrics(f32(b.values), f32(b.targets))];
    expect(m.examples).toBe(4);
    expect(m.perOutput).toEqual([
      { output: 'a', mse: ma.mse, mae: ma.mae, pearson: ma.pearson, spearman: ma.spearman },
      { output: 'b', mse: mb.mse, mae: mb.mae, pearson: mb.pearson, spearman: mb.spearman },
    ]);
    expect(m.mse).toBeCloseTo((ma.mse + mb.mse) / 2, 12);
    expect(m.mae).toBeCloseTo((ma.mae + mb.mae) / 2, 12);
    expect(m.pearson).toBeCloseTo((ma.pearson + mb.pearson) / 2, 12);
    expect(m.spearman).toBeCloseTo((0.8 + 0.9486833) / 2, 7);
    // One output has no per-output list; rows that do not fit the outputs are refused.
    expect(ma.perOutput).toBeUndefined();
    expect(() => regressionMetrics(f32([1, 2, 3]), f32([1, 2, 3]), ['a', 'b'])).toThrow(
      'regressionMetrics(): values and targets must be Float32Arrays of [examples, 2] rows',
    );
    expect(formatRegressionMetrics(m).split('\n')[0]).toMatch(/^output\s+mse\s+mae\s+pearson\s+spearman$/);
    expect(formatRegressionMetrics(m).split('\n').at(-1)).toMatch(/^all\s+0\.5000\s+0\.5000\s+0\.8743\s+0\.8743$/);
  });

  it('a constant side has no correlation (NaN, as SciPy), and arrays that do not pair up are refused', () => {
    const m = regressionMetrics(f32([2, 2, 2]), f32([1, 2, 3]));
    expect(m.pearson).toBeNaN();
    expect(m.spearman).toBeNaN();
    expect(m.mae).toBeCloseTo(2 / 3, 12);
    expect(() => regressionMetrics(f32([1]), f32([1, 2]))).toThrow(InputError);
  });
});

describe('multiLabelMetrics, hand-computed (sklearn accuracy_score and f1_score on multi-hot rows, zero_division=0)', () => {
  it('subset accuracy, micro and macro F1, per-class counts; a class at exactly 0.5 is predicted', () => {
    // Classes a, b, c; three examples. Predicted (≥ 0.5): {a, b}, {b}, {} ; true: {a}, {b, c}, {}.
    const probabilities = Float32Array.from([0.9, 0.5, 0.1, 0.2, 0.7, 0.4, 0.3, 0.2, 0.1]);
    const targets = Float32Array.from([1, 0, 0, 0, 1, 1, 0, 0, 0]);
    const m = multiLabelMetrics(probabilities, targets, ['a', 'b', 'c']);
    expect(m.examples).toBe(3);
    // Only the third example has every class right.
    expect(m.accuracy).toBeCloseTo(1 / 3, 12);
    // a: TP 1; b: TP 1, FP 1; c: FN 1. Micro: TP 2, FP 1, FN 1 → 4 / 6.
    expect(m.microF1).toBeCloseTo(4 / 6, 12);
    expect(m.perClass.map((c) => [c.label, c.precision, c.recall, c.f1, c.support])).toEqual([
      ['a', 1, 1, 1, 1],
      ['b', 0.5, 1, 2 / 3, 1],
      ['c', 0, 0, 0, 1],
    ]);
    expect(m.macroF1).toBeCloseTo((1 + 2 / 3 + 0) / 3, 12);
    expect(() => multiLabelMetrics(probabilities, targets.subarray(0, 6), ['a', 'b', 'c'])).toThrow(InputError);
  });
});
