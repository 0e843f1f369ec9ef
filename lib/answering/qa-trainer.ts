import type { NativeBinding, NativeLoraAdapters, NativeScriptModule } from '../addon/binding.js';
import { InputError } from '../addon/errors.js';
import { loadBinding } from '../addon/loader.js';
import { filePathList } from '../data/data.js';
import { type LoadedEncoder, modelFolderRead } from '../models/encoder-source.js';
import { configNumber } from '../models/hf-config.js';
import { takesTokenTypes } from '../models/model-checks.js';
import { folderOf, peftBase } from '../tagging/token-classifier-folder.js';
import { loadTaskModel } from '../tagging/token-trainer.js';
import { contentDigest, type Distributed, type RunIdentity, runAsRank, sharedSettings, startAsRank } from '../training/distributed.js';
import {
  checkOptionNames,
  type EpochMetrics,
  type Evaluation,
  type LoraOptions,
  type ResolvedTrainOptions,
  resolveTrainOptions,
  TASK_LOOP_OPTION_NAMES,
  type TaskLoopOptions,
  zeroLearningRateNote,
} from '../training/options.js';
import { startPosition } from '../training/run-keeper.js';
import { heldOut, keptRun, runTaskRank } from '../training/task-run.js';
import { setUpTrainable } from '../training/trainable.js';
import { startTrainee } from '../training/training-loop.js';
import { checkOutputFolderFirst, readTrainingState, resumePosition, runContents, type SkippedBatch } from '../training/training-state.js';
import { type AnswerMetrics, answerSet, questionAnsweringTask, validateAnswers } from './answer-task.js';
import { copyAnswerHead, isQuestionAnswererConfig, writeQuestionAnswererFolder } from './qa-folder.js';
import { SPAN_DEFAULTS, type SpanOptions } from './span-answers.js';
import { type QuestionExample, readQuestionFiles } from './squad-data.js';

export interface QaTrainOptions extends TaskLoopOptions {
  /** A Hugging Face model folder or Hub id (BERT, RoBERTa, DistilBERT). */
  model: string;
  /** Questions: SQuAD JSON files, or Hugging Face datasets' squad records (JSON Lines or a JSON array). */
  data: string | readonly string[];
  /** Validation questions. Default: a `validationSplit` share of `data`, drawn from the seed. */
  validationData?: string | readonly string[];
  /** Share of `data` held out when there is no validationData. Default 0.1. */
  validationSplit?: number;
  /** Where the kept model (a Hugging Face *ForQuestionAnswering folder), history and training state go. */
  outDir: string;
  /** 'full' (default, run_qa.py's); 'lora' (PEFT's QUESTION_ANS, kept merged); 'frozen' (the head alone). */
  technique?: 'full' | 'lora' | 'frozen';
  lora?: LoraOptions;
  /** A tokenizer.json; default the model folder's. */
  tokenizer?: string;
  /** Tokens per window, special tokens included. Default 384 (run_qa.py's max_seq_length) or the model's, if shorter. */
  maxLength?: number;
  /** Tokens two windows of a long context share. Default 128 (run_qa.py's doc_stride). */
  docStride?: number;
  /**
   * Pad every batch to maxLength (run_qa.py's pad_to_max_length; default true, its default);
   * false pads each to its longest window: faster on short contexts, but the loss (whose softmax
   * runs over the pads, as transformers') then depends on which windows share a batch.
   */
  padToMaxLength?: boolean;
  /** SQuAD 2.0: questions may have no answer ("" is then answered). Default false. */
  versionTwo?: boolean;
  /** Answer candidates kept per question. Default 20 (n_best_size). */
  nBest?: number;
  /** Longest answer in tokens. Default 30 (max_answer_length). */
  maxAnswerLength?: number;
  /** versionTwo: "" is answered when its score beats the best span's by more than this. Default 0. */
  nullScoreDiffThreshold?: number;
  /** Which validation score keeps the best weights: 'loss' (default), 'f1' or 'exactMatch' (SQuAD's). */
  bestMetric?: QaBestMetric;
}

