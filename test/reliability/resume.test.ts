/**
 * Resuming as a user meets it: a run killed before its first epoch ends, a run that has already
 * finished, two runs started on one output folder, a save on a full disk.
 *
 * A SIGKILL at a progress event is simulated by copying the output folder at that event: the
 * event is sent between writes, so the copy holds what the kill would leave. (Its run lock names
 * this process, which runs on; a killed run's lock names a dead one and the next run takes it
 * over, so the copy's is removed.)
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NativeAdamW, NativeTensor } from '../../lib/addon/binding.js';
import { loadBinding } from '../../lib/addon/loader.js';
import type { Classifier } from '../../lib/classification/classifier.js';
import { type TrainResult, train } from '../../lib/classification/trainer.js';
import { RUN_LOCK_FILE } from '../../lib/files/output-folder.js';
import type { TrainOptions } from '../../lib/training/options.js';
import { startPosition } from '../../lib/training/run-keeper.js';
import { readTrainingState, STATE_DIR, saveTrainingState } from '../../lib/training/training-state.js';
import { demoReviews, demoTokenizer, makeEncoder } from '../fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-resume-'));
let encoder: string;

beforeAll(async () => {
  encoder = await makeEncoder({ layers: 1, hidden: 32, heads: 2, intermediate: 64, tokenizer: demoTokenizer, seed: 5 });
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

const base = (): TrainOptions => ({
  data: demoReviews,
  encoder,
  tokenizer: demoTokenizer,
  technique: 'full',
  epochs: 2,
  batchSize: 32,
  maxLength: 32,
  learningRate: 1e-3,
  headHidden: 16,
  dropout: 0.2,
});
const params = (c: Classifier) => new Map(c.module.namedParameters().map(([n, t]) => [n, Array.from(t.toArray() as Float32Array)]));
const withoutSeconds = (r: TrainResult) => r.history.map(({ seconds: _s, ...h }) => h);

describe('resume', () => {
  it('resumes a run killed before its first epoch ended (after a mid-epoch checkpoint) to the uninterrupted run', async () => {
    const outDir = join(work, 'early');
    const killed = join(work, 'early-killed');
    const opts: TrainOptions = { ...base(), evaluateEvery: 4 };
    const whole = await train({
      ...opts,
      outDir,
      onProgress: (e) => {
        // The first evaluation, mid epoch 1: its checkpoint written, no epoch ended yet.
        if (e.type === 'evaluation' && e.step === 4) cpSync(outDir, killed, { recursive: true });
      },
    });
    rmSync(join(killed, RUN_LOCK_FILE));
    expect(JSON.parse(readFileSync(join(killed, 'config.json'), 'utf8')).metrics.step).toBe(4);
    const resumed = await train({ ...opts, resumeFrom: killed });
    expect(withoutSeconds(resumed)).toEqual(withoutSeconds(whole));
    expect(resumed.evaluations).toEqual(whole.evaluations);
    const [a, b] = [params(whole.classifier), params(resumed.classifier)];
    expect([...b.keys()]).toEqual([...a.keys()]);
    for (const [name, v] of a) expect(b.get(name), name).toEqual(v);
    whole.classifier.dispose();
    resumed.classifier.dispose();
  });

  it('refuses to resume a run that has finished, saying so, and leaves its result as it was', async () => {
    const outDir = join(work, 'finished');
    const done = await train({ ...base(), epochs: 1, outDir });
    done.classifier.dispose();
    const files = ['classifier.pt', 'config.json', 'history.json'].map((f) => readFileSync(join(outDir, f)));
    await expect(train({ ...base(), epochs: 1, resumeFrom: outDir })).rejects.toThrow(
      `${outDir} holds no resumable training state (looked for ${join(outDir, 'training-state', 'state.json')}): ` +
        'the run that wrote it has finished (a torch-bert classifier): there is nothing to resume',
    );
    expect(['classifier.pt', 'config.json', 'history.json'].map((f) => readFileSync(join(outDir, f)))).toEqual(files);
  });

  it('refuses to resume into another output folder, which would end without the weights kept before the interruption', async () => {
    // Best by accuracy with learning rate 0: the first evaluation stays the best, so a run resumed
    // after it never checkpoints again, and its kept weights are the resumed folder's.
    const opts: TrainOptions = { ...base(), learningRate: 0, bestMetric: 'accuracy', evaluateEvery: 4 };
    const stopped = join(work, 'moved');
    const controller = new AbortController();
    await expect(
      train({ ...opts, outDir: stopped, signal: controller.signal, onProgress: (e) => e.type === 'evaluation' && controller.abort() }),
    ).rejects.toThrow(/aborted/);
    const elsewhere = join(work, 'moved-elsewhere');
    await expect(train({ ...opts, resumeFrom: stopped, outDir: elsewhere })).rejects.toThrow(
      `output directory ${elsewhere} is not the folder the run resumes from (${stopped}): a resumed run goes on writing its own ` +
        `folder, where its checkpoint is; leave outDir / --out out, or copy ${stopped} to ${elsewhere} and resume from the copy`,
    );
    expect(existsSync(elsewhere)).toBe(false);
    const resumed = await train({ ...opts, resumeFrom: stopped, outDir: stopped });
    expect(resumed.evaluations.filter((e) => e.isBest).map((e) => e.step)).toEqual([4]);
    expect(JSON.parse(readFileSync(join(stopped, 'config.json'), 'utf8')).metrics.step).toBe(4);
    resumed.classifier.dispose();
  });

  it('says how to go on when a run was stopped before it saved any state', async () => {
    const outDir = join(work, 'never-saved');
    mkdirSync(outDir);
    await expect(train({ ...base(), resumeFrom: outDir })).rejects.toThrow(
      /holds no resumable training state .*: a run saves one before its first step, so a run stopped earlier has nothing to resume: start it again without resumeFrom \/ --resume$/,
    );
  });
});

describe('one output folder, two runs', () => {
  it('refuses a run on a folder another live run is writing, touching nothing, and takes over a killed run’s lock', async () => {
    const outDir = join(work, 'shared');
    const first = await train({ ...base(), epochs: 1, outDir });
    first.classifier.dispose();
    const before = readFileSync(join(outDir, 'classifier.pt'));
    // A run in another process, still running (this test's parent), holds the folder.
    writeFileSync(join(outDir, RUN_LOCK_FILE), String(process.ppid));
    await expect(train({ ...base(), epochs: 1, seed: 7, outDir })).rejects.toThrow(
      `output directory ${outDir} is being written by another run (process ${process.ppid}, still running): ` +
        'wait for it to end or stop it, or choose another outDir / --out',
    );
    expect(readFileSync(join(outDir, 'classifier.pt'))).toEqual(before);
    // A killed run's lock (its process no longer runs): the next run takes the folder over, and releases it.
    writeFileSync(join(outDir, RUN_LOCK_FILE), '999999999.1');
    const second = await train({ ...base(), epochs: 1, seed: 7, outDir });
    second.classifier.dispose();
    expect(readFileSync(join(outDir, 'classifier.pt'))).not.toEqual(before);
    expect(() => readFileSync(join(outDir, RUN_LOCK_FILE))).toThrow(/ENOENT/);
  });
});

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
