/**
 * Frozen technique end to end, cached vs the tutorial's way: train() on a subset of reviews,
 * 5 epochs, the tutorial's max length 250 (--max-length N for another), featureCache 'memory' (every text encoded once, the head's epochs run on the cached
 * features) vs 'none' (the encoder recomputed for every batch of every epoch and every
 * validation pass, as the seed tutorial does). Everything else identical (train()'s defaults:
 * dynamic padding, clipping 1.0; lr 1e-3 so the head learns in 5 epochs).
 *
 * Timed: the whole awaited train() call — tokenization, encoder load, encoding, training,
 * per-epoch validation, best-checkpoint writes, reloading the best classifier. Tokenization of
 * the same texts is also timed alone, for its share. Target: cached ≥ 5x faster, validation
 * accuracy within 1 point of the recompute-every-epoch way.
 */
import { binding, dataDescription, e2eSetup, f, median, pct, spread, stats, table, timedTrain, tokenizer, tokenizerFile } from './lib.mjs';

export const name = 'frozen-e2e';

/** The seed tutorial's max_length. */
const TUTORIAL_MAX_LENGTH = 250;

export async function run({ quick, threads, maxLength }) {
  // The tutorial's own max_length (250) unless --max-length says otherwise: this compares with
  // the tutorial's way of running its job.
  const setup = await e2eSetup(quick, maxLength ?? (quick ? undefined : TUTORIAL_MAX_LENGTH));
  const epochs = quick ? 2 : 5;
  const repeats = quick ? 1 : 2;
  const options = {
    data: { texts: setup.data.texts, labels: setup.data.labels },
    encoder: setup.encoder,
    tokenizer: tokenizerFile,
    technique: 'frozen',
    maxLength: setup.maxLength,
    batchSize: setup.batchSize,
    epochs,
    learningRate: 1e-3,
    seed: 42,
    threads,
  };
  const tok = await tokenizer();
  const t0 = performance.now();
  await tok.encodeBatchAsync(setup.data.texts, setup.maxLength); // what train() runs
  const tokenizeSeconds = (performance.now() - t0) / 1000;

  const runs = { memory: [], none: [] };
  for (let r = 0; r < repeats; r++) {
    const order = r % 2 === 0 ? ['memory', 'none'] : ['none', 'memory'];
    for (const cache of order) {
      const out = await timedTrain({ ...options, featureCache: cache });
      runs[cache].push(out);
      console.error(
        `bench: frozen-e2e ${cache}: ${f(out.seconds, 1)} s (before first step ${f(out.beforeFirstStepSeconds, 1)} s, ` +
          `epochs ${out.epochSeconds.map((s) => f(s, 1)).join('/')} s), val acc best ${f(out.best.validationAccuracy, 3)}`,
      );
    }
  }
  const memory = stats(runs.memory.map((x) => x.seconds));
  const none = stats(runs.none.map((x) => x.seconds));
  const speedup = none.median / memory.median;
  const acc = (cache, which) => runs[cache][0][which].validationAccuracy;
  const accuracyGapPoints = 100 * Math.abs(acc('memory', 'best') - acc('none', 'best'));
  const summary = (cache) => {
    const rs = runs[cache];
    return {
      seconds: cache === 'memory' ? memory : none,
      beforeFirstStepSeconds: median(rs.map((x) => x.beforeFirstStepSeconds)),
      epochSecondsMedian: median(rs.flatMap((x) => x.epochSeconds)),
      validationAccuracyBest: acc(cache, 'best'),
      validationAccuracyLast: acc(cache, 'last'),
      bestEpoch: rs[0].best.epoch,
      history: rs[0].history,
    };
  };
  const results = {
    examples: setup.data.texts.length,
    trainExamples: runs.memory[0].trainExamples,
    validationExamples: runs.memory[0].validationExamples,
    epochs,
    repeats,
    encoderMadeSeconds: setup.encoderMadeSeconds,
    tokenizeSeconds,
    tokenizeShareOfCached: tokenizeSeconds / memory.median,
    memory: summary('memory'),
    none: summary('none'),
    speedup,
    accuracyGapPoints,
    targets: { speedup: 5, accuracyGapPoints: 1 },
    met: { speedup: speedup >= 5, accuracy: accuracyGapPoints <= 1 },
  };
  const row = (label, cache) => {
    const s = results[cache];
    return [
      label,
      `${f(s.seconds.median, 1)} (${spread(s.seconds.runs, 1)})`,
      f(s.beforeFirstStepSeconds, 1),
      f(s.epochSecondsMedian, 2),
      pct(s.validationAccuracyBest),
      pct(s.validationAccuracyLast),
    ];
  };
  const markdown = [
    `**Frozen technique end to end: cached features vs recomputing the encoder every epoch** — train() on ${results.examples.toLocaleString('en-US')} ` +
      `reviews (${results.trainExamples} train / ${results.validationExamples} validation, stratified), max length ${setup.maxLength}, batch ${setup.batchSize}, ` +
      `${epochs} epochs, lr 1e-3; wall time of the whole call (tokenize + load + encode + train + evaluate), median of ${repeats} alternating run(s). ` +
      `${dataDescription}; ${setup.encoderDescription}. ${binding.getNumThreads()} intra-op thread(s).`,
    '',
    table(
      ['featureCache', 'train() s (spread)', 's before 1st step', 's/epoch', 'val acc (best epoch)', 'val acc (last epoch)'],
      [row("'memory' (encode once)", 'memory'), row("'none' (tutorial: every epoch)", 'none')],
    ),
    '',
    `Speedup ${f(speedup, 2)}x (target ≥ 5x: ${results.met.speedup ? 'met' : '**not met**'}); validation accuracy gap ` +
      `${f(accuracyGapPoints, 2)} points (target ≤ 1: ${results.met.accuracy ? 'met' : '**not met**'}). ` +
      `Tokenizing the ${results.examples.toLocaleString('en-US')} texts alone: ${f(tokenizeSeconds, 2)} s (${pct(results.tokenizeShareOfCached)} of the cached run). ` +
      `With ${epochs} epochs the recompute way runs the encoder over the training and validation texts ${epochs} times and the cached way once, ` +
      `so the speedup is bounded by ${epochs}x less the costs both share (tokenizing, loading, checkpoints), unless one encoding pass is itself cheaper cached.`,
  ].join('\n');
  return {
    settings: { ...options, data: `${results.examples} examples of ${dataDescription}`, encoderDescription: setup.encoderDescription },
    results,
    markdown,
  };
}
