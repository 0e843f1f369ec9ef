/**
 * scripts/gpu-bench.mjs, the GPU benchmark scripts/gpu-check.sh runs, smoke-tested on the CPU
 * (--device cpu --shape tiny): GPU sessions are rare and short, so the script must already work
 * when one comes. Both sides run every technique x length x precision and the table's derived
 * numbers follow from the measured ones.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PYTHON, repoRoot } from './fixtures.js';

const out = mkdtempSync(join(tmpdir(), 'torch-bert-gpu-bench-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

describe('scripts/gpu-bench.mjs', () => {
  it('measures full, lora and frozen in fp32 and bf16 on both sides, on the CPU in smoke mode', () => {
    execFileSync(
      process.execPath,
      [join(repoRoot, 'scripts', 'gpu-bench.mjs'), '--python', PYTHON, '--device', 'cpu', '--shape', 'tiny', '--seqs', '16,32', '--batch', '4', '--warmup', '1', '--steps', '2', '--out', out],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const result = JSON.parse(readFileSync(join(out, 'gpu-bench.json'), 'utf8')) as {
      rows: Array<{ technique: string; seq: number; precision: string; torchBert: { secondsPerStep?: number; sequencesPerSecond?: number; error?: string }; pytorch: { sequencesPerSecond?: number; error?: string }; torchBertTflops: number; mfu: number }>;
      peakTflops: number;
    };
    const keys = result.rows.map((r) => `${r.technique}/${r.seq}/${r.precision}`);
    const want = ['16', '32'].flatMap((seq) => ['full', 'lora', 'frozen'].flatMap((t) => ['fp32', 'bf16'].map((p) => `${t}/${seq}/${p}`)));
    expect(keys).toEqual(want);
    // The tiny shape (2 layers, hidden 64) in FLOPs per step: forward x3 (full), x2 (lora), x1 (frozen);
    // the second (last) layer as token pruning runs it: keys and values for every token, the rest for [CLS].
    const forward = (seq: number) =>
      4 * (24 * seq * 64 * 64 + 4 * seq * seq * 64 + (4 * seq * 64 * 64 + 20 * 64 * 64 + 4 * seq * 64));
    for (const r of result.rows) {
      expect(r.torchBert.error, `${r.technique} ${r.seq} ${r.precision}`).toBeUndefined();
      expect(r.pytorch.error, `${r.technique} ${r.seq} ${r.precision}`).toBeUndefined();
      expect(r.torchBert.sequencesPerSecond).toBeGreaterThan(0);
      expect(r.pytorch.sequencesPerSecond).toBeGreaterThan(0);
      expect(r.torchBert.sequencesPerSecond! * r.torchBert.secondsPerStep!).toBeCloseTo(4, 6);
      const flops = forward(r.seq) * { full: 3, lora: 2, frozen: 1 }[r.technique]!;
      expect(r.torchBertTflops).toBeCloseTo(flops / r.torchBert.secondsPerStep! / 1e12, 9);
      expect(r.mfu).toBeCloseTo(r.torchBertTflops / result.peakTflops, 12);
    }
    expect(readFileSync(join(out, 'gpu-bench.md'), 'utf8')).toContain('| lora | 32 | bf16 |');
  });
});
