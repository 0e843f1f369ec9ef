/**
 * `exportAdapterHub`: the bottleneck adapters of a `technique: 'adapter'` classifier in the format of
 * AdapterHub's `adapters` library (`model.load_adapter(dir)` on the base model, e.g. a
 * `BertAdapterModel`): `adapter_config.json` + `pytorch_adapter.bin`, and the head, where
 * AdapterHub has one that computes the same function, as `head_config.json` +
 * `pytorch_model_head.bin`.
 *
 * What maps, read off AdapterHub's `Adapter` and `BottleneckLayer` (methods/modeling.py,
 * methods/bottleneck.py). Its bottleneck layer replaces a sub-layer's `LayerNorm(h + input)`, h the
 * output projection after dropout, by: pre_forward (residual_before_ln: residual = h;
 * original_ln_before: h = LN(h + input) first), the adapter (ln_before, `adapter_down` =
 * Linear + non-linearity, `adapter_up`, × scaling, dropout, + residual around ln_after), post_forward
 * (original_ln_after: LN(· + input)). Ours is `LayerNorm(h + up(act(down(h))) + input)` (in eval
 * mode our adapter before the dropout and theirs after it are the same), which is exactly the
 * fields original_ln_before false, original_ln_after true, residual_before_ln true, ln_before and
 * ln_after false, scaling 1.0, no gating, not parallel: Houlsby's `double_seq_bn` with
 * mh_adapter and output_adapter. Our 'pfeiffer' is that placement on the feed-forward output
 * only: the same fields with mh_adapter false. It is not AdapterHub's `seq_bn` (Pfeiffer), whose
 * original_ln_before true feeds the adapter `LN(h + input)` and adds the LayerNorm again after it;
 * the full config is written, so AdapterHub builds this placement, not its default. The
 * non-linearities have the same names on both sides (swish = SiLU, relu, gelu: the exact erf form in
 * transformers' get_activation; `version` is written, so that the loader's rename of an old file's
 * 'gelu' to 'gelu_new' does not apply). The width is AdapterHub's `hidden // reduction_factor`: a
 * size it cannot express that way is refused. A run with `adapter.trainLayerNorm` is refused: it
 * trained the encoder's own LayerNorms, which an AdapterHub adapter does not hold (its ln_before /
 * ln_after are new LayerNorms inside the adapter).
 *
 * The head goes along as AdapterHub's ClassificationHead where it is the same function: a sequential
 * of Dropout, Linear(H, H), activation, Dropout, Linear(H, C) (`layers` 2) or Dropout, Linear(H, C)
 * (`layers` 1) on the first token or the pooler output. That is the default head with
 * `headHidden` equal to the hidden size and 'cls' pooling (relu), and the sequence-classification
 * heads (BERT: the pooler, 1 layer; RoBERTa: tanh; DistilBERT: relu). Any other head (a
 * `headHidden` wider than the encoder, mean pooling) is left out, saying why in `notes`.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { NativeTensor, ProblemType } from '../addon/binding.js';
import { InputError, ModelError, messageOf } from '../addon/errors.js';
import { Classifier, PROBLEM_TYPES } from '../classification/classifier.js';
import { CLASSIFIER_FILE, CONFIG_FILE, TOKENIZER_FILE } from '../files/checkpoint.js';
import { checkOut, type StagedFolder, writeFolder } from '../files/export-folder.js';
import { type Float32Entry, torchSaveBytes } from '../files/torch-save.js';
import { type EncoderShapes, type ExportFamily, encoderShapes, familyOf, isRobertaTokenizerText } from '../models/export-family.js';
import { transformersNames } from '../models/hf-config.js';
import { BASE_PREFIX } from '../models/sequence-classification.js';
import { checkOptionNames, type ResolvedAdapterOptions } from '../training/options.js';
import { classifierParts, type RecordedEncoder, recordedEncoder } from './export.js';

export const ADAPTERHUB_CONFIG_FILE = 'adapter_config.json';
export const ADAPTERHUB_WEIGHTS_FILE = 'pytorch_adapter.bin';
export const ADAPTERHUB_HEAD_CONFIG_FILE = 'head_config.json';
export const ADAPTERHUB_HEAD_WEIGHTS_FILE = 'pytorch_model_head.bin';
/**
 * The `version` field: the format of the `adapters` library's 1.x saves. Its presence is what tells
 * the loader the non-linearity names are current (see the file comment).
 */
const ADAPTERHUB_VERSION = 'adapters.1.1.0';

