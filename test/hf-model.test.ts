/**
 * Hugging Face encoders built natively (binding.buildEncoder, native/model/) against the eager
 * reference of scripts/python/hf_reference.py (transformers' math, seeded random weights, padded
 * batches), against the traced BertModel of make_encoder.py (same weights: same outputs, same
 * LoRA outputs, same token pruning), and through Python's torch.jit.load of the saved modules.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { NativeBinding, NativeEncoderConfig, NativeScriptModule, NativeTensor, NativeValue } from '../lib/addon/binding.js';
import { loadBinding } from '../lib/addon/loader.js';
import { fixturesDir, makeEncoder, makeEncoderConfig, repoRoot, runPython } from './fixtures.js';

const b: NativeBinding = loadBinding();
const REFERENCE = 'scripts/python/hf_reference.py';
const tmp = mkdtempSync(path.join(tmpdir(), 'hf-model-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

type Act = NativeEncoderConfig['hiddenAct'];
const ACTS: Act[] = ['gelu', 'gelu_new', 'gelu_pytorch_tanh', 'relu', 'silu'];
type Decoder = 'tied' | 'same' | 'own';

function config(family: NativeEncoderConfig['family'], hiddenAct: Act, pooler: boolean): NativeEncoderConfig {
  return {
    family,
    vocabSize: 60,
    hiddenSize: 16,
    numLayers: 2,
    numHeads: 2,
    intermediateSize: 24,
    maxPositions: 40,
    typeVocabSize: family === 'bert' ? 3 : family === 'roberta' ? 1 : 0,
    layerNormEps: family === 'distilbert' ? 1e-12 : 1e-5,
    padTokenId: family === 'roberta' ? 1 : 0,
    hiddenAct,
    pooler,
    mlmHead: true,
  };
}

interface Reference {
  dir: string;
  weights: Record<string, NativeTensor>;
  inputs: Record<string, NativeTensor>;
  outputs: Record<string, NativeTensor>;
  keys: { encoder: string[]; head: string[] | null };
}

/** hf_reference.py make for this config, cached under test/.fixtures by a hash of its arguments and the script. */
async function reference(cfg: NativeEncoderConfig, seed: number, decoder: Decoder): Promise<Reference> {
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ cfg, seed, decoder }));
  hash.update(readFileSync(path.join(repoRoot, REFERENCE)));
  const dir = path.join(fixturesDir, `hf-${hash.digest('hex').slice(0, 20)}`);
  if (!existsSync(path.join(dir, 'keys.json'))) {
    mkdirSync(fixturesDir, { recursive: true });
    const work = `${dir}.${process.pid}.tmp`;
    mkdirSync(work, { recursive: true });
    const cfgFile = path.join(work, 'config.json');
    writeFileSync(cfgFile, JSON.stringify(cfg));
    await runPython(REFERENCE, ['make', '--config', cfgFile, '--seed', String(seed), '--decoder', decoder, '--out', work]);
    rmSync(dir, { recursive: true, force: true });
    renameSync(work, dir);
  }
  return {
    dir,
    weights: b.loadTensors(path.join(dir, 'weights.pt')),
    inputs: b.loadTensors(path.join(dir, 'inputs.pt')),
    outputs: b.loadTensors(path.join(dir, 'outputs.pt')),
    keys: JSON.parse(readFileSync(path.join(dir, 'keys.json'), 'utf8')),
  };
}

function values(t: NativeTensor): number[] {
  return Array.from(t.toArray() as ArrayLike<number>, Number);
}

function maxAbsDiff(a: NativeTensor, b: NativeTensor): number {
  expect(a.shape).toEqual(b.shape);
  const x = values(a);
  const y = values(b);
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
  return m;
}

function encoderInputs(cfg: NativeEncoderConfig, inputs: Record<string, NativeTensor>, batch: string): NativeTensor[] {
  const args = [inputs[`${batch}.input_ids`], inputs[`${batch}.attention_mask`]];
  if (cfg.family === 'bert') args.push(inputs[`${batch}.token_type_ids`]);
  return args;
}

/** The encoder's outputs as the reference names them. */
function run(cfg: NativeEncoderConfig, encoder: NativeScriptModule, head: NativeScriptModule | null, ref: Reference, batch: string) {
  const out = encoder.forward(...encoderInputs(cfg, ref.inputs, batch));
  const [hidden, pooled] = Array.isArray(out) ? (out as NativeTensor[]) : [out as NativeTensor, undefined];
  return { hidden, pooled, logits: head ? (head.forward(hidden) as NativeTensor) : undefined };
}

function build(cfg: NativeEncoderConfig, weights: Record<string, NativeTensor>) {
  return b.buildEncoder(cfg, Object.entries(weights), 'cpu');
}

