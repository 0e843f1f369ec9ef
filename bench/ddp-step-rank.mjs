/**
 * One rank of the `ddp-step` benchmark's torch-bert side (bench/ddp-step.mjs), started with
 * torchrun's variables: joins the Gloo group, builds the `full` classifier of the step
 * benchmarks (bench/technique-model.mjs) on the encoder argv's JSON names, rank 0's weights
 * broadcast, and times training steps on the same batch of reviews: `mode` 'ddp' averages the
 * gradients (trainStep's averageGradients: the reducer's all-reduces overlapped with backward),
 * 'local' skips the all-reduce (the cost of communication is the difference). Warm-up steps
 * first; the ranks start the timed steps together. Prints {"rank", "steps": [seconds...]} on
 * stdout; with TORCH_BERT_DDP_TIMING set, the reducer's per-bucket timings go to stderr.
 */
import { binding, reviewBatch } from './lib.mjs';
import { techniqueModel } from './technique-model.mjs';

const config = JSON.parse(process.argv[2]);
binding.setNumThreads(config.threads);
const { rank } = await binding.distributedJoinAsync(120_000);
const barrier = () => binding.distributedAllReduce(Float64Array.of(0), 'sum');
const encoder = await binding.ScriptModule.loadAsync(config.encoderFile, 'cpu');
const side = techniqueModel(binding, encoder, 'full');
// The pooler is not on the loss's path (the head reads [CLS] from the last hidden state): frozen,
// as train() freezes it, so that every bucket fills (DDP without find_unused_parameters).
side.model.setRequiresGrad(false, 'encoder.pooler.');
binding.distributedBroadcast(side.params, 0);
const batch = await reviewBatch(config.batchSize, config.seqLen);
const options = { maxGradNorm: 0, ...(config.mode === 'ddp' ? { averageGradients: true } : {}) };
const step = async () => {
  const t0 = performance.now();
  await binding.trainStep(side.model, side.optimizer, batch, options);
  return (performance.now() - t0) / 1000;
};
for (let i = 0; i < config.warmup; i++) await step();
barrier();
const steps = [];
for (let i = 0; i < config.steps; i++) steps.push(await step());
barrier();
process.stdout.write(`${JSON.stringify({ rank, steps })}\n`);
side.dispose();
binding.distributedLeave();
