/**
 * Model sources: a TorchScript file, a local Hugging Face model folder, or a Hub id
 * (`name` or `org/name`, optionally `@revision`) resolved through the Hugging Face cache that
 * Python's `huggingface_hub` uses, so either side finds what the other downloaded:
 *
 *   <cache>/models--org--name/blobs/<sha256 of an LFS file, or git blob sha1 of a small one>
 *   <cache>/models--org--name/refs/<revision>             the commit the revision resolved to
 *   <cache>/models--org--name/snapshots/<commit>/<path>   relative symlink to ../../blobs/<hash>
 *   <cache>/models--org--name/.no_exist/<commit>/<path>   empty: the repository has no such file
 *
 * `@huggingface/hub` supplies the cache location and the Hub API (revision → commit and file
 * list, file checksums). The cache is written here, because its `downloadFileToCacheDir` names
 * the snapshot after the file's last commit rather than the revision's, writes no ref, verifies
 * nothing and can leave a partial `.incomplete` behind.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { homedir, hostname } from 'node:os';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { getRepoFolderName, HubApiError, modelInfo, pathsInfo } from '@huggingface/hub';
import { AbortError, InputError, ModelError, messageOf } from '../addon/errors.js';
import { WRITER_ID_PATTERN, writerId, writerIsAlive } from '../files/writer-identity.js';
import { onceAcrossProcesses } from './hub-lock.js';
import {
  CONFIG_FILE,
  filesOf,
  inspectModelFolder,
  isContainedRelativePath,
  type ModelFolderFiles,
  selectModelFiles,
  TOKENIZER_JSON,
  VOCAB_TXT,
  WEIGHT_CANDIDATES,
} from './model-folder.js';

export type ModelSource =
  | { kind: 'torchscript'; file: string }
  | {
      kind: 'folder';
      dir: string;
      files: ModelFolderFiles;
      /** Set for a Hub id: the repository, the revision asked for, and the commit it resolved to (to record). */
      repoId?: string;
      revision?: string;
      commit?: string;
    };

export interface DownloadProgress {
  /** Path in the repository. */
  file: string;
  received: number;
  total: number;
  /**
   * True while another process sharing the cache (torch-bert's or Python's) downloads the file and
   * this one waits for it (`received`: the size of the file's newest partial download, that
   * process's); absent for this process's own download.
   */
  waiting?: true;
}

export interface ResolveOptions {
  /** Overrides an `@revision` in the spec being absent; both given and different is an error. Default `main`. */
  revision?: string;
  /** Fetch the tokenizer files too (default true); false when a tokenizer is given separately. */
  tokenizer?: boolean;
  signal?: AbortSignal;
  onProgress?: (progress: DownloadProgress) => void;
}

/** The environment a Hub resolve reads, in Python's meaning (HF_HUB_CACHE / HF_HOME via @huggingface/hub). */
interface HubEnv {
  cacheDir: string;
  endpoint: string;
  token?: string;
  offline: boolean;
}

function hubEnv(): HubEnv {
  const { cacheDir, endpoint, offline } = hubSettings();
  return { cacheDir, endpoint, offline, token: process.env.HF_TOKEN || undefined };
}

/**
 * Where Hub ids resolve, as `doctor` reports it: the cache folder, the endpoint, offline mode,
 * and whether a token is set (never the token itself).
 */
export function hubSettings(): { cacheDir: string; endpoint: string; offline: boolean; tokenSet: boolean } {
  const env = process.env;
  return {
    cacheDir: hubCacheDir(env),
    endpoint: (env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, ''),
    // Python's huggingface_hub reads these spellings as true.
    offline: ['1', 'on', 'yes', 'true'].includes((env.HF_HUB_OFFLINE ?? '').trim().toLowerCase()),
    tokenSet: Boolean(env.HF_TOKEN),
  };
}

/**
 * The cache folder as Python's huggingface_hub finds it (its constants.py): HF_HUB_CACHE, else the
 * older HUGGINGFACE_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
 * ~/.cache/huggingface/hub, with `~` and `$VAR` expanded. @huggingface/hub's getHFHubCachePath
 * expands neither and skips HUGGINGFACE_HUB_CACHE, so `HF_HOME='~/hf'` was a folder named `~`
 * in the working directory, and the two sides each downloaded their own copy.
 */
