/**
 * Hugging Face model folders as encoders, the parts that need no native encoder builder:
 * config.json's rules (hf-config.ts), the checkpoint's name normalisation for every layout
 * make_hf_folder.py writes and the shard index's checks (hf-checkpoint.ts), the WordPiece
 * tokenizer made from vocab.txt (wordpiece-vocab.ts). The folders come from
 * scripts/python/make_hf_folder.py, which writes them without this repository's TypeScript;
 * their tensor names are read here from the safetensors headers with a few lines of JSON.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelError } from '../lib/addon/errors.js';
import { TextTokenizer } from '../lib/data/tokenizer.js';
import { normaliseCheckpoint, type ReadTensor, readShards, shardPlan, type TensorLike } from '../lib/models/hf-checkpoint.js';
import { defaultMaxLength, parseHfConfig, transformersNames } from '../lib/models/hf-config.js';
import { loadFolderTokenizer, wordPieceTokenizerJson } from '../lib/models/wordpiece-vocab.js';
import { demoReviews, demoTokenizer, type MakeHfFolderOptions, makeHfFolder } from './fixtures.js';

/** The tensors of a safetensors file as its header lists them: 8-byte little-endian size, then JSON. */
function header(file: string): Array<ReadTensor<TensorLike>> {
  const buf = readFileSync(file);
  const size = Number(buf.readBigUInt64LE(0));
  const json = JSON.parse(buf.subarray(8, 8 + size).toString('utf8')) as Record<string, { dtype: string; shape: number[] }>;
  return Object.entries(json)
    .filter(([name]) => name !== '__metadata__')
    .map(([name, t]) => ({ name, tensor: { dtype: t.dtype, shape: t.shape }, file }));
}

const folders = new Map<string, Promise<{ dir: string; weights: string }>>();
function folder(opts: MakeHfFolderOptions) {
  const key = JSON.stringify(opts);
  if (!folders.has(key)) folders.set(key, makeHfFolder(opts));
  return folders.get(key)!;
}

function configOf(dir: string): unknown {
  return JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
}

function refusal(fn: () => unknown): ModelError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ModelError);
    return err as ModelError;
  }
  throw new Error('expected a ModelError');
}

async function asyncRefusal(p: Promise<unknown>): Promise<ModelError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ModelError);
    return err as ModelError;
  }
  throw new Error('expected a ModelError');
}

