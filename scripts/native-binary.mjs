#!/usr/bin/env node
/**
 * Which native addon to load, and loading it: shared by the install script, `npm run prebuild`,
 * the build script and the TypeScript loader (lib/addon/loader.ts), so all of them decide the same way.
 *
 * - The libtorch to use, first that holds: the one recorded for the binary to load (a source
 *   build's build-info.json; for a prebuilt, build/prebuilt.json, written by the install script
 *   after checking that the prebuilt loads and computes with it) while its libraries are still
 *   there; build/libtorch.json, find-libtorch's last result, while valid (LIBTORCH, the Python
 *   interpreters on PATH and libtorch_cpu's file unchanged); else scripts/find-libtorch.mjs
 *   searches (and may ask Python). Install and loading both decide here.
 * - Binaries, first match wins: TORCH_BERT_BINARY; build/Release/torch_bert.node (a source
 *   build); prebuilds/<platform>-<arch>/torch-<version>-<flavor>/torch_bert.node. Each has a
 *   build-info.json next to it saying which libtorch it was built against; a binary built
 *   against another libtorch version or flavor is refused, naming both.
 * - Before the addon is required, libtorch's libraries are loaded from the found libtorch's lib
 *   folder with RTLD_GLOBAL: the addon's DT_NEEDED entries then resolve to them by soname, so
 *   a prebuilt whose RUNPATH names the build machine's folder works without LD_LIBRARY_PATH.
 *
 * `node scripts/native-binary.mjs --check [--binary PATH]` loads the addon, runs a tiny
 * computation and prints what was loaded as JSON (exit code 1 and the message on failure).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findLibrary, findLibtorch, NOT_FOUND_MESSAGE, searchKey } from './find-libtorch.mjs';

/** @import { FoundLibtorch, LibtorchCandidate } from './find-libtorch.mjs' */

/**
 * The addon's versions() right after the build: the runtime libtorch, CUDA and cuDNN it was built with.
 * @typedef {{ libtorch: string, cuda: string | null, cudnn: string | null, builtAgainst: string }} AddonVersions
 */

/**
 * build-info.json, next to every binary: what it was built against and with.
 * @typedef {object} BuildInfo
 * @property {string} package
 * @property {string} platform
 * @property {string} arch
 * @property {{ version: string | null, flavor: string, cudaVersion: string | null, source: string, libDir: string, cmakePrefixPath: string | null }} libtorch
 * @property {AddonVersions | null} versions
 * @property {string[] | null} needed
 * @property {string | null} runpath
 * @property {number | null} napiVersion
 * @property {{ version: string, modules: string }} node
 * @property {string | null} compiler
 * @property {string | null} glibc
 * @property {string} builtAt
 * @property {string} [prebuiltAt] Set on prebuilt copies (`npm run prebuild`).
 */

/** @typedef {'override' | 'source' | 'prebuilt'} BinaryKind */

/**
 * How the libtorch to load was chosen. 'build-info': the libtorch the source build recorded;
 * 'install': the one the install script recorded for the prebuilt it chose (build/prebuilt.json);
 * 'cache': build/libtorch.json, find-libtorch's last result; 'search': find-libtorch ran.
 * @typedef {'build-info' | 'install' | 'cache' | 'search'} LibtorchHow
 */

/**
 * The libtorch recorded for the binary the loader would load, and whether it still holds.
 * @typedef {object} LibtorchRecord
 * @property {'build-info' | 'install'} how
 * @property {string} file The record: build/Release/build-info.json or build/prebuilt.json.
 * @property {string} binary The binary it was recorded for.
 * @property {FoundLibtorch} libtorch As recorded.
 * @property {string | null} stale Why it no longer holds (loading then takes the cache or searches); null when it holds.
 */

/**
 * What loadAddon() loaded and how.
 * @typedef {object} LoadInfo
 * @property {FoundLibtorch | null} libtorch
 * @property {LibtorchHow | null} how
 * @property {LibtorchRecord | null} record The libtorch recorded for the binary, also when stale (then `how` is 'cache' or 'search').
 * @property {string | null} searchError
 * @property {string} cacheFile
 * @property {string} binary
 * @property {BinaryKind} kind
 * @property {BuildInfo | null} buildInfo
 * @property {string | null} runpath
 * @property {string[]} preloaded
 * @property {string[]} preloadErrors
 * @property {AddonVersions | null} versions
 */

export const ADDON = 'torch_bert.node';
export const BUILD_INFO = 'build-info.json';
const CACHE_SCHEMA = 1;

export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** @returns {string} */
export function platformKey() {
  return `${process.platform}-${process.arch}`;
}

