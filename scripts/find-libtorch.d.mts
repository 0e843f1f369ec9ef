/** Types of scripts/find-libtorch.mjs, for the TypeScript loader. */
export interface FoundLibtorch {
  /** CMAKE_PREFIX_PATH to build against; null for runtime libraries without the CMake package. */
  cmakePrefixPath: string | null;
  /** The folder with libtorch's shared libraries. */
  libDir: string;
  version: string | null;
  /** 'cpu', 'cuXYZ', or 'cuda' (a CUDA build of unknown CUDA version). */
  flavor: string;
  source: 'LIBTORCH' | 'python' | 'system';
  python?: string;
  cudaVersion?: string | null;
}

export interface LibtorchCandidate extends Partial<FoundLibtorch> {
  source: string;
  path: string;
  usable: boolean;
  reason?: string;
  note?: string;
}

export const NOT_FOUND_MESSAGE: string;
export function findLibtorch(options?: { report?: (candidate: LibtorchCandidate) => void }): FoundLibtorch;
export function searchKey(): { LIBTORCH: string | null; pythons: string[] };
export function findLibrary(dir: string, name: string): string | null;
