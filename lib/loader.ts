/**
 * Loads the native addon once, and when that fails explains in one message why and
 * how to fix it (the way sharp does), instead of surfacing a raw dlopen error.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NativeBinding } from './binding.js';

/** The package root: `lib/` (sources under vitest) and `dist/` (compiled) both sit one level below it. */
export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Where the addon is looked for, first match wins. `TORCH_BERT_BINARY` overrides. */
export function candidateBinaryPaths(): string[] {
  const paths: string[] = [];
  if (process.env.TORCH_BERT_BINARY) paths.push(resolve(process.env.TORCH_BERT_BINARY));
  paths.push(join(packageRoot, 'build', 'Release', 'torch_bert.node'));
  paths.push(join(packageRoot, 'build', 'Debug', 'torch_bert.node'));
  return paths;
}

let cached: NativeBinding | undefined;

export class NativeLoadError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NativeLoadError';
  }
}

export function loadBinding(): NativeBinding {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const found = candidateBinaryPaths().find((p) => existsSync(p));
  if (!found) {
    throw new NativeLoadError(
      'torch-bert: the native addon is not built (looked for ' +
        candidateBinaryPaths().join(', ') +
        '). Build it with `npm run build:native` (needs libtorch: set LIBTORCH to a libtorch folder, ' +
        'install Python PyTorch, or on Debian/Ubuntu `apt-get install libtorch-dev libopenblas0-pthread`), ' +
        'then check with `node scripts/find-libtorch.mjs`.',
    );
  }
  try {
    cached = require(found) as NativeBinding;
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    let hint =
      'Rebuild it against the libtorch you have with `npm run build:native`, and check which libtorch is found with `node scripts/find-libtorch.mjs`.';
    if (/libtorch|libc10|libtorch_cpu/.test(reason)) {
      hint =
        'The libtorch libraries it was built against are not loadable any more (moved, uninstalled or upgraded). ' +
        hint;
    } else if (/NODE_MODULE_VERSION|napi/i.test(reason)) {
      hint = 'It was built for another Node.js. ' + hint;
    }
    throw new NativeLoadError(`torch-bert: could not load the native addon ${found}: ${reason}\n${hint}`, {
      cause: err,
    });
  }
  return cached;
}
