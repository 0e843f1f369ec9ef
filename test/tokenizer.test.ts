/**
 * TextTokenizer.encodeBatchAsync: the same rows as encodeBatch, tokenized by worker threads for
 * large inputs (the main thread stays free) and on the main thread in slices for small ones.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Tokenizer } from '@huggingface/tokenizers';
import { describe, expect, it } from 'vitest';
import { AbortError } from '../lib/addon/errors.js';
import { readCsv } from '../lib/data/data.js';
import { TextTokenizer } from '../lib/data/tokenizer.js';
import { demoReviews, demoTokenizer, repoRoot } from './fixtures.js';

/** `n` varied texts of a few sentences each, made from the demo reviews (plus edge cases). */
function texts(n: number): string[] {
  const reviews = readFileSync(demoReviews, 'utf8')
    .trim()
    .split('\n')
    .slice(1)
    .map((l) => l.slice(0, l.lastIndexOf(',')).replace(/^"|"$/g, ''));
  const out = ['a', '   spaces   around   ', 'x'.repeat(5000), `${'word '.repeat(3000)}end`, 'émoji 🎬 and ünïcode'];
  for (let i = 0; out.length < n; i++) {
    out.push(Array.from({ length: 1 + (i % 9) }, (_, k) => reviews[(i * 7 + k * 13) % reviews.length]).join(' ') + ` #${i}`);
  }
  return out;
}

describe('encodeBatchAsync', () => {
  it('gives exactly the rows of encodeBatch, on workers and on the main thread', async () => {
    const tokenizer = await TextTokenizer.load(demoTokenizer);
    const input = texts(3000);
    const expected = tokenizer.encodeBatch(input, 64);
    for (const threads of [1, 2, 3]) {
      const got = await tokenizer.encodeBatchAsync(input, 64, { threads });
      expect(got.count).toBe(expected.count);
      expect(got.seqLen).toBe(64);
      expect(Buffer.from(got.inputIds.buffer).equals(Buffer.from(expected.inputIds.buffer)), `threads ${threads}: ids`).toBe(true);
      expect(Buffer.from(got.attentionMask.buffer).equals(Buffer.from(expected.attentionMask.buffer)), `threads ${threads}: mask`).toBe(
        true,
      );
      expect(Array.from(got.lengths)).toEqual(Array.from(expected.lengths));
    }
    // Small inputs (main thread) too, and nothing at all.
    const few = tokenizer.encodeBatch(input.slice(0, 300), 32);
    expect(Array.from((await tokenizer.encodeBatchAsync(input.slice(0, 300), 32)).inputIds)).toEqual(Array.from(few.inputIds));
    expect((await tokenizer.encodeBatchAsync([], 32)).count).toBe(0);
  });

  it('rowLengthsAsync gives exactly the lengths of its rows without them, on workers and on the main thread', async () => {
    // predict() and evaluate() cut many texts' batches by these before tokenizing a chunk of them at a time.
    const tokenizer = await TextTokenizer.load(demoTokenizer);
    const input = texts(3000);
    const expected = Array.from(tokenizer.encodeBatch(input, 64).lengths);
    expect(new Set(expected).size).toBeGreaterThan(20);
    for (const threads of [1, 2])
      expect(Array.from(await tokenizer.rowLengthsAsync(input, 64, { threads })), `threads ${threads}`).toEqual(expected);
    await expect(tokenizer.rowLengthsAsync(input, 64, { signal: AbortSignal.abort() })).rejects.toBeInstanceOf(AbortError);
    await expect(tokenizer.rowLengthsAsync(input, 1)).rejects.toThrow('maxLength must be an integer ≥ 2; got 1');
  });

  it('leaves the main thread mostly idle on large inputs (workers), and stops on abort', async () => {
    const tokenizer = await TextTokenizer.load(demoTokenizer);
    const input = texts(6000);
    const before = performance.eventLoopUtilization();
    await tokenizer.encodeBatchAsync(input, 128, { threads: 2 });
    const onWorkers = performance.eventLoopUtilization(before).utilization;
    const before1 = performance.eventLoopUtilization();
    await tokenizer.encodeBatchAsync(input, 128, { threads: 1 });
    const onMain = performance.eventLoopUtilization(before1).utilization;
    console.log(`tokenizer: event-loop utilisation ${onWorkers.toFixed(2)} with 2 workers, ${onMain.toFixed(2)} on the main thread`);
    // On the main thread the loop is busy tokenizing nearly all the time; with workers it waits.
    expect(onMain).toBeGreaterThan(0.8);
    expect(onWorkers).toBeLessThan(0.5);

    const controller = new AbortController();
    const running = tokenizer.encodeBatchAsync(input, 128, { threads: 2, signal: controller.signal });
    setTimeout(() => controller.abort(new Error('stop')), 5);
    await expect(running).rejects.toBeInstanceOf(AbortError);
    await expect(tokenizer.encodeBatchAsync(input.slice(0, 100), 128, { signal: AbortSignal.abort() })).rejects.toBeInstanceOf(AbortError);
  });
});

describe('encodeOne on the real bert-base-uncased tokenizer', () => {
  const shared = join(repoRoot, '..', 'shared');
  const tokenizerFile = join(shared, 'models', 'bert-base-uncased', 'tokenizer.json');
  const imdb = join(shared, 'data', 'imdb', 'test-00-of-10.csv');

  it("equals the library's own encoding of the whole text, cut to the max length: IMDB reviews, other scripts, emoji, 100k characters, deleted characters at the cut", async (context) => {
    if (!existsSync(tokenizerFile) || !existsSync(imdb)) {
      context.skip(`${tokenizerFile} or ${imdb} is not here (read in place from ../shared, never copied into the repository)`);
    }
    const tokenizer = await TextTokenizer.load(tokenizerFile);
    const library = new Tokenizer(JSON.parse(readFileSync(tokenizerFile, 'utf8')), {});
    const [cls, sep] = library.encode('').ids;
    const hard = [
      'I loved it 😀👍🏽 so much 👩‍🚀',
      '这部电影很好看 日本語のテキスト 한국어',
      'هذا فيلم رائع',
      'Café naïve résumé ÉCOLE',
      'a lone surrogate \uD83D here',
      'The quick brown fox 😀 jumps 这部电影 over '.repeat(2500),
      'x'.repeat(100_000),
      // Before: cut at the \uFEFF (or \v, \f), which BERT's normalizer deletes: at max length 43 the
      // 41st token was 'un' (of 'unbeliev') where the whole text has 'unbelievable'.
      ...['\uFEFF', '\v', '\f'].map((c) => `${`${'x'.repeat(101)} `.repeat(40)}unbeliev${c}able${'s'.repeat(30)}${' more'.repeat(100)}`),
    ];
    const reviews = (await readCsv(imdb)).texts.slice(0, 200);
    for (const text of [...hard, ...reviews]) {
      const whole = library.encode(text, { add_special_tokens: false }).ids;
      for (const maxLength of [8, 43, 128, 512]) {
        expect(tokenizer.encodeOne(text, maxLength)).toEqual([cls, ...whole.slice(0, maxLength - 2), sep]);
      }
    }
  });
});
