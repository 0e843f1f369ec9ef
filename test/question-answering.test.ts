/**
 * Extractive question answering against an independent reference: trainQuestionAnswering() on
 * SQuAD records equals run_qa.py's fine-tuning of BertForQuestionAnswering (and
 * DistilBertForQuestionAnswering) written out in plain PyTorch (test/python/qa_reference.py: its
 * own WordPiece windows and offsets, the encoder's math, the start/end loss, utils_qa.py's
 * postprocessing and SQuAD's metrics) window by window, batch by batch and answer by answer; the
 * folder it keeps is a *ForQuestionAnswering folder the reference reads back and answers alike.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type QaTrainResult, trainQuestionAnswering } from '../lib/answering/qa-trainer.js';
import { QuestionAnswerer } from '../lib/answering/question-answerer.js';
import { contextTokens, questionWindows, windowOffsets, windowStarts } from '../lib/answering/question-windows.js';
import { readQuestionFile } from '../lib/answering/squad-data.js';
import { TextTokenizer } from '../lib/data/tokenizer.js';
import type { BatchEvent } from '../lib/training/options.js';
import { makeHfFolder, runPython } from './fixtures.js';
import { jsonl, questions, type SquadRecord } from './helpers/squad-questions.js';

/** Hand-made questions for the windows' edge cases: an answer across two windows, one in a window's last token (run_qa.py's label quirk), pieces of words, a context that fits one window. */
const EDGE_CASES: SquadRecord[] = (() => {
  const long =
    'the movie was great and the plot was good , the story was really bad at home and the film was boring at the cinema with my sister';
  const at = (context: string, text: string) => ({ text: [text], answer_start: [context.indexOf(text)] });
  return [
    { id: 'spanning', title: 't', question: 'what was really bad ?', context: long, answers: at(long, 'story was really bad') },
    {
      id: 'last',
      title: 't',
      question: 'who was there ?',
      context: 'the film was watched by my sister',
      answers: at('the film was watched by my sister', 'sister'),
    },
    {
      id: 'pieces',
      title: 't',
      question: '  who watched ?',
      context: 'My sister watched the Café movie twice.',
      answers: at('My sister watched the Café movie twice.', 'My sister'),
    },
  ];
})();

interface ReferenceFeature {
  ids: number[];
  types?: number[];
  start: number;
  end: number;
  example: number;
  offsets?: Array<[number, number] | null>;
}

interface ReferenceCandidate {
  text: string;
  start: number | null;
  end: number | null;
  probability: number;
  startLogit: number;
  endLogit: number;
}

interface Reference {
  features: { train: ReferenceFeature[]; validation: ReferenceFeature[] };
  batchLosses: number[];
  epochs: Array<{
    epoch: number;
    validationLoss: number;
    exactMatch: number;
    f1: number;
    hasAnswer?: { exactMatch: number; f1: number; total: number };
    noAnswer?: { exactMatch: number; f1: number; total: number };
    predictions: { [id: string]: string };
    nbest: { [id: string]: ReferenceCandidate[] };
  }>;
  qaOutputs: { weight: number[][]; bias: number[] };
}

const RUN = { epochs: 3, batchSize: 4, learningRate: 1e-3, weightDecay: 0.01, seed: 7, maxGradNorm: 1, maxLength: 24, docStride: 4 };
const SPAN = { nBest: 5, maxAnswerLength: 6 };

function referenceJob(folder: string, train: readonly SquadRecord[], validation: readonly SquadRecord[], extra: object = {}) {
  return {
    folder,
    train,
    validation,
    epochs: RUN.epochs,
    batchSize: RUN.batchSize,
    lr: RUN.learningRate,
    weightDecay: RUN.weightDecay,
    betas: [0.9, 0.999],
    eps: 1e-8,
    seed: RUN.seed,
    maxGradNorm: RUN.maxGradNorm,
    maxLength: RUN.maxLength,
    docStride: RUN.docStride,
    initializerRange: 0.02,
    versionTwo: true,
    ...SPAN,
    ...extra,
  };
}

