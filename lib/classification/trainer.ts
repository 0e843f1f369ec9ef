/**
 * `train()`: the seed tutorial's job done right, and the other two techniques. `trainNow` reads
 * top to bottom as the run's stages:
 *   1. load and check: options (options.ts), training state, tokenizer, data, labels, the encoder
 *      checked against the tokenizer (model-checks.ts) — all cheap, before any text is tokenized;
 *   2. prepare data: tokenize every text once, split, the loss's class weights, and check a
 *      resumed run is the same run;
 *   3. build the classifier, then inside the cleanup scope: what trains (trainable.ts), AdamW,
 *      the training state put back, the frozen technique's features encoded once;
 *   4. the loop over optimizer steps (training-loop.ts) with the classification task
 *      (classification-task.ts) and the RunKeeper (run-keeper.ts: best metric, checkpoint, early
 *      stopping, training state);
 *   5. finish: history, report, the kept classifier.
 * The path of a batch:
 *   CSV row → data.ts:loadExamples (text, class id) → tokenizer.ts:encodeBatchAsync (ids + mask,
 *   every text once) → training-loop.ts:Loop.epoch (batching.ts:epochBatches, this epoch's rows
 *   from libtorch's randperm(seed + epoch); cut into windows of gradientAccumulationSteps) →
 *   Loop.optimizerStep (learning rate) → Loop.microBatch → classification-task.ts: batch
 *   (batching.ts:gatherRows, or feature-cache.ts:featureRows) and step → binding.trainStep /
 *   headTrainStep (forward, loss, backward; on the window's last batch clipping, AdamW step and
 *   zero-grad: C++ on a worker thread) → loss / accuracy → progress event.
 */

import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type {
  BuiltClassifier,
  ClassifierSpec,
  EncoderInfo,
  EvalStepOptions,
  LossOptions,
  NativeBinding,
  NativeBottleneckAdapters,
  NativeLoraAdapters,
  NativeScriptModule,
  NativeTensor,
} from '../addon/binding.js';
import { asAbortError, InputError, ModelError, messageOf } from '../addon/errors.js';
import { loadBinding, packageVersion } from '../addon/loader.js';
import { gatherRows, labelsAt, TOKENS_PER_FORWARD } from '../data/batching.js';
import {
  absentClassNote,
  caseVariantsNote,
  checkFilesNamedOnce,
  csvColumns,
  type DataSource,
  inferLabelNames,
  inferLabelSetNames,
  LABEL_KIND,
  labelIds,
  labelSets,
  loadExamples,
  multiLabelTargets,
  numberVariantsNote,
  type RawExamples,
  regressionTargets,
  sourceFiles,
  stratifiedSplit,
} from '../data/data.js';
import { fewShotSplit } from '../data/few-shot.js';
import { type PromptEncoder, promptSpec } from '../data/prompt-template.js';
import type { TextTokenizer } from '../data/tokenizer.js';
import { CLASSIFIER_FILE, HISTORY_FILE, scratchCheckpointDir, writeCheckpoint, writeFileAtomic } from '../files/checkpoint.js';
import { weightDigests } from '../models/base-weights.js';
import { type LoadedEncoder, loadEncoderSource, modelFolderRead } from '../models/encoder-source.js';
import { startHeadFromCheckpoint } from '../models/hf-sequence-classifier.js';
import { checkPairTokenTypes, takesTokenTypes } from '../models/model-checks.js';
import { type HeadSettings, headSettings, headSpec } from '../models/sequence-classification.js';
import {
  contentDigest,
  type Distributed,
  type RunIdentity,
  rankZeroDecides,
  runAsRank,
  sharedSettings,
  startAsRank,
  validationShard,
} from '../training/distributed.js';
import { encodeOnce, type FeatureCache } from '../training/feature-cache.js';
import type { ClassificationMetrics, MultiLabelMetrics, RegressionMetrics } from '../training/metrics.js';
import {
  type AnyTrainOptions,
  checkTrainOptionNames,
  DEFAULTS,
  downloadEvents,
  type EpochMetrics,
  type Evaluation,
  type ResolvedTrainOptions,
  resolveTrainOptions,
  type TrainOptions,
  type TrainProblemType,
  zeroLearningRateNote,
} from '../training/options.js';
import { checkPrecision } from '../training/precision.js';
import { renderReport } from '../training/report.js';
import { RunKeeper, startPosition } from '../training/run-keeper.js';
import { setUpTrainable, type TrainableSet } from '../training/trainable.js';
import { runTrainingLoop, startTrainee } from '../training/training-loop.js';
import {
  checkOutputFolderFirst,
  claimRunFolder,
  readTrainingState,
  removeTrainingState,
  resumePosition,
  runContents,
  type SavedState,
  type SkippedBatch,
  stateSaver,
} from '../training/training-state.js';
import { classificationTask, type LabelledSet, lossOptions, type TrainedMetrics, validateClassifier } from './classification-task.js';
import { ADAPTERS_FILE, Classifier, type ClassifierConfig, HEAD_FILE, outputOf, resolveDevice } from './classifier.js';
import { noMlmHeadInTorchScript, preparePrompt } from './prompt-classifier.js';

export { resolveTrainOptions } from '../training/options.js';

