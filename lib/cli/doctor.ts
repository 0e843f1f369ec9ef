/**
 * `torch-bert doctor [--json]`: what a bug report needs — the libtorch found (and how), the
 * binary loaded and its build-info.json, the libtorch running, CUDA and cuDNN, the devices,
 * the BLAS in use, thread settings, Node and the platform. It searches for libtorch afresh
 * (refreshing the cache the loader reads) and never throws: what fails is reported.
 */
import { execFileSync } from 'node:child_process';
import { cpus, type as osType, release, totalmem } from 'node:os';
import type { FoundLibtorch, LibtorchCandidate } from '../../scripts/find-libtorch.mjs';
import {
  describeLibtorch,
  mappedLibraries,
  RECORD_FIX,
  readLibtorchCache,
  recordedLibtorch,
  resolveLibtorch,
} from '../../scripts/native-binary.mjs';
import type { CpuCacheStats, CudaDeviceProperties, NativeBinding, NativeBuildInfo } from '../addon/binding.js';
import { messageOf } from '../addon/errors.js';
import {
  type BuildInfo,
  type LibtorchHow,
  type LibtorchRecord,
  loadBinding,
  loadedBinaryInfo,
  packageRoot,
  packageVersion,
} from '../addon/loader.js';
import { hubSettings } from '../models/hub.js';
import { cpuBf16 } from '../training/precision.js';

export interface GpuInfo {
  index: number;
  name: string;
  memoryMiB: number | null;
  driver: string | null;
  computeCapability: string | null;
}

export interface DoctorReport {
  torchBert: { version: string; packageRoot: string };
  libtorch: {
    found: FoundLibtorch | null;
    /** Every candidate looked at, usable or not (LIBTORCH, Python PyTorch, system). */
    candidates: LibtorchCandidate[];
    /** Whether build/libtorch.json (what the loader reads) held the same result before this search. */
    cacheWasCurrent: boolean;
    /** The libtorch recorded for the binary (by its source build, or by the install that chose a prebuilt), which the loader takes while it holds; `stale` says why not. */
    record: LibtorchRecord | null;
    error: string | null;
  };
  binary: {
    path: string;
    kind: 'override' | 'source' | 'prebuilt';
    /** How the loader chose its libtorch: the record, the cached search, or a search. */
    how: LibtorchHow | null;
    buildInfo: BuildInfo | null;
    runpath: string | null;
    /** libtorch's libraries loaded before the addon (RTLD_GLOBAL), from the found libtorch. */
    preloaded: string[];
  } | null;
  loadError: string | null;
  runtime: {
    libtorch: string;
    builtAgainst: string;
    /** The libtorch files mapped into this process (Linux). */
    libraries: string[] | null;
    /** How the addon was compiled (binding.buildInfo()). */
    build: NativeBuildInfo | null;
    /** libtorch's build configuration (torch.__config__.show()). */
    config: string | null;
  } | null;
  cuda: { available: boolean; deviceCount: number; version: string | null; cudnn: string | null } | null;
  devices: string[];
  gpus: GpuInfo[];
  /** The CUDA devices as libtorch numbers them, read through the CUDA driver (empty without CUDA). */
  cudaDevices: CudaDeviceProperties[];
  blas: { name: string; libraries: string[]; how: string } | null;
  /** torch-bert's caching allocator for libtorch's CPU tensors (null without a loaded binary). */
  cpuAllocator: CpuCacheStats | null;
  /** Token pruning (native/graph/token_pruning.h) on or off (null without a loaded binary). */
  tokenPruning: boolean | null;
  /** Data-parallel backends this build can create (native/distributed/; null without a loaded binary): ['gloo'], ['gloo', 'nccl'] with NCCL for CUDA tensors, or [] when built without Gloo's headers. */
  distributedBackends: string[] | null;
  /** Where Hugging Face Hub ids resolve (lib/models/hub.ts): the cache, the endpoint, offline mode, whether HF_TOKEN is set (never its value). */
  hub: ReturnType<typeof hubSettings>;
  threads: {
    intraOp: number | null;
    interOp: number | null;
    /** OpenBLAS's own pool (OPENBLAS_NUM_THREADS, else OMP_NUM_THREADS, else the cores; a data-parallel rank: its share); null where the BLAS is not OpenBLAS or no binary loaded. */
    blas: number | null;
    /** ATen's parallel backend and settings (torch.__config__.parallel_info()). */
    parallel: string | null;
    cpus: number;
    env: Record<string, string>;
  };
  node: { version: string; modules: string; napi: string | null; execPath: string };
  platform: {
    os: string;
    release: string;
    arch: string;
    glibc: string | null;
    cpu: string | null;
    memoryGiB: number;
    /** CPU features that compute bfloat16 natively (avx512_bf16, amx_bf16, bf16); empty: precision 'bf16' is emulated (slower) on this CPU; null: unknown. */
    cpuBf16: string[] | null;
  };
}

