/**
 * The package as `npm pack` makes it: which files it ships (what installing and running need,
 * nothing of the checkout's QA and GPU tooling), and its type declarations, compiled by a
 * fresh strict TypeScript project that type-checks its dependencies (`skipLibCheck: false`).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from './fixtures.js';

const exec = promisify(execFile);

function npmCli(): string {
  const candidates = [process.env.npm_execpath, join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js')];
  const found = candidates.find((p) => p && /npm-cli\.js$/.test(p) && existsSync(p));
  if (!found) throw new Error(`npm-cli.js not found (looked at ${candidates.join(', ')})`);
  return found;
}

async function run(cmd: string, args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(cmd, args, { cwd, maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
  }
}

/** Every file under `dir` (relative to the repository root), as the packed paths read. */
function filesUnder(dir: string): string[] {
  return readdirSync(join(repoRoot, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(repoRoot.length + 1));
}

// What `npm install` of the tarball runs or builds from, and what the installed package runs.
const NEEDED = [
  'package.json',
  'README.md',
  // the `install` script and what it imports or runs (a source build when no prebuilt fits)
  'scripts/install.mjs',
  'scripts/find-libtorch.mjs',
  'scripts/native-binary.mjs',
  'scripts/build-native.mjs',
  'CMakeLists.txt',
  // the declarations dist/*.d.ts import
  'scripts/find-libtorch.d.mts',
  'scripts/native-binary.d.mts',
  // `torch-bert demo`: its data and its small BERT, a Hugging Face folder (no Python runs)
  'assets/demo/reviews.csv',
  'assets/demo/tokenizer.json',
  'assets/demo/encoder/config.json',
  'assets/demo/encoder/model.safetensors',
  // the API and the CLI
  'dist/index.js',
  'dist/index.d.ts',
  'dist/cli.js',
  'dist/data/tokenizer-worker.js',
];

// The checkout's QA, benchmark and GPU tooling: nothing installs or runs them from the package.
const NOT_SHIPPED = [
  // scripts/qa/ (asan.sh, check-other-libtorch.sh, format-native.sh), scripts/gpu/ (gpu-check.sh,
  // pack-node.sh, hf-pruning-check.mjs, ...) and the kit pack-node.sh makes
  /^scripts\/qa\//,
  /^scripts\/gpu\//,
  /^\.gpu-kit\//,
  /^scripts\/setup\.sh$/,
  /^scripts\/prebuild\.mjs$/,
  /^scripts\/python\//,
  // the demo encoder's pre-training data: not needed to run it (npm packs every README.md, so
  // assets/demo/README.md, which says how the assets were made, ships)
  /^assets\/demo\/pretrain\.csv$/,
  /^test\//,
  /^bench\//,
  /^lib\//,
  // Source and declaration maps point into lib/, which is not shipped: dead links in every stack
  // trace and editor jump (about 40% of dist/).
  /^dist\/.*\.map$/,
  /^build\//,
  /^tsconfig/,
  /^vitest/,
];

describe('the packed package', () => {
  const work = mkdtempSync(join(tmpdir(), 'torch-bert-package-'));
  let tarball: string;

  beforeAll(async () => {
    // A real `npm pack`, prepare script included: what publishing ships.
    const pack = await run(process.execPath, [npmCli(), 'pack', '--json', '--pack-destination', work], repoRoot);
    expect(pack.code, pack.stderr).toBe(0);
    tarball = join(work, (JSON.parse(pack.stdout) as Array<{ filename: string }>)[0]!.filename);
    expect(existsSync(tarball)).toBe(true);
  }, 240_000);

  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('ships what installing and running need, and none of the QA or GPU scripts', async () => {
    const dry = await run(process.execPath, [npmCli(), 'pack', '--dry-run', '--json', '--ignore-scripts'], repoRoot);
    expect(dry.code, dry.stderr).toBe(0);
    const files = (JSON.parse(dry.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path);
    const needed = [...NEEDED, ...filesUnder('native')];
    expect(needed.filter((f) => !files.includes(f))).toEqual([]);
    expect(files.filter((f) => NOT_SHIPPED.some((re) => re.test(f)))).toEqual([]);
    // The manifest's own entry points are among them.
    const manifest = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
    expect(files).toContain(manifest.main);
    expect(files).toContain(manifest.types);
    expect(files).toContain(manifest.bin['torch-bert']);
    expect(files).toContain(/^node (\S+)$/.exec(manifest.scripts.install)![1]);
  });

  /**
   * A project in `work/name` with the tarball as npm would unpack it into its node_modules
   * (offline: the package's dependencies, and @types/node for the consumer, are the checkout's
   * own copies, linked in).
   */
  async function appWithPackage(name: string): Promise<string> {
    const app = join(work, name);
    const installed = join(app, 'node_modules', 'torch-bert');
    mkdirSync(installed, { recursive: true });
    const untar = await run('tar', ['-xzf', tarball, '-C', installed, '--strip-components=1'], app);
    expect(untar.code, untar.stderr).toBe(0);
    const manifest = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    for (const dep of [...Object.keys(manifest.dependencies), '@types/node']) {
      mkdirSync(dirname(join(app, 'node_modules', dep)), { recursive: true });
      symlinkSync(join(repoRoot, 'node_modules', dep), join(app, 'node_modules', dep));
    }
    return app;
  }

  it('type-checks in a strict project that checks its dependencies (skipLibCheck: false)', async () => {
    const app = await appWithPackage('app');
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          skipLibCheck: false,
          noEmit: true,
          types: ['node'],
        },
        files: ['app.ts'],
      }),
    );
    writeFileSync(
      join(app, 'app.ts'),
      [
        "import { loadClassifier, predict, pretrain, train, type Prediction, type TrainResult } from 'torch-bert';",
        "const result: TrainResult = await train({ data: { csv: 'reviews.csv', textColumn: 'review' }, encoder: 'bert.pt', tokenizer: 'tokenizer.json', outDir: 'out', technique: 'lora' });",
        "const classifier = await loadClassifier('out', { device: 'cpu' });",
        "const mine: Prediction[] = await classifier.predict(['a wonderful film']);",
        "const theirs: Prediction[] = await predict(result.classifier, ['a dull film'], { batchSize: 8 });",
        'console.log(mine[0]?.label, theirs[0]?.probabilities);',
        // The package's types are in force (not `any`): a wrong option is an error.
        '// @ts-expect-error epochs is a number',
        "await train({ data: 'reviews.csv', encoder: 'bert.pt', tokenizer: 'tokenizer.json', epochs: 'five' });",
        // As the README's table says: pretrain() writes a model folder, so outDir is required.
        "await pretrain({ model: 'bert-base-uncased', data: 'corpus.txt', outDir: 'bert-domain' });",
        '// @ts-expect-error outDir is required',
        "await pretrain({ model: 'bert-base-uncased', data: 'corpus.txt' });",
        '',
      ].join('\n'),
    );
    const tsc = await run(process.execPath, [join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', app], app);
    expect(tsc.stdout + tsc.stderr).toBe('');
    expect(tsc.code).toBe(0);
  });

  it('loads from CommonJS (require) as from ESM: the engines range has require() of ES modules', async () => {
    // A CommonJS project, which is what `npm init -y` makes.
    const app = await appWithPackage('app-cjs');
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app-cjs', private: true }));
    writeFileSync(join(app, 'esm.mjs'), "import * as tb from 'torch-bert'; console.log(JSON.stringify(Object.keys(tb).sort()));\n");
    writeFileSync(join(app, 'cjs.cjs'), "const tb = require('torch-bert'); console.log(JSON.stringify(Object.keys(tb).sort()));\n");
    const esm = await run(process.execPath, ['esm.mjs'], app);
    expect(esm.code, esm.stderr).toBe(0);
    const exported = JSON.parse(esm.stdout) as string[];
    expect(exported).toContain('train');
    expect(exported).toContain('loadBinding');
    const cjs = await run(process.execPath, ['cjs.cjs'], app);
    expect(cjs.stderr).toBe('');
    expect(cjs.code).toBe(0);
    expect(JSON.parse(cjs.stdout)).toEqual(exported);
  });
});