describe('config.json → encoder config', () => {
  it('reads a BERT config as transformers writes it', async () => {
    const { dir } = await folder({ layout: 'automodel' });
    const c = parseHfConfig(configOf(dir), 'config.json');
    expect(c.native).toEqual({
      family: 'bert',
      vocabSize: 589,
      hiddenSize: 32,
      numLayers: 2,
      numHeads: 4,
      intermediateSize: 64,
      maxPositions: 64,
      typeVocabSize: 2,
      layerNormEps: 1e-12,
      padTokenId: 0,
      hiddenAct: 'gelu',
      hiddenDropoutProb: 0.1,
      attentionDropoutProb: 0.1,
    });
    expect(c.loraTargets).toEqual(['attention.self.query', 'attention.self.value']);
    expect(c.tokenTypes).toBe(true);
    expect(c.positionLimit).toBe(64);
  });

  it("fills the fields save_pretrained leaves out with the config class's defaults", () => {
    const bert = parseHfConfig({ model_type: 'bert' }, 'c.json').native;
    expect(bert).toMatchObject({ vocabSize: 30522, hiddenSize: 768, numLayers: 12, numHeads: 12, intermediateSize: 3072 });
    expect(bert).toMatchObject({ maxPositions: 512, typeVocabSize: 2, layerNormEps: 1e-12, padTokenId: 0, hiddenAct: 'gelu' });
    const roberta = parseHfConfig({ model_type: 'roberta' }, 'c.json').native;
    expect(roberta).toMatchObject({ vocabSize: 50265, padTokenId: 1 });
    expect(bert).toMatchObject({ hiddenDropoutProb: 0.1, attentionDropoutProb: 0.1 });
    const distil = parseHfConfig({ model_type: 'distilbert', dropout: 0.2, attention_dropout: 0 }, 'c.json').native;
    expect(distil).toMatchObject({ hiddenDropoutProb: 0.2, attentionDropoutProb: 0 });
    expect(distil).toMatchObject({ hiddenSize: 768, numLayers: 6, numHeads: 12, intermediateSize: 3072, typeVocabSize: 0 });
  });

  it('maps xlm-roberta and camembert to RoBERTa, and an old config without model_type by its architecture', () => {
    for (const modelType of ['roberta', 'xlm-roberta', 'camembert']) {
      const c = parseHfConfig({ model_type: modelType, max_position_embeddings: 514, pad_token_id: 1, type_vocab_size: 1 }, 'c.json');
      expect(c.native.family).toBe('roberta');
      expect(c.modelType).toBe(modelType);
      expect(c.tokenTypes).toBe(false);
      // Positions start after padding_idx: 514 rows read 512 tokens.
      expect(c.positionLimit).toBe(512);
    }
    expect(parseHfConfig({ architectures: ['BertForMaskedLM'], hidden_size: 64, num_attention_heads: 4 }, 'c.json').native.family).toBe(
      'bert',
    );
  });

  it("reads DistilBERT's own field names", async () => {
    const { dir } = await folder({ layout: 'distilbert', act: 'relu' });
    const c = parseHfConfig(configOf(dir), 'config.json');
    expect(c.native).toEqual({
      family: 'distilbert',
      vocabSize: 589,
      hiddenSize: 32,
      numLayers: 2,
      numHeads: 4,
      intermediateSize: 64,
      maxPositions: 64,
      typeVocabSize: 0,
      layerNormEps: 1e-12,
      padTokenId: 0,
      hiddenAct: 'relu',
      hiddenDropoutProb: 0.1,
      attentionDropoutProb: 0.1,
    });
    expect(c.loraTargets).toEqual(['attention.q_lin', 'attention.v_lin']);
    expect(c.tokenTypes).toBe(false);
    // sinusoidal_pos_embds only decides the init; the stored table is used.
    expect(parseHfConfig({ ...(configOf(dir) as object), sinusoidal_pos_embds: true }, 'c.json').native.maxPositions).toBe(64);
  });

  it('refuses everything it cannot build in one error naming each field, its value and the file', () => {
    const err = refusal(() =>
      parseHfConfig(
        {
          model_type: 'bert',
          position_embedding_type: 'relative_key',
          hidden_act: 'gelu_fast',
          is_decoder: true,
          add_cross_attention: true,
          hidden_size: 30,
          num_attention_heads: 4,
        },
        '/models/x/config.json',
      ),
    );
    expect(err.code).toBe('UNSUPPORTED_MODEL');
    expect(err.file).toBe('/models/x/config.json');
    for (const part of [
      '/models/x/config.json',
      'position_embedding_type "relative_key"',
      'hidden_act "gelu_fast"',
      'is_decoder true',
      'add_cross_attention true',
      'hidden size 30',
    ]) {
      expect(err.message).toContain(part);
    }
    const dropouts = refusal(() =>
      parseHfConfig({ model_type: 'bert', hidden_dropout_prob: 1, attention_probs_dropout_prob: '0.1' }, 'd.json'),
    );
    expect(dropouts.message).toContain('hidden_dropout_prob 1 (a probability in [0, 1) is needed)');
    expect(dropouts.message).toContain('attention_probs_dropout_prob "0.1"');
    const unknown = refusal(() => parseHfConfig({ model_type: 'gpt2', n_layer: 12 }, 'g/config.json'));
    expect(unknown.code).toBe('UNSUPPORTED_MODEL');
    expect(unknown.message).toContain('model_type "gpt2"');
    expect(unknown.message).toContain('g/config.json');
    expect(refusal(() => parseHfConfig({ model_type: 'distilbert', activation: 'tanh', n_layers: 2.5 }, 'd.json')).message).toMatch(
      /activation "tanh".*n_layers 2\.5|n_layers 2\.5.*activation "tanh"/,
    );
  });

  it('names an invalid size once, without checks computed from the stand-in value it was given', () => {
    // A string "32" is refused as such; the 4 heads and the vocabulary are not then checked against 1.
    const sizes = refusal(() =>
      parseHfConfig({ model_type: 'bert', hidden_size: '32', num_attention_heads: 4, vocab_size: null, pad_token_id: 0 }, 'c.json'),
    );
    expect(sizes.message).toBe('c.json describes a model the encoder builder cannot make: hidden_size "32" (an integer ≥ 1 is needed)');
    const vocab = refusal(() =>
      parseHfConfig({ model_type: 'roberta', vocab_size: 0, pad_token_id: 1, max_position_embeddings: '514' }, 'r.json'),
    );
    expect(vocab.message).toBe(
      'r.json describes a model the encoder builder cannot make: vocab_size 0 (an integer ≥ 1 is needed); ' +
        'max_position_embeddings "514" (an integer ≥ 1 is needed)',
    );
    const distil = refusal(() => parseHfConfig({ model_type: 'distilbert', dim: 32, n_heads: 2.5 }, 'd.json'));
    expect(distil.message).toBe('d.json describes a model the encoder builder cannot make: n_heads 2.5 (an integer ≥ 1 is needed)');
    // A real mismatch between valid values is still named.
    expect(refusal(() => parseHfConfig({ model_type: 'distilbert', dim: 32, n_heads: 3 }, 'd.json')).message).toContain(
      'hidden size 32 not a multiple of the 3 attention heads',
    );
  });

  it('takes the default max length from model_max_length, within the position table', () => {
    const bert = parseHfConfig({ model_type: 'bert', max_position_embeddings: 64 }, 'c.json');
    expect(defaultMaxLength(bert, { model_max_length: 512 })).toBe(64);
    expect(defaultMaxLength(bert, { model_max_length: 32 })).toBe(32);
    // transformers' "no limit" (int(1e30)), or no tokenizer_config.json: the table decides.
    expect(defaultMaxLength(bert, { model_max_length: 1e30 })).toBe(64);
    expect(defaultMaxLength(bert, undefined)).toBe(64);
    const roberta = parseHfConfig({ model_type: 'xlm-roberta', max_position_embeddings: 514, pad_token_id: 1 }, 'c.json');
    expect(defaultMaxLength(roberta, { model_max_length: 512 })).toBe(512);
    expect(defaultMaxLength(roberta, { model_max_length: 600 })).toBe(512);
  });
});

