import type { NativeBinding, NativeLoraAdapters, NativeScriptModule } from '../addon/binding.js';
import { InputError } from '../addon/errors.js';
import { loadBinding } from '../addon/loader.js';
import { resolveDevice } from '../classification/classifier.js';
import { filePathList } from '../data/data.js';
import { readTaggedFiles, type TaggedReadOptions, type TaggedSentences, tagNames } from '../data/tagged-words.js';
import { type LoadedEncoder, loadEncoderSource, modelFolderRead } from '../models/encoder-source.js';
import { configNumber, headDropout } from '../models/hf-config.js';
import {
  contentDigest,
  type Distributed,
  type RunIdentity,
  runAsRank,
  sharedSettings,
  startAsRank,
  validationShard,
} from '../training/distributed.js';
import {
  checkOptionNames,
  DEFAULTS,
  downloadEvents,
  type EpochMetrics,
  type Evaluation,
  type LoraOptions,
  type ResolvedTrainOptions,
  resolveTrainOptions,
  TASK_LOOP_OPTION_NAMES,
  type TaskLoopOptions,
  zeroLearningRateNote,
} from '../training/options.js';
import { checkPrecision } from '../training/precision.js';
import { startPosition } from '../training/run-keeper.js';
import { heldOut, keptRun, runTaskRank } from '../training/task-run.js';
import { setUpTrainable } from '../training/trainable.js';
import { startTrainee } from '../training/training-loop.js';
import { checkOutputFolderFirst, readTrainingState, resumePosition, runContents, type SkippedBatch } from '../training/training-state.js';
import {
  checkpointHead,
  copyTokenHead,
  folderOf,
  isTokenClassifierConfig,
  peftBase,
  writeTokenClassifierFolder,
} from './token-classifier-folder.js';
import { type TokenMetrics, taggedSet, tokenClassificationTask, validateTokenClassifier } from './token-task.js';

export interface TokenTrainOptions extends TaskLoopOptions, TaggedReadOptions {
  /** A Hugging Face model folder or Hub id (BERT, RoBERTa/XLM-R, DistilBERT). */
  model: string;
  /** Tagged sentences: CoNLL files (a word and its tag per line) and/or JSON files (`tokens` and `ner_tags` lists). */
  data: string | readonly string[];
  /** Validation sentences. Default: a `validationSplit` share of `data`, drawn from the seed. */
  validationData?: string | readonly string[];
  /** Share of `data` held out when there is no validationData. Default 0.1. */
  validationSplit?: number;
  /** Where the kept model (a Hugging Face *ForTokenClassification folder), history and training state go. */
  outDir: string;
  /**
   * 'full' (default, run_ner.py's) trains the encoder and the head; 'lora' low-rank adapters and
   * the head (PEFT's TOKEN_CLS), kept merged into the weights; 'frozen' the head alone.
   */
  technique?: 'full' | 'lora' | 'frozen';
  /** With technique 'lora': train()'s LoRA options; targets default to the family's (query/value, DistilBERT's q_lin/v_lin). */
  lora?: LoraOptions;
  /** A tokenizer.json; default the model folder's. */
  tokenizer?: string;
  /**
   * run_ner.py's `label_all_tokens`: a word's tag on each of its tokens (B-X on the first, I-X on
   * the rest), so that the loss, and validation's accuracy and seqeval scores, are the tokens', as
   * run_ner.py computes them. Default false: the word's first token alone (and the words' scores).
   */
  labelAllTokens?: boolean;
  /** Tokens per sentence, special tokens included; words past it are not predicted. Default the model's (tokenizer_config.json's, within its positions). */
  maxLength?: number;
  /**
   * Which validation score keeps the best weights: 'loss' (default), 'f1' (seqeval's entity F1,
   * micro: run_ner.py's `overall_f1`), 'accuracy' (of the words' tags) or 'macroF1' (the entity
   * types' F1 averaged).
   */
  bestMetric?: TokenBestMetric;
}

export interface TokenTrainResult {
  outDir: string;
  /** The tag names, in class-id order (config.json's id2label). */
  labels: string[];
  history: EpochMetrics[];
  evaluations: Evaluation[];
  /** The kept evaluation. */
  best: Evaluation;
  /** Validation metrics of the kept weights. */
  metrics: TokenMetrics | undefined;
  trainSentences: number;
  validationSentences: number;
  notes: string[];
  stoppedEarly: boolean;
  skippedBatches: SkippedBatch[];
}