/** A row of `encoded` without its padding. */
function row(encoded: { inputIds: Int32Array; seqLen: number; lengths: Int32Array }, r: number, values = encoded.inputIds): number[] {
  return Array.from(values.subarray(r * encoded.seqLen, r * encoded.seqLen + encoded.lengths[r]!));
}

describe('question answering (trainQuestionAnswering, QuestionAnswerer)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'torch-bert-qa-'));
  const train = [...questions(30, 1, 't', true), ...EDGE_CASES];
  const validation = [...questions(10, 2, 'v', true), ...EDGE_CASES.map((r) => ({ ...r, id: `v-${r.id}` }))];
  let folder: string;
  let result: QaTrainResult;
  let reference: Reference;
  const batches: BatchEvent[] = [];

  beforeAll(async () => {
    folder = (
      await makeHfFolder({ layout: 'automodel', tokenizer: 'json', layers: 2, hidden: 32, heads: 4, intermediate: 64, dropout: 0, seed: 3 })
    ).dir;
    writeFileSync(join(dir, 'train.jsonl'), jsonl(train));
    // Validation as SQuAD's own JSON: the other format the reader takes.
    const squad = {
      version: 'v2.0',
      data: [
        {
          title: 't',
          paragraphs: validation.map((r) => ({
            context: r.context,
            qas: [
              {
                id: r.id,
                question: r.question,
                answers: r.answers.text.map((text, k) => ({ text, answer_start: r.answers.answer_start[k] })),
                is_impossible: r.answers.text.length === 0,
              },
            ],
          })),
        },
      ],
    };
    writeFileSync(join(dir, 'validation.json'), JSON.stringify(squad));
    [reference, result] = await Promise.all([
      runPython('test/python/qa_reference.py', [], JSON.stringify(referenceJob(folder, train, validation))).then(
        (out) => JSON.parse(out) as Reference,
      ),
      trainQuestionAnswering({
        model: folder,
        data: join(dir, 'train.jsonl'),
        validationData: join(dir, 'validation.json'),
        outDir: join(dir, 'out'),
        schedule: 'constant',
        versionTwo: true,
        // Each batch padded to its longest window (run_qa.py's --pad_to_max_length False), as the
        // reference by default; the DistilBERT run below pads to maxLength.
        padToMaxLength: false,
        threads: 1,
        ...RUN,
        ...SPAN,
        onProgress: (e) => {
          if (e.type === 'batch') batches.push(e);
        },
      }),
    ]);
  }, 300_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("windows the contexts and labels the answers' tokens as run_qa.py's fast tokenizer does", async () => {
    const tokenizer = await TextTokenizer.load(join(folder, 'tokenizer.json'));
    const examples = await readQuestionFile(join(dir, 'train.jsonl'));
    const windows = questionWindows(tokenizer, examples, { maxLength: RUN.maxLength, docStride: RUN.docStride, tokenTypes: true });
    const ours = Array.from({ length: windows.encoded.count }, (_, w) => ({
      ids: row(windows.encoded, w),
      types: row(windows.encoded, w, windows.encoded.tokenTypeIds),
      start: windows.starts[w],
      end: windows.ends[w],
      example: windows.example[w],
    }));
    expect(ours).toEqual(reference.features.train);
    // The cases the data is there for: several windows of a context, an answer only the second
    // window holds whole, the label past the context when the answer starts in a window's last
    // token, and questions without an answer.
    const spanning = examples.findIndex((e) => e.id === 'spanning');
    const its = ours.filter((f) => f.example === spanning);
    expect(its.length).toBeGreaterThan(2);
    expect(its.filter((f) => f.start > 0).length).toBeGreaterThan(0);
    expect(its.filter((f) => f.start === 0).length).toBeGreaterThan(0);
    expect(ours.some((f) => f.start > f.end)).toBe(true);
    expect(ours.filter((f) => f.start === 0).length).toBeGreaterThan(ours.length / 4);
  });

  it("gives each context token its characters, as the fast tokenizer's offset mapping", async () => {
    const tokenizer = await TextTokenizer.load(join(folder, 'tokenizer.json'));
    const examples = await readQuestionFile(join(dir, 'validation.json'));
    const windows = questionWindows(tokenizer, examples, { maxLength: RUN.maxLength, docStride: RUN.docStride, tokenTypes: true });
    const offsets = Array.from({ length: windows.encoded.count }, (_, w) => windowOffsets(windows, w, windows.encoded.lengths[w]!));
    expect(offsets).toEqual(reference.features.validation.map((f) => f.offsets));
    // "watched" is two pieces, "Café" one, each with its own characters.
    const pieces = examples.findIndex((e) => e.id === 'v-pieces');
    const spans = offsets[windows.example.indexOf(pieces)]!.filter((o) => o !== null);
    expect(spans).toContainEqual([10, 15]);
    expect(spans).toContainEqual([15, 17]);
    expect(spans).toContainEqual([22, 26]);
  });

  it('trains batch by batch, validates and answers as the PyTorch reference of BertForQuestionAnswering', () => {
    expect(batches.length).toBe(reference.batchLosses.length);
    batches.forEach((b, i) => {
      expect(b.loss, `batch ${i}`).toBeCloseTo(reference.batchLosses[i]!, 4);
    });
    expect(result.history.map((h) => h.validationLoss)).toEqual(reference.epochs.map((e) => expect.closeTo(e.validationLoss, 4)));
    expect(result.history.map((h) => h.validationExactMatch)).toEqual(reference.epochs.map((e) => e.exactMatch));
    expect(result.history.map((h) => h.validationF1)).toEqual(reference.epochs.map((e) => expect.closeTo(e.f1, 10)));
    // Learned something: each epoch's validation loss is lower than the one before.
    const losses = reference.epochs.map((e) => e.validationLoss);
    losses.slice(1).forEach((loss, e) => {
      expect(loss).toBeLessThan(losses[e]!);
    });
    // The kept weights' answers are the reference's at that epoch, candidates and all.
    const kept = reference.epochs[result.best.epoch - 1]!;
    const answers = result.metrics!.answers;
    expect(Object.fromEntries([...answers].map(([id, a]) => [id, a.text]))).toEqual(kept.predictions);
    for (const [id, answer] of answers) {
      expect(answer.candidates.map((c) => c.text)).toEqual(kept.nbest[id]!.map((c) => c.text));
      answer.candidates.forEach((c, k) => {
        expect(c.probability, `${id} candidate ${k}`).toBeCloseTo(kept.nbest[id]![k]!.probability, 5);
      });
    }
    expect(result.metrics!.hasAnswer).toEqual({ ...kept.hasAnswer, f1: expect.closeTo(kept.hasAnswer!.f1, 10) });
    expect(result.metrics!.noAnswer!.exactMatch).toBe(kept.noAnswer!.exactMatch);
  });

  it('keeps a BertForQuestionAnswering folder that the reference reads and answers alike', async () => {
    const config = JSON.parse(readFileSync(join(dir, 'out', 'config.json'), 'utf8'));
    expect(config.architectures).toEqual(['BertForQuestionAnswering']);
    expect(config.torch_bert).toMatchObject({
      format: 'torch-bert-question-answerer',
      maxLength: RUN.maxLength,
      docStride: RUN.docStride,
      padToMaxLength: false,
      versionTwo: true,
    });
    const asked = validation.map((r) => ({ question: r.question, context: r.context }));
    const theirs = JSON.parse(
      await runPython(
        'test/python/qa_reference.py',
        [],
        JSON.stringify({
          mode: 'answer',
          folder: join(dir, 'out'),
          examples: validation.map((r) => ({ id: r.id, question: r.question, context: r.context })),
          maxLength: RUN.maxLength,
          docStride: RUN.docStride,
          versionTwo: true,
          nullScoreDiffThreshold: 0,
          // answer()'s batches, padded as the folder was trained: a pad may take an n-best place.
          batchSize: 32,
          padToMaxLength: false,
          ...SPAN,
        }),
      ),
    ) as { predictions: { [id: string]: string }; nbest: { [id: string]: ReferenceCandidate[] } };
    const answerer = await QuestionAnswerer.load(join(dir, 'out'), { device: 'cpu' });
    try {
      expect(answerer.windows).toEqual({ maxLength: RUN.maxLength, docStride: RUN.docStride, tokenTypes: true });
      const answers = await answerer.answer(asked, SPAN);
      expect(answers.map((a) => a.text)).toEqual(validation.map((r) => theirs.predictions[r.id]));
      answers.forEach((a, i) => {
        const best = theirs.nbest[validation[i]!.id]!;
        expect(a.candidates.map((c) => [c.text, c.start, c.end])).toEqual(best.map((c) => [c.text, c.start ?? 0, c.end ?? 0]));
        a.candidates.forEach((c, k) => {
          expect(c.startLogit).toBeCloseTo(best[k]!.startLogit, 4);
          expect(c.probability).toBeCloseTo(best[k]!.probability, 5);
        });
        // An answer is its characters of the context.
        if (a.text !== '' && a.text !== 'empty') expect(validation[i]!.context.slice(a.start, a.end)).toBe(a.text);
      });
      // evaluate() scores the file as the run's validation scored the kept weights.
      // The loss reads every position of a padded batch, as transformers' does: the same batches.
      const metrics = await answerer.evaluate(join(dir, 'validation.json'), { ...SPAN, batchSize: RUN.batchSize });
      expect(metrics.exactMatch).toBe(result.metrics!.exactMatch);
      expect(metrics.f1).toBeCloseTo(result.metrics!.f1, 10);
      expect(metrics.loss).toBeCloseTo(result.best.validationLoss, 5);
    } finally {
      answerer.dispose();
    }
  });
});

