/**
 * Sequence classification as a training task: its batch (tokens, or the frozen technique's
 * cached features, with class ids, a regression run's targets or a multi-label run's rows), its
 * loss (cross-entropy with class weights and label smoothing, the mean squared error, or
 * BCEWithLogitsLoss, computed in the native step) and its validation pass. The loop that drives it is
 * training-loop.ts's, which any other task (MLM, prompt-based training) shares.
 */

import type {
  EvalStepOptions,
  LossOptions,
  NativeAdamW,
  NativeBinding,
  NativeScriptModule,
  ProblemType,
  StepBatch,
  TrainStepOptions,
  TrainStepResult,
} from '../addon/binding.js';
import { InputError } from '../addon/errors.js';
import {
  type BatchedEvaluation,
  consecutiveBatches,
  evaluateInBatches,
  gatherRows,
  labelsAt,
  labelWidth,
  stepBatch,
} from '../data/batching.js';
import type { EncodedTexts } from '../data/tokenizer.js';
import type { ValidationShard } from '../training/distributed.js';
import { type FeatureCache, featureRows } from '../training/feature-cache.js';
import {
  type ClassificationMetrics,
  classificationMetrics,
  type MultiLabelMetrics,
  multiLabelMetrics,
  type RegressionMetrics,
  regressionMetrics,
} from '../training/metrics.js';
import { type ResolvedTrainOptions, unweightedClasses } from '../training/options.js';
import type { Validation } from '../training/run-keeper.js';
import { type MicroBatchStep, nativeStepOptions, type StepSettings, type Task } from '../training/training-loop.js';
import { lossWeight, runEvaluation } from './classifier.js';

/** A validation pass's full metrics: a classifier's, a regression model's, or a multi-label classifier's. */
export type TrainedMetrics = ClassificationMetrics | RegressionMetrics | MultiLabelMetrics;

/**
 * Texts (tokens) with their labels: class ids, or a Float32Array of targets (a regression run's
 * one per text, a multi-label run's multi-hot row per text); `cache` holds their encoded features
 * with the frozen technique.
 */
export interface LabelledSet {
  encoded: EncodedTexts;
  labels: Int32Array | Float32Array;
  cache: FeatureCache | null;
}

/** A classification batch: tokens, or rows of the cached features, with their labels. */
export type ClassificationBatch = { tokens: StepBatch } | { featureRows: Int32Array; labels: Int32Array | Float32Array };

/**
 * The loss's options: class weights, given or `balanced` as scikit-learn computes them, and label
 * smoothing (single-label); positive weights (multi-label); none for regression (no classes).
 */
export function lossOptions(opts: ResolvedTrainOptions, trainLabels: Int32Array | Float32Array, labels: readonly string[]): LossOptions {
  const loss: LossOptions = {};
  if (opts.problemType === 'multi_label_classification' && opts.positiveWeights !== undefined) {
    const weights = positiveWeights(opts.positiveWeights, trainLabels as Float32Array, labels);
    // As class weights all 1: the unweighted loss, computed as such.
    if (!unweightedClasses(opts.positiveWeights)) loss.positiveWeights = weights;
  }
  if (trainLabels instanceof Float32Array) return loss;
  if (opts.labelSmoothing > 0) loss.labelSmoothing = opts.labelSmoothing;
  const counts = new Float64Array(labels.length);
  for (const c of trainLabels) counts[c]!++;
  if (opts.classWeights === 'balanced') {
    loss.classWeights = Float32Array.from(counts, (n) => (n > 0 ? trainLabels.length / (labels.length * n) : 0));
  } else if (opts.classWeights !== undefined) {
    const weights = givenClassWeights(opts.classWeights, counts, labels);
    // Weights all 1 are no weights, and computed as none: the weighted mean rounds otherwise
    // (float32), and a run resumed with them must continue the run that left them out (options.ts effectiveSettings).
    if (!unweightedClasses(opts.classWeights)) loss.classWeights = weights;
  }
  return loss;
}

