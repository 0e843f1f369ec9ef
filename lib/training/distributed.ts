/**
 * Data-parallel training on c10d, as PyTorch's DistributedDataParallel, for train() and
 * pretrain() (both through `runAsRank` and `startFromRankZero`): one process per rank, the group
 * joined from the variables torchrun (or a Kubernetes PyTorchJob, or `torch-bert train|pretrain
 * --nproc-per-node`) sets, Gloo on the CPU (native/distributed/). What the ranks share and how:
 *   - the initial trainable weights, broadcast from rank 0 (`broadcast`);
 *   - every epoch's global permutation, the same on every rank; each rank trains on its share
 *     (`rankShare`, DistributedSampler's), `batchSize` rows per batch;
 *   - the gradients, averaged natively while the window's last backward runs (c10d's Reducer,
 *     TrainStepOptions.averageGradients), each rank's loss weighted by its share of the global
 *     batch's normaliser (rows, class weights, or masked tokens: training-loop.ts globalBatchShare),
 *     and the decision on a non-finite loss (any rank's is every rank's);
 *   - the decision to stop before an optimizer step (`agreeToStop`): an abort on any rank stops
 *     every rank at the same step boundary;
 *   - what the run is (`startAsRank`, at the start): each rank's set-up and then one collective
 *     that every rank enters, carrying its run's identity (options, data and model, compared by
 *     `agreeOnRun`: a rank that differs refused on every rank with a message naming what differs)
 *     or why its set-up failed (every rank stops at once, the others naming it);
 *   - evaluation, each rank on its share of the held-out rows (`evaluationRows`), the sums the
 *     metrics need reduced; rank 0's decisions (best checkpoint, early stopping) broadcast (`fromMain`).
 * Rank 0 alone writes checkpoints, reports, the training state and progress (`isMain`).
 */
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import type { DistributedRank, NativeBinding, NativeTensor } from '../addon/binding.js';
import { AbortError, InputError, ModelError, messageOf } from '../addon/errors.js';
import { type Device, settingDifferences } from './options.js';

/** This process's rank in a joined group, and the collectives the TypeScript side uses. */
export interface Distributed extends DistributedRank {
  /** Rank 0: the one that writes files and reports progress. */
  isMain: boolean;
  /** Every rank's tensors take rank 0's values, in place. */
  broadcast(tensors: NativeTensor[]): void;
  /** All-reduce of a few numbers: the same result on every rank. */
  allReduce(values: ArrayLike<number>, op: 'sum' | 'max' | 'min'): Float64Array;
  /** All-reduce of a tensor, in place. */
  allReduceTensor(tensor: NativeTensor, op: 'sum' | 'max' | 'min'): void;
  /** Whether any rank wants to stop (each passes its own wish): the same answer on every rank. */
  agreeToStop(local: boolean): boolean;
  /** Rank 0's numbers, on every rank (each passes its own; the others' are ignored). */
  fromMain(values: ArrayLike<number>): Float64Array;
  /** Every rank's value (anything JSON can carry), in rank order, on every rank. */
  allGather<T>(value: T): T[];
  leave(): void;
}

/** torchrun's variables that a rank cannot do without. */
const REQUIRED = ['RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'] as const;

/** Whether the environment describes a rank of a job of more than one process. */
export function rankEnvironmentSet(env: NodeJS.ProcessEnv = process.env): boolean {
  return REQUIRED.every((name) => env[name] !== undefined && env[name] !== '') && Number(env.WORLD_SIZE) > 1;
}

/**
 * Joins the process group when `mode` is 'auto' and torchrun's variables are set (a world of
 * more than one process); null otherwise. Settles when every rank has joined, or rejects when
 * `timeoutSeconds` passed or `signal` aborts (Ctrl-C while the other ranks are awaited: an
 * AbortError within about a second, not at the timeout).
 */
