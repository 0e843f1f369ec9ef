/**
 * The README's opening numbers are a summary of its Performance tables: each is checked against
 * the table it sums up, so that a table measured anew and an opening left behind disagree here.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './fixtures.js';

const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
const intro = readme.slice(0, readme.indexOf('\n## ')).replace(/\s+/g, ' ');

/** The text of the section whose heading starts with `heading`, up to the next heading of its level or above. */
function section(heading: string): string {
  const lines = readme.split('\n');
  const start = lines.findIndex((l) => l.startsWith(heading));
  if (start < 0) throw new Error(`README has no heading starting with ${JSON.stringify(heading)}`);
  const level = heading.match(/^#+/)![0].length;
  const end = lines.findIndex((l, i) => i > start && /^#+ /.test(l) && l.match(/^#+/)![0].length <= level);
  return lines.slice(start, end < 0 ? undefined : end).join('\n');
}

/** The body rows, as trimmed cells, of the first Markdown table at or after the line holding `caption`. */
function tableAfter(text: string, caption: string): string[][] {
  const from = text.indexOf(caption);
  if (from < 0) throw new Error(`no ${JSON.stringify(caption)} in the README section`);
  const lines = text.slice(text.lastIndexOf('\n', from) + 1).split('\n');
  const first = lines.findIndex((l) => l.startsWith('|'));
  const end = lines.findIndex((l, i) => i > first && !l.startsWith('|'));
  return lines
    .slice(first + 2, end < 0 ? undefined : end) // past the header and the separator
    .map((l) =>
      l
        .slice(1, -1)
        .split('|')
        .map((c) => c.trim()),
    );
}

describe('the README opening', () => {
  it('states the per-step ratios against PyTorch of the techniques-step table, every technique', () => {
    const rows = tableAfter(section('### Against PyTorch, per training step'), '**Training step per technique vs plain PyTorch**');
    // The large batches: 32x128, bert-base's 8x128 (1x8 measures per-step overhead only).
    const large = rows.filter((r) => r[1] !== '1x8');
    const claimed = intro.match(
      /step takes (\d\.\d\d)-(\d\.\d\d) of plain PyTorch's time on a 2-layer encoder, (\d\.\d\d)-(\d\.\d\d) on 4 layers and (\d\.\d\d)-(\d\.\d\d) on bert-base, for every technique \(([^)]*)\)/,
    );
    expect(claimed, 'the opening states three ranges and the techniques').not.toBeNull();
    for (const [i, shape] of ['tiny', 'small', 'bert-base'].entries()) {
      const ratios = large.filter((r) => r[0].startsWith(shape)).map((r) => Number(r[5]));
      expect(ratios, shape).toHaveLength(4);
      const stated = [Number(claimed![1 + 2 * i]), Number(claimed![2 + 2 * i])];
      // Two decimals, rounded to nearest.
      expect(Math.abs(stated[0]! - Math.min(...ratios)), `${shape} low`).toBeLessThanOrEqual(0.005 + 1e-9);
      expect(Math.abs(stated[1]! - Math.max(...ratios)), `${shape} high`).toBeLessThanOrEqual(0.005 + 1e-9);
    }
    expect(claimed![7]!.split(', ').sort()).toEqual([...new Set(large.map((r) => r[2]))].sort());
  });

  it("states the encoder's share of the GEMM rate of the hardware table's default threads", () => {
    const rows = tableAfter(section('### Against the hardware'), '| threads torch / BLAS |');
    const shares = rows.filter((r) => r[0].includes('(default)')).map((r) => Number(r[6]!.replace(/[*%]/g, '')));
    expect(shares.length).toBeGreaterThan(0);
    const claimed = intro.match(/runs at (\d+)% of the machine's GEMM rate/);
    expect(claimed, 'the opening states one share').not.toBeNull();
    for (const share of shares) expect(Math.abs(share - Number(claimed![1])), `${share}%`).toBeLessThanOrEqual(1);
  });

  it("states the real job's time, peak memory and speedup of the imdb-job table", () => {
    const job = section('### The real job: full IMDB');
    const whole = tableAfter(job, '| step | wall time |').find((r) => r[0].includes('whole job'))!;
    const speedup = job.match(/Speedup of the whole job over the tutorial's way: (\d+\.\d+)x/)![1];
    expect(intro).toContain(
      `end to end in ${whole[1]!.replace(/\*/g, '')} with ${whole[2]} MB peak RSS, ${speedup}x faster than the tutorial's way`,
    );
  });
});
