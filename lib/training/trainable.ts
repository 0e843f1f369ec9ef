/**
 * What trains: the one place that decides each parameter's gradient flag for a run, builds the
 * AdamW groups from that decision, and enforces that nothing left trainable is silently never
 * trained.
 *
 * The flags stored in the encoder file are never trusted. A model traced after
 * `for p in bert.parameters(): p.requires_grad_(False)` (the seed tutorial freezes BERT that
 * way) would otherwise make `full` train only the head while reporting the whole encoder as
 * trainable. Instead:
 *   - `full`: every encoder parameter the loss reaches trains, except those under a `freeze`
 *     prefix;
 *   - `lora`: the adapters train, never the base weights;
 *   - `adapter`: the bottleneck adapters train, and the encoder's LayerNorms only with
 *     `adapter.trainLayerNorm`; no other base weight;
 *   - `frozen`: no encoder parameter trains;
 *   - the head always trains, except the prompt head's decoder rows (`PROMPT_DECODER`): the label
 *     words' decoder weight rows (an untied decoder's; a tied one is the word embeddings, an
 *     encoder parameter) train with `full` only, as the encoder's weights do; their bias rows
 *     with every technique but `frozen` (LM-BFF's `full` trains the whole MLM head; under `lora`
 *     and `adapter` they are head parameters, as PEFT trains the task head next to the
 *     adapters; `frozen` trains the MLM head's transform alone, as issue 15 defines it).
 * Parameters the classifier's output cannot reach (the pooler under [CLS] pooling, a head inside
 * the encoder file that the task does not use) are found by `buildClassifier`'s autograd probe,
 * frozen up front and reported as not used by this task. As a last guard, the trainer asks the
 * first applied optimizer step to list the trainable parameters that got no gradient
 * (`missingGradientsError`).
 */
import type {
  AdamWGroup,
  BottleneckSpec,
  NativeBinding,
  NativeBottleneckAdapters,
  NativeLoraAdapters,
  NativeScriptModule,
  NativeTensor,
} from '../addon/binding.js';
import { InputError, ModelError } from '../addon/errors.js';
import type { ResolvedAdapterOptions, ResolvedTrainOptions } from './options.js';

/** The classifier's parameter names: `encoder.` + the encoder file's own names, and `head.`. */
const ENCODER = 'encoder.';
const HEAD = 'head.';
/** The prompt head's label rows of the MLM decoder (native/module/classifier.cc). */
export const PROMPT_DECODER = { weight: 'head.label_decoder.weight', bias: 'head.label_decoder.bias' } as const;

type Named = Array<[string, NativeTensor]>;

export interface TrainableSet {
  groups: AdamWGroup[];
  /** Parameter names of each AdamW group, in the group's order (for error messages). */
  groupNames: string[][];
  /** The tensors a resume must restore, by stable name. */
  trainable: Named;
  adapters?: NativeLoraAdapters | NativeBottleneckAdapters;
  /** Parameters that train (adapters included), and all parameters of the classifier (encoder + head). */
  trainableParameters: number;
  totalParameters: number;
  /** Trainable parameters that count against the encoder (its own for full, the adapters for LoRA and adapter, with any LayerNorms trained) over the encoder's size. */
  trainableEncoderFraction: number;
  /** Encoder parameters the task's output does not depend on, by the encoder file's names; frozen. */
  unusedParameters: string[];
  /** Encoder parameters that train, by the classifier's names (`encoder.` + the file's). */
  trainedEncoder: Set<string>;
  /** Encoder parameters frozen by the `freeze` option, by the encoder file's names. */
  frozenByOption: string[];
  /** Says once where the run overrode a gradient flag stored in the encoder file; null when it did not. */
  flagOverride: string | null;
}

const elements = (t: NativeTensor) => t.shape.reduce((a, b) => a * b, 1);
const count = (tensors: Named) => tensors.reduce((n, [, t]) => n + elements(t), 0);
const encoderName = (name: string) => name.slice(ENCODER.length);

/**
 * Whether a parameter goes to the weight-decayed AdamW group: all but biases and LayerNorm
 * weights, as BERT was trained and as Hugging Face's Trainer does, which under PEFT decays
 * LoRA's A and B alike.
 */
export function isDecayed(name: string): boolean {
  return !(name.endsWith('.bias') || isLayerNorm(name));
}

/** A LayerNorm's weight or bias, by Hugging Face's and PyTorch's spellings. */
export function isLayerNorm(name: string): boolean {
  return /layernorm|layer_norm|LayerNorm/.test(name);
}

