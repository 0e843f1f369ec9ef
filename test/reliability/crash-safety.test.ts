/**
 * Crash-safe checkpoints: a child process saves checkpoints back to back (two distinguishable
 * weight sets, alternating) and is SIGKILLed at a random moment, 50 times, always on the same
 * directory (so each new child also starts from whatever the last kill left behind). After every
 * kill the directory must hold a complete checkpoint: loadClassifier succeeds (config.json's
 * checksum matches the archive it resolves), the archive is one whose checksum a child recorded
 * after a completed save, its weights are the weight set config.json says it holds, and the
 * public classifier.pt is always a whole TorchScript archive. File operations in the child are
 * slowed by a few ms (SLOW_FS_MS) so that kills land between every pair of steps of a save.
 *
 * Reproduce a failure with RELIABILITY_SEED=<the printed seed>.
 */
import { copyFileSync, existsSync, linkSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NativeBinding, NativeScriptModule } from '../../lib/addon/binding.js';
import { loadBinding } from '../../lib/addon/loader.js';
import { loadClassifier } from '../../lib/classification/classifier.js';
import {
  addressedClassifierName,
  addressedName,
  archiveChecksums,
  CLASSIFIER_FILE,
  CONFIG_FILE,
  ensureWritableDir,
  removeStaleFiles,
  resolveArchive,
  resolveClassifierFile,
  scratchCheckpointDir,
  sha256File,
  writeCheckpoint,
} from '../../lib/files/checkpoint.js';
import { writerId } from '../../lib/files/writer-identity.js';
import { demoTokenizer, makeEncoder, runPython } from '../fixtures.js';
import { exited, killDuringSaves, rng, runSeed, spawnTs } from '../helpers/reliability.js';

const TRIALS = 50;
const SEED = runSeed();
const work = mkdtempSync(join(tmpdir(), 'torch-bert-crash-'));

let binding: NativeBinding;
let encoder: string;
/** head.out_proj.weight of weight sets A (head seed 1) and B (head seed 2), as the child builds them. */
const reference: Record<'A' | 'B', number[]> = { A: [], B: [] };

const outProj = (m: NativeScriptModule) =>
  Array.from(
    m
      .namedParameters()
      .find(([n]) => n === 'head.out_proj.weight')![1]
      .toArray() as Float32Array,
  );

