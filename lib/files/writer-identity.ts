/**
 * Who wrote a temporary file, and whether that process still runs: temporary names carry the
 * writer's identity so that a later save can remove what a killed save left, and only that.
 *
 * A pid alone is not an identity: pids are reused (on Linux every thread takes a number from
 * the same space, pid_max is often 32,768, and a busy machine wraps it within hours), so a dead
 * writer's pid may name a live process or thread, and its files would never be cleaned. The
 * identity is `<pid>.<start time>` (the start time in clock ticks since boot, from
 * /proc/<pid>/stat): a reused pid has another start time. Where /proc is absent, the pid alone.
 */
import { readFileSync } from 'node:fs';

/** Start time of `pid` in clock ticks since boot (Linux), or null (no such process, or no /proc). */
function startTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is parenthesised and may hold spaces: count after its last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null; // field 22 overall
  } catch {
    return null;
  }
}

const own = (() => {
  const start = startTime(process.pid);
  return start === null ? String(process.pid) : `${process.pid}.${start}`;
})();

/** This process's identity: `<pid>.<start time>`, or `<pid>` without /proc. */
export function writerId(): string {
  return own;
}

/** The pattern of an identity inside a name: pid, then the optional start time. */
export const WRITER_ID_PATTERN = '(\\d+)(?:\\.(\\d+))?';

/** Whether the writer `pid` (with `start`, when the name recorded it) still runs. */
export function writerIsAlive(pid: number, start?: string): boolean {
  if (pid === process.pid) return start === undefined || own === `${pid}.${start}`;
  if (start !== undefined) {
    const now = startTime(pid);
    if (now !== null) return now === start;
    // No /proc entry: dead on Linux; elsewhere fall through to kill(0).
    if (process.platform === 'linux') return false;
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
