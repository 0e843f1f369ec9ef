/**
 * Loads the native addon once, and when that fails explains in one message why and
 * how to fix it (the way sharp does), instead of surfacing a raw dlopen error.
 *
 * The decisions live in scripts/native-binary.mjs (plain JavaScript, so the install script
 * shares them before TypeScript is compiled): the libtorch to use (the one recorded for the
 * binary, by its source build or by the install that chose a prebuilt; else the cached search
 * in build/libtorch.json; else a search), the binary for it (TORCH_BERT_BINARY, a source build in build/Release, or a prebuilt in
 * prebuilds/<platform>-<arch>/torch-<version>-<flavor>/), refusing one built against another
 * libtorch, and loading that libtorch's libraries first so no LD_LIBRARY_PATH is needed.
 */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type LoadInfo, loadAddon, packageRoot as root } from '../../scripts/native-binary.mjs';
import type { NativeBinding } from './binding.js';

export type { FoundLibtorch } from '../../scripts/find-libtorch.mjs';
export type { BuildInfo, LibtorchHow, LibtorchRecord, LoadInfo } from '../../scripts/native-binary.mjs';

/** The package root (scripts/native-binary.mjs knows it from its own place): `lib/` (sources under vitest) and `dist/` (compiled) both hold this file two levels below it. */
export const packageRoot: string = root;

/** This package's version, as its package.json says (recorded in every classifier's config). */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

let cached: NativeBinding | undefined;
let cachedInfo: LoadInfo | undefined;

export class NativeLoadError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NativeLoadError';
  }
}

export function loadBinding(): NativeBinding {
  if (cached) return cached;
  try {
    const { binding, info } = loadAddon(packageRoot);
    cached = binding as NativeBinding;
    cachedInfo = info;
  } catch (err) {
    const e = err as Error & { cause?: unknown };
    throw new NativeLoadError(e.message ?? String(err), e.cause === undefined ? undefined : { cause: e.cause });
  }
  return cached;
}

/** What loadBinding() loaded and why (libtorch found, binary, build-info, preloaded libraries); undefined before it ran. */
export function loadedBinaryInfo(): LoadInfo | undefined {
  return cachedInfo;
}
