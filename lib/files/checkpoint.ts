/**
 * The saved classifier directory, written so that a crash (even SIGKILL) at any moment of a
 * save leaves a loadable checkpoint: the previous one, or the new one.
 *
 * Every file is first written under a temporary name in the same directory and flushed; renames
 * (atomic on POSIX) then swap them in. Two files must agree — `classifier.pt` and `config.json`,
 * which records the SHA-256 of its classifier — and two renames cannot happen at once, so a
 * save goes through a content-addressed name that `config.json` already implies:
 *
 *   1. the new archive is written to `classifier-<sha16>.pt` (nothing public changes), and so
 *      is every other archive of the checkpoint (a LoRA run's `adapters.pt` and `head.pt`:
 *      `adapters-<sha16>.pt`, `head-<sha16>.pt`); config.json will record all their checksums;
 *   2. tokenizer.json and history.json are swapped in; then config.json — the commit point:
 *      from here on the directory's checkpoint is the new one;
 *   3. `classifier.pt` (and each other archive) is replaced by a hard link to (or copy of) its
 *      content-addressed file;
 *   4. the content-addressed files are removed.
 *
 * A loader (`resolveArchive`) takes `classifier.pt` when its checksum matches config.json,
 * else `classifier-<sha16>.pt` (a save killed between 2 and 3); the same for the other
 * archives. The next save, or the next run that writes into the directory
 * (`ensureWritableDir`), completes such a save and removes the temporary and content-addressed
 * files a killed save left. In the steady state the directory
 * holds exactly classifier.pt, config.json, tokenizer.json and history.json (and a LoRA run's
 * adapters.pt and head.pt).
 *
 * Pretraining's Hugging Face folder (mlm-output.ts) is saved the same way (`commitFolder`): its
 * archives are model.safetensors and encoder.pt, their checksums in config.json's `torch_bert`.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { access, constants, copyFile, link, mkdir, mkdtemp, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NativeScriptModule } from '../addon/binding.js';
import { InputError, ModelError, messageOf } from '../addon/errors.js';
import { WRITER_ID_PATTERN, writerId, writerIsAlive } from './writer-identity.js';

export const CLASSIFIER_FILE = 'classifier.pt';
export const CONFIG_FILE = 'config.json';
export const TOKENIZER_FILE = 'tokenizer.json';
export const HISTORY_FILE = 'history.json';

/**
 * Make sure `dir` exists and is writable, before any training time is spent; and finish a save
 * that a crash interrupted after its commit (so `classifier.pt` is again the committed archive).
 */
export async function ensureWritableDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
    await access(dir, constants.W_OK);
    const probe = join(dir, `.write-test-${process.pid}`);
    await writeFile(probe, '');
    await rm(probe);
    await completeInterruptedSave(dir);
  } catch (err) {
    throw new InputError(`output directory ${dir} cannot be written: ${messageOf(err)}`, { file: dir, cause: err });
  }
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** `<path>.tmp-<writer>-<random>`: the writer's identity tells a later save whether it still runs. */
function tempName(path: string): string {
  return `${path}.tmp-${writerId()}-${Math.random().toString(36).slice(2, 8)}`;
}

// The native safetensors writer adds its own `.tmp` to the path it is given (and renames it away).
const TEMP_PATTERN = new RegExp(`\\.tmp-${WRITER_ID_PATTERN}(?:-[0-9a-z]*)?(?:\\.tmp)?$`);
/**
 * The archives a save commits: TorchScript/pickle archives and safetensors files, in the folder or
 * one subfolder of it (a LoRA token classifier's `adapter/adapter_model.safetensors`, PEFT's).
 */
const ARCHIVE_PATTERN = /^(?:[a-z]+\/)?[a-z_]+\.(?:pt|safetensors)$/;
/** An archive's content-addressed name, within its folder. */
const ADDRESSED_PATTERN = /^([a-z_]+)-([0-9a-f]{16})\.(?:pt|safetensors)$/;

/** Name under which an archive (`classifier.pt`, `adapters.pt`, `model.safetensors`, ...) with this SHA-256 waits during a save (step 1 above). */
export function addressedName(file: string, sha256: string): string {
  return file.replace(/\.(pt|safetensors)$/, `-${sha256.slice(0, 16)}.$1`);
}

export function addressedClassifierName(sha256: string): string {
  return addressedName(CLASSIFIER_FILE, sha256);
}

