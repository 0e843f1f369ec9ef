/**
 * A trained classifier: the TorchScript module (encoder + head), its tokenizer and its
 * config, with `predict()` and `evaluate()`. Loaded from a directory written by `train()`.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClassifierSpec, EncoderInfo, LossOptions, NativeBinding, NativeScriptModule, ProblemType } from '../addon/binding.js';
import { asAbortError, InputError, ModelError, messageOf } from '../addon/errors.js';
import { loadBinding, packageVersion } from '../addon/loader.js';
import {
  afterModelCalls,
  type BatchedEvaluation,
  evaluateInBatches,
  gatherRows,
  INFERENCE_CHUNK,
  labelsAt,
  longestFirstBatches,
  rowsByChunk,
  stepBatch,
  TOKENS_PER_FORWARD,
} from '../data/batching.js';
import {
  type CsvSource,
  checkFilesNamedOnce,
  checkSourceShape,
  type DataSource,
  LABEL_KIND,
  labelIds,
  loadExamples,
  multiLabelTargets,
  regressionTargets,
  sourceFiles,
} from '../data/data.js';
import { type PromptConfig, PromptEncoder, promptSpec } from '../data/prompt-template.js';
import { type EncodedTexts, type TextPairs, TextTokenizer } from '../data/tokenizer.js';
import {
  archiveChecksums,
  CLASSIFIER_FILE,
  CONFIG_FILE,
  fileIdentity,
  resolveArchive,
  resolveClassifierArchive,
  TOKENIZER_FILE,
} from '../files/checkpoint.js';
import { folderKind, kindInWords } from '../files/output-folder.js';
import { checkSameBase } from '../models/base-weights.js';
import { type EncoderSourceInfo, loadEncoderSource } from '../models/encoder-source.js';
import type { ExportFamily } from '../models/export-family.js';
import { isSequenceClassifierFolder, loadSequenceClassifier } from '../models/hf-sequence-classifier.js';
import { localModelFolder, namesHubModel } from '../models/hub.js';
import { checkModelInputs, checkPairTokenTypes, takesTokenTypes, tokenTypesFed } from '../models/model-checks.js';
import type { HeadKind } from '../models/sequence-classification.js';
import {
  type ClassificationMetrics,
  classificationMetrics,
  classThresholds,
  DEFAULT_THRESHOLD,
  type MultiLabelMetrics,
  type MultiLabelThreshold,
  multiLabelMetrics,
  type RegressionMetrics,
  regressionMetrics,
} from '../training/metrics.js';
import {
  checkInteger,
  checkOptionNames,
  type Device,
  type DownloadEvent,
  downloadEvents,
  type Pooling,
  type PredictEvent,
  type ResolvedAdapterOptions,
} from '../training/options.js';
import { bottleneckSpec } from '../training/trainable.js';
import { STATE_DIR } from '../training/training-state.js';

/** config.json of a saved classifier. */
export interface ClassifierConfig {
  format: 'torch-bert-classifier';
  formatVersion: 1;
  /** Class names in id order (for regression, the outputs' names). */
  labels: string[];
  /** What the classifier predicts (absent: single_label_classification, as in configs written before it was recorded). */
  problemType?: ProblemType;
  /**
   * The CSV columns the training data was read from, which `evaluate()` reads by default.
   * Absent when it came as arrays, and in configs written before they were recorded.
   */
  textColumn?: string;
  labelColumn?: string;
  /** The label columns, one per class or output (CsvSource.labelColumns), when the classifier was trained on them. */
  labelColumns?: string[];
  /** The second text's CSV column, for text pairs or a pair prompt ({text_a}/{text_b}), which `evaluate()` reads by default. */
  textPairColumn?: string;
  /**
   * What one example is, for heads other than 'prompt' (whose template says): one text ('text'),
   * or a text and a second text ('text-pair', encoded with the tokenizer's pair template; predict()
   * and evaluate() then need the second texts). Absent: one text (configs written before pairs
   * were recorded). A Hugging Face sequence classifier's is 'text-or-pair': its config does not tell.
   */
  input?: 'text' | 'text-pair' | 'text-or-pair';
  maxLength: number;
  pooling: Pooling;
  headHidden: number;
  /** The head's dropout p (with head 'sequence-classification', the encoder config's when it has one). */
  dropout: number;
  /** The head (absent: 'mlp', and in configs written before the option existed). */
  head?: HeadKind;
  /** With head 'prompt': the template and verbalizer predict/evaluate apply to texts (prompt-template.ts). */
  prompt?: PromptConfig;
  /** With head 'sequence-classification': whose head it is. */
  headFamily?: ExportFamily;
  /** `file`: the encoder as named (a file, folder or Hub id); `source`: what it resolved to (absent in configs written before it was recorded). */
  encoder: EncoderInfo & {
    file: string;
    source?: EncoderSourceInfo;
    /** LoRA and adapter runs: the base encoder's fingerprint (base-weights.ts), checked by loadAdapters. */
    weightDigests?: string[];
  };
  /** What classifier.pt's forward returns: log-probabilities (single-label), logits (multi-label: a sigmoid each), values (regression). */
  output: 'log_probabilities' | 'logits' | 'values';
  libtorchVersion: string;
  torchBertVersion: string;
  hyperparameters: Record<string, unknown>;
  /** Metrics of the saved (best) epoch. */
  metrics: Record<string, number>;
  createdAt: string;
  classifierSha256?: string;
  /** SHA-256 of every archive of the checkpoint, by file name (`classifier.pt`, `adapters.pt`, `head.pt`). */
  archiveSha256?: Record<string, string>;
}

