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
 * - Methods ending in `Async` run on a libuv worker thread and return a Promise; the
 *   event loop never waits on libtorch compute.
 * - Native objects own libtorch memory. Call `dispose()` to free it now; the garbage
 *   collector frees it otherwise. Disposing twice is harmless; using a disposed object
 *   throws `Error('... has been disposed')`.
 */

export type DType =
  | 'float32'
  | 'float64'
  | 'float16'
  | 'bfloat16'
  | 'int64'
  | 'int32'
  | 'uint8'
  | 'bool';

/** Typed arrays accepted and returned. float16/bfloat16 read back as Float32Array, bool as Uint8Array. */
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
}

/** What a TorchScript method can return, converted to JS. */
export type NativeValue =
  | NativeTensor
  | number
  | boolean
  | string
  | null
  | NativeValue[]
  | { [key: string]: NativeValue };

/** A TorchScript module (`torch::jit::Module`). */
export interface NativeScriptModule {
  readonly device: string;
  readonly isTraining: boolean;
  readonly disposed: boolean;
  /** Run `forward` on the calling thread (use for small inputs and tests). */
  forward(...inputs: NativeTensor[]): NativeValue;
  /** Run `forward` on a worker thread. */
  forwardAsync(...inputs: NativeTensor[]): Promise<NativeValue>;
  /** Run any method by name on the calling thread. */
  runMethod(name: string, ...inputs: NativeTensor[]): NativeValue;
  /** The TorchScript schema of a method, e.g. `forward(__torch__.M self, Tensor input_ids, Tensor attention_mask) -> Tensor`. */
  methodSchema(name: string): string;
  /** Number of inputs of `forward`, not counting `self`. */
  readonly forwardArity: number;
  /** All parameters, recursively, in registration order; the tensors share storage with the module. */
  namedParameters(): Array<[string, NativeTensor]>;
  /** Set requires_grad on every parameter whose name starts with `prefix` (all when omitted). */
  setRequiresGrad(on: boolean, prefix?: string): void;
  /** Recursively set the `training` flag (dropout on/off in scripted code). */
  train(on: boolean): void;
  /** Move parameters and buffers to a device, in place. */
  to(device: string): void;
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

export interface ClassifierSpec {
  numClasses: number;
  /** Width of the head's hidden layer (the seed: 512). */
  headHidden: number;
  /** Dropout after the head's ReLU (the seed: 0.1). */
  dropout: number;
  pooling: 'cls' | 'mean';
  /** Seeds the head's initialisation (torch.manual_seed semantics, nn.Linear init order). */
  seed: number;
}

export interface BuiltClassifier {
  module: NativeScriptModule;
  encoder: EncoderInfo;
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
  /** Optimizer state (exp_avg, exp_avg_sq, step) to/from a file (torch::save format). */
  save(path: string): void;
  load(path: string): void;
  dispose(): void;
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
  /** Number of examples whose argmax prediction equals the label. */
  correct: number;
  /** Argmax class per example. */
  predictions: Int32Array;
}

export interface EvalStepResult {
  /** Mean loss over the batch, or null when no labels were given. */
  loss: number | null;
  correct: number | null;
  predictions: Int32Array;
  /** Softmax probabilities, row-major [batch, numClasses]. */
  probabilities: Float32Array;
}

export interface StepBatch {
  /** Token ids, row-major [batchSize, seqLen]. */
  inputIds: Int32Array;
  /** 1 for real tokens, 0 for padding, row-major [batchSize, seqLen]. */
  attentionMask: Int32Array;
  batchSize: number;
  seqLen: number;
  /** Class ids, length batchSize. */
  labels?: Int32Array;
}

/** How the loss is computed from the model's log-probabilities (PyTorch cross_entropy semantics). */
export interface LossOptions {
  /** Per-class weights, length numClasses (like `weight=` of nn.CrossEntropyLoss); weighted mean. */
  classWeights?: Float32Array;
  /** Label smoothing in [0, 1) (like `label_smoothing=` of nn.CrossEntropyLoss). */
  labelSmoothing?: number;
}

export interface TrainStepOptions extends LossOptions {
  /** Clip the global gradient norm to this value; 0 or absent: no clipping. */
  maxGradNorm?: number;
  /**
   * Gradient accumulation: when true, only forward + backward run (gradients add up in the
   * parameters); clipping, optimizer.step() and zeroing are skipped. The step that ends an
   * accumulation window passes false.
   */
  accumulateOnly?: boolean;
  /** Multiply the loss by this before backward (1 / accumulation steps). Default 1. The reported loss is unscaled. */
  lossScale?: number;
  /**
   * Skip instead of applying a non-finite update: a NaN/Inf loss is not backpropagated (the
   * window's earlier gradients are kept), and a NaN/Inf gradient norm at the window's end
   * drops the gradients without an optimizer step. The result says `skipped: true`.
   */
  skipNonFinite?: boolean;
}

export interface LoraSpec {
  /** Module path suffixes to adapt. */
  targets: string[];
  rank: number;
  alpha: number;
  /**
   * Dropout on the adapter path. Adapters live in weight space (W0 + s·B·A), so this drops
   * input features of the low-rank update (columns of A, rescaled), resampled every step,
   * shared by the examples of a batch. 0 disables.
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
  /** Bake W0 + s·B·A into the weights for good and detach the adapters. */
  merge(): void;
  /** Adapter tensors + spec to a small file (torch.load-able dict). */
  save(path: string): void;
  /** Load adapter tensors saved by `save()` for the same targets and shapes. */
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
   * `head.out_proj.{weight,bias}`. The encoder is probed with a small input to learn its
   * arity, output kind and hidden size; an output that is not [B, T, H] throws.
   */
  buildClassifier(encoder: NativeScriptModule, spec: ClassifierSpec): BuiltClassifier;
  /**
   * One optimisation step: forward in training mode, NLL loss on the log-probabilities,
   * backward, optional clipping, optimizer.step(), zero grads. Runs on a worker thread.
   */
  trainStep(
    model: NativeScriptModule,
    optimizer: NativeAdamW,
    batch: StepBatch,
    options?: TrainStepOptions,
  ): Promise<TrainStepResult>;
  /** Forward in eval mode with autograd off (no_grad: TorchScript breaks under inference mode after training); loss when labels are given. */
  evalStep(model: NativeScriptModule, batch: StepBatch, loss?: LossOptions): Promise<EvalStepResult>;

