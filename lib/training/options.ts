/**
 * Options of `train()`. The defaults are the seed tutorial's job (frozen bert-base-uncased +
 * Linear(768,512)-ReLU-Dropout(0.1)-Linear(512,C), AdamW lr 1e-5, batch 32, 5 epochs, max
 * length 250, stratified 80/20 split with seed 42, best weights by validation loss) except in
 * the optimiser's details: gradients are clipped to norm 1.0 (`maxGradNorm`, as Hugging Face's
 * Trainer; the seed did not clip), and AdamW's weight decay and epsilon are torch.optim.AdamW's
 * 0.01 and 1e-8 (the seed's transformers.AdamW had 0 and 1e-6).
 */
import { availableParallelism } from 'node:os';
import type { AdapterActivation, AdapterConfig, Precision } from '../addon/binding.js';
import { InputError } from '../addon/errors.js';
import { SCHEDULES, type Schedule } from '../data/batching.js';
import type { DataSource } from '../data/data.js';
import { parseVerbalizer, type VerbalizerSpec } from '../data/prompt-template.js';
import type { DownloadProgress } from '../models/hub.js';
import { HEAD_KINDS, type HeadKind } from '../models/sequence-classification.js';

export type Pooling = 'cls' | 'mean';
export type Technique = 'frozen' | 'full' | 'lora' | 'adapter';
/**
 * Picks the best checkpoint: the validation loss, or a metric of the problem type
 * (classification: accuracy, macroF1; regression: pearson, spearman; token classification also
 * f1, seqeval's entity F1).
 */
export type BestMetric = 'loss' | 'accuracy' | 'macroF1' | 'f1' | 'exactMatch' | 'pearson' | 'spearman';

/** train()'s options of any problem type, as the library reads them. */
export type AnyTrainOptions = TrainOptions<TrainProblemType>;

/**
 * What train() learns (Hugging Face's problem_type): one class of several (default), a value per
 * text (`regression`), or the classes that apply to each text (`multi_label_classification`).
 */
export type TrainProblemType = 'single_label_classification' | 'regression' | 'multi_label_classification';
export type Device = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;

/**
 * Emitted after every training batch: with `gradientAccumulationSteps` N, N per optimizer step.
 * Not for a batch skipped for a NaN/Inf loss (`onNonFinite: 'skip'`).
 */
export interface BatchEvent {
  type: 'batch';
  epoch: number;
  /** 1-based batch within the epoch. */
  batch: number;
  /** Batches in the epoch. */
  batchesPerEpoch: number;
  /**
   * The learning rate of the optimizer step this batch belongs to: `learningRate` times the
   * schedule's factor (warmup, decay). A group with its own rate (`encoderLearningRate`) follows the same factor.
   */
  learningRate: number;
  /** Mean loss of this batch. */
  loss: number;
  /** Running mean training loss of the epoch so far. */
  epochLoss: number;
  examplesPerSecond: number;
  /** Estimated seconds until the epoch's training batches end. */
  etaSeconds: number;
}

/**
 * The batch event under its old name, emitted right after each `BatchEvent` with the same
 * content for one release, so that listeners written for it keep working.
 * @deprecated Listen for `type: 'batch'` (`BatchEvent`): `step` is `batch`, `stepsPerEpoch` is
 * `batchesPerEpoch` (they count batches, not optimizer steps).
 */
export interface StepEvent {
  type: 'step';
  epoch: number;
  /** 1-based batch within the epoch. */
  step: number;
  /** Batches in the epoch. */
  stepsPerEpoch: number;
  /** Mean loss of this batch. */
  loss: number;
  /** Running mean training loss of the epoch so far. */
  epochLoss: number;
  examplesPerSecond: number;
  /** Estimated seconds until the epoch's training batches end. */
  etaSeconds: number;
}

/** Emitted after every epoch's validation. */
export interface EpochEvent extends EpochMetrics {
  type: 'epoch';
  epochs: number;
}

/** Emitted after every evaluation (each epoch's end, and every `evaluateEvery` steps). */
export interface EvaluationEvent extends Evaluation {
  type: 'evaluation';
}

/** Emitted while the frozen technique encodes the data once. */
export interface EncodeEvent {
  type: 'encode';
  split: 'train' | 'validation';
  done: number;
  total: number;
  /** True when the features came from the on-disk cache. */
  fromCache: boolean;
}

/**
 * Emitted as a Hub id's files download, before anything else (nothing for a model already in the
 * Hugging Face cache): after each chunk of each file, the last with `received === total`.
 */
export interface DownloadEvent extends DownloadProgress {
  type: 'download';
}

export type ProgressEvent = BatchEvent | StepEvent | EpochEvent | EvaluationEvent | EncodeEvent | DownloadEvent;

/**
 * Sent to `predict()`'s and `evaluate()`'s `onProgress` (not train()'s) after each batch: `done` of
 * the `total` texts are predicted; the last has `done === total` (none for no texts). Batches run
 * longest text first, so the first ones are the slowest.
 */
export interface PredictEvent {
  type: 'predict';
  done: number;
  total: number;
}

/** A Hub download's progress sent to `onProgress` as `DownloadEvent`s (none without a listener). */
export function downloadEvents(onProgress: ((event: DownloadEvent) => void) | undefined): ((p: DownloadProgress) => void) | undefined {
  return onProgress && ((progress) => onProgress({ type: 'download', ...progress }));
}

/** One validation pass. */
export interface Evaluation {
  epoch: number;
  /** Optimizer steps done when it ran. */
  step: number;
  validationLoss: number;
  /** Classification: the share of examples whose class is the label's. */
  validationAccuracy?: number;
  /** Classification: the F1 averaged over the classes (token classification: over the entity types). */
  validationMacroF1?: number;
  /** Token classification: seqeval's F1 over the entities (micro). Question answering: SQuAD's F1 (a fraction). */
  validationF1?: number;
  /** Question answering: SQuAD's exact match (a fraction). */
  validationExactMatch?: number;
  /** Regression: Pearson's r of the values and the targets. */
  validationPearson?: number;
  /** Regression: Spearman's ρ (ties by their average rank). */
  validationSpearman?: number;
  /** Whether it improved the best metric (and was checkpointed). */
  isBest: boolean;
}

