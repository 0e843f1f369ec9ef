import { namesHubModel } from '../models/hub.js';
import { type PredictEntitiesOptions, type TaggedWords, TokenClassifier, type WordAggregation } from '../tagging/token-classifier.js';
import { TOKEN_TRAIN_DEFAULTS, type TokenTrainOptions, type TokenTrainResult, trainTokenClassifier } from '../tagging/token-trainer.js';
import { formatEntityMetrics } from '../training/entity-metrics.js';
import { DEFAULTS, type Device, LORA_DEFAULTS } from '../training/options.js';
import { listOption, numberOption, type Options, outDirOption, parseCommandArgs, requireFiles, requireOption, UsageError } from './args.js';
import { historyTable } from './output.js';
import { fetchModelWithProgress, interruptController, launchedWorkers, quietWorker } from './run-control.js';
import { taskLoopOptionsFrom, trainFlags } from './train.js';

const DATA_HELP = `Data: CoNLL files (a word and its tag per line, the tag in the last column, a blank line
between sentences; -DOCSTART- lines skipped) or JSON / JSON Lines records with a list of words
and a list of tags (Hugging Face datasets' conll2003, wnut_17, wikiann as to_json() writes them).`;

export const TOKENS_HELP = `torch-bert tokens — token classification (named entities, parts of speech, chunks): a tag per word

  torch-bert tokens train   --model MODEL --data FILE --out DIR [options]   fine-tune a tagger (run_ner.py's job)
  torch-bert tokens eval    --classifier DIR --data FILE [--json]           seqeval's entity scores and the loss
  torch-bert tokens predict --classifier DIR [--json] SENTENCE...           each word's tag
  torch-bert tokens export  --classifier DIR --out FILE.pt                  a TorchScript file (torch.jit.load, C++)

${DATA_HELP}

Run 'torch-bert tokens VERB --help' for a verb's options.`;

export const TOKENS_TRAIN_HELP = `torch-bert tokens train — fine-tune a token classifier (run_ner.py's job): transformers'
token-classification head on a BERT-family model, each word's tag on its first token

Writes DIR as a Hugging Face *ForTokenClassification folder (config.json with id2label,
model.safetensors, tokenizer files) with the weights of the best validation score; DIR works as
--classifier for 'torch-bert tokens eval' and 'torch-bert tokens predict'.

${DATA_HELP}

Required:
  --model MODEL            a Hugging Face model folder or Hub id (BERT, RoBERTa, XLM-R, DistilBERT)
  --data FILE              tagged training sentences; repeatable, read as one
  --out DIR                the trained tagger's folder; a DIR an unfinished run left its training
                           state in is refused without --resume DIR: delete DIR/training-state to
                           start over
Options (default):
  --validation-data FILE   validation sentences instead of splitting --data (repeatable)
  --validation-split X     share of --data held out, drawn by the seed (${TOKEN_TRAIN_DEFAULTS.validationSplit})
  --words-column NAME      JSON data's field of words (tokens)
  --tags-column NAME       JSON data's field of tags (ner_tags): names, or integer ids into --labels
  --labels A,B             tag names in id order (the tags read, sorted); every tag read must be one
  --technique T            full (encoder and head) | lora (low-rank adapters and the head, kept
                           merged into the weights, and as PEFT's adapter in OUT/adapter) |
                           frozen (the head alone) (${TOKEN_TRAIN_DEFAULTS.technique})
  --lora-rank N            LoRA rank (${LORA_DEFAULTS.rank})
  --lora-alpha X           LoRA alpha; the update is (alpha/rank)·B·A (${LORA_DEFAULTS.alpha})
  --lora-dropout X         dropout on the adapter path (${LORA_DEFAULTS.dropout})
  --lora-targets A,B       module path suffixes to adapt (attention.self.query,attention.self.value;
                           a DistilBERT folder's attention.q_lin,attention.v_lin)
  --epochs N               (${TOKEN_TRAIN_DEFAULTS.epochs})
  --batch-size N           sentences per batch (${TOKEN_TRAIN_DEFAULTS.batchSize})
  --max-length N           tokens per sentence incl. special tokens; words past it are not
                           predicted (the model's model_max_length)
  --label-all-tokens       a word's tag on each of its tokens (B-X first, I-X after), the loss and
                           validation scores over tokens, as run_ner.py's label_all_tokens
  --lr X                   AdamW learning rate (${TOKEN_TRAIN_DEFAULTS.learningRate})
  --weight-decay X         (${DEFAULTS.weightDecay})
  --betas B1,B2            AdamW betas (${DEFAULTS.betas.join(',')})
  --eps X                  AdamW epsilon (${DEFAULTS.eps})
  --schedule S             constant | linear | cosine (${TOKEN_TRAIN_DEFAULTS.schedule})
  --warmup-ratio X         (${DEFAULTS.warmupRatio})
  --grad-accum N           batches per optimizer step (${DEFAULTS.gradientAccumulationSteps})
  --max-grad-norm X        gradient clipping, 0 = off (${DEFAULTS.maxGradNorm})
  --eval-every N           also evaluate every N optimizer steps (each epoch)
  --best-metric M          loss | f1 (seqeval's entity F1, micro) | accuracy (of the words' tags) |
                           macroF1 (the entity types' F1 averaged) picks the weights kept (${DEFAULTS.bestMetric})
  --early-stopping N       stop after N evaluations without improvement (off)
  --resume DIR             continue the interrupted run whose --out was DIR
  --on-non-finite P        stop | skip a NaN/Inf step (${DEFAULTS.onNonFinite})
  --tokenizer FILE.json    (the model folder's)
  --seed N                 (${DEFAULTS.seed})
  --device auto|cpu|cuda|cuda:N  (${DEFAULTS.device})
  --precision P            fp32 | bf16 | fp16 (CUDA only; loss scaling) (${DEFAULTS.precision})
  --threads N              libtorch intra-op threads (distributed: cores / processes per node)
  --nproc-per-node N       data-parallel: start N worker processes on this machine (Gloo), batch per process
  --distributed auto|off   auto: join the data-parallel job torchrun's variables (RANK, ...) describe;
                           off: train alone even where they are set (${DEFAULTS.distributed})
  --distributed-timeout S  seconds a rank waits for the others before failing (${DEFAULTS.distributedTimeout})
  --json                   print one JSON object instead of tables`;

