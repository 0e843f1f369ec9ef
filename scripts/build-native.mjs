#!/usr/bin/env node
/**
 * Builds build/Release/torch_bert.node: finds libtorch (scripts/find-libtorch.mjs), then runs
 * cmake-js from node_modules with CMAKE_PREFIX_PATH pointing at it. Extra arguments are
 * passed to cmake-js (e.g. `-- --debug`). Then writes build/Release/build-info.json (the
 * libtorch built against, compiler, Node-API version, ...; see scripts/native-binary.mjs),
 * checks that the addon loads, and records the versions it reports.
 * `--record-only`: only that last part, for a binary built another way (scripts/gpu/gpu-check.sh).
 * `--CDTORCH_BERT_MANUAL_TORCH=ON` sets libtorch up without its TorchConfig.cmake (what the
 * build does by itself for a CUDA libtorch on a machine without the CUDA toolkit).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findLibtorch } from './find-libtorch.mjs';
import { BUILD_INFO, checkBinary, makeBuildInfo, sourceBinary, writeLibtorchCache } from './native-binary.mjs';

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
if (process.argv.includes('--record-only')) process.exit(recordBuild());
if (!libtorch.cmakePrefixPath) {
  console.error(
    `torch-bert: the libtorch found (${libtorch.libDir}) has only its runtime libraries, no CMake package, so the addon ` +
      'cannot be built against it. Install the development files (Debian/Ubuntu: `sudo apt-get install libtorch-dev`), ' +
      'set LIBTORCH to an unpacked libtorch from https://pytorch.org, or `pip install torch`.',
  );
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

// For CMakeLists.txt's manual libtorch setup (CUDA wheels without the CUDA toolkit) and
// buildInfo(): the C++ ABI a Python PyTorch was built with, and the CUDA version of a CUDA libtorch.
let cxx11Abi = '';
if (libtorch.python) {
  try {
    cxx11Abi = execFileSync(libtorch.python, ['-c', 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 120_000,
    }).trim();
    if (!/^[01]$/.test(cxx11Abi)) cxx11Abi = '';
  } catch {
    cxx11Abi = ''; // CMakeLists.txt reads it from libtorch's files instead
  }
}
const flavorCuda = /^cu(\d+)(\d)$/.exec(libtorch.flavor ?? '');
const cudaVersion = libtorch.cudaVersion ?? (flavorCuda ? `${flavorCuda[1]}.${flavorCuda[2]}` : '');

const args = [
  cmakeJs,
  'compile',
  '--directory',
  root,
  '--parallel',
  String(Math.max(1, cpus().length)),
  `--CDCMAKE_PREFIX_PATH=${libtorch.cmakePrefixPath}`,
  // TorchConfig.cmake looks its libraries up with find_library(... PATHS <prefix>/lib), which
  // searches the system directories first: with Debian's libtorch-dev installed, a LIBTORCH or
  // Python PyTorch build would link the system's libraries against the other one's headers.
  // CMAKE_LIBRARY_PATH is searched before the system directories; CMakeLists.txt checks the result.
  `--CDCMAKE_LIBRARY_PATH=${libtorch.libDir}`,
  `--CDTORCH_BERT_EXPECTED_LIB_DIR=${libtorch.libDir}`,
  `--CDTORCH_BERT_LIBTORCH_VERSION=${libtorch.version ?? ''}`,
  `--CDTORCH_BERT_CUDA_VERSION=${cudaVersion}`,
  `--CDTORCH_BERT_CXX11_ABI=${cxx11Abi}`,
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
/** Whether CMake got as far as generating the build system (so a failure was the compiler's). */
const configured = () => ['build.ninja', 'Makefile'].some((f) => existsSync(join(root, 'build', f)));
const manualRequested = args.some((a) => /^--CDTORCH_BERT_MANUAL_TORCH=(ON|1|TRUE)$/i.test(a));

function runCmakeJs(cmakeArgs, retryManual) {
  const child = spawn(process.execPath, cmakeArgs, { cwd: root, stdio: 'inherit', env });
  child.on('error', (err) => {
    console.error(`torch-bert: could not run cmake-js: ${err.message}`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    if (code === 0) process.exit(recordBuild());
    if (retryManual && !signal && !configured()) {
      // A CUDA libtorch's TorchConfig.cmake stops the configure when it dislikes the CUDA
      // toolkit it finds (or finds none); the addon compiles no CUDA code, so set libtorch up
      // without it. `rebuild`: cmake-js `compile` would keep the failed cache.
      console.error(
        'torch-bert: configuring with TorchConfig.cmake failed for this CUDA libtorch; retrying without it (TORCH_BERT_MANUAL_TORCH=ON)',
      );
      runCmakeJs([cmakeArgs[0], 'rebuild', ...cmakeArgs.slice(2), '--CDTORCH_BERT_MANUAL_TORCH=ON'], false);
      return;
    }
    console.error(
      `torch-bert: native build failed (${signal ? `signal ${signal}` : `exit code ${code}`}). ` +
        `Check the compiler output above; \`node ${join(root, 'scripts', 'find-libtorch.mjs')}\` shows which libtorch was used.`,
    );
    process.exit(code || 1);
  });
}
runCmakeJs(args, /^cu/.test(libtorch.flavor ?? '') && !manualRequested);

/** Writes build-info.json next to the new addon, checks it loads, adds the versions it reports. */
function recordBuild() {
  const addon = sourceBinary(root);
  const infoFile = join(dirname(addon), BUILD_INFO);
  const write = (info) => writeFileSync(infoFile, JSON.stringify(info, null, 2) + '\n');
  const info = makeBuildInfo(root, addon, libtorch);
  write(info);
  writeLibtorchCache(root, libtorch);
  const check = checkBinary(addon);
  if (!check.ok) {
    console.error(`torch-bert: built ${addon}, but it does not load:\n${check.error}`);
    return 1;
  }
  write({ ...info, versions: check.result.versions });
  console.log(`torch-bert: built ${addon} (${infoFile})`);
  return 0;
}
