/**
 * Masked-language-model pretraining against independent references: the native step's loss and
 * gradients (the head on the masked rows only) equal transformers' math in eager PyTorch
 * (scripts/python/mlm_reference.py: the decoder over every position, cross-entropy over the
 * masked ones); pretraining lowers the held-out masked-LM loss as that Python reference measures
 * it on the written folder; an aborted run resumed ends with the uninterrupted run's weights bit
 * for bit; the CLI end to end; the folder as --model for train.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadEncoderSource } from '../lib/encoder-source.js';
import { AbortError } from '../lib/errors.js';
import { parseHfConfig } from '../lib/hf-config.js';
import { loadBinding } from '../lib/loader.js';
import { groupTexts, maskedBatch } from '../lib/mlm-data.js';
import { type MaskingVocabulary, wordContinuation } from '../lib/mlm-masking.js';
import { pretrain } from '../lib/pretrainer.js';
import type { EncodedTexts } from '../lib/tokenizer.js';
import { demoPretrain, demoReviews, makeHfFolder, repoRoot, runPython } from './fixtures.js';

const binding = loadBinding();
const SHAPE = { hidden: 32, layers: 2, heads: 4, intermediate: 64, maxPosition: 64 };

/** The first `n` texts of the demo pretraining CSV (its labels unused). */
function corpus(n: number, skip = 0): string[] {
  const lines = readFileSync(demoPretrain, 'utf8')
    .split('\n')
    .slice(1 + skip, 1 + skip + n);
  return lines.map((l) => {
    const text = l.replace(/,(positive|negative)$/, '');
    return text.startsWith('"') ? text.slice(1, -1).replace(/""/g, '"') : text;
  });
}

async function reference(job: {
  config: unknown;
  weights: string;
  inputIds: number[][];
  attentionMask: number[][];
  labels: number[][];
}): Promise<{ loss: number; grads: Record<string, number[]> }> {
  return JSON.parse(await runPython('scripts/python/mlm_reference.py', [], JSON.stringify(job)));
}

/** A masked batch as the Python reference takes it: [B][T] ids, mask, and labels -100 off the masked positions. */
function asRows(batch: ReturnType<typeof maskedBatch>) {
  const { batchSize: b, seqLen: t } = batch;
  const rows = (a: ArrayLike<number>) => Array.from({ length: b }, (_, r) => Array.from(a).slice(r * t, (r + 1) * t));
  const labels = new Array(b * t).fill(-100);
  batch.maskedPositions.forEach((p, k) => {
    labels[p] = batch.labels[k]!;
  });
  return { inputIds: rows(batch.inputIds), attentionMask: rows(batch.attentionMask), labels: rows(labels) };
}