/**
 * '2.11.0+cu130' -> '2.11.0'; '1.13.0a0' -> '1.13.0'; null when there is no version.
 * @param {string | null | undefined} version
 * @returns {string | null}
 */
export function baseVersion(version) {
  return /^(\d+(?:\.\d+)*)/.exec(version ?? '')?.[1] ?? null;
}

/**
 * 'libtorch 2.11.0+cu130 (cu130, python /usr/bin/python3, /site-packages/torch/lib)'
 * @param {FoundLibtorch | LibtorchCandidate | null} l
 * @param {{ where?: boolean }} [options]
 * @returns {string}
 */
export function describeLibtorch(l, { where = true } = {}) {
  if (!l) return 'no libtorch';
  const how = l.source === 'python' && l.python ? `python ${l.python}` : l.source;
  return `libtorch ${l.version ?? '(unknown version)'} (${l.flavor}${how ? `, ${how}` : ''})${where ? ` at ${l.libDir}` : ''}`;
}

/** @param {BuildInfo} info */
function describeBuiltAgainst(info) {
  return `libtorch ${info.libtorch.version ?? '(unknown version)'} (${info.libtorch.flavor})`;
}

/**
 * @param {FoundLibtorch} libtorch
 * @returns {string}
 */
export function prebuildName(libtorch) {
  return `torch-${baseVersion(libtorch.version) ?? 'unknown'}-${libtorch.flavor}`;
}

/**
 * @param {string} root
 * @param {FoundLibtorch} libtorch
 * @returns {string}
 */
export function prebuildDir(root, libtorch) {
  return join(root, 'prebuilds', platformKey(), prebuildName(libtorch));
}

/**
 * The prebuilt binary for `libtorch` (it may not exist).
 * @param {string} root
 * @param {FoundLibtorch} libtorch
 * @returns {string}
 */
export function prebuiltBinary(root, libtorch) {
  return join(prebuildDir(root, libtorch), ADDON);
}

/**
 * @param {string} root
 * @returns {string}
 */
export function sourceBinary(root) {
  return join(root, 'build', 'Release', ADDON);
}

/**
 * @param {string} binaryPath
 * @returns {BuildInfo | null}
 */
export function readBuildInfo(binaryPath) {
  try {
    return JSON.parse(readFileSync(join(dirname(binaryPath), BUILD_INFO), 'utf8'));
  } catch {
    return null;
  }
}

/**
 * Prebuilts for this platform.
 * @param {string} root
 * @returns {Array<{ name: string, binary: string, buildInfo: BuildInfo | null }>}
 */
export function listPrebuilds(root) {
  const dir = join(root, 'prebuilds', platformKey());
  /** @type {string[]} */
  let names = [];
  try {
    names = readdirSync(dir).sort();
  } catch {
    return [];
  }
  return names
    .map((name) => ({ name, binary: join(dir, name, ADDON) }))
    .filter((p) => existsSync(p.binary))
    .map((p) => ({ ...p, buildInfo: readBuildInfo(p.binary) }));
}

/**
 * @param {string} a
 * @param {string} b
 */
function flavorsMatch(a, b) {
  if (a === b) return true;
  // 'cuda' means "a CUDA build whose CUDA version could not be told".
  return (a === 'cuda' && b.startsWith('cu') && b !== 'cpu') || (b === 'cuda' && a.startsWith('cu') && a !== 'cpu');
}

/**
 * Why a binary with build-info `info` must not be loaded with `libtorch`, or null when it may.
 * @param {BuildInfo | null} info
 * @param {FoundLibtorch | null} libtorch
 * @returns {string | null}
 */
export function incompatibility(info, libtorch) {
  if (!info?.libtorch || !libtorch) return null;
  if (info.platform && info.arch && `${info.platform}-${info.arch}` !== platformKey()) {
    return `it was built for ${info.platform}-${info.arch}, this is ${platformKey()}`;
  }
  const built = baseVersion(info.libtorch.version);
  const found = baseVersion(libtorch.version);
  if ((built && found && built !== found) || !flavorsMatch(info.libtorch.flavor, libtorch.flavor)) {
    return `it was built against ${describeBuiltAgainst(info)}, but the libtorch found is ${describeLibtorch(libtorch)}`;
  }
  return null;
}

/**
 * `binary` exists and was not built against another libtorch than `libtorch`.
 * @param {string} binary
 * @param {FoundLibtorch} libtorch
 * @returns {boolean}
 */
export function binaryFits(binary, libtorch) {
  return existsSync(binary) && !incompatibility(readBuildInfo(binary), libtorch);
}

// ---- the libtorch search, cached ----

/**
 * @param {string} root
 * @returns {string}
 */
export function cacheFile(root) {
  return join(root, 'build', 'libtorch.json');
}

