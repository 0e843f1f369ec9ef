/**
 * The embedded demo: everything the main job needs without a download and without Python. The
 * small BERT ships as a Hugging Face model folder (assets/demo/encoder: config.json +
 * model.safetensors, 2 layers of width 64), built natively like any Hugging Face checkpoint. A
 * randomly initialised BERT gives near-constant [CLS] vectors, so a frozen-encoder head on it
 * learns nothing; the shipped weights were therefore given informative features by a short
 * supervised pass over a separate pre-training set (assets/demo/pretrain.csv), standing in for
 * the pretrained weights a real user starts from (how they were made: assets/demo/README.md).
 * The seed's frozen job then runs on assets/demo/reviews.csv.
 */
import { join } from 'node:path';
import { packageRoot } from '../addon/loader.js';
import type { TrainOptions } from '../training/options.js';

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
export const DEMO_TRAINING: Omit<TrainOptions, 'data' | 'encoder' | 'tokenizer'> = {
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