async function nativeConfig(dir: string) {
  const config = parseHfConfig(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')), dir);
  return { ...config.native, pooler: false, mlmHead: true, hiddenDropoutProb: 0, attentionDropoutProb: 0 };
}

function vocabularyOf(tokenizer: Awaited<ReturnType<typeof loadEncoderSource>>['tokenizer']): MaskingVocabulary {
  const v = tokenizer.maskingVocabulary();
  return { maskId: v.maskId!, vocabSize: v.vocabSize, specialIds: v.specialIds, continuesWord: wordContinuation(v.tokens, v.byteLevel) };
}

describe('the masked-LM step against transformers’ math', () => {
  it('loss and every gradient equal the Python reference (decoder on all positions, loss on the masked)', async () => {
    const { dir } = await makeHfFolder({ layout: 'mlm', ...SHAPE, dropout: 0, seed: 11 });
    const loaded = await loadEncoderSource(dir, { device: 'cpu', fallbackMaxLength: 32, maxLength: 32, mlmHead: true });
    const built = binding.buildMlmModel(loaded.module, loaded.mlmHead!);
    const model = built.module;
    expect(built.tiedParameters).toEqual([['head.predictions.decoder.weight', 'encoder.embeddings.word_embeddings.weight']]);
    const aliases = new Set(built.tiedParameters.map(([a]) => a));
    const params = model.namedParameters().filter(([n]) => !aliases.has(n));
    for (const [, t] of params) t.setRequiresGrad(true);
    const optimizer = new binding.AdamW([{ params: params.map(([, t]) => t), lr: 0 }]);
    const encoded: EncodedTexts = await loaded.tokenizer.encodeBatchAsync(corpus(4), 32);
    const batch = maskedBatch(encoded, [0, 1, 2, 3], 1, vocabularyOf(loaded.tokenizer), {
      mlmProbability: 0.3,
      wholeWordMask: false,
      seed: 3,
    });
    expect(batch.labels.length).toBeGreaterThan(4);
    model.train(false);
    const result = await binding.trainStep(model, optimizer, batch, { accumulateOnly: true });
    const ref = await reference({ config: await nativeConfig(dir), weights: join(dir, 'model.safetensors'), ...asRows(batch) });
    expect(Math.abs(result.loss - ref.loss)).toBeLessThan(1e-5);
    let compared = 0;
    for (const [name, tensor] of params) {
      const key = name.startsWith('encoder.') ? name.slice('encoder.'.length) : `cls.${name.slice('head.'.length)}`;
      const want = ref.grads[key];
      expect(want, key).toBeDefined();
      const got = tensor.grad()!.toArray() as Float32Array;
      let worst = 0;
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want![i]!));
      expect(worst, key).toBeLessThan(1e-5);
      compared++;
    }
    expect(compared).toBe(Object.keys(ref.grads).length);
    optimizer.dispose();
    model.dispose();
    loaded.mlmHead!.dispose();
    loaded.module.dispose();
  }, 120_000);
});