/** The package's version, or 'unknown': doctor reports what fails rather than throwing. */
function versionOrUnknown(): string {
  try {
    return packageVersion();
  } catch {
    return 'unknown';
  }
}

/** GPUs as nvidia-smi sees them (name, memory, driver); empty without nvidia-smi. */
function nvidiaSmi(): GpuInfo[] {
  try {
    const out = execFileSync(
      'nvidia-smi',
      ['--query-gpu=index,name,memory.total,driver_version,compute_cap', '--format=csv,noheader,nounits'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 },
    );
    return out
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [index, name, memory, driver, cc] = line.split(',').map((s) => s.trim());
        const num = Number(memory);
        return {
          index: Number(index),
          name: name ?? '?',
          memoryMiB: Number.isFinite(num) ? num : null,
          driver: driver || null,
          computeCapability: cc && cc !== '[N/A]' ? cc : null,
        };
      });
  } catch {
    return [];
  }
}

function blasName(libraries: string[], config: string | null): string {
  const all = libraries.join(' ').toLowerCase();
  const fromConfig = config ? /BLAS_INFO=(\w+)/.exec(config)?.[1] : undefined;
  if (/openblas/.test(all)) return 'OpenBLAS';
  if (/mkl/.test(all) || fromConfig === 'mkl') return 'MKL';
  if (/blis/.test(all)) return 'BLIS';
  if (/nvpl/.test(all)) return 'NVPL';
  if (/atlas/.test(all)) return 'ATLAS';
  if (/accelerate/.test(all) || fromConfig === 'accelerate') return 'Accelerate';
  if (/\/blas\/libblas|libblas\.so/.test(all)) return 'reference BLAS (slow: install OpenBLAS)';
  if (fromConfig) return fromConfig;
  return libraries.length ? 'unknown' : 'none mapped (statically linked into libtorch?)';
}

/** Runs a small matmul (an addon older than matmul() has none), so a lazily loaded BLAS shows up too. */
function exerciseBlas(binding: NativeBinding): string {
  if (typeof binding.matmul !== 'function') return 'libraries mapped after loading libtorch';
  const a = binding.Tensor.fromArray(new Float32Array(64 * 64).fill(1), [64, 64]);
  try {
    binding.matmul(a, a).dispose();
    return 'libraries mapped after a 64x64 matmul';
  } finally {
    a.dispose();
  }
}

/** `fn()`, or null when it throws or the addon predates it. */
function attempt<T>(fn: () => T): T | null {
  try {
    return fn();
  } catch {
    return null;
  }
}

const THREAD_ENV = /^(OMP_|MKL_|OPENBLAS_|GOTO_|KMP_|GOMP_|TORCH_|PYTORCH_|CUDA_|CUBLAS_|NVIDIA_|LIBTORCH$|LD_LIBRARY_PATH$|LD_PRELOAD$)/;

/** What the loaded addon tells of itself and of this machine (doctor's fields that need the binding). */
function bindingFacts(binding: NativeBinding) {
  const versions = binding.versions();
  const config = attempt(() => binding.showConfig());
  const available = binding.cudaIsAvailable();
  const deviceCount = available ? binding.cudaDeviceCount() : 0;
  const devices = ['cpu'];
  const cudaDevices: CudaDeviceProperties[] = [];
  for (let i = 0; i < deviceCount; i++) {
    devices.push(`cuda:${i}`);
    const properties = attempt(() => binding.cudaDeviceProperties(i));
    if (properties) cudaDevices.push(properties);
  }
  let how: string;
  try {
    how = exerciseBlas(binding);
  } catch (err) {
    how = `matmul failed: ${messageOf(err)}`;
  }
  const blasLibraries = mappedLibraries(/blas|lapack|mkl|blis|nvpl|atlas|accelerate/i);
  return {
    runtime: {
      libtorch: versions.libtorch,
      builtAgainst: versions.builtAgainst,
      libraries: mappedLibraries(/^lib(c10|torch)/),
      build: attempt(() => binding.buildInfo()),
      config,
    },
    cuda: { available, deviceCount, version: versions.cuda, cudnn: versions.cudnn },
    devices,
    cudaDevices,
    blas: blasLibraries === null ? null : { name: blasName(blasLibraries, config), libraries: blasLibraries, how },
    cpuAllocator: attempt(() => binding.cpuCacheStats()),
    tokenPruning: attempt(() => binding.tokenPruning()),
    distributedBackends: attempt(() => binding.distributedBackends()),
    intraOp: binding.getNumThreads(),
    blasThreads: attempt(() => binding.getBlasThreads()),
    interOp: attempt(() => binding.getNumInteropThreads()),
    parallel: attempt(() => binding.parallelInfo()),
  };
}

