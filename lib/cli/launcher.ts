/**
 * `torch-bert train --nproc-per-node N` (and `pretrain`): torchrun's single-machine launch
 * without Python. The command starts N copies of itself (the same arguments, without
 * --nproc-per-node), each with the variables torchrun would set (RANK = LOCAL_RANK = 0..N-1,
 * WORLD_SIZE = LOCAL_WORLD_SIZE = N, MASTER_ADDR 127.0.0.1 and a free MASTER_PORT unless given),
 * their output going to this command's. Each worker joins the group through train()'s or
 * pretrain()'s `distributed: 'auto'` and uses the cores / N threads. The first worker to fail
 * stops the others (as torchrun does), and the command exits with its code; a worker still
 * running `stopGrace` after another ended is killed. A SIGINT or SIGTERM
 * sent to the launcher alone (`kill PID`, a supervisor) is passed on, so the workers save and stop
 * instead of training on as orphans. The workers' errors are the launcher's to print, each once
 * (`workerErrorLines`): a worker hands its error to the launcher (`handErrorToLauncher`), and tells
 * it when it hears STOP_SIGNAL (`tellLauncherListening`).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Readable } from 'node:stream';

/** A port free now on 127.0.0.1 (the operating system's choice). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** `args` (after the command name) without `--nproc-per-node N` / `--nproc-per-node=N`. */
export function withoutNproc(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--nproc-per-node') i++;
    else if (!args[i]!.startsWith('--nproc-per-node=')) out.push(args[i]!);
  }
  return out;
}

/**
 * torchrun's variables for rank `rank` of `worldSize` on one machine (RANK = LOCAL_RANK, WORLD_SIZE
 * = LOCAL_WORLD_SIZE, node 0), its master at `masterAddr:masterPort`.
 */
export function rankVariables(rank: number, worldSize: number, masterPort: number | string, masterAddr = '127.0.0.1') {
  return {
    RANK: String(rank),
    LOCAL_RANK: String(rank),
    WORLD_SIZE: String(worldSize),
    LOCAL_WORLD_SIZE: String(worldSize),
    GROUP_RANK: '0',
    MASTER_ADDR: masterAddr,
    MASTER_PORT: String(masterPort),
  };
}

/**
 * The signal the launcher sends its workers to stop at the next step boundary and save. Not SIGINT
 * or SIGTERM: a worker takes a second one of those as "quit now", unsaved, and a worker may already
 * have had one from the terminal (Ctrl-C reaches the whole process group) or from a group kill
 * (`timeout`); this one stops a worker once and is a no-op after that (run-control.ts interruptController).
 */
export const STOP_SIGNAL: NodeJS.Signals = 'SIGUSR2';

/** A worker that stopped on request (Ctrl-C, SIGTERM) exits with this code, its state saved. */
export const INTERRUPTED_EXIT = 130;

/**
 * The variable that tells a worker of the launcher which file descriptor reaches the launcher (a
 * pipe it reads: WorkerMessage, one JSON line each); unset in any other process, which prints its
 * error itself.
 */
export const LAUNCHER_FD_VARIABLE = 'TORCH_BERT_LAUNCHER_FD';

/** The workers' descriptor to the launcher: the first after stdin, stdout and stderr. */
const LAUNCHER_FD = 3;

/** A worker's error as it hands it to the launcher: what it would have printed, and whether it only relays another rank's failure. */
export interface WorkerError {
  said: string;
  /** The rank failed because another could not start (RANK_FAILED_TO_START): that rank says why itself. */
  relayed: boolean;
}

/** What a worker tells the launcher: that it hears STOP_SIGNAL from now on, or its error. */
type WorkerMessage = { listening: true } | WorkerError;

/** In a worker of the launcher, sends `message` to it and returns true; elsewhere false. */
function tellLauncher(message: WorkerMessage): boolean {
  const fd = process.env[LAUNCHER_FD_VARIABLE];
  if (fd === undefined) return false;
  try {
    writeSync(Number(fd), `${JSON.stringify(message)}\n`);
    return true;
  } catch {
    return false;
  }
}

/** Whether this process is a worker of the launcher (`--nproc-per-node`): its stderr is the launcher's terminal, shared with the other workers. */
export function isLauncherWorker(): boolean {
  return process.env[LAUNCHER_FD_VARIABLE] !== undefined;
}

/** In a worker of the launcher, hands `error` to it and returns true; elsewhere false, and the caller prints it. */
export function handErrorToLauncher(error: WorkerError): boolean {
  return tellLauncher(error);
}

