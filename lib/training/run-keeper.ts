/**
 * The one place that decides what a training run keeps and when it stops: each validation pass,
 * whether it is a new best by `bestMetric` (then the weights are checkpointed), the epoch's
 * record in the history, early stopping, and the resumable training state (at the start, at each
 * epoch's end and on abort). The training loop (training-loop.ts) only tells it where the run stands.
 */
import type { BestMetric, EpochMetrics, Evaluation, ProgressEvent, TrainProblemType } from './options.js';
import type { RunPosition } from './training-state.js';

/**
 * A validation pass's scores by `bestMetric` name: classification's accuracy and macro-F1 (token
 * classification's also seqeval's entity F1), regression's Pearson and Spearman, or question
 * answering's SQuAD exact match and F1.
 */
export type ValidationScores =
  | { accuracy: number; macroF1: number; f1?: number }
  | { pearson: number; spearman: number }
  | { exactMatch: number; f1: number };

/** One validation pass as a task measures it: the numbers the run compares, and the task's full metrics. */
export interface Validation<M> {
  loss: number;
  scores: ValidationScores;
  metrics: M;
}

/** An evaluation's score fields, copied into its epoch's record. */
function scoreFieldsOf(e: Evaluation): Partial<EpochMetrics> {
  const { validationAccuracy, validationMacroF1, validationF1, validationExactMatch, validationPearson, validationSpearman } = e;
  return Object.fromEntries(
    Object.entries({
      validationAccuracy,
      validationMacroF1,
      validationF1,
      validationExactMatch,
      validationPearson,
      validationSpearman,
    }).filter(([, v]) => v !== undefined),
  );
}

/** An evaluation's (and epoch's) fields of the scores: `validationAccuracy`, `validationMacroF1` (`validationF1`); `validationPearson`, `validationSpearman`; or `validationExactMatch`, `validationF1`. */
function scoreFields(scores: ValidationScores): Partial<Evaluation> {
  if ('exactMatch' in scores) return { validationExactMatch: scores.exactMatch, validationF1: scores.f1 };
  if (!('accuracy' in scores)) return { validationPearson: scores.pearson, validationSpearman: scores.spearman };
  return {
    validationAccuracy: scores.accuracy,
    validationMacroF1: scores.macroF1,
    ...(scores.f1 !== undefined ? { validationF1: scores.f1 } : {}),
  };
}

/** The evaluation's value of `metric` (one its problem type has: options.ts checks). */
function scoreOf(evaluation: Evaluation, metric: BestMetric): number {
  const field = {
    loss: 'validationLoss',
    accuracy: 'validationAccuracy',
    macroF1: 'validationMacroF1',
    f1: 'validationF1',
    exactMatch: 'validationExactMatch',
    pearson: 'validationPearson',
    spearman: 'validationSpearman',
  } as const;
  return evaluation[field[metric]]!;
}

export interface KeeperRules {
  bestMetric: BestMetric;
  /** Evaluations without improvement that end the run; 0 = never. */
  earlyStoppingPatience: number;
  /** Only single-label classification counts a training accuracy (regression and multi-label steps predict no one class). Absent: single-label. */
  problemType?: TrainProblemType;
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
  /**
   * Data-parallel: rank 0's numbers on every rank (distributed.ts fromMain). The decisions taken
   * after a validation (a new best? early stop?) are rank 0's, broadcast.
   */
  agree?: (decision: number[]) => number[];
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

  /**
   * Before a fresh run's first step: its state saved, so that a run killed before its first
   * epoch ends can be resumed too (a mid-epoch evaluation may have checkpointed by then, and the
   * state is what tells an unfinished run's folder from a finished one's). A run resumed at this
   * position saves the same state again.
   */
  async begin(): Promise<void> {
    const { epoch, batch, optimizerSteps } = this.position;
    if (epoch === 1 && batch === 0 && optimizerSteps === 0) await this.hooks.saveState(this.position);
  }

  /** Whether an evaluation is due after this optimizer step (every `evaluateEvery` steps). */
  evaluationDue(): boolean {
    const every = this.rules.evaluateEvery;
    return typeof every === 'number' && this.position.optimizerSteps % every === 0;
  }

  /** An evaluation within an epoch. True when early stopping ends the run. */
  async evaluateMidEpoch(epoch: number): Promise<boolean> {
    this.stoppedEarly = await this.evaluate(epoch);
    return this.stoppedEarly;
  }

