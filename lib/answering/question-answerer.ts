/**
 * A question-answering model, loaded for answering questions about texts: a folder
 * trainQuestionAnswering() kept, or any transformers *ForQuestionAnswering folder or Hub id
 * (BERT, RoBERTa, DistilBERT). It reads a question and its context as training's validation did
 * (windows of the context, question-windows.ts) and answers as run_qa.py's postprocessing does
 * (the best span over the windows by start + end logit, span-answers.ts).
 */
import { rename, rm } from 'node:fs/promises';
import type { NativeScriptModule, Precision } from '../addon/binding.js';
import { InputError, messageOf } from '../addon/errors.js';
import { loadBinding } from '../addon/loader.js';
import { resolveDevice } from '../classification/classifier.js';
import { type LoadedEncoder, loadEncoderSource } from '../models/encoder-source.js';
import type { DownloadProgress } from '../models/hub.js';
import { takesTokenTypes } from '../models/model-checks.js';
import { folderOf } from '../tagging/token-classifier-folder.js';
import type { Device } from '../training/options.js';
import { type AnswerMetrics, type AnswerSet, answerQuestions, answerSet, validateAnswers } from './answer-task.js';
import { copyAnswerHead, isQuestionAnswererConfig, trainedAnswerSettings } from './qa-folder.js';
import { defaultWindowLength, QA_TRAIN_DEFAULTS } from './qa-trainer.js';
import type { WindowSettings } from './question-windows.js';
import { SPAN_DEFAULTS, type SpanAnswer, type SpanOptions } from './span-answers.js';
import { type QuestionExample, readQuestionFiles } from './squad-data.js';

export interface QuestionAnswererLoadOptions {
  device?: Device;
  /** Tokens per window. Default: what the folder was trained with, else 384 or the model's, if shorter. */
  maxLength?: number;
  /** Tokens two windows share. Default: the folder's, else 128. */
  docStride?: number;
  /** Pad every batch to maxLength (the loss's softmax runs over the pads). Default: the folder's, else true (run_qa.py's pad_to_max_length). */
  padToMaxLength?: boolean;
  onDownload?: (progress: DownloadProgress) => void;
}

/** How answers are chosen (run_qa.py's postprocessing options); versionTwo defaults to the folder's training. */
export type AnswerOptions = Partial<SpanOptions> & {
  /** Windows per native call. Default 32. */
  batchSize?: number;
  precision?: Precision;
};

/** A question and the text that answers it. */
export interface Question {
  question: string;
  context: string;
}

export class QuestionAnswerer {
  private constructor(
    private readonly module: NativeScriptModule,
    private readonly encoder: LoadedEncoder,
    /** How the model reads questions: tokens per window, tokens two windows share, token types. */
    readonly windows: WindowSettings,
    /** Trained for SQuAD 2.0 (questions without an answer): answers "" where the null score wins. */
    readonly versionTwo: boolean,
    /** Every batch padded to maxLength (only the loss `evaluate` reports depends on it). */
    readonly padToMaxLength: boolean,
  ) {}

  /** A question-answering model from a folder (trainQuestionAnswering()'s, or transformers') or a Hub id. */
  static async load(spec: string, options: QuestionAnswererLoadOptions = {}): Promise<QuestionAnswerer> {
    const encoder = await loadEncoderSource(spec, {
      device: resolveDevice(options.device ?? 'auto'),
      onDownload: options.onDownload,
      maxLength: options.maxLength,
      fallbackMaxLength: 512,
      classificationHead: true,
      refuseTorchScript: (file) =>
        new InputError(`${file} is a file; a question-answering model is a Hugging Face *ForQuestionAnswering folder or Hub id`, { file }),
    });
    const head = new Map(encoder.classificationHead);
    encoder.classificationHead = [];
    let module: NativeScriptModule | undefined;
    try {
      const { family, config, configFile } = folderOf(encoder);
      if (!isQuestionAnswererConfig(config)) {
        throw new InputError(
          `${encoder.description} is not a question-answering model (architectures ${JSON.stringify(config.architectures ?? null)}): ` +
            'train one on it with trainQuestionAnswering(), then load that',
          { file: configFile },
        );
      }
      module = loadBinding().buildClassifier(encoder.module, {
        numClasses: 2,
        headHidden: 1,
        pooling: 'cls',
        seed: 0,
        head: 'question-answering',
        family,
        dropout: 0,
      }).module;
      copyAnswerHead(module, head, encoder.description, configFile);
      module.train(false);
      const trained = trainedAnswerSettings(config);
      const windows = {
        maxLength: options.maxLength ?? trained.maxLength ?? defaultWindowLength(encoder.maxLength),
        docStride: options.docStride ?? trained.docStride ?? QA_TRAIN_DEFAULTS.docStride,
        tokenTypes: takesTokenTypes(encoder.module.forwardArity),
      };
      const padToMaxLength = options.padToMaxLength ?? trained.padToMaxLength ?? QA_TRAIN_DEFAULTS.padToMaxLength;
      return new QuestionAnswerer(module, encoder, windows, trained.versionTwo ?? false, padToMaxLength);
    } catch (err) {
      module?.dispose();
      encoder.module.dispose();
      throw err;
    } finally {
      for (const t of head.values()) t.dispose();
    }
  }

