/**
 * The embedded demo: everything the main job needs without a download and without Python. The
 * small BERT ships as a Hugging Face model folder (assets/demo/encoder: config.json +
 * model.safetensors, 2 layers of width 64), built natively like any Hugging Face checkpoint. A
 * randomly initialised BERT gives near-constant [CLS] vectors, so a frozen-encoder head on it
 * learns nothing; the shipped weights were therefore given informative features by a short
 * supervised pass over a separate pre-training set (assets/demo/pretrain.csv), standing in for
 * the pretrained weights a real user starts from (how they were made: assets/demo/README.md).
 * The seed's frozen job then runs on assets/demo/reviews.csv (`torch-bert demo`, here too).
 */
import { join } from 'node:path';
import { packageRoot } from '../addon/loader.js';
import { Classifier } from '../classification/classifier.js';
import { type TrainResult, train } from '../classification/trainer.js';
import { formatMetricsTable } from '../training/metrics.js';
import type { TrainOptions } from '../training/options.js';
import { parseCommandArgs } from './args.js';
import { historyTable, predictionTable, progressPrinter } from './output.js';
import { interruptController } from './run-control.js';

export function demoAssets(): { encoder: string; tokenizer: string; reviews: string } {
  const assets = join(packageRoot, 'assets', 'demo');
  return {
    encoder: join(assets, 'encoder'),
    tokenizer: join(assets, 'tokenizer.json'),
    reviews: join(assets, 'reviews.csv'),
  };
}

/**
 * The seed's hyperparameters except where the demo's size demands otherwise: 640 training
 * examples give 20 steps an epoch, too few for the seed's lr 1e-5 to move the head, and the
 * demo sentences fit in 64 tokens.
 */
export const DEMO_TRAINING: Omit<TrainOptions, 'data' | 'encoder' | 'tokenizer' | 'problemType'> = {
  epochs: 5,
  batchSize: 32,
  maxLength: 64,
  learningRate: 1e-3,
};

/** Sentences the demo classifies; written in the demo data's vocabulary, but none of them is in its data. */
export const DEMO_SENTENCES = [
  'The acting was superb and the story was moving.',
  'A dull, predictable film; save your money.',
  'The jokes land and the cast is excellent.',
  'The film was not good.',
];

export const DEMO_HELP = `torch-bert demo — the whole job on embedded data, no download

Builds the small BERT shipped as a Hugging Face folder (assets/demo/encoder; its features were
made informative by a short supervised pass on a separate pre-training set), runs the seed's
frozen-encoder job on assets/demo/reviews.csv, saves the classifier and predicts a few
sentences. No download, no Python.

  --out DIR                working directory (./torch-bert-demo)
  --json                   print one JSON object instead of tables`;

/**
 * The demo's training run (the seed's job on the shipped reviews and small BERT) into
 * `classifierDir`, saying what it does and, for people, how it went. `log` is silent with --json.
 */
async function trainDemo(classifierDir: string, json: boolean, log: (s: string) => void): Promise<TrainResult> {
  const assets = demoAssets();
  log(
    `demo: data ${assets.reviews}, encoder ${assets.encoder} (a small BERT shipped as a Hugging Face folder), tokenizer ${assets.tokenizer}`,
  );
  log(`demo: the seed's job — frozen encoder + Linear-ReLU-Dropout-Linear head, AdamW, best by validation loss`);
  const result = await train({
    ...DEMO_TRAINING,
    data: assets.reviews,
    encoder: assets.encoder,
    tokenizer: assets.tokenizer,
    outDir: classifierDir,
    onProgress: progressPrinter(!json),
    signal: interruptController({}).signal,
  });
  result.classifier.dispose();
  log('\n' + historyTable(result.history));
  log(`\nvalidation metrics of the kept weights:\n${formatMetricsTable(result.metrics)}`);
  log(`\nsaved the best classifier (epoch ${result.best.epoch}) to ${classifierDir}; reloading it to predict:`);
  return result;
}

export async function commandDemo(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('demo', {
    args: argv,
    options: { out: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) return void console.log(DEMO_HELP);
  const json = Boolean(values.json);
  const classifierDir = join(values.out ?? 'torch-bert-demo', 'classifier');
  const log = (s: string) => {
    if (!json) console.log(s);
  };
  const result = await trainDemo(classifierDir, json, log);
  const classifier = await Classifier.load(classifierDir);
  try {
    const predictions = await classifier.predict(DEMO_SENTENCES);
    if (json) {
      console.log(
        JSON.stringify({
          best: result.best,
          history: result.history,
          classifierDir,
          predictions: predictions.map((p, i) => ({ text: DEMO_SENTENCES[i], ...p })),
        }),
      );
    } else {
      console.log(predictionTable(classifier.problemType, predictions, DEMO_SENTENCES));
      // npx runs the installed package's bin, and in a checkout the package's own: a path to
      // dist/cli.js would hold only in a checkout's root.
      console.log(`\nnext: npx torch-bert predict --classifier ${classifierDir} "your sentence"`);
    }
  } finally {
    classifier.dispose();
  }
}
