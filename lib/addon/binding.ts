/**
 * The typed surface of the native addon (`build/Release/torch_bert.node`).
 *
 * This file is the contract between C++ (`native/`) and TypeScript (`lib/`): every
 * export of the addon is declared here, and nothing in `lib/` touches the addon
 * except through these types. Loading (and explaining why loading failed) lives in
 * `loader.ts`.
 *
 * Conventions:
 * - Every native call that fails throws a JS `Error` (or `TypeError` for wrong argument
 *   types) whose message is libtorch's own message without its C++ backtrace.
 * - Device failures of the step functions (trainStep, evalStep, extractFeatures, headTrainStep,
 *   headEvalStep) name the device and the batch size and carry a `code`:
 *   `TORCH_BERT_OUT_OF_MEMORY` (CUDA or CPU out of memory; the message suggests a smaller
 *   batch) or `TORCH_BERT_DEVICE_ERROR` (another CUDA error).
 * - Methods ending in `Async` run on a libuv worker thread and return a Promise; the
 *   event loop never waits on libtorch compute.
 * - Native objects own libtorch memory. Call `dispose()` to free it now; the garbage
 *   collector frees it otherwise. Disposing twice is harmless; using a disposed object
 *   throws `Error('... has been disposed')`.
 */

export type DType = 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

/**
 * Numeric precision of a step's forward pass. `fp32`: everything in float32. `bf16` / `fp16`:
 * autocast (matmuls and linears in bfloat16 / float16, precision-sensitive ops in float32);
 * parameters, gradients, optimizer state and the loss stay float32. `fp16` needs a CUDA device
 * and trains with dynamic loss scaling (see `TrainStepOptions.gradScaling`); `bf16` runs on CPU
 * and CUDA (on CUDA, Ampere or newer for speed).
 */
export type Precision = 'fp32' | 'bf16' | 'fp16';

/** Typed arrays accepted and returned. float16/bfloat16 read back as Float32Array, int16/int8 as Int32Array, bool as Uint8Array. */
export type TypedArray = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array;

/** A libtorch tensor. */
export interface NativeTensor {
  readonly shape: number[];
  readonly dtype: DType;
  /** 'cpu' or 'cuda:N'. */
  readonly device: string;
  readonly requiresGrad: boolean;
  readonly disposed: boolean;
  /** Copy to CPU memory as a typed array (contiguous, row-major). */
  toArray(): TypedArray;
  /** The single value of a one-element tensor. */
  item(): number;
  /** A copy on another device and/or dtype (autograd-detached). */
  to(device: string, dtype?: DType): NativeTensor;
  /** A detached deep copy. */
  clone(): NativeTensor;
  setRequiresGrad(on: boolean): void;
  /** Accumulated gradient, or null. */
  grad(): NativeTensor | null;
  /** Backpropagate from this (scalar) tensor. */
  backward(): void;
  /** Copy `source`'s values into this tensor in place, without autograd (same shape; converts dtype/device). */
  copyFrom(source: NativeTensor): void;
  dispose(): void;
}

export interface NativeTensorStatic {
  /**
   * Copy a typed array into a new tensor. `dtype` defaults to the array's natural dtype
   * (Float32Array → float32, Int32Array → int32, BigInt64Array → int64, ...); when given,
   * the data is converted. Throws if `shape`'s product differs from `data.length`.
   */
  fromArray(data: TypedArray, shape: number[], dtype?: DType, device?: string): NativeTensor;
  /** The class's prototype (tensors are its instances; JS cannot construct one). */
  readonly prototype: NativeTensor;
}

/** What a TorchScript method can return, converted to JS. */
export type NativeValue = NativeTensor | number | boolean | string | null | NativeValue[] | { [key: string]: NativeValue };

/** A TorchScript module (`torch::jit::Module`). */
export interface NativeScriptModule {
  readonly device: string;
  readonly isTraining: boolean;
  readonly disposed: boolean;
  /** Run `forward` on the calling thread (use for small inputs and tests). */
  forward(...inputs: NativeTensor[]): NativeValue;
  /** Run `forward` on a worker thread, on copies of `inputs` taken at the call (writing into them meanwhile changes nothing). */
  forwardAsync(...inputs: NativeTensor[]): Promise<NativeValue>;
  /** Run any method by name on the calling thread. */
  runMethod(name: string, ...inputs: NativeTensor[]): NativeValue;
  /** The TorchScript schema of a method, e.g. `forward(__torch__.M self, Tensor input_ids, Tensor attention_mask) -> Tensor`. */
  methodSchema(name: string): string;
  /**
   * What token pruning did to `method` (default `forward`), built on its first call: the kinds
   * of the ops that now run on one token row (e.g. the last layer's feed-forward block under
   * [CLS] pooling); `[]` when nothing could be pruned; `null` before the first call. See
   * native/graph/token_pruning.h.
   */
  prunedOps(method?: string): string[] | null;
  /** Number of inputs of `forward`, not counting `self`. */
  readonly forwardArity: number;
  /** All parameters, recursively, in registration order; the tensors share storage with the module. */
  namedParameters(): Array<[string, NativeTensor]>;
  /** Set requires_grad on every parameter whose name starts with `prefix` (all when omitted). */
  setRequiresGrad(on: boolean, prefix?: string): void;
  /** Recursively set the `training` flag (dropout on/off in scripted code). */
  train(on: boolean): void;
  /**
   * Move parameters and buffers to a device, in place; with `dtype`, also cast the
   * floating-point ones (integer buffers such as position ids stay as they are).
   */
  to(device: string, dtype?: 'float32' | 'float16' | 'bfloat16' | 'float64'): void;
  /** Write a TorchScript archive loadable by Python `torch.jit.load`. */
  save(path: string): void;
  saveAsync(path: string): Promise<void>;
  /** An independent deep copy. */
  clone(): NativeScriptModule;
  dispose(): void;
}

