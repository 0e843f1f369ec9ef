/**
 * A training run as one self-contained HTML page: loss and accuracy curves (a regression run's:
 * Pearson and Spearman), the per-step validation curve when there is one, the epoch table, the
 * confusion matrix with per-class precision/recall/F1 (a regression run's errors and
 * correlations), and the settings. No scripts, no external assets, no dependencies:
 * the page can be mailed, archived or opened offline years later, and the charts are inline
 * SVG drawn here. Every user-supplied string (title, labels, settings) is escaped.
 */
import type { ClassificationMetrics, MultiLabelMetrics, RegressionMetrics } from './metrics.js';
import type { EpochMetrics } from './options.js';

/** A validation pass run every N optimisation steps, not only at an epoch's end. */
export interface StepEvaluation {
  /** Optimisation step counted from 1 across the whole run (not within the epoch). */
  step: number;
  epoch: number;
  validationLoss: number;
  validationAccuracy?: number;
  validationMacroF1?: number;
  /** A regression run's, in place of accuracy and macro-F1. */
  validationPearson?: number;
  validationSpearman?: number;
  /** Whether it set a new best (and was checkpointed). */
  isBest?: boolean;
}

export interface ReportInput {
  title: string;
  history: EpochMetrics[];
  evaluations?: StepEvaluation[];
  /** Metrics of the kept (best) model on the validation data. */
  final?: ClassificationMetrics | RegressionMetrics | MultiLabelMetrics;
  /** Class names in id order. */
  labels: string[];
  settings: Record<string, unknown>;
  /** When the run was made, shown as given (e.g. an ISO timestamp). */
  createdAt: string;
}

/**
 * Geometry of every chart, in SVG user units: the plot area spans
 * x ∈ [left, width − right] and y ∈ [top, height − bottom].
 */
export const CHART_LAYOUT = { width: 560, height: 300, top: 40, right: 20, bottom: 46, left: 64 } as const;

const COLORS = {
  train: '#2563eb',
  validation: '#ea580c',
  macroF1: '#7c3aed',
  best: '#16a34a',
  axis: '#9ca3af',
  grid: '#e5e7eb',
  text: '#4b5563',
} as const;

// Beyond this many points, markers clutter the line more than they help.
const MAX_MARKERS = 40;

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

// EpochMetrics gains validationMacroF1 in newer runs; histories saved before it lack it.
type EpochRecord = EpochMetrics & { validationMacroF1?: number };

function macroF1Of(m: EpochRecord | StepEvaluation): number | undefined {
  return typeof m.validationMacroF1 === 'number' ? m.validationMacroF1 : undefined;
}

/** A regression run's records: Pearson and Spearman in place of accuracy and macro-F1. */
function isRegression(records: ReadonlyArray<EpochRecord | StepEvaluation>): boolean {
  return records.some((m) => m.validationPearson !== undefined);
}

/** A regression run's second chart: validation Pearson (solid) and Spearman (dashed) by `x` (epoch or step). */
function correlationChart(
  records: ReadonlyArray<EpochRecord | StepEvaluation>,
  at: (m: EpochRecord | StepEvaluation) => number,
  chart: { id: string; title: string; x: Axis; xLabel: string; best: { x: number; label: string } | undefined },
): string {
  return lineChart({
    ...chart,
    series: [
      { name: 'validation Pearson', color: COLORS.validation, points: records.map((m) => [at(m), m.validationPearson ?? NaN]) },
      {
        name: 'validation Spearman',
        color: COLORS.macroF1,
        dashed: true,
        points: records.map((m) => [at(m), m.validationSpearman ?? NaN]),
      },
    ],
    yLabel: 'correlation',
    formatY: formatLossTick,
    yLimits: [-1, 1],
  });
}

/**
 * The epoch whose weights were kept: the last one flagged `isBest` (each flag means "a new
 * best", so the last is the best of all, whatever metric chose it), else the lowest validation loss.
 */
