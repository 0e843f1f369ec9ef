/**
 * A prompt classifier (`head: 'prompt'`) as a Hugging Face *ForMaskedLM folder, which transformers
 * users run as LM-BFF does: fill the template recorded in config.json's `torch_bert.prompt`, take
 * the MLM logits at the mask, softmax over the label words' ids.
 *
 * classifier.pt holds the fine-tuned encoder (LoRA merged) and the MLM head's transform, but of
 * the decoder only the label words' rows (their bias rows, and an untied decoder's weight rows):
 * the rest of the vocabulary comes from the base model folder the run was trained on (recorded in
 * config.json's `encoder.source`), whose MLM head is loaded and given the trained values. The
 * folder is written by the MLM folder writer's key names (mlm-output.ts `maskedLmKeys`).
 */
import { existsSync } from 'node:fs';
import { copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NativeBinding, NativeTensor, ProblemType } from '../addon/binding.js';
import { ModelError } from '../addon/errors.js';
import { loadBinding } from '../addon/loader.js';
import type { Classifier } from '../classification/classifier.js';
import { CONFIG_FILE, TOKENIZER_FILE } from '../files/checkpoint.js';
import type { StagedFolder } from '../files/export-folder.js';
import { loadEncoderSource, readJson } from '../models/encoder-source.js';
import { type EncoderFamily, transformersNames } from '../models/hf-config.js';
import { MODEL_FILE, SAFETENSORS_METADATA, SPECIAL_TOKENS_MAP_FILE, TOKENIZER_CONFIG_FILE, VOCAB_TXT } from '../models/model-folder.js';
import { maskedLmKeys } from '../pretraining/mlm-output.js';

/**
 * The prompt head's parameter names (native/module/classifier.cc) → the MLM head's own: the
 * transform's modules, and where the decoder's weight and bias are.
 */
const HEAD_NAMES: Record<EncoderFamily, { transform: Array<[string, string]>; weight: string; bias: string }> = {
  bert: { transform: [['transform.', 'predictions.transform.']], weight: 'predictions.decoder.weight', bias: 'predictions.bias' },
  roberta: {
    transform: [
      ['dense.', 'dense.'],
      ['layer_norm.', 'layer_norm.'],
    ],
    weight: 'decoder.weight',
    bias: 'bias',
  },
  distilbert: {
    transform: [
      ['vocab_transform.', 'vocab_transform.'],
      ['vocab_layer_norm.', 'vocab_layer_norm.'],
    ],
    weight: 'vocab_projector.weight',
    bias: 'vocab_projector.bias',
  },
};

/**
 * The base model's tokenizer companions, copied when present (tokenizer.json is the classifier's;
 * tokenizer_config.json is the base's, completed from the tokenizer, with the classifier's length).
 */
const TOKENIZER_FILES = [SPECIAL_TOKENS_MAP_FILE, VOCAB_TXT, 'vocab.json', 'merges.txt'];

/** `rows` of `target` ([vocab] or [vocab, hidden]) set to `values`' rows, in place. */
function setRows(binding: NativeBinding, target: NativeTensor, rows: readonly number[], values: NativeTensor): void {
  const data = Float32Array.from(target.toArray() as Float32Array);
  const width = target.shape.length === 2 ? target.shape[1]! : 1;
  const source = values.toArray() as Float32Array;
  rows.forEach((row, k) => {
    data.set(source.subarray(k * width, (k + 1) * width), row * width);
  });
  const updated = binding.Tensor.fromArray(data, target.shape);
  target.copyFrom(updated);
  updated.dispose();
}

/**
 * The base folder's encoder and MLM head (loaded from `baseDir`) given the classifier's trained
 * values: every encoder parameter (a tied decoder weight is the word embeddings, so it follows),
 * the head's transform, and the label words' rows of the decoder's bias (and of an untied
 * decoder's weight). Returns the base's family, and the two modules for the caller to dispose.
 */
async function trainedBase(classifier: Classifier<ProblemType>, dir: string, baseDir: string) {
  const binding = loadBinding();
  const { config } = classifier;
  const loaded = await loadEncoderSource(baseDir, {
    device: 'cpu',
    tokenizer: classifier.tokenizer,
    maxLength: config.maxLength,
    fallbackMaxLength: config.maxLength,
    mlmHead: true,
  });
  const { module: encoder, mlmHead } = loaded;
  try {
    if (!mlmHead || loaded.source.kind !== 'folder') {
      throw new ModelError(`cannot export ${dir}: its base model ${baseDir} has no MLM head`, {
        file: baseDir,
        code: 'EXPORT_UNSUPPORTED_ENCODER',
      });
    }
    const family = loaded.source.family;
    const trained = new Map(classifier.module.namedParameters());
    const take = (name: string): NativeTensor => {
      const t = trained.get(name);
      if (!t) throw new ModelError(`cannot export ${dir}: classifier.pt lacks ${name}`, { file: dir, code: 'EXPORT_UNSUPPORTED_ENCODER' });
      return t;
    };
    for (const [name, tensor] of encoder.namedParameters()) tensor.copyFrom(take(`encoder.${name}`));
    const names = HEAD_NAMES[family];
    const head = new Map(mlmHead.namedParameters());
    for (const [ours, theirs] of names.transform) {
      for (const [name, tensor] of head) if (name.startsWith(theirs)) tensor.copyFrom(take(`head.${ours}${name.slice(theirs.length)}`));
    }
    const labelIds = config.prompt!.labelTokenIds;
    setRows(binding, head.get(names.bias)!, labelIds, take('head.label_decoder.bias'));
    const untied = trained.get('head.label_decoder.weight');
    if (untied) setRows(binding, head.get(names.weight)!, labelIds, untied);
    return { family, encoder, mlmHead };
  } catch (err) {
    encoder.dispose();
    mlmHead?.dispose();
    throw err;
  }
}

