/**
 * `torch-bert qa`: extractive question answering (SQuAD 1.1 and 2.0) from the command line, a
 * verb each, as `torch-bert tokens`: train (trainQuestionAnswering()'s options from flags, run_qa.py's
 * job), eval (SQuAD's exact match and F1 and the loss of a saved model), predict (each question's
 * answer in a context) and export (the model as a TorchScript file).
 */
import { readFile } from 'node:fs/promises';
import { messageOf } from '../addon/errors.js';
import type { AnswerMetrics } from '../answering/answer-task.js';
import {
  QA_TRAIN_DEFAULTS,
  type QaBestMetric,
  type QaTrainOptions,
  type QaTrainResult,
  trainQuestionAnswering,
} from '../answering/qa-trainer.js';
import { type AnswerOptions, QuestionAnswerer } from '../answering/question-answerer.js';
import { SPAN_DEFAULTS, type SpanAnswer } from '../answering/span-answers.js';
import type { SquadMetrics, SquadScores } from '../answering/squad-metrics.js';
import { namesHubModel } from '../models/hub.js';
import { alignColumns } from '../training/metrics.js';
import { DEFAULTS, type Device, LORA_DEFAULTS } from '../training/options.js';
import { listOption, numberOption, type Options, outDirOption, parseCommandArgs, requireFiles, requireOption, UsageError } from './args.js';
import { historyTable } from './output.js';
import { fetchModelWithProgress, interruptController, launchedWorkers, quietWorker } from './run-control.js';
import { taskLoopOptionsFrom, trainFlags } from './train.js';

const DATA_HELP = `Data: SQuAD JSON files ({"data": [{"paragraphs": [{"context", "qas": [{"id", "question",
"answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}, SQuAD 1.1's and 2.0's) or Hugging
Face datasets' squad / squad_v2 records as JSON Lines or a JSON array ({"id", "title", "context",
"question", "answers": {"text": [...], "answer_start": [...]}}, as to_json() writes them).`;

const SCORES_HELP = `Exact match and F1 are SQuAD's (evaluate-v2.0.py's, which on questions with answers are
evaluate-v1.1.py's), printed as fractions in [0, 1] where the official scripts print percentages;
HasAns and NoAns score the questions with an answer and those without apart.`;

export const QA_HELP = `torch-bert qa — extractive question answering (SQuAD): the answer to a question as a span of its context

  torch-bert qa train   --model MODEL --data FILE --out DIR [options]     fine-tune a model (run_qa.py's job)
  torch-bert qa eval    --model DIR --data FILE [--json]                  SQuAD's exact match and F1, and the loss
  torch-bert qa predict --model DIR --context TEXT [--json] QUESTION...   each question's answer in the context
  torch-bert qa export  --model DIR --out FILE.pt                         a TorchScript file (torch.jit.load, C++)

--model is the model to fine-tune for train, and the question-answering model (a folder 'qa train'
wrote, or any Hugging Face *ForQuestionAnswering folder or Hub id) for eval, predict and export.

${DATA_HELP}

Run 'torch-bert qa VERB --help' for a verb's options.`;

