/**
 * Test fixtures: paths to the demo assets, and TorchScript encoders built on demand by
 * `scripts/python/make_encoder.py` (with the system Python, which has PyTorch) and cached
 * under `test/.fixtures/` by a hash of their options and of the scripts and inputs that
 * produce them, so only the first run pays for building one.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NativeEncoderConfig } from '../lib/addon/binding.js';
import { loadBinding } from '../lib/addon/loader.js';
import type { Classifier } from '../lib/classification/classifier.js';
import { gatherRows } from '../lib/data/batching.js';
import { loadExamples } from '../lib/data/data.js';
import type { EncodedTexts } from '../lib/data/tokenizer.js';

/** The Python with PyTorch (the first `python3` on PATH may not have it). */
export const PYTHON = '/usr/bin/python3';

/** Absolute path of the repository root (this file lives in `<root>/test/`). */
export const repoRoot: string = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Every TypeScript source of lib/, as paths relative to lib/ (`index.ts`, `addon/binding.ts`, ...), sorted. */
export function libSources(): string[] {
  return readdirSync(path.join(repoRoot, 'lib'), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .sort();
}

export const demoTokenizer: string = path.join(repoRoot, 'assets', 'demo', 'tokenizer.json');
export const demoReviews: string = path.join(repoRoot, 'assets', 'demo', 'reviews.csv');
export const demoPretrain: string = path.join(repoRoot, 'assets', 'demo', 'pretrain.csv');

/** Where built encoders are cached (git-ignored). */
export const fixturesDir: string = path.join(repoRoot, 'test', '.fixtures');

export interface MakeEncoderOptions {
  layers?: number;
  hidden?: number;
  heads?: number;
  /** Feed-forward width; default 4 * hidden. */
  intermediate?: number;
  /** 2: forward(input_ids, attention_mask); 3: forward(input_ids, attention_mask, token_type_ids). */
  signature?: 2 | 3;
  /** tuple: (last_hidden_state, pooler_output); dict; tensor: last_hidden_state; bad: a [B, H] tensor. */
  output?: 'tuple' | 'dict' | 'tensor' | 'bad';
  /** tokenizer.json; the vocabulary size is read from it. Required with `pretrain`. */
  tokenizer?: string;
  /** Vocabulary size when no tokenizer is given (the script's default: 1000). */
  vocabSize?: number;
  maxPosition?: number;
  /** Labelled CSV (`text,label`) to fine-tune the encoder on before tracing (makes its features informative). */
  pretrain?: string;
  pretrainEpochs?: number;
  seed?: number;
  /** BertModel-named float32 weights (safetensors) to trace instead of the random init. */
  weights?: string;
}

/**
 * buildEncoder's config of the BERT make_encoder.py traces with these sizes: the script's fixed
 * choices (2 token types, LayerNorm eps 1e-12, pad id 0, GELU, a pooler), no MLM head, and its
 * 512 positions unless `maxPosition` says otherwise.
 */
export function makeEncoderConfig(
  sizes: Required<Pick<MakeEncoderOptions, 'vocabSize' | 'layers' | 'hidden' | 'heads' | 'intermediate'>> &
    Pick<MakeEncoderOptions, 'maxPosition'>,
): NativeEncoderConfig {
  return {
    family: 'bert',
    vocabSize: sizes.vocabSize,
    hiddenSize: sizes.hidden,
    numLayers: sizes.layers,
    numHeads: sizes.heads,
    intermediateSize: sizes.intermediate,
    maxPositions: sizes.maxPosition ?? 512,
    typeVocabSize: 2,
    layerNormEps: 1e-12,
    padTokenId: 0,
    hiddenAct: 'gelu',
    pooler: true,
    mlmHead: false,
  };
}

/**
 * The small informative encoder most tests train on: 2 layers of width 64, fine-tuned on the
 * demo's pretraining reviews so that its features separate the classes (a random BERT's do not).
 */
export const INFORMATIVE_ENCODER: MakeEncoderOptions = {
  layers: 2,
  hidden: 64,
  heads: 4,
  intermediate: 256,
  tokenizer: demoTokenizer,
  pretrain: demoPretrain,
  pretrainEpochs: 10,
  seed: 1,
};

/** Short texts the export and head tests run through a classifier (one of them a single character). */
export const PROBE_TEXTS = ['What a wonderful film.', 'Dull, long and badly acted.', 'I have mixed feelings', 'x'];

/**
 * A small trained-classifier set-up shared by the export and head tests: the informative encoder
 * and the first `rows` demo reviews.
 */
export async function smallClassifierInputs(rows = 160): Promise<{ encoder: string; data: { texts: string[]; labels: string[] } }> {
  const encoder = await makeEncoder(INFORMATIVE_ENCODER);
  const raw = await loadExamples(demoReviews);
  return { encoder, data: { texts: raw.texts.slice(0, rows), labels: raw.labels!.slice(0, rows) } };
}

/** A flat row-major array as rows `width` wide (as the Python references read ids, masks and features). */
export function asRows(flat: ArrayLike<number>, width: number): number[][] {
  const all = Array.from(flat);
  return Array.from({ length: all.length / width }, (_, r) => all.slice(r * width, (r + 1) * width));
}

/** What test/python/reference_train.py reports of an epoch (accuracies null where the problem type has none). */
export interface ReferenceEpoch {
  epoch: number;
  trainLoss: number;
  trainAccuracy: number | null;
  valLoss: number;
  valAccuracy: number | null;
  /** Regression's. */
  valPearson?: number;
}

/**
 * test/python/reference_train.py, the plain-PyTorch trainer, on exactly our tokens and split: the
 * rows of `encoded` in `split`, each with `labelOf(row)` (a class id, a target, a multi-hot row);
 * `settings`, the rest of its spec (encoder, numClasses, problemType, epochs, ...).
 */
export async function referenceTrain(
  encoded: EncodedTexts,
  split: { train: Int32Array; validation: Int32Array },
  labelOf: (row: number) => unknown,
  settings: Record<string, unknown>,
): Promise<{ epochs: ReferenceEpoch[] }> {
  const rowsOf = (indices: Int32Array) => {
    const rows = gatherRows(encoded, indices);
    return {
      input_ids: asRows(rows.inputIds, rows.seqLen),
      attention_mask: asRows(rows.attentionMask, rows.seqLen),
      labels: Array.from(indices, labelOf),
    };
  };
  const dir = mkdtempSync(path.join(tmpdir(), 'torch-bert-reference-'));
  try {
    const specFile = path.join(dir, 'spec.json');
    writeFileSync(specFile, JSON.stringify({ ...settings, train: rowsOf(split.train), validation: rowsOf(split.validation) }));
    return JSON.parse(await runPython('test/python/reference_train.py', ['--spec', specFile]));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A saved classifier.pt run by Python's torch.jit.load in eval mode on token `rows`: its
 * `problem_type` attribute and forward's outputs (log-probabilities, logits or values), a row each.
 */
export async function classifierPtForward(file: string, rows: EncodedTexts): Promise<{ problemType: string; outputs: number[][] }> {
  const code = [
    'import json, sys, torch',
    'm = torch.jit.load(sys.argv[1]).eval()',
    'ids, mask = torch.tensor(json.loads(sys.argv[2])), torch.tensor(json.loads(sys.argv[3]))',
    'print(json.dumps({"problemType": m.problem_type, "outputs": m(ids, mask).tolist()}))',
  ].join('\n');
  const [ids, mask] = [asRows(rows.inputIds, rows.seqLen), asRows(rows.attentionMask, rows.seqLen)];
  return JSON.parse(await runPython('-c', [code, file, JSON.stringify(ids), JSON.stringify(mask)]));
}

/**
 * `texts` as `classifier` tokenizes them for one batch (padded to the longest, cut at its max
 * length): the batch, and its ids and mask as rows.
 */
export async function classifierBatch(classifier: Classifier, texts: string[]) {
  const encoded = await classifier.tokenizer.encodeBatchAsync(texts, classifier.config.maxLength);
  const batch = gatherRows(
    encoded,
    texts.map((_, i) => i),
  );
  return { batch, inputIds: asRows(batch.inputIds, batch.seqLen), attentionMask: asRows(batch.attentionMask, batch.seqLen) };
}

/** The classifier's pooled features of `batch` (extractFeatures, through the library), a row per text. */
export async function classifierFeatures(classifier: Classifier, batch: EncodedTexts): Promise<number[][]> {
  const features = await loadBinding().extractFeatures(classifier.module, {
    inputIds: batch.inputIds,
    attentionMask: batch.attentionMask,
    batchSize: batch.count,
    seqLen: batch.seqLen,
  });
  const flat = Array.from(features.toArray() as Float32Array);
  features.dispose();
  return asRows(flat, flat.length / batch.count);
}

/**
 * Run a Python script from the repository with {@link PYTHON}. Resolves with its stdout;
 * rejects with an Error carrying its stderr when it exits non-zero or cannot start.
 * `script` is a path relative to the repository root, or absolute, or a Python option such
 * as `-c` (then `args` starts with the code) or `-m`. Runs with the repository root as cwd.
 */
export function runPython(script: string, args: string[], stdin?: string): Promise<string> {
  const first = script.startsWith('-') ? script : path.resolve(repoRoot, script);
  return new Promise<string>((resolve, reject) => {
    const child = spawn(PYTHON, [first, ...args], {
      cwd: repoRoot,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PYTHONUNBUFFERED: '1' },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new Error(`cannot run ${PYTHON} ${script}: ${e.message}`)));
    child.on('close', (code, signal) => {
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0) {
        resolve(Buffer.concat(out).toString('utf8'));
      } else {
        const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
        const shown = script === '-c' ? '-c <code>' : `${script} ${args.join(' ')}`;
        reject(new Error(`${PYTHON} ${shown} ${how}:\n${stderr.trim()}`));
      }
    });
    child.stdin.on('error', () => {
      /* the script may exit without reading stdin; its exit status tells what happened */
    });
    child.stdin.end(stdin ?? '');
  });
}

function encoderArgs(opts: MakeEncoderOptions): string[] {
  const args: string[] = [];
  const add = (flag: string, value: string | number | undefined): void => {
    if (value !== undefined) args.push(flag, String(value));
  };
  if (opts.tokenizer !== undefined) add('--tokenizer', path.resolve(repoRoot, opts.tokenizer));
  else add('--vocab-size', opts.vocabSize);
  add('--layers', opts.layers);
  add('--hidden', opts.hidden);
  add('--heads', opts.heads);
  add('--intermediate', opts.intermediate);
  add('--max-position', opts.maxPosition);
  add('--signature', opts.signature);
  add('--output', opts.output);
  add('--seed', opts.seed);
  if (opts.weights !== undefined) add('--weights', path.resolve(repoRoot, opts.weights));
  if (opts.pretrain !== undefined) {
    add('--pretrain', path.resolve(repoRoot, opts.pretrain));
    add('--pretrain-epochs', opts.pretrainEpochs);
  }
  return args;
}

const building = new Map<string, Promise<string>>();

/**
 * Path of a TorchScript BERT encoder with these options, built by make_encoder.py on first
 * use and reused afterwards (`test/.fixtures/<hash>.pt`). The hash covers the options and
 * the contents of the scripts, tokenizer and pretraining CSV, so editing any of them
 * rebuilds.
 */
export async function makeEncoder(opts: MakeEncoderOptions = {}): Promise<string> {
  const args = encoderArgs(opts);
  const hash = createHash('sha256');
  hash.update(JSON.stringify(args.map((a) => (path.isAbsolute(a) ? path.relative(repoRoot, a) : a))));
  const inputs = [path.join(repoRoot, 'scripts', 'python', 'make_encoder.py'), path.join(repoRoot, 'scripts', 'python', 'wordpiece.py')];
  if (opts.tokenizer !== undefined) inputs.push(path.resolve(repoRoot, opts.tokenizer));
  if (opts.pretrain !== undefined) inputs.push(path.resolve(repoRoot, opts.pretrain));
  if (opts.weights !== undefined) inputs.push(path.resolve(repoRoot, opts.weights));
  for (const file of inputs) {
    hash.update('\0' + path.basename(file) + '\0');
    hash.update(readFileSync(file));
  }
  const out = path.join(fixturesDir, `${hash.digest('hex').slice(0, 20)}.pt`);
  if (existsSync(out)) return out;

  let pending = building.get(out);
  if (!pending) {
    mkdirSync(fixturesDir, { recursive: true });
    // make_encoder.py writes to a temporary file and renames it, so a file that exists is complete.
    pending = runPython('scripts/python/make_encoder.py', ['--out', out, ...args]).then(() => out);
    building.set(out, pending);
    pending.then(
      () => building.delete(out),
      () => building.delete(out),
    );
  }
  return pending;
}

export interface MakeHfFolderOptions {
  /** See scripts/python/make_hf_folder.py's --layout. */
  layout?:
    | 'automodel'
    | 'pretraining'
    | 'mlm'
    | 'f16'
    | 'bf16'
    | 'sharded'
    | 'bin'
    | 'bin-sharded'
    | 'roberta'
    | 'distilbert'
    | 'bert-seqcls'
    | 'roberta-seqcls'
    | 'distilbert-seqcls'
    | 'bert-seqcls-legacy';
  /** *-seqcls layouts: config.json's problem_type ('unset': none; regression: one output). See make_hf_folder.py's --problem-type. */
  problemType?: 'single_label_classification' | 'multi_label_classification' | 'regression' | 'unset';
  /** automodel only: float32 weights rounded through float16 / bfloat16. */
  round?: 'f16' | 'bf16';
  tokenizer?: 'json' | 'vocab' | 'none';
  modelMaxLength?: number;
  layers?: number;
  hidden?: number;
  heads?: number;
  intermediate?: number;
  maxPosition?: number;
  act?: string;
  /** config.json's hidden and attention dropout probabilities (default 0.1, transformers'). */
  dropout?: number;
  seed?: number;
}

/**
 * A Hugging Face model folder written by `scripts/python/make_hf_folder.py` (independently of
 * lib/), cached like `makeEncoder` under `test/.fixtures/hf-<hash>/`, with the AutoModel-named
 * float32 weights beside it as `<folder>.weights.safetensors` (`make_encoder.py --weights`).
 */
export async function makeHfFolder(opts: MakeHfFolderOptions = {}): Promise<{ dir: string; weights: string }> {
  const args: string[] = [];
  const add = (flag: string, value: string | number | undefined): void => {
    if (value !== undefined) args.push(flag, String(value));
  };
  add('--layout', opts.layout);
  add('--round', opts.round);
  add('--tokenizer', opts.tokenizer);
  add('--model-max-length', opts.modelMaxLength);
  add('--layers', opts.layers);
  add('--hidden', opts.hidden);
  add('--heads', opts.heads);
  add('--intermediate', opts.intermediate);
  add('--max-position', opts.maxPosition);
  add('--act', opts.act);
  add('--dropout', opts.dropout);
  add('--seed', opts.seed);
  add('--problem-type', opts.problemType);
  const hash = createHash('sha256').update(JSON.stringify(args));
  for (const file of [path.join(repoRoot, 'scripts', 'python', 'make_hf_folder.py'), demoTokenizer]) {
    hash.update('\0' + path.basename(file) + '\0');
    hash.update(readFileSync(file));
  }
  const dir = path.join(fixturesDir, `hf-${hash.digest('hex').slice(0, 20)}`);
  const weights = `${dir}.weights.safetensors`;
  if (existsSync(weights)) return { dir, weights };
  let pending = building.get(dir);
  if (!pending) {
    mkdirSync(fixturesDir, { recursive: true });
    // The weights file is written last: when it exists, the folder is complete.
    pending = runPython('scripts/python/make_hf_folder.py', ['--out', dir, '--weights-out', weights, ...args]).then(() => dir);
    building.set(dir, pending);
    pending.then(
      () => building.delete(dir),
      () => building.delete(dir),
    );
  }
  await pending;
  return { dir, weights };
}
