/**
 * train() end to end on small locally made encoders: parity with an independent plain-PyTorch
 * implementation of the seed job, the saved classifier in Python, frozen-encoder invariants,
 * encoder signatures, hidden sizes, and every bad input of the foundation issue.
 */
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { AbortError, InputError, ModelError } from '../lib/addon/errors.js';
import { loadBinding } from '../lib/addon/loader.js';
import type { PredictOptions } from '../lib/classification/classifier.js';
import { INFERENCE_CHUNK } from '../lib/data/batching.js';
import { inferLabelNames, labelIds, loadExamples, stratifiedSplit } from '../lib/data/data.js';
import { TextTokenizer } from '../lib/data/tokenizer.js';
import {
  Classifier,
  evaluate,
  exportAdapterHub,
  exportHuggingFace,
  loadClassifier,
  predict,
  pretrain,
  promptClassifier,
  type TrainResult,
  train,
} from '../lib/index.js';
import type { EpochMetrics, PredictEvent, TrainOptions } from '../lib/training/options.js';
import { demoReviews, demoTokenizer, INFORMATIVE_ENCODER, makeEncoder, referenceTrain, runPython } from './fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-train-'));
const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

/** Small enough to train in seconds, with features made informative on the separate pre-training set. */
let informativeEncoder: string;
beforeAll(async () => {
  informativeEncoder = await makeEncoder(INFORMATIVE_ENCODER);
});

const SMALL = { maxLength: 48, batchSize: 32, learningRate: 1e-3, headHidden: 64 } as const;

describe('parity with the plain-PyTorch reference of the seed job', () => {
  it('gives the same losses and accuracies epoch by epoch', async () => {
    const epochs = 3;
    const seed = 42;
    // The reference gets exactly our tokens and split (the split is libtorch's randperm, which
    // Python reproduces), then does everything else itself: head, AdamW, NLL loss, shuffling.
    const tokenizer = await TextTokenizer.load(demoTokenizer);
    const raw = await loadExamples(demoReviews);
    const names = inferLabelNames(raw.labels!, raw.origin);
    const ids = labelIds(raw.labels!, names, raw.origin);
    const split = stratifiedSplit(ids, 0.2, seed, loadBinding().randperm);
    const encoded = tokenizer.encodeBatch(raw.texts, SMALL.maxLength);
    const reference = await referenceTrain(encoded, split, (i) => ids[i]!, {
      encoder: informativeEncoder,
      numClasses: names.length,
      epochs,
      batchSize: SMALL.batchSize,
      lr: SMALL.learningRate,
      weightDecay: 0.01,
      betas: [0.9, 0.999],
      eps: 1e-8,
      seed,
      headHidden: SMALL.headHidden,
      dropout: 0.1,
      pooling: 'cls',
    });

    // The reference does not clip gradients (the seed did not); our default clips at norm 1.0.
    const ours = await train({
      data: demoReviews,
      encoder: informativeEncoder,
      tokenizer: demoTokenizer,
      epochs,
      seed,
      maxGradNorm: 0,
      ...SMALL,
    });
    ours.classifier.dispose();
    expect(ours.trainExamples).toBe(split.train.length);
    expect(ours.validationExamples).toBe(split.validation.length);
    // The encoder is informative: far above the 50% majority class.
    expect(reference.epochs.at(-1)!.valAccuracy).toBeGreaterThan(0.8);
    for (let e = 0; e < epochs; e++) {
      const r = reference.epochs[e]!;
      const o = ours.history[e]!;
      expect(Math.abs(o.validationAccuracy! - r.valAccuracy!)).toBeLessThanOrEqual(0.015);
      expect(Math.abs(o.validationLoss - r.valLoss) / r.valLoss).toBeLessThan(0.05);
      expect(Math.abs(o.trainLoss - r.trainLoss) / r.trainLoss).toBeLessThan(0.05);
    }
  });
});

