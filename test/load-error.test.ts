/**
 * A native addon that cannot be loaded, as a user of the API and of the CLI meets it: the
 * loader's NativeLoadError, whose message says what is wrong and how to fix it, reaches them
 * whole — not wrapped as the fault of the classifier being loaded, not cut to its first line.
 * And with no libtorch at all, what the install and the loader say to do.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativeLoadError } from '../lib/addon/loader.js';
import { loadClassifier } from '../lib/classification/classifier.js';
import { NOT_FOUND_MESSAGE } from '../scripts/find-libtorch.mjs';
import { type BuildInfo, loadFailureHint } from '../scripts/native-binary.mjs';
import { demoTokenizer, repoRoot } from './fixtures.js';

const cli = join(repoRoot, 'dist', 'cli.js');

describe('a native addon built for another libtorch', () => {
  const work = mkdtempSync(join(tmpdir(), 'torch-bert-load-error-'));
  // Refused from its build-info.json alone, before anything is loaded: a binary built against
  // libtorch 0.9.0, chosen with TORCH_BERT_BINARY.
  const binary = join(work, 'addon', 'torch_bert.node');
  // A saved classifier's files as far as loading reads them before it needs the addon.
  const classifier = join(work, 'classifier');

  beforeAll(() => {
    mkdirSync(join(work, 'addon'));
    writeFileSync(binary, 'never loaded');
    const info = JSON.parse(readFileSync(join(repoRoot, 'build', 'Release', 'build-info.json'), 'utf8'));
    writeFileSync(join(work, 'addon', 'build-info.json'), JSON.stringify({ ...info, libtorch: { ...info.libtorch, version: '0.9.0' } }));
    mkdirSync(classifier);
    writeFileSync(join(classifier, 'config.json'), JSON.stringify({ format: 'torch-bert-classifier', labels: ['negative', 'positive'] }));
    copyFileSync(demoTokenizer, join(classifier, 'tokenizer.json'));
    writeFileSync(join(classifier, 'classifier.pt'), 'never loaded');
  });

  afterAll(() => rmSync(work, { recursive: true, force: true }));

  /** loadClassifier's error with the binary chosen. */
  async function apiError(): Promise<unknown> {
    process.env.TORCH_BERT_BINARY = binary;
    try {
      await loadClassifier(classifier);
    } catch (err) {
      return err;
    } finally {
      delete process.env.TORCH_BERT_BINARY;
    }
    throw new Error('loadClassifier loaded a classifier with a refused addon');
  }

  it('loadClassifier rejects with the NativeLoadError, not a ModelError blaming the classifier', async () => {
    const err = await apiError();
    expect(err).toBeInstanceOf(NativeLoadError);
    const message = (err as Error).message;
    expect(message).toMatch(/^torch-bert: refusing to load the native addon built for another libtorch/);
    expect(message).toContain(`${binary}: it was built against libtorch 0.9.0 (cpu), but the libtorch found is libtorch `);
    expect(message).toContain('with `npm rebuild torch-bert`');
    expect(message).not.toContain('cannot load classifier');
  });

  it('the CLI prints that message whole, the fix included', async () => {
    const message = ((await apiError()) as Error).message;
    const run = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        [cli, 'predict', '--classifier', classifier, 'a wonderful film'],
        { env: { ...process.env, TORCH_BERT_BINARY: binary } },
        (err, _stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
      );
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`${message}\n`);
  });
});

describe('no libtorch found', () => {
  it('the search says to rebuild with a command an installed package has', () => {
    // Printed by `npm install` in a user's project, which has no build:native script.
    expect(NOT_FOUND_MESSAGE.split('\n').at(-1)).toBe('Then run `npm rebuild torch-bert` (in a checkout: `npm run build:native`).');
  });

  it('a built addon whose libtorch is gone: names the libtorch it was built against and how to provide one, once', () => {
    // What loading says when the libtorch the addon was built against was uninstalled and no
    // other is found (dlopen's reason as glibc words it).
    const info = JSON.parse(readFileSync(join(repoRoot, 'build', 'Release', 'build-info.json'), 'utf8')) as BuildInfo;
    const hint = loadFailureHint('libc10.so.1.13: cannot open shared object file: No such file or directory', null, NOT_FOUND_MESSAGE, {
      ...info,
      libtorch: { ...info.libtorch, version: '1.13.1', flavor: 'cpu', libDir: '/usr/lib/x86_64-linux-gnu' },
    });
    expect(hint).toBe(
      `It was built against libtorch 1.13.1 (cpu) at /usr/lib/x86_64-linux-gnu, and no libtorch is found now:\n${NOT_FOUND_MESSAGE}`,
    );
  });
});
