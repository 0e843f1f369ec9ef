/**
 * Token classification's runs beyond the parity test's (token-classification.test.ts), each
 * against a reference: an aborted run resumed ends with the uninterrupted run's weights bit for
 * bit; technique 'frozen' leaves every encoder weight as the source folder has it and trains the
 * head as the PyTorch reference does with the encoder frozen
 * (test/python/token_classification_reference.py's `frozen`); a DistilBERT folder trains as the
 * reference's DistilBertForTokenClassification and is kept as one that the reference reads and
 * predicts alike; and what trainTokenClassifier() / TokenClassifier.load() refuse.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError } from '../lib/addon/errors.js';
import { loadBinding } from '../lib/addon/loader.js';
import { freePort, rankVariables } from '../lib/cli/launcher.js';
import { TextTokenizer } from '../lib/data/tokenizer.js';
import { encodeWords, sentenceWindows, splitWords } from '../lib/data/word-alignment.js';
import { sha256File } from '../lib/files/checkpoint.js';
import { TokenClassifier } from '../lib/tagging/token-classifier.js';
import { taggedSet } from '../lib/tagging/token-task.js';
import { type TokenTrainOptions, type TokenTrainResult, trainTokenClassifier } from '../lib/tagging/token-trainer.js';
import type { BatchEvent, EpochMetrics } from '../lib/training/options.js';
import { demoTokenizer, makeEncoder, makeHfFolder, repoRoot, runPython } from './fixtures.js';
import { runCommand } from './helpers/run-command.js';
import { maxDifference } from './helpers/weights.js';

const TAGS = ['B-LOC', 'B-PER', 'I-LOC', 'I-PER', 'O'];
const FILLER = ['the', 'movie', 'was', 'great', 'plot', 'boring', 'film', 'good', 'bad', 'story', 'and', 'really', 'at'];
const PEOPLE = [['actors'], ['villain', 'laughing'], ['director']];
const PLACES = [['cinema'], ['theater', 'downtown'], ['city']];
const SIZES = { tokenizer: 'json' as const, layers: 2, hidden: 32, heads: 4, intermediate: 64 };

interface Sentences {
  words: string[][];
  tags: string[][];
}

/** `n` sentences of filler words with one or two people and places among them (a seeded LCG's high bits: the same every run). */
function sentences(n: number, seed: number): Sentences {
  let state = seed;
  const next = (k: number) => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return Math.floor(state / 65536) % k;
  };
  const out: Sentences = { words: [], tags: [] };
  for (let i = 0; i < n; i++) {
    const w: string[] = [];
    const t: string[] = [];
    const filler = (count: number) => {
      for (let k = 0; k < count; k++) {
        w.push(FILLER[next(FILLER.length)]!);
        t.push('O');
      }
    };
    filler(1 + next(3));
    for (let e = 1 + next(2); e > 0; e--) {
      const [choices, type] = next(2) === 0 ? [PEOPLE, 'PER'] : [PLACES, 'LOC'];
      choices[next(choices.length)]!.forEach((word, k) => {
        w.push(word);
        t.push(`${k === 0 ? 'B' : 'I'}-${type}`);
      });
      filler(1 + next(2));
    }
    out.words.push(w);
    out.tags.push(t);
  }
  return out;
}

const conll = (s: Sentences) => s.words.map((w, i) => w.map((word, k) => `${word} ${s.tags[i]![k]}`).join('\n')).join('\n\n') + '\n';
const jsonl = (s: Sentences) =>
  s.words.map((w, i) => JSON.stringify({ tokens: w, ner_tags: s.tags[i]!.map((t) => TAGS.indexOf(t)) })).join('\n') + '\n';
const asIds = (s: Sentences) => ({ words: s.words, tags: s.tags.map((t) => t.map((tag) => TAGS.indexOf(tag))) });

interface Reference {
  rows: { trainLabels: number[][] };
  batchLosses: number[];
  epochs: Array<{ epoch: number; validationLoss: number; validationAccuracy: number; predictions: number[][] }>;
  classifier: { weight: number[][]; bias: number[] };
  classifierInit: { weight: number[][]; bias: number[] };
}

/** The settings every run here shares with its reference job. */
const RUN = { epochs: 2, batchSize: 4, learningRate: 5e-4, weightDecay: 0.01, seed: 7, maxGradNorm: 1, maxLength: 16 };

/** The reference's training of `folder` on the sentences, with RUN's settings (a constant rate). */
async function referenceRun(
  folder: string,
  train: Sentences,
  validation: Sentences,
  extra: Record<string, unknown> = {},
): Promise<Reference> {
  const job = {
    folder,
    train: asIds(train),
    validation: asIds(validation),
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
    ...extra,
  };
  return JSON.parse(await runPython('test/python/token_classification_reference.py', [], JSON.stringify(job))) as Reference;
}

