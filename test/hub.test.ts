/**
 * lib/models/hub.ts and lib/models/model-folder.ts against a Hub on loopback (test/helpers/hub-server.ts):
 * what is downloaded, where it lands in the Hugging Face cache, when nothing is asked, and what
 * is refused. HF_HUB_CACHE / HF_HOME point into a temporary folder, never the real cache.
 */

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { inspect } from 'node:util';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { InputError } from '../lib/addon/errors.js';
import { writerId } from '../lib/files/writer-identity.js';
import { type DownloadProgress, HOST, type ModelSource, parseHubId, resolveModelSource, terminalProgress } from '../lib/models/hub.js';
import { inspectModelFolder } from '../lib/models/model-folder.js';
import { PYTHON, repoRoot } from './fixtures.js';
import { FakeHub, gitBlobSha1, sha256 } from './helpers/hub-server.js';

const commitOf = (label: string) => createHash('sha1').update(label).digest('hex');
const C1 = commitOf('one');
const C2 = commitOf('two');

// Weights a little over 1 MB, so downloads come in several chunks.
const weights = Buffer.alloc(1_200_000, 0);
for (let i = 0; i < weights.length; i++) weights[i] = (i * 7919) % 251;
const ZIP_HEADER = Buffer.from([0x50, 0x4b, 0x03, 0x04]);

const tinyBert = (version: string): Record<string, Buffer | string> => ({
  'config.json': JSON.stringify({ model_type: 'bert', hidden_size: 8, version }),
  'model.safetensors': weights,
  // Not needed next to model.safetensors: must not be downloaded.
  'pytorch_model.bin': Buffer.concat([ZIP_HEADER, Buffer.alloc(64, 1)]),
  'tokenizer.json': JSON.stringify({ version: '1.0', model: { type: 'WordPiece' } }),
  'README.md': '# tiny\n',
});

const ENV_KEYS = [
  'HF_HUB_CACHE',
  'HUGGINGFACE_HUB_CACHE',
  'HF_HOME',
  'XDG_CACHE_HOME',
  'HF_ENDPOINT',
  'HF_TOKEN',
  'HF_HUB_OFFLINE',
] as const;
const savedEnv = Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k]]));

const hub = new FakeHub();
let tmp: string;
let cache: string;

beforeAll(async () => {
  await hub.start();
});
afterAll(async () => {
  await hub.stop();
});

beforeEach(() => {
  tmp = mkdtempSync(join(tmpdir(), 'torch-bert-hub-'));
  cache = join(tmp, 'cache');
  for (const k of ENV_KEYS) delete process.env[k];
  process.env.HF_HUB_CACHE = cache;
  process.env.HF_ENDPOINT = hub.url;
  hub.repos.clear();
  hub.requests.length = 0;
  hub.faults = {};
  hub.repos.set('org/tiny-bert', { commits: { [C1]: tinyBert('one'), [C2]: tinyBert('two') }, refs: { main: C2, v1: C1 } });
});
afterEach(() => {
  for (const k of ENV_KEYS) {
    if (savedEnv[k] === undefined) delete process.env[k];
    else process.env[k] = savedEnv[k];
  }
  rmSync(tmp, { recursive: true, force: true });
});

const repoDir = (root = cache) => join(root, 'models--org--tiny-bert');
const bytesOf = (files: Record<string, Buffer | string>, path: string) => Buffer.from(files[path]!);

/** Every file under a folder, relative, recursively (links not followed). */
function listTree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((p) => !lstatSync(join(dir, p)).isDirectory())
    .sort();
}

/** A partial download's name holds its writer's pid (and start time): `<hash>.<host>-<pid>.<start>-<random>.incomplete`. */
const writtenBy = (name: string, pid: number | undefined) => new RegExp(`[.-]${pid}(?:\\.\\d+)?-[0-9a-z]+\\.incomplete$`).test(name);

/** huggingface_hub's download lock of a blob of org/tiny-bert, which torch-bert takes too. */
const lockOf = (hash: string) => join(cache, '.locks', 'models--org--tiny-bert', `${hash}.lock`);

/**
 * Python downloading the blob `hash` of org/tiny-bert as huggingface_hub does: flock on its
 * `.locks/.../<hash>.lock` (opened as filelock's UnixFileLock opens it), half of `content`
 * written to `blobs/<hash>.incomplete`, then `locked` resolves. `finish()` writes the rest,
 * renames it to the blob and releases the lock.
 */
function pythonDownloader(hash: string, content: Buffer): { child: ChildProcess; locked: Promise<void>; finish(): void } {
  const source = join(tmp, `${hash}.source`);
  writeFileSync(source, content);
  const blob = join(repoDir(), 'blobs', hash);
  const script = `
import fcntl, os, sys
lock, blob, source = sys.argv[1:4]
os.makedirs(os.path.dirname(lock), exist_ok=True)
os.makedirs(os.path.dirname(blob), exist_ok=True)
fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
data = open(source, 'rb').read()
with open(blob + '.incomplete', 'ab') as f:
    f.write(data[: len(data) // 2])
print('locked', flush=True)
sys.stdin.readline()
with open(blob + '.incomplete', 'ab') as f:
    f.write(data[len(data) // 2 :])
os.replace(blob + '.incomplete', blob)
os.close(fd)
`;
  const child = spawn(PYTHON, ['-c', script, lockOf(hash), blob, source], { stdio: ['pipe', 'pipe', 'inherit'] });
  const locked = new Promise<void>((done, fail) => {
    child.stdout!.once('data', () => done());
    child.once('exit', (code) => fail(new Error(`the Python downloader exited (${code}) before locking`)));
  });
  return { child, locked, finish: () => child.stdin!.write('go\n') };
}

/** Whether a Python process finds the lock held: `flock(LOCK_EX | LOCK_NB)`, as filelock polls it. */
function pythonFindsHeld(lock: string): boolean {
  const script = `
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print('taken')
except BlockingIOError:
    print('held')
`;
  const run = spawnSync(PYTHON, ['-c', script, lock], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`python failed: ${run.stderr}`);
  return run.stdout.trim() === 'held';
}