/** What classifier.pt's forward returns for a problem type (config.json's `output`). */
export function outputOf(problemType: ProblemType): ClassifierConfig['output'] {
  return problemType === 'regression' ? 'values' : problemType === 'multi_label_classification' ? 'logits' : 'log_probabilities';
}

/** A single-label classifier's prediction. */
export interface Prediction {
  /** The most probable class name. */
  label: string;
  labelId: number;
  /** Probability of every class, by class name. */
  probabilities: Record<string, number>;
}

/**
 * A multi-label classifier's prediction: a probability per class (a sigmoid each, as transformers'
 * text-classification pipeline gives them), and the classes whose probability is at least 0.5.
 */
export interface MultiLabelPrediction {
  /** The classes that apply (probability ≥ 0.5), in class id order. */
  labels: string[];
  probabilities: Record<string, number>;
}

/** A regression model's prediction: its first output's value (its only one, unless it has several), and every output's by name. */
export interface RegressionPrediction {
  value: number;
  values: Record<string, number>;
}

/** predict()'s result per text for a classifier of problem type `P`. */
export type PredictionOf<P extends ProblemType> = P extends 'regression'
  ? RegressionPrediction
  : P extends 'multi_label_classification'
    ? MultiLabelPrediction
    : Prediction;

/** A regression model's evaluation: its loss (mean squared error), its metrics and its values. */
export interface RegressionEvaluation {
  loss: number;
  metrics: RegressionMetrics;
  examples: number;
  /** Each example's value (the first output's), in input order. */
  values: Float32Array;
}

/** A multi-label classifier's evaluation: its loss (BCEWithLogitsLoss), its metrics and its probabilities. */
export interface MultiLabelEvaluation {
  loss: number;
  metrics: MultiLabelMetrics;
  examples: number;
  /** Each example's probability of each class (a sigmoid each), row-major [examples, classes]. */
  probabilities: Float32Array;
}

/** evaluate()'s result for a classifier of problem type `P`. */
export type EvaluationOf<P extends ProblemType> = P extends 'regression'
  ? RegressionEvaluation
  : P extends 'multi_label_classification'
    ? MultiLabelEvaluation
    : EvaluationResult;

export interface EvaluationResult {
  loss: number;
  accuracy: number;
  /** Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix. */
  metrics: ClassificationMetrics;
  examples: number;
  /** Predicted class id per example, in input order. */
  predictions: Int32Array;
}

export interface LoadAdaptersOptions<P extends ProblemType = 'single_label_classification'> {
  /** The base encoder: a TorchScript file, a Hugging Face model folder or a Hub id (as `train()`'s `encoder`). */
  encoder: string;
  device?: Device;
  /**
   * Build on an encoder whose weights are not those the run was trained on (config.json's
   * fingerprint, base-weights.ts), e.g. a base continued since; refused by default (`OTHER_BASE`).
   */
  allowOtherBase?: boolean;
  /** As loadClassifier's: the problem type (or types) the caller takes (default single_label_classification). */
  problemType?: P | readonly P[];
}

/** Classifier.loadAdapters' option names (plain JavaScript's misspelt keys: options.ts checkOptionNames). */
const LOAD_ADAPTERS_OPTION_NAMES = Object.keys({ encoder: 1, device: 1, allowOtherBase: 1, problemType: 1 } satisfies Record<
  keyof LoadAdaptersOptions,
  1
>);

export interface EvaluationOptions {
  batchSize?: number;
  /** CSV text column. Default: the one the classifier was trained on (config.json), else `text`. */
  textColumn?: string;
  /** CSV label column. Default: the one the classifier was trained on (config.json), else `label`. */
  labelColumn?: string;
  /** CSV label columns, one per class or output (CsvSource.labelColumns), read instead of `labelColumn`. Default: those the classifier was trained on. */
  labelColumns?: readonly string[];
  /** CSV column of the second text, for text pairs or a pair prompt. Default: the one the classifier was trained on. */
  textPairColumn?: string;
  /** A multi-label classifier's: where a class applies, for the metrics (PredictOptions.threshold). Default 0.5. */
  threshold?: MultiLabelThreshold;
  /** Stops tokenizing or evaluating at the next batch; the promise rejects with an AbortError. */
  signal?: AbortSignal;
  /** Called after each batch with how many of the examples are predicted (`PredictEvent`). */
  onProgress?: (event: PredictEvent) => void;
}

export interface PredictOptions {
  batchSize?: number;
  /** Each text's second text: for a classifier trained on text pairs, or a prompt classifier whose template has {text_a} and {text_b}. */
  pairs?: readonly string[];
  /** Stops tokenizing or predicting at the next batch; the promise rejects with an AbortError. */
  signal?: AbortSignal;
  /** Called after each batch with how many of the texts are predicted (`PredictEvent`). */
  onProgress?: (event: PredictEvent) => void;
  /** A multi-label classifier's: a class applies where its sigmoid is at least this (one number, or one per class by name). Default 0.5. */
  threshold?: MultiLabelThreshold;
}