  /**
   * Each question's answer in its context: the text, its characters [start, end) in the context,
   * its probability among the candidates, and the candidates (best first: the `nBest` best spans,
   * and with versionTwo the null answer after them where it is not among them, as utils_qa.py
   * lists them). With versionTwo, "" (at 0, 0) where the model says the context holds no answer.
   */
  async answer(questions: readonly Question[], options: AnswerOptions = {}): Promise<SpanAnswer[]> {
    checkQuestions(questions);
    const examples = questions.map((q, i) => ({
      id: String(i),
      question: q.question,
      context: q.context,
      answers: { text: [], answerStart: [] },
    }));
    const { answers } = await answerQuestions(loadBinding(), this.module, this.set(examples), this.settings(options));
    return examples.map((ex) => answers.get(ex.id)!);
  }

  /** SQuAD's exact match and F1 (fractions), the loss over the windows and each answer, on question files (SQuAD JSON or squad records), as validation computed them. */
  async evaluate(data: string | readonly string[], options: AnswerOptions = {}): Promise<AnswerMetrics> {
    const examples = await readQuestionFiles(typeof data === 'string' ? [data] : data);
    const validation = await validateAnswers(loadBinding(), this.module, this.set(examples), this.settings(options));
    return validation.metrics;
  }

  /**
   * The model as a TorchScript file for Python's `torch.jit.load` or C++ libtorch:
   * `span_logits(input_ids, attention_mask)` gives every token's start and end logits, [B, T, 2],
   * as transformers' model returns them (every token of segment 0); where the encoder takes token
   * types (BERT), `span_logits_token_types(input_ids, attention_mask, token_type_ids)` takes the
   * question's and the context's segments, as the windows have them.
   */
  async saveTorchScript(path: string): Promise<void> {
    if (typeof path !== 'string' || path === '') throw new InputError('saveTorchScript(path): path is the .pt file to write');
    const tmp = `${path}.tmp-${process.pid}`;
    try {
      await this.module.saveAsync(tmp);
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw new InputError(`cannot write ${path}: ${messageOf(err)}`, { file: path, cause: err });
    }
  }

  dispose(): void {
    this.module.dispose();
    this.encoder.module.dispose();
  }

  private set(examples: readonly QuestionExample[]): AnswerSet {
    return answerSet(this.encoder.tokenizer, examples, this.windows, this.padToMaxLength);
  }

  private settings(options: AnswerOptions) {
    const { batchSize, precision, ...span } = options;
    return {
      batchSize: batchSize ?? 32,
      precision: precision ?? 'fp32',
      span: {
        ...SPAN_DEFAULTS,
        versionTwo: this.versionTwo,
        ...Object.fromEntries(Object.entries(span).filter(([, v]) => v !== undefined)),
      },
    };
  }
}

/** answer() takes questions: objects with a question and a context, strings both. */
function checkQuestions(questions: unknown): void {
  const ok =
    Array.isArray(questions) &&
    questions.every((q) => typeof q === 'object' && q !== null && typeof q.question === 'string' && typeof q.context === 'string');
  if (!ok) throw new InputError("answer() takes a list of { question, context }, e.g. [{ question: 'Who?', context: 'Ada wrote it.' }]");
}

/** Loads a question-answering model (`QuestionAnswerer.load`). */
export function loadQuestionAnswerer(spec: string, options?: QuestionAnswererLoadOptions): Promise<QuestionAnswerer> {
  return QuestionAnswerer.load(spec, options);
}
