/**
 * A Hub id given as --model, downloaded by the CLI: on a terminal it draws a progress bar per file
 * (a large model would otherwise leave the terminal still for minutes); in a pipe or a log it
 * writes none. Runs the compiled CLI against a Hub on loopback, under `script` for a terminal.
 * train() and pretrain() given a Hub id report the download to `onProgress` ('download' events).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadClassifier } from '../lib/classification/classifier.js';
import { train } from '../lib/classification/trainer.js';
import { pretrain } from '../lib/pretraining/pretrainer.js';
import type { ProgressEvent } from '../lib/training/options.js';
import { demoPretrain, demoReviews, demoTokenizer, makeHfFolder, repoRoot } from './fixtures.js';
import { FakeHub } from './helpers/hub-server.js';

const exec = promisify(execFile);
const hub = new FakeHub();
const COMMIT = createHash('sha1').update('demo').digest('hex');
const encoder = join(repoRoot, 'assets', 'demo', 'encoder');
const weights = readFileSync(join(encoder, 'model.safetensors'));
let files: Record<string, Buffer>;
let tmp: string;

beforeAll(async () => {
  await hub.start();
  files = {
    'config.json': readFileSync(join(encoder, 'config.json')),
    'model.safetensors': weights,
    'tokenizer.json': readFileSync(demoTokenizer),
  };
  hub.repos.set('org/demo-bert', { commits: { [COMMIT]: files }, refs: { main: COMMIT } });
  tmp = mkdtempSync(join(tmpdir(), 'torch-bert-cli-download-'));
});
afterAll(async () => {
  await hub.stop();
  rmSync(tmp, { recursive: true, force: true });
});

const quote = (arg: string) => `'${arg.replace(/'/g, `'\\''`)}'`;

/** `torch-bert train` on org/demo-bert with a fresh cache; on a terminal (`script`'s pty) or in a pipe. */
async function trainFromHub(name: string, terminal: boolean, json = true): Promise<{ output: string; out: string }> {
  const out = join(tmp, `out-${name}`);
  const env = { ...process.env, HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(tmp, `cache-${name}`), HF_TOKEN: '' };
  const cli = [process.execPath, join(repoRoot, 'dist', 'cli.js'), 'train', '--model', 'org/demo-bert'];
  const args = [...cli, '--data', demoReviews, '--out', out, '--epochs', '1', '--max-length', '32', ...(json ? ['--json'] : [])];
  const { stdout, stderr } = terminal
    ? await exec('script', ['-qec', args.map(quote).join(' '), '/dev/null'], { env })
    : await exec(args[0]!, args.slice(1), { env });
  return { output: stdout + stderr, out };
}

