/**
 * Token classification against an independent reference: trainTokenClassifier() on tagged
 * sentences (CoNLL for training, JSON Lines for validation) equals run_ner.py's fine-tuning of
 * BertForTokenClassification written out in plain PyTorch
 * (test/python/token_classification_reference.py: its own WordPiece alignment, the encoder's math,
 * cross-entropy with -100 off the words' first tokens) batch by batch; the folder it keeps is a
 * BertForTokenClassification folder the reference reads back and predicts alike; the loaded
 * classifier evaluates and predicts as validation did.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadBinding } from '../lib/addon/loader.js';
import { TextTokenizer } from '../lib/data/tokenizer.js';
import { encodeWords, sentenceWindows, splitWords, tokenSpans, wordIds } from '../lib/data/word-alignment.js';
import { type TaggedWords, TokenClassifier } from '../lib/tagging/token-classifier.js';
import { type TokenTrainResult, trainTokenClassifier } from '../lib/tagging/token-trainer.js';
import type { BatchEvent } from '../lib/training/options.js';
import { demoTokenizer, makeHfFolder, runPython } from './fixtures.js';
import { FakeHub } from './helpers/hub-server.js';

const TAGS = ['B-LOC', 'B-PER', 'I-LOC', 'I-PER', 'O'];
const FILLER = ['the', 'movie', 'was', 'great', 'plot', 'boring', 'film', 'good', 'bad', 'story', 'and', 'really', ',', '.', ';', 'at'];
const PEOPLE = [['actors'], ['villain', 'laughing'], ['director']];
const PLACES = [['cinema'], ['theater', 'downtown'], ['city']];

/** `n` sentences of filler words with one to three people and places among them (a seeded LCG: the same every run). */
function sentences(n: number, seed: number): { words: string[][]; tags: string[][] } {
  let state = seed;
  const next = (k: number) => {
    state = (state * 1103515245 + 12345) % 2147483648;
    // The high bits: an LCG's low bits cycle (the lowest alternates), which a model would learn instead of the words.
    return Math.floor(state / 65536) % k;
  };
  const words: string[][] = [];
  const tags: string[][] = [];
  for (let i = 0; i < n; i++) {
    const w: string[] = [];
    const t: string[] = [];
    const filler = (count: number) => {
      for (let k = 0; k < count; k++) {
        w.push(FILLER[next(FILLER.length)]!);
        t.push('O');
      }
    };
    const entity = (choices: string[][], type: string) => {
      const e = choices[next(choices.length)]!;
      e.forEach((word, k) => {
        w.push(word);
        t.push(`${k === 0 ? 'B' : 'I'}-${type}`);
      });
    };
    filler(1 + next(3));
    for (let e = 1 + next(3); e > 0; e--) {
      if (next(2) === 0) entity(PEOPLE, 'PER');
      else entity(PLACES, 'LOC');
      filler(1 + next(2));
    }
    words.push(w);
    tags.push(t);
  }
  return { words, tags };
}

const conll = (s: { words: string[][]; tags: string[][] }) =>
  '-DOCSTART- -X- -X- O\n\n' + s.words.map((w, i) => w.map((word, k) => `${word} NN O ${s.tags[i]![k]}`).join('\n')).join('\n\n') + '\n';
const jsonl = (s: { words: string[][]; tags: string[][] }) =>
  s.words.map((w, i) => JSON.stringify({ tokens: w, ner_tags: s.tags[i]!.map((t) => TAGS.indexOf(t)) })).join('\n') + '\n';

interface Reference {
  rows: { train: number[][]; trainLabels: number[][] };
  batchLosses: number[];
  epochs: Array<{ epoch: number; validationLoss: number; validationAccuracy: number; predictions: number[][] }>;
  classifier: { weight: number[][]; bias: number[] };
}

const RUN = { epochs: 2, batchSize: 4, learningRate: 5e-4, weightDecay: 0.01, seed: 7, maxGradNorm: 1, maxLength: 16 };

