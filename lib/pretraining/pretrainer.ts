import type { NativeBinding, NativeScriptModule, Precision } from '../addon/binding.js';
import { AbortError, InputError } from '../addon/errors.js';
import { loadBinding } from '../addon/loader.js';
import { resolveDevice } from '../classification/classifier.js';
import { consecutiveBatches } from '../data/batching.js';
import { filePathList } from '../data/data.js';
import { groupTexts, hasColumns, lineByLine, maskedBatch, readPretrainingTexts } from '../data/mlm-data.js';
import { type MaskingOptions, type MaskingVocabulary, wordContinuation } from '../data/mlm-masking.js';
import type { EncodedTexts, TextTokenizer } from '../data/tokenizer.js';
import { type LoadedEncoder, loadEncoderSource, modelFolderRead } from '../models/encoder-source.js';
import {
  contentDigest,
  type Distributed,
  type RunIdentity,
  runAsRank,
  sharedSettings,
  startAsRank,
  type ValidationShard,
  validationShard,
} from '../training/distributed.js';
import {
  checkOptionNames,
  DEFAULTS,
  downloadEvents,
  type EpochMetrics,
  type Evaluation,
  type ResolvedTrainOptions,
  resolveTrainOptions,
  TASK_LOOP_OPTION_NAMES,
  type TaskLoopOptions,
  zeroLearningRateNote,
} from '../training/options.js';
import { checkPrecision } from '../training/precision.js';
import { startPosition, type Validation } from '../training/run-keeper.js';
import { keptRun, runTaskRank } from '../training/task-run.js';
import { setUpTrainable } from '../training/trainable.js';
import { nativeStepOptions, type StepSettings, startTrainee, type Task } from '../training/training-loop.js';
import { checkOutputFolderFirst, readTrainingState, resumePosition, runContents, type SkippedBatch } from '../training/training-state.js';
import { writeMaskedLmFolder } from './mlm-output.js';

export interface PretrainOptions extends TaskLoopOptions {
  /** A Hugging Face model folder or Hub id (with or without an MLM head). */
  model: string;
  /** Text files (one document per non-blank line) and/or CSV files (their `textColumn`). */
  data: string | readonly string[];
  /** The CSV files' text column. Default 'text'. */
  textColumn?: string;
  /** One text per row, truncated to maxLength (run_mlm.py --line_by_line); default: texts concatenated and cut into blocks of maxLength. */
  lineByLine?: boolean;
  /** Mask all pieces of a word together (DataCollatorForWholeWordMask). Default false. */
  wholeWordMask?: boolean;
  /** Share of the tokens chosen for prediction. Default 0.15. */
  mlmProbability?: number;
  /** Where the kept model (a Hugging Face folder + encoder.pt), history and training state go. */
  outDir: string;
  /** A tokenizer.json; default the model folder's. */
  tokenizer?: string;
  /** Share of the texts held out, the first ones as run_mlm.py's train[:5%]. Default 0.05 (at least one text). */
  validationSplit?: number;
  /** Default the model's (tokenizer_config.json's model_max_length within its positions). */
  maxLength?: number;
}

/** A held-out pass: mean cross-entropy over the masked tokens, its exponential, the masked tokens predicted right. */
export interface MlmMetrics {
  loss: number;
  perplexity: number;
  accuracy: number;
  maskedTokens: number;
}

export interface PretrainResult {
  outDir: string;
  history: EpochMetrics[];
  evaluations: Evaluation[];
  /** The kept evaluation (lowest held-out loss) with its perplexity. */
  best: Evaluation & { perplexity: number };
  /** Held-out metrics of the kept weights, when this process measured them. */
  metrics: MlmMetrics | undefined;
  trainRows: number;
  validationRows: number;
  notes: string[];
  stoppedEarly: boolean;
  skippedBatches: SkippedBatch[];
}

/** pretrain()'s defaults where they are not train()'s (run_mlm.py's and the Trainer's). */
export const PRETRAIN_DEFAULTS = {
  epochs: 3,
  batchSize: 8,
  learningRate: 5e-5,
  schedule: 'linear' as const,
  validationSplit: 0.05,
  mlmProbability: 0.15,
};

/** Validation draws its masks with this epoch (training's are 1, 2, ...): the same masks at every evaluation. */
const VALIDATION_EPOCH = 0;