export interface QaTrainResult {
  outDir: string;
  history: EpochMetrics[];
  evaluations: Evaluation[];
  best: Evaluation;
  /** Validation metrics of the kept weights (SQuAD's, as fractions; each question's answer). */
  metrics: AnswerMetrics | undefined;
  trainQuestions: number;
  trainWindows: number;
  validationQuestions: number;
  notes: string[];
  stoppedEarly: boolean;
  skippedBatches: SkippedBatch[];
}

/** trainQuestionAnswering()'s defaults where they are not train()'s: run_qa.py's and the Trainer's. */
export const QA_TRAIN_DEFAULTS = {
  technique: 'full' as const,
  epochs: 3,
  batchSize: 8,
  learningRate: 5e-5,
  schedule: 'linear' as const,
  validationSplit: 0.1,
  maxLength: 384,
  docStride: 128,
  padToMaxLength: true,
};

/** Tokens per window where none is given: run_qa.py's max_seq_length, or the model's own limit where that is shorter. */
export function defaultWindowLength(modelMaxLength: number): number {
  return Math.min(QA_TRAIN_DEFAULTS.maxLength, modelMaxLength);
}

export type QaBestMetric = 'loss' | 'f1' | 'exactMatch';
const QA_BEST_METRICS: readonly QaBestMetric[] = ['loss', 'f1', 'exactMatch'];
const QA_TECHNIQUES: ReadonlyArray<QaTrainOptions['technique']> = ['full', 'lora', 'frozen'];

/** trainQuestionAnswering()'s option names, equal to QaTrainOptions' keys. */
const QA_OPTION_NAMES = [
  ...TASK_LOOP_OPTION_NAMES,
  ...Object.keys({
    model: 1,
    data: 1,
    validationData: 1,
    validationSplit: 1,
    outDir: 1,
    technique: 1,
    lora: 1,
    tokenizer: 1,
    maxLength: 1,
    docStride: 1,
    padToMaxLength: 1,
    versionTwo: 1,
    nBest: 1,
    maxAnswerLength: 1,
    nullScoreDiffThreshold: 1,
    bestMetric: 1,
  } satisfies Record<Exclude<keyof QaTrainOptions, keyof TaskLoopOptions>, 1>),
];

/** What trainQuestionAnswering() read of its options beyond train()'s. */
interface QaRun {
  spec: string;
  data: string | readonly string[];
  validationData: string | readonly string[] | undefined;
  maxLength: number | undefined;
  docStride: number;
  padToMaxLength: boolean;
  span: SpanOptions;
  loraTargetsGiven: boolean;
  outDir: string;
}

const WHO = 'trainQuestionAnswering()';

function positiveInteger(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1)
    throw new InputError(`${WHO}: ${name} must be a positive integer; got ${JSON.stringify(value)}`);
  return value;
}

