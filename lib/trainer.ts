/**
 * `train()`: the seed tutorial's job done right. The path of a batch:
 *   CSV row → `data.ts` (text, class id) → `tokenizer.ts` (padded ids + mask, all texts once)
 *   → here: a shuffled slice of rows → `binding.trainStep` (forward, NLL loss, backward, AdamW
 *   step, all in C++ on a worker thread) → loss/accuracy → progress event.
 * After each epoch, validation runs in eval mode with no autograd (`binding.evalStep`), and a
 * new best validation loss is checkpointed atomically.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { ensureWritableDir, HISTORY_FILE, writeCheckpoint, writeFileAtomic } from './checkpoint.js';
import { Classifier, type ClassifierConfig, resolveDevice, runEvaluation } from './classifier.js';
import { inferLabelNames, labelIds, loadExamples, stratifiedSplit } from './data.js';
import type { EncoderInfo, NativeScriptModule } from './binding.js';
import { AbortError, InputError, ModelError, messageOf } from './errors.js';
import { loadBinding } from './loader.js';
import { DEFAULTS, type EpochMetrics, type ResolvedTrainOptions, type TrainOptions } from './options.js';
import { gatherRows, TextTokenizer } from './tokenizer.js';

export interface TrainResult {
  /** Class names in id order. */
  labels: string[];
  /** Metrics of every epoch. */
  history: EpochMetrics[];
  /** The epoch with the lowest validation loss (its weights are the ones kept). */
  best: EpochMetrics;
  encoder: EncoderInfo;
  trainExamples: number;
  validationExamples: number;
  /** The directory the best checkpoint was written to, when `outDir` was given. */
  outDir?: string;
  /** The best classifier, in memory, ready for `predict()`. */
  classifier: Classifier;
}

function packageVersion(): string {
  const require = createRequire(import.meta.url);
  return (require('../package.json') as { version: string }).version;
}

function checkPositiveInteger(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new InputError(`${name} must be a positive integer; got ${value}`);
}

function checkNonNegative(name: string, value: number): void {
  if (!(typeof value === 'number' && Number.isFinite(value) && value >= 0)) {
    throw new InputError(`${name} must be a finite number ≥ 0; got ${value}`);
  }
}

