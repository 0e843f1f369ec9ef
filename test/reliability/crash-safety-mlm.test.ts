/**
 * Crash-safe pretraining output: pretrain() rewrites its Hugging Face folder (model.safetensors,
 * encoder.pt, config.json with the kept evaluation) at every new best. A child process writes the
 * folder back to back from two distinguishable models ("A", "B") and is SIGKILLed at a random
 * moment, 20 times, always on the same folder. After every kill the folder must be one save, never
 * a mix: the weights torch-bert's loader reads, and encoder.pt, are the model config.json says it
 * kept, with the checksums config.json commits; the public model.safetensors (what transformers
 * reads) is always a whole file of A or B. File operations in the child are slowed by a few ms
 * (SLOW_FS_MS) so that kills land between every pair of steps of a save.
 *
 * Reproduce a failure with RELIABILITY_SEED=<the printed seed>.
 */
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NativeBinding, NativeTensor } from '../../lib/addon/binding.js';
import { loadBinding } from '../../lib/addon/loader.js';
import { addressedName, archiveChecksums, CONFIG_FILE, ensureWritableDir, resolveArchive, sha256File } from '../../lib/files/checkpoint.js';
import { loadEncoderSource } from '../../lib/models/encoder-source.js';
import { inspectModelFolder, MODEL_FILE } from '../../lib/models/model-folder.js';
import { ENCODER_FILE } from '../../lib/pretraining/mlm-output.js';
import { makeHfFolder } from '../fixtures.js';
import { exited, killDuringSaves, rng, runSeed, spawnTs } from '../helpers/reliability.js';

const TRIALS = 20;
const SEED = runSeed();
const SHAPE = { layout: 'mlm' as const, hidden: 16, layers: 1, heads: 2, intermediate: 32, maxPosition: 64 };
const work = mkdtempSync(join(tmpdir(), 'torch-bert-crash-mlm-'));
const WRITER = 'test/helpers/mlm-folder-writer.ts';

let binding: NativeBinding;
const sources: Record<'A' | 'B', string> = { A: '', B: '' };
/** The word embeddings of A and B, as their source folders hold them (pretraining's folder writes them unchanged here). */
const reference: Record<'A' | 'B', number[]> = { A: [], B: [] };

const wordEmbeddings = (named: Iterable<[string, NativeTensor]>): number[] => {
  for (const [name, tensor] of named)
    if (name.endsWith('embeddings.word_embeddings.weight')) return Array.from(tensor.toArray() as Float32Array);
  throw new Error('no word embeddings');
};

/** The word embeddings of a safetensors file, its tensors disposed. */
function fileEmbeddings(path: string): number[] {
  const { tensors } = binding.readSafetensors(path);
  try {
    return wordEmbeddings(tensors);
  } finally {
    for (const [, t] of tensors) t.dispose();
  }
}

/** Which model config.json says the folder keeps (the writer's kept epoch: 1 for A, 2 for B), and its committed checksums. */
function committed(dir: string): { which: 'A' | 'B'; shas: Map<string, string> } {
  const config = JSON.parse(readFileSync(join(dir, CONFIG_FILE), 'utf8')) as { torch_bert: { kept: { epoch: number } } };
  return { which: config.torch_bert.kept.epoch === 1 ? 'A' : 'B', shas: archiveChecksums(config) };
}

const isLeftover = (name: string) => /\.tmp-\d+/.test(name) || /^[a-z]+-[0-9a-f]{16}\.(pt|safetensors)$/.test(name);