/** pretrain()'s option names, equal to PretrainOptions' keys (for plain JavaScript's misspelt keys: options.ts checkOptionNames). */
const PRETRAIN_OPTION_NAMES = [
  ...TASK_LOOP_OPTION_NAMES,
  ...Object.keys({
    model: 1,
    data: 1,
    textColumn: 1,
    lineByLine: 1,
    wholeWordMask: 1,
    mlmProbability: 1,
    outDir: 1,
    tokenizer: 1,
    validationSplit: 1,
    maxLength: 1,
  } satisfies Record<Exclude<keyof PretrainOptions, keyof TaskLoopOptions>, 1>),
];

export async function pretrain(options: PretrainOptions): Promise<PretrainResult> {
  // 1. Options and model.
  if (!options || typeof options !== 'object') throw new InputError('pretrain() takes an options object');
  checkOptionNames('pretrain()', options, PRETRAIN_OPTION_NAMES);
  const { model: spec, data, textColumn, lineByLine: byLine = false, wholeWordMask = false, ...rest } = options;
  const mlmProbability = options.mlmProbability ?? PRETRAIN_DEFAULTS.mlmProbability;
  if (!(mlmProbability > 0 && mlmProbability < 1)) throw new InputError(`mlmProbability must be in (0, 1); got ${mlmProbability}`);
  if (typeof spec !== 'string' || spec === '')
    throw new InputError('pretrain(): `model` (a Hugging Face model folder or Hub id) is required');
  const files = dataFiles(data);
  if (textColumn !== undefined && !files.some(hasColumns)) {
    throw new InputError(
      `pretrain(): textColumn '${textColumn}' names a CSV column (or a JSON field), and no data file is a .csv or JSON file (the others are read a document per line): leave textColumn out`,
    );
  }
  const opts = resolveTrainOptions({
    ...PRETRAIN_DEFAULTS,
    ...Object.fromEntries(Object.entries(rest).filter(([k, v]) => v !== undefined && k !== 'mlmProbability')),
    encoder: spec,
    data: 'pretraining texts',
    technique: 'full',
  });
  const outDir = opts.outDir;
  if (!outDir) throw new InputError('pretrain(): `outDir` is required (the pretrained model is a folder)');
  const binding = loadBinding();
  opts.signal?.throwIfAborted();
  const run = { spec, data: files, textColumn, byLine, wholeWordMask, mlmProbability, outDir };
  // Data-parallel (distributed.ts): joined first, threads per rank, left at the end, as train().
  return runAsRank(binding, opts, (dist) => {
    if (dist && !dist.isMain) {
      // Rank 0 alone reports progress and writes (see the keeper's hooks below): another rank's
      // outDir is not checked (it may name a folder of its own that nothing writes).
      opts.onProgress = undefined;
      opts.outDir = undefined;
    }
    return pretrainRank(binding, opts, options, run, dist);
  });
}

/**
 * `data` as its list of files, checked before the model loads: train()'s other shapes
 * (`{ csv, textColumn }`, `{ texts, labels }`) are not pretrain()'s, and failed as 'data is not iterable'.
 */
function dataFiles(data: unknown): readonly string[] {
  const files = filePathList(data);
  if (!files) {
    throw new InputError(
      'pretrain(): `data` is a file path or a list of them: text files (one document per line) or CSV files (their textColumn); ' +
        `texts in memory are not taken: write them to a file, one per line (got ${JSON.stringify(data)?.slice(0, 80) ?? String(data)})`,
    );
  }
  return files;
}

/** What pretrain() read of its options beyond train()'s. */
interface PretrainRun {
  spec: string;
  data: readonly string[];
  textColumn: string | undefined;
  byLine: boolean;
  wholeWordMask: boolean;
  mlmProbability: number;
  outDir: string;
}

/** The texts as pretraining rows: blocks of `maxLength` tokens, or one text per row (`byLine`); none is an error. */
async function encodeTexts(
  tokenizer: TextTokenizer,
  texts: string[],
  maxLength: number,
  byLine: boolean,
  name: 'training' | 'validation',
): Promise<EncodedTexts> {
  const encoded = byLine ? await lineByLine(tokenizer, texts, maxLength) : await groupTexts(tokenizer, texts, maxLength);
  if (encoded.count === 0) {
    throw new InputError(
      `pretrain(): the ${name} texts hold fewer than one block of ${maxLength} tokens; use lineByLine, a smaller maxLength or more text`,
    );
  }
  return encoded;
}

/** What the output folder is written from, besides the model and the kept evaluation (mlm-output.ts). */
function folderOf(loaded: LoadedEncoder, built: { tiedParameters: Array<[string, string]> }) {
  return {
    encoder: loaded.module,
    aliases: built.tiedParameters.map(([alias]) => alias),
    family: loaded.source.kind === 'folder' ? loaded.source.family : ('bert' as const),
    sourceDir: loaded.source.kind === 'folder' ? loaded.source.dir : null,
    tokenizerJson: loaded.tokenizer.json,
    maxLength: loaded.maxLength,
  };
}