/**
 * A fresh search for libtorch (it refreshes the cache the loader reads, so whether that cache
 * held the same result is read before it), with the record the loader would take first.
 */
function libtorchSearch(): DoctorReport['libtorch'] {
  const candidates: LibtorchCandidate[] = [];
  let found: FoundLibtorch | null = null;
  let error: string | null = null;
  const before = readLibtorchCache(packageRoot);
  const record = recordedLibtorch(packageRoot);
  try {
    found = resolveLibtorch(packageRoot, { refresh: true, report: (c) => candidates.push(c) }).libtorch;
  } catch (err) {
    error = messageOf(err);
  }
  return { found, candidates, cacheWasCurrent: JSON.stringify(before) === JSON.stringify(found), record, error };
}

/** The addon loaded and what it tells (bindingFacts), or why it does not load. */
function loadedBinding(): { facts: ReturnType<typeof bindingFacts> | null; loadError: string | null } {
  let binding: NativeBinding;
  try {
    binding = loadBinding();
  } catch (err) {
    return { facts: null, loadError: messageOf(err) };
  }
  return { facts: bindingFacts(binding), loadError: null };
}

/** The environment variables that set threads, BLAS, CUDA or where libtorch is found (THREAD_ENV), by name. */
function threadEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env).sort()) if (THREAD_ENV.test(k) && v !== undefined) env[k] = v;
  return env;
}

function platformFacts(): DoctorReport['platform'] {
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return {
    os: osType(),
    release: release(),
    arch: process.arch,
    glibc: header?.glibcVersionRuntime ?? null,
    cpu: cpus()[0]?.model ?? null,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    cpuBf16: cpuBf16(),
  };
}

export function doctor(): DoctorReport {
  const libtorch = libtorchSearch();
  const { facts, loadError } = loadedBinding();
  const info = loadedBinaryInfo();
  return {
    torchBert: { version: versionOrUnknown(), packageRoot },
    libtorch,
    binary: info
      ? { path: info.binary, kind: info.kind, how: info.how, buildInfo: info.buildInfo, runpath: info.runpath, preloaded: info.preloaded }
      : null,
    loadError,
    runtime: facts?.runtime ?? null,
    cuda: facts?.cuda ?? null,
    devices: facts?.devices ?? ['cpu'],
    gpus: nvidiaSmi(),
    cudaDevices: facts?.cudaDevices ?? [],
    blas: facts?.blas ?? null,
    cpuAllocator: facts?.cpuAllocator ?? null,
    tokenPruning: facts?.tokenPruning ?? null,
    distributedBackends: facts?.distributedBackends ?? null,
    hub: hubSettings(),
    threads: {
      intraOp: facts?.intraOp ?? null,
      interOp: facts?.interOp ?? null,
      blas: facts?.blasThreads ?? null,
      parallel: facts?.parallel ?? null,
      cpus: cpus().length,
      env: threadEnv(),
    },
    node: { version: process.version, modules: process.versions.modules, napi: process.versions.napi ?? null, execPath: process.execPath },
    platform: platformFacts(),
  };
}

/** The record's line: what it names, or why it is stale and what to do about it. */
function describeRecord(record: LibtorchRecord | null): string {
  if (!record) return 'none (the loader takes the cached search or searches)';
  const by = record.how === 'install' ? 'the install, for the prebuilt it chose' : 'the source build';
  if (!record.stale) return `${describeLibtorch(record.libtorch)}, by ${by} (${record.file}): the loader takes it`;
  return (
    `stale: ${record.file} (by ${by}) names ${describeLibtorch(record.libtorch)}, but ${record.stale}; ` +
    `the loader takes the cached search or searches instead (which may ask Python). ${RECORD_FIX}`
  );
}

function describeHow(how: LibtorchHow | null, record: LibtorchRecord | null): string {
  switch (how) {
    case 'install':
    case 'build-info':
      return `the record (${record?.file ?? '?'})`;
    case 'cache':
      return 'the cached search (build/libtorch.json)';
    case 'search':
      return 'a search (scripts/find-libtorch.mjs)';
    default:
      return '-';
  }
}

/** A section's `key  value` lines, keys padded to one column. */
type AddLine = (key: string, value: unknown) => void;

