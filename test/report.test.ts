import { describe, expect, it } from 'vitest';
import { classificationMetrics } from '../lib/training/metrics.js';
import type { EpochMetrics } from '../lib/training/options.js';
import { bestEpoch, CHART_LAYOUT, escapeHtml, integerAxis, niceAxis, type ReportInput, renderReport } from '../lib/training/report.js';

function epoch(
  e: number,
  trainLoss: number,
  validationLoss: number,
  trainAccuracy: number,
  validationAccuracy: number,
  isBest: boolean,
): EpochMetrics {
  return { epoch: e, trainLoss, trainAccuracy, validationLoss, validationAccuracy, seconds: 10, isBest } as EpochMetrics;
}

const HISTORY: EpochMetrics[] = [
  epoch(1, 1.0, 0.9, 0.5, 0.6, true),
  epoch(2, 0.6, 0.7, 0.7, 0.75, true),
  epoch(3, 0.4, 0.8, 0.8, 0.7, false),
];

function render(overrides: Partial<ReportInput> = {}): string {
  return renderReport({
    title: 'run',
    history: HISTORY,
    labels: ['a', 'b'],
    settings: {},
    createdAt: '2025-01-01T00:00:00Z',
    ...overrides,
  });
}

const VOID = new Set(['meta', 'br', 'hr', 'img', 'input', 'link']);

