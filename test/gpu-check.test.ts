/**
 * scripts/gpu/gpu-check.sh's plumbing, on the CPU: what comes back from a GPU run is at most 8 files
 * from $OUT (the device tool's limit), so the script stages its logs, re-packs them into one
 * archive after every step, and fails when $OUT breaks the limit; its time guard skips the steps
 * it has no time for. (scripts/gpu/gpu-rehearse.sh runs the whole script as the GPU machine would.)
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PYTHON, repoRoot } from './fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-gpu-check-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Runs the script asynchronously (a synchronous child of a minute blocks the test worker, whose calls to vitest then time out). */
async function gpuCheck(out: string, env: Record<string, string>) {
  const r = await new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      'bash',
      [join(repoRoot, 'scripts', 'gpu', 'gpu-check.sh')],
      {
        cwd: repoRoot,
        encoding: 'utf8',
        env: {
          PATH: `${dirname(process.execPath)}:${process.env.PATH}`,
          HOME: process.env.HOME,
          TMPDIR: tmpdir(),
          PYTHON,
          OUT: out,
          ...env,
        },
        timeout: 180_000,
      },
      (err, stdout, stderr) => resolve({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
  const archived = execFileSync('tar', ['-tzf', join(out, 'gpu-check.tar.gz')], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .sort();
  return {
    code: r.status,
    output: r.stdout + r.stderr,
    summary: readFileSync(join(out, 'summary.txt'), 'utf8'),
    files: readdirSync(out).sort(),
    archived,
  };
}

describe('scripts/gpu/gpu-check.sh', () => {
  it('with no time left skips every step, and $OUT holds the log archive and the summary alone', async () => {
    const out = join(work, 'guard');
    const r = await gpuCheck(out, { GPU_CHECK_STEPS: 'doctor pruning', GPU_CHECK_BUDGET_S: '0' });
    expect(r.code, r.output).toBe(0);
    expect(r.summary).toMatch(/^node: ok \(v\d+\./m);
    expect(r.summary).toMatch(/^doctor: skipped: time guard \(-?\d+ s left of 0, the step needs 20\)/m);
    expect(r.summary).toMatch(/^pruning: skipped: time guard/m);
    expect(r.files).toEqual(['gpu-check.tar.gz', 'summary.txt']);
    expect(r.archived).toEqual(['./', './gpu-check.log', './machine.txt', './summary.txt']);
  });

  it('runs a step and packs its output into the archive', async () => {
    const out = join(work, 'doctor');
    const r = await gpuCheck(out, { GPU_CHECK_STEPS: 'doctor', GPU_CHECK_BUDGET_S: '300' });
    expect(r.code, r.output).toBe(0);
    expect(r.summary).toMatch(/^doctor: ok/m);
    expect(r.archived).toEqual(expect.arrayContaining(['./doctor.json', './doctor.txt', './machine.txt']));
    const dir = join(work, 'doctor-unpacked');
    mkdirSync(dir);
    execFileSync('tar', ['-xzf', join(out, 'gpu-check.tar.gz'), '-C', dir]);
    const report = JSON.parse(readFileSync(join(dir, 'doctor.json'), 'utf8')) as { loadError: string | null; binary: { kind: string } };
    expect(report.loadError).toBeNull();
    expect(['source', 'prebuilt', 'override']).toContain(report.binary.kind);
  });

  it('fails when $OUT holds more than the 8 files the device tool brings back', async () => {
    const out = join(work, 'full');
    mkdirSync(out);
    for (let i = 0; i < 7; i++) writeFileSync(join(out, `extra${i}.txt`), 'x');
    const r = await gpuCheck(out, { GPU_CHECK_STEPS: 'doctor', GPU_CHECK_BUDGET_S: '0' });
    expect(r.files).toHaveLength(9);
    expect(r.code).toBe(1);
    expect(r.summary).toMatch(/^out: FAILED: \$OUT breaks the device tool's limits .*: 9 files/m);
  });
});
