/**
 * `head: 'sequence-classification'`: transformers' own heads (BertForSequenceClassification,
 * RobertaClassificationHead, DistilBertForSequenceClassification) built natively around the
 * encoder. The classifier's probabilities are compared with plain-PyTorch references of those heads
 * (test/python/seq_classification_reference.py): end to end through the exported folder read back
 * by an independent safetensors reader into hf_reference.py's encoder (for BERT from a traced
 * encoder; for RoBERTa and DistilBERT from folders built natively, through the CLI); for each
 * family's head math, on a traced encoder's outputs. Also: the init, what trains under each technique, the
 * settings read from a Hugging Face config, and the refusals.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import type { NativeScriptModule, NativeTensor } from '../lib/addon/binding.js';
import { loadBinding } from '../lib/addon/loader.js';
import { Classifier } from '../lib/classification/classifier.js';
import { gatherRows } from '../lib/data/batching.js';
import { TextTokenizer } from '../lib/data/tokenizer.js';
import { exportHuggingFace, InputError, loadClassifier, ModelError, type TrainOptions, train } from '../lib/index.js';
import { headSettings, sequenceClassificationKeys } from '../lib/models/sequence-classification.js';
import { resolveTrainOptions } from '../lib/training/options.js';
import {
  demoReviews,
  demoTokenizer,
  INFORMATIVE_ENCODER,
  makeEncoder,
  makeHfFolder,
  PROBE_TEXTS,
  repoRoot,
  runPython,
  smallClassifierInputs,
} from './fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-seqcls-'));
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
  head: 'sequence-classification',
});

const values = (t: NativeTensor) => Array.from(t.toArray() as Float32Array);
const params = (c: Classifier) => new Map(c.module.namedParameters().map(([n, t]) => [n, values(t)]));
const maxAbsDiff = (a: number[], b: number[]) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
const maxDiff = (a: number[][], b: number[][]) => {
  expect(a.length).toBe(b.length);
  return Math.max(...a.flatMap((row, r) => row.map((v, c) => Math.abs(v - b[r]![c]!))));
};

/** TEXTS as padded id and mask rows, cut to the longest. */
async function tokens(tokenizerFile: string) {
  const tokenizer = await TextTokenizer.load(tokenizerFile);
  const rows = gatherRows(
    await tokenizer.encodeBatchAsync(TEXTS, 32),
    TEXTS.map((_, i) => i),
  );
  const matrix = (a: Int32Array) =>
    Array.from({ length: rows.count }, (_, r) => Array.from(a.subarray(r * rows.seqLen, (r + 1) * rows.seqLen)));
  return { ids: matrix(rows.inputIds), mask: matrix(rows.attentionMask) };
}

/** The classifier module's probabilities for the given ids (eval mode). */
function probabilitiesOf(module: NativeScriptModule, ids: number[][], mask: number[][]): number[][] {
  const b = loadBinding();
  const shape = [ids.length, ids[0]!.length];
  const idT = b.Tensor.fromArray(Int32Array.from(ids.flat()), shape, 'int64');
  const maskT = b.Tensor.fromArray(Int32Array.from(mask.flat()), shape, 'int64');
  const out = module.forward(idT, maskT) as NativeTensor;
  const flat = values(out);
  const width = flat.length / ids.length;
  idT.dispose();
  maskT.dispose();
  out.dispose();
  return Array.from({ length: ids.length }, (_, r) => flat.slice(r * width, (r + 1) * width).map(Math.exp));
}

/**
 * The Python reference of the folder `out` exported from the classifier saved in `dir`
 * (seq_classification_reference.py's export mode) gives `classifier`'s predict probabilities on
 * TEXTS to 1e-5, and those differ between texts (not a degenerate comparison). Returns what the
 * reference read: the folder's keys and config.json.
 */
