/**
 * `exportHuggingFace`: a trained classifier directory → a Hugging Face model folder that
 * transformers' `AutoModel.from_pretrained` loads (config.json, model.safetensors with AutoModel's
 * key names, the tokenizer), plus the classifier's head in `torch_bert_head.safetensors` (described
 * in config.json's `torch_bert` block) and, for a LoRA run, the adapters in PEFT's format under
 * `adapter/`. A classifier trained with `head: 'sequence-classification'` is written whole instead,
 * as transformers' ForSequenceClassification (sequence-classification.ts names its keys): no head file.
 * A prompt classifier (`head: 'prompt'`) is written as a *ForMaskedLM folder with its prompt in
 * config.json (export-prompt.ts).
 *
 * The weights come from classifier.pt, which for LoRA already holds W0 + (alpha/r)·B·A (merged at
 * save time): nothing is merged here and no file of the classifier is written to. The adapters
 * are read back from adapters.pt through an in-memory LoRA on the loaded module (so its checks of
 * rank, alpha, targets and shapes apply), which is disposed with it.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { NativeTensor, ProblemType } from '../addon/binding.js';
import { InputError, ModelError, messageOf } from '../addon/errors.js';
import { loadBinding } from '../addon/loader.js';
import { ADAPTERS_FILE, Classifier, type ClassifierConfig, PROBLEM_TYPES } from '../classification/classifier.js';
import { archiveChecksums, CLASSIFIER_FILE, CONFIG_FILE, resolveArchive, TOKENIZER_FILE } from '../files/checkpoint.js';
import { checkOut, type StagedFolder, writeFolder } from '../files/export-folder.js';
import { type EncoderShapes, type ExportFamily, encoderShapes, familyOf } from '../models/export-family.js';
import { isJsonObject, type TransformersNames, transformersNames } from '../models/hf-config.js';
import { takesTokenTypes } from '../models/model-checks.js';
import { MODEL_FILE, SAFETENSORS_METADATA, TOKENIZER_CONFIG_FILE } from '../models/model-folder.js';
import { BASE_PREFIX, sequenceClassificationKeys } from '../models/sequence-classification.js';
import { type TokenizerFacts, tokenizerDescription, tokenizerFacts } from '../models/tokenizer-config.js';
import { checkOptionNames } from '../training/options.js';
import {
  ADAPTER_CONFIG_FILE,
  ADAPTER_DIR,
  ADAPTER_WEIGHTS_FILE,
  adapterConfig,
  type LoraSettings,
  peftModulesToSave,
  peftTensors,
} from './export-peft.js';
import { writePromptExport } from './export-prompt.js';

export const HEAD_WEIGHTS_FILE = 'torch_bert_head.safetensors';

export interface ExportOptions {
  /** A classifier directory written by `train()`. */
  classifier: string;
  /** The folder to write; must not exist or be empty. Written beside and renamed into place. */
  out: string;
  /**
   * Attention heads of the encoder, which its weights cannot tell (query's [H, H] is the same for
   * any split of H). Used when the classifier does not record its encoder's config.json (one
   * trained on a Hugging Face folder or Hub id does); must agree with it when both are there.
   */
  heads?: number;
}

/** exportHuggingFace's option names (plain JavaScript's misspelt keys: options.ts checkOptionNames). */
const EXPORT_OPTION_NAMES = Object.keys({ classifier: 1, out: 1, heads: 1 } satisfies Record<keyof ExportOptions, 1>);

export interface ExportResult {
  out: string;
  family: ExportFamily;
  /** The files written, relative to `out`. */
  files: string[];
  /** The config.json written. */
  config: Record<string, unknown>;
  /** config.json fields neither the weights nor a recorded config said: the family's defaults. */
  assumed: string[];
  /**
   * The PEFT adapter of a LoRA classifier, else null: for the base AutoModel (`FEATURE_EXTRACTION`), or
   * with `head: 'sequence-classification'` for the base's ForSequenceClassification (`SEQ_CLS`, the
   * head in `modulesToSave`).
   */
  adapter: {
    dir: string;
    modules: string[];
    r: number;
    loraAlpha: number;
    taskType: 'FEATURE_EXTRACTION' | 'SEQ_CLS';
    modulesToSave: string[] | null;
  } | null;
}