/** A train() run's result: a classifier's, or with `problemType: 'regression'` a regression model's (its metrics and classifier typed so). */
export interface TrainResult<P extends TrainProblemType = 'single_label_classification'> {
  /** Class names in id order (a regression model's output: LABEL_0, as transformers names it). */
  labels: string[];
  /** Metrics of every epoch. */
  history: EpochMetrics[];
  /** Every validation pass (each epoch's end, and every `evaluateEvery` optimizer steps). */
  evaluations: Evaluation[];
  /** The epoch whose evaluation was best by `bestMetric` (its weights are the ones kept). */
  best: EpochMetrics;
  /**
   * The kept weights' metrics on the validation set: accuracy, macro-F1, per-class
   * precision/recall and confusion matrix; a regression model's errors and correlations.
   */
  metrics: P extends 'regression' ? RegressionMetrics : P extends 'multi_label_classification' ? MultiLabelMetrics : ClassificationMetrics;
  encoder: EncoderInfo;
  technique: ResolvedTrainOptions['technique'];
  /** Parameters that trained, and all parameters of the classifier (encoder + head). */
  trainableParameters: number;
  totalParameters: number;
  /**
   * Trainable share of the encoder's parameters: what full fine-tuning trains of it (all but the
   * unused and `freeze` parameters), LoRA's adapters over the encoder's size, 0 for frozen.
   */
  trainableEncoderFraction: number;
  /** Encoder parameters the task's output does not depend on (e.g. the pooler under [CLS] pooling): not used by this task, frozen, not counted as trainable. */
  unusedParameters: string[];
  /** Encoder parameters kept frozen by the `freeze` option. */
  frozenParameters: string[];
  /** What the run decided differently from the encoder file (gradient flags, a float16/bfloat16 file trained in float32), each said once. */
  notes: string[];
  trainExamples: number;
  validationExamples: number;
  /** True when early stopping ended the run. */
  stoppedEarly: boolean;
  /** Batches skipped for a NaN/Inf loss or gradient (with onNonFinite: 'skip'), a resumed run's earlier ones included. */
  skippedBatches: SkippedBatch[];
  /**
   * The same list as `skippedBatches` (it always counted batches, not optimizer steps).
   * @deprecated Use `skippedBatches`; this alias goes in the next release.
   */
  skippedSteps: SkippedBatch[];
  /** The directory the best checkpoint was written to, when `outDir` was given. */
  outDir?: string;
  /** The best classifier, in memory, ready for `predict()`. */
  classifier: Classifier<P>;
}

/**
 * The adapters' small artifact next to the classifier, saved with (and committed by) each
 * checkpoint: the adapters (LoRA's A and B, or the bottleneck adapters, with their spec) and the
 * head's weights, which `loadAdapters()` puts back onto the same base encoder. With
 * `adapter.trainLayerNorm` the head file also holds the encoder's LayerNorms, which trained too.
 */
function adapterArchives(
  binding: NativeBinding,
  adapters: NativeLoraAdapters | NativeBottleneckAdapters,
  model: NativeScriptModule,
  trainedEncoder: (name: string) => boolean,
) {
  return [
    { file: ADAPTERS_FILE, write: (path: string) => adapters.save(path) },
    {
      file: HEAD_FILE,
      write: (path: string) =>
        binding.saveTensors(path, Object.fromEntries(model.namedParameters().filter(([n]) => n.startsWith('head.') || trainedEncoder(n)))),
    },
  ];
}

/**
 * Runs of train() in one process go one at a time. libtorch's random generator is process-wide
 * (TorchScript's dropout draws from it), so two runs interleaving their steps would each see
 * dropout masks that depend on the other's timing, and a seed would no longer reproduce a run.
 * A second call waits for the first to finish and then gives exactly the result it gives alone.
 */
let runQueue: Promise<unknown> = Promise.resolve();

/** Fine-tune a classifier (or a regression model) on top of an encoder. See `TrainOptions` for every option and default. */
export function train<P extends TrainProblemType = 'single_label_classification'>(options: TrainOptions<P>): Promise<TrainResult<P>> {
  const run = runQueue.then(() => trainNow(options));
  runQueue = run.catch(() => undefined);
  return run as Promise<TrainResult<P>>;
}

/** Stage 1's data, read and labelled but not yet tokenized. */
interface RawData {
  saved: (SavedState & { directory: string }) | null;
  tokenizer: TextTokenizer;
  trainTexts: readonly string[];
  validationTexts: readonly string[] | null;
  /** Second texts (textPairColumn, or the data's pairs): a pair prompt's {text_b}, or the second text of text pairs. */
  trainPairs: readonly string[] | null;
  validationPairs: readonly string[] | null;
  labels: string[];
  /** The label of every row of the training source: its class id, or a regression run's target. */
  allLabels: Int32Array | Float32Array;
  trainIndices: Int32Array;
  /** Rows of the training source held out for validation (no separate validation data). */
  validationIndices: Int32Array | null;
  /** The separate validation data's labels, as `allLabels`. */
  validationLabels: Int32Array | Float32Array | null;
  hasValidationData: boolean;
}

/**
 * Stage 1: everything that can be wrong with the inputs is checked before the output directory
 * is touched, so a failed run never destroys an earlier checkpoint.
 */