/**
 * The options every task trainer takes for its loop and run — pretrain(), trainTokenClassifier(),
 * trainQuestionAnswering() — as train() takes them. Their defaults are each task's (its
 * `*_DEFAULTS`: the Trainer's 3 epochs, 8 per batch, 5e-5 and 'linear', as Hugging Face's
 * run_mlm.py, run_ner.py and run_qa.py run it), else train()'s.
 */
export interface TaskLoopOptions {
  epochs?: number;
  /** Examples (rows, sentences, windows) per batch and rank. */
  batchSize?: number;
  learningRate?: number;
  weightDecay?: number;
  betas?: [number, number];
  eps?: number;
  /** `constant`, `linear` or `cosine` (TrainOptions.schedule). */
  schedule?: Schedule;
  warmupRatio?: number;
  maxGradNorm?: number;
  gradientAccumulationSteps?: number;
  precision?: Precision;
  device?: Device;
  seed?: number;
  evaluateEvery?: 'epoch' | number;
  earlyStoppingPatience?: number;
  onNonFinite?: 'stop' | 'skip';
  /** The out dir of an interrupted run: continues it exactly. */
  resumeFrom?: string;
  threads?: number;
  /**
   * Data-parallel training (lib/training/distributed.ts), as train()'s: 'auto' (default) joins
   * the process group when torchrun's variables are set; each rank takes its share of every
   * epoch's examples, `batchSize` per rank; rank 0 alone writes the folder, state and progress.
   */
  distributed?: 'auto' | 'off';
  /** Seconds a rank waits for the others before failing. Default 300. */
  distributedTimeout?: number;
  onProgress?: (event: ProgressEvent) => void;
  signal?: AbortSignal;
}

/** TaskLoopOptions' names (for plain JavaScript's misspelt keys, with each task's own). */
export const TASK_LOOP_OPTION_NAMES = Object.keys({
  epochs: 1,
  batchSize: 1,
  learningRate: 1,
  weightDecay: 1,
  betas: 1,
  eps: 1,
  schedule: 1,
  warmupRatio: 1,
  maxGradNorm: 1,
  gradientAccumulationSteps: 1,
  precision: 1,
  device: 1,
  seed: 1,
  evaluateEvery: 1,
  earlyStoppingPatience: 1,
  onNonFinite: 1,
  resumeFrom: 1,
  threads: 1,
  distributed: 1,
  distributedTimeout: 1,
  onProgress: 1,
  signal: 1,
} satisfies Record<keyof TaskLoopOptions, 1>);

export interface LoraOptions {
  /** Rank r of the adapters. Default 8. */
  rank?: number;
  /** Scale numerator: the update is (alpha / r)·B·A. Default 16. */
  alpha?: number;
  /** Dropout on the adapter path, as PEFT's lora_dropout: on each element of the adapter's input, in training. Default 0. */
  dropout?: number;
  /**
   * Linear modules to adapt, by path suffix. Default the attention query and value of every layer
   * (`attention.self.query`, `attention.self.value`; a DistilBERT model folder's `attention.q_lin`, `attention.v_lin`).
   */
  targets?: string[];
}

/** Bottleneck adapters (technique `adapter`): h + up(act(down(h))) after chosen sub-layers of every encoder layer. */
export interface AdapterOptions {
  /**
   * Where: `houlsby` (default) after the attention output and the feed-forward output of every
   * layer, `pfeiffer` after the feed-forward output only; each before its residual LayerNorm.
   */
  config?: AdapterConfig;
  /** Bottleneck width. Default 64 (when `reductionFactor` is not given). */
  size?: number;
  /** Bottleneck width as floor(hidden / reductionFactor), AdapterHub's `reduction_factor`; instead of `size`. */
  reductionFactor?: number;
  /** Non-linearity. Default AdapterHub's for the config: `swish` for houlsby, `relu` for pfeiffer. */
  activation?: AdapterActivation;
  /** Also train the encoder's LayerNorm weights and biases, as Houlsby et al. did. Default false. */
  trainLayerNorm?: boolean;
}

export interface ResolvedAdapterOptions {
  config: AdapterConfig;
  /** null when `reductionFactor` decides the width. */
  size: number | null;
  reductionFactor: number | null;
  activation: AdapterActivation;
  trainLayerNorm: boolean;
}

/** An epoch's record: its training loss and its end-of-epoch evaluation (classification's or regression's metrics, as `Evaluation`'s). */
export interface EpochMetrics {
  epoch: number;
  trainLoss: number;
  /** Classification: the share of training examples predicted right (each batch's, before its step). */
  trainAccuracy?: number;
  validationLoss: number;
  validationAccuracy?: number;
  /** Wall seconds of the epoch (training + validation). */
  seconds: number;
  validationMacroF1?: number;
  validationF1?: number;
  validationExactMatch?: number;
  validationPearson?: number;
  validationSpearman?: number;
  /** Whether this epoch's end-of-epoch evaluation set a new best (and was checkpointed). */
  isBest: boolean;
}