export async function trainQuestionAnswering(options: QaTrainOptions): Promise<QaTrainResult> {
  // 1. Options.
  if (!options || typeof options !== 'object') throw new InputError(`${WHO} takes an options object`);
  checkOptionNames(WHO, options, QA_OPTION_NAMES);
  const {
    model: spec,
    data,
    validationData,
    technique,
    bestMetric,
    docStride,
    padToMaxLength,
    versionTwo,
    nBest,
    maxAnswerLength,
    nullScoreDiffThreshold,
    ...rest
  } = options;
  if (typeof spec !== 'string' || spec === '')
    throw new InputError(`${WHO}: \`model\` (a Hugging Face model folder or Hub id) is required`);
  if (technique !== undefined && !QA_TECHNIQUES.includes(technique)) {
    throw new InputError(`${WHO}: technique must be 'full', 'lora' or 'frozen'; got ${JSON.stringify(technique)}`);
  }
  if (bestMetric !== undefined && !QA_BEST_METRICS.includes(bestMetric)) {
    throw new InputError(`${WHO}: bestMetric must be one of ${QA_BEST_METRICS.join(', ')}; got ${JSON.stringify(bestMetric)}`);
  }
  if (padToMaxLength !== undefined && typeof padToMaxLength !== 'boolean') {
    throw new InputError(`${WHO}: padToMaxLength is true or false; got ${JSON.stringify(padToMaxLength)}`);
  }
  if (versionTwo !== undefined && typeof versionTwo !== 'boolean')
    throw new InputError(`${WHO}: versionTwo is true or false; got ${JSON.stringify(versionTwo)}`);
  if (nullScoreDiffThreshold !== undefined && !Number.isFinite(nullScoreDiffThreshold)) {
    throw new InputError(`${WHO}: nullScoreDiffThreshold must be a finite number; got ${JSON.stringify(nullScoreDiffThreshold)}`);
  }
  if (docStride !== undefined && (!Number.isInteger(docStride) || docStride < 0)) {
    throw new InputError(`${WHO}: docStride must be an integer >= 0; got ${JSON.stringify(docStride)}`);
  }
  const { maxLength, ...trainRest } = rest;
  const opts = resolveTrainOptions({
    ...QA_TRAIN_DEFAULTS,
    ...Object.fromEntries(Object.entries(trainRest).filter(([, v]) => v !== undefined)),
    maxLength: undefined,
    technique: technique ?? QA_TRAIN_DEFAULTS.technique,
    encoder: spec,
    data: 'questions',
  });
  if (bestMetric !== undefined) opts.bestMetric = bestMetric;
  const outDir = opts.outDir;
  if (!outDir) throw new InputError(`${WHO}: \`outDir\` is required (the trained model is a folder)`);
  const run: QaRun = {
    spec,
    data,
    validationData,
    maxLength,
    docStride: docStride ?? QA_TRAIN_DEFAULTS.docStride,
    padToMaxLength: padToMaxLength ?? QA_TRAIN_DEFAULTS.padToMaxLength,
    span: {
      nBest: positiveInteger('nBest', nBest, SPAN_DEFAULTS.nBest),
      maxAnswerLength: positiveInteger('maxAnswerLength', maxAnswerLength, SPAN_DEFAULTS.maxAnswerLength),
      versionTwo: versionTwo ?? SPAN_DEFAULTS.versionTwo,
      nullScoreDiffThreshold: nullScoreDiffThreshold ?? SPAN_DEFAULTS.nullScoreDiffThreshold,
    },
    loraTargetsGiven: options.lora?.targets !== undefined,
    outDir,
  };
  const binding = loadBinding();
  return runAsRank(binding, opts, (dist) => {
    if (dist && !dist.isMain) {
      opts.onProgress = undefined;
      opts.outDir = undefined;
    }
    return trainRank(binding, opts, run, dist);
  });
}

function trainRank(binding: NativeBinding, opts: ResolvedTrainOptions, run: QaRun, dist: Distributed | null): Promise<QaTrainResult> {
  return runTaskRank(binding, opts, dist, {
    outDir: run.outDir,
    kind: 'question-answerer',
    aborted: 'question-answering training aborted',
    prepare: async (disposables) => {
      // 1–2. The questions, the model, the windows, where the run starts.
      const prepared = await prepareRank(binding, opts, run, dist, disposables);
      const { loaded, train, validation, maxLength } = prepared;
      // 3. The model and what trains.
      const { model, trainee, headNote } = await answerTrainee(binding, opts, prepared, dist, disposables);
      const { family, dir: sourceDir } = folderOf(loaded);
      return {
        ...prepared,
        headNote,
        modelFolder: modelFolderRead(loaded),
        trainee,
        trainRows: train.windows.encoded.count,
        task: questionAnsweringTask(binding, model, trainee.optimizer, train, {
          precision: opts.precision,
          maxGradNorm: opts.maxGradNorm,
          skipNonFinite: opts.onNonFinite === 'skip',
          averageGradients: dist !== null,
        }),
        validate: () => validateAnswers(binding, model, validation, { ...opts, span: run.span }),
        checkpoint: (evaluation: Evaluation) =>
          writeQuestionAnswererFolder(binding, run.outDir, {
            model,
            lora: trainee.setup.adapters && {
              adapters: trainee.setup.adapters as NativeLoraAdapters,
              settings: opts.lora,
              ...peftBase(loaded),
            },
            family,
            sourceDir,
            tokenizerJson: loaded.tokenizer.json,
            settings: { maxLength, docStride: run.docStride, padToMaxLength: run.padToMaxLength, versionTwo: run.span.versionTwo },
            evaluation,
            history: prepared.position.history,
          }),
      };
    },
    result: ({ position, train, validation, loaded, headNote }, keeper) => ({
      outDir: run.outDir,
      ...keptRun(position, keeper),
      trainQuestions: train.examples.length,
      trainWindows: train.windows.encoded.count,
      validationQuestions: validation.examples.length,
      notes: [...loaded.notes, ...[headNote, zeroLearningRateNote(opts)].filter((n) => n !== null)],
    }),
  });
}