/** The settings a resumed pretraining run must share with the run that saved the state (as train()'s runFingerprint). */
function pretrainFingerprint(
  opts: ResolvedTrainOptions,
  { byLine, wholeWordMask, mlmProbability }: Pick<PretrainRun, 'byLine' | 'wholeWordMask' | 'mlmProbability'>,
  trainExamples: number,
  validationExamples: number,
  maxLength: number,
  worldSize: number,
) {
  return {
    task: 'masked-lm',
    trainExamples,
    validationExamples,
    maxLength,
    batchSize: opts.batchSize,
    epochs: opts.epochs,
    seed: opts.seed,
    gradientAccumulationSteps: opts.gradientAccumulationSteps,
    lineByLine: byLine,
    wholeWordMask,
    mlmProbability,
    // Data-parallel runs only, so that single-process states still match (as train()'s). With
    // batchSize and the accumulation, the batch layout, which may change on resume if the
    // global batch does not (training-state.ts resumePosition).
    ...(worldSize > 1 ? { worldSize } : {}),
    // Every option that makes the run what it is, as train()'s.
    options: sharedSettings(opts),
  };
}

function pretrainRank(
  binding: NativeBinding,
  opts: ResolvedTrainOptions,
  options: PretrainOptions,
  run: PretrainRun,
  dist: Distributed | null,
): Promise<PretrainResult> {
  const { signal } = opts;
  return runTaskRank(binding, opts, dist, {
    outDir: run.outDir,
    kind: 'mlm',
    aborted: 'pretraining aborted',
    // Pretraining keeps the weights of the lowest validation loss (perplexity).
    bestMetric: 'loss',
    prepare: async (disposables) => {
      // 1–2. The model and the texts as rows; where the run starts.
      const prepared = await prepareRank(opts, options, run, dist, disposables);
      const { loaded, vocab, train, validation } = prepared;
      const masking: MaskingOptions = { mlmProbability: run.mlmProbability, wholeWordMask: run.wholeWordMask, seed: opts.seed };
      // 3. The MLM model and what trains.
      const { built, trainee } = await mlmTrainee(binding, opts, prepared, dist, disposables);
      const model = built.module;
      // Data-parallel: each rank measures its share of the held-out rows (their masks are fixed
      // per example), the sums reduced.
      const shard = validationShard(dist, validation.count);
      return {
        ...prepared,
        modelFolder: modelFolderRead(loaded),
        trainee,
        trainRows: train.count,
        task: maskedLmTask(binding, model, trainee.optimizer, train, vocab, masking, () => prepared.position.epoch, {
          precision: opts.precision,
          maxGradNorm: opts.maxGradNorm,
          skipNonFinite: opts.onNonFinite === 'skip',
          averageGradients: dist !== null,
        }),
        validate: () =>
          validateMaskedLm(binding, model, validation, vocab, masking, {
            batchSize: opts.batchSize,
            precision: opts.precision,
            signal,
            shard,
          }),
        checkpoint: (evaluation: Evaluation) =>
          writeMaskedLmFolder(binding, run.outDir, { ...folderOf(loaded, built), model, evaluation, history: prepared.position.history }),
      };
    },
    result: ({ position, train, validation, loaded }, keeper) => {
      const kept = keptRun(position, keeper);
      return {
        outDir: run.outDir,
        ...kept,
        best: { ...kept.best, perplexity: Math.exp(kept.best.validationLoss) },
        trainRows: train.count,
        validationRows: validation.count,
        notes: [...loaded.notes, ...[zeroLearningRateNote(opts)].filter((n) => n !== null)],
      };
    },
  });
}

/**
 * Stages 1–2 of a rank: its model and texts (loadAndRead), then (data-parallel) the start agreed
 * with the other ranks before the texts are tokenized: every rank runs the same job, or none
 * trains, and a rank that cannot start stops every rank at once (distributed.ts startAsRank).
 * Then the texts as rows, the run's fingerprint, and the position it starts from (a resumed
 * run's, its batch layout translated to this run's).
 */
