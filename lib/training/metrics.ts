/**
 * Classification metrics of a set of predictions, with scikit-learn's conventions and
 * `zero_division=0`, so numbers printed here match what a Python user would compute with
 * `classification_report` / `f1_score(average='macro', labels=range(C), zero_division=0)`:
 *   - precision of a class that is never predicted is 0;
 *   - recall of a class that never occurs in the labels is 0;
 *   - F1 is 2·TP / (2·TP + FP + FN), 0 when the class is neither predicted nor present;
 *   - macro-F1 averages F1 over every class in `labelNames`, present or not.
 */
import { InputError } from '../addon/errors.js';

export interface ClassMetrics {
  label: string;
  precision: number;
  recall: number;
  f1: number;
  /** How many examples truly belong to the class. */
  support: number;
}

export interface ClassificationMetrics {
  /** Share of predictions equal to the label; 0 when there are no examples. */
  accuracy: number;
  /** Unweighted mean of the per-class F1 over all classes. */
  macroF1: number;
  /** One entry per class, in id order. */
  perClass: ClassMetrics[];
  /** `confusionMatrix[trueId][predictedId]` counts examples. */
  confusionMatrix: number[][];
  examples: number;
}

/** The arguments' types, pairing and class ids, each refusal saying which is wrong and how. */
function checkInputs(predictions: Int32Array, labels: Int32Array, labelNames: string[]): void {
  if (!(predictions instanceof Int32Array) || !(labels instanceof Int32Array)) {
    throw new InputError('classificationMetrics(): predictions and labels must be Int32Arrays of class ids');
  }
  if (!Array.isArray(labelNames) || labelNames.length === 0) {
    throw new InputError('classificationMetrics(): labelNames must name at least one class');
  }
  if (predictions.length !== labels.length) {
    throw new InputError(
      `classificationMetrics(): ${predictions.length} predictions but ${labels.length} labels; they must pair up one to one`,
    );
  }
  const numClasses = labelNames.length;
  const checkIds = (what: string, ids: Int32Array): void => {
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id < 0 || id >= numClasses) {
        throw new InputError(
          `classificationMetrics(): ${what}[${i}] is class id ${id}, outside 0..${numClasses - 1} (${numClasses} classes)`,
        );
      }
    }
  };
  checkIds('predictions', predictions);
  checkIds('labels', labels);
}

/** `matrix[trueId][predictedId]` counts examples. */
function confusionMatrixOf(predictions: Int32Array, labels: Int32Array, numClasses: number): number[][] {
  const matrix = Array.from({ length: numClasses }, () => new Array<number>(numClasses).fill(0));
  for (let i = 0; i < labels.length; i++) matrix[labels[i]!]![predictions[i]!]!++;
  return matrix;
}

/** Class `c`'s precision, recall and F1 read off the confusion matrix, with the zero_division=0 rules of the file comment. */
function classMetrics(label: string, c: number, matrix: number[][]): ClassMetrics {
  const truePositives = matrix[c]![c]!;
  let support = 0; // row sum: truly c
  let predictedAsC = 0; // column sum: predicted c
  for (let k = 0; k < matrix.length; k++) {
    support += matrix[c]![k]!;
    predictedAsC += matrix[k]![c]!;
  }
  const falsePositives = predictedAsC - truePositives;
  const falseNegatives = support - truePositives;
  const f1Denominator = 2 * truePositives + falsePositives + falseNegatives;
  return {
    label,
    precision: predictedAsC === 0 ? 0 : truePositives / predictedAsC,
    recall: support === 0 ? 0 : truePositives / support,
    f1: f1Denominator === 0 ? 0 : (2 * truePositives) / f1Denominator,
    support,
  };
}

/** Metrics of `predictions` against `labels`, both class ids into `labelNames`. */
export function classificationMetrics(predictions: Int32Array, labels: Int32Array, labelNames: string[]): ClassificationMetrics {
  checkInputs(predictions, labels, labelNames);
  const confusionMatrix = confusionMatrixOf(predictions, labels, labelNames.length);
  const perClass = labelNames.map((label, c) => classMetrics(label, c, confusionMatrix));
  // The diagonal: the predictions equal to their label.
  const correct = confusionMatrix.reduce((sum, row, c) => sum + row[c]!, 0);
  return {
    accuracy: labels.length === 0 ? 0 : correct / labels.length,
    macroF1: perClass.reduce((sum, m) => sum + m.f1, 0) / labelNames.length,
    perClass,
    confusionMatrix,
    examples: labels.length,
  };
}