/** train()'s options; `P`, the problem type, types the result (`TrainResult<P>`): single-label classification unless `problemType` says otherwise. */
export interface TrainOptions<P extends TrainProblemType = 'single_label_classification'> {
  /** Training data: a CSV path, `{ csv, textColumn, labelColumn }`, or `{ texts, labels }`. */
  data: DataSource;
  /** Validation data. Default: a stratified `validationSplit` share of `data`. */
  validationData?: DataSource;
  /**
   * The encoder: a TorchScript file (forward(input_ids, attention_mask[, token_type_ids]) →
   * [B, T, H] first), a Hugging Face model folder (config.json + model.safetensors or
   * pytorch_model.bin, sharded or not; BERT, RoBERTa/XLM-R/CamemBERT, DistilBERT), or a Hub id
   * (`name`, `org/name`, `@revision`) resolved through the Hugging Face cache. An existing local
   * path wins over a Hub id; `./name` is always local.
   */
  encoder: string;
  /**
   * Hugging Face `tokenizer.json` matching the encoder's vocabulary, or a BERT `vocab.txt` (read
   * with the `tokenizer_config.json` and `special_tokens_map.json` beside it). Default: the model folder's
   * own (tokenizer.json, or vocab.txt with tokenizer_config.json); required with a TorchScript file.
   */
  tokenizer?: string;
  /** Directory for the best checkpoint (classifier.pt, config.json, tokenizer.json, history.json). Default: not saved. */
  outDir?: string;
  /** Class names in id order (integer labels that are not among them are ids into them). Default: inferred (integer labels → ids 0..max; names → sorted). */
  labels?: string[];
  /**
   * `frozen` (the seed's feature extraction: the encoder runs once per example, only the head
   * trains), `full` (every encoder parameter trains too, at `encoderLearningRate`), `lora`
   * (low-rank adapters on the encoder's attention, plus the head), or `adapter` (bottleneck
   * adapters after the encoder's sub-layers, plus the head). Default `frozen`.
   */
  technique?: Technique;
  /** Learning rate of the encoder's parameters with `full`. Default: `learningRate`. */
  encoderLearningRate?: number;
  /** LoRA settings (technique `lora`). */
  lora?: LoraOptions;
  /** Bottleneck adapter settings (technique `adapter`). */
  adapter?: AdapterOptions;
  /**
   * Technique `full`: encoder parameters to keep frozen, by prefix of the encoder's own
   * parameter names, e.g. `['embeddings.']`, or the first two layers of a BERT with
   * `['embeddings.', 'encoder.layer.0.', 'encoder.layer.1.']` (end a layer's prefix with a dot:
   * `encoder.layer.1` would match layers 10-19 too). Each prefix must match a parameter.
   * Gradient flags stored in the encoder file are ignored: the technique and this option decide
   * what trains. Default none.
   */
  freeze?: string[];
  /**
   * Frozen technique: where the encoded features live. `memory` (default) encodes once and
   * keeps them; `disk` also stores them under `featureCacheDir`, keyed by what pins the
   * encoder's weights (a file's hash, a folder's weight files' hashes or a Hub commit), the pooling,
   * the tokens and the libtorch version, and reuses them across runs; `none`
   * recomputes the encoder every epoch (the tutorial's way).
   */
  featureCache?: 'memory' | 'disk' | 'none';
  /** Directory of the on-disk feature cache. Default `.torch-bert-cache` in the working directory. */
  featureCacheDir?: string;
  /**
   * Tokens per text after truncation, special tokens included; shorter texts are padded. Default
   * 250 for a TorchScript file; for a model folder, its tokenizer_config.json's `model_max_length`
   * within what its position table reads.
   */
  maxLength?: number;
  /** Default 32. */
  batchSize?: number;
  /** Default 5. */
  epochs?: number;
  /** AdamW learning rate. Default 1e-5. */
  learningRate?: number;
  /**
   * AdamW decoupled weight decay, on every trained parameter but biases and LayerNorm weights
   * (as Hugging Face's Trainer): the head's and, with `full`, the encoder's weight matrices and
   * embeddings; with `lora`, both adapter matrices A and B. Default 0.01.
   */
  weightDecay?: number;
  /** AdamW betas. Default [0.9, 0.999]. */
  betas?: [number, number];
  /** AdamW epsilon. Default 1e-8. */
  eps?: number;
  /** Share of `data` held out for validation, stratified by class. Default 0.2. */
  validationSplit?: number;
  /** Seeds the split, the head's initialisation, shuffling and dropout. Default 42. */
  seed?: number;
  /** Width of the head's hidden layer. Default 512. */
  headHidden?: number;
  /** Dropout after the head's ReLU. Default 0.1. */
  dropout?: number;
  /** How the encoder's [B, T, H] output becomes one vector per text. Default `cls`. */
  pooling?: Pooling;
  /**
   * The classification head. `mlp` (default): Linear(H, headHidden) → ReLU → dropout → Linear, on
   * the pooled output. `sequence-classification`: transformers' own head for the encoder's family
   * (BERT: the pooler output → dropout → `classifier`; RoBERTa: the first token → dropout →
   * `dense` → tanh → dropout → `out_proj`; DistilBERT: the first token → `pre_classifier` → ReLU
   * → dropout → `classifier`), so that the classifier exports whole for
   * `AutoModelForSequenceClassification`. Its dropout is the encoder config's
   * (classifier_dropout / hidden_dropout_prob / seq_classif_dropout) when it has one, else
   * `dropout`; `pooling: 'mean'` is refused with it (the head pools its own way).
   */
  head?: HeadKind;
  /**
   * With `head: 'prompt'` (LM-BFF prompt-based fine-tuning: cross-entropy over the label words'
   * logits at the mask, through the checkpoint's MLM head): the template, e.g. '{text} It was
   * [MASK].' ({text_a} and {text_b} for pairs, read from the text column and `textPairColumn`),
   * and the verbalizer, one `label=word` per class. `frozen` trains only the MLM head's transform.
   */
  template?: string;
  verbalizer?: VerbalizerSpec;
  /**
   * CSV column of each example's second text: text pairs (NLI, paraphrase), encoded with the
   * tokenizer's pair template (`[CLS] a [SEP] b [SEP]`, with token types where the encoder takes
   * them), or {text_b} of a prompt template.
   */
  textPairColumn?: string;
  /**
   * Few-shot: train on K examples per class of `data`, drawn with the seed; validation on
   * `validationData`, or on at most 500 other examples per class of `data`.
   */
  fewShot?: number;
  /** Clip gradients to this global norm; 0 disables (the seed did not clip). Default 1.0. */
  maxGradNorm?: number;
  /**
   * `constant`, `linear` decay to 0, or `cosine` decay to 0 (half a cosine wave), each after
   * `warmupRatio` of the steps of linear warmup (Hugging Face's schedules). Default `constant` (the seed).
   */
  schedule?: Schedule;
  /** Share of the optimizer steps spent warming the learning rate up from 0. Default 0. */
  warmupRatio?: number;
  /** Batches whose gradients are summed before one optimizer step. Default 1. */
  gradientAccumulationSteps?: number;
  /**
   * Per-class loss weights (by class id), or `balanced` (n / (classes · count)). Default none. The loss
   * is the weighted mean (nn.CrossEntropyLoss's); a batch whose rows all weigh 0 has a zero loss (not 0/0).
   */
  classWeights?: number[] | 'balanced';
  /**
   * A multi-label run's weight of each class's positive targets (by class id: BCEWithLogitsLoss's
   * `pos_weight`), or `balanced`: each class's negatives / positives in the training data (1 for a
   * class without positives), so that a rare class's few positives count as much as its negatives.
   * Default none.
   */
  positiveWeights?: number[] | 'balanced';
  /** Label smoothing of the loss, in [0, 1). Default 0. */
  labelSmoothing?: number;
  /** Pad each batch to its longest text (`longest`, default) or always to `maxLength` (`max`). */
  padding?: 'longest' | 'max';
  /** Put texts of similar length in the same batch (less padding). Default false. */
  groupByLength?: boolean;
  /** Evaluate at each epoch's end (`epoch`, default) and also every N optimizer steps (a number). */
  evaluateEvery?: 'epoch' | number;
  /** Metric that picks the best checkpoint: `loss` (validation loss, default); `accuracy` or `macroF1` (classification); `pearson` or `spearman` (regression). */
  bestMetric?: BestMetric;
  /**
   * `single_label_classification` (default): each label is a class. `regression`: each label is a
   * number, the head has one output, the loss is the mean squared error (MSELoss, as transformers'
   * problem_type regression), validation reports Pearson's r and Spearman's ρ (STS-B's metrics).
   * `multi_label_classification`: each label is the set of classes that apply (an array of names,
   * or a CSV cell of comma-separated names), the loss BCEWithLogitsLoss, a class predicted where its
   * sigmoid is at least 0.5; accuracy is subset accuracy (every class right).
   */
  problemType?: P;
  /** Stop after this many evaluations without improvement of the best metric. 0 = never. Default 0. */
  earlyStoppingPatience?: number;
  /** Continue the run whose training state is in this directory (an `outDir` of an earlier run). */
  resumeFrom?: string;
  /** What a NaN/Inf loss or gradient does: `stop` the run (default) or `skip` the step. */
  onNonFinite?: 'stop' | 'skip';
  /** Write `report.html` (curves, confusion matrix, settings) into `outDir`. Default false. */
  report?: boolean;
  /** Default `auto`: CUDA when libtorch sees a GPU, else CPU. On CUDA, training allows TF32 matmuls (Ampere and newer). */
  device?: Device;
  /**
   * Numeric precision of the forward passes (training, validation). `fp32` (default);
   * `bf16`: autocast to bfloat16 (matmuls and linears; softmax, layer norm and the loss stay
   * float32, as do the weights, gradients and AdamW state), on CUDA (Ampere and newer) and CPU;
   * `fp16`: autocast to float16 with dynamic loss scaling (a GradScaler, saved with the training
   * state), CUDA only. The frozen technique's one-time encoding stays fp32.
   *
   * On the CPU, bf16 is faster only where the CPU computes bfloat16 natively (AVX512-BF16 or AMX
   * on x86, BF16 on Arm; `torch-bert doctor` shows it); elsewhere it is emulated and far slower
   * (or rejected by older libtorch), so keep fp32 there: `train()` warns
   * (TORCH_BERT_BF16_EMULATED) when bf16 is asked for on such a CPU. Measurements: the README's
   * Performance section.
   */
  precision?: Precision;
  /** libtorch intra-op threads. Default: libtorch's own choice (a distributed rank: the cores / LOCAL_WORLD_SIZE). */
  threads?: number;
  /**
   * Data-parallel training on c10d (lib/training/distributed.ts): `'auto'` joins the process group when
   * torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, ...) are set, `'off'`
   * never does. Each rank trains on its share of every epoch with `batchSize` rows per batch
   * (the global batch is `batchSize` × WORLD_SIZE). Default 'auto'.
   */
  distributed?: 'auto' | 'off';
  /** Seconds a rank waits for the others (rendezvous and every collective) before failing. Default 300. */
  distributedTimeout?: number;
  /** Progress: a Hub model's download, each encoding batch of the frozen technique, training batch, evaluation and epoch (`ProgressEvent`). */
  onProgress?: (event: ProgressEvent) => void;
  /**
   * Stops training before the next optimizer step (with `gradientAccumulationSteps` N, at the
   * start of its N batches, so the saved training state resumes exactly); the best checkpoint so
   * far is kept.
   */
  signal?: AbortSignal;
}

