/**
 * `--nproc-per-node`'s launcher (lib/cli/launcher.ts) with stand-in workers: small scripts that play
 * the parts of ranks (exit codes, signals, a slow save) without libtorch, so what the launcher
 * does to the others when one ends is seen exactly. The same through the real CLI:
 * test/distributed.test.ts.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchWorkers, STOP_SIGNAL, type WorkerError, workerErrorLines } from '../lib/cli/launcher.js';
import { repoRoot } from './fixtures.js';

/**
 * A stand-in worker: argv[2] is the folder it records in, argv[3] what rank 1 does. Rank 0 writes
 * `ready`, then records in `rank0` the first signal it gets (and exits 130 as a stopped worker
 * does), or, with no signal within 1.5 s, `saved` (a save that ran to its end) and exits 130;
 * with `hung`, rank 0 stops itself instead and rank 1 fails (exit 3); `hung-after-success`, rank 1
 * succeeds (exit 0); with \`error\`, rank 1 hands the launcher its error (as cli.ts does) and exits 1;
 * with \`same-error\`, both do at once, the same error. Each tells the launcher once it handles the stop.
 */
const WORKER = `
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { handErrorToLauncher, tellLauncherListening } from '${join(repoRoot, 'dist', 'cli', 'launcher.js')}';
const [dir, part] = process.argv.slice(2);
const rank = Number(process.env.RANK);
const record = (text) => writeFileSync(join(dir, 'rank0'), text);
const fail = (said) => {
  handErrorToLauncher({ said, relayed: false });
  process.exit(1);
};
if (part === 'same-error') {
  // As the CLI (run-control.ts), a worker hears the launcher's stop from its start (and says so), and still hands over its own error.
  process.on('${STOP_SIGNAL}', () => {});
  tellLauncherListening();
  fail('torch-bert: error: cannot read data file train.csv: ENOENT');
}
if (part === 'late-listener') {
  // Rank 1 fails at once; rank 0 handles the stop only a second after its start (as a worker whose modules load).
  if (rank === 1) process.exit(3);
  await new Promise((r) => setTimeout(r, 1000));
}
if (rank === 0) {
  for (const sig of ['SIGTERM', 'SIGINT', '${STOP_SIGNAL}']) process.on(sig, () => { record(sig); process.exit(130); });
  tellLauncherListening();
  writeFileSync(join(dir, 'ready'), '');
  // A hung rank: it answers no signal but SIGKILL (SIGSTOP, as a debugger or a swapped-out machine).
  if (part.startsWith('hung')) process.kill(process.pid, 'SIGSTOP');
  setTimeout(() => { record('saved'); process.exit(130); }, 1500);
} else {
  const waitReady = setInterval(() => {
    if (!existsSync(join(dir, 'ready'))) return;
    clearInterval(waitReady);
    if (part === 'interrupted') process.exit(130);
    if (part === 'killed') process.kill(process.pid, 'SIGKILL');
    if (part === 'failed' || part === 'hung') process.exit(3);
    if (part === 'hung-after-success') process.exit(0);
    if (part === 'error') fail('torch-bert: error: rank 1 ran out of memory');
  }, 10);
}
`;

