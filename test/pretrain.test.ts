/**
 * Masked-language-model pretraining against independent references: the native step's loss and
 * gradients (the head on the masked rows only) equal transformers' math in eager PyTorch
 * (scripts/python/mlm_reference.py: the decoder over every position, cross-entropy over the
 * masked ones); pretraining lowers the held-out masked-LM loss as that Python reference measures
 * it on the written folder; an aborted run resumed ends with the uninterrupted run's weights bit
 * for bit; the CLI end to end; the folder as --model for train.
 */
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError } from '../lib/addon/errors.js';
import { loadBinding } from '../lib/addon/loader.js';
import { freePort, rankVariables } from '../lib/cli/launcher.js';
import { groupTexts, lineByLine, maskedBatch } from '../lib/data/mlm-data.js';
import { type MaskingVocabulary, wordContinuation } from '../lib/data/mlm-masking.js';
import type { EncodedTexts } from '../lib/data/tokenizer.js';
import { loadEncoderSource } from '../lib/models/encoder-source.js';
import { parseHfConfig } from '../lib/models/hf-config.js';
import { pretrain, validateMaskedLm } from '../lib/pretraining/pretrainer.js';
import { evaluationRows } from '../lib/training/distributed.js';
import type { EpochMetrics } from '../lib/training/options.js';
import { demoPretrain, demoReviews, demoTokenizer, makeEncoder, makeHfFolder, repoRoot, runPython } from './fixtures.js';
import { runCommand, runTorchrun, torchrunUnfit } from './helpers/run-command.js';
import { maxDifference } from './helpers/weights.js';

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
  batch.positions.forEach((p, k) => {
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
    // The training state is gone once the run has ended well (README: "until the run ends").
    expect(existsSync(join(outDir, 'training-state'))).toBe(false);
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

  it('writes a tokenizer_config.json that loads its tokenizer.json as trained: described where the source has none, the source’s fields kept', async () => {
    // A cased tokenizer in a folder without tokenizer_config.json (make_hf_folder's): transformers'
    // BertTokenizerFast told no do_lower_case would lowercase it.
    const cased = join(work, 'cased-source');
    cpSync(model, cased, { recursive: true });
    expect(existsSync(join(cased, 'tokenizer_config.json'))).toBe(false);
    const tokenizer = JSON.parse(readFileSync(join(cased, 'tokenizer.json'), 'utf8'));
    tokenizer.normalizer.lowercase = false;
    writeFileSync(join(cased, 'tokenizer.json'), JSON.stringify(tokenizer));
    const small = { ...settings(), data: files[0]!, epochs: 1 };
    const described = {
      tokenizer_class: 'BertTokenizerFast',
      do_lower_case: false,
      cls_token: '[CLS]',
      sep_token: '[SEP]',
      pad_token: '[PAD]',
      unk_token: '[UNK]',
      mask_token: '[MASK]',
    };
    await pretrain({ model: cased, outDir: join(work, 'cased-1'), ...small });
    expect(JSON.parse(readFileSync(join(work, 'cased-1', 'tokenizer_config.json'), 'utf8'))).toEqual(described);

    // The source's own fields win; what it leaves out is described.
    const own = { tokenizer_class: 'BertTokenizer', model_max_length: 48, strip_accents: false };
    writeFileSync(join(cased, 'tokenizer_config.json'), JSON.stringify(own));
    await pretrain({ model: cased, outDir: join(work, 'cased-2'), ...small });
    expect(JSON.parse(readFileSync(join(work, 'cased-2', 'tokenizer_config.json'), 'utf8'))).toEqual({ ...described, ...own });
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
    // The kept model of the interrupted run comes with its history so far (as a classifier's
    // checkpoint): epoch 1, the whole run's first epoch.
    const wholeHistory = JSON.parse(readFileSync(join(whole, 'history.json'), 'utf8'));
    const keptHistory = JSON.parse(readFileSync(join(parts, 'history.json'), 'utf8'));
    expect(keptHistory.map((h: EpochMetrics) => [h.epoch, h.trainLoss, h.validationLoss])).toEqual(
      wholeHistory.slice(0, 1).map((h: EpochMetrics) => [h.epoch, h.trainLoss, h.validationLoss]),
    );
    // Another learning rate would continue the state's weights and moments as no run does: refused.
    await expect(
      pretrain({ model, outDir: parts, epochs: 2, ...settings(), gradientAccumulationSteps: 2, learningRate: 1e-2, resumeFrom: parts }),
    ).rejects.toThrow(/cannot resume .* settings differ \(learningRate: saved 0\.002, now 0\.01\)$/);
    // So would another corpus under the same names (here one word of the second file changed).
    const edited = [join(work, 'a-same.txt'), join(work, 'b-edited.txt')];
    writeFileSync(edited[0]!, readFileSync(files[0]!, 'utf8'));
    writeFileSync(edited[1]!, readFileSync(files[1]!, 'utf8').replace(/\b(\w+)\b/, '$1s'));
    await expect(
      pretrain({ model, outDir: parts, epochs: 2, ...settings(), data: edited, gradientAccumulationSteps: 2, resumeFrom: parts }),
    ).rejects.toThrow(/cannot resume .* settings differ \(the training data differs\)$/);
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

  it('refuses a text file named twice, which would put copies of trained texts in the held-out share', async () => {
    await expect(pretrain({ model, outDir: join(work, 'twice'), epochs: 1, ...settings(), data: [files[0]!, files[0]!] })).rejects.toThrow(
      /^.*a\.txt is named twice \(data \/ --data\): its rows would count twice; name each file once$/,
    );
    expect(existsSync(join(work, 'twice'))).toBe(false);
  });

  it('refuses a TorchScript file at once, saying pretraining needs a folder or Hub id, not to name its tokenizer or lower the max length', async () => {
    // 64 positions: the default max length (250) is too long for it, and no tokenizer is named.
    const pt = await makeEncoder({ ...SHAPE, tokenizer: demoTokenizer });
    const refusal = new RegExp(`^pretrain\\(\\): ${pt} is a TorchScript file; pretraining needs a Hugging Face model folder or Hub id$`);
    await expect(pretrain({ model: pt, outDir: join(work, 'torchscript'), data: files, epochs: 1 })).rejects.toThrow(refusal);
    await expect(
      pretrain({ model: pt, tokenizer: demoTokenizer, outDir: join(work, 'torchscript'), data: files, epochs: 1 }),
    ).rejects.toThrow(refusal);
    expect(existsSync(join(work, 'torchscript'))).toBe(false);
  }, 120_000);

  it("refuses train()'s other data shapes, an empty path and a textColumn without a CSV file before loading the model, saying why; nothing written", async () => {
    // Before: { csv } and { texts } failed as a TypeError, 'data is not iterable', after the model loaded.
    for (const data of [{ csv: files[0]!, textColumn: 'text' }, { texts: ['a text'] }, '', [files[0]!, 3]]) {
      await expect(pretrain({ model, outDir: join(work, 'shapes'), epochs: 1, data: data as never })).rejects.toThrow(
        /^pretrain\(\): `data` is a file path or a list of them: text files \(one document per line\) or CSV files \(their textColumn\); texts in memory are not taken: write them to a file, one per line \(got .+\)$/,
      );
    }
    expect(existsSync(join(work, 'shapes'))).toBe(false);
    // A CSV column named for text files alone: it would be ignored without a word.
    await expect(pretrain({ model, outDir: join(work, 'shapes'), epochs: 1, data: files, textColumn: 'body' })).rejects.toThrow(
      "pretrain(): textColumn 'body' names a CSV column (or a JSON field), and no data file is a .csv or JSON file (the others are read a document per line): leave textColumn out",
    );
    expect(existsSync(join(work, 'shapes'))).toBe(false);
    // One text: the held-out one leaves none to train on, and the message says what to give (it said only the first half).
    const one = join(work, 'one-text.txt');
    writeFileSync(one, 'a single document\n');
    await expect(pretrain({ model, outDir: join(work, 'shapes'), epochs: 1, data: one })).rejects.toThrow(
      'pretrain(): 1 text(s) leave none to train on once one is held out for validation (validationSplit 0.05, at least one text): ' +
        'give more texts (a non-blank line of a text file, or a CSV row, each)',
    );
  });

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
    expect(Array.from(head.get('predictions.transform.dense.bias')!.toArray() as Float32Array).every((x) => x === 0)).toBe(true);
    expect(Array.from(head.get('predictions.transform.LayerNorm.weight')!.toArray() as Float32Array).every((x) => x === 1)).toBe(true);
    expect(Array.from(head.get('predictions.bias')!.toArray() as Float32Array).every((x) => x === 0)).toBe(true);
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

/** The tensors of a written folder's model.safetensors, by name. */
function folderWeights(dir: string): Map<string, Float32Array> {
  return new Map(
    binding
      .readSafetensors(join(dir, 'model.safetensors'))
      .tensors.map(([name, t]) => [name, Float32Array.from(t.toArray() as Float32Array)]),
  );
}

const gloo = binding.distributedBackends().includes('gloo');
const pretrainHelper = join(repoRoot, 'test', 'helpers', 'distributed-pretrain.mjs');

/**
 * Issue 16 item 4 for pretrain: two Gloo ranks with batch b each end with one process's weights
 * with batch 2b. Each example's mask comes from (seed, epoch, index), whichever rank takes it;
 * each rank's loss (the mean over its masked tokens) is weighted by its share of the global
 * batch's masked tokens, so the averaged gradient is one process's.
 */
describe.skipIf(!gloo)('data-parallel pretrain (2 Gloo ranks on loopback)', () => {
  const work = mkdtempSync(join(tmpdir(), 'torch-bert-pretrain-ddp-'));
  const texts = join(work, 'texts.txt');
  let model: string;
  // Line by line, 16 tokens: 250 texts, the first 10 held out, 240 rows = 60 steps of a global batch of 4.
  const settings = () => ({
    model,
    data: texts,
    lineByLine: true,
    maxLength: 16,
    validationSplit: 0.04,
    epochs: 1,
    learningRate: 2e-3,
    seed: 7,
    threads: 1,
    distributedTimeout: 60,
  });
  beforeAll(async () => {
    model = (await makeHfFolder({ layout: 'mlm', ...SHAPE, layers: 1, dropout: 0, seed: 12 })).dir;
    writeFileSync(texts, corpus(250, 400).join('\n') + '\n');
  }, 120_000);
  afterAll(() => {
    rmSync(work, { recursive: true, force: true });
  });

  /** `pretrain()` alone (no torchrun variables), or as each of 2 ranks (rank r's options from `forRank`). */
  const alone = (options: object) => runCommand(process.execPath, [pretrainHelper, JSON.stringify(options)]);
  const twoRanks = async (forRank: (rank: number) => object, env: Record<string, string> = {}) => {
    const port = await freePort();
    return Promise.all(
      [0, 1].map((rank) =>
        runCommand(process.execPath, [pretrainHelper, JSON.stringify(forRank(rank))], { ...env, ...rankVariables(rank, 2, port) }),
      ),
    );
  };

  it('2 ranks with batch 2 end with the weights of 1 process with batch 4 (60 steps); rank 0 alone writes', async () => {
    const single = join(work, 'single');
    const one = await alone({ ...settings(), batchSize: 4, outDir: single });
    expect(one.code, one.stderr).toBe(0);
    // Rank 1 is told another folder: it must write nothing there.
    const ddp = join(work, 'ddp');
    const ranks = await twoRanks((rank) => ({ ...settings(), batchSize: 2, outDir: rank === 0 ? ddp : join(work, 'ddp-rank1') }));
    for (const r of ranks) expect(r.code, r.stderr).toBe(0);
    expect(existsSync(join(work, 'ddp-rank1'))).toBe(false);
    const history = JSON.parse(readFileSync(join(ddp, 'history.json'), 'utf8'));
    expect(history).toHaveLength(1);
    const reference = folderWeights(single);
    expect(reference.size).toBeGreaterThan(10);
    expect(maxDifference(folderWeights(ddp), reference)).toBeLessThan(1e-5);
    // Training moved the weights: one process with batch 2 takes other steps and ends elsewhere.
    const small = join(work, 'b2');
    const b2 = await alone({ ...settings(), batchSize: 2, outDir: small });
    expect(b2.code, b2.stderr).toBe(0);
    expect(maxDifference(folderWeights(small), reference)).toBeGreaterThan(1e-4);
  }, 300_000);

  it('with accumulation over 2 epochs: 2 ranks with batch 2 = 1 process with batch 4 (2 batches per step, 60 steps)', async () => {
    const options = { ...settings(), epochs: 2, gradientAccumulationSteps: 2 };
    const single = join(work, 'accum-single');
    const one = await alone({ ...options, batchSize: 4, outDir: single });
    expect(one.code, one.stderr).toBe(0);
    const ddp = join(work, 'accum-ddp');
    const ranks = await twoRanks((rank) => ({ ...options, batchSize: 2, outDir: rank === 0 ? ddp : join(work, 'accum-rank1') }));
    for (const r of ranks) expect(r.code, r.stderr).toBe(0);
    // Rank 1 wrote nothing, the training state between the epochs included.
    expect(existsSync(join(work, 'accum-rank1'))).toBe(false);
    // Two epochs, the second's weights kept (so the comparison below is after all 60 steps).
    const history = JSON.parse(readFileSync(join(ddp, 'history.json'), 'utf8'));
    expect(history.map((h: { isBest: boolean }) => h.isBest)).toEqual([true, true]);
    expect(maxDifference(folderWeights(ddp), folderWeights(single))).toBeLessThan(1e-5);
  }, 300_000);

  it('an abort on rank 0 stops both ranks at the same step; both resume from the state rank 0 wrote to the uninterrupted weights', async () => {
    const options = { ...settings(), batchSize: 2, epochs: 2 };
    const whole = join(work, 'resume-whole');
    for (const r of await twoRanks((rank) => ({ ...options, outDir: rank === 0 ? whole : join(work, 'resume-whole-1') })))
      expect(r.code, r.stderr).toBe(0);
    const parts = join(work, 'resume-parts');
    // Rank 0 is aborted after 70 batches (in the second epoch); rank 1 is never told, and stops with it.
    const aborted = await twoRanks((rank) => ({ ...options, outDir: rank === 0 ? parts : join(work, 'resume-parts-1') }), {
      TORCH_BERT_TEST_ABORT_AFTER: '70',
    });
    for (const r of aborted) {
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split('\n').at(-1)).toMatch(/^AbortError: .*aborted at epoch 2, batch 11\/60/);
    }
    // Every rank resumes from the state rank 0 wrote (a filesystem they share).
    const resumed = await twoRanks((rank) => ({
      ...options,
      outDir: rank === 0 ? parts : join(work, 'resume-parts-1'),
      resumeFrom: parts,
    }));
    for (const r of resumed) expect(r.code, r.stderr).toBe(0);
    expect(existsSync(join(work, 'resume-parts-1'))).toBe(false);
    // The kept weights are the last epoch's, trained after the resume (not epoch 1's, written before the abort).
    const history = JSON.parse(readFileSync(join(parts, 'history.json'), 'utf8'));
    expect(history.map((h: { isBest: boolean }) => h.isBest)).toEqual([true, true]);
    expect(maxDifference(folderWeights(parts), folderWeights(whole))).toBe(0);
  }, 300_000);

  /** The last line of a rank's stderr: its error's `name: message`. */
  const lastLine = (stderr: string) => stderr.trim().split('\n').at(-1) ?? '';

  it('a different mlmProbability or different data on rank 1 is refused on both ranks in seconds, naming it; nothing written', async () => {
    const otherTexts = join(work, 'other-texts.txt');
    writeFileSync(otherTexts, corpus(250, 100).join('\n') + '\n');
    for (const [differ, named] of [
      [{ mlmProbability: 0.2 }, /rank 1's options differ from rank 0's: mlmProbability 0\.2 vs 0\.15/],
      [{ data: otherTexts }, /rank 1's training data differs from rank 0's; rank 1's validation data differs from rank 0's/],
    ] as const) {
      const outDir = join(work, 'disagree');
      const started = performance.now();
      const ranks = await twoRanks((rank) => ({ ...settings(), batchSize: 2, outDir, ...(rank === 1 ? differ : {}) }));
      // Well before distributedTimeout (60 s): no rank waits for another that trains something else.
      expect((performance.now() - started) / 1000).toBeLessThan(30);
      for (const r of ranks) {
        expect(r.code, r.stderr).toBe(1);
        expect(lastLine(r.stderr)).toMatch(/^InputError: distributed: the ranks were started with different runs; nothing was trained: /);
        expect(lastLine(r.stderr)).toMatch(named);
      }
      expect(existsSync(outDir)).toBe(false);
    }
  }, 120_000);

  it('rank 1 naming the text column that rank 0 leaves to its default (text) trains with it: the texts read are compared, not the spelling', async () => {
    const csv = join(work, 'texts.csv');
    writeFileSync(
      csv,
      `text\n${corpus(250, 400)
        .map((t) => `"${t.replace(/"/g, '""')}"`)
        .join('\n')}\n`,
    );
    const outDir = join(work, 'text-column');
    const ranks = await twoRanks((rank) => ({
      ...settings(),
      data: csv,
      batchSize: 2,
      outDir,
      ...(rank === 1 ? { textColumn: 'text' } : {}),
    }));
    for (const r of ranks) expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(readFileSync(join(outDir, 'history.json'), 'utf8'))).toHaveLength(1);
  }, 120_000);

  it('a rank that cannot start (rank 1: a missing text file, a broken model folder) stops both in seconds; rank 1 throws its own error', async () => {
    // A copy of the model whose config.json is cut short: a ModelError, which rank 0's error keeps.
    const broken = join(work, 'broken-model');
    cpSync(model, broken, { recursive: true });
    writeFileSync(join(broken, 'config.json'), '{"model_type": "bert",');
    for (const [differ, reason] of [
      [{ data: join(work, 'missing.txt') }, /^InputError: cannot read data file .*missing\.txt: ENOENT/],
      [{ model: broken }, /^ModelError: .*broken-model\/config\.json is not valid JSON/],
    ] as const) {
      const outDir = join(work, 'cannot-start');
      // Rank 1's own error is the one a single process given the same options throws.
      const single = await alone({ ...settings(), batchSize: 2, outDir, ...differ });
      expect(single.code).toBe(1);
      const own = lastLine(single.stderr);
      expect(own).toMatch(reason);
      const [name, message] = [own.slice(0, own.indexOf(': ')), own.slice(own.indexOf(': ') + 2)];
      const started = performance.now();
      const ranks = await twoRanks((rank) => ({
        ...settings(),
        batchSize: 2,
        outDir,
        distributedTimeout: 120,
        ...(rank === 1 ? differ : {}),
      }));
      // Rank 0 did not wait in a collective for the rank that left (distributedTimeout 120 s).
      expect((performance.now() - started) / 1000).toBeLessThan(30);
      expect(ranks.map((r) => r.code)).toEqual([1, 1]);
      expect(lastLine(ranks[1]!.stderr)).toBe(own);
      expect(lastLine(ranks[0]!.stderr)).toBe(`${name}: distributed: rank 1 could not start: ${message}; nothing was trained`);
      expect(existsSync(outDir)).toBe(false);
    }
  }, 240_000);

  it('held-out metrics sharded over the ranks, sums reduced: each shard alone differs, together they are the whole split', async () => {
    const loaded = await loadEncoderSource(model, { device: 'cpu', fallbackMaxLength: 16, maxLength: 16, mlmHead: true });
    const built = binding.buildMlmModel(loaded.module, loaded.mlmHead!);
    built.module.train(false);
    // 11 rows: rank 0 takes 6, rank 1 takes 5, each cut into other batches than one process's.
    const data = await lineByLine(loaded.tokenizer, corpus(11, 400), 16);
    expect(data.count).toBe(11);
    const masking = { mlmProbability: 0.15, wholeWordMask: false, seed: 7 };
    const vocab = vocabularyOf(loaded.tokenizer);
    const validate = (shard?: { rows: Int32Array; sum(v: Float64Array): Float64Array }) =>
      validateMaskedLm(binding, built.module, data, vocab, masking, { batchSize: 4, precision: 'fp32', shard });
    const whole = await validate();
    // Rank 1's sums first (recorded), then rank 0's with rank 1's added: what the all-reduce returns on every rank.
    let rankOne: Float64Array = new Float64Array(0);
    const alone1 = await validate({ rows: evaluationRows(11, 1, 2), sum: (v) => (rankOne = v) });
    const global = await validate({ rows: evaluationRows(11, 0, 2), sum: (v) => v.map((x, i) => x + rankOne[i]!) });
    expect(whole.metrics.maskedTokens).toBeGreaterThan(10);
    expect(alone1.metrics.maskedTokens).toBeLessThan(whole.metrics.maskedTokens);
    expect(Math.abs(alone1.loss - whole.loss)).toBeGreaterThan(1e-3);
    expect(global.metrics.maskedTokens).toBe(whole.metrics.maskedTokens);
    expect(Math.abs(global.loss - whole.loss)).toBeLessThan(1e-6);
    expect(Math.abs(global.metrics.perplexity - whole.metrics.perplexity)).toBeLessThan(1e-6 * whole.metrics.perplexity);
    expect(global.scores).toEqual(whole.scores);
    built.module.dispose();
    loaded.mlmHead!.dispose();
    loaded.module.dispose();
  }, 120_000);

  it('2 ranks report 1 process’s held-out metrics (1e-6) and global training masked-token accuracy, evaluated every 20 steps', async () => {
    // Evaluations within the epoch too: each a sharded pass and rank 0's decision on both ranks.
    const options = { ...settings(), evaluateEvery: 20 };
    const single = join(work, 'metrics-single');
    const one = await alone({ ...options, batchSize: 4, outDir: single });
    expect(one.code, one.stderr).toBe(0);
    const ranks = await twoRanks((rank) => ({ ...options, batchSize: 2, outDir: join(work, `metrics-ddp-${rank}`) }));
    for (const r of ranks) expect(r.code, r.stderr).toBe(0);
    const want = JSON.parse(one.stdout);
    expect(want.evaluations).toHaveLength(3);
    for (const r of ranks) {
      const got = JSON.parse(r.stdout);
      expect(got.validationRows).toBe(want.validationRows);
      expect(got.metrics.maskedTokens).toBe(want.metrics.maskedTokens);
      got.evaluations.forEach((e: { validationLoss: number; validationAccuracy: number; isBest: boolean }, i: number) => {
        expect(Math.abs(e.validationLoss - want.evaluations[i].validationLoss)).toBeLessThan(1e-6);
        expect(Math.abs(e.validationAccuracy - want.evaluations[i].validationAccuracy)).toBeLessThan(1e-6);
        expect(e.isBest).toBe(want.evaluations[i].isBest);
      });
      expect(got.evaluations).toHaveLength(3);
      expect(Math.abs(got.best.perplexity - want.best.perplexity)).toBeLessThan(1e-6 * want.best.perplexity);
      // The global batch's masked-token accuracy (correct and masked summed over the ranks), not a mean of the ranks'.
      expect(Math.abs(got.history[0].trainAccuracy - want.history[0].trainAccuracy)).toBeLessThan(1e-6);
      expect(Math.abs(got.history[0].trainLoss - want.history[0].trainLoss)).toBeLessThan(1e-5);
    }
    expect(want.history[0].trainAccuracy).toBeGreaterThan(0);
  }, 300_000);

  it('2 ranks × 2 stopped in epoch 2, resumed as 1 process × 4, end with the uninterrupted 1 × 4 run’s weights', async () => {
    const options = { ...settings(), epochs: 2 };
    const whole = join(work, 'reshape-whole');
    const one = await alone({ ...options, batchSize: 4, outDir: whole });
    expect(one.code, one.stderr).toBe(0);
    const parts = join(work, 'reshape-parts');
    const aborted = await twoRanks((rank) => ({ ...options, batchSize: 2, outDir: rank === 0 ? parts : join(work, 'reshape-1') }), {
      TORCH_BERT_TEST_ABORT_AFTER: '70',
    });
    for (const r of aborted) expect(lastLine(r.stderr)).toMatch(/^AbortError: .*aborted at epoch 2, batch 11\/60/);
    // Another global batch is refused, naming both layouts (resumed into its own folder: another
    // outDir is refused before anything loads, as the resumed run writes where its state is).
    const refused = await alone({ ...options, batchSize: 2, outDir: parts, resumeFrom: parts });
    expect(refused.code).toBe(1);
    expect(lastLine(refused.stderr)).toMatch(
      /the global batch differs \(saved 2 ranks × batch 2 × accumulation 1 = 4, now 1 rank × batch 2/,
    );
    const resumed = await alone({ ...options, batchSize: 4, outDir: parts, resumeFrom: parts });
    expect(resumed.code, resumed.stderr).toBe(0);
    const history = JSON.parse(readFileSync(join(parts, 'history.json'), 'utf8'));
    expect(history.map((h: { isBest: boolean }) => h.isBest)).toEqual([true, true]);
    expect(maxDifference(folderWeights(parts), folderWeights(whole))).toBeLessThan(1e-5);
  }, 300_000);

  /** The CLI's flags for the 2-rank run of the first test (batch 2 per process). */
  const cliArgs = (out: string) => [
    join(repoRoot, 'dist', 'cli.js'),
    'pretrain',
    '--model',
    model,
    '--data',
    texts,
    '--line-by-line',
    '--max-length',
    '16',
    '--validation-split',
    '0.04',
    '--epochs',
    '1',
    '--batch-size',
    '2',
    '--lr',
    '0.002',
    '--seed',
    '7',
    '--threads',
    '1',
    '--out',
    out,
    '--json',
  ];

  it('torch-bert pretrain --nproc-per-node 2: the same weights, one JSON object, the folder loads as --model', async () => {
    const out = join(work, 'cli');
    const run = await runCommand(process.execPath, [...cliArgs(out), '--nproc-per-node', '2']);
    expect(run.code, run.stderr).toBe(0);
    // Rank 0's result alone: one JSON object on stdout.
    const result = JSON.parse(run.stdout);
    expect(result.outDir).toBe(out);
    expect(result.trainRows).toBe(240);
    expect(maxDifference(folderWeights(out), folderWeights(join(work, 'ddp')))).toBeLessThan(1e-5);
    const loaded = await loadEncoderSource(out, { device: 'cpu', fallbackMaxLength: 16, mlmHead: true });
    expect(loaded.notes.join(' ')).not.toMatch(/no MLM head/);
    const words = new Map(loaded.module.namedParameters()).get('embeddings.word_embeddings.weight')!.toArray() as Float32Array;
    expect(Array.from(words)).toEqual(Array.from(folderWeights(out).get('bert.embeddings.word_embeddings.weight')!));
    loaded.mlmHead!.dispose();
    loaded.module.dispose();
  }, 300_000);

  it('torchrun --no_python --nproc_per_node 2 torch-bert pretrain: the same weights', async (ctx) => {
    const torchrun = '/usr/bin/torchrun';
    const unfit = await torchrunUnfit(torchrun, binding.versions().libtorch);
    if (unfit) ctx.skip(unfit);
    const out = join(work, 'torchrun');
    const run = await runTorchrun(torchrun, 2, process.execPath, cliArgs(out));
    expect(run.code, run.stderr).toBe(0);
    expect(maxDifference(folderWeights(out), folderWeights(join(work, 'ddp')))).toBeLessThan(1e-5);
  }, 300_000);
});