function hubCacheDir(env: NodeJS.ProcessEnv): string {
  const expand = (path: string) =>
    path.replace(/^~(?=$|\/)/, homedir()).replace(/\$(\w+)|\$\{([^}]*)\}/g, (text, name, braced) => env[name ?? braced] ?? text);
  const home = expand(env.HF_HOME ?? join(env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface'));
  return expand(env.HF_HUB_CACHE ?? env.HUGGINGFACE_HUB_CACHE ?? join(home, 'hub'));
}

const COMMIT = /^[0-9a-f]{40}$/;
const DEFAULT_REVISION = 'main';

/**
 * `name`, `org/name`, either with `@revision`. Refused: more than one slash, `..`, `--`
 * (the cache folder separator), leading or trailing `.`/`-`, characters outside `[A-Za-z0-9._-]`,
 * and revisions that would leave `refs/` or are not printable ASCII (Python's rules, which also keep
 * ids inside the cache).
 */
export function parseHubId(spec: string): { repoId: string; revision?: string } {
  const at = spec.indexOf('@');
  const id = at < 0 ? spec : spec.slice(0, at);
  const revision = at < 0 ? undefined : spec.slice(at + 1);
  const refuse = (why: string): never => {
    throw new InputError(`${JSON.stringify(spec)} is not a Hugging Face Hub id (name or org/name, optionally @revision): ${why}`);
  };
  const parts = id.split('/');
  if (parts.length > 2) refuse('too many slashes');
  if (id.length > 96) refuse('longer than 96 characters');
  for (const part of parts) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(part) || /[.-]$/.test(part)) refuse(`${JSON.stringify(part)} is not a valid name`);
    if (part.includes('..') || part.includes('--')) refuse(`${JSON.stringify(part)} contains ".." or "--"`);
  }
  if (revision !== undefined && (!isContainedRelativePath(revision) || !/^[!-~]+$/.test(revision))) refuse('invalid revision');
  return { repoId: id, revision };
}

/** Whether resolveModelSource would send `spec` to the Hub: nothing exists at it, and it is a Hub id not written as a path. */
export function namesHubModel(spec: string): boolean {
  if (existsSync(spec) || looksLikePath(spec)) return false;
  try {
    parseHubId(spec);
    return true;
  } catch {
    return false;
  }
}

/** A spec the user meant as a path: never sent to the Hub. */
function looksLikePath(spec: string): boolean {
  return isAbsolute(spec) || /^\.{1,2}([/\\]|$)/.test(spec) || spec.startsWith('~') || spec.includes('\\');
}

async function statOrUndefined(path: string) {
  try {
    return await stat(path);
  } catch {
    return undefined;
  }
}

/**
 * Where an encoder comes from. An existing local path wins (a file: TorchScript; a folder: a
 * Hugging Face model folder); a spec written as a path (`./name`, `/abs`, `~`) is only ever
 * local; anything else is a Hub id, resolved through the cache and downloaded when missing.
 */
export async function resolveModelSource(spec: string, options: ResolveOptions = {}): Promise<ModelSource> {
  const found = await statOrUndefined(spec);
  if (found?.isFile()) {
    checkNotFolderFile(spec);
    return { kind: 'torchscript', file: resolve(spec) };
  }
  if (found?.isDirectory()) {
    const dir = resolve(spec);
    return { kind: 'folder', dir, files: await inspectModelFolder(dir) };
  }
  if (looksLikePath(spec)) throw new InputError(`${spec}: no such file or folder`, { file: spec });
  const parsed = parseHubId(spec);
  if (parsed.revision !== undefined && options.revision !== undefined && parsed.revision !== options.revision) {
    throw new InputError(`${spec} names revision ${parsed.revision}, and revision ${options.revision} was also given`);
  }
  const env = hubEnv();
  try {
    return await resolveHubModel(parsed.repoId, parsed.revision ?? options.revision ?? DEFAULT_REVISION, env, options);
  } catch (err) {
    throw withoutSecret(err, env.token);
  }
}

