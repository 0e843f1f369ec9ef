#!/usr/bin/env node
/**
 * npm `install` lifecycle script. Finds libtorch (scripts/find-libtorch.mjs; the result is
 * cached in build/libtorch.json), then, first that applies:
 *   1. build/Release/torch_bert.node is up to date and built for that libtorch: nothing to do;
 *   2. a prebuilt for it (prebuilds/<platform>-<arch>/torch-<version>-<flavor>/) loads and
 *      computes: use it (no compiler needed), and record in build/prebuilt.json the libtorch it
 *      was checked with, which the loader then takes without searching (as a source build's
 *      build-info.json);
 *   3. build from source with cmake-js (scripts/build-native.mjs); without cmake or a C++
 *      compiler, one message says what to install.
 * TORCH_BERT_BUILD_FROM_SOURCE=1 skips the prebuilts. Which binary fits which libtorch is
 * scripts/native-binary.mjs's rule, the loader's too.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { NOT_FOUND_MESSAGE } from './find-libtorch.mjs';
import {
  binaryFits,
  checkBinary,
  describeLibtorch,
  installRecordFile,
  listPrebuilds,
  platformKey,
  prebuildName,
  prebuiltBinary,
  removeInstallRecord,
  resolveLibtorch,
  packageRoot as root,
  sourceBinary,
  sourceBuildUpToDate,
  writeInstallRecord,
} from './native-binary.mjs';

const log = (s) => console.log(`torch-bert: ${s}`);

let libtorch;
try {
  ({ libtorch } = resolveLibtorch(root, {
    refresh: true,
    report: (c) => log(c.usable ? `found ${describeLibtorch(c)}` : `skipped ${c.source} candidate ${c.path}: ${c.reason}`),
  }));
} catch (err) {
  console.error(`${err.message ?? NOT_FOUND_MESSAGE}\n\ntorch-bert: installing failed: the native addon needs libtorch.`);
  process.exit(1);
}
log(`using ${describeLibtorch(libtorch)}`);

const source = sourceBinary(root);
const sourceFits = binaryFits(source, libtorch);
if (sourceFits && sourceBuildUpToDate(root)) {
  removeInstallRecord(root);
  log(`native addon is up to date (${source})`);
  process.exit(0);
}

if (process.env.TORCH_BERT_BUILD_FROM_SOURCE !== '1' && !sourceFits) {
  const prebuilt = prebuiltBinary(root, libtorch);
  if (existsSync(prebuilt)) {
    const check = checkBinary(prebuilt);
    if (check.ok) {
      log(`using the prebuilt binary ${prebuilt}`);
      // The libtorch the check loaded it with: the one just found, through the cache written above.
      const checked = check.result.libtorch ?? libtorch;
      if (writeInstallRecord(root, prebuilt, checked)) log(`recorded ${describeLibtorch(checked)} for it in ${installRecordFile(root)}`);
      process.exit(0);
    }
    log(`the prebuilt binary ${prebuilt} does not work here, building from source instead:\n${check.error}`);
  } else {
    const names = listPrebuilds(root).map((p) => p.name);
    log(
      `no prebuilt binary for ${platformKey()} ${prebuildName(libtorch)}` +
        (names.length ? ` (prebuilts: ${names.join(', ')})` : '') +
        // The build's length surprises who expected a download (measured: 15 min 48 s on 2 busy cores).
        '; building from source (cmake and a C++17 compiler, against this libtorch: this takes several minutes)',
    );
  }
}

/** The first of `names` found on PATH, or null. */
function onPath(names) {
  for (const name of names) {
    if (name.includes('/')) {
      if (existsSync(name)) return name;
      continue;
    }
    for (const dir of (process.env.PATH ?? '').split(delimiter)) {
      if (dir && existsSync(join(dir, name))) return join(dir, name);
    }
  }
  return null;
}

const missing = [];
if (!onPath(['cmake'])) missing.push('cmake (>= 3.18)');
const cxx = process.env.CXX?.split(' ')[0];
if (!onPath([...(cxx ? [cxx] : []), 'c++', 'g++', 'clang++'])) missing.push('a C++17 compiler (g++ or clang++)');
if (process.platform !== 'win32' && !onPath(['make', 'ninja'])) missing.push('make (or ninja)');
if (!libtorch.cmakePrefixPath) missing.push('the libtorch development files (its CMake package)');
if (missing.length) {
  const names = listPrebuilds(root).map((p) => p.name);
  console.error(
    `\ntorch-bert: installing failed. There is no prebuilt native addon for ${describeLibtorch(libtorch)} on ${platformKey()} ` +
      `(prebuilts in this package: ${names.length ? names.join(', ') : 'none'}), and building one from source needs ` +
      `${missing.join(', ')}, which ${missing.length > 1 ? 'are' : 'is'} missing.\n` +
      'Install the build tools (Debian/Ubuntu: `sudo apt-get install cmake g++ make` and for the system libtorch `libtorch-dev`; ' +
      'Fedora: `sudo dnf install cmake gcc-c++ make`; macOS: `xcode-select --install && brew install cmake`) and run `npm rebuild torch-bert`, ' +
      (names.length
        ? `or use a libtorch a prebuilt is for (LIBTORCH=/path/to/libtorch or a Python PyTorch of that version).`
        : 'or use a libtorch a prebuilt exists for.'),
  );
  process.exit(1);
}

const result = spawnSync(process.execPath, [join(root, 'scripts', 'build-native.mjs')], { cwd: root, stdio: 'inherit' });
if (result.status === 0) removeInstallRecord(root);
if (result.status !== 0) {
  console.error(
    '\ntorch-bert: installing failed because the native addon could not be built.\n' +
      'It needs libtorch (see the message above) and a C++17 compiler with CMake >= 3.18.\n' +
      'Fix that, then run `npm rebuild torch-bert` (in a checkout: `npm run build:native`).',
  );
  process.exit(result.status || 1);
}
