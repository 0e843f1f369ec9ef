/**
 * One process of test/pretrain.test.ts's data-parallel cases: `pretrain()` from the compiled
 * package (dist/, as a user's rank runs it) with the JSON options of argv[2]; the run writes its
 * folder itself (rank 0 alone in a group). A rank of a group reads its place from torchrun's
 * variables in its environment; the single reference process has none. With
 * TORCH_BERT_TEST_ABORT_AFTER=N the process aborts its run after N batches it was told of (only
 * rank 0 is told: the others learn of the abort from the group). The result (every rank's) is
 * printed as JSON on stdout; a failure prints its message on stderr's last line and exits 1.
 */
import { pretrain } from '../../dist/index.js';

const options = JSON.parse(process.argv[2]);
const abortAfter = Number(process.env.TORCH_BERT_TEST_ABORT_AFTER ?? 0);
if (abortAfter > 0) {
  const controller = new AbortController();
  let batches = 0;
  options.signal = controller.signal;
  options.onProgress = (event) => {
    if (event.type === 'batch' && ++batches === abortAfter) controller.abort();
  };
}
try {
  console.log(JSON.stringify(await pretrain(options)));
} catch (err) {
  console.error(`${err?.name ?? 'Error'}: ${err?.message ?? err}`);
  process.exit(1);
}
