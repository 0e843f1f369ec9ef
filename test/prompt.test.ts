/**
 * Prompt-based classification (issue 15, items 2 and 3): templates and verbalizers against the
 * tokenizer, and the zero-shot classifier's probabilities against plain PyTorch
 * (scripts/python/prompt_reference.py: transformers' MLM head over every position from the
 * folder's own files, the label words' logits at the mask, softmax), for a BERT folder (WordPiece,
 * [MASK]), a RoBERTa folder (byte-level BPE, <mask>, 'Ġword') and a DistilBERT folder; the
 * prompt head's loss and gradients (the label words' decoder bias rows included) against the same
 * reference; resume, loadAdapters of a LoRA run, and the export as a ForMaskedLM folder read back
 * by the reference.
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError, InputError } from '../lib/addon/errors.js';
import type { Classifier, Prediction } from '../lib/classification/classifier.js';
import { promptClassifier } from '../lib/classification/prompt-classifier.js';
import { INFERENCE_CHUNK } from '../lib/data/batching.js';
import { PromptEncoder } from '../lib/data/prompt-template.js';
import { type EncodedTexts, TextTokenizer, truncateLongestFirst } from '../lib/data/tokenizer.js';
import type { LoadedEncoder } from '../lib/models/encoder-source.js';
import type { TrainOptions } from '../lib/training/options.js';
import { asRows, demoTokenizer, fixturesDir, makeEncoder, makeHfFolder, repoRoot, runPython } from './fixtures.js';
import { trainAbortedAt } from './helpers/train-abort.js';

const exec = promisify(execFile);
const cli = join(repoRoot, 'dist', 'cli.js');

const SIZE = { layers: 2, hidden: 32, heads: 4, intermediate: 64, maxPosition: 64 } as const;
const TEXTS = ['What a wonderful film.', 'Dull, long and badly acted.', 'I have mixed feelings', 'x'];
const CHUNK_ROWS = INFERENCE_CHUNK.rows;

let work: string;
let bertDir: string;
let robertaDir: string;

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'torch-bert-prompt-'));
  bertDir = (await makeHfFolder({ ...SIZE, layout: 'mlm' })).dir;
  // RoBERTa with a byte-level BPE tokenizer (pad 1, <mask>); written here, as make_hf_folder has no BPE tokenizer.
  mkdirSync(fixturesDir, { recursive: true });
  robertaDir = join(work, 'roberta');
  await runPython('scripts/python/make_hf_folder.py', [
    '--out',
    robertaDir,
    '--layout',
    'roberta',
    '--tokenizer',
    'none',
    '--pad',
    '1',
    ...Object.entries({ layers: 2, hidden: 32, heads: 4, intermediate: 64, 'max-position': 64 }).flatMap(([k, v]) => [`--${k}`, String(v)]),
  ]);
  await runPython('scripts/python/make_bpe_tokenizer.py', [join(robertaDir, 'tokenizer.json')]);
}, 240_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

interface Reference {
  probabilities: number[][];
  mask_positions: number[];
}

async function reference(dir: string, c: Classifier, texts: string[]): Promise<Reference> {
  const prompt = c.config.prompt!;
  const encoded = PromptEncoder.fromConfig(c.tokenizer, prompt).encode(texts, null, c.config.maxLength);
  const out = await runPython(
    'scripts/python/prompt_reference.py',
    [dir],
    JSON.stringify({
      input_ids: asRows(encoded.inputIds, encoded.seqLen),
      attention_mask: asRows(encoded.attentionMask, encoded.seqLen),
      mask_id: prompt.maskTokenId,
      label_ids: prompt.labelTokenIds,
    }),
  );
  return JSON.parse(out) as Reference;
}

function expectClose(actual: number[][], expected: number[][], tolerance: number): void {
  expect(actual.length).toBe(expected.length);
  actual.forEach((row, i) => {
    expect(row.length).toBe(expected[i]!.length);
    for (const [j, x] of row.entries()) expect(Math.abs(x - expected[i]![j]!)).toBeLessThan(tolerance);
  });
}

/** Predictions' probabilities as rows, in the classifier's label order. */
function probabilityRows(c: Classifier, predictions: Prediction[]): number[][] {
  return predictions.map((p) => c.labels.map((l) => p.probabilities[l]!));
}

/** `c`'s probabilities of TEXTS are the Python reference's on the folder `dir` (1e-5); both, for further checks. */
async function expectReferenceProbabilities(dir: string, c: Classifier): Promise<{ predictions: Prediction[]; ref: Reference }> {
  const predictions = await c.predict(TEXTS);
  const ref = await reference(dir, c, TEXTS);
  expectClose(probabilityRows(c, predictions), ref.probabilities, 1e-5);
  return { predictions, ref };
}

/** `c`'s probabilities of TEXTS are those of the classifier.pt it was loaded from (in `dir`) run by Python's torch.jit.load (1e-5); both. */
async function expectTorchJitProbabilities(c: Classifier, dir: string): Promise<{ node: Prediction[]; python: number[][] }> {
  const node = await c.predict(TEXTS);
  const encoded = PromptEncoder.fromConfig(c.tokenizer, c.config.prompt!).encode(TEXTS, null, c.config.maxLength);
  const python = (await pythonLogProbabilities(join(dir, 'classifier.pt'), encoded)).map((row) => row.map(Math.exp));
  expectClose(probabilityRows(c, node), python, 1e-5);
  return { node, python };
}

/** The names of a module's head parameters, in its order. */
function headParameterNames(module: { namedParameters(): Array<[string, unknown]> }): string[] {
  return module
    .namedParameters()
    .filter(([n]) => n.startsWith('head.'))
    .map(([n]) => n);
}

/** The folder `dir` loaded with its MLM head (24 positions) for `use`, then disposed. */
async function withMlmSource<T>(dir: string, use: (loaded: LoadedEncoder) => Promise<T>): Promise<T> {
  const { loadEncoderSource } = await import('../lib/models/encoder-source.js');
  const loaded = await loadEncoderSource(dir, { device: 'cpu', maxLength: 24, fallbackMaxLength: 24, mlmHead: true });
  try {
    return await use(loaded);
  } finally {
    loaded.mlmHead?.dispose();
    loaded.module.dispose();
  }
}

/** Trains `options` into their outDir and loads the saved classifier back, as a later process would. */
async function trainedFromDisk(options: TrainOptions & { outDir: string }): Promise<Classifier> {
  const { train } = await import('../lib/classification/trainer.js');
  const { loadClassifier } = await import('../lib/classification/classifier.js');
  (await train(options)).classifier.dispose();
  return loadClassifier(options.outDir, { device: 'cpu' });
}