async function expectExportPredicts(classifier: Classifier, dir: string, out: string) {
  const { ids, mask } = await tokens(join(dir, 'tokenizer.json'));
  const ref = JSON.parse(
    await runPython(
      'test/python/seq_classification_reference.py',
      [],
      JSON.stringify({ mode: 'export', dir: out, input_ids: ids, attention_mask: mask }),
    ),
  ) as { probabilities: number[][]; keys: string[]; config: Record<string, unknown> };
  const predicted = await classifier.predict(TEXTS);
  const own = predicted.map((p) => classifier.labels.map((l) => p.probabilities[l]!));
  expect(maxDiff(ref.probabilities, own)).toBeLessThan(1e-5);
  expect(maxDiff([own[0]!], [own[1]!])).toBeGreaterThan(1e-4);
  // The exported folder loads back as a classifier (a Hugging Face sequence classifier): its
  // classes are id2label's, and it predicts what the reference computes from the folder.
  const loaded = await loadClassifier(out);
  try {
    expect(loaded.labels).toEqual(classifier.labels);
    expect(loaded.config.head).toBe('sequence-classification');
    const back = (await loaded.predict(TEXTS)).map((p) => loaded.labels.map((l) => p.probabilities[l]!));
    expect(maxDiff(ref.probabilities, back)).toBeLessThan(1e-5);
  } finally {
    loaded.dispose();
  }
  return ref;
}

describe("head 'sequence-classification' of BERT", () => {
  it('exports whole as BertForSequenceClassification; a Python reference of its math on the exported folder gives the classifier probabilities to 1e-5', async () => {
    const dir = join(work, 'bert-full');
    const result = await train({ ...base(dir), technique: 'full', learningRate: 1e-3 });
    // The pooler feeds the head, so nothing of the encoder is unused.
    expect(result.unusedParameters).toEqual([]);
    result.classifier.dispose();
    const saved = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(saved.head).toBe('sequence-classification');
    expect(saved.headFamily).toBe('bert');
    expect(saved.dropout).toBe(0.1);

    const out = join(work, 'bert-full-hf');
    const exported = await exportHuggingFace({ classifier: dir, out, heads: 4 });
    expect(exported.family).toBe('bert');
    expect(exported.files).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);

    const classifier = await loadClassifier(dir);
    try {
      const ref = await expectExportPredicts(classifier, dir, out);

      expect(ref.config.architectures).toEqual(['BertForSequenceClassification']);
      expect(ref.config.num_labels).toBe(2);
      expect(ref.config.problem_type).toBe('single_label_classification');
      expect(ref.config.classifier_dropout).toBe(0.1);
      expect(ref.config.id2label).toEqual({ '0': classifier.labels[0], '1': classifier.labels[1] });
      expect(ref.config.label2id).toEqual({ [classifier.labels[0]!]: 0, [classifier.labels[1]!]: 1 });
      expect(ref.keys).toContain('bert.pooler.dense.weight');
      expect(ref.keys).toContain('bert.embeddings.word_embeddings.weight');
      expect(ref.keys.filter((k) => !k.startsWith('bert.'))).toEqual(['classifier.bias', 'classifier.weight']);
    } finally {
      classifier.dispose();
    }
  });

  it('inits as transformers (normal(0, 0.02) weights, zero bias) from the seed', () => {
    const b = loadBinding();
    const enc = b.ScriptModule.load(encoder);
    const spec = {
      numClasses: 3,
      headHidden: 16,
      dropout: 0.1,
      pooling: 'cls' as const,
      seed: 7,
      head: 'sequence-classification' as const,
      family: 'bert' as const,
    };
    const one = b.buildClassifier(enc, spec).module;
    const heads = one.namedParameters().filter(([n]) => n.startsWith('head.'));
    expect(heads.map(([n, t]) => [n, t.shape])).toEqual([
      ['head.classifier.weight', [3, 64]],
      ['head.classifier.bias', [3]],
    ]);
    const w = values(heads[0]![1]);
    const std = Math.sqrt(w.reduce((s, v) => s + v * v, 0) / w.length);
    expect(std).toBeGreaterThan(0.015);
    expect(std).toBeLessThan(0.025);
    expect(values(heads[1]![1])).toEqual([0, 0, 0]);
    const again = b.buildClassifier(enc, spec).module;
    expect(values(again.namedParameters().find(([n]) => n === 'head.classifier.weight')![1])).toEqual(w);
    const other = b.buildClassifier(enc, { ...spec, seed: 8 }).module;
    expect(maxAbsDiff(values(other.namedParameters().find(([n]) => n === 'head.classifier.weight')![1]), w)).toBeGreaterThan(0);
    for (const m of [one, again, other]) m.dispose();
    enc.dispose();
  });

  it("frozen trains only the head (the pooler is the encoder's: frozen with it); lora the adapters and the head; loadAdapters and load predict alike", async () => {
    const b = loadBinding();
    const original = b.ScriptModule.load(encoder);
    const before = new Map(original.namedParameters().map(([n, t]) => [n, values(t)]));
    original.dispose();

    const frozen = await train({ ...base(join(work, 'frozen')), technique: 'frozen', learningRate: 1e-2 });
    const f = params(frozen.classifier);
    // transformers' encoder includes the pooler (BertModel.pooler): under 'frozen' it stays as it was.
    for (const [name, v] of before) expect(maxAbsDiff(v, f.get(`encoder.${name}`)!)).toBe(0);
    expect(frozen.trainableParameters).toBe(64 * 2 + 2);
    const headBefore = b.buildClassifier(b.ScriptModule.load(encoder), {
      numClasses: 2,
      headHidden: 512,
      dropout: 0.1,
      pooling: 'cls',
      seed: 42,
      head: 'sequence-classification',
      family: 'bert',
    }).module;
    const init = new Map(headBefore.namedParameters().map(([n, t]) => [n, values(t)]));
    headBefore.dispose();
    expect(maxAbsDiff(init.get('head.classifier.weight')!, f.get('head.classifier.weight')!)).toBeGreaterThan(1e-4);
    frozen.classifier.dispose();

    const loraDir = join(work, 'lora');
    const lora = await train({ ...base(loraDir), technique: 'lora', lora: { rank: 4, alpha: 8 }, learningRate: 5e-3 });
    const l = params(lora.classifier);
    for (const [name, v] of before) {
      const adapted = /attention\.self\.(query|value)\.weight$/.test(name);
      if (adapted) expect(maxAbsDiff(v, l.get(`encoder.${name}`)!)).toBeGreaterThan(0);
      else expect(maxAbsDiff(v, l.get(`encoder.${name}`)!)).toBe(0);
    }
    expect(lora.trainableParameters).toBe(64 * 2 + 2 + 2 * 2 * (4 * 64 + 64 * 4));
    const merged = await lora.classifier.predict(TEXTS);
    lora.classifier.dispose();
    const rebuilt = await Classifier.loadAdapters(loraDir, { encoder });
    const loaded = await loadClassifier(loraDir);
    try {
      const a = (await rebuilt.predict(TEXTS)).map((p) => Object.values(p.probabilities));
      const c = (await loaded.predict(TEXTS)).map((p) => Object.values(p.probabilities));
      const m = merged.map((p) => Object.values(p.probabilities));
      expect(maxDiff(a, m)).toBeLessThan(1e-5);
      expect(maxDiff(c, m)).toBeLessThan(1e-5);
    } finally {
      rebuilt.dispose();
      loaded.dispose();
    }
  });
});