/** What the classifier recorded of its encoder's Hugging Face origin, when it came from a folder or Hub id. */
export interface RecordedEncoder {
  /** The encoder's own config.json: as recorded at training, else read from the recorded folder when it is still there. */
  hfConfig: Record<string, unknown> | null;
  /** The recorded `model_type` (kept even when the folder is gone). */
  modelType: string | null;
  /** The Hub id, else the folder: PEFT's base_model_name_or_path. */
  baseModel: string | null;
  /** The Hub commit it resolved to: PEFT's revision. */
  revision: string | null;
}

const stringOrNull = (v: unknown): string | null => (typeof v === 'string' ? v : null);

/**
 * The encoder's Hugging Face origin as a classifier trained on a model folder or Hub id records
 * it in config.json's `encoder.source` (`{ kind: 'folder', dir, modelType, family, weights,
 * repoId?, revision?, commit?, config }`, lib/models/encoder-source.ts), with the folder's config.json
 * (`config`, or read back from the folder for a classifier saved before it was recorded) for what
 * the weights cannot tell (heads, epsilon, activation). A classifier trained on a
 * TorchScript file records none of it.
 */
export async function recordedEncoder(config: ClassifierConfig): Promise<RecordedEncoder> {
  const encoder = (config.encoder ?? {}) as unknown as Record<string, unknown>;
  const source = isJsonObject(encoder.source) && encoder.source.kind === 'folder' ? encoder.source : null;
  if (!source) return { hfConfig: null, modelType: null, baseModel: null, revision: null };
  const dir = stringOrNull(source.dir);
  // The config recorded at training; a classifier saved before it was recorded has only the folder.
  let hfConfig: Record<string, unknown> | null = isJsonObject(source.config) ? source.config : null;
  if (!hfConfig && dir) {
    try {
      const parsed = JSON.parse(await readFile(join(dir, CONFIG_FILE), 'utf8')) as unknown;
      if (isJsonObject(parsed)) hfConfig = parsed;
    } catch {
      // Moved or deleted since training (a cache snapshot may be pruned): heads then come from the option.
    }
  }
  return {
    hfConfig,
    modelType: stringOrNull(hfConfig?.model_type) ?? stringOrNull(source.modelType),
    baseModel: stringOrNull(source.repoId) ?? dir,
    revision: stringOrNull(source.commit),
  };
}

/** Family defaults of what the weights cannot tell (transformers' configs of bert-base, roberta-base, distilbert-base). */
const DEFAULT_EPS: Record<ExportFamily, number> = { bert: 1e-12, roberta: 1e-5, distilbert: 1e-12 };
const DEFAULT_PAD: Record<ExportFamily, number> = { bert: 0, roberta: 1, distilbert: 0 };

function numberField(hf: Record<string, unknown> | null, ...names: string[]): number | undefined {
  for (const n of names) if (typeof hf?.[n] === 'number') return hf[n] as number;
  return undefined;
}

function stringField(hf: Record<string, unknown> | null, ...names: string[]): string | undefined {
  for (const n of names) if (typeof hf?.[n] === 'string') return hf[n] as string;
  return undefined;
}

/** config.json's architecture part, in transformers' field names for the family. */
function architectureConfig(
  family: ExportFamily,
  names: TransformersNames,
  shapes: EncoderShapes,
  heads: number,
  facts: TokenizerFacts,
  hf: Record<string, unknown> | null,
  assumed: string[],
): Record<string, unknown> {
  const take = <T>(field: string, recorded: T | undefined, fallback: T): T => {
    if (recorded !== undefined) return recorded;
    assumed.push(field);
    return fallback;
  };
  const eps = take('layer_norm_eps', numberField(hf, 'layer_norm_eps'), DEFAULT_EPS[family]);
  const act = take(family === 'distilbert' ? 'activation' : 'hidden_act', stringField(hf, 'hidden_act', 'activation'), 'gelu');
  const pad = numberField(hf, 'pad_token_id') ?? facts.padId ?? take('pad_token_id', undefined, DEFAULT_PAD[family]);
  if (family === 'distilbert') {
    return {
      architectures: [names.className('Model')],
      model_type: names.modelType,
      vocab_size: shapes.vocabSize,
      dim: shapes.hiddenSize,
      n_layers: shapes.numLayers,
      n_heads: heads,
      hidden_dim: shapes.intermediateSize,
      max_position_embeddings: shapes.maxPositions,
      activation: act,
      sinusoidal_pos_embds: false,
      dropout: numberField(hf, 'dropout') ?? 0.1,
      attention_dropout: numberField(hf, 'attention_dropout') ?? 0.1,
      initializer_range: numberField(hf, 'initializer_range') ?? 0.02,
      pad_token_id: pad,
    };
  }
  const roberta = family === 'roberta';
  return {
    architectures: [names.className('Model')],
    model_type: names.modelType,
    vocab_size: shapes.vocabSize,
    hidden_size: shapes.hiddenSize,
    num_hidden_layers: shapes.numLayers,
    num_attention_heads: heads,
    intermediate_size: shapes.intermediateSize,
    hidden_act: act,
    hidden_dropout_prob: numberField(hf, 'hidden_dropout_prob') ?? 0.1,
    attention_probs_dropout_prob: numberField(hf, 'attention_probs_dropout_prob') ?? 0.1,
    max_position_embeddings: shapes.maxPositions,
    type_vocab_size: shapes.typeVocabSize,
    initializer_range: numberField(hf, 'initializer_range') ?? 0.02,
    layer_norm_eps: eps,
    pad_token_id: pad,
    ...(roberta ? { bos_token_id: numberField(hf, 'bos_token_id') ?? 0, eos_token_id: numberField(hf, 'eos_token_id') ?? 2 } : {}),
    position_embedding_type: 'absolute',
  };
}