export const QA_TRAIN_HELP = `torch-bert qa train — fine-tune a question-answering model (run_qa.py's job): transformers'
question-answering head (qa_outputs: a start and an end logit per token) on a BERT-family model,
each question read with its context in overlapping windows of --max-length tokens

Writes DIR as a Hugging Face *ForQuestionAnswering folder (config.json, model.safetensors,
tokenizer files) with the weights of the best validation score; DIR works as --model for
'torch-bert qa eval', 'qa predict' and 'qa export', and for transformers' pipeline.

${DATA_HELP}

${SCORES_HELP}

Required:
  --model MODEL            a Hugging Face model folder or Hub id (BERT, RoBERTa, DistilBERT); a
                           question-answering checkpoint's head is kept as the start
  --data FILE              training questions; repeatable, read as one
  --out DIR                the trained model's folder; a DIR an unfinished run left its training
                           state in is refused without --resume DIR: delete DIR/training-state to
                           start over
Options (default):
  --validation-data FILE   validation questions instead of splitting --data (repeatable)
  --validation-split X     share of --data's questions held out, drawn by the seed (${QA_TRAIN_DEFAULTS.validationSplit})
  --version-2-with-negative  SQuAD 2.0: questions may have no answer; "" is answered where the
                           null score ([CLS]'s) wins (run_qa.py's flag)
  --max-length N           tokens per window, question and special tokens included
                           (${QA_TRAIN_DEFAULTS.maxLength}, or the model's model_max_length where shorter: run_qa.py's max_seq_length)
  --doc-stride N           tokens two windows of a long context share (${QA_TRAIN_DEFAULTS.docStride})
  --pad-to-longest         pad each batch to its longest window, not to --max-length (run_qa.py's
                           --pad_to_max_length False): faster on short contexts, but the loss,
                           whose softmax runs over the pads, then depends on the batches
  --n-best N               answer candidates kept per question (${SPAN_DEFAULTS.nBest}: n_best_size)
  --max-answer-length N    longest answer, in tokens (${SPAN_DEFAULTS.maxAnswerLength})
  --null-score-diff-threshold X  --version-2-with-negative: "" is answered where the null score
                           beats the best span's by more than X (${SPAN_DEFAULTS.nullScoreDiffThreshold})
  --technique T            full (encoder and head) | lora (low-rank adapters and the head, kept
                           merged into the weights, and as PEFT's adapter in OUT/adapter) |
                           frozen (the head alone) (${QA_TRAIN_DEFAULTS.technique})
  --lora-rank N            LoRA rank (${LORA_DEFAULTS.rank})
  --lora-alpha X           LoRA alpha; the update is (alpha/rank)·B·A (${LORA_DEFAULTS.alpha})
  --lora-dropout X         dropout on the adapter path (${LORA_DEFAULTS.dropout})
  --lora-targets A,B       module path suffixes to adapt (attention.self.query,attention.self.value;
                           a DistilBERT folder's attention.q_lin,attention.v_lin)
  --epochs N               (${QA_TRAIN_DEFAULTS.epochs})
  --batch-size N           windows per batch (${QA_TRAIN_DEFAULTS.batchSize})
  --lr X                   AdamW learning rate (${QA_TRAIN_DEFAULTS.learningRate})
  --weight-decay X         (${DEFAULTS.weightDecay})
  --betas B1,B2            AdamW betas (${DEFAULTS.betas.join(',')})
  --eps X                  AdamW epsilon (${DEFAULTS.eps})
  --schedule S             constant | linear | cosine (${QA_TRAIN_DEFAULTS.schedule})
  --warmup-ratio X         (${DEFAULTS.warmupRatio})
  --grad-accum N           batches per optimizer step (${DEFAULTS.gradientAccumulationSteps})
  --max-grad-norm X        gradient clipping, 0 = off (${DEFAULTS.maxGradNorm})
  --eval-every N           also evaluate every N optimizer steps (each epoch)
  --best-metric M          loss | f1 | exact-match (SQuAD's, on the validation questions; also
                           spelt exactMatch) picks the weights kept (${DEFAULTS.bestMetric})
  --early-stopping N       stop after N evaluations without improvement (off)
  --resume DIR             continue the interrupted run whose --out was DIR
  --on-non-finite P        stop | skip a NaN/Inf step (${DEFAULTS.onNonFinite})
  --tokenizer FILE.json    (the model folder's)
  --seed N                 (${DEFAULTS.seed})
  --device auto|cpu|cuda|cuda:N  (${DEFAULTS.device})
  --precision P            fp32 | bf16 | fp16 (CUDA only; loss scaling) (${DEFAULTS.precision})
  --threads N              libtorch intra-op threads (distributed: cores / processes per node)
  --nproc-per-node N       data-parallel: start N worker processes on this machine (Gloo), batch per
                           process; every process validates every question
  --distributed auto|off   auto: join the data-parallel job torchrun's variables (RANK, ...) describe;
                           off: train alone even where they are set (${DEFAULTS.distributed})
  --distributed-timeout S  seconds a rank waits for the others before failing (${DEFAULTS.distributedTimeout})
  --json                   print one JSON object instead of tables: trainQuestionAnswering()'s
                           result, metrics.answers an object of each validation question's answer
                           by id ({ text, start, end, probability })`;