/** What an evaluation pass is given besides its model and its rows. */
interface PassSettings {
  /** The examples' class ids (or a regression model's targets, one each), for the loss and metrics; null to predict only. */
  labels: Int32Array | Float32Array | null;
  signal?: AbortSignal;
  loss?: LossOptions;
  onProgress?: (event: PredictEvent) => void;
}

/**
 * Evaluate `module` on encoded texts in eval mode without autograd (the tutorial trained on
 * its validation set here; we never call backward or step). Texts go longest first, so each
 * batch is padded only to lengths close to its own (results come back in input order).
 */
export function runEvaluation(
  module: NativeScriptModule,
  encoded: EncodedTexts,
  labels: Int32Array | Float32Array | null,
  batchSize: number,
  signal?: AbortSignal,
  loss?: LossOptions,
  padTo?: number,
): Promise<BatchedEvaluation> {
  return evaluateBatches(
    module,
    encoded.count,
    inferenceBatches(encoded.lengths, batchSize, padTo),
    (indices) => gatherRows(encoded, indices, padTo),
    {
      labels,
      signal,
      loss,
    },
  );
}

/**
 * An evaluation pass's batches over rows of `lengths`: the inference token budget
 * (TOKENS_PER_FORWARD, as the frozen encoding), and at most the caller's batchSize rows, which the
 * frozen encoding does not limit.
 */
function inferenceBatches(lengths: Int32Array, batchSize: number, padTo?: number): Int32Array[] {
  return longestFirstBatches(lengths, { tokensPerBatch: TOKENS_PER_FORWARD, maxRows: batchSize, width: padTo }).batches;
}

/**
 * `batches` of `count` examples through `module`, `rowsOf` giving each batch's tokens. Batches run
 * natively off the main thread; the loss is the example-weighted mean of the batch means.
 */
async function evaluateBatches(
  module: NativeScriptModule,
  count: number,
  batches: readonly Int32Array[],
  rowsOf: (indices: Int32Array, batch: number) => EncodedTexts | Promise<EncodedTexts>,
  { labels, signal, loss, onProgress }: PassSettings,
): Promise<BatchedEvaluation> {
  const binding = loadBinding();
  let done = 0;
  return evaluateInBatches(
    count,
    batches,
    async (indices, batch) => {
      const rows = await rowsOf(indices, batch);
      const result = await afterModelCalls(module, () =>
        binding.evalStep(module, stepBatch(rows, labels ? labelsAt(labels, indices, count) : undefined), loss),
      );
      done += indices.length;
      onProgress?.({ type: 'predict', done, total: count });
      return result;
    },
    labels !== null,
    signal,
    lossWeight(labels, loss),
  );
}

/** What the evaluation loss of a batch of these rows divides by: the rows, or the sum of their class weights (single-label). */
export function lossWeight(labels: Int32Array | Float32Array | null, loss: LossOptions | undefined): (rows: Int32Array) => number {
  const weights = loss?.classWeights;
  if (!labels || !weights) return (rows) => rows.length;
  return (rows) => {
    let sum = 0;
    for (const i of rows) sum += weights[labels[i]!]!;
    return sum;
  };
}

/**
 * predict()'s and evaluate()'s `batchSize` (default 32), checked before any text is tokenized: 0
 * or less would cut no rows per batch and the batching would never end; a fraction is no row count.
 */
/**
 * Where a source, the options or the config say a CSV's labels are: one label column or label
 * columns (one per class), whichever it names; undefined when it names neither, so that the next
 * in line decides.
 */
function labelsRead(columns: {
  labelColumn?: string;
  labelColumns?: readonly string[];
}): Pick<CsvSource, 'labelColumn' | 'labelColumns'> | undefined {
  if (columns.labelColumns !== undefined) return { labelColumns: columns.labelColumns };
  return columns.labelColumn !== undefined ? { labelColumn: columns.labelColumn } : undefined;
}

function inferenceBatchSize(batchSize: number | undefined): number {
  if (batchSize === undefined) return 32;
  checkInteger('batchSize', batchSize, 1);
  return batchSize;
}

/** LoRA and adapter runs also save their adapters and head alone (small files) next to the classifier. */
export const ADAPTERS_FILE = 'adapters.pt';
export const HEAD_FILE = 'head.pt';

export function resolveDevice(device: Device | string | undefined): string {
  if (device === undefined || device === 'auto') return loadBinding().cudaIsAvailable() ? 'cuda' : 'cpu';
  if (device === 'cpu' || device === 'cuda' || /^cuda:\d+$/.test(device)) return device;
  throw new InputError(`device must be auto, cpu, cuda or cuda:N; got '${device}'`);
}

/**
 * head.pt's tensors into `module`: every head parameter must be in the file, and every tensor of
 * the file a parameter of the module (the head's, or an encoder LayerNorm an adapter run trained).
 */
function loadHead(binding: NativeBinding, module: NativeScriptModule, headFile: string): void {
  const head = binding.loadTensors(headFile);
  try {
    const params = new Map(module.namedParameters());
    for (const name of params.keys()) {
      if (name.startsWith('head.') && !head[name]) throw new ModelError(`${headFile} lacks ${name}`, { file: headFile });
    }
    for (const [name, saved] of Object.entries(head)) {
      const tensor = params.get(name);
      if (!tensor) throw new ModelError(`${headFile} holds ${name}, which the classifier does not have`, { file: headFile });
      tensor.copyFrom(saved);
    }
  } finally {
    for (const t of Object.values(head)) t.dispose();
  }
}

