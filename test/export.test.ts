/**
 * exportHuggingFace and `torch-bert export`: the exported folder is read by an independent
 * Python reader (test/python/hf_export_reference.py: its own safetensors parser) into
 * make_encoder.py's reference BertModel with strict key checking, and must reproduce the
 * classifier's own features and probabilities; LoRA's PEFT adapter applied to the base weights
 * must give the merged ones; unsupported encoders and a missing head count are refused.
 */
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { type Classifier, exportHuggingFace, loadClassifier, ModelError, type TrainOptions, train } from '../lib/index.js';
import { encoderShapes } from '../lib/models/export-family.js';
import {
  classifierBatch,
  classifierFeatures,
  demoTokenizer,
  makeHfFolder,
  PROBE_TEXTS,
  PYTHON,
  repoRoot,
  runPython,
  smallClassifierInputs,
} from './fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-export-'));
const TEXTS = PROBE_TEXTS;
let encoder: string;
let data: { texts: string[]; labels: string[] };

beforeAll(async () => {
  ({ encoder, data } = await smallClassifierInputs());
});

const base = (outDir: string): TrainOptions => ({
  data,
  encoder,
  tokenizer: demoTokenizer,
  outDir,
  epochs: 1,
  batchSize: 32,
  maxLength: 32,
  headHidden: 16,
});

interface Reference {
  features: number[][];
  probabilities: number[][];
  metadata: Record<string, string> | null;
  head_metadata: Record<string, string> | null;
  keys: string[];
  adapter?: { keys: string[]; shapes: Record<string, number[]>; max_merge_diff: number; max_b: number; max_update: number };
}

/** The classifier's own pooled features of TEXTS (through the library), and the ids and mask they came from. */
async function ownFeatures(classifier: Classifier) {
  const { batch, inputIds, attentionMask } = await classifierBatch(classifier, TEXTS);
  return { features: await classifierFeatures(classifier, batch), inputIds, attentionMask };
}

async function reference(
  dir: string,
  own: Awaited<ReturnType<typeof ownFeatures>>,
  pooling: string,
  baseEncoder?: string,
): Promise<Reference> {
  const stdin = JSON.stringify({
    dir,
    input_ids: own.inputIds,
    attention_mask: own.attentionMask,
    pooling,
    base_encoder: baseEncoder ?? null,
  });
  return JSON.parse(await runPython('test/python/hf_export_reference.py', [], stdin)) as Reference;
}

const maxDiff = (a: number[][], b: number[][]) => {
  expect(a.length).toBe(b.length);
  return Math.max(...a.flatMap((row, r) => row.map((v, c) => Math.abs(v - b[r]![c]!))));
};

