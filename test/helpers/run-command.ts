/**
 * Child processes for the tests that start whole programs (the CLI, torchrun, data-parallel ranks):
 * one command run to its end with its output and duration, one under torchrun, and whether torchrun
 * can start a worker here.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { freePort } from '../../lib/cli/launcher.js';

/** How a command ended: its exit code, or the signal that ended it; its output; how long it ran. */
export interface CommandExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** How a test watches a running command: it is given the way to kill it, and hears its stdout as it comes. */
export interface CommandWatch {
  onStart?: (kill: () => void) => void;
  onStdout?: (text: string) => void;
}

/** Runs `command args` to its end with `env` added to this process's variables. */
export function runCommand(
  command: string,
  args: string[],
  env: Record<string, string> = {},
  watch: CommandWatch = {},
): Promise<CommandExit> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
      watch.onStdout?.(String(d));
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr, ms: performance.now() - started }));
    watch.onStart?.(() => child.kill('SIGKILL'));
  });
}

/**
 * torchrun's flags for the workers' output: stdout through a log file and echoed (`--redirects 1
 * --tee 1`, which every torchrun accepts). Debian 12's torchrun 1.13 cannot take its defaults
 * on its Python 3.11: it parses "0" (no redirect) to None (Python 3.11 no longer iterates the
 * zero member of an IntFlag) and fails before starting any worker with "'NoneType' object has no
 * attribute 'get'". The README gives users the same flags.
 */
export const TORCHRUN_OUTPUT_FLAGS = ['--redirects', '1', '--tee', '1'];

/** Runs `command args` as `nproc` local workers of `torchrun --no_python` on a free master port. */
export async function runTorchrun(torchrun: string, nproc: number, command: string, args: string[]): Promise<CommandExit> {
  const port = String(await freePort());
  return runCommand(torchrun, [
    ...TORCHRUN_OUTPUT_FLAGS,
    '--no_python',
    '--nproc_per_node',
    String(nproc),
    '--master_port',
    port,
    command,
    ...args,
  ]);
}

/** The version of the PyTorch a torchrun script runs (its shebang's Python), or null where that cannot be told. */
async function torchrunTorchVersion(torchrun: string): Promise<string | null> {
  const shebang = /^#!\s*(\S+)/.exec(readFileSync(torchrun, 'utf8').split('\n', 1)[0]);
  if (!shebang) return null;
  const run = await runCommand(shebang[1], ['-c', 'import torch; print(torch.__version__)']);
  return run.code === 0 ? run.stdout.trim() : null;
}

/**
 * Why the torchrun tests cannot run here, or null where they can: no torchrun; a torchrun of
 * another PyTorch than `libtorch`, the addon's (major.minor compared: torchrun serves the
 * workers' store from its own PyTorch, and c10d's store protocol differs between 1.13 and 2.x,
 * so a 2.13 addon's ranks cannot join Debian's torchrun 1.13 and say so after the timeout); or
 * a torchrun that cannot start a worker (/bin/true).
 */
export async function torchrunUnfit(torchrun: string, libtorch: string): Promise<string | null> {
  if (!existsSync(torchrun)) return `no ${torchrun}`;
  const version = await torchrunTorchVersion(torchrun);
  const minor = (v: string) => v.split('.').slice(0, 2).join('.');
  if (version && minor(version) !== minor(libtorch)) {
    return `${torchrun} runs PyTorch ${version}, the addon libtorch ${libtorch}: their stores speak other protocols`;
  }
  if ((await runTorchrun(torchrun, 1, '/bin/true', [])).code !== 0) return `${torchrun} cannot start a worker`;
  return null;
}