export interface AdapterHubExportOptions {
  /** A classifier directory written by `train()` with `technique: 'adapter'`. */
  classifier: string;
  /** The folder to write; must not exist or be empty. */
  out: string;
  /** The adapter's (and head's) name in AdapterHub: `adapters.{name}.` in its keys. Default 'torch_bert'. */
  name?: string;
}

/** exportAdapterHub's option names (plain JavaScript's misspelt keys: options.ts checkOptionNames). */
const ADAPTERHUB_EXPORT_OPTION_NAMES = Object.keys({ classifier: 1, out: 1, name: 1 } satisfies Record<keyof AdapterHubExportOptions, 1>);

export interface AdapterHubExportResult {
  out: string;
  family: ExportFamily;
  name: string;
  /** The files written, relative to `out`. */
  files: string[];
  /** adapter_config.json's `config`: the BnConfig AdapterHub builds. */
  config: Record<string, unknown>;
  /** The ClassificationHead written, or null when the classifier's head has none that computes the same (see `notes`). */
  head: { layers: number; activation: string | null; usePooler: boolean } | null;
  notes: string[];
}

function refuse(dir: string, why: string): ModelError {
  return new ModelError(`cannot export ${dir} in AdapterHub's format: ${why}`, { file: dir, code: 'EXPORT_ADAPTERHUB_UNSUPPORTED' });
}

/** Python's `float(a) // b` (float_floor_div), which AdapterHub's `int(hidden // reduction_factor)` computes. */
export function pythonFloorDiv(a: number, b: number): number {
  const mod = a % b;
  let div = (a - mod) / b;
  if (mod !== 0 && b < 0 !== mod < 0) div -= 1;
  let floor = Math.floor(div);
  if (div - floor > 0.5) floor += 1;
  return floor;
}

/**
 * The reduction factor AdapterHub turns into `size` for hidden size `hidden`: the recorded one when
 * it gives that size, else hidden / size when it does; null when no factor gives it.
 */
export function reductionFactorFor(hidden: number, size: number, recorded: number | null): number | null {
  for (const rf of [recorded, hidden / size]) {
    if (rf !== null && rf > 0 && Math.trunc(pythonFloorDiv(hidden, rf)) === size) return rf;
  }
  return null;
}

/** BnConfig's fields (AdapterHub's configuration/adapter_config.py) for our placement; see the file comment. */
export function bottleneckConfig(settings: { houlsby: boolean; reductionFactor: number; activation: string }): Record<string, unknown> {
  return {
    architecture: 'bottleneck',
    mh_adapter: settings.houlsby,
    output_adapter: true,
    reduction_factor: settings.reductionFactor,
    non_linearity: settings.activation,
    original_ln_before: false,
    original_ln_after: true,
    ln_before: false,
    ln_after: false,
    init_weights: 'bert',
    is_parallel: false,
    scaling: 1.0,
    use_gating: false,
    residual_before_ln: true,
    adapter_residual_before_ln: false,
    inv_adapter: null,
    inv_adapter_reduction_factor: null,
    cross_adapter: false,
    leave_out: [],
    dropout: 0.0,
    phm_layer: false,
    phm_dim: 4,
    factorized_phm_W: true,
    shared_W_phm: false,
    shared_phm_rule: true,
    factorized_phm_rule: false,
    phm_c_init: 'normal',
    phm_init_range: 0.0001,
    learn_phm: true,
    hypercomplex_nonlinearity: 'glorot-uniform',
    phm_rank: 1,
    phm_bias: true,
    stochastic_depth: 0.0,
  };
}

/**
 * AdapterHub's key of one of our adapter tensors (the encoder's names: `<sub-layer>.adapter.{down,up}.{weight,bias}`):
 * BERT/RoBERTa `encoder.layer.N.attention.output` → `bert.encoder.layer.N.attention.output.adapters.NAME.`
 * (BertSelfOutput is the bottleneck layer itself), `encoder.layer.N.output` → `...output.adapters.NAME.`;
 * DistilBERT `transformer.layer.N.attention` → `distilbert.transformer.layer.N.attention_adapters.adapters.NAME.`,
 * `transformer.layer.N.ffn` → `...output_adapters.adapters.NAME.`; then `adapter_down.0` (the
 * Linear in the Sequential with the non-linearity) or `adapter_up`. Returns null for a name that is none of these.
 */