/**
 * Whether loadClassifier's `dir` names a Hugging Face sequence classifier rather than a folder
 * torch-bert trained: a folder whose config.json's architectures say so, or a Hub id (not a
 * path that exists, nor one written as a path: `./x`, `/x`, `~/x`), resolved through the cache.
 */
async function namesSequenceClassifier(dir: string): Promise<boolean> {
  if (await localModelFolder(dir)) return isSequenceClassifierFolder(dir);
  return namesHubModel(dir);
}

/**
 * Read and check `dir/config.json`; every failure names the file, and what the folder holds
 * instead. `alsoTaken`: what else the caller takes, for the message (loadClassifier's Hugging Face
 * sequence classifiers).
 */
async function readClassifierConfig(dir: string, alsoTaken = ''): Promise<{ config: ClassifierConfig; configPath: string }> {
  const configPath = join(dir, CONFIG_FILE);
  let config: ClassifierConfig;
  try {
    config = JSON.parse(await readFile(configPath, 'utf8')) as ClassifierConfig;
  } catch (err) {
    if (existsSync(join(dir, STATE_DIR))) {
      throw new InputError(
        `${dir} holds no classifier yet, only the state of a training run stopped before its first evaluation: finish the run (resumeFrom / torch-bert train ... --resume ${dir})`,
        // No cause: the missing config.json is the whole story, and --verbose would add nothing.
        { file: configPath },
      );
    }
    throw new InputError(`cannot read classifier config ${configPath}: ${messageOf(err)}`, { file: configPath, cause: err });
  }
  if (typeof config !== 'object' || config === null || config.format !== 'torch-bert-classifier' || !Array.isArray(config.labels)) {
    const holds = await folderKind(dir);
    const instead = holds === null || holds === 'classifier' ? '' : `: ${dir} holds ${kindInWords(holds)}`;
    throw new InputError(
      `${configPath} is not a torch-bert classifier config${instead}; give a folder that torch-bert train wrote (its outDir / --out)${alsoTaken}`,
      {
        file: configPath,
      },
    );
  }
  return { config, configPath };
}

/** The head a classifier's config records (not a prompt's), to be built untrained and given its saved values. */
function recordedHeadSpec(config: ClassifierConfig): ClassifierSpec {
  return {
    numClasses: config.labels.length,
    headHidden: config.headHidden,
    dropout: config.dropout,
    pooling: config.pooling,
    seed: 0,
    ...(config.problemType ? { problemType: config.problemType } : {}),
    ...(config.head === 'sequence-classification' ? { head: config.head, family: config.headFamily } : {}),
  };
}

/**
 * A classifier of problem type `P` (Hugging Face's problem_type: `ProblemType`), which types what
 * predict() and evaluate() return. loadClassifier checks the loaded model's against the `P` it is
 * asked for (single-label classification unless told otherwise).
 */
export class Classifier<P extends ProblemType = 'single_label_classification'> {
  private constructor(
    readonly module: NativeScriptModule,
    readonly tokenizer: TextTokenizer,
    readonly config: ClassifierConfig,
  ) {}

  /** Wrap an in-memory module (used by `train()`). */
  static fromModule(module: NativeScriptModule, tokenizer: TextTokenizer, config: ClassifierConfig): Classifier {
    return new Classifier(module, tokenizer, config);
  }

  /** What the classifier predicts: one class of several, the classes that apply, or values. */
  get problemType(): P {
    return (this.config.problemType ?? 'single_label_classification') as P;
  }

  /**
   * Load a directory written by `train()`. A save may be running meanwhile (another process
   * training into the directory): the archive loaded is always the one config.json's checksum
   * names, and a load that raced with a save's rename is retried.
   */
  static async load<P extends ProblemType = 'single_label_classification'>(
    dir: string,
    options: LoadClassifierOptions<P> = {},
  ): Promise<Classifier<P>> {
    if (typeof dir !== 'string' || dir === '') {
      throw new InputError(
        `loadClassifier(dir): dir must be the path of a folder torch-bert train wrote; got ${dir === '' ? "''" : typeof dir}`,
      );
    }
    checkOptionNames('loadClassifier()', options, ['device', 'onProgress', 'problemType']);
    return Classifier.ofProblemType(await Classifier.loadAny(dir, options), options.problemType, dir, 'loadClassifier(dir, { problemType:');
  }

  /**
   * `loaded`, when its problem type is one `asked` (default: single-label classification), typed so;
   * else disposed, and an InputError naming its problem type and the option (`how`) that loads it.
   */
  private static ofProblemType<P extends ProblemType>(
    loaded: Classifier<ProblemType>,
    asked: P | readonly P[] | undefined,
    dir: string,
    how: string,
  ): Classifier<P> {
    const types = [asked ?? 'single_label_classification'].flat() as ProblemType[];
    if (!types.includes(loaded.problemType)) {
      loaded.dispose();
      throw new InputError(
        `${dir} is a ${PROBLEM_IN_WORDS[loaded.problemType]} (problem_type ${loaded.problemType}), not a ${types.map((p) => PROBLEM_IN_WORDS[p]).join(' or ')}: ` +
          `load it with ${how} '${loaded.problemType}' }), whose predict() gives ${PREDICTS[loaded.problemType]}`,
        { code: 'PROBLEM_TYPE_MISMATCH' },
      );
    }
    return loaded as unknown as Classifier<P>;
  }

