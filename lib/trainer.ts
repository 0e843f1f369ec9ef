/**
 * `train()`: the seed tutorial's job done right, and the other two techniques. The path of a batch:
 *   CSV row → `data.ts` (text, class id) → `tokenizer.ts` (ids + mask, every text once)
 *   → `batching.ts` (this epoch's rows for this batch, from libtorch's randperm(seed + epoch))
 *   → `binding.trainStep` (forward, loss, backward, clipping, AdamW step: C++ on a worker thread)
 *     or, for the frozen technique, `binding.headTrainStep` on features encoded once (`feature-cache.ts`)
 *   → loss / accuracy → progress event.
 * Validation (eval mode, no autograd) runs at each epoch's end and every `evaluateEvery` steps;
 * a new best is checkpointed atomically, and the resumable training state is saved at every
 * epoch's end and on abort.
 */

import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { consecutiveBatches, epochBatches, evaluateInBatches, gatherRows, learningRateFactor, TOKENS_PER_FORWARD } from './batching.js';
import type {
  BuiltClassifier,
  EncoderInfo,
  EvalStepOptions,
  LossOptions,
  NativeBinding,
  NativeLoraAdapters,
  NativeScriptModule,
} from './binding.js';
import { CLASSIFIER_FILE, ensureWritableDir, HISTORY_FILE, writeCheckpoint, writeFileAtomic } from './checkpoint.js';
import { ADAPTERS_FILE, Classifier, type ClassifierConfig, HEAD_FILE, resolveDevice, runEvaluation } from './classifier.js';
import { csvColumns, inferLabelNames, labelIds, loadExamples, stratifiedSplit } from './data.js';
import { cpuBf16 } from './doctor.js';
import { AbortError, InputError, ModelError, messageOf, NumericalError } from './errors.js';
import { encodeOnce, type FeatureCache, featureRows } from './feature-cache.js';
import { loadBinding } from './loader.js';
import { type ClassificationMetrics, classificationMetrics } from './metrics.js';
import { loadCheckedEncoder } from './model-checks.js';
import { type EpochMetrics, type Evaluation, type ResolvedTrainOptions, resolveTrainOptions, type TrainOptions } from './options.js';
import { renderReport } from './report.js';
import { type EncodedTexts, TextTokenizer } from './tokenizer.js';
import { missingGradientsError, setUpTrainable, type TrainableSet } from './trainable.js';
import { checkFingerprint, type RunPosition, readTrainingState, restoreTrainingState, saveTrainingState } from './training-state.js';

export { resolveTrainOptions } from './options.js';

export interface TrainResult {
  /** Class names in id order. */
  labels: string[];
  /** Metrics of every epoch. */
  history: EpochMetrics[];
  /** Every validation pass (each epoch's end, and every `evaluateEvery` steps). */
  evaluations: Evaluation[];
  /** The epoch whose evaluation was best by `bestMetric` (its weights are the ones kept). */
  best: EpochMetrics;
  /** Accuracy, macro-F1, per-class precision/recall and confusion matrix of the kept weights on the validation set. */
  metrics: ClassificationMetrics;
  encoder: EncoderInfo;
  technique: ResolvedTrainOptions['technique'];
  /** Parameters that trained, and all parameters of the classifier (encoder + head). */
  trainableParameters: number;
  totalParameters: number;
  /**
   * Trainable share of the encoder's parameters: what full fine-tuning trains of it (all but the
   * unused and `freeze` parameters), LoRA's adapters over the encoder's size, 0 for frozen.
   */
  trainableEncoderFraction: number;
  /** Encoder parameters the task's output does not depend on (e.g. the pooler under [CLS] pooling): not used by this task, frozen, not counted as trainable. */
  unusedParameters: string[];
  /** Encoder parameters kept frozen by the `freeze` option. */
  frozenParameters: string[];
  /** What the run decided differently from the encoder file (gradient flags, a float16/bfloat16 file trained in float32), each said once. */
  notes: string[];
  trainExamples: number;
  validationExamples: number;
  /** True when early stopping ended the run. */
  stoppedEarly: boolean;
  /** Batches skipped for a NaN/Inf loss or gradient (with onNonFinite: 'skip'). */
  skippedSteps: Array<{ epoch: number; batch: number; reason: string }>;
  /** The directory the best checkpoint was written to, when `outDir` was given. */
  outDir?: string;
  /** The best classifier, in memory, ready for `predict()`. */
  classifier: Classifier;
}

