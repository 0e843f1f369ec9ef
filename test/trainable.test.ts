/**
 * What trains is decided by the technique and the `freeze` option, never by the gradient flags
 * stored in the encoder file (lib/training/trainable.ts); parameters the task cannot reach are frozen
 * and reported; the first applied step refuses trainable parameters without a gradient.
 */
import { existsSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { NativeTensor } from '../lib/addon/binding.js';
import { InputError, ModelError } from '../lib/addon/errors.js';
import { loadBinding } from '../lib/addon/loader.js';
import { loadExamples } from '../lib/data/data.js';
import { type Classifier, type TrainOptions, type TrainResult, train } from '../lib/index.js';
import { demoReviews, demoTokenizer, makeEncoder, runPython } from './fixtures.js';
import { trainAbortedAt } from './helpers/train-abort.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-trainable-'));
let encoder: string;
/** The same weights as `encoder`, saved after `requires_grad_(False)` on every parameter (as the seed tutorial freezes BERT). */
let frozenFile: string;
let data: { texts: string[]; labels: string[] };

const values = (t: NativeTensor) => Array.from(t.toArray() as Float32Array);
const encoderWeights = (file: string) => {
  const m = loadBinding().ScriptModule.load(file);
  const out = new Map(m.namedParameters().map(([n, t]) => [n, values(t)]));
  m.dispose();
  return out;
};
const classifierWeights = (c: Classifier) => new Map(c.module.namedParameters().map(([n, t]) => [n, values(t)]));
const same = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));

beforeAll(async () => {
  encoder = await makeEncoder({ layers: 2, hidden: 32, heads: 2, intermediate: 64, tokenizer: demoTokenizer, seed: 3 });
  frozenFile = join(work, 'frozen-flags.pt');
  const flags = await runPython('-c', [
    [
      'import sys, torch',
      'm = torch.jit.load(sys.argv[1])',
      'for p in m.parameters(): p.requires_grad_(False)',
      'torch.jit.save(m, sys.argv[2])',
      'print(sum(p.requires_grad for p in torch.jit.load(sys.argv[2]).parameters()))',
    ].join('\n'),
    encoder,
    frozenFile,
  ]);
  // The file really stores the flags off: otherwise the test below would prove nothing.
  expect(flags.trim()).toBe('0');
  const raw = await loadExamples(demoReviews);
  data = { texts: raw.texts.slice(0, 96), labels: raw.labels!.slice(0, 96) };
});

const base = (): TrainOptions => ({
  data,
  encoder,
  tokenizer: demoTokenizer,
  epochs: 1,
  batchSize: 16,
  maxLength: 32,
  learningRate: 1e-3,
  headHidden: 16,
  dropout: 0,
});
const POOLER = ['pooler.dense.weight', 'pooler.dense.bias'];

describe('gradient flags stored in the encoder file', () => {
  for (const technique of ['full', 'lora'] as const) {
    it(`do not change a ${technique} run: same seed, bit-identical history and weights`, async () => {
      const fromTrainable = await train({ ...base(), technique });
      const fromFrozen = await train({ ...base(), technique, encoder: frozenFile });
      expect(fromFrozen.history.map((h) => [h.trainLoss, h.validationLoss])).toEqual(
        fromTrainable.history.map((h) => [h.trainLoss, h.validationLoss]),
      );
      const a = classifierWeights(fromTrainable.classifier);
      const b = classifierWeights(fromFrozen.classifier);
      for (const [name, v] of a) expect(same(v, b.get(name)!), name).toBe(true);
      expect(fromFrozen.trainableParameters).toBe(fromTrainable.trainableParameters);
      expect(fromFrozen.trainableEncoderFraction).toBe(fromTrainable.trainableEncoderFraction);
      if (technique === 'full') {
        // Said once, naming the override; a file with the flags on needs no note.
        expect(fromFrozen.notes).toHaveLength(1);
        expect(fromFrozen.notes[0]).toMatch(/marks 37 of its 39 parameters requires_grad = false .*technique 'full' trains them/);
        expect(fromTrainable.notes).toEqual([]);
      } else {
        expect(fromFrozen.notes).toEqual([]);
      }
      fromTrainable.classifier.dispose();
      fromFrozen.classifier.dispose();
    });
  }

  it('full fine-tuning from the frozen-flag file trains every encoder tensor the loss reaches', async () => {
    const before = encoderWeights(frozenFile);
    const result = await train({ ...base(), technique: 'full', encoder: frozenFile });
    const after = classifierWeights(result.classifier);
    const unchanged = [...before].filter(([n, v]) => same(v, after.get(`encoder.${n}`)!)).map(([n]) => n);
    expect(unchanged.sort()).toEqual([...POOLER].sort());
    result.classifier.dispose();
  });
});

