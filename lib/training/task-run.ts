/**
 * A rank's run of a task trainer — pretrain() (masked LM), trainTokenClassifier(),
 * trainQuestionAnswering() — as one skeleton around what each task does its own way. The task
 * prepares stages 1–3 (its data, its model and where the run starts, what trains); this file
 * runs what they share: the output folder claimed (rank 0), the run's bookkeeping (run-keeper.ts:
 * validation, the best checkpoint, early stopping, the resumable state), the loop
 * (training-loop.ts), and the finish (history.json, the state removed), every native part
 * disposed however the run ends. train() keeps its own stages (classification/trainer.ts): its
 * feature cache and reports are its alone.
 */
import { join } from 'node:path';
import type { NativeBinding } from '../addon/binding.js';
import { asAbortError, InputError } from '../addon/errors.js';
import { HISTORY_FILE, writeFileAtomic } from '../files/checkpoint.js';
import type { ModelFolderRead, OutputKind } from '../files/output-folder.js';
import { type Distributed, rankZeroDecides } from './distributed.js';
import type { BestMetric, Evaluation, ResolvedTrainOptions } from './options.js';
import { RunKeeper, type Validation } from './run-keeper.js';
import { runTrainingLoop, type Task, type Trainee } from './training-loop.js';
import { claimRunFolder, type RunPosition, removeTrainingState, stateSaver } from './training-state.js';

/** What a task has made ready when the loop can start (stages 1–3); `M`, its validation's metrics. */
export interface PreparedTask<M> {
  /** Where the run starts: a fresh run's, or the resumed one's. */
  position: RunPosition;
  /** What the training state records of the run, for a resume to check. */
  fingerprint: Record<string, unknown>;
  /** The model folder the run reads (an output folder may not be it). */
  modelFolder: ModelFolderRead | null;
  trainee: Trainee;
  /** Training rows an epoch (examples, windows), before the ranks' shares. */
  trainRows: number;
  task: Task<unknown>;
  validate(): Promise<Validation<M>>;
  /** Writes the kept folder: a new best (rank 0 alone calls it). */
  checkpoint(evaluation: Evaluation): Promise<void>;
}

/** The metrics a prepared task's validation gives. */
type MetricsOf<P extends PreparedTask<unknown>> = Awaited<ReturnType<P['validate']>>['metrics'];

export interface TaskRun<P extends PreparedTask<unknown>, R> {
  /** The run's folder, and what kind of folder it is; rank 0 alone writes it. */
  outDir: string;
  kind: OutputKind;
  /** The message of the AbortError an aborted run throws. */
  aborted: string;
  /** The score that keeps the best weights where the task decides it (pretraining: the loss); else the options'. */
  bestMetric?: BestMetric;
  /** Stages 1–3, the task's own; native parts it makes go in `disposables`, freed when the run ends. */
  prepare(disposables: Array<{ dispose(): void }>): Promise<P>;
  /** The task's result of a finished run. */
  result(prepared: P, keeper: RunKeeper<MetricsOf<P>>): R;
}

/** What every task's result says of its run: its history and evaluations, the kept one and its metrics, how it ended. */
export function keptRun<M>(position: RunPosition, keeper: RunKeeper<M>) {
  return {
    history: position.history,
    evaluations: position.evaluations,
    best: keeper.bestEvaluation()!, // a finished run has evaluated at least once
    metrics: keeper.bestMetrics,
    stoppedEarly: keeper.stoppedEarly,
    skippedBatches: position.skippedBatches,
  };
}

/**
 * A `share` of `count` examples held out for validation, drawn by the seed (torch.randperm, the
 * first ones held out), at least one, leaving at least one to train on: the indices of each.
 * `caller` and `noun` (sentences, questions) name the refusal.
 */
export function heldOut(
  binding: NativeBinding,
  count: number,
  share: number,
  seed: number,
  names: { caller: string; noun: string },
): { train: Int32Array; validation: Int32Array } {
  const held = Math.max(1, Math.floor(count * share));
  if (count - held < 1) {
    throw new InputError(
      `${names.caller}: ${count} ${names.noun}(s) leave none to train on once ${held} are held out for validation: give more ${names.noun}s or validationData`,
    );
  }
  const order = binding.randperm(count, seed);
  return { train: order.subarray(held), validation: order.subarray(0, held) };
}

export async function runTaskRank<P extends PreparedTask<unknown>, R>(
  binding: NativeBinding,
  opts: ResolvedTrainOptions,
  dist: Distributed | null,
  run: TaskRun<P, R>,
): Promise<R> {
  // Rank 0 alone writes the folder, the training state and the history.
  const writes = !dist || dist.isMain;
  if (opts.threads !== undefined) binding.setNumThreads(opts.threads);
  const disposables: Array<{ dispose(): void }> = [];
  // Held from before the first write into outDir until the run ends, however it ends.
  let releaseOutDir: (() => Promise<void>) | undefined;
  try {
    // 1–3. The task's data, model, start and what trains.
    const prepared = await run.prepare(disposables);
    const { position, trainee } = prepared;
    if (writes) releaseOutDir = await claimRunFolder(run.outDir, run.kind, opts.resumeFrom, prepared.modelFolder);

    // 4. The loop; data-parallel, rank 0 decides the best and early stopping.
    const keeper = new RunKeeper<MetricsOf<P>>(
      position,
      { ...opts, bestMetric: run.bestMetric ?? opts.bestMetric },
      {
        validate: () => prepared.validate() as Promise<Validation<MetricsOf<P>>>,
        agree: rankZeroDecides(dist),
        checkpoint: async (evaluation) => {
          if (writes) await prepared.checkpoint(evaluation);
        },
        saveState: stateSaver(
          binding,
          writes ? run.outDir : undefined,
          { fingerprint: prepared.fingerprint, tensors: trainee.setup.trainable, optimizer: trainee.optimizer },
          dist,
        ),
        onProgress: opts.onProgress,
      },
    );
    await runTrainingLoop(prepared.task, trainee, keeper, {
      ...opts,
      trainRows: prepared.trainRows,
      randperm: binding.randperm,
      rank: dist ?? undefined,
    });

    // 5. Finish.
    if (writes) {
      await writeFileAtomic(join(run.outDir, HISTORY_FILE), JSON.stringify(position.history, null, 2) + '\n');
      await removeTrainingState(run.outDir);
    }
    return run.result(prepared, keeper);
  } catch (err) {
    throw asAbortError(err, run.aborted);
  } finally {
    for (const d of disposables.reverse()) d.dispose();
    await releaseOutDir?.();
  }
}