/** trainTokenClassifier()'s defaults where they are not train()'s: run_ner.py's and the Trainer's. */
export const TOKEN_TRAIN_DEFAULTS = {
  technique: 'full' as const,
  epochs: 3,
  batchSize: 8,
  learningRate: 5e-5,
  schedule: 'linear' as const,
  validationSplit: 0.1,
};

/** The scores a token classifier's best weights may be kept by. */
export type TokenBestMetric = 'loss' | 'f1' | 'accuracy' | 'macroF1';
const TOKEN_BEST_METRICS: readonly TokenBestMetric[] = ['loss', 'f1', 'accuracy', 'macroF1'];

/** What trains a token classifier (bottleneck adapters are not yet kept in a form transformers loads). */
const TOKEN_TECHNIQUES: ReadonlyArray<TokenTrainOptions['technique']> = ['full', 'lora', 'frozen'];

/** trainTokenClassifier()'s option names, equal to TokenTrainOptions' keys (for plain JavaScript's misspelt keys). */
const TOKEN_OPTION_NAMES = [
  ...TASK_LOOP_OPTION_NAMES,
  ...Object.keys({
    model: 1,
    data: 1,
    validationData: 1,
    validationSplit: 1,
    wordsColumn: 1,
    tagsColumn: 1,
    labels: 1,
    outDir: 1,
    technique: 1,
    lora: 1,
    tokenizer: 1,
    labelAllTokens: 1,
    maxLength: 1,
    bestMetric: 1,
  } satisfies Record<Exclude<keyof TokenTrainOptions, keyof TaskLoopOptions>, 1>),
];

export async function trainTokenClassifier(options: TokenTrainOptions): Promise<TokenTrainResult> {
  // 1. Options.
  if (!options || typeof options !== 'object') throw new InputError('trainTokenClassifier() takes an options object');
  checkOptionNames('trainTokenClassifier()', options, TOKEN_OPTION_NAMES);
  const { model: spec, data, validationData, wordsColumn, tagsColumn, labels, technique, bestMetric, labelAllTokens, ...rest } = options;
  if (typeof spec !== 'string' || spec === '')
    throw new InputError('trainTokenClassifier(): `model` (a Hugging Face model folder or Hub id) is required');
  if (technique !== undefined && !TOKEN_TECHNIQUES.includes(technique)) {
    throw new InputError(`trainTokenClassifier(): technique must be 'full', 'lora' or 'frozen'; got ${JSON.stringify(technique)}`);
  }
  if (labelAllTokens !== undefined && typeof labelAllTokens !== 'boolean') {
    throw new InputError(`trainTokenClassifier(): labelAllTokens is true or false; got ${JSON.stringify(labelAllTokens)}`);
  }
  if (bestMetric !== undefined && !TOKEN_BEST_METRICS.includes(bestMetric)) {
    throw new InputError(
      `trainTokenClassifier(): bestMetric must be one of ${TOKEN_BEST_METRICS.join(', ')}; got ${JSON.stringify(bestMetric)}`,
    );
  }
  const opts = resolveTrainOptions({
    ...TOKEN_TRAIN_DEFAULTS,
    ...Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)),
    technique: technique ?? TOKEN_TRAIN_DEFAULTS.technique,
    encoder: spec,
    data: 'tagged sentences',
  });
  // train()'s resolution knows its own problem types' metrics; seqeval's F1 is this task's.
  if (bestMetric !== undefined) opts.bestMetric = bestMetric;
  const outDir = opts.outDir;
  if (!outDir) throw new InputError('trainTokenClassifier(): `outDir` is required (the trained model is a folder)');
  const run: TokenRun = {
    spec,
    data,
    validationData,
    read: { wordsColumn, tagsColumn, labels },
    maxLength: options.maxLength,
    labelAllTokens: labelAllTokens ?? false,
    loraTargetsGiven: options.lora?.targets !== undefined,
    outDir,
  };
  const binding = loadBinding();
  // Data-parallel (distributed.ts), as train() and pretrain(): joined first, threads per rank.
  return runAsRank(binding, opts, (dist) => {
    if (dist && !dist.isMain) {
      // Rank 0 alone reports progress and writes.
      opts.onProgress = undefined;
      opts.outDir = undefined;
    }
    return trainRank(binding, opts, run, dist);
  });
}

