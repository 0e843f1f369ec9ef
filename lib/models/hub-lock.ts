/**
 * One download of a blob at a time among the processes sharing a Hugging Face cache: the
 * workers of `torchrun --nproc_per_node 8`, pods on one cache volume, and Python's
 * huggingface_hub, resolving the same Hub id at once (without a lock each fetched every file
 * itself: 8 × 440 MB for bert-base).
 *
 * The lock is Python's own. huggingface_hub locks `<cache>/.locks/models--org--name/<hash>.lock`
 * through the filelock package's UnixFileLock: `flock(LOCK_EX | LOCK_NB)`, polled, on that file
 * opened read-write (created when missing), which it leaves in place on release. Taking the same
 * flock on the same path makes torch-bert and Python wait for each other, and the kernel releases
 * it the moment its holder dies (SIGKILL, OOM): there is no stale lock to judge. The file is
 * never deleted, by either: a process that opened it before a deletion would lock the old file
 * while another creates and locks a new one.
 *
 * Where no lock can be taken (a `.locks` folder of another user, a read-only cache, a file
 * system without flock, or the native addon not loadable: hub.ts runs before and without it,
 * e.g. the CLI's download ahead), the work runs unlocked: every download writes a verified blob
 * by rename, so the lock saves bandwidth and never decides correctness. Some file systems
 * (Lustre, GPFS, some NFS mounts) grant flock to every caller; newer huggingface_hub falls back
 * to a lock file of its own there, which this does not see: the two then each download.
 */
import { constants } from 'node:fs';
import { type FileHandle, mkdir, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadBinding } from '../addon/loader.js';

/** The first pause between tries, doubled up to MAX_POLL_MS: a short wait ends soon after the release, a long one wakes twice a second. */
const FIRST_POLL_MS = 20;
const MAX_POLL_MS = 500;

export interface LockedWork {
  /** Whether the work is done (the blob is in the cache): asked before taking the lock and again once it is taken. */
  done(): Promise<boolean>;
  /** Runs the work while holding the lock. */
  run(): Promise<void>;
  /** Told at each poll while another process holds the lock. */
  onWait?(): Promise<void> | void;
  signal?: AbortSignal;
}

/**
 * Runs `work` unless it is done, in one process at a time: a process that finds the lock held
 * polls until the holder releases it, then asks again whether the work is done.
 */
export async function onceAcrossProcesses(lockPath: string, work: LockedWork): Promise<void> {
  if (await work.done()) return;
  const file = await openLockFile(lockPath);
  try {
    for (let pause = FIRST_POLL_MS; file && tryLock(file) === 'held'; pause = Math.min(2 * pause, MAX_POLL_MS)) {
      await work.onWait?.();
      await sleep(pause, undefined, { signal: work.signal });
    }
    if (!(await work.done())) await work.run();
  } finally {
    // Closing the only descriptor of the open file releases its flock.
    await file?.close();
  }
}

/**
 * The lock file opened (libuv opens with O_CLOEXEC, so a child process started meanwhile does
 * not inherit the descriptor, and with it the lock), or undefined where it cannot be. Created
 * group-writable (0664, as huggingface_hub creates it) for users sharing a cache; flock needs no
 * write access, so another user's lock file that may only be read is locked read-only.
 */
async function openLockFile(path: string): Promise<FileHandle | undefined> {
  try {
    await mkdir(dirname(path), { recursive: true });
  } catch {
    return undefined;
  }
  for (const flags of [constants.O_RDWR | constants.O_CREAT, constants.O_RDONLY]) {
    try {
      return await open(path, flags, 0o664);
    } catch {}
  }
  return undefined;
}

/** 'taken', 'held' by another open file (this process's too), or 'unlockable' (no flock here, or no addon). */
function tryLock(file: FileHandle): 'taken' | 'held' | 'unlockable' {
  try {
    return loadBinding().tryLockFile(file.fd) ? 'taken' : 'held';
  } catch {
    return 'unlockable';
  }
}
