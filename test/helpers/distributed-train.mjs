/**
 * One process of test/distributed.test.ts: `train()` from the compiled package (dist/, as a
 * user's rank runs it) with the JSON options of argv[2]; the trained classifier's parameters are
 * then saved to argv[3] (torch.save format, binding.saveTensors). A rank of a group reads its
 * place from torchrun's variables in its environment; the single reference process has none.
 * A failure prints its message on stderr's last line and exits 1.
 */
import { loadBinding, train } from '../../dist/index.js';

const [optionsJson, out] = process.argv.slice(2);
const options = JSON.parse(optionsJson);
// The fault test kills a rank once training is under way: the rank that reports progress (rank 0)
// says each finished batch on stdout.
if (process.env.TORCH_BERT_TEST_SAY_BATCHES) {
  options.onProgress = (event) => {
    if (event.type === 'batch') process.stdout.write(`batch ${event.batch}\n`);
  };
}
try {
  const result = await train(options);
  loadBinding().saveTensors(out, Object.fromEntries(result.classifier.module.namedParameters()));
} catch (err) {
  console.error(`${err?.name ?? 'Error'}: ${err?.message ?? err}`);
  process.exit(1);
}