  /** load() of any problem type. */
  private static async loadAny(dir: string, options: LoadClassifierOptions<ProblemType>): Promise<Classifier<ProblemType>> {
    if (await namesSequenceClassifier(dir)) return Classifier.fromHuggingFace(dir, options);
    for (let attempt = 1; ; attempt++) {
      const loaded = await Classifier.loadOnce(dir, options);
      if (loaded) return loaded;
      if (attempt === 5) {
        throw new ModelError(`${join(dir, CLASSIFIER_FILE)} kept being replaced while it loaded (is a run saving into ${dir}?)`, {
          file: join(dir, CLASSIFIER_FILE),
        });
      }
    }
  }

  /** One attempt of `load`: null when the archive was replaced while it loaded. */
  private static async loadOnce(dir: string, options: { device?: Device }): Promise<Classifier<ProblemType> | null> {
    const { config, configPath } = await readClassifierConfig(dir, ', or a Hugging Face sequence classifier');
    // classifier.pt, or the content-addressed archive of a save killed before its last rename;
    // either way the one whose checksum config.json records.
    const archive = await resolveClassifierArchive(dir, config.classifierSha256);
    const modelPath = archive.path;
    const tokenizer = await TextTokenizer.load(join(dir, TOKENIZER_FILE));
    // Outside the try: an addon that cannot load is the install's problem, not this classifier's,
    // and its NativeLoadError says how to fix it.
    const binding = loadBinding();
    let module: NativeScriptModule;
    try {
      module = await binding.ScriptModule.loadAsync(modelPath, resolveDevice(options.device));
    } catch (err) {
      if ((await fileIdentity(modelPath).catch(() => null)) !== archive.identity) return null;
      throw new ModelError(`cannot load classifier ${modelPath}: ${messageOf(err)}`, { file: modelPath, cause: err });
    }
    if ((await fileIdentity(modelPath).catch(() => null)) !== archive.identity) {
      module.dispose();
      return null;
    }
    module.train(false);
    try {
      await checkModelInputs(module, {
        kind: 'classifier',
        modelFile: modelPath,
        tokenizer,
        maxLength: config.maxLength,
        maxLengthFrom: `maxLength in ${configPath}`,
        tokenTypes: tokenTypesFed(config.encoder?.arity),
      });
    } catch (err) {
      module.dispose();
      throw err;
    }
    return new Classifier(module, tokenizer, config);
  }

  /**
   * A Hugging Face sequence classifier (hf-sequence-classifier.ts), with the config.json a
   * classifier torch-bert trained would have: its classes, max length and head; no training
   * hyperparameters or metrics (it was not trained here).
   */
  private static async fromHuggingFace(spec: string, options: LoadClassifierOptions<ProblemType>): Promise<Classifier<ProblemType>> {
    const binding = loadBinding();
    const { module, encoder, encoderInfo, head, labels, problemType } = await loadSequenceClassifier(
      spec,
      resolveDevice(options.device),
      downloadEvents(options.onProgress),
    );
    const config: ClassifierConfig = {
      format: 'torch-bert-classifier',
      formatVersion: 1,
      labels,
      problemType,
      maxLength: encoder.maxLength,
      pooling: 'cls',
      headHidden: encoderInfo.hiddenSize,
      dropout: head.dropout,
      head: 'sequence-classification',
      headFamily: head.family,
      input: 'text-or-pair',
      encoder: { ...encoderInfo, file: spec, source: encoder.source },
      output: outputOf(problemType),
      libtorchVersion: binding.versions().libtorch,
      torchBertVersion: packageVersion(),
      hyperparameters: {},
      metrics: {},
      createdAt: new Date().toISOString(),
    };
    return new Classifier(module, encoder.tokenizer, config);
  }

  /**
   * Rebuild a LoRA- or adapter-trained classifier from its small files: the base encoder it was
   * trained on, plus `adapters.pt` and `head.pt` from the run's directory (LoRA unmerged: the
   * adapters stay separate from the weights, e.g. to swap adapters on one base encoder). A prompt
   * run (`head: 'prompt'`) is rebuilt on the base folder's MLM head, with its recorded prompt.
   */
  static async loadAdapters<P extends ProblemType = 'single_label_classification'>(
    dir: string,
    options: LoadAdaptersOptions<P>,
  ): Promise<Classifier<P>> {
    if (typeof options?.encoder !== 'string') {
      throw new InputError(
        `Classifier.loadAdapters(dir, { encoder }): encoder names the base the run was trained on (a folder, Hub id or TorchScript file)`,
      );
    }
    checkOptionNames('Classifier.loadAdapters()', options, LOAD_ADAPTERS_OPTION_NAMES);
    const { config, configPath } = await readClassifierConfig(dir);
    const lora = config.hyperparameters.lora as { rank: number; alpha: number; dropout: number; targets: string[] } | undefined;
    const adapter = config.hyperparameters.adapter as ResolvedAdapterOptions | undefined;
    if (!lora && !adapter) {
      throw new InputError(`${dir} is not a LoRA or adapter run (its config has no lora or adapter settings)`, { file: configPath });
    }
    const binding = loadBinding();
    const tokenizer = await TextTokenizer.load(join(dir, TOKENIZER_FILE));
    const prompt = config.head === 'prompt' ? config.prompt : undefined;
    if (config.head === 'prompt') {
      if (!prompt) throw new ModelError(`${configPath} says head 'prompt' but records no prompt`, { file: configPath });
      // The recorded label ids must be this tokenizer's words (a clear error before any model is built).
      PromptEncoder.fromConfig(tokenizer, prompt);
    }
    const module = await Classifier.baseClassifier(dir, options, config, configPath, tokenizer, prompt);
    try {
      module.setRequiresGrad(false);
      // The files config.json's checksums name: the public ones, or those of a save killed
      // between its commit and its last renames (see checkpoint.ts).
      const shas = archiveChecksums(config);
      const adapters = lora ? binding.applyLora(module, { ...lora, seed: 0 }) : binding.applyAdapters(module, bottleneckSpec(adapter!, 0));
      adapters.load((await resolveArchive(dir, ADAPTERS_FILE, shas.get(ADAPTERS_FILE))).path);
      // The head, and the encoder's LayerNorms where they trained too (adapter.trainLayerNorm).
      loadHead(binding, module, (await resolveArchive(dir, HEAD_FILE, shas.get(HEAD_FILE))).path);
    } catch (err) {
      module.dispose();
      throw err;
    }
    module.train(false);
    return Classifier.ofProblemType(
      new Classifier(module, tokenizer, config),
      options.problemType,
      dir,
      'Classifier.loadAdapters(dir, { encoder, problemType:',
    );
  }