async function prepareRank(
  opts: ResolvedTrainOptions,
  options: PretrainOptions,
  run: PretrainRun,
  dist: Distributed | null,
  disposables: Array<{ dispose(): void }>,
) {
  const { value: start, identity } = await startAsRank(
    dist,
    () => loadAndRead(opts, options, run, disposables),
    (read) => runIdentity(opts, run, read),
  );
  const { tokenizer, maxLength } = start.loaded;
  const train = await encodeTexts(tokenizer, start.texts.slice(start.held), maxLength, run.byLine, 'training');
  const validation = await encodeTexts(tokenizer, start.texts.slice(0, start.held), maxLength, run.byLine, 'validation');
  const fingerprint = {
    ...pretrainFingerprint(opts, run, train.count, validation.count, maxLength, dist?.worldSize ?? 1),
    contents: runContents((await identity()).digests),
  };
  const position = start.saved ? resumePosition(start.saved, fingerprint, opts.resumeFrom!, train.count) : startPosition();
  return { ...start, train, validation, fingerprint, position };
}

/**
 * Stage 3: the MLM model (`buildMlmModel`: the head runs on the masked rows only; added to
 * `disposables`) and what trains: everything but the pooler (BertForMaskedLM has none), the tied
 * decoder weight once. Dropout draws from torch's generator: seeded (as buildClassifier seeds it
 * for train()), then a resumed run's restored (startTrainee).
 */
async function mlmTrainee(
  binding: NativeBinding,
  opts: ResolvedTrainOptions,
  start: Pick<RankStart, 'loaded' | 'mlmHead' | 'saved'>,
  dist: Distributed | null,
  disposables: Array<{ dispose(): void }>,
) {
  const built = binding.buildMlmModel(start.loaded.module, start.mlmHead);
  disposables.push(built.module);
  const pooler = built.module
    .namedParameters()
    .map(([n]) => n)
    .filter((n) => n.startsWith('encoder.pooler.'));
  const tied = built.tiedParameters.map(([alias]) => alias);
  const setup = setUpTrainable(binding, built.module, opts, pooler, tied);
  binding.manualSeed(opts.seed);
  const trainee = await startTrainee(binding, built.module, setup, { dist, saved: start.saved, disposables });
  return { built, trainee };
}

type RankStart = Awaited<ReturnType<typeof loadAndRead>>;

/**
 * Stages 1–2 of a rank, what may fail on one rank alone: an output folder the
 * run would damage refused (checkOutputFolderFirst, before minutes of loading); the model and its MLM head (disposed with
 * `disposables`, the caller's), its masking vocabulary, the texts read and the first
 * validationSplit of them held out (run_mlm.py's train[:5%]), the training state to resume.
 */
async function loadAndRead(
  opts: ResolvedTrainOptions,
  options: PretrainOptions,
  { spec, data, textColumn }: Pick<PretrainRun, 'spec' | 'data' | 'textColumn'>,
  disposables: Array<{ dispose(): void }>,
) {
  await checkOutputFolderFirst(opts.outDir, 'mlm', spec, opts.resumeFrom);
  const device = resolveDevice(opts.device);
  checkPrecision(opts, device);
  const loaded = await loadEncoderSource(spec, {
    device,
    tokenizer: opts.tokenizer,
    maxLength: options.maxLength,
    fallbackMaxLength: DEFAULTS.maxLength,
    mlmHead: true,
    initialiseMlmHead: { seed: opts.seed },
    refuseTorchScript: (file) =>
      new InputError(`pretrain(): ${file} is a TorchScript file; pretraining needs a Hugging Face model folder or Hub id`),
    signal: opts.signal,
    onDownload: downloadEvents(opts.onProgress),
  });
  disposables.push(loaded.module);
  // A folder's MLM head: its checkpoint's, or initialised (initialiseMlmHead).
  const mlmHead = loaded.mlmHead!;
  disposables.push(mlmHead);
  const words = loaded.tokenizer.maskingVocabulary();
  const vocab: MaskingVocabulary = {
    // null when the tokenizer has no mask token: maskToken() then throws its own message (tokenizer.ts, the one rule).
    maskId: words.maskId ?? loaded.tokenizer.maskToken().id,
    vocabSize: words.vocabSize,
    specialIds: words.specialIds,
    continuesWord: wordContinuation(words.tokens, words.byteLevel),
  };
  const texts = await readPretrainingTexts(data, textColumn);
  const held = Math.max(1, Math.floor(texts.length * opts.validationSplit));
  if (texts.length - held < 1)
    throw new InputError(
      `pretrain(): ${texts.length} text(s) leave none to train on once one is held out for validation (validationSplit ` +
        `${opts.validationSplit}, at least one text): give more texts (a non-blank line of a text file, or a CSV row, each)`,
    );
  const saved = opts.resumeFrom ? await readTrainingState(opts.resumeFrom) : null;
  return { loaded, mlmHead, vocab, texts, held, saved };
}

