/**
 * What the commands show people: progress lines redrawn in place on a terminal (silent in a pipe
 * or with --json), and tables.
 */

import type { ProblemType } from '../addon/binding.js';
import type { MultiLabelPrediction, Prediction, PredictionOf, RegressionPrediction } from '../classification/classifier.js';
import type { EpochMetrics, Evaluation, PredictEvent, ProgressEvent } from '../training/options.js';

export function formatSeconds(s: number): string {
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
export function progressPrinter(enabled: boolean, showEvaluations = false): (e: ProgressEvent) => void {
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
        `evaluation at step ${e.step}: validation loss ${e.validationLoss.toFixed(4)} ${scoresText(e)}${e.isBest ? ' | best, saved' : ''}\n`,
      );
      return;
    }
    // The deprecated twin of each 'batch' event. Downloads: drawn ahead, by fetchModelWithProgress.
    if (e.type === 'step' || e.type === 'download') return;
    if (e.type === 'batch') {
      if (!live) return;
      process.stderr.write(
        `\repoch ${e.epoch} ${progressBar(e.batch / e.batchesPerEpoch)} batch ${e.batch}/${e.batchesPerEpoch}` +
          `  loss ${e.epochLoss.toFixed(4)}  lr ${e.learningRate.toPrecision(3)}  ${e.examplesPerSecond.toFixed(1)} ex/s  ETA ${formatSeconds(e.etaSeconds)}   `,
      );
    } else {
      if (live) process.stderr.write('\r\x1b[K');
      if (enabled) {
        process.stderr.write(
          `epoch ${e.epoch}/${e.epochs}: train loss ${e.trainLoss.toFixed(4)}${e.trainAccuracy === undefined ? '' : ` acc ${percent(e.trainAccuracy)}`}` +
            ` | validation loss ${e.validationLoss.toFixed(4)} ${e.validationPearson === undefined && e.validationExactMatch === undefined ? `acc ${percent(e.validationAccuracy)}` : scoresText(e)}` +
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
export function predictPrinter(enabled: boolean): (e: PredictEvent) => void {
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
export function table(headers: string[], rows: string[][]): string {
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

/**
 * Each text's prediction: its label and that label's probability (single-label), the labels that
 * apply (multi-label; '-' for none), or its value (regression; a column per output). The texts whole are --json's: a
 * table line per text, each short enough to read.
 */
export function predictionTable(
  problemType: ProblemType,
  predictions: PredictionOf<ProblemType>[],
  texts: readonly string[],
  pairs?: readonly string[],
): string {
  // A pair's two texts share the line, half the width each (the table showed the first alone).
  const shown = (i: number) => (pairs ? `${textCell(texts[i]!, 35)} | ${textCell(pairs[i]!, 35)}` : textCell(texts[i]!));
  const text = pairs ? 'text | second text' : 'text';
  if (problemType === 'regression') {
    // A column per output, named by it where there are several.
    const outputs = Object.keys((predictions[0] as RegressionPrediction | undefined)?.values ?? {});
    return table(
      [...(outputs.length > 1 ? outputs : ['value']), text],
      (predictions as RegressionPrediction[]).map((p, i) => [...Object.values(p.values).map((v) => v.toFixed(4)), shown(i)]),
    );
  }
  if (problemType === 'multi_label_classification') {
    return table(
      ['labels', text],
      (predictions as MultiLabelPrediction[]).map((p, i) => [p.labels.join(', ') || '-', shown(i)]),
    );
  }
  return table(
    ['label', 'probability', text],
    (predictions as Prediction[]).map((p, i) => [p.label, p.probabilities[p.label]!.toFixed(4), shown(i)]),
  );
}

/** A share as a percentage with two decimals ('NaN%' where there is none). */
function percent(share: number | undefined): string {
  return `${(100 * (share ?? Number.NaN)).toFixed(2)}%`;
}

/** An evaluation's scores in a line: accuracy and macro-F1 (classification), Pearson and Spearman (regression), or SQuAD's exact match and F1 (question answering). */
function scoresText(e: Evaluation | EpochMetrics): string {
  if (e.validationExactMatch !== undefined)
    return `exact match ${e.validationExactMatch.toFixed(4)} F1 ${(e.validationF1 ?? Number.NaN).toFixed(4)}`;
  if (e.validationPearson !== undefined)
    return `pearson ${e.validationPearson.toFixed(4)} spearman ${(e.validationSpearman ?? Number.NaN).toFixed(4)}`;
  return `acc ${percent(e.validationAccuracy)} macro-F1 ${(e.validationMacroF1 ?? Number.NaN).toFixed(4)}`;
}

export function historyTable(history: EpochMetrics[]): string {
  const time = (h: EpochMetrics) => [formatSeconds(h.seconds), h.isBest ? '*' : ''];
  if (history.some((h) => h.validationPearson !== undefined)) {
    return table(
      ['epoch', 'train loss', 'val loss', 'val pearson', 'val spearman', 'time', 'best'],
      history.map((h) => [
        String(h.epoch),
        h.trainLoss.toFixed(4),
        h.validationLoss.toFixed(4),
        (h.validationPearson ?? Number.NaN).toFixed(4),
        (h.validationSpearman ?? Number.NaN).toFixed(4),
        ...time(h),
      ]),
    );
  }
  // Question answering's runs score SQuAD's exact match and F1 (fractions).
  if (history.some((h) => h.validationExactMatch !== undefined)) {
    return table(
      ['epoch', 'train loss', 'val loss', 'val EM', 'val F1', 'time', 'best'],
      history.map((h) => [
        String(h.epoch),
        h.trainLoss.toFixed(4),
        h.validationLoss.toFixed(4),
        (h.validationExactMatch ?? Number.NaN).toFixed(4),
        (h.validationF1 ?? Number.NaN).toFixed(4),
        ...time(h),
      ]),
    );
  }
  // Token classification's runs also score the entities (seqeval's F1).
  const entities = history.some((h) => h.validationF1 !== undefined);
  return table(
    ['epoch', 'train loss', 'train acc', 'val loss', 'val acc', ...(entities ? ['val F1'] : []), 'val macro-F1', 'time', 'best'],
    history.map((h) => [
      String(h.epoch),
      h.trainLoss.toFixed(4),
      percent(h.trainAccuracy),
      h.validationLoss.toFixed(4),
      percent(h.validationAccuracy),
      ...(entities ? [(h.validationF1 ?? Number.NaN).toFixed(4)] : []),
      (h.validationMacroF1 ?? Number.NaN).toFixed(4),
      ...time(h),
    ]),
  );
}