export interface NativeScriptModuleStatic {
  /** Load a TorchScript archive onto a device. Errors name the file. */
  load(path: string, device?: string): NativeScriptModule;
  loadAsync(path: string, device?: string): Promise<NativeScriptModule>;
  /** The class's prototype (modules are its instances; JS cannot construct one). */
  readonly prototype: NativeScriptModule;
}

/**
 * A Hugging Face encoder as `buildEncoder` builds it (native/model/): what config.json says,
 * mapped by the caller (lib/ refuses unsupported model types, position embeddings and
 * activations by name; the native side checks the values and names a bad field).
 */
export interface NativeEncoderConfig {
  family: 'bert' | 'roberta' | 'distilbert';
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  maxPositions: number;
  /** bert: config.type_vocab_size; roberta: 1 (its token_type_embeddings row 0 is always added); distilbert: 0. */
  typeVocabSize: number;
  /** distilbert: 1e-12. */
  layerNormEps: number;
  /** RoBERTa's position ids start after it; the word embeddings' padding_idx. */
  padTokenId: number;
  hiddenAct: 'gelu' | 'gelu_new' | 'gelu_pytorch_tanh' | 'relu' | 'silu';
  /** Build BertPooler (bert/roberta) when the checkpoint has pooler.dense.*. */
  pooler: boolean;
  /** Also build the MLM head. */
  mlmHead: boolean;
  /** bert/roberta: hidden_dropout_prob; distilbert: dropout. Default 0.1 (transformers' default). */
  hiddenDropoutProb?: number;
  /** bert/roberta: attention_probs_dropout_prob; distilbert: attention_dropout. Default 0.1. */
  attentionDropoutProb?: number;
}

/** What `buildEncoder` returns. */
export interface BuiltEncoder {
  /**
   * bert: forward(input_ids, attention_mask, token_type_ids); roberta and distilbert:
   * forward(input_ids, attention_mask). -> (last_hidden_state, pooler_output) with a pooler,
   * else last_hidden_state. Built in eval mode.
   */
  encoder: NativeScriptModule;
  /** forward(hidden_states) -> logits [B, T, vocab]; null unless config.mlmHead. */
  mlmHead: NativeScriptModule | null;
}

/** What `buildClassifier` learned about the encoder by probing it. */
export interface EncoderInfo {
  /** 2 = forward(input_ids, attention_mask); 3 = forward(input_ids, attention_mask, token_type_ids). */
  arity: 2 | 3;
  /** 'tensor' | 'tuple' | 'dict': how the last hidden state is returned. */
  outputKind: 'tensor' | 'tuple' | 'dict';
  /** For outputKind 'dict', the key of the first entry. */
  outputKey: string | null;
  hiddenSize: number;
}

/**
 * What a classifier's output is and which loss trains it: Hugging Face's `problem_type`
 * (native/module/problem_type.h). single_label_classification: log-probabilities, one class of
 * several (NLL / cross-entropy on class ids). multi_label_classification: a logit per class, each
 * class applying or not (BCEWithLogitsLoss on targets in [0, 1]). regression: a value per output
 * (MSELoss on targets).
 */
export type ProblemType = 'single_label_classification' | 'multi_label_classification' | 'regression';