describe('parameters the task does not use', () => {
  const check = (result: TrainResult, encoderSize: number, poolerSize: number, headSize: number) => {
    expect(result.unusedParameters.sort()).toEqual([...POOLER].sort());
    expect(result.totalParameters).toBe(encoderSize + headSize);
    return encoderSize - poolerSize;
  };

  it('are frozen, reported, and not counted as trainable ([CLS] and mean pooling)', async () => {
    const weights = encoderWeights(encoder);
    const size = [...weights.values()].reduce((n, v) => n + v.length, 0);
    const pooler = weights.get('pooler.dense.weight')!.length + weights.get('pooler.dense.bias')!.length;
    const head = 32 * 16 + 16 + 16 * 2 + 2;
    for (const pooling of ['cls', 'mean'] as const) {
      const result = await train({ ...base(), technique: 'full', pooling });
      const used = check(result, size, pooler, head);
      expect(result.trainableParameters).toBe(used + head);
      expect(result.trainableEncoderFraction).toBeCloseTo(used / size, 12);
      const after = classifierWeights(result.classifier);
      for (const name of POOLER) expect(same(after.get(`encoder.${name}`)!, weights.get(name)!)).toBe(true);
      result.classifier.dispose();
    }
    const frozen = await train({ ...base(), technique: 'frozen' });
    check(frozen, size, pooler, head);
    expect(frozen.trainableParameters).toBe(head);
    expect(frozen.trainableEncoderFraction).toBe(0);
    frozen.classifier.dispose();
  });

  it('a parameter the probe reaches but the data does not stops the run at the first step, named', async () => {
    // A scripted encoder whose branch uses `probe_only` for token ids ≤ 16 (the probe's ids are
    // 1..16); real tokens are larger, so that layer never gets a gradient in training.
    const branchy = join(work, 'branchy.pt');
    const script = join(work, 'branchy.py');
    // torch.jit.script reads the class's source, so the code goes to a file.
    writeFileSync(
      script,
      [
        'import sys, torch',
        'class E(torch.nn.Module):',
        '    def __init__(self):',
        '        super().__init__()',
        '        torch.manual_seed(0)',
        '        self.embeddings = torch.nn.Embedding(2000, 16)',
        '        self.probe_only = torch.nn.Linear(16, 16)',
        '        self.dense = torch.nn.Linear(16, 16)',
        '    def forward(self, input_ids, attention_mask):',
        '        h = self.embeddings(input_ids)',
        '        if bool(input_ids.max() <= 16):',
        '            h = h + self.probe_only(h)',
        '        return self.dense(h)',
        'torch.jit.script(E().eval()).save(sys.argv[1])',
      ].join('\n'),
    );
    await runPython(script, [branchy]);
    const run = train({ ...base(), technique: 'full', encoder: branchy });
    await expect(run).rejects.toThrow(ModelError);
    await expect(run).rejects.toMatchObject({ code: 'PARAMETERS_WITHOUT_GRADIENT' });
    await expect(run).rejects.toThrow(
      /2 trainable parameter\(s\) got no gradient .*: encoder\.probe_only\.weight, encoder\.probe_only\.bias\b/,
    );
    // With the layer frozen on purpose, the same run trains.
    const frozen = await train({ ...base(), technique: 'full', encoder: branchy, freeze: ['probe_only.'] });
    expect(frozen.frozenParameters.sort()).toEqual(['probe_only.bias', 'probe_only.weight']);
    expect(frozen.history).toHaveLength(1);
    frozen.classifier.dispose();
  });
});