/**
 * The reference's probabilities, per word, of the token classifier folder `folder` on `words`,
 * read as predict() reads them: a sentence longer than maxLength in windows of whole words
 * (`sentenceWindows`), each predicted alone; `whole` says which sentences are one window.
 */
async function referencePredict(
  folder: string,
  words: string[][],
): Promise<{ probabilities: Array<Array<number[] | null>>; whole: boolean[] }> {
  const tokenizer = await TextTokenizer.load(join(folder, 'tokenizer.json'));
  const { windows, from } = sentenceWindows(tokenizer, words, RUN.maxLength);
  const job = { mode: 'predict', folder, sentences: windows, maxLength: RUN.maxLength };
  const out = JSON.parse(await runPython('test/python/token_classification_reference.py', [], JSON.stringify(job)));
  const ofSentence = (s: number) => windows.flatMap((_, i) => (from[i]!.sentence === s ? [i] : []));
  return {
    probabilities: words.map((_, s) => ofSentence(s).flatMap((i) => out.probabilities[i])),
    whole: words.map((_, s) => ofSentence(s).length === 1),
  };
}

/** A safetensors file's tensors as float32 arrays, by name. */
function readTensors(file: string): Map<string, Float32Array> {
  const tensors = loadBinding().readSafetensors(file).tensors;
  try {
    return new Map(tensors.map(([name, t]) => [name, Float32Array.from(t.toArray() as Float32Array)]));
  } finally {
    for (const [, t] of tensors) t.dispose();
  }
}

/** A kept folder's model.safetensors as name → values. */
const folderTensors = (folder: string) => readTensors(join(folder, 'model.safetensors'));
const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Math.max(...Array.from(a, (x, i) => Math.abs(x - b[i]!)));
const losses = (history: EpochMetrics[]) =>
  history.map((h) => [h.epoch, h.trainLoss, h.trainAccuracy, h.validationLoss, h.validationAccuracy]);