/** The masked-language task: each row masked by (seed, epoch, row), the head on the masked rows, loss over the masked tokens. */
function maskedLmTask(
  binding: NativeBinding,
  model: NativeScriptModule,
  optimizer: InstanceType<NativeBinding['AdamW']>,
  train: EncodedTexts,
  vocab: MaskingVocabulary,
  masking: MaskingOptions,
  epoch: () => number,
  settings: StepSettings,
): Task<ReturnType<typeof maskedBatch>> {
  return {
    batch: (rows) => maskedBatch(train, rows, epoch(), vocab, masking),
    // The native loss is the mean over the batch's masked tokens: data-parallel ranks weight it by
    // their share of the global batch's masked tokens (training-loop.ts globalBatchShare).
    batchLossNormaliser: (batch) => batch.labels.length,
    // `correct` counts masked tokens: the loop scales the global batch's masked-token accuracy
    // (summed over the ranks) to its rows.
    accuracyNormaliser: (batch) => batch.labels.length,
    step: (batch, step) => binding.trainStep(model, optimizer, batch, nativeStepOptions(settings, step)),
  };
}

/**
 * What data-parallel ranks must share (distributed.ts startAsRank, agreeOnRun), as train()'s: the options but
 * the rank-local ones, pretrain()'s own, and by content what the paths name — the training and the
 * held-out texts as read and split, the tokenizer, the model's weights (with its MLM head: file
 * SHA-256s, or a Hub commit), the training state resumed. The texts as read pin `textColumn`, as a
 * resumed run's contents do (pretrainFingerprint): the column named, left to its default, or
 * ignored (text files) is the same run when the same texts are read.
 */
async function runIdentity(opts: ResolvedTrainOptions, run: PretrainRun, start: RankStart): Promise<RunIdentity> {
  const { loaded, texts, held, saved } = start;
  // The resolved max length (the model's, or the option) replaces the options' unresolved one.
  const settings = {
    ...sharedSettings(opts),
    byLine: run.byLine,
    wholeWordMask: run.wholeWordMask,
    mlmProbability: run.mlmProbability,
    maxLength: loaded.maxLength,
  };
  const digests: Record<string, string> = {
    'training data': contentDigest(texts.slice(held)),
    'validation data': contentDigest(texts.slice(0, held)),
    tokenizer: contentDigest([loaded.tokenizer.json]),
    "model's weights": await loaded.weightsKey(),
  };
  if (saved) digests['training state'] = contentDigest([JSON.stringify({ ...saved, directory: undefined })]);
  return { settings, digests };
}

/**
 * Held-out loss (mean over every masked token), perplexity and masked-token accuracy; the masks are
 * the same at every evaluation. With a shard (data-parallel), the rank's rows only: each row's mask
 * is drawn from its index, whichever rank takes it, so the loss sum, the correct and the masked
 * token counts summed over the ranks are those of the whole split, and every rank computes the
 * metrics of one process (within float rounding).
 */
export async function validateMaskedLm(
  binding: NativeBinding,
  model: NativeScriptModule,
  data: EncodedTexts,
  vocab: MaskingVocabulary,
  masking: MaskingOptions,
  settings: { batchSize: number; precision: Precision; signal?: AbortSignal; shard?: ValidationShard },
): Promise<Validation<MlmMetrics>> {
  const { signal, shard } = settings;
  const rows = shard?.rows ?? Int32Array.from({ length: data.count }, (_, i) => i);
  let lossSum = 0;
  let tokens = 0;
  let correct = 0;
  for (const positions of consecutiveBatches(rows.length, settings.batchSize)) {
    if (signal?.aborted) throw new AbortError('validation was aborted', { cause: signal.reason });
    const batch = maskedBatch(
      data,
      Array.from(positions, (i) => rows[i]!),
      VALIDATION_EPOCH,
      vocab,
      masking,
    );
    if (batch.labels.length === 0) continue;
    const result = await binding.evalStep(model, batch, { precision: settings.precision });
    lossSum += result.loss! * batch.labels.length;
    correct += result.correct!;
    tokens += batch.labels.length;
  }
  // A rank with no held-out row (fewer rows than ranks) adds zeros.
  if (shard) {
    const global = shard.sum(Float64Array.of(lossSum, correct, tokens));
    lossSum = global[0]!;
    correct = global[1]!;
    tokens = global[2]!;
  }
  const loss = tokens > 0 ? lossSum / tokens : Number.NaN;
  const accuracy = tokens > 0 ? correct / tokens : 0;
  // macroF1 means nothing here; the run keeps the lowest loss.
  return { loss, scores: { accuracy, macroF1: Number.NaN }, metrics: { loss, perplexity: Math.exp(loss), accuracy, maskedTokens: tokens } };
}
