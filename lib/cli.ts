#!/usr/bin/env node
import { join } from 'node:path';
/**
 * The `torch-bert` command: train | eval | predict | export | demo. Same options as the API; tables and
 * a live progress bar for people, `--json` for programs. Exit code 0 on success, 1 with a
 * one-line error on failure (a NativeLoadError: its whole message, the fix included), 2 on a
 * usage error, 130 when interrupted.
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';
import type { AdapterActivation, AdapterConfig } from './binding.js';
import { Classifier, type Prediction } from './classifier.js';
import { type CsvSource, loadExamples } from './data.js';
import { DEMO_SENTENCES, DEMO_TRAINING, demoAssets } from './demo.js';
import { AbortError, messageOf } from './errors.js';
import { type ExportResult, exportHuggingFace } from './export.js';
import { type AdapterHubExportResult, exportAdapterHub } from './export-adapterhub.js';
import { resolveModelSource, terminalProgress } from './hub.js';
import { handErrorToLauncher, launchWorkers, STOP_SIGNAL, stopGrace, tellLauncherListening, withoutNproc } from './launcher.js';
import { NativeLoadError } from './loader.js';
import { formatMetricsTable } from './metrics.js';
import {
  DEFAULTS,
  type Device,
  type EpochMetrics,
  likelyMeant,
  type PredictEvent,
  type ProgressEvent,
  type TrainOptions,
} from './options.js';
import { PRETRAIN_DEFAULTS, type PretrainOptions, type PretrainResult, pretrain } from './pretrainer.js';
import { promptClassifier } from './prompt-classifier.js';
import type { HeadKind } from './sequence-classification.js';
import { type TrainResult, train } from './trainer.js';

class UsageError extends Error {}

/**
 * `--nproc-per-node`: a worker failed (`errors`, the workers' own, each once: launcher.ts
 * workerErrorLines; `failure` says which failed and how when its error does not), or the workers
 * stopped on request (no failure: each said where it stopped); the command exits with `exitCode`.
 */
class WorkersFailed extends Error {
  constructor(
    readonly exitCode: number,
    readonly failure: string | undefined,
    readonly errors: readonly string[] = [],
    /** Which workers the launcher killed for not ending with the others (launcher.ts stopGrace). */
    readonly killed?: string,
  ) {
    super(failure ?? errors[0] ?? `the workers stopped with code ${exitCode}`);
  }
}

type Options = NonNullable<ParseArgsConfig['options']>;