/**
 * Tells the launcher that this worker handles STOP_SIGNAL from now on. Until then the launcher
 * holds its stop back: the signal's default action would end a worker still starting (node
 * loading its modules) without a word, where it would go on to say its own error.
 */
export function tellLauncherListening(): void {
  tellLauncher({ listening: true });
}

/**
 * The workers' errors (by rank; undefined for a worker that reported none) as the command prints
 * them, each once. The workers run the same arguments on one machine, so a set-up error that one
 * meets (a missing file, a bad option, a model that does not load) every one meets: an error that
 * every worker reported is said once, as it is. Any other is said with the ranks that reported it
 * (`torch-bert: error: rank 1: ...`), so that one rank's failure names it. A relay of another
 * rank's failure (WorkerError.relayed) is left out where a rank said its own.
 */
export function workerErrorLines(reported: ReadonlyArray<WorkerError | undefined>): string[] {
  const own = reported.some((error) => error && !error.relayed);
  const ranksBySaid = new Map<string, number[]>();
  reported.forEach((error, rank) => {
    if (error && !(own && error.relayed)) ranksBySaid.set(error.said, [...(ranksBySaid.get(error.said) ?? []), rank]);
  });
  const said = [...ranksBySaid];
  if (said.length === 1 && said[0]![1].length === reported.length) return [said[0]![0]];
  return said.map(([text, ranks]) => namingRanks(text, ranks));
}

/** `torch-bert: error: X` as `torch-bert: error: rank 1: X` (ranks 0, 2: for several). */
function namingRanks(said: string, ranks: number[]): string {
  const who = `${ranks.length > 1 ? 'ranks' : 'rank'} ${ranks.join(', ')}: `;
  return said.replace(/^(torch-bert: (?:error: )?)?/, (prefix) => prefix + who);
}

/** A message line from a worker; undefined for one cut short (a worker killed while it wrote). */
function parseMessage(line: string): WorkerMessage | undefined {
  try {
    return JSON.parse(line) as WorkerMessage;
  } catch {
    return undefined;
  }
}

/**
 * The launcher's side of a worker's descriptor, read as it comes: `stop` sends STOP_SIGNAL once the
 * worker listens (held back until then), `error` is the error it handed over (its last), once it
 * has ended.
 */
function workerLine(worker: ChildProcess) {
  const stream = worker.stdio[LAUNCHER_FD] as Readable | null;
  let listening = false;
  let stopHeld = false;
  let error: WorkerError | undefined;
  let partial = '';
  stream?.setEncoding('utf8');
  stream?.on('data', (d: string) => {
    const lines = (partial + d).split('\n');
    partial = lines.pop()!;
    for (const message of lines.map(parseMessage)) {
      if (message && 'listening' in message) {
        listening = true;
        if (stopHeld) worker.kill(STOP_SIGNAL);
      } else if (message) {
        error = message;
      }
    }
  });
  const ended = new Promise<void>((resolve) => (stream ? stream.on('close', () => resolve()) : resolve()));
  return {
    stop: () => {
      if (listening) worker.kill(STOP_SIGNAL);
      else stopHeld = true;
    },
    error: async () => {
      await ended;
      return error;
    },
  };
}

/** How the workers ended: `code` is the command's exit code; `failure` says which worker failed and how. */
export interface WorkersEnd {
  /** 0 when all succeeded; else the first failure's code (1 for a signal, or a worker killed by the launcher); 130 when they only stopped on request. */
  code: number;
  /**
   * e.g. "rank 1 was killed by SIGKILL"; absent when no worker failed (all succeeded or stopped on
   * request), and when the worker that failed first handed over its error (`errors` says it).
   */
  failure?: string;
  /** The workers' errors as the command prints them (workerErrorLines); absent when none reported one. */
  errors?: string[];
  /** The workers the launcher killed for not ending within the grace (stopGrace), e.g. "rank 0 had not ended 40 s after rank 1 and was killed (SIGKILL)". */
  killed?: string;
}

/**
 * How long after one worker ended (succeeded, stopped or failed) the launcher waits for the
 * others before it kills them: the distributed timeout (a worker that can run ends with the
 * others, or fails its next collective within it) and 30 s to save, print and exit. One still
 * running then is stopped (SIGSTOP) or hung, and would hold the command, and the master's port,
 * forever.
 */
export function stopGrace(distributedTimeoutSeconds: number): number {
  return distributedTimeoutSeconds + 30;
}

/**
 * SIGKILLs the workers still running `seconds` from now, and says so (`killed`); `cancel` when all
 * have exited. `wasKilled(rank)`: whether that worker's end was this kill (not a failure of its own).
 */