export const DEFAULTS = {
  technique: 'frozen' as Technique,
  freeze: [] as string[],
  featureCache: 'memory' as 'memory' | 'disk' | 'none',
  featureCacheDir: '.torch-bert-cache',
  distributed: 'auto' as 'auto' | 'off',
  distributedTimeout: 300,
  schedule: 'constant' as Schedule,
  warmupRatio: 0,
  gradientAccumulationSteps: 1,
  labelSmoothing: 0,
  padding: 'longest' as 'longest' | 'max',
  groupByLength: false,
  evaluateEvery: 'epoch' as 'epoch' | number,
  bestMetric: 'loss' as BestMetric,
  problemType: 'single_label_classification' as TrainProblemType,
  earlyStoppingPatience: 0,
  onNonFinite: 'stop' as 'stop' | 'skip',
  report: false,
  maxLength: 250,
  batchSize: 32,
  epochs: 5,
  learningRate: 1e-5,
  weightDecay: 0.01,
  betas: [0.9, 0.999] as [number, number],
  eps: 1e-8,
  validationSplit: 0.2,
  seed: 42,
  headHidden: 512,
  dropout: 0.1,
  pooling: 'cls' as Pooling,
  head: 'mlp' as HeadKind,
  maxGradNorm: 1.0,
  device: 'auto' as Device,
  precision: 'fp32' as Precision,
} as const;

