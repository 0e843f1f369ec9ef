#!/usr/bin/env node
/**
 * Locates a libtorch to build the native addon against.
 *
 * Search order (first usable one wins):
 *   1. env LIBTORCH: an unpacked libtorch folder (with share/cmake/Torch); one that is not is an
 *      error, never skipped: a mistyped path to a CUDA libtorch would otherwise run on the CPU
 *      one found next, unnoticed;
 *   2. Python PyTorch: `python3` on PATH, then /usr/bin/python3;
 *   3. the system install (Debian/Ubuntu libtorch-dev; without -dev, the runtime libraries
 *      alone, which can load a prebuilt addon but not build one: `cmakePrefixPath` is null).
 *
 * `node scripts/find-libtorch.mjs` prints what it found (`--json` for machine output).
 * Loading the addon runs this search only when the libtorch recorded for the binary (a source
 * build's build-info.json, a prebuilt install's build/prebuilt.json) and the cached result both
 * fail: scripts/native-binary.mjs's resolveLibtorch decides, for the install script too.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const NOT_FOUND_MESSAGE =
  'torch-bert: no libtorch found. Provide one of:\n' +
  '  - LIBTORCH=/path/to/libtorch (an unpacked libtorch from https://pytorch.org, containing share/cmake/Torch)\n' +
  '  - Python PyTorch: `pip install torch` (found through `python3`)\n' +
  '  - on Debian/Ubuntu: `sudo apt-get install libtorch-dev libopenblas0-pthread`\n' +
  // An installed package has no build:native script: `npm rebuild` runs its install script.
  'Then run `npm rebuild torch-bert` (in a checkout: `npm run build:native`).';

const TORCH_CONFIG = join('Torch', 'TorchConfig.cmake');

/**
 * A libtorch found: what to build against and where its libraries are.
 * @typedef {object} FoundLibtorch
 * @property {string | null} cmakePrefixPath CMAKE_PREFIX_PATH to build against; null for runtime libraries without the CMake package.
 * @property {string} libDir The folder with libtorch's shared libraries.
 * @property {string | null} version
 * @property {string} flavor 'cpu', 'cuXYZ', or 'cuda' (a CUDA build of unknown CUDA version).
 * @property {'LIBTORCH' | 'python' | 'system'} source
 * @property {string} [python] The interpreter that reported it (source 'python').
 * @property {string | null} [cudaVersion]
 */

/**
 * A place the search looked at, usable or not, as `findLibtorch`'s `report` gets it: a
 * usable one carries the FoundLibtorch fields, an unusable one some of them and `reason`.
 * @typedef {Partial<FoundLibtorch> & { source: FoundLibtorch['source'], path: string, usable: boolean, reason?: string, note?: string }} LibtorchCandidate
 */

/** @typedef {(candidate: LibtorchCandidate) => void} Report */

/**
 * Version declared by a Torch CMake package (`<dir>/Torch/TorchConfigVersion.cmake`).
 * @param {string} cmakeDir
 * @returns {string | null}
 */
function cmakePackageVersion(cmakeDir) {
  try {
    const text = readFileSync(join(cmakeDir, 'Torch', 'TorchConfigVersion.cmake'), 'utf8');
    return /set\(PACKAGE_VERSION "([^"]+)"\)/.exec(text)?.[1] ?? null;
  } catch {
    return null;
  }
}

/**
 * 'cpu', or 'cuXYZ' from a version suffix like '2.11.0+cu130' or a CUDA version like '13.0'.
 * @param {{ version: string | null, cudaVersion?: string | null, libDir: string }} libtorch
 * @returns {string}
 */
function flavorOf({ version, cudaVersion, libDir }) {
  const suffix = /\+(cu\d+|cpu)\b/.exec(version ?? '')?.[1];
  if (suffix) return suffix;
  if (cudaVersion) return 'cu' + cudaVersion.replace(/\./g, '');
  if (libDir && existsSync(libDir) && readdirSync(libDir).some((f) => /^libtorch_cuda\.(so|dylib)/.test(f))) {
    // A CUDA build whose CUDA version we cannot tell.
    return 'cuda';
  }
  return 'cpu';
}

/**
 * @param {string} dir
 * @param {Report} [report]
 * @returns {FoundLibtorch | null}
 */
function fromLibtorchDir(dir, report) {
  const root = resolve(dir);
  const cmakeDir = join(root, 'share', 'cmake');
  if (!existsSync(join(cmakeDir, TORCH_CONFIG))) {
    report?.({ source: 'LIBTORCH', path: root, usable: false, reason: `no ${join('share', 'cmake', TORCH_CONFIG)} in it` });
    return null;
  }
  let version = null;
  try {
    version = readFileSync(join(root, 'build-version'), 'utf8').trim() || null;
  } catch {
    version = cmakePackageVersion(cmakeDir);
  }
  const libDir = join(root, 'lib');
  /** @type {FoundLibtorch} */
  const found = { cmakePrefixPath: cmakeDir, libDir, version, flavor: flavorOf({ version, libDir }), source: 'LIBTORCH' };
  report?.({ ...found, path: root, usable: true });
  return found;
}