export function adapterHubKey(
  family: ExportFamily,
  name: string,
  tensor: string,
): { key: string; layer: number; location: 'mh_adapter' | 'output_adapter' } | null {
  const m = /^(.*)\.adapter\.(down|up)\.(weight|bias)$/.exec(tensor);
  if (!m) return null;
  const [, subLayer, which, param] = m as unknown as [string, string, 'down' | 'up', string];
  const module = which === 'down' ? 'adapter_down.0' : 'adapter_up';
  const prefix = BASE_PREFIX[family];
  if (family === 'distilbert') {
    const d = /^transformer\.layer\.(\d+)\.(attention|ffn)$/.exec(subLayer);
    if (!d) return null;
    const holder = d[2] === 'attention' ? 'attention_adapters' : 'output_adapters';
    return {
      key: `${prefix}transformer.layer.${d[1]}.${holder}.adapters.${name}.${module}.${param}`,
      layer: Number(d[1]),
      location: d[2] === 'attention' ? 'mh_adapter' : 'output_adapter',
    };
  }
  const b = /^encoder\.layer\.(\d+)\.(attention\.output|output)$/.exec(subLayer);
  if (!b) return null;
  return {
    key: `${prefix}encoder.layer.${b[1]}.${b[2]}.adapters.${name}.${module}.${param}`,
    layer: Number(b[1]),
    location: b[2] === 'output' ? 'output_adapter' : 'mh_adapter',
  };
}

function entry(name: string, t: NativeTensor): Float32Entry {
  const cpu = t.dtype === 'float32' && t.device === 'cpu' ? null : t.to('cpu', 'float32');
  try {
    return { name, shape: [...t.shape], data: Float32Array.from((cpu ?? t).toArray() as Float32Array) };
  } finally {
    cpu?.dispose();
  }
}

/** The head as AdapterHub's ClassificationHead (sequential indices: 1 the first Linear, 4 the second of 2 layers), or why not. */
function classificationHead(
  config: Classifier['config'],
  family: ExportFamily,
  hidden: number,
  head: Array<[string, NativeTensor]>,
): { layers: number; activation: string | null; usePooler: boolean; tensors: Array<[number, string, NativeTensor]> } | string {
  const byName = new Map(head);
  const linear = (index: number, module: string): Array<[number, string, NativeTensor]> => [
    [index, 'weight', byName.get(`${module}.weight`)!],
    [index, 'bias', byName.get(`${module}.bias`)!],
  ];
  if (config.head === 'sequence-classification') {
    if (family === 'bert') return { layers: 1, activation: null, usePooler: true, tensors: linear(1, 'classifier') };
    if (family === 'roberta') {
      return { layers: 2, activation: 'tanh', usePooler: false, tensors: [...linear(1, 'dense'), ...linear(4, 'out_proj')] };
    }
    return { layers: 2, activation: 'relu', usePooler: false, tensors: [...linear(1, 'pre_classifier'), ...linear(4, 'classifier')] };
  }
  const width = byName.get('dense.weight')?.shape[0];
  if (config.pooling !== 'cls') {
    return `its head pools the mean of the tokens ('mean' pooling); AdapterHub's classification head reads the first token or the pooler`;
  }
  if (width !== hidden) {
    return (
      `its head's hidden layer is ${width} wide (headHidden) and AdapterHub's classification head's is the encoder's ` +
      `hidden size ${hidden}; train with headHidden ${hidden} to export the head too`
    );
  }
  return { layers: 2, activation: 'relu', usePooler: false, tensors: [...linear(1, 'dense'), ...linear(4, 'out_proj')] };
}

/** The bottleneck adapters' settings of a classifier AdapterHub can hold: technique 'adapter', the encoder's LayerNorms untouched. */
function adapterSettings(config: Classifier['config'], dir: string): ResolvedAdapterOptions {
  const technique = (config.hyperparameters?.technique as string | undefined) ?? 'frozen';
  if (technique !== 'adapter') {
    throw refuse(
      dir,
      `it was trained with technique '${technique}', and AdapterHub's format here is that of bottleneck adapters ` +
        `(technique 'adapter'); export it with exportHuggingFace (torch-bert export --format hf)`,
    );
  }
  const settings = config.hyperparameters.adapter as ResolvedAdapterOptions;
  if (settings.trainLayerNorm) {
    throw refuse(
      dir,
      `it trained the encoder's own LayerNorms (adapter.trainLayerNorm), which an AdapterHub adapter does not hold ` +
        `(its ln_before/ln_after are new LayerNorms inside the adapter), so the adapter on the base model would not ` +
        `compute this classifier`,
    );
  }
  return settings;
}