describe('a trained classifier', () => {
  let outDir: string;
  let result: TrainResult;
  beforeAll(async () => {
    outDir = join(work, 'trained');
    result = await train({ data: demoReviews, encoder: informativeEncoder, tokenizer: demoTokenizer, outDir, epochs: 2, ...SMALL });
  });

  it('writes classifier.pt, config.json, tokenizer.json and history.json', () => {
    const config = JSON.parse(readFileSync(join(outDir, 'config.json'), 'utf8'));
    expect(config.labels).toEqual(['negative', 'positive']);
    expect(config.maxLength).toBe(SMALL.maxLength);
    expect(config.pooling).toBe('cls');
    expect(config.encoder.hiddenSize).toBe(64);
    expect(config.libtorchVersion).toMatch(/^\d+\.\d+/);
    expect(config.classifierSha256).toBe(sha(join(outDir, 'classifier.pt')));
    expect(config.metrics.validationLoss).toBeCloseTo(result.best.validationLoss, 10);
    expect(readFileSync(join(outDir, 'tokenizer.json'), 'utf8')).toBe(readFileSync(demoTokenizer, 'utf8'));
    const history = JSON.parse(readFileSync(join(outDir, 'history.json'), 'utf8'));
    expect(history).toHaveLength(2);
    expect(history[1].validationAccuracy).toBeCloseTo(result.history[1]!.validationAccuracy!, 12);
  });

  /** 70 texts of 2 to 24 words, in no order of length. */
  const mixedTexts = () =>
    Array.from(
      { length: 70 },
      (_, i) =>
        Array.from({ length: 1 + ((i * 7) % 23) }, (_, k) => (k % 3 === 0 ? 'wonderful' : k % 3 === 1 ? 'dull' : 'film')).join(' ') +
        ` ${i}`,
    );

  it('predicts texts of mixed lengths (batched longest first) in input order, as each text alone', async () => {
    const texts = mixedTexts();
    const together = await result.classifier.predict(texts);
    expect(together).toHaveLength(texts.length);
    for (let i = 0; i < texts.length; i += 7) {
      const [alone] = await result.classifier.predict([texts[i]!]);
      expect(together[i]!.labelId).toBe(alone!.labelId);
      for (const label of ['negative', 'positive'])
        expect(Math.abs(together[i]!.probabilities[label]! - alone!.probabilities[label]!)).toBeLessThan(1e-5);
    }
    // Probabilities differ across texts (the order really is the input's, not one repeated row).
    expect(new Set(together.map((p) => p.probabilities.positive!.toFixed(6))).size).toBeGreaterThan(10);
  });

  it('predict() and evaluate() stop at an abort between batches, rejecting with an AbortError', async () => {
    // Before: predict() had no signal (a long call could not be stopped), and evaluate() aborted
    // between batches rejected with the signal's DOMException, not this library's AbortError.
    const { classifier } = result;
    const tokenizer = classifier.tokenizer;
    const texts = ['a wonderful film', 'a dull film', 'a film'];
    const unaborted = await classifier.predict(texts);
    for (const [method, call] of [
      ['predict', (signal: AbortSignal) => classifier.predict(texts, { batchSize: 1, signal })],
      [
        'evaluate',
        (signal: AbortSignal) => classifier.evaluate({ texts, labels: ['positive', 'negative', 'negative'] }, { batchSize: 1, signal }),
      ],
    ] as const) {
      const controller = new AbortController();
      // The texts are tokenized whole, then the signal is aborted: the batches see it.
      const encode = tokenizer.encodeBatchAsync.bind(tokenizer);
      tokenizer.encodeBatchAsync = async (...args) => {
        const encoded = await encode(...args);
        controller.abort();
        return encoded;
      };
      try {
        const run = call(controller.signal);
        await expect(run).rejects.toBeInstanceOf(AbortError);
        await expect(run).rejects.toThrow(`${method}() was aborted`);
      } finally {
        tokenizer.encodeBatchAsync = encode;
      }
    }
    // Usable after an abort, with nothing of it left behind.
    expect(await classifier.predict(texts)).toEqual(unaborted);
  });

  /**
   * Runs `use` with predict() and evaluate() tokenizing at most `rows` texts at a time
   * (INFERENCE_CHUNK), and gives it the sizes of the tokenizer's encodeBatchAsync calls.
   */
  async function inChunksOf<T>(rows: number, use: (tokenized: number[]) => Promise<T>): Promise<T> {
    const tokenizer = result.classifier.tokenizer;
    const encode = tokenizer.encodeBatchAsync.bind(tokenizer);
    const tokenized: number[] = [];
    tokenizer.encodeBatchAsync = (texts, ...rest) => {
      tokenized.push(texts.length);
      return encode(texts, ...rest);
    };
    const before = INFERENCE_CHUNK.rows;
    INFERENCE_CHUNK.rows = rows;
    try {
      return await use(tokenized);
    } finally {
      INFERENCE_CHUNK.rows = before;
      tokenizer.encodeBatchAsync = encode;
    }
  }

  /** The `done` of each PredictEvent, checked against `total`. */
  function counted(events: PredictEvent[], total: number): number[] {
    for (const e of events) expect(e).toEqual({ type: 'predict', done: e.done, total });
    return events.map((e) => e.done);
  }

  it('predicts and evaluates many texts a chunk at a time, exactly as in one pass, reporting every batch', async () => {
    // Before: every text was tokenized into rows padded to the max length before the first batch
    // ran (200k texts: 0.6 GB), and nothing was reported until the last batch. Now more texts
    // than a chunk are measured, cut into the batches one pass cuts (so that each batch, and its
    // result to the last bit, is the same: batches cut chunk by chunk changed probabilities by up
    // to 2e-6), and tokenized a chunk of them at a time. 70 texts in chunks of 10 cross 6 boundaries.
    const { classifier } = result;
    const texts = mixedTexts();
    const labels = texts.map((_, i) => (i % 3 === 0 ? 'positive' : 'negative'));
    const batchSize = 4;
    const onePass = await classifier.predict(texts, { batchSize });
    const onePassEvaluation = await classifier.evaluate({ texts, labels }, { batchSize });
    await inChunksOf(10, async (tokenized) => {
      const events: PredictEvent[] = [];
      expect(await classifier.predict(texts, { batchSize, onProgress: (e) => events.push(e) })).toEqual(onePass);
      // Each text tokenized once (besides measuring), in chunks of whole batches: at least 10 rows, at most 10 + 3.
      expect(tokenized.reduce((a, b) => a + b)).toBe(70);
      expect(tokenized.length).toBeGreaterThanOrEqual(6);
      for (const rows of tokenized.slice(0, -1)) expect(rows).toBeGreaterThanOrEqual(10);
      expect(Math.max(...tokenized)).toBeLessThanOrEqual(10 + batchSize - 1);
      // A rising count to 70, a batch (at most 4 texts) at a time.
      const done = counted(events, 70);
      expect(done.at(-1)).toBe(70);
      const steps = done.map((d, i) => d - (done[i - 1] ?? 0));
      expect(Math.min(...steps)).toBeGreaterThanOrEqual(1);
      expect(Math.max(...steps)).toBeLessThanOrEqual(batchSize);
      expect(done.length).toBeGreaterThanOrEqual(70 / batchSize);

      events.length = 0;
      const evaluation = await classifier.evaluate({ texts, labels }, { batchSize, onProgress: (e) => events.push(e) });
      expect(evaluation).toEqual(onePassEvaluation);
      expect(counted(events, 70)).toEqual(done);
    });
    // One chunk or fewer: reported the same way.
    const events: PredictEvent[] = [];
    await classifier.predict(texts, { batchSize, onProgress: (e) => events.push(e) });
    expect(counted(events, 70).at(-1)).toBe(70);
  });

  it('stops predicting and evaluating texts that come a chunk at a time at the next batch after an abort', async () => {
    const { classifier } = result;
    const texts = mixedTexts();
    const labels = texts.map((_, i) => (i % 3 === 0 ? 'positive' : 'negative'));
    const unaborted = await classifier.predict(texts, { batchSize: 4 });
    await inChunksOf(10, async () => {
      for (const [method, call] of [
        ['predict', (options: PredictOptions) => classifier.predict(texts, options)],
        ['evaluate', (options: PredictOptions) => classifier.evaluate({ texts, labels }, options)],
      ] as const) {
        const controller = new AbortController();
        const events: PredictEvent[] = [];
        const run = call({
          batchSize: 4,
          signal: controller.signal,
          onProgress: (e) => {
            events.push(e);
            // In the third chunk.
            if (e.done >= 25) controller.abort();
          },
        });
        await expect(run).rejects.toBeInstanceOf(AbortError);
        await expect(run).rejects.toThrow(`${method}() was aborted`);
        // No batch ran after the one that aborted.
        expect(events.at(-1)!.done).toBeLessThan(25 + 4);
        expect(events.filter((e) => e.done >= 25)).toHaveLength(1);
      }
      expect(await classifier.predict(texts, { batchSize: 4 })).toEqual(unaborted);
    });
  });

  /** The trained classifier's predictions of `texts`, and what a Python script is given to predict them: classifier.pt and the token ids. */
  async function predictedInNode(texts: string[]) {
    const classifier = await loadClassifier(outDir);
    const ours = await classifier.predict(texts);
    const encoded = classifier.tokenizer.encodeBatch(texts, SMALL.maxLength);
    classifier.dispose();
    const ids = { texts, ids: Array.from(encoded.inputIds), mask: Array.from(encoded.attentionMask) };
    return { ours, pythonInput: JSON.stringify({ model: join(outDir, 'classifier.pt'), ...ids }) };
  }

  it('predicts in Python (torch.jit.load) exactly as in Node', async () => {
    const texts = ['a wonderful and moving film', 'the acting was dull and the plot was terrible', 'it was fine'];
    const { ours, pythonInput } = await predictedInNode(texts);
    const script = `
import json, sys, torch
spec = json.load(sys.stdin)
m = torch.jit.load(spec["model"])
m.eval()
ids = torch.tensor(spec["ids"]).view(len(spec["texts"]), -1)
mask = torch.tensor(spec["mask"]).view(len(spec["texts"]), -1)
with torch.no_grad():
    print(json.dumps(m(ids, mask).exp().tolist()))
`;
    const python = JSON.parse(await runPython('-c', [script], pythonInput)) as number[][];
    python.forEach((row, i) => {
      expect(row[0]! + row[1]!).toBeCloseTo(1, 5);
      expect(Math.abs(row[0]! - ours[i]!.probabilities.negative!)).toBeLessThan(1e-5);
      expect(Math.abs(row[1]! - ours[i]!.probabilities.positive!)).toBeLessThan(1e-5);
    });
    expect(ours[0]!.label).toBe('positive');
    expect(ours[1]!.label).toBe('negative');
  });

  it('runs in Python as loaded, without eval(): classifier.pt is saved in eval mode', async () => {
    // The README: Python, C++ libtorch or Node load the classifier and run it as is. Saved in
    // training mode, the head's dropout would draw anew at every call.
    const { ours, pythonInput } = await predictedInNode(['a wonderful and moving film', 'the acting was dull and the plot was terrible']);
    const script = `
import json, sys, torch
spec = json.load(sys.stdin)
m = torch.jit.load(spec["model"])
ids = torch.tensor(spec["ids"]).view(len(spec["texts"]), -1)
mask = torch.tensor(spec["mask"]).view(len(spec["texts"]), -1)
with torch.no_grad():
    print(json.dumps({"training": m.training, "calls": [m(ids, mask).exp().tolist() for _ in range(3)]}))
`;
    const python = JSON.parse(await runPython('-c', [script], pythonInput)) as { training: boolean; calls: number[][][] };
    expect(python.training).toBe(false);
    for (const call of python.calls) {
      call.forEach((row, i) => {
        expect(Math.abs(row[0]! - ours[i]!.probabilities.negative!)).toBeLessThan(1e-5);
        expect(Math.abs(row[1]! - ours[i]!.probabilities.positive!)).toBeLessThan(1e-5);
      });
    }
  });

  it('keeps the frozen encoder bit-identical while the head learns', async () => {
    const binding = loadBinding();
    const original = binding.ScriptModule.load(informativeEncoder);
    const before = new Map(original.namedParameters());
    const trained = result.classifier.module.namedParameters();
    const encoderParams = trained.filter(([n]) => n.startsWith('encoder.'));
    expect(encoderParams.length).toBe(before.size);
    for (const [name, tensor] of encoderParams) {
      expect(
        Buffer.from((tensor.toArray() as Float32Array).buffer).equals(
          Buffer.from((before.get(name.slice('encoder.'.length))!.toArray() as Float32Array).buffer),
        ),
      ).toBe(true);
    }
    // The head starts from nn.Linear's init under the seed; training must have moved it.
    const fresh = binding.buildClassifier(binding.ScriptModule.load(informativeEncoder), {
      numClasses: 2,
      headHidden: SMALL.headHidden,
      dropout: 0.1,
      pooling: 'cls',
      seed: 42,
    });
    const initial = new Map(fresh.module.namedParameters());
    for (const [name, tensor] of trained.filter(([n]) => n.startsWith('head.'))) {
      const a = tensor.toArray() as Float32Array;
      const b = initial.get(name)!.toArray() as Float32Array;
      const maxDiff = a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
      expect(maxDiff).toBeGreaterThan(1e-4);
    }
    original.dispose();
    fresh.module.dispose();
  });

  it('evaluates a saved classifier to the validation metrics of its best epoch', async () => {
    // The validation rows are the stratified split of reviews.csv; evaluate them through the public API.
    const raw = await loadExamples(demoReviews);
    const ids = labelIds(raw.labels!, ['negative', 'positive'], raw.origin);
    const split = stratifiedSplit(ids, 0.2, 42, loadBinding().randperm);
    const metrics = await evaluate(outDir, {
      texts: Array.from(split.validation, (i) => raw.texts[i]!),
      labels: Array.from(split.validation, (i) => raw.labels![i]!),
    });
    expect(metrics.examples).toBe(split.validation.length);
    expect(Math.abs(metrics.loss - result.best.validationLoss)).toBeLessThan(1e-5);
    expect(metrics.accuracy).toBeCloseTo(result.best.validationAccuracy!, 10);
    const byPredict = await predict(result.classifier, ['a wonderful and moving film']);
    expect(byPredict[0]!.label).toBe('positive');
  });
});

