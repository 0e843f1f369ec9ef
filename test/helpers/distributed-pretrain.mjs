/**
 * One process of test/pretrain.test.ts's data-parallel cases: `pretrain()` from the compiled
 * package (dist/, as a user's rank runs it) with the JSON options of argv[2]; the run writes its
 * folder itself (rank 0 alone in a group). A rank of a group reads its place from torchrun's
 * variables in its environment; the single reference process has none. A failure prints its
 * message on stderr's last line and exits 1.
 */
import { pretrain } from '../../dist/index.js';

try {
  await pretrain(JSON.parse(process.argv[2]));
} catch (err) {
  console.error(`${err?.name ?? 'Error'}: ${err?.message ?? err}`);
  process.exit(1);
}