function packageVersion(): string {
  const require = createRequire(import.meta.url);
  return (require('../package.json') as { version: string }).version;
}

/** Class weights for the loss: given, or `balanced` as scikit-learn computes them. */
function lossOptions(opts: ResolvedTrainOptions, trainLabels: Int32Array, numClasses: number): LossOptions {
  const loss: LossOptions = {};
  if (opts.labelSmoothing > 0) loss.labelSmoothing = opts.labelSmoothing;
  if (opts.classWeights === 'balanced') {
    const counts = new Float64Array(numClasses);
    for (const c of trainLabels) counts[c]!++;
    loss.classWeights = Float32Array.from(counts, (n) => (n > 0 ? trainLabels.length / (numClasses * n) : 0));
  } else if (opts.classWeights !== undefined) {
    if (!Array.isArray(opts.classWeights) || opts.classWeights.length !== numClasses || opts.classWeights.some((w) => !(w >= 0))) {
      throw new InputError(`classWeights must be 'balanced' or ${numClasses} non-negative numbers (one per class)`);
    }
    loss.classWeights = Float32Array.from(opts.classWeights);
  }
  return loss;
}

/**
 * LoRA's small artifact next to the merged classifier, saved with (and committed by) each
 * checkpoint: the adapters (A, B and their spec) and the head, which `loadAdapters()` puts back
 * onto the same base encoder.
 */
function adapterArchives(binding: NativeBinding, adapters: NativeLoraAdapters, model: NativeScriptModule) {
  return [
    { file: ADAPTERS_FILE, write: (path: string) => adapters.save(path) },
    {
      file: HEAD_FILE,
      write: (path: string) =>
        binding.saveTensors(path, Object.fromEntries(model.namedParameters().filter(([n]) => n.startsWith('head.')))),
    },
  ];
}

/** Validation loss and metrics, from cached features (frozen) or from tokens. */
async function validate(
  binding: NativeBinding,
  model: NativeScriptModule,
  data: { encoded: EncodedTexts; labels: Int32Array; cache: FeatureCache | null },
  batchSize: number,
  padTo: number | undefined,
  loss: EvalStepOptions,
  labels: string[],
  signal?: AbortSignal,
): Promise<{ loss: number; metrics: ClassificationMetrics }> {
  if (!data.cache) {
    const result = await runEvaluation(model, data.encoded, data.labels, batchSize, signal, loss, padTo);
    return { loss: result.loss!, metrics: classificationMetrics(result.predictions, data.labels, labels) };
  }
  const { cache } = data;
  const result = await evaluateInBatches(
    data.encoded.count,
    consecutiveBatches(data.encoded.count, batchSize),
    (examples) =>
      binding.headEvalStep(
        model,
        cache.features,
        featureRows(cache, examples),
        Int32Array.from(examples, (i) => data.labels[i]!),
        loss,
      ),
    true,
    signal,
  );
  return { loss: result.loss!, metrics: classificationMetrics(result.predictions, data.labels, labels) };
}

/**
 * Runs of train() in one process go one at a time. libtorch's random generator is process-wide
 * (TorchScript's dropout draws from it), so two runs interleaving their steps would each see
 * dropout masks that depend on the other's timing, and a seed would no longer reproduce a run.
 * A second call waits for the first to finish and then gives exactly the result it gives alone.
 */
let runQueue: Promise<unknown> = Promise.resolve();

/** Fine-tune a classifier on top of a TorchScript encoder. See `TrainOptions` for every option and default. */
export function train(options: TrainOptions): Promise<TrainResult> {
  const run = runQueue.then(() => trainNow(options));
  runQueue = run.catch(() => undefined);
  return run;
}

