/**
 * What every command that trains shares: Ctrl-C and the launcher's stop (the run stops at a step
 * boundary), `--nproc-per-node`'s workers, and a Hub model fetched ahead with a progress bar.
 */
import { AbortError } from '../addon/errors.js';
import { resolveModelSource, terminalProgress } from '../models/hub.js';
import { DEFAULTS } from '../training/options.js';
import { numberOption, UsageError } from './args.js';
import { launchWorkers, STOP_SIGNAL, stopGrace, tellLauncherListening, withoutNproc } from './launcher.js';

/**
 * `--nproc-per-node`: a worker failed (`errors`, the workers' own, each once: launcher.ts
 * workerErrorLines; `failure` says which failed and how when its error does not), or the workers
 * stopped on request (no failure: each said where it stopped); the command exits with `exitCode`.
 */
export class WorkersFailed extends Error {
  constructor(
    readonly exitCode: number,
    readonly failure: string | undefined,
    readonly errors: readonly string[] = [],
    /** Which workers the launcher killed for not ending with the others (launcher.ts stopGrace). */
    readonly killed?: string,
  ) {
    super(failure ?? errors[0] ?? `the workers stopped with code ${exitCode}`);
  }
}

/**
 * Ctrl-C / SIGTERM stop training at the next step boundary; a second one exits at once. In a
 * data-parallel job rank 0 alone says so (quietWorker): Ctrl-C reaches every worker, and the ranks
 * stop at the same step boundary.
 */
export function interruptController(values: Record<string, unknown>): AbortController {
  const controller = new AbortController();
  const say = (text: string) => {
    if (!quietWorker(values)) process.stderr.write(text);
  };
  const onSignal = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) process.exit(130);
    say(`\n${sig}: stopping after the current step (again to quit now)\n`);
    controller.abort(new AbortError(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A worker of --nproc-per-node: its launcher's request to stop (launcher.ts STOP_SIGNAL) stops it
  // once and never escalates, since the terminal's Ctrl-C may have reached this worker already.
  const onStop = () => {
    if (controller.signal.aborted) return;
    // Asked after a signal to the launcher, or after another worker failed (launcher.ts).
    say('\nthe launcher asked the workers to stop: stopping after the current step\n');
    controller.abort(new AbortError('interrupted: the launcher asked the workers to stop'));
  };
  if (process.env.RANK !== undefined) process.on(STOP_SIGNAL, onStop);
  if (stopCameEarly) onStop();
  return controller;
}

/**
 * Whether a launcher's stop (launcher.ts STOP_SIGNAL) came before the run's interruptController
 * existed. A worker hears it from its start, and tells its launcher so (which holds a stop back
 * until then): the signal's default action ended a worker still setting up, before it could hand
 * over its own error (the same set-up error on every rank is said once only when every worker
 * hands it over: launcher.ts workerErrorLines).
 */
let stopCameEarly = false;
if (process.env.RANK !== undefined) {
  process.on(STOP_SIGNAL, () => {
    stopCameEarly = true;
  });
  tellLauncherListening();
}

/**
 * `--nproc-per-node N` (N > 1) on the launcher (not on a worker started by it or by torchrun,
 * which have RANK set): starts the workers of `command` (lib/cli/launcher.ts) and waits for them.
 * True when it did, and the command has nothing left to do.
 */
export async function launchedWorkers(command: string, values: Record<string, unknown>, argv: string[]): Promise<boolean> {
  const nproc = numberOption(values, 'nproc-per-node');
  if (nproc !== undefined && (!Number.isInteger(nproc) || nproc < 1))
    throw new UsageError(`--nproc-per-node expects an integer ≥ 1; got ${nproc}`);
  if (nproc === undefined || nproc === 1 || process.env.RANK !== undefined) return false;
  if (values.distributed === 'off') {
    throw new UsageError(`--nproc-per-node ${nproc} starts a data-parallel job, which --distributed off rules out: give one or the other`);
  }
  const timeout = numberOption(values, 'distributed-timeout') ?? DEFAULTS.distributedTimeout;
  const end = await launchWorkers(nproc, process.argv[1]!, [command, ...withoutNproc(argv)], stopGrace(timeout));
  if (end.code !== 0) throw new WorkersFailed(end.code, end.failure, end.errors, end.killed);
  return true;
}

/**
 * A worker of a data-parallel job other than rank 0 prints nothing of its own (rank 0 reports).
 * With `--distributed off` (`values`) a process where torchrun's variables are set trains alone,
 * so it is no worker of a job and reports as any run does.
 */
export function quietWorker(values?: Record<string, unknown>): boolean {
  return process.env.RANK !== undefined && process.env.RANK !== '0' && values?.distributed !== 'off';
}

/**
 * --model, when it is a Hub id, downloaded ahead with a progress bar per file if stderr is a
 * terminal: a large model would leave the terminal still for minutes, and of the library's calls
 * only train() and pretrain() report a download (to onProgress). The run then finds it in the
 * cache without a request. In a pipe, or on a worker other than rank 0, nothing is done here.
 */
export async function fetchModelWithProgress(values: Record<string, unknown>): Promise<void> {
  // A bar ends its line only when its file is complete: what was last written tells whether a
  // failed download left one open, for the error to go on a line of its own.
  let lineOpen = false;
  const stderr = process.stderr;
  const write = (text: string) => {
    lineOpen = !text.endsWith('\n');
    return stderr.write(text);
  };
  const onProgress = quietWorker(values) ? undefined : terminalProgress({ isTTY: stderr.isTTY, columns: stderr.columns, write });
  if (onProgress === undefined || typeof values.model !== 'string') return;
  try {
    await resolveModelSource(values.model, { tokenizer: values.tokenizer === undefined, onProgress });
  } catch (err) {
    if (lineOpen) stderr.write('\n');
    throw err;
  }
}