beforeAll(async () => {
  console.log(`crash-safety-mlm: seed ${SEED} (RELIABILITY_SEED=${SEED} reproduces this run)`);
  binding = loadBinding();
  sources.A = (await makeHfFolder({ ...SHAPE, seed: 1 })).dir;
  sources.B = (await makeHfFolder({ ...SHAPE, seed: 2 })).dir;
  reference.A = fileEmbeddings(join(sources.A, MODEL_FILE));
  reference.B = fileEmbeddings(join(sources.B, MODEL_FILE));
  expect(reference.A).not.toEqual(reference.B);
}, 120_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("pretraining's model folder under SIGKILL", () => {
  it(`is one save, never a mix, after each of ${TRIALS} kills at random moments of a save`, async () => {
    const random = rng(SEED);
    const dir = join(work, 'folder');
    const stats = { killedMidSave: 0, resolvedToPending: 0, loadedA: 0, loadedB: 0 };
    for (let trial = 0; trial < TRIALS; trial++) {
      const child = await killDuringSaves(WRITER, [dir, sources.A, sources.B], random);
      expect(child.signal, `trial ${trial}: the child must die by the kill, not by an error`).toBe('SIGKILL');
      if (readdirSync(dir).some(isLeftover)) stats.killedMidSave++;

      const { which, shas } = committed(dir);
      // The weights torch-bert reads are config.json's, by checksum and by content.
      const files = await inspectModelFolder(dir);
      expect(files.weights).toHaveLength(1);
      const weights = join(dir, files.weights[0]!);
      if (files.weights[0] !== MODEL_FILE) stats.resolvedToPending++;
      expect(await sha256File(weights), `trial ${trial}: the weights read are the committed ones`).toBe(shas.get(MODEL_FILE));
      expect(fileEmbeddings(weights), `trial ${trial}: weights are config.json's model ${which}`).toEqual(reference[which]);
      // encoder.pt (or, mid-publication, its content-addressed file) is the same model.
      const encoder = binding.ScriptModule.load((await resolveArchive(dir, ENCODER_FILE, shas.get(ENCODER_FILE))).path);
      expect(wordEmbeddings(encoder.namedParameters()), `trial ${trial}: encoder.pt is model ${which}`).toEqual(reference[which]);
      encoder.dispose();
      // The public model.safetensors (what transformers reads) is always a whole file of A or B.
      expect([reference.A, reference.B]).toContainEqual(fileEmbeddings(join(dir, MODEL_FILE)));
      if (which === 'A') stats.loadedA++;
      else stats.loadedB++;
    }
    console.log(
      `crash-safety (mlm folder): ${TRIALS} kills, ${stats.killedMidSave} left a save's files behind, ` +
        `${stats.resolvedToPending} between config.json's commit and the weights' publication; kept A ${stats.loadedA}, B ${stats.loadedB}`,
    );
    // The kills did land inside saves, and the kept model was sometimes the newer one.
    expect(stats.killedMidSave).toBeGreaterThan(TRIALS / 2);
    expect(stats.loadedA).toBeGreaterThan(0);
    expect(stats.loadedB).toBeGreaterThan(0);

    // The next complete save cleans up: only the folder's public files remain.
    const last = spawnTs(WRITER, [dir, sources.A, sources.B], { env: { SAVES: '1' } });
    expect((await exited(last)).code).toBe(0);
    expect(readdirSync(dir).filter(isLeftover)).toEqual([]);
    expect(committed(dir).which).toBe('A');
    expect(fileEmbeddings(join(dir, MODEL_FILE))).toEqual(reference.A);
  }, 600_000);

  it('a save killed between config.json and the weights is read as committed, and completed by the next run writing there', async () => {
    const dir = join(work, 'rollforward');
    // Two complete saves (A then B), then the state a kill between the commit and the publication
    // leaves: config.json of B, its weights under their content-addressed names, the public files A's.
    const writer = spawnTs(WRITER, [dir, sources.A, sources.B], { env: { SAVES: '2' } });
    const onlyA = spawnTs(WRITER, [`${dir}-A`, sources.A, sources.B], { env: { SAVES: '1' } });
    expect((await exited(writer)).code).toBe(0);
    expect((await exited(onlyA)).code).toBe(0);
    const { which, shas } = committed(dir);
    expect(which).toBe('B');
    for (const file of [MODEL_FILE, ENCODER_FILE]) {
      copyFileSync(join(dir, file), join(dir, addressedName(file, shas.get(file)!)));
      copyFileSync(join(`${dir}-A`, file), join(dir, file));
    }
    expect(fileEmbeddings(join(dir, MODEL_FILE))).toEqual(reference.A);

    // Loading the folder (as --model) builds B.
    const loaded = await loadEncoderSource(dir, { device: 'cpu', fallbackMaxLength: 32, maxLength: 32 });
    expect(wordEmbeddings(loaded.module.namedParameters())).toEqual(reference.B);
    loaded.module.dispose();

    // A run that writes into the folder publishes B.
    await ensureWritableDir(dir);
    expect(await sha256File(join(dir, MODEL_FILE))).toBe(shas.get(MODEL_FILE));
    expect(await sha256File(join(dir, ENCODER_FILE))).toBe(shas.get(ENCODER_FILE));
    expect(readdirSync(dir).filter(isLeftover)).toEqual([]);
    expect(existsSync(join(dir, addressedName(MODEL_FILE, shas.get(MODEL_FILE)!)))).toBe(false);
  }, 120_000);
});