describe('token classification runs (resume, frozen, DistilBERT, refusals)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'torch-bert-ner-runs-'));
  const train = sentences(20, 11);
  const validation = sentences(6, 12);
  const data = join(dir, 'train.conll');
  const validationData = join(dir, 'validation.jsonl');
  let bert: { dir: string; weights: string };

  /** trainTokenClassifier() on the sentences with RUN's settings, its batch events collected in `batches`. */
  const run = (model: string, outDir: string, batches: BatchEvent[], options: Partial<TokenTrainOptions> = {}) =>
    trainTokenClassifier({
      model,
      data,
      validationData,
      labels: TAGS,
      outDir,
      schedule: 'constant',
      threads: 1,
      ...RUN,
      ...options,
      onProgress: (e) => {
        if (e.type === 'batch') batches.push(e);
        options.onProgress?.(e);
      },
    });

  beforeAll(async () => {
    writeFileSync(data, conll(train));
    writeFileSync(validationData, jsonl(validation));
    bert = await makeHfFolder({ layout: 'automodel', ...SIZES, dropout: 0, seed: 3 });
  }, 300_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("resumes a run aborted in epoch 2 to the uninterrupted run's kept weights, bit for bit, and its history", async () => {
    // Dropout 0.1 and a warmup then linear decay: the resumed run must restore the RNG and the
    // schedule's place as well as the weights and AdamW's moments.
    const folder = (await makeHfFolder({ layout: 'automodel', ...SIZES, dropout: 0.1, seed: 5 })).dir;
    const settings = { schedule: 'linear' as const, warmupRatio: 0.2, epochs: 3, learningRate: 1e-3 };
    const wholeBatches: BatchEvent[] = [];
    const whole = await run(folder, join(dir, 'whole'), wholeBatches, settings);
    // 5 batches an epoch; the kept weights are the last epoch's (trained after the resume, not
    // written before the abort), else the comparison below would prove nothing.
    expect(wholeBatches.length).toBe(15);
    expect(whole.best.epoch).toBe(3);

    const parts = join(dir, 'parts');
    const controller = new AbortController();
    const before: BatchEvent[] = [];
    let seen = 0;
    await expect(
      run(folder, parts, before, {
        ...settings,
        signal: controller.signal,
        onProgress: (e) => {
          if (e.type === 'batch' && ++seen === 7) controller.abort();
        },
      }),
    ).rejects.toBeInstanceOf(AbortError);
    // Stopped after epoch 2's second batch, its state saved there.
    expect(before.map((b) => [b.epoch, b.batch])).toEqual(wholeBatches.slice(0, 7).map((b) => [b.epoch, b.batch]));
    expect(existsSync(join(parts, 'training-state', 'state.json'))).toBe(true);

    const after: BatchEvent[] = [];
    const resumed = await run(folder, parts, after, { ...settings, resumeFrom: parts });
    // It goes on where it stopped: the rest of the batches, their losses and rates the whole run's.
    expect(after.map((b) => [b.epoch, b.batch, b.loss, b.learningRate])).toEqual(
      wholeBatches.slice(7).map((b) => [b.epoch, b.batch, b.loss, b.learningRate]),
    );
    expect(losses(resumed.history)).toEqual(losses(whole.history));
    expect(resumed.best).toEqual(whole.best);
    expect(resumed.evaluations).toEqual(whole.evaluations);
    expect(losses(JSON.parse(readFileSync(join(parts, 'history.json'), 'utf8')))).toEqual(losses(whole.history));
    expect(existsSync(join(parts, 'training-state'))).toBe(false);

    const a = readTensors(join(dir, 'whole', 'model.safetensors'));
    const b = readTensors(join(parts, 'model.safetensors'));
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    expect(a.size).toBeGreaterThan(30);
    for (const [name, t] of a) expect(bytes(t).equals(bytes(b.get(name)!)), name).toBe(true);
  }, 300_000);

  it("technique 'frozen' keeps every encoder weight as the source has it, and trains the head as the reference with the encoder frozen", async () => {
    const batches: BatchEvent[] = [];
    const out = join(dir, 'frozen');
    const [reference, result] = await Promise.all([
      referenceRun(bert.dir, train, validation, { frozen: true }),
      run(bert.dir, out, batches, { technique: 'frozen' }),
    ]);
    expect(batches.length).toBe(reference.batchLosses.length);
    batches.forEach((b, i) => {
      expect(b.loss, `batch ${i + 1}`).toBeCloseTo(reference.batchLosses[i]!, 4);
    });
    expect(result.history.map((h) => h.validationLoss)).toEqual(reference.epochs.map((e) => expect.closeTo(e.validationLoss, 4)));
    expect(result.history.map((h) => h.validationAccuracy)).toEqual(reference.epochs.map((e) => e.validationAccuracy));
    // The frozen encoder's losses are not the fully trained one's (the flag changes the run).
    const full = await referenceRun(bert.dir, train, validation);
    expect(maxAbsDiff(full.batchLosses.slice(1), reference.batchLosses.slice(1))).toBeGreaterThan(1e-3);

    const source = readTensors(bert.weights);
    const kept = readTensors(join(out, 'model.safetensors'));
    const encoderKeys = [...kept.keys()].filter((k) => k.startsWith('bert.'));
    // Every encoder tensor the source has but the pooler (a token classifier has none), each equal to it bit for bit.
    expect(encoderKeys.map((k) => k.slice('bert.'.length)).sort()).toEqual(
      [...source.keys()].filter((k) => !k.startsWith('pooler.')).sort(),
    );
    for (const key of encoderKeys) expect(bytes(kept.get(key)!).equals(bytes(source.get(key.slice('bert.'.length))!)), key).toBe(true);
    expect([...kept.keys()].filter((k) => !k.startsWith('bert.')).sort()).toEqual(['classifier.bias', 'classifier.weight']);
    // The classifier moved from its init (the reference's, drawn from the same seed), to the reference's trained one.
    const weight = kept.get('classifier.weight')!;
    const init = reference.classifierInit.weight.flat();
    expect(maxAbsDiff(Float32Array.from(init), weight)).toBeGreaterThan(1e-3);
    expect(maxAbsDiff(kept.get('classifier.bias')!, reference.classifierInit.bias)).toBeGreaterThan(1e-4);
    expect(result.best.epoch).toBe(RUN.epochs);
    expect(maxAbsDiff(weight, reference.classifier.weight.flat())).toBeLessThan(1e-4);
    expect(maxAbsDiff(kept.get('classifier.bias')!, reference.classifier.bias)).toBeLessThan(1e-4);
  }, 300_000);

  it("labelAllTokens trains as run_ner.py's label_all_tokens: a word's later pieces labelled too (B-X's as I-X), the loss and validation over pieces", async () => {
    const batches: BatchEvent[] = [];
    const out = join(dir, 'all-tokens');
    const [reference, result] = await Promise.all([
      referenceRun(bert.dir, train, validation, { labelAllTokens: true, labelNames: TAGS }),
      run(bert.dir, out, batches, { labelAllTokens: true }),
    ]);
    // The labelled pieces, in order, are the reference's; words of several pieces make them more than the words.
    const tokenizer = await TextTokenizer.load(join(bert.dir, 'tokenizer.json'));
    const ours = taggedSet(tokenizer, RUN.maxLength, { ...train, origins: [] }, TAGS, true);
    const labelled = (rows: number[][]) => rows.flat().filter((l) => l !== -100);
    expect(ours.tags.flatMap((t) => Array.from(t))).toEqual(labelled(reference.rows.trainLabels));
    const firstOnly = taggedSet(tokenizer, RUN.maxLength, { ...train, origins: [] }, TAGS);
    const words = firstOnly.rows.firstTokens.flatMap((f) => Array.from(f)).filter((t) => t >= 0).length;
    expect(labelled(reference.rows.trainLabels).length).toBeGreaterThan(words);
    // Some B- word is of several pieces: its later pieces are I-.
    const continuations = ours.rows.firstTokens.flatMap((pieces, s) => {
      const starts = new Set(firstOnly.rows.firstTokens[s]);
      let word = '';
      return Array.from(pieces, (position, k) => {
        const tag = TAGS[ours.tags[s]![k]!]!;
        if (starts.has(position)) word = tag;
        return starts.has(position) ? [] : [`${word} ${tag}`];
      }).flat();
    });
    expect(continuations).toContain('B-PER I-PER');
    expect(continuations.filter((c) => c.startsWith('B-')).every((c) => c.split(' ')[1] === `I-${c.slice(2, 5)}`)).toBe(true);

    expect(batches.length).toBe(reference.batchLosses.length);
    batches.forEach((b, i) => {
      expect(b.loss, `batch ${i + 1}`).toBeCloseTo(reference.batchLosses[i]!, 4);
    });
    expect(result.history.map((h) => h.validationLoss)).toEqual(reference.epochs.map((e) => expect.closeTo(e.validationLoss, 4)));
    expect(result.history.map((h) => h.validationAccuracy)).toEqual(reference.epochs.map((e) => e.validationAccuracy));
    const kept = readTensors(join(out, 'model.safetensors'));
    expect(maxAbsDiff(kept.get('classifier.bias')!, reference.classifier.bias)).toBeLessThan(1e-4);
    expect(maxAbsDiff(kept.get('classifier.weight')!, reference.classifier.weight.flat())).toBeLessThan(1e-4);
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).torch_bert.labelAllTokens).toBe(true);
    // evaluate() scores the folder as its validation did (every token), or, asked, the words.
    const classifier = await TokenClassifier.load(out, { device: 'cpu' });
    try {
      expect(classifier.labelAllTokens).toBe(true);
      const tokens = await classifier.evaluate(validationData, { batchSize: RUN.batchSize });
      expect([tokens.accuracy, tokens.f1]).toEqual([result.metrics!.accuracy, result.metrics!.f1]);
      expect(tokens.loss).toBeCloseTo(result.metrics!.loss, 5);
      const words = await classifier.evaluate(validationData, { batchSize: RUN.batchSize, labelAllTokens: false });
      // The words with a first token within maxLength.
      const scored = taggedSet(tokenizer, RUN.maxLength, { ...validation, origins: [] }, TAGS).rows.firstTokens.flatMap((f) =>
        Array.from(f).filter((t) => t >= 0),
      );
      expect(words.words).toBe(scored.length);
      expect(tokens.words).toBeGreaterThan(words.words);
    } finally {
      classifier.dispose();
    }
    await expect(run(bert.dir, join(dir, 'all-tokens-bad'), [], { labelAllTokens: 'yes' as unknown as boolean })).rejects.toThrow(
      'trainTokenClassifier(): labelAllTokens is true or false; got "yes"',
    );
  }, 300_000);

  it('trains a DistilBERT folder as the reference trains DistilBertForTokenClassification, and keeps one the reference predicts alike', async () => {
    const distil = await makeHfFolder({ layout: 'distilbert', ...SIZES, dropout: 0, seed: 4 });
    const batches: BatchEvent[] = [];
    const out = join(dir, 'distilbert');
    let result: TokenTrainResult;
    let reference: Reference;
    [reference, result] = await Promise.all([referenceRun(distil.dir, train, validation), run(distil.dir, out, batches)]);
    expect(batches.length).toBe(reference.batchLosses.length);
    batches.forEach((b, i) => {
      expect(b.loss, `batch ${i + 1}`).toBeCloseTo(reference.batchLosses[i]!, 4);
    });
    expect(result.history.map((h) => h.validationLoss)).toEqual(reference.epochs.map((e) => expect.closeTo(e.validationLoss, 4)));
    expect(result.history.map((h) => h.validationAccuracy)).toEqual(reference.epochs.map((e) => e.validationAccuracy));

    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(config.architectures).toEqual(['DistilBertForTokenClassification']);
    expect(config.model_type).toBe('distilbert');
    expect(config.id2label).toEqual(Object.fromEntries(TAGS.map((t, i) => [String(i), t])));
    const kept = readTensors(join(out, 'model.safetensors'));
    const source = readTensors(distil.weights);
    expect([...kept.keys()].sort()).toEqual(
      [...[...source.keys()].map((k) => `distilbert.${k}`), 'classifier.bias', 'classifier.weight'].sort(),
    );
    // Full fine-tuning: the encoder moved too.
    const moved = [...source].filter(([k, t]) => maxAbsDiff(t, kept.get(`distilbert.${k}`)!) > 1e-6).length;
    expect(moved).toBeGreaterThan(source.size / 2);

    const classifier = await TokenClassifier.load(out, { device: 'cpu' });
    try {
      expect(classifier.labels).toEqual(TAGS);
      const tagged = await classifier.predict(validation.words);
      const theirs = await referencePredict(out, validation.words);
      // Some sentence is longer than maxLength: read in windows, every word tagged.
      expect(theirs.whole).toContain(false);
      tagged.forEach((sentence, s) => {
        expect(sentence.tags.length).toBe(validation.words[s]!.length);
        sentence.tags.forEach((tag, w) => {
          const p = theirs.probabilities[s]![w]!;
          const c = p.indexOf(Math.max(...p));
          expect(tag).toBe(TAGS[c]);
          expect(sentence.scores[w]).toBeCloseTo(p[c]!, 5);
        });
      });
      // The kept epoch's predictions, as the reference made them at that epoch (the sentences that
      // fit: the others were cut there, run_ner.py's way).
      const whole = <T>(all: T[]) => all.filter((_, s) => theirs.whole[s]);
      expect(whole(tagged.map((s) => s.tags.map((t) => TAGS.indexOf(t!))))).toEqual(
        whole(reference.epochs[result.best.epoch - 1]!.predictions),
      );
    } finally {
      classifier.dispose();
    }
  }, 300_000);

  it("technique 'lora' keeps the adapters merged into the weights, and as PEFT's TOKEN_CLS adapter: the folder, loaded without them, scores as the adapted model did", async () => {
    const out = join(dir, 'lora');
    const result = await run(bert.dir, out, [], { technique: 'lora', learningRate: 5e-3, lora: { rank: 4, alpha: 8 } });
    const source = readTensors(bert.weights);
    const kept = readTensors(join(out, 'model.safetensors'));
    // The family's targets (query and value) carry W0 + (alpha / r)·B·A; every other encoder weight is the source's.
    const changed = [...kept.keys()].filter((k) => k.startsWith('bert.') && !bytes(kept.get(k)!).equals(bytes(source.get(k.slice(5))!)));
    expect(changed.sort()).toEqual(
      [0, 1].flatMap((l) => ['query', 'value'].map((m) => `bert.encoder.layer.${l}.attention.self.${m}.weight`)).sort(),
    );
    // PEFT's TOKEN_CLS adapter of the same run: on the source folder, base + (alpha / r)·B·A is the merged weight.
    expect(JSON.parse(readFileSync(join(out, 'adapter', 'adapter_config.json'), 'utf8'))).toMatchObject({
      peft_type: 'LORA',
      task_type: 'TOKEN_CLS',
      base_model_name_or_path: bert.dir,
      revision: null,
      r: 4,
      lora_alpha: 8,
      lora_dropout: 0,
      target_modules: ['attention.self.query', 'attention.self.value'],
      modules_to_save: ['classifier'],
    });
    const adapter = readTensors(join(out, 'adapter', 'adapter_model.safetensors'));
    const targets = changed.map((k) => k.slice('bert.'.length, -'.weight'.length));
    expect([...adapter.keys()].sort()).toEqual(
      [
        ...targets.flatMap((m) => [`base_model.model.bert.${m}.lora_A.weight`, `base_model.model.bert.${m}.lora_B.weight`]),
        'base_model.model.classifier.bias',
        'base_model.model.classifier.weight',
      ].sort(),
    );
    const hidden = SIZES.hidden;
    for (const m of targets) {
      const [a, b, w0] = [
        adapter.get(`base_model.model.bert.${m}.lora_A.weight`)!,
        adapter.get(`base_model.model.bert.${m}.lora_B.weight`)!,
        source.get(`${m}.weight`)!,
      ];
      expect([a.length, b.length]).toEqual([4 * hidden, hidden * 4]);
      expect(maxAbsDiff(a, new Float32Array(a.length))).toBeGreaterThan(0);
      const merged = w0.map((w, at) => {
        const [row, col] = [Math.floor(at / hidden), at % hidden];
        let update = 0;
        for (let r = 0; r < 4; r++) update += b[row * 4 + r]! * a[r * hidden + col]!;
        return w + (8 / 4) * update;
      });
      expect(maxAbsDiff(merged, kept.get(`bert.${m}.weight`)!)).toBeLessThan(1e-6);
    }
    for (const p of ['weight', 'bias'])
      expect(bytes(adapter.get(`base_model.model.classifier.${p}`)!).equals(bytes(kept.get(`classifier.${p}`)!))).toBe(true);
    // Committed with the folder: config.json's checksum is the file's.
    const torchBert = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).torch_bert as { archiveSha256: Record<string, string> };
    expect(Object.keys(torchBert.archiveSha256).sort()).toEqual(['adapter/adapter_model.safetensors', 'model.safetensors']);
    expect(torchBert.archiveSha256['adapter/adapter_model.safetensors']).toBe(
      await sha256File(join(out, 'adapter', 'adapter_model.safetensors')),
    );
    // Validation ran the adapters in activation space; the folder holds plain merged weights.
    const classifier = await TokenClassifier.load(out, { device: 'cpu' });
    try {
      const metrics = await classifier.evaluate(validationData, { batchSize: RUN.batchSize });
      expect(metrics.accuracy).toBe(result.metrics!.accuracy);
      expect(metrics.f1).toBe(result.metrics!.f1);
      expect(metrics.loss).toBeCloseTo(result.metrics!.loss, 5);
    } finally {
      classifier.dispose();
    }
  }, 300_000);

  it("saveTorchScript writes a file Python's torch.jit.load runs alone: forward_all_tokens gives predict()'s tags and scores at the words' first tokens", async () => {
    const out = join(dir, 'for-torchscript');
    await run(bert.dir, out, [], { epochs: 1 });
    const file = join(dir, 'tagger.pt');
    const classifier = await TokenClassifier.load(out, { device: 'cpu' });
    let predicted: Awaited<ReturnType<TokenClassifier['predict']>>;
    try {
      predicted = await classifier.predict(validation.words);
      await classifier.saveTorchScript(file);
    } finally {
      classifier.dispose();
    }
    // The windows predict() reads, as rows of the folder's tokenizer.
    const tokenizer = await TextTokenizer.load(join(out, 'tokenizer.json'));
    const { windows, from } = sentenceWindows(tokenizer, validation.words, RUN.maxLength);
    expect(windows.length).toBeGreaterThan(validation.words.length);
    const rows = encodeWords(tokenizer, windows, RUN.maxLength);
    const { inputIds, attentionMask, count, seqLen } = rows.encoded;
    const matrix = (a: Int32Array) => Array.from({ length: count }, (_, r) => Array.from(a.subarray(r * seqLen, (r + 1) * seqLen)));
    const code = [
      'import json, sys, torch',
      'job = json.load(sys.stdin)',
      'm = torch.jit.load(job["file"])',
      'with torch.no_grad():',
      '    lp = m.forward_all_tokens(torch.tensor(job["ids"]), torch.tensor(job["mask"]))',
      'print(json.dumps({"shape": list(lp.shape), "p": lp.exp().tolist()}))',
    ].join('\n');
    const theirs = JSON.parse(
      await runPython('-c', [code], JSON.stringify({ file, ids: matrix(inputIds), mask: matrix(attentionMask) })),
    ) as {
      shape: number[];
      p: number[][][];
    };
    expect(theirs.shape).toEqual([count, seqLen, TAGS.length]);
    let words = 0;
    let worst = 0;
    from.forEach(({ sentence, word }, i) => {
      rows.firstTokens[i]!.forEach((first, w) => {
        const ours = { tag: predicted[sentence]!.tags[word + w], score: predicted[sentence]!.scores[word + w] };
        words++;
        if (first < 0) {
          expect(ours.tag).toBeNull();
          return;
        }
        const p = theirs.p[i]![first]!;
        expect(p.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
        const top = p.indexOf(Math.max(...p));
        expect(ours.tag).toBe(TAGS[top]);
        worst = Math.max(worst, Math.abs(ours.score! - p[top]!));
      });
    });
    expect(words).toBe(validation.words.flat().length);
    expect(worst).toBeLessThan(1e-5);
  }, 300_000);

  it("tagTokens and entities with aggregation 'simple' tag each token alone, as the reference's pipeline (aggregation_strategy='none', 'simple'): entities begin and end inside words", async () => {
    // The head as initialised (learning rate 0): tags that change from token to token.
    const out = join(dir, 'simple');
    await run(bert.dir, out, [], { epochs: 1, learningRate: 0 });
    const texts = ['the actors laughing at the city downtown, really storytelling', 'directors and villains at cinemas; greatness!'];
    const classifier = await TokenClassifier.load(out, { device: 'cpu', maxLength: 64 });
    let ours: Awaited<ReturnType<TokenClassifier['entities']>>;
    let tokens: Awaited<ReturnType<TokenClassifier['tagTokens']>>;
    try {
      ours = await classifier.entities(texts, { aggregation: 'simple' });
      tokens = await classifier.tagTokens(texts);
      await expect(classifier.entities(texts, { aggregation: 'none' as 'simple' })).rejects.toThrow(
        'aggregation must be one of first, average, max, simple; got "none"',
      );
    } finally {
      classifier.dispose();
    }
    const job = { mode: 'entities', folder: out, labels: TAGS, maxLength: 64, texts: texts.map((t) => ({ words: splitWords(t) })) };
    const reference = JSON.parse(await runPython('test/python/token_classification_reference.py', [], JSON.stringify(job))) as {
      entities: Array<Array<[string, number, number, number]>>;
      tokens: Array<Array<[string, string, number, number, number]>>;
    };
    const theirs = reference.entities;
    // tagTokens: every token, its tag and characters, as the reference's pipeline reads them before grouping.
    expect(tokens.map((ts) => ts.map((t) => [t.token, t.tag, t.start, t.end]))).toEqual(
      reference.tokens.map((ts) => ts.map(([token, tag, start, end]) => [token, tag, start, end])),
    );
    expect(tokens.flat().map((t) => t.score)).toEqual(reference.tokens.flat().map(([, , , , score]) => expect.closeTo(score, 5)));
    expect(ours.map((es) => es.map((e) => [e.type, e.start, e.end]))).toEqual(
      theirs.map((es) => es.map(([type, start, end]) => [type, start, end])),
    );
    expect(ours.flat().map((e) => e.score)).toEqual(theirs.flat().map(([, , , score]) => expect.closeTo(score, 5)));
    ours.forEach((es, i) => {
      for (const e of es) expect(e.text).toBe(texts[i]!.slice(e.start, e.end));
    });
    // Some entity begins or ends inside a word: the tokens were tagged apart.
    const inside = ours.flatMap((es, i) => {
      const words = splitWords(texts[i]!);
      return es.filter((e) => !words.some((w) => w.start === e.start) || !words.some((w) => w.end === e.end));
    });
    expect(inside.length).toBeGreaterThan(0);
  }, 300_000);

  it("starts the head from a token classifier's own where its tags are the run's (in any order), else initialised", async () => {
    const first = join(dir, 'first');
    await run(bert.dir, first, [], { epochs: 1 });
    const trained = readTensors(join(first, 'model.safetensors'));
    // Learning rate 0: the kept head is the head the run started from.
    const reordered = [...TAGS].reverse();
    const again = await run(first, join(dir, 'again'), [], { epochs: 1, learningRate: 0, labels: reordered });
    expect(again.notes).toContain(`the head starts from the checkpoint's token-classification head (its tags ${TAGS.join(', ')})`);
    const kept = readTensors(join(dir, 'again', 'model.safetensors'));
    const hidden = SIZES.hidden;
    reordered.forEach((tag, c) => {
      const row = TAGS.indexOf(tag);
      expect(bytes(kept.get('classifier.weight')!.subarray(c * hidden, (c + 1) * hidden))).toEqual(
        bytes(trained.get('classifier.weight')!.subarray(row * hidden, (row + 1) * hidden)),
      );
      expect(kept.get('classifier.bias')![c]).toBe(trained.get('classifier.bias')![row]);
    });
    // Other tags: the head starts initialised, as from a model without one.
    const other = await run(first, join(dir, 'other'), [], { epochs: 1, learningRate: 0, labels: [...TAGS, 'B-MISC'] });
    expect(other.notes.find((n) => n.includes('token-classification head tags'))).toMatch(/so the head starts initialised/);
    const fresh = readTensors(join(dir, 'other', 'model.safetensors'));
    expect(maxAbsDiff(fresh.get('classifier.bias')!, new Float32Array(TAGS.length + 1))).toBe(0);
  }, 300_000);

  /**
   * Issue 16's equivalence for token classification: two Gloo ranks with batch 2 each end with
   * one process's weights with batch 4; each validates half the sentences, and the sums reduced
   * give one process's metrics. Rank 0 alone writes.
   */
  it.skipIf(!loadBinding().distributedBackends().includes('gloo'))(
    '2 ranks with batch 2 end with the weights and validation of 1 process with batch 4; rank 0 alone writes',
    async () => {
      const helper = join(repoRoot, 'test', 'helpers', 'distributed-token-train.mjs');
      const options = (outDir: string, batchSize: number) =>
        JSON.stringify({
          model: bert.dir,
          data,
          validationData,
          labels: TAGS,
          outDir,
          ...RUN,
          batchSize,
          learningRate: 2e-3,
          // Equal arithmetic in another order: eps 1e-6 keeps AdamW from turning rounding-level
          // gradients into steps of the learning rate (test/distributed.test.ts says more).
          eps: 1e-6,
          threads: 1,
          distributedTimeout: 60,
        });
      const single = join(dir, 'ddp-single');
      const one = await runCommand(process.execPath, [helper, options(single, 4)]);
      expect(one.code, one.stderr).toBe(0);
      const port = await freePort();
      const ranks = await Promise.all(
        [0, 1].map((rank) =>
          runCommand(process.execPath, [helper, options(join(dir, rank === 0 ? 'ddp' : 'ddp-rank1'), 2)], rankVariables(rank, 2, port)),
        ),
      );
      for (const r of ranks) expect(r.code, r.stderr).toBe(0);
      expect(existsSync(join(dir, 'ddp-rank1'))).toBe(false);
      expect(maxDifference(folderTensors(join(dir, 'ddp')), folderTensors(single))).toBeLessThan(1e-5);
      // Every rank reports the whole validation set's metrics, one process's.
      const reference = JSON.parse(one.stdout) as TokenTrainResult;
      for (const r of ranks) {
        const result = JSON.parse(r.stdout) as TokenTrainResult;
        expect(result.history.map((h) => h.validationAccuracy)).toEqual(reference.history.map((h) => h.validationAccuracy));
        expect(result.history.map((h) => h.validationLoss)).toEqual(reference.history.map((h) => expect.closeTo(h.validationLoss, 6)));
        expect({ ...result.metrics, loss: 0 }).toEqual({ ...reference.metrics, loss: 0 });
      }
      // The weights moved: one process with batch 2 ends elsewhere.
      const small = join(dir, 'ddp-b2');
      expect((await runCommand(process.execPath, [helper, options(small, 2)])).code).toBe(0);
      expect(maxDifference(folderTensors(small), folderTensors(single))).toBeGreaterThan(1e-4);
    },
    300_000,
  );

  it("bestMetric 'f1' keeps the evaluation of highest seqeval entity F1, recorded per epoch", async () => {
    const out = join(dir, 'best-f1');
    const result = await run(bert.dir, out, [], { epochs: 8, learningRate: 5e-3, bestMetric: 'f1' });
    const f1s = result.history.map((h) => h.validationF1!);
    expect(f1s.every((f) => f >= 0 && f <= 1)).toBe(true);
    // Strictly higher to replace: the first epoch of the highest F1.
    expect(result.best.epoch).toBe(f1s.indexOf(Math.max(...f1s)) + 1);
    // ... which the loss would not keep (it goes on falling after the F1 is at its highest).
    const losses = result.history.map((h) => h.validationLoss);
    expect(losses.indexOf(Math.min(...losses)) + 1).not.toBe(result.best.epoch);
    expect(result.best.validationF1).toBe(result.metrics!.f1);
    // Validation's F1 is seqeval's on the kept weights, as evaluate() computes it.
    const classifier = await TokenClassifier.load(out, { device: 'cpu' });
    try {
      expect((await classifier.evaluate(validationData)).f1).toBe(result.best.validationF1);
    } finally {
      classifier.dispose();
    }
    // A metric of another problem type is refused, naming the ones there are.
    await expect(run(bert.dir, join(dir, 'pearson'), [], { bestMetric: 'pearson' as 'f1' })).rejects.toThrow(
      /bestMetric must be one of loss, f1, accuracy, macroF1; got "pearson"/,
    );
  }, 300_000);

  describe('refusals', () => {
    const base = () => ({ model: bert.dir, data, validationData, labels: TAGS, epochs: 1, threads: 1 });

    it("refuses technique 'adapter', naming the techniques it has", async () => {
      const outDir = join(dir, 'adapter');
      await expect(trainTokenClassifier({ ...base(), outDir, technique: 'adapter' as 'full' })).rejects.toThrow(
        /technique must be 'full', 'lora' or 'frozen'; got "adapter"/,
      );
      expect(existsSync(outDir)).toBe(false);
    });

    it('refuses a TorchScript encoder, naming the file', async () => {
      const pt = await makeEncoder({ layers: 2, hidden: 32, heads: 4, intermediate: 64, tokenizer: demoTokenizer, maxPosition: 64 });
      const outDir = join(dir, 'torchscript');
      const refused = await trainTokenClassifier({ ...base(), model: pt, outDir, tokenizer: demoTokenizer }).catch((e: Error) => e);
      expect(refused).toBeInstanceOf(Error);
      expect((refused as Error).message).toContain(pt);
      expect((refused as Error).message).toMatch(/TorchScript file; token classification trains a Hugging Face model folder or Hub id/);
      expect(existsSync(outDir)).toBe(false);
    });

    it('refuses an unknown option, naming it and the one meant', async () => {
      const options = { ...base(), outDir: join(dir, 'misspelt'), learningrate: 1e-3 } as unknown as TokenTrainOptions;
      await expect(trainTokenClassifier(options)).rejects.toThrow(/has no option 'learningrate': did you mean 'learningRate'\?/);
      const unlike = { ...base(), outDir: join(dir, 'unknown'), pooling: 'mean' } as unknown as TokenTrainOptions;
      await expect(trainTokenClassifier(unlike)).rejects.toThrow(/has no option 'pooling'/);
    });

    it('refuses integer tags without their names, asking for labels', async () => {
      const { labels: _labels, ...withoutLabels } = base();
      const outDir = join(dir, 'ids');
      await expect(trainTokenClassifier({ ...withoutLabels, data: validationData, outDir })).rejects.toThrow(
        /validation\.jsonl.*field 'ner_tags' item 1 is class id \d+, but no tag names are given: pass labels \/ --labels/,
      );
      expect(existsSync(outDir)).toBe(false);
    });

    it('refuses to load a folder that is not a token classifier', async () => {
      await expect(TokenClassifier.load(bert.dir, { device: 'cpu' })).rejects.toThrow(
        /is not a token classifier \(architectures \["BertModel"\]\): train one on it with trainTokenClassifier\(\)/,
      );
    });
  });
});