  /** loadAdapters' classifier before its files: the base encoder and a head of the recorded kind (untrained). */
  private static async baseClassifier(
    dir: string,
    options: { encoder: string; device?: Device; allowOtherBase?: boolean },
    config: ClassifierConfig,
    configPath: string,
    tokenizer: TextTokenizer,
    prompt: ClassifierConfig['prompt'],
  ): Promise<NativeScriptModule> {
    const { module: encoder, mlmHead } = await loadEncoderSource(options.encoder, {
      device: resolveDevice(options.device),
      tokenizer,
      maxLength: config.maxLength,
      fallbackMaxLength: config.maxLength,
      maxLengthFrom: `maxLength in ${configPath}`,
      // A prompt run's head is the base checkpoint's MLM head (its transform and decoder), then head.pt's trained values.
      mlmHead: prompt !== undefined,
    });
    try {
      if (!options.allowOtherBase)
        checkSameBase(config.encoder.weightDigests, encoder, {
          encoder: options.encoder,
          trainedOn: config.encoder.file,
          dir,
          configPath,
        });
      if (prompt && !mlmHead) {
        throw new InputError(
          `${dir} is a prompt classifier, and the encoder ${options.encoder} has no masked-language-model head to rebuild it on: name the base model folder the run was trained on`,
          { code: 'NO_MLM_HEAD' },
        );
      }
      return loadBinding().buildClassifier(encoder, prompt ? promptSpec(mlmHead!, prompt) : recordedHeadSpec(config)).module;
    } catch (err) {
      encoder.dispose();
      throw err;
    } finally {
      // The classifier holds what it needs of the MLM head (its transform's modules).
      mlmHead?.dispose();
    }
  }

  get labels(): string[] {
    return this.config.labels;
  }

  /**
   * Each text's prediction: the most probable class and every class's probability (single-label
   * classification), the classes that apply (multi-label), or the values (regression).
   */
  async predict(texts: readonly string[], options: PredictOptions = {}): Promise<PredictionOf<P>[]> {
    if (!Array.isArray(texts)) throw new InputError('predict() takes an array of texts');
    // Index loops, not forEach / some: a sparse array's hole must be caught, not skipped (a text's
    // became a row of padding; a second text's, the word 'undefined').
    for (let i = 0; i < texts.length; i++) if (typeof texts[i] !== 'string') throw new InputError(`text ${i} is not a string`);
    const batchSize = inferenceBatchSize(options.batchSize);
    const { pairs } = options;
    if (
      pairs !== undefined &&
      (!Array.isArray(pairs) || pairs.length !== texts.length || Array.from(pairs).some((t) => typeof t !== 'string'))
    ) {
      throw new InputError(`predict(): pairs must be ${texts.length} strings, one per text`);
    }
    const thresholds = this.thresholds(options.threshold, 'predict');
    const result = await this.whileUsable('predict', () => this.evaluateTexts(texts, pairs ?? null, null, batchSize, options));
    const scores = this.problemType === 'regression' ? result.values : result.probabilities;
    this.checkClassCount(scores, texts.length);
    const names = this.labels;
    const row = (i: number) => Object.fromEntries(names.map((name, c) => [name, scores[i * names.length + c]!]));
    return Array.from(texts, (_, i): Prediction | MultiLabelPrediction | RegressionPrediction => {
      if (this.problemType === 'regression') return { value: scores[i * names.length]!, values: row(i) };
      if (this.problemType === 'multi_label_classification') {
        return { labels: names.filter((_, c) => scores[i * names.length + c]! >= thresholds![c]!), probabilities: row(i) };
      }
      const labelId = result.predictions[i]!;
      return { label: names[labelId]!, labelId, probabilities: row(i) };
    }) as PredictionOf<P>[];
  }