// Issue 14's round trip for the families other than BERT, as a user runs it: the encoder built
// natively from a Hugging Face folder, `torch-bert train --head sequence-classification`, then
// `torch-bert export`; the exported folder read back by the Python reference
// (scripts/python/hf_folder_reference.py into hf_reference.py's encoder, the head by
// transformers' names) gives what predict gives.
describe('RoBERTa and DistilBERT from built folder encoders, through the CLI', () => {
  const cli = (args: string[]) => promisify(execFile)(process.execPath, [join(repoRoot, 'dist', 'cli.js'), ...args]);

  for (const family of ['roberta', 'distilbert'] as const) {
    it(`${family}: train --head sequence-classification, export; the Python reference of the exported folder gives predict's probabilities (1e-5)`, async () => {
      const { dir: folder } = await makeHfFolder({ layout: family, layers: 2, hidden: 32, heads: 4, intermediate: 64, maxPosition: 64 });
      const dir = join(work, `${family}-cli`);
      const out = join(work, `${family}-cli-hf`);
      const trainArgs = ['train', '--data', demoReviews, '--model', folder, '--out', dir, '--epochs', '2', '--max-length', '32'];
      await cli([...trainArgs, '--head', 'sequence-classification', '--technique', 'full', '--lr', '5e-3', '--json']);
      const exported = JSON.parse((await cli(['export', '--classifier', dir, '--out', out, '--json'])).stdout) as { family: string };
      expect(exported.family).toBe(family);

      const classifier = await loadClassifier(dir);
      try {
        expect(classifier.config.encoder.source).toMatchObject({ kind: 'folder', family });
        const ref = await expectExportPredicts(classifier, dir, out);
        expect(ref.config.architectures).toEqual([
          family === 'roberta' ? 'RobertaForSequenceClassification' : 'DistilBertForSequenceClassification',
        ]);
        expect(ref.config.num_labels).toBe(2);
        expect(ref.keys.filter((k) => !k.startsWith(`${family}.`))).toEqual(
          family === 'roberta'
            ? ['classifier.dense.bias', 'classifier.dense.weight', 'classifier.out_proj.bias', 'classifier.out_proj.weight']
            : ['classifier.bias', 'classifier.weight', 'pre_classifier.bias', 'pre_classifier.weight'],
        );
      } finally {
        classifier.dispose();
      }
    });
  }
});