describe('question answering with DistilBERT (no token types; the head alone trained)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'torch-bert-qa-distil-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('trains and validates as the reference of DistilBertForQuestionAnswering, frozen', async () => {
    const made = (
      await makeHfFolder({
        layout: 'distilbert',
        tokenizer: 'json',
        layers: 2,
        hidden: 32,
        heads: 4,
        intermediate: 64,
        dropout: 0,
        seed: 5,
      })
    ).dir;
    // transformers' DistilBertConfig writes qa_dropout 0.1: 0 here, so the reference draws no masks.
    const folder = join(dir, 'model');
    const { cpSync } = await import('node:fs');
    cpSync(made, folder, { recursive: true });
    const config = JSON.parse(readFileSync(join(folder, 'config.json'), 'utf8'));
    writeFileSync(join(folder, 'config.json'), JSON.stringify({ ...config, qa_dropout: 0 }));
    const train = questions(16, 3, 'd', false);
    const validation = questions(6, 4, 'e', false);
    writeFileSync(join(dir, 'train.jsonl'), jsonl(train));
    writeFileSync(join(dir, 'validation.jsonl'), jsonl(validation));
    const losses: number[] = [];
    const [reference, result] = await Promise.all([
      runPython(
        'test/python/qa_reference.py',
        [],
        JSON.stringify(referenceJob(folder, train, validation, { versionTwo: false, frozen: true, epochs: 2, padToMaxLength: true })),
      ).then((out) => JSON.parse(out) as Reference),
      trainQuestionAnswering({
        model: folder,
        data: join(dir, 'train.jsonl'),
        validationData: join(dir, 'validation.jsonl'),
        outDir: join(dir, 'out'),
        technique: 'frozen',
        schedule: 'constant',
        threads: 1,
        ...RUN,
        ...SPAN,
        epochs: 2,
        onProgress: (e) => {
          if (e.type === 'batch') losses.push(e.loss);
        },
      }),
    ]);
    expect(reference.features.train.every((f) => f.types === undefined)).toBe(true);
    expect(losses).toEqual(reference.batchLosses.map((l) => expect.closeTo(l, 4)));
    expect(result.history.map((h) => h.validationLoss)).toEqual(reference.epochs.map((e) => expect.closeTo(e.validationLoss, 4)));
    expect(result.history.map((h) => h.validationF1)).toEqual(reference.epochs.map((e) => expect.closeTo(e.f1, 10)));
    const kept = JSON.parse(readFileSync(join(dir, 'out', 'config.json'), 'utf8'));
    expect(kept.architectures).toEqual(['DistilBertForQuestionAnswering']);
  }, 300_000);
});