describe('encoders of other shapes', () => {
  const tinyData = async () => {
    const raw = await loadExamples(demoReviews);
    return { texts: raw.texts.slice(0, 160), labels: raw.labels!.slice(0, 160) };
  };
  for (const [signature, output] of [
    [3, 'tuple'],
    [2, 'dict'],
    [2, 'tensor'],
  ] as const) {
    it(`trains on forward with ${signature} inputs returning a ${output}, hidden size 48`, async () => {
      const encoder = await makeEncoder({
        layers: 1,
        hidden: 48,
        heads: 2,
        intermediate: 96,
        tokenizer: demoTokenizer,
        signature,
        output,
        seed: 3,
      });
      const result = await train({ data: await tinyData(), encoder, tokenizer: demoTokenizer, epochs: 1, ...SMALL, headHidden: 16 });
      expect(result.encoder).toEqual({
        arity: signature,
        outputKind: output,
        outputKey: output === 'dict' ? 'last_hidden_state' : null,
        hiddenSize: 48,
      });
      const dense = result.classifier.module.namedParameters().find(([n]) => n === 'head.dense.weight')![1];
      expect(dense.shape).toEqual([16, 48]);
      expect(Number.isFinite(result.best.validationLoss)).toBe(true);
      result.classifier.dispose();
    });
  }

  it('supports mean pooling, matching a masked mean computed in Python', async () => {
    const result = await train({
      data: await tinyData(),
      encoder: informativeEncoder,
      tokenizer: demoTokenizer,
      epochs: 1,
      pooling: 'mean',
      ...SMALL,
    });
    const classifier = result.classifier;
    const encoded = classifier.tokenizer.encodeBatch(['short one', 'a somewhat longer sentence about a film'], SMALL.maxLength);
    const binding = loadBinding();
    const ids = binding.Tensor.fromArray(encoded.inputIds, [2, SMALL.maxLength], 'int64');
    const mask = binding.Tensor.fromArray(encoded.attentionMask, [2, SMALL.maxLength], 'int64');
    const features = classifier.module.runMethod('features', ids, mask) as import('../lib/addon/binding.js').NativeTensor;
    const script = `
import json, sys, torch
spec = json.load(sys.stdin)
enc = torch.jit.load(spec["encoder"])
ids = torch.tensor(spec["ids"]).view(2, -1); mask = torch.tensor(spec["mask"]).view(2, -1)
with torch.no_grad():
    h = enc(ids, mask)[0]
m = mask.unsqueeze(-1).float()
print(json.dumps(((h * m).sum(1) / m.sum(1)).flatten().tolist()))
`;
    const expected = JSON.parse(
      await runPython(
        '-c',
        [script],
        JSON.stringify({ encoder: informativeEncoder, ids: Array.from(encoded.inputIds), mask: Array.from(encoded.attentionMask) }),
      ),
    ) as number[];
    const actual = features.toArray() as Float32Array;
    expect(actual.length).toBe(expected.length);
    expected.forEach((v, i) => {
      expect(Math.abs(actual[i]! - v)).toBeLessThan(1e-5);
    });
    classifier.dispose();
  });
});