/** What trainTokenClassifier() read of its options beyond train()'s. */
interface TokenRun {
  spec: string;
  data: string | readonly string[];
  validationData: string | readonly string[] | undefined;
  read: TaggedReadOptions;
  maxLength: number | undefined;
  labelAllTokens: boolean;
  loraTargetsGiven: boolean;
  outDir: string;
}

function trainRank(binding: NativeBinding, opts: ResolvedTrainOptions, run: TokenRun, dist: Distributed | null): Promise<TokenTrainResult> {
  return runTaskRank(binding, opts, dist, {
    outDir: run.outDir,
    kind: 'token-classifier',
    aborted: 'token classification training aborted',
    prepare: async (disposables) => {
      // 1–2. The sentences, the model, where the run starts.
      const prepared = await prepareRank(binding, opts, run, dist, disposables);
      const { loaded, names, train, validation } = prepared;
      // 3. The token classifier and what trains.
      const { model, trainee, headNote } = await tokenTrainee(binding, opts, prepared, dist, disposables);
      const { family, dir: sourceDir } = folderOf(loaded);
      // Data-parallel: each rank validates its share of the sentences, the sums reduced.
      const shard = validationShard(dist, validation.rows.encoded.count);
      return {
        ...prepared,
        headNote,
        modelFolder: modelFolderRead(loaded),
        trainee,
        trainRows: train.rows.encoded.count,
        task: tokenClassificationTask(binding, model, trainee.optimizer, train, {
          precision: opts.precision,
          maxGradNorm: opts.maxGradNorm,
          skipNonFinite: opts.onNonFinite === 'skip',
          averageGradients: dist !== null,
        }),
        validate: () => validateTokenClassifier(binding, model, validation, names, { ...opts, shard }),
        checkpoint: (evaluation: Evaluation) =>
          writeTokenClassifierFolder(binding, run.outDir, {
            model,
            lora: trainee.setup.adapters && {
              adapters: trainee.setup.adapters as NativeLoraAdapters, // 'lora' is the one adapter technique taken here
              settings: opts.lora,
              ...peftBase(loaded),
            },
            family,
            sourceDir,
            tokenizerJson: loaded.tokenizer.json,
            maxLength: loaded.maxLength,
            labelAllTokens: run.labelAllTokens,
            labels: names,
            evaluation,
            history: prepared.position.history,
          }),
      };
    },
    result: ({ position, names, train, validation, loaded, headNote }, keeper) => ({
      outDir: run.outDir,
      labels: names,
      ...keptRun(position, keeper),
      trainSentences: train.rows.encoded.count,
      validationSentences: validation.rows.encoded.count,
      notes: [...loaded.notes, ...[headNote, zeroLearningRateNote(opts)].filter((n) => n !== null)],
    }),
  });
}

/**
 * Stages 1–2 of a rank: what may fail on one rank alone (loadAndRead), then (data-parallel) the
 * start agreed with the other ranks: every rank runs the same job, or none trains. Then the
 * sentences as token rows, the run's fingerprint and the position it starts from.
 */
async function prepareRank(
  binding: NativeBinding,
  opts: ResolvedTrainOptions,
  run: TokenRun,
  dist: Distributed | null,
  disposables: Array<{ dispose(): void }>,
) {
  const { value: start, identity } = await startAsRank(
    dist,
    () => loadAndRead(binding, opts, run, disposables),
    (read) => runIdentity(opts, run, read),
  );
  const { loaded, names, split } = start;
  if (!run.loraTargetsGiven && loaded.loraTargets) opts.lora.targets = loaded.loraTargets;
  const train = taggedSet(loaded.tokenizer, loaded.maxLength, split.train, names, run.labelAllTokens);
  const validation = taggedSet(loaded.tokenizer, loaded.maxLength, split.validation, names, run.labelAllTokens);
  const fingerprint = {
    task: 'token-classification',
    trainExamples: train.rows.encoded.count,
    validationExamples: validation.rows.encoded.count,
    maxLength: loaded.maxLength,
    labels: names,
    // Only when set, so that the states of runs before the option still match.
    ...(run.labelAllTokens ? { labelAllTokens: true } : {}),
    batchSize: opts.batchSize,
    epochs: opts.epochs,
    seed: opts.seed,
    gradientAccumulationSteps: opts.gradientAccumulationSteps,
    // Data-parallel runs only, so that single-process states still match (as train()'s).
    ...(dist && dist.worldSize > 1 ? { worldSize: dist.worldSize } : {}),
    options: sharedSettings(opts),
    contents: runContents((await identity()).digests),
  };
  const position = start.saved ? resumePosition(start.saved, fingerprint, opts.resumeFrom!, train.rows.encoded.count) : startPosition();
  return { ...start, train, validation, fingerprint, position };
}