/**
 * The recorded base folder, which must still be there: a prompt classifier holds only its label
 * words' rows of the MLM decoder. A folder moved or removed since training is named as such,
 * before the loader's bare 'no such file or folder'.
 */
function requireBase(
  dir: string,
  baseDir: string | null,
  baseConfig: Record<string, unknown> | null,
): { baseDir: string; baseConfig: Record<string, unknown> } {
  if (!baseDir || !baseConfig || !existsSync(baseDir)) {
    throw new ModelError(
      `cannot export ${dir}: a prompt classifier holds only its label words' rows of the MLM decoder; the rest comes from the ` +
        `base model folder it was trained on, which ${baseDir ? `(${baseDir}) is gone` : 'its config.json does not record'}`,
      { file: join(dir, CONFIG_FILE), code: 'EXPORT_UNSUPPORTED_ENCODER' },
    );
  }
  return { baseDir, baseConfig };
}

/** model.safetensors: the base's encoder and MLM head with the classifier's trained values, under the MLM folder's keys. */
async function writeMaskedLmWeights(
  classifier: Classifier<ProblemType>,
  dir: string,
  baseDir: string,
  folder: StagedFolder,
): Promise<EncoderFamily> {
  const binding = loadBinding();
  const { family, encoder, mlmHead } = await trainedBase(classifier, dir, baseDir);
  try {
    const built = binding.buildMlmModel(encoder, mlmHead);
    try {
      const aliases = built.tiedParameters.map(([alias]) => alias);
      binding.writeSafetensors(
        folder.file(MODEL_FILE),
        maskedLmKeys(built.module.namedParameters(), aliases, family),
        SAFETENSORS_METADATA,
      );
    } finally {
      built.module.dispose();
    }
  } finally {
    mlmHead.dispose();
    encoder.dispose();
  }
  return family;
}

/**
 * The base's tokenizer companions, the classifier's tokenizer.json, and the base's
 * tokenizer_config.json at `maxLength`, what it leaves out taken from `described` (the default
 * export's description of the tokenizer: a base folder without the file left the casing to
 * transformers' default, which lowercases).
 */
async function writeTokenizerFiles(
  dir: string,
  baseDir: string,
  maxLength: number,
  described: Record<string, unknown>,
  folder: StagedFolder,
): Promise<void> {
  for (const file of TOKENIZER_FILES) {
    if (existsSync(join(baseDir, file))) await copyFile(join(baseDir, file), folder.file(file));
  }
  await copyFile(join(dir, TOKENIZER_FILE), folder.file(TOKENIZER_FILE));
  // The length the classifier was trained with, as the default export writes it: `truncation=True`
  // then cuts as the classifier did, not at the base's 512.
  const baseTokenizerConfig = ((await readJson(join(baseDir, TOKENIZER_CONFIG_FILE), false)) ?? {}) as Record<string, unknown>;
  await writeFile(
    folder.file(TOKENIZER_CONFIG_FILE),
    JSON.stringify({ ...described, ...baseTokenizerConfig, model_max_length: maxLength }, null, 2) + '\n',
  );
}

/** config.json: the base's, as a ForMaskedLM with the classifier's labels, and `torch_bert` saying how to classify with it. */
function maskedLmConfig(
  baseConfig: Record<string, unknown>,
  family: EncoderFamily,
  config: Classifier['config'],
  source: Record<string, unknown>,
): Record<string, unknown> {
  return {
    ...baseConfig,
    architectures: [transformersNames(family, baseConfig.model_type).className('ForMaskedLM')],
    torch_dtype: 'float32',
    id2label: Object.fromEntries(config.labels.map((label, i) => [String(i), label])),
    label2id: Object.fromEntries(config.labels.map((label, i) => [label, i])),
    torch_bert: {
      format: 'torch-bert-prompt-export',
      formatVersion: 1,
      source,
      maxLength: config.maxLength,
      // How to classify with it (LM-BFF): fill the template ({text}, or {text_a}/{text_b}),
      // run the MLM, softmax over the logits of `labelTokenIds` (class order) at the mask token.
      prompt: { ...config.prompt!, labels: config.labels },
    },
  };
}

/**
 * Writes `classifier` (a prompt classifier loaded from `dir`) into `folder` as a ForMaskedLM
 * folder (the weights, the base's tokenizer files, the classifier's tokenizer.json); returns the
 * config.json for the caller to write. `recordedDir`, `recordedConfig`: the base folder and its
 * config.json as the classifier recorded them; `describeTokenizer`: the default export's
 * tokenizer_config.json fields for the family, which fill in what the base's leaves out.
 */
export async function writePromptExport(
  classifier: Classifier<ProblemType>,
  dir: string,
  recordedDir: string | null,
  recordedConfig: Record<string, unknown> | null,
  describeTokenizer: (family: EncoderFamily) => Record<string, unknown>,
  folder: StagedFolder,
  source: Record<string, unknown>,
): Promise<{ family: EncoderFamily; config: Record<string, unknown> }> {
  const { baseDir, baseConfig } = requireBase(dir, recordedDir, recordedConfig);
  const family = await writeMaskedLmWeights(classifier, dir, baseDir, folder);
  await writeTokenizerFiles(dir, baseDir, classifier.config.maxLength, describeTokenizer(family), folder);
  return { family, config: maskedLmConfig(baseConfig, family, classifier.config, source) };
}
