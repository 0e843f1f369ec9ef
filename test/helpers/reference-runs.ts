/**
 * The problem-type parity tests' runs of the reference trainer (test/python/reference_train.py)
 * and their one comparison: small head runs, the same job on the same rows as train()'s.
 */
import { expect } from 'vitest';
import { loadBinding } from '../../lib/addon/loader.js';
import { stratifiedSplit } from '../../lib/data/data.js';
import { TextTokenizer } from '../../lib/data/tokenizer.js';
import { demoTokenizer, type ReferenceEpoch, referenceTrain } from '../fixtures.js';

/** The small runs the problem-type parity tests train: train()'s options. */
export const SMALL_RUN = { maxLength: 48, batchSize: 32, learningRate: 1e-3, headHidden: 64 } as const;

/**
 * The reference trainer's run of SMALL_RUN on `texts`, each with `labelOf(row)`: tokenized as
 * train() tokenizes them, split as a regression or multi-label run splits (one stratum, 20% held
 * out, from `settings.seed`), train()'s defaults spelled out (weight decay 0.01, head dropout 0.1,
 * [CLS] pooling); `settings`, the rest of the spec (encoder, numClasses, problemType, epochs, seed, ...).
 */
export async function smallReferenceRun(
  texts: string[],
  labelOf: (row: number) => unknown,
  settings: { encoder: string; numClasses: number; problemType: string; epochs: number; seed: number } & Record<string, unknown>,
): Promise<{ tokenizer: TextTokenizer; split: { train: Int32Array; validation: Int32Array }; epochs: ReferenceEpoch[] }> {
  const tokenizer = await TextTokenizer.load(demoTokenizer);
  const split = stratifiedSplit(new Int32Array(texts.length), 0.2, settings.seed, loadBinding().randperm);
  const { epochs } = await referenceTrain(tokenizer.encodeBatch(texts, SMALL_RUN.maxLength), split, labelOf, {
    ...settings,
    batchSize: SMALL_RUN.batchSize,
    lr: SMALL_RUN.learningRate,
    weightDecay: 0.01,
    headHidden: SMALL_RUN.headHidden,
    dropout: 0.1,
    pooling: 'cls',
  });
  return { tokenizer, split: split as { train: Int32Array; validation: Int32Array }, epochs };
}

/**
 * Epoch by epoch, train()'s training and validation losses within 5% of the reference's: the
 * same job on the same rows in the same batches, whose dropout masks alone differ.
 */
export function expectReferenceLosses(
  history: ReadonlyArray<{ trainLoss: number; validationLoss: number }>,
  reference: ReferenceEpoch[],
): void {
  expect(history).toHaveLength(reference.length);
  history.forEach((o, e) => {
    const r = reference[e]!;
    expect(Math.abs(o.trainLoss - r.trainLoss) / r.trainLoss, `epoch ${e + 1} training loss`).toBeLessThan(0.05);
    expect(Math.abs(o.validationLoss - r.valLoss) / r.valLoss, `epoch ${e + 1} validation loss`).toBeLessThan(0.05);
  });
}

/** train()'s options of the run smallReferenceRun makes: SMALL_RUN from `seed`, without clipping (the reference does not clip). */
export function smallRunOptions(encoder: string, epochs: number, seed: number) {
  return { encoder, tokenizer: demoTokenizer, epochs, seed, maxGradNorm: 0, ...SMALL_RUN } as const;
}
