/**
 * The training loop, the same for every task: a task (classification today) supplies the batch
 * of some training rows and the native step on it; the loop decides which rows, in which order,
 * how micro-batches add up to one optimizer step, and the learning rate of each step. What is
 * kept and when the run stops is the RunKeeper's (run-keeper.ts).
 *
 * Words: a *batch* (micro-batch) is `batchSize` rows through forward and backward; an
 * *optimizer step* is one update, after `gradientAccumulationSteps` batches (its *window*).
 * Per optimizer step, as nanoGPT's train.py:
 *   1. set the step's learning rate (the schedule);
 *   2. micro-batch loop: forward + backward of each batch, its loss weighted by 1 / the window's
 *      batches so the window's gradient is their mean;
 *   3. on the window's last batch the native step also clips, steps AdamW and zeroes the
 *      gradients (one native call, so the gradients never cross into JavaScript).
 */
import { join } from 'node:path';
import type { NativeAdamW, NativeBinding, NativeScriptModule, TrainStepOptions, TrainStepResult } from '../addon/binding.js';
import { AbortError, NumericalError } from '../addon/errors.js';
import { epochBatches, learningRateFactor } from '../data/batching.js';
import { type Distributed, rankShare, startFromRankZero } from './distributed.js';
import type { ResolvedTrainOptions } from './options.js';
import type { RunKeeper } from './run-keeper.js';
import { missingGradientsError, type TrainableSet } from './trainable.js';
import { restoreTrainingState, type SavedState, STATE_DIR } from './training-state.js';

/** What the loop asks of one micro-batch's native step. */
export interface MicroBatchStep {
  /**
   * Weight of this batch's loss in the window's gradient: 1 / the window's batches, so that N
   * batches of B rows give the gradient of one batch of N·B. (Not fp16's gradient scaler scale,
   * which the native step applies on its own, nor clipping's coefficient.)
   */
  accumulationWeight: number;
  /** The window's last batch: after its backward the native step clips, steps the optimizer and zeroes the gradients. */
  endsWindow: boolean;
  /** List the trainable parameters left without a gradient, and apply nothing if there are any (the first applied update only). */
  checkGradients: boolean;
}

/** What every task's native step takes from the run, whatever its loss. */
export interface StepSettings {
  precision: ResolvedTrainOptions['precision'];
  maxGradNorm: number;
  skipNonFinite: boolean;
  /** Data-parallel training: the gradients are averaged over the process group before each update. */
  averageGradients?: boolean;
}

/** The native step's options for one micro-batch: the run's settings and where the batch stands in its window. */
export function nativeStepOptions(settings: StepSettings, step: MicroBatchStep): TrainStepOptions {
  return {
    precision: settings.precision,
    maxGradNorm: settings.maxGradNorm,
    accumulateOnly: !step.endsWindow,
    // The native option is named `lossScale`; it is the accumulation weight (fp16's gradient
    // scaler is the optimizer's own, `gradScaling`).
    lossScale: step.accumulationWeight,
    skipNonFinite: settings.skipNonFinite,
    checkGradients: step.checkGradients,
    ...(settings.averageGradients ? { averageGradients: true } : {}),
  };
}

/** What the loop reads of a micro-batch's native step (a TrainStepResult has these). */
export type StepOutcome = Pick<TrainStepResult, 'loss' | 'correct' | 'gradNorm' | 'skipped' | 'overflow' | 'missingGradients'>;

/** What a task supplies to the loop: its batch and its loss (inside the native step). */
export interface Task<Batch> {
  /** The batch of these training rows (indices into the training set), as `step` takes it. */
  batch(rows: Int32Array): Batch;
  /** Forward and backward of one batch, and on the window's last batch the update (see `MicroBatchStep`). */
  step(batch: Batch, step: MicroBatchStep): Promise<StepOutcome>;
  /**
   * What the loss of these rows is divided by (their count, or the sum of their class weights):
   * data-parallel training weights each rank's loss by its share of the global batch's.
   */
  lossNormaliser?(rows: Int32Array): number;
  /**
   * What the loss of this built batch is divided by, when only the batch knows it (the masked
   * tokens a masked-LM batch predicts): data-parallel training sums it over the ranks by an
   * all-reduce before the step and weights each rank's loss by its share.
   */
  batchLossNormaliser?(batch: Batch): number;
  /**
   * What the step's `correct` counts against when it is not the batch's rows (the masked tokens
   * of a masked-LM batch): the loop scales the batch's accuracy, correct / this, to its rows, so
   * that the epoch's accuracy is the mean batch accuracy; data-parallel, the global batch's
   * (the correct and this summed over the ranks), as one process with the global batch reports it.
   */
  accuracyNormaliser?(batch: Batch): number;
}