async function readInputs(opts: ResolvedTrainOptions, binding: NativeBinding, tokenizer: TextTokenizer): Promise<RawData> {
  const saved = opts.resumeFrom ? await readTrainingState(opts.resumeFrom) : null;
  await checkFilesNamedOnce(sourceFiles(opts.data), opts.validationData ? sourceFiles(opts.validationData) : []);
  const labelKind = LABEL_KIND[opts.problemType];
  const trainRaw = await loadExamples(withPairColumn(opts.data, opts.textPairColumn), { labelKind });
  const validationRaw = opts.validationData
    ? await loadExamples(withPairColumn(opts.validationData, opts.textPairColumn), { labelKind })
    : null;
  if (validationRaw && (trainRaw.pairs === undefined) !== (validationRaw.pairs === undefined)) {
    const [paired, single] = trainRaw.pairs ? ['data', 'validationData'] : ['validationData', 'data'];
    throw new InputError(
      `${paired} has a second text for each example but ${single} has none: give both sets their second texts (the same textPairColumn, or pairs), or neither`,
    );
  }
  const { labels, labelsOf } = labelling(opts, trainRaw);
  const allLabels = labelsOf(trainRaw);
  const split =
    opts.fewShot !== undefined
      ? fewShotSplit(allLabels as Int32Array, labels, opts.fewShot, opts.seed, binding.randperm, validationRaw === null)
      : validationRaw
        ? { train: Int32Array.from(trainRaw.texts.keys()), validation: null }
        : // Regression and multi-label classification: one stratum, a plain random split.
          stratifiedSplit(
            allLabels instanceof Int32Array ? allLabels : new Int32Array(trainRaw.texts.length),
            opts.validationSplit,
            opts.seed,
            binding.randperm,
          );
  return {
    saved,
    tokenizer,
    trainTexts: trainRaw.texts,
    validationTexts: validationRaw?.texts ?? null,
    trainPairs: trainRaw.pairs ?? null,
    validationPairs: validationRaw?.pairs ?? null,
    labels,
    allLabels,
    trainIndices: split.train,
    validationIndices: split.validation,
    validationLabels: validationRaw ? labelsOf(validationRaw) : null,
    hasValidationData: validationRaw !== null,
  };
}

/**
 * The run's output names and how a set's raw labels become its labels. Classification: the
 * classes are the training data's (as transformers' run_glue: a class only the validation data
 * has would never train — a typo or the wrong file — and is refused by labelIds), each label a
 * class id. Regression: one output, LABEL_0 (transformers' name), each label a target value; or
 * an output per label column, named by it.
 * Multi-label: the classes are `labels`, else the data's label columns, else those its examples
 * name (inferred as single labels are); each label a multi-hot row.
 */
function labelling(
  opts: ResolvedTrainOptions,
  trainRaw: RawExamples,
): { labels: string[]; labelsOf: (raw: RawExamples) => Int32Array | Float32Array } {
  if (opts.problemType === 'regression') {
    const labels = trainRaw.labelColumns ?? ['LABEL_0'];
    return { labels, labelsOf: (raw) => regressionTargets(raw, labels) };
  }
  if (opts.problemType === 'multi_label_classification') {
    const labels = opts.labels ?? trainRaw.labelColumns ?? inferLabelSetNames(labelSets(trainRaw), trainRaw.origin);
    return { labels, labelsOf: (raw) => multiLabelTargets(raw, labels) };
  }
  const labels = opts.labels ?? inferLabelNames(trainRaw.labels!, trainRaw.origin);
  return { labels, labelsOf: (raw) => labelIds(raw.labels!, labels, raw.origin) };
}

/** A data source that also reads the second text's column (textPairColumn), when one is named. */
function withPairColumn(source: DataSource, textPairColumn: string | undefined): DataSource {
  if (textPairColumn === undefined) return source;
  if (typeof source === 'string' || Array.isArray(source)) return { csv: source as string | readonly string[], textPairColumn };
  if ('csv' in source) return { ...source, textPairColumn: source.textPairColumn ?? textPairColumn };
  return source;
}

/**
 * Stage 2: every text tokenized once (through the template with a prompt; as text pairs where the
 * data has second texts, with their segments for an encoder that takes token_type_ids); the
 * training and validation sets.
 */
async function tokenizeData(
  opts: ResolvedTrainOptions,
  raw: RawData,
  loaded: LoadedEncoder,
  prompt: PromptEncoder | null,
): Promise<{ train: LabelledSet; validation: LabelledSet }> {
  const { tokenizer } = raw;
  const { signal } = opts;
  const tokenTypes = takesTokenTypes(loaded.module.forwardArity);
  if (!prompt && raw.trainPairs && tokenTypes) checkPairTokenTypes(loaded.module, tokenizer, `encoder ${loaded.description}`);
  const encode = (texts: readonly string[], second: readonly string[] | null) =>
    prompt
      ? prompt.encodeAsync(texts, second, opts.maxLength, signal)
      : tokenizer.encodeBatchAsync(texts, opts.maxLength, { signal, ...(second ? { pairs: { second, tokenTypes } } : {}) });
  const encodedAll = await encode(raw.trainTexts, raw.trainPairs);
  const train = {
    encoded: gatherRows(encodedAll, raw.trainIndices, opts.maxLength),
    labels: labelsAt(raw.allLabels, raw.trainIndices, raw.trainTexts.length),
    cache: null,
  };
  const validation = raw.validationTexts
    ? {
        encoded: await encode(raw.validationTexts, raw.validationPairs),
        labels: raw.validationLabels!,
        cache: null,
      }
    : {
        encoded: gatherRows(encodedAll, raw.validationIndices!, opts.maxLength),
        labels: labelsAt(raw.allLabels, raw.validationIndices!, raw.trainTexts.length),
        cache: null,
      };
  return { train, validation };
}