  /**
   * Loss and metrics on labelled data: accuracy, macro-F1 and the rest for single-label
   * classification (labels must be among the classifier's classes); mean squared error, Pearson
   * and Spearman for regression (labels are the target values). CSV columns: the source's own,
   * else `options`', else those the classifier was trained on.
   */
  async evaluate(data: DataSource, options: EvaluationOptions = {}): Promise<EvaluationOf<P>> {
    checkSourceShape(data);
    const batchSize = inferenceBatchSize(options.batchSize);
    this.thresholds(options.threshold, 'evaluate');
    const textColumn = options.textColumn ?? this.config.textColumn;
    const labels = labelsRead(options) ?? labelsRead(this.config) ?? {};
    const textPairColumn = options.textPairColumn ?? this.config.textPairColumn;
    const source: DataSource =
      typeof data === 'string' || Array.isArray(data)
        ? { csv: data as string | readonly string[], textColumn, ...labels, textPairColumn }
        : 'csv' in data
          ? {
              ...data,
              textColumn: data.textColumn ?? textColumn,
              ...(labelsRead(data) ?? labels),
              textPairColumn: data.textPairColumn ?? textPairColumn,
            }
          : data;
    await checkFilesNamedOnce(sourceFiles(source));
    const problem = this.problemType as ProblemType;
    const raw = await loadExamples(source, { labelKind: LABEL_KIND[problem] });
    const evaluateLabels = (labels: Int32Array | Float32Array) =>
      this.whileUsable('evaluate', () => this.evaluateTexts(raw.texts, raw.pairs ?? null, labels, batchSize, options));
    if (problem === 'multi_label_classification') {
      const targets = multiLabelTargets(raw, this.labels);
      const result = await evaluateLabels(targets);
      this.checkClassCount(result.probabilities, raw.texts.length);
      const evaluation: MultiLabelEvaluation = {
        loss: result.loss!,
        metrics: multiLabelMetrics(result.probabilities, targets, this.labels, options.threshold),
        examples: raw.texts.length,
        probabilities: result.probabilities,
      };
      return evaluation as EvaluationOf<P>;
    }
    if (problem === 'regression') {
      const targets = regressionTargets(raw, this.labels);
      const result = await evaluateLabels(targets);
      this.checkClassCount(result.values, raw.texts.length);
      const evaluation: RegressionEvaluation = {
        loss: result.loss!,
        metrics: regressionMetrics(result.values, targets, this.labels),
        examples: raw.texts.length,
        values: result.values,
      };
      return evaluation as EvaluationOf<P>;
    }
    const ids = labelIds(raw.labels!, this.labels, raw.origin);
    const result = await evaluateLabels(ids);
    this.checkClassCount(result.probabilities, raw.texts.length);
    const evaluation: EvaluationResult = {
      loss: result.loss!,
      accuracy: result.accuracy!,
      metrics: classificationMetrics(result.predictions, ids, this.labels),
      examples: raw.texts.length,
      predictions: result.predictions,
    };
    return evaluation as EvaluationOf<P>;
  }

  /** A multi-label classifier's class thresholds (`threshold`, default 0.5), checked before any work; null for the other problem types, which refuse one. */
  private thresholds(threshold: MultiLabelThreshold | undefined, method: 'predict' | 'evaluate'): Float64Array | null {
    if (this.problemType === 'multi_label_classification') return classThresholds(threshold ?? DEFAULT_THRESHOLD, this.labels);
    if (threshold !== undefined) {
      throw new InputError(
        `${method}(): threshold decides which classes of a multi-label classifier apply; this classifier's problem type is ${this.problemType}`,
      );
    }
    return null;
  }

  /** The model's classes against config.json's labels: with a label added or removed there, each probability would be named wrongly. */
  private checkClassCount(probabilities: Float32Array, count: number): void {
    const classes = count === 0 ? this.labels.length : probabilities.length / count;
    if (classes !== this.labels.length) {
      throw new ModelError(
        `the classifier's model gives ${classes} classes but its config.json lists ${this.labels.length} labels (${this.labels.join(', ')}): the config was edited or comes from another save; give it the labels it was trained with`,
      );
    }
  }

  /**
   * The evaluation pass of predict() and evaluate() over `texts`. Texts that fit one chunk
   * (`INFERENCE_CHUNK`) are tokenized at once; more are first measured (each row's length, no
   * rows kept), cut into the batches a pass over them all at once would run, and then tokenized
   * a chunk of those batches at a time on the main thread: the same batches, so the same results,
   * holding one chunk's rows instead of every text's.
   */
  private async evaluateTexts(
    texts: readonly string[],
    pairs: readonly string[] | null,
    labels: Int32Array | Float32Array | null,
    batchSize: number,
    { signal, onProgress }: { signal?: AbortSignal; onProgress?: (event: PredictEvent) => void },
  ): Promise<BatchedEvaluation> {
    const settings = { labels, signal, onProgress };
    const rowsPerChunk = INFERENCE_CHUNK.rows;
    if (texts.length <= rowsPerChunk) {
      const encoded = await this.encode(texts, pairs, signal);
      const batches = inferenceBatches(encoded.lengths, batchSize);
      return evaluateBatches(this.module, texts.length, batches, (indices) => gatherRows(encoded, indices), settings);
    }
    const batches = inferenceBatches(await this.rowLengths(texts, pairs, signal), batchSize);
    // One thread: starting workers for every chunk costs more than it saves (4,096 short texts:
    // 1.2 s with 2 workers, 0.3 s on the main thread).
    const rowsOf = rowsByChunk(batches, rowsPerChunk, (rows) => this.encode(pick(texts, rows), pairs && pick(pairs, rows), signal, 1));
    return evaluateBatches(this.module, texts.length, batches, (_, batch) => rowsOf(batch), settings);
  }

