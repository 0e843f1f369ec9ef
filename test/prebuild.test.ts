/**
 * The prebuilt binary as a new user gets it: `npm run prebuild` (reusing build/Release when it
 * fits), `npm pack`, then `npm install <tarball> --offline` into a fresh folder with the build
 * tools hidden (PATH holds only node and sh, no npm_config_nodedir), and the installed package
 * loads the CPU prebuilt and computes. Also: the libtorch the install checked the prebuilt with
 * is recorded (build/prebuilt.json) and loading takes it without asking Python, a record whose
 * libtorch is gone falls back to the search with doctor saying how to fix it, a libtorch in
 * another folder than the binary's RUNPATH, refusing a binary built for another libtorch
 * version, and the install message when nothing fits and nothing can be built.
 */
import { execFile } from 'node:child_process';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FoundLibtorch, findLibrary, findLibtorch } from '../scripts/find-libtorch.mjs';
import { platformKey, prebuildName } from '../scripts/native-binary.mjs';

const exec = promisify(execFile);
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** Preloaded into a Node process, records every child process it starts (read test/demo.test.ts). */
const spawnLog = join(repoRoot, 'test', 'helpers', 'spawn-log.cjs');
/** torch.randperm(10, generator=torch.Generator().manual_seed(0)).tolist() */
const RANDPERM_10_SEED_0 = [4, 1, 7, 5, 3, 9, 0, 8, 6, 2];

