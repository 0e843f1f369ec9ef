/**
 * The kept weights of a pretraining run as a Hugging Face folder in the *ForMaskedLM layout
 * (BertForMaskedLM, RobertaForMaskedLM, DistilBertForMaskedLM), as save_pretrained writes it:
 * config.json (the source model's, `architectures` set), model.safetensors with the family's
 * prefixes (`bert.` + `cls.predictions.*`, `roberta.` + `lm_head.*`, `distilbert.` + `vocab_*`)
 * without the decoder weight tied to the word embeddings, and the tokenizer files; plus the
 * encoder as TorchScript (`encoder.pt`). The folder is a model for `train` and `pretrain` again.
 *
 * Each file is written beside its final name and renamed into place, so a crash leaves every
 * file whole (of this best or of the previous one).
 */
import { copyFile, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { NativeBinding, NativeScriptModule, NativeTensor } from './binding.js';
import { CONFIG_FILE, TOKENIZER_FILE, writeFileAtomic } from './checkpoint.js';
import type { EncoderFamily } from './hf-config.js';
import { MODEL_FILE, SAFETENSORS_METADATA } from './model-folder.js';
import type { Evaluation } from './options.js';

export const ENCODER_FILE = 'encoder.pt';

const ARCHITECTURE: Record<EncoderFamily, string> = {
  bert: 'BertForMaskedLM',
  roberta: 'RobertaForMaskedLM',
  distilbert: 'DistilBertForMaskedLM',
};
/** transformers' base-model prefix and MLM head prefix of each family. */
const PREFIX: Record<EncoderFamily, { encoder: string; head: string }> = {
  bert: { encoder: 'bert.', head: 'cls.' },
  roberta: { encoder: 'roberta.', head: 'lm_head.' },
  distilbert: { encoder: 'distilbert.', head: '' },
};
/** The source folder's tokenizer files, copied when present (tokenizer.json is always written). */
const TOKENIZER_FILES = ['tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt', 'vocab.json', 'merges.txt'];

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
  },
): Promise<void> {
  const config = run.sourceDir ? (JSON.parse(await readFile(join(run.sourceDir, CONFIG_FILE), 'utf8')) as Record<string, unknown>) : {};
  config.architectures = [ARCHITECTURE[run.family]];
  config.torch_bert = {
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
  // writeSafetensors writes a temporary file and renames it.
  binding.writeSafetensors(join(dir, MODEL_FILE), maskedLmKeys(run.model.namedParameters(), run.aliases, run.family), SAFETENSORS_METADATA);
  const encoder = join(dir, ENCODER_FILE);
  // Saved in eval mode (dropout off), as a user loading it for features expects; the run goes on
  // in the mode it was in.
  const wasTraining = run.encoder.isTraining;
  run.encoder.train(false);
  try {
    await run.encoder.saveAsync(`${encoder}.tmp`);
  } finally {
    run.encoder.train(wasTraining);
  }
  await rename(`${encoder}.tmp`, encoder);
  if (run.sourceDir) {
    for (const file of TOKENIZER_FILES) {
      const from = join(run.sourceDir, file);
      const to = join(dir, file);
      if (from === to) continue;
      await copyFile(from, `${to}.tmp`).then(
        () => rename(`${to}.tmp`, to),
        () => rm(`${to}.tmp`, { force: true }),
      );
    }
  }
  await writeFileAtomic(join(dir, TOKENIZER_FILE), run.tokenizerJson);
  // config.json last: a folder is a model once it has one.
  await writeFileAtomic(join(dir, CONFIG_FILE), JSON.stringify(config, null, 2) + '\n');
}
