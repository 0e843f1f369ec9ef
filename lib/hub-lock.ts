/**
 * One download of a blob at a time among the processes sharing a Hugging Face cache: the
 * workers of `torchrun --nproc_per_node 8`, or pods on one cache volume, resolve the same Hub id
 * at once, and without a lock each fetched every file itself (8 × 440 MB for bert-base).
 *
 * The lock is a file created exclusively (`open(O_CREAT|O_EXCL)`, which holds on local disks
 * and NFSv3+), `<cache>/.locks/models--org--name/<hash>.torch-bert.lock`, holding its holder's
 * `<host>-<pid>-<random>` and deleted on release. Node has no flock() without native code.
 * Python's huggingface_hub flocks `<hash>.lock` in the same folder and never deletes it, so an
 * exclusive create at that path would find Python's leftover file and wait on it forever: the
 * name differs, and the two do not wait for each other (each still writes a verified blob by
 * rename, so both downloading costs bandwidth, never correctness).
 *
 * A holder killed outright (SIGKILL, OOM) leaves its file. A waiter takes it over when the
 * holder's pid no longer runs on this host, or, for any holder (another host's, whose pids are
 * not ours to check, or a reused pid here), once the file is untouched for SILENT_MS: a holder
 * touches it every REFRESH_MS. Limits: two waiters judging one lock stale at once may both take
 * it, and a holder stopped (SIGSTOP, a suspended machine) longer than SILENT_MS, or clocks of
 * hosts skewed by more than that, lets another start: in each case the blob is downloaded twice,
 * which the lock only saves, as correctness never rests on it.
 */
import { mkdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { writerIsAlive } from './writer-identity.js';

/** This host in the names of locks and partial downloads, with a pid: whether that writer runs is ours to check only here. */
export const HOST = hostname().replace(/[^A-Za-z0-9]/g, '_');

const REFRESH_MS = 10_000;
const SILENT_MS = 60_000;
const POLL_MS = 200;

export interface LockedWork {
  /** Whether the work is done (the blob is in the cache): asked before taking the lock, after taking it, and after each wait. */
  done(): Promise<boolean>;
  /** Runs the work while holding the lock. */
  run(): Promise<void>;
  /** Told at each poll while another process holds the lock: its `<host>-<pid>`, or '' while its file is being written. */
  onWait?(holder: string): Promise<void> | void;
  signal?: AbortSignal;
}

/**
 * Runs `work` unless it is done, in one process at a time: a process that finds the lock held
 * polls until the holder releases it (or is judged gone), then asks again whether it is done.
 * Where no lock can be made (a `.locks` folder of another user, a read-only cache), it runs unlocked.
 */
export async function onceAcrossProcesses(lockPath: string, work: LockedWork): Promise<void> {
  for (;;) {
    if (await work.done()) return;
    const lock = await tryLock(lockPath);
    if (lock === undefined) return work.run();
    if ('release' in lock) {
      try {
        if (!(await work.done())) await work.run();
      } finally {
        await lock.release();
      }
      return;
    }
    await work.onWait?.(lock.holder);
    await sleep(POLL_MS, undefined, { signal: work.signal });
  }
}

/** The lock taken (with its release), its live holder, or undefined when no lock can be made. */
async function tryLock(path: string): Promise<{ release(): Promise<void> } | { holder: string } | undefined> {
  const token = `${HOST}-${process.pid}-${Math.random().toString(36).slice(2)}`;
  try {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, token, { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return undefined;
    const holder = await holderOf(path);
    if (holder === undefined) return tryLock(path);
    if (!holder.gone) return { holder: holder.writer };
    // Gone: removed, then raced for like a free lock; a failure to remove leaves it to run unlocked.
    try {
      await rm(path, { force: true });
    } catch {
      return undefined;
    }
    return tryLock(path);
  }
  const refresh = setInterval(() => {
    const now = new Date();
    utimes(path, now, now).catch(() => {});
  }, REFRESH_MS).unref();
  return {
    async release() {
      clearInterval(refresh);
      // Only our own: a holder judged gone (stopped too long) must not delete its successor's lock.
      if ((await readFile(path, 'utf8').catch(() => '')) === token) await rm(path, { force: true });
    },
  };
}

/** Who holds the lock (`<host>-<pid>`, '' while its file is being written) and whether it is gone; undefined when it was just released. */
async function holderOf(path: string): Promise<{ writer: string; gone: boolean } | undefined> {
  const [content, info] = await Promise.all([readFile(path, 'utf8').catch(() => undefined), stat(path).catch(() => undefined)]);
  if (content === undefined || info === undefined) return undefined;
  const holder = /^([A-Za-z0-9_]+)-(\d+)-[0-9a-z]+$/.exec(content);
  const dead = holder?.[1] === HOST && !writerIsAlive(Number(holder[2]));
  return { writer: holder ? `${holder[1]}-${holder[2]}` : '', gone: dead || Date.now() - info.mtimeMs > SILENT_MS };
}