/**
 * Stages 1–2 of a rank: what may fail on one rank alone (loadAndRead), then (data-parallel) the
 * start agreed with the other ranks; the questions' windows, the run's fingerprint and the
 * position it starts from.
 */
async function prepareRank(
  binding: NativeBinding,
  opts: ResolvedTrainOptions,
  run: QaRun,
  dist: Distributed | null,
  disposables: Array<{ dispose(): void }>,
) {
  const { value: start, identity } = await startAsRank(
    dist,
    () => loadAndRead(binding, opts, run, disposables),
    (read) => runIdentity(opts, run, read),
  );
  const { loaded, split, maxLength } = start;
  if (!run.loraTargetsGiven && loaded.loraTargets) opts.lora.targets = loaded.loraTargets;
  // Token types where the encoder takes them (BERT's), as the fast tokenizer gives them.
  const windows = { maxLength, docStride: run.docStride, tokenTypes: takesTokenTypes(loaded.module.forwardArity) };
  const train = answerSet(loaded.tokenizer, split.train, windows, run.padToMaxLength);
  const validation = answerSet(loaded.tokenizer, split.validation, windows, run.padToMaxLength);
  const fingerprint = {
    task: 'question-answering',
    trainExamples: train.windows.encoded.count,
    validationExamples: validation.examples.length,
    maxLength,
    docStride: run.docStride,
    padToMaxLength: run.padToMaxLength,
    batchSize: opts.batchSize,
    epochs: opts.epochs,
    seed: opts.seed,
    gradientAccumulationSteps: opts.gradientAccumulationSteps,
    ...(dist && dist.worldSize > 1 ? { worldSize: dist.worldSize } : {}),
    options: sharedSettings(opts),
    contents: runContents((await identity()).digests),
  };
  const position = start.saved ? resumePosition(start.saved, fingerprint, opts.resumeFrom!, train.windows.encoded.count) : startPosition();
  return { ...start, train, validation, fingerprint, position };
}

/**
 * What may fail on one rank alone: an output folder the run would damage refused first; the
 * questions read and split; the model (its parts added to `disposables`) and the window length;
 * the training state to resume.
 */
async function loadAndRead(binding: NativeBinding, opts: ResolvedTrainOptions, run: QaRun, disposables: Array<{ dispose(): void }>) {
  await checkOutputFolderFirst(opts.outDir, 'question-answerer', run.spec, opts.resumeFrom);
  const split = await readSplit(binding, opts, run);
  const loaded = await loadTaskModel(opts, run.spec, run.maxLength, disposables, { caller: WHO, task: 'question answering' });
  const maxLength = run.maxLength ?? defaultWindowLength(loaded.maxLength);
  const saved = opts.resumeFrom ? await readTrainingState(opts.resumeFrom) : null;
  return { split, loaded, maxLength, saved };
}

type RankStart = Awaited<ReturnType<typeof loadAndRead>>;

