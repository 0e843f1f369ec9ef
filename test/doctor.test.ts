/**
 * `torch-bert doctor` as a user runs it (the compiled CLI): the JSON report holds real values
 * consistent with this machine — the libtorch find-libtorch finds, the binary the loader
 * loads, the running libtorch, no CUDA on a CPU build, the BLAS libtorch really uses.
 */
import { execFile } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import type { DoctorReport } from '../lib/cli/doctor.js';
import { type FoundLibtorch, findLibtorch } from '../scripts/find-libtorch.mjs';
import { repoRoot } from './fixtures.js';

const exec = promisify(execFile);
const cli = join(repoRoot, 'dist', 'cli.js');

describe('torch-bert doctor', () => {
  let report: DoctorReport;
  let libtorch: FoundLibtorch;
  beforeAll(async () => {
    if (!existsSync(cli)) throw new Error(`${cli} is missing: run 'npm run build:ts' first`);
    libtorch = findLibtorch();
    const { stdout } = await exec(process.execPath, [cli, 'doctor', '--json']);
    report = JSON.parse(stdout) as DoctorReport;
  });

  it('reports the libtorch found, how, and the candidates skipped', () => {
    expect(report.libtorch.found).toEqual(libtorch);
    expect(report.libtorch.error).toBeNull();
    expect(report.libtorch.candidates.some((c) => c.usable && c.source === libtorch.source)).toBe(true);
    if (!report.cuda?.version) expect(libtorch.flavor).toBe('cpu');
  });

  it('reports the binary loaded and the libtorch running, which is the one found', () => {
    expect(report.loadError).toBeNull();
    expect(['source', 'prebuilt', 'override']).toContain(report.binary!.kind);
    expect(existsSync(report.binary!.path)).toBe(true);
    if (report.binary!.buildInfo) expect(report.binary!.buildInfo.libtorch.version).toBe(libtorch.version);
    // A source build: the loader took the libtorch its build-info.json records, searching nothing.
    if (report.binary!.path === join(repoRoot, 'build', 'Release', 'torch_bert.node') && report.binary!.buildInfo) {
      expect(report.libtorch.record).toEqual({
        how: 'build-info',
        file: join(repoRoot, 'build', 'Release', 'build-info.json'),
        binary: report.binary!.path,
        libtorch: { ...report.binary!.buildInfo.libtorch },
        stale: null,
      });
      expect(report.binary!.how).toBe('build-info');
    }
    // Major.minor: Debian's 1.13.1 package calls itself 1.13.0 at run time.
    expect(report.runtime!.libtorch.split('.').slice(0, 2)).toEqual(libtorch.version!.split('.').slice(0, 2));
    const torchCpu = report.runtime!.libraries!.filter((p) => /libtorch_cpu/.test(p));
    expect(torchCpu).toHaveLength(1);
    expect(realpathSync(torchCpu[0]!).startsWith(realpathSync(libtorch.libDir))).toBe(true);
    if (process.platform === 'linux') expect(report.binary!.preloaded.length).toBeGreaterThanOrEqual(3);
  });

  it('reports CUDA, devices, BLAS and threads as they are on this machine', () => {
    expect(report.cuda!.available).toBe(report.cuda!.deviceCount > 0);
    expect(report.devices[0]).toBe('cpu');
    expect(report.devices).toHaveLength(1 + report.cuda!.deviceCount);
    if (libtorch.flavor === 'cpu') {
      expect(report.cuda).toEqual({ available: false, deviceCount: 0, version: null, cudnn: null });
    }
    // The BLAS behind Debian's libblas.so.3 alternative (scripts/setup.sh makes it OpenBLAS).
    const systemBlas = '/usr/lib/x86_64-linux-gnu/libblas.so.3';
    if (libtorch.source === 'system' && existsSync(systemBlas) && /openblas/.test(realpathSync(systemBlas))) {
      expect(report.blas!.name).toBe('OpenBLAS');
      expect(report.blas!.libraries.some((p) => /openblas/.test(p))).toBe(true);
      // OpenBLAS's own pool, as OpenBLAS sized it from the environment (else the cores).
      const fromEnv = Number(process.env.OPENBLAS_NUM_THREADS || process.env.GOTO_NUM_THREADS || process.env.OMP_NUM_THREADS || 0);
      expect(report.threads.blas).toBe(fromEnv > 0 ? Math.min(fromEnv, availableParallelism()) : availableParallelism());
    }
    expect(report.tokenPruning).toBe(process.env.TORCH_BERT_TOKEN_PRUNING !== '0');
    expect(report.threads.intraOp).toBeGreaterThanOrEqual(1);
    expect(report.threads.cpus).toBeGreaterThanOrEqual(1);
    for (const [k, v] of Object.entries(report.threads.env)) expect(process.env[k]).toBe(v);
    expect(report.node.version).toBe(process.version);
    expect(report.platform.arch).toBe(process.arch);
  });

  it('reports where Hub ids resolve, and never the token', async () => {
    const token = 'hf_doctorTestSecret123';
    const env = {
      ...process.env,
      HF_HUB_CACHE: '/tmp/torch-bert-doctor-hub',
      HF_HUB_OFFLINE: '1',
      HF_TOKEN: token,
      HF_ENDPOINT: 'http://127.0.0.1:9/',
    };
    const json = await exec(process.execPath, [cli, 'doctor', '--json'], { env });
    expect(JSON.parse(json.stdout).hub).toEqual({
      cacheDir: '/tmp/torch-bert-doctor-hub',
      endpoint: 'http://127.0.0.1:9',
      offline: true,
      tokenSet: true,
    });
    const text = await exec(process.execPath, [cli, 'doctor'], { env });
    expect(text.stdout).toMatch(
      /hugging face hub:\n {2}cache +\/tmp\/torch-bert-doctor-hub\n {2}endpoint +http:\/\/127\.0\.0\.1:9\n {2}offline +yes \(HF_HUB_OFFLINE\)[^\n]*\n {2}token +set \(HF_TOKEN\)/,
    );
    for (const out of [json.stdout, json.stderr, text.stdout, text.stderr]) expect(out).not.toContain(token);
    const { HF_HUB_OFFLINE: _o, HF_TOKEN: _t, ...plain } = env;
    expect(JSON.parse((await exec(process.execPath, [cli, 'doctor', '--json'], { env: plain })).stdout).hub).toMatchObject({
      offline: false,
      tokenSet: false,
    });
  });

  it('prints a readable report', async () => {
    const { stdout } = await exec(process.execPath, [cli, 'doctor']);
    for (const section of ['libtorch found:', 'binary:', 'runtime:', 'threads:', 'system:']) expect(stdout).toContain(section);
    // Every regex character escaped: a CUDA wheel's version is '2.11.0+cu130', where '+' is an operator.
    const literal = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    expect(stdout).toMatch(new RegExp(`version +${literal(libtorch.version!)} \\(${literal(libtorch.flavor)}\\)`));
    expect(stdout).toMatch(/BLAS +\S+/);
  });
});