const PYTHON_PROBE = [
  'import json, os, torch, torch.utils',
  'print(json.dumps({"cmake": torch.utils.cmake_prefix_path, "version": torch.__version__,',
  ' "cuda": torch.version.cuda, "lib": os.path.join(os.path.dirname(torch.__file__), "lib")}))',
].join('\n');

/**
 * @param {string} python
 * @param {Report} [report]
 * @returns {FoundLibtorch | null}
 */
function fromPython(python, report) {
  /** @type {{ cmake: string, version: string, cuda: string | null, lib: string }} */
  let info;
  try {
    const out = execFileSync(python, ['-c', PYTHON_PROBE], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 120_000,
    });
    info = JSON.parse(out.trim().split('\n').pop() ?? '');
  } catch {
    return null; // no such interpreter, or no torch in it: not a candidate
  }
  const source = /** @type {const} */ ('python');
  const base = { source, python, version: info.version };
  if (!existsSync(join(info.cmake, TORCH_CONFIG))) {
    // Debian's python3-torch, for one, ships without the CMake package.
    report?.({ ...base, path: info.cmake, usable: false, reason: 'this PyTorch ships no CMake package (Torch/TorchConfig.cmake)' });
    return null;
  }
  /** @type {FoundLibtorch} */
  const found = {
    cmakePrefixPath: info.cmake,
    libDir: info.lib,
    version: info.version,
    flavor: flavorOf({ version: info.version, cudaVersion: info.cuda, libDir: info.lib }),
    cudaVersion: info.cuda ?? null,
    source,
    python,
  };
  report?.({ ...found, path: info.cmake, usable: true });
  return found;
}

// Absolute fallbacks: the answer must not depend on PATH (an install with the build tools
// hidden, a service with a bare PATH), or the version recorded at build time and the one found
// at load time could differ.
/** @returns {string | null} */
function multiarch() {
  for (const [cmd, args] of /** @type {Array<[string, string[]]>} */ ([
    ['dpkg-architecture', ['-qDEB_HOST_MULTIARCH']],
    ['/usr/bin/dpkg-architecture', ['-qDEB_HOST_MULTIARCH']],
    ['gcc', ['-print-multiarch']],
  ])) {
    try {
      const out = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
      if (out) return out;
    } catch {
      // try the next way
    }
  }
  return null;
}

/**
 * @param {string[]} args
 * @returns {string | null}
 */
function dpkgQuery(args) {
  for (const cmd of ['dpkg-query', '/usr/bin/dpkg-query']) {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      // try the next way
    }
  }
  return null;
}

/**
 * @param {string} pkg
 * @returns {string | null}
 */
function dpkgVersion(pkg) {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own ${Version} format, not a JS template
  const out = dpkgQuery(['-W', '-f=${Version}', pkg]);
  // '1.13.1+dfsg-4' -> '1.13.1'
  return (out && /^(?:\d+:)?(\d+(?:\.\d+)*)/.exec(out)?.[1]) ?? null;
}

/**
 * The Debian version of the package that owns `file` ('libtorch1.13:amd64: /usr/lib/...').
 * @param {string} file
 * @returns {string | null}
 */
function dpkgVersionOfFile(file) {
  const pkg = dpkgQuery(['-S', file])?.split(':')[0];
  return pkg ? dpkgVersion(pkg) : null;
}

/**
 * `lib<name>.so*` / `lib<name>.dylib` in `dir`, or null.
 * @param {string} dir
 * @param {string} name
 * @returns {string | null}
 */
function findLibrary(dir, name) {
  try {
    const files = readdirSync(dir).filter((f) => new RegExp(`^lib${name}\\.(so(\\.\\d+)*|dylib)$`).test(f));
    files.sort((a, b) => a.length - b.length);
    return files.length ? join(dir, files[0]) : null;
  } catch {
    return null;
  }
}

/**
 * @param {Report} [report]
 * @returns {FoundLibtorch | null}
 */
