#!/usr/bin/env node
/**
 * A probe behind a configuration choice (README "What the measurements chose"): tokenizing the
 * benchmark reviews (IMDB train-00-of-10, or the demo reviews) on the main thread
 * (TextTokenizer.encodeBatch) vs on worker threads (encodeBatchAsync, what train() runs), at
 * each max length given. Not part of `npm run bench`.
 *
 *   node bench/probe-tokenize.mjs [--lengths 128,512]
 */
import { dataFile, dataModule, tokenizer } from './lib.mjs';

const i = process.argv.indexOf('--lengths');
const lengths = (i > 0 ? process.argv[i + 1] : '128,512').split(',').map(Number);
const { texts } = await dataModule.loadExamples({ csv: dataFile, textColumn: 'text', labelColumn: 'label' });
const tok = await tokenizer();
for (const maxLength of lengths) {
  let t0 = performance.now();
  tok.encodeBatch(texts, maxLength);
  const main = (performance.now() - t0) / 1000;
  t0 = performance.now();
  await tok.encodeBatchAsync(texts, maxLength);
  const workers = (performance.now() - t0) / 1000;
  console.log(`${texts.length} texts, max length ${maxLength}: main thread ${main.toFixed(2)} s, worker threads ${workers.toFixed(2)} s`);
}