export const LORA_DEFAULTS = {
  rank: 8,
  alpha: 16,
  dropout: 0,
  targets: ['attention.self.query', 'attention.self.value'],
};

export const ADAPTER_DEFAULTS = {
  config: 'houlsby' as AdapterConfig,
  size: 64,
  trainLayerNorm: false,
};

/** AdapterHub's non-linearity for each config. */
const ADAPTER_ACTIVATION: Record<AdapterConfig, AdapterActivation> = { houlsby: 'swish', pfeiffer: 'relu' };

type Optional =
  | 'template'
  | 'verbalizer'
  | 'textPairColumn'
  | 'fewShot'
  | 'validationData'
  | 'outDir'
  | 'labels'
  | 'threads'
  | 'onProgress'
  | 'signal'
  | 'encoderLearningRate'
  | 'classWeights'
  | 'positiveWeights'
  | 'resumeFrom'
  | 'tokenizer';
export type ResolvedTrainOptions = Required<Omit<AnyTrainOptions, Optional | 'lora' | 'adapter'>> &
  Pick<AnyTrainOptions, Optional> & { lora: Required<LoraOptions>; adapter: ResolvedAdapterOptions };

/** A value as a message shows it: a string quoted, so that '3' is not mistaken for the number 3. */
function shown(value: unknown): string {
  if (typeof value === 'string') return `'${value}' (a string)`;
  return Array.isArray(value) ? `[${value.map(shown).join(', ')}]` : String(value);
}

export function checkInteger(name: string, value: number, min: number, max = Number.POSITIVE_INFINITY): void {
  if (!Number.isInteger(value) || value < min) throw new InputError(`${name} must be an integer ≥ ${min}; got ${shown(value)}`);
  if (value > max) throw new InputError(`${name} must be at most ${max}; got ${shown(value)}`);
}

function checkRange(name: string, value: number, min: number, maxExclusive: number): void {
  if (!(typeof value === 'number' && value >= min && value < maxExclusive)) {
    throw new InputError(`${name} must be in [${min}, ${maxExclusive}); got ${shown(value)}`);
  }
}

function checkNonNegative(name: string, value: number): void {
  if (!(typeof value === 'number' && Number.isFinite(value) && value >= 0)) {
    throw new InputError(`${name} must be a finite number ≥ 0; got ${shown(value)}`);
  }
}

function oneOf<T extends string>(name: string, value: T, allowed: readonly T[]): void {
  if (!allowed.includes(value)) throw new InputError(`${name} must be one of ${allowed.join(', ')}; got '${value}'`);
}

/**
 * The names of train()'s options, of `lora`'s and of `adapter`'s: TypeScript refuses a misspelt
 * key at compile time, plain JavaScript would ignore it and train with the default. (`satisfies`
 * keeps each list equal to its type's keys.)
 */
const TRAIN_OPTION_NAMES = Object.keys({
  data: 1,
  validationData: 1,
  encoder: 1,
  tokenizer: 1,
  outDir: 1,
  labels: 1,
  technique: 1,
  encoderLearningRate: 1,
  lora: 1,
  adapter: 1,
  freeze: 1,
  featureCache: 1,
  featureCacheDir: 1,
  maxLength: 1,
  batchSize: 1,
  epochs: 1,
  learningRate: 1,
  weightDecay: 1,
  betas: 1,
  eps: 1,
  validationSplit: 1,
  seed: 1,
  headHidden: 1,
  dropout: 1,
  pooling: 1,
  head: 1,
  template: 1,
  verbalizer: 1,
  textPairColumn: 1,
  fewShot: 1,
  maxGradNorm: 1,
  schedule: 1,
  warmupRatio: 1,
  gradientAccumulationSteps: 1,
  classWeights: 1,
  positiveWeights: 1,
  labelSmoothing: 1,
  padding: 1,
  groupByLength: 1,
  evaluateEvery: 1,
  bestMetric: 1,
  problemType: 1,
  earlyStoppingPatience: 1,
  resumeFrom: 1,
  onNonFinite: 1,
  report: 1,
  device: 1,
  precision: 1,
  threads: 1,
  distributed: 1,
  distributedTimeout: 1,
  onProgress: 1,
  signal: 1,
} satisfies Record<keyof AnyTrainOptions, 1>);
const LORA_OPTION_NAMES = Object.keys({ rank: 1, alpha: 1, dropout: 1, targets: 1 } satisfies Record<keyof LoraOptions, 1>);
const ADAPTER_OPTION_NAMES = Object.keys({
  config: 1,
  size: 1,
  reductionFactor: 1,
  activation: 1,
  trainLayerNorm: 1,
} satisfies Record<keyof AdapterOptions, 1>);

/** train()'s options (and its lora and adapter objects) name only options it has. */
export function checkTrainOptionNames(options: unknown): void {
  if (!options || typeof options !== 'object') return;
  checkOptionNames('train()', options, TRAIN_OPTION_NAMES);
  const { lora, adapter } = options as AnyTrainOptions;
  if (lora && typeof lora === 'object') checkOptionNames('train(): lora', lora, LORA_OPTION_NAMES);
  if (adapter && typeof adapter === 'object') checkOptionNames('train(): adapter', adapter, ADAPTER_OPTION_NAMES);
}

