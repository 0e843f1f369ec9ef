/**
 * Data-parallel training on c10d, as PyTorch's DistributedDataParallel, for train() and
 * pretrain() (both through `runAsRank` and `startFromRankZero`): one process per rank, the group
 * joined from the variables torchrun (or a Kubernetes PyTorchJob, or `torch-bert train|pretrain
 * --nproc-per-node`) sets, Gloo on the CPU (native/distributed/). What the ranks share and how:
 *   - the initial trainable weights, broadcast from rank 0 (`broadcast`);
 *   - every epoch's global permutation, the same on every rank; each rank trains on its share
 *     (`rankShare`, DistributedSampler's), `batchSize` rows per batch;
 *   - the gradients, averaged natively on the window's last batch
 *     (TrainStepOptions.averageGradients), each rank's loss weighted by its share of the global
 *     batch's normaliser (rows, class weights, or masked tokens: training-loop.ts globalBatchShare);
 *   - the decision to stop before an optimizer step (`agreeToStop`): an abort on any rank stops
 *     every rank at the same step boundary.
 * Rank 0 alone writes checkpoints, reports, the training state and progress (`isMain`).
 */
import { availableParallelism } from 'node:os';
import type { DistributedRank, NativeBinding, NativeTensor } from './binding.js';
import { InputError, ModelError, messageOf } from './errors.js';

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
 * more than one process); null otherwise. Blocks until every rank has joined or `timeoutSeconds`
 * passed.
 */
export function joinDistributed(binding: NativeBinding, mode: 'auto' | 'off', timeoutSeconds: number): Distributed | null {
  if (mode === 'off' || !rankEnvironmentSet()) return null;
  if (binding.distributedBackends().length === 0) {
    throw new InputError(
      'distributed: RANK/WORLD_SIZE are set but this build of torch-bert has no distributed CPU backend ' +
        "(Gloo's headers were missing when it was built: install libgloo-dev and rebuild); set distributed: 'off' to train alone",
    );
  }
  let rank: DistributedRank;
  try {
    rank = binding.distributedJoin(Math.round(timeoutSeconds * 1000));
  } catch (err) {
    throw new ModelError(messageOf(err), { cause: err });
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
    leave: () => binding.distributedLeave(),
  };
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

/**
 * A run as a rank, the same for train() and pretrain(): the group joined first (so that a rank
 * that fails later fails the others' collectives), the threads left open set to the cores / the
 * local world size, the run, and the group left however the run ends. `run` gets null when the
 * run is alone (`distributed: 'off'`, or no torchrun variables).
 */
export async function runAsRank<T>(
  binding: NativeBinding,
  opts: { distributed: 'auto' | 'off'; distributedTimeout: number; threads?: number },
  run: (dist: Distributed | null) => Promise<T>,
): Promise<T> {
  const dist = joinDistributed(binding, opts.distributed, opts.distributedTimeout);
  try {
    if (dist && opts.threads === undefined) opts.threads = threadsPerRank(dist.localWorldSize);
    return await run(dist);
  } finally {
    dist?.leave();
  }
}

/** Every rank starts from rank 0's trainable weights, as DistributedDataParallel does (nothing alone). */
export function startFromRankZero(dist: Distributed | null, trainable: ReadonlyArray<readonly [string, NativeTensor]>): void {
  if (dist) dist.broadcast(trainable.map(([, t]) => t));
}