describe('zero-shot prompt classification', () => {
  it("a BERT folder's probabilities are the MLM head's softmax over the label words at [MASK] (Python reference)", async () => {
    const c = await promptClassifier({
      model: bertDir,
      template: 'Review: {text} It was [MASK].',
      verbalizer: ['negative=bad', 'positive=good', 'neutral=film'],
      maxLength: 24,
      device: 'cpu',
    });
    try {
      expect(c.labels).toEqual(['negative', 'positive', 'neutral']);
      expect(c.config.prompt!.maskToken).toBe('[MASK]');
      expect(c.config.prompt!.labelTokenIds.map((id) => c.tokenizer.tokenString(id))).toEqual(['bad', 'good', 'film']);
      const { predictions, ref } = await expectReferenceProbabilities(bertDir, c);
      predictions.forEach((p, i) => {
        const best = ref.probabilities[i]!.indexOf(Math.max(...ref.probabilities[i]!));
        expect(p.labelId).toBe(best);
        expect(p.label).toBe(c.labels[best]);
      });
      // Token pruning narrows nothing for this head: the mask row is gathered, not selected.
      expect(c.module.prunedOps()).toEqual([]);
      // Not all alike: the weights are random, so the rows differ by text.
      expect(new Set(ref.probabilities.map((r) => r[0]!.toFixed(6))).size).toBeGreaterThan(1);
    } finally {
      c.dispose();
    }
  }, 120_000);

  it("a RoBERTa folder (byte-level BPE) uses <mask> and the label words' 'Ġword' tokens (Python reference)", async () => {
    const c = await promptClassifier({
      model: robertaDir,
      template: '{text} It was <mask>.',
      verbalizer: { negative: 'terrible', positive: 'great' },
      maxLength: 32,
      device: 'cpu',
    });
    try {
      expect(c.config.prompt!.maskToken).toBe('<mask>');
      expect(c.config.prompt!.labelTokenIds.map((id) => c.tokenizer.tokenString(id))).toEqual(['Ġterrible', 'Ġgreat']);
      await expectReferenceProbabilities(robertaDir, c);
    } finally {
      c.dispose();
    }
  }, 120_000);

  it('evaluate() on a CSV gives the accuracy of the reference predictions', async () => {
    const c = await promptClassifier({
      model: bertDir,
      template: '{text} It was [MASK].',
      verbalizer: ['neg=bad', 'pos=good'],
      device: 'cpu',
    });
    try {
      const labels = ['neg', 'pos', 'pos', 'neg'];
      const csv = join(work, 'eval.csv');
      writeFileSync(csv, `text,label\n${TEXTS.map((t, i) => `"${t}",${labels[i]}`).join('\n')}\n`);
      const result = await c.evaluate(csv);
      const ref = await reference(bertDir, c, TEXTS);
      const predicted = ref.probabilities.map((r) => (r[0]! > r[1]! ? 'neg' : 'pos'));
      expect(result.examples).toBe(4);
      expect(result.accuracy).toBeCloseTo(predicted.filter((p, i) => p === labels[i]).length / 4, 10);
      const nll = -ref.probabilities.reduce((s, r, i) => s + Math.log(r[labels[i] === 'neg' ? 0 : 1]!), 0) / 4;
      expect(result.loss).toBeCloseTo(nll, 4);
    } finally {
      c.dispose();
    }
  }, 120_000);

  it('predict() tokenizes a slice of texts per event-loop turn, and stops there at an abort', async () => {
    // Before: the template's rows were encoded all at once on the main thread (25,000 IMDB reviews:
    // the event loop and an abort held 14 s), so an abort from the next turn came after it all.
    const c = await promptClassifier({
      model: bertDir,
      template: '{text} It was [MASK].',
      verbalizer: ['neg=bad', 'pos=good'],
      device: 'cpu',
    });
    try {
      const texts = Array.from({ length: 2000 }, (_, i) => `${TEXTS[i % TEXTS.length]} ${i}`);
      const controller = new AbortController();
      const run = c.predict(texts, { signal: controller.signal });
      setImmediate(() => controller.abort());
      await expect(run).rejects.toBeInstanceOf(AbortError);
      await expect(run).rejects.toThrow('tokenization was aborted');
      // The rows are those encode() gives at once.
      const prompt = PromptEncoder.fromConfig(c.tokenizer, c.config.prompt!);
      expect(await prompt.encodeAsync(texts, null, c.config.maxLength)).toEqual(prompt.encode(texts, null, c.config.maxLength));
    } finally {
      c.dispose();
    }
  }, 120_000);

  it('predicts text pairs a chunk at a time exactly as in one pass, each pair in its template', async () => {
    // More texts than a chunk are measured first (PromptEncoder.rowLengthsAsync), then tokenized
    // a chunk of batches at a time: each text with its own second text.
    const c = await promptClassifier({
      model: bertDir,
      template: '{text_a} ? [MASK] , {text_b}',
      verbalizer: ['yes=yes', 'no=no'],
      device: 'cpu',
    });
    try {
      const texts = Array.from({ length: 40 }, (_, i) => `${TEXTS[i % TEXTS.length]} ${'again '.repeat(i % 7)}${i}`);
      const pairs = texts.map((_, i) => `${'so '.repeat((i * 5) % 11)}it was ${i}`);
      const prompt = PromptEncoder.fromConfig(c.tokenizer, c.config.prompt!);
      const lengths = prompt.encode(texts, pairs, c.config.maxLength).lengths;
      expect(new Set(lengths).size).toBeGreaterThan(10);
      expect(await prompt.rowLengthsAsync(texts, pairs, c.config.maxLength)).toEqual(lengths);
      const onePass = await c.predict(texts, { pairs, batchSize: 3 });
      INFERENCE_CHUNK.rows = 5;
      try {
        expect(await c.predict(texts, { pairs, batchSize: 3 })).toEqual(onePass);
      } finally {
        INFERENCE_CHUNK.rows = CHUNK_ROWS;
      }
    } finally {
      c.dispose();
    }
  }, 120_000);
});

