/**
 * scripts/setup.sh, the README's first command, on a machine whose Node.js is older than
 * package.json's engines: it must say so before it installs anything. The system tools it would
 * call (dpkg-query, apt-get, sudo, npm) are stand-ins here that record their calls, so nothing
 * is installed or built.
 */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from './fixtures.js';
import { runCommand } from './helpers/run-command.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-setup-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A bin folder whose `node` reports `nodeVersion` ('real': this Node.js; null: no node) and whose package tools only record their calls. */
function fakeBin(name: string, nodeVersion: string | null): { bin: string; calls: string } {
  const bin = join(work, name);
  const calls = join(work, `${name}.calls`);
  mkdirSync(bin);
  writeFileSync(calls, '');
  const tool = (file: string, body: string) => {
    writeFileSync(join(bin, file), `#!/bin/sh\n${body}\n`);
    chmodSync(join(bin, file), 0o755);
  };
  // Only these system tools, so that the machine's own node is not found.
  for (const t of ['dirname', 'grep', 'head', 'id', 'readlink', 'sed', 'sort']) symlinkSync(`/usr/bin/${t}`, join(bin, t));
  // Every system package reads as installed, so the script goes on to npm.
  tool('dpkg-query', "printf 'install ok installed'");
  for (const t of ['apt-get', 'sudo', 'npm']) tool(t, `echo "${t} $*" >> ${calls}; exit 97`);
  if (nodeVersion === 'real') tool('node', `exec ${process.execPath} "$@"`);
  else if (nodeVersion !== null) tool('node', `[ "$1" = --version ] && echo v${nodeVersion} && exit 0; exit 3`);
  return { bin, calls };
}

async function setup(nodeVersion: string | null) {
  const { bin, calls } = fakeBin(`bin-${nodeVersion ?? 'none'}`, nodeVersion);
  const run = await runCommand('/bin/bash', [join(repoRoot, 'scripts', 'setup.sh')], { PATH: bin, TORCH_BERT_SKIP_DEMO: '1' });
  return { ...run, calls: readFileSync(calls, 'utf8') };
}

describe('scripts/setup.sh', () => {
  const wanted = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { engines: { node: string } }).engines.node;

  it("refuses a Node.js older than package.json's engines before installing anything, naming both versions", async () => {
    expect(wanted).toBe('>=20.19');
    const run = await setup('18.19.0');
    expect(run.code).toBe(1);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
    expect(run.stderr).toContain('Node.js 20.19 or later');
    expect(run.stderr).toContain('found 18.19.0');
    expect(run.calls).toBe('');
  });

  it('refuses a machine without Node.js the same way', async () => {
    const run = await setup(null);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('found none');
    expect(run.calls).toBe('');
  });

  it('goes on to npm ci with this Node.js', async () => {
    const run = await setup('real');
    expect(run.code).toBe(97); // the stand-in npm's exit
    expect(run.calls).toBe('npm ci --no-audit --no-fund\n');
  });
});