export async function joinDistributed(
  binding: NativeBinding,
  mode: 'auto' | 'off',
  timeoutSeconds: number,
  signal?: AbortSignal,
): Promise<Distributed | null> {
  if (mode === 'off' || !rankEnvironmentSet()) return null;
  if (binding.distributedBackends().length === 0) {
    throw new InputError(
      'distributed: RANK/WORLD_SIZE are set but this build of torch-bert has no distributed CPU backend ' +
        "(Gloo's headers were missing when it was built: install libgloo-dev and rebuild); set distributed: 'off' to train alone",
    );
  }
  signal?.throwIfAborted();
  const cancel = () => binding.distributedCancelJoin();
  signal?.addEventListener('abort', cancel, { once: true });
  let rank: DistributedRank;
  try {
    rank = await binding.distributedJoinAsync(Math.round(timeoutSeconds * 1000));
  } catch (err) {
    if (signal?.aborted) throw new AbortError(`${messageOf(err)}; nothing was trained`, { cause: err });
    throw new ModelError(messageOf(err), { cause: err });
  } finally {
    signal?.removeEventListener('abort', cancel);
  }
  const allReduce = (values: ArrayLike<number>, op: 'sum' | 'max' | 'min') => {
    try {
      return binding.distributedAllReduce(Float64Array.from(values), op);
    } catch (err) {
      throw new ModelError(messageOf(err), { cause: err });
    }
  };
  return {
    ...rank,
    isMain: rank.rank === 0,
    broadcast(tensors) {
      try {
        binding.distributedBroadcast(tensors, 0);
      } catch (err) {
        throw new ModelError(messageOf(err), { cause: err });
      }
    },
    allReduce,
    allReduceTensor(tensor, op) {
      try {
        binding.distributedAllReduceTensor(tensor, op);
      } catch (err) {
        throw new ModelError(messageOf(err), { cause: err });
      }
    },
    agreeToStop: (local) => allReduce([local ? 1 : 0], 'max')[0]! > 0,
    // A sum where every rank but 0 adds zeros: a broadcast through the one numeric collective.
    fromMain: (values) => allReduce(rank.rank === 0 ? values : new Float64Array(values.length), 'sum'),
    allGather: (value) => allGatherJson(allReduce, rank.rank, rank.worldSize, value),
    leave: () => binding.distributedLeave(),
  };
}

/**
 * An all-gather of JSON values on the numeric all-reduce: the longest encoding is agreed first,
 * then each rank writes its UTF-8 bytes into its own slot of a zeroed buffer and the sum is every
 * rank's bytes (each byte is added to zeros only, so float64 carries it exactly). For the small
 * values compared at the start (options, digests); not for tensors.
 */
function allGatherJson<T>(
  allReduce: (values: ArrayLike<number>, op: 'sum' | 'max' | 'min') => Float64Array,
  rank: number,
  worldSize: number,
  value: T,
): T[] {
  const bytes = new TextEncoder().encode(JSON.stringify(value) ?? 'null');
  const width = allReduce([bytes.length], 'max')[0]!;
  const slots = new Float64Array(width * worldSize);
  slots.set(bytes, rank * width);
  const all = allReduce(slots, 'sum');
  const decoder = new TextDecoder();
  return Array.from({ length: worldSize }, (_, r) => {
    const slot = Uint8Array.from(all.subarray(r * width, (r + 1) * width));
    const end = slot.indexOf(0);
    return JSON.parse(decoder.decode(end < 0 ? slot : slot.subarray(0, end))) as T;
  });
}

/**
 * What every rank of a run must share, checked once at the start (`agreeOnRun`): `settings` are
 * compared value by value, by what they do as a resumed run's are (options.ts settingDifferences;
 * a message names each that differs, with both values); `digests` pin
 * content too large to send (the training data, the model's weights), compared whole and named by
 * what they pin.
 */
export interface RunIdentity {
  settings: Record<string, unknown>;
  /** By what the digest pins, as the message says it: e.g. 'training data' → a SHA-256 of its texts and labels. */
  digests: Record<string, string>;
}

