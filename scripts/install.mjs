#!/usr/bin/env node
/**
 * npm `install` lifecycle script: builds the native addon unless an up-to-date one exists
 * (build/Release/torch_bert.node newer than every file in native/ and CMakeLists.txt).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const addon = join(root, 'build', 'Release', 'torch_bert.node');

function sources(dir) {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sources(path));
    else out.push(path);
  }
  return out;
}

function upToDate() {
  if (!existsSync(addon)) return false;
  const built = statSync(addon).mtimeMs;
  const inputs = [join(root, 'CMakeLists.txt'), ...(existsSync(join(root, 'native')) ? sources(join(root, 'native')) : [])];
  return inputs.every((f) => !existsSync(f) || statSync(f).mtimeMs <= built);
}

if (upToDate()) {
  console.log('torch-bert: native addon is up to date (build/Release/torch_bert.node)');
  process.exit(0);
}

const result = spawnSync(process.execPath, [join(root, 'scripts', 'build-native.mjs')], { cwd: root, stdio: 'inherit' });
if (result.status !== 0) {
  console.error(
    '\ntorch-bert: installing failed because the native addon could not be built.\n' +
      'It needs libtorch (see the message above) and a C++17 compiler with CMake >= 3.18.\n' +
      'Fix that, then run `npm run build:native` in the package folder.',
  );
  process.exit(result.status || 1);
}
