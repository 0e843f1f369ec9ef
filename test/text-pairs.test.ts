/**
 * Text pairs (NLI, paraphrase): a second text per example, framed by the tokenizer's pair
 * template and truncated longest first (lib/data/tokenizer.ts), with its segments given to an
 * encoder that takes token_type_ids (the classifier's forward_token_types / features_token_types,
 * native/module/classifier.cc). Checked against @huggingface/tokenizers' own pair encoding, the
 * tokenizers library's truncation rule, and the Python reference of transformers' BERT and RoBERTa
 * sequence classifiers given the same ids and segments.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { beforeAll, describe, expect, it } from 'vitest';
import type { NativeScriptModule } from '../lib/addon/binding.js';
import { Classifier } from '../lib/classification/classifier.js';
import { loadExamples } from '../lib/data/data.js';
import { TextTokenizer, truncateLongestFirst } from '../lib/data/tokenizer.js';
import { exportHuggingFace, InputError, loadClassifier, ModelError, train } from '../lib/index.js';
import { checkPairTokenTypes } from '../lib/models/model-checks.js';
import { asRows, demoReviews, demoTokenizer, makeHfFolder, repoRoot, runPython, smallClassifierInputs } from './fixtures.js';
import { runCommand } from './helpers/run-command.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-pairs-'));

const FIRST = ['A man is playing a guitar.', 'The cat sleeps on the sofa.', 'It rained all day.', 'x'];
const SECOND = ['Someone plays music.', 'A dog runs in the park, barking at every bird it sees.', 'The weather was dry.', 'y'];

/** The Python reference's probabilities of an exported (or transformers-layout) sequence classifier folder. */
async function referenceProbabilities(
  dir: string,
  rows: { inputIds: Int32Array; attentionMask: Int32Array; tokenTypeIds?: Int32Array; seqLen: number },
) {
  const input = {
    mode: 'export',
    dir,
    input_ids: asRows(rows.inputIds, rows.seqLen),
    attention_mask: asRows(rows.attentionMask, rows.seqLen),
    ...(rows.tokenTypeIds ? { token_type_ids: asRows(rows.tokenTypeIds, rows.seqLen) } : {}),
  };
  const out = await runPython('test/python/seq_classification_reference.py', [], JSON.stringify(input));
  return (JSON.parse(out) as { probabilities: number[][] }).probabilities;
}

const maxDifference = (a: number[][], b: number[][]) => Math.max(...a.flatMap((row, r) => row.map((v, c) => Math.abs(v - b[r]![c]!))));

/** `torch-bert predict --json`'s lines. */
type PredictLine = { text: string; pair: string; probabilities: Record<string, number> };
const predictLines = (stdout: string) =>
  stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as PredictLine);
/** Each line's probabilities in the order of `labels`. */
const lineProbabilities = (lines: PredictLine[], labels: readonly string[]) => lines.map((l) => labels.map((c) => l.probabilities[c]!));

async function pairProbabilities(c: Classifier, texts: readonly string[], pairs: readonly string[]) {
  return (await c.predict(texts, { pairs })).map((p) => c.labels.map((l) => p.probabilities[l]!));
}