/**
 * What a rank says at the start: the identity of the run it set up, or why it could not set one up
 * (the first line of its error's message, and whether that error was a ModelError).
 */
type StartReport = { identity: RunIdentity } | { failed: string; modelError: boolean };

/**
 * A rank's set-up (its model loaded, its data read: whatever may fail on one rank alone) and the
 * agreement on what the run is, as one collective that every rank enters whether its set-up
 * succeeded or not. A rank that could not start says why instead of leaving the group, so the
 * others stop at once rather than wait in a collective it never joins until `distributedTimeout`
 * passes. Then: the rank that failed throws its own error; every other rank throws one naming each
 * rank that failed and its reason (code RANK_FAILED_TO_START, a ModelError when the first failed
 * rank's error was one, an InputError otherwise); or, when all started, the identities are compared
 * (`agreeOnRun`). Alone (`dist` null), `setUp` only, its error as it is. Returns the set-up and
 * its identity, for a resumable run's fingerprint: in a group the one agreed on, alone computed
 * at the first call (hashing a model's weights is not free, and a run that is not saved needs none).
 */
export async function startAsRank<T>(
  dist: Pick<Distributed, 'allGather'> | null,
  setUp: () => Promise<T>,
  identify: (value: T) => Promise<RunIdentity>,
): Promise<{ value: T; identity: () => Promise<RunIdentity> }> {
  if (!dist) {
    const value = await setUp();
    let identity: Promise<RunIdentity> | undefined;
    return { value, identity: () => (identity ??= identify(value)) };
  }
  let started: { value: T; identity: RunIdentity } | { error: unknown };
  try {
    const value = await setUp();
    started = { value, identity: await identify(value) };
  } catch (error) {
    started = { error };
  }
  const all = dist.allGather<StartReport>('error' in started ? failureReport(started.error) : { identity: started.identity });
  if ('error' in started) throw started.error;
  refuseFailedStarts(all);
  agreeOnRun(all.map((r) => (r as { identity: RunIdentity }).identity));
  const { value, identity } = started;
  return { value, identity: async () => identity };
}

/** Why this rank could not start, in one line (the gathered reports are a one-line error's parts). */
function failureReport(error: unknown): StartReport {
  return { failed: messageOf(error).split('\n')[0]!, modelError: error instanceof ModelError };
}

/** When any rank could not start, the error every other rank throws, naming each that failed and why. */
function refuseFailedStarts(all: StartReport[]): void {
  const failed = all.flatMap((report, rank) => ('failed' in report ? [{ rank, ...report }] : []));
  if (failed.length === 0) return;
  const reasons = failed.map((f) => `rank ${f.rank} could not start: ${f.failed}`).join('; ');
  const message = `distributed: ${reasons}; nothing was trained`;
  throw failed[0]!.modelError
    ? new ModelError(message, { code: 'RANK_FAILED_TO_START' })
    : new InputError(message, { code: 'RANK_FAILED_TO_START' });
}

/**
 * Every rank's identity (in rank order, as gathered) compared with rank 0's before anything
 * trains; on a difference every rank throws the same InputError, which names the ranks and what
 * differs. Ranks that trained on other data or options would still average their gradients and
 * end with weights that are no one's; a different model would go unnoticed where only the
 * trainable tensors are broadcast (the frozen encoder of `frozen` or LoRA).
 */
export function agreeOnRun(all: RunIdentity[]): void {
  const main = all[0]!;
  const problems: string[] = [];
  all.forEach((other, r) => {
    if (r === 0) return;
    const settings = settingDifferences(main.settings, other.settings).map((d) => `${d.name} ${d.b} vs ${d.a}`);
    if (settings.length > 0) problems.push(`rank ${r}'s options differ from rank 0's: ${settings.join(', ')}`);
    for (const what of Object.keys({ ...main.digests, ...other.digests })) {
      if (main.digests[what] !== other.digests[what]) problems.push(`rank ${r}'s ${what} differs from rank 0's`);
    }
  });
  if (problems.length > 0) {
    throw new InputError(`distributed: the ranks were started with different runs; nothing was trained: ${problems.join('; ')}`, {
      code: 'RANKS_DISAGREE',
    });
  }
}