/** @param {FoundLibtorch} libtorch */
function stamp(libtorch) {
  const lib = findLibrary(libtorch.libDir, 'torch_cpu');
  if (!lib) return null;
  try {
    const real = realpathSync(lib);
    const st = statSync(real);
    return { file: real, size: st.size, mtimeMs: st.mtimeMs };
  } catch {
    return null;
  }
}

/**
 * Writes `body` as JSON to `file` through a temporary file and a rename, so that a process
 * reading it never sees half of it.
 * @param {string} file
 * @param {unknown} body
 * @returns {boolean} false when it could not be written (a read-only install)
 */
function writeJson(file, body) {
  try {
    mkdirSync(dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(body, null, 2) + '\n');
    renameSync(tmp, file);
    return true;
  } catch {
    return false;
  }
}

/**
 * @param {string} root
 * @param {FoundLibtorch} libtorch
 * @returns {boolean} false when it could not be written (a read-only install: searching again next time is all it costs)
 */
export function writeLibtorchCache(root, libtorch) {
  return writeJson(cacheFile(root), {
    schema: CACHE_SCHEMA,
    key: searchKey(),
    stamp: stamp(libtorch),
    libtorch,
    writtenAt: new Date().toISOString(),
  });
}

/**
 * The cached search result when it is still valid, else null.
 * @param {string} root
 * @returns {FoundLibtorch | null}
 */
export function readLibtorchCache(root) {
  let cached;
  try {
    cached = JSON.parse(readFileSync(cacheFile(root), 'utf8'));
  } catch {
    return null;
  }
  if (cached?.schema !== CACHE_SCHEMA || !cached.libtorch?.libDir) return null;
  if (JSON.stringify(cached.key) !== JSON.stringify(searchKey())) return null;
  const now = stamp(cached.libtorch);
  if (!now || !cached.stamp || JSON.stringify(now) !== JSON.stringify(cached.stamp)) return null;
  return cached.libtorch;
}

// ---- the libtorch recorded for a binary: build-info.json of a source build, build/prebuilt.json of a prebuilt install ----

const RECORD_SCHEMA = 1;

/** What `torch-bert doctor` says to do about a stale record. */
export const RECORD_FIX =
  'Rerun `npm rebuild torch-bert` (in a checkout: `npm run build:native`) to record the libtorch found now, ' +
  'or set LIBTORCH=/path/to/libtorch to choose one.';

/**
 * Where the install script records the prebuilt it chose and the libtorch it checked it with.
 * @param {string} root
 * @returns {string}
 */
export function installRecordFile(root) {
  return join(root, 'build', 'prebuilt.json');
}

/**
 * The torch and c10 libraries `binary` needs (file names): from its build-info.json, else its ELF header.
 * @param {string} binary
 * @returns {string[] | null}
 */
function torchLibrariesNeeded(binary) {
  const needed = readBuildInfo(binary)?.needed ?? readElfDynamic(binary)?.needed ?? null;
  return needed ? needed.filter((n) => /^lib(torch|c10)/.test(n)) : null;
}

/**
 * What tells one prebuilt from another at the same path (a package update replaces it).
 * @param {string} root
 * @param {string} binary
 * @returns {{ path: string, size: number, builtAt: string | null } | null}
 */
function binaryStamp(root, binary) {
  try {
    const info = readBuildInfo(binary);
    return { path: relative(root, binary), size: statSync(binary).size, builtAt: info?.prebuiltAt ?? info?.builtAt ?? null };
  } catch {
    return null;
  }
}

/**
 * Records that the install chose the prebuilt `binary` for `libtorch`, after checking that it loads and
 * computes with it (checkBinary), so that loading takes this libtorch without searching again.
 * @param {string} root
 * @param {string} binary
 * @param {FoundLibtorch} libtorch
 * @returns {boolean} false when it could not be written (a read-only install: loading then searches)
 */
export function writeInstallRecord(root, binary, libtorch) {
  return writeJson(installRecordFile(root), {
    schema: RECORD_SCHEMA,
    binary: binaryStamp(root, binary),
    libtorch,
    needed: torchLibrariesNeeded(binary),
    recordedAt: new Date().toISOString(),
  });
}

/**
 * Drops the install's record: the install chose no prebuilt this time.
 * @param {string} root
 */
export function removeInstallRecord(root) {
  try {
    rmSync(installRecordFile(root), { force: true });
  } catch {
    // a read-only install: the record is checked against the binary loaded anyway
  }
}

/**
 * A record as read, before it is checked.
 * @typedef {{ how: LibtorchRecord['how'], file: string, binary: string, libtorch: FoundLibtorch, needed: string[] | null,
 *   stamp: { size: number, builtAt: string | null } | null }} RawRecord
 */