describe('a vocab.txt as the tokenizer', () => {
  it('trains exactly as the tokenizer.json with the same vocabulary', async () => {
    // Before: "tokenizer file .../vocab.txt is not valid JSON: Unexpected token 'P', ..." (the help
    // names vocab.txt, and a TorchScript encoder of an older BERT has no tokenizer.json).
    const dir = join(work, 'vocab-only');
    mkdirSync(dir);
    const vocab = JSON.parse(readFileSync(demoTokenizer, 'utf8')).model.vocab as Record<string, number>;
    const byId = Object.entries(vocab).sort((a, b) => a[1] - b[1]);
    expect(byId.every(([, id], i) => id === i)).toBe(true);
    writeFileSync(join(dir, 'vocab.txt'), byId.map(([token]) => token).join('\n') + '\n');
    const run = (tokenizer: string) => train({ data: demoReviews, encoder: informativeEncoder, tokenizer, epochs: 2, ...SMALL });
    const fromJson = await run(demoTokenizer);
    const fromVocab = await run(join(dir, 'vocab.txt'));
    fromJson.classifier.dispose();
    fromVocab.classifier.dispose();
    expect(fromVocab.history.map((e) => [e.trainLoss, e.validationLoss])).toEqual(
      fromJson.history.map((e) => [e.trainLoss, e.validationLoss]),
    );
  });
});

