/**
 * A token classifier's kept weights as a Hugging Face folder in the *ForTokenClassification
 * layout (BertForTokenClassification, RobertaForTokenClassification,
 * DistilBertForTokenClassification), as save_pretrained writes it: config.json (the source
 * model's, with `architectures`, `id2label` and `label2id`), model.safetensors with the family's
 * prefix (`bert.`, `roberta.`, `distilbert.`) and the head's `classifier.weight`/`bias`, no pooler
 * (transformers builds these models without one), and the tokenizer files. transformers'
 * `AutoModelForTokenClassification.from_pretrained` and its `token-classification` pipeline read
 * it, and so does `loadTokenClassifier()`.
 *
 * A LoRA run's folder also holds its adapters as PEFT saves a TOKEN_CLS adapter, in `adapter/`
 * (export-peft.ts): `PeftModel.from_pretrained(AutoModelForTokenClassification.from_pretrained(base,
 * id2label=...), '<dir>/adapter')` is the model the merged weights are.
 *
 * Saved as pretraining's folder is (checkpoint.ts commitFolder): a crash at any moment leaves the
 * previous best or this one, never a mix (the adapter's weights are one of the archives committed).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NativeBinding, NativeLoraAdapters, NativeScriptModule, NativeTensor } from '../addon/binding.js';
import { InputError, ModelError } from '../addon/errors.js';
import {
  ADAPTER_CONFIG_FILE,
  ADAPTER_DIR,
  ADAPTER_WEIGHTS_FILE,
  adapterConfig,
  type LoraSettings,
  peftModulesToSave,
  peftTensors,
} from '../export/export-peft.js';
import { CONFIG_FILE, commitFolder } from '../files/checkpoint.js';
import type { LoadedEncoder } from '../models/encoder-source.js';
import type { ExportFamily } from '../models/export-family.js';
import { isJsonObject, transformersNames } from '../models/hf-config.js';
import { copyRows, sequenceClassifierLabels } from '../models/hf-sequence-classifier.js';
import { MODEL_FILE, SAFETENSORS_METADATA } from '../models/model-folder.js';
import { BASE_PREFIX } from '../models/sequence-classification.js';
import { companionFiles } from '../pretraining/mlm-output.js';
import type { EpochMetrics, Evaluation } from '../training/options.js';

/** config.json's `torch_bert.format` of a token classifier torch-bert trained. */
export const TOKEN_CLASSIFIER_FORMAT = 'torch-bert-token-classifier';

/**
 * A task model's parameters (`encoder.*`, `head.*`) under transformers' names of its
 * *ForTokenClassification or *ForQuestionAnswering model: the encoder under the family's prefix,
 * the head's modules at the top (`classifier.*`, `qa_outputs.*`); the pooler, which those models
 * have not, left out.
 */
export function taskModelKeys<T>(family: ExportFamily, params: ReadonlyArray<readonly [string, T]>): Array<[string, T]> {
  const out: Array<[string, T]> = [];
  for (const [name, tensor] of params) {
    if (name.startsWith('encoder.pooler.')) continue;
    if (name.startsWith('encoder.')) out.push([BASE_PREFIX[family] + name.slice('encoder.'.length), tensor]);
    else if (name.startsWith('head.')) out.push([name.slice('head.'.length), tensor]);
  }
  return out;
}

