/**
 * A question-answering model's kept weights as a Hugging Face folder in the *ForQuestionAnswering
 * layout (BertForQuestionAnswering, RobertaForQuestionAnswering, DistilBertForQuestionAnswering),
 * as save_pretrained writes it: config.json (the source model's, with `architectures`),
 * model.safetensors with the family's prefix and the head's `qa_outputs.weight`/`bias`, no
 * pooler, and the tokenizer files. transformers' `AutoModelForQuestionAnswering.from_pretrained`
 * and its `question-answering` pipeline read it, and so does `loadQuestionAnswerer()`. A LoRA
 * run's folder also holds its PEFT QUESTION_ANS adapter in `adapter/`. Committed as a token
 * classifier's folder is (token-classifier-folder.ts commitModel): crash-safe.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NativeBinding, NativeScriptModule, NativeTensor } from '../addon/binding.js';
import { ModelError } from '../addon/errors.js';
import { CONFIG_FILE } from '../files/checkpoint.js';
import type { ExportFamily } from '../models/export-family.js';
import { isJsonObject, transformersNames } from '../models/hf-config.js';
import { companionFiles } from '../pretraining/mlm-output.js';
import { ADAPTER_CONFIG, commitModel, type LoraRun, peftAdapter, taskModelKeys } from '../tagging/token-classifier-folder.js';
import type { EpochMetrics, Evaluation } from '../training/options.js';
import type { WindowSettings } from './question-windows.js';
import type { SpanOptions } from './span-answers.js';

/** config.json's `torch_bert.format` of a question-answering model torch-bert trained. */
export const QUESTION_ANSWERER_FORMAT = 'torch-bert-question-answerer';

/** How the kept model reads questions: its windows, their batches' padding and its answers, as trained and validated. */
export type AnswerSettings = Pick<WindowSettings, 'maxLength' | 'docStride'> &
  Pick<SpanOptions, 'versionTwo'> & { padToMaxLength: boolean };

export async function writeQuestionAnswererFolder(
  binding: NativeBinding,
  dir: string,
  run: {
    model: NativeScriptModule;
    /** As writeTokenClassifierFolder's: weights saved merged, the adapters in `adapter/`. */
    lora?: LoraRun;
    family: ExportFamily;
    sourceDir: string;
    tokenizerJson: string;
    settings: AnswerSettings;
    evaluation: Evaluation;
    history: EpochMetrics[];
  },
): Promise<void> {
  const config = JSON.parse(await readFile(join(run.sourceDir, CONFIG_FILE), 'utf8')) as Record<string, unknown>;
  const names = transformersNames(run.family, config.model_type);
  const { epoch, step, validationLoss, validationExactMatch, validationF1 } = run.evaluation;
  const torchBert = {
    format: QUESTION_ANSWERER_FORMAT,
    formatVersion: 1,
    source: run.sourceDir,
    ...run.settings,
    kept: { epoch, step, validationLoss, validationExactMatch, validationF1 },
  };
  const merged = run.lora ? run.model.clone() : null;
  try {
    const adapter = run.lora ? peftAdapter(run.lora, run.family, run.model, 'QUESTION_ANS') : null;
    await commitModel(binding, dir, {
      tensors: taskModelKeys(run.family, (merged ?? run.model).namedParameters()),
      adapterTensors: adapter?.tensors,
      companions: [
        ...(await companionFiles(run.sourceDir, run.tokenizerJson, names, run.history)),
        ...(adapter ? [{ file: ADAPTER_CONFIG, content: JSON.stringify(adapter.config, null, 2) + '\n' }] : []),
      ],
      config: { ...config, architectures: [names.className('ForQuestionAnswering')] },
      torchBert,
    });
  } finally {
    merged?.dispose();
  }
}

/** Whether a config.json's `architectures` name a question-answering model (`BertForQuestionAnswering`, ...). */
export function isQuestionAnswererConfig(config: Record<string, unknown>): boolean {
  return Array.isArray(config.architectures) && config.architectures.some((a) => String(a).endsWith('ForQuestionAnswering'));
}

/** How a folder trainQuestionAnswering() wrote reads questions (its `torch_bert` block); empty for another folder. */
export function trainedAnswerSettings(config: Record<string, unknown>): Partial<AnswerSettings> {
  const block = config.torch_bert;
  if (!isJsonObject(block) || block.format !== QUESTION_ANSWERER_FORMAT) return {};
  const number = (v: unknown) => (typeof v === 'number' ? v : undefined);
  return {
    maxLength: number(block.maxLength),
    docStride: number(block.docStride),
    versionTwo: typeof block.versionTwo === 'boolean' ? block.versionTwo : undefined,
    padToMaxLength: typeof block.padToMaxLength === 'boolean' ? block.padToMaxLength : undefined,
  };
}

/**
 * A *ForQuestionAnswering checkpoint's head (`qa_outputs.weight` [2, hidden], `qa_outputs.bias`)
 * into the model's `head.qa_outputs`: each of the head's shape, else a ModelError naming the file.
 */
export function copyAnswerHead(
  module: NativeScriptModule,
  head: ReadonlyMap<string, NativeTensor>,
  description: string,
  file: string,
): void {
  for (const [name, param] of module.namedParameters().filter(([n]) => n.startsWith('head.'))) {
    const key = name.slice('head.'.length);
    const saved = head.get(key);
    if (!saved || saved.shape.join(',') !== param.shape.join(',')) {
      throw new ModelError(
        `${description}: its checkpoint ${saved ? `holds ${key} as [${saved.shape.join(', ')}], where the head takes [${param.shape.join(', ')}]` : `lacks ${key}: it holds no question-answering head`}`,
        { file, code: 'CHECKPOINT_MISMATCH' },
      );
    }
    param.copyFrom(saved);
  }
}