/**
 * The folder `spec` names where it is an existing local folder (which wins over a Hub id, as in
 * resolveModelSource), resolved; null for anything else. Nothing is downloaded or read: what a
 * run knows of its model before loading it.
 */
export async function localModelFolder(spec: string): Promise<string | null> {
  return (await statOrUndefined(spec))?.isDirectory() ? resolve(spec) : null;
}

/** The files of a Hugging Face folder, which a user may name instead of the folder (read as TorchScript, they fail obscurely). */
const FOLDER_FILES: readonly string[] = [CONFIG_FILE, ...WEIGHT_CANDIDATES, TOKENIZER_JSON, VOCAB_TXT];

function checkNotFolderFile(spec: string): void {
  if (FOLDER_FILES.includes(basename(spec))) {
    throw new InputError(
      `${spec} is one file of a Hugging Face model folder, not a model: give the folder that holds it (${dirname(resolve(spec))})`,
      {
        file: spec,
      },
    );
  }
}

/**
 * Replaces a token wherever it might be echoed (a server's error body, a URL) in an error and
 * its causes: the one place that keeps a token out of messages, stacks and what a logged error shows.
 */
function withoutSecret(err: unknown, token: string | undefined): unknown {
  if (!token) return err;
  const scrub = (text: string) => text.split(token).join('***');
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    e.message = scrub(e.message);
    if (e.stack) e.stack = scrub(e.stack);
    // The server's answer, which console.log(err) prints with the error.
    if (e instanceof HubApiError && e.data !== undefined) e.data = JSON.parse(scrub(JSON.stringify(e.data)));
  }
  return err;
}

/** The cache folders of one repository and commit. */
class RepoCache {
  readonly root: string;
  constructor(
    cacheDir: string,
    readonly repoId: string,
  ) {
    this.root = join(cacheDir, getRepoFolderName({ type: 'model', name: repoId }));
  }
  ref(revision: string): string {
    return join(this.root, 'refs', revision);
  }
  snapshot(commit: string): string {
    return join(this.root, 'snapshots', commit);
  }
  noExist(commit: string, path: string): string {
    return join(this.root, '.no_exist', commit, path);
  }
  blob(etag: string): string {
    return join(this.root, 'blobs', etag);
  }
  /** The lock on downloading a blob, Python's own (hub-lock.ts): `<cache>/.locks/models--org--name/<hash>.lock`. */
  downloadLock(etag: string): string {
    return join(dirname(this.root), '.locks', basename(this.root), `${etag}.lock`);
  }
  async readRef(revision: string): Promise<string | undefined> {
    if (COMMIT.test(revision)) return revision;
    try {
      const commit = (await readFile(this.ref(revision), 'utf8')).trim();
      return COMMIT.test(commit) ? commit : undefined;
    } catch {
      return undefined;
    }
  }
  /** What the cache knows of a file: linked in the snapshot, marked missing, or neither. */
  async state(commit: string, path: string): Promise<'present' | 'absent' | 'unknown'> {
    if ((await statOrUndefined(join(this.snapshot(commit), path)))?.isFile()) return 'present';
    if (await statOrUndefined(this.noExist(commit, path))) return 'absent';
    return 'unknown';
  }
}