describe('freeze', () => {
  it('keeps the named encoder parameters bit-identical and trains the rest', async () => {
    const before = encoderWeights(encoder);
    const freeze = ['embeddings.', 'encoder.layer.0.'];
    const result = await train({ ...base(), technique: 'full', freeze });
    const after = classifierWeights(result.classifier);
    const expectFrozen = [...before.keys()].filter((n) => freeze.some((p) => n.startsWith(p)));
    expect(expectFrozen.length).toBe(5 + 16);
    expect(result.frozenParameters.sort()).toEqual(expectFrozen.sort());
    for (const [name, v] of before) {
      const kept = expectFrozen.includes(name) || POOLER.includes(name);
      expect(same(v, after.get(`encoder.${name}`)!), name).toBe(kept);
    }
    const size = (names: string[]) => names.reduce((n, name) => n + before.get(name)!.length, 0);
    const all = [...before.keys()];
    expect(result.trainableEncoderFraction).toBeCloseTo((size(all) - size(expectFrozen) - size(POOLER)) / size(all), 12);
    result.classifier.dispose();
  });

  it('refuses a prefix that matches nothing, and techniques that freeze the encoder already', async () => {
    await expect(train({ ...base(), technique: 'full', freeze: ['encoder.layers.0.'] })).rejects.toThrow(
      /freeze: no encoder parameter name starts with 'encoder\.layers\.0\.' \(names look like embeddings\.word_embeddings\.weight/,
    );
    await expect(train({ ...base(), technique: 'lora', freeze: ['embeddings.'] })).rejects.toThrow(InputError);
    await expect(train({ ...base(), technique: 'full', freeze: [''] })).rejects.toThrow(/freeze must be a list of non-empty/);
  });
});

describe('a technique that cannot be set up', () => {
  it('throws an InputError, releases the model and leaves no temporary folder', async () => {
    const leftovers = () => readdirSync(tmpdir()).filter((n) => n.startsWith('torch-bert-best-'));
    const before = leftovers();
    const run = train({ ...base(), technique: 'lora', lora: { targets: ['no.such.module'] } });
    await expect(run).rejects.toThrow(InputError);
    await expect(run).rejects.toThrow(
      /cannot set up technique 'lora': .*no module with a 2-D weight has a path ending in 'no\.such\.module'/,
    );
    expect(leftovers()).toEqual(before);
    await expect(train({ ...base(), technique: 'lora', lora: { alpha: 0 } })).rejects.toThrow(
      /lora\.alpha must be a finite number > 0; got 0/,
    );
  });
});

describe('an option of another technique', () => {
  it('is refused, naming the option and both techniques, instead of being ignored', async () => {
    // Before: LoRA options without technique 'lora' trained the frozen default, the options unused, without a word.
    const cases: Array<[Partial<TrainOptions>, string]> = [
      [{ lora: { rank: 4 } }, "lora goes with technique 'lora', but the technique is 'frozen'"],
      [{ technique: 'full', adapter: { size: 8 } }, "adapter goes with technique 'adapter', but the technique is 'full'"],
      [{ technique: 'lora', encoderLearningRate: 1e-4 }, "encoderLearningRate goes with technique 'full', but the technique is 'lora'"],
    ];
    for (const [options, message] of cases) {
      const run = train({ ...base(), ...options });
      await expect(run).rejects.toBeInstanceOf(InputError);
      await expect(run).rejects.toThrow(`${message}: set technique '`);
    }
  });
});

describe('float16 encoder files', () => {
  it('train in float32: the head and the encoder weights are float32, and the result says so', async () => {
    const half = join(work, 'half.pt');
    await runPython('-c', ['import sys, torch\nm = torch.jit.load(sys.argv[1]).half()\ntorch.jit.save(m, sys.argv[2])', encoder, half]);
    const result = await train({ ...base(), technique: 'full', encoder: half });
    expect(result.notes).toEqual([expect.stringMatching(/holds float16 weights; they train in float32/)]);
    for (const [name, t] of result.classifier.module.namedParameters()) expect(t.dtype, name).toBe('float32');
    expect(existsSync(half)).toBe(true);
    result.classifier.dispose();
  });
});

describe('native: the pieces the trainer decides with', () => {
  const spec = { numClasses: 2, headHidden: 8, dropout: 0, pooling: 'cls' as const, seed: 0 };

  it('buildClassifier names the parameters its output cannot reach, and builds its head in eval mode', async () => {
    const b = loadBinding();
    for (const output of ['tuple', 'dict', 'tensor'] as const) {
      const file = await makeEncoder({ layers: 1, hidden: 16, heads: 2, vocabSize: 50, output });
      const enc = b.ScriptModule.load(file);
      enc.train(true);
      const built = b.buildClassifier(enc, spec);
      expect(built.unusedParameters.sort(), output).toEqual(['encoder.pooler.dense.bias', 'encoder.pooler.dense.weight']);
      // The head's mode is not taken from the encoder's; the encoder's own is left alone.
      expect(built.module.isTraining).toBe(false);
      expect(enc.isTraining).toBe(true);
      // The probe restores every flag it touched.
      expect(
        built.module
          .namedParameters()
          .filter(([, t]) => t.requiresGrad)
          .map(([n]) => n)
          .sort(),
      ).toEqual(
        [
          'head.dense.bias',
          'head.dense.weight',
          'head.out_proj.bias',
          'head.out_proj.weight',
          ...enc.namedParameters().map(([n]) => `encoder.${n}`),
        ].sort(),
      );
      built.module.dispose();
      enc.dispose();
    }
  });

  it('trainStep with checkGradients lists trainable parameters without a gradient and applies no update', async () => {
    const b = loadBinding();
    const enc = b.ScriptModule.load(await makeEncoder({ layers: 1, hidden: 16, heads: 2, vocabSize: 50 }));
    const { module } = b.buildClassifier(enc, spec);
    const params = module.namedParameters();
    const pick = (names: string[]) => names.map((name) => params.find(([n]) => n === name)![1]);
    // Group 1 holds the (unreachable) pooler between two reachable tensors.
    const optimizer = new b.AdamW([
      { params: pick(['head.dense.weight']), lr: 0.1 },
      { params: pick(['head.out_proj.bias', 'encoder.pooler.dense.weight', 'encoder.pooler.dense.bias']), lr: 0.1 },
    ]);
    const before = values(pick(['head.dense.weight'])[0]!);
    const batch = {
      inputIds: Int32Array.from({ length: 16 }, (_, i) => 1 + (i % 40)),
      attentionMask: new Int32Array(16).fill(1),
      batchSize: 2,
      seqLen: 8,
      labels: Int32Array.from([0, 1]),
    };
    const r = await b.trainStep(module, optimizer, batch, { checkGradients: true });
    expect(r.missingGradients).toEqual([
      [1, 1],
      [1, 2],
    ]);
    expect(same(values(pick(['head.dense.weight'])[0]!), before)).toBe(true);
    // Not asked: null, and the update applies.
    const r2 = await b.trainStep(module, optimizer, batch);
    expect(r2.missingGradients).toBeNull();
    expect(same(values(pick(['head.dense.weight'])[0]!), before)).toBe(false);
    optimizer.dispose();
    module.dispose();
    enc.dispose();
  });

  it('LoRA merge leaves the base weights frozen even where the file had them trainable', async () => {
    const b = loadBinding();
    const enc = b.ScriptModule.load(await makeEncoder({ layers: 1, hidden: 16, heads: 2, vocabSize: 50 }));
    const { module } = b.buildClassifier(enc, spec);
    const query = module.namedParameters().find(([n]) => n === 'encoder.encoder.layer.0.attention.self.query.weight')![1];
    expect(query.requiresGrad).toBe(true);
    const adapters = b.applyLora(module, { targets: ['attention.self.query'], rank: 2, alpha: 4, dropout: 0, seed: 0 });
    expect(query.requiresGrad).toBe(false);
    adapters.merge();
    expect(query.requiresGrad).toBe(false);
    adapters.dispose();
    module.dispose();
    enc.dispose();
  });

  it('ScriptModule.to casts floating-point parameters and keeps integer buffers', async () => {
    const b = loadBinding();
    const enc = b.ScriptModule.load(await makeEncoder({ layers: 1, hidden: 16, heads: 2, vocabSize: 50 }));
    const word = () => enc.namedParameters().find(([n]) => n === 'embeddings.word_embeddings.weight')![1];
    const original = values(word());
    enc.to('cpu', 'bfloat16');
    expect(enc.namedParameters().every(([, t]) => t.dtype === 'bfloat16')).toBe(true);
    enc.to('cpu', 'float32');
    expect(word().dtype).toBe('float32');
    // bfloat16 keeps 8 bits of mantissa: the round trip is within 2^-8 relative.
    const roundTrip = values(word());
    expect(Math.max(...original.map((v, i) => Math.abs(roundTrip[i]! - v) - Math.abs(v) / 256))).toBeLessThanOrEqual(0);
    expect(same(roundTrip, original)).toBe(false);
    // Integer buffers (position ids) are untouched: the encoder still runs.
    const ids = b.Tensor.fromArray(
      Int32Array.from({ length: 8 }, (_, i) => i + 1),
      [1, 8],
      'int64',
    );
    const mask = b.Tensor.fromArray(new Int32Array(8).fill(1), [1, 8], 'int64');
    expect(() => enc.forward(ids, mask)).not.toThrow();
    expect(() => enc.to('cpu', 'int64' as 'float32')).toThrow(/dtype must be a floating-point type/);
    enc.dispose();
  });
});

describe('resuming a training state that trained other tensors', () => {
  it('is refused with a message naming them, not libtorch optimizer-state error', async () => {
    const outDir = join(work, 'resume-extra');
    const opts: TrainOptions = { ...base(), technique: 'full', epochs: 2 };
    await expect(trainAbortedAt({ ...opts, outDir }, (e) => e.type === 'batch' && e.epoch === 1 && e.batch === 3)).rejects.toThrow(
      /aborted/,
    );
    // As an earlier version wrote it for full fine-tuning: the (unused) pooler among the trained tensors.
    const b = loadBinding();
    const file = join(outDir, 'training-state', 'tensors.pt');
    const saved = b.loadTensors(file);
    const pooler = b.Tensor.fromArray(new Float32Array(32), [32], 'float32');
    b.saveTensors(file, { ...saved, 'encoder.pooler.dense.bias': pooler });
    await expect(train({ ...opts, resumeFrom: outDir })).rejects.toThrow(
      /training state in .* trained tensors this run does not \(encoder\.pooler\.dense\.bias\): it was written by an earlier torch-bert/,
    );
  });
});