async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function syncDir(dir: string): Promise<void> {
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // Some filesystems refuse fsync on directories; the renames are still atomic.
  } finally {
    await handle?.close();
  }
}

/** The folder and the given subfolders of it, each synced (the renames in them made durable). */
async function syncFolders(dir: string, subfolders: readonly string[]): Promise<void> {
  for (const folder of ['', ...subfolders]) await syncDir(join(dir, folder));
}

async function writeDurably(path: string, content: string | Uint8Array): Promise<string> {
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
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/**
 * The SHA-256 of each archive config.json commits (`classifierSha256`, and `archiveSha256` for
 * every archive; a Hugging Face config.json written by pretraining keeps them in its `torch_bert`
 * block), by file name; empty without a config or with one written before checksums.
 */
export function archiveChecksums(config: {
  classifierSha256?: unknown;
  archiveSha256?: unknown;
  torch_bert?: unknown;
}): Map<string, string> {
  const shas = new Map<string, string>();
  const torchBert = config.torch_bert && typeof config.torch_bert === 'object' ? (config.torch_bert as { archiveSha256?: unknown }) : {};
  const archives = config.archiveSha256 ?? torchBert.archiveSha256;
  if (archives && typeof archives === 'object') {
    for (const [file, sha] of Object.entries(archives as Record<string, unknown>)) {
      if (typeof sha === 'string' && ARCHIVE_PATTERN.test(file)) shas.set(file, sha);
    }
  }
  if (typeof config.classifierSha256 === 'string') shas.set(CLASSIFIER_FILE, config.classifierSha256);
  return shas;
}

async function committedShas(dir: string): Promise<Map<string, string>> {
  try {
    return archiveChecksums(JSON.parse(await readFile(join(dir, CONFIG_FILE), 'utf8')) as object);
  } catch {
    return new Map();
  }
}

/**
 * Remove what killed saves left in `dir`: temporary files of processes that no longer run, and
 * content-addressed archives that config.json does not name (the one it names may be the only
 * copy of the committed classifier, when a save died between its steps 2 and 3).
 */
export async function removeStaleFiles(dir: string, subfolders: readonly string[] = []): Promise<string[]> {
  const committed = [...(await committedShas(dir))];
  const keep = new Set(committed.map(([file, sha]) => addressedName(file, sha)));
  // The folder, and each subfolder an archive is committed in or is about to be saved in.
  const folders = new Set(['', ...subfolders, ...committed.map(([file]) => archiveFolder(file))]);
  const stale: string[] = [];
  for (const folder of folders) {
    let names: string[];
    try {
      names = await readdir(join(dir, folder));
    } catch {
      continue;
    }
    for (const name of names) {
      const temp = TEMP_PATTERN.exec(name);
      const path = folder ? `${folder}/${name}` : name;
      if (temp ? !writerIsAlive(Number(temp[1]), temp[2]) : ADDRESSED_PATTERN.test(name) && !keep.has(path)) stale.push(path);
    }
  }
  await Promise.all(stale.map((path) => rm(join(dir, path), { recursive: true, force: true })));
  return stale;
}

/** The subfolder an archive is saved in ('adapter' of 'adapter/adapter_model.safetensors'), '' for the folder itself. */
function archiveFolder(file: string): string {
  const slash = file.lastIndexOf('/');
  return slash < 0 ? '' : file.slice(0, slash);
}

/** `torch-bert-best-<host>-<writer>-`: whose scratch checkpoint folder this is (scratchCheckpointDir). */
const SCRATCH_PREFIX = 'torch-bert-best-';
const SCRATCH_PATTERN = new RegExp(`^${WRITER_ID_PATTERN}-[0-9A-Za-z]{6}$`);

/**
 * A folder of its own under the system's temporary directory, for the checkpoints of a run that
 * has no outDir (train() without one, a data-parallel rank other than 0): the caller removes it
 * when the run ends. A run killed outright cannot, so the folders that killed runs of this host
 * left (their writer no longer runs, writer-identity.ts) are removed first: a best classifier is
 * the size of the model, too big to leave to the system's cleaning. The host is in the name
 * because a temporary directory may be shared with machines or containers whose processes this
 * one cannot see.
 */
export async function scratchCheckpointDir(): Promise<string> {
  const base = tmpdir();
  const ours = `${SCRATCH_PREFIX}${hostname()}-`;
  const stale = (await readdir(base)).filter((name) => {
    const writer = name.startsWith(ours) ? SCRATCH_PATTERN.exec(name.slice(ours.length)) : null;
    return writer !== null && !writerIsAlive(Number(writer[1]), writer[2]);
  });
  await Promise.all(stale.map((name) => rm(join(base, name), { recursive: true, force: true })));
  return mkdtemp(join(base, `${ours}${writerId()}-`));
}

/**
 * Roll a save that died between its commit (config.json) and the renames of its archives
 * forward: publish each content-addressed archive config.json names under its public name
 * (classifier.pt, model.safetensors, adapter/adapter_model.safetensors, ...). Cheap when there
 * is nothing to do (config.json read, one stat per archive).
 */
export async function completeInterruptedSave(dir: string): Promise<boolean> {
  let completed = false;
  for (const [file, sha] of await committedShas(dir)) {
    const addressed = join(dir, addressedName(file, sha));
    if (!(await isFile(addressed)) || (await sha256File(addressed)) !== sha) continue;
    await publish(addressed, join(dir, file));
    await syncDir(join(dir, archiveFolder(file)));
    await rm(addressed, { force: true });
    completed = true;
  }
  return completed;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** Make `to` an atomic replacement by the content of `from`: a hard link when possible, else a copy. */
async function publish(from: string, to: string): Promise<void> {
  const tmp = tempName(to);
  try {
    try {
      await link(from, tmp);
    } catch {
      await copyFile(from, tmp);
      await fsyncFile(tmp);
    }
    await rename(tmp, to);
  } finally {
    // Gone after a rename, except when `to` already was a link to the same file (a save killed
    // after publishing, before removing the content-addressed name): rename(2) then does nothing
    // and leaves `tmp`, which would outlive this writer.
    await rm(tmp, { force: true });
  }
}

/** Files of a checkpoint other than the model itself. */
export interface CheckpointFiles {
  config: object;
  tokenizerJson: string;
  history: unknown;
  /**
   * More binary archives saved with the classifier and committed with it (checksums in
   * config.json's `archiveSha256`), e.g. a LoRA run's `adapters.pt` and `head.pt`. `write`
   * writes the archive to the path given.
   */
  archives?: Archive[];
}

/** A binary file a save commits by its checksum; `write` writes it to the path given. */
export interface Archive {
  file: string;
  write: (path: string) => void | Promise<void>;
}

/**
 * Write a complete checkpoint into `dir`, replacing any previous one, so that a crash at any
 * moment leaves either the previous or the new checkpoint loadable (see the top of this file).
 */
export async function writeCheckpoint(dir: string, module: NativeScriptModule, files: CheckpointFiles): Promise<void> {
  await commitFolder(dir, {
    archives: [{ file: CLASSIFIER_FILE, write: (path: string) => saveInEvalMode(module, path) }, ...(files.archives ?? [])],
    companions: [
      { file: TOKENIZER_FILE, content: files.tokenizerJson },
      { file: HISTORY_FILE, content: JSON.stringify(files.history, null, 2) + '\n' },
    ],
    config: (archiveSha256) => ({ ...files.config, classifierSha256: archiveSha256[CLASSIFIER_FILE], archiveSha256 }),
  });
}

/**
 * A module saved in eval mode (dropout off): what `torch.jit.load` gives a user is run as is,
 * for predictions or features, the same at every call. The run goes on in the mode it was in
 * (the training loop sets one mode for the whole model, so the top module's flag is every module's).
 */
export async function saveInEvalMode(module: NativeScriptModule, path: string): Promise<void> {
  const wasTraining = module.isTraining;
  module.train(false);
  try {
    await module.saveAsync(path);
  } finally {
    module.train(wasTraining);
  }
}

/**
 * The save of the top of this file, for any folder whose config.json commits its archives: the
 * archives under their content-addressed names, the companions (small files, whole at every
 * moment) swapped in, config.json (made from the archives' checksums) as the commit point, then
 * the archives published. The classifier's checkpoint and pretraining's model folder
 * (mlm-output.ts) are both saved this way.
 */
export async function commitFolder(
  dir: string,
  save: {
    archives: Archive[];
    companions: Array<{ file: string; content: string | Uint8Array }>;
    config: (archiveSha256: Record<string, string>) => object;
  },
): Promise<void> {
  await completeInterruptedSave(dir);
  const subfolders = [...new Set([...save.archives, ...save.companions].map(({ file }) => archiveFolder(file)))].filter((f) => f);
  await removeStaleFiles(dir, subfolders);
  for (const folder of subfolders) await mkdir(join(dir, folder), { recursive: true });
  const pending: string[] = [];
  const addressed: Array<{ file: string; path: string }> = [];
  let committed = false;
  try {
    // 1. Each archive under its content-addressed name.
    const archiveSha256: Record<string, string> = {};
    for (const archive of save.archives) {
      const tmp = tempName(join(dir, archive.file));
      pending.push(tmp);
      await archive.write(tmp);
      await fsyncFile(tmp);
      const sha = await sha256File(tmp);
      archiveSha256[archive.file] = sha;
      const path = join(dir, addressedName(archive.file, sha));
      await rename(tmp, path);
      addressed.push({ file: archive.file, path });
    }
    const swaps: Array<{ tmp: string; file: string }> = [];
    for (const { file, content } of save.companions) {
      const tmp = await writeDurably(join(dir, file), content);
      pending.push(tmp);
      swaps.push({ tmp, file });
    }
    const configTmp = await writeDurably(join(dir, CONFIG_FILE), JSON.stringify(save.config(archiveSha256), null, 2) + '\n');
    pending.push(configTmp);
    await syncFolders(dir, subfolders);
    // 2. The companions, then config.json: the commit point.
    for (const { tmp, file } of swaps) await rename(tmp, join(dir, file));
    await rename(configTmp, join(dir, CONFIG_FILE));
    committed = true;
    await syncFolders(dir, subfolders);
    // 3. The public names, 4. then the content-addressed names are no longer needed.
    for (const a of addressed) await publish(a.path, join(dir, a.file));
    await syncFolders(dir, subfolders);
    await Promise.all(addressed.map((a) => rm(a.path, { force: true })));
  } catch (err) {
    const leftovers = committed ? pending : [...pending, ...addressed.map((a) => a.path)];
    await Promise.all(leftovers.map((t) => rm(t, { force: true })));
    throw new InputError(`could not write checkpoint to ${dir}: ${messageOf(err)}`, { file: dir, cause: err });
  }
}

/** Identity of a file's current inode: a rename over the path changes it. */
export async function fileIdentity(path: string): Promise<string> {
  const s = await stat(path, { bigint: true });
  return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}`;
}

/**
 * The archive of the checkpoint in `dir` that matches `sha256` (config.json's classifierSha256):
 * `classifier.pt`, or the content-addressed file of a save interrupted between its commit and
 * its last rename. Without a checksum (configs written before checksums), `classifier.pt`.
 * `identity` is the archive's inode identity taken before hashing: a loader that finds the same
 * identity after loading has loaded exactly the bytes that were hashed.
 */
export async function resolveClassifierArchive(dir: string, sha256: string | undefined): Promise<{ path: string; identity: string }> {
  return resolveArchive(dir, CLASSIFIER_FILE, sha256);
}

/** `resolveClassifierArchive` for any archive of the checkpoint (`adapters.pt`, `head.pt`, ...). */
export async function resolveArchive(dir: string, file: string, sha256: string | undefined): Promise<{ path: string; identity: string }> {
  const publicPath = join(dir, file);
  const configPath = join(dir, CONFIG_FILE);
  let actual: string | undefined;
  let identity: string | undefined;
  let readError: unknown;
  try {
    identity = await fileIdentity(publicPath);
    actual = sha256 ? await sha256File(publicPath) : undefined;
  } catch (err) {
    readError = err;
  }
  if (identity !== undefined && (!sha256 || actual === sha256)) return { path: publicPath, identity };
  if (sha256) {
    const addressed = join(dir, addressedName(file, sha256));
    try {
      const addressedIdentity = await fileIdentity(addressed);
      if ((await sha256File(addressed)) === sha256) return { path: addressed, identity: addressedIdentity };
    } catch {
      // Not there (the usual case): report the public file's problem below.
    }
  }
  if (identity === undefined || actual === undefined) {
    throw new InputError(`cannot read ${publicPath}: ${messageOf(readError)}`, { file: publicPath, cause: readError });
  }
  throw new ModelError(`${publicPath} does not match ${configPath} (checksum differs): the directory holds parts of two different saves`, {
    file: publicPath,
  });
}

/** The path of `resolveClassifierArchive`. */
export async function resolveClassifierFile(dir: string, sha256: string | undefined): Promise<string> {
  return (await resolveClassifierArchive(dir, sha256)).path;
}