/**
 * config.json's fields of a whole ForSequenceClassification: the architecture, the task, and the
 * head's dropout under the family's name (the p the classifier trained with).
 */
function sequenceClassificationConfig(family: ExportFamily, names: TransformersNames, config: ClassifierConfig): Record<string, unknown> {
  return {
    architectures: [names.className('ForSequenceClassification')],
    num_labels: config.labels.length,
    problem_type: config.problemType ?? 'single_label_classification',
    ...(family === 'distilbert' ? { seq_classif_dropout: config.dropout } : { classifier_dropout: config.dropout }),
  };
}

function headsOf(shapes: EncoderShapes, hf: Record<string, unknown> | null, option: number | undefined, file: string): number {
  const recorded = numberField(hf, 'num_attention_heads', 'n_heads');
  if (option !== undefined && (!Number.isInteger(option) || option < 1)) {
    throw new InputError(`heads must be a positive integer, got ${option}`);
  }
  if (recorded !== undefined && option !== undefined && recorded !== option) {
    throw new InputError(`heads ${option} disagrees with the encoder config recorded in ${file} (num_attention_heads ${recorded})`);
  }
  const heads = recorded ?? option;
  if (heads === undefined) {
    throw new ModelError(
      `cannot export ${file}: the number of attention heads (num_attention_heads) is missing — the weights cannot ` +
        `tell it (hidden size ${shapes.hiddenSize} splits into any number of heads that divides it) and no ` +
        `recorded encoder config.json says it (the classifier was trained on a TorchScript file, or its model ` +
        `folder is gone); give it with ` +
        `--heads N (exportHuggingFace's \`heads\` option)`,
      { file, code: 'EXPORT_HEADS_UNKNOWN' },
    );
  }
  if (shapes.hiddenSize % heads !== 0) {
    throw new InputError(`heads ${heads} does not divide the encoder's hidden size ${shapes.hiddenSize}`);
  }
  return heads;
}

/** A classifier module's parameters split into the encoder's and the head's, without their prefixes. */
export function classifierParts(params: Array<[string, NativeTensor]>): {
  encoder: Array<[string, NativeTensor]>;
  head: Array<[string, NativeTensor]>;
} {
  const under = (prefix: string) =>
    params.filter(([n]) => n.startsWith(prefix)).map(([n, t]): [string, NativeTensor] => [n.slice(prefix.length), t]);
  return { encoder: under('encoder.'), head: under('head.') };
}

/** Write tensors as safetensors in float32 on the CPU (an encoder kept in float16 trains, and is saved, in float32 anyway). */
function writeFloat32(path: string, tensors: Array<[string, NativeTensor]>): void {
  const copies: NativeTensor[] = [];
  try {
    const float32 = tensors.map(([name, t]): [string, NativeTensor] => {
      if (t.dtype === 'float32' && t.device === 'cpu') return [name, t];
      const copy = t.to('cpu', 'float32');
      copies.push(copy);
      return [name, copy];
    });
    loadBinding().writeSafetensors(path, float32, SAFETENSORS_METADATA);
  } finally {
    for (const t of copies) t.dispose();
  }
}