/** The model being trained and how it is updated. */
export interface Trainee {
  model: NativeScriptModule;
  optimizer: NativeAdamW;
  /** Each AdamW group's learning rate before the schedule's factor. */
  baseRates: number[];
  setup: TrainableSet;
}

/**
 * The trainee of every task once its model is built and what trains is decided: each
 * data-parallel rank starts from rank 0's weights (as DistributedDataParallel does), AdamW over
 * the groups (added to `disposables`), and a resumed run's tensors, moments and RNG put back.
 */
export async function startTrainee(
  binding: NativeBinding,
  model: NativeScriptModule,
  setup: TrainableSet,
  run: { dist: Distributed | null; saved: (SavedState & { directory: string }) | null; disposables: Array<{ dispose(): void }> },
): Promise<Trainee> {
  startFromRankZero(run.dist, setup.trainable);
  const optimizer = new binding.AdamW(setup.groups);
  run.disposables.push(optimizer);
  if (run.saved) await restoreTrainingState(binding, run.saved.directory, setup.trainable, optimizer, run.dist?.rank);
  return { model, optimizer, setup, baseRates: setup.groups.map((g) => g.lr) };
}

export type LoopOptions = Pick<
  ResolvedTrainOptions,
  'epochs' | 'batchSize' | 'gradientAccumulationSteps' | 'seed' | 'schedule' | 'warmupRatio' | 'onNonFinite' | 'onProgress' | 'signal'
> & {
  /** Rows in the training set. */
  trainRows: number;
  /** Token lengths of the training rows, for length-grouped batches; undefined for random ones. */
  groupLengths?: Int32Array;
  /** Said in the abort message: where the state to resume from is. */
  outDir?: string;
  /** libtorch's randperm(n, seed). */
  randperm: (n: number, seed: number) => Int32Array;
  /**
   * Data-parallel training (distributed.ts): this rank trains on its share of every epoch's
   * permutation, and whether to stop before a step is decided by all ranks together.
   */
  rank?: {
    rank: number;
    worldSize: number;
    agreeToStop(local: boolean): boolean;
    /** Sums over the ranks: a task's batchLossNormaliser, the global batch's loss and accuracy (what one process would report). */
    allReduce(values: ArrayLike<number>, op: 'sum'): Float64Array;
  };
};

/** A window of batches [start, end) of one epoch: the batches of one optimizer step. */
interface Window {
  start: number;
  end: number;
}

/** When the epoch started, and at which batch (a resumed epoch starts later), for rates and ETAs. */
interface EpochClock {
  startedAt: number;
  firstBatch: number;
}

/**
 * Train epoch by epoch from where `keeper.position` stands until the last epoch or early
 * stopping. Throws an AbortError (after saving the state) on abort, a NumericalError on a
 * non-finite loss or gradient with `onNonFinite: 'stop'`.
 */
export async function runTrainingLoop<Batch>(
  task: Task<Batch>,
  trainee: Trainee,
  keeper: RunKeeper<unknown>,
  options: LoopOptions,
): Promise<void> {
  const loop = new Loop(task, trainee, keeper, options);
  await keeper.begin();
  for (const position = keeper.position; position.epoch <= options.epochs; position.epoch++) {
    if (await loop.epoch(position.epoch)) break;
  }
}

class Loop<Batch> {
  private readonly totalSteps: number;
  private readonly warmupSteps: number;
  // The guard against silent no-op training: the first step that updates the weights (not an
  // accumulate-only, skipped or overflowed one) lists trainable parameters without a gradient.
  private gradientsChecked = false;
  // Data-parallel: every rank's batches of this epoch (the global batch k is the ranks' batches k).
  private rankBatches: Int32Array[][] | null = null;
  /** The learning rate of AdamW's first group (the head's) at the current optimizer step. */
  private learningRate = 0;