/** The span options eval and predict share, as the help lists them. */
const ANSWER_OPTIONS_HELP = `  --n-best N               answer candidates kept per question (${SPAN_DEFAULTS.nBest})
  --max-answer-length N    longest answer, in tokens (${SPAN_DEFAULTS.maxAnswerLength})
  --version-2-with-negative  "" may be the answer (SQuAD 2.0), where the null score wins (the
                           model's training: a folder 'qa train --version-2-with-negative' wrote)
  --null-score-diff-threshold X  "" is answered where the null score beats the best span's by more
                           than X (${SPAN_DEFAULTS.nullScoreDiffThreshold})
  --max-length N           tokens per window (the model's training's, else ${QA_TRAIN_DEFAULTS.maxLength} or the model's, if shorter)
  --doc-stride N           tokens two windows share (the model's training's, else ${QA_TRAIN_DEFAULTS.docStride})
  --batch-size N           windows per batch (32)
  --device auto|cpu|cuda|cuda:N  (auto)`;

const MODEL_HELP = `  --model DIR              a folder written by 'torch-bert qa train', or a Hugging Face
                           question-answering model (a folder or Hub id: *ForQuestionAnswering)`;

export const QA_EVAL_HELP = `torch-bert qa eval — SQuAD's exact match and F1 (all questions, HasAns, NoAns) and the loss of
a question-answering model on question files, as 'qa train' validates

${SCORES_HELP}

${MODEL_HELP}
  --data FILE              questions with their answers, SQuAD JSON or squad records (repeatable:
                           files read as one)
${ANSWER_OPTIONS_HELP}
  --json                   print one JSON object: exactMatch, f1, total, hasAnswer and noAnswer
                           (where there are such questions: { exactMatch, f1, total }), loss, and
                           answers: each question's answer by id ({ text, start, end, probability })`;

export const QA_PREDICT_HELP = `torch-bert qa predict — answer each QUESTION from a context with a question-answering model

  torch-bert qa predict --model DIR --context TEXT [--json] QUESTION...
  torch-bert qa predict --model DIR --context-file FILE [--json] QUESTION...

It prints a line per QUESTION: the question, its answer (the context's characters; "(no answer)"
where "" wins: --version-2-with-negative), the characters [start, end) in the context and the
answer's probability among the candidates, tab-separated (whitespace runs in the question and the
answer shown as one space). A context longer than a window is read in windows of it, as training read them.

${MODEL_HELP}
  --context TEXT           the text the answers come from
  --context-file FILE      the context read from FILE (UTF-8, as is: the characters count from its start)
${ANSWER_OPTIONS_HELP}
  --json                   a JSON object per line, a QUESTION's answer: { text, start, end,
                           probability } ("" at 0, 0 for no answer)
  --candidates             --json: each answer's candidates too, best first: at most --n-best
                           spans, and with --version-2-with-negative the null answer ("") after
                           them where it is not among them, as utils_qa.py's n-best list;
                           { text, start, end, score, startLogit, endLogit, probability }`;

export const QA_EXPORT_HELP = `torch-bert qa export — a question-answering model as one TorchScript file, for Python's
torch.jit.load and C++ libtorch's torch::jit::load, without Node or transformers

  torch-bert qa export --model DIR --out FILE.pt

Its method span_logits(input_ids, attention_mask) gives every token's start and end logits,
[batch, tokens, 2] (start in column 0, end in 1), as transformers' model's start_logits and
end_logits, in eval mode, on the CPU. Where the encoder takes token_type_ids (BERT's), read the
question and its context as the model was trained to with span_logits_token_types(input_ids,
attention_mask, token_type_ids): the ids and segments the folder's tokenizer.json gives
[CLS] question [SEP] context [SEP] (span_logits reads every token as segment 0).

${MODEL_HELP}
  --out FILE.pt            the file to write`;