/** What an export of a classifier is made of, read and checked before anything is written. */
interface ExportPlan {
  dir: string;
  config: ClassifierConfig;
  params: Array<[string, NativeTensor]>;
  parts: ReturnType<typeof classifierParts>;
  shapes: EncoderShapes;
  recorded: RecordedEncoder;
  tokenizerText: string;
  facts: TokenizerFacts;
  family: ExportFamily;
  /** transformers' names for it: the family's, or the recorded model_type's (xlm-roberta, camembert). */
  names: TransformersNames;
  /** With head 'sequence-classification': the whole ForSequenceClassification is written. */
  whole: boolean;
  heads: number;
  lora: LoraSettings | undefined;
}

async function planExport(classifier: Classifier<ProblemType>, dir: string, headsOption: number | undefined): Promise<ExportPlan> {
  const config = classifier.config;
  const configPath = join(dir, CONFIG_FILE);
  const params = classifier.module.namedParameters();
  const parts = classifierParts(params);
  const shapes = encoderShapes(
    parts.encoder.map(([name, t]) => ({ name, shape: t.shape })),
    join(dir, CLASSIFIER_FILE),
  );
  const recorded = await recordedEncoder(config);
  const tokenizerText = await readFile(join(dir, TOKENIZER_FILE), 'utf8');
  const facts = tokenizerFacts(JSON.parse(tokenizerText) as Record<string, unknown>);
  const family = familyOf(shapes, recorded.modelType, facts.roberta);
  const whole = config.head === 'sequence-classification';
  if (whole && config.headFamily !== family) {
    throw new ModelError(
      `cannot export ${dir}: its head is ${config.headFamily ?? 'of no recorded family'}'s sequence-classification head, ` +
        `but its encoder reads as ${family}`,
      { file: configPath, code: 'EXPORT_UNSUPPORTED_ENCODER' },
    );
  }
  if (family === 'bert' && config.input === 'text-pair' && !takesTokenTypes(config.encoder.arity)) {
    // transformers' BERT gives a second text segment 1 (the tokenizer's token_type_ids); this
    // encoder file took none, so every token was segment 0 in training: the export would compute another function.
    throw new ModelError(
      `cannot export ${dir}: it was trained on text pairs through an encoder whose forward takes no token_type_ids, so both texts ` +
        "were segment 0, but transformers' BERT reads the second text as segment 1; train it on a Hugging Face folder or an encoder " +
        'traced with token_type_ids (forward(input_ids, attention_mask, token_type_ids))',
      { file: configPath, code: 'EXPORT_UNSUPPORTED_ENCODER' },
    );
  }
  const heads = headsOf(shapes, recorded.hfConfig, headsOption, configPath);
  const lora = config.hyperparameters?.lora as LoraSettings | undefined;
  const names = transformersNames(family, recorded.modelType);
  return { dir, config, params, parts, shapes, recorded, tokenizerText, facts, family, names, whole, heads, lora };
}

/** config.json's `torch_bert.head`: the whole head's architecture, or how to run the MLP head's file. */
function headDescription(plan: ExportPlan): Record<string, unknown> {
  const { config, shapes } = plan;
  if (plan.whole) {
    return {
      kind: 'sequence-classification',
      architecture: plan.names.className('ForSequenceClassification'),
      weights: `${MODEL_FILE}, under transformers' key names`,
      dropout: config.dropout,
    };
  }
  const hidden = plan.parts.head.find(([n]) => n === 'dense.weight')?.[1].shape[0] ?? config.headHidden;
  return {
    file: HEAD_WEIGHTS_FILE,
    input: `the encoder's last hidden state pooled: ${config.pooling === 'mean' ? 'the attention-masked mean over tokens' : 'the first ([CLS]) token'}`,
    pooling: config.pooling,
    dropout: config.dropout,
    layers: [
      { name: 'dense', type: 'linear', in: shapes.hiddenSize, out: hidden },
      { type: 'relu' },
      { type: 'dropout', p: config.dropout },
      { name: 'out_proj', type: 'linear', in: hidden, out: config.labels.length },
      { type: 'log_softmax', dim: -1 },
    ],
    tensors: plan.parts.head.map(([name, t]) => ({ name, shape: t.shape })),
  };
}