describe('text pairs: encoding', () => {
  it("frames each pair as @huggingface/tokenizers' pair encoding does, ids and segments, for BERT's template and RoBERTa's", async () => {
    // Wide enough for every pair whole (the BPE tokenizer spells words it lacks byte by byte).
    const WIDTH = 256;
    const bpe = join(work, 'bpe-tokenizer.json');
    await runPython('scripts/python/make_bpe_tokenizer.py', [bpe]);
    for (const file of [demoTokenizer, bpe]) {
      const ours = await TextTokenizer.load(file);
      const theirs = new Tokenizer(JSON.parse(ours.json), {});
      const encoded = ours.encodeBatch(FIRST, WIDTH, { second: SECOND, tokenTypes: true });
      FIRST.forEach((text, row) => {
        const expected = theirs.encode(text, { text_pair: SECOND[row]!, return_token_type_ids: true });
        const length = encoded.lengths[row]!;
        expect(Array.from(encoded.inputIds.subarray(row * WIDTH, row * WIDTH + length))).toEqual(expected.ids);
        expect(Array.from(encoded.tokenTypeIds!.subarray(row * WIDTH, row * WIDTH + length))).toEqual(expected.token_type_ids);
        // Padding: the pad id, no attention, segment 0.
        expect(encoded.attentionMask[row * WIDTH + length]).toBe(0);
        expect(encoded.tokenTypeIds![row * WIDTH + length]).toBe(0);
      });
      // BERT: [CLS] a [SEP] b [SEP], the second text and its [SEP] in segment 1; RoBERTa:
      // <s> a </s></s> b </s>, segment 1 from the second </s> of the pair (which its model,
      // taking no token_type_ids, never reads).
      const roberta = file === bpe;
      const first = theirs.encode(FIRST[0]!, { text_pair: SECOND[0]!, return_token_type_ids: true });
      const secondLength = theirs.encode(SECOND[0]!, { add_special_tokens: false }).ids.length;
      expect(first.token_type_ids.filter((t: number) => t === 1).length).toBe(secondLength + (roberta ? 2 : 1));
      expect(ours.largestPairTokenType).toBe(1);
      // Without segments (an encoder that takes no token_type_ids): the same ids, no segments.
      const untyped = ours.encodeBatch(FIRST, WIDTH, { second: SECOND, tokenTypes: false });
      expect(untyped.tokenTypeIds).toBeUndefined();
      expect(untyped.inputIds).toEqual(encoded.inputIds);
    }
  });

  it("truncates longest first, as the tokenizers library's truncate_encodings", () => {
    // [lengthA, lengthB, room] → kept, worked out by the rule: nothing cut when both fit; the
    // shorter kept whole when it fits in half the room; else half each, the longer one (the
    // second on a tie) taking an odd room's extra token.
    const cases: Array<[number, number, number, [number, number]]> = [
      [3, 4, 10, [3, 4]],
      [2, 20, 10, [2, 8]],
      [20, 2, 10, [8, 2]],
      [4, 9, 9, [4, 5]],
      [6, 6, 10, [5, 5]],
      [7, 5, 9, [5, 4]],
      [20, 20, 9, [4, 5]],
      [30, 20, 9, [5, 4]],
      [20, 30, 9, [4, 5]],
    ];
    for (const [a, b, room, kept] of cases) expect([a, b, room, truncateLongestFirst(a, b, room)]).toEqual([a, b, room, kept]);
  });

  it('a pair longer than the max length: the specials kept, each text cut to the length the rule gives', async () => {
    const tokenizer = await TextTokenizer.load(demoTokenizer);
    const words = (n: number, w: string) => Array.from({ length: n }, () => w).join(' ');
    const cls = tokenizer.tokenId('[CLS]')!;
    const sep = tokenizer.tokenId('[SEP]')!;
    const [good, bad] = [tokenizer.tokenIds('good')[0]!, tokenizer.tokenIds('bad')[0]!];
    // maxLength 12, 3 specials: a room of 9. The texts of the last case exceed it (and room + 1)
    // both, the first one longer: it takes the extra token.
    for (const [na, nb, ka, kb] of [
      [2, 30, 2, 7],
      [6, 6, 4, 5],
      [300, 200, 5, 4],
      [200, 300, 4, 5],
    ] as const) {
      const { ids, types } = tokenizer.encodePair(words(na, 'good'), words(nb, 'bad'), 12);
      expect(ids).toEqual([cls, ...Array(ka).fill(good), sep, ...Array(kb).fill(bad), sep]);
      expect(types).toEqual([...Array(ka + 2).fill(0), ...Array(kb + 1).fill(1)]);
    }
  });

  it('the same rows on worker threads as on the main thread', async () => {
    const tokenizer = await TextTokenizer.load(demoTokenizer);
    const texts = Array.from({ length: 1300 }, (_, i) => `${FIRST[i % 4]} number ${i}`);
    const second = Array.from({ length: 1300 }, (_, i) => `${SECOND[(i + 1) % 4]} ${'again '.repeat(i % 7)}`);
    const pairs = { second, tokenTypes: true };
    const [workers, main] = [
      await tokenizer.encodeBatchAsync(texts, 24, { threads: 2, pairs }),
      await tokenizer.encodeBatchAsync(texts, 24, { threads: 1, pairs }),
    ];
    expect(workers).toEqual(main);
    expect(main.tokenTypeIds!.some((t) => t === 1)).toBe(true);
    expect(await tokenizer.rowLengthsAsync(texts, 24, { pairs })).toEqual(main.lengths);
    await expect(tokenizer.encodeBatchAsync(texts, 24, { pairs: { second: second.slice(1), tokenTypes: true } })).rejects.toThrow(
      /1300 texts but 1299 second texts/,
    );
  });

  it('a token type table of one row refuses text pairs, naming the table', () => {
    const module = {
      namedParameters: () => [
        ['embeddings.word_embeddings.weight', { shape: [1000, 8] }],
        ['embeddings.token_type_embeddings.weight', { shape: [1, 8] }],
      ],
    } as unknown as NativeScriptModule;
    return TextTokenizer.load(demoTokenizer).then((tokenizer) => {
      expect(() => checkPairTokenTypes(module, tokenizer, 'encoder e')).toThrow(
        /encoder e cannot take token type id 1: its token type table \(embeddings.token_type_embeddings.weight\) has 1 row, so it reads single texts only/,
      );
    });
  });
});

