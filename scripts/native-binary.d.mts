/** Types of scripts/native-binary.mjs, for the TypeScript loader. */
import type { FoundLibtorch, LibtorchCandidate } from './find-libtorch.mjs';

export interface BuildInfo {
  package: string;
  platform: string;
  arch: string;
  libtorch: {
    version: string | null;
    flavor: string;
    cudaVersion: string | null;
    source: string;
    libDir: string;
    cmakePrefixPath: string | null;
  };
  /** The addon's versions() right after the build: the runtime libtorch, CUDA and cuDNN it was built with. */
  versions: { libtorch: string; cuda: string | null; cudnn: string | null; builtAgainst: string } | null;
  needed: string[] | null;
  runpath: string | null;
  napiVersion: number | null;
  node: { version: string; modules: string };
  compiler: string | null;
  glibc: string | null;
  builtAt: string;
  /** Set on prebuilt copies (`npm run prebuild`). */
  prebuiltAt?: string;
}

export interface LoadInfo {
  libtorch: FoundLibtorch | null;
  /** 'cache': build/libtorch.json was valid; 'search': find-libtorch ran. */
  how: 'cache' | 'search' | null;
  searchError: string | null;
  cacheFile: string;
  binary: string;
  kind: 'override' | 'source' | 'prebuilt';
  buildInfo: BuildInfo | null;
  runpath: string | null;
  preloaded: string[];
  preloadErrors: string[];
  versions: { libtorch: string; cuda: string | null; cudnn: string | null; builtAgainst: string } | null;
}

export const ADDON: string;
export const BUILD_INFO: string;
export const packageRoot: string;
export function platformKey(): string;
export function baseVersion(version: string | null | undefined): string | null;
export function describeLibtorch(libtorch: FoundLibtorch | null, options?: { where?: boolean }): string;
export function prebuildName(libtorch: FoundLibtorch): string;
export function prebuildDir(root: string, libtorch: FoundLibtorch): string;
export function sourceBinary(root: string): string;
export function readBuildInfo(binaryPath: string): BuildInfo | null;
export function listPrebuilds(root: string): Array<{ name: string; binary: string; buildInfo: BuildInfo | null }>;
export function incompatibility(info: BuildInfo | null, libtorch: FoundLibtorch | null): string | null;
export function cacheFile(root: string): string;
export function writeLibtorchCache(root: string, libtorch: FoundLibtorch): boolean;
export function readLibtorchCache(root: string): FoundLibtorch | null;
export function resolveLibtorch(
  root?: string,
  options?: { refresh?: boolean; report?: (candidate: LibtorchCandidate) => void },
): { libtorch: FoundLibtorch; how: 'cache' | 'search' };
export function readElfDynamic(file: string): { needed: string[]; runpath: string | null; soname: string | null } | null;
export function preloadLibtorch(libDir: string, needed?: string[] | null): { loaded: string[]; errors: string[] };
export function selectBinary(root: string, libtorch: FoundLibtorch | null): { path: string; kind: LoadInfo['kind']; buildInfo: BuildInfo | null };
export function loadAddon(root?: string, options?: { refresh?: boolean }): { binding: unknown; info: LoadInfo };
export function makeBuildInfo(root: string, binaryPath: string, libtorch: FoundLibtorch, versions?: BuildInfo['versions']): BuildInfo;
export function sourceBuildUpToDate(root: string): boolean;
export function mappedLibraries(re: RegExp): string[] | null;