/** The encoder's family, as exportHuggingFace reads it (a classifier without tokenizer.json is not RoBERTa's). */
async function familyOfClassifier(dir: string, modelType: string | null, shapes: EncoderShapes): Promise<ExportFamily> {
  // No tokenizer.json: not RoBERTa's.
  const text = await readFile(join(dir, TOKENIZER_FILE), 'utf8').catch(() => null);
  return familyOf(shapes, modelType, text !== null && isRobertaTokenizerText(text));
}

/**
 * The adapter tensors under AdapterHub's keys, checked to be the placement's (`settings.config`
 * on every layer) and of a width some reduction factor gives; with the BnConfig that builds them.
 */
function adapterHubAdapters(
  dir: string,
  name: string,
  family: ExportFamily,
  shapes: EncoderShapes,
  settings: ResolvedAdapterOptions,
  adapterParams: Array<[string, NativeTensor]>,
): { mapped: Array<{ key: string; tensor: NativeTensor }>; bnConfig: Record<string, unknown>; houlsby: boolean } {
  const hidden = shapes.hiddenSize;
  const mapped = adapterParams.map(([n, t]) => {
    const key = adapterHubKey(family, name, n);
    if (!key) throw refuse(dir, `adapter tensor '${n}' is not after a sub-layer AdapterHub adapts`);
    return { ...key, tensor: t };
  });
  const houlsby = settings.config === 'houlsby';
  const expected = shapes.numLayers * (houlsby ? 2 : 1) * 4;
  const misplaced = mapped.filter((m) => !houlsby && m.location === 'mh_adapter');
  if (mapped.length !== expected || misplaced.length > 0) {
    throw refuse(
      dir,
      `its adapters (${mapped.length} tensors) are not the ${expected} of '${settings.config}' on ${shapes.numLayers} layers`,
    );
  }
  const size = mapped.find((m) => m.key.endsWith('adapter_down.0.weight'))!.tensor.shape[0]!;
  const reductionFactor = reductionFactorFor(hidden, size, settings.reductionFactor);
  if (reductionFactor === null) {
    throw refuse(dir, `its adapters are ${size} wide, which AdapterHub's int(${hidden} // reduction_factor) gives for no reduction factor`);
  }
  return { mapped, bnConfig: bottleneckConfig({ houlsby, reductionFactor, activation: settings.activation }), houlsby };
}

/** head_config.json and pytorch_model_head.bin: the head as AdapterHub's ClassificationHead named `name`. */
async function writeClassificationHead(
  folder: StagedFolder,
  head: Exclude<ReturnType<typeof classificationHead>, string>,
  config: Classifier['config'],
  name: string,
  meta: Record<string, unknown>,
): Promise<void> {
  const labels = config.labels;
  await folder.writeJson(ADAPTERHUB_HEAD_CONFIG_FILE, {
    config: {
      head_type: 'classification',
      num_labels: labels.length,
      layers: head.layers,
      activation_function: head.activation,
      label2id: Object.fromEntries(labels.map((l, i) => [l, i])),
      use_pooler: head.usePooler,
      bias: true,
      dropout_prob: config.dropout,
    },
    ...meta,
  });
  const tensors = head.tensors.map(([index, param, t]) => entry(`heads.${name}.${index}.${param}`, t));
  await folder.write(ADAPTERHUB_HEAD_WEIGHTS_FILE, torchSaveBytes(tensors));
}

/** `options.name` (default 'torch_bert'), checked with the paths: the name becomes part of AdapterHub's key names. */
function checkedName(options: AdapterHubExportOptions): string {
  if (!options || typeof options.classifier !== 'string' || typeof options.out !== 'string') {
    throw new InputError('exportAdapterHub({ classifier, out }): both are paths');
  }
  checkOptionNames('exportAdapterHub()', options, ADAPTERHUB_EXPORT_OPTION_NAMES);
  const name = options.name ?? 'torch_bert';
  if (!/^[A-Za-z0-9_-]+$/.test(name)) {
    throw new InputError(`adapter name '${name}' must be letters, digits, '_' or '-' (it becomes part of AdapterHub's key names)`);
  }
  return name;
}

/**
 * The fields every AdapterHub config file carries besides its own: the source's model_type and the
 * `adapters` library's class for it (XLMRobertaAdapterModel, ...).
 */
