/**
 * The kept weights of a pretraining run as a Hugging Face folder in the *ForMaskedLM layout
 * (BertForMaskedLM, RobertaForMaskedLM, DistilBertForMaskedLM), as save_pretrained writes it:
 * config.json (the source model's, `architectures` set), model.safetensors with the family's
 * prefixes (`bert.` + `cls.predictions.*`, `roberta.` + `lm_head.*`, `distilbert.` + `vocab_*`)
 * without the decoder weight tied to the word embeddings, and the tokenizer files; plus the
 * encoder as TorchScript (`encoder.pt`). The folder is a model for `train` and `pretrain` again.
 *
 * Saved as the classifier's checkpoint is (checkpoint.ts commitFolder): model.safetensors and
 * encoder.pt under content-addressed names, config.json (its `torch_bert` block records their
 * SHA-256) as the commit point, then published; a crash at any moment leaves the previous best
 * or this one, never a mix. Between the commit and the publication (two renames) the committed
 * weights sit under their content-addressed names, which torch-bert's loader takes
 * (model-folder.ts inspectModelFolder) and the next run into the folder publishes.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NativeBinding, NativeScriptModule, NativeTensor } from '../addon/binding.js';
import { CONFIG_FILE, commitFolder, HISTORY_FILE, saveInEvalMode, TOKENIZER_FILE } from '../files/checkpoint.js';
import { readJson } from '../models/encoder-source.js';
import { type EncoderFamily, type TransformersNames, transformersNames } from '../models/hf-config.js';
import { MODEL_FILE, SAFETENSORS_METADATA, SPECIAL_TOKENS_MAP_FILE, TOKENIZER_CONFIG_FILE, VOCAB_TXT } from '../models/model-folder.js';
import { tokenizerDescription, tokenizerFacts } from '../models/tokenizer-config.js';
import type { EpochMetrics, Evaluation } from '../training/options.js';

export const ENCODER_FILE = 'encoder.pt';

/** transformers' base-model prefix and MLM head prefix of each family. */
const PREFIX: Record<EncoderFamily, { encoder: string; head: string }> = {
  bert: { encoder: 'bert.', head: 'cls.' },
  roberta: { encoder: 'roberta.', head: 'lm_head.' },
  distilbert: { encoder: 'distilbert.', head: '' },
};
/**
 * The source folder's tokenizer files, copied when present (tokenizer.json is always written;
 * tokenizer_config.json is the source's, completed from the tokenizer).
 */
const TOKENIZER_FILES = [SPECIAL_TOKENS_MAP_FILE, VOCAB_TXT, 'vocab.json', 'merges.txt'];

/**
 * transformers' names of the MLM model's parameters (`encoder.*`, `head.*`), aliases (the tied
 * decoder weight) left out as save_pretrained leaves them out. RoBERTa's file also holds the
 * decoder's bias, tied to the head's, as save_pretrained keeps it.
 */
export function maskedLmKeys(
  named: ReadonlyArray<[string, NativeTensor]>,
  aliases: readonly string[],
  family: EncoderFamily,
): Array<[string, NativeTensor]> {
  const skip = new Set(aliases);
  const prefix = PREFIX[family];
  const out: Array<[string, NativeTensor]> = [];
  for (const [name, tensor] of named) {
    if (skip.has(name)) continue;
    if (name.startsWith('encoder.')) out.push([prefix.encoder + name.slice('encoder.'.length), tensor]);
    else if (name.startsWith('head.')) out.push([prefix.head + name.slice('head.'.length), tensor]);
  }
  if (family === 'roberta') {
    const bias = out.find(([n]) => n === 'lm_head.bias');
    if (bias) out.push(['lm_head.decoder.bias', bias[1]]);
  }
  return out;
}

/**
 * The files beside the weights: the source's tokenizer companions, the run's tokenizer.json and
 * its history, and the source's tokenizer_config.json with what it leaves out (or all of it, for a
 * source without one) described from the tokenizer.json as the classifier's export writes it: a
 * folder without the file leaves the casing to transformers' default, which lowercases.
 */
export async function companionFiles(
  sourceDir: string | null,
  tokenizerJson: string,
  names: TransformersNames,
  history: EpochMetrics[],
): Promise<Array<{ file: string; content: string | Uint8Array }>> {
  const companions: Array<{ file: string; content: string | Uint8Array }> = [];
  if (sourceDir) {
    for (const file of TOKENIZER_FILES) {
      // The source's own, where it has them (a folder pretrained into itself reads them back).
      const content = await readFile(join(sourceDir, file)).catch(() => null);
      if (content) companions.push({ file, content });
    }
  }
  companions.push({ file: TOKENIZER_FILE, content: tokenizerJson });
  const described = tokenizerDescription(tokenizerFacts(JSON.parse(tokenizerJson) as Record<string, unknown>), names);
  const own = sourceDir ? ((await readJson(join(sourceDir, TOKENIZER_CONFIG_FILE), false)) ?? {}) : {};
  companions.push({ file: TOKENIZER_CONFIG_FILE, content: JSON.stringify({ ...described, ...(own as object) }, null, 2) + '\n' });
  // With the kept weights, as a classifier's checkpoint: an interrupted run's folder has it too.
  companions.push({ file: HISTORY_FILE, content: JSON.stringify(history, null, 2) + '\n' });
  return companions;
}

export async function writeMaskedLmFolder(
  binding: NativeBinding,
  dir: string,
  run: {
    model: NativeScriptModule;
    encoder: NativeScriptModule;
    aliases: readonly string[];
    family: EncoderFamily;
    sourceDir: string | null;
    tokenizerJson: string;
    maxLength: number;
    evaluation: Evaluation;
    /** The run's epochs so far, the kept one's included. */
    history: EpochMetrics[];
  },
): Promise<void> {
  const config = run.sourceDir ? (JSON.parse(await readFile(join(run.sourceDir, CONFIG_FILE), 'utf8')) as Record<string, unknown>) : {};
  const names = transformersNames(run.family, config.model_type);
  config.architectures = [names.className('ForMaskedLM')];
  const torchBert = {
    format: 'torch-bert-mlm',
    formatVersion: 1,
    source: run.sourceDir,
    maxLength: run.maxLength,
    kept: {
      epoch: run.evaluation.epoch,
      step: run.evaluation.step,
      validationLoss: run.evaluation.validationLoss,
      perplexity: Math.exp(run.evaluation.validationLoss),
    },
  };
  const companions = await companionFiles(run.sourceDir, run.tokenizerJson, names, run.history);
  await commitFolder(dir, {
    archives: [
      {
        file: MODEL_FILE,
        write: (path) =>
          binding.writeSafetensors(path, maskedLmKeys(run.model.namedParameters(), run.aliases, run.family), SAFETENSORS_METADATA),
      },
      { file: ENCODER_FILE, write: (path) => saveInEvalMode(run.encoder, path) },
    ],
    companions,
    // config.json last: a folder is a model once it has one.
    config: (archiveSha256) => ({ ...config, torch_bert: { ...torchBert, archiveSha256 } }),
  });
}
