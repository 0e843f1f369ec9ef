/** `torch-bert train`: train()'s options from flags, its help, and what it prints of the result. */
import { join } from 'node:path';
import type { AdapterActivation, AdapterConfig } from '../addon/binding.js';
import { type TrainResult, train } from '../classification/trainer.js';
import type { Schedule } from '../data/batching.js';
import type { HeadKind } from '../models/sequence-classification.js';
import { formatMetrics } from '../training/metrics.js';
import { DEFAULTS, type Device, type TaskLoopOptions, type TrainOptions, type TrainProblemType } from '../training/options.js';
import {
  betasOption,
  csvOption,
  listOption,
  numberOption,
  type Options,
  outDirOption,
  parseCommandArgs,
  requireOption,
  weightsOption,
} from './args.js';
import { historyTable, progressPrinter } from './output.js';
import { fetchModelWithProgress, interruptController, launchedWorkers, quietWorker } from './run-control.js';

export const TRAIN_HELP = `torch-bert train — fine-tune a classifier on an encoder (frozen, full, LoRA or adapters)

Required:
  --data FILE.csv          labelled training data (CSV with a header row, or JSON Lines: .jsonl,
                           .json); repeat the option for a dataset in parts (same columns), read as one
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
  --label-columns A,B      a column per class instead (multi-label: 1 or 0, whether it applies)
                           or per output (regression: its target)
  --labels A,B             class names in id order (inferred: integer labels as ids, names sorted)
  --validation-data FILE   validation CSV instead of splitting --data (repeatable)
  --validation-split X     share of --data held out, stratified (${DEFAULTS.validationSplit})
  --epochs N               (${DEFAULTS.epochs})
  --batch-size N           (${DEFAULTS.batchSize})
  --max-length N           tokens per text incl. special tokens (${DEFAULTS.maxLength}; a model
                           folder's model_max_length within its position table)
  --lr X                   AdamW learning rate (${DEFAULTS.learningRate})
  --weight-decay X         AdamW weight decay (${DEFAULTS.weightDecay})
  --betas B1,B2            AdamW betas (${DEFAULTS.betas.join(',')})
  --eps X                  AdamW epsilon (${DEFAULTS.eps})
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
  --text-pair-column NAME  the second text of each example: text pairs (NLI, paraphrase:
                           [CLS] a [SEP] b [SEP]), or a template's {text_b}
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
  --schedule S             constant | linear | cosine (${DEFAULTS.schedule})
  --warmup-ratio X         share of steps warming the learning rate up (${DEFAULTS.warmupRatio})
  --grad-accum N           batches per optimizer step (${DEFAULTS.gradientAccumulationSteps})
  --class-weights W        balanced, or one weight per class: 1,2.5
  --positive-weights W     multi-label: balanced (each class's negatives / positives), or one
                           weight per class of its positive targets: BCE's pos_weight
  --label-smoothing X      (${DEFAULTS.labelSmoothing})
  --padding P              longest (per batch) | max (${DEFAULTS.padding})
  --group-by-length        batch texts of similar length together
  --eval-every N           also evaluate every N optimizer steps (each epoch)
  --best-metric M          loss | accuracy | macroF1 (regression: loss | pearson | spearman) picks
                           the checkpoint (${DEFAULTS.bestMetric})
  --problem-type T         single_label_classification (each label a class) | regression (each
                           label a number: MSE loss, one output) | multi_label_classification
                           (each label the classes that apply, comma-separated, or
                           --label-columns: a sigmoid per class, BCE loss) (${DEFAULTS.problemType})
  --early-stopping N       stop after N evaluations without improvement (off)
  --resume DIR             continue the interrupted run whose --out was DIR
  --on-non-finite P        stop | skip a NaN/Inf step (${DEFAULTS.onNonFinite})
  --report                 write DIR/report.html (curves, confusion matrix, settings)
  --seed N                 (${DEFAULTS.seed})
  --device auto|cpu|cuda|cuda:N  (${DEFAULTS.device})
  --precision P            fp32 | bf16 | fp16 (CUDA only; loss scaling) (${DEFAULTS.precision})
  --threads N              libtorch intra-op threads (distributed: cores / processes per node)
  --nproc-per-node N       data-parallel: start N worker processes on this machine (Gloo), batch per process
  --distributed auto|off   auto: join the data-parallel job torchrun's variables (RANK, ...) describe;
                           off: train alone even where they are set (${DEFAULTS.distributed})
  --distributed-timeout S  seconds a rank waits for the others before failing (${DEFAULTS.distributedTimeout})
  --json                   print one JSON object instead of tables`;

/**
 * The flags of any training run's loop and bookkeeping, spelt as `train`'s: what `pretrain` and
 * `tokens train` take besides their own (`trainFlags` picks them with the others they share).
 */
const RUN_FLAGS = [
  'model',
  'tokenizer',
  'out',
  'epochs',
  'batch-size',
  'max-length',
  'lr',
  'weight-decay',
  'betas',
  'eps',
  'validation-split',
  'max-grad-norm',
  'seed',
  'device',
  'precision',
  'threads',
  'nproc-per-node',
  'distributed',
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
] as const;

/**
 * The task trainers' loop and run options (TaskLoopOptions) from the run flags, as `pretrain`,
 * `tokens train` and `qa train` read them: progress printed for people unless `json`.
 */