describe('torch-bert train --model ORG/NAME', () => {
  it('draws a download bar per file on a terminal, then trains on the downloaded model', async () => {
    hub.requests.length = 0;
    const { output, out } = await trainFromHub('tty', true);
    // The run found the model in the cache: each file was fetched once.
    const fetched = hub.requests.filter((r) => r.url.includes('/resolve/')).map((r) => r.url.split('/').pop());
    expect(fetched.sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json']);
    const mb = (weights.length / 1e6).toFixed(1);
    expect(output).toMatch(new RegExp(`\\rmodel\\.safetensors \\[#+\\] 100% ${mb}/${mb} MB\\r?\\n`));
    expect(output).toMatch(/\rconfig\.json \[#+\] 100% /);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(config.encoder.source.commit).toBe(COMMIT);
  });

  it('a download that breaks off ends its bar before the error', async () => {
    // Before: '\rmodel.safetensors [####......] 36% 0.2/0.6 MBtorch-bert: error: the download ...' on one line.
    hub.faults.truncate = new Set(['model.safetensors']);
    try {
      const failed = await trainFromHub('broken', true).then(
        () => expect.fail('the run should fail'),
        (err: { stdout: string; stderr: string }) => err.stdout + err.stderr,
      );
      expect(failed).toMatch(
        /\rmodel\.safetensors \[[#.]+\] \d+% [\d.]+\/0\.6 MB\r?\ntorch-bert: error: the download of model\.safetensors /,
      );
    } finally {
      hub.faults = {};
    }
  });

  it('writes no bar into a pipe', async () => {
    const { output, out } = await trainFromHub('pipe', false);
    expect(output).not.toContain('100%');
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).encoder.source.commit).toBe(COMMIT);
  });

  it('in a pipe without --json, prints the epochs and passes over the download events', async () => {
    // train()'s 'download' events reach the CLI's progress printer, which drew them as epochs
    // (TypeError: Cannot read properties of undefined (reading 'toFixed')).
    const { output, out } = await trainFromHub('pipe-text', false, false);
    expect(output).toMatch(/^epoch 1\/1: train loss \d\.\d{4} acc /m);
    expect(output).not.toContain('100%');
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).encoder.source.commit).toBe(COMMIT);
  });
});

describe('train() and pretrain() given a Hub id', () => {
  const saved = { HF_ENDPOINT: process.env.HF_ENDPOINT, HF_HUB_CACHE: process.env.HF_HUB_CACHE, HF_TOKEN: process.env.HF_TOKEN };
  afterEach(() => {
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  });

  /** Each file's download events, in order, as [received, total]; the other events' types. */
  function recorder() {
    const downloads: Record<string, Array<[number, number]>> = {};
    const others = new Set<string>();
    const onProgress = (e: ProgressEvent) => {
      if (e.type !== 'download') others.add(e.type);
      else downloads[e.file] = [...(downloads[e.file] ?? []), [e.received, e.total]];
    };
    return { downloads, others, onProgress };
  }

  /** Each file's downloaded bytes climb to its size and end there. */
  function expectWholeFiles(downloads: Record<string, Array<[number, number]>>): void {
    expect(Object.keys(downloads).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json']);
    for (const [file, events] of Object.entries(downloads)) {
      const size = files[file]!.length;
      expect(events.at(-1), file).toEqual([size, size]);
      expect(
        events.every(([received, total], i) => total === size && received > (events[i - 1]?.[0] ?? 0)),
        file,
      ).toBe(true);
    }
    // The weights come in several chunks, each reported.
    expect(downloads['model.safetensors']!.length).toBeGreaterThan(1);
  }

  it("report the model's download to onProgress, byte by byte, and nothing once it is cached", async () => {
    // Before: train() and pretrain() downloaded a Hub model without a word to onProgress.
    process.env.HF_ENDPOINT = hub.url;
    process.env.HF_HUB_CACHE = join(tmp, 'cache-api');
    delete process.env.HF_TOKEN;
    const first = recorder();
    await train({ data: demoReviews, encoder: 'org/demo-bert', epochs: 1, maxLength: 32, onProgress: first.onProgress });
    expectWholeFiles(first.downloads);
    expect(first.others.has('batch')).toBe(true);

    const cached = recorder();
    await train({ data: demoReviews, encoder: 'org/demo-bert', epochs: 1, maxLength: 32, onProgress: cached.onProgress });
    expect(cached.downloads).toEqual({});

    process.env.HF_HUB_CACHE = join(tmp, 'cache-pretrain');
    const pretraining = recorder();
    await pretrain({
      model: 'org/demo-bert',
      data: demoPretrain,
      outDir: join(tmp, 'pretrained'),
      epochs: 1,
      maxLength: 32,
      onProgress: pretraining.onProgress,
    });
    expectWholeFiles(pretraining.downloads);
  });

  it('loadClassifier(hubId) of a sequence classifier reports its download to onProgress, and nothing once it is cached', async () => {
    // Before: loadClassifier downloaded a Hub classifier without a word (only the CLI drew bars).
    const { dir } = await makeHfFolder({ layout: 'bert-seqcls' });
    const repoFiles = Object.fromEntries(
      ['config.json', 'model.safetensors', 'tokenizer.json'].map((f) => [f, readFileSync(join(dir, f))]),
    );
    hub.repos.set('org/demo-sentiment', { commits: { [COMMIT]: repoFiles }, refs: { main: COMMIT } });
    process.env.HF_ENDPOINT = hub.url;
    process.env.HF_HUB_CACHE = join(tmp, 'cache-classifier');
    delete process.env.HF_TOKEN;
    const first = recorder();
    const classifier = await loadClassifier('org/demo-sentiment', { onProgress: first.onProgress });
    classifier.dispose();
    expect(Object.keys(first.downloads).sort()).toEqual(Object.keys(repoFiles).sort());
    for (const [file, events] of Object.entries(first.downloads)) {
      const size = repoFiles[file]!.length;
      expect(events.at(-1), file).toEqual([size, size]);
    }
    expect(first.others.size).toBe(0);
    const cached = recorder();
    (await loadClassifier('org/demo-sentiment', { onProgress: cached.onProgress })).dispose();
    expect(cached.downloads).toEqual({});
  });
});