/**
 * What data-parallel ranks must share (distributed.ts startAsRank, agreeOnRun): the options but
 * the rank-local ones, and by content what the paths name — the texts and labels read, the
 * tokenizer, the encoder's weights (loaded.weightsKey: file SHA-256s, or a Hub commit), the
 * training state resumed.
 */
async function runIdentity(opts: ResolvedTrainOptions, raw: RawData, loaded: LoadedEncoder): Promise<RunIdentity> {
  // The label names the run settled on (given or inferred) pin what the class ids of the data mean.
  const settings = { ...sharedSettings(opts), labels: raw.labels };
  const digests: Record<string, string> = {
    'training data': contentDigest([...raw.trainTexts, ...(raw.trainPairs ?? []), raw.allLabels]),
    'validation data': raw.validationTexts
      ? contentDigest([...raw.validationTexts, ...(raw.validationPairs ?? []), raw.validationLabels])
      : contentDigest([raw.validationIndices]),
    tokenizer: contentDigest([raw.tokenizer.json]),
    "model's weights": await loaded.weightsKey(),
  };
  if (raw.saved) digests['training state'] = contentDigest([JSON.stringify({ ...raw.saved, directory: undefined })]);
  return { settings, digests };
}

/** The settings a resumed run must share with the run that saved the state. */
function runFingerprint(
  opts: ResolvedTrainOptions,
  labels: string[],
  trainExamples: number,
  validationExamples: number,
  worldSize: number,
) {
  return {
    technique: opts.technique,
    labels,
    trainExamples,
    validationExamples,
    maxLength: opts.maxLength,
    batchSize: opts.batchSize,
    epochs: opts.epochs,
    seed: opts.seed,
    gradientAccumulationSteps: opts.gradientAccumulationSteps,
    lora: opts.technique === 'lora' ? opts.lora : null,
    // Only for the technique, so that states written before it existed still match.
    ...(opts.technique === 'adapter' ? { adapter: opts.adapter } : {}),
    // Only when set, so that training states written before the option existed still match.
    ...(opts.freeze.length > 0 ? { freeze: opts.freeze } : {}),
    ...(opts.head !== 'mlp' ? { head: opts.head } : {}),
    // Only for regression, so that training states written before the option existed still match.
    ...(opts.problemType !== 'single_label_classification' ? { problemType: opts.problemType } : {}),
    // Data-parallel runs only, so that single-process states still match. With the two above, the
    // batch layout, which may change on resume if the global batch does not (resumePosition).
    ...(worldSize > 1 ? { worldSize } : {}),
    // Every option that makes the run what it is (those data-parallel ranks must share): the saved
    // tensors and moments continued with another learning rate, pooling or verbalizer would end
    // as no run of either options does.
    options: sharedSettings(opts),
  };
}

/** Stage 3: encoder + head. Until it returns, an error disposes of the encoder here. */
function buildModel(
  binding: NativeBinding,
  encoder: NativeScriptModule,
  opts: ResolvedTrainOptions,
  head: HeadSettings,
  numClasses: number,
  device: string,
  notes: string[],
  promptSpec: Partial<ClassifierSpec> = {},
): BuiltClassifier {
  try {
    const fileDtype = encoder.namedParameters().find(([, t]) => ['float16', 'bfloat16', 'float64'].includes(t.dtype))?.[1].dtype;
    if (fileDtype) {
      // Master weights are float32; reduced precision comes from autocast (the precision option).
      encoder.to(device, 'float32');
      notes.push(
        `the encoder file holds ${fileDtype} weights; they train in float32 (precision '${opts.precision}' decides the forward's precision)`,
      );
    }
    return binding.buildClassifier(encoder, {
      numClasses,
      problemType: opts.problemType,
      headHidden: opts.headHidden,
      pooling: opts.pooling,
      seed: opts.seed,
      ...headSpec(head),
      ...promptSpec,
    });
  } catch (err) {
    encoder.dispose();
    throw new ModelError(`encoder ${opts.encoder} cannot be used: ${messageOf(err)}`, { file: opts.encoder, cause: err });
  }
}

/**
 * Stage 3 as the run sees it: the head's settings (its family read off the encoder), then encoder +
 * head built (buildModel), with the prompt's MLM head for `head: 'prompt'`.
 */