/**
 * The libtorch build/Release/build-info.json says the source build was compiled against.
 * @param {string} root
 * @returns {RawRecord | null}
 */
function sourceBuildRecord(root) {
  const binary = sourceBinary(root);
  const info = readBuildInfo(binary);
  const r = info?.libtorch;
  if (!r?.libDir) return null;
  /** @type {FoundLibtorch} */
  const libtorch = {
    cmakePrefixPath: r.cmakePrefixPath ?? null,
    libDir: r.libDir,
    version: r.version ?? null,
    flavor: r.flavor,
    source: /** @type {FoundLibtorch['source']} */ (r.source),
    cudaVersion: r.cudaVersion ?? null,
  };
  return { how: 'build-info', file: join(dirname(binary), BUILD_INFO), binary, libtorch, needed: info?.needed ?? null, stamp: null };
}

/**
 * build/prebuilt.json as the install script wrote it.
 * @param {string} root
 * @returns {RawRecord | null}
 */
function installRecord(root) {
  const file = installRecordFile(root);
  let body;
  try {
    body = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
  if (body?.schema !== RECORD_SCHEMA || !body.libtorch?.libDir || typeof body.binary?.path !== 'string') return null;
  const binary = resolve(root, body.binary.path);
  return { how: 'install', file, binary, libtorch: body.libtorch, needed: body.needed ?? null, stamp: body.binary };
}

/**
 * Why `r` no longer holds, or null: a library of its libtorch is gone, the prebuilt changed, or
 * with its libtorch the loader would pick another binary than the one it was recorded for.
 * @param {string} root
 * @param {RawRecord} r
 * @returns {string | null}
 */
function whyStale(root, r) {
  const { libDir } = r.libtorch;
  const missing = r.needed?.length
    ? r.needed.filter((n) => !existsSync(join(libDir, n)))
    : findLibrary(libDir, 'torch_cpu')
      ? []
      : ['libtorch_cpu'];
  if (missing.length) return `its libraries are gone (${missing.join(', ')} missing from ${libDir})`;
  if (r.stamp) {
    const now = binaryStamp(root, r.binary);
    if (!now) return `the prebuilt ${r.binary} is gone`;
    if (now.size !== r.stamp.size || now.builtAt !== r.stamp.builtAt) return `the prebuilt ${r.binary} changed since the install`;
  }
  try {
    const picked = selectBinary(root, r.libtorch).path;
    return picked === r.binary ? null : `with it the loader would load ${picked}, not ${r.binary}`;
  } catch (err) {
    return `no binary here fits it (${messageOf(err).split('\n')[0]})`;
  }
}

/**
 * The libtorch recorded for the binary the loader would load: build/Release's build-info.json when
 * there is a source build, else the install's build/prebuilt.json; `stale` says when it no longer
 * holds. Null when there is none, when TORCH_BERT_BINARY chooses the binary, or when LIBTORCH
 * chooses another libtorch (a record never overrides the user's choice). Reads files only: taking
 * a record never starts a process.
 * @param {string} [root]
 * @returns {LibtorchRecord | null}
 */
export function recordedLibtorch(root = packageRoot) {
  if (process.env.TORCH_BERT_BINARY) return null;
  const r = existsSync(sourceBinary(root)) ? sourceBuildRecord(root) : installRecord(root);
  if (!r) return null;
  const chosen = process.env.LIBTORCH;
  if (chosen && !(r.libtorch.source === 'LIBTORCH' && resolve(r.libtorch.libDir) === join(resolve(chosen), 'lib'))) return null;
  return { how: r.how, file: r.file, binary: r.binary, libtorch: r.libtorch, stale: whyStale(root, r) };
}

/**
 * The libtorch to use, first that holds: the one recorded for the binary to load (how
 * 'build-info' or 'install', see recordedLibtorch); build/libtorch.json while valid (how
 * 'cache'); else find-libtorch's search (how 'search'), cached. `refresh` goes straight to the
 * search (the install script and doctor find afresh). `record` is the record looked at, also when
 * stale. Throws find-libtorch's NOT_FOUND_MESSAGE when there is no libtorch.
 * @param {string} [root]
 * @param {{ refresh?: boolean, report?: (candidate: LibtorchCandidate) => void }} [options]
 * @returns {{ libtorch: FoundLibtorch, how: LibtorchHow, record: LibtorchRecord | null }}
 */
export function resolveLibtorch(root = packageRoot, { refresh = false, report } = {}) {
  const record = refresh ? null : recordedLibtorch(root);
  if (record && !record.stale) return { libtorch: record.libtorch, how: record.how, record };
  const cached = refresh ? null : readLibtorchCache(root);
  if (cached) return { libtorch: cached, how: 'cache', record };
  const libtorch = findLibtorch({ report });
  writeLibtorchCache(root, libtorch);
  return { libtorch, how: 'search', record };
}

// ---- ELF: which libraries a binary needs, and its RUNPATH ----

/**
 * { needed, runpath, soname } of a 64-bit little-endian ELF file, or null.
 * @param {string} file
 * @returns {{ needed: string[], runpath: string | null, soname: string | null } | null}
 */
export function readElfDynamic(file) {
  let buf;
  try {
    buf = readFileSync(file);
  } catch {
    return null;
  }
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46 || buf[4] !== 2 || buf[5] !== 1) return null;
  const phoff = Number(buf.readBigUInt64LE(0x20));
  const phentsize = buf.readUInt16LE(0x36);
  const phnum = buf.readUInt16LE(0x38);
  const loads = [];
  let dynamic = null;
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    const type = buf.readUInt32LE(at);
    const seg = {
      offset: Number(buf.readBigUInt64LE(at + 8)),
      vaddr: Number(buf.readBigUInt64LE(at + 16)),
      filesz: Number(buf.readBigUInt64LE(at + 32)),
    };
    if (type === 1) loads.push(seg);
    else if (type === 2) dynamic = seg;
  }
  if (!dynamic) return null;
  const entries = [];
  /** @type {number | null} */
  let strtab = null;
  for (let at = dynamic.offset; at + 16 <= dynamic.offset + dynamic.filesz; at += 16) {
    const tag = Number(buf.readBigInt64LE(at));
    const val = Number(buf.readBigUInt64LE(at + 8));
    if (tag === 0) break;
    if (tag === 5) strtab = val;
    entries.push([tag, val]);
  }
  const seg = loads.find((s) => strtab !== null && strtab >= s.vaddr && strtab < s.vaddr + s.filesz);
  if (!seg || strtab === null) return null;
  const strOffset = strtab - seg.vaddr + seg.offset;
  const str = (/** @type {number} */ off) => {
    const start = strOffset + off;
    const end = buf.indexOf(0, start);
    return buf.toString('utf8', start, end < 0 ? buf.length : end);
  };
  /** @type {{ needed: string[], runpath: string | null, soname: string | null }} */
  const out = { needed: [], runpath: null, soname: null };
  for (const [tag, val] of entries) {
    if (tag === 1) out.needed.push(str(val));
    else if (tag === 14) out.soname = str(val);
    else if (tag === 29 || (tag === 15 && out.runpath === null)) out.runpath = str(val);
  }
  return out;
}