function killStragglersAfter(seconds: number, workers: readonly ChildProcess[], firstEnded: number) {
  let left: number[] = [];
  const timer = setTimeout(() => {
    left = workers.flatMap((w, rank) => (w.exitCode === null && w.signalCode === null ? [rank] : []));
    for (const rank of left) workers[rank]!.kill('SIGKILL');
  }, seconds * 1000);
  const ranks = () => left.map((rank) => `rank ${rank}`).join(', ');
  return {
    cancel: () => clearTimeout(timer),
    wasKilled: (rank: number) => left.includes(rank),
    killed: () =>
      left.length === 0
        ? undefined
        : `${ranks()} had not ended ${seconds} s after rank ${firstEnded} and ${left.length > 1 ? 'were' : 'was'} killed (SIGKILL)`,
  };
}

/**
 * Runs `nproc` workers of `command args` (argv after node: the script, then its arguments) and
 * resolves when all have exited; those still running `graceSeconds` after the first ended
 * (stopGrace) are killed.
 */
export async function launchWorkers(nproc: number, script: string, args: readonly string[], graceSeconds: number): Promise<WorkersEnd> {
  const port = process.env.MASTER_PORT ?? String(await freePort());
  const workers = Array.from({ length: nproc }, (_, rank) =>
    spawn(process.execPath, [script, ...args], {
      stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
      env: { ...process.env, ...rankVariables(rank, nproc, port, process.env.MASTER_ADDR), [LAUNCHER_FD_VARIABLE]: String(LAUNCHER_FD) },
    }),
  );
  const lines = workers.map(workerLine);
  const running = () => lines.filter((_, rank) => workers[rank]!.exitCode === null && workers[rank]!.signalCode === null);
  // A signal to the launcher asks every worker to save and stop: a no-op for one that the
  // terminal's Ctrl-C or a group kill reached already. Never escalated to SIGTERM: a group kill
  // (`timeout`) signals the launcher twice, and a worker takes a second SIGTERM as "quit now",
  // unsaved. Quitting at once stays the terminal's second Ctrl-C, which reaches the workers.
  const onSignal = () => {
    for (const line of running()) line.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let failure: (WorkersEnd & { rank?: number }) | undefined;
  let stragglers: ReturnType<typeof killStragglersAfter> | undefined;
  let interrupted = false;
  try {
    await Promise.all(
      workers.map(
        (worker, rank) =>
          new Promise<void>((resolve) => {
            worker.on('exit', (code, signal) => {
              stragglers ??= killStragglersAfter(graceSeconds, workers, rank);
              if (code === 0 || stragglers.wasKilled(rank)) return resolve();
              // Ended by the launcher's own request: a STOP_SIGNAL that came as the worker was
              // already exiting (after its handlers) ends it by the signal, not a failure.
              if (code === INTERRUPTED_EXIT || signal === STOP_SIGNAL) {
                // Stopped on request: the others were asked too, or stop with it at the same step
                // boundary (the ranks agree on an abort); signalling them could cut a save short.
                interrupted = true;
                return resolve();
              }
              if (!failure) {
                failure = {
                  code: code ?? 1,
                  rank,
                  failure: signal ? `rank ${rank} was killed by ${signal}` : `rank ${rank} exited with code ${code}`,
                };
                // As torchrun: one failed worker ends the job.
                for (const other of running()) other.stop();
              }
              resolve();
            });
            worker.on('error', (err) => {
              failure ??= { code: 1, failure: `rank ${rank} could not start: ${err.message}` };
              resolve();
            });
          }),
      ),
    );
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    stragglers?.cancel();
  }
  return workersEnd(failure, await Promise.all(lines.map((line) => line.error())), stragglers?.killed(), interrupted);
}

/** The workers' end from the first failure, the errors handed over and the kills. */
function workersEnd(
  first: (WorkersEnd & { rank?: number }) | undefined,
  reported: Array<WorkerError | undefined>,
  killed: string | undefined,
  interrupted: boolean,
): WorkersEnd {
  const errors = reported.some(Boolean) ? { errors: workerErrorLines(reported) } : {};
  // The worker that failed first said what happened in its error; the launcher's line would only repeat that it failed.
  const failure = first && (first.rank === undefined || !reported[first.rank]) ? { failure: first.failure } : {};
  const code = first?.code ?? (killed ? 1 : interrupted ? INTERRUPTED_EXIT : 0);
  return { code, ...failure, ...errors, ...(killed ? { killed } : {}) };
}