/** Options of a run that may differ between ranks: where a rank writes, reads or logs, and how it computes, not what. */
const RANK_LOCAL = new Set([
  // Compared by content (digests), since each machine may mount them elsewhere.
  'data',
  'validationData',
  'encoder',
  'tokenizer',
  'resumeFrom',
  // Rank 0 alone writes.
  'outDir',
  'report',
  'featureCache',
  'featureCacheDir',
  // How a rank computes: its cores, its device (cuda:LOCAL_RANK), its patience with the others.
  'threads',
  'device',
  'distributed',
  'distributedTimeout',
  // Functions and signals: not values.
  'onProgress',
  'signal',
]);

/** The options every rank must share: all but the rank-local ones (and anything JSON cannot carry). */
export function sharedSettings(options: object): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(options).filter(([key, value]) => !RANK_LOCAL.has(key) && value !== undefined && typeof value !== 'function'),
  );
}

/** A SHA-256 of strings and numbers, each part length-prefixed so that no two different lists hash alike. */
export function contentDigest(parts: Iterable<string | ArrayLike<number> | null | undefined>): string {
  const hash = createHash('sha256');
  for (const part of parts) {
    if (part === null || part === undefined) hash.update('\u0000null;');
    else if (typeof part === 'string') hash.update(`s${Buffer.byteLength(part)}:`).update(part);
    else hash.update(`n${part.length}:`).update(Buffer.from(Float64Array.from(part).buffer));
  }
  return hash.digest('hex');
}

/**
 * The held-out rows a rank evaluates: every `worldSize`-th from `rank` on, without
 * DistributedSampler's padding (a duplicate would be counted twice), so that the ranks' shares
 * add up to the whole set exactly once.
 */
export function evaluationRows(count: number, rank: number, worldSize: number): Int32Array {
  const rows = new Int32Array(Math.max(0, Math.ceil((count - rank) / worldSize)));
  for (let i = 0; i < rows.length; i++) rows[i] = rank + i * worldSize;
  return rows;
}

/**
 * Data-parallel validation: this rank evaluates its rows (evaluationRows, each row on exactly one
 * rank) and `sum` all-reduces what the metrics need.
 */
export interface ValidationShard {
  rows: Int32Array;
  sum(values: Float64Array): Float64Array;
}

/** A rank's validation shard of `count` held-out rows; undefined alone (every row is this process's). */
export function validationShard(dist: Distributed | null, count: number): ValidationShard | undefined {
  if (!dist) return undefined;
  return { rows: evaluationRows(count, dist.rank, dist.worldSize), sum: (values) => dist.allReduce(values, 'sum') };
}

/**
 * A rank's share of an epoch's permutation, as torch.utils.data.DistributedSampler cuts it: the
 * permutation padded with its own first rows to a multiple of the world size (every rank gets
 * as many rows, so every rank takes as many steps), then every `worldSize`-th row from `rank`
 * on. With batch b per rank, the ranks' k-th batches together are the rows of batch k of one
 * process with batch b × worldSize.
 */
export function rankShare(permutation: Int32Array, rank: number, worldSize: number): Int32Array {
  const perRank = Math.ceil(permutation.length / worldSize);
  const share = new Int32Array(perRank);
  for (let i = 0; i < perRank; i++) share[i] = permutation[(rank + i * worldSize) % permutation.length]!;
  return share;
}

/** Threads per rank when the options leave it open: the machine's cores shared by the ranks on it. */
export function threadsPerRank(localWorldSize: number): number {
  return Math.max(1, Math.floor(availableParallelism() / Math.max(1, localWorldSize)));
}