/** Given weights, one per class, of which a class the training data has must weigh more than 0. */
function givenClassWeights(weights: number[], counts: Float64Array, labels: readonly string[]): Float32Array {
  if (!Array.isArray(weights) || weights.length !== labels.length || weights.some((w) => !(w >= 0))) {
    throw new InputError(`classWeights must be 'balanced' or ${labels.length} non-negative numbers (one per class)`);
  }
  // With every trained class at weight 0 the weighted loss is 0 (or 0/0 = NaN): no gradient, a NaN validation loss.
  if (!weights.some((w, c) => w > 0 && counts[c]! > 0)) {
    const present = labels.filter((_, c) => counts[c]! > 0);
    throw new InputError(
      `classWeights [${weights.join(', ')}] give every class of the training data (${present.join(', ')}) weight 0, so nothing would be learned: give at least one of them a positive weight`,
    );
  }
  return Float32Array.from(weights);
}

/**
 * A multi-label run's positive weights: given, one per class, each finite and ≥ 0; or `balanced`,
 * each class's negatives / positives among `targets` (multi-hot rows), 1 for a class without
 * positives (nothing to weigh).
 */
function positiveWeights(given: number[] | 'balanced', targets: Float32Array, labels: readonly string[]): Float32Array {
  if (given !== 'balanced') {
    if (!Array.isArray(given) || given.length !== labels.length || given.some((w) => !(w >= 0 && Number.isFinite(w)))) {
      throw new InputError(
        `positiveWeights must be 'balanced' or ${labels.length} finite numbers ≥ 0 (one per class: ${labels.join(', ')})`,
      );
    }
    return Float32Array.from(given);
  }
  const positives = new Float64Array(labels.length);
  targets.forEach((t, i) => {
    positives[i % labels.length]! += t;
  });
  const rows = targets.length / labels.length;
  return Float32Array.from(positives, (p) => (p > 0 ? (rows - p) / p : 1));
}

export function classificationTask(
  binding: NativeBinding,
  model: NativeScriptModule,
  optimizer: NativeAdamW,
  train: LabelledSet,
  settings: StepSettings & {
    loss: LossOptions;
    /** Fixed padded width of token batches (`padding: 'max'`); undefined pads to each batch's longest. */
    padTo: number | undefined;
  },
): Task<ClassificationBatch> {
  const cache = train.cache;
  return {
    batch(rows) {
      const labels = labelsAt(train.labels, rows, train.encoded.count);
      if (cache) return { featureRows: featureRows(cache, rows), labels };
      return { tokens: stepBatch(gatherRows(train.encoded, rows, settings.padTo), labels) };
    },
    lossNormaliser(rows) {
      // The weighted cross-entropy's mean divides by the rows' class weights, the plain one by the rows.
      const weights = settings.loss.classWeights;
      if (!weights || train.labels instanceof Float32Array) return rows.length;
      let sum = 0;
      for (const i of rows) sum += weights[train.labels[i]!]!;
      return sum;
    },
    step(batch, step: MicroBatchStep): Promise<TrainStepResult> {
      const options: TrainStepOptions = { ...settings.loss, ...nativeStepOptions(settings, step) };
      if ('tokens' in batch) return binding.trainStep(model, optimizer, batch.tokens, options);
      return binding.headTrainStep(model, optimizer, cache!.features, batch.featureRows, batch.labels, options);
    },
  };
}

/** What validateClassifier is given besides the model and the data. */
interface ValidationSettings {
  /** What the labels are (class ids, regression targets, multi-label rows) and so which metrics. */
  problemType: ProblemType;
  batchSize: number;
  padTo: number | undefined;
  loss: EvalStepOptions;
  labels: string[];
  signal?: AbortSignal;
  shard?: ValidationShard;
}

/**
 * `rows` of the set evaluated in this process, from the cached features (frozen) or from tokens;
 * `labels` are theirs. Its predictions are indices into `rows`.
 */