function libtorchLines(r: DoctorReport, add: AddLine): void {
  const l = r.libtorch.found;
  if (l) {
    add('version', `${l.version ?? '(unknown)'} (${l.flavor})`);
    add('how', l.source === 'python' ? `Python PyTorch via ${l.python}` : l.source === 'LIBTORCH' ? 'LIBTORCH' : 'system install');
    add('libraries', l.libDir);
    add('CMake package', l.cmakePrefixPath ?? 'none (runtime libraries only: prebuilts load, source builds cannot)');
    if (!r.libtorch.cacheWasCurrent) add('cache', 'was stale or missing; refreshed');
  } else {
    add('error', r.libtorch.error);
  }
  for (const c of r.libtorch.candidates.filter((c) => !c.usable)) add('skipped', `[${c.source}] ${c.path}: ${c.reason}`);
  add('recorded', describeRecord(r.libtorch.record));
}

function binaryLines(r: DoctorReport, add: AddLine): void {
  if (r.binary) {
    add(
      'loaded',
      `${r.binary.path} (${r.binary.kind === 'source' ? 'source build' : r.binary.kind === 'prebuilt' ? 'prebuilt' : 'TORCH_BERT_BINARY'})`,
    );
    add('libtorch from', describeHow(r.binary.how, r.libtorch.record));
    const b = r.binary.buildInfo;
    if (b) {
      add('built against', `libtorch ${b.libtorch.version} (${b.libtorch.flavor}, ${b.libtorch.source}) at ${b.libtorch.libDir}`);
      add(
        'built with',
        `${b.compiler ?? '?'}, Node-API ${b.napiVersion ?? '?'}, Node ${b.node.version}, glibc ${b.glibc ?? '?'}, ${b.builtAt}`,
      );
    } else {
      add('build-info', 'none (built before build-info.json existed; rebuild with `npm run build:native`)');
    }
    add('RUNPATH', r.binary.runpath);
    add('preloaded', r.binary.preloaded.join(', ') || 'none');
  }
  if (r.loadError) add('load error', r.loadError.replace(/\n/g, '\n' + ' '.repeat(19)));
}

/** The runtime: the libtorch loaded and how the addon was compiled. */
function runtimeLines(runtime: NonNullable<DoctorReport['runtime']>, add: AddLine): void {
  add('libtorch', `${runtime.libtorch} (headers: ${runtime.builtAgainst})`);
  const n = runtime.build;
  if (n) {
    add(
      'addon compiled',
      `libtorch ${n.libtorch}${n.cuda ? `, CUDA ${n.cuda}` : ''}, torch_cuda ${n.torchCudaLinked ? 'linked' : 'not linked'}, ` +
        `_GLIBCXX_USE_CXX11_ABI=${n.cxx11Abi ?? '?'}, compiler ${n.compiler ?? '?'}, libtorch set up by ${n.torchFrom === 'manual' ? 'hand (no TorchConfig)' : n.torchFrom === 'package' ? 'TorchConfig.cmake' : '?'}`,
    );
  }
  const torchCpu = runtime.libraries?.find((p) => /libtorch_cpu/.test(p));
  if (torchCpu) add('libtorch_cpu', torchCpu);
}

/** CUDA and the devices libtorch sees. */
function deviceLines(r: DoctorReport, add: AddLine): void {
  add(
    'CUDA',
    r.cuda
      ? r.cuda.available
        ? `available, ${r.cuda.deviceCount} device(s), CUDA ${r.cuda.version}`
        : `not available${r.cuda.version ? ` (libtorch built with CUDA ${r.cuda.version})` : ''}`
      : '-',
  );
  add('cuDNN', r.cuda?.cudnn ?? 'none');
  add('devices', r.devices.join(', '));
  for (const g of r.gpus)
    add(`gpu ${g.index}`, `${g.name}, ${g.memoryMiB ?? '?'} MiB, compute ${g.computeCapability ?? '?'}, driver ${g.driver ?? '?'}`);
  for (const d of r.cudaDevices) {
    add(
      `cuda:${d.index}`,
      `${d.name}, ${Math.round(d.totalMemory / 2 ** 20)} MiB, compute ${d.computeCapability}, ${d.multiProcessorCount} SMs${d.driverCuda ? `, driver supports CUDA ${d.driverCuda}` : ''}`,
    );
  }
}