describe('templates and verbalizers', () => {
  let bert: TextTokenizer;
  let bpe: TextTokenizer;
  beforeAll(async () => {
    bert = await TextTokenizer.load(demoTokenizer);
    bpe = await TextTokenizer.load(join(robertaDir, 'tokenizer.json'));
  });
  const BERT_MASK = { token: '[MASK]', id: 4 };
  const bpeMask = () => ({ token: '<mask>', id: bpe.tokenId('<mask>')! });

  it("the template's rows are the tokenizer's own encoding of the filled-in template (BERT and byte-level BPE)", () => {
    for (const [tok, mask, template] of [
      [bert, BERT_MASK, 'Review: {text} It was [MASK].'],
      [bpe, bpeMask(), '{text} It was <mask>.'],
      [bpe, bpeMask(), 'The film: {text}. It was <mask>!'],
    ] as const) {
      const p = PromptEncoder.create(tok, template, ['a=good', 'b=bad'], mask);
      const encoded = p.encode(['a great film and a dull one'], null, 40);
      const whole = tok.encodeOne(template.replace('{text}', 'a great film and a dull one'), 40);
      expect(Array.from(encoded.inputIds.subarray(0, encoded.lengths[0]!))).toEqual(whole);
    }
  });

  it('texts are truncated to fit, the template never; pairs longest-first', () => {
    const p = PromptEncoder.create(bert, '{text} It was [MASK].', ['a=good', 'b=bad'], BERT_MASK);
    const long = Array.from({ length: 50 }, () => 'good film').join(' ');
    const e = p.encode([long], null, 12);
    const ids = Array.from(e.inputIds.subarray(0, 12));
    // [CLS] + 6 text tokens + "it was [MASK] ." + [SEP]
    const tail = bert.tokenIds('it was');
    expect(ids.slice(0, 7)).toEqual([2, ...bert.tokenIds(long).slice(0, 6)]);
    expect(ids.slice(7)).toEqual([...tail, 4, ...bert.tokenIds('.'), 3]);
    expect(truncateLongestFirst(10, 3, 8)).toEqual([5, 3]);
    expect(truncateLongestFirst(2, 9, 6)).toEqual([2, 4]);
    const pair = PromptEncoder.create(bert, '{text_a} ? [MASK] , {text_b}', ['yes=yes', 'no=no'], BERT_MASK);
    const pe = pair.encode([long], ['a dull film'], 16);
    expect(pe.lengths[0]).toBe(16);
    const row = Array.from(pe.inputIds.subarray(0, 16));
    const b = bert.tokenIds('a dull film');
    // 16 - [CLS] [SEP] ? [MASK] , = 11 for the texts: b keeps its 3, a gets 8.
    expect(row).toEqual([2, ...bert.tokenIds(long).slice(0, 8), ...bert.tokenIds('?'), 4, ...bert.tokenIds(','), ...b, 3]);
    expect(() => pair.encode(['x'], null, 16)).toThrow(/text_a/);
    // Where the second texts go, for each way in.
    expect(() => pair.encode(['x'], null, 16)).toThrow(
      /textPairColumn \/ --text-pair-column; predict\(texts, \{ pairs \}\); torch-bert predict: --data with --text-pair-column/,
    );
    expect(() => p.encode(['x'], null, 6)).toThrow(expect.objectContaining({ code: 'TEMPLATE_TOO_LONG' }));
  });

  it("cuts a pair as Hugging Face tokenizers' longest_first does: the odd token to the longer, to the second on a tie", () => {
    // Before: one token at a time from the longer, the first keeping the odd token (transformers'
    // slow tokenizers), so (5, 5) in 7 kept [4, 3] where BertTokenizerFast keeps [3, 4].
    // tokenizers' own table (src/utils/truncation.rs, truncate_encodings_longest_first, room 7):
    // [first, second, kept first, kept second]; empty 0, short 2, medium 4, long 8 tokens.
    const table = [
      [0, 0, 0, 0],
      [0, 2, 0, 2],
      [0, 4, 0, 4],
      [0, 8, 0, 7],
      [2, 0, 2, 0],
      [2, 2, 2, 2],
      [2, 4, 2, 4],
      [2, 8, 2, 5],
      [4, 0, 4, 0],
      [4, 2, 4, 2],
      [4, 4, 3, 4],
      [4, 8, 3, 4],
      [8, 0, 7, 0],
      [8, 2, 5, 2],
      [8, 4, 4, 3],
      [8, 8, 3, 4],
    ];
    for (const [a, b, keepA, keepB] of table) expect(truncateLongestFirst(a!, b!, 7)).toEqual([keepA, keepB]);
    expect(truncateLongestFirst(5, 5, 7)).toEqual([3, 4]);
    // bert-base-uncased's tokenizer.json through tokenizers (npm 'tokenizers' 0.23.2):
    // encode('a b c', 'this film was a long ...') with max length 8 gives [CLS] a b [SEP] this film was [SEP].
    const pair = PromptEncoder.create(bert, '{text_a} ? [MASK] , {text_b}', ['yes=yes', 'no=no'], BERT_MASK);
    const b = bert.tokenIds('this film was a long and winding story');
    const row = Array.from(pair.encode(['a b c'], ['this film was a long and winding story'], 10).inputIds);
    // 10 - [CLS] ? [MASK] , [SEP] = 5 for the texts: 'a b c' is 3 tokens, so 2 and 3.
    expect(row).toEqual([2, ...bert.tokenIds('a b'), ...bert.tokenIds('?'), 4, ...bert.tokenIds(','), ...b.slice(0, 3), 3]);
  });

  it('refuses bad templates and verbalizers with typed errors', () => {
    const code = (f: () => unknown, c: string, message?: RegExp) => {
      try {
        f();
      } catch (err) {
        expect(err).toBeInstanceOf(InputError);
        expect((err as InputError).code).toBe(c);
        if (message) expect((err as Error).message).toMatch(message);
        return;
      }
      throw new Error('did not throw');
    };
    const v = ['a=good', 'b=bad'];
    code(() => PromptEncoder.create(bert, 'It was [MASK].', v, BERT_MASK), 'TEMPLATE_PLACEHOLDERS');
    code(() => PromptEncoder.create(bert, '{text} {text} [MASK]', v, BERT_MASK), 'TEMPLATE_PLACEHOLDERS');
    code(() => PromptEncoder.create(bert, '{text_a} [MASK]', v, BERT_MASK), 'TEMPLATE_PLACEHOLDERS');
    code(() => PromptEncoder.create(bert, '{sentence} [MASK]', v, BERT_MASK), 'TEMPLATE_PLACEHOLDERS', /unknown placeholder \{sentence\}/);
    code(() => PromptEncoder.create(bert, '{text} It was.', v, BERT_MASK), 'TEMPLATE_MASK');
    code(() => PromptEncoder.create(bert, '{text} [MASK] [MASK]', v, BERT_MASK), 'TEMPLATE_MASK');
    code(() => PromptEncoder.create(bpe, '{text} It was [MASK].', v, bpeMask()), 'TEMPLATE_MASK', /<mask>/);
    code(() => PromptEncoder.create(bert, '{text} [MASK]', ['a=good'], BERT_MASK), 'VERBALIZER_INVALID');
    code(() => PromptEncoder.create(bert, '{text} [MASK]', ['a=good', 'bad'], BERT_MASK), 'VERBALIZER_INVALID', /LABEL=WORD/);
    code(() => PromptEncoder.create(bert, '{text} [MASK]', ['a=good', 'a=bad'], BERT_MASK), 'VERBALIZER_INVALID', /twice/);
    code(() => PromptEncoder.create(bert, '{text} [MASK]', ['a=good', 'b=Good'], BERT_MASK), 'VERBALIZER_DUPLICATE_TOKEN');
    const splits = bert.tokenIds('magnificently').map((id) => `'${bert.tokenString(id)}'`);
    expect(splits.length).toBeGreaterThan(1);
    code(
      () => PromptEncoder.create(bert, '{text} [MASK]', ['a=good', 'b=magnificently'], BERT_MASK),
      'VERBALIZER_WORD_SPLITS',
      new RegExp(splits.join(' \\+ ').replace(/[#]/g, '#')),
    );
    // RoBERTa: 'great' stands after a space at the mask ('Ġgreat', one token); 'magnificent' splits into 'Ġm' + ...
    expect(PromptEncoder.create(bpe, '{text} It was <mask>.', ['a=great', 'b=terrible'], bpeMask()).config.labelTokenIds).toEqual([
      bpe.tokenId('Ġgreat'),
      bpe.tokenId('Ġterrible'),
    ]);
    expect(PromptEncoder.create(bpe, '{text} It was<mask>.', ['a=great', 'b=terrible'], bpeMask()).config.labelTokenIds).toEqual([
      bpe.tokenId('great'),
      bpe.tokenId('terrible'),
    ]);
    code(
      () => PromptEncoder.create(bpe, '{text} It was <mask>.', ['a=great', 'b=magnificent'], bpeMask()),
      'VERBALIZER_WORD_SPLITS',
      /'Ġm' \+ 'a'/,
    );
  });

  it('refuses models without an MLM head: a TorchScript file, an AutoModel folder', async () => {
    const pt = await makeEncoder({ ...SIZE, tokenizer: demoTokenizer });
    await expect(
      promptClassifier({
        model: pt,
        tokenizer: demoTokenizer,
        maxLength: 32,
        template: '{text} [MASK]',
        verbalizer: ['a=good', 'b=bad'],
        device: 'cpu',
      }),
    ).rejects.toMatchObject({ code: 'NO_MLM_HEAD', message: expect.stringMatching(/TorchScript/) });
    // Refused as such at once: not first sent to name its tokenizer, then to lower the max length
    // (the default 128 is more than its 64 positions), to meet this refusal only after.
    const refusal = { code: 'NO_MLM_HEAD', message: expect.stringMatching(/is a TorchScript encoder, which carries none/) };
    await expect(promptClassifier({ model: pt, template: '{text} [MASK]', verbalizer: ['a=good', 'b=bad'] })).rejects.toMatchObject(
      refusal,
    );
    const { train } = await import('../lib/classification/trainer.js');
    const data = join(work, 'no-mlm-head.csv');
    writeFileSync(data, 'text,label\ngood,a\nbad,b\n');
    await expect(
      train({ data, encoder: pt, tokenizer: demoTokenizer, head: 'prompt', template: '{text} [MASK]', verbalizer: ['a=good', 'b=bad'] }),
    ).rejects.toMatchObject(refusal);
    const { dir } = await makeHfFolder({ ...SIZE, layout: 'automodel' });
    await expect(
      promptClassifier({ model: dir, maxLength: 32, template: '{text} [MASK]', verbalizer: ['a=good', 'b=bad'], device: 'cpu' }),
    ).rejects.toMatchObject({
      code: 'NO_MLM_HEAD',
    });
  }, 120_000);
});

describe('prompt-based fine-tuning', () => {
  const REVIEWS = [
    ['A wonderful film, great acting.', 'pos'],
    ['Dull, long and badly acted.', 'neg'],
    ['I loved every minute of it.', 'pos'],
    ['A terrible waste of time.', 'neg'],
    ['Great fun and a good story.', 'pos'],
    ['Bad script, bad acting.', 'neg'],
    ['The best film this year.', 'pos'],
    ['Boring and far too long.', 'neg'],
  ] as const;
  const data = {
    texts: Array.from({ length: 48 }, (_, i) => REVIEWS[i % 8]![0]),
    labels: Array.from({ length: 48 }, (_, i) => REVIEWS[i % 8]![1]),
  };
  const PROMPT = { head: 'prompt' as const, template: '{text} It was [MASK].', verbalizer: ['neg=bad', 'pos=good'] };
  /** PROMPT's zero-shot classifier on the base folder: where training starts from. */
  const zeroShot = () =>
    promptClassifier({ model: bertDir, template: PROMPT.template, verbalizer: PROMPT.verbalizer, maxLength: 24, device: 'cpu' });

  it("few-shot sampling takes K per class, walking torch.randperm(n) from the seed (Python's order)", async () => {
    const { fewShotSplit } = await import('../lib/data/few-shot.js');
    const { loadBinding } = await import('../lib/addon/loader.js');
    const binding = loadBinding();
    // 3 classes: 620, 40 and 9 rows, interleaved.
    const ids = Int32Array.from({ length: 669 }, (_, i) => (i < 27 ? i % 3 : 0));
    for (let i = 27; i < 27 + 31; i++) ids[i] = 1;
    const labels = ['a', 'b', 'c'];
    const split = fewShotSplit(ids, labels, 4, 7, binding.randperm, true);
    const count = (rows: Int32Array, c: number) => Array.from(rows).filter((r) => ids[r] === c).length;
    expect([0, 1, 2].map((c) => count(split.train, c))).toEqual([4, 4, 4]);
    expect([0, 1, 2].map((c) => count(split.validation!, c))).toEqual([500, 36, 5]);
    expect(Array.from(split.train).some((r) => split.validation!.includes(r))).toBe(false);
    const expected = JSON.parse(
      await runPython('-c', [
        `import json, sys, torch
ids = json.loads(sys.argv[1]); taken = {}; out = []
for r in torch.randperm(len(ids), generator=torch.Generator().manual_seed(7)).tolist():
    if taken.get(ids[r], 0) < 4: taken[ids[r]] = taken.get(ids[r], 0) + 1; out.append(r)
print(json.dumps(sorted(out)))`,
        JSON.stringify(Array.from(ids)),
      ]),
    ) as number[];
    expect(Array.from(split.train)).toEqual(expected);
    expect(Array.from(fewShotSplit(ids, labels, 4, 7, binding.randperm, false).train)).toEqual(expected);
    expect(Array.from(fewShotSplit(ids, labels, 4, 8, binding.randperm, false).train)).not.toEqual(expected);
    expect(() => fewShotSplit(ids, labels, 10, 7, binding.randperm, false)).toThrow(/'c' \(9 examples\)/);
  });

  it.each(['full', 'lora'] as const)(
    "a prompt classifier trained with %s: classifier.pt run by Python's torch.jit.load equals Node's predict",
    async (technique) => {
      const outDir = join(work, technique);
      const c = await trainedFromDisk({
        ...PROMPT,
        data,
        encoder: bertDir,
        technique,
        fewShot: 8,
        epochs: 2,
        batchSize: 4,
        maxLength: 24,
        learningRate: 1e-3,
        outDir,
        device: 'cpu',
      });
      try {
        expect(c.config.head).toBe('prompt');
        expect(c.config.prompt!.template).toBe(PROMPT.template);
        const { node, python } = await expectTorchJitProbabilities(c, outDir);
        // It trained: the classifier is no longer the zero-shot one.
        const zero = await zeroShot();
        const before = await zero.predict(TEXTS);
        zero.dispose();
        expect(Math.max(...before.map((p, i) => Math.abs(p.probabilities.pos! - node[i]!.probabilities.pos!)))).toBeGreaterThan(1e-3);
        // The label words' decoder bias rows trained too (LM-BFF trains the whole MLM head; under
        // LoRA they are head parameters): classifier.pt's differ from the checkpoint's.
        const bias = Array.from(parameter(c.module, 'head.label_decoder.bias'));
        const checkpoint = await checkpointRows(bertDir, 'cls.predictions.bias', c.config.prompt!.labelTokenIds);
        expect(bias).toHaveLength(2);
        expect(Math.min(...bias.map((x, i) => Math.abs(x - checkpoint[i]!)))).toBeGreaterThan(1e-5);
        // torch-bert export: a BertForMaskedLM folder with the prompt in config.json; the Python
        // reference (MLM over every position, label words at the mask) on it gives predict's probabilities.
        const exported = join(work, `${technique}-export`);
        await exec(process.execPath, [cli, 'export', '--classifier', outDir, '--out', exported]);
        const hf = JSON.parse(readFileSync(join(exported, 'config.json'), 'utf8')) as {
          architectures: string[];
          torch_bert: { prompt: { template: string; labelTokenIds: number[]; maskTokenId: number; labels: string[] } };
        };
        expect(hf.architectures).toEqual(['BertForMaskedLM']);
        // Its tokenizer cuts where the classifier was trained to (the base's length, or none, before),
        // and says what the base folder (no tokenizer_config.json) left to transformers' defaults, as
        // the default export does: told nothing, a BertTokenizerFast lowercases, a cased one too.
        expect(JSON.parse(readFileSync(join(exported, 'tokenizer_config.json'), 'utf8'))).toEqual({
          tokenizer_class: 'BertTokenizerFast',
          do_lower_case: true,
          cls_token: '[CLS]',
          sep_token: '[SEP]',
          pad_token: '[PAD]',
          unk_token: '[UNK]',
          mask_token: '[MASK]',
          model_max_length: 24,
        });
        expect(hf.torch_bert.prompt).toMatchObject({
          template: PROMPT.template,
          labelTokenIds: c.config.prompt!.labelTokenIds,
          maskTokenId: c.config.prompt!.maskTokenId,
          labels: ['neg', 'pos'],
        });
        await expectReferenceProbabilities(exported, c);
        // The full vocabulary's bias is the checkpoint's but for the label words' trained rows.
        const exportedBias = await checkpointRows(exported, 'cls.predictions.bias', [0, 1, 2, ...c.config.prompt!.labelTokenIds]);
        const baseBias = await checkpointRows(bertDir, 'cls.predictions.bias', [0, 1, 2]);
        expect(exportedBias.slice(0, 3)).toEqual(baseBias);
        expect(exportedBias.slice(3).map((x) => Math.fround(x))).toEqual(bias);
        if (technique === 'lora') {
          // The run's small files (adapters.pt, head.pt) on the same base folder: classifier.pt's predictions.
          const { Classifier } = await import('../lib/classification/classifier.js');
          const rebuilt = await Classifier.loadAdapters(outDir, { encoder: bertDir, device: 'cpu' });
          try {
            expect(rebuilt.config.head).toBe('prompt');
            const again = await rebuilt.predict(TEXTS);
            expectClose(probabilityRows(c, again), python, 1e-5);
            expect(Array.from(parameter(rebuilt.module, 'head.label_decoder.bias'))).toEqual(bias);
          } finally {
            rebuilt.dispose();
          }
          // A base without an MLM head cannot carry the prompt head.
          const { dir: automodel } = await makeHfFolder({ ...SIZE, layout: 'automodel' });
          await expect(Classifier.loadAdapters(outDir, { encoder: automodel, device: 'cpu' })).rejects.toMatchObject({
            code: 'NO_MLM_HEAD',
          });
        }
      } finally {
        c.dispose();
      }
    },
    240_000,
  );

  it('a run interrupted after epoch 1 and resumed ends bit-identical to the uninterrupted run (full, few-shot, dropout)', async () => {
    const { train } = await import('../lib/classification/trainer.js');
    const opts = {
      ...PROMPT,
      data,
      encoder: bertDir,
      technique: 'full' as const,
      fewShot: 8,
      epochs: 3,
      batchSize: 4,
      maxLength: 24,
      learningRate: 1e-3,
      warmupRatio: 0.2,
      device: 'cpu' as const,
    };
    const whole = await train({ ...opts, outDir: join(work, 'resume-whole') });
    const outDir = join(work, 'resume-interrupted');
    await expect(trainAbortedAt({ ...opts, outDir }, (e) => e.type === 'epoch' && e.epoch === 1)).rejects.toThrow(
      /aborted at epoch 2, batch 1\/4; resume with the same options and resumeFrom/,
    );
    // Label words swapped would continue the state's label rows under the other class: refused.
    await expect(train({ ...opts, verbalizer: ['neg=good', 'pos=bad'], resumeFrom: outDir })).rejects.toThrow(
      /cannot resume .* settings differ \(verbalizer: saved \["neg=bad","pos=good"\], now \["neg=good","pos=bad"\]\)$/,
    );
    // The same words spelt as an object: the same run, resumed (options.ts effectiveSettings).
    const resumed = await train({ ...opts, verbalizer: { neg: 'bad', pos: 'good' }, resumeFrom: outDir });
    try {
      expect(resumed.history).toHaveLength(3);
      expect(resumed.history.map((h) => [h.trainLoss, h.validationLoss])).toEqual(
        whole.history.map((h) => [h.trainLoss, h.validationLoss]),
      );
      const values = (c: Classifier) => new Map(c.module.namedParameters().map(([n, t]) => [n, Array.from(t.toArray() as Float32Array)]));
      const a = values(whole.classifier);
      const b = values(resumed.classifier);
      expect([...b.keys()]).toEqual([...a.keys()]);
      expect(a.has('head.label_decoder.bias')).toBe(true);
      for (const [key, v] of a) expect(b.get(key), key).toEqual(v);
    } finally {
      whole.classifier.dispose();
      resumed.classifier.dispose();
    }
  }, 300_000);

  it("frozen trains only the MLM head's transform, from the mask row's cached features", async () => {
    const { train } = await import('../lib/classification/trainer.js');
    const validationData = { texts: REVIEWS.map((r) => r[0]), labels: REVIEWS.map((r) => r[1]) };
    const result = await train({
      ...PROMPT,
      data,
      validationData,
      encoder: bertDir,
      technique: 'frozen',
      epochs: 2,
      batchSize: 8,
      maxLength: 24,
      learningRate: 1e-2,
      device: 'cpu',
    });
    const zero = await zeroShot();
    try {
      const before = new Map(zero.module.namedParameters().map(([n, t]) => [n, Array.from(t.toArray() as Float32Array)]));
      const after = result.classifier.module.namedParameters();
      const changed = after
        .filter(([n, t]) => {
          const was = before.get(n)!;
          return (t.toArray() as Float32Array).some((x, i) => x !== was[i]);
        })
        .map(([n]) => n)
        .sort();
      expect(changed).toEqual([
        'head.transform.LayerNorm.bias',
        'head.transform.LayerNorm.weight',
        'head.transform.dense.bias',
        'head.transform.dense.weight',
      ]);
      expect(result.trainableParameters).toBe(32 * 32 + 32 + 32 + 32);
      // The validation loss was computed on the cached features; the whole model (encoder, the
      // mask row, the head) on the same texts gives the same loss only if the cache holds the mask row.
      const whole = await result.classifier.evaluate(validationData);
      expect(whole.loss).toBeCloseTo(result.best.validationLoss, 5);
      expect(whole.accuracy).toBeCloseTo(result.best.validationAccuracy!, 10);
    } finally {
      zero.dispose();
      result.classifier.dispose();
    }
  }, 240_000);
});

describe('text pairs', () => {
  it("train reads textPairColumn; the saved classifier's evaluate() applies {text_a}/{text_b} as Python's torch.jit.load sees them", async () => {
    const pairs = [
      ['A wonderful film.', 'It was great.', 'yes'],
      ['A wonderful film.', 'It was dull.', 'no'],
      ['Dull and long.', 'It was boring.', 'yes'],
      ['Dull and long.', 'It was great fun.', 'no'],
    ];
    const csv = join(work, 'pairs.csv');
    const rows = Array.from({ length: 16 }, (_, i) => pairs[i % 4]!);
    writeFileSync(csv, `premise,hypothesis,label\n${rows.map(([a, b, l]) => `"${a}","${b}",${l}`).join('\n')}\n`);
    const outDir = join(work, 'pairs');
    const c = await trainedFromDisk({
      head: 'prompt',
      template: '{text_a} ? [MASK] , {text_b}',
      verbalizer: ['yes=yes', 'no=no'],
      data: { csv, textColumn: 'premise', labelColumn: 'label' },
      textPairColumn: 'hypothesis',
      encoder: bertDir,
      technique: 'frozen',
      epochs: 1,
      batchSize: 4,
      maxLength: 20,
      outDir,
      device: 'cpu',
    });
    try {
      expect(c.config.textPairColumn).toBe('hypothesis');
      const evaluated = await c.evaluate(csv);
      const encoded = PromptEncoder.fromConfig(c.tokenizer, c.config.prompt!).encode(
        rows.map((r) => r[0]!),
        rows.map((r) => r[1]!),
        c.config.maxLength,
      );
      const logProbabilities = await pythonLogProbabilities(join(outDir, 'classifier.pt'), encoded);
      const python = -logProbabilities.reduce((sum, row, i) => sum + row[rows[i]![2] === 'yes' ? 0 : 1]!, 0) / rows.length;
      expect(evaluated.examples).toBe(16);
      expect(evaluated.loss).toBeCloseTo(python, 5);
      const predicted = await c.predict(
        rows.map((r) => r[0]!),
        { pairs: rows.map((r) => r[1]!) },
      );
      const nll = -predicted.reduce((sum, p, i) => sum + Math.log(p.probabilities[rows[i]![2]!]!), 0) / rows.length;
      expect(nll).toBeCloseTo(python, 5);
      // torch-bert predict --data reads the pair column the classifier was trained on, as eval does
      // (it refused: 'give a second text for each example').
      const { stdout } = await exec(process.execPath, [cli, 'predict', '--classifier', outDir, '--data', csv, '--json']);
      const printed = stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { text: string; probabilities: Record<string, number> });
      expect(printed.map((p) => p.text)).toEqual(rows.map((r) => r[0]!));
      expectClose(
        printed.map((p) => c.labels.map((l) => p.probabilities[l]!)),
        predicted.map((p) => c.labels.map((l) => p.probabilities[l]!)),
        1e-6,
      );
      // For people, the table shows both texts of each pair (it showed the first alone).
      const table = (await exec(process.execPath, [cli, 'predict', '--classifier', outDir, '--data', csv])).stdout;
      expect(table.split('\n')[0]).toMatch(/ {2}text \| second text$/);
      expect(table).toContain(`${rows[0]![0]} | ${rows[0]![1]}\n`);
      // The rows hold both texts around the template: [CLS] a ? [MASK] , b [SEP].
      const first = Array.from(encoded.inputIds.subarray(0, encoded.lengths[0]!));
      expect(first).toEqual(c.tokenizer.encodeOne('A wonderful film. ? [MASK] , It was great.', 20));
    } finally {
      c.dispose();
    }
  }, 240_000);
});

describe('the CLI', () => {
  it('predict --model --template --verbalizer --json prints the zero-shot probabilities by label; eval reads the CSV', async () => {
    const args = [
      '--model',
      bertDir,
      '--template',
      '{text} It was [MASK].',
      '--verbalizer',
      'neg=bad',
      '--verbalizer',
      'pos=good',
      '--max-length',
      '24',
    ];
    const { stdout } = await exec(process.execPath, [cli, 'predict', ...args, '--device', 'cpu', '--json', ...TEXTS.slice(0, 2)]);
    const lines = stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { text: string; label: string; probabilities: Record<string, number> });
    const c = await promptClassifier({
      model: bertDir,
      template: '{text} It was [MASK].',
      verbalizer: ['neg=bad', 'pos=good'],
      maxLength: 24,
      device: 'cpu',
    });
    try {
      const api = await c.predict(TEXTS.slice(0, 2));
      expect(lines.map((l) => l.text)).toEqual(TEXTS.slice(0, 2));
      lines.forEach((l, i) => {
        expect(l.label).toBe(api[i]!.label);
        expect(Object.keys(l.probabilities)).toEqual(['neg', 'pos']);
        expect(Math.abs(l.probabilities.pos! - api[i]!.probabilities.pos!)).toBeLessThan(1e-6);
      });
      const csv = join(work, 'cli-eval.csv');
      writeFileSync(csv, `review,sentiment\n"${TEXTS[0]}",pos\n"${TEXTS[1]}",neg\n`);
      const ev = await exec(process.execPath, [
        cli,
        'eval',
        ...args,
        '--data',
        csv,
        '--text-column',
        'review',
        '--label-column',
        'sentiment',
        '--device',
        'cpu',
        '--json',
      ]);
      const result = JSON.parse(ev.stdout) as { examples: number; accuracy: number };
      expect(result.examples).toBe(2);
      expect(result.accuracy).toBe(((api[0]!.label === 'pos' ? 1 : 0) + (api[1]!.label === 'neg' ? 1 : 0)) / 2);
      // --template without --model is a usage error (exit code 2).
      await expect(exec(process.execPath, [cli, 'predict', '--classifier', work, '--template', 'x', 'text'])).rejects.toMatchObject({
        code: 2,
      });
    } finally {
      c.dispose();
    }
  }, 120_000);
});

describe("buildClassifier's head 'prompt'", () => {
  it('refuses a missing MLM head, a label id per class missing, and ids outside the vocabulary', async () => {
    const { loadBinding } = await import('../lib/addon/loader.js');
    const b = loadBinding();
    const spec = { numClasses: 2, headHidden: 1, dropout: 0, pooling: 'cls' as const, seed: 0, head: 'prompt' as const, maskTokenId: 4 };
    await withMlmSource(bertDir, async (loaded) => {
      expect(() => b.buildClassifier(loaded.module, { ...spec, labelTokenIds: [5, 6] })).toThrow(/mlmHead/);
      expect(() => b.buildClassifier(loaded.module, { ...spec, mlmHead: loaded.mlmHead!, labelTokenIds: [5] })).toThrow(
        /labelTokenIds must hold numClasses ids/,
      );
      expect(() => b.buildClassifier(loaded.module, { ...spec, mlmHead: loaded.mlmHead!, labelTokenIds: [5, 589] })).toThrow(
        /label token id 589 is outside the MLM head's vocabulary of 589/,
      );
      expect(() => b.buildClassifier(loaded.module, { ...spec, mlmHead: loaded.module, labelTokenIds: [5, 6] })).toThrow(
        /BertOnlyMLMHead|RobertaLMHead/,
      );
      // The decoder weight is the encoder's word embedding tensor: read in the graph, not copied.
      const { module } = b.buildClassifier(loaded.module, { ...spec, mlmHead: loaded.mlmHead!, labelTokenIds: [5, 6] });
      expect(headParameterNames(module)).toEqual([
        'head.transform.dense.weight',
        'head.transform.dense.bias',
        'head.transform.LayerNorm.weight',
        'head.transform.LayerNorm.bias',
        'head.label_decoder.bias',
      ]);
      module.dispose();
    });
  }, 120_000);
});

/**
 * One accumulate-only step of the prompt classifier on a labelled batch, against the Python
 * reference's loss and gradients (the MLM head over every position, cross-entropy over the label
 * words' logits at the mask): the decoder bias's label rows and the transform's parameters.
 */
async function expectPromptGradients(dir: string, template: string, verbalizer: string[], headPrefix: string): Promise<void> {
  const { loadBinding } = await import('../lib/addon/loader.js');
  const { preparePrompt } = await import('../lib/classification/prompt-classifier.js');
  const { promptSpec } = await import('../lib/data/prompt-template.js');
  const b = loadBinding();
  await withMlmSource(dir, async (loaded) => {
    const { mlmHead, prompt } = await preparePrompt(loaded, template, verbalizer);
    const { module } = b.buildClassifier(loaded.module, promptSpec(mlmHead, prompt.config));
    try {
      const params = module.namedParameters();
      for (const [, t] of params) t.setRequiresGrad(true);
      const optimizer = new b.AdamW([{ params: params.map(([, t]) => t), lr: 0 }]);
      const encoded = prompt.encode(TEXTS, null, 24);
      const labels = Int32Array.from(TEXTS, (_, i) => i % verbalizer.length);
      module.train(false);
      const result = await b.trainStep(
        module,
        optimizer,
        { inputIds: encoded.inputIds, attentionMask: encoded.attentionMask, batchSize: encoded.count, seqLen: encoded.seqLen, labels },
        { accumulateOnly: true },
      );
      optimizer.dispose();
      const ref = JSON.parse(
        await runPython(
          'scripts/python/prompt_reference.py',
          [dir],
          JSON.stringify({
            input_ids: asRows(encoded.inputIds, encoded.seqLen),
            attention_mask: asRows(encoded.attentionMask, encoded.seqLen),
            mask_id: prompt.config.maskTokenId,
            label_ids: prompt.config.labelTokenIds,
            labels: Array.from(labels),
          }),
        ),
      ) as { loss: number; label_bias_grad: number[]; grads: Record<string, number[]> };
      expect(Math.abs(result.loss - ref.loss)).toBeLessThan(1e-5);
      const grad = (name: string) => {
        const found = params.find(([n]) => n === name);
        expect(found, name).toBeDefined();
        return Array.from(found![1].grad()!.toArray() as Float32Array);
      };
      const worst = (a: number[], e: number[]) => {
        expect(a.length).toBe(e.length);
        return Math.max(...a.map((x, i) => Math.abs(x - e[i]!)));
      };
      const biasGrad = grad('head.label_decoder.bias');
      expect(worst(biasGrad, ref.label_bias_grad)).toBeLessThan(1e-5);
      // Not trivially zero: the rows get a gradient of the size of the loss's.
      expect(Math.max(...biasGrad.map(Math.abs))).toBeGreaterThan(1e-3);
      const transform = Object.keys(ref.grads);
      expect(transform.length).toBeGreaterThanOrEqual(4);
      for (const name of transform) {
        expect(worst(grad(`head.${name.slice(headPrefix.length)}`), ref.grads[name]!), name).toBeLessThan(1e-5);
      }
    } finally {
      module.dispose();
    }
  });
}

describe("the label words' decoder bias rows", () => {
  it("are a head parameter whose gradient (and the transform's, and the loss) equal the Python reference (BERT)", async () => {
    await expectPromptGradients(bertDir, '{text} It was [MASK].', ['neg=bad', 'pos=good', 'neutral=film'], 'predictions.');
  }, 120_000);
});

describe('DistilBERT', () => {
  let distilDir: string;
  beforeAll(async () => {
    distilDir = (await makeHfFolder({ ...SIZE, layout: 'distilbert' })).dir;
  }, 240_000);

  it("zero-shot: vocab_transform, activation, vocab_layer_norm, vocab_projector's label rows (Python reference)", async () => {
    const c = await promptClassifier({
      model: distilDir,
      template: 'Review: {text} It was [MASK].',
      verbalizer: ['negative=bad', 'positive=good', 'neutral=film'],
      maxLength: 24,
      device: 'cpu',
    });
    try {
      expect(c.config.encoder.source).toMatchObject({ family: 'distilbert' });
      const { ref } = await expectReferenceProbabilities(distilDir, c);
      expect(new Set(ref.probabilities.map((r) => r[0]!.toFixed(6))).size).toBeGreaterThan(1);
      expect(headParameterNames(c.module)).toEqual([
        'head.vocab_transform.weight',
        'head.vocab_transform.bias',
        'head.vocab_layer_norm.weight',
        'head.vocab_layer_norm.bias',
        'head.label_decoder.bias',
      ]);
    } finally {
      c.dispose();
    }
  }, 120_000);

  it('the loss and the gradients of the head (label bias rows included) equal the Python reference', async () => {
    await expectPromptGradients(distilDir, '{text} It was [MASK].', ['neg=bad', 'pos=good'], '');
  }, 120_000);

  it("train --head prompt --technique full: classifier.pt run by Python's torch.jit.load equals predict; the head trained", async () => {
    const csv = join(work, 'distil-train.csv');
    const reviews = [
      ['A wonderful film, great acting.', 'pos'],
      ['Dull, long and badly acted.', 'neg'],
      ['I loved every minute of it.', 'pos'],
      ['A terrible waste of time.', 'neg'],
    ];
    writeFileSync(csv, `text,label\n${Array.from({ length: 16 }, (_, i) => `"${reviews[i % 4]![0]}",${reviews[i % 4]![1]}`).join('\n')}\n`);
    const out = join(work, 'distil-full');
    // biome-ignore format: one flag and its value per line
    await exec(process.execPath, [cli, 'train', '--data', csv, '--model', distilDir, '--head', 'prompt',
      '--template', '{text} It was [MASK].', '--verbalizer', 'neg=bad', '--verbalizer', 'pos=good', '--technique', 'full',
      '--epochs', '2', '--batch-size', '4', '--max-length', '24', '--lr', '1e-3', '--device', 'cpu', '--out', out, '--json']);
    const { loadClassifier } = await import('../lib/classification/classifier.js');
    const c = await loadClassifier(out, { device: 'cpu' });
    try {
      expect(c.config.head).toBe('prompt');
      await expectTorchJitProbabilities(c, out);
      const bias = Array.from(parameter(c.module, 'head.label_decoder.bias'));
      const checkpoint = await checkpointRows(distilDir, 'vocab_projector.bias', c.config.prompt!.labelTokenIds);
      expect(Math.min(...bias.map((x, i) => Math.abs(x - checkpoint[i]!)))).toBeGreaterThan(1e-5);
    } finally {
      c.dispose();
    }
  }, 240_000);
});

describe('an untied decoder', () => {
  // A checkpoint whose decoder is not the word embeddings (the BERT folder with its own decoder weight).
  const dir = () => join(work, 'untied');
  beforeAll(async () => {
    const { cpSync } = await import('node:fs');
    cpSync(bertDir, dir(), { recursive: true });
    await runPython('-c', [
      `import sys, torch
sys.path.insert(0, "scripts/python")
from safetensors_io import read_safetensors, write_safetensors
path = sys.argv[1] + "/model.safetensors"
t, meta = read_safetensors(path)
words = t["bert.embeddings.word_embeddings.weight"]
t["cls.predictions.decoder.weight"] = 0.2 * torch.randn(words.shape, generator=torch.Generator().manual_seed(5))
write_safetensors(path, t, meta)`,
      dir(),
    ]);
  }, 120_000);

  it("a checkpoint whose decoder is not the word embeddings: the label words' own rows (Python reference)", async () => {
    const c = await promptClassifier({
      model: dir(),
      template: '{text} It was [MASK].',
      verbalizer: ['neg=bad', 'pos=good'],
      maxLength: 24,
      device: 'cpu',
    });
    try {
      const { ref } = await expectReferenceProbabilities(dir(), c);
      // Not the tied model's numbers.
      const tied = await reference(bertDir, c, TEXTS);
      expect(Math.abs(tied.probabilities[0]![0]! - ref.probabilities[0]![0]!)).toBeGreaterThan(1e-4);
    } finally {
      c.dispose();
    }
  }, 120_000);

  it('full trains its label rows (head.label_decoder.weight), lora leaves them; the export writes them into the decoder (Python reference)', async () => {
    const texts = Array.from({ length: 16 }, (_, i) => TEXTS[i % 3]!);
    const labels = Array.from({ length: 16 }, (_, i) => (i % 3 === 1 ? 'neg' : 'pos'));
    const rowsOf = (name: string, ids: number[]) => checkpointRows(dir(), name, ids);
    for (const technique of ['full', 'lora'] as const) {
      const outDir = join(work, `untied-${technique}`);
      const c = await trainedFromDisk({
        head: 'prompt',
        template: '{text} It was [MASK].',
        verbalizer: ['neg=bad', 'pos=good'],
        data: { texts, labels },
        encoder: dir(),
        technique,
        epochs: 1,
        batchSize: 4,
        maxLength: 24,
        learningRate: 1e-3,
        outDir,
        device: 'cpu',
      });
      try {
        const ids = c.config.prompt!.labelTokenIds;
        const weight = Array.from(parameter(c.module, 'head.label_decoder.weight'));
        const checkpoint = (await rowsOf('cls.predictions.decoder.weight', ids)).flat() as unknown as number[];
        expect(weight).toHaveLength(2 * 32);
        const moved = Math.max(...weight.map((x, i) => Math.abs(x - Math.fround(checkpoint[i]!))));
        if (technique === 'lora') {
          expect(moved).toBe(0);
          continue;
        }
        expect(moved).toBeGreaterThan(1e-5);
        const exported = join(work, 'untied-full-export');
        await exec(process.execPath, [cli, 'export', '--classifier', outDir, '--out', exported]);
        await expectReferenceProbabilities(exported, c);
        const written = (await checkpointRows(exported, 'cls.predictions.decoder.weight', ids)).flat() as unknown as number[];
        expect(written.map((x) => Math.fround(x))).toEqual(weight);
      } finally {
        c.dispose();
      }
    }
  }, 240_000);
});

describe('one rule for the mask token', () => {
  it("TextTokenizer.maskToken: the folder's named mask_token, else the one special token named like a mask; masking and prompting agree", async () => {
    const { cpSync } = await import('node:fs');
    const { loadFolderTokenizer } = await import('../lib/models/wordpiece-vocab.js');
    for (const [dir, token] of [
      [bertDir, '[MASK]'],
      [robertaDir, '<mask>'],
    ] as const) {
      const tok = await loadFolderTokenizer(dir, ['tokenizer.json']);
      expect(tok.maskToken()).toEqual({ token, id: tok.tokenId(token) });
      expect(tok.maskingVocabulary().maskId).toBe(tok.tokenId(token));
    }
    // A tokenizer.json with two special tokens named like a mask: the folder must say which.
    const dir = join(work, 'two-masks');
    cpSync(bertDir, dir, { recursive: true });
    const json = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as { added_tokens: Array<Record<string, unknown>> };
    json.added_tokens.push({
      id: 7,
      content: '[unused_mask]',
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    });
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(json));
    rmSync(join(dir, 'special_tokens_map.json'), { force: true });
    rmSync(join(dir, 'tokenizer_config.json'), { force: true });
    const ambiguous = await loadFolderTokenizer(dir, ['tokenizer.json']);
    expect(() => ambiguous.maskToken()).toThrow(
      expect.objectContaining({ code: 'NO_MASK_TOKEN', message: expect.stringMatching(/several/) }),
    );
    expect(ambiguous.maskingVocabulary().maskId).toBeNull();
    writeFileSync(join(dir, 'special_tokens_map.json'), JSON.stringify({ mask_token: { content: '[unused_mask]' } }));
    const named = await loadFolderTokenizer(dir, ['tokenizer.json']);
    expect(named.maskToken()).toEqual({ token: '[unused_mask]', id: 7 });
    expect(named.maskingVocabulary().maskId).toBe(7);
    // Prompting reads the same answer: the template's mask is the named token.
    const { preparePrompt } = await import('../lib/classification/prompt-classifier.js');
    await withMlmSource(dir, async (loaded) => {
      await expect(preparePrompt(loaded, '{text} It was [MASK].', ['neg=bad', 'pos=good'])).rejects.toMatchObject({
        code: 'TEMPLATE_MASK',
      });
      const { prompt, mlmHead } = await preparePrompt(loaded, '{text} It was [unused_mask].', ['neg=bad', 'pos=good']);
      expect(prompt.config.maskTokenId).toBe(7);
      expect(mlmHead).toBe(loaded.mlmHead);
    });
  }, 120_000);
});