// ---- preloading libtorch ----

const PRELOAD_ORDER = ['c10', 'c10_cuda', 'torch_cpu', 'torch_cuda', 'torch'];

/**
 * Loads libtorch's libraries from `libDir` with RTLD_GLOBAL (and RTLD_NODELETE, since
 * process.dlopen closes a library that is not a Node addon), dependencies first. `needed`
 * (the addon's DT_NEEDED entries) picks the exact file names when given. Returns the files
 * loaded and the errors met; on platforms other than Linux it does nothing.
 * @param {string} libDir
 * @param {string[] | null} [needed]
 * @returns {{ loaded: string[], errors: string[] }}
 */
export function preloadLibtorch(libDir, needed = null) {
  /** @type {string[]} */
  const loaded = [];
  /** @type {string[]} */
  const errors = [];
  if (process.platform !== 'linux' || !libDir) return { loaded, errors };
  // Node does not export RTLD_NODELETE; 0x1000 is glibc's value (x86_64 and aarch64 alike).
  const {
    RTLD_NOW = 2,
    RTLD_GLOBAL = 0x100,
    RTLD_NODELETE = 0x1000,
  } = /** @type {Record<string, number | undefined>} */ (osConstants.dlopen ?? {});
  for (const name of PRELOAD_ORDER) {
    const re = new RegExp(`^lib${name}\\.so(\\.\\d+)*$`);
    const exact = needed?.find((n) => re.test(n));
    let file = exact && existsSync(join(libDir, exact)) ? join(libDir, exact) : null;
    if (!file) {
      // The CUDA libraries only when the addon needs them; the core ones always.
      if (needed ? !exact && name.includes('cuda') : name.includes('cuda')) continue;
      file = findLibrary(libDir, name);
    }
    if (!file) continue;
    try {
      process.dlopen({ exports: {} }, file, RTLD_NOW | RTLD_GLOBAL | RTLD_NODELETE);
      loaded.push(file);
    } catch (err) {
      // Expected: a plain library "did not self-register" as an addon, after dlopen succeeded.
      if (/did not self-register/i.test(messageOf(err))) loaded.push(file);
      else errors.push(`${file}: ${messageOf(err)}`);
    }
  }
  return { loaded, errors };
}

// ---- choosing and loading the addon ----