/** `freeze` prefixes are the encoder's own parameter names (`embeddings.`, `encoder.layer.0.`); each must match one. */
function frozenByPrefix(encoder: Named, prefixes: readonly string[]): Set<string> {
  const frozen = new Set<string>();
  for (const prefix of prefixes) {
    const matched = encoder.filter(([n]) => encoderName(n).startsWith(prefix));
    if (matched.length === 0) {
      const examples = encoder.slice(0, 4).map(([n]) => encoderName(n));
      throw new InputError(
        `freeze: no encoder parameter name starts with '${prefix}' (names look like ${examples.join(', ')}); ` +
          `write a prefix of the encoder's own names, e.g. 'embeddings.' or 'encoder.layer.0.'`,
      );
    }
    for (const [n] of matched) frozen.add(n);
  }
  return frozen;
}

type TrainableOptions = Pick<
  ResolvedTrainOptions,
  'technique' | 'freeze' | 'lora' | 'adapter' | 'learningRate' | 'encoderLearningRate' | 'weightDecay' | 'betas' | 'eps' | 'seed'
>;

/**
 * The decision, one flag per classifier parameter name (see the file comment). Unused head
 * parameters cannot occur (the head is the output), but are frozen all the same should a future
 * head have one.
 */
function trainsUnder(opts: TrainableOptions, frozen: ReadonlySet<string>, unused: ReadonlySet<string>): (name: string) => boolean {
  const trainsInEncoder = (name: string) =>
    (opts.technique === 'full' && !frozen.has(name)) || (opts.technique === 'adapter' && opts.adapter.trainLayerNorm && isLayerNorm(name));
  const trainsInHead = (name: string) =>
    name === PROMPT_DECODER.weight
      ? opts.technique === 'full'
      : name === PROMPT_DECODER.bias
        ? opts.technique !== 'frozen'
        : name.startsWith(HEAD);
  return (name) => !unused.has(name) && (trainsInHead(name) || trainsInEncoder(name));
}

/** The technique's adapters on `model` (LoRA, or bottleneck adapters), none for `full` and `frozen`. */
function attachAdapters(
  binding: NativeBinding,
  model: NativeScriptModule,
  opts: TrainableOptions,
): NativeLoraAdapters | NativeBottleneckAdapters | undefined {
  if (opts.technique === 'lora') return everyTargetUsed(binding.applyLora(model, { ...opts.lora, seed: opts.seed }));
  if (opts.technique !== 'adapter') return undefined;
  return binding.applyAdapters(model, bottleneckSpec(opts.adapter, opts.seed));
}

/**
 * The adapters, once every LoRA target has matched a module. applyLora refuses targets that match
 * nothing at all; one target of several that matches nothing is a typo (`query,valu`) that would
 * train query alone, silently. Checked here, for training, not in applyLora: a classifier saved
 * with such a target must still load (Classifier.loadAdapters).
 */
function everyTargetUsed(adapters: NativeLoraAdapters): NativeLoraAdapters {
  const unused = adapters.unusedTargets;
  if (unused.length > 0) {
    const adapted = [...new Set(adapters.modules.map((path) => path.slice(path.lastIndexOf('.') + 1)))];
    throw new InputError(
      `lora.targets ${unused.map((t) => `'${t}'`).join(', ')} match${unused.length === 1 ? 'es' : ''} no module with a 2-D weight ` +
        `(the other targets adapt modules named ${adapted.map((n) => `'${n}'`).join(', ')}): correct or remove ${unused.length === 1 ? 'it' : 'them'}`,
    );
  }
  return adapters;
}

/** applyAdapters' spec of resolved adapter options: the width as a size, or as a reduction factor when one was given. */
export function bottleneckSpec(adapter: ResolvedAdapterOptions, seed: number): BottleneckSpec {
  const { config, size, reductionFactor, activation } = adapter;
  return { config, activation, seed, ...(reductionFactor === null ? { size: size! } : { reductionFactor }) };
}

/** AdamW's groups and their members' names: each set of parameters split into those with weight decay and those without. */
class GroupBuilder {
  readonly groups: AdamWGroup[] = [];
  readonly names: string[][] = [];
  constructor(private readonly opts: TrainableOptions) {}

  add(params: Named, lr: number): void {
    const common = { lr, betas: this.opts.betas, eps: this.opts.eps };
    for (const [decayed, weightDecay] of [
      [true, this.opts.weightDecay],
      [false, 0],
    ] as const) {
      const members = params.filter(([n]) => isDecayed(n) === decayed);
      if (members.length === 0) continue;
      this.groups.push({ params: members.map(([, t]) => t), weightDecay, ...common });
      this.names.push(members.map(([n]) => n));
    }
  }
}

