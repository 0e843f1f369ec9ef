/**
 * exportAdapterHub and `torch-bert export --format adapterhub`: a `technique: 'adapter'` classifier's
 * bottleneck adapters (and head, where AdapterHub has the same one) in the `adapters` library's
 * format. The exported files are read back by test/python/adapterhub_reference.py, which implements
 * AdapterHub's bottleneck forward order from the config's fields (no `adapters` library here),
 * loads pytorch_adapter.bin with torch.load by its exact key names onto the base folder's own
 * weights, and must give what predict gives; the key sets are asserted exactly. Also the refusals.
 */
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { pythonFloorDiv, reductionFactorFor } from '../lib/export/export-adapterhub.js';
import { torchSaveBytes } from '../lib/files/torch-save.js';
import {
  type Classifier,
  exportAdapterHub,
  exportHuggingFace,
  loadClassifier,
  ModelError,
  type TrainOptions,
  train,
} from '../lib/index.js';
import {
  classifierBatch,
  classifierFeatures,
  makeHfFolder,
  PROBE_TEXTS,
  PYTHON,
  repoRoot,
  runPython,
  smallClassifierInputs,
} from './fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-adapterhub-'));
const TEXTS = PROBE_TEXTS;
let data: { texts: string[]; labels: string[] };
let bert: { dir: string; weights: string };
let distilbert: { dir: string; weights: string };
let roberta: { dir: string; weights: string };

beforeAll(async () => {
  ({ data } = await smallClassifierInputs());
  const sizes = { layers: 2, hidden: 32, heads: 4, intermediate: 64, maxPosition: 64 };
  bert = await makeHfFolder({ layout: 'automodel', ...sizes });
  distilbert = await makeHfFolder({ layout: 'distilbert', ...sizes });
  roberta = await makeHfFolder({ layout: 'roberta', ...sizes });
});

const base = (outDir: string, encoder: string): TrainOptions => ({
  data,
  encoder,
  outDir,
  epochs: 2,
  batchSize: 32,
  maxLength: 32,
  technique: 'adapter',
  learningRate: 1e-2,
});

interface Reference {
  probabilities: number[][] | null;
  features: number[][];
  keys: string[];
  head_keys: string[];
  config: { config: Record<string, unknown> } & Record<string, unknown>;
  head_config: { config: Record<string, unknown> } & Record<string, unknown>;
}

const maxDiff = (a: number[][], b: number[][]) => {
  expect(a.length).toBe(b.length);
  return Math.max(...a.flatMap((row, r) => row.map((v, c) => Math.abs(v - b[r]![c]!))));
};

/** The largest difference between two texts' probabilities: the comparison is not of near-constant outputs. */
const spread = (p: number[][]) => Math.max(...p.flatMap((a) => p.map((b) => maxDiff([a], [b]))));

async function reference(folder: { dir: string; weights: string }, out: string, ids: number[][], mask: number[][]): Promise<Reference> {
  const stdin = JSON.stringify({ base: folder.dir, weights: folder.weights, dir: out, input_ids: ids, attention_mask: mask });
  return JSON.parse(await runPython('test/python/adapterhub_reference.py', [], stdin)) as Reference;
}

/**
 * The reference of AdapterHub's forward with the export `out` on the base `folder`, on TEXTS as the
 * classifier tokenizes them: its probabilities must be predict's (1e-5), on outputs that differ by text.
 */
async function expectReferenceIsPredict(classifier: Classifier, folder: { dir: string; weights: string }, out: string): Promise<Reference> {
  const { inputIds, attentionMask } = await classifierBatch(classifier, TEXTS);
  const ref = await reference(folder, out, inputIds, attentionMask);
  const own = (await classifier.predict(TEXTS)).map((p) => classifier.labels.map((l) => p.probabilities[l]!));
  expect(maxDiff(ref.probabilities!, own)).toBeLessThan(1e-5);
  expect(spread(own)).toBeGreaterThan(1e-4);
  return ref;
}