const FAMILIES: Array<{ name: string; family: NativeEncoderConfig['family']; pooler: boolean }> = [
  { name: 'bert with a pooler', family: 'bert', pooler: true },
  { name: 'roberta with a pooler', family: 'roberta', pooler: true },
  { name: 'distilbert', family: 'distilbert', pooler: false },
];
const CASES = [
  ...FAMILIES.flatMap((f) => ACTS.map((act, i) => ({ ...f, act, decoder: (['tied', 'same', 'own'] as Decoder[])[i % 3] }))),
  { name: 'bert without a pooler', family: 'bert' as const, pooler: false, act: 'gelu_new' as Act, decoder: 'own' as Decoder },
];

describe('buildEncoder against the eager reference (transformers math)', () => {
  for (const c of CASES) {
    it(`${c.name}, ${c.act}, decoder ${c.decoder}: outputs and MLM logits at two padded batch shapes, HF names`, async () => {
      const cfg = config(c.family, c.act, c.pooler);
      const ref = await reference(cfg, 7, c.decoder);
      const { encoder, mlmHead } = build(cfg, ref.weights);
      expect(encoder.isTraining).toBe(false);
      expect(encoder.forwardArity).toBe(c.family === 'bert' ? 3 : 2);
      for (const batch of ['b0', 'b1']) {
        const out = run(cfg, encoder, mlmHead, ref, batch);
        expect(maxAbsDiff(out.hidden, ref.outputs[`${batch}.last_hidden_state`]), batch).toBeLessThan(1e-5);
        if (c.pooler) expect(maxAbsDiff(out.pooled!, ref.outputs[`${batch}.pooler_output`])).toBeLessThan(1e-5);
        else expect(out.pooled).toBeUndefined();
        expect(maxAbsDiff(out.logits!, ref.outputs[`${batch}.logits`])).toBeLessThan(1e-5);
      }
      // The padded rows really are padded (the batch tests what padding does).
      expect(values(ref.inputs['b1.attention_mask'])).toContain(0);
      expect(encoder.namedParameters().map(([n]) => n)).toEqual(ref.keys.encoder);
      expect(
        mlmHead!
          .namedParameters()
          .map(([n]) => n)
          .sort(),
      ).toEqual([...ref.keys.head!].sort());

      // The decoder weight is the word embedding tensor unless the checkpoint's own differs.
      const decoderName = { bert: 'predictions.decoder.weight', roberta: 'decoder.weight', distilbert: 'vocab_projector.weight' }[c.family];
      const words = encoder.namedParameters().find(([n]) => n === 'embeddings.word_embeddings.weight')![1];
      const decoder = mlmHead!.namedParameters().find(([n]) => n === decoderName)![1];
      const before = values(decoder);
      b.noGrad(() => words.copyFrom(b.Tensor.fromArray(new Float32Array(before.length).fill(0.5), words.shape)));
      expect(values(decoder).every((v) => v === 0.5)).toBe(c.decoder !== 'own');
    });
  }

  it('saved with save(), loads in Python torch.jit.load and gives the same outputs (each family, with its head)', async () => {
    for (const c of [CASES[0], CASES[6], CASES[12]]) {
      const cfg = config(c.family, c.act, c.pooler);
      const ref = await reference(cfg, 7, c.decoder);
      const { encoder, mlmHead } = build(cfg, ref.weights);
      const enc = path.join(tmp, `${c.family}-encoder.pt`);
      const head = path.join(tmp, `${c.family}-head.pt`);
      const cfgFile = path.join(tmp, `${c.family}-config.json`);
      const out = path.join(tmp, `${c.family}-out.pt`);
      encoder.save(enc);
      mlmHead!.save(head);
      writeFileSync(cfgFile, JSON.stringify(cfg));
      await runPython(REFERENCE, [
        'jit',
        '--config',
        cfgFile,
        '--module',
        enc,
        '--head',
        head,
        '--inputs',
        path.join(ref.dir, 'inputs.pt'),
        '--out',
        out,
      ]);
      const got = b.loadTensors(out);
      expect(Object.keys(got).sort()).toEqual(Object.keys(ref.outputs).sort());
      for (const [name, t] of Object.entries(ref.outputs)) expect(maxAbsDiff(got[name], t), `${c.family} ${name}`).toBeLessThan(1e-5);
      // And loads back here with the same parameter names.
      const again = b.ScriptModule.load(enc);
      expect(again.namedParameters().map(([n]) => n)).toEqual(ref.keys.encoder);
    }
  });

  it('dropout is on in train mode (two calls differ) and off in eval mode (equal to the reference)', async () => {
    for (const c of [CASES[0], CASES[6], CASES[12]]) {
      const cfg = config(c.family, c.act, c.pooler);
      const ref = await reference(cfg, 7, c.decoder);
      const { encoder, mlmHead } = build(cfg, ref.weights);
      encoder.train(true);
      mlmHead!.train(true);
      const first = run(cfg, encoder, null, ref, 'b1').hidden;
      const second = run(cfg, encoder, null, ref, 'b1').hidden;
      expect(maxAbsDiff(first, second), c.family).toBeGreaterThan(1e-2);
      encoder.train(false);
      expect(encoder.isTraining).toBe(false);
      const third = run(cfg, encoder, null, ref, 'b1').hidden;
      const fourth = run(cfg, encoder, null, ref, 'b1').hidden;
      expect(maxAbsDiff(third, fourth)).toBe(0);
      expect(maxAbsDiff(third, ref.outputs['b1.last_hidden_state'])).toBeLessThan(1e-5);
    }
  });

  it('hiddenDropoutProb and attentionDropoutProb 0: train mode computes what eval mode does', async () => {
    const cfg = { ...config('bert', 'gelu', true), hiddenDropoutProb: 0, attentionDropoutProb: 0 };
    const ref = await reference(config('bert', 'gelu', true), 7, 'tied');
    const { encoder } = build(cfg, ref.weights);
    encoder.train(true);
    expect(maxAbsDiff(run(cfg, encoder, null, ref, 'b1').hidden, ref.outputs['b1.last_hidden_state'])).toBeLessThan(1e-5);
  });
});

