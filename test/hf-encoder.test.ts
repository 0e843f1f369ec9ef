/**
 * Hugging Face folders and Hub ids as encoders, end to end through the native builder
 * (binding.readSafetensors / readTorchStateDict / buildEncoder).
 *
 * References: make_encoder.py traces Python's BertModel over the very weights a folder holds
 * (`--weights`), so a built encoder is compared with PyTorch's own computation, and train()
 * on the folder with train() on that traced file (same seed → the same history). Every other
 * layout is compared with the AutoModel layout; float16/bfloat16 files with an AutoModel file of
 * the same values rounded through that dtype (make_hf_folder.py --round).
 */
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NativeScriptModule, NativeTensor, NativeValue } from '../lib/addon/binding.js';
import { loadBinding } from '../lib/addon/loader.js';
import { train } from '../lib/classification/trainer.js';
import { loadEncoderSource } from '../lib/models/encoder-source.js';
import { demoReviews, demoTokenizer, type MakeHfFolderOptions, makeEncoder, makeHfFolder } from './fixtures.js';

const binding = loadBinding();
const SIZE = { layers: 2, hidden: 32, heads: 4, intermediate: 64, maxPosition: 64 } as const;

function lastHidden(out: NativeValue): NativeTensor {
  if (Array.isArray(out)) return out[0] as NativeTensor;
  return out as NativeTensor;
}

/** last_hidden_state of a fixed batch (two texts, one padded), as numbers. */
async function outputs(module: NativeScriptModule): Promise<number[]> {
  const ids = [2, 40, 41, 300, 588, 3, 2, 7, 3, 0, 0, 0];
  const mask = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0];
  const t = (v: number[]) => binding.Tensor.fromArray(Int32Array.from(v), [2, 6], 'int64');
  const inputs = [t(ids), t(mask)];
  if (module.forwardArity === 3) inputs.push(t(new Array(12).fill(0)));
  const out = await module.forwardAsync(...inputs);
  const values = Array.from(lastHidden(out).toArray() as Float32Array);
  for (const i of inputs) i.dispose();
  return values;
}

async function encoderOf(spec: string): Promise<NativeScriptModule> {
  const loaded = await loadEncoderSource(spec, { device: 'cpu', fallbackMaxLength: 32, maxLength: 32 });
  return loaded.module;
}

function maxDiff(a: number[], b: number[]): number {
  expect(a.length).toBe(b.length);
  return Math.max(...a.map((x, i) => Math.abs(x - b[i]!)));
}

