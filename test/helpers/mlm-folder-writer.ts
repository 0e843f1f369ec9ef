/**
 * Child process of test/reliability/crash-safety-mlm.test.ts: writes pretraining's model folder
 * (mlm-output.ts writeMaskedLmFolder) into one directory, back to back, until it is killed.
 *
 *   vite-node test/helpers/mlm-folder-writer.ts -- <dir> <source folder A> <source folder B>
 *
 * Two masked-LM models built from two source folders ("A" and "B", different weights) are saved
 * alternately; each save's kept evaluation says which it holds (epoch 1 for A, 2 for B), so the
 * parent can check that the weights a surviving folder gives are the ones its config.json
 * records. After the first two saves `ready <mean save ms>` goes to stdout. SLOW_FS_MS
 * (slow-fs.ts) slows file operations down; SAVES=n stops after n saves (default: never).
 */
import { mkdirSync } from 'node:fs';
import { loadBinding } from '../../lib/addon/loader.js';
import { loadEncoderSource } from '../../lib/models/encoder-source.js';
import { writeMaskedLmFolder } from '../../lib/pretraining/mlm-output.js';
import { slowDownFileSystem } from './slow-fs.js';

slowDownFileSystem();
const [dir, ...sources] = process.argv.slice(2).filter((a) => a !== '--') as [string, string, string];
mkdirSync(dir, { recursive: true });
const binding = loadBinding();
binding.setNumThreads(1);

const models = await Promise.all(
  sources.map(async (source, k) => {
    const loaded = await loadEncoderSource(source, { device: 'cpu', fallbackMaxLength: 32, maxLength: 32, mlmHead: true });
    const built = binding.buildMlmModel(loaded.module, loaded.mlmHead!);
    return {
      epoch: k + 1,
      write: (i: number) =>
        writeMaskedLmFolder(binding, dir, {
          model: built.module,
          encoder: loaded.module,
          aliases: built.tiedParameters.map(([alias]) => alias),
          family: 'bert',
          sourceDir: source,
          tokenizerJson: loaded.tokenizer.json,
          maxLength: 32,
          evaluation: { epoch: k + 1, step: i, validationLoss: 1, validationAccuracy: 0, validationMacroF1: 0, isBest: true },
          history: [],
        }),
    };
  }),
);

const saves = Number(process.env.SAVES ?? Infinity);
const took: number[] = [];
for (let i = 0; i < saves; i++) {
  const t0 = performance.now();
  await models[i % 2]!.write(i);
  took.push(performance.now() - t0);
  if (i === 1) process.stdout.write(`ready ${((took[0]! + took[1]!) / 2).toFixed(2)}\n`);
}