/**
 * Stages 1–2 of a rank, what may fail on one rank alone: an output folder the run would damage
 * refused first; the sentences read and split, their tags; the model (its parts added to
 * `disposables`); the training state to resume.
 */
async function loadAndRead(binding: NativeBinding, opts: ResolvedTrainOptions, run: TokenRun, disposables: Array<{ dispose(): void }>) {
  await checkOutputFolderFirst(opts.outDir, 'token-classifier', run.spec, opts.resumeFrom);
  const split = await readSplit(binding, opts, run.data, run.validationData, run.read);
  const names = tagNames({ words: [], tags: [...split.train.tags, ...split.validation.tags], origins: [] }, run.read.labels);
  const loaded = await loadTaskModel(opts, run.spec, run.maxLength, disposables, {
    caller: 'trainTokenClassifier()',
    task: 'token classification',
  });
  const saved = opts.resumeFrom ? await readTrainingState(opts.resumeFrom) : null;
  return { split, names, loaded, saved };
}

type RankStart = Awaited<ReturnType<typeof loadAndRead>>;

/**
 * What data-parallel ranks must share, and what a resumed run's contents are: the options but the
 * rank-local ones, the tags, and by content the sentences as read and split, the tokenizer, the
 * model's weights and the training state resumed.
 */
async function runIdentity(opts: ResolvedTrainOptions, run: TokenRun, start: RankStart): Promise<RunIdentity> {
  const { split, names, loaded, saved } = start;
  const sentences = (set: TaggedSentences) => contentDigest(set.words.map((w, i) => JSON.stringify([w, set.tags[i]])));
  const digests: Record<string, string> = {
    'training data': sentences(split.train),
    'validation data': sentences(split.validation),
    tokenizer: contentDigest([loaded.tokenizer.json]),
    "model's weights": await loaded.weightsKey(),
  };
  if (saved) digests['training state'] = contentDigest([JSON.stringify({ ...saved, directory: undefined })]);
  return { settings: { ...sharedSettings(opts), maxLength: loaded.maxLength, tags: names, labelAllTokens: run.labelAllTokens }, digests };
}

/**
 * Stage 3: the token classifier (transformers' head of the family; added to `disposables`), its
 * head started from the checkpoint's where it has one with the run's tags, what trains (the
 * pooler, which the loss does not reach, frozen), and its AdamW, each rank from rank 0's weights.
 * Dropout draws from torch's generator, seeded with the head's init.
 */
async function tokenTrainee(
  binding: NativeBinding,
  opts: ResolvedTrainOptions,
  start: Pick<RankStart, 'loaded' | 'names' | 'saved'>,
  dist: Distributed | null,
  disposables: Array<{ dispose(): void }>,
) {
  const { loaded, names } = start;
  const { family, config } = folderOf(loaded);
  const built = binding.buildClassifier(loaded.module, {
    numClasses: names.length,
    headHidden: 1,
    pooling: 'cls',
    seed: opts.seed,
    head: 'token-classification',
    family,
    // transformers' config defaults (hidden_dropout_prob, DistilBERT's dropout): 0.1.
    dropout: headDropout(family, config, 'token-classification') ?? 0.1,
    initializerRange: configNumber(config.initializer_range) ?? 0.02,
  });
  const model = built.module;
  disposables.push(model);
  const headNote = startHeadFromCheckpoint(model, loaded, names);
  const setup = setUpTrainable(binding, model, opts, built.unusedParameters);
  const trainee = await startTrainee(binding, model, setup, { dist, saved: start.saved, disposables });
  model.train(true);
  return { model, trainee, headNote };
}