const TRAIN_OPTIONS: Options = {
  data: { type: 'string', multiple: true },
  'validation-data': { type: 'string', multiple: true },
  model: { type: 'string' },
  tokenizer: { type: 'string' },
  out: { type: 'string' },
  'text-column': { type: 'string' },
  'label-column': { type: 'string' },
  epochs: { type: 'string' },
  'batch-size': { type: 'string' },
  'max-length': { type: 'string' },
  lr: { type: 'string' },
  'weight-decay': { type: 'string' },
  'validation-split': { type: 'string' },
  'head-hidden': { type: 'string' },
  head: { type: 'string' },
  template: { type: 'string' },
  verbalizer: { type: 'string', multiple: true },
  'few-shot': { type: 'string' },
  'text-pair-column': { type: 'string' },
  dropout: { type: 'string' },
  pooling: { type: 'string' },
  'max-grad-norm': { type: 'string' },
  seed: { type: 'string' },
  device: { type: 'string' },
  precision: { type: 'string' },
  threads: { type: 'string' },
  'nproc-per-node': { type: 'string' },
  'distributed-timeout': { type: 'string' },
  technique: { type: 'string' },
  'encoder-lr': { type: 'string' },
  freeze: { type: 'string', multiple: true },
  'lora-rank': { type: 'string' },
  'lora-alpha': { type: 'string' },
  'lora-dropout': { type: 'string' },
  'lora-targets': { type: 'string' },
  'adapter-config': { type: 'string' },
  'adapter-size': { type: 'string' },
  'adapter-reduction-factor': { type: 'string' },
  'adapter-activation': { type: 'string' },
  'adapter-train-layernorm': { type: 'boolean' },
  'feature-cache': { type: 'string' },
  'cache-dir': { type: 'string' },
  schedule: { type: 'string' },
  'warmup-ratio': { type: 'string' },
  'grad-accum': { type: 'string' },
  'class-weights': { type: 'string' },
  'label-smoothing': { type: 'string' },
  padding: { type: 'string' },
  'group-by-length': { type: 'boolean' },
  'eval-every': { type: 'string' },
  'best-metric': { type: 'string' },
  'early-stopping': { type: 'string' },
  resume: { type: 'string' },
  'on-non-finite': { type: 'string' },
  report: { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

const PROMPT_HELP = `  or, zero-shot (LM-BFF: a class's probability is the softmax over the label words' logits at the mask):
  --model M                a Hugging Face folder or Hub id whose checkpoint has its MLM head (BERT, RoBERTa, DistilBERT)
  --template T             e.g. "{text} It was [MASK]." (the tokenizer's own mask token: <mask> for
                           RoBERTa); {text_a} and {text_b} for pairs; texts are truncated, the template never
  --verbalizer LABEL=WORD  one per class, in class order; each word one token of the vocabulary
  --max-length N           tokens per example, template included (the folder's)
  --tokenizer FILE.json    instead of the folder's own`;

const BASE_HELP = `  --base MODEL             with --classifier DIR of a lora or adapter run: build it from its small
                           files (adapters.pt, head.pt) on the base encoder it was trained on
                           (Classifier.loadAdapters; DIR/classifier.pt is not read)
  --allow-other-base       with --base: build on a base whose weights are not those the run was
                           trained on (refused by default: the adapters would predict wrongly)`;

const PROMPT_OPTIONS: Options = {
  model: { type: 'string' },
  template: { type: 'string' },
  verbalizer: { type: 'string', multiple: true },
  'max-length': { type: 'string' },
  tokenizer: { type: 'string' },
};

const HELP: Record<string, string> = {
  main: `torch-bert — fine-tune BERT classifiers from Node.js on libtorch

Usage:
  torch-bert train   --data FILE.csv --model MODEL [--tokenizer tokenizer.json] --out DIR [options]
  torch-bert eval    --classifier DIR --data FILE.csv [--json]
  torch-bert eval    --model M --template T --verbalizer LABEL=WORD... --data FILE.csv [--json]
  torch-bert predict --classifier DIR [--json] TEXT... | --data FILE.csv
  torch-bert predict --model M --template T --verbalizer LABEL=WORD... [--json] TEXT...
  torch-bert export  --classifier DIR --out HF_DIR [--heads N] [--format hf|adapterhub] [--name NAME] [--json]
  torch-bert pretrain --model MODEL --data FILE --out DIR [options]   masked-language-model pretraining
  torch-bert demo    [--out DIR] [--json]
  torch-bert doctor  [--json]      what to paste into a bug report

Every command takes --verbose: on failure, the full trace (as TORCH_BERT_DEBUG=1 does).

Run 'torch-bert COMMAND --help' for a command's options.`,
  train: `torch-bert train — fine-tune a classifier on an encoder (frozen, full, LoRA or adapters)

Required:
  --data FILE.csv          labelled training data (CSV with a header row); repeat the option
                           for a dataset in parts (same columns), read as one
  --model MODEL            the encoder: a TorchScript file (ENCODER.pt: forward(input_ids,
                           attention_mask[, token_type_ids])), a Hugging Face model folder
                           (config.json + model.safetensors | pytorch_model.bin; BERT, RoBERTa,
                           XLM-R, CamemBERT, DistilBERT) or a Hub id (org/name[@revision],
                           from the Hugging Face cache, downloaded when missing; HF_HUB_OFFLINE=1
                           uses the cache only); an existing local path wins, ./name is local
  --out DIR                where the best checkpoint goes (classifier.pt, config.json, ...); a
                           DIR an unfinished run left its training state in is refused without
                           --resume DIR: delete DIR/training-state to start over
Options (default):
  --tokenizer FILE.json    Hugging Face tokenizer.json matching the encoder, or a BERT vocab.txt
                           (with the tokenizer_config.json beside it); default the model folder's
                           own tokenizer.json or vocab.txt; required with a .pt file
  --text-column NAME       text column (text)
  --label-column NAME      label column (label); integer ids or class names
  --validation-data FILE   validation CSV instead of splitting --data (repeatable)
  --validation-split X     share of --data held out, stratified (${DEFAULTS.validationSplit})
  --epochs N               (${DEFAULTS.epochs})
  --batch-size N           (${DEFAULTS.batchSize})
  --max-length N           tokens per text incl. special tokens (${DEFAULTS.maxLength}; a model
                           folder's model_max_length within its position table)
  --lr X                   AdamW learning rate (${DEFAULTS.learningRate})
  --weight-decay X         AdamW weight decay (${DEFAULTS.weightDecay})
  --head-hidden N          head hidden width (${DEFAULTS.headHidden})
  --dropout X              head dropout (${DEFAULTS.dropout})
  --pooling cls|mean       (${DEFAULTS.pooling})
  --head mlp|sequence-classification|prompt
                           the head (${DEFAULTS.head}); sequence-classification: transformers' own head
                           of the encoder's family, exported whole by torch-bert export; prompt:
                           LM-BFF through the checkpoint's MLM head (--template, --verbalizer;
                           frozen trains the MLM head's transform only)
  --template T             head prompt: e.g. "{text} It was [MASK]." ({text_a}/{text_b} for pairs)
  --verbalizer LABEL=WORD  head prompt: one per class, each word one token (repeatable)
  --few-shot K             train on K examples per class drawn with the seed; validate on
                           --validation-data or at most 500 other examples per class
  --text-pair-column NAME  the second text ({text_b}) of each example
  --max-grad-norm X        gradient clipping, 0 = off (${DEFAULTS.maxGradNorm})
  --technique T            frozen | full | lora | adapter (${DEFAULTS.technique})
  --encoder-lr X           encoder learning rate with --technique full (--lr)
  --freeze PREFIX          full: keep encoder parameters whose names start with PREFIX frozen,
                           e.g. embeddings. or encoder.layer.0. (repeatable)
  --lora-rank N            LoRA rank (8)
  --lora-alpha X           LoRA alpha; the update is (alpha/rank)·B·A (16)
  --lora-dropout X         dropout on the adapter path (0)
  --lora-targets A,B       module path suffixes to adapt (attention.self.query,attention.self.value;
                           a DistilBERT folder's attention.q_lin,attention.v_lin)
  --adapter-config C       adapter: houlsby (after attention and feed-forward) | pfeiffer
                           (feed-forward only) (houlsby)
  --adapter-size N         adapter bottleneck width (64)
  --adapter-reduction-factor X  adapter width as hidden / X, instead of --adapter-size
  --adapter-activation A   relu | gelu | swish (swish for houlsby, relu for pfeiffer)
  --adapter-train-layernorm  adapter: train the encoder's LayerNorms too
  --feature-cache C        frozen: memory | disk | none (recompute every epoch) (${DEFAULTS.featureCache})
  --cache-dir DIR          on-disk feature cache (${DEFAULTS.featureCacheDir})
  --schedule S             constant | linear (${DEFAULTS.schedule})
  --warmup-ratio X         share of steps warming the learning rate up (${DEFAULTS.warmupRatio})
  --grad-accum N           batches per optimizer step (${DEFAULTS.gradientAccumulationSteps})
  --class-weights W        balanced, or one weight per class: 1,2.5
  --label-smoothing X      (${DEFAULTS.labelSmoothing})
  --padding P              longest (per batch) | max (${DEFAULTS.padding})
  --group-by-length        batch texts of similar length together
  --eval-every N           also evaluate every N optimizer steps (each epoch)
  --best-metric M          loss | accuracy | macroF1 picks the checkpoint (${DEFAULTS.bestMetric})
  --early-stopping N       stop after N evaluations without improvement (off)
  --resume DIR             continue the interrupted run whose --out was DIR
  --on-non-finite P        stop | skip a NaN/Inf step (${DEFAULTS.onNonFinite})
  --report                 write DIR/report.html (curves, confusion matrix, settings)
  --seed N                 (${DEFAULTS.seed})
  --device auto|cpu|cuda|cuda:N  (${DEFAULTS.device})
  --precision P            fp32 | bf16 | fp16 (CUDA only; loss scaling) (${DEFAULTS.precision})
  --threads N              libtorch intra-op threads (distributed: cores / processes per node)
  --nproc-per-node N       data-parallel: start N worker processes on this machine (Gloo), batch per process
  --distributed-timeout S  seconds a rank waits for the others before failing (${DEFAULTS.distributedTimeout})
  --json                   print one JSON object instead of tables`,
  eval: `torch-bert eval — loss and accuracy of a saved classifier, or of a zero-shot prompt, on labelled data

  --classifier DIR         directory written by 'torch-bert train'
${BASE_HELP}
${PROMPT_HELP}
  --data FILE.csv          labelled data (repeatable: files read as one)
  --text-column NAME       (the one the classifier was trained on, else text)
  --label-column NAME      (the one the classifier was trained on, else label)
  --text-pair-column NAME  the second text, for a template with {text_a} and {text_b}
  --batch-size N           (32)
  --device auto|cpu|cuda|cuda:N  (auto)
  --json                   print one JSON object`,
  predict: `torch-bert predict — classify texts with a saved classifier, or zero-shot with a prompt

  torch-bert predict --classifier DIR [--json] TEXT...
  torch-bert predict --classifier DIR [--json] --data FILE.csv [--text-column NAME]
  torch-bert predict --model M --template T --verbalizer LABEL=WORD... [--json] TEXT...
${BASE_HELP}
${PROMPT_HELP}
  --data FILE.csv          the texts instead of TEXT... (repeatable: files read as one; a label
                           column, if any, is ignored)
  --text-column NAME       (the one the classifier was trained on, else text)
  --text-pair-column NAME  with --data: the second text ({text_b}) of each example (the one the
                           classifier was trained on)
  --batch-size N           (32)
  --device auto|cpu|cuda|cuda:N  (auto)
  --json                   one JSON object per line: {"text","label","probabilities"}`,
  export: `torch-bert export — a saved classifier as a Hugging Face model folder (AutoModel.from_pretrained)

Writes config.json (with id2label and a torch_bert block describing the head), model.safetensors
(the encoder's trained weights; LoRA merged), tokenizer.json + tokenizer_config.json, the head in
torch_bert_head.safetensors, and for a LoRA classifier its adapters in PEFT's format in adapter/.
A classifier trained with --head sequence-classification exports whole instead
(AutoModelForSequenceClassification.from_pretrained): its head is in model.safetensors.
One trained with --head prompt exports as a *ForMaskedLM folder (AutoModelForMaskedLM): the
base model folder's decoder with the label words' trained rows (that folder must still be
there), the template and verbalizer in config.json's torch_bert.prompt; no head file.

  --classifier DIR         directory written by 'torch-bert train'
  --out HF_DIR             the folder to write (new, or empty)
  --heads N                attention heads of the encoder, when the classifier does not record
                           its encoder's config.json (one trained on a TorchScript file)
  --format hf|adapterhub   (hf) adapterhub: a --technique adapter classifier's bottleneck adapters
                           for AdapterHub's load_adapter (adapter_config.json, pytorch_adapter.bin;
                           the head as head_config.json + pytorch_model_head.bin where AdapterHub's
                           classification head computes the same), on the base model
  --name NAME              (torch_bert) the adapter's name in AdapterHub's keys (--format adapterhub)
  --json                   print one JSON object: the folder, the family and the files written`,
  demo: `torch-bert demo — the whole job on embedded data, no download

Builds the small BERT shipped as a Hugging Face folder (assets/demo/encoder; its features were
made informative by a short supervised pass on a separate pre-training set), runs the seed's
frozen-encoder job on assets/demo/reviews.csv, saves the classifier and predicts a few
sentences. No download, no Python.

  --out DIR                working directory (./torch-bert-demo)
  --json                   print one JSON object instead of tables`,
  pretrain: `torch-bert pretrain — continued masked-language-model pretraining (run_mlm.py's job)

Writes DIR as a Hugging Face *ForMaskedLM folder (config.json, model.safetensors, tokenizer
files) with the weights of the lowest held-out masked-LM loss, plus encoder.pt (TorchScript);
DIR works as --model for train and pretrain.

Required:
  --model MODEL            a Hugging Face model folder or Hub id (BERT, RoBERTa, DistilBERT); a
                           checkpoint without an MLM head gets one initialised as transformers does
  --data FILE              text (one document per non-blank line) or CSV (--text-column);
                           repeatable, read as one
  --out DIR                the pretrained model folder; a DIR an unfinished run left its
                           training state in is refused without --resume DIR: delete
                           DIR/training-state to start over
Options (default):
  --text-column NAME       CSV text column (text)
  --line-by-line           one text per row, truncated to --max-length (default: texts
                           concatenated and cut into blocks of --max-length, run_mlm.py's group_texts)
  --whole-word-mask        mask all pieces of a word together
  --mlm-probability P      share of tokens predicted (${PRETRAIN_DEFAULTS.mlmProbability}): 80% [MASK], 10% random, 10% kept
  --validation-split X     share of the texts held out, the first ones (${PRETRAIN_DEFAULTS.validationSplit})
  --epochs N               (${PRETRAIN_DEFAULTS.epochs})
  --batch-size N           (${PRETRAIN_DEFAULTS.batchSize})
  --max-length N           tokens per block or text (the model's model_max_length)
  --lr X                   AdamW learning rate (${PRETRAIN_DEFAULTS.learningRate})
  --weight-decay X         (${DEFAULTS.weightDecay})
  --schedule S             constant | linear (${PRETRAIN_DEFAULTS.schedule})
  --warmup-ratio X         (${DEFAULTS.warmupRatio})
  --grad-accum N           batches per optimizer step (${DEFAULTS.gradientAccumulationSteps})
  --max-grad-norm X        (${DEFAULTS.maxGradNorm})
  --eval-every N           also evaluate every N optimizer steps (each epoch)
  --early-stopping N       stop after N evaluations without improvement (off)
  --resume DIR             continue the interrupted run whose --out was DIR
  --on-non-finite P        stop | skip (${DEFAULTS.onNonFinite})
  --tokenizer FILE.json    (the model folder's)
  --seed N                 (${DEFAULTS.seed})
  --device auto|cpu|cuda|cuda:N  (${DEFAULTS.device})
  --precision P            fp32 | bf16 | fp16 (${DEFAULTS.precision})
  --threads N              libtorch intra-op threads (distributed: cores / processes per node)
  --nproc-per-node N       data-parallel: start N worker processes on this machine (Gloo), batch per process
  --distributed-timeout S  seconds a rank waits for the others before failing (${DEFAULTS.distributedTimeout})
  --json                   print one JSON object instead of tables`,
  doctor: `torch-bert doctor — the libtorch found, the binary loaded, CUDA, BLAS and threads (for bug reports)

  --json                   print one JSON object`,
};

/**
 * A flag's number, written in decimal (3, -1, 0.5, 5e-5; spaces around it are dropped), else
 * undefined. Number() alone would also read '0x10' as 16, '0b11' as 3 and '' (a weight in '1,,2') as 0.
 */
function decimal(raw: string): number | undefined {
  const n = Number(raw);
  return /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(raw.trim()) && Number.isFinite(n) ? n : undefined;
}

/** A numeric flag's value; whether it is in the option's range is the option's own check (options.ts). */
function numberOption(values: Record<string, unknown>, name: string): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = typeof raw === 'string' ? decimal(raw) : undefined;
  if (n === undefined) throw new UsageError(`--${name} expects a number; got '${String(raw)}'`);
  return n;
}

function classWeightsOption(raw: unknown): TrainOptions['classWeights'] {
  if (raw === undefined) return undefined;
  if (raw === 'balanced') return 'balanced';
  const weights = String(raw).split(',').map(decimal);
  if (weights.some((w) => w === undefined))
    throw new UsageError(`--class-weights expects 'balanced' or numbers like 1,2.5; got '${String(raw)}'`);
  return weights as number[];
}

/** A repeatable file option (`--data a.csv --data b.csv`): one path, or several read as one. */
function requireFiles(values: Record<string, unknown>, name: string, command: string): string | string[] {
  const v = values[name];
  if (!Array.isArray(v) || v.length === 0) throw new UsageError(`${command}: --${name} is required (see 'torch-bert ${command} --help')`);
  return v.length === 1 ? (v[0] as string) : (v as string[]);
}

function requireOption(values: Record<string, unknown>, name: string, command: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v.length === 0)
    throw new UsageError(`${command}: --${name} is required (see 'torch-bert ${command} --help')`);
  return v;
}

