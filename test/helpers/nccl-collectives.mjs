/**
 * One rank of test/nccl.test.ts's world of one: joins from torchrun's variables (set by the
 * test), runs an all-reduce and a broadcast on a CUDA tensor of argv[2]'s device (NCCL's, where
 * the group has it) and a Float64 all-reduce (Gloo's), then prints one JSON line: the backend
 * the join reported and the values after each collective. A failure prints its message on
 * stderr's last line and exits 1.
 */
import { loadBinding } from '../../dist/index.js';

const device = process.argv[2] ?? 'cuda:0';
const binding = loadBinding();
try {
  const rank = await binding.distributedJoinAsync(30_000);
  try {
    const values = new Float32Array([1.5, -2, 3, 0.25]);
    const summed = binding.Tensor.fromArray(values, [4], 'float32', device);
    binding.distributedAllReduceTensor(summed, 'sum');
    const broadcast = binding.Tensor.fromArray(values, [2, 2], 'float32', device);
    binding.distributedBroadcast([broadcast], 0);
    const cpu = binding.distributedAllReduce([4, -1.5], 'max');
    console.log(
      JSON.stringify({
        backend: rank.backend,
        device: summed.device,
        sum: Array.from(summed.toArray()),
        broadcast: Array.from(broadcast.toArray()),
        cpu: Array.from(cpu),
      }),
    );
  } finally {
    binding.distributedLeave();
  }
} catch (err) {
  console.error(`${err?.name ?? 'Error'}: ${err?.message ?? err}`);
  process.exit(1);
}