// Longer class names make the confusion matrix too wide for a terminal, so its columns are
// then headed by class ids and the rows say which id is which.
const MAX_MATRIX_HEADER = 12;

/**
 * A plain-text report for the CLI: per-class precision, recall, F1 and support, accuracy and
 * macro-F1, then the confusion matrix (rows: true class, columns: predicted class).
 */
export function formatMetricsTable(m: ClassificationMetrics): string {
  const fixed = (x: number): string => x.toFixed(4);
  const metricRows: string[][] = [
    ['class', 'precision', 'recall', 'f1', 'support'],
    ...m.perClass.map((c) => [c.label, fixed(c.precision), fixed(c.recall), fixed(c.f1), String(c.support)]),
    [],
    ['accuracy', '', '', fixed(m.accuracy), String(m.examples)],
    ['macro F1', '', '', fixed(m.macroF1), String(m.examples)],
  ];

  const useIds = m.perClass.some((c) => c.label.length > MAX_MATRIX_HEADER);
  const columnHeaders = m.perClass.map((c, i) => (useIds ? `#${i}` : c.label));
  const rowHeaders = m.perClass.map((c, i) => (useIds ? `#${i} ${c.label}` : c.label));
  const matrixRows: string[][] = [
    ['true \\ predicted', ...columnHeaders],
    ...m.confusionMatrix.map((row, i) => [rowHeaders[i]!, ...row.map(String)]),
  ];

  return [alignColumns(metricRows), '', 'confusion matrix (rows: true class, columns: predicted class)', alignColumns(matrixRows)].join(
    '\n',
  );
}

/** Left-aligns the first column, right-aligns the others (numbers), two spaces apart: every metrics table's layout. */
export function alignColumns(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  }
  return rows
    .map((row) =>
      row
        .map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/**
 * Metrics of a regression model's values against their targets, as scikit-learn and SciPy give
 * them (GLUE's STS-B reports Pearson and Spearman): mean squared and absolute error, Pearson's r,
 * and Spearman's ρ (Pearson's r of the ranks, ties given their average rank, as
 * scipy.stats.spearmanr). A correlation is NaN where either side is constant (SciPy's too). A
 * model of several outputs (a target per output and example) has each output's in `perOutput`;
 * its errors are over every value (MSELoss's mean), its correlations the outputs' averaged
 * (scikit-learn's `multioutput='uniform_average'`).
 */
export interface RegressionMetrics {
  mse: number;
  mae: number;
  pearson: number;
  spearman: number;
  examples: number;
  /** With more than one output: each output's metrics, in output order. */
  perOutput?: OutputMetrics[];
}

/** One output's metrics, of a regression model with several. */
export interface OutputMetrics {
  output: string;
  mse: number;
  mae: number;
  pearson: number;
  spearman: number;
}

/** `values` and `targets`, row-major [examples, outputs], the outputs named `outputs` (one, by default: transformers' LABEL_0). */
export function regressionMetrics(
  values: Float32Array,
  targets: Float32Array,
  outputs: readonly string[] = ['LABEL_0'],
): RegressionMetrics {
  const width = outputs.length;
  if (
    !(values instanceof Float32Array) ||
    !(targets instanceof Float32Array) ||
    values.length !== targets.length ||
    width === 0 ||
    targets.length % width !== 0
  ) {
    throw new InputError(`regressionMetrics(): values and targets must be Float32Arrays of [examples, ${width}] rows`);
  }
  const examples = targets.length / width;
  if (width === 1) return { ...oneOutput(values, targets), examples };
  const column = (x: Float32Array, k: number) => Float32Array.from({ length: examples }, (_, i) => x[i * width + k]!);
  const perOutput = outputs.map((output, k) => ({ output, ...oneOutput(column(values, k), column(targets, k)) }));
  const mean = (key: 'pearson' | 'spearman') => perOutput.reduce((sum, m) => sum + m[key], 0) / width;
  const all = oneOutput(values, targets);
  return { mse: all.mse, mae: all.mae, pearson: mean('pearson'), spearman: mean('spearman'), examples, perOutput };
}

/** Errors and correlations of one output's values against its targets. */
function oneOutput(values: Float32Array, targets: Float32Array): Omit<OutputMetrics, 'output'> {
  const n = values.length;
  let squared = 0;
  let absolute = 0;
  for (let i = 0; i < n; i++) {
    const d = values[i]! - targets[i]!;
    squared += d * d;
    absolute += Math.abs(d);
  }
  return {
    mse: squared / n,
    mae: absolute / n,
    pearson: pearson(values, targets),
    spearman: pearson(averageRanks(values), averageRanks(targets)),
  };
}

/** A regression model's metrics as `torch-bert eval` prints them: a line each; with several outputs, a row per output, then the averages. */
export function formatRegressionMetrics(m: RegressionMetrics): string {
  const fixed = (x: number): string => x.toFixed(4);
  if (m.perOutput) {
    return alignColumns([
      ['output', 'mse', 'mae', 'pearson', 'spearman'],
      ...m.perOutput.map((o) => [o.output, fixed(o.mse), fixed(o.mae), fixed(o.pearson), fixed(o.spearman)]),
      ['all', fixed(m.mse), fixed(m.mae), fixed(m.pearson), fixed(m.spearman)],
    ]);
  }
  return alignColumns([
    ['mse', fixed(m.mse)],
    ['mae', fixed(m.mae)],
    ['pearson', fixed(m.pearson)],
    ['spearman', fixed(m.spearman)],
  ]);
}

/** Pearson's r, in float64 about the means. */
function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number {
  const n = x.length;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[i]!;
    my += y[i]!;
  }
  mx /= n;
  my /= n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = x[i]! - mx;
    const dy = y[i]! - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  return sxx === 0 || syy === 0 ? Number.NaN : sxy / Math.sqrt(sxx * syy);
}

