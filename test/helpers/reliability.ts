/**
 * Shared pieces of test/reliability: a seeded RNG (failures reproduce from the printed seed),
 * TypeScript child processes (run with vite-node, so they use lib/ as the tests do), and
 * waiting for a child's output.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from '../fixtures.js';

/** The seed of this run: RELIABILITY_SEED when set, else derived from the clock. Print it. */
export function runSeed(): number {
  const fromEnv = process.env.RELIABILITY_SEED;
  return fromEnv !== undefined ? Number(fromEnv) >>> 0 : (Date.now() ^ (process.pid << 16)) >>> 0;
}

/** mulberry32: a small, fast, seedable PRNG returning floats in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const VITE_NODE = path.join(repoRoot, 'node_modules', 'vite-node', 'vite-node.mjs');

/** Start `node [nodeArgs] vite-node <script> -- args` with piped stdout/stderr. */
export function spawnTs(script: string, args: string[], options: { env?: NodeJS.ProcessEnv; nodeArgs?: string[] } = {}): ChildProcess {
  return spawn(process.execPath, [...(options.nodeArgs ?? []), VITE_NODE, path.resolve(repoRoot, script), '--', ...args], {
    cwd: repoRoot,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Resolves with the first stdout line matching `pattern`; rejects when the child exits first or after `timeoutMs`. */
export function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => finish(new Error(`no line matching ${pattern} within ${timeoutMs} ms; stderr:\n${err}`)), timeoutMs);
    const onData = (b: Buffer) => {
      out += b.toString('utf8');
      for (const line of out.split('\n')) {
        const m = pattern.exec(line);
        if (m) return finish(null, m);
      }
    };
    const onErr = (b: Buffer) => (err += b.toString('utf8'));
    const onExit = (code: number | null, signal: string | null) =>
      finish(new Error(`child exited (${signal ?? code}) before printing ${pattern}; stderr:\n${err}`));
    function finish(error: Error | null, m?: RegExpExecArray) {
      clearTimeout(timer);
      child.stdout!.off('data', onData);
      child.stderr!.off('data', onErr);
      child.off('exit', onExit);
      if (error) reject(error);
      else resolve(m!);
    }
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onErr);
    child.on('exit', onExit);
  });
}

/** Resolves when the child has exited, with its exit code and signal. */
export function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/** Collects all of a child's stdout and stderr. */
export function collect(child: ChildProcess): { stdout: () => string; stderr: () => string } {
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
  return { stdout: () => stdout, stderr: () => stderr };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * One kill of the crash-safety tests: start `script` (a child that saves back to back, slowed by
 * SLOW_FS_MS=2, and prints `ready <mean save ms>` after its first two saves), then SIGKILL it at a
 * moment uniform over two whole saves, so every phase of a save is equally likely to be hit.
 * Resolves once it is dead, with how it died (the caller checks it was the kill, not an error).
 */
export async function killDuringSaves(
  script: string,
  args: string[],
  random: () => number,
): Promise<{ pid: number; delay: number; signal: NodeJS.Signals | null }> {
  const child = spawnTs(script, args, { env: { SLOW_FS_MS: '2' } });
  let meanSaveMs: number;
  try {
    meanSaveMs = Number((await waitForLine(child, /^ready ([\d.]+)/, 60_000))[1]);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const delay = random() * 2 * meanSaveMs;
  await sleep(delay);
  child.kill('SIGKILL');
  const { signal } = await exited(child);
  return { pid: child.pid!, delay, signal };
}