/** The exported config.json: the architecture, the task's labels, and torch-bert's own block (where it came from, the head). */
function exportedConfig(plan: ExportPlan, assumed: string[]): Record<string, unknown> {
  const { config, family, names, recorded } = plan;
  return {
    ...architectureConfig(family, names, plan.shapes, plan.heads, plan.facts, recorded.hfConfig, assumed),
    ...(plan.whole ? sequenceClassificationConfig(family, names, config) : {}),
    id2label: Object.fromEntries(config.labels.map((label, i) => [String(i), label])),
    label2id: Object.fromEntries(config.labels.map((label, i) => [label, i])),
    torch_dtype: 'float32',
    torch_bert: {
      format: 'torch-bert-hf-export',
      formatVersion: 1,
      source: {
        classifier: resolve(plan.dir),
        classifierSha256: config.classifierSha256 ?? null,
        encoder: config.encoder?.file ?? null,
        baseModel: recorded.baseModel,
        revision: recorded.revision,
        technique: (config.hyperparameters?.technique as string | undefined) ?? 'frozen',
        torchBertVersion: config.torchBertVersion,
        libtorchVersion: config.libtorchVersion,
        createdAt: config.createdAt,
      },
      maxLength: config.maxLength,
      assumed,
      head: headDescription(plan),
      ...(plan.lora ? { adapter: { dir: ADAPTER_DIR, merged: `${MODEL_FILE} holds the adapters merged: W0 + (lora_alpha / r)·B·A` } } : {}),
    },
  };
}

/**
 * The weights: with the sequence-classification head, the whole ForSequenceClassification (the
 * encoder under its base-model prefix, the head under transformers' names; RoBERTa's and
 * DistilBERT's have no pooler, their heads pool the first token themselves, so a pooler the encoder
 * file kept is left out); else the AutoModel's weights and the MLP head in its own file.
 */
function writeWeights(plan: ExportPlan, folder: StagedFolder): void {
  if (plan.whole) {
    const kept = plan.params.filter(([n]) => plan.family === 'bert' || !n.startsWith('encoder.pooler.'));
    writeFloat32(folder.file(MODEL_FILE), sequenceClassificationKeys(plan.family, kept));
  } else {
    writeFloat32(folder.file(MODEL_FILE), plan.parts.encoder);
    writeFloat32(folder.file(HEAD_WEIGHTS_FILE), plan.parts.head);
  }
}

/** tokenizer_config.json: the tokenizer's description, and the length the classifier was trained with. */
function tokenizerConfig(plan: ExportPlan): Record<string, unknown> {
  // `truncation=True` then cuts as the classifier did.
  return { ...tokenizerDescription(plan.facts, plan.names), model_max_length: plan.config.maxLength };
}

/**
 * A LoRA classifier's adapters in PEFT's format under `adapter/`: for the base AutoModel, or with
 * the sequence-classification head for the base's ForSequenceClassification (its encoder under
 * `bert.`, ...), carrying the trained head as PEFT's modules_to_save. adapters.pt is read back
 * through a LoRA applied to the loaded module (LoraAdapters.load's checks of rank, alpha, targets
 * and shapes); its weights are already written, nothing is merged, and the LoRA is disposed.
 */
async function writePeftAdapter(
  plan: ExportPlan,
  lora: LoraSettings,
  classifier: Classifier<ProblemType>,
  folder: StagedFolder,
  out: string,
): Promise<NonNullable<ExportResult['adapter']>> {
  const { config, dir, family } = plan;
  const adaptersFile = (await resolveArchive(dir, ADAPTERS_FILE, archiveChecksums(config).get(ADAPTERS_FILE))).path;
  const adapters = loadBinding().applyLora(classifier.module, { ...lora, seed: 0 });
  try {
    adapters.load(adaptersFile);
    const saved = plan.whole
      ? peftModulesToSave(
          sequenceClassificationKeys(
            family,
            plan.params.filter(([n]) => n.startsWith('head.')),
          ),
        )
      : null;
    const tensors = [...peftTensors(adapters.parameters(), saved ? BASE_PREFIX[family] : ''), ...(saved?.tensors ?? [])];
    const task = saved ? { type: 'SEQ_CLS' as const, modulesToSave: saved.modules } : { type: 'FEATURE_EXTRACTION' as const };
    await mkdir(join(folder.dir, ADAPTER_DIR));
    writeFloat32(folder.file(join(ADAPTER_DIR, ADAPTER_WEIGHTS_FILE)), tensors);
    await folder.writeJson(
      join(ADAPTER_DIR, ADAPTER_CONFIG_FILE),
      adapterConfig(lora, plan.recorded.baseModel, plan.recorded.revision, task),
    );
    return {
      dir: join(out, ADAPTER_DIR),
      modules: adapters.modules.map((m) => m.slice('encoder.'.length)),
      r: lora.rank,
      loraAlpha: lora.alpha,
      taskType: task.type,
      modulesToSave: task.type === 'SEQ_CLS' ? task.modulesToSave : null,
    };
  } finally {
    adapters.dispose();
  }
}

