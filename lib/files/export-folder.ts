/**
 * The folder an export writes (exportHuggingFace, exportAdapterHub), written as a whole: into a
 * staging folder beside `out`, renamed into place at the end, so a failed or interrupted export
 * never leaves a half-written `out` (a killed one leaves only a hidden `.NAME.export-*` beside
 * it), and never mixes its files with older ones (`out` must be new or empty).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { InputError, messageOf } from '../addon/errors.js';

/** `out` must be new or empty: an export never mixes with older files. */
export async function checkOut(out: string): Promise<void> {
  const entries = await readdir(out).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw new InputError(`cannot write the export to ${out}: ${messageOf(err)}`, { file: out, cause: err });
  });
  if (entries.length > 0) throw new InputError(`${out} exists and is not empty; export into a new folder`, { file: out });
}

/** The staging folder being filled, and the files written to it so far (relative to it). */
export class StagedFolder {
  readonly files: string[] = [];
  constructor(readonly dir: string) {}

  /** The path to write `name` at (for writers that take a path); `name` joins the files. */
  file(name: string): string {
    this.files.push(name);
    return join(this.dir, name);
  }

  async write(name: string, content: string | Uint8Array): Promise<void> {
    await writeFile(this.file(name), content);
  }

  async writeJson(name: string, value: unknown): Promise<void> {
    await this.write(name, JSON.stringify(value, null, 2) + '\n');
  }
}

/**
 * Fill a staging folder beside `out`, then rename it to `out` (checked new or empty by
 * `checkOut`). On any error the staging folder is removed and `out` is left as it was.
 */
export async function writeFolder<T>(out: string, fill: (folder: StagedFolder) => Promise<T>): Promise<T> {
  await mkdir(dirname(out), { recursive: true });
  // mkdir, not mkdtemp: the folder gets the permissions of any folder made there (the umask's);
  // mkdtemp's 0700 would keep the export from all but its writer (a server or container of another user).
  const staging = join(dirname(out), `.${basename(out)}.export-${randomBytes(6).toString('hex')}`);
  await mkdir(staging);
  const folder = new StagedFolder(staging);
  try {
    const result = await fill(folder);
    await rmdir(out).catch(() => undefined);
    await rename(folder.dir, out);
    return result;
  } catch (err) {
    await rm(folder.dir, { recursive: true, force: true });
    throw err;
  }
}