/** What data-parallel ranks must share, and what a resumed run's contents are (as trainTokenClassifier()'s). */
async function runIdentity(opts: ResolvedTrainOptions, run: QaRun, start: RankStart): Promise<RunIdentity> {
  const { split, loaded, saved, maxLength } = start;
  const questions = (set: readonly QuestionExample[]) => contentDigest(set.map((q) => JSON.stringify(q)));
  const digests: Record<string, string> = {
    'training data': questions(split.train),
    'validation data': questions(split.validation),
    tokenizer: contentDigest([loaded.tokenizer.json]),
    "model's weights": await loaded.weightsKey(),
  };
  if (saved) digests['training state'] = contentDigest([JSON.stringify({ ...saved, directory: undefined })]);
  return {
    settings: { ...sharedSettings(opts), maxLength, docStride: run.docStride, padToMaxLength: run.padToMaxLength, span: run.span },
    digests,
  };
}

/**
 * Stage 3: the question-answering model (transformers' head of the family; added to
 * `disposables`), its head started from the checkpoint's where the model is a question-answering
 * model already, what trains (the pooler, which the loss does not reach, frozen), and its AdamW,
 * each rank from rank 0's weights.
 */
async function answerTrainee(
  binding: NativeBinding,
  opts: ResolvedTrainOptions,
  start: Pick<RankStart, 'loaded' | 'saved'>,
  dist: Distributed | null,
  disposables: Array<{ dispose(): void }>,
) {
  const { loaded } = start;
  const { family, config } = folderOf(loaded);
  const built = binding.buildClassifier(loaded.module, {
    numClasses: 2,
    headHidden: 1,
    pooling: 'cls',
    seed: opts.seed,
    head: 'question-answering',
    family,
    // DistilBertForQuestionAnswering's qa_dropout (its default 0.1); BERT's and RoBERTa's heads have none.
    dropout: family === 'distilbert' ? (configNumber(config.qa_dropout) ?? 0.1) : 0,
    initializerRange: configNumber(config.initializer_range) ?? 0.02,
  });
  const model = built.module;
  disposables.push(model);
  const headNote = startHeadFromCheckpoint(model, loaded);
  const setup = setUpTrainable(binding, model, opts, built.unusedParameters);
  const trainee = await startTrainee(binding, model, setup, { dist, saved: start.saved, disposables });
  model.train(true);
  return { model, trainee, headNote };
}

/** A question-answering checkpoint's head starts the run's, as from_pretrained keeps it; the note says so; null otherwise. The checkpoint's head tensors are freed. */
function startHeadFromCheckpoint(model: NativeScriptModule, loaded: LoadedEncoder): string | null {
  const weights = new Map(loaded.classificationHead);
  loaded.classificationHead = [];
  try {
    const { config, configFile } = folderOf(loaded);
    if (!isQuestionAnswererConfig(config) || weights.size === 0) return null;
    copyAnswerHead(model, weights, loaded.description, configFile);
    return "the head starts from the checkpoint's question-answering head (qa_outputs)";
  } finally {
    for (const t of weights.values()) t.dispose();
  }
}

/** Files as a list. */
function fileList(files: string | readonly string[] | undefined, option: string): readonly string[] {
  const list = filePathList(files);
  if (!list) {
    throw new InputError(
      `${WHO}: \`${option}\` is a file path or a list of them (SQuAD JSON, or squad records as JSON Lines); got ${JSON.stringify(files)?.slice(0, 80) ?? String(files)}`,
    );
  }
  return list;
}

/** The training and validation questions: `validationData`'s, or a `validationSplit` share of `data` drawn by the seed (torch.randperm, the first ones held out). */
async function readSplit(
  binding: NativeBinding,
  opts: ResolvedTrainOptions,
  run: QaRun,
): Promise<{ train: QuestionExample[]; validation: QuestionExample[] }> {
  const all = await readQuestionFiles(fileList(run.data, 'data'));
  if (run.validationData !== undefined)
    return { train: all, validation: await readQuestionFiles(fileList(run.validationData, 'validationData')) };
  const split = heldOut(binding, all.length, opts.validationSplit, opts.seed, { caller: WHO, noun: 'question' });
  const pick = (indices: Int32Array) => Array.from(indices, (i) => all[i]!);
  return { train: pick(split.train), validation: pick(split.validation) };
}
