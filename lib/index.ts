/**
 * torch-bert: fine-tune a TorchScript BERT from TypeScript, on libtorch.
 *
 *   const result = await train({ data: 'reviews.csv', encoder: 'bert.pt', tokenizer: 'tokenizer.json', outDir: 'out' });
 *   const classifier = await loadClassifier('out');
 *   await classifier.predict(['a wonderful film']);
 */

export type * from './addon/binding.js';
export { AbortError, InputError, ModelError, NumericalError } from './addon/errors.js';
export { loadBinding, NativeLoadError } from './addon/loader.js';
export type { AnswerMetrics } from './answering/answer-task.js';
export {
  QA_TRAIN_DEFAULTS,
  type QaBestMetric,
  type QaTrainOptions,
  type QaTrainResult,
  trainQuestionAnswering,
} from './answering/qa-trainer.js';
export {
  type AnswerOptions,
  loadQuestionAnswerer,
  type Question,
  QuestionAnswerer,
  type QuestionAnswererLoadOptions,
} from './answering/question-answerer.js';
export { SPAN_DEFAULTS, type SpanAnswer, type SpanCandidate, type SpanOptions } from './answering/span-answers.js';
export { type QuestionExample, readQuestionFiles } from './answering/squad-data.js';
export { normalizeAnswer, type SquadMetrics, type SquadScores, squadMetrics } from './answering/squad-metrics.js';
export {
  Classifier,
  type ClassifierConfig,
  type EvaluationOf,
  type EvaluationOptions,
  type EvaluationResult,
  type LoadAdaptersOptions,
  type LoadClassifierOptions,
  loadClassifier,
  type MultiLabelEvaluation,
  type MultiLabelPrediction,
  PROBLEM_TYPES,
  type Prediction,
  type PredictionOf,
  type PredictOptions,
  type RegressionEvaluation,
  type RegressionPrediction,
} from './classification/classifier.js';
export { type PromptClassifierOptions, promptClassifier } from './classification/prompt-classifier.js';
export { type TrainResult, train } from './classification/trainer.js';
export type { ArraySource, CsvSource, DataSource } from './data/data.js';
export type { PromptConfig, VerbalizerSpec } from './data/prompt-template.js';
export type { TaggedReadOptions } from './data/tagged-words.js';
export { type EncodedTexts, type TextPairs, TextTokenizer } from './data/tokenizer.js';
export { splitWords, type TextWord } from './data/word-alignment.js';
export { type ExportOptions, type ExportResult, exportHuggingFace } from './export/export.js';
export { type AdapterHubExportOptions, type AdapterHubExportResult, exportAdapterHub } from './export/export-adapterhub.js';
export type { ExportFamily } from './models/export-family.js';
export {
  type DownloadProgress,
  type ModelSource,
  type ResolveOptions,
  resolveModelSource,
  terminalProgress,
} from './models/hub.js';
export type { HeadKind } from './models/sequence-classification.js';
export type { MlmMetrics, PretrainOptions, PretrainResult } from './pretraining/pretrainer.js';
export { PRETRAIN_DEFAULTS, pretrain } from './pretraining/pretrainer.js';
export {
  loadTokenClassifier,
  type PredictEntitiesOptions,
  type PredictWordsOptions,
  type TaggedToken,
  type TaggedWords,
  type TextEntity,
  TokenClassifier,
  type TokenClassifierLoadOptions,
  type WordAggregation,
} from './tagging/token-classifier.js';
export type { TokenMetrics } from './tagging/token-task.js';
export {
  TOKEN_TRAIN_DEFAULTS,
  type TokenTrainOptions,
  type TokenTrainResult,
  trainTokenClassifier,
} from './tagging/token-trainer.js';
export { type EntityMetrics, type EntityTypeMetrics, entityMetrics, entitySpans, formatEntityMetrics } from './training/entity-metrics.js';
export {
  type ClassificationMetrics,
  type ClassMetrics,
  classificationMetrics,
  formatMetricsTable,
  type MultiLabelMetrics,
  type MultiLabelThreshold,
  multiLabelMetrics,
  type OutputMetrics,
  type RegressionMetrics,
  regressionMetrics,
} from './training/metrics.js';
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
  type TrainProblemType,
} from './training/options.js';
export type { SkippedBatch } from './training/training-state.js';

import {
  Classifier,
  type EvaluationOptions,
  type EvaluationResult,
  type Prediction,
  type PredictOptions,
} from './classification/classifier.js';
import type { DataSource } from './data/data.js';
import type { Device } from './training/options.js';

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