async function classifierOf(
  binding: NativeBinding,
  opts: ResolvedTrainOptions,
  loaded: LoadedEncoder,
  prepared: { mlmHead: NativeScriptModule; prompt: PromptEncoder } | null,
  tokenizer: TextTokenizer,
  numClasses: number,
  device: string,
  notes: string[],
): Promise<{ built: BuiltClassifier; head: HeadSettings }> {
  const head = await headSettings({
    head: opts.head,
    dropout: opts.dropout,
    pooling: opts.pooling,
    encoder: loaded.module,
    encoderName: loaded.description,
    source: loaded.source,
    tokenizerJson: tokenizer.json,
  });
  try {
    const prompt = prepared ? promptSpec(prepared.mlmHead, prepared.prompt.config) : {};
    return { built: buildModel(binding, loaded.module, opts, head, numClasses, device, notes, prompt), head };
  } finally {
    // The classifier holds the MLM head's transform; the handle is not needed.
    loaded.mlmHead?.dispose();
  }
}

/** What trains, inside the cleanup scope: a LoRA target or an adapter placement that matches nothing fails here. */
function setUpTechnique(binding: NativeBinding, model: NativeScriptModule, opts: ResolvedTrainOptions, built: BuiltClassifier) {
  try {
    return setUpTrainable(binding, model, opts, built.unusedParameters);
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw new InputError(`cannot set up technique '${opts.technique}': ${messageOf(err)}`, { cause: err });
  }
}

/** Frozen: every text encoded once; the head's epochs run on the features. */
async function encodeFeatures(
  binding: NativeBinding,
  model: NativeScriptModule,
  opts: ResolvedTrainOptions,
  loaded: LoadedEncoder,
  features: string,
  data: { train: LabelledSet; validation: LabelledSet },
  disposables: Array<{ dispose(): void }>,
  dist: Distributed | null,
): Promise<{ train: FeatureCache; validation: FeatureCache }> {
  const disk =
    opts.featureCache === 'disk' ? { dir: opts.featureCacheDir, weightsKey: await loaded.weightsKey(), pooling: features } : undefined;
  // Data-parallel: each rank encodes its share of the batches, then the features are summed over the ranks.
  const shard = dist
    ? {
        rank: dist.rank,
        worldSize: dist.worldSize,
        sum: (t: NativeTensor) => dist.allReduceTensor(t, 'sum'),
        max: (v: number[]) => dist.allReduce(v, 'max'),
      }
    : undefined;
  const options = { tokensPerBatch: TOKENS_PER_FORWARD, disk, onProgress: opts.onProgress, signal: opts.signal, shard };
  const train = await encodeOnce(binding, model, data.train.encoded, { ...options, split: 'train' });
  disposables.push(train.features);
  const validation = await encodeOnce(binding, model, data.validation.encoded, { ...options, split: 'validation' });
  disposables.push(validation.features);
  return { train, validation };
}

function classifierConfig(
  binding: NativeBinding,
  opts: ResolvedTrainOptions,
  labels: string[],
  built: BuiltClassifier,
  head: HeadSettings,
  loaded: LoadedEncoder,
  device: string,
  loss: LossOptions,
  raw: Pick<RawData, 'hasValidationData' | 'trainPairs'>,
  prompt: PromptEncoder | null,
): ClassifierConfig {
  return {
    format: 'torch-bert-classifier',
    formatVersion: 1,
    labels,
    ...(opts.problemType !== 'single_label_classification' ? { problemType: opts.problemType } : {}),
    ...csvColumns(opts.data),
    ...(prompt ? { prompt: prompt.config } : {}),
    // A prompt's template says whether it reads pairs; the other heads read them as text pairs.
    ...(!prompt && raw.trainPairs ? { input: 'text-pair' as const } : {}),
    ...(opts.textPairColumn !== undefined ? { textPairColumn: opts.textPairColumn } : {}),
    maxLength: opts.maxLength,
    pooling: opts.pooling,
    headHidden: opts.headHidden,
    dropout: head.dropout,
    // Only for transformers' head, so that configs of the default head stay as they were.
    ...(head.head !== 'mlp' ? { head: head.head, headFamily: head.family } : {}),
    encoder: { ...built.encoder, file: opts.encoder, source: loaded.source },
    output: outputOf(opts.problemType),
    libtorchVersion: binding.versions().libtorch,
    torchBertVersion: packageVersion(),
    hyperparameters: {
      technique: opts.technique,
      lora: opts.technique === 'lora' ? opts.lora : undefined,
      adapter: opts.technique === 'adapter' ? opts.adapter : undefined,
      epochs: opts.epochs,
      batchSize: opts.batchSize,
      learningRate: opts.learningRate,
      encoderLearningRate: opts.technique === 'full' ? (opts.encoderLearningRate ?? opts.learningRate) : undefined,
      weightDecay: opts.weightDecay,
      betas: opts.betas,
      eps: opts.eps,
      schedule: opts.schedule,
      warmupRatio: opts.warmupRatio,
      gradientAccumulationSteps: opts.gradientAccumulationSteps,
      maxGradNorm: opts.maxGradNorm,
      classWeights: loss.classWeights ? Array.from(loss.classWeights) : undefined,
      ...(loss.positiveWeights ? { positiveWeights: Array.from(loss.positiveWeights) } : {}),
      labelSmoothing: opts.labelSmoothing,
      validationSplit: raw.hasValidationData ? null : opts.validationSplit,
      bestMetric: opts.bestMetric,
      seed: opts.seed,
      device,
      precision: opts.precision,
      ...(opts.fewShot !== undefined ? { fewShot: opts.fewShot } : {}),
    },
    metrics: {},
    createdAt: new Date().toISOString(),
  };
}

