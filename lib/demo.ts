/**
 * The embedded demo: everything the main job needs without a download. A small BERT is made
 * locally with Python PyTorch (scripts/python/make_encoder.py). A randomly initialised BERT
 * gives near-constant [CLS] vectors, so a frozen-encoder head on it learns nothing; the script
 * therefore first gives the encoder informative features with a short supervised pass over a
 * separate pre-training set (assets/demo/pretrain.csv), standing in for the pretrained weights
 * a real user starts from. The seed's frozen job then runs on assets/demo/reviews.csv.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { packageRoot } from './loader.js';
import type { TrainOptions } from './options.js';

const run = promisify(execFile);

export function demoAssets(): { tokenizer: string; reviews: string; pretrain: string; makeEncoder: string } {
  const assets = join(packageRoot, 'assets', 'demo');
  return {
    tokenizer: join(assets, 'tokenizer.json'),
    reviews: join(assets, 'reviews.csv'),
    pretrain: join(assets, 'pretrain.csv'),
    makeEncoder: join(packageRoot, 'scripts', 'python', 'make_encoder.py'),
  };
}

/** Shape of the demo encoder and its informative pre-pass (fast on 2 cores). */
export const DEMO_ENCODER_ARGS = [
  '--layers',
  '2',
  '--hidden',
  '64',
  '--heads',
  '4',
  '--intermediate',
  '256',
  '--seed',
  '0',
  '--pretrain-epochs',
  '10',
];

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

/** Find a Python with PyTorch: `python3` on PATH, then Debian's `/usr/bin/python3`. */
export async function findTorchPython(): Promise<string> {
  for (const python of ['python3', '/usr/bin/python3']) {
    try {
      await run(python, ['-c', 'import torch']);
      return python;
    } catch {
      // try the next one
    }
  }
  throw new Error(
    'the demo makes its small BERT with Python PyTorch, and no python3 with torch was found; ' +
      'on Debian/Ubuntu: apt-get install python3-torch (bash scripts/setup.sh does it)',
  );
}

/** Make (once) the demo encoder under `outDir`, returning its path. */
export async function prepareDemoEncoder(outDir: string, log: (line: string) => void): Promise<string> {
  const encoder = join(outDir, 'encoder.pt');
  if (existsSync(encoder)) {
    log(`demo: reusing the small BERT in ${encoder}`);
    return encoder;
  }
  await mkdir(outDir, { recursive: true });
  const assets = demoAssets();
  const python = await findTorchPython();
  log(`demo: making a small BERT (${DEMO_ENCODER_ARGS.slice(0, 4).join(' ')}) and pre-training it on ${assets.pretrain} ...`);
  const started = performance.now();
  const tmp = `${encoder}.tmp-${process.pid}`;
  await run(
    python,
    [assets.makeEncoder, '--out', tmp, '--tokenizer', assets.tokenizer, '--pretrain', assets.pretrain, ...DEMO_ENCODER_ARGS],
    { maxBuffer: 16 * 1024 * 1024 },
  ).catch((err: { stderr?: string; message: string }) => {
    throw new Error(`making the demo encoder failed: ${(err.stderr ?? err.message).trim().split('\n').pop()}`);
  });
  await rename(tmp, encoder);
  log(`demo: encoder ready in ${((performance.now() - started) / 1000).toFixed(1)}s: ${encoder}`);
  return encoder;
}