/** `qa train`'s flags: train's and tokens train's spellings for the options they share, and run_qa.py's. */
const QA_TRAIN_OPTIONS: Options = {
  ...trainFlags(['data', 'validation-data', 'technique', 'lora-rank', 'lora-alpha', 'lora-dropout', 'lora-targets', 'best-metric']),
  'doc-stride': { type: 'string' },
  'pad-to-longest': { type: 'boolean' },
  'version-2-with-negative': { type: 'boolean' },
  'n-best': { type: 'string' },
  'max-answer-length': { type: 'string' },
  'null-score-diff-threshold': { type: 'string' },
};

/** What eval and predict share: the model, how it reads and answers, its batches and device. */
const ANSWERER_OPTIONS = {
  model: { type: 'string' },
  'n-best': { type: 'string' },
  'max-answer-length': { type: 'string' },
  'version-2-with-negative': { type: 'boolean' },
  'null-score-diff-threshold': { type: 'string' },
  'max-length': { type: 'string' },
  'doc-stride': { type: 'string' },
  'batch-size': { type: 'string' },
  device: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} satisfies Options;

/** --best-metric's spellings: the CLI's kebab case, and the option's own name. */
const BEST_METRICS: Record<string, QaBestMetric> = { loss: 'loss', f1: 'f1', 'exact-match': 'exactMatch', exactMatch: 'exactMatch' };

function bestMetricOption(values: Record<string, unknown>): QaBestMetric | undefined {
  const raw = values['best-metric'];
  if (raw === undefined) return undefined;
  const metric = typeof raw === 'string' && Object.hasOwn(BEST_METRICS, raw) ? BEST_METRICS[raw] : undefined;
  if (metric === undefined) throw new UsageError(`qa train: --best-metric expects loss, f1 or exact-match; got '${String(raw)}'`);
  return metric;
}

/** trainQuestionAnswering()'s options from `torch-bert qa train`'s flags: a flat table, as tokenTrainOptionsFrom's. */
function qaTrainOptionsFrom(values: Record<string, unknown>, json: boolean, signal: AbortSignal): QaTrainOptions {
  return {
    model: requireOption(values, 'model', 'qa train'),
    data: requireFiles(values, 'data', 'qa train'),
    validationData: values['validation-data'] ? requireFiles(values, 'validation-data', 'qa train') : undefined,
    validationSplit: numberOption(values, 'validation-split'),
    outDir: outDirOption(values, 'qa train'),
    technique: values.technique as QaTrainOptions['technique'],
    lora: {
      rank: numberOption(values, 'lora-rank'),
      alpha: numberOption(values, 'lora-alpha'),
      dropout: numberOption(values, 'lora-dropout'),
      targets: listOption(values, 'lora-targets'),
    },
    tokenizer: values.tokenizer as string | undefined,
    maxLength: numberOption(values, 'max-length'),
    docStride: numberOption(values, 'doc-stride'),
    padToMaxLength: values['pad-to-longest'] ? false : undefined,
    versionTwo: values['version-2-with-negative'] as boolean | undefined,
    nBest: numberOption(values, 'n-best'),
    maxAnswerLength: numberOption(values, 'max-answer-length'),
    nullScoreDiffThreshold: numberOption(values, 'null-score-diff-threshold'),
    bestMetric: bestMetricOption(values),
    ...taskLoopOptionsFrom(values, json, signal),
  };
}

/** An answer as --json prints it: without its candidates unless asked. */
function answerJson(answer: SpanAnswer, candidates: boolean): object {
  const { text, start, end, probability } = answer;
  return candidates ? { text, start, end, probability, candidates: answer.candidates } : { text, start, end, probability };
}