/** What OpenBLAS sizes its thread pool from when it loads, in its order of precedence. */
const BLAS_THREAD_VARIABLES = ['OPENBLAS_NUM_THREADS', 'GOTO_NUM_THREADS', 'OMP_NUM_THREADS'] as const;

/**
 * A rank's BLAS threads: its share of the cores, as for its intra-op threads, unless the
 * environment sized the BLAS's pool (torchrun sets OMP_NUM_THREADS=1 for several workers per
 * node); undefined leaves the pool as it is. OpenBLAS sizes its pool by the cores otherwise, so
 * two ranks on 2 cores ran 2 BLAS threads each.
 */
export function rankBlasThreads(localWorldSize: number, env: NodeJS.ProcessEnv = process.env): number | undefined {
  if (BLAS_THREAD_VARIABLES.some((name) => env[name])) return undefined;
  return threadsPerRank(localWorldSize);
}

/** DistributedRank.backend of a group that sends CUDA tensors to NCCL (native/distributed/process_group.h). */
export const NCCL_BACKEND = 'cpu:gloo,cuda:nccl';

/**
 * A rank's device when the options leave the GPU open ('auto', 'cuda'): cuda:LOCAL_RANK where the
 * group sends CUDA tensors to NCCL, which needs a GPU of its own per rank (the join made that one
 * current, but only on the joining thread); as given otherwise (cpu, an explicit cuda:N, or one
 * GPU shared over Gloo). Launchers start every rank with the same arguments, so this is what
 * lets `--device cuda` (or auto) spread the ranks over the GPUs.
 */
export function rankDevice<D extends string>(
  device: D | undefined,
  rank: Pick<DistributedRank, 'backend' | 'localRank'>,
): D | `cuda:${number}` | undefined {
  if (rank.backend !== NCCL_BACKEND) return device;
  return device === undefined || device === 'auto' || device === 'cuda' ? `cuda:${rank.localRank}` : device;
}

/**
 * A run as a rank, the same for train() and pretrain(): the group joined first (so that a rank
 * that fails later fails the others' collectives; one that fails during its set-up tells them,
 * `startAsRank`), the threads left open set to the cores / the local world size (and the BLAS's
 * pool to that share, rankBlasThreads), the GPU left
 * open to the rank's own (rankDevice), the run, and the group left however the run ends. `run`
 * gets null when the run is alone (`distributed: 'off'`, or no torchrun variables).
 */
export async function runAsRank<T>(
  binding: NativeBinding,
  opts: { distributed: 'auto' | 'off'; distributedTimeout: number; threads?: number; device?: Device; signal?: AbortSignal },
  run: (dist: Distributed | null) => Promise<T>,
): Promise<T> {
  const dist = await joinDistributed(binding, opts.distributed, opts.distributedTimeout, opts.signal);
  const blasBefore = binding.getBlasThreads();
  const blasThreads = dist ? rankBlasThreads(dist.localWorldSize) : undefined;
  try {
    if (dist && opts.threads === undefined) opts.threads = threadsPerRank(dist.localWorldSize);
    if (blasThreads !== undefined) binding.setBlasThreads(blasThreads);
    if (dist) opts.device = rankDevice(opts.device, dist);
    return await run(dist);
  } finally {
    if (blasThreads !== undefined && blasBefore !== null) binding.setBlasThreads(blasBefore);
    dist?.leave();
  }
}

/** The keeper's `agree` hook (run-keeper.ts): rank 0's decisions on every rank; none for one process. */
export function rankZeroDecides(dist: Distributed | null): ((decision: number[]) => number[]) | undefined {
  return dist ? (decision) => Array.from(dist.fromMain(decision)) : undefined;
}

/** Every rank starts from rank 0's trainable weights, as DistributedDataParallel does (nothing alone). */
export function startFromRankZero(dist: Distributed | null, trainable: ReadonlyArray<readonly [string, NativeTensor]>): void {
  if (dist) dist.broadcast(trainable.map(([, t]) => t));
}