export interface ClassifierSpec {
  numClasses: number;
  /** Default 'single_label_classification'; recorded as the module's `problem_type` attribute, which the steps read. Head 'prompt' is single-label. */
  problemType?: ProblemType;
  /** Width of the head's hidden layer (the seed: 512). */
  headHidden: number;
  /** Dropout after the head's ReLU (the seed: 0.1). */
  dropout: number;
  pooling: 'cls' | 'mean';
  /** Seeds the head's initialisation (torch.manual_seed semantics, nn.Linear init order). */
  seed: number;
  /**
   * 'mlp' (default): `head.dense` → ReLU → dropout → `head.out_proj`, nn.Linear's init. 'sequence-classification':
   * transformers' head of `family`, with its module names under `head.` and its init (normal(0,
   * initializerRange), zero biases); `dropout` is its p; `pooling` must be 'cls'. BERT: the
   * encoder's pooler output (forward's second output; an encoder without one throws) → dropout →
   * `head.classifier`. RoBERTa: h[:, 0] → dropout → `head.dense` → tanh → dropout → `head.out_proj`.
   * DistilBERT: h[:, 0] → `head.pre_classifier` → ReLU → dropout → `head.classifier`.
   * 'token-classification': transformers' token-classification head of `family` (the same for the
   * three: every token's last hidden state → dropout → `head.classifier`, that init), single-label;
   * `features` returns [B, T, H] and `forward(input_ids, attention_mask, positions)` the
   * log-probabilities of the rows at `positions` (StepBatch.positions); no text-pair methods.
   * 'question-answering': transformers' question-answering head of `family` (every token's last
   * hidden state → `head.qa_outputs`, numClasses 2: the start and end logits; DistilBERT's
   * `dropout` (qa_dropout) before it, BERT's and RoBERTa's 0), single-label; `span_logits(input_ids,
   * attention_mask)` returns the [B, T, 2] logits, `forward(input_ids, attention_mask, positions)`
   * the log-softmax over T of the [2B, T] start and end rows (start of row 0, end of row 0, start
   * of row 1, ...) at `positions`; text-pair variants (`..._token_types`) where the encoder takes
   * token_type_ids.
   */
  head?: 'mlp' | 'sequence-classification' | 'token-classification' | 'question-answering' | 'prompt';
  /**
   * With head 'prompt' (LM-BFF): the encoder's MLM head from buildEncoder (BERT's or RoBERTa's).
   * `features` is the hidden state at the first position where input_ids == `maskTokenId`;
   * `head_forward` applies the MLM head's transform (its modules, shared, under `head.`), then
   * the decoder's rows of `labelTokenIds` (the encoder's word embeddings when tied; their bias
   * rows as a fixed buffer) and log_softmax over those numClasses logits. `headHidden`,
   * `dropout` and `seed` are unused.
   */
  mlmHead?: NativeScriptModule;
  maskTokenId?: number;
  labelTokenIds?: number[];
  /** The head's family, with transformers' heads ('sequence-classification', 'token-classification'). */
  family?: 'bert' | 'roberta' | 'distilbert';
  /** Standard deviation of the weights' normal init, with transformers' heads (default 0.02). */
  initializerRange?: number;
}

export interface BuiltClassifier {
  /** The classifier; its head (float32) starts in eval mode whatever the encoder's mode; `train(on)` sets every module. */
  module: NativeScriptModule;
  encoder: EncoderInfo;
  /**
   * Parameters the classifier's output does not depend on, by the classifier's names (e.g.
   * `encoder.pooler.dense.weight` under [CLS] pooling): found structurally by autograd on a probe
   * batch, so a zero gradient still counts as used.
   */
  unusedParameters: string[];
}