/** --out, which `--resume DIR` alone may leave out: the resumed run goes on writing in DIR. */
function outDirOption(values: Record<string, unknown>, command: string): string {
  const resume = values.resume;
  return typeof resume === 'string' && resume !== '' && values.out === undefined ? resume : requireOption(values, 'out', command);
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(0)}s`;
  return `${Math.floor(s / 60)}m${Math.round(s % 60)
    .toString()
    .padStart(2, '0')}s`;
}

/** Whether a progress line is drawn: on a terminal (stderr), unless the output is JSON (`enabled` false). */
function liveProgress(enabled: boolean): boolean {
  return enabled && process.stderr.isTTY === true;
}

/** `[####----]`: `fraction` of 24 places filled. */
function progressBar(fraction: number): string {
  const width = 24;
  const filled = Math.round(fraction * width);
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
}

/** A one-line progress bar redrawn in place on a terminal; silent otherwise. */
function progressPrinter(enabled: boolean, showEvaluations = false): (e: ProgressEvent) => void {
  const live = liveProgress(enabled);
  return (e) => {
    if (e.type === 'encode') {
      if (live)
        process.stderr.write(
          `\rencoding ${e.split} once (frozen encoder): ${e.done}/${e.total}${e.fromCache ? ' (from the disk cache)' : ''}   `,
        );
      if (live && e.done === e.total) process.stderr.write('\n');
      return;
    }
    if (e.type === 'evaluation') {
      if (!enabled || !showEvaluations) return;
      if (live) process.stderr.write('\r\x1b[K');
      process.stderr.write(
        `evaluation at step ${e.step}: validation loss ${e.validationLoss.toFixed(4)} acc ${(100 * e.validationAccuracy).toFixed(2)}%` +
          ` macro-F1 ${e.validationMacroF1.toFixed(4)}${e.isBest ? ' | best, saved' : ''}\n`,
      );
      return;
    }
    // The deprecated twin of each 'batch' event. Downloads: drawn ahead, by fetchModelWithProgress.
    if (e.type === 'step' || e.type === 'download') return;
    if (e.type === 'batch') {
      if (!live) return;
      process.stderr.write(
        `\repoch ${e.epoch} ${progressBar(e.batch / e.batchesPerEpoch)} batch ${e.batch}/${e.batchesPerEpoch}` +
          `  loss ${e.epochLoss.toFixed(4)}  ${e.examplesPerSecond.toFixed(1)} ex/s  ETA ${formatSeconds(e.etaSeconds)}   `,
      );
    } else {
      if (live) process.stderr.write('\r\x1b[K');
      if (enabled) {
        process.stderr.write(
          `epoch ${e.epoch}/${e.epochs}: train loss ${e.trainLoss.toFixed(4)} acc ${(100 * e.trainAccuracy).toFixed(2)}%` +
            ` | validation loss ${e.validationLoss.toFixed(4)} acc ${(100 * e.validationAccuracy).toFixed(2)}%` +
            ` | ${formatSeconds(e.seconds)}${e.isBest ? ' | best, saved' : ''}\n`,
        );
      }
    }
  };
}

/**
 * eval's and predict --data's progress bar (texts predicted, texts/s, ETA), redrawn in place on a
 * terminal as train's; silent otherwise. The rate counts from the first batch's end: before it,
 * the texts were read and measured.
 */
function predictPrinter(enabled: boolean): (e: PredictEvent) => void {
  const live = liveProgress(enabled);
  let first: { done: number; at: number } | undefined;
  return (e) => {
    if (!live) return;
    const now = performance.now();
    first ??= { done: e.done, at: now };
    const perSecond = (e.done - first.done) / ((now - first.at) / 1000);
    process.stderr.write(
      `\rpredicting ${progressBar(e.done / e.total)} ${e.done}/${e.total} texts` +
        `  ${perSecond > 0 ? `${perSecond.toFixed(1)} texts/s  ` : ''}ETA ${formatSeconds((e.total - e.done) / perSecond)}   `,
    );
    if (e.done === e.total) process.stderr.write('\n');
  };
}

/**
 * Columns right-aligned to their widest cell, but the last: left-aligned and not padded, so that
 * one long cell there (a text) widens no other row.
 */
function table(headers: string[], rows: string[][]): string {
  const last = headers.length - 1;
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === last ? c : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** A text as a table shows it: on one line (whitespace runs as one space), cut at `max` characters with an ellipsis. */
function textCell(text: string, max = 72): string {
  const oneLine = text.replace(/\s+/g, ' ').trim();
  const chars = Array.from(oneLine); // code points: an emoji is not cut in half
  return chars.length <= max ? oneLine : `${chars.slice(0, max - 1).join('')}…`;
}

/** Each text's predicted label and its probability. The texts whole are --json's: a table line per text, each short enough to read. */
function predictionTable(predictions: Prediction[], texts: readonly string[]): string {
  return table(
    ['label', 'probability', 'text'],
    predictions.map((p, i) => [p.label, p.probabilities[p.label]!.toFixed(4), textCell(texts[i]!)]),
  );
}

function historyTable(history: EpochMetrics[]): string {
  return table(
    ['epoch', 'train loss', 'train acc', 'val loss', 'val acc', 'val macro-F1', 'time', 'best'],
    history.map((h) => [
      String(h.epoch),
      h.trainLoss.toFixed(4),
      `${(100 * h.trainAccuracy).toFixed(2)}%`,
      h.validationLoss.toFixed(4),
      `${(100 * h.validationAccuracy).toFixed(2)}%`,
      h.validationMacroF1.toFixed(4),
      formatSeconds(h.seconds),
      h.isBest ? '*' : '',
    ]),
  );
}

/**
 * Ctrl-C / SIGTERM stop training at the next step boundary; a second one exits at once. In a
 * data-parallel job rank 0 alone says so (quietWorker): Ctrl-C reaches every worker, and the ranks
 * stop at the same step boundary.
 */
function interruptController(): AbortController {
  const controller = new AbortController();
  const say = (text: string) => {
    if (!quietWorker()) process.stderr.write(text);
  };
  const onSignal = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) process.exit(130);
    say(`\n${sig}: stopping after the current step (again to quit now)\n`);
    controller.abort(new AbortError(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A worker of --nproc-per-node: its launcher's request to stop (launcher.ts STOP_SIGNAL) stops it
  // once and never escalates, since the terminal's Ctrl-C may have reached this worker already.
  const onStop = () => {
    if (controller.signal.aborted) return;
    // Asked after a signal to the launcher, or after another worker failed (launcher.ts).
    say('\nthe launcher asked the workers to stop: stopping after the current step\n');
    controller.abort(new AbortError('interrupted: the launcher asked the workers to stop'));
  };
  if (process.env.RANK !== undefined) process.on(STOP_SIGNAL, onStop);
  if (stopCameEarly) onStop();
  return controller;
}

/**
 * Whether a launcher's stop (launcher.ts STOP_SIGNAL) came before the run's interruptController
 * existed. A worker hears it from its start, and tells its launcher so (which holds a stop back
 * until then): the signal's default action ended a worker still setting up, before it could hand
 * over its own error (the same set-up error on every rank is said once only when every worker
 * hands it over: launcher.ts workerErrorLines).
 */
let stopCameEarly = false;
if (process.env.RANK !== undefined) {
  process.on(STOP_SIGNAL, () => {
    stopCameEarly = true;
  });
  tellLauncherListening();
}

/**
 * `--nproc-per-node N` (N > 1) on the launcher (not on a worker started by it or by torchrun,
 * which have RANK set): starts the workers of `command` (lib/launcher.ts) and waits for them.
 * True when it did, and the command has nothing left to do.
 */
async function launchedWorkers(command: string, values: Record<string, unknown>, argv: string[]): Promise<boolean> {
  const nproc = numberOption(values, 'nproc-per-node');
  if (nproc !== undefined && (!Number.isInteger(nproc) || nproc < 1))
    throw new UsageError(`--nproc-per-node expects an integer ≥ 1; got ${nproc}`);
  if (nproc === undefined || nproc === 1 || process.env.RANK !== undefined) return false;
  const timeout = numberOption(values, 'distributed-timeout') ?? DEFAULTS.distributedTimeout;
  const end = await launchWorkers(nproc, process.argv[1]!, [command, ...withoutNproc(argv)], stopGrace(timeout));
  if (end.code !== 0) throw new WorkersFailed(end.code, end.failure, end.errors, end.killed);
  return true;
}

/** A worker of a data-parallel job other than rank 0 prints nothing of its own (rank 0 reports). */
function quietWorker(): boolean {
  return process.env.RANK !== undefined && process.env.RANK !== '0';
}

/**
 * --model, when it is a Hub id, downloaded ahead with a progress bar per file if stderr is a
 * terminal: a large model would leave the terminal still for minutes, and of the library's calls
 * only train() and pretrain() report a download (to onProgress). The run then finds it in the
 * cache without a request. In a pipe, or on a worker other than rank 0, nothing is done here.
 */
async function fetchModelWithProgress(values: Record<string, unknown>): Promise<void> {
  // A bar ends its line only when its file is complete: what was last written tells whether a
  // failed download left one open, for the error to go on a line of its own.
  let lineOpen = false;
  const stderr = process.stderr;
  const write = (text: string) => {
    lineOpen = !text.endsWith('\n');
    return stderr.write(text);
  };
  const onProgress = quietWorker() ? undefined : terminalProgress({ isTTY: stderr.isTTY, columns: stderr.columns, write });
  if (onProgress === undefined || typeof values.model !== 'string') return;
  try {
    await resolveModelSource(values.model, { tokenizer: values.tokenizer === undefined, onProgress });
  } catch (err) {
    if (lineOpen) stderr.write('\n');
    throw err;
  }
}

/** `--data` or `--validation-data`: its files, read by the columns `--text-column` and `--label-column` name. */
function csvOption(values: Record<string, unknown>, name: string): CsvSource {
  return {
    csv: requireFiles(values, name, 'train'),
    textColumn: values['text-column'] as string | undefined,
    labelColumn: values['label-column'] as string | undefined,
  };
}

/**
 * train()'s options from `torch-bert train`'s flags. A flat table, flag by flag, kept whole so
 * that a flag is found by reading down it.
 */
function trainOptionsFrom(values: Record<string, unknown>, json: boolean, signal: AbortSignal): TrainOptions {
  return {
    data: csvOption(values, 'data'),
    validationData: values['validation-data'] ? csvOption(values, 'validation-data') : undefined,
    encoder: requireOption(values, 'model', 'train'),
    tokenizer: values.tokenizer as string | undefined,
    outDir: outDirOption(values, 'train'),
    epochs: numberOption(values, 'epochs'),
    batchSize: numberOption(values, 'batch-size'),
    maxLength: numberOption(values, 'max-length'),
    learningRate: numberOption(values, 'lr'),
    weightDecay: numberOption(values, 'weight-decay'),
    validationSplit: numberOption(values, 'validation-split'),
    headHidden: numberOption(values, 'head-hidden'),
    dropout: numberOption(values, 'dropout'),
    pooling: values.pooling as 'cls' | 'mean' | undefined,
    head: values.head as HeadKind | undefined,
    template: values.template as string | undefined,
    verbalizer: values.verbalizer as string[] | undefined,
    fewShot: numberOption(values, 'few-shot'),
    textPairColumn: values['text-pair-column'] as string | undefined,
    maxGradNorm: numberOption(values, 'max-grad-norm'),
    seed: numberOption(values, 'seed'),
    device: values.device as Device | undefined,
    precision: values.precision as TrainOptions['precision'],
    threads: numberOption(values, 'threads'),
    distributedTimeout: numberOption(values, 'distributed-timeout'),
    technique: values.technique as TrainOptions['technique'],
    encoderLearningRate: numberOption(values, 'encoder-lr'),
    freeze: values.freeze as string[] | undefined,
    lora: {
      rank: numberOption(values, 'lora-rank'),
      alpha: numberOption(values, 'lora-alpha'),
      dropout: numberOption(values, 'lora-dropout'),
      targets: typeof values['lora-targets'] === 'string' ? values['lora-targets'].split(',').map((t) => t.trim()) : undefined,
    },
    adapter: {
      config: values['adapter-config'] as AdapterConfig | undefined,
      size: numberOption(values, 'adapter-size'),
      reductionFactor: numberOption(values, 'adapter-reduction-factor'),
      activation: values['adapter-activation'] as AdapterActivation | undefined,
      trainLayerNorm: values['adapter-train-layernorm'] as boolean | undefined,
    },
    featureCache: values['feature-cache'] as TrainOptions['featureCache'],
    featureCacheDir: values['cache-dir'] as string | undefined,
    schedule: values.schedule as TrainOptions['schedule'],
    warmupRatio: numberOption(values, 'warmup-ratio'),
    gradientAccumulationSteps: numberOption(values, 'grad-accum'),
    classWeights: classWeightsOption(values['class-weights']),
    labelSmoothing: numberOption(values, 'label-smoothing'),
    padding: values.padding as TrainOptions['padding'],
    groupByLength: values['group-by-length'] as boolean | undefined,
    evaluateEvery: numberOption(values, 'eval-every'),
    bestMetric: values['best-metric'] as TrainOptions['bestMetric'],
    earlyStoppingPatience: numberOption(values, 'early-stopping'),
    resumeFrom: values.resume as string | undefined,
    onNonFinite: values['on-non-finite'] as TrainOptions['onNonFinite'],
    report: values.report as boolean | undefined,
    onProgress: progressPrinter(!json, values['eval-every'] !== undefined),
    signal,
  };
}

/** What `torch-bert train` prints of its result: one JSON object, or the tables for people. */
function printTrainResult(result: TrainResult, json: boolean, report: boolean): void {
  if (json) {
    console.log(
      JSON.stringify({
        outDir: result.outDir,
        labels: result.labels,
        best: result.best,
        history: result.history,
        encoder: result.encoder,
        technique: result.technique,
        trainableParameters: result.trainableParameters,
        totalParameters: result.totalParameters,
        trainableEncoderFraction: result.trainableEncoderFraction,
        unusedParameters: result.unusedParameters,
        frozenParameters: result.frozenParameters,
        notes: result.notes,
        trainExamples: result.trainExamples,
        validationExamples: result.validationExamples,
        stoppedEarly: result.stoppedEarly,
        metrics: result.metrics,
        evaluations: result.evaluations,
      }),
    );
  } else {
    console.log(
      `${result.technique}: ${result.trainableParameters.toLocaleString('en-US')} trainable of ${result.totalParameters.toLocaleString('en-US')} parameters` +
        (result.technique === 'lora' || result.technique === 'adapter'
          ? ` (adapters: ${(100 * result.trainableEncoderFraction).toFixed(2)}% of the encoder)`
          : ''),
    );
    if (result.unusedParameters.length > 0) {
      console.log(`not used by this task (frozen): ${result.unusedParameters.join(', ')}`);
    }
    if (result.frozenParameters.length > 0) console.log(`frozen by --freeze: ${result.frozenParameters.length} encoder parameters`);
    for (const note of result.notes) console.log(`note: ${note}`);
    console.log(historyTable(result.history));
    if (result.stoppedEarly) console.log('(stopped early: no improvement)');
    console.log(`\nvalidation metrics of the kept weights (epoch ${result.best.epoch}):\n${formatMetricsTable(result.metrics)}`);
    console.log(`\nsaved to ${result.outDir}${report ? ` (report: ${join(result.outDir!, 'report.html')})` : ''}`);
  }
}

/**
 * node's parseArgs for `torch-bert COMMAND`, but a flag the command does not have is refused
 * naming the flag probably meant, as train()'s option names are, and the command's --help: node
 * says only "Unknown option '--epoch'".
 */
function parseCommandArgs<T extends ParseArgsConfig>(command: string, config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (err) {
    if ((err as { code?: string }).code !== 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw err;
    const flag = /^Unknown option '([^']*)'/.exec(messageOf(err))?.[1];
    if (flag === undefined) throw err;
    const meant = likelyMeant(
      flag,
      Object.keys(config.options ?? {}).map((name) => `--${name}`),
    );
    // predict's TEXTs: one that starts with '-' reads as a flag unless it comes after '--'.
    const asText = config.allowPositionals ? `; a TEXT that starts with '-' goes after '--' (-- "${flag}")` : '';
    throw new UsageError(
      `${command}: unknown option '${flag}'${meant ? `: did you mean '${meant}'?` : ''}${asText} (see 'torch-bert ${command} --help')`,
    );
  }
}

async function commandTrain(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('train', { args: argv, options: TRAIN_OPTIONS, strict: true });
  if (values.help) return void console.log(HELP.train);
  await fetchModelWithProgress(values);
  if (await launchedWorkers('train', values, argv)) return;
  const json = Boolean(values.json);
  const result = await train(trainOptionsFrom(values, json, interruptController().signal));
  result.classifier.dispose();
  if (!quietWorker()) printTrainResult(result, json, Boolean(values.report));
}

/** --classifier DIR, or a zero-shot prompt classifier from --model, --template and --verbalizer. */
async function openClassifier(values: Record<string, unknown>, command: string): Promise<Classifier> {
  const device = values.device as Device | undefined;
  if (values.model === undefined) {
    const dir = requireOption(values, 'classifier', command);
    for (const flag of ['template', 'verbalizer']) {
      if (values[flag] !== undefined)
        throw new UsageError(`${command}: --${flag} goes with --model (a zero-shot prompt), not --classifier`);
    }
    const allowOtherBase = values['allow-other-base'] as boolean | undefined;
    if (allowOtherBase && values.base === undefined) throw new UsageError(`${command}: --allow-other-base goes with --base`);
    if (values.base !== undefined) return Classifier.loadAdapters(dir, { encoder: values.base as string, device, allowOtherBase });
    return Classifier.load(dir, { device });
  }
  if (values.classifier !== undefined) throw new UsageError(`${command}: give --classifier or --model, not both`);
  if (values.base !== undefined) throw new UsageError(`${command}: --base goes with --classifier (a lora or adapter run), not --model`);
  const template = values.template as string | undefined;
  const verbalizer = values.verbalizer as string[] | undefined;
  if (template === undefined || verbalizer === undefined) {
    throw new UsageError(
      `${command}: --model needs --template and --verbalizer LABEL=WORD (one per class; see 'torch-bert ${command} --help')`,
    );
  }
  await fetchModelWithProgress(values);
  return promptClassifier({
    model: values.model as string,
    template,
    verbalizer,
    maxLength: numberOption(values, 'max-length'),
    tokenizer: values.tokenizer as string | undefined,
    device,
  });
}

async function commandEval(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('eval', {
    args: argv,
    options: {
      ...PROMPT_OPTIONS,
      'text-pair-column': { type: 'string' },
      classifier: { type: 'string' },
      base: { type: 'string' },
      'allow-other-base': { type: 'boolean' },
      data: { type: 'string', multiple: true },
      'text-column': { type: 'string' },
      'label-column': { type: 'string' },
      'batch-size': { type: 'string' },
      device: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) return void console.log(HELP.eval);
  const data = requireFiles(values, 'data', 'eval');
  const classifier = await openClassifier(values, 'eval');
  try {
    const result = await classifier.evaluate(
      { csv: data, textColumn: values['text-column'], labelColumn: values['label-column'], textPairColumn: values['text-pair-column'] },
      { batchSize: numberOption(values, 'batch-size'), onProgress: predictPrinter(!values.json) },
    );
    if (values.json) {
      console.log(JSON.stringify({ loss: result.loss, accuracy: result.accuracy, examples: result.examples, metrics: result.metrics }));
    } else {
      console.log(`examples ${result.examples}, loss ${result.loss.toFixed(4)}\n${formatMetricsTable(result.metrics)}`);
    }
  } finally {
    classifier.dispose();
  }
}

/**
 * predict --data's texts: its --text-column, else the column the classifier was trained on, else
 * `text`; and their second texts, from --text-pair-column, else the classifier's pair column.
 */
async function textsOf(values: Record<string, unknown>, classifier: Classifier): Promise<{ texts: string[]; pairs?: string[] }> {
  const csv = requireFiles(values, 'data', 'predict');
  const textColumn = (values['text-column'] as string | undefined) ?? classifier.config.textColumn;
  const textPairColumn = (values['text-pair-column'] as string | undefined) ?? classifier.config.textPairColumn;
  return loadExamples({ csv, textColumn, textPairColumn }, { labelsRequired: false });
}

async function commandPredict(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs('predict', {
    args: argv,
    options: {
      ...PROMPT_OPTIONS,
      classifier: { type: 'string' },
      base: { type: 'string' },
      'allow-other-base': { type: 'boolean' },
      data: { type: 'string', multiple: true },
      'text-column': { type: 'string' },
      'text-pair-column': { type: 'string' },
      'batch-size': { type: 'string' },
      device: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) return void console.log(HELP.predict);
  if ((positionals.length === 0) === (values.data === undefined))
    throw new UsageError("predict: give at least one TEXT, or --data FILE.csv, not both (see 'torch-bert predict --help')");
  if (values['text-pair-column'] !== undefined && values.data === undefined)
    throw new UsageError('predict: --text-pair-column goes with --data (a TEXT argument is one text)');
  const classifier = await openClassifier(values, 'predict');
  try {
    const { texts, pairs } = values.data ? await textsOf(values, classifier) : { texts: positionals, pairs: undefined };
    const predictions = await classifier.predict(texts, {
      pairs,
      batchSize: numberOption(values, 'batch-size'),
      // Given as TEXT, the texts are few: their predictions come at once.
      onProgress: values.data ? predictPrinter(!values.json) : undefined,
    });
    if (values.json) {
      predictions.forEach((p, i) => {
        console.log(JSON.stringify({ text: texts[i], label: p.label, probabilities: p.probabilities }));
      });
    } else {
      console.log(predictionTable(predictions, texts));
    }
  } finally {
    classifier.dispose();
  }
}

async function commandExport(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('export', {
    args: argv,
    options: {
      classifier: { type: 'string' },
      out: { type: 'string' },
      heads: { type: 'string' },
      format: { type: 'string' },
      name: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) return void console.log(HELP.export);
  const classifier = requireOption(values, 'classifier', 'export');
  const out = requireOption(values, 'out', 'export');
  const format = values.format ?? 'hf';
  if (format !== 'hf' && format !== 'adapterhub') throw new UsageError(`export: --format must be hf or adapterhub; got '${format}'`);
  if (format === 'adapterhub') {
    if (values.heads !== undefined)
      throw new UsageError("export: --heads goes with --format hf (AdapterHub's files do not hold the architecture)");
    printAdapterHubExport(await exportAdapterHub({ classifier, out, name: values.name }), classifier, Boolean(values.json));
    return;
  }
  if (values.name !== undefined) throw new UsageError('export: --name goes with --format adapterhub');
  printHuggingFaceExport(
    await exportHuggingFace({ classifier, out, heads: numberOption(values, 'heads') }),
    classifier,
    Boolean(values.json),
  );
}

/** What `torch-bert export --format adapterhub` prints: one JSON object, or the files and notes for people. */
function printAdapterHubExport(result: AdapterHubExportResult, classifier: string, json: boolean): void {
  if (json) {
    console.log(
      JSON.stringify({
        out: result.out,
        family: result.family,
        name: result.name,
        files: result.files,
        head: result.head,
        notes: result.notes,
      }),
    );
    return;
  }
  console.log(
    `exported the adapters of ${classifier} in AdapterHub's format (adapter '${result.name}', ${result.family}) to ${result.out}:`,
  );
  for (const f of result.files) console.log(`  ${f}`);
  for (const n of result.notes) console.log(`note: ${n}`);
}

/** What `torch-bert export` prints of a Hugging Face folder: one JSON object, or the files and assumptions for people. */
function printHuggingFaceExport(result: ExportResult, classifier: string, json: boolean): void {
  if (json) {
    console.log(
      JSON.stringify({ out: result.out, family: result.family, files: result.files, assumed: result.assumed, adapter: result.adapter }),
    );
    return;
  }
  console.log(`exported ${classifier} as a Hugging Face ${result.family} model to ${result.out}:`);
  for (const f of result.files) console.log(`  ${f}`);
  if (result.assumed.length) console.log(`assumed (family defaults; nothing recorded them): ${result.assumed.join(', ')}`);
}

/**
 * The demo's training run (the seed's job on the shipped reviews and small BERT) into
 * `classifierDir`, saying what it does and, for people, how it went. `log` is silent with --json.
 */
async function trainDemo(classifierDir: string, json: boolean, log: (s: string) => void): Promise<TrainResult> {
  const assets = demoAssets();
  log(
    `demo: data ${assets.reviews}, encoder ${assets.encoder} (a small BERT shipped as a Hugging Face folder), tokenizer ${assets.tokenizer}`,
  );
  log(`demo: the seed's job — frozen encoder + Linear-ReLU-Dropout-Linear head, AdamW, best by validation loss`);
  const result = await train({
    ...DEMO_TRAINING,
    data: assets.reviews,
    encoder: assets.encoder,
    tokenizer: assets.tokenizer,
    outDir: classifierDir,
    onProgress: progressPrinter(!json),
    signal: interruptController().signal,
  });
  result.classifier.dispose();
  log('\n' + historyTable(result.history));
  log(`\nvalidation metrics of the kept weights:\n${formatMetricsTable(result.metrics)}`);
  log(`\nsaved the best classifier (epoch ${result.best.epoch}) to ${classifierDir}; reloading it to predict:`);
  return result;
}

async function commandDemo(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('demo', {
    args: argv,
    options: { out: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) return void console.log(HELP.demo);
  const json = Boolean(values.json);
  const classifierDir = join(values.out ?? 'torch-bert-demo', 'classifier');
  const log = (s: string) => {
    if (!json) console.log(s);
  };
  const result = await trainDemo(classifierDir, json, log);
  const classifier = await Classifier.load(classifierDir);
  try {
    const predictions = await classifier.predict(DEMO_SENTENCES);
    if (json) {
      console.log(
        JSON.stringify({
          best: result.best,
          history: result.history,
          classifierDir,
          predictions: predictions.map((p, i) => ({ text: DEMO_SENTENCES[i], ...p })),
        }),
      );
    } else {
      console.log(predictionTable(predictions, DEMO_SENTENCES));
      // npx runs the installed package's bin, and in a checkout the package's own: a path to
      // dist/cli.js would hold only in a checkout's root.
      console.log(`\nnext: npx torch-bert predict --classifier ${classifierDir} "your sentence"`);
    }
  } finally {
    classifier.dispose();
  }
}

const PRETRAIN_OPTIONS: Options = {
  ...Object.fromEntries(
    [
      'data',
      'model',
      'tokenizer',
      'out',
      'text-column',
      'epochs',
      'batch-size',
      'max-length',
      'lr',
      'weight-decay',
      'validation-split',
      'max-grad-norm',
      'seed',
      'device',
      'precision',
      'threads',
      'nproc-per-node',
      'distributed-timeout',
      'schedule',
      'warmup-ratio',
      'grad-accum',
      'eval-every',
      'early-stopping',
      'resume',
      'on-non-finite',
      'json',
      'help',
    ].map((name) => [name, TRAIN_OPTIONS[name]!]),
  ),
  'line-by-line': { type: 'boolean' },
  'whole-word-mask': { type: 'boolean' },
  'mlm-probability': { type: 'string' },
};

/** pretrain()'s options from `torch-bert pretrain`'s flags: a flat table, as trainOptionsFrom's. */
function pretrainOptionsFrom(values: Record<string, unknown>, json: boolean, signal: AbortSignal): PretrainOptions {
  return {
    model: requireOption(values, 'model', 'pretrain'),
    data: requireFiles(values, 'data', 'pretrain'),
    textColumn: values['text-column'] as string | undefined,
    lineByLine: values['line-by-line'] as boolean | undefined,
    wholeWordMask: values['whole-word-mask'] as boolean | undefined,
    mlmProbability: numberOption(values, 'mlm-probability'),
    outDir: outDirOption(values, 'pretrain'),
    tokenizer: values.tokenizer as string | undefined,
    validationSplit: numberOption(values, 'validation-split'),
    epochs: numberOption(values, 'epochs'),
    batchSize: numberOption(values, 'batch-size'),
    maxLength: numberOption(values, 'max-length'),
    learningRate: numberOption(values, 'lr'),
    weightDecay: numberOption(values, 'weight-decay'),
    schedule: values.schedule as 'constant' | 'linear' | undefined,
    warmupRatio: numberOption(values, 'warmup-ratio'),
    gradientAccumulationSteps: numberOption(values, 'grad-accum'),
    maxGradNorm: numberOption(values, 'max-grad-norm'),
    evaluateEvery: numberOption(values, 'eval-every'),
    earlyStoppingPatience: numberOption(values, 'early-stopping'),
    resumeFrom: values.resume as string | undefined,
    onNonFinite: values['on-non-finite'] as 'stop' | 'skip' | undefined,
    seed: numberOption(values, 'seed'),
    device: values.device as Device | undefined,
    precision: values.precision as TrainOptions['precision'],
    threads: numberOption(values, 'threads'),
    distributedTimeout: numberOption(values, 'distributed-timeout'),
    onProgress: progressPrinter(!json, values['eval-every'] !== undefined),
    signal,
  };
}

/** What `torch-bert pretrain` prints of its result: one JSON object, or the table for people. */
function printPretrainResult(result: PretrainResult, json: boolean): void {
  if (json) {
    console.log(JSON.stringify(result));
    return;
  }
  for (const note of result.notes) console.log(`note: ${note}`);
  console.log(
    table(
      ['epoch', 'train loss', 'val loss', 'val perplexity', 'val masked acc', 'time', 'best'],
      result.history.map((h) => [
        String(h.epoch),
        h.trainLoss.toFixed(4),
        h.validationLoss.toFixed(4),
        Math.exp(h.validationLoss).toFixed(2),
        `${(100 * h.validationAccuracy).toFixed(2)}%`,
        formatSeconds(h.seconds),
        h.isBest ? '*' : '',
      ]),
    ),
  );
  if (result.stoppedEarly) console.log('(stopped early: no improvement)');
  console.log(
    `\nkept: epoch ${result.best.epoch}, step ${result.best.step}: held-out loss ${result.best.validationLoss.toFixed(4)}, perplexity ${result.best.perplexity.toFixed(2)}` +
      `\nsaved to ${result.outDir} (${result.trainRows} training and ${result.validationRows} held-out ${result.trainRows === 1 ? 'row' : 'rows'})`,
  );
}

async function commandPretrain(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('pretrain', { args: argv, options: PRETRAIN_OPTIONS, strict: true });
  if (values.help) return void console.log(HELP.pretrain);
  await fetchModelWithProgress(values);
  if (await launchedWorkers('pretrain', values, argv)) return;
  const json = Boolean(values.json);
  const result = await pretrain(pretrainOptionsFrom(values, json, interruptController().signal));
  if (!quietWorker()) printPretrainResult(result, json);
}

const COMMANDS: Record<string, (argv: string[]) => Promise<void>> = {
  train: commandTrain,
  pretrain: commandPretrain,
  eval: commandEval,
  predict: commandPredict,
  export: commandExport,
  demo: commandDemo,
  doctor: async (argv) => (await import('./doctor.js')).commandDoctor(argv),
};

/**
 * `--verbose`, accepted by every command (anywhere before a `--`), or TORCH_BERT_DEBUG set: a
 * failure prints, after its one line, the stack and every cause in full (a TorchScript
 * interpreter error's whole traceback is its native error's `cause`).
 */
function takeVerbose(argv: string[]): { verbose: boolean; argv: string[] } {
  const end = argv.indexOf('--');
  const flags = end < 0 ? argv : argv.slice(0, end);
  const rest = end < 0 ? [] : argv.slice(end);
  const kept = flags.filter((a) => a !== '--verbose');
  return { verbose: kept.length < flags.length || Boolean(process.env.TORCH_BERT_DEBUG), argv: [...kept, ...rest] };
}

/**
 * `--name -1` as `--name=-1`: node's parseArgs takes a value starting with '-' for an option and
 * refuses it as ambiguous, so a negative number would never reach the option's own check (which
 * says what the option needs).
 */
function joinNegativeValues(argv: string[]): string[] {
  const joined: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') return [...joined, ...argv.slice(i)];
    const next = argv[i + 1];
    if (/^--[^=]+$/.test(arg) && next !== undefined && /^-(\d|\.\d|Infinity$|NaN$)/.test(next)) {
      joined.push(`${arg}=${next}`);
      i++;
    } else {
      joined.push(arg);
    }
  }
  return joined;
}

/** The error's stack, then each cause's (or its message, for a cause that is not an Error). */
function details(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err, depth = 0; e !== undefined && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    parts.push((depth ? 'caused by: ' : '') + (e instanceof Error ? (e.stack ?? e.message) : String(e)));
    if (!(e instanceof Error)) break;
  }
  return parts.join('\n');
}

/**
 * Prints a failure's line(s), or, in a worker of `--nproc-per-node`, hands them to the launcher,
 * which prints each error once for all its workers (launcher.ts workerErrorLines).
 */
function sayError(said: string, err: unknown): void {
  const relayed = (err as { code?: unknown }).code === 'RANK_FAILED_TO_START';
  if (!handErrorToLauncher({ said, relayed })) console.error(said);
}

async function main(args: string[]): Promise<number> {
  const { verbose, argv } = takeVerbose(joinNegativeValues(args));
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    console.log(HELP.main);
    return command ? 0 : 2;
  }
  const run = COMMANDS[command];
  if (!run) {
    console.error(`torch-bert: unknown command '${command}'\n\n${HELP.main}`);
    return 2;
  }
  try {
    await run(rest);
    return 0;
  } catch (err) {
    if (err instanceof WorkersFailed) {
      for (const line of err.errors) console.error(line);
      // Stopped on request (Ctrl-C, SIGTERM): not an error; every worker said where it stopped.
      const failed = err.failure && `${err.failure}; the other workers were asked to stop`;
      const said = [failed, err.killed].filter(Boolean).join('; ');
      if (said) console.error(`torch-bert: error: ${said}`);
      return err.exitCode;
    }
    if (err instanceof NativeLoadError) {
      // The loader's message is the whole explanation: what is wrong with the addon and how to fix it.
      sayError(err.message, err);
      return 1;
    }
    const parseArgsError = (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true;
    const usage = err instanceof UsageError || parseArgsError;
    // node's parseArgs says on its later lines what to do ("--epochs -x": write '--epochs=-XYZ').
    const message = parseArgsError ? messageOf(err).replace(/\s*\n\s*/g, ' ') : messageOf(err).split('\n')[0];
    if (err instanceof AbortError) {
      // A training loop's abort says where it stopped and what it kept; an earlier one has kept nothing.
      console.error(`torch-bert: ${message}`);
      return 130;
    }
    // A cause holds more than the one line (e.g. a TorchScript traceback): say how to see it.
    const more = !verbose && err instanceof Error && err.cause !== undefined ? ' (--verbose for details)' : '';
    sayError(`torch-bert: error: ${message}${more}`, err);
    if (verbose) console.error(details(err));
    return usage ? 2 : 1;
  }
}

// Exit through process.exitCode so pending stdout writes are flushed.
main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
