#!/usr/bin/env node
/**
 * `npm run prebuild`: builds the addon for the libtorch found (scripts/build-native.mjs) unless
 * build/Release already holds an up-to-date build for it, and stores it with its
 * build-info.json as prebuilds/<platform>-<arch>/torch-<libtorch version>-<flavor>/, which
 * `npm pack` includes and the install script and the loader pick by the libtorch found.
 *
 *   --reuse      use build/Release even when older than the sources (only if built for this libtorch)
 *   --force      always rebuild
 *   --out DIR    the prebuilds folder (default: ./prebuilds)
 *
 * Run it once per libtorch to support (LIBTORCH=... / a Python PyTorch / the system one).
 * Note: npm also runs a script named "prebuild" before `npm run build`; then it only refreshes
 * the prebuilt copy (build:native right after finds the build up to date).
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { findLibtorch } from './find-libtorch.mjs';
import {
  ADDON,
  BUILD_INFO,
  binaryFits,
  checkBinary,
  describeLibtorch,
  makeBuildInfo,
  platformKey,
  prebuildName,
  readBuildInfo,
  packageRoot as root,
  sourceBinary,
  sourceBuildUpToDate,
} from './native-binary.mjs';

const args = process.argv.slice(2);
const reuse = args.includes('--reuse');
const force = args.includes('--force');
const outAt = args.indexOf('--out');
const out = resolve(outAt >= 0 && args[outAt + 1] ? args[outAt + 1] : join(root, 'prebuilds'));

let libtorch;
try {
  libtorch = findLibtorch();
} catch (err) {
  console.error(err.message);
  process.exit(1);
}

const source = sourceBinary(root);
if (force || !binaryFits(source, libtorch) || !(reuse || sourceBuildUpToDate(root))) {
  console.log(`torch-bert prebuild: building for ${describeLibtorch(libtorch)}`);
  const built = spawnSync(process.execPath, [join(root, 'scripts', 'build-native.mjs')], { cwd: root, stdio: 'inherit' });
  if (built.status !== 0) process.exit(built.status || 1);
} else {
  console.log(`torch-bert prebuild: reusing ${source} (built for ${describeLibtorch(libtorch)})`);
}

// A build from before build-info.json existed: it was built against the libtorch found now (checked above
// as far as possible: build-native builds against exactly this search's result).
let buildInfo = readBuildInfo(source);
if (!buildInfo) {
  const check = checkBinary(source);
  if (!check.ok) {
    console.error(`torch-bert prebuild: ${source} does not load:\n${check.error}`);
    process.exit(1);
  }
  buildInfo = makeBuildInfo(root, source, libtorch, check.result.versions);
}

const dir = join(out, platformKey(), prebuildName(libtorch));
mkdirSync(dir, { recursive: true });
// Copy, then rename: a process loading the old prebuilt never sees a half-written file.
copyFileSync(source, join(dir, `${ADDON}.tmp`));
renameSync(join(dir, `${ADDON}.tmp`), join(dir, ADDON));
writeFileSync(join(dir, BUILD_INFO), JSON.stringify({ ...buildInfo, prebuiltAt: new Date().toISOString() }, null, 2) + '\n');
console.log(`torch-bert prebuild: ${join(dir, ADDON)}`);