  constructor(
    private readonly task: Task<Batch>,
    private readonly trainee: Trainee,
    private readonly keeper: RunKeeper<unknown>,
    private readonly options: LoopOptions,
  ) {
    // Data-parallel: the rank's share of the rows (distributed.ts rankShare).
    const rows = options.rank ? Math.ceil(options.trainRows / options.rank.worldSize) : options.trainRows;
    const batchesPerEpoch = Math.ceil(rows / options.batchSize);
    const stepsPerEpoch = Math.ceil(batchesPerEpoch / options.gradientAccumulationSteps);
    this.totalSteps = stepsPerEpoch * options.epochs;
    this.warmupSteps = Math.ceil(this.totalSteps * options.warmupRatio);
  }

  /** One epoch, from the position's batch on. True when the run ends here (early stopping). */
  async epoch(epoch: number): Promise<boolean> {
    const { position } = this.keeper;
    const clock: EpochClock = { startedAt: performance.now(), firstBatch: position.batch };
    this.trainee.model.train(true);
    // Same permutation as Python's torch.randperm(n, generator=Generator().manual_seed(seed + epoch)).
    const permutation = this.options.randperm(this.options.trainRows, this.options.seed + epoch);
    // Data-parallel: the same permutation on every rank, each taking its share (DistributedSampler).
    const { rank } = this.options;
    const rows = rank ? rankShare(permutation, rank.rank, rank.worldSize) : permutation;
    const batches = epochBatches(rows, this.options.batchSize, this.options.groupLengths);
    if (rank) {
      this.rankBatches = Array.from({ length: rank.worldSize }, (_, r) =>
        epochBatches(rankShare(permutation, r, rank.worldSize), this.options.batchSize, this.options.groupLengths),
      );
    }
    for (const window of this.windows(batches.length, position.batch)) {
      // Only between optimizer steps: the gradients of a window's first batches are not part of
      // the saved state, so a state saved mid-window could not resume exactly.
      // Data-parallel: every rank stops at the same step when any rank is aborted.
      const aborted = this.options.signal?.aborted ?? false;
      if (this.options.rank ? this.options.rank.agreeToStop(aborted) : aborted) await this.abort(epoch, batches.length);
      const lastBatchApplied = await this.optimizerStep(epoch, batches, window, clock);
      // The epoch's last step is followed by the epoch's evaluation anyway. (A step whose last
      // batch was skipped is not followed by one, as before the loop was restructured.)
      if (lastBatchApplied && window.end < batches.length && this.keeper.evaluationDue()) {
        const stop = await this.keeper.evaluateMidEpoch(epoch);
        this.trainee.model.train(true); // validation left the model in eval mode
        if (stop) break;
      }
    }
    return this.keeper.endEpoch(epoch, clock.startedAt);
  }

  /**
   * The windows of an epoch of `batches` batches, from the one holding batch `from` (a state
   * saved mid-window by an older version resumes inside it, weighted as the whole window).
   */
  private windows(batches: number, from: number): Window[] {
    const size = this.options.gradientAccumulationSteps;
    const windows: Window[] = [];
    for (let start = from - (from % size); start < batches; start += size) windows.push({ start, end: Math.min(start + size, batches) });
    return windows;
  }

  /**
   * One optimizer step: its learning rate, then the micro-batch loop over its window (the native
   * step on the last batch clips, steps and zeroes the gradients). Returns whether the last
   * batch was applied (not skipped as non-finite).
   */
  private async optimizerStep(epoch: number, batches: Int32Array[], window: Window, clock: EpochClock): Promise<boolean> {
    const { position } = this.keeper;
    const factor = learningRateFactor(this.options.schedule, position.optimizerSteps, this.totalSteps, this.warmupSteps);
    this.trainee.baseRates.forEach((lr, group) => {
      this.trainee.optimizer.setLr(group, lr * factor);
    });
    this.learningRate = this.trainee.baseRates[0]! * factor;
    const accumulationWeight = 1 / (window.end - window.start);
    let applied = false;
    for (; position.batch < window.end; position.batch++) {
      const endsWindow = position.batch === window.end - 1;
      applied = await this.microBatch(epoch, batches, clock, {
        accumulationWeight,
        endsWindow,
        checkGradients: endsWindow && !this.gradientsChecked,
      });
    }
    // Counted whether or not its update was applied (skipped or overflowed): the schedule moves on.
    position.optimizerSteps++;
    return applied;
  }