async function trainNow(options: AnyTrainOptions): Promise<TrainResult<TrainProblemType>> {
  checkTrainOptionNames(options);
  const opts = resolveTrainOptions(options);
  const binding = loadBinding();
  options.signal?.throwIfAborted();
  // Data-parallel (distributed.ts): joined first, threads per rank, left at the end.
  return runAsRank(binding, opts, (dist) => {
    if (dist && !dist.isMain) {
      // Rank 0 alone writes the checkpoint, report and training state, and reports progress.
      opts.outDir = undefined;
      opts.report = false;
      opts.onProgress = undefined;
    }
    return trainRank(opts, binding, options, dist);
  });
}

/**
 * Stage 1, what may fail on one rank alone: an output folder the run would damage refused
 * (checkOutputFolderFirst, before minutes of loading); the encoder loaded (a model folder or Hub id built
 * natively) and checked against the tokenizer and max length before any text is tokenized
 * (model-checks.ts): a mismatch fails at once, naming both files and both numbers. A model folder
 * supplies the tokenizer, max length and LoRA targets the options leave out (set in `opts`). Then
 * the data read. Until buildModel takes the encoder over, an error leaves it to the garbage collector.
 */
async function loadAndRead(opts: ResolvedTrainOptions, binding: NativeBinding, options: AnyTrainOptions) {
  await checkOutputFolderFirst(opts.outDir, 'classifier', opts.encoder, opts.resumeFrom);
  const device = resolveDevice(opts.device);
  const loaded = await loadEncoderSource(opts.encoder, {
    device,
    tokenizer: opts.tokenizer,
    maxLength: options.maxLength,
    fallbackMaxLength: DEFAULTS.maxLength,
    mlmHead: opts.head === 'prompt',
    // A sequence classifier's head, for transformers' head to start from (startHeadFromCheckpoint).
    classificationHead: opts.head === 'sequence-classification',
    refuseTorchScript: opts.head === 'prompt' ? noMlmHeadInTorchScript : undefined,
    signal: opts.signal,
    onDownload: downloadEvents(opts.onProgress),
  });
  // head 'prompt': the MLM head, the mask token and the verbalizer's words, checked before any data is read.
  const prepared = opts.head === 'prompt' ? await preparePrompt(loaded, opts.template!, opts.verbalizer!) : null;
  if (prepared) {
    const { labels } = prepared.prompt;
    if (opts.labels !== undefined && opts.labels.join('\0') !== labels.join('\0')) {
      throw new InputError(`labels (${opts.labels.join(', ')}) must be the verbalizer's, in its order (${labels.join(', ')})`);
    }
    opts.labels = labels;
  }
  opts.maxLength = loaded.maxLength;
  if (options.lora?.targets === undefined && loaded.loraTargets) opts.lora.targets = loaded.loraTargets;
  const raw = await readInputs(opts, binding, loaded.tokenizer);
  return { device, loaded, prepared, raw };
}