  private promptEncoder: PromptEncoder | undefined;
  /** The token type table checked against the tokenizer's pair template (once: neither changes; a pass over many texts encodes a chunk at a time). */
  private pairTokenTypesChecked = false;

  /** The recorded prompt's encoder with head 'prompt', else null (the tokenizer alone). */
  private promptFor(): PromptEncoder | null {
    const prompt = this.config.prompt;
    if (!prompt) return null;
    this.promptEncoder ??= PromptEncoder.fromConfig(this.tokenizer, prompt);
    return this.promptEncoder;
  }

  /**
   * Second texts as the tokenizer encodes them for this classifier's input (config.json's `input`):
   * required by one trained on text pairs, refused by one trained on single texts; their segments
   * kept where the encoder takes token_type_ids.
   */
  private textPairs(pairs: readonly string[] | null): TextPairs | undefined {
    const input = this.config.input ?? 'text';
    if (pairs === null) {
      if (input !== 'text-pair') return undefined;
      throw new InputError(
        "this classifier was trained on text pairs: give each text its second text (predict's pairs, evaluate's textPairColumn or data.pairs, --text-pair-column)",
      );
    }
    if (input === 'text') {
      throw new InputError(
        "this classifier reads one text per example (it was trained on single texts): leave the second texts (a text pair column, or predict's pairs) out",
      );
    }
    const tokenTypes = takesTokenTypes(this.config.encoder.arity);
    if (tokenTypes && !this.pairTokenTypesChecked) {
      checkPairTokenTypes(this.module, this.tokenizer, `the classifier of encoder ${this.config.encoder.file}`);
      this.pairTokenTypesChecked = true;
    }
    return { second: pairs, tokenTypes };
  }

  /** Texts → rows: through the recorded prompt with head 'prompt', else the tokenizer alone (on `threads`, as encodeBatchAsync's). */
  private encode(texts: readonly string[], pairs: readonly string[] | null, signal?: AbortSignal, threads?: number): Promise<EncodedTexts> {
    const prompt = this.promptFor();
    if (prompt) return prompt.encodeAsync(texts, pairs, this.config.maxLength, signal);
    return this.tokenizer.encodeBatchAsync(texts, this.config.maxLength, { signal, threads, pairs: this.textPairs(pairs) });
  }

  /** The lengths of `encode`'s rows, without the rows. */
  private rowLengths(texts: readonly string[], pairs: readonly string[] | null, signal?: AbortSignal): Promise<Int32Array> {
    const prompt = this.promptFor();
    if (prompt) return prompt.rowLengthsAsync(texts, pairs, this.config.maxLength, signal);
    return this.tokenizer.rowLengthsAsync(texts, this.config.maxLength, { signal, pairs: this.textPairs(pairs) });
  }

  /**
   * `run` on the model, which dispose() frees: a call after it, or a dispose() while it runs, is
   * an error saying so (the native one names an internal step and a ScriptModule). An abort
   * between batches is the signal's own DOMException: it becomes this library's AbortError, as an
   * abort while tokenizing is.
   */
  private async whileUsable<T>(method: string, run: () => Promise<T>): Promise<T> {
    const disposed = () =>
      new InputError(`${method}(): this Classifier has been disposed (dispose() frees its model); load it again with loadClassifier()`);
    if (this.module.disposed) throw disposed();
    try {
      return await run();
    } catch (err) {
      if (this.module.disposed) throw disposed();
      throw asAbortError(err, `${method}() was aborted`);
    }
  }

  /** Free the native module now instead of at garbage collection. */
  dispose(): void {
    this.module.dispose();
  }
}

/** The items of `all` at `indices`, in that order. */
function pick(all: readonly string[], indices: Int32Array): string[] {
  return Array.from(indices, (i) => all[i]!);
}

/** Every problem type a classifier may have. */
export const PROBLEM_TYPES: readonly ProblemType[] = ['single_label_classification', 'multi_label_classification', 'regression'];

/** A problem type in a message: what kind of model it is, and what its predict() gives. */
const PROBLEM_IN_WORDS: Record<ProblemType, string> = {
  single_label_classification: 'single-label classifier',
  multi_label_classification: 'multi-label classifier',
  regression: 'regression model',
};
const PREDICTS: Record<ProblemType, string> = {
  single_label_classification: 'a class and its probabilities per text',
  multi_label_classification: 'the classes that apply and a probability per class',
  regression: 'values',
};

export interface LoadClassifierOptions<P extends ProblemType = 'single_label_classification'> {
  device?: Device;
  /**
   * The problem type (or types) the caller takes, which types predict() and evaluate() (default
   * single_label_classification): a model of another is refused with a message naming its own.
   */
  problemType?: P | readonly P[];
  /**
   * A Hugging Face sequence classifier named by Hub id: called after each chunk of its files'
   * download (none once they are in the cache), as train()'s `onProgress` is (`DownloadEvent`).
   */
  onProgress?: (event: DownloadEvent) => void;
}

/**
 * Load a classifier directory written by `train()` (classifier.pt, config.json, tokenizer.json),
 * or a Hugging Face sequence classifier (a folder or Hub id).
 */
export function loadClassifier<P extends ProblemType = 'single_label_classification'>(
  dir: string,
  options: LoadClassifierOptions<P> = {},
): Promise<Classifier<P>> {
  return Classifier.load(dir, options);
}
