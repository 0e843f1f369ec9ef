/**
 * The real job: the seed tutorial's frozen technique on the full IMDB dataset, end to end on this
 * machine, through the CLI a user would run — all 25,000 training reviews (the ten train parts,
 * a stratified 80/20 split: 20,000 train / 5,000 validation), 5 epochs, best weights by
 * validation loss, then the 25,000 test reviews evaluated with the saved classifier:
 *
 *   torch-bert train --data train-00-of-10.csv ... --data train-09-of-10.csv --technique frozen ...
 *   torch-bert eval --classifier DIR --data test-00-of-10.csv ... --data test-09-of-10.csv
 *
 * Each command's wall time and peak RSS (VmHWM via bench/peak-rss.cjs). The encoder is the
 * small stand-in of frozen-e2e (no pretrained weights exist offline), max length 128.
 *
 * Next to it, the tutorial's way (the encoder recomputed for every batch of every epoch),
 * estimated from a measured subset: one epoch of train() with featureCache 'none' on 2,000
 * reviews gives seconds per review-epoch, times 25,000 reviews × 5 epochs, plus the same test
 * evaluation. Not in the default suite (about 10-15 minutes): `npm run bench -- --only imdb-job`.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { e2eSetup, examples, f, imdbParts, pct, root, table, timedTrain, tokenizerFile, useImdb } from './lib.mjs';

export const name = 'imdb-job';
/** Not part of a plain `npm run bench` (see the top of this file). */
export const optIn = true;

const EPOCHS = 5;
const MAX_LENGTH = 128;
const LEARNING_RATE = 1e-3;
const SUBSET = 2000;
const MB = 2 ** 20;
const execFileAsync = promisify(execFile);

/** Runs the CLI with `args`; returns its parsed --json output, wall seconds and peak RSS. */
async function cli(args, work, label) {
  const rssFile = join(work, `${label}.rss`);
  const t0 = performance.now();
  const { stdout } = await execFileAsync(
    process.execPath,
    ['-r', join(root, 'bench', 'peak-rss.cjs'), join(root, 'dist', 'cli.js'), ...args, '--json'],
    { env: { ...process.env, TORCH_BERT_PEAK_RSS_FILE: rssFile }, maxBuffer: 64 << 20 },
  );
  const seconds = (performance.now() - t0) / 1000;
  return { output: JSON.parse(stdout.trim().split('\n').at(-1)), seconds, peakRssBytes: Number(readFileSync(rssFile, 'utf8')) };
}

