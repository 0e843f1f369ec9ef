/**
 * Concurrency in one process:
 * - 100 concurrent predict() calls on one loaded classifier give exactly the sequential results;
 * - two train() calls side by side either both succeed with exactly the results of running each
 *   alone (same seed), or the second is rejected with a clear error.
 *   Finding: dropout masks come from libtorch's one process-wide generator, so two runs whose
 *   steps interleaved got results different from their runs alone (with dropout 0 they were
 *   already identical). Since commit 15a00df train() calls in a process run one at a time: the
 *   second waits, then gives exactly its result alone (the last test).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputError } from '../../lib/addon/errors.js';
import { loadBinding } from '../../lib/addon/loader.js';
import { type Classifier, loadClassifier } from '../../lib/classification/classifier.js';
import { type TrainResult, train } from '../../lib/classification/trainer.js';
import { loadExamples } from '../../lib/data/data.js';
import type { TrainOptions } from '../../lib/training/options.js';
import { demoReviews, demoTokenizer, makeEncoder } from '../fixtures.js';
import { rng, runSeed } from '../helpers/reliability.js';

const SEED = runSeed();
const work = mkdtempSync(join(tmpdir(), 'torch-bert-concurrency-'));
let encoder: string;
let texts: string[];
let classifier: Classifier;

const SMALL = { maxLength: 32, batchSize: 32, headHidden: 32, learningRate: 1e-3 } as const;

beforeAll(async () => {
  console.log(`concurrency: seed ${SEED} (RELIABILITY_SEED=${SEED} reproduces this run)`);
  encoder = await makeEncoder({ layers: 1, hidden: 32, heads: 2, intermediate: 64, tokenizer: demoTokenizer, seed: 3 });
  texts = (await loadExamples(demoReviews)).texts;
  const outDir = join(work, 'classifier');
  const result = await train({ data: demoReviews, encoder, tokenizer: demoTokenizer, outDir, epochs: 1, ...SMALL });
  result.classifier.dispose();
  classifier = await loadClassifier(outDir);
});

afterAll(() => {
  classifier?.dispose();
  rmSync(work, { recursive: true, force: true });
});

describe('predict() from many concurrent requests', () => {
  it('100 concurrent calls on one classifier equal the same calls made one after another', async () => {
    const random = rng(SEED);
    const calls = Array.from({ length: 100 }, () => {
      const start = Math.floor(random() * (texts.length - 8));
      return { texts: texts.slice(start, start + 1 + Math.floor(random() * 8)), batchSize: 1 + Math.floor(random() * 4) };
    });
    const sequential = [];
    for (const call of calls) sequential.push(await classifier.predict(call.texts, { batchSize: call.batchSize }));
    const concurrent = await Promise.all(calls.map((call) => classifier.predict(call.texts, { batchSize: call.batchSize })));
    expect(concurrent).toEqual(sequential);
    // Not vacuous: the predictions are real probability distributions that vary with the text.
    const p = sequential.flat().map((x) => x.probabilities.negative!);
    expect(p.every((x) => x > 0 && x < 1)).toBe(true);
    expect(new Set(p).size).toBeGreaterThan(10);
    // And interleaved with evaluate() calls on the same module.
    const mixed = await Promise.all([
      ...calls.slice(0, 20).map((call) => classifier.predict(call.texts, { batchSize: call.batchSize })),
      classifier.evaluate({ texts: texts.slice(0, 64), labels: Array.from({ length: 64 }, (_, i) => (i % 2 ? 'positive' : 'negative')) }),
    ]);
    expect(mixed.slice(0, 20)).toEqual(sequential.slice(0, 20));
  });
});

// Each native batch call waiting for its model's lock holds one of libuv's threads (4 by
// default). Before the fix, concurrent predict() calls queued a batch each, so four of them
// stalled every fs, dns, zlib and crypto call of the process until the queue drained (measured:
// a readFile behind 8 queued evalSteps of a 4-layer encoder took 1341 ms instead of 2 ms).
describe('predict() and evaluate() calls on one classifier, side by side', () => {
  it('keep one batch of that model on the native threads at a time, with the results of the calls made one after another', async () => {
    const binding = loadBinding();
    const evalStep = binding.evalStep;
    const calls = Array.from({ length: 8 }, (_, i) => texts.slice(i * 8, i * 8 + 8));
    const sequential = [];
    for (const call of calls) sequential.push(await classifier.predict(call, { batchSize: 2 }));
    let inFlight = 0;
    let most = 0;
    binding.evalStep = (...args) => {
      most = Math.max(most, ++inFlight);
      return evalStep.apply(binding, args).finally(() => inFlight--);
    };
    try {
      const concurrent = await Promise.all(calls.map((call) => classifier.predict(call, { batchSize: 2 })));
      expect(concurrent).toEqual(sequential);
    } finally {
      binding.evalStep = evalStep;
    }
    expect(most).toBe(1);
  });
});

describe('a classifier disposed', () => {
  it('before or while predict() and evaluate() run: an InputError that says so', async () => {
    // Before: 'evalStep: model: ScriptModule has been disposed' (an internal step, a plain Error).
    const own = await loadClassifier(join(work, 'classifier'));
    const running = own.predict(texts.slice(0, 64), { batchSize: 1 });
    own.dispose();
    const message = (method: string) =>
      `${method}(): this Classifier has been disposed (dispose() frees its model); load it again with loadClassifier()`;
    await expect(running).rejects.toThrow(new InputError(message('predict')));
    await expect(running).rejects.toBeInstanceOf(InputError);
    await expect(own.predict(texts.slice(0, 2))).rejects.toThrow(message('predict'));
    await expect(own.evaluate(demoReviews)).rejects.toThrow(message('evaluate'));

    // Disposed between two of its batches (the first one's native call made, the next not yet).
    const other = await loadClassifier(join(work, 'classifier'));
    const binding = loadBinding();
    const evalStep = binding.evalStep;
    let calls = 0;
    binding.evalStep = (...args) => {
      const step = evalStep.apply(binding, args);
      if (++calls === 1) other.dispose();
      return step;
    };
    try {
      await expect(other.evaluate(demoReviews, { batchSize: 1 })).rejects.toThrow(new InputError(message('evaluate')));
    } finally {
      binding.evalStep = evalStep;
    }
    expect(calls).toBeGreaterThan(1);
  });
});

const summary = (r: TrainResult) => ({
  history: r.history.map((h) => [h.trainLoss, h.trainAccuracy, h.validationLoss, h.validationAccuracy]),
  best: r.best.epoch,
});

async function aloneThenTogether(a: TrainOptions, b: TrainOptions) {
  const aloneA = await train(a);
  const aloneB = await train(b);
  const probe = texts.slice(0, 16);
  const alone = {
    a: { ...summary(aloneA), predictions: await aloneA.classifier.predict(probe) },
    b: { ...summary(aloneB), predictions: await aloneB.classifier.predict(probe) },
  };
  aloneA.classifier.dispose();
  aloneB.classifier.dispose();
  const settled = await Promise.allSettled([train(a), train(b)]);
  const together = await Promise.all(
    settled.map(async (s) => {
      if (s.status === 'rejected') return { error: s.reason as Error };
      const out = { ...summary(s.value), predictions: await s.value.classifier.predict(probe) };
      s.value.classifier.dispose();
      return out;
    }),
  );
  return { alone, together };
}

describe('two train() calls side by side in one process', () => {
  const A: TrainOptions = { data: demoReviews, encoder: '', tokenizer: demoTokenizer, epochs: 2, seed: 1, ...SMALL };
  const B: TrainOptions = { data: demoReviews, encoder: '', tokenizer: demoTokenizer, epochs: 1, seed: 2, technique: 'full', ...SMALL };

  it('without dropout: both succeed with exactly the results of each run alone', async () => {
    const { alone, together } = await aloneThenTogether({ ...A, encoder, dropout: 0 }, { ...B, encoder, dropout: 0 });
    expect(together[0]).toEqual(alone.a);
    expect(together[1]).toEqual(alone.b);
    expect(alone.a).not.toEqual(alone.b);
  });

  // libtorch's generator is process-wide, so train() runs one at a time in a process: the second
  // call waits, then gives exactly its result alone.
  it('with dropout (the default): both succeed with the results of each run alone, or the second is rejected clearly', async () => {
    const { alone, together } = await aloneThenTogether({ ...A, encoder }, { ...B, encoder });
    const rejected = together.filter((t): t is { error: Error } => 'error' in t);
    if (rejected.length > 0) {
      expect(rejected).toHaveLength(1);
      expect(rejected[0]!.error.message).toMatch(/another train\(\)|already running|concurrent/i);
      const other = together.find((t) => !('error' in t));
      expect([alone.a, alone.b]).toContainEqual(other);
    } else {
      expect(together[0]).toEqual(alone.a);
      expect(together[1]).toEqual(alone.b);
    }
  });
});