  /**
   * The epoch's end: evaluate (unless early stopping just did), record the epoch, and save the
   * state to resume at the next epoch. True when the run ends here by early stopping.
   */
  async endEpoch(epoch: number, startedAt: number): Promise<boolean> {
    const position = this.position;
    const evaluates = !this.stoppedEarly;
    const stop = this.stoppedEarly || (await this.evaluate(epoch, { atEpochEnd: true }));
    const last = this.lastEvaluation!;
    const metrics: EpochMetrics = {
      epoch,
      trainLoss: position.epochLossSum / Math.max(1, position.epochSeen),
      // Only a step that predicts one class per row counts right ones (a regression or multi-label step counts none).
      ...((this.rules.problemType ?? 'single_label_classification') === 'single_label_classification'
        ? { trainAccuracy: position.epochCorrect / Math.max(1, position.epochSeen) }
        : {}),
      validationLoss: last.validationLoss,
      ...scoreFieldsOf(last),
      seconds: (performance.now() - startedAt) / 1000,
      isBest: last.isBest,
    };
    position.history.push(metrics);
    // The epoch's own evaluation: a new best is checkpointed now, with this epoch in its history.
    if (evaluates) await this.recordEvaluation(last);
    position.batch = 0;
    position.epochLossSum = 0;
    position.epochCorrect = 0;
    position.epochSeen = 0;
    this.hooks.onProgress?.({ type: 'epoch', epochs: this.rules.epochs, ...metrics });
    this.stoppedEarly = stop;
    if (this.stoppedEarly) return true;
    if (epoch < this.rules.epochs) await this.hooks.saveState({ ...position, epoch: epoch + 1 });
    return false;
  }

  /** An abort: save the state where the run stands, to resume exactly there. */
  saveInterrupted(): Promise<void> {
    return this.hooks.saveState(this.position);
  }

  /** The evaluation whose weights are kept (the last that was best); none before the first evaluation. */
  bestEvaluation(): Evaluation | undefined {
    return this.position.evaluations.filter((e) => e.isBest).at(-1);
  }

  private patienceRunOut(withoutImprovement: number): boolean {
    const patience = this.rules.earlyStoppingPatience;
    return patience > 0 && withoutImprovement >= patience;
  }

  private isBetter(value: number): boolean {
    const best = this.position.bestValue;
    return best === null || (this.rules.bestMetric === 'loss' ? value < best : value > best);
  }

  /**
   * A validation pass, recorded; a new best is checkpointed (at an epoch's end, by endEpoch once
   * the epoch is in the history). True when early stopping ends the run here.
   */
  private async evaluate(epoch: number, { atEpochEnd = false } = {}): Promise<boolean> {
    const position = this.position;
    const result = await this.hooks.validate();
    const measured = { validationLoss: result.loss, ...scoreFields(result.scores) };
    const value = scoreOf({ epoch, step: 0, isBest: false, ...measured }, this.rules.bestMetric);
    let isBest = this.isBetter(value);
    let stop = this.patienceRunOut(isBest ? 0 : position.evaluationsWithoutImprovement + 1);
    if (this.hooks.agree) {
      // Data-parallel: rank 0 decides, every rank follows. The reduced metrics are the same on every
      // rank, so the ranks would agree anyway; but a rank that checkpointed or stopped alone would
      // leave the others waiting in a collective it never joins, so the decision is one rank's by
      // construction rather than equal by arithmetic.
      const [best, end] = this.hooks.agree([isBest ? 1 : 0, stop ? 1 : 0]);
      isBest = best === 1;
      stop = end === 1;
    }
    const evaluation: Evaluation = {
      epoch,
      step: position.optimizerSteps,
      ...measured,
      isBest,
    };
    position.evaluations.push(evaluation);
    if (evaluation.isBest) {
      position.bestValue = value;
      position.evaluationsWithoutImprovement = 0;
      this.bestMetrics = result.metrics;
    } else {
      position.evaluationsWithoutImprovement++;
    }
    this.lastEvaluation = evaluation;
    if (!atEpochEnd) await this.recordEvaluation(evaluation);
    return stop;
  }

  /** A new best's checkpoint, then the evaluation's progress event (a listener finds the checkpoint written). */
  private async recordEvaluation(evaluation: Evaluation): Promise<void> {
    if (evaluation.isBest) await this.hooks.checkpoint(evaluation);
    this.hooks.onProgress?.({ type: 'evaluation', ...evaluation });
  }
}