async function trainRank(
  opts: ResolvedTrainOptions,
  binding: NativeBinding,
  options: AnyTrainOptions,
  dist: Distributed | null,
): Promise<TrainResult<TrainProblemType>> {
  // 1. Load and check: the rank's set-up, then (data-parallel) the start agreed with the other
  // ranks before any text is tokenized: every rank runs the same job, or none trains, and a rank
  // that cannot start stops every rank at once (distributed.ts startAsRank).
  const { signal } = opts;
  if (opts.threads !== undefined) binding.setNumThreads(opts.threads);
  const {
    value: { device, loaded, prepared, raw },
    identity,
  } = await startAsRank(
    dist,
    () => loadAndRead(opts, binding, options),
    (start) => runIdentity(opts, start.raw, start.loaded),
  );
  const prompt = prepared?.prompt ?? null;
  const { saved, tokenizer, labels } = raw;

  // 2. Prepare data, and where the run starts (a resumed run where it stopped).
  const { data, loss, fingerprint, position } = await prepareData(opts, raw, loaded, prompt, dist, identity);
  const padTo = opts.padding === 'max' ? opts.maxLength : undefined;
  checkPrecision(opts, device);
  // Validation runs in the training precision too.
  const evalOptions: EvalStepOptions = { ...loss, precision: opts.precision };

  // 3. Build the classifier. LoRA and adapter runs first fingerprint their base, before anything
  // is added to it or trains, for loadAdapters to refuse another (base-weights.ts).
  const baseDigests = opts.technique === 'lora' || opts.technique === 'adapter' ? weightDigests(loaded.module) : undefined;
  // Classes only: a regression run's labels are values.
  const labelNotes =
    data.train.labels instanceof Int32Array
      ? [absentClassNote(data.train.labels, labels), caseVariantsNote(labels), numberVariantsNote(labels)]
      : opts.problemType === 'multi_label_classification'
        ? [caseVariantsNote(labels), numberVariantsNote(labels)]
        : [];
  const notes: string[] = [...loaded.notes, ...[...labelNotes, zeroLearningRateNote(opts)].filter((n) => n !== null)];
  const { built, head } = await classifierOf(binding, opts, loaded, prepared, tokenizer, labels.length, device, notes);
  const model = built.module;
  const outDir = opts.outDir;
  // Without outDir the best weights still go to a file, the one way to snapshot a module
  // whatever its technique (LoRA's save() writes merged weights).
  const bestDir = outDir ?? (await scratchCheckpointDir());
  // Disposed in reverse order of creation when the run ends, however it ends.
  const disposables: Array<{ dispose(): void }> = [model];
  // TF32 tensor cores for float32 matmuls on CUDA (Ampere and newer) during the run.
  const tf32Before = device.startsWith('cuda') ? binding.allowTF32() : null;
  // Held from before the first write into outDir until the run ends, however it ends.
  let releaseOutDir: (() => Promise<void>) | undefined;
  try {
    // Inside the cleanup scope: the model and the temporary best-weights folder are released
    // whatever fails from here on.
    if (loaded.classificationHead.length > 0) notes.push(startHeadFromCheckpoint(model, head.family!, loaded, labels, opts.problemType));
    const setup = setUpTechnique(binding, model, opts, built);
    if (setup.adapters) disposables.push(setup.adapters);
    if (setup.flagOverride) notes.push(setup.flagOverride);
    const trainee = await startTrainee(binding, model, setup, { dist, saved, disposables });
    if (tf32Before !== null) binding.setAllowTF32(true);
    if (outDir) releaseOutDir = await claimRunFolder(outDir, 'classifier', opts.resumeFrom, modelFolderRead(loaded));
    if (opts.technique === 'frozen' && opts.featureCache !== 'none') {
      const caches = await encodeFeatures(binding, model, opts, loaded, head.features, data, disposables, dist);
      data.train.cache = caches.train;
      data.validation.cache = caches.validation;
    }
    const config = classifierConfig(binding, opts, labels, built, head, loaded, device, loss, raw, prompt);
    if (baseDigests) config.encoder.weightDigests = baseDigests;

    // 4. The loop over optimizer steps; the keeper decides what is kept and when to stop.
    // Data-parallel: each rank validates its share of the held-out rows (distributed.ts validationShard).
    const shard = validationShard(dist, data.validation.encoded.count);
    const keeper = new RunKeeper<TrainedMetrics>(position, opts, {
      validate: () =>
        validateClassifier(binding, model, data.validation, {
          problemType: opts.problemType,
          batchSize: opts.batchSize,
          padTo,
          loss: evalOptions,
          labels,
          signal,
          shard,
        }),
      agree: rankZeroDecides(dist),
      checkpoint: (evaluation) => writeBest(binding, bestDir, { model, config, tokenizer, setup }, position.history, evaluation),
      saveState: stateSaver(binding, outDir, { fingerprint, tensors: setup.trainable, optimizer: trainee.optimizer }, dist),
      onProgress: opts.onProgress,
    });
    const task = classificationTask(binding, model, trainee.optimizer, data.train, {
      loss,
      precision: opts.precision,
      maxGradNorm: opts.maxGradNorm,
      skipNonFinite: opts.onNonFinite === 'skip',
      padTo,
      averageGradients: dist !== null,
    });
    await runTrainingLoop(task, trainee, keeper, {
      ...opts,
      trainRows: data.train.encoded.count,
      groupLengths: opts.groupByLength ? data.train.encoded.lengths : undefined,
      randperm: binding.randperm,
      rank: dist ?? undefined,
    });

    // 5. Finish.
    return await finish({ binding, opts, device, bestDir, keeper, data, evalOptions, padTo, config, tokenizer, built, setup, notes });
  } catch (err) {
    if (!outDir) await rm(bestDir, { recursive: true, force: true });
    throw asAbortError(err, 'training aborted');
  } finally {
    if (tf32Before !== null) binding.setAllowTF32(tf32Before);
    for (const d of disposables.reverse()) d.dispose();
    await releaseOutDir?.();
  }
}

/**
 * Stage 2: the texts tokenized, the loss, and what a resume must match: the run's fingerprint
 * and the position it starts from (a resumed run's, its batch layout translated to this run's:
 * training-state.ts resumePosition).
 */
async function prepareData(
  opts: ResolvedTrainOptions,
  raw: RawData,
  loaded: LoadedEncoder,
  prompt: PromptEncoder | null,
  dist: Distributed | null,
  identity: () => Promise<RunIdentity>,
) {
  const data = await tokenizeData(opts, raw, loaded, prompt);
  const trainRows = data.train.encoded.count;
  const loss = lossOptions(opts, data.train.labels, raw.labels);
  const fingerprint = {
    ...runFingerprint(opts, raw.labels, trainRows, data.validation.encoded.count, dist?.worldSize ?? 1),
    // Only where a state is saved or resumed: the model's weights are hashed for it.
    ...(opts.outDir || raw.saved ? { contents: runContents((await identity()).digests) } : {}),
  };
  const position = raw.saved ? resumePosition(raw.saved, fingerprint, opts.resumeFrom!, trainRows) : startPosition();
  return { data, loss, fingerprint, position };
}

/**
 * The keeper's checkpoint: the evaluation's metrics recorded in the classifier's config, then the
 * classifier written to `dir` (atomically), with the adapters' archives where adapters train.
 */