describe('pretrain()', () => {
  const work = mkdtempSync(join(tmpdir(), 'torch-bert-pretrain-'));
  const files = [join(work, 'a.txt'), join(work, 'b.txt')];
  let model: string;
  beforeAll(async () => {
    model = (await makeHfFolder({ layout: 'mlm', ...SHAPE, seed: 5 })).dir;
    writeFileSync(files[0]!, corpus(200).join('\n') + '\n');
    writeFileSync(files[1]!, '\n' + corpus(200, 200).join('\n') + '\n');
  });

  const settings = () => ({ data: files, maxLength: 32, batchSize: 16, learningRate: 2e-3, seed: 7, validationSplit: 0.1 });

  it('lowers the held-out masked-LM loss as the Python reference measures it on the written folder', async () => {
    const outDir = join(work, 'lowers');
    const result = await pretrain({ model, outDir, epochs: 3, ...settings() });
    expect(result.history).toHaveLength(3);
    expect(result.trainRows).toBeGreaterThan(50);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'encoder.pt', 'history.json'])
      expect(existsSync(join(outDir, f)), f).toBe(true);
    const config = JSON.parse(readFileSync(join(outDir, 'config.json'), 'utf8'));
    expect(config.architectures).toEqual(['BertForMaskedLM']);
    // save_pretrained's layout: the tied decoder weight left out, the head under cls.
    const keys = binding.readSafetensorsHeader(join(outDir, 'model.safetensors')).tensors.map((t) => t.name);
    expect(keys.some((k) => k === 'cls.predictions.decoder.weight')).toBe(false);
    expect(keys).toContain('cls.predictions.transform.dense.weight');
    expect(keys).toContain('bert.embeddings.word_embeddings.weight');
    // encoder.pt is saved in eval mode (dropout off) though the run was training when it saved.
    const savedEncoder = binding.ScriptModule.load(join(outDir, 'encoder.pt'));
    expect(savedEncoder.isTraining).toBe(false);
    savedEncoder.dispose();

    // Held-out texts (never trained on), masked once; Python's loss before and after.
    const loaded = await loadEncoderSource(model, { device: 'cpu', fallbackMaxLength: 32, maxLength: 32 });
    const heldOut = await loaded.tokenizer.encodeBatchAsync(corpus(32, 2000), 32);
    const batch = maskedBatch(
      heldOut,
      Array.from({ length: 32 }, (_, i) => i),
      0,
      vocabularyOf(loaded.tokenizer),
      {
        mlmProbability: 0.15,
        wholeWordMask: false,
        seed: 99,
      },
    );
    loaded.module.dispose();
    const rows = asRows(batch);
    const before = await reference({ config: await nativeConfig(model), weights: join(model, 'model.safetensors'), ...rows });
    const after = await reference({ config: await nativeConfig(outDir), weights: join(outDir, 'model.safetensors'), ...rows });
    expect(after.loss).toBeLessThan(before.loss - 0.5);
    // The run's own held-out measure agrees in direction and records perplexity.
    expect(result.best.validationLoss).toBeLessThan(result.evaluations[0]!.validationLoss + 1e-9);
    expect(result.best.perplexity).toBeCloseTo(Math.exp(result.best.validationLoss), 6);
  }, 300_000);

  it('resumes an aborted run to the uninterrupted run’s weights, bit for bit', async () => {
    const whole = join(work, 'whole');
    await pretrain({ model, outDir: whole, epochs: 2, ...settings(), gradientAccumulationSteps: 2 });
    const parts = join(work, 'parts');
    const controller = new AbortController();
    let batches = 0;
    await expect(
      pretrain({
        model,
        outDir: parts,
        epochs: 2,
        ...settings(),
        gradientAccumulationSteps: 2,
        signal: controller.signal,
        onProgress: (e) => {
          if (e.type === 'batch' && ++batches === 13) controller.abort();
        },
      }),
    ).rejects.toBeInstanceOf(AbortError);
    await pretrain({ model, outDir: parts, epochs: 2, ...settings(), gradientAccumulationSteps: 2, resumeFrom: parts });
    const a = binding.readSafetensors(join(whole, 'model.safetensors')).tensors;
    const b = new Map(binding.readSafetensors(join(parts, 'model.safetensors')).tensors);
    expect(a.length).toBeGreaterThan(10);
    for (const [name, t] of a) {
      expect(
        Buffer.from((t.toArray() as Float32Array).buffer).equals(Buffer.from((b.get(name)!.toArray() as Float32Array).buffer)),
        name,
      ).toBe(true);
    }
  }, 300_000);

  it('groups texts as run_mlm.py: each text with its special tokens, concatenated, blocks cut, remainder dropped', async () => {
    const loaded = await loadEncoderSource(model, { device: 'cpu', fallbackMaxLength: 32, maxLength: 32 });
    const texts = corpus(10);
    const all = texts.flatMap((t) => loaded.tokenizer.encodeWhole(t));
    const [cls, sep] = [all[0]!, all[loaded.tokenizer.encodeWhole(texts[0]!).length - 1]!];
    expect(all.filter((id) => id === cls)).toHaveLength(10);
    expect(all.filter((id) => id === sep)).toHaveLength(10);
    const blocks = groupTexts(loaded.tokenizer, texts, 16);
    expect(blocks.count).toBe(Math.floor(all.length / 16));
    expect(Array.from(blocks.inputIds)).toEqual(all.slice(0, blocks.count * 16));
    expect(Array.from(blocks.lengths).every((n) => n === 16)).toBe(true);
    loaded.module.dispose();
  });

  it('trains line by line, and on its own output folder again (RoBERTa layout: lm_head, decoder weight left out)', async () => {
    const { dir } = await makeHfFolder({ layout: 'roberta', ...SHAPE, seed: 4 });
    const first = join(work, 'roberta-1');
    const one = await pretrain({ model: dir, outDir: first, epochs: 1, ...settings(), lineByLine: true, wholeWordMask: true });
    expect(one.trainRows).toBe(360);
    expect(JSON.parse(readFileSync(join(first, 'config.json'), 'utf8')).architectures).toEqual(['RobertaForMaskedLM']);
    const keys = binding.readSafetensorsHeader(join(first, 'model.safetensors')).tensors.map((t) => t.name);
    expect(keys).toContain('lm_head.dense.weight');
    expect(keys).toContain('roberta.embeddings.word_embeddings.weight');
    expect(keys).not.toContain('lm_head.decoder.weight');
    const two = await pretrain({ model: first, outDir: join(work, 'roberta-2'), epochs: 1, ...settings(), lineByLine: true });
    expect(two.notes.join(' ')).not.toMatch(/no MLM head/);
    expect(two.best.validationLoss).toBeLessThan(one.evaluations[0]!.validationLoss + 1e-9);
  }, 300_000);

  it('initialises a missing MLM head as transformers does, decoder tied', async () => {
    const { dir } = await makeHfFolder({ layout: 'automodel', ...SHAPE, seed: 8 });
    const loaded = await loadEncoderSource(dir, { device: 'cpu', fallbackMaxLength: 32, mlmHead: true, initialiseMlmHead: { seed: 1 } });
    expect(loaded.notes.join(' ')).toMatch(/no MLM head; one was initialised/);
    const head = new Map(loaded.mlmHead!.namedParameters());
    const dense = head.get('predictions.transform.dense.weight')!.toArray() as Float32Array;
    const mean = dense.reduce((s, x) => s + x, 0) / dense.length;
    const std = Math.sqrt(dense.reduce((s, x) => s + (x - mean) ** 2, 0) / dense.length);
    // 1024 draws of normal(0, 0.02): the sample std within 10%, the mean within 5 standard errors.
    expect(Math.abs(std - 0.02)).toBeLessThan(0.002);
    expect(Math.abs(mean)).toBeLessThan((5 * 0.02) / 32);
    expect(Array.from(head.get('predictions.transform.dense.bias')!.toArray()).every((x) => x === 0)).toBe(true);
    expect(Array.from(head.get('predictions.transform.LayerNorm.weight')!.toArray()).every((x) => x === 1)).toBe(true);
    expect(Array.from(head.get('predictions.bias')!.toArray()).every((x) => x === 0)).toBe(true);
    const words = new Map(loaded.module.namedParameters()).get('embeddings.word_embeddings.weight')!.toArray();
    expect(head.get('predictions.decoder.weight')!.toArray()).toEqual(words);
    loaded.mlmHead!.dispose();
    loaded.module.dispose();
  }, 120_000);
});