/** An InputError for the first key of `options` not among `names`, with the name it was probably meant to be. */
export function checkOptionNames(what: string, options: object, names: readonly string[]): void {
  const unknown = Object.keys(options).find((key) => !names.includes(key));
  if (unknown === undefined) return;
  const meant = likelyMeant(unknown, names);
  throw new InputError(`${what} has no option '${unknown}': ${meant ? `did you mean '${meant}'?` : `its options are ${names.join(', ')}`}`);
}

/** The name `key` is a slip of: the same but for case, or within two edits. */
export function likelyMeant(key: string, names: readonly string[]): string | undefined {
  const sameButCase = names.find((n) => n.toLowerCase() === key.toLowerCase());
  if (sameButCase) return sameButCase;
  let best: { name: string; distance: number } | undefined;
  for (const name of names) {
    const distance = editDistance(key.toLowerCase(), name.toLowerCase());
    if (distance <= 2 && (!best || distance < best.distance)) best = { name, distance };
  }
  return best?.name;
}

/** Levenshtein distance: insertions, deletions and substitutions. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(previous[j]! + 1, row[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = row;
  }
  return previous[b.length]!;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** `options` with every default filled in, every value checked (an InputError names the first bad one). */
export function resolveTrainOptions(options: AnyTrainOptions): ResolvedTrainOptions {
  if (!options || typeof options !== 'object') throw new InputError('train() takes an options object');
  const resolved = { ...DEFAULTS, ...stripUndefined(options) } as ResolvedTrainOptions;
  resolved.lora = { ...LORA_DEFAULTS, ...stripUndefined(options.lora ?? {}) };
  resolved.adapter = resolveAdapterOptions(options.adapter ?? {});
  if (!resolved.data) throw new InputError('train(): `data` is required (a CSV path, { csv }, or { texts, labels })');
  if (typeof resolved.encoder !== 'string' || resolved.encoder === '') {
    throw new InputError('train(): `encoder` (a TorchScript file, a Hugging Face model folder or a Hub id) is required');
  }
  checkPaths(resolved);
  oneOf('technique', resolved.technique, ['frozen', 'full', 'lora', 'adapter']);
  checkHeadOptions(options, resolved);
  checkTechniqueOptions(options, resolved.technique);
  checkValidationSource(options, resolved);
  oneOf('featureCache', resolved.featureCache, ['memory', 'disk', 'none']);
  oneOf('schedule', resolved.schedule, SCHEDULES);
  oneOf('padding', resolved.padding, ['longest', 'max']);
  checkProblemType(options, resolved);
  oneOf('onNonFinite', resolved.onNonFinite, ['stop', 'skip']);
  oneOf('precision', resolved.precision, ['fp32', 'bf16', 'fp16']);
  oneOf('distributed', resolved.distributed, ['auto', 'off']);
  checkNumbers(resolved);
  checkLoraOptions(resolved.lora);
  if (!Array.isArray(resolved.freeze) || resolved.freeze.some((p) => typeof p !== 'string' || p.length === 0)) {
    throw new InputError('freeze must be a list of non-empty parameter name prefixes');
  }
  if (resolved.resumeFrom !== undefined && resolved.outDir === undefined) resolved.outDir = resolved.resumeFrom;
  return resolved;
}

/**
 * Settings as what they make a run do, for telling whether two runs are one (a resumed run and the
 * run that saved its state, training-state.ts checkFingerprint; data-parallel ranks, distributed.ts
 * agreeOnRun). resolveTrainOptions fills in the defaults it can; these are the options it leaves
 * unset whose value, given, can mean what leaving them out means, or what another spelling does:
 * `encoderLearningRate` equal to `learningRate` (its default) is left out, as are class or positive
 * weights all 1 (the unweighted loss) and problemType single_label_classification (its default); a verbalizer is its `label=word` entries, given as a list or an object.
 * Plain values in and out: a saved state's settings are the options as given (JSON), so that a
 * state written by any version compares by meaning too.
 */
export function effectiveSettings(settings: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const { encoderLearningRate, classWeights, positiveWeights, verbalizer, problemType, ...rest } = settings;
  const effective: Record<string, unknown> = { ...rest };
  // Single-label classification is what a state saved before problemType existed trained.
  if (problemType !== undefined && problemType !== 'single_label_classification') effective.problemType = problemType;
  const ownRate = encoderLearningRate !== undefined && encoderLearningRate !== settings.learningRate;
  if (ownRate) effective.encoderLearningRate = encoderLearningRate;
  if (classWeights !== undefined && !unweightedClasses(classWeights)) effective.classWeights = classWeights;
  if (positiveWeights !== undefined && !unweightedClasses(positiveWeights)) effective.positiveWeights = positiveWeights;
  if (verbalizer !== undefined) {
    effective.verbalizer = parseVerbalizer(verbalizer as VerbalizerSpec).map(({ label, word }) => `${label}=${word}`);
  }
  return effective;
}

/** Class (or positive) weights that weigh every class 1: the unweighted loss, which a run computes as such (classification-task.ts lossOptions). */
export function unweightedClasses(weights: unknown): boolean {
  return Array.isArray(weights) && weights.every((w) => w === 1);
}

/** A setting where two runs differ, with each run's value as a message shows it. */
export interface SettingDifference {
  name: string;
  /** JSON, or `unset` for an option left out. */
  a: string;
  b: string;
}

/** The settings in which run `a` and run `b` differ by what they do (effectiveSettings). */
export function settingDifferences(a: Readonly<Record<string, unknown>>, b: Readonly<Record<string, unknown>>): SettingDifference[] {
  const [before, now] = [effectiveSettings(a), effectiveSettings(b)];
  const shown = (value: unknown) => JSON.stringify(value) ?? 'unset';
  return Object.keys({ ...before, ...now })
    .map((name) => ({ name, a: shown(before[name]), b: shown(now[name]) }))
    .filter((d) => d.a !== d.b);
}

/** What each path option names, for its refusal. */
const PATH_OPTIONS = {
  tokenizer: 'the path of a tokenizer.json',
  outDir: 'the path of a folder',
  resumeFrom: "the path of an earlier run's folder",
  featureCacheDir: 'the path of a folder',
} as const;