export async function writeTokenClassifierFolder(
  binding: NativeBinding,
  dir: string,
  run: {
    model: NativeScriptModule;
    /**
     * The model's LoRA adapters, where it has them: its weights are saved as a forward sees them,
     * W0 + (alpha / r)·B·A (a merged copy), so that transformers loads them without PEFT, and the
     * adapters with the head in `adapter/` for PEFT, on `base` (a Hub id at `revision`, or a folder).
     */
    lora?: LoraRun;
    family: ExportFamily;
    /** The model folder trained from, for its config.json and tokenizer companions. */
    sourceDir: string;
    tokenizerJson: string;
    maxLength: number;
    /** Trained with run_ner.py's label_all_tokens (its validation scores are the tokens'). */
    labelAllTokens: boolean;
    /** Tag names in class-id order. */
    labels: readonly string[];
    evaluation: Evaluation;
    history: EpochMetrics[];
  },
): Promise<void> {
  const config = JSON.parse(await readFile(join(run.sourceDir, CONFIG_FILE), 'utf8')) as Record<string, unknown>;
  const names = transformersNames(run.family, config.model_type);
  const torchBert = {
    format: TOKEN_CLASSIFIER_FORMAT,
    formatVersion: 1,
    source: run.sourceDir,
    maxLength: run.maxLength,
    labelAllTokens: run.labelAllTokens,
    kept: {
      epoch: run.evaluation.epoch,
      step: run.evaluation.step,
      validationLoss: run.evaluation.validationLoss,
      validationAccuracy: run.evaluation.validationAccuracy,
      validationMacroF1: run.evaluation.validationMacroF1,
    },
  };
  const merged = run.lora ? run.model.clone() : null;
  try {
    const adapter = run.lora ? peftAdapter(run.lora, run.family, run.model, 'TOKEN_CLS') : null;
    await commitModel(binding, dir, {
      tensors: taskModelKeys(run.family, (merged ?? run.model).namedParameters()),
      adapterTensors: adapter?.tensors,
      companions: [
        ...(await companionFiles(run.sourceDir, run.tokenizerJson, names, run.history)),
        ...(adapter ? [{ file: ADAPTER_CONFIG, content: JSON.stringify(adapter.config, null, 2) + '\n' }] : []),
      ],
      config: {
        ...config,
        architectures: [names.className('ForTokenClassification')],
        id2label: Object.fromEntries(run.labels.map((label, id) => [String(id), label])),
        label2id: Object.fromEntries(run.labels.map((label, id) => [label, id])),
      },
      torchBert,
    });
  } finally {
    merged?.dispose();
  }
}

/** Where in the folder a LoRA run's PEFT adapter is. */
export const ADAPTER_CONFIG = `${ADAPTER_DIR}/${ADAPTER_CONFIG_FILE}`;
const ADAPTER_WEIGHTS = `${ADAPTER_DIR}/${ADAPTER_WEIGHTS_FILE}`;

/** A LoRA run's adapters, how they were made, and the model they go on (a Hub id at `revision`, or a folder). */
export interface LoraRun {
  adapters: NativeLoraAdapters;
  settings: LoraSettings;
  base: string;
  revision: string | null;
}

/**
 * The LoRA run as PEFT's TOKEN_CLS (QUESTION_ANS) adapter of the family's ForTokenClassification
 * (ForQuestionAnswering): the adapters under `base_model.model.bert.…` (`roberta.`,
 * `distilbert.`), the head, trained whole, as `modules_to_save` (`base_model.model.classifier.*`,
 * `qa_outputs.*`), and adapter_config.json.
 */
export function peftAdapter(
  lora: LoraRun,
  family: ExportFamily,
  model: NativeScriptModule,
  type: 'TOKEN_CLS' | 'QUESTION_ANS',
): { tensors: Array<[string, NativeTensor]>; config: Record<string, unknown> } {
  const head = peftModulesToSave(
    taskModelKeys(
      family,
      model.namedParameters().filter(([n]) => n.startsWith('head.')),
    ),
  );
  return {
    tensors: [...peftTensors(lora.adapters.parameters(), BASE_PREFIX[family]), ...head.tensors],
    config: adapterConfig(lora.settings, lora.base, lora.revision, { type, modulesToSave: head.modules }),
  };
}

/** The folder committed: model.safetensors (and a LoRA run's adapter weights), the companions, then config.json with the `torch_bert` block. */
export async function commitModel(
  binding: NativeBinding,
  dir: string,
  save: {
    tensors: Array<[string, NativeTensor]>;
    adapterTensors: Array<[string, NativeTensor]> | undefined;
    companions: Array<{ file: string; content: string | Uint8Array }>;
    config: Record<string, unknown>;
    torchBert: Record<string, unknown>;
  },
): Promise<void> {
  const write = (tensors: Array<[string, NativeTensor]>) => (path: string) => binding.writeSafetensors(path, tensors, SAFETENSORS_METADATA);
  await commitFolder(dir, {
    archives: [
      { file: MODEL_FILE, write: write(save.tensors) },
      ...(save.adapterTensors ? [{ file: ADAPTER_WEIGHTS, write: write(save.adapterTensors) }] : []),
    ],
    companions: save.companions,
    // config.json last: a folder is a model once it has one.
    config: (archiveSha256) => ({ ...save.config, torch_bert: { ...save.torchBert, archiveSha256 } }),
  });
}