/**
 * @param {unknown} err
 * @returns {string}
 */
function messageOf(err) {
  return err instanceof Error ? err.message : String(err);
}

class LoadError extends Error {
  /**
   * @param {string} message
   * @param {ErrorOptions} [options]
   */
  constructor(message, options) {
    super(message, options);
    this.name = 'NativeLoadError';
  }
}

/** @param {FoundLibtorch | null} libtorch */
function buildHint(libtorch) {
  const target = libtorch ? ` for ${describeLibtorch(libtorch, { where: false })}` : '';
  return (
    `Build one${target} with \`npm rebuild torch-bert\` (in a checkout: \`npm run build:native\`; needs cmake and a C++17 compiler), ` +
    // An absolute path: the relative one holds only in the package's own folder.
    `and check which libtorch is found with \`npx torch-bert doctor\` or \`node ${join(packageRoot, 'scripts', 'find-libtorch.mjs')}\`.`
  );
}

/**
 * What to do when requiring the addon failed with `reason`: the libtorch found (null when the
 * search failed with `searchError`), the binary's build-info.
 * @param {string} reason
 * @param {FoundLibtorch | null} libtorch
 * @param {string | null} searchError
 * @param {BuildInfo | null} buildInfo
 * @returns {string}
 */
export function loadFailureHint(reason, libtorch, searchError, buildInfo) {
  if (/libtorch|libc10|libcudart|libcudnn|libnv|cannot open shared object/.test(reason)) {
    if (!libtorch) {
      // The binary is fine; what is missing is libtorch, and the search's message says how to
      // provide one (building again would not help without one).
      const builtAgainst = buildInfo?.libtorch ? `${describeBuiltAgainst(buildInfo)} at ${buildInfo.libtorch.libDir}` : 'libtorch';
      return `It was built against ${builtAgainst}, and no libtorch is found now:\n${searchError ?? NOT_FOUND_MESSAGE}`;
    }
    return (
      `The libtorch libraries it needs could not be loaded (moved, uninstalled or upgraded?); they were looked for in ${libtorch.libDir}. ` +
      buildHint(libtorch)
    );
  }
  if (/NODE_MODULE_VERSION|napi/i.test(reason)) return 'It was built for another Node.js. ' + buildHint(libtorch);
  if (/GLIBC|GLIBCXX|CXXABI/.test(reason))
    return 'It was built on a newer system (C or C++ runtime library) than this one. ' + buildHint(libtorch);
  return buildHint(libtorch);
}

/**
 * The binary to load for `libtorch`.
 * Throws a LoadError that names the versions when every binary present was built for another libtorch.
 * @param {string} root
 * @param {FoundLibtorch | null} libtorch
 * @returns {{ path: string, kind: BinaryKind, buildInfo: BuildInfo | null }}
 */
export function selectBinary(root, libtorch) {
  /** @type {string[]} */
  const refused = [];
  /**
   * @param {string} path
   * @param {BinaryKind} kind
   */
  const consider = (path, kind) => {
    if (!existsSync(path)) return null;
    const buildInfo = readBuildInfo(path);
    const why = incompatibility(buildInfo, libtorch);
    if (!why) return { path, kind, buildInfo };
    refused.push(`${path}: ${why}`);
    return null;
  };
  if (process.env.TORCH_BERT_BINARY) {
    const path = resolve(process.env.TORCH_BERT_BINARY);
    if (!existsSync(path)) throw new LoadError(`torch-bert: TORCH_BERT_BINARY is set to ${path}, which does not exist.`);
    const chosen = consider(path, 'override');
    if (chosen) return chosen;
  } else {
    const chosen =
      consider(sourceBinary(root), 'source') ??
      consider(join(root, 'build', 'Debug', ADDON), 'source') ??
      (libtorch ? consider(prebuiltBinary(root, libtorch), 'prebuilt') : null);
    if (chosen) return chosen;
  }
  const prebuilds = listPrebuilds(root);
  const available = prebuilds.length ? prebuilds.map((p) => p.name).join(', ') : 'none';
  if (refused.length) {
    throw new LoadError(
      `torch-bert: refusing to load the native addon built for another libtorch (loading it would crash or misbehave):\n  ${refused.join('\n  ')}\n` +
        `Prebuilt binaries in this package for ${platformKey()}: ${available}.\n${buildHint(libtorch)}`,
    );
  }
  if (!libtorch) {
    throw new LoadError(`torch-bert: the native addon is not built, and no libtorch was found to build it against.\n${NOT_FOUND_MESSAGE}`);
  }
  throw new LoadError(
    `torch-bert: no native addon for ${describeLibtorch(libtorch)}: not built from source (no ${sourceBinary(root)}), ` +
      `and no prebuilt for ${platformKey()} ${prebuildName(libtorch)} (prebuilts in this package: ${available}).\n${buildHint(libtorch)}`,
  );
}