/** AdamW parameter group. */
export interface AdamWGroup {
  params: NativeTensor[];
  lr: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

export interface NativeAdamW {
  readonly disposed: boolean;
  step(): void;
  zeroGrad(): void;
  /** Learning rate of each group. */
  getLr(): number[];
  setLr(group: number, lr: number): void;
  /** Optimizer state (exp_avg, exp_avg_sq, step) and the gradient scaler's state to/from a file (torch::save format). */
  save(path: string): void;
  /** Files without a gradient scaler state (written before it existed) leave the scaler as it is. */
  load(path: string): void;
  /** The dynamic loss scaler used by steps with gradient scaling (fp16). */
  gradScaler(): GradScalerState;
  /** Set some of the scaler's fields (e.g. `{ scale: 1024 }`); validated. */
  setGradScaler(options: Partial<GradScalerState>): void;
  dispose(): void;
}

/**
 * Dynamic loss scaling, as `torch.amp.GradScaler` (same defaults): the loss is multiplied by
 * `scale` before backward and the gradients divided by it before clipping; gradients with an
 * Inf/NaN skip the optimizer step and multiply the scale by `backoffFactor`; `growthInterval`
 * steps in a row without one multiply it by `growthFactor`.
 */
export interface GradScalerState {
  /** Default 65536. */
  scale: number;
  /** Default 2. */
  growthFactor: number;
  /** Default 0.5. */
  backoffFactor: number;
  /** Default 2000. */
  growthInterval: number;
  /** Good steps in a row since the scale last changed. */
  growthTracker: number;
}

export interface NativeAdamWStatic {
  new (groups: AdamWGroup[]): NativeAdamW;
}

export interface TrainStepResult {
  /** Mean loss over the batch. */
  loss: number;
  /** Global L2 norm of the gradients before clipping, when the optimizer stepped; null on accumulate-only steps. */
  gradNorm: number | null;
  /** True when `skipNonFinite` dropped this batch or update. */
  skipped: boolean;
  /**
   * True when gradient scaling found Inf/NaN gradients: the optimizer step was skipped (the
   * gradients dropped), the scale backed off, and `gradNorm` is null. Normal now and then with
   * fp16 (the scale searches for the largest one that does not overflow); not an error.
   */
  overflow: boolean;
  /** The *gradient scaler's scale* this step used (fp16's dynamic loss scaling, `GradScalerState.scale`), when gradient scaling was on; else null. */
  gradScale: number | null;
  /** Number of examples whose argmax prediction equals the label (single-label classification; else 0). */
  correct: number;
  /** Argmax class per example (single-label classification; else empty). */
  predictions: Int32Array;
  /**
   * With `checkGradients`: [group, index] of each optimizer parameter that requires a gradient
   * but got none from this step's backward (the update was then not applied); else null.
   */
  missingGradients: Array<[number, number]> | null;
}

export interface EvalStepResult {
  /** Mean loss over the batch, or null when no labels were given. */
  loss: number | null;
  /** Single-label classification with labels: examples whose argmax is the label; else null. */
  correct: number | null;
  /** Argmax class per example (single-label classification; else empty). */
  predictions: Int32Array;
  /** Row-major [batch, numClasses]: softmax probabilities (single-label), a sigmoid per class (multi-label); empty for regression. */
  probabilities: Float32Array;
  /** Regression: the outputs, row-major [batch, numClasses]; else empty. */
  values: Float32Array;
}

export interface StepBatch {
  /** Token ids, row-major [batchSize, seqLen]. */
  inputIds: Int32Array;
  /** 1 for real tokens, 0 for padding, row-major [batchSize, seqLen]. */
  attentionMask: Int32Array;
  /**
   * Text pairs, for a classifier whose encoder takes token_type_ids: each token's segment (0: the
   * first text, 1: the second), row-major [batchSize, seqLen]. The classifier's
   * `forward_token_types` / `features_token_types` run instead of `forward` / `features`.
   */
  tokenTypeIds?: Int32Array;
  batchSize: number;
  seqLen: number;
  /**
   * Class ids, length batchSize; with `positions`, one per position (a masked token's original
   * id, a word's tag). A model of problem type multi_label_classification or regression takes a
   * Float32Array of targets instead, row-major [batchSize, numClasses] (multi-label: each in [0, 1]).
   */
  labels?: Int32Array | Float32Array;
  /**
   * For a per-token model, the tokens it predicts as flat indices into the [batchSize, seqLen]
   * batch: a masked-language model's masked tokens (`buildMlmModel`), a token classifier's
   * labelled words' first tokens (`buildClassifier`'s head 'token-classification'). The model
   * predicts these rows only; `labels`, predictions and probabilities are per position. A
   * masked-language model's evaluation returns no probabilities (empty: vocabulary-wide rows),
   * only the loss, `correct` and predictions.
   */
  positions?: Int32Array;
}

/** What `buildMlmModel` returns. */
export interface BuiltMlmModel {
  /** forward(input_ids, attention_mask, masked_positions) -> log-probabilities [M, vocab]; parameters `encoder.*` and `head.*`. */
  module: NativeScriptModule;
  /** [alias, name]: `alias` names the same tensor as the earlier `name` (the decoder weight tied to the word embeddings). */
  tiedParameters: Array<[string, string]>;
}

/**
 * How the loss is computed: class weights and label smoothing for single-label classification
 * (PyTorch cross_entropy semantics), positive weights for multi-label classification.
 */
export interface LossOptions {
  /** Per-class weights, length numClasses (like `weight=` of nn.CrossEntropyLoss); weighted mean. */
  classWeights?: Float32Array;
  /** Label smoothing in [0, 1) (like `label_smoothing=` of nn.CrossEntropyLoss). */
  labelSmoothing?: number;
  /** A multi-label model's weight of each class's positive targets, length numClasses (`pos_weight=` of nn.BCEWithLogitsLoss). */
  positiveWeights?: Float32Array;
}

export interface TrainStepOptions extends LossOptions {
  /**
   * Clip the global gradient norm to this value; 0 or absent: no clipping. The gradients are
   * multiplied by the *clip coefficient*, computed as torch.nn.utils.clip_grad_norm_ does
   * (maxGradNorm / (gradNorm + 1e-6), capped at 1).
   */
  maxGradNorm?: number;
  /**
   * Gradient accumulation: when true, only forward + backward run (gradients add up in the
   * parameters); clipping, optimizer.step() and zeroing are skipped. The step that ends an
   * accumulation window passes false.
   */
  accumulateOnly?: boolean;
  /**
   * The *accumulation weight*: multiply the loss by this before backward (1 / the batches of an
   * accumulation window). Default 1. The reported loss is unweighted. Named `lossScale` natively;
   * the trainer calls it `accumulationWeight` (training-loop.ts) and maps it here. Not the fp16
   * gradient scaler's scale (`gradScale`), nor clipping's coefficient.
   */
  lossScale?: number;
  /**
   * Skip instead of applying a non-finite update: a NaN/Inf loss is not backpropagated (the
   * window's earlier gradients are kept), and a NaN/Inf gradient norm at the window's end
   * drops the gradients without an optimizer step. The result says `skipped: true`.
   */
  skipNonFinite?: boolean;
  /** Forward pass precision (autocast). Default 'fp32'. 'fp16' on a CPU model rejects. */
  precision?: Precision;
  /**
   * Before the update, list the optimizer's parameters that require a gradient but got none
   * (`missingGradients`); if there are any, the update is not applied. Default false.
   */
  checkGradients?: boolean;
  /**
   * Dynamic loss scaling with the optimizer's GradScaler (`NativeAdamW.gradScaler()`). Default:
   * on for 'fp16', off otherwise (bf16 has float32's range and needs none).
   */
  gradScaling?: boolean;
  /**
   * Data-parallel training (pass it on every batch of the run): on the window's last batch the
   * gradients are averaged over the process group joined by `distributedJoinAsync` while backward
   * runs (c10d's Reducer: ~25 MB buckets all-reduced from autograd hooks,
   * native/distributed/gradient_reducer.h), before unscaling, the norm and clipping. On every
   * batch the ranks first agree on a non-finite loss: when any rank's is NaN/Inf, every rank's
   * result reports that value as its `loss`, and with `skipNonFinite` every rank skips the batch.
   * Default false.
   */
  averageGradients?: boolean;
}

/** This process's place in the group it joined (`distributedJoinAsync`). */
export interface DistributedRank {
  rank: number;
  worldSize: number;
  localRank: number;
  localWorldSize: number;
  /** The group's backends as init_process_group names them: 'gloo', or 'cpu:gloo,cuda:nccl' when CUDA tensors go to NCCL. */
  backend: string;
}

/** Options of evalStep and headEvalStep. */
export interface EvalStepOptions extends LossOptions {
  /** Forward pass precision (autocast). Default 'fp32'. */
  precision?: Precision;
}

export interface CpuCacheStats {
  installed: boolean;
  limitBytes: number;
  cachedBytes: number;
  cachedBlocks: number;
  /** Allocations served from the cache, and those that were not (of cacheable size). */
  hits: number;
  misses: number;
  evictedBytes: number;
  /** Blocks of 2 MiB and more are 2 MiB-aligned and marked for transparent huge pages (TORCH_BERT_HUGE_PAGES=0: off). */
  hugePages: boolean;
  /** How many such blocks were allocated. */
  hugePageBlocks: number;
}

/** Options of extractFeatures. */
export interface FeatureOptions {
  /** Forward pass precision (autocast). Default 'fp32'. The features are returned as float32. */
  precision?: Precision;
  /** The classifier's method: 'features' (default, [B, hidden]) or a question-answering model's 'span_logits' ([B, T, 2]). */
  method?: 'features' | 'span_logits';
}

export interface LoraSpec {
  /** Module path suffixes to adapt. */
  targets: string[];
  rank: number;
  alpha: number;
  /**
   * Dropout on the adapter path, as PEFT's lora_dropout: each element of the adapter's input x
   * in B·A·dropout(x), in train steps of a model in training mode. (An adapter the method's
   * graph uses in weight space, see `plan()`, drops columns of A instead, one mask per step.)
   * 0 disables.
   */
  dropout: number;
  /** Seeds A's initialisation. */
  seed: number;
}

export interface NativeLoraAdapters {
  /** Paths of the adapted linear modules, e.g. `encoder.encoder.layer.0.attention.self.query`. */
  readonly modules: string[];
  /** Trainable adapter tensors: `<module>.lora_A`, `<module>.lora_B`. */
  parameters(): Array<[string, NativeTensor]>;
  /** Number of trainable adapter values. */
  readonly trainableCount: number;
  /**
   * The spec's targets that matched no module with a 2-D weight (applyLora refuses a spec where
   * none matched): one of several that matches nothing is a typo for training, not for a saved run.
   */
  readonly unusedTargets: string[];
  /** Bake W0 + s·B·A into the weights for good and detach the adapters. */
  merge(): void;
  /**
   * How a forward of `method` (default 'forward') applies each adapter: `activation`, as PEFT
   * does (x·A^T·B^T added to the linear's output, in a rewritten copy of the method's graph),
   * or `weightSpace` (W0 + s·B·A swapped into the weight for the call), for weights the graph
   * uses other than as a linear's weight. Module paths; adapters the method never uses are in
   * neither.
   */
  plan(method?: string): { activation: string[]; weightSpace: string[] };
  /** Adapter tensors + spec to a small file (torch.load-able dict). */
  save(path: string): void;
  /** Load adapter tensors saved by `save()` for the same targets and shapes. */
  load(path: string): void;
  dispose(): void;
}

/** Where bottleneck adapters go: Houlsby's after both sub-layers of each layer, Pfeiffer's after the feed-forward only. */
export type AdapterConfig = 'houlsby' | 'pfeiffer';
/** The adapter's non-linearity (AdapterHub's names; swish is SiLU, gelu the exact erf form). */
export type AdapterActivation = 'relu' | 'gelu' | 'swish';

export interface BottleneckSpec {
  config: AdapterConfig;
  /** Bottleneck width; give this or `reductionFactor`. */
  size?: number;
  /** Bottleneck width as floor(hidden / reductionFactor), AdapterHub's way; give this or `size`. */
  reductionFactor?: number;
  activation: AdapterActivation;
  /** Seeds the initialisation of each adapter's down projection. */
  seed: number;
}

export interface NativeBottleneckAdapters {
  /** Paths of the adapted sub-layers, e.g. `encoder.encoder.layer.0.attention.output` (DistilBERT: `...attention`, `...ffn`). */
  readonly modules: string[];
  /** The bottleneck width. */
  readonly size: number;
  /**
   * Trainable adapter tensors: `<sub-layer>.adapter.down.weight` [size, H], `.adapter.down.bias`,
   * `.adapter.up.weight` [H, size], `.adapter.up.bias` (the names a saved model gives them).
   */
  parameters(): Array<[string, NativeTensor]>;
  /** Number of trainable adapter values. */
  readonly trainableCount: number;
  /** Adapter tensors + spec to a small file (torch.load-able dict). */
  save(path: string): void;
  /** Load adapter tensors saved by `save()` for the same sub-layers and shapes. */
  load(path: string): void;
  dispose(): void;
}

export interface Versions {
  libtorch: string;
  /** CUDA version libtorch was built with, or null for CPU builds. */
  cuda: string | null;
  cudnn: string | null;
  /** The libtorch version the addon was compiled against. */
  builtAgainst: string;
}

export interface NativeBinding {
  Tensor: NativeTensorStatic;
  ScriptModule: NativeScriptModuleStatic;
  AdamW: NativeAdamWStatic;
  /**
   * Wrap an encoder in a classifier module `TorchBertClassifier`:
   * forward(input_ids, attention_mask) -> log-probabilities [B, C]; also methods
   * `features(input_ids, attention_mask) -> [B, H]` (pooled encoder output) and
   * `head_forward(features) -> [B, C]`. Parameters: `encoder.*`, `head.dense.{weight,bias}`,
   * `head.out_proj.{weight,bias}` (the MLP head; see ClassifierSpec.head for the others). The encoder is probed with a small input to learn its
   * arity, output kind and hidden size; an output that is not [B, T, H] throws.
   */
  buildClassifier(encoder: NativeScriptModule, spec: ClassifierSpec): BuiltClassifier;
  /**
   * One optimisation step: forward in training mode, NLL loss on the log-probabilities,
   * backward, optional clipping, optimizer.step(), zero grads. Runs on a worker thread.
   */
  trainStep(model: NativeScriptModule, optimizer: NativeAdamW, batch: StepBatch, options?: TrainStepOptions): Promise<TrainStepResult>;
  /** Forward in eval mode with autograd off (no_grad: TorchScript breaks under inference mode after training); loss when labels are given. */
  evalStep(model: NativeScriptModule, batch: StepBatch, options?: EvalStepOptions): Promise<EvalStepResult>;

