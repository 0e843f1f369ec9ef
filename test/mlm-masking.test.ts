import { describe, expect, it } from 'vitest';
import { KeyedRandom, type MaskingVocabulary, maskExample, wordContinuation } from '../lib/data/mlm-masking.js';

const V = 1000;
const CLS = 1;
const SEP = 2;
const PAD = 0;
const MASK = 3;
const vocab: MaskingVocabulary = { maskId: MASK, vocabSize: V, specialIds: new Set([CLS, SEP, PAD]) };

/** A text of `n` ordinary tokens between [CLS] and [SEP], ids in [10, V). */
function example(n: number, salt: number): number[] {
  const ids = [CLS];
  for (let i = 0; i < n; i++) ids.push(10 + ((i * 7919 + salt * 104729) % (V - 10)));
  ids.push(SEP);
  return ids;
}

/** |observed - expected| within 5 binomial standard deviations (a false failure: ~6e-7). */
function expectBinomial(observed: number, trials: number, p: number): void {
  const sd = Math.sqrt(trials * p * (1 - p));
  expect(Math.abs(observed - trials * p)).toBeLessThanOrEqual(5 * sd);
}

describe('maskExample: DataCollatorForLanguageModeling distribution', () => {
  const options = { mlmProbability: 0.15, wholeWordMask: false, seed: 42 };

  it('chooses 15% of the ordinary tokens and splits them 80/10/10; never a special token', () => {
    let candidates = 0;
    let chosen = 0;
    let masked = 0;
    let random = 0;
    let unchanged = 0;
    let randomSum = 0;
    let wrong = 0;
    for (let index = 0; index < 3000; index++) {
      const ids = example(60, index);
      const out = maskExample(ids, index, 1, vocab, options);
      candidates += ids.length - 2;
      chosen += out.positions.length;
      for (let k = 0; k < out.positions.length; k++) {
        const at = out.positions[k]!;
        if (out.labels[k] !== ids[at] || vocab.specialIds.has(ids[at]!)) wrong++;
        const now = out.inputIds[at]!;
        if (now === MASK) masked++;
        else if (now === ids[at]) unchanged++;
        else {
          random++;
          randomSum += now;
        }
      }
      // Positions not chosen keep their ids.
      const set = new Set(out.positions);
      ids.forEach((id, i) => {
        if (!set.has(i) && out.inputIds[i] !== id) wrong++;
      });
    }
    expect(wrong).toBe(0);
    expectBinomial(chosen, candidates, 0.15);
    // A random replacement equal to the mask id counts as masked, equal to the original as unchanged.
    expectBinomial(masked, chosen, 0.8 + 0.1 / V);
    expectBinomial(unchanged, chosen, 0.1 + 0.1 / V);
    expectBinomial(random, chosen, 0.1 * (1 - 2 / V));
    // Uniform over [0, V): mean (V - 1) / 2, sd of the mean (V / sqrt(12)) / sqrt(random).
    expect(Math.abs(randomSum / random - (V - 1) / 2)).toBeLessThan((5 * (V / Math.sqrt(12))) / Math.sqrt(random));
  });

  it('honours mlmProbability', () => {
    let candidates = 0;
    let chosen = 0;
    for (let index = 0; index < 1000; index++) {
      const ids = example(50, index);
      candidates += 50;
      chosen += maskExample(ids, index, 3, vocab, { ...options, mlmProbability: 0.4 }).positions.length;
    }
    expectBinomial(chosen, candidates, 0.4);
  });

  it('an example masks the same whatever the batch or call order; epochs, indices and seeds differ', () => {
    const ids = example(100, 7);
    const alone = maskExample(ids, 17, 2, vocab, options);
    for (let i = 0; i < 16; i++) maskExample(example(30, i), i, 2, vocab, options);
    const again = maskExample(ids, 17, 2, vocab, options);
    expect(Array.from(again.inputIds)).toEqual(Array.from(alone.inputIds));
    expect(Array.from(again.positions)).toEqual(Array.from(alone.positions));
    const differs = (a: ReturnType<typeof maskExample>) => Array.from(a.positions).join() !== Array.from(alone.positions).join();
    expect(differs(maskExample(ids, 18, 2, vocab, options))).toBe(true);
    expect(differs(maskExample(ids, 17, 3, vocab, options))).toBe(true);
    expect(differs(maskExample(ids, 17, 2, vocab, { ...options, seed: 43 }))).toBe(true);
  });

  it('KeyedRandom draws are uniform', () => {
    const bins = new Array(10).fill(0);
    for (let index = 0; index < 200; index++) {
      const r = new KeyedRandom(5, 1, index);
      for (let k = 0; k < 100; k++) bins[Math.floor(r.next() * 10)]++;
    }
    for (const b of bins) expectBinomial(b, 20000, 0.1);
  });
});

describe('maskExample: whole-word masking', () => {
  // id → token: ids 10..: words of 1-3 pieces: 'w', '##x', '##y'.
  const tokens: string[] = [];
  tokens[CLS] = '[CLS]';
  tokens[SEP] = '[SEP]';
  tokens[PAD] = '[PAD]';
  tokens[MASK] = '[MASK]';
  for (let id = 10; id < V; id++) tokens[id] = id % 3 === 0 ? `w${id}` : `##p${id}`;
  const wwm: MaskingVocabulary = { ...vocab, continuesWord: wordContinuation(tokens, false) };

  it('masks all pieces of a word together, about 15% of the tokens', () => {
    let total = 0;
    let chosenTotal = 0;
    for (let index = 0; index < 500; index++) {
      const ids = [CLS];
      for (let i = 0; i < 80; i++) ids.push(10 + ((i * 31 + index * 17) % (V - 10)));
      ids.push(SEP);
      const out = maskExample(ids, index, 1, wwm, { mlmProbability: 0.15, wholeWordMask: true, seed: 1 });
      const chosen = new Set(out.positions);
      // Words: a piece not continuing starts one; pieces after [CLS] start one too.
      let word: number[] = [];
      const words: number[][] = [];
      for (let i = 1; i < ids.length - 1; i++) {
        if (word.length > 0 && wwm.continuesWord!(ids[i]!)) word.push(i);
        else {
          if (word.length) words.push(word);
          word = [i];
        }
      }
      words.push(word);
      for (const w of words) {
        const inWord = w.filter((i) => chosen.has(i)).length;
        expect(inWord === 0 || inWord === w.length).toBe(true);
      }
      expect(chosen.has(0) || chosen.has(ids.length - 1)).toBe(false);
      // num_to_predict = round(82 * 0.15) = 12; words of up to 3 pieces may leave it short by at most 2.
      expect(chosen.size).toBeLessThanOrEqual(12);
      expect(chosen.size).toBeGreaterThanOrEqual(10);
      total += ids.length;
      chosenTotal += chosen.size;
    }
    expect(chosenTotal / total).toBeGreaterThan(0.13);
  });

  it("byte-level BPE: a piece starting with 'Ġ' begins a word", () => {
    const f = wordContinuation(['<s>', 'ĠThe', 'Ġun', 'believ', 'able'], true);
    expect([1, 2, 3, 4].map(f)).toEqual([false, false, true, true]);
  });
});