/** Every tag closed in order, and no raw `<` or `>` left in text or attribute values. */
function expectWellFormed(html: string): void {
  expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
  const body = html.slice('<!DOCTYPE html>'.length);
  const stack: string[] = [];
  const tag = /<(\/?)([a-zA-Z][\w-]*)((?:\s+[\w:-]+(?:="[^"<>]*")?)*)\s*(\/?)>/g;
  let last = 0;
  for (let m = tag.exec(body); m; m = tag.exec(body)) {
    const between = body.slice(last, m.index);
    expect(between, `text before <${m[1]}${m[2]}> at ${m.index}`).not.toMatch(/[<>]/);
    last = tag.lastIndex;
    const [, closing, name, , selfClosing] = m;
    const lower = name!.toLowerCase();
    if (closing) {
      expect(stack.pop(), `</${lower}> at ${m.index}`).toBe(lower);
    } else if (!selfClosing && !VOID.has(lower)) {
      stack.push(lower);
    }
  }
  expect(body.slice(last)).not.toMatch(/[<>]/);
  expect(stack).toEqual([]);
}

function svgOf(html: string, id: string): string {
  const m = new RegExp(`<svg id="${id}"[\\s\\S]*?</svg>`).exec(html);
  expect(m, `svg #${id}`).not.toBeNull();
  return m![0];
}

function polylines(svg: string, series: string): string[] {
  const group = new RegExp(`<g class="series series-${series}">([\\s\\S]*?)</g>`).exec(svg);
  expect(group, `series ${series}`).not.toBeNull();
  return [...group![1]!.matchAll(/<polyline points="([^"]*)"/g)].map((m) => m[1]!);
}

describe('renderReport', () => {
  it('is well-formed: balanced tags, svg and table tags paired, no stray angle brackets', () => {
    const final = classificationMetrics(Int32Array.from([0, 1, 1, 0]), Int32Array.from([0, 1, 0, 0]), ['a', 'b']);
    const html = render({
      final,
      evaluations: [{ step: 10, epoch: 1, validationLoss: 1, validationAccuracy: 0.5 }],
      settings: { lr: 1e-5, betas: [0.9, 0.999] },
    });
    expectWellFormed(html);
    const count = (re: RegExp): number => html.match(re)?.length ?? 0;
    expect(count(/<svg\b/g)).toBe(4);
    expect(count(/<\/svg>/g)).toBe(4);
    expect(count(/<table\b/g)).toBe(count(/<\/table>/g));
    expect(count(/<table\b/g)).toBe(3); // epochs, confusion, settings
    expect(html).not.toMatch(/NaN|Infinity|undefined/);
    expect(html).not.toMatch(/<script|<link|src=|href=/i); // self-contained, no JS
  });

  it('maps a known history through the chart scales', () => {
    // Plot area x ∈ [64, 540], y ∈ [40, 254]; epochs 1..3 → x 64, 302, 540.
    expect(CHART_LAYOUT).toMatchObject({ width: 560, height: 300, top: 40, right: 20, bottom: 46, left: 64 });
    const html = render();
    // Losses span 0.4..1.0 → ticks every 0.2 on [0.4, 1.0]: y = 254 − (v − 0.4) / 0.6 · 214.
    const loss = svgOf(html, 'chart-loss');
    expect(polylines(loss, 'train')).toEqual(['64,40 302,182.67 540,254']);
    expect(polylines(loss, 'validation')).toEqual(['64,75.67 302,147 540,111.33']);
    expect([...loss.matchAll(/text-anchor="end" dominant-baseline="middle">([^<]*)</g)].map((m) => m[1])).toEqual([
      '0.4',
      '0.6',
      '0.8',
      '1.0',
    ]);
    expect([...loss.matchAll(/y="272" text-anchor="middle">([^<]*)</g)].map((m) => m[1])).toEqual(['1', '2', '3']);
    // Accuracies span 0.5..0.8 → ticks every 10% on [0.5, 0.8]: y = 254 − (v − 0.5) / 0.3 · 214.
    const accuracy = svgOf(html, 'chart-accuracy');
    expect(polylines(accuracy, 'train')).toEqual(['64,254 302,111.33 540,40']);
    expect(polylines(accuracy, 'validation')).toEqual(['64,182.67 302,75.67 540,111.33']);
    expect(accuracy).toContain('>50%<');
    expect(accuracy).toContain('>80%<');
    // Axis names and legend.
    expect(loss).toContain('>epoch</text>');
    expect(loss).toContain('>loss</text>');
    expect(loss).toMatch(/<g class="legend">[\s\S]*>train<[\s\S]*>validation<[\s\S]*>kept weights</);
  });

  it('marks the best epoch (the last flagged one) on both charts and in the table', () => {
    const html = render();
    expect(bestEpoch(HISTORY)?.epoch).toBe(2);
    for (const id of ['chart-loss', 'chart-accuracy']) {
      const svg = svgOf(html, id);
      expect(svg).toMatch(/<line class="best" x1="302" y1="40" x2="302" y2="254"/);
      expect(svg).toContain('best: epoch 2');
      // The validation-loss point of epoch 2 gets a larger ringed marker.
      expect(svg).toMatch(/<circle cx="302" cy="[\d.]+" r="4.5"/);
    }
    expect(html).toMatch(/<tr class="best-row"><td>2 <span class="badge">best<\/span><\/td>/);
    expect(html.match(/<tr class="best-row">/g)).toHaveLength(1);
  });

  it('falls back to the lowest validation loss when no epoch is flagged', () => {
    expect(bestEpoch(HISTORY.map((m) => ({ ...m, isBest: false })))?.epoch).toBe(2);
    expect(bestEpoch([])).toBeUndefined();
  });

  it('renders a 1-epoch history without dividing by zero', () => {
    // Equal accuracies: a zero-height range; one epoch: a zero-width range.
    const html = render({ history: [epoch(1, 0.5, 0.7, 0.8, 0.8, true)] });
    expectWellFormed(html);
    expect(html).not.toMatch(/NaN|Infinity/);
    const loss = svgOf(html, 'chart-loss');
    // The single epoch sits mid-plot; losses 0.5..0.7 → axis [0.5, 0.7].
    expect(polylines(loss, 'train')).toEqual(['302,254']);
    expect(polylines(loss, 'validation')).toEqual(['302,40']);
    expect(loss).toMatch(/<circle cx="302" cy="254"/);
    expect(loss).toMatch(/<line class="best" x1="302"/);
    // 0.8 alone gets a band around it, [0.7, 0.9], so it sits mid-height.
    const accuracy = svgOf(html, 'chart-accuracy');
    expect(polylines(accuracy, 'train')).toEqual(['302,147']);
    expect(polylines(accuracy, 'validation')).toEqual(['302,147']);
  });

  it('renders an empty history as a note, not a broken chart', () => {
    const html = render({ history: [] });
    expectWellFormed(html);
    expect(html).toContain('No epochs were recorded.');
    expect(html).not.toMatch(/NaN|Infinity|<svg/);
  });

  it('leaves gaps for non-finite values instead of drawing NaN', () => {
    const html = render({
      history: [epoch(1, 1, 0.9, 0.5, 0.6, true), epoch(2, NaN, 0.7, 0.7, 0.75, true), epoch(3, 0.4, 0.8, 0.8, 0.7, false)],
    });
    expect(html).not.toMatch(/NaN/);
    expect(polylines(svgOf(html, 'chart-loss'), 'train')).toHaveLength(2);
  });

  it('escapes labels, title, settings and creation time', () => {
    const evil = '<script>alert("x")</script>';
    const final = classificationMetrics(Int32Array.from([0, 1]), Int32Array.from([0, 1]), ['ok', evil]);
    const html = render({
      title: `A & B ${evil}`,
      labels: ['ok', evil],
      final,
      settings: { [evil]: evil, nested: { tag: '<b>' }, "quote'": 'a"b' },
      createdAt: evil,
    });
    expectWellFormed(html);
    expect(html).not.toMatch(/<script|<b>/i);
    expect(html).toContain('A &#38; B &#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62;');
    expect(html).toContain(`<th scope="row">${escapeHtml(evil)}</th><td>${escapeHtml(evil)}</td>`);
    expect(html).toContain('{&#34;tag&#34;:&#34;&#60;b&#62;&#34;}');
    expect(html).toContain('<th scope="row">quote&#39;</th><td>a&#34;b</td>');
  });

  it('shows the confusion matrix with counts, row-normalised shading and per-class metrics', () => {
    // true a: predicted a ×3, b ×1; true b: predicted b ×2.
    const final = classificationMetrics(Int32Array.from([0, 0, 0, 1, 1, 1]), Int32Array.from([0, 0, 0, 0, 1, 1]), ['cat', 'dog']);
    const html = render({ final, labels: ['cat', 'dog'] });
    const table = /<table class="confusion">[\s\S]*?<\/table>/.exec(html)![0];
    expect(table).toContain('<th class="predicted" scope="col">cat</th><th class="predicted" scope="col">dog</th>');
    // Row shares 3/4 and 1/4 on the cat row: alpha = share · 0.85; blue on the diagonal, red off it.
    expect(table).toMatch(/background: rgba\(37, 99, 235, 0.638\)[^>]*><span class="count">3<\/span><span class="share">75.0%<\/span>/);
    expect(table).toMatch(/background: rgba\(220, 38, 38, 0.213\)[^>]*><span class="count">1<\/span><span class="share">25.0%<\/span>/);
    expect(table).toMatch(/background: rgba\(37, 99, 235, 0.85\)[^>]*><span class="count">2<\/span>/);
    // cat: P 1, R 0.75, F1 6/7; dog: P 2/3, R 1, F1 0.8.
    expect(table).toMatch(
      /<th scope="row">cat<\/th>.*<td class="metric first-metric">1.000<\/td><td class="metric">0.750<\/td><td class="metric">0.857<\/td><td class="metric">4<\/td>/,
    );
    expect(table).toMatch(
      /<th scope="row">dog<\/th>.*<td class="metric first-metric">0.667<\/td><td class="metric">1.000<\/td><td class="metric">0.800<\/td><td class="metric">2<\/td>/,
    );
    expect(table).toMatch(/accuracy<\/th>.*<td class="metric">0.833<\/td><td class="metric">6<\/td>/);
  });

  it('draws per-step evaluations by step, sorted, with their best step marked', () => {
    const html = render({
      evaluations: [
        { step: 30, epoch: 2, validationLoss: 0.8, validationAccuracy: 0.7, isBest: false },
        { step: 10, epoch: 1, validationLoss: 1.0, validationAccuracy: 0.5, isBest: true },
        { step: 20, epoch: 1, validationLoss: 0.6, validationAccuracy: 0.8, isBest: true },
      ],
    });
    const loss = svgOf(html, 'chart-step-loss');
    expect(polylines(loss, 'validation')).toEqual(['64,40 302,254 540,147']);
    expect(loss).toMatch(/<line class="best" x1="302"/);
    expect(loss).toContain('best: step 20');
    expect(loss).toContain('>step</text>');
  });

  it('adds validation macro-F1 to the accuracy chart and the table when the history has it', () => {
    const history = HISTORY.map((m, i) => ({ ...m, validationMacroF1: [0.55, 0.65, 0.6][i]! }));
    const html = render({ history });
    const accuracy = svgOf(html, 'chart-accuracy');
    expect(polylines(accuracy, 'validation-macro-f1')).toEqual(['64,218.33 302,147 540,182.67']);
    expect(html).toContain('<th>validation macro-F1</th>');
    expect(html).toContain('<td>0.650</td>');
  });
});

describe('axes', () => {
  it('niceAxis rounds outward to 1-2-5 steps and widens a single value', () => {
    expect(niceAxis(0.4, 1.0)).toEqual({ domain: [0.4, 1], ticks: [0.4, 0.6, 0.8, 1] });
    expect(niceAxis(0.31, 0.69)).toEqual({ domain: [0.3, 0.7], ticks: [0.3, 0.4, 0.5, 0.6, 0.7] });
    expect(niceAxis(0, 0)).toEqual({ domain: [-1, 1], ticks: [-1, -0.5, 0, 0.5, 1] });
    expect(niceAxis(2, 2).domain).toEqual([1.8, 2.2]);
    expect(niceAxis(NaN, 1).domain).toEqual([0, 1]);
  });

  it('integerAxis spans exactly the range with whole ticks', () => {
    expect(integerAxis(1, 3)).toEqual({ domain: [1, 3], ticks: [1, 2, 3] });
    expect(integerAxis(1, 1)).toEqual({ domain: [0, 2], ticks: [1] });
    expect(integerAxis(1, 50).ticks).toEqual([5, 10, 15, 20, 25, 30, 35, 40, 45, 50]);
  });
});

describe("a regression run's report", () => {
  const regressionEpoch = (e: number, validationLoss: number, pearson: number, spearman: number, isBest: boolean): EpochMetrics => ({
    epoch: e,
    trainLoss: validationLoss + 0.1,
    validationLoss,
    validationPearson: pearson,
    validationSpearman: spearman,
    seconds: 10,
    isBest,
  });
  const html = render({
    history: [regressionEpoch(1, 0.9, 0.61, 0.58, true), regressionEpoch(2, 0.7, 0.734, 0.7, true)],
    final: { mse: 0.7, mae: 0.65, pearson: 0.734, spearman: 0.7, examples: 40 },
    labels: ['LABEL_0'],
  });

  it('curves of Pearson and Spearman, their columns, the errors and correlations; no accuracy, confusion matrix or classes', () => {
    expectWellFormed(html);
    expect(html).toContain('Correlation per epoch');
    expect(html).toContain('<th>validation Pearson</th><th>validation Spearman</th>');
    expect(html).toContain('<td>0.734</td><td>0.700</td>');
    expect(html).toContain('<th scope="row">Spearman&#39;s ρ</th><td>0.700</td>');
    expect(html).toContain('<th scope="row">mean squared error</th><td>0.7000</td>');
    for (const absent of ['Accuracy per epoch', 'id="confusion"', 'id="labels"', 'train accuracy']) expect(html).not.toContain(absent);
  });

  it('several outputs: a row per output, then all of them', () => {
    const outputs = render({
      history: [regressionEpoch(1, 0.9, 0.61, 0.58, true)],
      final: {
        mse: 0.5,
        mae: 0.45,
        pearson: 0.7,
        spearman: 0.65,
        examples: 40,
        perOutput: [
          { output: 'valence', mse: 0.4, mae: 0.4, pearson: 0.8, spearman: 0.75 },
          { output: 'arousal', mse: 0.6, mae: 0.5, pearson: 0.6, spearman: 0.55 },
        ],
      },
      labels: ['valence', 'arousal'],
    });
    expectWellFormed(outputs);
    expect(outputs).toContain('<tr><th scope="row">valence</th><td>0.4000</td><td>0.4000</td><td>0.800</td><td>0.750</td></tr>');
    expect(outputs).toContain('<tr><th scope="row">all (40 examples)</th><td>0.5000</td><td>0.4500</td><td>0.700</td><td>0.650</td></tr>');
  });
});

describe("a multi-label run's report", () => {
  it('the per-class table with subset accuracy and the F1 averages, no confusion matrix', () => {
    const html = render({
      final: {
        accuracy: 0.5,
        microF1: 0.75,
        macroF1: 0.625,
        perClass: [
          { label: 'sports', precision: 1, recall: 0.5, f1: 2 / 3, support: 2 },
          { label: 'politics', precision: 0.5, recall: 1, f1: 2 / 3, support: 1 },
        ],
        examples: 4,
      },
      labels: ['sports', 'politics'],
    });
    expectWellFormed(html);
    expect(html).toContain('<h2>Per-class metrics</h2>');
    expect(html).toContain('<tr><th scope="row">sports</th><td>1.000</td><td>0.500</td><td>0.667</td><td>2</td></tr>');
    expect(html).toContain('<tr><th scope="row">micro F1</th><td></td><td></td><td>0.750</td><td>4</td></tr>');
    expect(html).not.toContain('id="confusion"');
  });
});