  // ---- Frozen technique: encode once, train the head on cached features ----
  /**
   * Run the classifier's `features(input_ids, attention_mask)` (pooled encoder output) in eval
   * mode without autograd, on a worker thread. Returns [B, H] float32 on the model's device.
   */
  extractFeatures(model: NativeScriptModule, batch: StepBatch, options?: FeatureOptions): Promise<NativeTensor>;
  /** Concatenate tensors along dim 0 (a feature cache from per-batch features). */
  cat(tensors: NativeTensor[]): NativeTensor;
  /**
   * A train step on cached features: rows `rows` of `features` ([N, H]) go through the
   * classifier's `head_forward` in its current mode, then loss/backward/step as trainStep.
   */
  headTrainStep(
    model: NativeScriptModule,
    optimizer: NativeAdamW,
    features: NativeTensor,
    rows: Int32Array,
    labels: Int32Array | Float32Array,
    options?: TrainStepOptions,
  ): Promise<TrainStepResult>;
  /** evalStep on cached features (`head_forward` in eval mode, no autograd). */
  headEvalStep(
    model: NativeScriptModule,
    features: NativeTensor,
    rows: Int32Array,
    labels: Int32Array | Float32Array | null,
    options?: EvalStepOptions,
  ): Promise<EvalStepResult>;