function evaluateRows(
  binding: NativeBinding,
  model: NativeScriptModule,
  data: LabelledSet,
  rows: Int32Array,
  labels: Int32Array | Float32Array,
  settings: ValidationSettings,
): Promise<BatchedEvaluation> {
  const { cache } = data;
  if (!cache) {
    return runEvaluation(
      model,
      settings.shard ? gatherRows(data.encoded, rows, data.encoded.seqLen) : data.encoded,
      labels,
      settings.batchSize,
      settings.signal,
      settings.loss,
      settings.padTo,
    );
  }
  return evaluateInBatches(
    rows.length,
    consecutiveBatches(rows.length, settings.batchSize),
    (examples) =>
      binding.headEvalStep(
        model,
        cache.features,
        featureRows(
          cache,
          Int32Array.from(examples, (i) => rows[i]!),
        ),
        labelsAt(labels, examples, rows.length),
        settings.loss,
      ),
    true,
    settings.signal,
    lossWeight(labels, settings.loss),
  );
}

/**
 * A rank's outputs of its `rows` (class predictions, a regression run's values, or a multi-label
 * classifier's probabilities: `width` per row) and its loss, summed over the ranks into every
 * row's outputs (a row's are its one rank's, the others add zero) and the whole set's loss.
 */
function sumOverRanks(
  local: ArrayLike<number>,
  width: number,
  localLoss: { loss: number; weight: number },
  rows: Int32Array,
  count: number,
  shard: ValidationShard,
): { outputs: Float64Array; loss: number } {
  // [every row's outputs..., this rank's loss sum, what it divides by (rows or class weights)]
  const size = count * width;
  const sums = new Float64Array(size + 2);
  rows.forEach((row, i) => {
    for (let k = 0; k < width; k++) sums[row * width + k] = local[i * width + k]!;
  });
  sums[size] = localLoss.weight > 0 ? localLoss.loss * localLoss.weight : 0;
  sums[size + 1] = localLoss.weight;
  const global = shard.sum(sums);
  return { outputs: global.subarray(0, size), loss: global[size]! / global[size + 1]! };
}

/**
 * Validation loss and metrics of `model`, from cached features (frozen) or from tokens:
 * classification's, a regression run's or a multi-label run's (settings.problemType). With a shard, the rank's rows
 * only; every output and the loss sum are then summed over the ranks (a row's output is its one
 * rank's, the others add zero), so every rank computes the metrics of the whole set, exactly
 * those of one process (the confusion matrix and F1, the correlations, or the per-class counts,
 * from every output, not averages of the ranks' metrics).
 */
export async function validateClassifier(
  binding: NativeBinding,
  model: NativeScriptModule,
  data: LabelledSet,
  settings: ValidationSettings,
): Promise<Validation<TrainedMetrics>> {
  const count = data.encoded.count;
  const rows = settings.shard?.rows ?? Int32Array.from({ length: count }, (_, i) => i);
  const width = labelWidth(data.labels, count);
  const result = await evaluateRows(binding, model, data, rows, labelsAt(data.labels, rows, count), settings);
  const { problemType } = settings;
  const local =
    problemType === 'regression' ? result.values : problemType === 'multi_label_classification' ? result.probabilities : result.predictions;
  const { outputs, loss } = settings.shard
    ? sumOverRanks(local, width, { loss: result.loss!, weight: result.lossWeight }, rows, count, settings.shard)
    : { outputs: local, loss: result.loss! };
  if (data.labels instanceof Int32Array) {
    const metrics = classificationMetrics(Int32Array.from(outputs), data.labels, settings.labels);
    return { loss, scores: { accuracy: metrics.accuracy, macroF1: metrics.macroF1 }, metrics };
  }
  if (problemType === 'multi_label_classification') {
    const metrics = multiLabelMetrics(Float32Array.from(outputs), data.labels, settings.labels);
    // Subset accuracy: every class of the example right.
    return { loss, scores: { accuracy: metrics.accuracy, macroF1: metrics.macroF1 }, metrics };
  }
  const metrics = regressionMetrics(Float32Array.from(outputs), data.labels, settings.labels);
  return { loss, scores: { pearson: metrics.pearson, spearman: metrics.spearman }, metrics };
}
