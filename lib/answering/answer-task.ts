/**
 * Extractive question answering as a training task: its batch (windows of questions and their
 * contexts, question-windows.ts, each labelled with the answer's first and last token), its loss
 * (transformers' (start_loss + end_loss) / 2, computed in the native step: buildClassifier's
 * 'question-answering' forward returns the 2B start and end rows) and its validation pass (the
 * loss, then run_qa.py's answers from the start and end logits, span-answers.ts, scored by
 * SQuAD's exact match and F1, squad-metrics.ts). The loop that drives it is training-loop.ts's;
 * qa-trainer.ts sets the run up, and QuestionAnswerer answers with the same pass.
 */
import type { NativeBinding, NativeScriptModule, Precision, StepBatch } from '../addon/binding.js';
import { consecutiveBatches, gatherRows, stepBatch } from '../data/batching.js';
import type { TextTokenizer } from '../data/tokenizer.js';
import type { Validation } from '../training/run-keeper.js';
import { nativeStepOptions, type StepSettings, type Task } from '../training/training-loop.js';
import { type QuestionWindows, questionWindows, type WindowSettings, windowOffsets } from './question-windows.js';
import { answerSpan, type SpanAnswer, type SpanOptions } from './span-answers.js';
import type { QuestionExample } from './squad-data.js';
import { type SquadMetrics, squadMetrics } from './squad-metrics.js';

/** Questions and their windows, and how a batch of them is padded. */
export interface AnswerSet {
  examples: readonly QuestionExample[];
  windows: QuestionWindows;
  /**
   * Every batch padded to maxLength (run_qa.py's pad_to_max_length, its default), else to its
   * longest window (its `--pad_to_max_length False`: faster; but the loss, whose softmax runs over
   * the pads too, then depends on which windows share a batch, and data-parallel ranks, each
   * padding its own share, no longer compute one process's loss).
   */
  padToMaxLength: boolean;
}

/** A validation pass of a question-answering model: SQuAD's scores, the loss over the windows, and each question's answer. */
export type AnswerMetrics = SquadMetrics & { loss: number; answers: Map<string, SpanAnswer> };

export function answerSet(
  tokenizer: TextTokenizer,
  examples: readonly QuestionExample[],
  settings: WindowSettings,
  padToMaxLength: boolean,
): AnswerSet {
  return { examples, windows: questionWindows(tokenizer, examples, settings), padToMaxLength };
}

/**
 * Windows `rows` as a batch, padded as the set says, with the positions of all 2B start and end
 * rows the forward returns and (`labelled`) their labels, start then end of each window.
 */
export function windowBatch(set: AnswerSet, rows: ArrayLike<number>, labelled: boolean): StepBatch {
  const { windows } = set;
  const gathered = gatherRows(windows.encoded, rows, set.padToMaxLength ? windows.encoded.seqLen : undefined);
  const positions = Int32Array.from({ length: 2 * rows.length }, (_, i) => i);
  if (!labelled) return { ...stepBatch(gathered), positions };
  const labels = Int32Array.from({ length: 2 * rows.length }, (_, i) => (i % 2 === 0 ? windows.starts : windows.ends)[rows[i >> 1]!]!);
  return { ...stepBatch(gathered, labels), positions };
}

/** The question-answering task: a batch of windows, the loss over their start and end rows. */
export function questionAnsweringTask(
  binding: NativeBinding,
  model: NativeScriptModule,
  optimizer: InstanceType<NativeBinding['AdamW']>,
  train: AnswerSet,
  settings: StepSettings,
): Task<StepBatch> {
  return {
    batch: (rows) => windowBatch(train, rows, true),
    // `correct` counts start and end rows: the loop's training accuracy is theirs.
    accuracyNormaliser: (batch) => batch.positions!.length,
    step: (batch, step) => binding.trainStep(model, optimizer, batch, nativeStepOptions(settings, step)),
  };
}

