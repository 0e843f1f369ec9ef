#!/usr/bin/env node
/**
 * `npm run bench [-- --quick]`: the time of one training step of the seed's frozen job in
 * torch-bert next to the same step in the plain-PyTorch reference (scripts/python/reference_train.py),
 * on the same machine, data, tokens, encoder and batch, in one run.
 *
 * Per step, both sides time: the batch's encoder forward, the head forward, NLL loss, backward
 * and the AdamW step (ours through the public train() API, so JS-side batch assembly is
 * included). Each side reports the median over every step of one epoch; the ratio
 * ours/reference < 1 means faster than PyTorch. The machine is shared and noisy, so each side
 * is run `repeats` times, alternating, and the median and spread of the medians are reported.
 *
 * Data: IMDB reviews from ../shared/data/imdb with the real bert-base-uncased tokenizer when
 * present, else the embedded demo reviews and tokenizer.
 * Writes bench/results.json and prints a Markdown table.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { train, loadBinding } = await import(join(root, 'dist', 'index.js'));
const { loadExamples, inferLabelNames, labelIds, stratifiedSplit } = await import(join(root, 'dist', 'data.js'));
const { TextTokenizer, gatherRows } = await import(join(root, 'dist', 'tokenizer.js'));

const quick = process.argv.includes('--quick');
const PYTHON = '/usr/bin/python3';
const cache = join(root, 'bench', '.cache');
mkdirSync(cache, { recursive: true });

const shared = resolve(root, '..', 'shared');
const imdbFile = join(shared, 'data', 'imdb', 'train-00-of-10.csv');
const bertTokenizer = join(shared, 'models', 'bert-base-uncased', 'tokenizer.json');
const useImdb = existsSync(imdbFile) && existsSync(bertTokenizer);
if (!useImdb) console.error(`bench: ${imdbFile} not found; using the embedded demo reviews and tokenizer instead`);
const tokenizerFile = useImdb ? bertTokenizer : join(root, 'assets', 'demo', 'tokenizer.json');
const dataFile = useImdb ? imdbFile : join(root, 'assets', 'demo', 'reviews.csv');

const SHAPES = [
  { name: 'tiny', layers: 2, hidden: 128, heads: 2, intermediate: 512, examples: 640, batchSize: 32, maxLength: 128 },
  { name: 'small', layers: 4, hidden: 256, heads: 4, intermediate: 1024, examples: 320, batchSize: 32, maxLength: 128 },
  { name: 'bert-base', layers: 12, hidden: 768, heads: 12, intermediate: 3072, examples: 96, batchSize: 16, maxLength: 128 },
];
const shapes = quick ? SHAPES.slice(0, 1).map((s) => ({ ...s, examples: 160 })) : SHAPES;
const repeats = quick ? 1 : 3;

async function makeEncoder(shape) {
  const file = join(cache, `${shape.name}-${useImdb ? 'bert' : 'demo'}.pt`);
  if (!existsSync(file)) {
    console.error(`bench: making the ${shape.name} encoder ...`);
    await exec(PYTHON, [
      join(root, 'scripts', 'python', 'make_encoder.py'), '--out', file, '--tokenizer', tokenizerFile,
      '--layers', String(shape.layers), '--hidden', String(shape.hidden), '--heads', String(shape.heads),
      '--intermediate', String(shape.intermediate), '--seed', '0',
    ], { maxBuffer: 64 << 20 });
  }
  return file;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const raw = await loadExamples({ csv: dataFile, textColumn: 'text', labelColumn: 'label' });
const tokenizer = await TextTokenizer.load(tokenizerFile);
const binding = loadBinding();
const results = [];

for (const shape of shapes) {
  const encoder = await makeEncoder(shape);
  const texts = raw.texts.slice(0, shape.examples);
  const rawLabels = raw.labels.slice(0, shape.examples);
  const names = inferLabelNames(rawLabels, raw.origin);
  const ids = labelIds(rawLabels, names, raw.origin);
  const split = stratifiedSplit(ids, 0.2, 42, binding.randperm);
  const encoded = tokenizer.encodeBatch(texts, shape.maxLength);
  const rowsOf = (indices) => {
    const rows = gatherRows(encoded, indices);
    const chunk = (a) => Array.from({ length: rows.count }, (_, r) => Array.from(a.subarray(r * rows.seqLen, (r + 1) * rows.seqLen)));
    return { input_ids: chunk(rows.inputIds), attention_mask: chunk(rows.attentionMask), labels: Array.from(indices, (i) => ids[i]) };
  };
  const common = { epochs: 1, batchSize: shape.batchSize, lr: 1e-5, weightDecay: 0.01, seed: 42, headHidden: 512, dropout: 0.1, pooling: 'cls' };
  const specFile = join(cache, `spec-${shape.name}.json`);
  writeFileSync(specFile, JSON.stringify({ encoder, train: rowsOf(split.train), validation: rowsOf(split.validation), numClasses: names.length, ...common }));

  const oursRuns = [];
  const referenceRuns = [];
  for (let r = 0; r < repeats; r++) {
    const { stdout } = await exec(PYTHON, [join(root, 'scripts', 'python', 'reference_train.py'), '--spec', specFile], { maxBuffer: 64 << 20 });
    referenceRuns.push(JSON.parse(stdout).stepSeconds);

    const stepTimes = [];
    let last = 0;
    const result = await train({
      data: { texts, labels: rawLabels },
      encoder,
      tokenizer: tokenizerFile,
      epochs: 1,
      batchSize: shape.batchSize,
      maxLength: shape.maxLength,
      learningRate: 1e-5,
      onProgress: (e) => {
        if (e.type !== 'step') return;
        const now = performance.now();
        if (e.step > 1) stepTimes.push((now - last) / 1000);
        last = now;
      },
    });
    result.classifier.dispose();
    oursRuns.push(median(stepTimes));
  }
  const ours = median(oursRuns);
  const reference = median(referenceRuns);
  const row = {
    shape: shape.name,
    layers: shape.layers,
    hidden: shape.hidden,
    batch: `${shape.batchSize}x${shape.maxLength}`,
    oursStepSeconds: ours,
    referenceStepSeconds: reference,
    ratio: ours / reference,
    oursRuns,
    referenceRuns,
  };
  results.push(row);
  console.error(`bench: ${shape.name}: ours ${ours.toFixed(4)} s/step, PyTorch ${reference.toFixed(4)} s/step, ratio ${row.ratio.toFixed(3)}`);
}

const versions = binding.versions();
const report = {
  date: new Date().toISOString(),
  quick,
  data: useImdb ? 'IMDB train-00 (bert-base-uncased tokenizer)' : 'embedded demo reviews',
  libtorch: versions.libtorch,
  threads: binding.getNumThreads(),
  repeats,
  results,
};
writeFileSync(join(root, 'bench', quick ? 'results-quick.json' : 'results.json'), JSON.stringify(report, null, 2) + '\n');

const spread = (xs) => `${Math.min(...xs).toFixed(4)}–${Math.max(...xs).toFixed(4)}`;
console.log(`Frozen-encoder training step (encoder forward + head + backward + AdamW), median of ${repeats} runs; ${report.data}; libtorch ${versions.libtorch}, ${report.threads} intra-op thread(s)\n`);
console.log('| shape | batch | torch-bert s/step (spread) | PyTorch s/step (spread) | ratio |');
console.log('|---|---|---|---|---|');
for (const r of results) {
  console.log(`| ${r.shape} (${r.layers}L, H=${r.hidden}) | ${r.batch} | ${r.oursStepSeconds.toFixed(4)} (${spread(r.oursRuns)}) | ${r.referenceStepSeconds.toFixed(4)} (${spread(r.referenceRuns)}) | ${r.ratio.toFixed(3)} |`);
}
