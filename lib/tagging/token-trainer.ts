/**
 * `trainTokenClassifier()`: token classification (named entities, parts of speech, chunks)
 * fine-tuned as Hugging Face's run_ner.py fine-tunes it: a BERT-family model with transformers'
 * token-classification head (buildClassifier's 'token-classification'), each word's tag on its
 * first token (word-alignment.ts), cross-entropy over the words, seqeval's entity scores
 * (entity-metrics.ts). It runs on the loop every task shares (training-loop.ts) with the run
 * bookkeeping of run-keeper.ts: AdamW with its schedule, clipping, accumulation, reduced
 * precision, a validation pass every epoch (or N steps), the best weights kept, exact resume,
 * abort.
 *
 * Stages: 1. options (train()'s resolution with run_ner.py's defaults) and the tagged sentences;
 * 2. the model (a Hugging Face folder or Hub id) and its head; 3. what trains; 4. the loop; 5. the
 * kept folder (token-classifier-folder.ts): a *ForTokenClassification folder transformers loads.
 */
import { join } from 'node:path';
import type { NativeBinding, NativeScriptModule, Precision } from '../addon/binding.js';
import { AbortError, asAbortError, InputError } from '../addon/errors.js';
import { loadBinding } from '../addon/loader.js';
import { resolveDevice } from '../classification/classifier.js';
import { consecutiveBatches, type Schedule } from '../data/batching.js';
import { readTaggedFiles, type TaggedReadOptions, type TaggedSentences, tagIds, tagNames } from '../data/tagged-words.js';
import type { TextTokenizer } from '../data/tokenizer.js';
import { encodeWords, perWord, type WordRows, wordBatch } from '../data/word-alignment.js';
import { CONFIG_FILE, ensureWritableDir, HISTORY_FILE, writeFileAtomic } from '../files/checkpoint.js';
import { checkOutputFolder, claimOutputFolder } from '../files/output-folder.js';
import { type LoadedEncoder, loadEncoderSource, modelFolderRead } from '../models/encoder-source.js';
import type { ExportFamily } from '../models/export-family.js';
import { contentDigest, rankEnvironmentSet, sharedSettings } from '../training/distributed.js';
import { type EntityMetrics, entityMetrics } from '../training/entity-metrics.js';
import {
  checkOptionNames,
  DEFAULTS,
  type Device,
  downloadEvents,
  type EpochMetrics,
  type Evaluation,
  type LoraOptions,
  type ProgressEvent,
  type ResolvedTrainOptions,
  resolveTrainOptions,
  zeroLearningRateNote,
} from '../training/options.js';
import { checkPrecision } from '../training/precision.js';
import { RunKeeper, startPosition, type Validation } from '../training/run-keeper.js';
import { setUpTrainable } from '../training/trainable.js';
import { nativeStepOptions, runTrainingLoop, type StepSettings, startTrainee, type Task } from '../training/training-loop.js';
import {
  checkNoUnfinishedRun,
  checkOutputFolderFirst,
  readTrainingState,
  removeTrainingState,
  resumePosition,
  runContents,
  type SkippedBatch,
  stateSaver,
} from '../training/training-state.js';
import { checkpointHead, copyTokenHead, isTokenClassifierConfig, writeTokenClassifierFolder } from './token-classifier-folder.js';

export interface TokenTrainOptions extends TaggedReadOptions {
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
  /** Tokens per sentence, special tokens included; words past it are not predicted. Default the model's (tokenizer_config.json's, within its positions). */
  maxLength?: number;
  /** Default 3 (run_ner.py's). */
  epochs?: number;
  /** Default 8 (run_ner.py's per-device batch). */
  batchSize?: number;
  /** Default 5e-5 (the Trainer's). */
  learningRate?: number;
  weightDecay?: number;
  betas?: [number, number];
  eps?: number;
  /** Default 'linear' (the Trainer's). */
  schedule?: Schedule;
  warmupRatio?: number;
  maxGradNorm?: number;
  gradientAccumulationSteps?: number;
  precision?: Precision;
  device?: Device;
  seed?: number;
  evaluateEvery?: 'epoch' | number;
  /** Which validation score keeps the best weights: 'loss' (default), 'accuracy' (of the words' tags) or 'macroF1' (the entity types' F1 averaged). */
  bestMetric?: 'loss' | 'accuracy' | 'macroF1';
  earlyStoppingPatience?: number;
  onNonFinite?: 'stop' | 'skip';
  /** The out dir of an interrupted run: continues it exactly. */
  resumeFrom?: string;
  threads?: number;
  onProgress?: (event: ProgressEvent) => void;
  signal?: AbortSignal;
}