describe('question windows', () => {
  it('start every room − docStride tokens until one reaches the end, as the fast tokenizer overflows', () => {
    expect(windowStarts(0, 10, 4)).toEqual([0]);
    expect(windowStarts(10, 10, 4)).toEqual([0]);
    expect(windowStarts(11, 10, 4)).toEqual([0, 6]);
    expect(windowStarts(16, 10, 4)).toEqual([0, 6]);
    expect(windowStarts(17, 10, 4)).toEqual([0, 6, 12]);
  });

  it("encode a context piece by piece into the whole text's ids, for WordPiece and byte-level BPE", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'torch-bert-qa-pieces-'));
    try {
      const bpe = join(dir, 'bpe.json');
      await runPython('scripts/python/make_bpe_tokenizer.py', [bpe]);
      // U+0096, a control character BERT's normalizer deletes: a piece without a token.
      const text = "The movie's plot,  really...good at 10:30 \u0096 -- wasn't it? Café";
      for (const file of [
        join(
          (await makeHfFolder({ layout: 'automodel', tokenizer: 'json', layers: 1, hidden: 8, heads: 2, intermediate: 16 })).dir,
          'tokenizer.json',
        ),
        bpe,
      ]) {
        const tokenizer = await TextTokenizer.load(file);
        const context = contextTokens(tokenizer, text);
        expect(context.ids, file).toEqual(tokenizer.tokenIds(text));
        // Each token's characters, in order, within the text.
        context.spans.forEach(([s, e], k) => {
          expect(s).toBeLessThanOrEqual(e);
          if (k > 0) expect(s).toBeGreaterThanOrEqual(context.spans[k - 1]![0]);
        });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("give a character split between byte-level tokens to each of them, as the fast tokenizer's offsets", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'torch-bert-qa-bytes-'));
    try {
      const bpe = join(dir, 'bpe.json');
      await runPython('scripts/python/make_bpe_tokenizer.py', [bpe]);
      // 'é' and '—' are two and three UTF-8 bytes, each a token of its own here; tokenizers 0.23's
      // offset mapping of the same text with the same tokenizer.json.
      const context = contextTokens(await TextTokenizer.load(bpe), 'the Café — good');
      expect(context.spans).toEqual([
        [0, 3],
        [4, 4],
        [4, 5],
        [5, 6],
        [6, 7],
        [7, 8],
        [7, 8],
        [9, 9],
        [9, 10],
        [9, 10],
        [9, 10],
        [11, 15],
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuse a question that leaves a long context no room beyond docStride', async () => {
    const tokenizer = await TextTokenizer.load(
      join(
        (await makeHfFolder({ layout: 'automodel', tokenizer: 'json', layers: 1, hidden: 8, heads: 2, intermediate: 16 })).dir,
        'tokenizer.json',
      ),
    );
    const ask = (question: string, context: string) =>
      questionWindows(tokenizer, [{ id: 'q', question, context, answers: { text: [], answerStart: [] } }], {
        maxLength: 16,
        docStride: 4,
        tokenTypes: true,
      });
    // 3 special tokens + 9 question tokens leave 4 context tokens a window: enough for a context that fits.
    const question = 'the movie was great the plot was good and';
    expect(ask(question, 'the movie was').encoded.count).toBe(1);
    expect(() => ask(question, 'the movie was great and the plot was good')).toThrow(
      /question q: its 9 tokens leave 4 context tokens per window at maxLength 16, which must be more than docStride 4/,
    );
  });
});