describe("transformers' names of a model written out", () => {
  it('keep a model_type of the family (XLM-R, CamemBERT) and name its classes; take the family otherwise', () => {
    const names = (family: 'bert' | 'roberta' | 'distilbert', modelType: unknown, kind: string) => {
      const n = transformersNames(family, modelType);
      return [n.modelType, n.className(kind)];
    };
    expect(names('roberta', 'xlm-roberta', 'ForMaskedLM')).toEqual(['xlm-roberta', 'XLMRobertaForMaskedLM']);
    expect(names('roberta', 'camembert', 'TokenizerFast')).toEqual(['camembert', 'CamembertTokenizerFast']);
    expect(names('roberta', 'roberta', 'ForSequenceClassification')).toEqual(['roberta', 'RobertaForSequenceClassification']);
    expect(names('distilbert', 'distilbert', 'Model')).toEqual(['distilbert', 'DistilBertModel']);
    // None recorded (a traced file), or another family's (a stale record): the family's own.
    expect(names('bert', undefined, 'Model')).toEqual(['bert', 'BertModel']);
    expect(names('roberta', 'bert', 'Model')).toEqual(['roberta', 'RobertaModel']);
  });

  it('an old config.json without model_type takes the family its first architecture names (the longest prefix)', () => {
    const family = (architecture: string) =>
      parseHfConfig(
        {
          architectures: [architecture],
          vocab_size: 30,
          hidden_size: 8,
          num_attention_heads: 2,
          num_hidden_layers: 1,
          intermediate_size: 16,
          n_heads: 2,
          dim: 8,
          n_layers: 1,
          hidden_dim: 16,
        },
        'config.json',
      ).modelType;
    expect(family('DistilBertForMaskedLM')).toBe('distilbert');
    expect(family('XLMRobertaForMaskedLM')).toBe('xlm-roberta');
    expect(family('CamembertModel')).toBe('camembert');
    expect(family('RobertaModel')).toBe('roberta');
    expect(family('BertForPreTraining')).toBe('bert');
  });
});

