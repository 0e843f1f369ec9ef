import { PRETRAIN_DEFAULTS, type PretrainOptions, type PretrainResult, pretrain } from '../pretraining/pretrainer.js';
import { DEFAULTS } from '../training/options.js';
import { numberOption, type Options, outDirOption, parseCommandArgs, requireFiles, requireOption } from './args.js';
import { formatSeconds, table } from './output.js';
import { fetchModelWithProgress, interruptController, launchedWorkers, quietWorker } from './run-control.js';
import { taskLoopOptionsFrom, trainFlags } from './train.js';

export const PRETRAIN_HELP = `torch-bert pretrain — continued masked-language-model pretraining (run_mlm.py's job)

Writes DIR as a Hugging Face *ForMaskedLM folder (config.json, model.safetensors, tokenizer
files) with the weights of the lowest held-out masked-LM loss, plus encoder.pt (TorchScript);
DIR works as --model for train and pretrain.

Required:
  --model MODEL            a Hugging Face model folder or Hub id (BERT, RoBERTa, DistilBERT); a
                           checkpoint without an MLM head gets one initialised as transformers does
  --data FILE              text (one document per non-blank line), CSV or JSON Lines
                           (--text-column); repeatable, read as one
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
  --betas B1,B2            AdamW betas (${DEFAULTS.betas.join(',')})
  --eps X                  AdamW epsilon (${DEFAULTS.eps})
  --schedule S             constant | linear | cosine (${PRETRAIN_DEFAULTS.schedule})
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
  --distributed auto|off   auto: join the data-parallel job torchrun's variables (RANK, ...) describe;
                           off: train alone even where they are set (${DEFAULTS.distributed})
  --distributed-timeout S  seconds a rank waits for the others before failing (${DEFAULTS.distributedTimeout})
  --json                   print one JSON object instead of tables`;

const PRETRAIN_OPTIONS: Options = {
  ...trainFlags(['data', 'text-column']),
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
    maxLength: numberOption(values, 'max-length'),
    ...taskLoopOptionsFrom(values, json, signal),
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
        `${(100 * (h.validationAccuracy ?? Number.NaN)).toFixed(2)}%`,
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

export async function commandPretrain(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('pretrain', { args: argv, options: PRETRAIN_OPTIONS, strict: true });
  if (values.help) return void console.log(PRETRAIN_HELP);
  await fetchModelWithProgress(values);
  if (await launchedWorkers('pretrain', values, argv)) return;
  const json = Boolean(values.json);
  const result = await pretrain(pretrainOptionsFrom(values, json, interruptController(values).signal));
  if (!quietWorker(values)) printPretrainResult(result, json);
}
