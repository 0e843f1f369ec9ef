/**
 * One process of test/question-answering-runs.test.ts's data-parallel case:
 * `trainQuestionAnswering()` from the compiled package (dist/, as a user's rank runs it) with the
 * JSON options of argv[2]. A rank of a group reads its place from torchrun's variables in its
 * environment; the single reference process has none. The result is printed as JSON on stdout; a
 * failure prints its message on stderr's last line and exits 1.
 */
import { trainQuestionAnswering } from '../../dist/index.js';

try {
  console.log(JSON.stringify(await trainQuestionAnswering(JSON.parse(process.argv[2]))));
} catch (err) {
  console.error(`${err?.name ?? 'Error'}: ${err?.message ?? err}`);
  process.exit(1);
}