describe('buildEncoder errors', () => {
  const cfg = config('bert', 'gelu', true);
  const withoutHead = { ...cfg, mlmHead: false };

  async function encoderWeights(): Promise<Record<string, NativeTensor>> {
    const ref = await reference(cfg, 7, 'tied');
    return Object.fromEntries(Object.entries(ref.weights).filter(([n]) => !n.startsWith('cls.')));
  }

  it('names a missing tensor and its expected shape', async () => {
    const w = await encoderWeights();
    delete w['encoder.layer.1.attention.self.key.bias'];
    expect(() => build(withoutHead, w)).toThrow(
      "buildEncoder: missing tensor 'encoder.layer.1.attention.self.key.bias' (expected shape [16])",
    );
  });

  it('names an unexpected tensor (a prefix the caller did not strip, a head without mlmHead)', async () => {
    const w = await encoderWeights();
    w['bert.pooler.dense.bias'] = w['pooler.dense.bias'];
    expect(() => build(withoutHead, w)).toThrow("buildEncoder: unexpected tensor 'bert.pooler.dense.bias' [16]");
    const ref = await reference(cfg, 7, 'tied');
    expect(() => build(withoutHead, ref.weights)).toThrow(
      /unexpected tensors 'cls\.predictions\.bias' \[60\], 'cls\.predictions\.transform/,
    );
    // The pooler's weights without config.pooler are unexpected too.
    const encoderOnly = await encoderWeights();
    expect(() => build({ ...withoutHead, pooler: false }, encoderOnly)).toThrow(
      /unexpected tensors 'pooler\.dense\.bias' \[16\], 'pooler\.dense\.weight' \[16, 16\]/,
    );
  });

  it('names a tensor whose shape disagrees with the config, with both shapes', async () => {
    const w = await encoderWeights();
    expect(() => build({ ...withoutHead, intermediateSize: 32 }, w)).toThrow(
      "buildEncoder: tensor 'encoder.layer.0.intermediate.dense.weight' has shape [24, 16] but the config says [32, 16]",
    );
    expect(() => build({ ...withoutHead, typeVocabSize: 2 }, w)).toThrow(
      "buildEncoder: tensor 'embeddings.token_type_embeddings.weight' has shape [3, 16] but the config says [2, 16]",
    );
  });

  it('names a bad config field', async () => {
    const w = await encoderWeights();
    expect(() => build({ ...withoutHead, numHeads: 3 }, w)).toThrow('buildEncoder: config.numHeads (3) must divide config.hiddenSize (16)');
    expect(() => build({ ...withoutHead, hiddenAct: 'tanh' as Act }, w)).toThrow(/config\.hiddenAct must be one of .*got 'tanh'/);
    expect(() => build({ ...withoutHead, numLayers: 0 }, w)).toThrow('buildEncoder: config.numLayers must be a positive integer, got 0');
    expect(() => build({ ...withoutHead, family: 'gpt2' as 'bert' }, w)).toThrow(
      /config\.family must be 'bert', 'roberta' or 'distilbert', got 'gpt2'/,
    );
    expect(() => build({ ...withoutHead, family: 'distilbert', typeVocabSize: 0, pooler: true }, w)).toThrow(
      /config\.pooler must be false for distilbert/,
    );
    expect(() => build({ ...withoutHead, hiddenDropoutProb: 1 }, w)).toThrow(/config\.hiddenDropoutProb must be in \[0, 1\)/);
  });
});

