/**
 * Validation accuracy and seconds per epoch of frozen / full / lora / adapter, through train(), on the
 * same reviews, encoder, split, max length, batch size and epochs (train()'s defaults
 * otherwise: dynamic padding, clipping 1.0, constant learning rate).
 *
 * Learning rates, one common recipe per technique: frozen head 1e-3 (features cached in
 * memory); full: head 1e-3, encoder 5e-5; lora: head and adapters 1e-3 (r=8, alpha=16 on
 * attention query and value); adapter: head and adapters 1e-3 (Houlsby, size 64, swish). "s/epoch" is an epoch's training plus its validation pass; for
 * frozen the one-time encoding is reported apart ("before 1st step" = tokenize + load + encode).
 */
import { binding, dataDescription, e2eSetup, f, median, pct, table, timedTrain, tokenizerFile } from './lib.mjs';

export const name = 'techniques-table';

export const RECIPES = {
  frozen: { technique: 'frozen', featureCache: 'memory', learningRate: 1e-3 },
  full: { technique: 'full', learningRate: 1e-3, encoderLearningRate: 5e-5 },
  lora: { technique: 'lora', learningRate: 1e-3, lora: { rank: 8, alpha: 16 } },
  adapter: { technique: 'adapter', learningRate: 1e-3, adapter: { config: 'houlsby', size: 64 } },
};

export async function run({ quick, threads, maxLength }) {
  const setup = await e2eSetup(quick, maxLength);
  const epochs = quick ? 1 : 2;
  const common = {
    data: { texts: setup.data.texts, labels: setup.data.labels },
    encoder: setup.encoder,
    tokenizer: tokenizerFile,
    maxLength: setup.maxLength,
    batchSize: setup.batchSize,
    epochs,
    seed: 42,
    threads,
  };
  const results = {};
  for (const [technique, recipe] of Object.entries(RECIPES)) {
    const out = await timedTrain({ ...common, ...recipe });
    results[technique] = {
      recipe,
      seconds: out.seconds,
      beforeFirstStepSeconds: out.beforeFirstStepSeconds,
      epochSecondsMedian: median(out.epochSeconds),
      epochSeconds: out.epochSeconds,
      validationAccuracyBest: out.best.validationAccuracy,
      validationAccuracyLast: out.last.validationAccuracy,
      bestEpoch: out.best.epoch,
      trainableParameters: out.trainableParameters,
      totalParameters: out.totalParameters,
      trainableEncoderFraction: out.trainableEncoderFraction,
      history: out.history,
    };
    console.error(
      `bench: techniques-table ${technique}: ${f(out.seconds, 1)} s, ${out.epochSeconds.map((s) => f(s, 1)).join('/')} s/epoch, ` +
        `val acc best ${f(out.best.validationAccuracy, 3)} last ${f(out.last.validationAccuracy, 3)}`,
    );
  }
  const lr = (r) => (r.encoderLearningRate ? `head ${r.learningRate}, encoder ${r.encoderLearningRate}` : String(r.learningRate));
  const rows = Object.entries(results).map(([t, r]) => [
    t + ({ lora: ' (r=8, α=16, q+v)', frozen: ' (cached)', adapter: ' (Houlsby, 64, swish)' }[t] ?? ''),
    lr(r.recipe),
    `${r.trainableParameters.toLocaleString('en-US')} (${t === 'frozen' ? 'head only' : `head + ${pct(r.trainableEncoderFraction, 2)} of encoder`})`,
    pct(r.validationAccuracyBest),
    pct(r.validationAccuracyLast),
    f(r.epochSecondsMedian, 2),
    f(r.beforeFirstStepSeconds, 1),
    f(r.seconds, 1),
  ]);
  const markdown = [
    `**Techniques on the same data and encoder** — train() on ${setup.data.texts.length.toLocaleString('en-US')} reviews ` +
      `(80/20 stratified split), max length ${setup.maxLength}, batch ${setup.batchSize}, ${epochs} epoch(s), seed 42; ` +
      `${dataDescription}; ${setup.encoderDescription}. One run each; ${binding.getNumThreads()} intra-op thread(s). ` +
      `Accuracy of the best epoch by validation loss, and of the last epoch.`,
    '',
    table(
      ['technique', 'learning rate', 'trainable params', 'val acc (best)', 'val acc (last)', 's/epoch', 's before 1st step', 'train() s'],
      rows,
    ),
  ].join('\n');
  return {
    settings: {
      ...common,
      data: `${setup.data.texts.length} examples of ${dataDescription}`,
      encoderDescription: setup.encoderDescription,
      recipes: RECIPES,
    },
    results,
    markdown,
  };
}