describe('text pairs: Hugging Face sequence classifiers', () => {
  for (const family of ['bert', 'roberta'] as const) {
    it(`${family}: predict() of pairs gives the Python reference's probabilities for the same ids${family === 'bert' ? ' and segments; the segments matter' : ''} (1e-5)`, async () => {
      const { dir } = await makeHfFolder({ layout: `${family}-seqcls` });
      const loaded = await loadClassifier(dir);
      try {
        expect(loaded.config.input).toBe('text-or-pair');
        const encoded = await loaded.tokenizer.encodeBatchAsync(FIRST, loaded.config.maxLength, {
          pairs: { second: SECOND, tokenTypes: family === 'bert' },
        });
        // The rows as encoded (padded to the max length), not as lib gathers them into batches.
        const rows = encoded;
        expect(rows.tokenTypeIds !== undefined).toBe(family === 'bert');
        const own = await pairProbabilities(loaded, FIRST, SECOND);
        expect(maxDifference(own, await referenceProbabilities(dir, rows))).toBeLessThan(1e-5);
        if (family === 'bert') {
          // The same ids all in segment 0 give other probabilities: the segments reached the encoder.
          const zeros = await referenceProbabilities(dir, { ...rows, tokenTypeIds: new Int32Array(rows.inputIds.length) });
          expect(maxDifference(own, zeros)).toBeGreaterThan(1e-3);
        }
        if (family === 'bert') {
          // The pairs' method is token-pruned as forward is: the last layer runs for [CLS] alone.
          expect(loaded.module.prunedOps('forward_token_types')).toContain('aten::linear');
        }
        // Single texts still work with it (its config does not say what it was trained on).
        expect((await loaded.predict(FIRST)).length).toBe(FIRST.length);
      } finally {
        loaded.dispose();
      }
    });
  }
});