/** A prompt classifier (`head: 'prompt'`): a ForMaskedLM folder with the prompt in its config.json (export-prompt.ts). */
async function exportPrompt(classifier: Classifier<ProblemType>, dir: string, out: string): Promise<ExportResult> {
  const config = classifier.config;
  const recorded = await recordedEncoder(config);
  const encoderSource = (config.encoder as { source?: { kind?: string; dir?: unknown } } | undefined)?.source;
  const baseDir = encoderSource?.kind === 'folder' && typeof encoderSource.dir === 'string' ? encoderSource.dir : null;
  const facts = tokenizerFacts(JSON.parse(await readFile(join(dir, TOKENIZER_FILE), 'utf8')) as Record<string, unknown>);
  const tokenizer = (family: ExportFamily) => tokenizerDescription(facts, transformersNames(family, recorded.modelType));
  return writeFolder(out, async (folder) => {
    const written = await writePromptExport(classifier, dir, baseDir, recorded.hfConfig, tokenizer, folder, {
      classifier: resolve(dir),
      classifierSha256: config.classifierSha256 ?? null,
      baseModel: recorded.baseModel,
      revision: recorded.revision,
      technique: (config.hyperparameters?.technique as string | undefined) ?? null,
      torchBertVersion: config.torchBertVersion,
      createdAt: config.createdAt,
    });
    await folder.writeJson(CONFIG_FILE, written.config);
    return { out, family: written.family, files: [...folder.files].sort(), config: written.config, assumed: [], adapter: null };
  });
}

/**
 * Write a trained classifier as a Hugging Face model folder (see the file comment and README,
 * *Exporting to Hugging Face*). Refuses an encoder whose parameters are not BERT's, RoBERTa's or
 * DistilBERT's AutoModel names and shapes (EXPORT_UNSUPPORTED_ENCODER), and one whose number of
 * attention heads nothing tells (EXPORT_HEADS_UNKNOWN).
 */
export async function exportHuggingFace(options: ExportOptions): Promise<ExportResult> {
  if (!options || typeof options.classifier !== 'string' || typeof options.out !== 'string') {
    throw new InputError('exportHuggingFace({ classifier, out }): both are paths');
  }
  checkOptionNames('exportHuggingFace()', options, EXPORT_OPTION_NAMES);
  const dir = options.classifier;
  const out = resolve(options.out);
  await checkOut(out);
  // Any problem type: config.json's problem_type says which.
  const classifier = await Classifier.load(dir, { device: 'cpu', problemType: PROBLEM_TYPES });
  try {
    const config = classifier.config;
    if (config.hyperparameters?.technique === 'adapter') {
      // Bottleneck adapters are modules transformers' BERT does not have, and cannot be merged into its weights.
      throw new ModelError(
        `cannot export ${dir} as a Hugging Face model: its bottleneck adapters (technique 'adapter') are no part of ` +
          `transformers' architecture and cannot be merged into its weights; export them for AdapterHub with ` +
          `exportAdapterHub (torch-bert export --format adapterhub), or use its classifier.pt (torch.jit.load)`,
        { file: dir, code: 'EXPORT_UNSUPPORTED_ENCODER' },
      );
    }
    if (config.head === 'prompt') return await exportPrompt(classifier, dir, out);
    const plan = await planExport(classifier, dir, options.heads);
    return await writeFolder(out, async (folder) => {
      const assumed: string[] = [];
      const hfConfig = exportedConfig(plan, assumed);
      await folder.writeJson(CONFIG_FILE, hfConfig);
      writeWeights(plan, folder);
      await folder.write(TOKENIZER_FILE, plan.tokenizerText);
      await folder.writeJson(TOKENIZER_CONFIG_FILE, tokenizerConfig(plan));
      const adapter = plan.lora ? await writePeftAdapter(plan, plan.lora, classifier, folder, out) : null;
      return { out, family: plan.family, files: [...folder.files].sort(), config: hfConfig, assumed, adapter };
    });
  } catch (err) {
    if (err instanceof InputError || err instanceof ModelError) throw err;
    throw new ModelError(`cannot export ${dir}: ${messageOf(err)}`, { file: join(dir, CONFIG_FILE), cause: err });
  } finally {
    classifier.dispose();
  }
}