/** -log softmax(x)[label] over x's n values from `at`, every `stride`-th (a window's start or end logits, pads included). */
function crossEntropy(x: Float32Array, at: number, n: number, stride: number, label: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let p = 0; p < n; p++) max = Math.max(max, x[at + p * stride]!);
  let sum = 0;
  for (let p = 0; p < n; p++) sum += Math.exp(x[at + p * stride]! - max);
  return Math.log(sum) + max - x[at + label * stride]!;
}

/**
 * Every window's start and end logits (span_logits, in eval mode), in batches of `batchSize`;
 * `onBatch` gets each batch's windows, its width and its [b, width, 2] logits.
 */
async function spanLogits(
  binding: NativeBinding,
  model: NativeScriptModule,
  set: AnswerSet,
  settings: { batchSize: number; precision: Precision; signal?: AbortSignal },
  onBatch: (rows: Int32Array, width: number, logits: Float32Array) => void,
): Promise<void> {
  for (const rows of consecutiveBatches(set.windows.encoded.count, settings.batchSize)) {
    settings.signal?.throwIfAborted();
    const batch = windowBatch(set, rows, false);
    const tensor = await binding.extractFeatures(model, batch, { precision: settings.precision, method: 'span_logits' });
    try {
      onBatch(rows, batch.seqLen, tensor.toArray() as Float32Array);
    } finally {
      tensor.dispose();
    }
  }
}

/**
 * Each question's answer (run_qa.py's postprocessing of its windows' logits, span-answers.ts),
 * and the loss against the windows' labels: each window's (start + end cross-entropy) / 2 over
 * every position of its padded row, as training computes it, averaged over the windows (for
 * questions asked without their answers, against [CLS]: answer() leaves it out).
 */
export async function answerQuestions(
  binding: NativeBinding,
  model: NativeScriptModule,
  data: AnswerSet,
  settings: { batchSize: number; precision: Precision; signal?: AbortSignal; span: SpanOptions },
): Promise<{ answers: Map<string, SpanAnswer>; loss: number }> {
  const { windows } = data;
  const perExample: Array<Array<{ start: Float32Array; end: Float32Array; offsets: Array<[number, number] | null> }>> = data.examples.map(
    () => [],
  );
  let lossSum = 0;
  await spanLogits(binding, model, data, settings, (rows, width, logits) => {
    for (const [r, w] of rows.entries()) {
      const length = windows.encoded.lengths[w]!;
      const at = r * width * 2;
      lossSum += (crossEntropy(logits, at, width, 2, windows.starts[w]!) + crossEntropy(logits, at + 1, width, 2, windows.ends[w]!)) / 2;
      // Every position of the padded row: as in utils_qa.py, a pad may take one of the n best
      // places (then is skipped, having no offsets), so the candidates are run_qa.py's.
      const start = new Float32Array(width);
      const end = new Float32Array(width);
      for (let p = 0; p < width; p++) {
        start[p] = logits[at + 2 * p]!;
        end[p] = logits[at + 2 * p + 1]!;
      }
      perExample[windows.example[w]!]!.push({ start, end, offsets: windowOffsets(windows, w, length) });
    }
  });
  const answers = new Map(data.examples.map((ex, e) => [ex.id, answerSpan(ex.context, perExample[e]!, settings.span)]));
  return { answers, loss: windows.encoded.count > 0 ? lossSum / windows.encoded.count : Number.NaN };
}

/**
 * Validation: the loss over the windows and SQuAD's exact match and F1 of the questions' answers.
 * Data-parallel, every rank validates every window (a question's windows are postprocessed
 * together), so every rank has the numbers one process has.
 */
export async function validateAnswers(
  binding: NativeBinding,
  model: NativeScriptModule,
  data: AnswerSet,
  settings: { batchSize: number; precision: Precision; signal?: AbortSignal; span: SpanOptions },
): Promise<Validation<AnswerMetrics>> {
  const { answers, loss } = await answerQuestions(binding, model, data, settings);
  const predictions = new Map([...answers].map(([id, answer]) => [id, answer.text]));
  const metrics = { ...squadMetrics(predictions, data.examples), loss, answers };
  return { loss, scores: { exactMatch: metrics.exactMatch, f1: metrics.f1 }, metrics };
}