/** BLAS, the CPU allocator, token pruning and the distributed backends: what the loaded binary does. */
function featureLines(r: DoctorReport, add: AddLine): void {
  if (r.blas) add('BLAS', `${r.blas.name}: ${r.blas.libraries.join(', ') || '-'} (${r.blas.how})`);
  if (r.cpuAllocator) {
    add(
      'CPU allocator',
      r.cpuAllocator.installed
        ? `torch-bert caching allocator, keeps up to ${Math.round(r.cpuAllocator.limitBytes / 2 ** 20)} MiB of freed tensor memory (TORCH_BERT_CPU_CACHE_MB); ` +
            `blocks of 2 MiB and more in transparent huge pages: ${r.cpuAllocator.hugePages ? 'on' : 'off'} (TORCH_BERT_HUGE_PAGES)`
        : "libtorch's default (TORCH_BERT_CPU_CACHE_MB=0, or an AddressSanitizer build)",
    );
  }
  if (r.tokenPruning !== null) {
    add(
      'token pruning',
      r.tokenPruning
        ? 'on: with [CLS] pooling the last layer runs for the [CLS] row but its keys and values (TORCH_BERT_TOKEN_PRUNING=0 turns it off)'
        : 'off (TORCH_BERT_TOKEN_PRUNING=0)',
    );
  }
  if (r.distributedBackends !== null) {
    add(
      'distributed',
      r.distributedBackends.length > 0
        ? `${r.distributedBackends.join(', ')} (c10d; data-parallel training with torchrun or --nproc-per-node)`
        : "none: built without Gloo's headers, so no data-parallel training on CPUs (install libgloo-dev and rebuild)",
    );
  }
}

function hubLines(r: DoctorReport, add: AddLine): void {
  add('cache', r.hub.cacheDir);
  add('endpoint', r.hub.endpoint);
  add('offline', r.hub.offline ? 'yes (HF_HUB_OFFLINE): only the cache is read' : 'no');
  add('token', r.hub.tokenSet ? 'set (HF_TOKEN)' : 'not set');
}

function threadLines(r: DoctorReport, add: AddLine): void {
  add('intra-op', r.threads.intraOp);
  add('inter-op', r.threads.interOp);
  if (r.threads.blas !== null) add('OpenBLAS', r.threads.blas);
  const backend = r.threads.parallel ? /ATen parallel backend: (.*)/.exec(r.threads.parallel)?.[1] : undefined;
  if (backend) add('parallel backend', backend);
  add('CPUs', r.threads.cpus);
  for (const [k, v] of Object.entries(r.threads.env)) add(k, v);
}

function systemLines(r: DoctorReport, add: AddLine): void {
  add('Node', `${r.node.version} (modules ${r.node.modules}, Node-API ${r.node.napi}) ${r.node.execPath}`);
  add('platform', `${r.platform.os} ${r.platform.release} ${r.platform.arch}, glibc ${r.platform.glibc ?? '-'}`);
  add('CPU', `${r.platform.cpu} (${r.threads.cpus}), ${r.platform.memoryGiB} GiB`);
  if (r.platform.cpuBf16) {
    add(
      'bfloat16',
      r.platform.cpuBf16.length
        ? `native (${r.platform.cpuBf16.join(', ')}): precision 'bf16' is faster`
        : "emulated: keep precision 'fp32' on this CPU",
    );
  }
}

export function formatDoctor(r: DoctorReport): string {
  const lines: string[] = [`torch-bert ${r.torchBert.version} (${r.torchBert.packageRoot})`];
  const add: AddLine = (key, value) => lines.push(`  ${key.padEnd(18)} ${value ?? '-'}`);
  const section = (title: string, write: () => void) => {
    lines.push('', `${title}:`);
    write();
  };
  section('libtorch found', () => libtorchLines(r, add));
  section('binary', () => binaryLines(r, add));
  const runtime = r.runtime;
  if (runtime) {
    section('runtime', () => {
      runtimeLines(runtime, add);
      deviceLines(r, add);
      featureLines(r, add);
    });
  }
  section('hugging face hub', () => hubLines(r, add));
  section('threads', () => threadLines(r, add));
  section('system', () => systemLines(r, add));
  return lines.join('\n');
}

/** The CLI entry: prints the report; exit code 1 when the addon does not load (the report says why). */
export async function commandDoctor(argv: string[]): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log('torch-bert doctor [--json] — the libtorch found, the binary loaded, CUDA, BLAS and threads (for bug reports)');
    return;
  }
  const unknown = argv.filter((a) => a !== '--json');
  if (unknown.length) throw Object.assign(new Error(`doctor: unknown argument '${unknown[0]}'`), { code: 'ERR_PARSE_ARGS_UNKNOWN_OPTION' });
  const report = doctor();
  console.log(argv.includes('--json') ? JSON.stringify(report, null, 2) : formatDoctor(report));
  if (report.loadError) throw new Error('the native addon does not load (the report above says why)');
}
