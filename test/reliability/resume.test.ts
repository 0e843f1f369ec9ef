/**
 * Resuming as a user meets it: a save on a full disk.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NativeAdamW, NativeTensor } from '../../lib/binding.js';
import { loadBinding } from '../../lib/loader.js';
import { startPosition } from '../../lib/run-keeper.js';
import { readTrainingState, STATE_DIR, saveTrainingState } from '../../lib/training-state.js';
import { demoTokenizer, makeEncoder } from '../fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-resume-'));
let encoder: string;

beforeAll(async () => {
  encoder = await makeEncoder({ layers: 1, hidden: 32, heads: 2, intermediate: 64, tokenizer: demoTokenizer, seed: 5 });
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('a save on a full disk', () => {
  // /dev/full answers every write with ENOSPC: the archive's path and its sibling `.tmp` (where
  // it is written before a rename) both lead there. libtorch's own file writer, failing, threw
  // again from its destructor and ended the process (std::terminate, exit 134).
  it('fails the optimizer and model saves with the system’s reason, the process alive', () => {
    const binding = loadBinding();
    const dir = join(work, 'full');
    mkdirSync(dir);
    const module = binding.ScriptModule.load(encoder);
    const optimizer = new binding.AdamW([{ params: module.namedParameters().map(([, t]) => t), lr: 1e-3 }]);
    try {
      for (const [file, save] of [
        ['optimizer.pt', (p: string) => optimizer.save(p)],
        ['classifier.pt', (p: string) => module.save(p)],
      ] as const) {
        const path = join(dir, file);
        symlinkSync('/dev/full', path);
        symlinkSync('/dev/full', `${path}.tmp`);
        expect(() => save(path)).toThrow(`'${path}': No space left on device`);
      }
    } finally {
      optimizer.dispose();
      module.dispose();
    }
  });

  it('removes the half-written training state of a save that failed, keeping the state saved before', async () => {
    const binding = loadBinding();
    const outDir = join(work, 'full-state');
    const weights = binding.Tensor.fromArray(new Float32Array([1, 2, 3]), [3]);
    const optimizer = new binding.AdamW([{ params: [weights], lr: 1e-3 }]);
    const failing = {
      save: () => {
        throw new Error(`cannot save optimizer state: No space left on device`);
      },
    } as unknown as NativeAdamW;
    const state = { fingerprint: { run: 1 }, position: startPosition(), tensors: [['w', weights]] as Array<[string, NativeTensor]> };
    try {
      await saveTrainingState(binding, outDir, { ...state, optimizer });
      await expect(
        saveTrainingState(binding, outDir, { ...state, position: { ...startPosition(), epoch: 2 }, optimizer: failing }),
      ).rejects.toThrow(/No space left on device/);
      expect(readdirSync(outDir)).toEqual([STATE_DIR]);
      expect((await readTrainingState(outDir)).position.epoch).toBe(1);
    } finally {
      optimizer.dispose();
      weights.dispose();
    }
  });
});