beforeAll(async () => {
  console.log(`crash-safety: seed ${SEED} (RELIABILITY_SEED=${SEED} reproduces this run)`);
  binding = loadBinding();
  // Sized by the demo tokenizer the checkpoints are saved with: loadClassifier checks that its ids fit the embeddings.
  encoder = await makeEncoder({ layers: 1, hidden: 16, heads: 2, intermediate: 32, tokenizer: demoTokenizer, seed: 7 });
  const enc = binding.ScriptModule.load(encoder);
  for (const [which, seed] of [
    ['A', 1],
    ['B', 2],
  ] as const) {
    const { module } = binding.buildClassifier(enc, { numClasses: 2, headHidden: 8, dropout: 0, pooling: 'cls', seed });
    reference[which] = outProj(module);
    module.dispose();
  }
  enc.dispose();
  expect(reference.A).not.toEqual(reference.B);
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

function recordedShas(record: string): Map<string, 'A' | 'B'> {
  const shas = new Map<string, 'A' | 'B'>();
  if (!existsSync(record)) return shas;
  for (const line of readFileSync(record, 'utf8').split('\n')) {
    // The last line may have been cut by the kill.
    if (!line.endsWith('}')) continue;
    const { sha, which } = JSON.parse(line) as { sha: string; which: 'A' | 'B' };
    shas.set(sha, which);
  }
  return shas;
}

describe('writeCheckpoint under SIGKILL', () => {
  it(`leaves a loadable, consistent checkpoint after each of ${TRIALS} kills at random moments of a save`, async () => {
    const random = rng(SEED);
    const dir = join(work, 'checkpoint');
    const record = join(work, 'checkpoint-record.jsonl');
    const stats = { trials: 0, killedMidSave: 0, resolvedToPending: 0, loadedA: 0, loadedB: 0, delays: [] as number[] };
    for (let trial = 0; trial < TRIALS; trial++) {
      const child = await killDuringSaves('test/helpers/checkpoint-writer.ts', ['checkpoint', dir, encoder, record, demoTokenizer], random);
      stats.delays.push(child.delay);
      expect(child.signal, `trial ${trial}: the child must die by the kill, not by an error`).toBe('SIGKILL');
      stats.trials++;

      const names = readdirSync(dir);
      const leftovers = names.filter((n) => /\.tmp-\d+/.test(n) || /^classifier-[0-9a-f]{16}\.pt$/.test(n));
      if (leftovers.length > 0) stats.killedMidSave++;
      // Stale files of earlier children were removed by the next save: temporary files left now
      // can only be the last child's.
      for (const n of names.filter((x) => /\.tmp-\d+/.test(x)))
        expect(n, `trial ${trial}`).toMatch(new RegExp(`\\.tmp-${child.pid}\\.\\d+-`));
      expect(names.filter((n) => /^classifier-[0-9a-f]{16}\.pt$/.test(n)).length, `trial ${trial}: ${names.join(' ')}`).toBeLessThanOrEqual(
        2,
      );

      // The checkpoint loads; config.json and the archive it resolves agree (checksum and weights).
      const shas = recordedShas(record);
      const config = JSON.parse(readFileSync(join(dir, CONFIG_FILE), 'utf8')) as { classifierSha256: string; weights: 'A' | 'B' };
      const classifier = await loadClassifier(dir);
      try {
        expect(outProj(classifier.module), `trial ${trial}: weights are config.json's set ${config.weights}`).toEqual(
          reference[config.weights],
        );
      } finally {
        classifier.dispose();
      }
      const resolved = await resolveClassifierFile(dir, config.classifierSha256);
      if (resolved !== join(dir, CLASSIFIER_FILE)) stats.resolvedToPending++;
      const sha = await sha256File(resolved);
      expect(sha).toBe(config.classifierSha256);
      expect(shas.get(sha), `trial ${trial}: ${sha} is a recorded checksum`).toBe(config.weights);
      if (config.weights === 'A') stats.loadedA++;
      else stats.loadedB++;

      // The public classifier.pt (what Python loads) is always a whole archive of one of the two sets.
      const publicSha = await sha256File(join(dir, CLASSIFIER_FILE));
      expect(shas.has(publicSha), `trial ${trial}: classifier.pt is a recorded archive`).toBe(true);
      const archive = binding.ScriptModule.load(join(dir, CLASSIFIER_FILE));
      expect([reference.A, reference.B]).toContainEqual(outProj(archive));
      archive.dispose();
    }
    console.log(
      `crash-safety (checkpoint): ${stats.trials} kills, ${stats.killedMidSave} left a save's temporary files behind, ` +
        `${stats.resolvedToPending} between config.json's commit and classifier.pt's rename; loaded A ${stats.loadedA}, B ${stats.loadedB}; ` +
        `delays ${Math.min(...stats.delays).toFixed(1)}..${Math.max(...stats.delays).toFixed(1)} ms`,
    );
    // The kills did land inside saves, and the loaded checkpoint was sometimes the newer one.
    expect(stats.killedMidSave).toBeGreaterThan(TRIALS / 2);
    expect(stats.loadedA).toBeGreaterThan(0);
    expect(stats.loadedB).toBeGreaterThan(0);

    // Python loads the surviving classifier.pt with nothing but torch.
    const out = await runPython('-c', [
      'import sys, torch; m = torch.jit.load(sys.argv[1]); print(sum(p.numel() for p in m.parameters()))',
      join(dir, CLASSIFIER_FILE),
    ]);
    expect(Number(out.trim())).toBeGreaterThan(0);

    // The next complete save cleans up: exactly the four public files remain.
    const last = spawnTs('test/helpers/checkpoint-writer.ts', ['checkpoint', dir, encoder, record, demoTokenizer], { env: { SAVES: '1' } });
    expect((await exited(last)).code).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['classifier.pt', 'config.json', 'history.json', 'tokenizer.json']);
    // 50 children, each a vite-node start (~1.5 s) and two saves: about 95 s alone on this project's
    // 2-core machine, 120 s and more beside other work. The limit guards against a hang.
  }, 300_000);

  it('a save killed between config.json and classifier.pt is completed by the next run writing there', async () => {
    const dir = join(work, 'rollforward');
    const record = join(work, 'rollforward.jsonl');
    // Two complete saves (A then B), then the state a kill between steps 2 and 3 leaves: config.json
    // (and the content-addressed archive) of B, classifier.pt still A.
    const writer = spawnTs('test/helpers/checkpoint-writer.ts', ['checkpoint', dir, encoder, record, demoTokenizer], {
      env: { SAVES: '2' },
    });
    const onlyA = spawnTs('test/helpers/checkpoint-writer.ts', ['checkpoint', `${dir}-A`, encoder, record, demoTokenizer], {
      env: { SAVES: '1' },
    });
    expect((await exited(writer)).code).toBe(0);
    expect((await exited(onlyA)).code).toBe(0);
    const config = JSON.parse(readFileSync(join(dir, CONFIG_FILE), 'utf8')) as { classifierSha256: string; weights: string };
    expect(config.weights).toBe('B');
    const shaB = config.classifierSha256;
    const pending = join(dir, addressedClassifierName(shaB));
    copyFileSync(join(dir, CLASSIFIER_FILE), pending);
    copyFileSync(join(`${dir}-A`, CLASSIFIER_FILE), join(dir, CLASSIFIER_FILE));
    expect(recordedShas(record).get(await sha256File(join(dir, CLASSIFIER_FILE)))).toBe('A');
    // Loading resolves B through the content-addressed archive...
    const c = await loadClassifier(dir);
    expect(outProj(c.module)).toEqual(reference.B);
    c.dispose();
    // ...and a run that writes into the directory finishes the save.
    await ensureWritableDir(dir);
    expect(await sha256File(join(dir, CLASSIFIER_FILE))).toBe(shaB);
    expect(existsSync(pending)).toBe(false);
    expect(readdirSync(dir).sort()).toEqual(['classifier.pt', 'config.json', 'history.json', 'tokenizer.json']);
  });

  it('a save killed after publishing classifier.pt, before removing its content-addressed name, is finished without leftovers', async () => {
    const dir = join(work, 'published');
    const record = join(work, 'published.jsonl');
    const writer = spawnTs('test/helpers/checkpoint-writer.ts', ['checkpoint', dir, encoder, record, demoTokenizer], {
      env: { SAVES: '1' },
    });
    expect((await exited(writer)).code).toBe(0);
    const sha = (JSON.parse(readFileSync(join(dir, CONFIG_FILE), 'utf8')) as { classifierSha256: string }).classifierSha256;
    // Step 3 (publish: a hard link) done, step 4 (remove the addressed name) not: both names are
    // one file. Publishing again links a temporary name to it, and rename(2) between two links
    // of one file does nothing: the temporary name used to stay behind, this process's own.
    const addressed = join(dir, addressedClassifierName(sha));
    linkSync(join(dir, CLASSIFIER_FILE), addressed);
    await ensureWritableDir(dir);
    expect(readdirSync(dir).sort()).toEqual(['classifier.pt', 'config.json', 'history.json', 'tokenizer.json']);
    expect(await sha256File(join(dir, CLASSIFIER_FILE))).toBe(sha);
  });

  it('a reader loading while another process saves always gets a matching config and archive', async () => {
    const dir = join(work, 'live');
    const record = join(work, 'live-record.jsonl');
    const first = spawnTs('test/helpers/checkpoint-writer.ts', ['checkpoint', dir, encoder, record, demoTokenizer], {
      env: { SAVES: '1' },
    });
    expect((await exited(first)).code).toBe(0);
    // Four saves whose every file operation takes 15 ms more, while this process loads in a loop.
    const child = spawnTs('test/helpers/checkpoint-writer.ts', ['checkpoint', dir, encoder, record, demoTokenizer], {
      env: { SAVES: '4', SLOW_FS_MS: '15' },
    });
    let done = false;
    const exit = exited(child).then((e) => {
      done = true;
      return e;
    });
    const seen = { A: 0, B: 0 };
    const failures: string[] = [];
    while (!done) {
      try {
        const c = await loadClassifier(dir);
        const which = (c.config as unknown as { weights: 'A' | 'B' }).weights;
        const weights = outProj(c.module);
        c.dispose();
        if (JSON.stringify(weights) !== JSON.stringify(reference[which]))
          failures.push(`config.json says ${which}, the archive holds the other set`);
        else seen[which]++;
      } catch (err) {
        failures.push((err as Error).message);
      }
    }
    expect((await exit).code).toBe(0);
    console.log(`crash-safety (checkpoint): ${seen.A + seen.B} loads during 4 slowed saves (A ${seen.A}, B ${seen.B})`);
    expect(failures).toEqual([]);
    expect(seen.A).toBeGreaterThan(0);
    expect(seen.B).toBeGreaterThan(0);
  });
});

/**
 * Checkpoints of a classifier saved into `dir` with one more archive, `file`, holding the values
 * [x, x + 1] (`save(x)`); `values` reads such an archive back, `committed` config.json's checksums.
 */
async function archiveSaves(dir: string, file: string) {
  await ensureWritableDir(dir);
  const enc = binding.ScriptModule.load(encoder);
  const { module } = binding.buildClassifier(enc, { numClasses: 2, headHidden: 8, dropout: 0, pooling: 'cls', seed: 1 });
  const tensor = (x: number) => binding.Tensor.fromArray(new Float32Array([x, x + 1]), [2]);
  return {
    save: (x: number) =>
      writeCheckpoint(dir, module, {
        config: { head: x },
        tokenizerJson: '{}',
        history: [],
        archives: [{ file, write: (p) => binding.saveTensors(p, { w: tensor(x) }) }],
      }),
    values: (path: string) => Array.from(binding.loadTensors(path).w!.toArray() as Float32Array),
    committed: () => archiveChecksums(JSON.parse(readFileSync(join(dir, CONFIG_FILE), 'utf8')) as object),
    dispose: () => {
      module.dispose();
      enc.dispose();
    },
  };
}

describe("archives saved with the classifier (a LoRA run's adapters.pt and head.pt)", () => {
  it('are committed by config.json: a save killed before their renames resolves to, and is completed with, the committed ones', async () => {
    const dir = join(work, 'archives');
    const { save, values: headValues, committed, dispose } = await archiveSaves(dir, 'head.pt');

    await save(1);
    const sha1 = committed().get('head.pt')!;
    expect(await sha256File(join(dir, 'head.pt'))).toBe(sha1);
    expect(readdirSync(dir).sort()).toEqual(['classifier.pt', 'config.json', 'head.pt', 'history.json', 'tokenizer.json']);
    const head1 = readFileSync(join(dir, 'head.pt'));

    await save(5);
    const sha5 = committed().get('head.pt')!;
    expect(sha5).not.toBe(sha1);
    // The state a kill after the commit and before head.pt's rename leaves: config.json names
    // the new head, head.pt is still the old one, the new one waits under its addressed name.
    const pending = join(dir, addressedName('head.pt', sha5));
    copyFileSync(join(dir, 'head.pt'), pending);
    writeFileSync(join(dir, 'head.pt'), head1);
    const resolved = await resolveArchive(dir, 'head.pt', sha5);
    expect(resolved.path).toBe(pending);
    expect(headValues(resolved.path)).toEqual([5, 6]);
    await ensureWritableDir(dir);
    expect(headValues(join(dir, 'head.pt'))).toEqual([5, 6]);
    expect(existsSync(pending)).toBe(false);

    // Without the addressed file, a head.pt from another save is refused, not loaded.
    writeFileSync(join(dir, 'head.pt'), head1);
    await expect(resolveArchive(dir, 'head.pt', sha5)).rejects.toThrow(/does not match .*config\.json \(checksum differs\)/);
    dispose();
  });
});

describe("archives in a subfolder (a LoRA token classifier's adapter/adapter_model.safetensors, PEFT's)", () => {
  it("are committed, completed after a kill and cleaned of stale files as the folder's own are", async () => {
    const dir = join(work, 'subfolder');
    const file = 'adapter/head.pt';
    const { save, values: headValues, committed, dispose } = await archiveSaves(dir, file);

    await save(1);
    expect(await sha256File(join(dir, file))).toBe(committed().get(file));
    expect(readdirSync(join(dir, 'adapter'))).toEqual(['head.pt']);
    const head1 = readFileSync(join(dir, file));
    await save(5);
    const sha5 = committed().get(file)!;
    // A kill after the commit, before the subfolder's rename: the new archive waits under its addressed name there.
    const pending = join(dir, addressedName(file, sha5));
    expect(pending).toBe(join(dir, 'adapter', `head-${sha5.slice(0, 16)}.pt`));
    copyFileSync(join(dir, file), pending);
    writeFileSync(join(dir, file), head1);
    expect((await resolveArchive(dir, file, sha5)).path).toBe(pending);
    await ensureWritableDir(dir);
    expect(headValues(join(dir, file))).toEqual([5, 6]);
    expect(existsSync(pending)).toBe(false);

    // A dead writer's temporary file and an addressed archive config.json does not name, in the subfolder: removed.
    const gone = 'head.pt.tmp-999999.1-gone';
    const orphan = 'head-0123456789abcdef.pt';
    for (const name of [gone, orphan]) writeFileSync(join(dir, 'adapter', name), 'x');
    expect((await removeStaleFiles(dir)).sort()).toEqual([`adapter/${gone}`, `adapter/${orphan}`].sort());
    expect(readdirSync(join(dir, 'adapter'))).toEqual(['head.pt']);
    dispose();
  });
});

describe('stale temporary files', () => {
  it("are told apart by writer identity (pid and start time), so a reused pid does not keep a dead writer's files", async () => {
    const dir = join(work, 'stale');
    await ensureWritableDir(dir);
    const id = writerId();
    expect(id).toMatch(new RegExp(`^${process.pid}\\.\\d+$`));
    const [pid, start] = id.split('.');
    const live = `classifier.pt.tmp-${id}-live`; // this process: kept
    const reused = `classifier.pt.tmp-${pid}.${Number(start) + 1}-reused`; // same pid, another start: a dead writer
    const gone = `classifier.pt.tmp-999999.1-gone`; // no such process
    for (const name of [live, reused, gone]) writeFileSync(join(dir, name), 'x');
    const removed = await removeStaleFiles(dir);
    expect(removed.sort()).toEqual([gone, reused].sort());
    expect(readdirSync(dir)).toEqual([live]);
  });

  it("scratch checkpoint folders (runs without outDir): a killed run's are removed by the next, nobody else's", async () => {
    const base = join(work, 'tmp');
    await ensureWritableDir(base);
    const [pid, start] = writerId().split('.');
    const ours = `torch-bert-best-${hostname()}-`;
    const live = `${ours}${writerId()}-aB3dE9`; // this process: kept
    const reused = `${ours}${pid}.${Number(start) + 1}-x1Y2z3`; // same pid, another start: a killed run
    const gone = `${ours}999999.1-q9W8e7`; // no such process
    const otherHost = `torch-bert-best-${hostname()}x-999999.1-q9W8e7`; // another machine sharing the folder
    const unrelated = `${ours}999999.1-q9W8e7.json`; // not a scratch folder's name
    for (const name of [live, reused, gone, otherHost, unrelated]) {
      await ensureWritableDir(join(base, name));
      writeFileSync(join(base, name, CLASSIFIER_FILE), 'x');
    }
    const before = process.env.TMPDIR;
    process.env.TMPDIR = base;
    try {
      const made = await scratchCheckpointDir();
      expect(made).toMatch(new RegExp(`^${base}/torch-bert-best-${hostname().replaceAll('.', '\\.')}-${writerId()}-[0-9A-Za-z]{6}$`));
      expect(readdirSync(base).sort()).toEqual([live, otherHost, unrelated, made.slice(base.length + 1)].sort());
      expect(readdirSync(made)).toEqual([]);
    } finally {
      if (before === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = before;
    }
  });
});