  /** Forward and backward of the position's batch (and the update at the window's end). Returns whether it was applied. */
  private async microBatch(epoch: number, batches: Int32Array[], clock: EpochClock, step: MicroBatchStep): Promise<boolean> {
    const { position } = this.keeper;
    const rows = batches[position.batch]!;
    const batch = this.task.batch(rows);
    const weight = step.accumulationWeight * this.globalBatchShare(position.batch, rows, batch);
    const local = await this.task.step(batch, { ...step, accumulationWeight: weight });
    const { result, rowsSeen } = this.globalOutcome(local, rows, batch);
    if (step.checkGradients && !result.skipped && !result.overflow) {
      const missing = missingGradientsError(result.missingGradients ?? [], this.trainee.setup);
      if (missing) throw missing;
      this.gradientsChecked = true;
    }
    if (result.skipped || !Number.isFinite(result.loss) || (result.gradNorm !== null && !Number.isFinite(result.gradNorm))) {
      this.nonFinite(epoch, rows, result);
      return false;
    }
    position.epochLossSum += result.loss * rowsSeen;
    position.epochCorrect += result.correct;
    position.epochSeen += rowsSeen;
    this.reportBatch(epoch, batches.length, result.loss, clock);
    return true;
  }

  /**
   * Data-parallel: this rank's share of the global batch's loss normaliser, times the world size
   * (the gradients are averaged over the ranks), so that the averaged gradient is the global
   * batch's: an uneven last batch counts by its rows, class weights by their global sum, a
   * masked-LM batch by the global count of masked tokens (all-reduced). 1 alone.
   */
  private globalBatchShare(batch: number, rows: Int32Array, built: Batch): number {
    const { rank } = this.options;
    if (rank && this.task.batchLossNormaliser) {
      const local = this.task.batchLossNormaliser(built);
      const total = rank.allReduce([local], 'sum')[0]!;
      // Nothing to normalise here (no masked token): the loss is a zero with zero gradients
      // whatever its weight, and the native step takes weights > 0.
      return total > 0 && local > 0 ? (rank.worldSize * local) / total : 1;
    }
    const normaliser = this.task.lossNormaliser?.bind(this.task);
    if (!rank || !normaliser || !this.rankBatches) return 1;
    let total = 0;
    for (const batches of this.rankBatches) total += normaliser(batches[batch] ?? new Int32Array(0));
    // A share whose rows all weigh zero: its loss is a zero with zero gradients (native ComputeLoss).
    const local = normaliser(rows);
    return total > 0 && local > 0 ? (rank.worldSize * local) / total : 1;
  }

  /**
   * Data-parallel: the global batch's loss and correct count from every rank's (one sum): the loss
   * is each rank's mean weighted by its loss normaliser (rows, their class weights, or a masked-LM
   * batch's masked tokens), as one process's loss on the global batch is. So the history, the
   * progress and the non-finite check see the same numbers on every rank, those one process
   * would. Alone: the batch's own.
   */
  private globalOutcome(result: StepOutcome, rows: Int32Array, built: Batch): { result: StepOutcome; rowsSeen: number } {
    const { rank } = this.options;
    const counted = this.task.accuracyNormaliser?.(built);
    // `correct` counted against something else than rows: the accuracy scaled to the rows.
    const asRows = (correct: number, against: number, seen: number) =>
      counted === undefined ? correct : against > 0 ? (correct / against) * seen : 0;
    if (!rank) return { result: { ...result, correct: asRows(result.correct, counted ?? 0, rows.length) }, rowsSeen: rows.length };
    const normaliser = this.task.batchLossNormaliser?.(built) ?? this.task.lossNormaliser?.(rows) ?? rows.length;
    // A rank whose share ran out has no rows (and a loss of nothing): it adds zeros.
    const lossSum = rows.length > 0 ? result.loss * normaliser : 0;
    const [loss, normalisers, correct, seen, against] = rank.allReduce(
      [lossSum, normaliser, result.correct, rows.length, counted ?? 0],
      'sum',
    );
    // No masked token in the whole global batch: its loss is the zero each rank's is.
    const globalLoss = normalisers! > 0 ? loss! / normalisers! : 0;
    return { result: { ...result, loss: globalLoss, correct: asRows(correct!, against!, seen!) }, rowsSeen: seen! };
  }