/** AnswerMetrics as --json prints them: the answers (a Map) as an object by question id, without candidates. */
function metricsJson(metrics: AnswerMetrics): object {
  const { answers, ...scores } = metrics;
  return { ...scores, answers: Object.fromEntries([...answers].map(([id, answer]) => [id, answerJson(answer, false)])) };
}

/** SQuAD's scores for people: a row for all questions, and HasAns / NoAns where there are such questions. */
export function formatAnswerMetrics(m: SquadMetrics): string {
  const row = (name: string, s: SquadScores) => [name, s.exactMatch.toFixed(4), s.f1.toFixed(4), String(s.total)];
  return alignColumns([
    ['questions', 'exact match', 'f1', 'total'],
    row('all', m),
    ...(m.hasAnswer ? [row('HasAns', m.hasAnswer)] : []),
    ...(m.noAnswer ? [row('NoAns', m.noAnswer)] : []),
  ]);
}

/** What `torch-bert qa train` prints of its result: one JSON object, or the tables for people. */
function printQaTrainResult(result: QaTrainResult, json: boolean): void {
  if (json) {
    console.log(JSON.stringify({ ...result, metrics: result.metrics && metricsJson(result.metrics) }));
    return;
  }
  for (const note of result.notes) console.log(`note: ${note}`);
  console.log(historyTable(result.history));
  if (result.stoppedEarly) console.log('(stopped early: no improvement)');
  const { best, metrics } = result;
  console.log(
    metrics
      ? `\nvalidation metrics of the kept weights (epoch ${best.epoch}, step ${best.step}), loss ${metrics.loss.toFixed(4)}:\n${formatAnswerMetrics(metrics)}`
      : // A resumed run whose best came before its interruption: measured by the run that kept it.
        `\nkept: epoch ${best.epoch}, step ${best.step}, validation loss ${best.validationLoss.toFixed(4)} (measured before the resume: 'torch-bert qa eval' scores it)`,
  );
  const questions = (n: number) => `${n} ${n === 1 ? 'question' : 'questions'}`;
  console.log(
    `\nsaved to ${result.outDir} (${questions(result.trainQuestions)} in ${result.trainWindows} windows for training, ${questions(result.validationQuestions)} for validation)`,
  );
}

async function qaTrain(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('qa train', { args: argv, options: QA_TRAIN_OPTIONS, strict: true });
  if (values.help) return void console.log(QA_TRAIN_HELP);
  // Usage errors before a download or a launch.
  bestMetricOption(values);
  await fetchModelWithProgress(values);
  if (await launchedWorkers('qa', values, ['train', ...argv])) return;
  const json = Boolean(values.json);
  const result = await trainQuestionAnswering(qaTrainOptionsFrom(values, json, interruptController(values).signal));
  if (!quietWorker(values)) printQaTrainResult(result, json);
}

/** --model DIR, or a Hub id (downloaded ahead with progress, as train's --model is), read with --max-length and --doc-stride. */
async function openAnswerer(values: Record<string, unknown>, command: string): Promise<QuestionAnswerer> {
  const spec = requireOption(values, 'model', command);
  const maxLength = numberOption(values, 'max-length');
  const docStride = numberOption(values, 'doc-stride');
  if (namesHubModel(spec)) await fetchModelWithProgress({ model: spec });
  return QuestionAnswerer.load(spec, { device: values.device as Device | undefined, maxLength, docStride });
}

/** answer()'s and evaluate()'s options from the flags eval and predict share. */
function answerOptionsFrom(values: Record<string, unknown>): AnswerOptions {
  return {
    nBest: numberOption(values, 'n-best'),
    maxAnswerLength: numberOption(values, 'max-answer-length'),
    versionTwo: values['version-2-with-negative'] ? true : undefined,
    nullScoreDiffThreshold: numberOption(values, 'null-score-diff-threshold'),
    batchSize: numberOption(values, 'batch-size'),
  };
}