/** 1-based ranks, tied values sharing their average rank (scipy.stats.rankdata's 'average'). */
function averageRanks(x: Float32Array): Float64Array {
  const order = Array.from(x.keys()).sort((a, b) => x[a]! - x[b]!);
  const ranks = new Float64Array(x.length);
  for (let start = 0; start < order.length; ) {
    let end = start + 1;
    while (end < order.length && x[order[end]!] === x[order[start]!]) end++;
    const rank = (start + 1 + end) / 2;
    for (let k = start; k < end; k++) ranks[order[k]!] = rank;
    start = end;
  }
  return ranks;
}

/**
 * Where a multi-label classifier's class applies: at a sigmoid of at least this, one number for
 * every class or one per class by name. Default 0.5.
 */
export type MultiLabelThreshold = number | Readonly<Record<string, number>>;

/** Where a multi-label classifier's class applies unless a threshold is given: a sigmoid of 0.5, a logit of 0. */
export const DEFAULT_THRESHOLD = 0.5;

/** Each class's threshold, in `labelNames` order: every one in [0, 1], and named classes exactly the classifier's. */
export function classThresholds(threshold: MultiLabelThreshold, labelNames: readonly string[]): Float64Array {
  const inRange = (t: unknown) => typeof t === 'number' && t >= 0 && t <= 1;
  if (typeof threshold === 'number') {
    if (!inRange(threshold)) throw new InputError(`threshold must be a number in [0, 1]; got ${threshold}`);
    return new Float64Array(labelNames.length).fill(threshold);
  }
  if (typeof threshold !== 'object' || threshold === null || Array.isArray(threshold)) {
    throw new InputError(`threshold must be a number in [0, 1], or one per class by name (${labelNames.join(', ')})`);
  }
  const names = Object.keys(threshold);
  const missing = labelNames.filter((name) => !names.includes(name));
  const unknown = names.filter((name) => !labelNames.includes(name));
  if (missing.length > 0 || unknown.length > 0) {
    throw new InputError(
      `threshold names every class once (${labelNames.join(', ')}): ${[
        ...(missing.length > 0 ? [`missing ${missing.join(', ')}`] : []),
        ...(unknown.length > 0 ? [`${unknown.join(', ')} ${unknown.length === 1 ? 'is not a class' : 'are not classes'}`] : []),
      ].join('; ')}`,
    );
  }
  const bad = labelNames.find((name) => !inRange(threshold[name]));
  if (bad !== undefined) throw new InputError(`threshold of '${bad}' must be a number in [0, 1]; got ${threshold[bad]}`);
  return Float64Array.from(labelNames, (name) => threshold[name]!);
}