describe('Hugging Face folders as encoders', () => {
  const folder = (o: MakeHfFolderOptions) => makeHfFolder({ ...SIZE, ...o });

  it("the AutoModel layout computes what Python's BertModel computes on the same weights", async () => {
    const { dir, weights } = await folder({ layout: 'automodel' });
    const traced = await makeEncoder({ ...SIZE, tokenizer: demoTokenizer, signature: 3, weights });
    const built = await encoderOf(dir);
    const reference = await binding.ScriptModule.loadAsync(traced);
    expect(maxDiff(await outputs(built), await outputs(reference))).toBeLessThan(1e-5);
    expect(built.namedParameters().map(([n]) => n)).toEqual(reference.namedParameters().map(([n]) => n));
    built.dispose();
    reference.dispose();
  });

  it('every float32 layout gives the AutoModel layout’s outputs', async () => {
    const base = await encoderOf((await folder({ layout: 'automodel' })).dir);
    const expected = await outputs(base);
    base.dispose();
    for (const layout of ['pretraining', 'mlm', 'sharded', 'bin', 'bin-sharded'] as const) {
      const built = await encoderOf((await folder({ layout })).dir);
      expect({ layout, diff: maxDiff(await outputs(built), expected) }).toEqual({ layout, diff: 0 });
      built.dispose();
    }
  });

  it('float16 and bfloat16 files equal float32 files of the rounded weights', async () => {
    for (const [layout, round] of [
      ['f16', 'f16'],
      ['bf16', 'bf16'],
    ] as const) {
      const rounded = await encoderOf((await folder({ layout: 'automodel', round })).dir);
      const reduced = await loadEncoderSource((await folder({ layout })).dir, { device: 'cpu', fallbackMaxLength: 32, maxLength: 32 });
      expect(reduced.notes.join(' ')).toContain('widened to float32');
      expect(maxDiff(await outputs(reduced.module), await outputs(rounded))).toBe(0);
      rounded.dispose();
      reduced.module.dispose();
    }
  });

  it('RoBERTa and DistilBERT folders build with their forward(input_ids, attention_mask) and family defaults', async () => {
    const roberta = await loadEncoderSource((await folder({ layout: 'roberta' })).dir, { device: 'cpu', fallbackMaxLength: 250 });
    expect(roberta.module.forwardArity).toBe(2);
    // 64 positions less RoBERTa's offset (pad 0 + 1); the vocab tokenizer says 512.
    expect(roberta.maxLength).toBe(63);
    const distil = await loadEncoderSource((await folder({ layout: 'distilbert' })).dir, { device: 'cpu', fallbackMaxLength: 250 });
    expect(distil.module.forwardArity).toBe(2);
    expect(distil.loraTargets).toEqual(['attention.q_lin', 'attention.v_lin']);
    expect(distil.module.namedParameters().map(([n]) => n)).toContain('transformer.layer.1.attention.v_lin.weight');
    roberta.module.dispose();
    distil.module.dispose();
  });

  for (const technique of ['frozen', 'full', 'lora'] as const) {
    // The traced encoder has dropout baked out (traced in eval mode); the built one applies
    // config.json's dropout in training, as transformers does. With the config's dropout at 0
    // the two must train identically; with transformers' 0.1 the built one must differ.
    it(`train() from a folder = train() from the same weights traced by make_encoder.py (${technique})`, async () => {
      const { dir, weights } = await folder({ layout: 'automodel', dropout: 0 });
      const traced = await makeEncoder({ ...SIZE, tokenizer: demoTokenizer, signature: 3, weights });
      const common = {
        data: demoReviews,
        technique,
        epochs: 2,
        batchSize: 16,
        maxLength: 32,
        headHidden: 16,
        learningRate: 1e-3,
        seed: 3,
        threads: 1,
      };
      const fromFolder = await train({ ...common, encoder: dir });
      const fromFile = await train({ ...common, encoder: traced, tokenizer: demoTokenizer });
      const strip = (h: typeof fromFile.history) => h.map(({ seconds: _, ...rest }) => rest);
      expect(strip(fromFolder.history)).toEqual(strip(fromFile.history));
      const source = fromFolder.classifier.config.encoder.source;
      expect(source).toMatchObject({ kind: 'folder', dir, family: 'bert', modelType: 'bert', weights: ['model.safetensors'] });
      if (technique !== 'frozen') {
        // The same weights with transformers' dropout (0.1) in config.json: the encoder trains with dropout.
        const withDropout = await train({ ...common, encoder: (await folder({ layout: 'automodel', dropout: 0.1 })).dir });
        expect(withDropout.history[0]!.trainLoss).not.toBe(fromFile.history[0]!.trainLoss);
        withDropout.classifier.dispose();
      }
    });
  }

  it('--tokenizer omitted: the folder’s vocab.txt is the tokenizer, saved with the classifier', async () => {
    const { dir } = await folder({ layout: 'pretraining', tokenizer: 'vocab', modelMaxLength: 24 });
    const result = await train({ data: demoReviews, encoder: dir, epochs: 1, batchSize: 32, headHidden: 8, seed: 1, threads: 1 });
    // model_max_length 24 within 64 positions.
    expect(result.classifier.config.maxLength).toBe(24);
    expect(result.notes.join(' ')).toContain('cls.seq_relationship.weight');
    const vocab = JSON.parse(result.classifier.tokenizer.json).model.vocab as Record<string, number>;
    const demo = JSON.parse(readFileSync(demoTokenizer, 'utf8')).model.vocab as Record<string, number>;
    expect(vocab).toEqual(demo);
  });

  describe('a Hub id from a Hub-layout cache, offline', () => {
    const saved = { cache: process.env.HF_HUB_CACHE, offline: process.env.HF_HUB_OFFLINE };
    let tmp: string;
    beforeAll(() => {
      tmp = mkdtempSync(join(tmpdir(), 'hf-encoder-'));
    });
    afterAll(() => {
      for (const [k, v] of [
        ['HF_HUB_CACHE', saved.cache],
        ['HF_HUB_OFFLINE', saved.offline],
      ] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      rmSync(tmp, { recursive: true, force: true });
    });

    it('resolves org/name through refs and snapshot links and records the commit', async () => {
      const { dir } = await folder({ layout: 'sharded' });
      const commit = 'c'.repeat(40);
      const repo = join(tmp, 'cache', 'models--org--tiny-bert');
      mkdirSync(join(repo, 'blobs'), { recursive: true });
      mkdirSync(join(repo, 'refs'), { recursive: true });
      mkdirSync(join(repo, 'snapshots', commit), { recursive: true });
      writeFileSync(join(repo, 'refs', 'main'), commit);
      for (const file of readdirSync(dir)) {
        const content = readFileSync(join(dir, file));
        const blob = createHash('sha256').update(content).digest('hex');
        cpSync(join(dir, file), join(repo, 'blobs', blob));
        symlinkSync(`../../blobs/${blob}`, join(repo, 'snapshots', commit, file));
      }
      process.env.HF_HUB_CACHE = join(tmp, 'cache');
      process.env.HF_HUB_OFFLINE = '1';
      const loaded = await loadEncoderSource('org/tiny-bert', { device: 'cpu', fallbackMaxLength: 32, maxLength: 32 });
      expect(loaded.source).toMatchObject({ kind: 'folder', repoId: 'org/tiny-bert', commit, dir: join(repo, 'snapshots', commit) });
      const base = await encoderOf((await folder({ layout: 'automodel' })).dir);
      expect(maxDiff(await outputs(loaded.module), await outputs(base))).toBe(0);
      // The feature cache's key: the commit and the file list, not a hash of one file.
      const key = await loaded.weightsKey();
      expect(key).toBe(
        createHash('sha256')
          .update(`hub\0org/tiny-bert\0${commit}\0config.json\0${loaded.source.kind === 'folder' ? loaded.source.weights.join('\0') : ''}`)
          .digest('hex'),
      );
      loaded.module.dispose();
      base.dispose();
    });
  });
});