describe('the CLI: train --head prompt', () => {
  it('--head prompt --template --verbalizer --few-shot --text-pair-column train a prompt classifier; predict --classifier refuses a TEXT alone for its pair template', async () => {
    const csv = join(work, 'cli-pairs.csv');
    const rows = Array.from({ length: 24 }, (_, i) =>
      i % 2 ? ['Dull and long.', 'It was great.', 'no'] : ['A wonderful film.', 'It was great.', 'yes'],
    );
    writeFileSync(csv, `a,b,label\n${rows.map((r) => r.map((x) => `"${x}"`).join(',')).join('\n')}\n`);
    const out = join(work, 'cli-train');
    // biome-ignore format: one flag and its value per line
    await exec(process.execPath, [cli, 'train', '--data', csv, '--text-column', 'a', '--text-pair-column', 'b',
      '--model', bertDir, '--head', 'prompt', '--template', '{text_a} ? [MASK] , {text_b}', '--verbalizer', 'yes=yes', '--verbalizer', 'no=no',
      '--technique', 'frozen', '--few-shot', '4', '--epochs', '1', '--batch-size', '4', '--max-length', '20', '--device', 'cpu', '--out', out, '--json']);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as {
      head: string;
      prompt: { template: string; labelTokenIds: number[] };
      textPairColumn: string;
      hyperparameters: { fewShot: number };
      labels: string[];
    };
    expect(config.head).toBe('prompt');
    expect(config.labels).toEqual(['yes', 'no']);
    expect(config.prompt.template).toBe('{text_a} ? [MASK] , {text_b}');
    expect(config.textPairColumn).toBe('b');
    expect(config.hyperparameters.fewShot).toBe(4);
    // A pair template needs a second text, which predict's TEXT arguments do not give: a clear error.
    await expect(exec(process.execPath, [cli, 'predict', '--classifier', out, '--device', 'cpu', 'x'])).rejects.toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/text_a/),
    });
    // Its export needs the base folder's decoder: a base folder since moved is named as gone (the
    // message once was the loader's bare '<path>: no such file or folder').
    const moved = join(work, 'cli-train-moved-base');
    cpSync(out, moved, { recursive: true });
    const movedConfig = JSON.parse(readFileSync(join(moved, 'config.json'), 'utf8'));
    const gone = join(work, 'base-moved-away');
    movedConfig.encoder.source.dir = gone;
    writeFileSync(join(moved, 'config.json'), JSON.stringify(movedConfig));
    const { exportHuggingFace } = await import('../lib/export/export.js');
    await expect(exportHuggingFace({ classifier: moved, out: join(work, 'cli-train-moved-hf') })).rejects.toThrow(
      `the rest comes from the base model folder it was trained on, which (${gone}) is gone`,
    );
  }, 180_000);
});