export function resolveTrainOptions(options: TrainOptions): ResolvedTrainOptions {
  if (!options || typeof options !== 'object') throw new InputError('train() takes an options object');
  const resolved = { ...DEFAULTS, ...stripUndefined(options) } as ResolvedTrainOptions;
  if (!resolved.data) throw new InputError('train(): `data` is required (a CSV path, { csv }, or { texts, labels })');
  if (typeof resolved.encoder !== 'string') throw new InputError('train(): `encoder` (a TorchScript file) is required');
  if (typeof resolved.tokenizer !== 'string') throw new InputError('train(): `tokenizer` (a tokenizer.json) is required');
  if (resolved.technique !== 'frozen') throw new InputError(`technique '${resolved.technique}' is not available; use 'frozen'`);
  checkPositiveInteger('maxLength', resolved.maxLength);
  checkPositiveInteger('batchSize', resolved.batchSize);
  checkPositiveInteger('epochs', resolved.epochs);
  checkPositiveInteger('headHidden', resolved.headHidden);
  checkNonNegative('learningRate', resolved.learningRate);
  checkNonNegative('weightDecay', resolved.weightDecay);
  checkNonNegative('maxGradNorm', resolved.maxGradNorm);
  if (!(resolved.dropout >= 0 && resolved.dropout < 1)) throw new InputError(`dropout must be in [0, 1); got ${resolved.dropout}`);
  if (resolved.pooling !== 'cls' && resolved.pooling !== 'mean') {
    throw new InputError(`pooling must be 'cls' or 'mean'; got '${resolved.pooling}'`);
  }
  if (!Number.isInteger(resolved.seed) || resolved.seed < 0) throw new InputError(`seed must be an integer ≥ 0; got ${resolved.seed}`);
  return resolved;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Fine-tune a classifier on top of a TorchScript encoder. See `TrainOptions` for every option and default. */
export async function train(options: TrainOptions): Promise<TrainResult> {
  const opts = resolveTrainOptions(options);
  const binding = loadBinding();
  const { signal } = opts;
  signal?.throwIfAborted();
  if (opts.threads !== undefined) {
    checkPositiveInteger('threads', opts.threads);
    binding.setNumThreads(opts.threads);
  }

  // Everything that can be wrong with the inputs is checked before the output directory is
  // touched, so a failed run never destroys an earlier checkpoint.
  const tokenizer = await TextTokenizer.load(opts.tokenizer);
  const trainRaw = await loadExamples(opts.data);
  const validationRaw = opts.validationData ? await loadExamples(opts.validationData) : null;
  const labels = opts.labels ?? inferLabelNames([...trainRaw.labels!, ...(validationRaw?.labels ?? [])], trainRaw.origin);
  const allIds = labelIds(trainRaw.labels!, labels, trainRaw.origin);
  let trainIndices: Int32Array;
  let validationIndices: Int32Array | null = null;
  if (validationRaw) {
    trainIndices = Int32Array.from(allIds.keys());
  } else {
    const split = stratifiedSplit(allIds, opts.validationSplit, opts.seed, binding.randperm);
    trainIndices = split.train;
    validationIndices = split.validation;
  }
  const encodedAll = tokenizer.encodeBatch(trainRaw.texts, opts.maxLength);
  const trainSet = gatherRows(encodedAll, trainIndices);
  const trainLabels = Int32Array.from(trainIndices, (i) => allIds[i]!);
  const validationSet = validationRaw
    ? tokenizer.encodeBatch(validationRaw.texts, opts.maxLength)
    : gatherRows(encodedAll, validationIndices!);
  const validationLabels = validationRaw
    ? labelIds(validationRaw.labels!, labels, validationRaw.origin)
    : Int32Array.from(validationIndices!, (i) => allIds[i]!);

  const device = resolveDevice(opts.device);
  let encoder: NativeScriptModule;
  try {
    encoder = await binding.ScriptModule.loadAsync(opts.encoder, device);
  } catch (err) {
    throw new ModelError(`cannot load encoder ${opts.encoder}: ${messageOf(err)}`, { file: opts.encoder, cause: err });
  }
  let built;
  try {
    built = binding.buildClassifier(encoder, {
      numClasses: labels.length,
      headHidden: opts.headHidden,
      dropout: opts.dropout,
      pooling: opts.pooling,
      seed: opts.seed,
    });
  } catch (err) {
    encoder.dispose();
    throw new ModelError(`encoder ${opts.encoder} cannot be used: ${messageOf(err)}`, { file: opts.encoder, cause: err });
  }
  const model = built.module;
  if (opts.outDir) await ensureWritableDir(opts.outDir);

  // Feature extraction: the encoder is frozen, only the head learns.
  model.setRequiresGrad(false, 'encoder.');
  const headParams = model.namedParameters().filter(([name]) => name.startsWith('head.')).map(([, t]) => t);
  const optimizer = new binding.AdamW([
    { params: headParams, lr: opts.learningRate, betas: opts.betas, eps: opts.eps, weightDecay: opts.weightDecay },
  ]);

  const config: ClassifierConfig = {
    format: 'torch-bert-classifier',
    formatVersion: 1,
    labels,
    maxLength: opts.maxLength,
    pooling: opts.pooling,
    headHidden: opts.headHidden,
    dropout: opts.dropout,
    encoder: { ...built.encoder, file: opts.encoder },
    output: 'log_probabilities',
    libtorchVersion: binding.versions().libtorch,
    torchBertVersion: packageVersion(),
    hyperparameters: {
      technique: opts.technique,
      epochs: opts.epochs,
      batchSize: opts.batchSize,
      learningRate: opts.learningRate,
      weightDecay: opts.weightDecay,
      betas: opts.betas,
      eps: opts.eps,
      validationSplit: validationRaw ? null : opts.validationSplit,
      seed: opts.seed,
      maxGradNorm: opts.maxGradNorm,
      device,
    },
    metrics: {},
    createdAt: new Date().toISOString(),
  };

  const history: EpochMetrics[] = [];
  let best: EpochMetrics | undefined;
  let bestModule: NativeScriptModule | undefined;
  const stepsPerEpoch = Math.ceil(trainSet.count / opts.batchSize);
  try {
    for (let epoch = 1; epoch <= opts.epochs; epoch++) {
      const epochStart = performance.now();
      model.train(true);
      // Same permutation as Python's torch.randperm(n, generator=Generator().manual_seed(seed + epoch)).
      const order = binding.randperm(trainSet.count, opts.seed + epoch);
      let lossSum = 0;
      let correct = 0;
      let seen = 0;
      for (let step = 1; step <= stepsPerEpoch; step++) {
        if (signal?.aborted) throw new AbortError(`training aborted at epoch ${epoch}, step ${step}`, { cause: signal.reason });
        const indices = order.subarray((step - 1) * opts.batchSize, step * opts.batchSize);
        const batch = gatherRows(trainSet, indices);
        const result = await binding.trainStep(
          model,
          optimizer,
          {
            inputIds: batch.inputIds,
            attentionMask: batch.attentionMask,
            batchSize: batch.count,
            seqLen: batch.seqLen,
            labels: Int32Array.from(indices, (i) => trainLabels[i]!),
          },
          { maxGradNorm: opts.maxGradNorm },
        );
        if (!Number.isFinite(result.loss)) {
          throw new Error(`training loss became ${result.loss} at epoch ${epoch}, step ${step}; lower the learning rate`);
        }
        lossSum += result.loss * batch.count;
        correct += result.correct;
        seen += batch.count;
        const elapsed = (performance.now() - epochStart) / 1000;
        opts.onProgress?.({
          type: 'step',
          epoch,
          step,
          stepsPerEpoch,
          loss: result.loss,
          epochLoss: lossSum / seen,
          examplesPerSecond: seen / elapsed,
          etaSeconds: (elapsed / step) * (stepsPerEpoch - step),
        });
      }
      const validation = await runEvaluation(model, validationSet, validationLabels, opts.batchSize, signal);
      const metrics: EpochMetrics = {
        epoch,
        trainLoss: lossSum / seen,
        trainAccuracy: correct / seen,
        validationLoss: validation.loss!,
        validationAccuracy: validation.accuracy!,
        seconds: (performance.now() - epochStart) / 1000,
        isBest: best === undefined || validation.loss! < best.validationLoss,
      };
      history.push(metrics);
      if (metrics.isBest) {
        best = metrics;
        config.metrics = {
          epoch,
          validationLoss: metrics.validationLoss,
          validationAccuracy: metrics.validationAccuracy,
          trainLoss: metrics.trainLoss,
          trainAccuracy: metrics.trainAccuracy,
        };
        bestModule?.dispose();
        bestModule = model.clone();
        if (opts.outDir) {
          await writeCheckpoint(opts.outDir, model, { config, tokenizerJson: tokenizer.json, history });
        }
      }
      opts.onProgress?.({ type: 'epoch', epochs: opts.epochs, ...metrics });
    }
  } catch (err) {
    bestModule?.dispose();
    model.dispose();
    optimizer.dispose();
    if (err instanceof Error && err.name === 'AbortError' && !(err instanceof AbortError)) {
      throw new AbortError('training aborted', { cause: err });
    }
    throw err;
  }
  if (opts.outDir) {
    // history.json gets the epochs after the best one too.
    await writeFileAtomic(join(opts.outDir, HISTORY_FILE), JSON.stringify(history, null, 2) + '\n');
  }
  model.dispose();
  optimizer.dispose();
  bestModule!.train(false);
  return {
    labels,
    history,
    best: best!,
    encoder: built.encoder,
    trainExamples: trainSet.count,
    validationExamples: validationSet.count,
    outDir: opts.outDir,
    classifier: Classifier.fromModule(bestModule!, tokenizer, config),
  };
}