describe('token classification (trainTokenClassifier, TokenClassifier)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'torch-bert-ner-'));
  const train = sentences(22, 1);
  const validation = sentences(6, 2);
  let folder: string;
  let result: TokenTrainResult;
  let reference: Reference;
  const batches: BatchEvent[] = [];

  beforeAll(async () => {
    folder = (
      await makeHfFolder({ layout: 'automodel', tokenizer: 'json', layers: 2, hidden: 32, heads: 4, intermediate: 64, dropout: 0, seed: 3 })
    ).dir;
    writeFileSync(join(dir, 'train.conll'), conll(train));
    writeFileSync(join(dir, 'validation.jsonl'), jsonl(validation));
    const job = {
      folder,
      train: { words: train.words, tags: train.tags.map((t) => t.map((tag) => TAGS.indexOf(tag))) },
      validation: { words: validation.words, tags: validation.tags.map((t) => t.map((tag) => TAGS.indexOf(tag))) },
      numLabels: TAGS.length,
      epochs: RUN.epochs,
      batchSize: RUN.batchSize,
      lr: RUN.learningRate,
      weightDecay: RUN.weightDecay,
      betas: [0.9, 0.999],
      eps: 1e-8,
      seed: RUN.seed,
      maxGradNorm: RUN.maxGradNorm,
      maxLength: RUN.maxLength,
      initializerRange: 0.02,
    };
    [reference, result] = await Promise.all([
      runPython('test/python/token_classification_reference.py', [], JSON.stringify(job)).then((out) => JSON.parse(out) as Reference),
      trainTokenClassifier({
        model: folder,
        data: join(dir, 'train.conll'),
        validationData: join(dir, 'validation.jsonl'),
        labels: TAGS,
        outDir: join(dir, 'out'),
        schedule: 'constant',
        threads: 1,
        ...RUN,
        onProgress: (e) => {
          if (e.type === 'batch') batches.push(e);
        },
      }),
    ]);
  }, 300_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("aligns each word's tag to its first token as run_ner.py does", async () => {
    const tokenizer = await TextTokenizer.load(join(folder, 'tokenizer.json'));
    const rows = encodeWords(tokenizer, train.words, RUN.maxLength);
    const ids = Array.from({ length: rows.encoded.count }, (_, r) =>
      Array.from(rows.encoded.inputIds.subarray(r * rows.encoded.seqLen, r * rows.encoded.seqLen + rows.encoded.lengths[r]!)),
    );
    expect(ids).toEqual(reference.rows.train);
    // The reference's labelled positions are exactly the words' first tokens.
    const labelled = reference.rows.trainLabels.map((labels) => labels.flatMap((l, k) => (l >= 0 ? [k] : [])));
    expect(rows.firstTokens.map((f) => Array.from(f).filter((k) => k >= 0))).toEqual(labelled);
    // Some word is split into several pieces, so first-token alignment is exercised.
    expect(ids.some((row, r) => row.length - 2 > train.words[r]!.length)).toBe(true);
  });

  it('trains batch by batch as the PyTorch reference of BertForTokenClassification', () => {
    expect(batches.length).toBe(reference.batchLosses.length);
    batches.forEach((b, i) => {
      expect(b.loss).toBeCloseTo(reference.batchLosses[i]!, 4);
    });
    expect(result.history.map((h) => h.validationLoss)).toEqual(reference.epochs.map((e) => expect.closeTo(e.validationLoss, 4)));
    expect(result.history.map((h) => h.validationAccuracy)).toEqual(reference.epochs.map((e) => e.validationAccuracy));
    // Learned something: the last epoch's validation loss is below the first batch's.
    expect(reference.epochs.at(-1)!.validationLoss).toBeLessThan(reference.batchLosses[0]!);
  });

  it('keeps a BertForTokenClassification folder that the reference reads and predicts alike', async () => {
    const config = JSON.parse(readFileSync(join(dir, 'out', 'config.json'), 'utf8'));
    expect(config.architectures).toEqual(['BertForTokenClassification']);
    expect(config.id2label).toEqual(Object.fromEntries(TAGS.map((t, i) => [String(i), t])));
    expect(config.label2id).toEqual(Object.fromEntries(TAGS.map((t, i) => [t, i])));
    const weights = loadBinding().readSafetensors(join(dir, 'out', 'model.safetensors')).tensors;
    try {
      const kept = Object.fromEntries(weights.map(([n, t]) => [n, t]));
      const best = result.best.epoch;
      if (best === RUN.epochs) {
        const weight = Array.from(kept['classifier.weight']!.toArray() as Float32Array);
        weight.forEach((w, i) => {
          expect(w).toBeCloseTo(reference.classifier.weight[Math.floor(i / 32)]![i % 32]!, 4);
        });
      }
    } finally {
      for (const [, t] of weights) t.dispose();
    }
    const classifier = await TokenClassifier.load(join(dir, 'out'), { device: 'cpu' });
    try {
      // A sentence longer than maxLength is read in windows of whole words: the reference
      // predicts each window alone (none is cut), and a sentence's windows add up to its words.
      const tokenizer = await TextTokenizer.load(join(folder, 'tokenizer.json'));
      const { windows, from } = sentenceWindows(tokenizer, validation.words, RUN.maxLength);
      expect(windows.length).toBeGreaterThan(validation.words.length);
      // Each aggregation of a word's tokens, as transformers' pipeline reads them.
      let tagged: TaggedWords[] = [];
      for (const aggregation of ['average', 'max', 'first'] as const) {
        tagged = await classifier.predict(validation.words, { aggregation });
        const theirs = JSON.parse(
          await runPython(
            'test/python/token_classification_reference.py',
            [],
            JSON.stringify({ mode: 'predict', folder: join(dir, 'out'), sentences: windows, maxLength: RUN.maxLength, aggregation }),
          ),
        ) as { probabilities: Array<Array<number[] | null>> };
        const stitched = validation.words.map((_, s) =>
          windows.flatMap((__, i) => (from[i]!.sentence === s ? theirs.probabilities[i]! : [])),
        );
        tagged.forEach((sentence, s) => {
          expect(sentence.tags).toHaveLength(validation.words[s]!.length);
          sentence.tags.forEach((tag, w) => {
            const p = stitched[s]![w]!;
            const c = p.indexOf(Math.max(...p));
            expect(tag, `${aggregation}: sentence ${s}, word ${w}`).toBe(TAGS[c]);
            expect(sentence.scores[w]).toBeCloseTo(p[c]!, 5);
          });
        });
      }
      // The kept epoch's predictions, as the reference made them at that epoch (a sentence that
      // fits: the others were cut there, run_ner.py's way, and are windows here).
      const whole = validation.words.map((_, s) => from.filter((f) => f.sentence === s).length === 1);
      const predicted = tagged.map((s) => s.tags.map((t) => TAGS.indexOf(t!)));
      expect(predicted.filter((_, s) => whole[s])).toEqual(reference.epochs[result.best.epoch - 1]!.predictions.filter((_, s) => whole[s]));
      const metrics = await classifier.evaluate(join(dir, 'validation.jsonl'));
      expect(metrics.loss).toBeCloseTo(result.best.validationLoss, 5);
      expect(metrics.accuracy).toBe(result.best.validationAccuracy);
      // The same scores (the loss within rounding: batches of 32, not validation's 4).
      expect(metrics).toEqual({ ...result.metrics, loss: expect.closeTo(result.metrics!.loss, 5) });
    } finally {
      classifier.dispose();
    }
  });

  it('loads the kept folder as a Hub id (org/name, a loopback Hub, the Hugging Face cache) as it loads the folder', async () => {
    const hub = new FakeHub();
    await hub.start();
    const saved = { cache: process.env.HF_HUB_CACHE, endpoint: process.env.HF_ENDPOINT };
    try {
      process.env.HF_HUB_CACHE = join(dir, 'hub-cache');
      process.env.HF_ENDPOINT = hub.url;
      const files = Object.fromEntries(
        readdirSync(join(dir, 'out'), { withFileTypes: true })
          .filter((f) => f.isFile() && !f.name.startsWith('.'))
          .map((f) => [f.name, readFileSync(join(dir, 'out', f.name))]),
      );
      const commit = 'c'.repeat(40);
      hub.repos.set('org/tiny-ner', { commits: { [commit]: files }, refs: { main: commit } });
      const [fromHub, fromFolder] = await Promise.all([
        TokenClassifier.load('org/tiny-ner', { device: 'cpu' }),
        TokenClassifier.load(join(dir, 'out'), { device: 'cpu' }),
      ]);
      try {
        expect(fromHub.labels).toEqual(TAGS);
        expect(fromHub.maxLength).toBe(RUN.maxLength);
        expect(await fromHub.predict(validation.words)).toEqual(await fromFolder.predict(validation.words));
      } finally {
        fromHub.dispose();
        fromFolder.dispose();
      }
      // The snapshot sits in the cache as huggingface_hub lays it out.
      expect(readdirSync(join(dir, 'hub-cache', 'models--org--tiny-ner', 'snapshots'))).toEqual([commit]);
    } finally {
      for (const [key, value] of [
        ['HF_HUB_CACHE', saved.cache],
        ['HF_ENDPOINT', saved.endpoint],
      ] as const) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
      await hub.stop();
    }
  });

  it('learns the tags, and finds the entities of new texts with their characters', async () => {
    const out = join(dir, 'learned');
    writeFileSync(join(dir, 'more.conll'), conll(sentences(80, 3)));
    const learned = await trainTokenClassifier({
      model: folder,
      data: join(dir, 'more.conll'),
      validationData: join(dir, 'validation.jsonl'),
      labels: TAGS,
      outDir: out,
      epochs: 20,
      learningRate: 3e-3,
      batchSize: 4,
      maxLength: 32,
      seed: 1,
      threads: 1,
    });
    // seqeval's entity F1 of the kept weights on the validation sentences.
    expect(learned.metrics!.f1).toBe(1);
    const classifier = await TokenClassifier.load(out, { device: 'cpu' });
    try {
      const text = 'The villain laughing, at the theater downtown; director was good.';
      const [entities] = await classifier.entities([text]);
      expect(entities!.map(({ type, text, start, end }) => ({ type, text, start, end }))).toEqual([
        { type: 'PER', text: 'villain laughing', start: 4, end: 20 },
        { type: 'LOC', text: 'theater downtown', start: 29, end: 45 },
        { type: 'PER', text: 'director', start: 47, end: 55 },
      ]);
      // Each entity's score is its words' mean probability, as predict() gives them.
      const [tagged] = await classifier.predict([splitWords(text).map((w) => w.word)]);
      expect(entities![0]!.score).toBeCloseTo((tagged!.scores[1]! + tagged!.scores[2]!) / 2, 6);
    } finally {
      classifier.dispose();
    }
  });
});