function npmCli(): string {
  const candidates = [process.env.npm_execpath, join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js')];
  const found = candidates.find((p) => p && /npm-cli\.js$/.test(p) && existsSync(p));
  if (!found) throw new Error(`npm-cli.js not found (looked at ${candidates.join(', ')})`);
  return found;
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(cmd: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv }): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(cmd, args, { ...options, maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
  }
}

const CHECK = `
import { readFileSync } from 'node:fs';
const root = new URL('./node_modules/torch-bert/', import.meta.url);
// The loader by file URL: the package's "exports" expose only the API.
const { loadBinding, loadedBinaryInfo } = await import(new URL('dist/addon/loader.js', root).href);
const b = loadBinding();
const t = b.Tensor.fromArray(new Float32Array([1.5, -2, 3.25, 4, 0.125, 6]), [2, 3]);
const maps = readFileSync('/proc/self/maps', 'utf8').split('\\n').filter((l) => /lib(torch|c10)/.test(l)).map((l) => l.slice(l.indexOf('/')));
console.log(JSON.stringify({ info: loadedBinaryInfo(), shape: t.shape, values: Array.from(t.toArray()),
  randperm: Array.from(b.randperm(10, 0)), versions: b.versions(), mapped: [...new Set(maps)] }));
`;

describe.skipIf(process.platform === 'win32')('prebuilt binary: pack, install without build tools, load', () => {
  const work = mkdtempSync(join(tmpdir(), 'torch-bert-prebuild-'));
  const pkg = join(work, 'pkg');
  const app = join(work, 'app');
  const bin = join(work, 'bin');
  const installed = join(app, 'node_modules', 'torch-bert');
  let libtorch: FoundLibtorch;
  let install: Run;
  /** A clean environment: no build tools on PATH, no nodedir, nothing from the outer npm run. */
  let env: NodeJS.ProcessEnv;

  /** A LIBTORCH folder claiming `version`, with copies of (or no) libraries. */
  function fakeLibtorch(name: string, version: string, copyLibs: boolean): string {
    const dir = join(work, name);
    mkdirSync(join(dir, 'lib'), { recursive: true });
    mkdirSync(join(dir, 'share'), { recursive: true });
    symlinkSync(libtorch.cmakePrefixPath!, join(dir, 'share', 'cmake'));
    writeFileSync(join(dir, 'build-version'), version + '\n');
    if (copyLibs) {
      for (const lib of ['c10', 'torch_cpu', 'torch']) {
        const file = findLibrary(libtorch.libDir, lib);
        if (!file) throw new Error(`lib${lib} not found in ${libtorch.libDir}`);
        // Real copies (copyFileSync follows symlinks), under the sonames the addon needs.
        copyFileSync(file, join(dir, 'lib', `lib${lib}.so.${version.split('.').slice(0, 2).join('.')}`));
      }
    }
    return dir;
  }

  async function check(extra: NodeJS.ProcessEnv = {}): Promise<Run> {
    return run(process.execPath, ['check.mjs'], { cwd: app, env: { ...env, ...extra } });
  }

  /** check() with every child process it starts logged to `name`: the run, and the logged processes that are a Python. */
  async function checkLogged(name: string, extra: NodeJS.ProcessEnv = {}): Promise<{ r: Run; python: string[] }> {
    const log = join(work, name);
    const r = await check({ ...extra, NODE_OPTIONS: `--require ${spawnLog}`, TORCH_BERT_SPAWN_LOG: log });
    const spawned: Array<{ command: string; args: string[] }> = existsSync(log)
      ? readFileSync(log, 'utf8')
          .trim()
          .split('\n')
          .map((line) => JSON.parse(line))
      : [];
    return { r, python: spawned.map((s) => [s.command, ...s.args].join(' ')).filter((c) => /python/i.test(c)) };
  }

  const recordFile = () => join(installed, 'build', 'prebuilt.json');
  const prebuiltPath = () => join(installed, 'prebuilds', platformKey(), prebuildName(libtorch), 'torch_bert.node');

  beforeAll(async () => {
    libtorch = findLibtorch();
    mkdirSync(bin);
    symlinkSync(process.execPath, join(bin, 'node'));
    symlinkSync('/bin/sh', join(bin, 'sh'));
    env = { HOME: process.env.HOME, PATH: bin, TMPDIR: tmpdir() };
    if (process.env.npm_config_cache) env.npm_config_cache = process.env.npm_config_cache;

    // The package as `npm pack` sees it, staged so that the checkout's prebuilds/ and dist/ stay as they are.
    const manifest = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { files: string[] };
    expect(manifest.files).toContain('prebuilds/');
    mkdirSync(pkg);
    copyFileSync(join(repoRoot, 'package.json'), join(pkg, 'package.json'));
    for (const entry of manifest.files) {
      if (['dist/', 'prebuilds/'].includes(entry) || !existsSync(join(repoRoot, entry))) continue;
      cpSync(join(repoRoot, entry), join(pkg, entry), { recursive: true });
    }
    // dist/ compiled from the current lib/ (tsc emits even when another file has a type error).
    await run(
      process.execPath,
      [join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(repoRoot, 'tsconfig.json'), '--outDir', join(pkg, 'dist')],
      {
        cwd: repoRoot,
        env: process.env,
      },
    );
    expect(existsSync(join(pkg, 'dist', 'addon', 'loader.js'))).toBe(true);

    const prebuild = await run(process.execPath, [join(repoRoot, 'scripts', 'prebuild.mjs'), '--reuse', '--out', join(pkg, 'prebuilds')], {
      cwd: repoRoot,
      env: process.env,
    });
    expect(prebuild.stderr).toBe('');
    expect(prebuild.code).toBe(0);

    const pack = await run(process.execPath, [npmCli(), 'pack', '--ignore-scripts', '--pack-destination', work], { cwd: pkg, env });
    expect(pack.code, pack.stderr).toBe(0);
    const tarball = join(work, pack.stdout.trim().split('\n').pop()!);
    expect(existsSync(tarball)).toBe(true);

    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    writeFileSync(join(app, 'check.mjs'), CHECK);
    const args = ['install', '--no-audit', '--no-fund', '--foreground-scripts', tarball];
    install = await run(process.execPath, [npmCli(), ...args, '--offline'], { cwd: app, env });
    // The dependencies from the registry when the local cache lacks some.
    if (install.code !== 0) install = await run(process.execPath, [npmCli(), ...args, '--prefer-offline'], { cwd: app, env });
  }, 240_000);

  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('installs from the tarball with no compiler, cmake or make, using the CPU prebuilt', () => {
    for (const tool of ['cmake', 'g++', 'c++', 'make', 'gcc']) expect(existsSync(join(bin, tool))).toBe(false);
    expect(install.code, install.stdout + install.stderr).toBe(0);
    const prebuilt = join(installed, 'prebuilds', platformKey(), prebuildName(libtorch), 'torch_bert.node');
    expect(install.stdout).toContain(`using the prebuilt binary ${prebuilt}`);
    expect(prebuildName(libtorch)).toMatch(/^torch-\d+\.\d+\.\d+-cpu$/);
    expect(existsSync(join(installed, 'build', 'Release', 'torch_bert.node'))).toBe(false);
    const info = JSON.parse(readFileSync(join(dirname(prebuilt), 'build-info.json'), 'utf8'));
    expect(info).toMatchObject({ platform: process.platform, arch: process.arch, libtorch: { version: libtorch.version, flavor: 'cpu' } });
    expect(info.napiVersion).toBeGreaterThanOrEqual(8);
    expect(typeof info.compiler).toBe('string');
    // The libtorch search is cached for the loader.
    expect(JSON.parse(readFileSync(join(installed, 'build', 'libtorch.json'), 'utf8')).libtorch.libDir).toBe(libtorch.libDir);
    // And the libtorch the prebuilt was checked with is recorded for it, with what tells the prebuilt apart.
    const record = JSON.parse(readFileSync(recordFile(), 'utf8'));
    expect(record.libtorch).toEqual(libtorch);
    expect(record.binary).toEqual({
      path: join('prebuilds', platformKey(), prebuildName(libtorch), 'torch_bert.node'),
      size: statSync(prebuilt).size,
      builtAt: info.prebuiltAt,
    });
    expect(record.needed).toEqual(info.needed);
    expect(record.needed).toContain(`libtorch_cpu.so.${libtorch.version!.split('.').slice(0, 2).join('.')}`);
    expect(install.stdout).toContain(
      `recorded libtorch ${libtorch.version} (cpu, ${libtorch.source}) at ${libtorch.libDir} for it in ${recordFile()}`,
    );
  });

  it('loads the prebuilt and computes', async () => {
    const r = await check();
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.info.kind).toBe('prebuilt');
    expect(out.info.binary).toBe(join(installed, 'prebuilds', platformKey(), prebuildName(libtorch), 'torch_bert.node'));
    expect(out.info.how).toBe('install'); // the install's record, before the cache
    expect(out.info.record).toEqual({ how: 'install', file: recordFile(), binary: prebuiltPath(), libtorch, stale: null });
    expect(out.shape).toEqual([2, 3]);
    expect(out.values).toEqual([1.5, -2, 3.25, 4, 0.125, 6]);
    expect(out.randperm).toEqual(RANDPERM_10_SEED_0);
    expect(out.versions.cuda).toBeNull();
  });

  it('with build/libtorch.json stale, loads through the install record and starts no Python process', async () => {
    // Another python3 first on PATH than at install (the search asks it first): the cached search
    // is stale, as when another environment rewrote it. This one answers nothing.
    const pythonBin = join(work, 'python-bin');
    mkdirSync(pythonBin, { recursive: true });
    writeFileSync(join(pythonBin, 'python3'), '#!/bin/sh\nexit 1\n', { mode: 0o755 });
    const otherPath = { PATH: `${pythonBin}:${bin}` };

    const viaRecord = await checkLogged('spawned-record.jsonl', otherPath);
    expect(viaRecord.r.code, viaRecord.r.stderr).toBe(0);
    const out = JSON.parse(viaRecord.r.stdout);
    expect(out.info.how).toBe('install');
    expect(out.info.libtorch).toEqual(libtorch);
    expect(out.info.binary).toBe(prebuiltPath());
    expect(out.randperm).toEqual(RANDPERM_10_SEED_0);
    expect(viaRecord.python).toEqual([]);

    // The same load without the record searches, and the search asks the python3 on PATH first:
    // what the record spares.
    const kept = readFileSync(recordFile(), 'utf8');
    rmSync(recordFile());
    try {
      const searched = await checkLogged('spawned-search.jsonl', otherPath);
      expect(searched.r.code, searched.r.stderr).toBe(0);
      expect(JSON.parse(searched.r.stdout).info.how).toBe('search');
      expect(searched.python[0]).toMatch(new RegExp(`^${join(pythonBin, 'python3')} -c `));
    } finally {
      writeFileSync(recordFile(), kept);
    }
  });

  it('a record whose libtorch is gone: loading searches instead, and doctor says how to fix it', async () => {
    const dir = fakeLibtorch('libtorch-recorded', libtorch.version!, true);
    const libDir = join(dir, 'lib');
    const kept = readFileSync(recordFile(), 'utf8');
    try {
      // An install that found this libtorch (LIBTORCH) records it for the prebuilt...
      const reinstall = await run(process.execPath, [join(installed, 'scripts', 'install.mjs')], {
        cwd: installed,
        env: { ...env, LIBTORCH: dir },
      });
      expect(reinstall.code, reinstall.stderr).toBe(0);
      expect(reinstall.stdout).toContain(`using the prebuilt binary ${prebuiltPath()}`);
      const record = JSON.parse(readFileSync(recordFile(), 'utf8'));
      expect(record.libtorch).toMatchObject({ libDir, source: 'LIBTORCH', version: libtorch.version });

      // ...and loading takes it, LIBTORCH unset: its libraries, not the system's the search would find.
      const soname = `libtorch_cpu.so.${libtorch.version!.split('.').slice(0, 2).join('.')}`;
      const recorded = await check();
      expect(recorded.code, recorded.stderr).toBe(0);
      const before = JSON.parse(recorded.stdout);
      expect(before.info.how).toBe('install');
      expect((before.mapped as string[]).filter((p) => /libtorch_cpu/.test(p))).toEqual([join(libDir, soname)]);

      // That libtorch removed: the record is stale, loading searches and finds the system's.
      rmSync(libDir, { recursive: true });
      const stale = `its libraries are gone (${(record.needed as string[]).join(', ')} missing from ${libDir})`;
      const r = await check();
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out.info.how).toBe('search');
      expect(out.info.libtorch).toEqual(libtorch);
      expect(out.info.record).toMatchObject({ how: 'install', file: recordFile(), stale });
      expect(out.randperm).toEqual(RANDPERM_10_SEED_0);
      const torchCpu = (out.mapped as string[]).filter((p) => /libtorch_cpu/.test(p));
      expect(torchCpu).toHaveLength(1);
      expect(realpathSync(torchCpu[0]!).startsWith(realpathSync(libtorch.libDir))).toBe(true);

      const cli = join(app, 'node_modules', '.bin', 'torch-bert');
      const json = await run(process.execPath, [cli, 'doctor', '--json'], { cwd: app, env });
      expect(json.code, json.stderr).toBe(0);
      const report = JSON.parse(json.stdout);
      expect(report.libtorch.record).toMatchObject({ how: 'install', stale, libtorch: { libDir } });
      expect(report.binary.how).toBe('cache'); // doctor's own search just refreshed the cache
      const text = await run(process.execPath, [cli, 'doctor'], { cwd: app, env });
      expect(text.code, text.stderr).toBe(0);
      const line = text.stdout.split('\n').find((l) => /^ {2}recorded /.test(l));
      expect(line).toBe(
        `  recorded           stale: ${recordFile()} (by the install, for the prebuilt it chose) names ` +
          `libtorch ${libtorch.version} (cpu, LIBTORCH) at ${libDir}, but ${stale}; the loader takes the cached search ` +
          'or searches instead (which may ask Python). Rerun `npm rebuild torch-bert` (in a checkout: `npm run build:native`) ' +
          'to record the libtorch found now, or set LIBTORCH=/path/to/libtorch to choose one.',
      );
    } finally {
      writeFileSync(recordFile(), kept);
    }
  });

  it.skipIf(process.platform !== 'linux')('uses a libtorch in another folder than the RUNPATH, without LD_LIBRARY_PATH', async () => {
    const dir = fakeLibtorch('libtorch-elsewhere', libtorch.version!, true);
    const r = await check({ LIBTORCH: dir });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.info.runpath).not.toContain(dir);
    expect(out.info.how).toBe('search'); // LIBTORCH changed: the cache is stale
    expect(out.randperm).toEqual(RANDPERM_10_SEED_0);
    const torchCpu = (out.mapped as string[]).filter((p) => /libtorch_cpu/.test(p));
    expect(torchCpu).toEqual([join(dir, 'lib', `libtorch_cpu.so.${libtorch.version!.split('.').slice(0, 2).join('.')}`)]);
  });

  it('refuses a binary built against another libtorch version, naming both', async () => {
    const dir = fakeLibtorch('libtorch-other', '1.12.1', false);
    const prebuilt = join(installed, 'prebuilds', platformKey(), prebuildName(libtorch), 'torch_bert.node');
    const forced = await check({ LIBTORCH: dir, TORCH_BERT_BINARY: prebuilt });
    expect(forced.code).not.toBe(0);
    expect(forced.stderr).toContain(
      `built against libtorch ${libtorch.version} (cpu), but the libtorch found is libtorch 1.12.1 (cpu, LIBTORCH)`,
    );
    const picked = await check({ LIBTORCH: dir });
    expect(picked.code).not.toBe(0);
    expect(picked.stderr).toContain(
      `no prebuilt for ${platformKey()} torch-1.12.1-cpu (prebuilts in this package: ${prebuildName(libtorch)})`,
    );
  });

  it('says what to install when no prebuilt fits and nothing can build one', async () => {
    const dir = join(work, 'libtorch-other');
    if (!existsSync(dir)) fakeLibtorch('libtorch-other', '1.12.1', false);
    const r = await run(process.execPath, [join(installed, 'scripts', 'install.mjs')], { cwd: installed, env: { ...env, LIBTORCH: dir } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no prebuilt native addon for libtorch 1\.12\.1 \(cpu, LIBTORCH\)/);
    expect(r.stderr).toContain(`prebuilts in this package: ${prebuildName(libtorch)}`);
    expect(r.stderr).toMatch(/cmake \(>= 3\.18\), a C\+\+17 compiler \(g\+\+ or clang\+\+\), make \(or ninja\)/);
    expect(r.stderr).toContain('sudo apt-get install cmake g++ make');
  });

  it('runs `torch-bert doctor --json` from the installed package', async () => {
    const r = await run(process.execPath, [join(app, 'node_modules', '.bin', 'torch-bert'), 'doctor', '--json'], { cwd: app, env });
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.binary.kind).toBe('prebuilt');
    expect(report.libtorch.found.version).toBe(libtorch.version);
    expect(report.runtime.libtorch.split('.').slice(0, 2)).toEqual(libtorch.version!.split('.').slice(0, 2));
  });
});
