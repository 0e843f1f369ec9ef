/**
 * The saved classifier directory, written so that a crash or a failed run never leaves a
 * half-written file where a good one was: every file is written to a temporary name in the
 * same directory, flushed to disk, then renamed over the old one (rename is atomic on POSIX).
 * config.json is renamed last and records the SHA-256 of classifier.pt, so a reader can tell
 * a matching pair from an interrupted save.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { access, constants, mkdir, open, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NativeScriptModule } from './binding.js';
import { InputError, messageOf } from './errors.js';

export const CLASSIFIER_FILE = 'classifier.pt';
export const CONFIG_FILE = 'config.json';
export const TOKENIZER_FILE = 'tokenizer.json';
export const HISTORY_FILE = 'history.json';

/** Make sure `dir` exists and is writable, before any training time is spent. */
export async function ensureWritableDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
    await access(dir, constants.W_OK);
    const probe = join(dir, `.write-test-${process.pid}`);
    await writeFile(probe, '');
    await rm(probe);
  } catch (err) {
    throw new InputError(`output directory ${dir} cannot be written: ${messageOf(err)}`, { file: dir, cause: err });
  }
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function tempName(path: string): string {
  return `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function writeDurably(path: string, content: string): Promise<string> {
  const tmp = tempName(path);
  const handle = await open(tmp, 'w');
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return tmp;
}

/** Replace `path` with `content` atomically (temp file, fsync, rename). */
export async function writeFileAtomic(path: string, content: string): Promise<void> {
  const tmp = await writeDurably(path, content);
  await rename(tmp, path);
}

/** Files of a checkpoint other than the model itself. */
export interface CheckpointFiles {
  config: object;
  tokenizerJson: string;
  history: unknown;
}

/** Write a complete checkpoint into `dir`, replacing any previous one file by file atomically. */
export async function writeCheckpoint(dir: string, module: NativeScriptModule, files: CheckpointFiles): Promise<void> {
  const modelPath = join(dir, CLASSIFIER_FILE);
  const modelTmp = tempName(modelPath);
  const pending: Array<[string, string]> = [];
  try {
    await module.saveAsync(modelTmp);
    await fsyncFile(modelTmp);
    pending.push([modelTmp, modelPath]);
    const config = { ...files.config, classifierSha256: await sha256File(modelTmp) };
    pending.push([await writeDurably(join(dir, TOKENIZER_FILE), files.tokenizerJson), join(dir, TOKENIZER_FILE)]);
    pending.push([
      await writeDurably(join(dir, HISTORY_FILE), JSON.stringify(files.history, null, 2) + '\n'),
      join(dir, HISTORY_FILE),
    ]);
    pending.push([await writeDurably(join(dir, CONFIG_FILE), JSON.stringify(config, null, 2) + '\n'), join(dir, CONFIG_FILE)]);
  } catch (err) {
    await Promise.all([modelTmp, ...pending.map(([tmp]) => tmp)].map((t) => rm(t, { force: true })));
    throw new InputError(`could not write checkpoint to ${dir}: ${messageOf(err)}`, { file: dir, cause: err });
  }
  // Everything is on disk under temporary names; now swap them in, config last.
  for (const [tmp, final] of pending) await rename(tmp, final);
  const dirHandle = await open(dir, 'r');
  try {
    await dirHandle.sync();
  } catch {
    // Some filesystems refuse fsync on directories; the renames are still atomic.
  } finally {
    await dirHandle.close();
  }
}