  // ---- LoRA ----
  /**
   * Attach low-rank adapters to linear layers of `model`: every submodule whose path ends with
   * one of `spec.targets` (e.g. 'attention.self.query') and has a 2-D `weight` gets
   * A [r, in] (kaiming-uniform like PEFT) and B [out, r] (zeros): its output becomes
   * linear(x, W0, b) + (alpha / r) * B·A·x in every forward of trainStep/evalStep/
   * extractFeatures/forward (a rewritten copy of the method's graph; the model's own graphs
   * are untouched). W0 is frozen. `save()` and `clone()` of an adapted model hold the merged
   * weights W0 + (alpha / r)·B·A as plain parameters (the file runs anywhere with plain torch).
   * Throws when no submodule matches.
   */
  applyLora(model: NativeScriptModule, spec: LoraSpec): NativeLoraAdapters;

  // ---- Bottleneck adapters ----
  /**
   * Attach bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020) to `model`: after the
   * output projection `dense` of every sub-layer `<layer>.attention.output` (houlsby only) and
   * `<layer>.output` (DistilBERT: `<layer>.attention.out_lin`, houlsby only, and
   * `<layer>.ffn.lin2`) — before its dropout, residual add and LayerNorm — the output h becomes
   * h + up(act(down(h))) in every forward of trainStep/evalStep/extractFeatures/forward (a
   * rewritten copy of the method's graph; the model's own graphs are untouched). down.weight is
   * drawn from N(0, 0.02), up and the biases are zero, so the model starts as it was. The
   * model's own parameters are left as they are (the caller decides what trains). `save()` and
   * `clone()` of an adapted model hold the adapters as submodules `<sub-layer>.adapter.{down,up}`
   * and in the graph of every method that reaches them. Throws when no sub-layer matches, or on
   * a model with LoRA adapters (and applyLora on one with these).
   */
  applyAdapters(model: NativeScriptModule, spec: BottleneckSpec): NativeBottleneckAdapters;

