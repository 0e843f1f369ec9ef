/**
 * scripts/gpu/gpu-bench.mjs, the GPU benchmark scripts/gpu/gpu-check.sh runs, smoke-tested on the CPU
 * (--device cpu --shape tiny): GPU sessions are rare and short, so the script must already work
 * when one comes. Both sides run every technique x length x precision and the table's derived
 * numbers follow from the measured ones.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { PYTHON, repoRoot } from './fixtures.js';

// Asynchronous: a synchronous child of a minute blocks the test worker, whose calls to vitest then time out.
const exec = promisify(execFile);
const out = mkdtempSync(join(tmpdir(), 'torch-bert-gpu-bench-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

describe('scripts/gpu/gpu-bench.mjs', () => {
  it('measures full, lora and frozen in fp32 and bf16 on both sides, on the CPU in smoke mode', async () => {
    await exec(
      process.execPath,
      [
        join(repoRoot, 'scripts', 'gpu', 'gpu-bench.mjs'),
        '--python',
        PYTHON,
        '--device',
        'cpu',
        '--shape',
        'tiny',
        '--seqs',
        '16,32',
        '--batch',
        '4',
        '--warmup',
        '1',
        '--steps',
        '2',
        '--out',
        out,
      ],
      { encoding: 'utf8' },
    );
    const result = JSON.parse(readFileSync(join(out, 'gpu-bench.json'), 'utf8')) as {
      rows: Array<{
        technique: string;
        seq: number;
        precision: string;
        torchBert: { secondsPerStep?: number; sequencesPerSecond?: number; error?: string };
        pytorch: { sequencesPerSecond?: number; error?: string };
        torchBertTflops: number;
        mfu: number;
      }>;
      peakTflops: number;
    };
    const keys = result.rows.map((r) => `${r.technique}/${r.seq}/${r.precision}`);
    const want = ['16', '32'].flatMap((seq) => ['full', 'lora', 'frozen'].flatMap((t) => ['fp32', 'bf16'].map((p) => `${t}/${seq}/${p}`)));
    expect(keys).toEqual(want);
    // The tiny shape (2 layers, hidden 64) in FLOPs per step: forward x3 (full), x2 (lora), x1 (frozen);
    // the second (last) layer as token pruning runs it: keys and values for every token, the rest for [CLS].
    const forward = (seq: number) => 4 * (24 * seq * 64 * 64 + 4 * seq * seq * 64 + (4 * seq * 64 * 64 + 20 * 64 * 64 + 4 * seq * 64));
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

  it('runs --rows in the order given, streams one JSON line per row, and names the PyTorch attention', async () => {
    const dir = join(out, 'rows');
    const { stdout } = await exec(
      process.execPath,
      [
        join(repoRoot, 'scripts', 'gpu', 'gpu-bench.mjs'),
        '--python',
        PYTHON,
        '--device',
        'cpu',
        '--shape',
        'tiny',
        '--rows',
        'frozen/16/bf16,full/8/fp32',
        '--batch',
        '2',
        '--warmup',
        '1',
        '--steps',
        '1',
        '--out',
        dir,
      ],
      { encoding: 'utf8' },
    );
    const result = JSON.parse(readFileSync(join(dir, 'gpu-bench.json'), 'utf8')) as {
      python: { torch: string; attention: string };
      header: string;
      rows: Array<Record<string, unknown>>;
    };
    expect(result.rows.map((r) => `${r.technique}/${r.seq}/${r.precision}`)).toEqual(['frozen/16/bf16', 'full/8/fp32']);
    // Each row as a line of its own, as measured (before the table), equal to the row in the file.
    const lines = stdout.split('\n').filter((l) => l.startsWith('{'));
    expect(lines.map((l) => JSON.parse(l))).toEqual(result.rows);
    expect(stdout.indexOf(lines[1]!)).toBeLessThan(stdout.indexOf('| technique |'));
    // transformers' default attention where this PyTorch has it (2.x); 1.x falls back to the eager one.
    if (/^1\./.test(result.python.torch))
      expect(result.python.attention).toBe(`eager (torch ${result.python.torch} has no scaled_dot_product_attention)`);
    else expect(result.python.attention).toBe('sdpa');
    expect(result.header).toContain(`(attention: ${result.python.attention})`);
  });

  it('starts no row past --budget-s: the rows left are reported as skipped, exit code 3', async () => {
    const dir = join(out, 'budget');
    let code = 0;
    try {
      await exec(
        process.execPath,
        [
          join(repoRoot, 'scripts', 'gpu', 'gpu-bench.mjs'),
          '--python',
          PYTHON,
          '--device',
          'cpu',
          '--shape',
          'tiny',
          '--rows',
          'full/8/fp32,lora/8/bf16',
          '--batch',
          '2',
          '--warmup',
          '1',
          '--steps',
          '1',
          '--budget-s',
          '0',
          '--out',
          dir,
        ],
        { encoding: 'utf8' },
      );
    } catch (err) {
      code = (err as { code: number }).code;
    }
    expect(code).toBe(3);
    const result = JSON.parse(readFileSync(join(dir, 'gpu-bench.json'), 'utf8')) as {
      rows: Array<{ skipped?: boolean; torchBert: { error?: string } }>;
    };
    expect(result.rows).toHaveLength(2);
    for (const r of result.rows) {
      expect(r.skipped).toBe(true);
      expect(r.torchBert.error).toBe('skipped: time budget');
    }
  });
});