/** Whether a config.json's `architectures` name a token classifier (`BertForTokenClassification`, ...). */
export function isTokenClassifierConfig(config: Record<string, unknown>): boolean {
  return Array.isArray(config.architectures) && config.architectures.some((a) => String(a).endsWith('ForTokenClassification'));
}

/**
 * How a folder trainTokenClassifier() wrote was trained (its `torch_bert` block): the max length
 * (undefined for another folder) and whether with labelAllTokens (false for another folder).
 */
export function trainedSettings(config: Record<string, unknown>): { maxLength: number | undefined; labelAllTokens: boolean } {
  const block = config.torch_bert;
  const ours = isJsonObject(block) && block.format === TOKEN_CLASSIFIER_FORMAT;
  return {
    maxLength: ours && typeof block.maxLength === 'number' ? block.maxLength : undefined,
    labelAllTokens: ours && block.labelAllTokens === true,
  };
}

/**
 * A *ForTokenClassification checkpoint's head (`head`: its `classifier.weight` [tags, hidden] and
 * `classifier.bias`, by transformers' names) and its tags (config.json's `id2label`, in id order).
 */
export interface CheckpointHead {
  weights: ReadonlyMap<string, NativeTensor>;
  tags: string[];
}

/** The checkpoint's head and tags; a ModelError naming the file when it holds no head or its id2label does not name each row. */
export function checkpointHead(
  head: ReadonlyMap<string, NativeTensor>,
  config: Record<string, unknown>,
  description: string,
  file: string,
): CheckpointHead {
  const weight = head.get('classifier.weight');
  if (weight?.shape.length !== 2) {
    throw new ModelError(`${description} has no classifier.weight [tags, hidden]: its checkpoint holds no token-classification head`, {
      file,
      code: 'CHECKPOINT_MISMATCH',
    });
  }
  return { weights: head, tags: sequenceClassifierLabels(config, weight.shape[0]!, file) };
}

/**
 * The checkpoint's head into the token classifier's (`head.classifier.*`), tag `c` taking the
 * checkpoint's row `rows[c]`: each tensor there, of the head's shape, else a ModelError naming it.
 */
export function copyTokenHead(
  module: NativeScriptModule,
  checkpoint: CheckpointHead,
  rows: readonly number[],
  description: string,
  file: string,
): void {
  for (const [name, param] of module.namedParameters().filter(([n]) => n.startsWith('head.'))) {
    const key = name.slice('head.'.length);
    const saved = checkpoint.weights.get(key);
    const shape = [rows.length, ...(saved?.shape.slice(1) ?? [])];
    if (!saved || saved.shape.length !== param.shape.length || shape.join(',') !== param.shape.join(',')) {
      throw new ModelError(
        `${description}: its checkpoint ${saved ? `holds ${key} as [${saved.shape.join(', ')}], where the head takes [${param.shape.join(', ')}]` : `lacks ${key}`}`,
        { file, code: 'CHECKPOINT_MISMATCH' },
      );
    }
    if (rows.every((row, c) => row === c) && saved.shape[0] === rows.length) {
      param.copyFrom(saved);
      continue;
    }
    copyRows(param, saved, rows);
  }
}

/**
 * The model folder (a folder or a Hub snapshot; a TorchScript file is refused before it loads):
 * its family, which decides the head and the saved folder's names, and its config.json.
 */
export function folderOf(loaded: LoadedEncoder): {
  family: ExportFamily;
  dir: string;
  config: Record<string, unknown>;
  configFile: string;
} {
  const source = loaded.source;
  if (source.kind !== 'folder') throw new InputError(`${loaded.description} is not a Hugging Face model folder`);
  return { family: source.family, dir: source.dir, config: source.config ?? {}, configFile: join(source.dir, CONFIG_FILE) };
}

/** The model a PEFT adapter of this run goes on: its Hub id at the commit trained from, or its folder. */
export function peftBase(loaded: LoadedEncoder): { base: string; revision: string | null } {
  const source = loaded.source;
  if (source.kind !== 'folder') throw new InputError(`${loaded.description} is not a Hugging Face model folder`);
  return source.repoId ? { base: source.repoId, revision: source.commit ?? null } : { base: source.dir, revision: null };
}