describe('torch-bert pretrain (CLI)', () => {
  const exec = promisify(execFile);
  const cli = join(repoRoot, 'dist', 'cli.js');

  it('pretrains with --json, and the folder is a --model for train', async () => {
    const work = mkdtempSync(join(tmpdir(), 'torch-bert-pretrain-cli-'));
    const { dir } = await makeHfFolder({ layout: 'automodel', ...SHAPE, seed: 9 });
    const data = join(work, 'texts.csv');
    writeFileSync(
      data,
      `text\n${corpus(120)
        .map((t) => `"${t.replace(/"/g, '""')}"`)
        .join('\n')}\n`,
    );
    const out = join(work, 'mlm');
    const { stdout } = await exec(
      process.execPath,
      [
        cli,
        'pretrain',
        '--model',
        dir,
        '--data',
        data,
        '--text-column',
        'text',
        '--out',
        out,
        '--epochs',
        '1',
        '--max-length',
        '32',
        '--whole-word-mask',
        '--json',
      ],
      { maxBuffer: 1 << 26 },
    );
    const result = JSON.parse(stdout);
    expect(result.outDir).toBe(out);
    expect(result.history).toHaveLength(1);
    expect(Number.isFinite(result.best.validationLoss)).toBe(true);
    expect(result.notes.join(' ')).toMatch(/no MLM head/);
    const trained = await exec(
      process.execPath,
      [cli, 'train', '--model', out, '--data', demoReviews, '--out', join(work, 'clf'), '--epochs', '1', '--max-length', '32', '--json'],
      { maxBuffer: 1 << 26 },
    );
    const train = JSON.parse(trained.stdout);
    expect(train.history).toHaveLength(1);
    expect(train.best.validationAccuracy).toBeGreaterThan(0);
  }, 300_000);
});