describe("each family's head math", () => {
  for (const family of ['bert', 'roberta', 'distilbert'] as const) {
    it(`${family}: the classifier's probabilities equal the Python reference of transformers' head on the encoder's outputs (1e-5)`, async () => {
      const b = loadBinding();
      const enc = b.ScriptModule.load(encoder);
      const { module } = b.buildClassifier(enc, {
        numClasses: 3,
        headHidden: 16,
        dropout: 0.2,
        pooling: 'cls',
        seed: 3,
        head: 'sequence-classification',
        family,
        initializerRange: 0.5,
      });
      try {
        module.train(false);
        const names = module
          .namedParameters()
          .filter(([n]) => n.startsWith('head.'))
          .map(([n]) => n);
        expect(names).toEqual(
          {
            bert: ['head.classifier.weight', 'head.classifier.bias'],
            roberta: ['head.dense.weight', 'head.dense.bias', 'head.out_proj.weight', 'head.out_proj.bias'],
            distilbert: ['head.pre_classifier.weight', 'head.pre_classifier.bias', 'head.classifier.weight', 'head.classifier.bias'],
          }[family],
        );
        // Non-zero biases, so that a reference that dropped them would differ.
        const head: Record<string, number[] | number[][]> = {};
        for (const [name, t] of module.namedParameters().filter(([n]) => n.startsWith('head.'))) {
          if (name.endsWith('.bias')) {
            const bias = b.Tensor.fromArray(
              Float32Array.from({ length: t.shape[0]! }, (_, i) => 0.1 * (i + 1)),
              t.shape,
            );
            t.copyFrom(bias);
            bias.dispose();
          }
          const flat = values(t);
          head[name.slice(5)] =
            t.shape.length === 1 ? flat : Array.from({ length: t.shape[0]! }, (_, r) => flat.slice(r * t.shape[1]!, (r + 1) * t.shape[1]!));
        }
        const { ids, mask } = await tokens(demoTokenizer);
        const ref = JSON.parse(
          await runPython(
            'test/python/seq_classification_reference.py',
            [],
            JSON.stringify({ mode: 'head', encoder, family, head, input_ids: ids, attention_mask: mask }),
          ),
        ) as { probabilities: number[][] };
        const own = probabilitiesOf(module, ids, mask);
        expect(maxDiff(ref.probabilities, own)).toBeLessThan(1e-5);
        expect(maxDiff([own[0]!], [own[1]!])).toBeGreaterThan(1e-4);
      } finally {
        module.dispose();
        enc.dispose();
      }
    });
  }

  it("the export's key names are transformers' ForSequenceClassification's", () => {
    const names = (family: 'bert' | 'roberta' | 'distilbert', head: string[]) =>
      sequenceClassificationKeys(
        family,
        ['encoder.embeddings.word_embeddings.weight', ...head].map((n) => [n, 0] as const),
      ).map(([n]) => n);
    expect(names('bert', ['head.classifier.weight', 'head.classifier.bias'])).toEqual([
      'bert.embeddings.word_embeddings.weight',
      'classifier.weight',
      'classifier.bias',
    ]);
    expect(names('roberta', ['head.dense.weight', 'head.out_proj.bias'])).toEqual([
      'roberta.embeddings.word_embeddings.weight',
      'classifier.dense.weight',
      'classifier.out_proj.bias',
    ]);
    expect(names('distilbert', ['head.pre_classifier.weight', 'head.classifier.bias'])).toEqual([
      'distilbert.embeddings.word_embeddings.weight',
      'pre_classifier.weight',
      'classifier.bias',
    ]);
    expect(() => names('bert', ['head.dense.weight'])).toThrow(/not a parameter of BertForSequenceClassification's head/);
  });
});

// Issue 14's PEFT export of a LoRA run with this head: the adapter goes on the *base* model's
// ForSequenceClassification (`PeftModel.from_pretrained(AutoModelForSequenceClassification
// .from_pretrained(BASE, num_labels=C), dir)`), so its keys carry the base's prefix and the trained
// head rides along as PEFT's modules_to_save. The reference (test/python/peft_seq_cls_reference.py)
// applies the LoRA deltas and the head, by their exact key names, to the base folder's own weights.
describe('LoRA with the sequence-classification head: the PEFT adapter for the base ForSequenceClassification', () => {
  const cases = [
    {
      family: 'bert',
      layout: 'automodel',
      targets: ['attention.self.query', 'attention.self.value'],
      head: ['classifier'],
      headKeys: ['classifier.weight', 'classifier.bias'],
    },
    {
      family: 'roberta',
      layout: 'roberta',
      targets: ['attention.self.query', 'attention.self.value'],
      head: ['classifier'],
      headKeys: ['classifier.dense.weight', 'classifier.dense.bias', 'classifier.out_proj.weight', 'classifier.out_proj.bias'],
    },
    {
      family: 'distilbert',
      layout: 'distilbert',
      targets: ['attention.q_lin', 'attention.v_lin'],
      head: ['pre_classifier', 'classifier'],
      headKeys: ['pre_classifier.weight', 'pre_classifier.bias', 'classifier.weight', 'classifier.bias'],
    },
  ] as const;
  for (const c of cases) {
    it(`${c.family}: task SEQ_CLS, keys base_model.model.${c.family}.*.lora_{A,B}.weight and the head's; the reference on the base folder gives predict's probabilities (1e-5)`, async () => {
      const { dir: folder, weights } = await makeHfFolder({
        layout: c.layout,
        layers: 2,
        hidden: 32,
        heads: 4,
        intermediate: 64,
        maxPosition: 64,
      });
      const dir = join(work, `${c.family}-lora-seqcls`);
      (
        await train({
          ...base(dir),
          encoder: folder,
          tokenizer: undefined,
          technique: 'lora',
          lora: { rank: 4, alpha: 8 },
          learningRate: 5e-2,
          epochs: 3,
        })
      ).classifier.dispose();
      const out = join(work, `${c.family}-lora-seqcls-hf`);
      const exported = await exportHuggingFace({ classifier: dir, out });
      expect(exported.adapter).toMatchObject({ taskType: 'SEQ_CLS', modulesToSave: [...c.head], r: 4, loraAlpha: 8 });

      const classifier = await loadClassifier(dir);
      try {
        const { ids, mask } = await tokens(join(dir, 'tokenizer.json'));
        const ref = JSON.parse(
          await runPython(
            'test/python/peft_seq_cls_reference.py',
            [],
            JSON.stringify({ base: folder, weights, adapter: join(out, 'adapter'), input_ids: ids, attention_mask: mask }),
          ),
        ) as {
          probabilities: number[][];
          keys: string[];
          shapes: Record<string, number[]>;
          config: Record<string, unknown>;
          max_delta: number;
        };
        const predicted = await classifier.predict(TEXTS);
        const own = predicted.map((p) => classifier.labels.map((l) => p.probabilities[l]!));
        expect(maxDiff(ref.probabilities, own)).toBeLessThan(1e-5);
        expect(maxDiff([own[0]!], [own[1]!])).toBeGreaterThan(1e-4);
        // Training moved the adapters off B = 0: the deltas are not a no-op the comparison would miss.
        expect(ref.max_delta).toBeGreaterThan(1e-4);

        const layer = c.family === 'distilbert' ? 'transformer.layer' : 'encoder.layer';
        const modules = [0, 1].flatMap((l) => c.targets.map((t) => `base_model.model.${c.family}.${layer}.${l}.${t}`));
        const headKeys = c.headKeys.map((k) => `base_model.model.${k}`);
        expect(ref.keys).toEqual([...modules.flatMap((m) => [`${m}.lora_A.weight`, `${m}.lora_B.weight`]), ...headKeys].sort());
        for (const m of modules) {
          expect(ref.shapes[`${m}.lora_A.weight`]).toEqual([4, 32]);
          expect(ref.shapes[`${m}.lora_B.weight`]).toEqual([32, 4]);
        }
        // The head's last linear: [labels, hidden].
        expect(ref.shapes[`base_model.model.${c.headKeys[c.headKeys.length - 2]}`]).toEqual([2, 32]);
        expect(ref.config).toMatchObject({
          peft_type: 'LORA',
          task_type: 'SEQ_CLS',
          r: 4,
          lora_alpha: 8,
          target_modules: [...c.targets],
          modules_to_save: [...c.head],
          base_model_name_or_path: folder,
        });
      } finally {
        classifier.dispose();
      }
    });
  }
});

describe('settings and refusals', () => {
  it('reads the family from the recorded model_type and the dropout from the config (classifier_dropout, else hidden_dropout_prob), else the option', async () => {
    const b = loadBinding();
    const enc = b.ScriptModule.load(encoder);
    const folder = (name: string, config: Record<string, unknown>) => {
      const dir = join(work, name);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
      return { kind: 'folder' as const, dir, modelType: String(config.model_type), family: 'bert' as const, weights: [] };
    };
    const common = { head: 'sequence-classification' as const, dropout: 0.33, pooling: 'cls', encoder: enc, encoderName: 'enc' };
    try {
      expect(
        await headSettings({ ...common, source: folder('b', { model_type: 'bert', hidden_dropout_prob: 0.3, classifier_dropout: null }) }),
      ).toEqual({
        head: 'sequence-classification',
        family: 'bert',
        dropout: 0.3,
        initializerRange: 0.02,
        features: 'pooler',
      });
      expect(
        await headSettings({
          ...common,
          source: folder('r', { model_type: 'roberta', hidden_dropout_prob: 0.3, classifier_dropout: 0.25, initializer_range: 0.01 }),
        }),
      ).toEqual({
        head: 'sequence-classification',
        family: 'roberta',
        dropout: 0.25,
        initializerRange: 0.01,
        features: 'cls',
      });
      // A traced file: the family from the names (and the tokenizer), the dropout from the option.
      expect(await headSettings({ ...common, tokenizerJson: readFileSync(demoTokenizer, 'utf8') })).toMatchObject({
        family: 'bert',
        dropout: 0.33,
      });
      expect(
        await headSettings({ ...common, tokenizerJson: JSON.stringify({ post_processor: { type: 'RobertaProcessing' } }) }),
      ).toMatchObject({ family: 'roberta' });
      expect(await headSettings({ ...common, head: 'mlp' })).toEqual({ head: 'mlp', dropout: 0.33, features: 'cls' });
    } finally {
      enc.dispose();
    }
  });

  it("refuses pooling 'mean' (naming both options), an unknown head, and BERT without a pooler output", async () => {
    const opts = { data, encoder: 'x.pt' };
    expect(() => resolveTrainOptions({ ...opts, head: 'sequence-classification', pooling: 'mean' })).toThrow(InputError);
    expect(() => resolveTrainOptions({ ...opts, head: 'sequence-classification', pooling: 'mean' })).toThrow(
      /pooling 'mean'.*head 'sequence-classification'/,
    );
    // headHidden shapes head 'mlp' alone: it was recorded and never used.
    expect(() => resolveTrainOptions({ ...opts, head: 'sequence-classification', headHidden: 64 })).toThrow(
      /^headHidden cannot be used with head 'sequence-classification': that head is transformers' own for the family/,
    );
    expect(() => resolveTrainOptions({ ...opts, head: 'linear' as never })).toThrow(/head must be one of mlp, sequence-classification/);
    expect(resolveTrainOptions(opts).head).toBe('mlp');

    const noPooler = await makeEncoder({ ...INFORMATIVE_ENCODER, pretrain: undefined, pretrainEpochs: undefined, output: 'tensor' });
    const err = await train({ ...base(join(work, 'no-pooler')), encoder: noPooler }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelError);
    expect((err as Error).message).toMatch(noPooler);
    expect((err as Error).message).toMatch(/BertForSequenceClassification.*pooler output/);
  });
});
