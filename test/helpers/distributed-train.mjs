/**
 * One process of test/distributed.test.ts: `train()` from the compiled package (dist/, as a
 * user's rank runs it) with the JSON options of argv[2]; the trained classifier's parameters are
 * then saved to argv[3] (torch.save format, binding.saveTensors), its history, evaluations,
 * metrics and skipped batches to argv[3].json. A rank of a group reads its
 * place from torchrun's variables in its environment; the single reference process has none.
 * A failure prints its message on stderr's last line and exits 1. The report also holds OpenBLAS's
 * thread count at the first training step and after train() returned (null without OpenBLAS).
 *
 * TORCH_BERT_TEST_POISON (the non-finite agreement test only): JSON { "<call>": "loss" |
 * "gradient" } — this process's trainStep call number <call> (1-based) gets class weights at
 * float32's largest value (the weighted sums overflow: its weighted mean loss is Inf/Inf = NaN,
 * as F.cross_entropy's is; all-zero weights would give a zero loss) or a huge accumulation
 * weight (its gradients overflow to Inf while the loss stays finite).
 */
import { writeFileSync } from 'node:fs';
import { loadBinding, train } from '../../dist/index.js';

const [optionsJson, out] = process.argv.slice(2);
const options = JSON.parse(optionsJson);
const FLOAT32_MAX = 3.4028234663852886e38;
const poison = process.env.TORCH_BERT_TEST_POISON ? JSON.parse(process.env.TORCH_BERT_TEST_POISON) : null;
const blasThreads = { during: undefined, after: undefined };
{
  const binding = loadBinding();
  const trainStep = binding.trainStep.bind(binding);
  binding.trainStep = (...args) => {
    blasThreads.during ??= binding.getBlasThreads();
    return trainStep(...args);
  };
}
if (poison) {
  const binding = loadBinding();
  const trainStep = binding.trainStep.bind(binding);
  let calls = 0;
  binding.trainStep = (model, optimizer, batch, stepOptions) => {
    const what = poison[String(++calls)];
    if (what === 'loss') {
      return trainStep(model, optimizer, batch, { ...stepOptions, classWeights: new Float32Array(2).fill(FLOAT32_MAX) });
    }
    if (what === 'gradient') return trainStep(model, optimizer, batch, { ...stepOptions, lossScale: 1e38 });
    return trainStep(model, optimizer, batch, stepOptions);
  };
}
// The fault test kills a rank once training is under way: the rank that reports progress (rank 0)
// says each finished batch on stdout.
if (process.env.TORCH_BERT_TEST_SAY_BATCHES) {
  options.onProgress = (event) => {
    if (event.type === 'batch') process.stdout.write(`batch ${event.batch}\n`);
  };
}
// The resume test stops a run mid-epoch: rank 0 aborts once it has finished this batch (the
// ranks agree to stop at the next step boundary; rank 0 saves the training state).
if (process.env.TORCH_BERT_TEST_ABORT_AFTER_BATCH) {
  const after = Number(process.env.TORCH_BERT_TEST_ABORT_AFTER_BATCH);
  const controller = new AbortController();
  options.signal = controller.signal;
  options.onProgress = (event) => {
    if (event.type === 'batch' && event.batch === after) controller.abort();
  };
}
try {
  const result = await train(options);
  loadBinding().saveTensors(out, Object.fromEntries(result.classifier.module.namedParameters()));
  // What the run reported, for the tests that compare the ranks' metrics (and skipped batches) with one process's.
  const { history, evaluations, metrics, skippedBatches } = result;
  blasThreads.after = loadBinding().getBlasThreads();
  writeFileSync(`${out}.json`, JSON.stringify({ history, evaluations, metrics, skippedBatches, blasThreads }));
} catch (err) {
  console.error(`${err?.name ?? 'Error'}: ${err?.message ?? err}`);
  process.exit(1);
}