describe('a built BERT and the traced BertModel of make_encoder.py with the same weights', () => {
  const T = 8;
  const IDS = [2, 15, 7, 33, 9, 4, 3, 0, 2, 41, 3, 0, 0, 0, 0, 0, 2, 5, 6, 7, 8, 9, 10, 3];
  const MASK = IDS.map((id, i) => (id !== 0 || i % T === 0 ? 1 : 0));
  const TYPES = IDS.map((_, i) => (i % T >= 4 ? 1 : 0));
  const ids = () => b.Tensor.fromArray(BigInt64Array.from(IDS.map(BigInt)), [3, T]);
  const mask = () => b.Tensor.fromArray(BigInt64Array.from(MASK.map(BigInt)), [3, T]);
  const types = () => b.Tensor.fromArray(BigInt64Array.from(TYPES.map(BigInt)), [3, T]);
  const sizes = { vocabSize: 100, layers: 2, hidden: 32, heads: 2, intermediate: 64 };
  const traceCfg = makeEncoderConfig(sizes);

  async function pair() {
    const traced = b.ScriptModule.load(await makeEncoder({ ...sizes, signature: 3, seed: 11 }));
    // Copies: the built encoder would otherwise share the traced module's float32 tensors.
    const weights = traced.namedParameters().map(([n, t]): [string, NativeTensor] => [n, t.clone()]);
    const built = b.buildEncoder(traceCfg, weights, 'cpu').encoder;
    return { traced, built };
  }

  function tuple(v: NativeValue): NativeTensor[] {
    expect(Array.isArray(v)).toBe(true);
    return v as NativeTensor[];
  }

  it('give the same outputs, and the same adapted outputs with LoRA (activation space in both)', async () => {
    const { traced, built } = await pair();
    const [h0, p0] = tuple(traced.forward(ids(), mask(), types()));
    const [h1, p1] = tuple(built.forward(ids(), mask(), types()));
    expect(maxAbsDiff(h1, h0)).toBeLessThan(1e-5);
    expect(maxAbsDiff(p1, p0)).toBeLessThan(1e-5);

    const spec = { targets: ['attention.self.query', 'attention.self.value', 'output.dense'], rank: 4, alpha: 8, dropout: 0, seed: 3 };
    const adapters = [b.applyLora(traced, spec), b.applyLora(built, spec)];
    expect(adapters[1].modules).toEqual(adapters[0].modules);
    expect(adapters[1].plan()).toEqual(adapters[0].plan());
    expect(adapters[1].plan().activation).toHaveLength(8); // 2 layers x query, value, attention.output.dense, output.dense
    expect(adapters[1].plan().weightSpace).toEqual([]);
    // B starts at zero (no change): give both the same nonzero B so the adapters matter.
    for (const a of adapters) {
      for (const [name, t] of a.parameters()) {
        if (!name.endsWith('lora_B')) continue;
        const n = t.shape.reduce((x, y) => x * y, 1);
        const v = Float32Array.from({ length: n }, (_, i) => Math.sin(i + name.length) * 0.3);
        b.noGrad(() => t.copyFrom(b.Tensor.fromArray(v, t.shape)));
      }
    }
    const [a0] = tuple(traced.forward(ids(), mask(), types()));
    const [a1] = tuple(built.forward(ids(), mask(), types()));
    expect(maxAbsDiff(a0, h0)).toBeGreaterThan(1e-2);
    expect(maxAbsDiff(a1, a0)).toBeLessThan(1e-5);
  });

  it('token pruning finds the same pruning on both under [CLS] pooling (eval mode: the dropout flags of the built encoder are planned as constants)', async () => {
    const { traced, built } = await pair();
    const spec = { numClasses: 3, headHidden: 8, dropout: 0, pooling: 'cls' as const, seed: 1 };
    const c0 = b.buildClassifier(traced, spec).module;
    const c1 = b.buildClassifier(built, spec).module;
    const f0 = c0.runMethod('features', ids(), mask()) as NativeTensor;
    const f1 = c1.runMethod('features', ids(), mask()) as NativeTensor;
    expect(maxAbsDiff(f1, f0)).toBeLessThan(1e-5);
    const ops = c0.prunedOps('features');
    expect(ops).toContain('aten::gelu');
    expect(c1.prunedOps('features')).toEqual(ops);
  });
});