/** Files as a list. */
function fileList(files: string | readonly string[] | undefined, option: string): readonly string[] {
  const list = filePathList(files);
  if (!list) {
    throw new InputError(
      `trainTokenClassifier(): \`${option}\` is a file path or a list of them (CoNLL or JSON files of tagged sentences); got ${JSON.stringify(files)?.slice(0, 80) ?? String(files)}`,
    );
  }
  return list;
}

/**
 * The training and validation sentences: `validationData`'s, or a `validationSplit` share of
 * `data` drawn by the seed (torch.randperm, the first ones held out), at least one each.
 */
async function readSplit(
  binding: NativeBinding,
  opts: ResolvedTrainOptions,
  data: string | readonly string[],
  validationData: string | readonly string[] | undefined,
  read: TaggedReadOptions,
): Promise<{ train: TaggedSentences; validation: TaggedSentences }> {
  const all = await readTaggedFiles(fileList(data, 'data'), read);
  if (validationData !== undefined)
    return { train: all, validation: await readTaggedFiles(fileList(validationData, 'validationData'), read) };
  const split = heldOut(binding, all.words.length, opts.validationSplit, opts.seed, { caller: 'trainTokenClassifier()', noun: 'sentence' });
  const pick = (indices: Int32Array): TaggedSentences => ({
    words: Array.from(indices, (i) => all.words[i]!),
    tags: Array.from(indices, (i) => all.tags[i]!),
    origins: Array.from(indices, (i) => all.origins[i]!),
  });
  return { train: pick(split.train), validation: pick(split.validation) };
}

/**
 * The model of a per-token task (a Hugging Face folder or Hub id; added to `disposables`) with
 * its tokenizer and max length, and its task head's tensors (disposed with it unless the run
 * takes them). `caller` and `task` name the refusal of a TorchScript file.
 */
export async function loadTaskModel(
  opts: ResolvedTrainOptions,
  spec: string,
  maxLength: number | undefined,
  disposables: Array<{ dispose(): void }>,
  names: { caller: string; task: string },
): Promise<LoadedEncoder> {
  const device = resolveDevice(opts.device);
  checkPrecision(opts, device);
  const loaded = await loadEncoderSource(spec, {
    device,
    tokenizer: opts.tokenizer,
    maxLength,
    fallbackMaxLength: DEFAULTS.maxLength,
    classificationHead: true,
    refuseTorchScript: (file) =>
      new InputError(
        `${names.caller}: ${file} is a TorchScript file; ${names.task} trains a Hugging Face model folder or Hub id (its family decides the head and the saved folder)`,
      ),
    signal: opts.signal,
    onDownload: downloadEvents(opts.onProgress),
  });
  disposables.push(loaded.module, {
    // A task model's head, until the run takes it (startHeadFromCheckpoint).
    dispose: () => {
      for (const [, t] of loaded.classificationHead) t.dispose();
    },
  });
  return loaded;
}

/**
 * A model that is a token classifier already (a *ForTokenClassification folder or Hub id): its
 * head starts this run's where its tags are this run's (in any order: the rows follow the names),
 * as `from_pretrained` keeps a head that fits, else the head keeps its initialisation. The note
 * says which; null for a model without such a head. The checkpoint's head tensors are freed.
 */
function startHeadFromCheckpoint(model: NativeScriptModule, loaded: LoadedEncoder, names: readonly string[]): string | null {
  const weights = new Map(loaded.classificationHead);
  loaded.classificationHead = [];
  try {
    const { config, configFile } = folderOf(loaded);
    if (!isTokenClassifierConfig(config) || weights.size === 0) return null;
    const head = checkpointHead(weights, config, loaded.description, configFile);
    const rows = names.map((tag) => head.tags.indexOf(tag));
    if (head.tags.length !== names.length || rows.some((row) => row < 0)) {
      return (
        `the checkpoint's token-classification head tags ${head.tags.join(', ')}; this run's tags are ${names.join(', ')}, ` +
        "so the head starts initialised (labels with the checkpoint's tags would start it from the checkpoint's)"
      );
    }
    copyTokenHead(model, head, rows, loaded.description, configFile);
    return `the head starts from the checkpoint's token-classification head (its tags ${head.tags.join(', ')})`;
  } finally {
    for (const t of weights.values()) t.dispose();
  }
}