export const TOKENS_EVAL_HELP = `torch-bert tokens eval — seqeval's entity scores (precision, recall, F1 per entity type, micro
and macro averages), the words' accuracy and the loss of a token classifier on tagged sentences

  --classifier DIR         a folder written by 'torch-bert tokens train', or a Hugging Face
                           token classifier (a folder or Hub id: *ForTokenClassification)
  --data FILE              tagged sentences, CoNLL or JSON (repeatable: files read as one)
  --words-column NAME      JSON data's field of words (tokens)
  --tags-column NAME       JSON data's field of tags (ner_tags): names, or integer ids into the
                           classifier's tags
  --batch-size N           (32)
  --device auto|cpu|cuda|cuda:N  (auto)
  --json                   print one JSON object`;

export const TOKENS_PREDICT_HELP = `torch-bert tokens predict — tag each word of sentences with a token classifier

  torch-bert tokens predict --classifier DIR [--json] SENTENCE...
  torch-bert tokens predict --classifier DIR --entities [--json] TEXT...

Each SENTENCE is split into words on whitespace; it prints a line per sentence, each word with
its tag (word/TAG; word/- for a word without a token). A sentence longer than the classifier's
max length is read in windows of whole words. With --entities, each TEXT is read as the
token-classification pipeline reads it (words split as BERT pre-tokenizes: whitespace, and each
punctuation character a word) and its entities are printed, a line each: TYPE, the characters
[start, end) and their text, the score; a blank line after each TEXT (--json: a line per TEXT,
its entities as a JSON array of { type, text, start, end, score }).

  --classifier DIR         a folder written by 'torch-bert tokens train', or a Hugging Face
                           token classifier (a folder or Hub id: *ForTokenClassification)
  --entities               the entities of each TEXT with their characters, instead of a tag per word
  --aggregation A          how a word of several tokens is tagged, as transformers' pipeline's
                           aggregation_strategy: first (its first token, as training reads it) |
                           average (its tokens' probabilities averaged) | max (its most confident
                           token) | simple (--entities only: each token tagged alone) (first)
  --batch-size N           (32)
  --device auto|cpu|cuda|cuda:N  (auto)
  --json                   one JSON object per line: {"words","tags","scores"} (a tag and its
                           probability per word; null for a word without a token)`;

/** `tokens train`'s flags: train's and pretrain's spellings for the options they share, and the tagged data's columns. */
const TOKENS_TRAIN_OPTIONS: Options = {
  ...trainFlags([
    'data',
    'validation-data',
    'labels',
    'technique',
    'lora-rank',
    'lora-alpha',
    'lora-dropout',
    'lora-targets',
    'best-metric',
  ]),
  'words-column': { type: 'string' },
  'tags-column': { type: 'string' },
  'label-all-tokens': { type: 'boolean' },
};