/** A validation pass of a token classifier: seqeval's entity scores, the word accuracy, and the loss over the words. */
export type TokenMetrics = EntityMetrics & { loss: number };

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

/** What trains a token classifier (bottleneck adapters are not yet kept in a form transformers loads). */
const TOKEN_TECHNIQUES: ReadonlyArray<TokenTrainOptions['technique']> = ['full', 'lora', 'frozen'];

/** trainTokenClassifier()'s option names, equal to TokenTrainOptions' keys (for plain JavaScript's misspelt keys). */
const TOKEN_OPTION_NAMES = Object.keys({
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
  maxLength: 1,
  epochs: 1,
  batchSize: 1,
  learningRate: 1,
  weightDecay: 1,
  betas: 1,
  eps: 1,
  schedule: 1,
  warmupRatio: 1,
  maxGradNorm: 1,
  gradientAccumulationSteps: 1,
  precision: 1,
  device: 1,
  seed: 1,
  evaluateEvery: 1,
  bestMetric: 1,
  earlyStoppingPatience: 1,
  onNonFinite: 1,
  resumeFrom: 1,
  threads: 1,
  onProgress: 1,
  signal: 1,
} satisfies Record<keyof TokenTrainOptions, 1>);

/** Tagged sentences with their class ids and token rows. */
export interface TaggedSet {
  sentences: TaggedSentences;
  tags: Int32Array[];
  rows: WordRows;
}