  // ---- Models built natively ----
  /**
   * Build a Hugging Face encoder (and its MLM head) as TorchScript, with transformers' module and
   * parameter names, from weights named as transformers' AutoModel state_dict (no `bert.`
   * prefix) plus the MLM head's keys as the ForMaskedLM checkpoint names them (bert:
   * `cls.predictions.transform.dense.weight`, `cls.predictions.transform.LayerNorm.weight`,
   * `cls.predictions.bias`, optional `cls.predictions.decoder.weight`; roberta: `lm_head.dense.*`,
   * `lm_head.layer_norm.*`, `lm_head.bias`, optional `lm_head.decoder.weight`; distilbert:
   * `vocab_transform.*`, `vocab_layer_norm.*`, `vocab_projector.bias`, optional
   * `vocab_projector.weight`; a `decoder.bias` equal to the head's bias is accepted). The head's
   * parameters are those keys without `cls.` / `lm_head.`; its decoder weight is the encoder's
   * word embedding tensor (tied) unless the checkpoint's own differs. Floating weights are cast to
   * float32 (a float32 tensor already on `device` is used as it is, sharing storage). A missing
   * tensor, an unexpected name or a shape that disagrees with the config throws naming the tensor
   * and both shapes. `device` defaults to the CPU.
   */
  buildEncoder(config: NativeEncoderConfig, weights: Array<[string, NativeTensor]>, device?: string): BuiltEncoder;
  /**
   * The encoder and its MLM head (both from one `buildEncoder` call) as one module that runs the
   * head on the masked tokens only (native/module/mlm_model.h); shares their parameters.
   */
  buildMlmModel(encoder: NativeScriptModule, mlmHead: NativeScriptModule): BuiltMlmModel;

  // ---- Training state (resume) ----
  /** Write named tensors to a file Python can read with `torch.load` (a dict of tensors). */
  saveTensors(path: string, tensors: Record<string, NativeTensor>): void;
  loadTensors(path: string): Record<string, NativeTensor>;

  // ---- Weight files and Hugging Face models ----
  /**
   * Reads a .safetensors file: every tensor as a CPU tensor in the file's dtype, in header order
   * (read straight into the tensors, no JS buffer). The header is validated first (native/tensor/safetensors.h):
   * any malformed file throws an Error naming the file and, where one is involved, the tensor.
   */
  readSafetensors(path: string): { tensors: Array<[string, NativeTensor]>; metadata: Record<string, string> | null };
  /** The validated header of a .safetensors file, reading only the header's bytes (same checks as readSafetensors). */
  readSafetensorsHeader(path: string): SafetensorsHeader;
  /**
   * Writes tensors (any device; written as contiguous CPU bytes in their dtype) in the order given,
   * atomically (temp file + rename), with `metadata` as `__metadata__` when given. Names must be unique.
   */
  writeSafetensors(path: string, tensors: Array<[string, NativeTensor]>, metadata?: Record<string, string>): void;
  /**
   * Reads a zip-format torch.save state dict (pytorch_model.bin, what torch >= 1.6 writes) with a
   * restricted unpickler (native/tensor/state_dict.h: OrderedDict, tensor rebuilds and storages, no
   * other class): the flat {name: tensor} dict, in file order. A legacy (non-zip) file or anything
   * but a dict of tensors throws naming the file.
   */
  readTorchStateDict(path: string): Array<[string, NativeTensor]>;
  /** The default CPU generator's state (and CUDA's when available), for exact resume. */
  getRngState(): Uint8Array;
  setRngState(state: Uint8Array): void;
  nllLoss(logProbs: NativeTensor, target: NativeTensor): NativeTensor;
  crossEntropy(logits: NativeTensor, target: NativeTensor): NativeTensor;
  /** Run `fn` with autograd recording disabled on this thread. */
  noGrad<T>(fn: () => T): T;
  /** Seed libtorch's default generators (CPU and CUDA), like `torch.manual_seed`. */
  manualSeed(seed: number): void;
  /** `torch.randperm(n, generator=torch.Generator().manual_seed(seed))`, identical to Python. */
  randperm(n: number, seed: number): Int32Array;
  setNumThreads(n: number): void;
  /**
   * OpenBLAS's own thread count (its pool, which setNumThreads does not size), or null where the
   * BLAS libtorch loaded is not OpenBLAS (MKL follows setNumThreads).
   */
  getBlasThreads(): number | null;
  /** Sizes OpenBLAS's pool; false (nothing done) where the BLAS is not OpenBLAS. */
  setBlasThreads(n: number): boolean;

  // ---- Distributed (c10d process group; native/distributed/) ----
  /** The backends this build can create: `['gloo']`, `['gloo', 'nccl']` (a CUDA libtorch 2.x with NCCL's headers), or `[]` when built without Gloo's headers. */
  distributedBackends(): string[];
  /**
   * Joins the process's group from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
   * LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT): TCPStore rendezvous (rank 0 serves it), Gloo.
   * `timeoutMs` bounds the rendezvous and every later collective. Settles when every rank joined
   * (on the threadpool: the JS thread stays free), or rejects.
   */
  distributedJoinAsync(timeoutMs: number): Promise<DistributedRank>;
  /**
   * Stops the join in progress (or queued) within about a second (its promise rejects): its waits
   * for the master and for the other ranks look between tries. No-op when none is in progress.
   */
  distributedCancelJoin(): void;
  /** All-reduce of a few numbers (blocking): the same result on every rank. */
  distributedAllReduce(values: Float64Array, op: 'sum' | 'max' | 'min'): Float64Array;
  /** All-reduce of a tensor, in place (blocking): the same values on every rank. */
  distributedAllReduceTensor(tensor: NativeTensor, op: 'sum' | 'max' | 'min'): void;
  /** Every rank's tensors take rank `root`'s values, in place (blocking). */
  distributedBroadcast(tensors: NativeTensor[], root: number): void;
  /** Leaves the group (no-op when not joined). */
  distributedLeave(): void;
  /**
   * Turns token pruning on or off from the next call on (default on, or off with
   * TORCH_BERT_TOKEN_PRUNING=0): the graph pass that computes only the token rows a method's
   * result depends on (native/graph/token_pruning.h). Same results either way; for comparisons.
   */
  setTokenPruning(on: boolean): void;
  /** Whether token pruning is on (see setTokenPruning). */
  tokenPruning(): boolean;
  getNumThreads(): number;
  cudaIsAvailable(): boolean;
  cudaDeviceCount(): number;
  versions(): Versions;