describe('splitWords (BERT pre-tokenization with offsets)', () => {
  it('splits at whitespace and around each punctuation character', () => {
    expect(splitWords("EU rejects  German call, don't!\t$5 caf\u00e9")).toEqual([
      { word: 'EU', start: 0, end: 2 },
      { word: 'rejects', start: 3, end: 10 },
      { word: 'German', start: 12, end: 18 },
      { word: 'call', start: 19, end: 23 },
      { word: ',', start: 23, end: 24 },
      { word: 'don', start: 25, end: 28 },
      { word: "'", start: 28, end: 29 },
      { word: 't', start: 29, end: 30 },
      { word: '!', start: 30, end: 31 },
      { word: '$', start: 32, end: 33 },
      { word: '5', start: 33, end: 34 },
      { word: 'caf\u00e9', start: 35, end: 39 },
    ]);
    expect(splitWords('  ')).toEqual([]);
  });
});

describe("tokenSpans (where each of a word's tokens is in the text)", () => {
  /** Each token's characters, and the token as its vocabulary writes it without the continuation or word-start mark. */
  const pieces = (tokenizer: TextTokenizer, text: string) =>
    splitWords(text).flatMap((word) => {
      const ids = wordIds(tokenizer, word.word);
      const spans = tokenSpans(tokenizer, word, ids);
      return ids.map((id, k) => [text.slice(...spans[k]!), tokenizer.tokenString(id)]);
    });

  it("WordPiece: the pieces' characters, their ## dropped; a word decoded to other characters spans whole", async () => {
    const tokenizer = await TextTokenizer.load(demoTokenizer);
    expect(pieces(tokenizer, 'laughingly, Directors!')).toEqual([
      ...['l', 'a', 'u', 'g', 'h', 'ing', 'ly'].map((p, k) => [p, k === 0 ? p : `##${p}`]),
      [',', ','],
      ['Director', 'director'],
      ['s', '##s'],
      ['!', '!'],
    ]);
    // [UNK] decodes to 5 characters, not the word's 2.
    const snowmen = { word: '\u2603\u2603', start: 3, end: 5 };
    expect(tokenSpans(tokenizer, snowmen, wordIds(tokenizer, snowmen.word))).toEqual([[3, 5]]);
  });

  it("byte-level BPE: each token's characters, its 'Ġ' dropped", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'torch-bert-spans-'));
    try {
      const file = join(dir, 'tokenizer.json');
      await runPython('scripts/python/make_bpe_tokenizer.py', [file]);
      const tokenizer = await TextTokenizer.load(file);
      const text = 'the unpredictable storyline, really';
      const found = pieces(tokenizer, text);
      expect(found.length).toBeGreaterThan(splitWords(text).length);
      for (const [chars, token] of found) expect(chars).toBe(token!.replace(/^\u0120/, ''));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