/**
 * Finds libtorch, picks the binary, preloads libtorch and requires the addon.
 * Returns { binding, info } where info says what was loaded and how; throws one explanatory
 * LoadError (name 'NativeLoadError') otherwise.
 * @param {string} [root]
 * @param {{ refresh?: boolean }} [options]
 * @returns {{ binding: unknown, info: LoadInfo }}
 */
export function loadAddon(root = packageRoot, { refresh = false } = {}) {
  let resolved = null;
  let searchError = null;
  /** @type {LibtorchRecord | null} */
  let record = null;
  try {
    resolved = resolveLibtorch(root, { refresh });
    record = resolved.record;
  } catch (err) {
    searchError = messageOf(err);
    // Only a stale record (or none) gets here: doctor shows it with the search's error.
    record = refresh ? null : recordedLibtorch(root);
  }
  const libtorch = resolved?.libtorch ?? null;
  const chosen = selectBinary(root, libtorch);
  const elf = readElfDynamic(chosen.path);
  const needed = chosen.buildInfo?.needed ?? elf?.needed ?? null;
  const preload = libtorch ? preloadLibtorch(libtorch.libDir, needed) : { loaded: [], errors: [] };
  const info = {
    libtorch,
    how: resolved?.how ?? null,
    record,
    searchError,
    cacheFile: cacheFile(root),
    binary: chosen.path,
    kind: chosen.kind,
    buildInfo: chosen.buildInfo,
    runpath: elf?.runpath ?? null,
    preloaded: preload.loaded,
    preloadErrors: preload.errors,
  };
  // The addon's own interface is typed in lib/addon/binding.ts; here only versions() is used.
  /** @type {{ versions?: () => AddonVersions }} */
  let binding;
  try {
    binding = createRequire(import.meta.url)(chosen.path);
  } catch (err) {
    const reason = messageOf(err);
    const hint = loadFailureHint(reason, libtorch, searchError, chosen.buildInfo);
    const preloadNote = preload.errors.length ? `\nWhile loading libtorch first: ${preload.errors.join('; ')}` : '';
    throw new LoadError(`torch-bert: could not load the native addon ${chosen.path}: ${reason}${preloadNote}\n${hint}`, { cause: err });
  }
  // Second net: the libtorch actually running must be the one the binary was built with.
  const versions = typeof binding.versions === 'function' ? binding.versions() : null;
  const expected = chosen.buildInfo?.versions?.libtorch ?? versions?.builtAgainst;
  if (versions && expected && baseVersion(versions.libtorch) !== baseVersion(expected)) {
    throw new LoadError(
      `torch-bert: the native addon ${chosen.path} was built against libtorch ${expected}, but libtorch ${versions.libtorch} ` +
        `got loaded${libtorch ? ` (the libtorch found: ${describeLibtorch(libtorch)})` : ''}; refusing to use it.\n${buildHint(libtorch)}`,
    );
  }
  return { binding, info: { ...info, versions } };
}

// ---- build-info.json ----

/**
 * @param {string} buildDir
 * @returns {string | null}
 */
function compilerOf(buildDir) {
  try {
    const cmakeFiles = join(buildDir, 'CMakeFiles');
    for (const v of readdirSync(cmakeFiles)) {
      const f = join(cmakeFiles, v, 'CMakeCXXCompiler.cmake');
      if (!existsSync(f)) continue;
      const text = readFileSync(f, 'utf8');
      const get = (/** @type {string} */ k) => new RegExp(`set\\(${k} "([^"]*)"\\)`).exec(text)?.[1];
      return `${get('CMAKE_CXX_COMPILER_ID') ?? '?'} ${get('CMAKE_CXX_COMPILER_VERSION') ?? '?'} (${get('CMAKE_CXX_COMPILER') ?? '?'})`;
    }
  } catch {
    // no CMake build folder
  }
  return null;
}

/**
 * @param {string} root
 * @returns {number | null}
 */
function napiVersionOf(root) {
  try {
    return Number(/NAPI_VERSION=(\d+)/.exec(readFileSync(join(root, 'CMakeLists.txt'), 'utf8'))?.[1]) || null;
  } catch {
    return null;
  }
}

/**
 * build-info.json for a binary built in `root` against `libtorch`; `versions` from the addon's versions().
 * @param {string} root
 * @param {string} binaryPath
 * @param {FoundLibtorch} libtorch
 * @param {AddonVersions | null} [versions]
 * @returns {BuildInfo}
 */