export function taskLoopOptionsFrom(values: Record<string, unknown>, json: boolean, signal: AbortSignal): TaskLoopOptions {
  return {
    epochs: numberOption(values, 'epochs'),
    batchSize: numberOption(values, 'batch-size'),
    learningRate: numberOption(values, 'lr'),
    weightDecay: numberOption(values, 'weight-decay'),
    betas: betasOption(values),
    eps: numberOption(values, 'eps'),
    schedule: values.schedule as Schedule | undefined,
    warmupRatio: numberOption(values, 'warmup-ratio'),
    maxGradNorm: numberOption(values, 'max-grad-norm'),
    gradientAccumulationSteps: numberOption(values, 'grad-accum'),
    precision: values.precision as TaskLoopOptions['precision'],
    device: values.device as Device | undefined,
    seed: numberOption(values, 'seed'),
    evaluateEvery: numberOption(values, 'eval-every'),
    earlyStoppingPatience: numberOption(values, 'early-stopping'),
    onNonFinite: values['on-non-finite'] as TaskLoopOptions['onNonFinite'],
    resumeFrom: values.resume as string | undefined,
    threads: numberOption(values, 'threads'),
    distributed: values.distributed as TaskLoopOptions['distributed'],
    distributedTimeout: numberOption(values, 'distributed-timeout'),
    onProgress: progressPrinter(!json, values['eval-every'] !== undefined),
    signal,
  };
}

/** `train`'s definitions of the run flags (RUN_FLAGS) and of `more` of its flags, for another command that takes them. */
export function trainFlags(more: readonly string[]): Options {
  return Object.fromEntries([...RUN_FLAGS, ...more].map((name) => [name, TRAIN_OPTIONS[name]!]));
}

export const TRAIN_OPTIONS: Options = {
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
  betas: { type: 'string' },
  eps: { type: 'string' },
  labels: { type: 'string' },
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
  distributed: { type: 'string' },
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
  'positive-weights': { type: 'string' },
  'label-smoothing': { type: 'string' },
  padding: { type: 'string' },
  'group-by-length': { type: 'boolean' },
  'eval-every': { type: 'string' },
  'best-metric': { type: 'string' },
  'problem-type': { type: 'string' },
  'label-columns': { type: 'string' },
  'early-stopping': { type: 'string' },
  resume: { type: 'string' },
  'on-non-finite': { type: 'string' },
  report: { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

/**
 * train()'s options from `torch-bert train`'s flags. A flat table, flag by flag, kept whole so
 * that a flag is found by reading down it.
 */
function trainOptionsFrom(values: Record<string, unknown>, json: boolean, signal: AbortSignal): TrainOptions<TrainProblemType> {
  return {
    data: csvOption(values, 'data'),
    validationData: values['validation-data'] ? csvOption(values, 'validation-data') : undefined,
    encoder: requireOption(values, 'model', 'train'),
    tokenizer: values.tokenizer as string | undefined,
    outDir: outDirOption(values, 'train'),
    maxLength: numberOption(values, 'max-length'),
    labels: listOption(values, 'labels'),
    validationSplit: numberOption(values, 'validation-split'),
    headHidden: numberOption(values, 'head-hidden'),
    dropout: numberOption(values, 'dropout'),
    pooling: values.pooling as 'cls' | 'mean' | undefined,
    head: values.head as HeadKind | undefined,
    template: values.template as string | undefined,
    verbalizer: values.verbalizer as string[] | undefined,
    fewShot: numberOption(values, 'few-shot'),
    textPairColumn: values['text-pair-column'] as string | undefined,
    technique: values.technique as TrainOptions['technique'],
    encoderLearningRate: numberOption(values, 'encoder-lr'),
    freeze: values.freeze as string[] | undefined,
    lora: {
      rank: numberOption(values, 'lora-rank'),
      alpha: numberOption(values, 'lora-alpha'),
      dropout: numberOption(values, 'lora-dropout'),
      targets: listOption(values, 'lora-targets'),
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
    classWeights: weightsOption(values, 'class-weights'),
    positiveWeights: weightsOption(values, 'positive-weights'),
    labelSmoothing: numberOption(values, 'label-smoothing'),
    padding: values.padding as TrainOptions['padding'],
    groupByLength: values['group-by-length'] as boolean | undefined,
    bestMetric: values['best-metric'] as TrainOptions['bestMetric'],
    problemType: values['problem-type'] as TrainProblemType | undefined,
    report: values.report as boolean | undefined,
    ...taskLoopOptionsFrom(values, json, signal),
  };
}

/** What `torch-bert train` prints of its result: one JSON object, or the tables for people. */
function printTrainResult(result: TrainResult<TrainProblemType>, json: boolean, report: boolean): void {
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
    console.log(`\nvalidation metrics of the kept weights (epoch ${result.best.epoch}):\n${formatMetrics(result.metrics)}`);
    console.log(`\nsaved to ${result.outDir}${report ? ` (report: ${join(result.outDir!, 'report.html')})` : ''}`);
  }
}

export async function commandTrain(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('train', { args: argv, options: TRAIN_OPTIONS, strict: true });
  if (values.help) return void console.log(TRAIN_HELP);
  await fetchModelWithProgress(values);
  if (await launchedWorkers('train', values, argv)) return;
  const json = Boolean(values.json);
  const result = await train(trainOptionsFrom(values, json, interruptController(values).signal));
  result.classifier.dispose();
  if (!quietWorker(values)) printTrainResult(result, json, Boolean(values.report));
}