/**
 * A path option, when given, is a non-empty string: '' resolves to the working directory, so
 * `outDir: ''` wrote classifier.pt, config.json and tokenizer.json over the working directory's
 * own and `resumeFrom: ''` read its training state from there.
 */
function checkPaths(resolved: ResolvedTrainOptions): void {
  for (const [name, what] of Object.entries(PATH_OPTIONS)) {
    const value: unknown = resolved[name as keyof typeof PATH_OPTIONS];
    if (value !== undefined && (typeof value !== 'string' || value === '')) {
      throw new InputError(`train(): \`${name}\` must be ${what}; got ${shown(value)}`);
    }
  }
}

/** The head and what goes with it: pooling, a prompt's template, verbalizer and second texts. */
function checkHeadOptions(options: AnyTrainOptions, resolved: ResolvedTrainOptions): void {
  oneOf('pooling', resolved.pooling, ['cls', 'mean']);
  oneOf('head', resolved.head, HEAD_KINDS);
  if (resolved.head === 'sequence-classification' && resolved.pooling === 'mean') {
    throw new InputError(
      "pooling 'mean' cannot be used with head 'sequence-classification': that head pools its own way " +
        "(BERT's pooler output, or RoBERTa's and DistilBERT's first token); use pooling 'cls' or head 'mlp'",
    );
  }
  if (resolved.head === 'sequence-classification' && options.headHidden !== undefined) {
    // Recorded and never used, as with head 'prompt' (below).
    throw new InputError(
      "headHidden cannot be used with head 'sequence-classification': that head is transformers' own for the family, " +
        "its widths the encoder's (hidden size, classes); leave it out (it shapes head 'mlp')",
    );
  }
  if (resolved.head === 'prompt') {
    if (typeof resolved.template !== 'string' || resolved.verbalizer === undefined) {
      throw new InputError("head 'prompt' needs a template (e.g. '{text} It was [MASK].') and a verbalizer (['label=word', ...])");
    }
    if (resolved.technique === 'adapter') throw new InputError("head 'prompt' trains with technique 'full', 'lora' or 'frozen'");
    // The prompt head is the MLM head on the mask token's row: these would be recorded, not used.
    const unused = [
      resolved.pooling === 'mean' ? "pooling 'mean'" : null,
      options.headHidden !== undefined ? 'headHidden' : null,
      options.dropout !== undefined ? 'dropout' : null,
    ].filter((name) => name !== null);
    if (unused.length > 0) {
      throw new InputError(
        `${unused.join(', ')} cannot be used with head 'prompt': it scores the label words with the checkpoint's MLM head ` +
          "at the mask token's row; leave them out (they shape head 'mlp')",
      );
    }
  } else if (resolved.template !== undefined || resolved.verbalizer !== undefined) {
    throw new InputError("template and verbalizer go with head 'prompt'");
  }
}

/** The problem type, and the options of another: a regression run has no classes to weigh, smooth, draw per class, name or put in a prompt. */
function checkProblemType(options: AnyTrainOptions, resolved: ResolvedTrainOptions): void {
  oneOf('problemType', resolved.problemType, ['single_label_classification', 'regression', 'multi_label_classification']);
  const problem = resolved.problemType;
  oneOf('bestMetric', resolved.bestMetric, problem === 'regression' ? ['loss', 'pearson', 'spearman'] : ['loss', 'accuracy', 'macroF1']);
  if (options.positiveWeights !== undefined && problem !== 'multi_label_classification') {
    throw new InputError(
      `positiveWeights weigh a multi-label run's positive targets (problemType 'multi_label_classification'); ${problem === 'regression' ? 'a regression run has no classes' : 'a single-label run weighs its classes with classWeights'}`,
    );
  }
  if (problem === 'single_label_classification') return;
  // Regression has no classes; a multi-label example has several, which no single-class option fits
  // (its class names may be given: labels).
  const refused = problem === 'regression' ? (['labels'] as const) : ([] as const);
  const others: string[] = ([...refused, 'classWeights', 'labelSmoothing', 'fewShot', 'template', 'verbalizer'] as const).filter(
    (name) => options[name] !== undefined,
  );
  if (resolved.head === 'prompt') others.push("head 'prompt'");
  if (others.length > 0) {
    const why = problem === 'regression' ? 'its labels are values, not classes' : 'each example has a set of classes, not one';
    throw new InputError(`${others.join(', ')} cannot be used with problemType '${problem}': ${why}`);
  }
}

/** Where the validation set comes from: the split is of `data` alone, so validation data or a few-shot draw rule it out. */
function checkValidationSource(options: AnyTrainOptions, resolved: ResolvedTrainOptions): void {
  const validatedBy = options.validationData !== undefined ? 'validationData' : options.fewShot !== undefined ? 'fewShot' : null;
  if (options.validationSplit !== undefined && validatedBy !== null) {
    throw new InputError(
      `validationSplit holds out a share of data, but ${validatedBy} decides the validation set: leave validationSplit (--validation-split) out`,
    );
  }
  if (resolved.fewShot !== undefined) checkInteger('fewShot', resolved.fewShot, 1);
}

/**
 * A note for a run that trains nothing: learning rate 0 (the encoder's too, or none of its own).
 * Not refused (PyTorch takes lr 0): it measures the starting weights' loss and metrics, epoch after
 * epoch, but the weights it saves are those it started from. Null when something trains.
 */
export function zeroLearningRateNote(resolved: ResolvedTrainOptions): string | null {
  if (resolved.learningRate !== 0 || (resolved.encoderLearningRate ?? 0) > 0) return null;
  return 'learningRate 0: no step changes a weight, so the run measures the weights it starts from and saves them unchanged';
}