function writeBest(
  binding: NativeBinding,
  dir: string,
  run: { model: NativeScriptModule; config: ClassifierConfig; tokenizer: TextTokenizer; setup: TrainableSet },
  history: EpochMetrics[],
  evaluation: Evaluation,
): Promise<void> {
  const { model, config, setup } = run;
  const { isBest: _, ...measured } = evaluation;
  config.metrics = measured;
  return writeCheckpoint(dir, model, {
    config,
    tokenizerJson: run.tokenizer.json,
    history,
    archives: setup.adapters ? adapterArchives(binding, setup.adapters, model, (n) => setup.trainedEncoder.has(n)) : [],
  });
}

/** What stage 5 reads of the run. */
interface FinishedRun {
  binding: NativeBinding;
  opts: ResolvedTrainOptions;
  device: string;
  bestDir: string;
  keeper: RunKeeper<TrainedMetrics>;
  data: { train: LabelledSet; validation: LabelledSet };
  evalOptions: EvalStepOptions;
  padTo: number | undefined;
  config: ClassifierConfig;
  tokenizer: TextTokenizer;
  built: BuiltClassifier;
  setup: TrainableSet;
  notes: string[];
}

/**
 * The kept weights' full metrics: the keeper's, or, for a resumed run whose best came before the
 * interruption, measured again from the kept classifier in `keptDir`.
 */
async function keptMetrics(run: FinishedRun, keptDir: string): Promise<TrainedMetrics> {
  if (run.keeper.bestMetrics) return run.keeper.bestMetrics;
  const { binding, opts } = run;
  const kept = await binding.ScriptModule.loadAsync(join(keptDir, CLASSIFIER_FILE), run.device);
  try {
    const options = {
      problemType: opts.problemType,
      batchSize: opts.batchSize,
      padTo: run.padTo,
      loss: run.evalOptions,
      labels: run.config.labels,
      signal: opts.signal,
    };
    return (await validateClassifier(binding, kept, { ...run.data.validation, cache: null }, options)).metrics;
  } finally {
    kept.dispose();
  }
}

/** Stage 5: the history and report written, the kept weights loaded as the result's classifier. */
async function finish(run: FinishedRun): Promise<TrainResult<TrainProblemType>> {
  const { binding, opts, device, bestDir, keeper, config, setup } = run;
  const { position } = keeper;
  const outDir = opts.outDir;
  // A finished run has evaluated at least once.
  const bestEvaluation = keeper.bestEvaluation()!;
  const best = position.history.find((h) => h.epoch === bestEvaluation.epoch) ?? position.history.at(-1)!;
  // A resumed run whose best came before the interruption keeps the weights in the resumed
  // directory; a data-parallel rank other than 0 checkpoints into a temporary folder of its own,
  // so it reads them there (on the filesystem the ranks share, as the training state).
  const keptDir = existsSync(join(bestDir, CLASSIFIER_FILE)) || !opts.resumeFrom ? bestDir : opts.resumeFrom;
  const bestMetrics = await keptMetrics(run, keptDir);
  if (outDir) {
    await writeFileAtomic(join(outDir, HISTORY_FILE), JSON.stringify(position.history, null, 2) + '\n');
    if (opts.report)
      await writeReport(outDir, opts, run.tokenizer.path, position.evaluations, position.history, bestMetrics, config, setup);
    await removeTrainingState(outDir);
  }
  const bestModule = await binding.ScriptModule.loadAsync(join(keptDir, CLASSIFIER_FILE), device);
  bestModule.train(false);
  if (!outDir) await rm(bestDir, { recursive: true, force: true });
  return {
    labels: config.labels,
    history: position.history,
    evaluations: position.evaluations,
    best,
    metrics: bestMetrics,
    encoder: run.built.encoder,
    technique: opts.technique,
    trainableParameters: setup.trainableParameters,
    totalParameters: setup.totalParameters,
    trainableEncoderFraction: setup.trainableEncoderFraction,
    unusedParameters: setup.unusedParameters,
    frozenParameters: setup.frozenByOption,
    notes: run.notes,
    trainExamples: run.data.train.encoded.count,
    validationExamples: run.data.validation.encoded.count,
    stoppedEarly: keeper.stoppedEarly,
    skippedBatches: position.skippedBatches,
    skippedSteps: position.skippedBatches,
    outDir,
    classifier: Classifier.fromModule(bestModule, run.tokenizer, config),
  };
}

function writeReport(
  outDir: string,
  opts: ResolvedTrainOptions,
  tokenizerFile: string,
  evaluations: Evaluation[],
  history: EpochMetrics[],
  final: TrainedMetrics,
  config: ClassifierConfig,
  setup: TrainableSet,
): Promise<void> {
  return writeFileAtomic(
    join(outDir, 'report.html'),
    renderReport({
      title: `torch-bert — ${opts.technique} fine-tuning`,
      history,
      evaluations: evaluations.map((e) => ({ ...e })),
      final,
      labels: config.labels,
      settings: {
        encoder: opts.encoder,
        tokenizer: tokenizerFile,
        ...config.hyperparameters,
        trainableParameters: setup.trainableParameters,
      },
      createdAt: config.createdAt,
    }),
  );
}
