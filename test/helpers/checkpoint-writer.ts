/**
 * Child process of test/reliability/crash-safety*.test.ts: saves checkpoints (or training
 * states) into one directory, back to back, until it is killed.
 *
 *   vite-node test/helpers/checkpoint-writer.ts -- <checkpoint|state> <dir> <encoder.pt> <record.jsonl> <tokenizer.json>
 *
 * Two classifiers built from the same encoder with head seeds 1 and 2 ("A" and "B") are saved
 * alternately; each save's config / state.json says which one it holds, so the parent can
 * check that the files of a surviving checkpoint belong together. After every completed save a
 * line `{"i", "which", "sha"}` (sha: SHA-256 of classifier.pt, or of tensors.pt for states) is
 * appended to the record file, and (checkpoints) one for every archive as soon as it is written. After the first two saves `ready <mean save ms>` goes to stdout.
 * SLOW_FS_MS (slow-fs.ts) slows file operations down.
 */

import { createHash } from 'node:crypto';
import fs, { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { loadBinding } from '../../lib/addon/loader.js';
import { sha256File, writeCheckpoint } from '../../lib/files/checkpoint.js';
import { startPosition } from '../../lib/training/run-keeper.js';
import { STATE_DIR, saveTrainingState } from '../../lib/training/training-state.js';
import { slowDownFileSystem } from './slow-fs.js';

// SLOW_FS_MS (slow-fs.ts): a slow disk.
slowDownFileSystem();

const args = process.argv.slice(2).filter((a) => a !== '--');
const [mode, dir, encoderFile, record, tokenizerFile] = args as [string, string, string, string, string];

// TorchScript archives of the same module are not byte-identical over a process's life (observed:
// the bytes change after ~8 saves), so a checksum recorded only after a save completes would miss
// an archive committed just before a kill. Every archive is therefore recorded when it is renamed
// to its content-addressed name (step 1 of writeCheckpoint), before anything can commit it.
const current = { i: -1, which: '' };
{
  const p = fs.promises as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  const rename = p.rename!;
  p.rename = async (...a: unknown[]) => {
    if (/classifier-[0-9a-f]{16}\.pt$/.test(String(a[1]))) {
      const sha = createHash('sha256')
        .update(readFileSync(String(a[0])))
        .digest('hex');
      appendFileSync(record, JSON.stringify({ pid: process.pid, i: current.i, which: current.which, sha, phase: 'archived' }) + '\n');
    }
    return rename(...a);
  };
  syncBuiltinESMExports();
}
mkdirSync(dir, { recursive: true });
const binding = loadBinding();
binding.setNumThreads(1);

const HEAD_SEEDS = { A: 1, B: 2 } as const;

const encoder = binding.ScriptModule.load(encoderFile);
const models = (['A', 'B'] as const).map((which) => {
  const { module } = binding.buildClassifier(encoder, {
    numClasses: 2,
    headHidden: 8,
    dropout: 0,
    pooling: 'cls',
    seed: HEAD_SEEDS[which],
  });
  return { which, module };
});
const tokenizerJson = readFileSync(tokenizerFile, 'utf8');

async function saveCheckpoint(i: number, which: 'A' | 'B', module: (typeof models)[number]['module']): Promise<string> {
  const config = {
    format: 'torch-bert-classifier',
    formatVersion: 1,
    labels: ['negative', 'positive'],
    maxLength: 16,
    pooling: 'cls',
    headHidden: 8,
    dropout: 0,
    output: 'log_probabilities',
    hyperparameters: {},
    metrics: {},
    createdAt: new Date().toISOString(),
    saveIndex: i,
    weights: which,
  };
  await writeCheckpoint(dir, module, { config, tokenizerJson, history: [{ saveIndex: i, weights: which }] });
  return sha256File(join(dir, 'classifier.pt'));
}

const states = models.map(({ which, module }) => {
  const head = module.namedParameters().filter(([n]) => n.startsWith('head.'));
  const optimizer = new binding.AdamW([{ params: head.map(([, t]) => t), lr: 1e-3 }]);
  return { which, head, optimizer };
});

async function saveState(i: number, which: 'A' | 'B'): Promise<string> {
  const s = states.find((x) => x.which === which)!;
  const position = { ...startPosition(), batch: i, optimizerSteps: i };
  await saveTrainingState(binding, dir, {
    fingerprint: { weights: which, saveIndex: i },
    position,
    tensors: s.head,
    optimizer: s.optimizer,
  });
  return sha256File(join(dir, STATE_DIR, 'tensors.pt'));
}

// SAVES=n: stop after n saves (default: never).
const saves = Number(process.env.SAVES ?? Infinity);
const started: number[] = [];
for (let i = 0; i < saves; i++) {
  const { which, module } = models[i % 2]!;
  current.i = i;
  current.which = which;
  const t0 = performance.now();
  const sha = mode === 'state' ? await saveState(i, which) : await saveCheckpoint(i, which, module);
  started.push(performance.now() - t0);
  appendFileSync(record, JSON.stringify({ pid: process.pid, i, which, sha }) + '\n');
  if (i === 1) process.stdout.write(`ready ${(started.reduce((a, b) => a + b, 0) / started.length).toFixed(2)}\n`);
}