  // ---- Frozen technique: encode once, train the head on cached features ----
  /**
   * Run the classifier's `features(input_ids, attention_mask)` (pooled encoder output) in eval
   * mode without autograd, on a worker thread. Returns [B, H] float32 on the model's device.
   */
  extractFeatures(model: NativeScriptModule, batch: StepBatch): Promise<NativeTensor>;
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
    labels: Int32Array,
    options?: TrainStepOptions,
  ): Promise<TrainStepResult>;
  /** evalStep on cached features (`head_forward` in eval mode, no autograd). */
  headEvalStep(
    model: NativeScriptModule,
    features: NativeTensor,
    rows: Int32Array,
    labels: Int32Array | null,
    loss?: LossOptions,
  ): Promise<EvalStepResult>;

  // ---- LoRA ----
  /**
   * Attach low-rank adapters to linear layers of `model`: every submodule whose path ends with
   * one of `spec.targets` (e.g. 'attention.self.query') and has a 2-D `weight` gets
   * A [r, in] (kaiming-uniform like PEFT) and B [out, r] (zeros), and its weight becomes
   * W0 + (alpha / r) * B @ A, recomputed natively before every forward of trainStep/evalStep/
   * extractFeatures and before save(). W0 is frozen. `save()` of an adapted model writes the
   * merged weights as plain parameters (the file runs anywhere with plain torch).
   * Throws when no submodule matches.
   */
  applyLora(model: NativeScriptModule, spec: LoraSpec): NativeLoraAdapters;

  // ---- Training state (resume) ----
  /** Write named tensors to a file Python can read with `torch.load` (a dict of tensors). */
  saveTensors(path: string, tensors: Record<string, NativeTensor>): void;
  loadTensors(path: string): Record<string, NativeTensor>;
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
  getNumThreads(): number;
  cudaIsAvailable(): boolean;
  cudaDeviceCount(): number;
  versions(): Versions;
}