export async function trainTokenClassifier(options: TokenTrainOptions): Promise<TokenTrainResult> {
  // 1. Options.
  if (!options || typeof options !== 'object') throw new InputError('trainTokenClassifier() takes an options object');
  checkOptionNames('trainTokenClassifier()', options, TOKEN_OPTION_NAMES);
  const { model: spec, data, validationData, wordsColumn, tagsColumn, labels, technique, ...rest } = options;
  if (typeof spec !== 'string' || spec === '')
    throw new InputError('trainTokenClassifier(): `model` (a Hugging Face model folder or Hub id) is required');
  if (technique !== undefined && !TOKEN_TECHNIQUES.includes(technique)) {
    throw new InputError(`trainTokenClassifier(): technique must be 'full', 'lora' or 'frozen'; got ${JSON.stringify(technique)}`);
  }
  if (rankEnvironmentSet()) {
    throw new InputError('trainTokenClassifier() runs in one process: data-parallel token classification is not supported yet');
  }
  const opts = resolveTrainOptions({
    ...TOKEN_TRAIN_DEFAULTS,
    ...Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)),
    technique: technique ?? TOKEN_TRAIN_DEFAULTS.technique,
    encoder: spec,
    data: 'tagged sentences',
  });
  const outDir = opts.outDir;
  if (!outDir) throw new InputError('trainTokenClassifier(): `outDir` is required (the trained model is a folder)');
  const read = { wordsColumn, tagsColumn, labels };
  const binding = loadBinding();
  if (opts.threads !== undefined) binding.setNumThreads(opts.threads);
  const disposables: Array<{ dispose(): void }> = [];
  let releaseOutDir: (() => Promise<void>) | undefined;
  try {
    await checkOutputFolderFirst(outDir, 'token-classifier', spec, opts.resumeFrom);
    const { train: trainSentences, validation: validationSentences } = await readSplit(binding, opts, data, validationData, read);
    const names = tagNames({ words: [], tags: [...trainSentences.tags, ...validationSentences.tags], origins: [] }, labels);

    // 2. The model and its head.
    const loaded = await loadModel(opts, spec, options.maxLength, disposables);
    if (options.lora?.targets === undefined && loaded.loraTargets) opts.lora.targets = loaded.loraTargets;
    const { family, dir: sourceDir, config } = folderOf(loaded);
    const train = taggedSet(loaded.tokenizer, loaded.maxLength, trainSentences, names);
    const validation = taggedSet(loaded.tokenizer, loaded.maxLength, validationSentences, names);
    const built = binding.buildClassifier(loaded.module, {
      numClasses: names.length,
      headHidden: 1,
      pooling: 'cls',
      seed: opts.seed,
      head: 'token-classification',
      family,
      dropout: headDropout(family, config),
      initializerRange: num(config.initializer_range) ?? 0.02,
    });
    const model = built.module;
    disposables.push(model);
    const headNote = startHeadFromCheckpoint(model, loaded, names);

    // 3. What trains; the run's identity for a resume.
    const setup = setUpTrainable(binding, model, opts, built.unusedParameters);
    const saved = opts.resumeFrom ? await readTrainingState(opts.resumeFrom) : null;
    const fingerprint = {
      task: 'token-classification',
      trainExamples: train.rows.encoded.count,
      validationExamples: validation.rows.encoded.count,
      maxLength: loaded.maxLength,
      labels: names,
      batchSize: opts.batchSize,
      epochs: opts.epochs,
      seed: opts.seed,
      gradientAccumulationSteps: opts.gradientAccumulationSteps,
      options: sharedSettings(opts),
      contents: runContents({
        'training data': contentDigest(trainSentences.words.map((w, i) => JSON.stringify([w, trainSentences.tags[i]]))),
        'validation data': contentDigest(validationSentences.words.map((w, i) => JSON.stringify([w, validationSentences.tags[i]]))),
        tokenizer: contentDigest([loaded.tokenizer.json]),
        "model's weights": await loaded.weightsKey(),
      }),
    };
    const position = saved ? resumePosition(saved, fingerprint, opts.resumeFrom!, train.rows.encoded.count) : startPosition();
    const trainee = await startTrainee(binding, model, setup, { dist: null, saved, disposables });
    model.train(true);
    await checkOutputFolder(outDir, 'token-classifier', opts.resumeFrom, modelFolderRead(loaded));
    releaseOutDir = await claimOutputFolder(outDir);
    if (opts.resumeFrom === undefined) await checkNoUnfinishedRun(outDir);
    await ensureWritableDir(outDir);

    // 4. The loop.
    const keeper = new RunKeeper<TokenMetrics>(position, opts, {
      validate: () => validateTokenClassifier(binding, model, validation, names, opts),
      checkpoint: (evaluation) =>
        writeTokenClassifierFolder(binding, outDir, {
          model,
          merge: setup.adapters !== undefined,
          family,
          sourceDir,
          tokenizerJson: loaded.tokenizer.json,
          maxLength: loaded.maxLength,
          labels: names,
          evaluation,
          history: position.history,
        }),
      saveState: stateSaver(binding, outDir, { fingerprint, tensors: setup.trainable, optimizer: trainee.optimizer }, null),
      onProgress: opts.onProgress,
    });
    const task = tokenClassificationTask(binding, model, trainee.optimizer, train, {
      precision: opts.precision,
      maxGradNorm: opts.maxGradNorm,
      skipNonFinite: opts.onNonFinite === 'skip',
    });
    await runTrainingLoop(task, trainee, keeper, { ...opts, trainRows: train.rows.encoded.count, randperm: binding.randperm });

    // 5. Finish.
    await writeFileAtomic(join(outDir, HISTORY_FILE), JSON.stringify(position.history, null, 2) + '\n');
    await removeTrainingState(outDir);
    return {
      outDir,
      labels: names,
      history: position.history,
      evaluations: position.evaluations,
      best: keeper.bestEvaluation()!, // a finished run has evaluated at least once
      metrics: keeper.bestMetrics,
      trainSentences: train.rows.encoded.count,
      validationSentences: validation.rows.encoded.count,
      notes: [...loaded.notes, ...[headNote, zeroLearningRateNote(opts)].filter((n) => n !== null)],
      stoppedEarly: keeper.stoppedEarly,
      skippedBatches: position.skippedBatches,
    };
  } catch (err) {
    throw asAbortError(err, 'token classification training aborted');
  } finally {
    for (const d of disposables.reverse()) d.dispose();
    await releaseOutDir?.();
  }
}

