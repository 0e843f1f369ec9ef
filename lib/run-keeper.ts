/**
 * The one place that decides what a training run keeps and when it stops: each validation pass,
 * whether it is a new best by `bestMetric` (then the weights are checkpointed), the epoch's
 * record in the history, early stopping, and the resumable training state at each epoch's end
 * and on abort. The training loop (training-loop.ts) only tells it where the run stands.
 */
import type { BestMetric, EpochMetrics, Evaluation, ProgressEvent } from './options.js';
import type { RunPosition } from './training-state.js';

/** One validation pass as a task measures it: the three numbers the run compares, and the task's full metrics. */
export interface Validation<M> {
  loss: number;
  accuracy: number;
  macroF1: number;
  metrics: M;
}

export interface KeeperRules {
  bestMetric: BestMetric;
  /** Evaluations without improvement that end the run; 0 = never. */
  earlyStoppingPatience: number;
  /** Evaluate at each epoch's end, and also every N optimizer steps when a number. */
  evaluateEvery: 'epoch' | number;
  epochs: number;
}

export interface KeeperHooks<M> {
  /** A validation pass of the model as it is now. */
  validate(): Promise<Validation<M>>;
  /** Keep the model as it is now: a new best. */
  checkpoint(evaluation: Evaluation): Promise<void>;
  /** Save the resumable training state at `position` (nothing without an output directory). */
  saveState(position: RunPosition): Promise<void>;
  onProgress?: (event: ProgressEvent) => void;
}

/** Where a fresh run starts. */
export function startPosition(): RunPosition {
  return {
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
    skippedBatches: [],
  };
}

export class RunKeeper<M> {
  /** True once early stopping has ended the run. */
  stoppedEarly = false;
  /** Full metrics of the kept weights, when this process measured them (not a resumed run's earlier best). */
  bestMetrics: M | undefined;
  private lastEvaluation: Evaluation | undefined;

  constructor(
    readonly position: RunPosition,
    private readonly rules: KeeperRules,
    private readonly hooks: KeeperHooks<M>,
  ) {}

  /** Whether an evaluation is due after this optimizer step (every `evaluateEvery` steps). */
  evaluationDue(): boolean {
    const every = this.rules.evaluateEvery;
    return typeof every === 'number' && this.position.optimizerSteps % every === 0;
  }

  /** An evaluation within an epoch. True when early stopping ends the run. */
  async evaluateMidEpoch(epoch: number): Promise<boolean> {
    await this.evaluate(epoch);
    this.stoppedEarly = this.patienceRunOut();
    return this.stoppedEarly;
  }

  /**
   * The epoch's end: evaluate (unless early stopping just did), record the epoch, and save the
   * state to resume at the next epoch. True when the run ends here by early stopping.
   */
  async endEpoch(epoch: number, startedAt: number): Promise<boolean> {
    const position = this.position;
    if (!this.stoppedEarly) await this.evaluate(epoch);
    const last = this.lastEvaluation!;
    const metrics: EpochMetrics = {
      epoch,
      trainLoss: position.epochLossSum / Math.max(1, position.epochSeen),
      trainAccuracy: position.epochCorrect / Math.max(1, position.epochSeen),
      validationLoss: last.validationLoss,
      validationAccuracy: last.validationAccuracy,
      validationMacroF1: last.validationMacroF1,
      seconds: (performance.now() - startedAt) / 1000,
      isBest: last.isBest,
    };
    position.history.push(metrics);
    position.batch = 0;
    position.epochLossSum = 0;
    position.epochCorrect = 0;
    position.epochSeen = 0;
    this.hooks.onProgress?.({ type: 'epoch', epochs: this.rules.epochs, ...metrics });
    if (!this.stoppedEarly) this.stoppedEarly = this.patienceRunOut();
    if (this.stoppedEarly) return true;
    if (epoch < this.rules.epochs) await this.hooks.saveState({ ...position, epoch: epoch + 1 });
    return false;
  }

  /** An abort: save the state where the run stands, to resume exactly there. */
  saveInterrupted(): Promise<void> {
    return this.hooks.saveState(this.position);
  }

  /** The evaluation whose weights are kept (the last that was best). */
  bestEvaluation(): Evaluation {
    return this.position.evaluations.filter((e) => e.isBest).at(-1)!;
  }

  private patienceRunOut(): boolean {
    const patience = this.rules.earlyStoppingPatience;
    return patience > 0 && this.position.evaluationsWithoutImprovement >= patience;
  }

  private isBetter(value: number): boolean {
    const best = this.position.bestValue;
    return best === null || (this.rules.bestMetric === 'loss' ? value < best : value > best);
  }

  private async evaluate(epoch: number): Promise<void> {
    const position = this.position;
    const result = await this.hooks.validate();
    const value = this.rules.bestMetric === 'loss' ? result.loss : this.rules.bestMetric === 'accuracy' ? result.accuracy : result.macroF1;
    const evaluation: Evaluation = {
      epoch,
      step: position.optimizerSteps,
      validationLoss: result.loss,
      validationAccuracy: result.accuracy,
      validationMacroF1: result.macroF1,
      isBest: this.isBetter(value),
    };
    position.evaluations.push(evaluation);
    if (evaluation.isBest) {
      position.bestValue = value;
      position.evaluationsWithoutImprovement = 0;
      this.bestMetrics = result.metrics;
      await this.hooks.checkpoint(evaluation);
    } else {
      position.evaluationsWithoutImprovement++;
    }
    this.lastEvaluation = evaluation;
    this.hooks.onProgress?.({ type: 'evaluation', ...evaluation });
  }
}