export function makeBuildInfo(root, binaryPath, libtorch, versions = null) {
  const elf = readElfDynamic(binaryPath);
  /** @type {{ name?: string, version?: string }} */
  let pkg = {};
  try {
    pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  } catch {
    // not fatal
  }
  const report = /** @type {{ header?: { glibcVersionRuntime?: string } } | undefined} */ (process.report?.getReport?.());
  return {
    package: `${pkg.name ?? 'torch-bert'}@${pkg.version ?? '?'}`,
    platform: process.platform,
    arch: process.arch,
    libtorch: {
      version: libtorch.version,
      flavor: libtorch.flavor,
      cudaVersion: libtorch.cudaVersion ?? versions?.cuda ?? null,
      source: libtorch.source,
      libDir: libtorch.libDir,
      cmakePrefixPath: libtorch.cmakePrefixPath,
    },
    versions,
    needed: elf?.needed.filter((n) => /^lib(c10|torch)/.test(n)) ?? null,
    runpath: elf?.runpath ?? null,
    napiVersion: napiVersionOf(root),
    node: { version: process.version, modules: process.versions.modules },
    compiler: compilerOf(join(root, 'build')),
    glibc: report?.header?.glibcVersionRuntime ?? null,
    builtAt: new Date(statSync(binaryPath).mtimeMs).toISOString(),
  };
}

// ---- source build freshness ----

/**
 * @param {string} dir
 * @returns {string[]}
 */
function files(dir) {
  /** @type {string[]} */
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...files(path));
    else out.push(path);
  }
  return out;
}

/**
 * build/Release/torch_bert.node exists and is newer than CMakeLists.txt and every file in native/.
 * @param {string} root
 * @returns {boolean}
 */
export function sourceBuildUpToDate(root) {
  const addon = sourceBinary(root);
  if (!existsSync(addon)) return false;
  const built = statSync(addon).mtimeMs;
  const inputs = [join(root, 'CMakeLists.txt'), ...(existsSync(join(root, 'native')) ? files(join(root, 'native')) : [])];
  return inputs.every((f) => !existsSync(f) || statSync(f).mtimeMs <= built);
}

/**
 * Files mapped into this process whose name matches `re` (Linux: /proc/self/maps), or null elsewhere.
 * @param {RegExp} re
 * @returns {string[] | null}
 */
export function mappedLibraries(re) {
  let text;
  try {
    text = readFileSync('/proc/self/maps', 'utf8');
  } catch {
    return null;
  }
  /** @type {Set<string>} */
  const seen = new Set();
  for (const line of text.split('\n')) {
    const path = line.slice(line.indexOf('/'));
    if (line.includes('/') && re.test(path.split('/').pop() ?? '')) seen.add(path.replace(/ \(deleted\)$/, ''));
  }
  return [...seen];
}

// ---- --check ----

/**
 * What `--check` printed: what was loaded (LoadInfo) and what it computed.
 * @typedef {LoadInfo & { ok: true, randperm: number[], roundTrip: number[], mapped: string[] | null }} CheckResult
 */

/**
 * Loads `binary` in a child process (`--check`: this file loading it with TORCH_BERT_BINARY, so no
 * record applies, and computing a little) and says what it loaded, or why it failed.
 * @param {string} binary
 * @returns {{ ok: true, result: CheckResult } | { ok: false, error: string }}
 */
export function checkBinary(binary) {
  const check = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--check', '--binary', binary], {
    cwd: packageRoot,
    encoding: 'utf8',
  });
  if (check.status !== 0) return { ok: false, error: check.stderr.trim() || `the check exited with ${check.status ?? check.signal}` };
  return { ok: true, result: JSON.parse(check.stdout) };
}

const isMain = process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain && process.argv.includes('--check')) {
  const at = process.argv.indexOf('--binary');
  if (at > 0 && process.argv[at + 1]) process.env.TORCH_BERT_BINARY = process.argv[at + 1];
  try {
    const loaded = loadAddon(packageRoot);
    // The calls of this check; the addon's whole interface is typed in lib/addon/binding.ts.
    const binding =
      /** @type {{ randperm(n: number, seed: number): ArrayLike<number>, Tensor: { fromArray(data: Float32Array, shape: number[]): { toArray(): ArrayLike<number>, dispose(): void } } }} */ (
        loaded.binding
      );
    const { info } = loaded;
    const perm = Array.from(binding.randperm(10, 0));
    const t = binding.Tensor.fromArray(new Float32Array([1, 2, 3, 4]), [2, 2]);
    const back = Array.from(t.toArray());
    t.dispose();
    const mapped = mappedLibraries(/^lib(c10|torch)/);
    console.log(JSON.stringify({ ok: true, ...info, randperm: perm, roundTrip: back, mapped }));
  } catch (err) {
    console.error(messageOf(err));
    process.exit(1);
  }
}