/** Files as a list. */
function fileList(files: string | readonly string[] | undefined, option: string): readonly string[] {
  const list = typeof files === 'string' ? [files] : files;
  if (!Array.isArray(list) || list.length === 0 || list.some((f) => typeof f !== 'string' || f === '')) {
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
  const held = Math.max(1, Math.floor(all.words.length * opts.validationSplit));
  if (all.words.length - held < 1) {
    throw new InputError(
      `trainTokenClassifier(): ${all.words.length} sentence(s) leave none to train on once ${held} are held out for validation: give more sentences or validationData`,
    );
  }
  const order = binding.randperm(all.words.length, opts.seed);
  const pick = (indices: Int32Array): TaggedSentences => ({
    words: Array.from(indices, (i) => all.words[i]!),
    tags: Array.from(indices, (i) => all.tags[i]!),
    origins: Array.from(indices, (i) => all.origins[i]!),
  });
  return { train: pick(order.subarray(held)), validation: pick(order.subarray(0, held)) };
}

/** The model (a Hugging Face folder or Hub id; added to `disposables`) with its tokenizer and max length. */
async function loadModel(
  opts: ResolvedTrainOptions,
  spec: string,
  maxLength: number | undefined,
  disposables: Array<{ dispose(): void }>,
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
        `trainTokenClassifier(): ${file} is a TorchScript file; token classification trains a Hugging Face model folder or Hub id (its family decides the head and the saved folder)`,
      ),
    signal: opts.signal,
    onDownload: downloadEvents(opts.onProgress),
  });
  disposables.push(loaded.module, {
    // A token classifier's head, until the run takes it (startHeadFromCheckpoint).
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

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

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

/** transformers' dropout before the token-classification head: classifier_dropout, else hidden_dropout_prob (DistilBERT: dropout). */
function headDropout(family: ExportFamily, config: Record<string, unknown>): number {
  if (family === 'distilbert') return num(config.dropout) ?? 0.1;
  return num(config.classifier_dropout) ?? num(config.hidden_dropout_prob) ?? 0.1;
}

/** Sentences with their tags' class ids and their token rows. */
export function taggedSet(tokenizer: TextTokenizer, maxLength: number, sentences: TaggedSentences, names: readonly string[]): TaggedSet {
  return { sentences, tags: tagIds(sentences, names), rows: encodeWords(tokenizer, sentences.words, maxLength) };
}

/**
 * The token-classification task: a batch of sentences, the head on their words' first tokens,
 * cross-entropy averaged over those words (transformers' loss with -100 on every other token).
 */
function tokenClassificationTask(
  binding: NativeBinding,
  model: NativeScriptModule,
  optimizer: InstanceType<NativeBinding['AdamW']>,
  train: TaggedSet,
  settings: StepSettings,
): Task<ReturnType<typeof wordBatch>> {
  return {
    batch: (rows) => wordBatch(train.rows, rows, train.tags),
    // `correct` counts words: the loop's training accuracy is the words'.
    batchLossNormaliser: (batch) => batch.positions.length,
    accuracyNormaliser: (batch) => batch.positions.length,
    step: (batch, step) => binding.trainStep(model, optimizer, batch, nativeStepOptions(settings, step)),
  };
}

/**
 * Validation: the loss over every word with a position (a token-weighted mean, as one batch of
 * them all), each word's predicted tag, and seqeval's scores of those words, as run_ner.py
 * computes them (words cut by maxLength, having no position, are left out of both).
 */
export async function validateTokenClassifier(
  binding: NativeBinding,
  model: NativeScriptModule,
  data: TaggedSet,
  names: readonly string[],
  settings: { batchSize: number; precision: Precision; signal?: AbortSignal },
): Promise<Validation<TokenMetrics>> {
  let lossSum = 0;
  let words = 0;
  const predicted: string[][] = [];
  const gold: string[][] = [];
  for (const rows of consecutiveBatches(data.rows.encoded.count, settings.batchSize)) {
    if (settings.signal?.aborted) throw new AbortError('validation was aborted', { cause: settings.signal.reason });
    const batch = wordBatch(data.rows, rows, data.tags);
    if (batch.positions.length === 0) continue;
    const result = await binding.evalStep(model, batch, { precision: settings.precision });
    lossSum += result.loss! * batch.positions.length;
    words += batch.positions.length;
    for (const [r, ids] of perWord(data.rows, rows, result.predictions, -1).entries()) {
      const sentence = rows[r]!;
      const kept = [...ids.keys()].filter((w) => ids[w]! >= 0);
      predicted.push(kept.map((w) => names[ids[w]!]!));
      gold.push(kept.map((w) => names[data.tags[sentence]![w]!]!));
    }
  }
  const loss = words > 0 ? lossSum / words : Number.NaN;
  const metrics = { ...entityMetrics(predicted, gold), loss };
  return { loss, scores: { accuracy: metrics.accuracy, macroF1: metrics.macroF1 }, metrics };
}