describe('option names', () => {
  it('a misspelt option of train(), of its lora or adapter object, or of pretrain() is refused, naming the one meant', async () => {
    // Before: plain JavaScript's { epoch: 2 } trained with the default epochs without a word.
    const base = { data: demoReviews, encoder: informativeEncoder, tokenizer: demoTokenizer };
    const refusal = (options: object, run: (o: never) => Promise<unknown> = train) =>
      run(options as never).then(
        () => 'trained',
        (err: Error) => `${err.name}: ${err.message}`,
      );
    expect(await refusal({ ...base, epoch: 2 })).toBe("InputError: train() has no option 'epoch': did you mean 'epochs'?");
    expect(await refusal({ ...base, learningrate: 1e-3 })).toBe(
      "InputError: train() has no option 'learningrate': did you mean 'learningRate'?",
    );
    expect(await refusal({ ...base, technique: 'lora', lora: { rnak: 4 } })).toBe(
      "InputError: train(): lora has no option 'rnak': did you mean 'rank'?",
    );
    expect(await refusal({ ...base, technique: 'adapter', adapter: { reduction: 16 } })).toBe(
      "InputError: train(): adapter has no option 'reduction': its options are config, size, reductionFactor, activation, trainLayerNorm",
    );
    expect(await refusal({ model: informativeEncoder, data: demoReviews, outDir: work, lineBylIne: true }, pretrain)).toBe(
      "InputError: pretrain() has no option 'lineBylIne': did you mean 'lineByLine'?",
    );
  });

  it("the other entry points' misspelt options are refused before any file is read, naming the one meant; nothing written", async () => {
    // Before: exportAdapterHub({ nmae }) named the adapter torch_bert, loadClassifier({ devcie: 'cuda' })
    // ran on the CPU, exportHuggingFace({ head: 4 }) took the heads from elsewhere, without a word.
    const missing = join(work, 'no-such-classifier');
    const out = join(work, 'not-written');
    const refusal = (call: () => Promise<unknown>) =>
      call().then(
        () => 'ran',
        (err: Error) => `${err.name}: ${err.message}`,
      );
    const prompt = { model: missing, template: '{text} [MASK]', verbalizer: ['a=good', 'b=bad'] };
    expect(await refusal(() => promptClassifier({ ...prompt, maxLenght: 32 } as never))).toBe(
      "InputError: promptClassifier() has no option 'maxLenght': did you mean 'maxLength'?",
    );
    expect(await refusal(() => loadClassifier(missing, { devcie: 'cpu' } as never))).toBe(
      "InputError: loadClassifier() has no option 'devcie': did you mean 'device'?",
    );
    expect(await refusal(() => Classifier.loadAdapters(missing, { encoder: missing, allowOtherbase: true } as never))).toBe(
      "InputError: Classifier.loadAdapters() has no option 'allowOtherbase': did you mean 'allowOtherBase'?",
    );
    expect(await refusal(() => Classifier.loadAdapters(missing, { base: missing } as never))).toBe(
      'InputError: Classifier.loadAdapters(dir, { encoder }): encoder names the base the run was trained on (a folder, Hub id or TorchScript file)',
    );
    expect(await refusal(() => exportHuggingFace({ classifier: missing, out, head: 4 } as never))).toBe(
      "InputError: exportHuggingFace() has no option 'head': did you mean 'heads'?",
    );
    expect(await refusal(() => exportAdapterHub({ classifier: missing, out, nmae: 'sentiment' } as never))).toBe(
      "InputError: exportAdapterHub() has no option 'nmae': did you mean 'name'?",
    );
    expect(existsSync(out)).toBe(false);
  });
});

describe('labels that are probably a mistake', () => {
  /** The notes of one demo epoch on `data` (with `labels`, when given). */
  const notesOf = async (data: TrainOptions['data'], labels?: string[]) => {
    const result = await train({ data, labels, encoder: informativeEncoder, tokenizer: demoTokenizer, epochs: 1, ...SMALL });
    result.classifier.dispose();
    return { labels: result.labels, notes: result.notes };
  };
  it('train with class 0 left empty, and the result says so', async () => {
    // Before: labels 1 and 2 made classes 0, 1, 2 without a word; class 0, never seen, took most
    // predictions after one epoch (demo: validation accuracy 1.88%).
    const raw = await loadExamples(demoReviews);
    const labels = raw.labels!.map((l) => (l === 'positive' ? 2 : 1));
    const result = await notesOf({ texts: raw.texts, labels });
    expect(result.labels).toEqual(['0', '1', '2']);
    expect(result.notes).toContain(
      "no training example has class '0'; the classifier has an output for it that never learns (integer labels are class ids counted from 0: if yours count from 1, subtract 1 or use class names)",
    );
    const named = await notesOf(demoReviews, ['negative', 'neutral', 'positive']);
    expect(named.notes).toContain("no training example has class 'neutral'; the classifier has an output for it that never learns");
  });
  it('labels that differ only in case train as different classes, and the result says so', async () => {
    // Before: 'Positive' on a third of the positive rows made a third class without a word (demo: 18% validation accuracy).
    const raw = await loadExamples(demoReviews);
    const labels = raw.labels!.map((l, i) => (l === 'positive' && i % 3 === 0 ? 'Positive' : l));
    const result = await notesOf({ texts: raw.texts, labels });
    expect(result.labels).toEqual(['Positive', 'negative', 'positive']);
    expect(result.notes).toContain(
      "classes 'Positive' and 'positive' differ only in case and train as different classes; if they are one class, write its labels alike",
    );
  });
  it('labels that are one number written differently train as different classes, and the result says so', async () => {
    // Before: '1.0' on a third of the 1 rows (as pandas writes a float column) made a third class without a word.
    const raw = await loadExamples(demoReviews);
    const labels = raw.labels!.map((l, i) => (l === 'positive' ? (i % 3 === 0 ? '1.0' : '1') : '0'));
    const result = await notesOf({ texts: raw.texts, labels });
    expect(result.labels).toEqual(['0', '1', '1.0']);
    expect(result.notes).toContain(
      "classes '1' and '1.0' are one number written differently and train as different classes; if they are one class, write its labels alike",
    );
  });
});

describe('a run that trains nothing', () => {
  it('learning rate 0 is taken (it measures the starting weights), and the result says it trains nothing', async () => {
    // Before: no word; the saved classifier looked trained.
    const result = await train({
      data: demoReviews,
      encoder: informativeEncoder,
      tokenizer: demoTokenizer,
      epochs: 1,
      ...SMALL,
      learningRate: 0,
    });
    result.classifier.dispose();
    expect(result.notes).toContain(
      'learningRate 0: no step changes a weight, so the run measures the weights it starts from and saves them unchanged',
    );
    const trained = await train({ data: demoReviews, encoder: informativeEncoder, tokenizer: demoTokenizer, epochs: 1, ...SMALL });
    trained.classifier.dispose();
    expect(trained.notes.filter((n) => n.startsWith('learningRate 0'))).toEqual([]);
  });
});