describe('exportHuggingFace', () => {
  it('full: transformers BertModel names (strict load), features and head probabilities equal the classifier to 1e-5, config.json as the model needs', async () => {
    const dir = join(work, 'full');
    (await train({ ...base(dir), technique: 'full', learningRate: 1e-3 })).classifier.dispose();
    const out = join(work, 'full-hf');
    const result = await exportHuggingFace({ classifier: dir, out, heads: 4 });
    expect(result.family).toBe('bert');
    expect(result.files).toEqual([
      'config.json',
      'model.safetensors',
      'tokenizer.json',
      'tokenizer_config.json',
      'torch_bert_head.safetensors',
    ]);
    expect(result.adapter).toBeNull();

    const classifier = await loadClassifier(dir);
    try {
      const own = await ownFeatures(classifier);
      const ref = await reference(out, own, 'cls');
      expect(maxDiff(ref.features, own.features)).toBeLessThan(1e-5);
      const predicted = await classifier.predict(TEXTS);
      const probabilities = predicted.map((p) => classifier.labels.map((l) => p.probabilities[l]!));
      expect(maxDiff(ref.probabilities, probabilities)).toBeLessThan(1e-5);
      expect(ref.metadata).toEqual({ format: 'pt' });
      expect(ref.head_metadata).toEqual({ format: 'pt' });
      // The trained weights, not the encoder file's: full fine-tuning moved them.
      const original = JSON.parse(
        await runPython('-c', [
          'import sys, json, torch; p = dict(torch.jit.load(sys.argv[1]).named_parameters()); ' +
            'print(json.dumps({"query": p["encoder.layer.0.attention.self.query.weight"].flatten()[:4].tolist(), "vocab": p["embeddings.word_embeddings.weight"].shape[0]}))',
          encoder,
        ]),
      ) as { query: number[]; vocab: number };
      const trained = Array.from(
        classifier.module
          .namedParameters()
          .find(([n]) => n === 'encoder.encoder.layer.0.attention.self.query.weight')![1]
          .toArray()
          .slice(0, 4) as Float32Array,
      );
      expect(maxDiff([original.query], [trained])).toBeGreaterThan(1e-6);

      const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown> & {
        torch_bert: Record<string, unknown>;
      };
      expect(config).toMatchObject({
        architectures: ['BertModel'],
        model_type: 'bert',
        vocab_size: original.vocab,
        hidden_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 256,
        max_position_embeddings: 512,
        type_vocab_size: 2,
        hidden_act: 'gelu',
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        torch_dtype: 'float32',
        id2label: Object.fromEntries(classifier.labels.map((l, i) => [String(i), l])),
        label2id: Object.fromEntries(classifier.labels.map((l, i) => [l, i])),
      });
      expect(config.torch_bert).toMatchObject({ format: 'torch-bert-hf-export', maxLength: 32, assumed: ['layer_norm_eps', 'hidden_act'] });
      expect(config.torch_bert.head).toMatchObject({ file: 'torch_bert_head.safetensors', pooling: 'cls', dropout: 0.1 });
      expect(JSON.parse(readFileSync(join(out, 'tokenizer_config.json'), 'utf8'))).toMatchObject({
        tokenizer_class: 'BertTokenizerFast',
        do_lower_case: true,
        model_max_length: 32,
        cls_token: '[CLS]',
        pad_token: '[PAD]',
      });
      expect(readFileSync(join(out, 'tokenizer.json'), 'utf8')).toBe(readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
    } finally {
      classifier.dispose();
    }
  });

  it('lora: the merged export reproduces the classifier (mean pooling); the PEFT adapter applied to the base weights gives the merged ones', async () => {
    const dir = join(work, 'lora');
    const encoderBefore = readFileSync(encoder);
    (
      await train({ ...base(dir), technique: 'lora', lora: { rank: 4, alpha: 8 }, learningRate: 5e-3, pooling: 'mean' })
    ).classifier.dispose();
    const adaptersBefore = readFileSync(join(dir, 'adapters.pt'));
    const classifierBefore = readFileSync(join(dir, 'classifier.pt'));
    const out = join(work, 'lora-hf');
    const result = await exportHuggingFace({ classifier: dir, out, heads: 4 });
    expect(result.files).toEqual([
      'adapter/adapter_config.json',
      'adapter/adapter_model.safetensors',
      'config.json',
      'model.safetensors',
      'tokenizer.json',
      'tokenizer_config.json',
      'torch_bert_head.safetensors',
    ]);
    // Nothing of the classifier (or the encoder) was written to.
    expect(readFileSync(join(dir, 'adapters.pt')).equals(adaptersBefore)).toBe(true);
    expect(readFileSync(join(dir, 'classifier.pt')).equals(classifierBefore)).toBe(true);
    expect(readFileSync(encoder).equals(encoderBefore)).toBe(true);

    const classifier = await loadClassifier(dir);
    try {
      const own = await ownFeatures(classifier);
      const ref = await reference(out, own, 'mean', encoder);
      expect(maxDiff(ref.features, own.features)).toBeLessThan(1e-5);
      const predicted = await classifier.predict(TEXTS);
      expect(
        maxDiff(
          ref.probabilities,
          predicted.map((p) => classifier.labels.map((l) => p.probabilities[l]!)),
        ),
      ).toBeLessThan(1e-5);

      const adapter = ref.adapter!;
      const modules = [0, 1].flatMap((l) => ['query', 'value'].map((m) => `base_model.model.encoder.layer.${l}.attention.self.${m}`));
      expect([...adapter.keys].sort()).toEqual(modules.flatMap((m) => [`${m}.lora_A.weight`, `${m}.lora_B.weight`]).sort());
      for (const m of modules) {
        expect(adapter.shapes[`${m}.lora_A.weight`]).toEqual([4, 64]);
        expect(adapter.shapes[`${m}.lora_B.weight`]).toEqual([64, 4]);
      }
      // Training moved B off zero and the merged weights off the base; W0 + (alpha/r)·B·A is them.
      expect(adapter.max_b).toBeGreaterThan(1e-4);
      expect(adapter.max_update).toBeGreaterThan(1e-5);
      expect(adapter.max_merge_diff).toBeLessThan(1e-6);
      expect(JSON.parse(readFileSync(join(out, 'adapter', 'adapter_config.json'), 'utf8'))).toMatchObject({
        peft_type: 'LORA',
        task_type: 'FEATURE_EXTRACTION',
        r: 4,
        lora_alpha: 8,
        lora_dropout: 0,
        target_modules: ['attention.self.query', 'attention.self.value'],
        bias: 'none',
        base_model_name_or_path: null,
      });
      expect(result.adapter).toMatchObject({ r: 4, loraAlpha: 8, modules: modules.map((m) => m.slice('base_model.model.'.length)) });
    } finally {
      classifier.dispose();
    }
  });

  it("takes heads, epsilon, activation and family from a recorded Hugging Face source, and names it PEFT's base", async () => {
    const dir = join(work, 'lora');
    const hfDir = join(work, 'source-folder');
    mkdirSync(hfDir);
    const sourceConfig = { model_type: 'roberta', num_attention_heads: 4, layer_norm_eps: 1e-5, hidden_act: 'gelu_new', pad_token_id: 1 };
    writeFileSync(join(hfDir, 'config.json'), JSON.stringify(sourceConfig));
    const recorded = join(work, 'lora-recorded');
    cpSync(dir, recorded, { recursive: true });
    const config = JSON.parse(readFileSync(join(recorded, 'config.json'), 'utf8'));
    const commit = 'a'.repeat(40);
    config.encoder.source = {
      kind: 'folder',
      dir: hfDir,
      modelType: 'roberta',
      family: 'roberta',
      weights: ['model.safetensors'],
      repoId: 'org/tiny',
      revision: 'main',
      commit,
    };
    writeFileSync(join(recorded, 'config.json'), JSON.stringify(config));
    const out = join(work, 'lora-recorded-hf');
    const result = await exportHuggingFace({ classifier: recorded, out });
    expect(result.family).toBe('roberta');
    expect(result.assumed).toEqual([]);
    expect(result.config).toMatchObject({
      architectures: ['RobertaModel'],
      model_type: 'roberta',
      num_attention_heads: 4,
      layer_norm_eps: 1e-5,
      hidden_act: 'gelu_new',
      pad_token_id: 1,
      type_vocab_size: 2,
    });
    expect(JSON.parse(readFileSync(join(out, 'adapter', 'adapter_config.json'), 'utf8'))).toMatchObject({
      base_model_name_or_path: 'org/tiny',
      revision: commit,
    });
    expect(JSON.parse(readFileSync(join(out, 'tokenizer_config.json'), 'utf8')).tokenizer_class).toBe('RobertaTokenizerFast');
    // A heads option that disagrees with the recorded config is refused, naming both.
    await expect(exportHuggingFace({ classifier: recorded, out: join(work, 'x'), heads: 8 })).rejects.toThrow(
      /heads 8 disagrees with the encoder config recorded .*num_attention_heads 4/,
    );

    // XLM-R (RoBERTa's modules under its own names) exports as what it is, as save_pretrained writes
    // it: model_type xlm-roberta, XLMRobertaModel, and its own tokenizer class (RoBERTa's would
    // reset a pre-tokenizer that adds a prefix space, as XLM-R's Metaspace does).
    config.encoder.source = { ...config.encoder.source, modelType: 'xlm-roberta', config: { ...sourceConfig, model_type: 'xlm-roberta' } };
    writeFileSync(join(recorded, 'config.json'), JSON.stringify(config));
    const xlmr = join(work, 'lora-recorded-xlmr');
    expect((await exportHuggingFace({ classifier: recorded, out: xlmr })).config).toMatchObject({
      architectures: ['XLMRobertaModel'],
      model_type: 'xlm-roberta',
      num_attention_heads: 4,
    });
    expect(JSON.parse(readFileSync(join(xlmr, 'tokenizer_config.json'), 'utf8')).tokenizer_class).toBe('XLMRobertaTokenizerFast');
  });

  it("a classifier trained on a model folder exports that folder's heads, activation and epsilon after the folder is gone", async () => {
    // Values no family default gives: 2 heads (any divisor of 32 would load), relu, and the folder's own dropout.
    const { dir: fixture } = await makeHfFolder({ layers: 1, hidden: 32, heads: 2, intermediate: 64, act: 'relu', dropout: 0.05 });
    const folder = join(work, 'gone-folder');
    cpSync(fixture, folder, { recursive: true });
    const sourceConfig = JSON.parse(readFileSync(join(folder, 'config.json'), 'utf8'));
    const dir = join(work, 'gone');
    (await train({ data, encoder: folder, outDir: dir, epochs: 1, batchSize: 32, maxLength: 32, headHidden: 16 })).classifier.dispose();
    // The classifier is moved to another machine, or the base folder (a Hub snapshot) is pruned.
    rmSync(folder, { recursive: true });
    const result = await exportHuggingFace({ classifier: dir, out: join(work, 'gone-hf') });
    expect(result.assumed).toEqual([]);
    expect(result.config).toMatchObject({
      architectures: ['BertModel'],
      num_attention_heads: 2,
      hidden_act: 'relu',
      layer_norm_eps: sourceConfig.layer_norm_eps,
      hidden_dropout_prob: 0.05,
      attention_probs_dropout_prob: 0.05,
    });
    expect(sourceConfig).toMatchObject({ num_attention_heads: 2, hidden_act: 'relu', layer_norm_eps: 1e-12 });
  });

  it('refuses when nothing gives the number of attention heads, naming it and --heads; writes nothing', async () => {
    const dir = join(work, 'frozen');
    (await train({ ...base(dir) })).classifier.dispose();
    const out = join(work, 'frozen-hf');
    const err = await exportHuggingFace({ classifier: dir, out }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelError);
    expect((err as ModelError).code).toBe('EXPORT_HEADS_UNKNOWN');
    expect((err as Error).message).toMatch(/num_attention_heads/);
    expect((err as Error).message).toMatch(/--heads N/);
    expect((err as Error).message).toMatch(/hidden size 64/);
    expect(existsSync(out)).toBe(false);
    await expect(exportHuggingFace({ classifier: dir, out, heads: 5 })).rejects.toThrow(
      /heads 5 does not divide the encoder's hidden size 64/,
    );
  });

  it('refuses an encoder of no supported family, naming what is missing and what it has', async () => {
    const tiny = join(work, 'tiny.pt');
    await runPython('-c', [
      [
        'import sys, torch',
        'from torch import nn',
        'class Tiny(nn.Module):',
        '    def __init__(self):',
        '        super().__init__(); self.word_embeddings = nn.Embedding(1000, 16); self.mix = nn.Linear(16, 16)',
        '    def forward(self, ids, mask):',
        '        return self.mix(self.word_embeddings(ids))',
        'ids = torch.ones(1, 4, dtype=torch.long)',
        'torch.jit.trace(Tiny().eval(), (ids, ids)).save(sys.argv[1])',
      ].join('\n'),
      tiny,
    ]);
    const dir = join(work, 'tiny');
    (
      await train({ ...base(dir), encoder: tiny, data: { texts: data.texts.slice(0, 40), labels: data.labels.slice(0, 40) } })
    ).classifier.dispose();
    const err = await exportHuggingFace({ classifier: dir, out: join(work, 'tiny-hf'), heads: 2 }).catch((e: unknown) => e);
    expect((err as ModelError).code).toBe('EXPORT_UNSUPPORTED_ENCODER');
    expect((err as Error).message).toMatch(
      /bert\/roberta: missing embeddings\.word_embeddings\.weight \(2-D\), embeddings\.position_embeddings\.weight/,
    );
    expect((err as Error).message).toMatch(/distilbert: missing .*transformer\.layer\.0\.\*/);
    expect((err as Error).message).toMatch(/the encoder has word_embeddings\.weight, mix\.weight, mix\.bias/);
  });
});

describe('encoderShapes', () => {
  /** transformers' names and shapes of a BertModel / DistilBertModel with these sizes. */
  const bert = (v: number, h: number, i: number, l: number) => {
    const p: Array<{ name: string; shape: number[] }> = [
      { name: 'embeddings.word_embeddings.weight', shape: [v, h] },
      { name: 'embeddings.position_embeddings.weight', shape: [40, h] },
      { name: 'embeddings.token_type_embeddings.weight', shape: [2, h] },
      { name: 'embeddings.LayerNorm.weight', shape: [h] },
      { name: 'embeddings.LayerNorm.bias', shape: [h] },
    ];
    for (let n = 0; n < l; n++) {
      const lin = (m: string, o: number, k: number) => [
        { name: `encoder.layer.${n}.${m}.weight`, shape: [o, k] },
        { name: `encoder.layer.${n}.${m}.bias`, shape: [o] },
      ];
      const norm = (m: string) => [
        { name: `encoder.layer.${n}.${m}.weight`, shape: [h] },
        { name: `encoder.layer.${n}.${m}.bias`, shape: [h] },
      ];
      p.push(...lin('attention.self.query', h, h), ...lin('attention.self.key', h, h), ...lin('attention.self.value', h, h));
      p.push(...lin('attention.output.dense', h, h), ...norm('attention.output.LayerNorm'));
      p.push(...lin('intermediate.dense', i, h), ...lin('output.dense', h, i), ...norm('output.LayerNorm'));
    }
    return p;
  };

  it('reads the sizes of a BERT, with and without a pooler', () => {
    expect(encoderShapes(bert(30, 8, 20, 3), 'm')).toEqual({
      family: 'bert',
      vocabSize: 30,
      hiddenSize: 8,
      numLayers: 3,
      intermediateSize: 20,
      maxPositions: 40,
      typeVocabSize: 2,
      pooler: false,
    });
    const pooled = [...bert(30, 8, 20, 1), { name: 'pooler.dense.weight', shape: [8, 8] }, { name: 'pooler.dense.bias', shape: [8] }];
    expect(encoderShapes(pooled, 'm')).toMatchObject({ numLayers: 1, pooler: true });
  });

  it('reads a DistilBERT by its own names', () => {
    const h = 8;
    const p = [
      { name: 'embeddings.word_embeddings.weight', shape: [30, h] },
      { name: 'embeddings.position_embeddings.weight', shape: [40, h] },
      { name: 'embeddings.LayerNorm.weight', shape: [h] },
      { name: 'embeddings.LayerNorm.bias', shape: [h] },
    ];
    for (const [m, o, k] of [
      ['attention.q_lin', h, h],
      ['attention.k_lin', h, h],
      ['attention.v_lin', h, h],
      ['attention.out_lin', h, h],
      ['ffn.lin1', 24, h],
      ['ffn.lin2', h, 24],
    ] as const) {
      p.push({ name: `transformer.layer.0.${m}.weight`, shape: [o, k] }, { name: `transformer.layer.0.${m}.bias`, shape: [o] });
    }
    for (const m of ['sa_layer_norm', 'output_layer_norm']) {
      p.push({ name: `transformer.layer.0.${m}.weight`, shape: [h] }, { name: `transformer.layer.0.${m}.bias`, shape: [h] });
    }
    expect(encoderShapes(p, 'm')).toEqual({
      family: 'distilbert',
      vocabSize: 30,
      hiddenSize: 8,
      numLayers: 1,
      intermediateSize: 24,
      maxPositions: 40,
      typeVocabSize: 0,
      pooler: false,
    });
  });

  it('names a missing tensor, an unexpected one and a wrong shape', () => {
    const p = bert(30, 8, 20, 2).filter((t) => t.name !== 'encoder.layer.1.output.dense.bias');
    p.push({ name: 'classifier.weight', shape: [2, 8] });
    p.find((t) => t.name === 'encoder.layer.0.attention.self.key.weight')!.shape = [8, 4];
    expect(() => encoderShapes(p, 'model.pt')).toThrow(
      /bert\/roberta: missing encoder\.layer\.1\.output\.dense\.bias; unexpected classifier\.weight; encoder\.layer\.0\.attention\.self\.key\.weight is \[8, 4\], expected \[8, 8\]/,
    );
  });
});

describe('torch-bert export', () => {
  it('--json prints the folder, the family and the files written', async () => {
    const dir = join(work, 'full');
    const out = join(work, 'cli-hf');
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [join(repoRoot, 'dist', 'cli.js'), 'export', '--classifier', dir, '--out', out, '--heads', '4', '--json'],
      {
        env: { ...process.env, PYTHON },
      },
    );
    const printed = JSON.parse(stdout) as { out: string; family: string; files: string[]; adapter: unknown };
    expect(printed).toMatchObject({ out, family: 'bert', adapter: null });
    expect(printed.files).toEqual([
      'config.json',
      'model.safetensors',
      'tokenizer.json',
      'tokenizer_config.json',
      'torch_bert_head.safetensors',
    ]);
    expect(printed.files.every((f) => existsSync(join(out, f)))).toBe(true);
  });
});