export async function run({ quick }) {
  if (!useImdb) throw new Error('imdb-job needs ../shared/data/imdb and the bert-base-uncased tokenizer (not found)');
  const setup = await e2eSetup(false);
  const parts = (split) => imdbParts(split, quick ? 1 : 10);
  const work = mkdtempSync(join(os.tmpdir(), 'torch-bert-imdb-job-'));
  const out = join(work, 'classifier');
  try {
    const epochs = quick ? 1 : EPOCHS;
    const trainArgs = [
      'train',
      ...parts('train').flatMap((p) => ['--data', p]),
      '--model',
      setup.encoder,
      '--tokenizer',
      tokenizerFile,
      '--out',
      out,
      '--technique',
      'frozen',
      '--epochs',
      String(epochs),
      '--max-length',
      String(MAX_LENGTH),
      '--batch-size',
      '32',
      '--lr',
      String(LEARNING_RATE),
    ];
    console.error(`bench: imdb-job: training on ${parts('train').length} part(s) ...`);
    const trained = await cli(trainArgs, work, 'train');
    console.error(
      `bench: imdb-job: train ${f(trained.seconds, 1)} s, peak RSS ${f(trained.peakRssBytes / MB, 0)} MB; evaluating the test set ...`,
    );
    const tested = await cli(['eval', '--classifier', out, ...parts('test').flatMap((p) => ['--data', p])], work, 'eval');
    console.error(`bench: imdb-job: eval ${f(tested.seconds, 1)} s, test accuracy ${pct(tested.output.accuracy, 2)}`);

    // The tutorial's way on a measured subset: seconds per review per epoch of recomputing.
    const subset = await examples(quick ? 200 : SUBSET);
    const recompute = await timedTrain({
      data: { texts: subset.texts, labels: subset.labels },
      encoder: setup.encoder,
      tokenizer: tokenizerFile,
      technique: 'frozen',
      featureCache: 'none',
      maxLength: MAX_LENGTH,
      batchSize: 32,
      epochs: 1,
      learningRate: LEARNING_RATE,
      seed: 42,
    });
    const perReviewEpoch = recompute.epochSeconds[0] / subset.texts.length;
    const reviews = trained.output.trainExamples + trained.output.validationExamples;
    const tutorialEstimate = perReviewEpoch * reviews * epochs + tested.seconds;
    const ours = trained.seconds + tested.seconds;
    const results = {
      trainReviews: trained.output.trainExamples,
      validationReviews: trained.output.validationExamples,
      testReviews: tested.output.examples,
      epochs,
      maxLength: MAX_LENGTH,
      train: { seconds: trained.seconds, peakRssBytes: trained.peakRssBytes, best: trained.output.best, history: trained.output.history },
      test: {
        seconds: tested.seconds,
        peakRssBytes: tested.peakRssBytes,
        accuracy: tested.output.accuracy,
        loss: tested.output.loss,
        metrics: tested.output.metrics,
      },
      tutorialWay: { subsetReviews: subset.texts.length, secondsPerReviewEpoch: perReviewEpoch, estimatedSeconds: tutorialEstimate },
      speedup: tutorialEstimate / ours,
    };
    const hms = (s) => `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    const markdown = [
      `**The real job: frozen technique on the full IMDB** — \`torch-bert train\` on the ${parts('train').length} train part(s) ` +
        `(${results.trainReviews.toLocaleString('en-US')} train / ${results.validationReviews.toLocaleString('en-US')} validation, stratified, seed 42), ` +
        `${epochs} epoch(s), max length ${MAX_LENGTH}, batch 32, lr ${LEARNING_RATE}, best by validation loss; then \`torch-bert eval\` on the ` +
        `${results.testReviews.toLocaleString('en-US')} test reviews. ${setup.encoderDescription}. Peak RSS = VmHWM of each command's process.`,
      '',
      table(
        ['step', 'wall time', 'peak RSS MB', 'result'],
        [
          [
            'train (tokenize, encode 25k once, 5 head epochs, checkpoints)',
            hms(trained.seconds),
            f(trained.peakRssBytes / MB, 0),
            `validation accuracy ${pct(trained.output.best.validationAccuracy, 2)} (best epoch ${trained.output.best.epoch})`,
          ],
          [
            'eval on the test set',
            hms(tested.seconds),
            f(tested.peakRssBytes / MB, 0),
            `test accuracy ${pct(tested.output.accuracy, 2)}, loss ${f(tested.output.loss, 4)}`,
          ],
          ['**whole job**', `**${hms(ours)}**`, f(Math.max(trained.peakRssBytes, tested.peakRssBytes) / MB, 0), ''],
          [
            "tutorial's way (recompute every epoch), estimated",
            hms(tutorialEstimate),
            '—',
            `${f(perReviewEpoch * 1000, 2)} ms per review-epoch measured on ${subset.texts.length.toLocaleString('en-US')} reviews × ${reviews.toLocaleString('en-US')} reviews × ${epochs} epochs + the same eval`,
          ],
        ],
      ),
      '',
      `Speedup of the whole job over the tutorial's way: ${f(results.speedup, 2)}x.`,
    ].join('\n');
    return {
      settings: { epochs, maxLength: MAX_LENGTH, learningRate: LEARNING_RATE, encoderDescription: setup.encoderDescription },
      results,
      markdown,
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