/** The files this process has open (Linux; a descriptor closed meanwhile, such as the listing's own, is skipped). */
const openFiles = () =>
  readdirSync('/proc/self/fd').flatMap((fd) => {
    try {
      return [readlinkSync(join('/proc/self/fd', fd), { encoding: 'utf8' })];
    } catch {
      return [];
    }
  });

/**
 * Another process (the compiled lib/models/hub.ts) resolving org/tiny-bert, returned once it has written
 * part of the weights: the test server stalls them midway (faults.stall).
 */
/**
 * Resolves org/tiny-bert, recording every progress event; `waitedFirst` is 'waited' once a wait for
 * another process's lock is reported, or 'resolved without waiting' if it resolved before any.
 */
function resolveWatchingWaits(): { events: DownloadProgress[]; resolving: Promise<ModelSource>; waitedFirst: Promise<string> } {
  const events: DownloadProgress[] = [];
  let sawWaiting = () => {};
  const waiting = new Promise<string>((done) => {
    sawWaiting = () => done('waited');
  });
  const resolving = resolveModelSource('org/tiny-bert', {
    onProgress: (p) => {
      events.push({ ...p });
      if (p.waiting) sawWaiting();
    },
  });
  return { events, resolving, waitedFirst: Promise.race([waiting, resolving.then(() => 'resolved without waiting')]) };
}

async function stalledDownloader(): Promise<ChildProcess> {
  const hubModule = JSON.stringify(join(repoRoot, 'dist', 'models', 'hub.js'));
  const child = spawn(process.execPath, ['--input-type=module', '-e', `(await import(${hubModule})).resolveModelSource('org/tiny-bert')`], {
    env: { ...process.env },
    stdio: 'ignore',
  });
  const blobs = join(repoDir(), 'blobs');
  // Only the weights' partial is looked at: a small file's is renamed away in an instant (an lstat of it could fail).
  const weightsPartial = (b: string) => b.startsWith(`${sha256(weights)}.`) && writtenBy(b, child.pid);
  const written = () =>
    existsSync(blobs) && readdirSync(blobs).some((b) => weightsPartial(b) && lstatSync(join(blobs, b)).size === weights.length / 2);
  while (!written()) {
    if (child.exitCode !== null) throw new Error(`the downloader exited (${child.exitCode}) before writing`);
    await new Promise((done) => setTimeout(done, 20));
  }
  return child;
}

/**
 * Another process (the compiled lib/models/hub.ts) resolving `spec`: `first` says how its first progress
 * event of model.safetensors came ('downloading', or 'waiting' for another process's download),
 * `source` is what it resolved.
 */
function resolver(spec: string): {
  child: ChildProcess;
  first: Promise<string | undefined>;
  source: Promise<{ dir: string; commit: string }>;
} {
  const hubModule = JSON.stringify(join(repoRoot, 'dist', 'models', 'hub.js'));
  const script = `
    const { resolveModelSource } = await import(${hubModule});
    let told = false;
    const onProgress = (p) => {
      if (p.file !== 'model.safetensors' || told) return;
      told = true;
      console.log(p.waiting ? 'waiting' : 'downloading');
    };
    console.log(JSON.stringify(await resolveModelSource(${JSON.stringify(spec)}, { onProgress })));`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (text) => {
    stderr += text;
  });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = lines.next().then((line) => (line.done ? undefined : (line.value as string)));
  const source = first.then(async () => {
    const last = await lines.next();
    const code = child.exitCode ?? (await new Promise((done) => child.once('exit', done)));
    if (code !== 0 || last.done) throw new Error(`the resolver exited (${code}): ${stderr}`);
    return JSON.parse(last.value as string);
  });
  return { child, first, source };
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

