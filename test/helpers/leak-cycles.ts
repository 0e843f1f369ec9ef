/**
 * Child process of test/reliability/leaks.test.ts (run with `node --expose-gc`):
 *
 *   vite-node test/helpers/leak-cycles.ts -- <encoder.pt> <work dir> <cycles> <gc|nogc>
 *
 * Each cycle trains three small classifiers (frozen, full and LoRA techniques — or those listed
 * in TECHNIQUES=a,b — each with an
 * outDir, so checkpoints and training states are written too), predicts with each result,
 * loads one saved classifier back and predicts with it, disposing what it is done with. After
 * each cycle (with `gc`: after a full garbage collection) it prints `cycle <n> <rss> <heapUsed>
 * <heapTotal> <external>` (bytes).
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { loadClassifier } from '../../lib/classification/classifier.js';
import { train } from '../../lib/classification/trainer.js';
import { loadExamples } from '../../lib/data/data.js';
import type { Technique } from '../../lib/training/options.js';
import { demoReviews, demoTokenizer } from '../fixtures.js';

const args = process.argv.slice(2).filter((a) => a !== '--');
const [encoder, work, cyclesArg, gcMode] = args as [string, string, string, string];
const cycles = Number(cyclesArg);
const gc = (globalThis as { gc?: () => void }).gc;
if (gcMode === 'gc' && !gc) throw new Error('run with node --expose-gc');

const raw = await loadExamples(demoReviews);
const data = { texts: raw.texts.slice(0, 96), labels: raw.labels!.slice(0, 96) };
const probe = raw.texts.slice(200, 232);

const kept: unknown[] = [];
for (let cycle = 1; cycle <= cycles; cycle++) {
  for (const technique of (process.env.TECHNIQUES ?? 'frozen,full,lora').split(',') as Technique[]) {
    const outDir = join(work, `run-${technique}`);
    rmSync(outDir, { recursive: true, force: true });
    const result = await train({
      data,
      encoder,
      tokenizer: demoTokenizer,
      outDir,
      technique,
      epochs: 2,
      maxLength: 32,
      batchSize: 32,
      headHidden: 32,
      learningRate: 1e-3,
      seed: cycle,
    });
    await result.classifier.predict(probe);
    // LEAK_ON_PURPOSE=1 keeps every classifier: shows what a leak looks like to the test.
    if (process.env.LEAK_ON_PURPOSE === '1') kept.push(result.classifier);
    else result.classifier.dispose();
    if (technique === 'full') {
      const loaded = await loadClassifier(outDir);
      await loaded.predict(probe, { batchSize: 16 });
      loaded.dispose();
    }
  }
  if (gcMode === 'gc') {
    // Two passes: the first runs finalizers that free native memory, the second collects what they released.
    gc!();
    await new Promise((r) => setImmediate(r));
    gc!();
  }
  const m = process.memoryUsage();
  process.stdout.write(`cycle ${cycle} ${m.rss} ${m.heapUsed} ${m.heapTotal} ${m.external}\n`);
}