/** What eval and predict share: the classifier, its batches and device. */
const CLASSIFIER_OPTIONS = {
  classifier: { type: 'string' },
  'batch-size': { type: 'string' },
  device: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} satisfies Options;

/** trainTokenClassifier()'s options from `torch-bert tokens train`'s flags: a flat table, as pretrainOptionsFrom's. */
function tokenTrainOptionsFrom(values: Record<string, unknown>, json: boolean, signal: AbortSignal): TokenTrainOptions {
  return {
    model: requireOption(values, 'model', 'tokens train'),
    data: requireFiles(values, 'data', 'tokens train'),
    validationData: values['validation-data'] ? requireFiles(values, 'validation-data', 'tokens train') : undefined,
    validationSplit: numberOption(values, 'validation-split'),
    wordsColumn: values['words-column'] as string | undefined,
    tagsColumn: values['tags-column'] as string | undefined,
    labels: listOption(values, 'labels'),
    outDir: outDirOption(values, 'tokens train'),
    technique: values.technique as TokenTrainOptions['technique'],
    lora: {
      rank: numberOption(values, 'lora-rank'),
      alpha: numberOption(values, 'lora-alpha'),
      dropout: numberOption(values, 'lora-dropout'),
      targets: listOption(values, 'lora-targets'),
    },
    tokenizer: values.tokenizer as string | undefined,
    maxLength: numberOption(values, 'max-length'),
    labelAllTokens: values['label-all-tokens'] as boolean | undefined,
    bestMetric: values['best-metric'] as TokenTrainOptions['bestMetric'],
    ...taskLoopOptionsFrom(values, json, signal),
  };
}

/** What `torch-bert tokens train` prints of its result: one JSON object, or the tables for people. */
function printTokenTrainResult(result: TokenTrainResult, json: boolean): void {
  if (json) {
    console.log(JSON.stringify(result));
    return;
  }
  for (const note of result.notes) console.log(`note: ${note}`);
  console.log(historyTable(result.history));
  if (result.stoppedEarly) console.log('(stopped early: no improvement)');
  const { best, metrics } = result;
  console.log(
    metrics
      ? `\nvalidation metrics of the kept weights (epoch ${best.epoch}, step ${best.step}), loss ${metrics.loss.toFixed(4)}:\n${formatEntityMetrics(metrics)}`
      : // A resumed run whose best came before its interruption: measured by the run that kept it.
        `\nkept: epoch ${best.epoch}, step ${best.step}, validation loss ${best.validationLoss.toFixed(4)} (measured before the resume: 'torch-bert tokens eval' scores it)`,
  );
  console.log(
    `\nsaved to ${result.outDir} (${result.trainSentences} training and ${result.validationSentences} validation ${result.validationSentences === 1 ? 'sentence' : 'sentences'})`,
  );
}

async function tokensTrain(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('tokens train', { args: argv, options: TOKENS_TRAIN_OPTIONS, strict: true });
  if (values.help) return void console.log(TOKENS_TRAIN_HELP);
  await fetchModelWithProgress(values);
  if (await launchedWorkers('tokens', values, ['train', ...argv])) return;
  const json = Boolean(values.json);
  const result = await trainTokenClassifier(tokenTrainOptionsFrom(values, json, interruptController(values).signal));
  if (!quietWorker(values)) printTokenTrainResult(result, json);
}

/** --classifier DIR, or a Hub id (downloaded ahead with progress, as --model is). */
async function openTokenClassifier(values: Record<string, unknown>, command: string): Promise<TokenClassifier> {
  const spec = requireOption(values, 'classifier', command);
  if (namesHubModel(spec)) await fetchModelWithProgress({ model: spec });
  return TokenClassifier.load(spec, { device: values.device as Device | undefined });
}

async function tokensEval(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('tokens eval', {
    args: argv,
    options: {
      ...CLASSIFIER_OPTIONS,
      data: { type: 'string', multiple: true },
      'words-column': { type: 'string' },
      'tags-column': { type: 'string' },
    },
    strict: true,
  });
  if (values.help) return void console.log(TOKENS_EVAL_HELP);
  const data = requireFiles(values, 'data', 'tokens eval');
  const classifier = await openTokenClassifier(values, 'tokens eval');
  try {
    const metrics = await classifier.evaluate(data, {
      wordsColumn: values['words-column'],
      tagsColumn: values['tags-column'],
      batchSize: numberOption(values, 'batch-size'),
    });
    if (values.json) console.log(JSON.stringify(metrics));
    else
      console.log(`words ${metrics.words}, entities ${metrics.entities}, loss ${metrics.loss.toFixed(4)}\n${formatEntityMetrics(metrics)}`);
  } finally {
    classifier.dispose();
  }
}