/**
 * Metrics of a multi-label classifier, as scikit-learn gives them for multi-hot rows (class `c`
 * predicted where its probability is at least its threshold, 0.5 unless given:
 * `classThresholds`; `zero_division=0` as above): `accuracy` is the
 * share of examples whose every class is right (accuracy_score's subset accuracy), `microF1`
 * pools every class's true and false positives and negatives (f1_score(average='micro')),
 * `macroF1` averages the classes' F1, and `perClass` has each class's precision, recall, F1 and
 * support (the examples it applies to).
 */
export interface MultiLabelMetrics {
  accuracy: number;
  microF1: number;
  macroF1: number;
  perClass: ClassMetrics[];
  examples: number;
}

/** `probabilities` and `targets`, row-major [examples, classes] (targets 0 or 1), against `labelNames`. */
export function multiLabelMetrics(
  probabilities: Float32Array,
  targets: Float32Array,
  labelNames: string[],
  threshold: MultiLabelThreshold = DEFAULT_THRESHOLD,
): MultiLabelMetrics {
  const classes = labelNames.length;
  if (probabilities.length !== targets.length || classes === 0 || targets.length % classes !== 0) {
    throw new InputError(`multiLabelMetrics(): probabilities and targets must be Float32Arrays of [examples, ${classes}] rows`);
  }
  const thresholds = classThresholds(threshold, labelNames);
  const examples = targets.length / classes;
  const counts = labelNames.map(() => ({ tp: 0, fp: 0, fn: 0 }));
  let exact = 0;
  for (let i = 0; i < examples; i++) {
    let right = true;
    for (let c = 0; c < classes; c++) {
      const predicted = probabilities[i * classes + c]! >= thresholds[c]!;
      const applies = targets[i * classes + c]! >= 0.5;
      const n = counts[c]!;
      if (predicted && applies) n.tp++;
      else if (predicted) n.fp++;
      else if (applies) n.fn++;
      if (predicted !== applies) right = false;
    }
    if (right) exact++;
  }
  const f1 = (tp: number, fp: number, fn: number) => (2 * tp + fp + fn === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn));
  const perClass = labelNames.map((label, c) => {
    const { tp, fp, fn } = counts[c]!;
    return {
      label,
      precision: tp + fp === 0 ? 0 : tp / (tp + fp),
      recall: tp + fn === 0 ? 0 : tp / (tp + fn),
      f1: f1(tp, fp, fn),
      support: tp + fn,
    };
  });
  const total = counts.reduce((sum, n) => ({ tp: sum.tp + n.tp, fp: sum.fp + n.fp, fn: sum.fn + n.fn }), { tp: 0, fp: 0, fn: 0 });
  return {
    accuracy: examples === 0 ? 0 : exact / examples,
    microF1: f1(total.tp, total.fp, total.fn),
    macroF1: perClass.reduce((sum, m) => sum + m.f1, 0) / classes,
    perClass,
    examples,
  };
}

/** Any problem type's metrics as the CLI prints them: a classifier's table, a regression model's lines, a multi-label classifier's classes. */
export function formatMetrics(m: ClassificationMetrics | RegressionMetrics | MultiLabelMetrics): string {
  if ('spearman' in m) return formatRegressionMetrics(m);
  return 'microF1' in m ? formatMultiLabelMetrics(m) : formatMetricsTable(m);
}

/** A multi-label classifier's metrics as `torch-bert eval` prints them: per class, then the averages. */
export function formatMultiLabelMetrics(m: MultiLabelMetrics): string {
  const fixed = (x: number): string => x.toFixed(4);
  return alignColumns([
    ['class', 'precision', 'recall', 'f1', 'support'],
    ...m.perClass.map((c) => [c.label, fixed(c.precision), fixed(c.recall), fixed(c.f1), String(c.support)]),
    [],
    ['subset accuracy', '', '', fixed(m.accuracy), String(m.examples)],
    ['micro F1', '', '', fixed(m.microF1), String(m.examples)],
    ['macro F1', '', '', fixed(m.macroF1), String(m.examples)],
  ]);
}
