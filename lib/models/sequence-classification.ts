/**
 * `head: 'sequence-classification'`: the classifier trains transformers' own sequence-classification
 * head for the encoder's family (BertForSequenceClassification, RobertaClassificationHead,
 * DistilBertForSequenceClassification; built natively by `binding.buildClassifier`), so that the
 * trained classifier exports whole and `AutoModelForSequenceClassification` reproduces it.
 *
 * This file decides that head's settings from the encoder: the family (the recorded Hugging Face
 * config's model_type for a folder or Hub id, else the parameter names and shapes read by
 * export-family.ts), the dropout p (the config's, else the `dropout` option) and the init's
 * standard deviation; and, for the export, the ForSequenceClassification key names.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClassifierSpec, NativeScriptModule } from '../addon/binding.js';
import { ModelError, messageOf } from '../addon/errors.js';
import type { EncoderSourceInfo } from './encoder-source.js';
import { type ExportFamily, encoderShapes, familyOf, isRobertaTokenizerText } from './export-family.js';
import { configNumber, headDropout, isJsonObject, transformersNames } from './hf-config.js';

export type HeadKind = 'mlp' | 'sequence-classification' | 'prompt';
export const HEAD_KINDS: readonly HeadKind[] = ['mlp', 'sequence-classification', 'prompt'];

/** The base model's attribute in transformers' ForSequenceClassification: the encoder's keys' prefix. */
export const BASE_PREFIX: Record<ExportFamily, string> = { bert: 'bert.', roberta: 'roberta.', distilbert: 'distilbert.' };

/** The head's parameter names in the classifier (`head.` + these) → transformers' key names. */
const HEAD_KEYS: Record<ExportFamily, Record<string, string>> = {
  bert: { classifier: 'classifier' },
  roberta: { dense: 'classifier.dense', out_proj: 'classifier.out_proj' },
  distilbert: { pre_classifier: 'pre_classifier', classifier: 'classifier' },
};

/** What buildClassifier takes for the head, and what the classifier's config.json records of it. */
export interface HeadSettings {
  head: HeadKind;
  /** With 'sequence-classification': whose head. */
  family?: ExportFamily;
  /** The head's dropout p: the option's, or with 'sequence-classification' the encoder config's when it says one. */
  dropout: number;
  initializerRange?: number;
  /**
   * What `features()` returns, for the feature cache's key: the pooling ('cls' | 'mean'), or
   * 'pooler' for BERT's sequence-classification head (the pooler output).
   */
  features: string;
}

/** The encoder folder's config.json, or null (a TorchScript file, or a folder gone since). */
async function folderConfig(source: EncoderSourceInfo | undefined): Promise<Record<string, unknown> | null> {
  if (source?.kind !== 'folder') return null;
  try {
    const parsed = JSON.parse(await readFile(join(source.dir, 'config.json'), 'utf8')) as unknown;
    return isJsonObject(parsed) ? parsed : null;
  } catch {
    return null;
  }
}

/** The encoder's family and whether it has a pooler, or a refusal: the head is transformers' head of that family. */
function encoderFamily(options: { encoder: NativeScriptModule; encoderName: string; source?: EncoderSourceInfo; tokenizerJson?: string }): {
  family: ExportFamily;
  pooler: boolean;
} {
  const params = options.encoder.namedParameters().map(([name, t]) => ({ name, shape: t.shape }));
  try {
    const shapes = encoderShapes(params, options.encoderName);
    const roberta = options.tokenizerJson !== undefined && isRobertaTokenizerText(options.tokenizerJson);
    const modelType = options.source?.kind === 'folder' ? options.source.modelType : null;
    return { family: familyOf(shapes, modelType, roberta), pooler: shapes.pooler };
  } catch (err) {
    throw new ModelError(
      `head 'sequence-classification' trains transformers' head of the encoder's family, but ${options.encoderName} is ` +
        `not a BERT, RoBERTa or DistilBERT encoder with transformers' parameter names: ${messageOf(err)}`,
      { file: options.encoderName, code: 'HEAD_UNSUPPORTED_ENCODER', cause: err },
    );
  }
}

/**
 * The head's settings for a run (see the top). `encoder` is the loaded encoder module (its own
 * parameter names), `tokenizerJson` the run's tokenizer.json text when there is one (a RoBERTa
 * tokenizer tells RoBERTa from BERT, whose parameter names are the same). Throws ModelError when
 * the family cannot be told, or when a BERT encoder has no pooler.
 */
export async function headSettings(options: {
  head: HeadKind;
  dropout: number;
  pooling: string;
  encoder: NativeScriptModule;
  encoderName: string;
  source?: EncoderSourceInfo;
  tokenizerJson?: string;
}): Promise<HeadSettings> {
  if (options.head === 'mlp') return { head: 'mlp', dropout: options.dropout, features: options.pooling };
  // The mask row's hidden state (prompt-classifier.ts builds the head itself).
  if (options.head === 'prompt') return { head: 'prompt', dropout: 0, features: 'mask' };
  const { family, pooler } = encoderFamily(options);
  if (family === 'bert' && !pooler) {
    throw new ModelError(
      `head 'sequence-classification' of BERT (BertForSequenceClassification) classifies the pooler output, but encoder ` +
        `${options.encoderName} has no pooler (no pooler.dense.*): use head 'mlp', or an encoder saved with its pooler`,
      { file: options.encoderName, code: 'HEAD_NO_POOLER' },
    );
  }
  const hf = await folderConfig(options.source);
  return {
    head: 'sequence-classification',
    family,
    dropout: (hf && headDropout(family, hf, 'sequence-classification')) ?? options.dropout,
    initializerRange: configNumber(hf?.initializer_range) ?? 0.02,
    features: family === 'bert' ? 'pooler' : 'cls',
  };
}

/** The head part of buildClassifier's spec. */
export function headSpec(settings: HeadSettings): Pick<ClassifierSpec, 'head' | 'family' | 'initializerRange' | 'dropout'> {
  return settings.head === 'mlp'
    ? { head: 'mlp', dropout: settings.dropout }
    : { head: settings.head, family: settings.family, initializerRange: settings.initializerRange, dropout: settings.dropout };
}

/**
 * The classifier's parameters (its own names: `encoder.*`, `head.*`) under transformers'
 * ForSequenceClassification key names for `family`. Throws on a head parameter the family's head lacks.
 */
export function sequenceClassificationKeys<T>(family: ExportFamily, params: ReadonlyArray<readonly [string, T]>): Array<[string, T]> {
  return params.map(([name, t]): [string, T] => {
    if (name.startsWith('encoder.')) return [BASE_PREFIX[family] + name.slice('encoder.'.length), t];
    const m = /^head\.([^.]+)\.(weight|bias)$/.exec(name);
    const module = m ? HEAD_KEYS[family][m[1]!] : undefined;
    if (!m || !module)
      throw new ModelError(
        `${name} is not a parameter of ${transformersNames(family, null).className('ForSequenceClassification')}'s head`,
      );
    return [`${module}.${m[2]}`, t];
  });
}