  // ---- Precision ----
  /**
   * Allow TF32 tensor cores for float32 matmuls (cuBLAS) and convolutions (cuDNN), process-wide
   * (like `torch.backends.cuda.matmul.allow_tf32` + `torch.backends.cudnn.allow_tf32`). Effective
   * on Ampere (compute capability 8.0) and newer; harmless elsewhere.
   */
  setAllowTF32(on: boolean): void;
  /** Whether TF32 matmuls are allowed (cuBLAS). */
  allowTF32(): boolean;

  // ---- File locks (native/runtime/file_lock.h) ----
  /**
   * `flock(fd, LOCK_EX | LOCK_NB)`, the lock Python's huggingface_hub takes on a download
   * (lib/models/hub-lock.ts): true when taken, false while another open file description holds it.
   * Never blocks (poll it). Throws where the file system has no flock. Released by closing `fd`,
   * or by the kernel when the process dies.
   */
  tryLockFile(fd: number): boolean;

  // ---- Diagnostics (torch-bert doctor) ----
  /** `torch.__config__.show()`: libtorch's build configuration (compiler, BLAS_INFO, CUDA, flags). */
  showConfig(): string;
  /** `torch.__config__.parallel_info()`: ATen's parallel backend and thread settings. */
  parallelInfo(): string;
  /**
   * The caching CPU allocator torch-bert installs for libtorch's tensors (native/runtime/cpu_allocator.h):
   * freed blocks of 256 KiB or more are kept, up to `limitBytes` (TORCH_BERT_CPU_CACHE_MB,
   * default 1024 MiB; 0 keeps libtorch's own allocator: `installed` false), for reuse.
   */
  cpuCacheStats(): CpuCacheStats;
  /** Return every cached block to the system (the cache stays in use). */
  emptyCpuCache(): void;
  getNumInteropThreads(): number;
  /** `torch.matmul(a, b)` without autograd (touches BLAS). */
  matmul(a: NativeTensor, b: NativeTensor): NativeTensor;
  /** How this addon was compiled (constants baked in at build time). */
  buildInfo(): NativeBuildInfo;
  /**
   * Properties of CUDA device `index` (as libtorch numbers them), read through the CUDA driver.
   * Throws on a CPU-only libtorch, and for an index libtorch does not see.
   */
  cudaDeviceProperties(index: number): CudaDeviceProperties;
  /**
   * Testing only: a Promise rejected exactly as a step on `device` with `batchSize` examples is
   * when libtorch throws `kind` there: 'oom' (CUDA out of memory), 'cpu-oom', 'cuda' (a CUDA
   * error), 'other' (passes unchanged). Touches no device.
   */
  simulateDeviceError(kind: 'oom' | 'cpu-oom' | 'cuda' | 'other', device: string, batchSize: number): Promise<never>;
}

/** What {@link NativeBinding.readSafetensorsHeader} returns. */
export interface SafetensorsHeader {
  /** In header order. `dtype`: the file's dtype (F32 → 'float32', I16 → 'int16', ...). */
  tensors: Array<{ name: string; dtype: DType; shape: number[] }>;
  /** `__metadata__`, or null when the file has none. */
  metadata: Record<string, string> | null;
}

export interface NativeBuildInfo {
  /** The libtorch version of the headers compiled against (equals `versions().builtAgainst`). */
  libtorch: string;
  /**
   * The CUDA version built against: the CUDA toolkit CMake found at build time (CUDAToolkit_VERSION,
   * e.g. '13.0.88'), else the CUDA version of the CUDA libtorch (a wheel's torch.version.cuda, e.g.
   * '12.6'); null when libtorch_cuda is not linked. `versions().cuda` is what the libtorch running reports.
   */
  cuda: string | null;
  /** Whether libtorch_cuda is linked in (DT_NEEDED), so that CUDA can be available at run time. */
  torchCudaLinked: boolean;
  /** `_GLIBCXX_USE_CXX11_ABI` the addon was compiled with (must equal libtorch's). */
  cxx11Abi: number | null;
  /** The compiler's `__VERSION__`. */
  compiler: string | null;
  /** `__cplusplus` */
  cplusplus: number;
  napiVersion: number;
  /** How CMake set libtorch up: 'package' (TorchConfig.cmake), 'manual' (without it: CUDA wheels without a CUDA toolkit), 'unknown' (not built by CMake). */
  torchFrom: 'package' | 'manual' | 'unknown';
}

export interface CudaDeviceProperties {
  index: number;
  name: string;
  /** Bytes. */
  totalMemory: number;
  /** e.g. '9.0' */
  computeCapability: string;
  major: number;
  minor: number;
  multiProcessorCount: number;
  /** The newest CUDA version the driver supports, e.g. '13.0'. */
  driverCuda: string | null;
}
