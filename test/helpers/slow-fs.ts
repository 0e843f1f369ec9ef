/**
 * For the children of test/reliability/crash-safety*.test.ts: SLOW_FS_MS=n makes every rename /
 * link / copy / unlink / open / write / mkdir of `fs.promises` take n ms longer (a slow disk),
 * which widens the gaps between the steps of a save so that random kills land in each of them.
 */
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';

export function slowDownFileSystem(): void {
  const slowMs = Number(process.env.SLOW_FS_MS ?? 0);
  if (!(slowMs > 0)) return;
  const p = fs.promises as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  for (const name of ['rename', 'link', 'copyFile', 'rm', 'open', 'writeFile', 'mkdir']) {
    const original = p[name]!;
    p[name] = async (...a: unknown[]) => {
      await new Promise((r) => setTimeout(r, slowMs));
      return original(...a);
    };
  }
  syncBuiltinESMExports();
}