/** The largest |value| of the classifier's adapter up-projections: training moved them off their zero init. */
function maxUp(classifier: Classifier): number {
  return Math.max(
    ...classifier.module
      .namedParameters()
      .filter(([n]) => n.endsWith('.adapter.up.weight'))
      .map(([, t]) => Math.max(...Array.from(t.toArray() as Float32Array, Math.abs))),
  );
}

/** The exact adapter keys of a 2-layer export: `<layers>.N.<location>.adapters.<name>.<param>`. */
const adapterKeys = (layers: string, locations: readonly string[], name = 'torch_bert') =>
  [0, 1]
    .flatMap((l) =>
      locations.flatMap((loc) =>
        ['adapter_down.0.weight', 'adapter_down.0.bias', 'adapter_up.weight', 'adapter_up.bias'].map(
          (p) => `${layers}.${l}.${loc}.adapters.${name}.${p}`,
        ),
      ),
    )
    .sort();

describe('exportAdapterHub', () => {
  it("houlsby (BERT, default head with headHidden = hidden): double_seq_bn's placement, exact keys; the reference of AdapterHub's forward on the base folder gives predict's probabilities (1e-5)", async () => {
    const dir = join(work, 'houlsby');
    (await train({ ...base(dir, bert.dir), adapter: { config: 'houlsby', size: 8 }, headHidden: 32 })).classifier.dispose();
    const out = join(work, 'houlsby-ah');
    const result = await exportAdapterHub({ classifier: dir, out });
    expect(result.files).toEqual(['adapter_config.json', 'head_config.json', 'pytorch_adapter.bin', 'pytorch_model_head.bin']);
    expect(result.head).toEqual({ layers: 2, activation: 'relu', usePooler: false });
    expect(result.notes).toEqual([]);
    // The Hugging Face export has no place for them, and says where they go instead.
    await expect(exportHuggingFace({ classifier: dir, out: join(work, 'houlsby-hf') })).rejects.toThrow(
      /bottleneck adapters \(technique 'adapter'\).*--format adapterhub/,
    );

    const classifier = await loadClassifier(dir);
    try {
      expect(maxUp(classifier)).toBeGreaterThan(1e-3);
      const ref = await expectReferenceIsPredict(classifier, bert, out);

      expect(ref.keys).toEqual(adapterKeys('bert.encoder.layer', ['attention.output', 'output']));
      expect(ref.head_keys).toEqual([
        'heads.torch_bert.1.bias',
        'heads.torch_bert.1.weight',
        'heads.torch_bert.4.bias',
        'heads.torch_bert.4.weight',
      ]);
      expect(ref.config).toMatchObject({
        name: 'torch_bert',
        model_type: 'bert',
        model_class: 'BertAdapterModel',
        hidden_size: 32,
        model_name: bert.dir,
      });
      expect(ref.config.config).toMatchObject({
        architecture: 'bottleneck',
        mh_adapter: true,
        output_adapter: true,
        reduction_factor: 4,
        non_linearity: 'swish',
        original_ln_before: false,
        original_ln_after: true,
        residual_before_ln: true,
        ln_before: false,
        ln_after: false,
        scaling: 1,
        is_parallel: false,
      });
      expect(ref.head_config.config).toMatchObject({
        head_type: 'classification',
        num_labels: 2,
        layers: 2,
        activation_function: 'relu',
        use_pooler: false,
        label2id: Object.fromEntries(classifier.labels.map((l, i) => [l, i])),
      });
    } finally {
      classifier.dispose();
    }
  });

  it("pfeiffer with BERT's sequence-classification head and gelu: mh_adapter false, original_ln_before false (not seq_bn, said in notes); the pooler head as 1 layer with use_pooler; equals predict (1e-5)", async () => {
    const dir = join(work, 'pfeiffer');
    (
      await train({
        ...base(dir, bert.dir),
        adapter: { config: 'pfeiffer', reductionFactor: 4, activation: 'gelu' },
        head: 'sequence-classification',
        // transformers' head starts at N(0, 0.02): a larger step moves it off near-equal outputs.
        learningRate: 5e-2,
        epochs: 3,
      })
    ).classifier.dispose();
    const out = join(work, 'pfeiffer-ah');
    const result = await exportAdapterHub({ classifier: dir, out, name: 'sentiment' });
    expect(result.head).toEqual({ layers: 1, activation: null, usePooler: true });
    expect(result.notes.join('\n')).toMatch(/not as AdapterHub's 'seq_bn'/);

    const classifier = await loadClassifier(dir);
    try {
      expect(maxUp(classifier)).toBeGreaterThan(1e-3);
      const ref = await expectReferenceIsPredict(classifier, bert, out);
      expect(ref.keys).toEqual(adapterKeys('bert.encoder.layer', ['output'], 'sentiment'));
      expect(ref.head_keys).toEqual(['heads.sentiment.1.bias', 'heads.sentiment.1.weight']);
      expect(ref.config.config).toMatchObject({
        mh_adapter: false,
        output_adapter: true,
        reduction_factor: 4,
        non_linearity: 'gelu',
        original_ln_before: false,
      });
    } finally {
      classifier.dispose();
    }
  });

  const families = [
    {
      family: 'roberta',
      head: { layers: 2, activation: 'tanh', usePooler: false },
      modelClass: 'RobertaAdapterModel',
      prefix: 'roberta.encoder.layer',
      locations: ['attention.output', 'output'],
    },
    {
      family: 'distilbert',
      head: { layers: 2, activation: 'relu', usePooler: false },
      modelClass: 'DistilBertAdapterModel',
      prefix: 'distilbert.transformer.layer',
      locations: ['attention_adapters', 'output_adapters'],
    },
  ] as const;
  for (const f of families) {
    it(`${f.family} (houlsby, its sequence-classification head as ${f.head.layers} layers with ${f.head.activation}): ${f.prefix}.N.{${f.locations.join(',')}}.adapters keys; equals predict (1e-5)`, async () => {
      const folder = f.family === 'roberta' ? roberta : distilbert;
      const dir = join(work, f.family);
      (
        await train({ ...base(dir, folder.dir), adapter: { size: 8 }, head: 'sequence-classification', learningRate: 5e-2, epochs: 3 })
      ).classifier.dispose();
      const out = join(work, `${f.family}-ah`);
      const result = await exportAdapterHub({ classifier: dir, out });
      expect(result.family).toBe(f.family);
      expect(result.head).toEqual(f.head);

      const classifier = await loadClassifier(dir);
      try {
        const ref = await expectReferenceIsPredict(classifier, folder, out);
        expect(ref.keys).toEqual(adapterKeys(f.prefix, f.locations));
        expect(ref.config).toMatchObject({ model_type: f.family, model_class: f.modelClass });
      } finally {
        classifier.dispose();
      }
    });
  }

  it('a RoBERTa-family classifier whose source is XLM-R names its model type and AdapterHub class as XLM-R', async () => {
    // The roberta classifier of the test above, its recorded source relabelled as XLM-R (the same modules).
    const dir = join(work, 'xlmr');
    cpSync(join(work, 'roberta'), dir, { recursive: true });
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    config.encoder.source = {
      ...config.encoder.source,
      modelType: 'xlm-roberta',
      config: { ...config.encoder.source.config, model_type: 'xlm-roberta' },
    };
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    const out = join(work, 'xlmr-ah');
    expect((await exportAdapterHub({ classifier: dir, out })).family).toBe('roberta');
    const written = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
    expect([written.model_type, written.model_class]).toEqual(['xlm-roberta', 'XLMRobertaAdapterModel']);
  });

  it("a head AdapterHub has no counterpart for (headHidden 512 on hidden 32) is left out with a note; the adapters alone give the classifier's features (1e-5)", async () => {
    const dir = join(work, 'wide-head');
    (await train({ ...base(dir, bert.dir), adapter: { size: 8 } })).classifier.dispose();
    const out = join(work, 'wide-head-ah');
    const result = await exportAdapterHub({ classifier: dir, out });
    expect(result.files).toEqual(['adapter_config.json', 'pytorch_adapter.bin']);
    expect(result.head).toBeNull();
    expect(result.notes.join('\n')).toMatch(/the head is not exported: its head's hidden layer is 512 wide \(headHidden\).*hidden size 32/);

    const classifier = await loadClassifier(dir);
    try {
      const { batch, inputIds, attentionMask } = await classifierBatch(classifier, TEXTS);
      const ref = await reference(bert, out, inputIds, attentionMask);
      expect(ref.probabilities).toBeNull();
      const own = await classifierFeatures(classifier, batch);
      expect(own[0]).toHaveLength(32);
      expect(maxDiff(ref.features, own)).toBeLessThan(1e-5);
    } finally {
      classifier.dispose();
    }
  });

  it('a classifier whose encoder is no recorded Hugging Face model (a TorchScript file) writes model_name null and says so in a note', async () => {
    // The classifier of the test above, its recorded source removed as a TorchScript-trained one records none.
    const dir = join(work, 'no-source');
    cpSync(join(work, 'wide-head'), dir, { recursive: true });
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    delete config.encoder.source;
    config.encoder.file = '/models/encoder.pt';
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    const out = join(work, 'no-source-ah');
    const result = await exportAdapterHub({ classifier: dir, out });
    expect(JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')).model_name).toBeNull();
    // Before: model_name null and not a word on which model the adapters go.
    expect(result.notes).toContain(
      "the classifier's encoder, /models/encoder.pt, is no recorded Hugging Face model (a TorchScript file, or a classifier saved " +
        'before torch-bert recorded its source): model_name is null; load the adapters onto the Hugging Face model whose weights it holds',
    );
  });

  it('refuses another technique and a run that trained the LayerNorms, naming why (EXPORT_ADAPTERHUB_UNSUPPORTED); writes nothing', async () => {
    const lora = join(work, 'lora');
    (await train({ ...base(lora, bert.dir), technique: 'lora', epochs: 1 })).classifier.dispose();
    const err = await exportAdapterHub({ classifier: lora, out: join(work, 'lora-ah') }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelError);
    expect((err as ModelError).code).toBe('EXPORT_ADAPTERHUB_UNSUPPORTED');
    expect((err as Error).message).toMatch(/trained with technique 'lora'.*bottleneck adapters/);
    expect(existsSync(join(work, 'lora-ah'))).toBe(false);

    const ln = join(work, 'layernorm');
    (await train({ ...base(ln, bert.dir), adapter: { size: 8, trainLayerNorm: true }, epochs: 1 })).classifier.dispose();
    const err2 = await exportAdapterHub({ classifier: ln, out: join(work, 'ln-ah') }).catch((e: unknown) => e);
    expect((err2 as ModelError).code).toBe('EXPORT_ADAPTERHUB_UNSUPPORTED');
    expect((err2 as Error).message).toMatch(/trained the encoder's own LayerNorms \(adapter\.trainLayerNorm\)/);
    expect(existsSync(join(work, 'ln-ah'))).toBe(false);
  });

  it("reduction factors as AdapterHub computes int(hidden // factor) (Python's float floor division)", () => {
    expect(pythonFloorDiv(768, 12)).toBe(64);
    // Python: 64 // (64 / 48) == 48.0, 100 // (100 / 30) == 29.0 (the factor's rounding loses one).
    expect(pythonFloorDiv(64, 64 / 48)).toBe(48);
    expect(pythonFloorDiv(100, 100 / 30)).toBe(29);
    expect(pythonFloorDiv(7, 2)).toBe(3);
    expect(pythonFloorDiv(-7, 2)).toBe(-4);
    expect(reductionFactorFor(768, 64, null)).toBe(12);
    expect(reductionFactorFor(32, 8, 4)).toBe(4);
    // A recorded factor that gives the width is kept as recorded (hidden / factor floored).
    expect(reductionFactorFor(768, 48, 16)).toBe(16);
    // No factor gives 30 of 100: refused rather than written as one AdapterHub would build 29 wide.
    expect(reductionFactorFor(100, 30, null)).toBeNull();
  });
});

describe('torchSaveBytes', () => {
  it("writes what Python's torch.load (weights_only) reads as an OrderedDict of float32 tensors, in order, values exact, data 64-byte aligned", async () => {
    const file = join(work, 'state.bin');
    const values = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => (i - k) / 7);
    writeFileSync(
      file,
      torchSaveBytes([
        { name: 'layer.0.weight', shape: [3, 5], data: values(15, 4) },
        { name: 'layer.0.bias', shape: [5], data: values(5, 2) },
        { name: 'scale', shape: [], data: Float32Array.from([1.5]) },
        { name: 'empty', shape: [0, 4], data: new Float32Array(0) },
      ]),
    );
    const read = JSON.parse(
      await runPython('-c', [
        [
          'import sys, json, zipfile, torch',
          'd = torch.load(sys.argv[1], weights_only=True)',
          'z = zipfile.ZipFile(sys.argv[1])',
          'raw = open(sys.argv[1], "rb").read()',
          '# a data start: the local header (30 bytes), its name and its extra field (lengths at 26 and 28)',
          'offsets = [i.header_offset + 30 + int.from_bytes(raw[i.header_offset + 26:i.header_offset + 28], "little")',
          '           + int.from_bytes(raw[i.header_offset + 28:i.header_offset + 30], "little") for i in z.infolist()]',
          'print(json.dumps({"type": type(d).__name__, "keys": list(d), "dtypes": sorted({str(v.dtype) for v in d.values()}),',
          '  "shapes": [list(v.shape) for v in d.values()], "values": [v.flatten().tolist() for v in d.values()],',
          '  "aligned": all(o % 64 == 0 for o in offsets), "bad": z.testzip()}))',
        ].join('\n'),
        file,
      ]),
    ) as { type: string; keys: string[]; dtypes: string[]; shapes: number[][]; values: number[][]; aligned: boolean; bad: string | null };
    expect(read.type).toBe('OrderedDict');
    expect(read.keys).toEqual(['layer.0.weight', 'layer.0.bias', 'scale', 'empty']);
    expect(read.dtypes).toEqual(['torch.float32']);
    expect(read.shapes).toEqual([[3, 5], [5], [], [0, 4]]);
    expect(read.values[0]).toEqual(Array.from(values(15, 4)));
    expect(read.values[1]).toEqual(Array.from(values(5, 2)));
    expect(read.values[2]).toEqual([1.5]);
    expect(read.values[3]).toEqual([]);
    expect(read.aligned).toBe(true);
    expect(read.bad).toBeNull();
    expect(() => torchSaveBytes([{ name: 'x', shape: [2, 2], data: new Float32Array(3) }])).toThrow(/x has 3 values for shape \[2, 2\]/);
  });

  it('refuses more tensors than a zip without ZIP64 holds, saying so', () => {
    // Before: Node's 'The value of "value" is out of range ... Received 65538', from writing the
    // entry count into the end record ahead of the check meant to refuse it.
    const many = Array.from({ length: 2 ** 16 }, (_, i) => ({ name: `t${i}`, shape: [1], data: new Float32Array(1) }));
    expect(() => torchSaveBytes(many)).toThrow(/^torch-save: the state dict is too large for a zip without ZIP64$/);
  });
});

describe('torch-bert export --format adapterhub', () => {
  it('--json prints the folder, the adapter name, the files and the head', async () => {
    const dir = join(work, 'houlsby');
    const out = join(work, 'cli-ah');
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [join(repoRoot, 'dist', 'cli.js'), 'export', '--format', 'adapterhub', '--classifier', dir, '--out', out, '--name', 'imdb', '--json'],
      { env: { ...process.env, PYTHON } },
    );
    const printed = JSON.parse(stdout) as { out: string; name: string; files: string[]; head: unknown };
    expect(printed).toMatchObject({ out, name: 'imdb', family: 'bert', head: { layers: 2, activation: 'relu', usePooler: false } });
    expect(printed.files).toEqual(['adapter_config.json', 'head_config.json', 'pytorch_adapter.bin', 'pytorch_model_head.bin']);
    expect(JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'))).toMatchObject({ name: 'imdb' });
  });
});