/** The AutoModel names a BERT of the fixtures' size has (2 layers, pooler), written out by hand. */
function bertAutoModelNames(pooler: boolean): string[] {
  const names = [
    'embeddings.word_embeddings.weight',
    'embeddings.position_embeddings.weight',
    'embeddings.token_type_embeddings.weight',
    'embeddings.LayerNorm.weight',
    'embeddings.LayerNorm.bias',
  ];
  for (let i = 0; i < 2; i++) {
    for (const lin of ['attention.self.query', 'attention.self.key', 'attention.self.value', 'attention.output.dense']) {
      names.push(`encoder.layer.${i}.${lin}.weight`, `encoder.layer.${i}.${lin}.bias`);
    }
    for (const leaf of ['attention.output.LayerNorm', 'intermediate.dense', 'output.dense', 'output.LayerNorm']) {
      names.push(`encoder.layer.${i}.${leaf}.weight`, `encoder.layer.${i}.${leaf}.bias`);
    }
  }
  if (pooler) names.push('pooler.dense.weight', 'pooler.dense.bias');
  return names;
}
const BERT_MLM = [
  'cls.predictions.transform.dense.weight',
  'cls.predictions.transform.dense.bias',
  'cls.predictions.transform.LayerNorm.weight',
  'cls.predictions.transform.LayerNorm.bias',
  'cls.predictions.bias',
];