function adapterHubMeta(family: ExportFamily, recorded: RecordedEncoder, hiddenSize: number, name: string): Record<string, unknown> {
  const names = transformersNames(family, recorded.modelType);
  return {
    hidden_size: hiddenSize,
    model_class: names.className('AdapterModel'),
    model_name: recorded.baseModel,
    model_type: names.modelType,
    name,
    version: ADAPTERHUB_VERSION,
  };
}

/**
 * What the export writes of `classifier` (loaded from `dir`): its adapters under AdapterHub's keys,
 * its head where AdapterHub has the same one (else why not), the config files' common fields, and
 * the notes on what is not written as AdapterHub would.
 */
async function adapterHubContents(classifier: Classifier<ProblemType>, dir: string, name: string) {
  const config = classifier.config;
  const settings = adapterSettings(config, dir);
  const { encoder, head } = classifierParts(classifier.module.namedParameters());
  const base = encoder.filter(([n]) => !n.includes('.adapter.'));
  const shapes = encoderShapes(
    base.map(([n, t]) => ({ name: n, shape: t.shape })),
    join(dir, CLASSIFIER_FILE),
  );
  const recorded = await recordedEncoder(config);
  const family = await familyOfClassifier(dir, recorded.modelType, shapes);
  const adapters = adapterHubAdapters(
    dir,
    name,
    family,
    shapes,
    settings,
    encoder.filter(([n]) => n.includes('.adapter.')),
  );
  const notes: string[] = [];
  if (!adapters.houlsby) {
    notes.push(
      "'pfeiffer' is written as its full bottleneck config (the adapter on the feed-forward output before the residual LayerNorm, " +
        "original_ln_before false), not as AdapterHub's 'seq_bn', which places it after that LayerNorm",
    );
  }
  if (recorded.baseModel === null) {
    notes.push(
      `the classifier's encoder, ${config.encoder.file}, is no recorded Hugging Face model (a TorchScript file, or a ` +
        'classifier saved before torch-bert recorded its source): model_name is null; load the adapters onto the Hugging Face ' +
        'model whose weights it holds',
    );
  }
  const headMap = classificationHead(config, family, shapes.hiddenSize, head);
  if (typeof headMap === 'string') notes.push(`the head is not exported: ${headMap}`);
  return { family, adapters, headMap, meta: adapterHubMeta(family, recorded, shapes.hiddenSize, name), notes };
}

/**
 * Write a `technique: 'adapter'` classifier's adapters (and head, where it maps) in AdapterHub's format
 * (see the file comment and README, *Exporting to AdapterHub*). Refuses another technique, a run that
 * trained the encoder's LayerNorms, and an adapter width no reduction factor gives
 * (EXPORT_ADAPTERHUB_UNSUPPORTED).
 */
export async function exportAdapterHub(options: AdapterHubExportOptions): Promise<AdapterHubExportResult> {
  const name = checkedName(options);
  const dir = options.classifier;
  const out = resolve(options.out);
  await checkOut(out);
  const classifier = await Classifier.load(dir, { device: 'cpu', problemType: PROBLEM_TYPES });
  try {
    if (classifier.problemType !== 'single_label_classification') {
      throw refuse(
        dir,
        `it is a ${classifier.problemType} model, and AdapterHub's format here holds single-label classifiers; export it with exportHuggingFace (torch-bert export --format hf)`,
      );
    }
    const { family, adapters, headMap, meta, notes } = await adapterHubContents(classifier, dir, name);
    return await writeFolder(out, async (folder) => {
      await folder.writeJson(ADAPTERHUB_CONFIG_FILE, { config: adapters.bnConfig, ...meta });
      await folder.write(ADAPTERHUB_WEIGHTS_FILE, torchSaveBytes(adapters.mapped.map((m) => entry(m.key, m.tensor))));
      if (typeof headMap !== 'string') await writeClassificationHead(folder, headMap, classifier.config, name, meta);
      const headResult =
        typeof headMap === 'string' ? null : { layers: headMap.layers, activation: headMap.activation, usePooler: headMap.usePooler };
      return { out, family, name, files: [...folder.files].sort(), config: adapters.bnConfig, head: headResult, notes };
    });
  } catch (err) {
    if (err instanceof InputError || err instanceof ModelError) throw err;
    throw new ModelError(`cannot export ${dir} in AdapterHub's format: ${messageOf(err)}`, { file: join(dir, CONFIG_FILE), cause: err });
  } finally {
    classifier.dispose();
  }
}