describe('Hub ids through the Hugging Face cache', () => {
  it('the git blob id is computed the way git does', () => {
    // `printf 'hello\n' | git hash-object --stdin`
    expect(gitBlobSha1(Buffer.from('hello\n'))).toBe('ce013625030ba8dba906f756967f9e9ca394464a');
  });

  it('downloads exactly the needed files into Python’s layout, then resolves again without a request', async () => {
    const files = tinyBert('two');
    const progress: DownloadProgress[] = [];
    const source = await resolveModelSource('org/tiny-bert', { onProgress: (p) => progress.push({ ...p }) });

    const snapshot = join(repoDir(), 'snapshots', C2);
    expect(source).toEqual({
      kind: 'folder',
      dir: snapshot,
      files: { config: 'config.json', format: 'safetensors', weights: ['model.safetensors'], tokenizer: ['tokenizer.json'] },
      repoId: 'org/tiny-bert',
      revision: 'main',
      commit: C2,
    });
    const config = gitBlobSha1(bytesOf(files, 'config.json'));
    const model = sha256(weights);
    const tokenizer = gitBlobSha1(bytesOf(files, 'tokenizer.json'));
    expect(listTree(repoDir())).toEqual(
      [
        `blobs/${config}`,
        `blobs/${model}`,
        `blobs/${tokenizer}`,
        `refs/main`,
        `snapshots/${C2}/config.json`,
        `snapshots/${C2}/model.safetensors`,
        `snapshots/${C2}/tokenizer.json`,
      ].sort(),
    );
    expect(readFileSync(join(repoDir(), 'refs', 'main'), 'utf8')).toBe(C2);
    expect(readlinkSync(join(snapshot, 'config.json'))).toBe(`../../blobs/${config}`);
    expect(readlinkSync(join(snapshot, 'model.safetensors'))).toBe(`../../blobs/${model}`);
    expect(readFileSync(join(snapshot, 'model.safetensors')).equals(weights)).toBe(true);
    expect(JSON.parse(readFileSync(join(snapshot, 'config.json'), 'utf8')).version).toBe('two');
    // Neither README.md nor the unneeded pytorch_model.bin was fetched.
    const resolves = hub.requests.filter((r) => r.url.includes('/resolve/')).map((r) => r.url.replace(/.*\//, ''));
    expect(resolves.sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json']);
    expect(progress.filter((p) => p.received === p.total).map((p) => p.file)).toEqual([
      'config.json',
      'model.safetensors',
      'tokenizer.json',
    ]);
    expect(progress.filter((p) => p.file === 'model.safetensors').length).toBeGreaterThan(1);

    const before = hub.requests.length;
    const again = await resolveModelSource('org/tiny-bert');
    expect(again).toEqual(source);
    expect(hub.requests.length).toBe(before);
  });

  it('@revision pins a commit or a tag, each with its own snapshot', async () => {
    const byCommit = await resolveModelSource(`org/tiny-bert@${C1}`);
    expect(byCommit.kind === 'folder' && byCommit.commit).toBe(C1);
    expect(JSON.parse(readFileSync(join(repoDir(), 'snapshots', C1, 'config.json'), 'utf8')).version).toBe('one');
    // A commit is not a ref: nothing under refs/.
    expect(existsSync(join(repoDir(), 'refs'))).toBe(false);

    hub.requests.length = 0;
    const byTag = await resolveModelSource('org/tiny-bert', { revision: 'v1' });
    expect(byTag.kind === 'folder' && [byTag.commit, byTag.revision]).toEqual([C1, 'v1']);
    expect(readFileSync(join(repoDir(), 'refs', 'v1'), 'utf8')).toBe(C1);
    // The snapshot of commit one was complete already: only the tag was looked up.
    expect(hub.requests.map((r) => `${r.method} ${r.url.replace(/\?.*/, '')}`)).toEqual(['GET /api/models/org/tiny-bert/revision/v1']);

    await expect(resolveModelSource('org/tiny-bert@v1', { revision: 'main' })).rejects.toThrow(/names revision v1, and revision main/);
    const unknown = await rejection(resolveModelSource('org/tiny-bert@nope'));
    expect(unknown.message).toMatch(/org\/tiny-bert@nope could not be resolved .*HTTP 404: Invalid rev id: nope/);
  });

  it('finds a snapshot Python’s huggingface_hub wrote, without a request', async () => {
    const files = tinyBert('two');
    const dir = repoDir();
    mkdirSync(join(dir, 'blobs'), { recursive: true });
    mkdirSync(join(dir, 'refs'), { recursive: true });
    mkdirSync(join(dir, 'snapshots', C2), { recursive: true });
    writeFileSync(join(dir, 'refs', 'main'), C2);
    for (const path of ['config.json', 'model.safetensors', 'tokenizer.json']) {
      const content = bytesOf(files, path);
      const etag = path === 'model.safetensors' ? sha256(content) : gitBlobSha1(content);
      writeFileSync(join(dir, 'blobs', etag), content);
      symlinkSync(`../../blobs/${etag}`, join(dir, 'snapshots', C2, path));
    }
    const source = await resolveModelSource('org/tiny-bert');
    expect(source.kind === 'folder' && [source.dir, source.commit]).toEqual([join(dir, 'snapshots', C2), C2]);
    expect(hub.requests).toEqual([]);
  });

  it('uses HF_HOME/hub when HF_HUB_CACHE is unset', async () => {
    delete process.env.HF_HUB_CACHE;
    process.env.HF_HOME = join(tmp, 'home');
    const source = await resolveModelSource('org/tiny-bert');
    expect(source.kind === 'folder' && source.dir).toBe(join(tmp, 'home', 'hub', 'models--org--tiny-bert', 'snapshots', C2));
    expect(existsSync(cache)).toBe(false);
  });

  it('finds the cache where Python does: ~ and $VAR expanded, HUGGINGFACE_HUB_CACHE read', async () => {
    // Before: HF_HOME='~/hf' was a folder named '~' in the working directory, and HUGGINGFACE_HUB_CACHE was ignored.
    const home = process.env.HOME;
    const snapshotIn = async (cacheDir: string) => {
      const source = await resolveModelSource('org/tiny-bert');
      expect(source.kind === 'folder' && source.dir).toBe(join(cacheDir, 'models--org--tiny-bert', 'snapshots', C2));
    };
    try {
      process.env.HOME = join(tmp, 'user');
      delete process.env.HF_HUB_CACHE;
      process.env.HF_HOME = '~/hf';
      await snapshotIn(join(tmp, 'user', 'hf', 'hub'));
      process.env.TORCH_BERT_TEST_ROOT = tmp;
      // A shell's spellings, as Python's os.path.expandvars reads them: ${NAME}, $NAME, an unset one kept.
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the literal text is the point
      process.env.HF_HUB_CACHE = '${TORCH_BERT_TEST_ROOT}/by-var/$TORCH_BERT_TEST_ROOT_UNSET';
      await snapshotIn(join(tmp, 'by-var', '$TORCH_BERT_TEST_ROOT_UNSET'));
      delete process.env.HF_HUB_CACHE;
      process.env.HUGGINGFACE_HUB_CACHE = join(tmp, 'legacy');
      await snapshotIn(join(tmp, 'legacy'));
    } finally {
      process.env.HOME = home;
      delete process.env.TORCH_BERT_TEST_ROOT;
    }
  });

  it('sharded weights: downloads the index and its shards, records absent files in .no_exist', async () => {
    const shard1 = Buffer.alloc(300, 1);
    const shard2 = Buffer.alloc(200, 2);
    const index = JSON.stringify({
      weight_map: { 'a.weight': 'model-00001-of-00002.safetensors', 'b.weight': 'model-00002-of-00002.safetensors' },
    });
    hub.repos.set('sharded', {
      commits: {
        [C1]: {
          'config.json': '{"model_type":"bert"}',
          'model.safetensors.index.json': index,
          'model-00001-of-00002.safetensors': shard1,
          'model-00002-of-00002.safetensors': shard2,
          'vocab.txt': '[PAD]\n[UNK]\n',
          'tokenizer_config.json': '{"do_lower_case":true}',
        },
      },
      refs: { main: C1 },
    });
    const source = await resolveModelSource('sharded');
    expect(source.kind === 'folder' && source.files).toEqual({
      config: 'config.json',
      format: 'safetensors',
      weights: ['model.safetensors.index.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'],
      tokenizer: ['vocab.txt', 'tokenizer_config.json'],
    });
    const root = join(cache, 'models--sharded');
    expect(readFileSync(join(root, 'snapshots', C1, 'model-00002-of-00002.safetensors')).equals(shard2)).toBe(true);
    expect(listTree(join(root, '.no_exist'))).toEqual([`${C1}/model.safetensors`, `${C1}/special_tokens_map.json`, `${C1}/tokenizer.json`]);
    const before = hub.requests.length;
    await resolveModelSource('sharded');
    expect(hub.requests.length).toBe(before);
  });

  it('tokenizer: false leaves the tokenizer files on the Hub', async () => {
    const source = await resolveModelSource('org/tiny-bert', { tokenizer: false });
    expect(source.kind === 'folder' && source.files.tokenizer).toBeUndefined();
    expect(hub.requests.some((r) => r.url.endsWith('/tokenizer.json'))).toBe(false);
  });

  it('HF_HUB_OFFLINE=1: an empty cache fails naming the missing file; a warm one works without requests', async () => {
    process.env.HF_HUB_OFFLINE = '1';
    const cold = await rejection(resolveModelSource('org/tiny-bert'));
    expect(cold.message).toBe(
      `HF_HUB_OFFLINE is set and the Hugging Face cache (${cache}) has no config.json of org/tiny-bert@main; download it once online`,
    );
    expect(hub.requests).toEqual([]);

    delete process.env.HF_HUB_OFFLINE;
    await resolveModelSource('org/tiny-bert');
    hub.requests.length = 0;
    process.env.HF_HUB_OFFLINE = '1';
    const warm = await resolveModelSource('org/tiny-bert');
    expect(warm.kind === 'folder' && warm.commit).toBe(C2);

    rmSync(join(repoDir(), 'snapshots', C2, 'model.safetensors'));
    const partial = await rejection(resolveModelSource('org/tiny-bert'));
    expect(partial.message).toMatch(
      /has no weights \(model\.safetensors, model\.safetensors\.index\.json, pytorch_model\.bin.* of org\/tiny-bert@main;/,
    );
    expect(hub.requests).toEqual([]);
  });

  it('HF_HUB_OFFLINE=1: a tokenizer the cache never fetched is named as not cached, not as missing from the model', async () => {
    // As Python leaves the cache after AutoModel.from_pretrained alone: config and weights, no tokenizer.
    await resolveModelSource('org/tiny-bert', { tokenizer: false });
    process.env.HF_HUB_OFFLINE = '1';
    const err = await rejection(resolveModelSource('org/tiny-bert'));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe(
      `HF_HUB_OFFLINE is set and the tokenizer (tokenizer.json, or vocab.txt) of org/tiny-bert@main is not in the ` +
        `Hugging Face cache (${cache}); download it once online, or name one (tokenizer / --tokenizer)`,
    );
    // Named separately, the model's own tokenizer is not needed.
    const without = await resolveModelSource('org/tiny-bert', { tokenizer: false });
    expect(without.kind === 'folder' && without.commit).toBe(C2);
    // A repository known to have none (Python's .no_exist markers): the folder, without a tokenizer.
    for (const file of ['tokenizer.json', 'vocab.txt']) {
      mkdirSync(join(repoDir(), '.no_exist', C2), { recursive: true });
      writeFileSync(join(repoDir(), '.no_exist', C2, file), '');
    }
    const none = await resolveModelSource('org/tiny-bert');
    expect(none.kind === 'folder' && none.files.tokenizer).toBeUndefined();
    expect(hub.requests.filter((r) => r.url.includes('tokenizer'))).toEqual([]);
  });

  it('wrong bytes from the server are refused and cached under no name', async () => {
    hub.faults.corrupt = new Set(['model.safetensors']);
    const err = await rejection(resolveModelSource('org/tiny-bert'));
    expect(err.message).toMatch(/model\.safetensors of org\/tiny-bert@main .* does not match the Hub's checksum \(sha256 [0-9a-f]{64}/);
    const blobs = listTree(join(repoDir(), 'blobs'));
    expect(blobs).not.toContain(sha256(weights));
    expect(blobs.filter((b) => b.includes('.incomplete'))).toEqual([]);
    expect(existsSync(join(repoDir(), 'snapshots', C2, 'model.safetensors'))).toBe(false);
    // Whatever did land is what its name says.
    for (const blob of blobs) {
      const content = readFileSync(join(repoDir(), 'blobs', blob));
      expect([sha256(content), gitBlobSha1(content)]).toContain(blob);
    }

    hub.faults = {};
    const fixed = await resolveModelSource('org/tiny-bert');
    expect(fixed.kind === 'folder' && readFileSync(join(fixed.dir, 'model.safetensors')).equals(weights)).toBe(true);
  });

  it('a connection closed mid-body leaves no partial file', async () => {
    hub.faults.truncate = new Set(['model.safetensors']);
    const err = await rejection(resolveModelSource('org/tiny-bert'));
    expect(err.message).toMatch(/the download of model\.safetensors of org\/tiny-bert@main .* broke off after \d+ bytes/);
    expect(listTree(join(repoDir(), 'blobs')).filter((b) => b === sha256(weights) || b.includes('.incomplete'))).toEqual([]);
    expect(existsSync(join(repoDir(), 'snapshots', C2, 'model.safetensors'))).toBe(false);
  });

  it('a server failing mid-way (503) is said to be the server’s fault, not the input’s, and a rerun fetches only the rest', async () => {
    // Before: an InputError, as if the id or revision were wrong, and no word that trying again helps.
    hub.faults.unavailable = new Set(['tokenizer.json']);
    const err = await rejection(resolveModelSource('org/tiny-bert'));
    expect(err).not.toBeInstanceOf(InputError);
    expect(err.message).toBe(
      `tokenizer.json of org/tiny-bert@main could not be downloaded from ${hub.url} (HTTP 503: <html>503 Service Temporarily Unavailable</html>); ` +
        'the server is busy or failing: try again later (files already downloaded are kept)',
    );
    hub.faults = {};
    hub.requests.length = 0;
    const source = await resolveModelSource('org/tiny-bert');
    expect(source.kind === 'folder' && readFileSync(join(source.dir, 'tokenizer.json'), 'utf8')).toBe(tinyBert('two')['tokenizer.json']);
    expect(hub.requests.filter((r) => r.url.includes('/resolve/')).map((r) => r.url.replace(/.*\//, ''))).toEqual(['tokenizer.json']);
  });

  it('an abort mid-download stops it and leaves no partial file', async () => {
    hub.faults.stall = new Set(['model.safetensors']);
    const controller = new AbortController();
    const err = await rejection(
      resolveModelSource('org/tiny-bert', {
        signal: controller.signal,
        onProgress: (p) => {
          if (p.file === 'model.safetensors' && p.received > 0) controller.abort();
        },
      }),
    );
    expect([err.name, err.message]).toEqual(['AbortError', 'the model download was aborted']);
    expect(listTree(join(repoDir(), 'blobs')).filter((b) => b === sha256(weights) || b.includes('.incomplete'))).toEqual([]);
  });

  it('a download killed outright leaves a partial file that the next download removes, and spares a live one', async () => {
    // Before: each SIGKILLed download left its <sha256>.<pid>-<random>.incomplete in blobs/ for good.
    hub.faults.stall = new Set(['model.safetensors']);
    const blobs = join(repoDir(), 'blobs');
    const killed = await stalledDownloader();
    killed.kill('SIGKILL');
    await new Promise((done) => killed.once('exit', done));
    const partial = (pid: number | undefined) => listTree(blobs).find((b) => b.endsWith('.incomplete') && writtenBy(b, pid));
    const killedPartial = partial(killed.pid);
    // Named by its writer's identity: this host, the pid and its start time.
    expect(killedPartial).toMatch(new RegExp(`^[0-9a-f]{64}\\.${HOST}-${killed.pid}\\.\\d+-[0-9a-z]+\\.incomplete$`));
    expect(lstatSync(join(blobs, killedPartial!)).size).toBe(weights.length / 2);
    const alive = await stalledDownloader();
    try {
      // Another host's partial is judged by its age alone.
      const otherHost = (age: number, name: string) => {
        writeFileSync(join(blobs, `${sha256(weights)}.${name}-7-x1.incomplete`), 'partial');
        const when = (Date.now() - age) / 1000;
        utimesSync(join(blobs, `${sha256(weights)}.${name}-7-x1.incomplete`), when, when);
      };
      otherHost(16 * 60_000, 'silentHost');
      otherHost(60_000, 'busyHost');

      hub.faults = {};
      // The live download holds the blob's lock: this resolve waits for it, once it has removed what it removes.
      let sawWaiting = () => {};
      const waiting = new Promise<void>((done) => {
        sawWaiting = done;
      });
      const resolving = resolveModelSource('org/tiny-bert', { onProgress: (p) => p.waiting && sawWaiting() });
      await Promise.race([waiting, resolving]);
      const left = listTree(blobs).filter((b) => b.endsWith('.incomplete'));
      expect(left).toEqual([partial(alive.pid), `${sha256(weights)}.busyHost-7-x1.incomplete`].sort());
      expect(left).not.toContain(killedPartial);
      alive.kill('SIGKILL');
      const source = await resolving;
      expect(source.kind === 'folder' && readFileSync(join(source.dir, 'model.safetensors')).equals(weights)).toBe(true);
    } finally {
      alive.kill('SIGKILL');
    }
  });

  it('processes resolving one id at once download each file once: the others wait for it, then find it', async () => {
    // Before: each process fetched the weights itself (measured: { config.json: 2, model.safetensors: 3, tokenizer.json: 1 }).
    const big = Buffer.alloc(4_000_000);
    for (let i = 0; i < big.length; i++) big[i] = (i * 104_729) % 253;
    const files = { ...tinyBert('big'), 'model.safetensors': big };
    hub.repos.set('org/big-bert', { commits: { [C1]: files }, refs: { main: C1 } });
    // The weights are held half sent until every process has begun them, downloading or waiting.
    hub.faults.hold = new Set(['model.safetensors']);
    const resolvers = [1, 2, 3].map(() => resolver('org/big-bert'));
    try {
      const firsts = await Promise.all(resolvers.map((r) => r.first));
      hub.release();
      const sources = await Promise.all(resolvers.map((r) => r.source));
      const fetched: Record<string, number> = {};
      for (const r of hub.requests.filter((r) => r.url.startsWith('/org/big-bert/resolve/'))) {
        const file = decodeURIComponent(r.url.replace(/.*\//, ''));
        fetched[file] = (fetched[file] ?? 0) + 1;
      }
      expect(fetched).toEqual({ 'config.json': 1, 'model.safetensors': 1, 'tokenizer.json': 1 });
      expect(firsts.sort()).toEqual(['downloading', 'waiting', 'waiting']);
      for (const source of sources) {
        expect(source.commit).toBe(C1);
        for (const file of ['config.json', 'model.safetensors', 'tokenizer.json']) {
          expect(readFileSync(join(source.dir, file)).equals(bytesOf(files, file)), file).toBe(true);
        }
      }
      // The locks were Python's flock files, which stay when released (as Python leaves them).
      const hashes = [gitBlobSha1(bytesOf(files, 'config.json')), sha256(big), gitBlobSha1(bytesOf(files, 'tokenizer.json'))];
      expect(listTree(join(cache, '.locks'))).toEqual(hashes.map((h) => `models--org--big-bert/${h}.lock`).sort());
    } finally {
      for (const r of resolvers) r.child.kill('SIGKILL');
    }
  });

  it('a download lock whose holder was killed outright is taken over by the process waiting for it', async () => {
    hub.faults.stall = new Set(['model.safetensors']);
    const holder = await stalledDownloader();
    hub.faults = {};
    const { events, resolving, waitedFirst } = resolveWatchingWaits();
    try {
      expect(await waitedFirst).toBe('waited');
      // The bar shows the holder's download while this process waits for it.
      expect(events[0]).toEqual({ file: 'model.safetensors', received: weights.length / 2, total: weights.length, waiting: true });
    } finally {
      holder.kill('SIGKILL');
    }
    const source = await resolving;
    expect(source.kind === 'folder' && readFileSync(join(source.dir, 'model.safetensors')).equals(weights)).toBe(true);
    expect(hub.requests.filter((r) => r.url.endsWith('/model.safetensors')).length).toBe(2); // the killed holder's, then its own
    // Its own download's end, not a wait's.
    expect(events.filter((e) => e.file === 'model.safetensors').at(-1)).toEqual({
      file: 'model.safetensors',
      received: weights.length,
      total: weights.length,
    });
    expect(listTree(join(cache, '.locks'))).toContain(`models--org--tiny-bert/${sha256(weights)}.lock`);
  }, 30_000);

  it('a download Python holds the lock of is waited for, and the blob Python wrote is used without a request', async () => {
    // Before: torch-bert locked a file of its own, did not wait, and downloaded the weights beside Python.
    const hash = sha256(weights);
    const python = pythonDownloader(hash, weights);
    try {
      await python.locked;
      const { events, resolving, waitedFirst } = resolveWatchingWaits();
      const weightEvents = () => events.filter((e) => e.file === 'model.safetensors');
      expect(await waitedFirst).toBe('waited');
      // Python's partial is its own (older huggingface_hub resumes it): kept, and its bytes shown.
      expect(weightEvents()[0]).toEqual({ file: 'model.safetensors', received: weights.length / 2, total: weights.length, waiting: true });
      expect(listTree(join(repoDir(), 'blobs'))).toContain(`${hash}.incomplete`);
      python.finish();
      const source = await resolving;
      expect(source.kind === 'folder' && readFileSync(join(source.dir, 'model.safetensors')).equals(weights)).toBe(true);
      expect(hub.requests.filter((r) => r.url.endsWith('/model.safetensors'))).toEqual([]);
      expect(weightEvents().at(-1)).toEqual({ file: 'model.safetensors', received: weights.length, total: weights.length, waiting: true });
      expect(listTree(join(cache, '.locks')).filter((l) => !l.endsWith('.lock'))).toEqual([]);
    } finally {
      python.child.kill('SIGKILL');
    }
  });

  it('a torch-bert download holds Python’s lock: Python’s LOCK_NB attempt fails until the holder is killed', async () => {
    hub.faults.stall = new Set(['model.safetensors']);
    const holder = await stalledDownloader();
    try {
      expect(pythonFindsHeld(lockOf(sha256(weights)))).toBe(true);
    } finally {
      holder.kill('SIGKILL');
    }
    await new Promise((done) => holder.once('exit', done));
    // Released by the kernel at the holder's death: nothing to wait out.
    expect(pythonFindsHeld(lockOf(sha256(weights)))).toBe(false);
  });

  it('a Python holder killed outright releases the lock at once: the waiting download goes on by itself', async () => {
    const hash = sha256(weights);
    const python = pythonDownloader(hash, weights);
    await python.locked;
    let killedAt = 0;
    let ownStart = 0;
    const resolving = resolveModelSource('org/tiny-bert', {
      onProgress: (p) => {
        if (p.waiting && killedAt === 0) {
          killedAt = performance.now();
          python.child.kill('SIGKILL');
        }
        if (p.file === 'model.safetensors' && !p.waiting && ownStart === 0) ownStart = performance.now();
      },
    });
    const source = await resolving;
    expect(source.kind === 'folder' && readFileSync(join(source.dir, 'model.safetensors')).equals(weights)).toBe(true);
    expect(killedAt).toBeGreaterThan(0);
    // Polls are at most 0.5 s apart; a stale-lock bound would be a minute.
    expect(ownStart - killedAt).toBeLessThan(2000);
    expect(hub.requests.filter((r) => r.url.endsWith('/model.safetensors')).length).toBe(1);
    // The dead Python's partial is Python's to resume: left as it was.
    expect(statSync(join(repoDir(), 'blobs', `${hash}.incomplete`)).size).toBe(weights.length / 2);
  });

  it('an abort while Python holds the lock rejects at once and lets go of the lock file', async () => {
    const hash = sha256(weights);
    const python = pythonDownloader(hash, weights);
    try {
      await python.locked;
      const controller = new AbortController();
      let abortedAt = 0;
      const err = await rejection(
        resolveModelSource('org/tiny-bert', {
          signal: controller.signal,
          onProgress: (p) => {
            if (!p.waiting || abortedAt > 0) return;
            abortedAt = performance.now();
            controller.abort();
          },
        }),
      );
      expect(performance.now() - abortedAt).toBeLessThan(300);
      expect([err.name, err.message]).toEqual(['AbortError', 'the model download was aborted']);
      expect(openFiles()).not.toContain(lockOf(hash));
      expect(pythonFindsHeld(lockOf(hash))).toBe(true);
      expect(listTree(join(repoDir(), 'blobs'))).toContain(`${hash}.incomplete`);
      expect(hub.requests.filter((r) => r.url.endsWith('/model.safetensors'))).toEqual([]);
    } finally {
      python.child.kill('SIGKILL');
    }
  });

  it('a partial download names its writer by pid and start time: a reused pid is not taken for the writer', async () => {
    // Before: `<hash>.<host>-<pid>-<random>.incomplete`, kept for as long as any process had that pid.
    const hash = sha256(weights);
    const blobs = join(repoDir(), 'blobs');
    mkdirSync(blobs, { recursive: true });
    const exited = spawnSync(process.execPath, ['-e', '']).pid;
    const [pid, start] = writerId().split('.');
    const partials = {
      reusedPid: `${hash}.${HOST}-${pid}.${Number(start) + 1}-x1.incomplete`,
      deadWriter: `${hash}.${HOST}-${exited}.${start}-x2.incomplete`,
      liveWriter: `${hash}.${HOST}-${writerId()}-x3.incomplete`,
      // Before the start time was recorded: the pid alone is all there is to go by.
      olderName: `${hash}.${HOST}-${pid}-x4.incomplete`,
      // Python's, whatever their age: never ours to remove.
      python: `${hash}.incomplete`,
      pythonUnique: `${hash}.0123abcd.incomplete`,
    };
    const old = (Date.now() - 60 * 60_000) / 1000;
    for (const name of Object.values(partials)) {
      writeFileSync(join(blobs, name), 'partial');
      utimesSync(join(blobs, name), old, old);
    }
    await resolveModelSource('org/tiny-bert');
    expect(listTree(blobs).filter((b) => b.endsWith('.incomplete'))).toEqual(
      [partials.liveWriter, partials.olderName, partials.python, partials.pythonUnique].sort(),
    );
  });

  it('HF_TOKEN goes as a Bearer header and never into an error', async () => {
    const token = 'hf_privateTokenForTheTest123';
    hub.repos.set('org/private', { commits: { [C1]: tinyBert('p') }, refs: { main: C1 }, token });
    process.env.HF_TOKEN = token;
    await resolveModelSource('org/private');
    const hubRequests = hub.requests.filter((r) => !r.url.startsWith('/cdn/'));
    expect(hubRequests.length).toBe(5); // revision, paths-info, three resolves
    expect(hubRequests.every((r) => r.authorization === `Bearer ${token}`)).toBe(true);

    // A wrong token: the server answers 401 and echoes the header it got.
    const wrong = 'hf_wrongTokenThatMustNotLeak456';
    process.env.HF_TOKEN = wrong;
    rmSync(cache, { recursive: true });
    const denied = await rejection(resolveModelSource('org/private'));
    expect(hub.requests.at(-1)?.authorization).toBe(`Bearer ${wrong}`);
    expect(denied.message).toMatch(
      /org\/private@main could not be resolved on .* \(HTTP 401: Invalid credentials in Authorization header: Bearer \*\*\*\); .*HF_TOKEN/,
    );
    const everything = (e: unknown): string => (e instanceof Error ? `${e.message}\n${e.stack}\n${everything(e.cause)}` : String(e));
    expect(everything(denied)).not.toContain(wrong);
    // As console.log(err) shows it: the cause's own fields too (HubApiError keeps the server's answer).
    expect(inspect(denied, { depth: 8 })).toContain('Bearer ***');
    expect(inspect(denied, { depth: 8 })).not.toContain(wrong);

    // A 404 from a download, echoing the header as well.
    process.env.HF_TOKEN = token;
    hub.faults.missing = new Set(['tokenizer.json']);
    const notFound = await rejection(resolveModelSource('org/private'));
    expect(notFound.message).toMatch(/tokenizer\.json of org\/private@main could not be downloaded .*HTTP 404: .*Bearer \*\*\*/);
    expect(everything(notFound)).not.toContain(token);
    expect(inspect(notFound, { depth: 8 })).not.toContain(token);
  });

  it('refuses ids that could leave the cache folder, before any request', async () => {
    for (const [spec, why] of [
      ['org/../../etc', /too many slashes/],
      ['a/b/c', /too many slashes/],
      ['org/..name', /not a valid name/],
      ['org/na..me', /contains "\.\." or "--"/],
      ['org--x/name', /contains "\.\." or "--"/],
      ['org/tiny-bert@../../../x', /invalid revision/],
      ['org/tiny-bert@/abs', /invalid revision/],
    ] as const) {
      const err = await rejection(resolveModelSource(spec));
      expect(err.message, spec).toMatch(why);
      expect(err.name, spec).toBe('InputError');
    }
    for (const spec of ['/etc/passwd-not-there', '../not-there', './tiny-bert']) {
      await expect(resolveModelSource(spec)).rejects.toThrow(/no such file or folder/);
    }
    expect(parseHubId('bert-base-uncased@v1.0')).toEqual({ repoId: 'bert-base-uncased', revision: 'v1.0' });
    expect(parseHubId('org/name@refs/pr/1')).toEqual({ repoId: 'org/name', revision: 'refs/pr/1' });
    expect(hub.requests).toEqual([]);
    expect(existsSync(cache)).toBe(false);
  });
});

describe('local model sources', () => {
  const cwd = process.cwd();
  afterEach(() => process.chdir(cwd));

  const writeFolder = (dir: string, files: Record<string, Buffer | string>) => {
    mkdirSync(dir, { recursive: true });
    for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
    return dir;
  };

  it('an existing local folder wins over a same-named Hub id; ./name is only ever local', async () => {
    hub.repos.set('tiny-bert', { commits: { [C1]: tinyBert('hub') }, refs: { main: C1 } });
    process.chdir(tmp);
    writeFolder(join(tmp, 'tiny-bert'), { 'config.json': '{}', 'model.safetensors': 'x' });
    const local = await resolveModelSource('tiny-bert');
    expect(local).toEqual({
      kind: 'folder',
      dir: join(tmp, 'tiny-bert'),
      files: { config: 'config.json', format: 'safetensors', weights: ['model.safetensors'], tokenizer: undefined },
    });
    expect(hub.requests).toEqual([]);

    rmSync(join(tmp, 'tiny-bert'), { recursive: true });
    await expect(resolveModelSource('./tiny-bert')).rejects.toThrow(/\.\/tiny-bert: no such file or folder/);
    expect(hub.requests).toEqual([]);
    const fromHub = await resolveModelSource('tiny-bert');
    expect(fromHub.kind === 'folder' && fromHub.commit).toBe(C1);
  });

  it('a name that is no local path and that the Hub cannot resolve says both', async () => {
    // Before: 'no-such-model@main could not be resolved on URL: fetch failed', as if only the Hub were asked.
    process.chdir(tmp);
    const closed = createServer();
    await new Promise<void>((done) => closed.listen(0, '127.0.0.1', done));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((done) => closed.close(done));
    process.env.HF_ENDPOINT = `http://127.0.0.1:${port}`;
    const err = await rejection(resolveModelSource('no-such-model'));
    expect(err.message).toBe(
      `no-such-model@main could not be resolved on http://127.0.0.1:${port} (read as a Hub id: there is no file or folder no-such-model in ${process.cwd()}): fetch failed`,
    );
  });

  it('a file of a model folder given as the model names the folder to give instead', async () => {
    // Before: read as TorchScript: 'PytorchStreamReader failed reading zip archive: failed finding central directory'.
    const dir = writeFolder(join(tmp, 'named-file'), { 'config.json': '{}', 'model.safetensors': 'x', 'vocab.txt': '[PAD]\n' });
    for (const name of ['config.json', 'model.safetensors', 'vocab.txt']) {
      const run = resolveModelSource(join(dir, name));
      await expect(run).rejects.toBeInstanceOf(InputError);
      await expect(run).rejects.toThrow(
        `${join(dir, name)} is one file of a Hugging Face model folder, not a model: give the folder that holds it (${dir})`,
      );
    }
  });

  it('a file is a TorchScript encoder', async () => {
    const file = join(tmp, 'encoder.pt');
    writeFileSync(file, Buffer.concat([ZIP_HEADER, Buffer.alloc(16)]));
    expect(await resolveModelSource(file)).toEqual({ kind: 'torchscript', file });
  });

  it('refuses a pytorch_model.bin in the legacy pickle format, accepts the zip format', async () => {
    const legacy = writeFolder(join(tmp, 'legacy'), { 'config.json': '{}', 'pytorch_model.bin': Buffer.from([0x80, 0x02, 0x8a, 0x0a]) });
    const err = await rejection(resolveModelSource(legacy));
    expect(err.name).toBe('ModelError');
    expect(err.message).toMatch(
      /pytorch_model\.bin is in torch's legacy \(pre-1\.6, non-zip\) pickle format.*re-save it with torch >= 1\.6.*safetensors/,
    );

    const zip = writeFolder(join(tmp, 'zip'), { 'config.json': '{}', 'pytorch_model.bin': Buffer.concat([ZIP_HEADER, Buffer.alloc(8)]) });
    expect((await inspectModelFolder(zip)).weights).toEqual(['pytorch_model.bin']);

    // Shards are checked one by one.
    const shards = writeFolder(join(tmp, 'shards'), {
      'config.json': '{}',
      'pytorch_model.bin.index.json': JSON.stringify({ weight_map: { a: 'pytorch_model-1.bin', b: 'pytorch_model-2.bin' } }),
      'pytorch_model-1.bin': Buffer.concat([ZIP_HEADER, Buffer.alloc(8)]),
      'pytorch_model-2.bin': Buffer.from([0x80, 0x02]),
    });
    await expect(inspectModelFolder(shards)).rejects.toThrow(/pytorch_model-2\.bin is in torch's legacy/);
  });

  it('names what a folder lacks, and refuses an index whose shards leave the folder', async () => {
    const noConfig = writeFolder(join(tmp, 'no-config'), { 'model.safetensors': 'x' });
    await expect(inspectModelFolder(noConfig)).rejects.toThrow(/is not a Hugging Face model folder: it has no config\.json/);
    const noWeights = writeFolder(join(tmp, 'no-weights'), { 'config.json': '{}' });
    await expect(inspectModelFolder(noWeights)).rejects.toThrow(/it has no weights \(model\.safetensors, model\.safetensors\.index\.json/);
    // Said once, not again as what a folder needs; a missing shard is named as the index's.
    await expect(inspectModelFolder(noWeights)).rejects.toThrow(
      `${noWeights} is not a Hugging Face model folder: it has no weights ` +
        '(model.safetensors, model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json)',
    );
    await expect(inspectModelFolder(noWeights)).rejects.not.toThrow(/it needs/);
    const missingShard = writeFolder(join(tmp, 'missing-shard'), {
      'config.json': '{}',
      'model.safetensors.index.json': JSON.stringify({ weight_map: { a: 's1.safetensors', b: 's2.safetensors' } }),
      's1.safetensors': 'x',
    });
    await expect(inspectModelFolder(missingShard)).rejects.toThrow(/it has no s2\.safetensors/);
    await expect(inspectModelFolder(missingShard)).rejects.toThrow(
      `${missingShard} is not a Hugging Face model folder: it has no s2.safetensors, a shard its weights index lists`,
    );
    await expect(inspectModelFolder(noConfig)).rejects.toThrow(
      `${noConfig} is not a Hugging Face model folder: it has no config.json (it needs config.json and weights (model.safetensors,`,
    );
    const escaping = writeFolder(join(tmp, 'escaping'), {
      'config.json': '{}',
      'model.safetensors.index.json': JSON.stringify({ weight_map: { a: '../outside.safetensors' } }),
    });
    await expect(inspectModelFolder(escaping)).rejects.toThrow(
      `${join(escaping, 'model.safetensors.index.json')} names a shard outside its folder: "../outside.safetensors"`,
    );
  });

  it('finds the tokenizer: tokenizer.json first, else vocab.txt with its companions', async () => {
    const base = { 'config.json': '{}', 'model.safetensors': 'x' };
    const both = writeFolder(join(tmp, 'both'), { ...base, 'tokenizer.json': '{}', 'vocab.txt': 'a\n', 'tokenizer_config.json': '{}' });
    expect((await inspectModelFolder(both)).tokenizer).toEqual(['tokenizer.json']);
    const vocab = writeFolder(join(tmp, 'vocab'), { ...base, 'vocab.txt': 'a\n', 'special_tokens_map.json': '{}' });
    expect((await inspectModelFolder(vocab)).tokenizer).toEqual(['vocab.txt', 'special_tokens_map.json']);
    const none = writeFolder(join(tmp, 'none'), { ...base, 'tokenizer_config.json': '{}' });
    expect((await inspectModelFolder(none)).tokenizer).toBeUndefined();
  });
});

describe('terminalProgress', () => {
  it('draws a bar on a terminal and nothing elsewhere', () => {
    const written: string[] = [];
    const draw = terminalProgress({ isTTY: true, columns: 80, write: (t: string) => written.push(t) })!;
    draw({ file: 'model.safetensors', received: 2_000_000, total: 2_000_000 });
    expect(written).toEqual([`\rmodel.safetensors [${'#'.repeat(40)}] 100% 2.0/2.0 MB\n`]);
    // Another process's download, waited for.
    draw({ file: 'model.safetensors', received: 2_000_000, total: 2_000_000, waiting: true });
    expect(written[1]).toMatch(/^\rmodel\.safetensors \[#+\] 100% 2\.0\/2\.0 MB \(by another process\)\n$/);
    expect(terminalProgress({ isTTY: false, write: () => true })).toBeUndefined();
  });
});