describe('text pairs: the CLI', () => {
  it("predict --pair: each TEXT's second text, in order; the API's probabilities; a count that differs is a usage error", async () => {
    const { dir } = await makeHfFolder({ layout: 'bert-seqcls' });
    const cli = join(repoRoot, 'dist', 'cli.js');
    const args = ['predict', '--classifier', dir, '--json', ...FIRST.flatMap((text, i) => ['--pair', SECOND[i]!, text])];
    const run = await runCommand(process.execPath, [cli, ...args]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const lines = predictLines(run.stdout);
    expect(lines.map((l) => [l.text, l.pair])).toEqual(FIRST.map((t, i) => [t, SECOND[i]]));
    const loaded = await loadClassifier(dir);
    try {
      expect(maxDifference(lineProbabilities(lines, loaded.labels), await pairProbabilities(loaded, FIRST, SECOND))).toBeLessThan(1e-6);
    } finally {
      loaded.dispose();
    }
    const short = await runCommand(process.execPath, [cli, 'predict', '--classifier', dir, '--pair', 'b', 'a', 'c']);
    expect(short.code).toBe(2);
    expect(short.stderr).toContain('1 --pair for 2 TEXT: give one --pair per TEXT, in order');
  }, 120_000);
});

describe('text pairs: training', () => {
  /**
   * A BERT built natively from a Hugging Face folder, its forward taking token_type_ids: the
   * sequence classifier's, whose wide layers' matrices make each text's features its own (its
   * head, of other classes, is not started from).
   */
  let encoder: string;
  /** Pairs made of the demo reviews: each cut in two halves. */
  const halves = (texts: readonly string[]) => ({
    texts: texts.map((t) => t.slice(0, Math.ceil(t.length / 2))),
    pairs: texts.map((t) => t.slice(Math.ceil(t.length / 2)) || '.'),
  });
  let trainSet: { texts: string[]; pairs: string[]; labels: string[] };
  let validationSet: { texts: string[]; pairs: string[]; labels: string[] };
  const common = { epochs: 2, batchSize: 16, maxLength: 40, learningRate: 1e-3 } as const;

  beforeAll(async () => {
    const inputs = await smallClassifierInputs(200);
    encoder = (await makeHfFolder({ layout: 'bert-seqcls' })).dir;
    const all = { ...halves(inputs.data.texts), labels: inputs.data.labels };
    const part = (from: number, to: number) => ({
      texts: all.texts.slice(from, to),
      pairs: all.pairs.slice(from, to),
      labels: all.labels.slice(from, to),
    });
    trainSet = part(0, 160);
    validationSet = part(160, 200);
  }, 300_000);

  it("full, BERT's own head: the saved epoch's validation loss and the saved classifier's probabilities are the Python reference's on the exported folder, pairs and segments given (1e-5)", async () => {
    const outDir = join(work, 'full');
    const result = await train({
      ...common,
      data: trainSet,
      validationData: validationSet,
      encoder,
      outDir,
      technique: 'full',
      head: 'sequence-classification',
    });
    result.classifier.dispose();
    const hfDir = join(work, 'full-hf');
    await exportHuggingFace({ classifier: outDir, out: hfDir, heads: 4 });
    const loaded = await loadClassifier(outDir);
    try {
      expect(loaded.config.input).toBe('text-pair');
      const encoded = await loaded.tokenizer.encodeBatchAsync(validationSet.texts, common.maxLength, {
        pairs: { second: validationSet.pairs, tokenTypes: true },
      });
      const reference = await referenceProbabilities(hfDir, encoded);
      const own = await pairProbabilities(loaded, validationSet.texts, validationSet.pairs);
      expect(maxDifference(own, reference)).toBeLessThan(1e-5);
      const loss =
        -validationSet.labels.reduce((sum, label, i) => sum + Math.log(reference[i]![loaded.labels.indexOf(label)]!), 0) /
        validationSet.labels.length;
      const best = result.best;
      expect(Math.abs(best.validationLoss - loss)).toBeLessThan(1e-5);
      // Not degenerate: the texts' probabilities differ.
      expect(maxDifference([reference[0]!], [reference[1]!])).toBeGreaterThan(1e-4);
    } finally {
      loaded.dispose();
    }
  }, 300_000);

  it("frozen: the head trains on the pairs' cached features, those the saved classifier computes from the pairs' tokens (its validation loss is evaluate()'s)", async () => {
    const outDir = join(work, 'frozen');
    const result = await train({
      ...common,
      epochs: 3,
      data: trainSet,
      validationData: validationSet,
      encoder,
      outDir,
      technique: 'frozen',
    });
    result.classifier.dispose();
    const loaded = await loadClassifier(outDir);
    try {
      const evaluation = await loaded.evaluate(validationSet);
      const best = result.best;
      expect(Math.abs(evaluation.loss - best.validationLoss)).toBeLessThan(1e-5);
      expect(evaluation.accuracy).toBe(best.validationAccuracy);
      // Refusals: a pair classifier needs the second texts; one trained on single texts takes none.
      await expect(loaded.predict(validationSet.texts)).rejects.toThrow(/trained on text pairs: give each text its second text/);
      await expect(loaded.evaluate({ texts: validationSet.texts, labels: validationSet.labels })).rejects.toThrow(InputError);
    } finally {
      loaded.dispose();
    }
    const single = await train({
      ...common,
      epochs: 1,
      data: { texts: trainSet.texts, labels: trainSet.labels },
      encoder,
      technique: 'frozen',
    });
    try {
      expect(single.classifier.config.input).toBeUndefined();
      await expect(single.classifier.predict(FIRST, { pairs: SECOND })).rejects.toThrow(/reads one text per example/);
    } finally {
      single.classifier.dispose();
    }
  }, 300_000);

  it("full: training reads the pairs' segments: the same ids as single texts ('a [SEP] b', all segment 0) train otherwise", async () => {
    const tokenizer = await TextTokenizer.load(join(encoder, 'tokenizer.json'));
    const adjectives = ['good', 'bad', 'long', 'dull', 'great', 'fine'];
    const a = Array.from({ length: 48 }, (_, i) => `the film was ${adjectives[i % 6]}`);
    const b = Array.from({ length: 48 }, (_, i) => `it was ${adjectives[(i * 5 + 1) % 6]} and ${adjectives[(i + 2) % 6]}`);
    const labels = a.map((_, i) => (i % 3 === 0 ? 'positive' : 'negative'));
    const joined = a.map((text, i) => `${text} [SEP] ${b[i]}`);
    // The same ids either way: the pair template is [CLS] a [SEP] b [SEP].
    const pairs = tokenizer.encodeBatch(a, 40, { second: b, tokenTypes: true });
    expect(tokenizer.encodeBatch(joined, 40).inputIds).toEqual(pairs.inputIds);
    const run = (data: { texts: string[]; pairs?: string[]; labels: string[] }) =>
      train({ ...common, epochs: 1, data, validationSplit: 0.25, encoder, technique: 'full', head: 'sequence-classification' });
    const [paired, single] = [await run({ texts: a, pairs: b, labels }), await run({ texts: joined, labels })];
    paired.classifier.dispose();
    single.classifier.dispose();
    expect(Math.abs(paired.history[0]!.trainLoss - single.history[0]!.trainLoss)).toBeGreaterThan(1e-4);
  }, 300_000);

  it("the default head reads the second texts, not the first alone: 'x' paired with each demo review learns the reviews' classes", async () => {
    // Before text pairs, a second text with head 'mlp' was refused (and earlier still, read and
    // dropped: 50% validation accuracy on these pairs).
    const { encoder: informative } = await smallClassifierInputs();
    const raw = await loadExamples(demoReviews);
    const result = await train({
      data: { texts: raw.texts.map(() => 'x'), pairs: raw.texts, labels: raw.labels! },
      encoder: informative,
      tokenizer: demoTokenizer,
      epochs: 3,
      maxLength: 48,
      batchSize: 32,
      learningRate: 1e-3,
      headHidden: 64,
    });
    try {
      expect(result.classifier.config.input).toBe('text-pair');
      expect(result.best.validationAccuracy).toBeGreaterThan(0.8);
    } finally {
      result.classifier.dispose();
    }
  }, 300_000);

  for (const technique of ['lora', 'adapter'] as const) {
    it(`${technique}: the pairs' method through the adapters (unmerged, loadAdapters) predicts what the saved classifier.pt does`, async () => {
      const outDir = join(work, technique);
      const result = await train({
        ...common,
        epochs: 1,
        learningRate: 1e-2,
        data: trainSet,
        validationData: validationSet,
        encoder,
        outDir,
        technique,
      });
      const saved = await loadClassifier(outDir);
      const unmerged = await Classifier.loadAdapters(outDir, { encoder });
      try {
        const [own, fromFile, fromAdapters] = await Promise.all(
          [result.classifier, saved, unmerged].map((c) => pairProbabilities(c, validationSet.texts, validationSet.pairs)),
        );
        expect(maxDifference(fromFile!, own!)).toBeLessThan(1e-5);
        expect(maxDifference(fromAdapters!, own!)).toBeLessThan(1e-5);
      } finally {
        for (const c of [result.classifier, saved, unmerged]) c.dispose();
      }
    }, 300_000);
  }

  it('a BERT classifier trained on pairs through a traced encoder that takes no token_type_ids does not export: transformers would read its second texts as segment 1', async () => {
    const { encoder: traced } = await smallClassifierInputs();
    const outDir = join(work, 'untyped');
    const result = await train({
      ...common,
      epochs: 1,
      data: trainSet,
      validationData: validationSet,
      encoder: traced,
      tokenizer: demoTokenizer,
      outDir,
      technique: 'full',
      head: 'sequence-classification',
    });
    result.classifier.dispose();
    expect(result.encoder.arity).toBe(2);
    const refused = await exportHuggingFace({ classifier: outDir, out: join(work, 'untyped-hf'), heads: 4 }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ModelError);
    expect((refused as ModelError).code).toBe('EXPORT_UNSUPPORTED_ENCODER');
    expect((refused as Error).message).toContain("transformers' BERT reads the second text as segment 1");
  }, 300_000);

  it('the CLI: train --text-pair-column, then eval and predict --data read the pair column the classifier was trained on', async () => {
    const quote = (v: string) => `"${v.replace(/"/g, '""')}"`;
    const csv = (file: string, set: typeof trainSet) => {
      const rows = set.texts.map((t, i) => [t, set.pairs[i]!, set.labels[i]!].map(quote).join(','));
      writeFileSync(file, ['premise,hypothesis,label', ...rows].join('\n') + '\n');
      return file;
    };
    const [trainCsv, validationCsv] = [
      csv(join(work, 'pairs-train.csv'), trainSet),
      csv(join(work, 'pairs-validation.csv'), validationSet),
    ];
    const cli = (args: string[]) => runCommand(process.execPath, [join(repoRoot, 'dist', 'cli.js'), ...args]);
    const outDir = join(work, 'cli');
    const trained = await cli([
      'train',
      '--data',
      trainCsv,
      '--validation-data',
      validationCsv,
      '--text-column',
      'premise',
      '--text-pair-column',
      'hypothesis',
      '--model',
      encoder,
      '--out',
      outDir,
      '--epochs',
      '1',
      '--max-length',
      String(common.maxLength),
      '--technique',
      'frozen',
      '--json',
    ]);
    expect([trained.code, trained.stderr]).toEqual([0, '']);
    const config = JSON.parse(readFileSync(join(outDir, 'config.json'), 'utf8')) as { input: string; textPairColumn: string };
    expect([config.input, config.textPairColumn]).toEqual(['text-pair', 'hypothesis']);
    const evaluated = await cli(['eval', '--classifier', outDir, '--data', validationCsv, '--json']);
    expect([evaluated.code, evaluated.stderr]).toEqual([0, '']);
    const loaded = await loadClassifier(outDir);
    try {
      const api = await loaded.evaluate(validationSet);
      const metrics = JSON.parse(evaluated.stdout) as { loss: number; accuracy: number };
      expect(Math.abs(metrics.loss - api.loss)).toBeLessThan(1e-6);
      expect(metrics.accuracy).toBe(api.accuracy);
      const predicted = await cli(['predict', '--classifier', outDir, '--data', validationCsv, '--json']);
      expect(predicted.code).toBe(0);
      const lines = predictLines(predicted.stdout);
      expect(lines.map((l) => l.pair)).toEqual(validationSet.pairs);
      const own = await pairProbabilities(loaded, validationSet.texts, validationSet.pairs);
      expect(maxDifference(lineProbabilities(lines, loaded.labels), own)).toBeLessThan(1e-6);
    } finally {
      loaded.dispose();
    }
  }, 300_000);

  it('refuses training data with second texts and validation data without (or the reverse)', async () => {
    await expect(
      train({
        ...common,
        data: trainSet,
        validationData: { texts: validationSet.texts, labels: validationSet.labels },
        encoder,
      }),
    ).rejects.toThrow(/data has a second text for each example but validationData has none/);
  });
});