  /** A NaN/Inf loss or gradient: stop the run, or with `onNonFinite: 'skip'` record the batch (the native step applied nothing). */
  private nonFinite(epoch: number, rows: Int32Array, result: StepOutcome): void {
    const { position } = this.keeper;
    const what = Number.isFinite(result.loss) ? `gradient norm became ${result.gradNorm}` : `loss became ${result.loss}`;
    const where = `at epoch ${epoch}, batch ${position.batch + 1} (training rows ${Array.from(rows.subarray(0, 8)).join(', ')}${rows.length > 8 ? ', ...' : ''})`;
    if (this.options.onNonFinite === 'stop') throw this.nonFiniteStop(`training ${what} ${where}`);
    position.skippedBatches.push({ epoch, batch: position.batch + 1, reason: what });
  }

  /**
   * The error that stops a run at a non-finite step. The way on is a new run with other options,
   * and in the same outDir that run is refused while this run's training state is there (it
   * resumes only this run, which replays to this step and stops again): the message says what to delete.
   */
  private nonFiniteStop(what: string): NumericalError {
    const { outDir } = this.options;
    return new NumericalError(
      what +
        this.keptCheckpoint() +
        "; lower the learning rate, or set onNonFinite: 'skip'" +
        (outDir ? `, and start again (in ${outDir}: delete ${join(outDir, STATE_DIR)} first, which resumes only this run)` : ''),
    );
  }

  private reportBatch(epoch: number, batchesPerEpoch: number, loss: number, clock: EpochClock): void {
    const { onProgress } = this.options;
    if (!onProgress) return;
    const { position } = this.keeper;
    const elapsed = (performance.now() - clock.startedAt) / 1000;
    const done = position.batch + 1 - clock.firstBatch;
    const progress = {
      epoch,
      loss,
      epochLoss: position.epochLossSum / position.epochSeen,
      examplesPerSecond: position.epochSeen / elapsed,
      etaSeconds: (elapsed / done) * (batchesPerEpoch - position.batch - 1),
    };
    onProgress({ type: 'batch', batch: position.batch + 1, batchesPerEpoch, learningRate: this.learningRate, ...progress });
    // The deprecated spelling, for one release (StepEvent).
    onProgress({ type: 'step', step: position.batch + 1, stepsPerEpoch: batchesPerEpoch, ...progress });
  }

  /** Save the state where the run stands (the start of an optimizer step) and end the run. */
  private async abort(epoch: number, batchesPerEpoch: number): Promise<never> {
    await this.keeper.saveInterrupted();
    const { outDir, signal } = this.options;
    throw new AbortError(
      `training aborted at epoch ${epoch}, batch ${this.keeper.position.batch + 1}/${batchesPerEpoch}` +
        // The same options: resuming refuses any other value (training-state.ts), and the CLI's
        // --resume alone is not a command (--data, --model, ... are still required).
        (outDir ? `; resume with the same options and resumeFrom: '${outDir}' (CLI: the same command with --resume ${outDir})` : '') +
        this.keptCheckpoint(),
      { cause: signal?.reason },
    );
  }

  /** Where the best checkpoint so far is kept, for a message that ends the run; '' without outDir (the best weights lived in a temporary folder of the run). */
  private keptCheckpoint(): string {
    const { outDir } = this.options;
    const kept = outDir ? this.keeper.bestEvaluation() : undefined;
    return kept ? `; the best checkpoint so far (epoch ${kept.epoch}, step ${kept.step}) is kept in ${outDir}` : '';
  }
}