describe('checkpoint names, normalised for every layout', () => {
  it('AutoModel names pass unchanged: pooler, no MLM head', async () => {
    const { dir } = await folder({ layout: 'automodel' });
    const n = normaliseCheckpoint(header(join(dir, 'model.safetensors')), 'bert');
    expect(n.weights.map(([name]) => name)).toEqual(bertAutoModelNames(true));
    expect(n).toMatchObject({ pooler: true, mlmHead: false, ignored: [], dropped: [], reduced: {} });
  });

  it("bert-base-uncased's own layout: prefix stripped, gamma/beta renamed, position_ids dropped, NSP ignored, MLM head kept", async () => {
    const { dir } = await folder({ layout: 'pretraining' });
    const n = normaliseCheckpoint(header(join(dir, 'model.safetensors')), 'bert');
    expect(n.weights.map(([name]) => name).sort()).toEqual(
      [...bertAutoModelNames(true), ...BERT_MLM, 'cls.predictions.decoder.weight'].sort(),
    );
    expect(n.pooler).toBe(true);
    expect(n.mlmHead).toBe(true);
    expect(n.ignored).toEqual(['cls.seq_relationship.weight', 'cls.seq_relationship.bias']);
    expect(n.dropped).toEqual(['bert.embeddings.position_ids']);
    // Shapes travel with the names: the gamma of the embeddings' LayerNorm is its [H] weight.
    expect(n.weights.find(([name]) => name === 'embeddings.LayerNorm.weight')?.[1].shape).toEqual([32]);
  });

  it('BertForMaskedLM as saved: no pooler, MLM head without its tied decoder', async () => {
    const { dir } = await folder({ layout: 'mlm' });
    const n = normaliseCheckpoint(header(join(dir, 'model.safetensors')), 'bert');
    expect(n.weights.map(([name]) => name).sort()).toEqual([...bertAutoModelNames(false), ...BERT_MLM].sort());
    expect(n).toMatchObject({ pooler: false, mlmHead: true, ignored: [], dropped: [] });
  });

  it('float16 and bfloat16 files are accepted and counted', async () => {
    for (const [layout, dtype] of [
      ['f16', 'F16'],
      ['bf16', 'BF16'],
    ] as const) {
      const { dir } = await folder({ layout });
      const n = normaliseCheckpoint(header(join(dir, 'model.safetensors')), 'bert');
      expect(n.weights.map(([name]) => name)).toEqual(bertAutoModelNames(true));
      expect(n.reduced).toEqual({ [dtype]: bertAutoModelNames(true).length });
    }
  });

  it('a sharded checkpoint: every shard read once, together the AutoModel names', async () => {
    const { dir } = await folder({ layout: 'sharded' });
    const indexFile = join(dir, 'model.safetensors.index.json');
    const plan = shardPlan(await readFile(indexFile, 'utf8'), indexFile);
    expect([...plan.keys()].sort()).toEqual([1, 2, 3].map((i) => `model-0000${i}-of-00003.safetensors`));
    const reads: string[] = [];
    const all = await readShards(plan, indexFile, async (shard) => {
      reads.push(shard);
      return header(join(dir, shard)).map(({ name, tensor }) => [name, tensor] as [string, TensorLike]);
    });
    expect(reads.sort()).toEqual([...plan.keys()].sort());
    const n = normaliseCheckpoint(all, 'bert');
    expect(n.weights.map(([name]) => name).sort()).toEqual(bertAutoModelNames(true).sort());
  });

  it("RoBERTa's MLM file: roberta. stripped, lm_head kept, the decoder's tied bias kept once", async () => {
    const { dir } = await folder({ layout: 'roberta' });
    const n = normaliseCheckpoint(header(join(dir, 'model.safetensors')), 'roberta');
    const names = n.weights.map(([name]) => name);
    expect(names.sort()).toEqual(
      [
        ...bertAutoModelNames(false),
        'lm_head.dense.weight',
        'lm_head.dense.bias',
        'lm_head.layer_norm.weight',
        'lm_head.layer_norm.bias',
        'lm_head.bias',
      ].sort(),
    );
    expect(n.dropped).toEqual(['lm_head.decoder.bias']);
    expect(n.weights.find(([name]) => name === 'embeddings.token_type_embeddings.weight')?.[1].shape).toEqual([1, 32]);
    expect(n).toMatchObject({ pooler: false, mlmHead: true });
    // A file with only the decoder's name for the bias: it becomes the head's bias.
    const onlyDecoder = normaliseCheckpoint([{ name: 'lm_head.decoder.bias', tensor: { dtype: 'F32', shape: [5] }, file: 'f' }], 'roberta');
    expect(onlyDecoder.weights.map(([name]) => name)).toEqual(['lm_head.bias']);
  });

  it("DistilBERT's MLM file: distilbert. stripped, vocab_* kept", async () => {
    const { dir } = await folder({ layout: 'distilbert' });
    const n = normaliseCheckpoint(header(join(dir, 'model.safetensors')), 'distilbert');
    const names = n.weights.map(([name]) => name);
    expect(names.filter((x) => x.startsWith('distilbert.'))).toEqual([]);
    expect(names).toContain('transformer.layer.1.attention.q_lin.weight');
    expect(names).toContain('transformer.layer.0.sa_layer_norm.bias');
    expect(names.filter((x) => x.startsWith('vocab_')).sort()).toEqual([
      'vocab_layer_norm.bias',
      'vocab_layer_norm.weight',
      'vocab_projector.bias',
      'vocab_projector.weight',
      'vocab_transform.bias',
      'vocab_transform.weight',
    ]);
    expect(names.length).toBe(4 + 2 * 16 + 6);
    expect(n).toMatchObject({ pooler: false, mlmHead: true, ignored: [], dropped: [] });
  });

  it('keeps the task heads apart (classifier, pre_classifier, qa_outputs), ignores NSP; refuses integer tensors and names met twice', () => {
    const t = (dtype: string, shape: number[] = [2]) => ({ dtype, shape });
    const n = normaliseCheckpoint(
      [
        { name: 'distilbert.embeddings.word_embeddings.weight', tensor: t('F32', [5, 2]), file: 'm' },
        { name: 'pre_classifier.weight', tensor: t('F32'), file: 'm' },
        { name: 'classifier.bias', tensor: t('F32'), file: 'm' },
        { name: 'qa_outputs.weight', tensor: t('F32'), file: 'm' },
        { name: 'cls.seq_relationship.weight', tensor: t('F32'), file: 'm' },
        { name: 'distilbert.embeddings.position_ids', tensor: t('I64', [1, 4]), file: 'm' },
      ],
      'distilbert',
    );
    expect(n.weights.map(([name]) => name)).toEqual(['embeddings.word_embeddings.weight']);
    expect(n.classificationHead.map(([name]) => name)).toEqual(['pre_classifier.weight', 'classifier.bias', 'qa_outputs.weight']);
    expect(n.ignored).toEqual(['cls.seq_relationship.weight']);
    const int = refusal(() =>
      normaliseCheckpoint([{ name: 'bert.encoder.layer.0.step', tensor: t('I32'), file: '/m/shard-2.safetensors' }], 'bert'),
    );
    expect(int.message).toContain('/m/shard-2.safetensors');
    expect(int.message).toContain('bert.encoder.layer.0.step');
    expect(int.message).toContain('I32');
    const twice = refusal(() =>
      normaliseCheckpoint(
        [
          { name: 'bert.embeddings.LayerNorm.gamma', tensor: t('F32'), file: 'a' },
          { name: 'embeddings.LayerNorm.weight', tensor: t('F32'), file: 'b' },
        ],
        'bert',
      ),
    );
    expect(twice.message).toMatch(/embeddings\.LayerNorm\.weight.*bert\.embeddings\.LayerNorm\.gamma/);
  });
});