/** The numeric options, each in its range. */
function checkNumbers(resolved: ResolvedTrainOptions): void {
  checkInteger('maxLength', resolved.maxLength, 2);
  checkInteger('batchSize', resolved.batchSize, 1);
  checkInteger('epochs', resolved.epochs, 1);
  // The native head's limit, which otherwise refused it as "encoder ... cannot be used".
  checkInteger('headHidden', resolved.headHidden, 1, 2 ** 20);
  checkInteger('gradientAccumulationSteps', resolved.gradientAccumulationSteps, 1);
  checkInteger('earlyStoppingPatience', resolved.earlyStoppingPatience, 0);
  // A double holds every integer only up to 2^53 - 1; libtorch's seed reader refused a larger one as a wrapped int64.
  checkInteger('seed', resolved.seed, 0, Number.MAX_SAFE_INTEGER);
  checkNonNegative('learningRate', resolved.learningRate);
  if (resolved.encoderLearningRate !== undefined) checkNonNegative('encoderLearningRate', resolved.encoderLearningRate);
  checkNonNegative('weightDecay', resolved.weightDecay);
  const { betas } = resolved;
  if (!Array.isArray(betas) || betas.length !== 2 || betas.some((b) => !(typeof b === 'number' && b >= 0 && b < 1))) {
    throw new InputError(`betas must be two numbers in [0, 1); got ${shown(betas)}`);
  }
  checkNonNegative('eps', resolved.eps);
  checkNonNegative('maxGradNorm', resolved.maxGradNorm);
  checkRange('dropout', resolved.dropout, 0, 1);
  checkRange('labelSmoothing', resolved.labelSmoothing, 0, 1);
  checkRange('warmupRatio', resolved.warmupRatio, 0, 1);
  // Here, with the others: stratifiedSplit refuses it too, but only once the model is loaded and the data read.
  if (!(typeof resolved.validationSplit === 'number' && resolved.validationSplit > 0 && resolved.validationSplit < 1)) {
    throw new InputError(`validationSplit must be between 0 and 1 (exclusive); got ${shown(resolved.validationSplit)}`);
  }
  if (resolved.evaluateEvery !== 'epoch') checkInteger('evaluateEvery', resolved.evaluateEvery, 1);
  if (resolved.threads !== undefined) checkThreads(resolved.threads);
  const timeout = resolved.distributedTimeout;
  if (!(typeof timeout === 'number' && timeout > 0 && Number.isFinite(timeout))) {
    throw new InputError(`distributedTimeout must be a number of seconds > 0; got ${shown(timeout)}`);
  }
}

function checkLoraOptions(lora: ResolvedTrainOptions['lora']): void {
  checkInteger('lora.rank', lora.rank, 1);
  // alpha scales the adapters' update: at 0 LoRA would train adapters that change nothing.
  if (!(typeof lora.alpha === 'number' && Number.isFinite(lora.alpha) && lora.alpha > 0)) {
    throw new InputError(`lora.alpha must be a finite number > 0; got ${shown(lora.alpha)}`);
  }
  checkRange('lora.dropout', lora.dropout, 0, 1);
  if (!Array.isArray(lora.targets) || lora.targets.length === 0) {
    throw new InputError('lora.targets must name at least one module path suffix');
  }
}

/**
 * Intra-op threads beyond the CPUs the process may run on only wait on each other (2 cores, the
 * demo's one epoch: 6 s with 2 threads, 27 s with 16, over 60 s with 64).
 */
function checkThreads(threads: number): void {
  checkInteger('threads', threads, 1);
  const cpus = availableParallelism();
  if (threads > cpus) {
    throw new InputError(
      `threads ${threads} is more than the ${cpus} CPUs this process may use, which slows every step down: use at most ${cpus}`,
    );
  }
}

/** Options read by one technique only: given with another, they would be ignored without a word. */
const TECHNIQUE_OF: ReadonlyArray<[keyof AnyTrainOptions, Technique]> = [
  ['lora', 'lora'],
  ['adapter', 'adapter'],
  ['encoderLearningRate', 'full'],
];

function checkTechniqueOptions(options: AnyTrainOptions, technique: Technique): void {
  for (const [name, owner] of TECHNIQUE_OF) {
    const value: unknown = options[name];
    // The CLI passes { rank: undefined, ... } when no --lora-* flag is given: only a value set counts.
    const given = typeof value === 'object' && value !== null ? Object.values(value).some((v) => v !== undefined) : value !== undefined;
    if (given && technique !== owner) {
      throw new InputError(
        `${name} goes with technique '${owner}', but the technique is '${technique}': set technique '${owner}' (--technique ${owner}) or leave ${name} out`,
      );
    }
  }
}

function resolveAdapterOptions(options: AdapterOptions): ResolvedAdapterOptions {
  if (typeof options !== 'object' || options === null) throw new InputError('adapter must be an object');
  const given = stripUndefined(options);
  const config = given.config ?? ADAPTER_DEFAULTS.config;
  oneOf('adapter.config', config, ['houlsby', 'pfeiffer']);
  const activation = given.activation ?? ADAPTER_ACTIVATION[config];
  oneOf('adapter.activation', activation, ['relu', 'gelu', 'swish']);
  if (given.size !== undefined && given.reductionFactor !== undefined) {
    throw new InputError('adapter takes one of size and reductionFactor, not both');
  }
  const reductionFactor = given.reductionFactor ?? null;
  const size = reductionFactor === null ? (given.size ?? ADAPTER_DEFAULTS.size) : null;
  if (size !== null) checkInteger('adapter.size', size, 1);
  if (reductionFactor !== null && !(typeof reductionFactor === 'number' && Number.isFinite(reductionFactor) && reductionFactor >= 1)) {
    throw new InputError(`adapter.reductionFactor must be a finite number ≥ 1; got ${shown(reductionFactor)}`);
  }
  const trainLayerNorm = given.trainLayerNorm ?? ADAPTER_DEFAULTS.trainLayerNorm;
  if (typeof trainLayerNorm !== 'boolean')
    throw new InputError(`adapter.trainLayerNorm must be true or false; got ${shown(trainLayerNorm)}`);
  return { config, size, reductionFactor, activation, trainLayerNorm };
}