/** A sentence as people read it tagged: `word/TAG` for each word (`word/-` where the model saw no token of it). */
function taggedLine({ words, tags }: TaggedWords): string {
  return words.map((word, i) => `${word}/${tags[i] ?? '-'}`).join(' ');
}

async function tokensPredict(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs('tokens predict', {
    args: argv,
    options: { ...CLASSIFIER_OPTIONS, aggregation: { type: 'string' }, entities: { type: 'boolean' } },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) return void console.log(TOKENS_PREDICT_HELP);
  if (positionals.length === 0) throw new UsageError("tokens predict: give at least one SENTENCE (see 'torch-bert tokens predict --help')");
  const options = { batchSize: numberOption(values, 'batch-size'), aggregation: values.aggregation as WordAggregation | undefined };
  if (values.entities) {
    const classifier = await openTokenClassifier(values, 'tokens predict');
    const aggregation = values.aggregation as PredictEntitiesOptions['aggregation'];
    return printEntities(classifier, positionals, { ...options, aggregation }, values.json === true);
  }
  const sentences = positionals.map((text) => text.split(/\s+/).filter((word) => word !== ''));
  const empty = sentences.findIndex((words) => words.length === 0);
  if (empty >= 0) throw new UsageError(`tokens predict: SENTENCE ${empty + 1} has no words`);
  const classifier = await openTokenClassifier(values, 'tokens predict');
  try {
    const tagged = await classifier.predict(sentences, options);
    for (const t of tagged) console.log(values.json ? JSON.stringify(t) : taggedLine(t));
  } finally {
    classifier.dispose();
  }
}

export const TOKENS_EXPORT_HELP = `torch-bert tokens export — a token classifier as one TorchScript file, for Python's
torch.jit.load and C++ libtorch's torch::jit::load, without Node or transformers

  torch-bert tokens export --classifier DIR --out FILE.pt

Its method forward_all_tokens(input_ids, attention_mask) gives every token's log-probabilities
over the tags, [batch, tokens, tags], in eval mode, on the CPU; the tags are in the order of the
folder's config.json id2label, the rows its tokenizer.json's, each word's tag read at its first token.

  --classifier DIR         a folder written by 'torch-bert tokens train', or a Hugging Face
                           token classifier (a folder or Hub id: *ForTokenClassification)
  --out FILE.pt            the file to write`;

async function tokensExport(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('tokens export', {
    args: argv,
    options: { classifier: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) return void console.log(TOKENS_EXPORT_HELP);
  const out = requireOption(values, 'out', 'tokens export');
  // On the CPU: a file any machine loads.
  const classifier = await openTokenClassifier({ ...values, device: 'cpu' }, 'tokens export');
  try {
    await classifier.saveTorchScript(out);
    console.log(`wrote ${out}: forward_all_tokens(input_ids, attention_mask) -> log-probabilities over ${classifier.labels.join(', ')}`);
  } finally {
    classifier.dispose();
  }
}

/** `tokens predict --entities`: each text's entities, a line each (or a JSON array per text). */
async function printEntities(classifier: TokenClassifier, texts: string[], options: PredictEntitiesOptions, json: boolean): Promise<void> {
  try {
    const found = await classifier.entities(texts, options);
    for (const entities of found) {
      if (json) console.log(JSON.stringify(entities));
      else console.log([...entities.map((e) => `${e.type}\t${e.start}-${e.end}\t${e.text}\t${e.score.toFixed(4)}`), ''].join('\n'));
    }
  } finally {
    classifier.dispose();
  }
}

const VERBS: Record<string, (argv: string[]) => Promise<void>> = {
  train: tokensTrain,
  eval: tokensEval,
  predict: tokensPredict,
  export: tokensExport,
};

export async function commandTokens(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  if (verb === '--help' || verb === '-h' || verb === 'help') return void console.log(TOKENS_HELP);
  const run = verb !== undefined && Object.hasOwn(VERBS, verb) ? VERBS[verb] : undefined;
  if (!run) {
    const said = verb === undefined ? 'give a verb' : `unknown verb '${verb}'`;
    throw new UsageError(`tokens: ${said}: train, eval, predict or export (see 'torch-bert tokens --help')`);
  }
  await run(rest);
}