export function bestEpoch(history: EpochMetrics[]): EpochMetrics | undefined {
  const flagged = history.filter((m) => m.isBest);
  if (flagged.length > 0) return flagged[flagged.length - 1];
  let best: EpochMetrics | undefined;
  for (const m of history) {
    if (Number.isFinite(m.validationLoss) && (best === undefined || m.validationLoss < best.validationLoss)) best = m;
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Scales and ticks

interface Axis {
  domain: [number, number];
  ticks: number[];
}

/** 1, 2 or 5 × 10^k, the smallest such step ≥ `raw`. */
function niceStep(raw: number): number {
  const power = 10 ** Math.floor(Math.log10(raw));
  const fraction = raw / power;
  return (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
}

/** Removes the floating-point dust of `k * step` (0.30000000000000004 → 0.3). */
function clean(x: number): number {
  return Number(x.toPrecision(12));
}

/**
 * A value axis covering [min, max], widened to round tick values about `count` ticks apart.
 * A single value gets a band around it so nothing divides by a zero range.
 */
export function niceAxis(min: number, max: number, count = 5): Axis {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return niceAxis(0, 1, count);
  if (min === max) {
    const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
    min -= pad;
    max += pad;
  }
  const step = niceStep((max - min) / count);
  const lo = clean(Math.floor(min / step + 1e-9) * step);
  const hi = clean(Math.ceil(max / step - 1e-9) * step);
  const ticks: number[] = [];
  for (let k = 0; lo + k * step <= hi + step * 1e-9; k++) ticks.push(clean(lo + k * step));
  return { domain: [lo, hi], ticks };
}

/** An axis of whole numbers (epochs, steps) spanning exactly [min, max]; one value gets a band of ±1. */
export function integerAxis(min: number, max: number, count = 10): Axis {
  if (min === max) return { domain: [min - 1, max + 1], ticks: [min] };
  const step = Math.max(1, niceStep((max - min) / count));
  const ticks: number[] = [];
  for (let t = Math.ceil(min / step) * step; t <= max; t += step) ticks.push(t);
  return { domain: [min, max], ticks };
}

function scale(domain: [number, number], range: [number, number]): (v: number) => number {
  const [d0, d1] = domain;
  const [r0, r1] = range;
  return (v) => r0 + ((v - d0) / (d1 - d0)) * (r1 - r0);
}

/** SVG coordinates with two decimals: exact enough, and short. */
function coord(x: number): string {
  return String(Math.round(x * 100) / 100);
}

// ---------------------------------------------------------------------------------------------
// Charts

interface Series {
  name: string;
  color: string;
  dashed?: boolean;
  /** Points with non-finite y are gaps in the line. */
  points: Array<[number, number]>;
}

interface ChartSpec {
  /** Names the SVG for tests and screen readers. */
  id: string;
  title: string;
  series: Series[];
  x: Axis;
  xLabel: string;
  yLabel: string;
  formatY: (v: number, step: number) => string;
  /** Keeps a value axis inside [lo, hi] (accuracy cannot leave [0, 1]). */
  yLimits?: [number, number];
  best?: { x: number; label: string };
}

/** A chart's plot area: the value axis chosen for its series, and the maps from data to SVG coordinates. */
interface Plot {
  y: Axis;
  /** The value axis's tick spacing (ticks' decimals). */
  yStep: number;
  sx: (v: number) => number;
  sy: (v: number) => number;
  right: number;
  bottom: number;
}

function plotOf(spec: ChartSpec): Plot {
  const { width, height, top, right, bottom, left } = CHART_LAYOUT;
  const ys = spec.series.flatMap((s) => s.points.map(([, y]) => y)).filter(Number.isFinite);
  let y = ys.length > 0 ? niceAxis(Math.min(...ys), Math.max(...ys)) : niceAxis(0, 1);
  if (spec.yLimits) {
    const [lo, hi] = spec.yLimits;
    const domain: [number, number] = [Math.max(lo, y.domain[0]), Math.min(hi, y.domain[1])];
    if (domain[0] < domain[1]) y = { domain, ticks: y.ticks.filter((t) => t >= domain[0] && t <= domain[1]) };
  }
  const yStep = y.ticks.length > 1 ? y.ticks[1]! - y.ticks[0]! : 1;
  return {
    y,
    yStep,
    sx: scale(spec.x.domain, [left, width - right]),
    sy: scale(y.domain, [height - bottom, top]),
    right: width - right,
    bottom: height - bottom,
  };
}

/** The grid with the value ticks, the x ticks, the axis lines and their labels. */
function axesSvg(spec: ChartSpec, plot: Plot): string[] {
  const { height, top, left } = CHART_LAYOUT;
  const { right: plotRight, bottom: plotBottom } = plot;
  const parts = ['<g class="y-axis">'];
  for (const t of plot.y.ticks) {
    const py = coord(plot.sy(t));
    parts.push(`<line x1="${left}" y1="${py}" x2="${plotRight}" y2="${py}" stroke="${COLORS.grid}" />`);
    parts.push(
      `<text x="${left - 8}" y="${py}" text-anchor="end" dominant-baseline="middle">${escapeHtml(spec.formatY(t, plot.yStep))}</text>`,
    );
  }
  parts.push('</g>', '<g class="x-axis">');
  for (const t of spec.x.ticks) {
    const px = coord(plot.sx(t));
    parts.push(`<line x1="${px}" y1="${plotBottom}" x2="${px}" y2="${plotBottom + 5}" stroke="${COLORS.axis}" />`);
    parts.push(`<text x="${px}" y="${plotBottom + 18}" text-anchor="middle">${t}</text>`);
  }
  parts.push('</g>');
  parts.push(`<line x1="${left}" y1="${plotBottom}" x2="${plotRight}" y2="${plotBottom}" stroke="${COLORS.axis}" />`);
  parts.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${plotBottom}" stroke="${COLORS.axis}" />`);
  parts.push(
    `<text class="axis-label" x="${coord((left + plotRight) / 2)}" y="${height - 8}" text-anchor="middle">${escapeHtml(spec.xLabel)}</text>`,
  );
  parts.push(
    `<text class="axis-label" x="16" y="${coord((top + plotBottom) / 2)}" text-anchor="middle" transform="rotate(-90 16 ${coord((top + plotBottom) / 2)})">${escapeHtml(spec.yLabel)}</text>`,
  );
  return parts;
}

/** The kept weights' x: a dashed vertical line with its label (drawn under the series). */
function bestMarkerSvg(best: NonNullable<ChartSpec['best']>, plot: Plot): string {
  const { top, left } = CHART_LAYOUT;
  const px = coord(plot.sx(best.x));
  const anchor = plot.sx(best.x) > (left + plot.right) / 2 ? 'end' : 'start';
  const dx = anchor === 'end' ? -4 : 4;
  return (
    `<g class="best-marker"><line class="best" x1="${px}" y1="${top}" x2="${px}" y2="${plot.bottom}" stroke="${COLORS.best}" stroke-width="1.5" stroke-dasharray="5 4" />` +
    `<text x="${coord(plot.sx(best.x) + dx)}" y="${top + 12}" text-anchor="${anchor}" fill="${COLORS.best}" font-weight="600">${escapeHtml(best.label)}</text></g>`
  );
}

/** One series: a polyline per unbroken run of finite points, and a marker per point while they are few. */
function seriesSvg(s: Series, spec: ChartSpec, plot: Plot): string[] {
  const { sx, sy } = plot;
  const cls = escapeHtml(s.name.toLowerCase().replace(/[^a-z0-9]+/g, '-'));
  const parts = [`<g class="series series-${cls}">`];
  let run: string[] = [];
  const flush = (): void => {
    if (run.length > 0) {
      const dash = s.dashed ? ' stroke-dasharray="6 3"' : '';
      parts.push(
        `<polyline points="${run.join(' ')}" fill="none" stroke="${s.color}" stroke-width="2"${dash} stroke-linejoin="round" stroke-linecap="round" />`,
      );
    }
    run = [];
  };
  for (const [x, v] of s.points) {
    if (Number.isFinite(v)) run.push(`${coord(sx(x))},${coord(sy(v))}`);
    else flush();
  }
  flush();
  if (s.points.length <= MAX_MARKERS) {
    for (const [x, v] of s.points) {
      if (!Number.isFinite(v)) continue;
      const ring = spec.best && x === spec.best.x ? ` stroke="${COLORS.best}" stroke-width="2"` : ' stroke="#fff" stroke-width="1"';
      parts.push(
        `<circle cx="${coord(sx(x))}" cy="${coord(sy(v))}" r="${spec.best && x === spec.best.x ? 4.5 : 3}" fill="${s.color}"${ring}><title>${escapeHtml(`${s.name}, ${spec.xLabel} ${x}: ${spec.formatY(v, plot.yStep / 100)}`)}</title></circle>`,
      );
    }
  }
  parts.push('</g>');
  return parts;
}

/** The legend above the plot area: each series, and the kept weights' marker. */
function legendSvg(spec: ChartSpec): string[] {
  const parts = ['<g class="legend">'];
  let lx: number = CHART_LAYOUT.left;
  for (const s of spec.series) {
    parts.push(
      `<line x1="${lx}" y1="16" x2="${lx + 18}" y2="16" stroke="${s.color}" stroke-width="2.5"${s.dashed ? ' stroke-dasharray="6 3"' : ''} />`,
    );
    parts.push(`<text x="${lx + 24}" y="16" dominant-baseline="middle">${escapeHtml(s.name)}</text>`);
    lx += 24 + s.name.length * 7 + 20;
  }
  if (spec.best) {
    parts.push(`<line x1="${lx}" y1="16" x2="${lx + 18}" y2="16" stroke="${COLORS.best}" stroke-width="1.5" stroke-dasharray="5 4" />`);
    parts.push(`<text x="${lx + 24}" y="16" dominant-baseline="middle">kept weights</text>`);
  }
  parts.push('</g>');
  return parts;
}

function lineChart(spec: ChartSpec): string {
  const { width, height } = CHART_LAYOUT;
  const plot = plotOf(spec);
  return [
    `<svg id="${escapeHtml(spec.id)}" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeHtml(spec.title)}">`,
    `<title>${escapeHtml(spec.title)}</title>`,
    ...axesSvg(spec, plot),
    ...(spec.best ? [bestMarkerSvg(spec.best, plot)] : []),
    ...spec.series.flatMap((s) => seriesSvg(s, spec, plot)),
    ...legendSvg(spec),
    '</svg>',
  ].join('\n');
}

function decimalsFor(step: number): number {
  return Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
}

const formatLossTick = (v: number, step: number): string => v.toFixed(decimalsFor(step));
const formatPercentTick = (v: number, step: number): string => `${(v * 100).toFixed(decimalsFor(step * 100))}%`;

function lossChartsFor(history: EpochMetrics[]): string {
  if (history.length === 0) return '<p class="empty">No epochs were recorded.</p>';
  const epochs = history.map((m) => m.epoch);
  const x = integerAxis(Math.min(...epochs), Math.max(...epochs));
  const best = bestEpoch(history);
  const bestMark = best ? { x: best.epoch, label: `best: epoch ${best.epoch}` } : undefined;
  const loss = lineChart({
    id: 'chart-loss',
    title: 'Loss per epoch',
    series: [
      { name: 'train', color: COLORS.train, points: history.map((m) => [m.epoch, m.trainLoss]) },
      { name: 'validation', color: COLORS.validation, points: history.map((m) => [m.epoch, m.validationLoss]) },
    ],
    x,
    xLabel: 'epoch',
    yLabel: 'loss',
    formatY: formatLossTick,
    best: bestMark,
  });
  if (isRegression(history)) {
    const correlation = correlationChart(history, (m) => m.epoch, {
      id: 'chart-correlation',
      title: 'Correlation per epoch',
      x,
      xLabel: 'epoch',
      best: bestMark,
    });
    return `<div class="charts"><figure><figcaption>Loss</figcaption>${loss}</figure><figure><figcaption>Correlation</figcaption>${correlation}</figure></div>`;
  }
  const accuracySeries: Series[] = [
    { name: 'train', color: COLORS.train, points: history.map((m) => [m.epoch, m.trainAccuracy ?? NaN]) },
    { name: 'validation', color: COLORS.validation, points: history.map((m) => [m.epoch, m.validationAccuracy ?? NaN]) },
  ];
  if (history.some((m) => macroF1Of(m) !== undefined)) {
    accuracySeries.push({
      name: 'validation macro-F1',
      color: COLORS.macroF1,
      dashed: true,
      points: history.map((m) => [m.epoch, macroF1Of(m) ?? NaN]),
    });
  }
  const accuracy = lineChart({
    id: 'chart-accuracy',
    title: 'Accuracy per epoch',
    series: accuracySeries,
    x,
    xLabel: 'epoch',
    yLabel: 'accuracy',
    formatY: formatPercentTick,
    yLimits: [0, 1],
    best: bestMark,
  });
  return `<div class="charts"><figure><figcaption>Loss</figcaption>${loss}</figure><figure><figcaption>Accuracy</figcaption>${accuracy}</figure></div>`;
}

function evaluationChartsFor(evaluations: StepEvaluation[]): string {
  const sorted = [...evaluations].sort((a, b) => a.step - b.step);
  const steps = sorted.map((e) => e.step);
  const x = integerAxis(Math.min(...steps), Math.max(...steps));
  const flagged = sorted.filter((e) => e.isBest);
  const bestStep = flagged.length > 0 ? flagged[flagged.length - 1]!.step : undefined;
  const bestMark = bestStep === undefined ? undefined : { x: bestStep, label: `best: step ${bestStep}` };
  const loss = lineChart({
    id: 'chart-step-loss',
    title: 'Validation loss by step',
    series: [{ name: 'validation', color: COLORS.validation, points: sorted.map((e) => [e.step, e.validationLoss]) }],
    x,
    xLabel: 'step',
    yLabel: 'loss',
    formatY: formatLossTick,
    best: bestMark,
  });
  if (isRegression(sorted)) {
    const correlation = correlationChart(sorted, (e) => (e as StepEvaluation).step, {
      id: 'chart-step-correlation',
      title: 'Validation correlation by step',
      x,
      xLabel: 'step',
      best: bestMark,
    });
    return `<div class="charts"><figure><figcaption>Validation loss</figcaption>${loss}</figure><figure><figcaption>Validation correlation</figcaption>${correlation}</figure></div>`;
  }
  const accuracySeries: Series[] = [
    { name: 'validation', color: COLORS.validation, points: sorted.map((e) => [e.step, e.validationAccuracy ?? NaN]) },
  ];
  if (sorted.some((e) => macroF1Of(e) !== undefined)) {
    accuracySeries.push({
      name: 'validation macro-F1',
      color: COLORS.macroF1,
      dashed: true,
      points: sorted.map((e) => [e.step, macroF1Of(e) ?? NaN]),
    });
  }
  const accuracy = lineChart({
    id: 'chart-step-accuracy',
    title: 'Validation accuracy by step',
    series: accuracySeries,
    x,
    xLabel: 'step',
    yLabel: 'accuracy',
    formatY: formatPercentTick,
    yLimits: [0, 1],
    best: bestMark,
  });
  return `<div class="charts"><figure><figcaption>Validation loss</figcaption>${loss}</figure><figure><figcaption>Validation accuracy</figcaption>${accuracy}</figure></div>`;
}

// ---------------------------------------------------------------------------------------------
// Tables

const formatLoss = (v: number): string => (Number.isFinite(v) ? v.toFixed(4) : '—');
const formatPercent = (v: number): string => (Number.isFinite(v) ? `${(v * 100).toFixed(1)}%` : '—');
const formatRatio = (v: number): string => (Number.isFinite(v) ? v.toFixed(3) : '—');

function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return '—';
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function historyTable(history: EpochRecord[], best: EpochMetrics | undefined): string {
  if (history.length === 0) return '';
  if (isRegression(history)) return regressionHistoryTable(history, best);
  const withF1 = history.some((m) => macroF1Of(m) !== undefined);
  const rows = history.map((m) => {
    const isBest = m === best;
    return (
      `<tr${isBest ? ' class="best-row"' : ''}><td>${m.epoch}${isBest ? ' <span class="badge">best</span>' : ''}</td>` +
      `<td>${formatLoss(m.trainLoss)}</td><td>${formatPercent(m.trainAccuracy ?? NaN)}</td>` +
      `<td>${formatLoss(m.validationLoss)}</td><td>${formatPercent(m.validationAccuracy ?? NaN)}</td>` +
      (withF1 ? `<td>${formatRatio(macroF1Of(m) ?? NaN)}</td>` : '') +
      `<td>${formatSeconds(m.seconds)}</td></tr>`
    );
  });
  return (
    '<table class="numbers history"><thead><tr><th>epoch</th><th>train loss</th><th>train accuracy</th>' +
    `<th>validation loss</th><th>validation accuracy</th>${withF1 ? '<th>validation macro-F1</th>' : ''}<th>time</th></tr></thead>` +
    `<tbody>${rows.join('')}</tbody></table>`
  );
}

function regressionHistoryTable(history: EpochRecord[], best: EpochMetrics | undefined): string {
  const rows = history.map((m) => {
    const isBest = m === best;
    return (
      `<tr${isBest ? ' class="best-row"' : ''}><td>${m.epoch}${isBest ? ' <span class="badge">best</span>' : ''}</td>` +
      `<td>${formatLoss(m.trainLoss)}</td><td>${formatLoss(m.validationLoss)}</td>` +
      `<td>${formatRatio(m.validationPearson ?? NaN)}</td><td>${formatRatio(m.validationSpearman ?? NaN)}</td>` +
      `<td>${formatSeconds(m.seconds)}</td></tr>`
    );
  });
  return (
    '<table class="numbers history"><thead><tr><th>epoch</th><th>train loss</th><th>validation loss</th>' +
    '<th>validation Pearson</th><th>validation Spearman</th><th>time</th></tr></thead>' +
    `<tbody>${rows.join('')}</tbody></table>`
  );
}

/** A regression model's metrics on the validation data: its errors and correlations; with several outputs, a row per output, then all. */
function regressionTable(m: RegressionMetrics): string {
  if (m.perOutput) {
    const row = (name: string, o: Pick<RegressionMetrics, 'mse' | 'mae' | 'pearson' | 'spearman'>) =>
      `<tr><th scope="row">${escapeHtml(name)}</th>${[formatLoss(o.mse), formatLoss(o.mae), formatRatio(o.pearson), formatRatio(o.spearman)].map((c) => `<td>${c}</td>`).join('')}</tr>`;
    return (
      '<table class="numbers"><thead><tr><th>output</th><th>mean squared error</th><th>mean absolute error</th><th>Pearson\'s r</th><th>Spearman\'s ρ</th></tr></thead>' +
      `<tbody>${m.perOutput.map((o) => row(o.output, o)).join('')}</tbody><tfoot>${row(`all (${m.examples} examples)`, m)}</tfoot></table>`
    );
  }
  const rows: Array<[string, string]> = [
    ['mean squared error', formatLoss(m.mse)],
    ['mean absolute error', formatLoss(m.mae)],
    ["Pearson's r", formatRatio(m.pearson)],
    ["Spearman's ρ", formatRatio(m.spearman)],
    ['examples', String(m.examples)],
  ];
  return `<table class="settings"><tbody>${rows.map(([k, v]) => `<tr><th scope="row">${escapeHtml(k)}</th><td>${v}</td></tr>`).join('')}</tbody></table>`;
}

/** A multi-label classifier's metrics: each class's precision, recall, F1 and support, then subset accuracy and the F1 averages. */
function multiLabelTable(m: MultiLabelMetrics): string {
  const row = (name: string, cells: string[]) =>
    `<tr><th scope="row">${escapeHtml(name)}</th>${cells.map((c) => `<td>${c}</td>`).join('')}</tr>`;
  const body = m.perClass.map((c) => row(c.label, [formatRatio(c.precision), formatRatio(c.recall), formatRatio(c.f1), String(c.support)]));
  const foot = [
    row('subset accuracy', ['', '', formatRatio(m.accuracy), String(m.examples)]),
    row('micro F1', ['', '', formatRatio(m.microF1), String(m.examples)]),
    row('macro F1', ['', '', formatRatio(m.macroF1), String(m.examples)]),
  ];
  return (
    '<table class="numbers"><thead><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr></thead>' +
    `<tbody>${body.join('')}</tbody><tfoot>${foot.join('')}</tfoot></table>`
  );
}

/** Background of a confusion-matrix cell: blue for correct predictions, red for confusions, by row share. */
function cellShade(share: number, diagonal: boolean): { background: string; color: string } {
  const [r, g, b] = diagonal ? [37, 99, 235] : [220, 38, 38];
  const alpha = Math.round(Math.min(1, Math.max(0, share)) * 0.85 * 1000) / 1000;
  return { background: `rgba(${r}, ${g}, ${b}, ${alpha})`, color: alpha > 0.45 ? '#fff' : '#111827' };
}

function confusionTable(m: ClassificationMetrics): string {
  const labels = m.perClass.map((c) => c.label);
  const head =
    '<thead><tr><th class="corner">true \\ predicted</th>' +
    labels.map((l) => `<th class="predicted" scope="col">${escapeHtml(l)}</th>`).join('') +
    '<th class="metric first-metric" scope="col">precision</th><th class="metric" scope="col">recall</th>' +
    '<th class="metric" scope="col">F1</th><th class="metric" scope="col">support</th></tr></thead>';
  const body = m.confusionMatrix.map((row, t) => {
    const rowTotal = row.reduce((s, v) => s + v, 0);
    const cells = row.map((count, p) => {
      const share = rowTotal === 0 ? 0 : count / rowTotal;
      const shade = cellShade(share, t === p);
      const tip = `true ${labels[t]}, predicted ${labels[p]}: ${count} of ${rowTotal} (${formatPercent(share)})`;
      return (
        `<td class="cell${t === p ? ' diagonal' : ''}" style="background: ${shade.background}; color: ${shade.color}" title="${escapeHtml(tip)}">` +
        `<span class="count">${count}</span><span class="share">${rowTotal === 0 ? '' : formatPercent(share)}</span></td>`
      );
    });
    const c = m.perClass[t]!;
    return (
      `<tr><th scope="row">${escapeHtml(labels[t]!)}</th>${cells.join('')}` +
      `<td class="metric first-metric">${formatRatio(c.precision)}</td><td class="metric">${formatRatio(c.recall)}</td>` +
      `<td class="metric">${formatRatio(c.f1)}</td><td class="metric">${c.support}</td></tr>`
    );
  });
  const foot =
    `<tfoot><tr><th scope="row">accuracy</th><td colspan="${labels.length}"></td><td class="metric first-metric" colspan="2"></td>` +
    `<td class="metric">${formatRatio(m.accuracy)}</td><td class="metric">${m.examples}</td></tr>` +
    `<tr><th scope="row">macro F1</th><td colspan="${labels.length}"></td><td class="metric first-metric" colspan="2"></td>` +
    `<td class="metric">${formatRatio(m.macroF1)}</td><td class="metric">${m.examples}</td></tr></tfoot>`;
  return `<div class="scroll"><table class="confusion">${head}<tbody>${body.join('')}</tbody>${foot}</table></div>`;
}

function formatSetting(value: unknown): string {
  if (value === undefined || value === null) return '—';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  try {
    return JSON.stringify(value, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v)) ?? String(value);
  } catch {
    return String(value);
  }
}

function settingsTable(settings: Record<string, unknown>): string {
  const entries = Object.entries(settings ?? {});
  if (entries.length === 0) return '<p class="empty">No settings were recorded.</p>';
  const rows = entries.map(
    ([key, value]) => `<tr><th scope="row">${escapeHtml(key)}</th><td>${escapeHtml(formatSetting(value))}</td></tr>`,
  );
  return `<table class="settings"><tbody>${rows.join('')}</tbody></table>`;
}

function summaryCards(input: ReportInput, best: EpochMetrics | undefined): string {
  const cards: Array<[string, string]> = [];
  if (best) {
    cards.push(['kept epoch', `${best.epoch} of ${input.history.length}`]);
    cards.push(['validation loss', formatLoss(best.validationLoss)]);
    if (best.validationPearson !== undefined) cards.push(['validation Pearson', formatRatio(best.validationPearson)]);
    else cards.push(['validation accuracy', formatPercent(best.validationAccuracy ?? NaN)]);
  }
  if (input.final) {
    if ('spearman' in input.final) cards.push(['Spearman', formatRatio(input.final.spearman)]);
    else cards.push(['macro F1', formatRatio(input.final.macroF1)]);
    cards.push(['evaluated examples', String(input.final.examples)]);
  }
  if (input.history.length > 0) cards.push(['training time', formatSeconds(input.history.reduce((s, m) => s + m.seconds, 0))]);
  if (!(input.final && 'spearman' in input.final)) cards.push(['classes', String(input.labels.length)]);
  return `<div class="cards">${cards
    .map(
      ([name, value]) =>
        `<div class="card"><div class="card-value">${escapeHtml(value)}</div><div class="card-name">${escapeHtml(name)}</div></div>`,
    )
    .join('')}</div>`;
}

const STYLE = `
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f3f4f6; color: #1f2937;
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 40px; }
header h1 { margin: 0 0 2px; font-size: 24px; font-weight: 650; overflow-wrap: anywhere; }
header .meta { color: #6b7280; }
section { background: #fff; border: 1px solid #e5e7eb; border-radius: 10px; padding: 16px 20px; margin: 16px 0; }
section h2 { margin: 0 0 12px; font-size: 16px; font-weight: 600; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin-top: 16px; }
.card { background: #fff; border: 1px solid #e5e7eb; border-radius: 10px; padding: 12px 16px; }
.card-value { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card-name { color: #6b7280; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr)); gap: 16px; }
figure { margin: 0; }
figcaption { font-weight: 600; color: #374151; margin-bottom: 4px; }
svg.chart { width: 100%; height: auto; display: block; }
svg.chart text { font-size: 11px; fill: ${COLORS.text}; font-family: inherit; }
svg.chart .axis-label { font-size: 12px; fill: #374151; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; }
th { font-weight: 600; text-align: left; }
table.numbers td { text-align: right; }
table.numbers th { text-align: right; }
table.numbers th:first-child, table.numbers td:first-child { text-align: left; }
table.history thead th, table.confusion thead th { border-bottom: 1px solid #d1d5db; color: #374151; }
table.history tbody tr + tr td { border-top: 1px solid #f3f4f6; }
tr.best-row td { background: #f0fdf4; }
.badge { display: inline-block; margin-left: 6px; padding: 0 6px; border-radius: 8px; font-size: 11px;
  background: ${COLORS.best}; color: #fff; vertical-align: 1px; }
.scroll { overflow-x: auto; }
table.confusion th, table.confusion td { padding: 4px 7px; }
table.confusion th.predicted { text-align: center; min-width: 56px; max-width: 130px; font-size: 12px; overflow-wrap: break-word; vertical-align: bottom; }
table.confusion th.corner { color: #6b7280; font-weight: 500; vertical-align: bottom; }
table.confusion tbody th { max-width: 220px; overflow-wrap: break-word; }
table.confusion td.cell { text-align: center; min-width: 56px; border: 2px solid #fff; border-radius: 4px; }
table.confusion td.diagonal { font-weight: 600; }
table.confusion .count { display: block; font-size: 15px; }
table.confusion .share { display: block; font-size: 11px; opacity: .8; min-height: 1em; }
table.confusion td.metric { text-align: right; }
table.confusion .first-metric { border-left: 1px solid #d1d5db; padding-left: 14px; }
table.confusion tfoot th, table.confusion tfoot td { border-top: 1px solid #e5e7eb; }
table.confusion tfoot tr + tr th, table.confusion tfoot tr + tr td { border-top: none; }
table.settings th { color: #374151; font-weight: 500; white-space: nowrap; vertical-align: top; }
table.settings td { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; overflow-wrap: anywhere; }
table.settings tr + tr th, table.settings tr + tr td { border-top: 1px solid #f3f4f6; }
.legend-note, .empty { color: #6b7280; margin: 8px 0 0; }
.labels { margin: 0; padding: 0; list-style: none; display: flex; flex-wrap: wrap; gap: 6px; }
.labels li { background: #f3f4f6; border-radius: 6px; padding: 1px 8px; }
footer { color: #9ca3af; font-size: 12px; text-align: center; margin-top: 24px; }
`;

/** The page's sections, in order: curves, step evaluations, epochs, confusion matrix, classes, settings (each where there is one). */
function reportSections(input: ReportInput, history: EpochMetrics[], best: EpochMetrics | undefined): string[] {
  const sections: string[] = [];

  sections.push(
    `<section id="curves"><h2>Training curves</h2>${lossChartsFor(history)}` +
      (best
        ? `<p class="legend-note">The dashed green line marks epoch ${best.epoch}, the best evaluation; its weights are the ones kept.</p>`
        : '') +
      '</section>',
  );
  if (input.evaluations && input.evaluations.length > 0) {
    sections.push(`<section id="step-evaluations"><h2>Validation during training</h2>${evaluationChartsFor(input.evaluations)}</section>`);
  }
  if (history.length > 0)
    sections.push(`<section id="epochs"><h2>Epochs</h2><div class="scroll">${historyTable(history, best)}</div></section>`);
  if (input.final && 'spearman' in input.final) {
    sections.push(`<section id="regression"><h2>Errors and correlations</h2>${regressionTable(input.final)}</section>`);
  } else if (input.final && 'microF1' in input.final) {
    sections.push(
      '<section id="per-class"><h2>Per-class metrics</h2><p class="legend-note">A class is predicted where its probability is at least 0.5; ' +
        `subset accuracy counts the examples whose every class is right.</p><div class="scroll">${multiLabelTable(input.final)}</div></section>`,
    );
  } else if (input.final) {
    sections.push(
      '<section id="confusion"><h2>Confusion matrix and per-class metrics</h2>' +
        '<p class="legend-note">Rows are true classes, columns predicted classes; shading is the share of the row ' +
        '(blue: correct, red: confused).</p>' +
        `${confusionTable(input.final)}</section>`,
    );
  }
  // A regression model has an output, not classes.
  if (!(input.final && 'spearman' in input.final))
    sections.push(
      `<section id="labels"><h2>Classes</h2><ol class="labels" start="0">${input.labels
        .map((l, i) => `<li><span class="meta">${i}</span> ${escapeHtml(l)}</li>`)
        .join('')}</ol></section>`,
    );
  sections.push(`<section id="settings"><h2>Settings</h2>${settingsTable(input.settings)}</section>`);
  return sections;
}

/** The run as one self-contained HTML page (no scripts, no external assets). */
export function renderReport(input: ReportInput): string {
  const history = input.history ?? [];
  const best = bestEpoch(history);
  const title = escapeHtml(input.title);
  const sections = reportSections(input, history, best);
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title>
<style>${STYLE}</style>
</head>
<body>
<main>
<header><h1>${title}</h1><div class="meta">${escapeHtml(input.createdAt)}</div>${summaryCards(input, best)}</header>
${sections.join('\n')}
<footer>Generated by torch-bert</footer>
</main>
</body>
</html>
`;
}
