#!/usr/bin/env node
/**
 * Builds build/Release/torch_bert.node: finds libtorch (scripts/find-libtorch.mjs), then runs
 * cmake-js from node_modules with CMAKE_PREFIX_PATH pointing at it. Extra arguments are
 * passed to cmake-js (e.g. `-- --debug`).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findLibtorch } from './find-libtorch.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

let libtorch;
try {
  libtorch = findLibtorch({
    report: (c) =>
      console.log(
        c.usable
          ? `torch-bert: found libtorch ${c.version ?? '(unknown version)'} (${c.flavor}, ${c.source}) at ${c.path}`
          : `torch-bert: skipped ${c.source} candidate ${c.path}: ${c.reason}`,
      ),
  });
} catch (err) {
  console.error(err.message);
  process.exit(1);
}
console.log(
  `torch-bert: building against libtorch ${libtorch.version ?? '(unknown version)'} ` +
    `(${libtorch.flavor}, ${libtorch.source}) from ${libtorch.cmakePrefixPath}`,
);

const require = createRequire(import.meta.url);
let cmakeJs;
try {
  cmakeJs = join(dirname(require.resolve('cmake-js/package.json', { paths: [root] })), 'bin', 'cmake-js');
} catch {
  console.error('torch-bert: cmake-js is not installed; run `npm install` first.');
  process.exit(1);
}

const args = [
  cmakeJs,
  'compile',
  '--directory',
  root,
  '--parallel',
  String(Math.max(1, cpus().length)),
  `--CDCMAKE_PREFIX_PATH=${libtorch.cmakePrefixPath}`,
  `--CDTORCH_BERT_LIBTORCH_VERSION=${libtorch.version ?? ''}`,
  ...process.argv.slice(2),
];
// cmake-js takes Node's headers from npm's `nodedir` setting, else downloads them. Outside
// `npm run` that setting is not in the environment, so point it at the running Node's own
// headers when they are installed (distribution packages, official tarballs): no download.
const env = { ...process.env };
if (!env.npm_config_nodedir) {
  const prefix = resolve(dirname(process.execPath), '..');
  if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = prefix;
}
const child = spawn(process.execPath, args, { cwd: root, stdio: 'inherit', env });
child.on('error', (err) => {
  console.error(`torch-bert: could not run cmake-js: ${err.message}`);
  process.exit(1);
});
child.on('exit', (code, signal) => {
  if (code === 0) {
    console.log('torch-bert: built build/Release/torch_bert.node');
    process.exit(0);
  }
  console.error(
    `torch-bert: native build failed (${signal ? `signal ${signal}` : `exit code ${code}`}). ` +
      'Check the compiler output above; `node scripts/find-libtorch.mjs` shows which libtorch was used.',
  );
  process.exit(code || 1);
});
