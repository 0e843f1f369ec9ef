/**
 * torch-bert: fine-tune a TorchScript BERT from TypeScript, on libtorch.
 *
 *   const result = await train({ data: 'reviews.csv', encoder: 'bert.pt', tokenizer: 'tokenizer.json', outDir: 'out' });
 *   const classifier = await loadClassifier('out');
 *   await classifier.predict(['a wonderful film']);
 */

export type * from './binding.js';
export {
  Classifier,
  type ClassifierConfig,
  type EvaluationOptions,
  type EvaluationResult,
  type LoadAdaptersOptions,
  loadClassifier,
  type Prediction,
  type PredictOptions,
} from './classifier.js';
export type { ArraySource, CsvSource, DataSource } from './data.js';
export { AbortError, InputError, ModelError, NumericalError } from './errors.js';
export { type ExportOptions, type ExportResult, exportHuggingFace } from './export.js';
export { type AdapterHubExportOptions, type AdapterHubExportResult, exportAdapterHub } from './export-adapterhub.js';
export type { ExportFamily } from './export-family.js';
export {
  type DownloadProgress,
  type ModelSource,
  type ResolveOptions,
  resolveModelSource,
  terminalProgress,
} from './hub.js';
export { loadBinding, NativeLoadError } from './loader.js';
export { type ClassificationMetrics, type ClassMetrics, classificationMetrics, formatMetricsTable } from './metrics.js';
export {
  type AdapterOptions,
  type BatchEvent,
  type BestMetric,
  DEFAULTS,
  type Device,
  type DownloadEvent,
  type EncodeEvent,
  type EpochEvent,
  type EpochMetrics,
  type Evaluation,
  type EvaluationEvent,
  type LoraOptions,
  type Pooling,
  type PredictEvent,
  type ProgressEvent,
  type StepEvent,
  type Technique,
  type TrainOptions,
} from './options.js';
export type { MlmMetrics, PretrainOptions, PretrainResult } from './pretrainer.js';
export { PRETRAIN_DEFAULTS, pretrain } from './pretrainer.js';
export { type PromptClassifierOptions, promptClassifier } from './prompt-classifier.js';
export type { PromptConfig, VerbalizerSpec } from './prompt-template.js';
export type { HeadKind } from './sequence-classification.js';
export { type EncodedTexts, TextTokenizer } from './tokenizer.js';
export { type TrainResult, train } from './trainer.js';
export type { SkippedBatch } from './training-state.js';

import { Classifier, type EvaluationOptions, type EvaluationResult, type Prediction, type PredictOptions } from './classifier.js';
import type { DataSource } from './data.js';
import type { Device } from './options.js';

async function withClassifier<T>(
  classifier: Classifier | string,
  device: Device | undefined,
  use: (c: Classifier) => Promise<T>,
): Promise<T> {
  if (classifier instanceof Classifier) return use(classifier);
  const loaded = await Classifier.load(classifier, { device });
  try {
    return await use(loaded);
  } finally {
    loaded.dispose();
  }
}

/** Loss and accuracy of a classifier (or a saved classifier directory) on labelled data. */
export function evaluate(
  classifier: Classifier | string,
  data: DataSource,
  options: EvaluationOptions & { device?: Device } = {},
): Promise<EvaluationResult> {
  return withClassifier(classifier, options.device, (c) => c.evaluate(data, options));
}

/** Labels with probabilities for each text, from a classifier or a saved classifier directory. */
export function predict(
  classifier: Classifier | string,
  texts: readonly string[],
  options: PredictOptions & { device?: Device } = {},
): Promise<Prediction[]> {
  return withClassifier(classifier, options.device, (c) => c.predict(texts, options));
}
