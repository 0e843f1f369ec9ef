/**
 * A Hub id given as --model, downloaded by the CLI: on a terminal it draws a progress bar per file
 * (a large model would otherwise leave the terminal still for minutes); in a pipe or a log it
 * writes none. Runs the compiled CLI against a Hub on loopback, under `script` for a terminal.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoReviews, demoTokenizer, repoRoot } from './fixtures.js';
import { FakeHub } from './helpers/hub-server.js';

const exec = promisify(execFile);
const hub = new FakeHub();
const COMMIT = createHash('sha1').update('demo').digest('hex');
const encoder = join(repoRoot, 'assets', 'demo', 'encoder');
const weights = readFileSync(join(encoder, 'model.safetensors'));
let tmp: string;

beforeAll(async () => {
  await hub.start();
  const files = {
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
async function trainFromHub(name: string, terminal: boolean): Promise<{ output: string; out: string }> {
  const out = join(tmp, `out-${name}`);
  const env = { ...process.env, HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(tmp, `cache-${name}`), HF_TOKEN: '' };
  const cli = [process.execPath, join(repoRoot, 'dist', 'cli.js'), 'train', '--model', 'org/demo-bert'];
  const args = [...cli, '--data', demoReviews, '--out', out, '--epochs', '1', '--max-length', '32', '--json'];
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

  it('writes no bar into a pipe', async () => {
    const { output, out } = await trainFromHub('pipe', false);
    expect(output).not.toContain('100%');
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).encoder.source.commit).toBe(COMMIT);
  });
});