async function trainNow(options: TrainOptions): Promise<TrainResult> {
  const opts = resolveTrainOptions(options);
  const binding = loadBinding();
  const { signal } = opts;
  signal?.throwIfAborted();
  if (opts.threads !== undefined) binding.setNumThreads(opts.threads);

  // Everything that can be wrong with the inputs is checked before the output directory is
  // touched, so a failed run never destroys an earlier checkpoint.
  const saved = opts.resumeFrom ? await readTrainingState(opts.resumeFrom) : null;
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
  // The encoder is loaded and checked against the tokenizer and max length before any text is
  // tokenized (model-checks.ts): a mismatch fails at once, naming both files and both numbers.
  // Until buildClassifier takes it over below, an error leaves it to the garbage collector.
  const device = resolveDevice(opts.device);
  const encoder = await loadCheckedEncoder(opts.encoder, device, { tokenizer, maxLength: opts.maxLength });
  const encodedAll = await tokenizer.encodeBatchAsync(trainRaw.texts, opts.maxLength, { signal });
  const trainSet = gatherRows(encodedAll, trainIndices, opts.maxLength);
  const trainLabels = Int32Array.from(trainIndices, (i) => allIds[i]!);
  const validationSet = validationRaw
    ? await tokenizer.encodeBatchAsync(validationRaw.texts, opts.maxLength, { signal })
    : gatherRows(encodedAll, validationIndices!, opts.maxLength);
  const validationLabels = validationRaw
    ? labelIds(validationRaw.labels!, labels, validationRaw.origin)
    : Int32Array.from(validationIndices!, (i) => allIds[i]!);
  const loss = lossOptions(opts, trainLabels, labels.length);
  const padTo = opts.padding === 'max' ? opts.maxLength : undefined;

  const fingerprint = {
    technique: opts.technique,
    labels,
    trainExamples: trainSet.count,
    validationExamples: validationSet.count,
    maxLength: opts.maxLength,
    batchSize: opts.batchSize,
    epochs: opts.epochs,
    seed: opts.seed,
    gradientAccumulationSteps: opts.gradientAccumulationSteps,
    lora: opts.technique === 'lora' ? opts.lora : null,
    // Only when set, so that training states written before the option existed still match.
    ...(opts.freeze.length > 0 ? { freeze: opts.freeze } : {}),
  };
  if (saved) checkFingerprint(saved.fingerprint, fingerprint, opts.resumeFrom!);

  if (opts.precision === 'fp16' && !device.startsWith('cuda')) {
    throw new InputError(`precision 'fp16' needs a CUDA device, but the device is ${device}: use 'bf16' or 'fp32' on the CPU`);
  }
  if (opts.precision === 'bf16' && device === 'cpu' && cpuBf16()?.length === 0) {
    process.emitWarning(
      "precision 'bf16' on this CPU is emulated (it has no AVX512-BF16, AMX or Arm BF16): expect training to be far slower " +
        "than with 'fp32' (measured 15-30x with libtorch 2.13), or libtorch to reject it. Use precision 'fp32' on this CPU.",
      { code: 'TORCH_BERT_BF16_EMULATED' },
    );
  }
  // Validation runs in the training precision too.
  const evalOptions: EvalStepOptions = { ...loss, precision: opts.precision };
  const notes: string[] = [];
  const fileDtype = encoder.namedParameters().find(([, t]) => ['float16', 'bfloat16', 'float64'].includes(t.dtype))?.[1].dtype;
  if (fileDtype) {
    // Master weights are float32; reduced precision comes from autocast (the precision option).
    encoder.to(device, 'float32');
    notes.push(
      `the encoder file holds ${fileDtype} weights; they train in float32 (precision '${opts.precision}' decides the forward's precision)`,
    );
  }
  let built: BuiltClassifier;
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
  const outDir = opts.outDir;
  // Without outDir the best weights still go to a file, the one way to snapshot a module
  // whatever its technique (LoRA's save() writes merged weights).
  const bestDir = outDir ?? (await mkdtemp(join(tmpdir(), 'torch-bert-best-')));
  // Disposed in reverse order of creation when the run ends, however it ends.
  const disposables: Array<{ dispose(): void }> = [model];
  let caches: { train: FeatureCache; validation: FeatureCache } | null = null;

  // TF32 tensor cores for float32 matmuls on CUDA (Ampere and newer) during the run.
  const tf32Before = device.startsWith('cuda') ? binding.allowTF32() : null;
  try {
    // Inside the cleanup scope: a LoRA target that matches nothing fails here, and the model and
    // the temporary best-weights folder must still be released.
    let setup: TrainableSet;
    try {
      setup = setUpTrainable(binding, model, opts, built.unusedParameters);
    } catch (err) {
      if (err instanceof InputError) throw err;
      throw new InputError(`cannot set up technique '${opts.technique}': ${messageOf(err)}`, { cause: err });
    }
    if (setup.adapters) disposables.push(setup.adapters);
    if (setup.flagOverride) notes.push(setup.flagOverride);
    const optimizer = new binding.AdamW(setup.groups);
    disposables.push(optimizer);
    const baseRates = setup.groups.map((g) => g.lr);
    if (tf32Before !== null) binding.setAllowTF32(true);
    if (outDir) await ensureWritableDir(outDir);
    if (saved) await restoreTrainingState(binding, saved.directory, setup.trainable, optimizer);

    // Frozen: encode every text once; the head's epochs run on the features.
    if (opts.technique === 'frozen' && opts.featureCache !== 'none') {
      const disk =
        opts.featureCache === 'disk' ? { dir: opts.featureCacheDir, encoderFile: opts.encoder, pooling: opts.pooling } : undefined;
      const tokensPerBatch = TOKENS_PER_FORWARD;
      const train = await encodeOnce(binding, model, trainSet, {
        tokensPerBatch,
        split: 'train',
        disk,
        onProgress: opts.onProgress,
        signal,
      });
      disposables.push(train.features);
      const validation = await encodeOnce(binding, model, validationSet, {
        tokensPerBatch,
        split: 'validation',
        disk,
        onProgress: opts.onProgress,
        signal,
      });
      disposables.push(validation.features);
      caches = { train, validation };
    }

    const config: ClassifierConfig = {
      format: 'torch-bert-classifier',
      formatVersion: 1,
      labels,
      ...csvColumns(opts.data),
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
        lora: opts.technique === 'lora' ? opts.lora : undefined,
        epochs: opts.epochs,
        batchSize: opts.batchSize,
        learningRate: opts.learningRate,
        encoderLearningRate: opts.technique === 'full' ? (opts.encoderLearningRate ?? opts.learningRate) : undefined,
        weightDecay: opts.weightDecay,
        betas: opts.betas,
        eps: opts.eps,
        schedule: opts.schedule,
        warmupRatio: opts.warmupRatio,
        gradientAccumulationSteps: opts.gradientAccumulationSteps,
        maxGradNorm: opts.maxGradNorm,
        classWeights: loss.classWeights ? Array.from(loss.classWeights) : undefined,
        labelSmoothing: opts.labelSmoothing,
        validationSplit: validationRaw ? null : opts.validationSplit,
        bestMetric: opts.bestMetric,
        seed: opts.seed,
        device,
        precision: opts.precision,
      },
      metrics: {},
      createdAt: new Date().toISOString(),
    };

    const batchesPerEpoch = Math.ceil(trainSet.count / opts.batchSize);
    const stepsPerEpoch = Math.ceil(batchesPerEpoch / opts.gradientAccumulationSteps);
    const totalSteps = stepsPerEpoch * opts.epochs;
    const warmupSteps = Math.ceil(totalSteps * opts.warmupRatio);
    const position: RunPosition = saved?.position ?? {
      epoch: 1,
      batch: 0,
      optimizerSteps: 0,
      history: [],
      evaluations: [],
      bestValue: null,
      evaluationsWithoutImprovement: 0,
      epochLossSum: 0,
      epochCorrect: 0,
      epochSeen: 0,
    };
    let bestMetrics: ClassificationMetrics | undefined;
    // The guard against silent no-op training: the first step that updates the weights (not an
    // accumulate-only, skipped or overflowed one) lists trainable parameters without a gradient.
    let gradientsChecked = false;
    const skippedSteps: TrainResult['skippedSteps'] = [];
    let stoppedEarly = false;
    const better = (value: number) =>
      position.bestValue === null || (opts.bestMetric === 'loss' ? value < position.bestValue : value > position.bestValue);

    const evaluate = async (epoch: number): Promise<Evaluation> => {
      const result = await validate(
        binding,
        model,
        { encoded: validationSet, labels: validationLabels, cache: caches?.validation ?? null },
        opts.batchSize,
        padTo,
        evalOptions,
        labels,
        signal,
      );
      const value =
        opts.bestMetric === 'loss' ? result.loss : opts.bestMetric === 'accuracy' ? result.metrics.accuracy : result.metrics.macroF1;
      const evaluation: Evaluation = {
        epoch,
        step: position.optimizerSteps,
        validationLoss: result.loss,
        validationAccuracy: result.metrics.accuracy,
        validationMacroF1: result.metrics.macroF1,
        isBest: better(value),
      };
      position.evaluations.push(evaluation);
      if (evaluation.isBest) {
        position.bestValue = value;
        position.evaluationsWithoutImprovement = 0;
        bestMetrics = result.metrics;
        config.metrics = {
          epoch,
          step: position.optimizerSteps,
          validationLoss: result.loss,
          validationAccuracy: result.metrics.accuracy,
          validationMacroF1: result.metrics.macroF1,
        };
        await writeCheckpoint(bestDir, model, {
          config,
          tokenizerJson: tokenizer.json,
          history: position.history,
          archives: setup.adapters ? adapterArchives(binding, setup.adapters, model) : [],
        });
      } else {
        position.evaluationsWithoutImprovement++;
      }
      opts.onProgress?.({ type: 'evaluation', ...evaluation });
      return evaluation;
    };

    const saveState = async (at: RunPosition) => {
      if (!outDir) return;
      await saveTrainingState(binding, outDir, { fingerprint, position: at, tensors: setup.trainable, optimizer });
    };

    for (; position.epoch <= opts.epochs; position.epoch++) {
      const epoch = position.epoch;
      const epochStart = performance.now();
      model.train(true);
      // Same permutation as Python's torch.randperm(n, generator=Generator().manual_seed(seed + epoch)).
      const batches = epochBatches(
        binding.randperm(trainSet.count, opts.seed + epoch),
        opts.batchSize,
        opts.groupByLength ? trainSet.lengths : undefined,
      );
      let lastEvaluation: Evaluation | undefined;
      const startedAtBatch = position.batch;
      for (; position.batch < batches.length; position.batch++) {
        const b = position.batch;
        if (signal?.aborted) {
          await saveState(position);
          throw new AbortError(
            `training aborted at epoch ${epoch}, batch ${b + 1}/${batches.length}` +
              (outDir ? `; resume with resumeFrom: '${outDir}' (CLI: --resume ${outDir})` : ''),
            { cause: signal.reason },
          );
        }
        const rows = batches[b]!;
        const windowStart = b - (b % opts.gradientAccumulationSteps);
        const windowSize = Math.min(opts.gradientAccumulationSteps, batches.length - windowStart);
        const endsWindow = b === windowStart + windowSize - 1;
        if (endsWindow) {
          const factor = learningRateFactor(opts.schedule, position.optimizerSteps, totalSteps, warmupSteps);
          baseRates.forEach((lr, g) => {
            optimizer.setLr(g, lr * factor);
          });
        }
        const stepOptions = {
          ...loss,
          precision: opts.precision,
          maxGradNorm: opts.maxGradNorm,
          accumulateOnly: !endsWindow,
          lossScale: 1 / windowSize,
          skipNonFinite: opts.onNonFinite === 'skip',
          checkGradients: endsWindow && !gradientsChecked,
        };
        const batchLabels = Int32Array.from(rows, (i) => trainLabels[i]!);
        const result = caches
          ? await binding.headTrainStep(model, optimizer, caches.train.features, featureRows(caches.train, rows), batchLabels, stepOptions)
          : await (() => {
              const batch = gatherRows(trainSet, rows, padTo);
              return binding.trainStep(
                model,
                optimizer,
                {
                  inputIds: batch.inputIds,
                  attentionMask: batch.attentionMask,
                  batchSize: batch.count,
                  seqLen: batch.seqLen,
                  labels: batchLabels,
                },
                stepOptions,
              );
            })();
        if (stepOptions.checkGradients && !result.skipped && !result.overflow) {
          const missing = missingGradientsError(result.missingGradients ?? [], setup);
          if (missing) throw missing;
          gradientsChecked = true;
        }
        if (result.skipped || !Number.isFinite(result.loss) || (result.gradNorm !== null && !Number.isFinite(result.gradNorm))) {
          const what = Number.isFinite(result.loss) ? `gradient norm became ${result.gradNorm}` : `loss became ${result.loss}`;
          const where = `at epoch ${epoch}, batch ${b + 1} (training rows ${Array.from(rows.subarray(0, 8)).join(', ')}${rows.length > 8 ? ', ...' : ''})`;
          if (opts.onNonFinite === 'stop') {
            throw new NumericalError(
              `training ${what} ${where}; the best checkpoint so far is kept. Lower the learning rate, or set onNonFinite: 'skip'`,
            );
          }
          // 'skip': the native step applied nothing; the batch counts for nothing.
          skippedSteps.push({ epoch, batch: b + 1, reason: what });
          if (endsWindow) position.optimizerSteps++;
          continue;
        }
        position.epochLossSum += result.loss * rows.length;
        position.epochCorrect += result.correct;
        position.epochSeen += rows.length;
        if (endsWindow) position.optimizerSteps++;
        const elapsed = (performance.now() - epochStart) / 1000;
        const done = b + 1 - startedAtBatch;
        opts.onProgress?.({
          type: 'step',
          epoch,
          step: b + 1,
          stepsPerEpoch: batches.length,
          loss: result.loss,
          epochLoss: position.epochLossSum / position.epochSeen,
          examplesPerSecond: position.epochSeen / elapsed,
          etaSeconds: (elapsed / done) * (batches.length - b - 1),
        });
        const isLastBatch = b === batches.length - 1;
        if (endsWindow && !isLastBatch && typeof opts.evaluateEvery === 'number' && position.optimizerSteps % opts.evaluateEvery === 0) {
          lastEvaluation = await evaluate(epoch);
          model.train(true);
          if (opts.earlyStoppingPatience > 0 && position.evaluationsWithoutImprovement >= opts.earlyStoppingPatience) {
            stoppedEarly = true;
            break;
          }
        }
      }
      if (!stoppedEarly) lastEvaluation = await evaluate(epoch);
      const metrics: EpochMetrics = {
        epoch,
        trainLoss: position.epochLossSum / Math.max(1, position.epochSeen),
        trainAccuracy: position.epochCorrect / Math.max(1, position.epochSeen),
        validationLoss: lastEvaluation!.validationLoss,
        validationAccuracy: lastEvaluation!.validationAccuracy,
        validationMacroF1: lastEvaluation!.validationMacroF1,
        seconds: (performance.now() - epochStart) / 1000,
        isBest: lastEvaluation!.isBest,
      };
      position.history.push(metrics);
      position.batch = 0;
      position.epochLossSum = 0;
      position.epochCorrect = 0;
      position.epochSeen = 0;
      opts.onProgress?.({ type: 'epoch', epochs: opts.epochs, ...metrics });
      if (!stoppedEarly && opts.earlyStoppingPatience > 0 && position.evaluationsWithoutImprovement >= opts.earlyStoppingPatience) {
        stoppedEarly = true;
      }
      if (stoppedEarly) break;
      if (epoch < opts.epochs) await saveState({ ...position, epoch: epoch + 1 });
    }

    const bestEvaluation = position.evaluations.filter((e) => e.isBest).at(-1)!;
    const best = position.history.find((h) => h.epoch === bestEvaluation.epoch) ?? position.history.at(-1)!;
    if (!bestMetrics) {
      // A resumed run whose best came before the interruption: measure the kept weights again.
      const kept = await binding.ScriptModule.loadAsync(join(bestDir, CLASSIFIER_FILE), device);
      const again = await validate(
        binding,
        kept,
        { encoded: validationSet, labels: validationLabels, cache: null },
        opts.batchSize,
        padTo,
        evalOptions,
        labels,
        signal,
      );
      bestMetrics = again.metrics;
      kept.dispose();
    }
    if (outDir) {
      await writeFileAtomic(join(outDir, HISTORY_FILE), JSON.stringify(position.history, null, 2) + '\n');
      if (opts.report) {
        await writeFileAtomic(
          join(outDir, 'report.html'),
          renderReport({
            title: `torch-bert — ${opts.technique} fine-tuning`,
            history: position.history,
            evaluations: position.evaluations.map((e) => ({ ...e })),
            final: bestMetrics,
            labels,
            settings: {
              encoder: opts.encoder,
              tokenizer: opts.tokenizer,
              ...config.hyperparameters,
              trainableParameters: setup.trainableParameters,
            },
            createdAt: config.createdAt,
          }),
        );
      }
    }
    const bestModule = await binding.ScriptModule.loadAsync(join(bestDir, CLASSIFIER_FILE), device);
    bestModule.train(false);
    if (!outDir) await rm(bestDir, { recursive: true, force: true });
    return {
      labels,
      history: position.history,
      evaluations: position.evaluations,
      best,
      metrics: bestMetrics,
      encoder: built.encoder,
      technique: opts.technique,
      trainableParameters: setup.trainableParameters,
      totalParameters: setup.totalParameters,
      trainableEncoderFraction: setup.trainableEncoderFraction,
      unusedParameters: setup.unusedParameters,
      frozenParameters: setup.frozenByOption,
      notes,
      trainExamples: trainSet.count,
      validationExamples: validationSet.count,
      stoppedEarly,
      skippedSteps,
      outDir,
      classifier: Classifier.fromModule(bestModule, tokenizer, config),
    };
  } catch (err) {
    if (!outDir) await rm(bestDir, { recursive: true, force: true });
    if (err instanceof Error && err.name === 'AbortError' && !(err instanceof AbortError)) {
      throw new AbortError('training aborted', { cause: err });
    }
    throw err;
  } finally {
    if (tf32Before !== null) binding.setAllowTF32(tf32Before);
    for (const d of disposables.reverse()) d.dispose();
  }
}