describe('bad input gets a clear error and loses nothing', () => {
  let outDir: string;
  let checkpointSha: string;
  let trainExamples: number;
  const base = () => ({ data: demoReviews, encoder: informativeEncoder, tokenizer: demoTokenizer, outDir, epochs: 1, ...SMALL });
  beforeAll(async () => {
    outDir = join(work, 'kept');
    const result = await train(base());
    result.classifier.dispose();
    trainExamples = result.trainExamples;
    checkpointSha = sha(join(outDir, 'classifier.pt'));
  });
  const unchanged = () => expect(sha(join(outDir, 'classifier.pt'))).toBe(checkpointSha);
  /** `use` on the classifier loaded from `dir` (default the kept one), disposed after. */
  const withClassifier = async (use: (classifier: Classifier) => Promise<void>, dir = outDir) => {
    const classifier = await loadClassifier(dir);
    try {
      await use(classifier);
    } finally {
      classifier.dispose();
    }
  };
  /** `run` rejects with an error of `type` whose message is `message`. */
  const refused = async (run: Promise<unknown>, type: new (...args: never[]) => Error, message: string) => {
    await expect(run).rejects.toBeInstanceOf(type);
    await expect(run).rejects.toThrow(message);
  };

  it('a missing data file', async () => {
    await expect(train({ ...base(), data: join(work, 'nope.csv') })).rejects.toThrow(/cannot read data file .*nope\.csv/);
    unchanged();
  });
  it('a CSV without the named columns', async () => {
    await expect(train({ ...base(), data: { csv: demoReviews, textColumn: 'review' } })).rejects.toThrow(/has no column 'review'/);
    unchanged();
  });
  it('an empty text', async () => {
    const file = join(work, 'empty-text.csv');
    writeFileSync(file, 'text,label\ngood film,positive\n"",negative\nbad film,negative\n');
    await expect(train({ ...base(), data: file })).rejects.toThrow(/empty-text\.csv line 3: empty text/);
    unchanged();
  });
  it('a label outside the known classes', async () => {
    await expect(train({ ...base(), labels: ['negative', 'neutral'] })).rejects.toThrow(
      /label 'positive' is not one of the known classes \(negative, neutral\)/,
    );
    const file = join(work, 'unknown-label.csv');
    writeFileSync(file, 'text,label\ngood film,positive\nso so,meh\n');
    await expect(evaluate(outDir, file)).rejects.toThrow(/unknown-label\.csv line 3: label 'meh' is not one of the known classes/);
    unchanged();
  });
  it('a file named twice to evaluate', async () => {
    // Before: evaluate(dir, [f, f]) counted every row twice (examples 2N, the same accuracy).
    await expect(evaluate(outDir, [demoReviews, demoReviews])).rejects.toThrow(
      `${demoReviews} is named twice (data / --data): its rows would count twice; name each file once`,
    );
    unchanged();
  });
  it('second texts given to a classifier that reads one text', async () => {
    // Before: dropped without a word; eval --text-pair-column and predict(texts, { pairs }) scored the first texts alone.
    const refusal =
      "this classifier reads one text per example (it was trained on single texts): leave the second texts (a text pair column, or predict's pairs) out";
    const pairs = join(work, 'eval-pairs.csv');
    writeFileSync(pairs, 'text,text2,label\na good film,fine,positive\na bad film,dull,negative\n');
    await withClassifier(async (classifier) => {
      await expect(classifier.predict(['a good film'], { pairs: ['fine'] })).rejects.toThrow(refusal);
      await expect(classifier.evaluate(pairs, { textPairColumn: 'text2' })).rejects.toThrow(refusal);
      await expect(classifier.evaluate({ csv: pairs, textPairColumn: 'text2' })).rejects.toThrow(refusal);
    });
  });
  it('a classifier whose config.json lists more labels than its model has classes', async () => {
    // Before: predict named the 2 outputs 'a' and 'b' and never 'c', without a word.
    const edited = join(work, 'edited-labels');
    cpSync(outDir, edited, { recursive: true });
    const config = JSON.parse(readFileSync(join(edited, 'config.json'), 'utf8'));
    writeFileSync(join(edited, 'config.json'), JSON.stringify({ ...config, labels: ['a', 'b', 'c'] }));
    await withClassifier(
      (classifier) =>
        refused(
          classifier.predict(['a good film']),
          ModelError,
          "the classifier's model gives 2 classes but its config.json lists 3 labels (a, b, c): the config was edited or comes from another save; give it the labels it was trained with",
        ),
      edited,
    );
  });
  it('loadClassifier and evaluate with arguments of the wrong type, from JavaScript', async () => {
    // Before: TypeErrors ('The "path" argument must be of type string', "Cannot use 'in' operator to search for 'csv' in 5").
    for (const dir of [5, undefined]) {
      const message = `loadClassifier(dir): dir must be the path of a folder torch-bert train wrote; got ${typeof dir}`;
      await refused(loadClassifier(dir as never), InputError, message);
    }
    await withClassifier((classifier) =>
      refused(
        classifier.evaluate(5 as never),
        InputError,
        'a data source must be a CSV path, a list of paths, { csv, textColumn, labelColumn } or { texts, labels }; got number',
      ),
    );
  });
  it('a hole in the texts predict() is given', async () => {
    // Before: skipped by the check, the hole became a row of padding and got a prediction.
    const texts = ['a good film'];
    texts.length = 2;
    const pairs = ['a fine plot'];
    pairs.length = 2;
    await withClassifier(async (classifier) => {
      await refused(classifier.predict(texts), InputError, 'text 1 is not a string');
      await refused(
        classifier.predict(['a good film', 'a bad film'], { pairs }),
        InputError,
        'predict(): pairs must be 2 strings, one per text',
      );
    });
  });
  it('a batch size for predict or evaluate that is not a whole number of rows ≥ 1', async () => {
    // A size of 0 or less cut no rows per batch, so the batching never ended (until out of memory);
    // a fraction reached libtorch as a batch of 0 rows.
    const classifier = await loadClassifier(outDir);
    try {
      for (const batchSize of [0, -1, 2.5]) {
        const refusal = `batchSize must be an integer ≥ 1; got ${batchSize}`;
        await expect(classifier.predict(['a good film'], { batchSize })).rejects.toThrow(refusal);
        await expect(classifier.evaluate(demoReviews, { batchSize })).rejects.toThrow(refusal);
      }
      const [one] = await classifier.predict(['a good film'], { batchSize: 1 });
      const [byDefault] = await classifier.predict(['a good film']);
      expect(one!.probabilities).toEqual(byDefault!.probabilities);
    } finally {
      classifier.dispose();
    }
  });
  it('a validation label the training data does not have', async () => {
    // Its class would never train (a typo, or the wrong file); it once became a third class silently.
    const file = join(work, 'validation-typo.csv');
    writeFileSync(file, 'text,label\ngood film,positive\nso so,Positive\nbad film,negative\n');
    await expect(train({ ...base(), validationData: file })).rejects.toThrow(
      /validation-typo\.csv line 3: label 'Positive' is not one of the known classes \(negative, positive\)/,
    );
    unchanged();
  });
  it('a file that is not TorchScript', async () => {
    const file = join(work, 'not-torchscript.pt');
    writeFileSync(file, 'this is not a model');
    await expect(train({ ...base(), encoder: file })).rejects.toThrow(/cannot load encoder .*not-torchscript\.pt/);
    unchanged();
  });
  it('an encoder whose output is not [B, T, H]', async () => {
    const bad = await makeEncoder({ layers: 1, hidden: 32, heads: 2, intermediate: 64, tokenizer: demoTokenizer, output: 'bad' });
    await expect(train({ ...base(), encoder: bad })).rejects.toThrow(/encoder .* cannot be used: .*\[batch, seq, hidden\]/);
    unchanged();
  });
  it('an invalid tokenizer.json', async () => {
    const notJson = join(work, 'broken-tokenizer.json');
    writeFileSync(notJson, '{"model": ');
    await expect(train({ ...base(), tokenizer: notJson })).rejects.toThrow(/broken-tokenizer\.json is not valid JSON/);
    const noModel = join(work, 'no-model-tokenizer.json');
    writeFileSync(noModel, '{"version": "1.0"}');
    await expect(train({ ...base(), tokenizer: noModel })).rejects.toThrow(
      /no-model-tokenizer\.json is not a Hugging Face tokenizer\.json/,
    );
    unchanged();
  });
  it('a data file named twice, or as both training and validation data', async () => {
    // Before: read as one, the rows counted twice and the split held out copies of trained rows
    // (validation accuracy 86% instead of 47% on the demo encoder); the same file as validation
    // data measured the training rows. Both with exit 0 and no word.
    await expect(train({ ...base(), data: [demoReviews, demoReviews] })).rejects.toThrow(
      /^.*reviews\.csv is named twice \(data \/ --data\): its rows would count twice; name each file once$/,
    );
    await expect(train({ ...base(), data: { csv: [demoReviews, relative(process.cwd(), demoReviews)] } })).rejects.toThrow(/named twice/);
    await expect(train({ ...base(), validationData: demoReviews })).rejects.toThrow(
      /^validation file .*reviews\.csv is also a training file \(.*reviews\.csv\): validation would measure rows the classifier trains on; give held-out rows/,
    );
    unchanged();
  });
  it('a validation split with validation data or a few-shot draw', async () => {
    // Before: the split was ignored without a word (validation was the whole validation file, or the few-shot draw's).
    const validation = join(work, 'validation.csv');
    writeFileSync(validation, readFileSync(demoReviews, 'utf8').split('\n').slice(0, 101).join('\n') + '\n');
    for (const [options, by] of [
      [{ validationData: validation }, 'validationData'],
      [{ fewShot: 8 }, 'fewShot'],
    ] as const) {
      await expect(train({ ...base(), ...options, validationSplit: 0.3 })).rejects.toThrow(
        `validationSplit holds out a share of data, but ${by} decides the validation set: leave validationSplit (--validation-split) out`,
      );
    }
    unchanged();
  });
  it('a data source of the wrong type, from JavaScript', async () => {
    // Before: TypeError: Cannot use 'in' operator to search for 'csv' in 5 (or files.forEach is not a function).
    for (const [data, got] of [
      [5, 'a data source must be a CSV path, a list of paths, { csv, textColumn, labelColumn } or { texts, labels }; got number'],
      [{ csv: 5 }, "a data source's csv must be a path or a list of paths; got number"],
    ] as const) {
      const run = train({ ...base(), data: data as never });
      await expect(run).rejects.toBeInstanceOf(InputError);
      await expect(run).rejects.toThrow(got);
      await expect(train({ ...base(), validationData: data as never })).rejects.toThrow(got);
    }
    unchanged();
  });
  it('options of the wrong type or range, from JavaScript', async () => {
    // Before: epochs '3' said 'got 3' (as if the number 3 were wrong); betas and eps failed in
    // the native AdamW as a plain Error ('new AdamW: groups[0].betas must be in [0, 1)').
    for (const [options, message] of [
      [{ epochs: '3' }, "epochs must be an integer ≥ 1; got '3' (a string)"],
      [{ learningRate: '1e-5' }, "learningRate must be a finite number ≥ 0; got '1e-5' (a string)"],
      [{ betas: [1.5, 0.9] }, 'betas must be two numbers in [0, 1); got [1.5, 0.9]'],
      [{ betas: 0.9 }, 'betas must be two numbers in [0, 1); got 0.9'],
      [{ eps: -1 }, 'eps must be a finite number ≥ 0; got -1'],
      // Before: "randperm: seed must be in [-9007199254740992, 9007199254740992], got -9223372036854775808" (wrapped).
      [{ seed: 1e20 }, 'seed must be at most 9007199254740991; got 100000000000000000000'],
      // Before: "encoder ... cannot be used: buildClassifier: spec.headHidden must be in [1, 1048576], got 1000000000000".
      [{ headHidden: 1e12 }, 'headHidden must be at most 1048576; got 1000000000000'],
      // Before: refused only once the model was loaded and the data read (here: "... nowhere: no such file or folder").
      [{ encoder: join(work, 'nowhere'), validationSplit: 1.5 }, 'validationSplit must be between 0 and 1 (exclusive); got 1.5'],
      [
        { encoder: join(work, 'nowhere'), validationSplit: '0.2' },
        "validationSplit must be between 0 and 1 (exclusive); got '0.2' (a string)",
      ],
    ] as const) {
      const run = train({ ...base(), ...(options as object) });
      await expect(run).rejects.toBeInstanceOf(InputError);
      await expect(run).rejects.toThrow(message);
    }
    unchanged();
  });
  it('more threads than the CPUs this process may use', async () => {
    // Before: accepted; on 2 cores one demo epoch took 27 s with 16 threads, over 60 s with 64 (6 s with 2).
    const cpus = availableParallelism();
    await expect(train({ ...base(), threads: cpus + 1 })).rejects.toThrow(
      `threads ${cpus + 1} is more than the ${cpus} CPUs this process may use, which slows every step down: use at most ${cpus}`,
    );
    unchanged();
  });
  it('a feature cache directory that is a file', async () => {
    // Before: a plain Error, 'EEXIST: file already exists, mkdir ...', naming neither the option nor a way out.
    const file = join(work, 'cache-is-a-file');
    writeFileSync(file, '');
    const run = train({ ...base(), featureCache: 'disk', featureCacheDir: file });
    await expect(run).rejects.toBeInstanceOf(InputError);
    await expect(run).rejects.toThrow(
      new RegExp(
        `^feature cache directory ${file} cannot be created: EEXIST: .*; choose another featureCacheDir / --cache-dir, or featureCache 'memory'$`,
      ),
    );
    unchanged();
  });
  it('pooling, headHidden or dropout with the prompt head', async () => {
    // Before: trained with the MLM head on the mask row all the same, and config.json recorded pooling 'mean'.
    const prompt = { head: 'prompt', template: '{text} It was [MASK].', verbalizer: ['negative=bad', 'positive=good'] } as const;
    const tail =
      "cannot be used with head 'prompt': it scores the label words with the checkpoint's MLM head at the mask token's row; leave them out (they shape head 'mlp')";
    const { headHidden: _, ...promptBase } = base();
    await refused(train({ ...promptBase, ...prompt, pooling: 'mean' }), InputError, `pooling 'mean' ${tail}`);
    await refused(train({ ...promptBase, ...prompt, headHidden: 64, dropout: 0.2 }), InputError, `headHidden, dropout ${tail}`);
    unchanged();
  });
  it('class weights that give every class of the training data weight 0', async () => {
    // Before: the training loss was 0 (nothing to learn), the validation loss NaN, and that run was saved as the best.
    await expect(train({ ...base(), classWeights: [0, 0] })).rejects.toThrow(
      /^classWeights \[0, 0\] give every class of the training data \(negative, positive\) weight 0, so nothing would be learned: give at least one of them a positive weight$/,
    );
    unchanged();
  });
  it('an empty path for a folder or file option', async () => {
    // Before: outDir '' wrote classifier.pt, config.json and tokenizer.json into the working directory.
    const cwdBefore = readdirSync(process.cwd()).sort();
    for (const [name, what] of [
      ['outDir', 'the path of a folder'],
      ['resumeFrom', "the path of an earlier run's folder"],
      ['featureCacheDir', 'the path of a folder'],
      ['tokenizer', 'the path of a tokenizer.json'],
    ] as const) {
      await refused(train({ ...base(), [name]: '' }), InputError, `train(): \`${name}\` must be ${what}; got '' (a string)`);
    }
    await refused(train({ ...base(), outDir: 3 as never }), InputError, 'train(): `outDir` must be the path of a folder; got 3');
    expect(readdirSync(process.cwd()).sort()).toEqual(cwdBefore);
    unchanged();
  });
  it('an output directory that cannot be written', async () => {
    const file = join(work, 'a-file');
    writeFileSync(file, '');
    await expect(train({ ...base(), outDir: join(file, 'out') })).rejects.toThrow(/output directory .*a-file\/out cannot be written/);
  });
  it('an abort before the first evaluation claims no checkpoint', async () => {
    const controller = new AbortController();
    const run = train({
      ...base(),
      outDir: join(work, 'aborted-early'),
      epochs: 2,
      onProgress: (e) => {
        if (e.type === 'batch' && e.batch === 1) controller.abort();
      },
      signal: controller.signal,
    });
    await expect(run).rejects.toThrow(
      /^training aborted at epoch 1, batch 2\/\d+; resume with the same options and resumeFrom: '[^']*aborted-early' \(CLI: the same command with --resume [^)]*aborted-early\)$/,
    );
  });
  it('an abort keeps the best checkpoint written so far', async () => {
    const controller = new AbortController();
    let steps = 0;
    const batches: number[] = [];
    const epochs: EpochMetrics[] = [];
    const run = train({
      ...base(),
      epochs: 3,
      onProgress: (e) => {
        if (e.type === 'epoch') epochs.push(e);
        if (e.type === 'epoch' && e.epoch === 1) controller.abort();
        // The deprecated 'step' event still comes, once per batch, after its 'batch' event.
        if (e.type === 'step') steps++;
        if (e.type === 'batch') batches.push(e.batch);
      },
      signal: controller.signal,
    });
    await expect(run).rejects.toMatchObject({
      name: 'AbortError',
      message: expect.stringMatching(/; the best checkpoint so far \(epoch 1, step \d+\) is kept in .*kept$/),
    });
    const stepsPerEpoch = Math.ceil(trainExamples / SMALL.batchSize);
    expect(steps).toBe(stepsPerEpoch);
    expect(batches).toEqual(Array.from({ length: stepsPerEpoch }, (_, i) => i + 1));
    // Epoch 1 was the best so far and was saved; it loads.
    const config = JSON.parse(readFileSync(join(outDir, 'config.json'), 'utf8'));
    expect(config.metrics.epoch).toBe(1);
    // Its history holds the epoch whose weights it keeps (it used to be written before the epoch's record).
    const history = JSON.parse(readFileSync(join(outDir, 'history.json'), 'utf8')) as EpochMetrics[];
    expect(history.map((h) => [h.epoch, h.validationLoss, h.trainLoss])).toEqual([[1, epochs[0]!.validationLoss, epochs[0]!.trainLoss]]);
    const classifier = await loadClassifier(outDir);
    expect(classifier.labels).toEqual(['negative', 'positive']);
    classifier.dispose();
  });
});