describe('shard index checks', () => {
  const index = (map: Record<string, string>) => JSON.stringify({ metadata: {}, weight_map: map });
  const shardsWith = (contents: Record<string, string[]>) => async (shard: string) => {
    const names = contents[shard];
    if (!names) throw Object.assign(new Error(`ENOENT: no such file or directory, open '${shard}'`), { code: 'ENOENT' });
    return names.map((name) => [name, { dtype: 'F32', shape: [1] }] as [string, TensorLike]);
  };

  it('a missing shard is named, with the index', async () => {
    const plan = shardPlan(index({ a: 's1.safetensors', b: 's2.safetensors' }), 'idx.json');
    const err = await asyncRefusal(readShards(plan, 'idx.json', shardsWith({ 's1.safetensors': ['a'] })));
    expect(err.message).toContain('s2.safetensors');
    expect(err.message).toContain('idx.json');
    expect(err.message).toContain('ENOENT');
  });

  it('a name the index lists but its shard lacks is named', async () => {
    const plan = shardPlan(index({ a: 's1.safetensors', b: 's1.safetensors', c: 's2.safetensors' }), 'idx.json');
    const err = await asyncRefusal(readShards(plan, 'idx.json', shardsWith({ 's1.safetensors': ['a'], 's2.safetensors': ['c'] })));
    expect(err.message).toMatch(/s1\.safetensors lacks tensor b/);
  });

  it('a name in two shards is refused, naming both; everything read is disposed', async () => {
    const plan = shardPlan(index({ a: 's1.safetensors', b: 's2.safetensors' }), 'idx.json');
    const disposed: string[] = [];
    const err = await asyncRefusal(
      readShards(plan, 'idx.json', shardsWith({ 's1.safetensors': ['a', 'b'], 's2.safetensors': ['b'] }), () => disposed.push('t')),
    );
    expect(err.message).toBe('tensor b is in two shards, s1.safetensors and s2.safetensors');
    expect(disposed.length).toBe(3);
  });

  it('refuses a shard path that leaves the folder, and an index without a weight_map', () => {
    for (const bad of ['../other/model.safetensors', '/etc/passwd', 'a/../../b.safetensors', 'C:\\x.safetensors']) {
      const err = refusal(() => shardPlan(index({ 'embeddings.word_embeddings.weight': bad }), 'idx.json'));
      expect(err.message).toContain('outside its folder');
      expect(err.message).toContain(JSON.stringify(bad));
    }
    expect(refusal(() => shardPlan('{"metadata": {}}', 'idx.json')).message).toContain('no weight_map');
    expect(refusal(() => shardPlan('{', 'idx.json')).message).toContain('not valid JSON');
  });
});

describe('a WordPiece tokenizer from vocab.txt', () => {
  it("gives the demo tokenizer.json's ids for the demo reviews", async () => {
    const { dir } = await folder({ layout: 'automodel', tokenizer: 'vocab' });
    const fromVocab = await loadFolderTokenizer(dir, ['vocab.txt', 'tokenizer_config.json']);
    const reference = await TextTokenizer.load(demoTokenizer);
    const texts = readFileSync(demoReviews, 'utf8').split('\n').slice(1, 201);
    texts.push('Ünïcödé ACCENTS and 中文 chars, punctuation!? ##hash');
    const a = await fromVocab.encodeBatchAsync(texts, 64, { threads: 1 });
    const b = await reference.encodeBatchAsync(texts, 64, { threads: 1 });
    expect(Array.from(a.inputIds)).toEqual(Array.from(b.inputIds));
    expect(fromVocab.padId).toBe(0);
    expect(fromVocab.vocabulary().largestId).toBe(588);
  });

  it('lowercases per do_lower_case', () => {
    const vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'hello', 'Hello'].join('\n') + '\n';
    const cased = TextTokenizer.fromJson(wordPieceTokenizerJson(vocab, { do_lower_case: false }, undefined, 'v'), 'v');
    const lower = TextTokenizer.fromJson(wordPieceTokenizerJson(vocab, { do_lower_case: true }, undefined, 'v'), 'v');
    expect(cased.encodeOne('Hello hello', 10)).toEqual([2, 5, 4, 3]);
    expect(lower.encodeOne('Hello hello', 10)).toEqual([2, 4, 4, 3]);
  });
});