/** Class log-probabilities of `encoded`'s rows by classifier.pt in Python's torch.jit.load (nothing of torch-bert). */
async function pythonLogProbabilities(classifierPt: string, encoded: EncodedTexts): Promise<number[][]> {
  const script = `import json, sys, torch
m = torch.jit.load(sys.argv[1]).eval()
d = json.loads(sys.stdin.read())
with torch.no_grad():
    out = m(torch.tensor(d["ids"]), torch.tensor(d["mask"]))
print(json.dumps(out.tolist()))`;
  const output = await runPython(
    '-c',
    [script, classifierPt],
    JSON.stringify({ ids: asRows(encoded.inputIds, encoded.seqLen), mask: asRows(encoded.attentionMask, encoded.seqLen) }),
  );
  return JSON.parse(output) as number[][];
}

function parameter(module: { namedParameters(): Array<[string, { toArray(): unknown }]> }, name: string): Float32Array {
  const found = module.namedParameters().find(([n]) => n === name);
  if (!found) throw new Error(`no parameter ${name}`);
  return found[1].toArray() as Float32Array;
}

/** Rows `ids` of the checkpoint tensor `name` in `dir`/model.safetensors, read by Python. */
async function checkpointRows(dir: string, name: string, ids: number[]): Promise<number[]> {
  const script = `import json, sys
sys.path.insert(0, "scripts/python")
from safetensors_io import read_safetensors
t, _ = read_safetensors(sys.argv[1] + "/model.safetensors")
print(json.dumps(t[sys.argv[2]].float()[json.loads(sys.argv[3])].tolist()))`;
  return JSON.parse(await runPython('-c', [script, dir, name, JSON.stringify(ids)])) as number[];
}