async function qaEval(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('qa eval', {
    args: argv,
    options: { ...ANSWERER_OPTIONS, data: { type: 'string', multiple: true } },
    strict: true,
  });
  if (values.help) return void console.log(QA_EVAL_HELP);
  const data = requireFiles(values, 'data', 'qa eval');
  const options = answerOptionsFrom(values);
  const answerer = await openAnswerer(values, 'qa eval');
  try {
    const metrics = await answerer.evaluate(data, options);
    if (values.json) console.log(JSON.stringify(metricsJson(metrics)));
    else console.log(`questions ${metrics.total}, loss ${metrics.loss.toFixed(4)}\n${formatAnswerMetrics(metrics)}`);
  } finally {
    answerer.dispose();
  }
}

/** A text on one line, whitespace runs as one space. */
const oneLine = (text: string) => text.replace(/\s+/g, ' ').trim();

/** --context TEXT or --context-file FILE: exactly one. */
async function contextOption(values: Record<string, unknown>): Promise<string> {
  const text = values.context as string | undefined;
  const file = values['context-file'] as string | undefined;
  if (text !== undefined && file !== undefined) throw new UsageError('qa predict: give --context or --context-file, not both');
  if (text !== undefined) return text;
  if (file === undefined)
    throw new UsageError("qa predict: --context TEXT or --context-file FILE is required (see 'torch-bert qa predict --help')");
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`qa predict: cannot read --context-file ${file}: ${messageOf(err)}`);
  }
}

async function qaPredict(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs('qa predict', {
    args: argv,
    options: {
      ...ANSWERER_OPTIONS,
      context: { type: 'string' },
      'context-file': { type: 'string' },
      candidates: { type: 'boolean' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) return void console.log(QA_PREDICT_HELP);
  if (positionals.length === 0) throw new UsageError("qa predict: give at least one QUESTION (see 'torch-bert qa predict --help')");
  const context = await contextOption(values);
  const options = answerOptionsFrom(values);
  const answerer = await openAnswerer(values, 'qa predict');
  try {
    const answers = await answerer.answer(
      positionals.map((question) => ({ question, context })),
      options,
    );
    answers.forEach((a, i) => {
      if (values.json) console.log(JSON.stringify(answerJson(a, values.candidates === true)));
      else
        console.log(
          `${oneLine(positionals[i]!)}\t${a.text === '' ? '(no answer)' : oneLine(a.text)}\t${a.start}-${a.end}\t${a.probability.toFixed(4)}`,
        );
    });
  } finally {
    answerer.dispose();
  }
}

async function qaExport(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('qa export', {
    args: argv,
    options: { model: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) return void console.log(QA_EXPORT_HELP);
  const out = requireOption(values, 'out', 'qa export');
  // On the CPU: a file any machine loads.
  const answerer = await openAnswerer({ ...values, device: 'cpu' }, 'qa export');
  try {
    await answerer.saveTorchScript(out);
    // The method that reads a question and its context as the model does (question-windows.ts).
    const method = answerer.windows.tokenTypes
      ? 'span_logits_token_types(input_ids, attention_mask, token_type_ids)'
      : 'span_logits(input_ids, attention_mask)';
    console.log(`wrote ${out}: ${method} -> start and end logits [batch, tokens, 2]`);
  } finally {
    answerer.dispose();
  }
}

const VERBS: Record<string, (argv: string[]) => Promise<void>> = {
  train: qaTrain,
  eval: qaEval,
  predict: qaPredict,
  export: qaExport,
};

export async function commandQa(argv: string[]): Promise<void> {
  const [verb, ...rest] = argv;
  if (verb === '--help' || verb === '-h' || verb === 'help') return void console.log(QA_HELP);
  const run = verb !== undefined && Object.hasOwn(VERBS, verb) ? VERBS[verb] : undefined;
  if (!run) {
    const said = verb === undefined ? 'give a verb' : `unknown verb '${verb}'`;
    throw new UsageError(`qa: ${said}: train, eval, predict or export (see 'torch-bert qa --help')`);
  }
  await run(rest);
}