/**
 * Sets every gradient flag of `model` (a classifier from buildClassifier) for the technique,
 * attaches LoRA adapters where asked, and returns the AdamW groups. `unused` is
 * buildClassifier's `unusedParameters` (classifier names). `aliases` are names of a tensor that
 * another name already holds (an MLM model's decoder weight, tied to the word embeddings): left
 * out, so the tensor is one AdamW parameter, set and counted once.
 */
export function setUpTrainable(
  binding: NativeBinding,
  model: NativeScriptModule,
  opts: TrainableOptions,
  unused: readonly string[],
  aliases: readonly string[] = [],
): TrainableSet {
  const aliasSet = new Set(aliases);
  const all = model.namedParameters().filter(([n]) => !aliasSet.has(n));
  const head = all.filter(([n]) => n.startsWith(HEAD));
  const encoder = all.filter(([n]) => n.startsWith(ENCODER));
  if (opts.freeze.length > 0 && opts.technique !== 'full') {
    throw new InputError(`freeze applies to technique 'full'; '${opts.technique}' already freezes every encoder parameter`);
  }
  const frozen = frozenByPrefix(encoder, opts.freeze);

  // 1. The flags.
  const trains = trainsUnder(opts, frozen, new Set(unused));
  const trainedButFlaggedOff = encoder.filter(([n, t]) => trains(n) && !t.requiresGrad).map(([n]) => encoderName(n));
  for (const [name, tensor] of all) tensor.setRequiresGrad(trains(name));
  const trainedHead = head.filter(([n]) => trains(n));
  const trainedEncoder = encoder.filter(([n]) => trains(n));

  // 2. The adapters, then AdamW's groups: the head at the learning rate; the encoder's trained
  // parameters at the encoder's rate (full) or, for the LayerNorms trainLayerNorm adds, at the
  // adapters' (as AdapterHub trains them); the adapters at the learning rate.
  const adapters = attachAdapters(binding, model, opts);
  const adapterParams = adapters ? adapters.parameters() : [];
  const groups = new GroupBuilder(opts);
  groups.add(trainedHead, opts.learningRate);
  if (opts.technique === 'full') groups.add(trainedEncoder, opts.encoderLearningRate ?? opts.learningRate);
  if (opts.technique === 'adapter') groups.add(trainedEncoder, opts.learningRate);
  groups.add(adapterParams, opts.learningRate);
  const trainable: Named = [...trainedHead, ...trainedEncoder, ...adapterParams];

  const encoderParameters = count(encoder);
  const encoderTrainable = (adapters ? adapters.trainableCount : 0) + count(trainedEncoder);
  return {
    groups: groups.groups,
    groupNames: groups.names,
    trainable,
    adapters,
    trainedEncoder: new Set(trainedEncoder.map(([n]) => n)),
    trainableParameters: count(trainable),
    totalParameters: count(all),
    trainableEncoderFraction: encoderParameters > 0 ? encoderTrainable / encoderParameters : 0,
    unusedParameters: unused.filter((n) => n.startsWith(ENCODER)).map(encoderName),
    frozenByOption: [...frozen].map(encoderName),
    flagOverride: flagOverrideNote(trainedButFlaggedOff, encoder.length),
  };
}

/** The note for encoder parameters the file marks requires_grad = false and the technique trains anyway; null for none. */
function flagOverrideNote(trainedButFlaggedOff: string[], encoderParameters: number): string | null {
  if (trainedButFlaggedOff.length === 0) return null;
  return (
    `the encoder file marks ${trainedButFlaggedOff.length} of its ${encoderParameters} parameters requires_grad = false ` +
    `(${trainedButFlaggedOff.slice(0, 3).join(', ')}${trainedButFlaggedOff.length > 3 ? ', ...' : ''}); ` +
    `technique 'full' trains them anyway (freeze some on purpose with the freeze option)`
  );
}

/**
 * The guard: a ModelError naming the trainable parameters that the first applied optimizer
 * step found without a gradient (`missingGradients` of trainStep/headTrainStep, [group, index]
 * pairs), or null when there are none.
 */
export function missingGradientsError(missing: ReadonlyArray<readonly [number, number]>, set: TrainableSet): ModelError | null {
  if (missing.length === 0) return null;
  const names = missing.map(([g, i]) => set.groupNames[g]?.[i] ?? `group ${g} #${i}`);
  return new ModelError(
    `${names.length} trainable parameter(s) got no gradient from the loss in the first optimizer step, so training ` +
      `would never change them: ${names.slice(0, 8).join(', ')}${names.length > 8 ? ', ...' : ''}. The encoder's ` +
      `output for the real data does not depend on them (e.g. a scripted branch the probe took but the data does not); ` +
      `freeze them with the freeze option`,
    { code: 'PARAMETERS_WITHOUT_GRADIENT' },
  );
}