describe('launchWorkers: how one worker ending reaches the others', () => {
  let dir: string;
  let script: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'torch-bert-launcher-'));
    script = join(dir, 'worker.mjs');
    writeFileSync(script, WORKER);
  });

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** Runs 2 stand-in workers, rank 1 playing `part`; what the launcher returned and what rank 0 saw. */
  async function run(part: string) {
    const record = mkdtempSync(join(dir, `${part}-`));
    const end = await launchWorkers(2, script, [record, part], 60);
    expect(existsSync(join(record, 'ready'))).toBe(true);
    return { end, rank0: readFileSync(join(record, 'rank0'), 'utf8') };
  }

  it('a worker that stopped on request (exit 130) leaves the others to finish their save; 130, no failure', async () => {
    // Ctrl-C reaches every worker; the one that exits first must not get the others killed mid-save.
    const { end, rank0 } = await run('interrupted');
    expect(rank0).toBe('saved');
    expect(end).toEqual({ code: 130 });
  }, 20_000);

  it('a worker killed by a signal: named with its rank and the signal; the others asked to stop (once, never SIGTERM)', async () => {
    const { end, rank0 } = await run('killed');
    expect(rank0).toBe(STOP_SIGNAL);
    expect(end).toEqual({ code: 1, failure: 'rank 1 was killed by SIGKILL' });
  }, 20_000);

  it('a worker that failed: its exit code, named with its rank', async () => {
    const { end, rank0 } = await run('failed');
    expect(rank0).toBe(STOP_SIGNAL);
    expect(end).toEqual({ code: 3, failure: 'rank 1 exited with code 3' });
  }, 20_000);

  it('an error every worker hands over is said once, as it is, without the launcher naming a rank', async () => {
    // Every worker printed it: the user read the same set-up error N times, then "rank 1 exited with code 1".
    const end = await launchWorkers(2, script, [mkdtempSync(join(dir, 'same-error-')), 'same-error'], 60);
    expect(end).toEqual({ code: 1, errors: ['torch-bert: error: cannot read data file train.csv: ENOENT'] });
  }, 20_000);

  it("one worker's error is said with its rank; the others, asked to stop, said none", async () => {
    const { end, rank0 } = await run('error');
    expect(rank0).toBe(STOP_SIGNAL);
    expect(end).toEqual({ code: 1, errors: ['torch-bert: error: rank 1: rank 1 ran out of memory'] });
  }, 20_000);

  it('a worker that does not handle the stop yet gets it once it says it does, not before (it would end unheard)', async () => {
    const record = mkdtempSync(join(dir, 'late-listener-'));
    const end = await launchWorkers(2, script, [record, 'late-listener'], 60);
    expect(readFileSync(join(record, 'rank0'), 'utf8')).toBe(STOP_SIGNAL);
    expect(end).toEqual({ code: 3, failure: 'rank 1 exited with code 3' });
  }, 20_000);

  it('a worker that does not end after another failed (stopped, hung) is killed after the grace and named; the launcher returns', async () => {
    // It used to wait on a stopped worker forever: the command never returned, holding the port.
    const record = mkdtempSync(join(dir, 'hung-'));
    const end = await launchWorkers(2, script, [record, 'hung'], 1);
    expect(existsSync(join(record, 'rank0'))).toBe(false);
    expect(end).toEqual({
      code: 3,
      failure: 'rank 1 exited with code 3',
      killed: 'rank 0 had not ended 1 s after rank 1 and was killed (SIGKILL)',
    });
  }, 20_000);

  it('a worker that does not end after another succeeded is killed after the grace: exit 1, named', async () => {
    const record = mkdtempSync(join(dir, 'hung-after-success-'));
    const end = await launchWorkers(2, script, [record, 'hung-after-success'], 1);
    expect(end).toEqual({ code: 1, killed: 'rank 0 had not ended 1 s after rank 1 and was killed (SIGKILL)' });
  }, 20_000);
});

describe("workerErrorLines: the workers' errors, each said once", () => {
  const own = (said: string): WorkerError => ({ said, relayed: false });

  it('one error every worker reported: once, as it is', () => {
    expect(
      workerErrorLines([own('torch-bert: error: learningRate must be ≥ 0'), own('torch-bert: error: learningRate must be ≥ 0')]),
    ).toEqual(['torch-bert: error: learningRate must be ≥ 0']);
  });

  it('errors not every worker reported: each once, with the ranks that reported it', () => {
    expect(workerErrorLines([own('torch-bert: error: A'), own('torch-bert: error: B'), own('torch-bert: error: A')])).toEqual([
      'torch-bert: error: ranks 0, 2: A',
      'torch-bert: error: rank 1: B',
    ]);
    // The same error from every rank that reported one, but not from all: still named (one rank of 2 failed).
    expect(workerErrorLines([undefined, own('torch-bert: error: A')])).toEqual(['torch-bert: error: rank 1: A']);
    // A line of another form (the loader's own message) is named at its start.
    expect(workerErrorLines([own('no native addon'), undefined])).toEqual(['rank 0: no native addon']);
  });

  it("a relay of another rank's failure is left out where that rank said its own", () => {
    const relay: WorkerError = { said: 'torch-bert: error: distributed: rank 1 could not start: A; nothing was trained', relayed: true };
    expect(workerErrorLines([relay, own('torch-bert: error: A')])).toEqual(['torch-bert: error: rank 1: A']);
    // Alone, the relay is all there is to say.
    expect(workerErrorLines([relay, undefined])).toEqual([
      'torch-bert: error: rank 0: distributed: rank 1 could not start: A; nothing was trained',
    ]);
  });
});