/** Writes a file by rename, so a reader never sees it half written. */
async function writeAtomic(path: string, content: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}-${Math.random().toString(36).slice(2)}.tmp`;
  await writeFile(tmp, content);
  await rename(tmp, path);
}

/** A relative symlink (as Python makes: the cache folder can move), replaced by rename. */
async function linkAtomic(target: string, link: string): Promise<void> {
  await mkdir(dirname(link), { recursive: true });
  const tmp = `${link}.${process.pid}-${Math.random().toString(36).slice(2)}.tmp`;
  await symlink(relative(dirname(link), target), tmp);
  await rename(tmp, link);
}

async function resolveHubModel(repoId: string, revision: string, env: HubEnv, options: ResolveOptions): Promise<ModelSource> {
  const repo: HubRepo = { cache: new RepoCache(env.cacheDir, repoId), repoId, revision, label: `${repoId}@${revision}` };
  const wantTokenizer = options.tokenizer ?? true;
  const commit = (await fromCache(repo, env, wantTokenizer)) ?? (await fromHub(repo, env, wantTokenizer, options));
  const dir = repo.cache.snapshot(commit);
  return { kind: 'folder', dir, files: await inspectModelFolder(dir), repoId, revision, commit };
}

/** A Hub repository at a revision, and its folder in the Hugging Face cache. */
interface HubRepo {
  cache: RepoCache;
  repoId: string;
  revision: string;
  /** `repoId@revision`, as messages name it. */
  label: string;
}

/**
 * The cached commit of the revision when its snapshot already holds every needed file (or says
 * which are missing): a second resolve makes no request. Offline, the cache is all there is: what
 * it lacks is an error; online, null sends the resolve to the Hub.
 */
async function fromCache({ cache, revision, label }: HubRepo, env: HubEnv, wantTokenizer: boolean): Promise<string | null> {
  const cachedCommit = await cache.readRef(revision);
  if (!cachedCommit) {
    if (env.offline) throw offlineMissing(label, CONFIG_FILE, env.cacheDir);
    return null;
  }
  const selection = await selectModelFiles(
    {
      state: (p) => cache.state(cachedCommit, p),
      readText: (p) => readFile(join(cache.snapshot(cachedCommit), p), 'utf8'),
      where: (p) => join(cache.snapshot(cachedCommit), p),
    },
    { tokenizer: wantTokenizer, unknownAsAbsent: env.offline },
  );
  if (!selection.ok) {
    if (env.offline) throw offlineMissing(label, selection.missing, env.cacheDir);
    return null;
  }
  // Offline, a tokenizer the cache never fetched reads as absent. Python's AutoModel alone leaves
  // such a snapshot, so say it is not cached rather than let the folder seem to have none.
  if (env.offline && wantTokenizer && !selection.files.tokenizer && (await tokenizerNeverAsked(cache, cachedCommit))) {
    throw new InputError(
      `HF_HUB_OFFLINE is set and the tokenizer (${TOKENIZER_JSON}, or ${VOCAB_TXT}) of ${label} is not in the Hugging Face ` +
        `cache (${env.cacheDir}); download it once online, or name one (tokenizer / --tokenizer)`,
      { file: TOKENIZER_JSON },
    );
  }
  return cachedCommit;
}

/**
 * The revision resolved to a commit by the Hub, and the files the model needs downloaded into its
 * snapshot (only those: the file list decides, config.json and an index read first).
 */
async function fromHub(repo: HubRepo, env: HubEnv, wantTokenizer: boolean, options: ResolveOptions): Promise<string> {
  const { cache, repoId, revision, label } = repo;
  const signal = options.signal;
  const hub = { hubUrl: env.endpoint, accessToken: env.token, fetch: withSignal(signal) };
  let info: { sha?: string; filePaths?: string[] };
  try {
    info = await modelInfo({ ...hub, name: repoId, revision, additionalFields: ['sha', 'filePaths'] });
  } catch (err) {
    // An existing local path wins over a Hub id: a name that reaches the Hub named no file or
    // folder here either, which a mistyped local path needs said as much as the Hub's answer.
    const asked = `${label} could not be resolved on ${env.endpoint} (read as a Hub id: there is no file or folder ${repoId} in ${process.cwd()})`;
    throw hubFailure(err, asked, signal);
  }
  const commit = info.sha;
  if (!commit || !COMMIT.test(commit)) throw new Error(`${env.endpoint} answered for ${label} without a commit hash`);
  if (!COMMIT.test(revision)) await writeAtomic(cache.ref(revision), commit);

  const listed = new Set(info.filePaths ?? []);
  const fetchFiles = (paths: string[]) => downloadIntoCache(cache, commit, paths, { ...options, env, label });
  const selection = await selectModelFiles(
    {
      state: (p) => (listed.has(p) ? 'present' : 'absent'),
      readText: async (p) => {
        await fetchFiles([p]);
        return readFile(join(cache.snapshot(commit), p), 'utf8');
      },
      where: (p) => `${p} of ${label} (commit ${commit})`,
    },
    { tokenizer: wantTokenizer, unknownAsAbsent: false },
  );
  if (!selection.ok) throw new ModelError(`${label} (commit ${commit}) has no ${selection.missing}`, { file: label });
  await fetchFiles(filesOf(selection.files));
  // Python's marker for "asked, not there": the next resolve (ours or Python's) need not ask again.
  for (const path of selection.absent) await writeAtomic(cache.noExist(commit, path), '');
  return commit;
}

/** Neither tokenizer file is in the snapshot or marked missing (`.no_exist`): the cache cannot say whether the repository has one. */
async function tokenizerNeverAsked(cache: RepoCache, commit: string): Promise<boolean> {
  return (await cache.state(commit, TOKENIZER_JSON)) === 'unknown' && (await cache.state(commit, VOCAB_TXT)) === 'unknown';
}

function offlineMissing(label: string, file: string, cacheDir: string): InputError {
  return new InputError(
    `HF_HUB_OFFLINE is set and the Hugging Face cache (${cacheDir}) has no ${file} of ${label}; download it once online`,
    { file },
  );
}

/** fetch bound to the caller's signal, for @huggingface/hub's calls. */
function withSignal(signal: AbortSignal | undefined): typeof fetch {
  return (input, init) => fetch(input, { ...init, signal });
}

/** A failed Hub request, said in the user's terms; the Hub's own words are kept (and the error as cause). */
function hubFailure(err: unknown, what: string, signal: AbortSignal | undefined): Error {
  if (signal?.aborted) return new AbortError('the model download was aborted', { cause: err });
  if (err instanceof HubApiError) {
    const detail = (err.data as { error?: unknown } | undefined)?.error;
    const said = typeof detail === 'string' && detail ? `: ${detail}` : '';
    const answer = `${what} (HTTP ${err.statusCode}${said})`;
    if (err.statusCode === 401 || err.statusCode === 403 || err.statusCode === 404) {
      return new InputError(
        `${answer}; check the id and revision, and for a private or gated model set HF_TOKEN to a token that can read it`,
        {
          cause: err,
        },
      );
    }
    // A busy or failing server (429, 5xx) is no fault of the request: not an InputError.
    if (err.statusCode === 429 || err.statusCode >= 500) {
      return new Error(`${answer}; the server is busy or failing: try again later (files already downloaded are kept)`, { cause: err });
    }
    return new InputError(answer, { cause: err });
  }
  return new Error(`${what}: ${messageOf(err)}`, { cause: err });
}

interface DownloadContext extends ResolveOptions {
  env: HubEnv;
  label: string;
}

/**
 * Puts the given files of a commit into the cache: each one's blob (downloaded unless another
 * snapshot already has it) and its snapshot link. A file is checked against the Hub's checksum
 * before its blob gets its final name; a failed or interrupted download leaves nothing behind.
 */
async function downloadIntoCache(cache: RepoCache, commit: string, paths: string[], ctx: DownloadContext): Promise<void> {
  const needed: string[] = [];
  for (const path of paths) if ((await cache.state(commit, path)) !== 'present') needed.push(path);
  if (needed.length === 0) return;
  const { env, signal } = ctx;
  await removeAbandonedDownloads(join(cache.root, 'blobs'));
  let infos: Awaited<ReturnType<typeof pathsInfo>>;
  try {
    infos = await pathsInfo({
      hubUrl: env.endpoint,
      accessToken: env.token,
      fetch: withSignal(signal),
      repo: cache.repoId,
      revision: commit,
      paths: needed,
    });
  } catch (err) {
    throw hubFailure(err, `the file list of ${ctx.label} could not be read from ${env.endpoint}`, signal);
  }
  for (const path of needed) {
    if (!isContainedRelativePath(path)) throw new ModelError(`${ctx.label} names a file outside its folder: ${JSON.stringify(path)}`);
    const info = infos.find((i) => i.path === path);
    // An LFS file is named after its SHA-256, a small one after its git blob SHA-1 (Python's etags).
    const expected = info?.lfs
      ? { algorithm: 'sha256' as const, hash: info.lfs.oid, size: info.lfs.size }
      : info?.oid
        ? { algorithm: 'git-sha1' as const, hash: info.oid, size: info.size }
        : undefined;
    if (!expected || !/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(expected.hash)) {
      throw new Error(`${env.endpoint} gave no checksum for ${path} of ${ctx.label}`);
    }
    const blob = cache.blob(expected.hash);
    if (!(await statOrUndefined(blob))) {
      const url = `${env.endpoint}/${cache.repoId}/resolve/${commit}/${path.split('/').map(encodeURIComponent).join('/')}`;
      await fetchBlob(url, cache.downloadLock(expected.hash), blob, { ...expected, path, ctx });
    }
    await linkAtomic(blob, join(cache.snapshot(commit), path));
  }
}

interface ExpectedBlob {
  algorithm: 'sha256' | 'git-sha1';
  hash: string;
  size: number;
  path: string;
  ctx: DownloadContext;
}

/**
 * The blob downloaded once among the processes sharing the cache: by this one, or, while
 * another holds its lock, by that one, waited for (its progress reported as `waiting`).
 */
async function fetchBlob(url: string, lock: string, blob: string, expected: ExpectedBlob): Promise<void> {
  const { path, ctx } = expected;
  const waiting = (received: number) => ctx.onProgress?.({ file: path, received, total: expected.size, waiting: true });
  let waited = false;
  try {
    await onceAcrossProcesses(lock, {
      done: async () => (await statOrUndefined(blob)) !== undefined,
      run: () => {
        waited = false;
        return downloadVerified(url, blob, expected);
      },
      onWait: async () => {
        waited = true;
        waiting(await partialSize(dirname(blob), expected.hash));
      },
      signal: ctx.signal,
    });
  } catch (err) {
    if (ctx.signal?.aborted && !(err instanceof AbortError)) throw new AbortError('the model download was aborted', { cause: err });
    throw err;
  }
  if (waited) waiting(expected.size);
}

/**
 * How much of the blob the lock's holder has written, or 0. The lock does not say who holds it:
 * its partial file is the one of this blob written last (ours, or Python's `<hash>.incomplete` or
 * `<hash>.<uuid>.incomplete`); an abandoned one is older.
 */
async function partialSize(blobs: string, hash: string): Promise<number> {
  const names = (await readdir(blobs).catch(() => [] as string[])).filter((n) => n.startsWith(`${hash}.`) && n.endsWith('.incomplete'));
  const partials = await Promise.all(names.map((name) => statOrUndefined(join(blobs, name))));
  const newest = partials.reduce((a, b) => (b && (!a || b.mtimeMs > a.mtimeMs) ? b : a), undefined);
  return newest?.size ?? 0;
}

/** This host in the names of partial downloads: whether their writer runs is ours to check only here. */
export const HOST = hostname().replace(/[^A-Za-z0-9]/g, '_');

/**
 * A partial download of ours: `<hash>.<host>-<writer>-<random>.incomplete`, the writer being
 * writer-identity's `<pid>.<start time>` (older names: a bare pid, and before that no host).
 * Python's are `<hash>.incomplete` (which older huggingface_hub resumes) and `<hash>.<uuid>.incomplete`:
 * never ours to remove.
 */
const OUR_PARTIAL = new RegExp(`^[0-9a-f]{40}(?:[0-9a-f]{24})?\\.(?:([A-Za-z0-9_]+)-)?${WRITER_ID_PATTERN}-[0-9a-z]+\\.incomplete$`);
/**
 * A live download writes every few seconds (fetch gives up on a body silent for five minutes): a
 * partial file of another host untouched this long lost its writer.
 */
const ABANDONED_MS = 15 * 60 * 1000;

/**
 * Removes the partial downloads whose writer is gone: a process of this host that no longer runs,
 * or, for another host sharing the cache (whose pids are not ours to check), one silent too long.
 * A killed process (SIGKILL, OOM, a crash) runs no cleanup: before this, each kill left its
 * partial file, up to a whole weights file, in `blobs/` for good.
 */
async function removeAbandonedDownloads(blobs: string): Promise<void> {
  const names = await readdir(blobs).catch(() => [] as string[]);
  for (const name of names) {
    const writer = OUR_PARTIAL.exec(name);
    if (!writer) continue;
    const gone =
      writer[1] === HOST
        ? !writerIsAlive(Number(writer[2]), writer[3])
        : Date.now() - ((await statOrUndefined(join(blobs, name)))?.mtimeMs ?? Date.now()) > ABANDONED_MS;
    if (gone) await rm(join(blobs, name), { force: true });
  }
}

async function downloadVerified(url: string, blob: string, expected: ExpectedBlob): Promise<void> {
  const { path, ctx } = expected;
  const { env, signal, onProgress } = ctx;
  await mkdir(dirname(blob), { recursive: true });
  // Unique per download and named by its writer, not Python's `<hash>.incomplete`: where the lock
  // does not hold (unlocked, or a file system granting flock to all) two writers of one name would
  // interleave their bytes (newer huggingface_hub moved to unique names for that reason), and the
  // writer's identity lets removeAbandonedDownloads tell a dead writer's leftover. Nothing resumes.
  const tmp = `${blob}.${HOST}-${writerId()}-${Math.random().toString(36).slice(2)}.incomplete`;
  try {
    let response: Response;
    try {
      response = await fetch(url, { headers: env.token ? { Authorization: `Bearer ${env.token}` } : {}, signal });
    } catch (err) {
      throw hubFailure(err, `${path} of ${ctx.label} could not be downloaded from ${env.endpoint}`, signal);
    }
    if (!response.ok || !response.body) {
      const body = await response.text().catch(() => '');
      const apiError = new HubApiError(url, response.status);
      apiError.data = { error: body.slice(0, 300) };
      throw hubFailure(apiError, `${path} of ${ctx.label} could not be downloaded from ${env.endpoint}`, signal);
    }
    // The git blob id hashes a header before the content: "blob <size>\0".
    const hash = createHash(expected.algorithm === 'sha256' ? 'sha256' : 'sha1');
    if (expected.algorithm === 'git-sha1') hash.update(`blob ${expected.size}\0`);
    let received = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hash.update(chunk);
        received += chunk.length;
        onProgress?.({ file: path, received, total: expected.size });
        callback(null, chunk);
      },
    });
    try {
      await pipeline(Readable.fromWeb(response.body as NodeReadableStream), meter, createWriteStream(tmp, { flags: 'wx' }));
    } catch (err) {
      throw hubFailure(err, `the download of ${path} of ${ctx.label} from ${env.endpoint} broke off after ${received} bytes`, signal);
    }
    const actual = hash.digest('hex');
    if (received !== expected.size || actual !== expected.hash) {
      throw new Error(
        `${path} of ${ctx.label} from ${env.endpoint} does not match the Hub's checksum ` +
          `(${expected.algorithm} ${expected.hash}, ${expected.size} bytes; got ${actual}, ${received} bytes); nothing was cached`,
      );
    }
    await rename(tmp, blob);
  } finally {
    await rm(tmp, { force: true });
  }
}

/**
 * A progress bar for downloads on `stream` (stderr by default) when it is a terminal; undefined
 * otherwise, so logs and pipes get no carriage-return noise.
 */
export function terminalProgress(
  stream: { isTTY?: boolean; columns?: number; write(text: string): unknown } = process.stderr,
): ((progress: DownloadProgress) => void) | undefined {
  if (!stream.isTTY) return undefined;
  let lastDrawn = 0;
  return ({ file, received, total, waiting }) => {
    const now = Date.now();
    const finished = received >= total;
    // Redraw at most ten times a second; always draw the end.
    if (!finished && now - lastDrawn < 100) return;
    lastDrawn = now;
    const fraction = total > 0 ? Math.min(1, received / total) : 1;
    const mb = (n: number) => (n / 1e6).toFixed(1);
    const tail = ` ${Math.round(fraction * 100)}% ${mb(received)}/${mb(total)} MB${waiting ? ' (by another process)' : ''}`;
    const width = Math.max(10, Math.min(40, (stream.columns ?? 80) - file.length - tail.length - 4));
    const filled = Math.round(fraction * width);
    stream.write(`\r${file} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}]${tail}${finished ? '\n' : ''}`);
  };
}