function fromSystem(report) {
  const dirs = [];
  const arch = multiarch();
  if (arch) dirs.push(`/usr/lib/${arch}/cmake`);
  try {
    for (const entry of readdirSync('/usr/lib')) {
      if (/-linux-gnu/.test(entry)) dirs.push(`/usr/lib/${entry}/cmake`);
    }
  } catch {
    // no /usr/lib: not Linux
  }
  dirs.push('/usr/lib/cmake', '/usr/local/lib/cmake', '/usr/local/share/cmake', '/usr/share/cmake');
  for (const cmakeDir of [...new Set(dirs)]) {
    if (!existsSync(join(cmakeDir, TORCH_CONFIG))) continue;
    const libDir = dirname(cmakeDir);
    const version = dpkgVersion('libtorch-dev') ?? cmakePackageVersion(cmakeDir);
    /** @type {FoundLibtorch} */
    const found = { cmakePrefixPath: cmakeDir, libDir, version, flavor: flavorOf({ version, libDir }), source: 'system' };
    report?.({ ...found, path: cmakeDir, usable: true });
    return found;
  }
  // Runtime libraries without the CMake package (Debian's libtorchX.Y without libtorch-dev):
  // enough to load a prebuilt addon.
  for (const libDir of [...new Set(dirs.map((d) => dirname(d)))]) {
    const lib = findLibrary(libDir, 'torch_cpu');
    if (!lib) continue;
    const version = dpkgVersionOfFile(realpathOrSelf(lib)) ?? /\.so\.(\d+\.\d+\.\d+)$/.exec(realpathOrSelf(lib))?.[1] ?? null;
    /** @type {FoundLibtorch} */
    const found = { cmakePrefixPath: null, libDir, version, flavor: flavorOf({ version, libDir }), source: 'system' };
    report?.({
      ...found,
      path: libDir,
      usable: true,
      note: 'runtime libraries only (no CMake package): can load a prebuilt, cannot build',
    });
    return found;
  }
  return null;
}

/**
 * @param {string} p
 * @returns {string}
 */
function realpathOrSelf(p) {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

/** @returns {string[]} */
function pythonCandidates() {
  const list = [];
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(join(dir, 'python3'))) {
      list.push(join(dir, 'python3'));
      break;
    }
  }
  list.push('/usr/bin/python3');
  // pyenv shims and symlinks can point at the same interpreter; probe each only once.
  const seen = new Set();
  return list.filter((p) => {
    if (!existsSync(p)) return false;
    const key = realpathOrSelf(p);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/**
 * What the search depends on besides the files themselves: LIBTORCH and the Python
 * interpreters it would ask. A cached result is stale when this changes.
 * @returns {{ LIBTORCH: string | null, pythons: string[] }}
 */
export function searchKey() {
  return { LIBTORCH: process.env.LIBTORCH ? resolve(process.env.LIBTORCH) : null, pythons: pythonCandidates().map(realpathOrSelf) };
}

export { findLibrary };

/**
 * Finds libtorch, in the order LIBTORCH, Python PyTorch, system install.
 * @param {{ report?: Report }} [options] `report` is called for every candidate found, usable
 *   or not (with `usable` and, when unusable, `reason`).
 * @returns {FoundLibtorch}
 * @throws {Error} naming LIBTORCH when it is set to something else than a libtorch folder; with
 *   NOT_FOUND_MESSAGE when nothing usable is found.
 */
export function findLibtorch({ report } = {}) {
  if (process.env.LIBTORCH) {
    const found = fromLibtorchDir(process.env.LIBTORCH, report);
    if (found) return found;
    throw new Error(
      `torch-bert: LIBTORCH=${resolve(process.env.LIBTORCH)} is not a libtorch folder (no ${join('share', 'cmake', TORCH_CONFIG)} ` +
        'in it): point it at an unpacked libtorch, or unset it to use a Python PyTorch or the system install.',
    );
  }
  for (const python of pythonCandidates()) {
    const found = fromPython(python, report);
    if (found) return found;
  }
  const found = fromSystem(report);
  if (found) return found;
  throw new Error(NOT_FOUND_MESSAGE);
}

/** @param {LibtorchCandidate} c */
function describe(c) {
  const where = c.python ? `${c.path} (via ${c.python})` : c.path;
  if (!c.usable) return `  skipped  [${c.source}] ${where}: ${c.reason}`;
  return `  found    [${c.source}] libtorch ${c.version ?? '(unknown version)'} ${c.flavor} at ${where}`;
}

const isMain = process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const json = process.argv.includes('--json');
  /** @type {LibtorchCandidate[]} */
  const candidates = [];
  try {
    const found = findLibtorch({ report: (c) => candidates.push(c) });
    if (json) {
      console.log(JSON.stringify(found, null, 2));
    } else {
      console.log('libtorch candidates:');
      for (const c of candidates) console.log(describe(c));
      console.log(`\nusing: libtorch ${found.version ?? '(unknown version)'} (${found.flavor}, ${found.source})`);
      console.log(`  CMAKE_PREFIX_PATH=${found.cmakePrefixPath ?? '(none: runtime libraries only, cannot build from source)'}`);
      console.log(`  libraries in ${found.libDir}`);
    }
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (json) console.log(JSON.stringify({ error: message, candidates }, null, 2));
    else {
      for (const c of candidates) console.error(describe(c));
      console.error(message);
    }
    process.exit(1);
  }
}
