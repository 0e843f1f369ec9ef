/**
 * An output folder a run would damage is refused before anything is written (lib/files/output-folder.ts):
 * the model folder the run reads, and a folder holding another kind of model. The demo encoder is
 * copied first: the runs here must never write under assets/. And the other way round: a folder
 * given as a classifier that is not one says what it holds.
 */
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { InputError, ModelError } from '../lib/addon/errors.js';
import { RUN_LOCK_FILE } from '../lib/files/output-folder.js';
import { loadClassifier, type ProgressEvent, train } from '../lib/index.js';
import { pretrain } from '../lib/pretraining/pretrainer.js';
import { demoPretrain, demoReviews, demoTokenizer, repoRoot } from './fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'torch-bert-output-folder-'));
const demoEncoder = join(repoRoot, 'assets', 'demo', 'encoder');

/** Every file of `dir` and its subfolders with its SHA-256, to show a refused run changed nothing. */
function contents(dir: string): Record<string, string> {
  const files = readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => statSync(join(dir, f)).isFile())
    .sort();
  return Object.fromEntries(
    files.map((f) => [
      f,
      createHash('sha256')
        .update(readFileSync(join(dir, f)))
        .digest('hex'),
    ]),
  );
}

/** A copy of the demo encoder with its tokenizer, as a user's model folder. */
function modelFolder(name: string): string {
  const dir = join(work, name);
  cpSync(demoEncoder, dir, { recursive: true });
  cpSync(demoTokenizer, join(dir, 'tokenizer.json'));
  return dir;
}

const classify = (encoder: string, outDir: string) => train({ data: demoReviews, encoder, outDir, epochs: 1, maxLength: 32 });

/** The first 200 texts of the demo's pretraining corpus in `file`, one a line, for pretrain(). */
function writeTexts(file: string): string {
  const lines = readFileSync(demoPretrain, 'utf8').split('\n').slice(1, 201);
  writeFileSync(file, lines.map((l) => l.replace(/,(positive|negative)$/, '')).join('\n') + '\n');
  return file;
}

describe('a folder of the wrong kind', () => {
  const texts = join(work, 'texts.txt');
  let model: string;
  let pretrained: string;
  beforeAll(async () => {
    model = modelFolder('model');
    writeTexts(texts);
    pretrained = join(work, 'pretrained');
    await pretrain({ model, data: texts, outDir: pretrained, epochs: 1, maxLength: 32, batchSize: 16 });
  });

  it('train refuses the model folder it reads, and leaves it as it was', async () => {
    const before = contents(model);
    const run = classify(model, model);
    await expect(run).rejects.toBeInstanceOf(InputError);
    await expect(run).rejects.toThrow(/^output directory .*model is the model folder the run reads .*: choose another outDir \/ --out$/);
    expect(contents(model)).toEqual(before);
  });

  it('train refuses another Hugging Face model folder and a pretrained folder', async () => {
    const other = modelFolder('other-model');
    const before = contents(other);
    await expect(classify(model, other)).rejects.toThrow(
      /^output directory .*other-model holds a Hugging Face model \(model_type bert\), whose config\.json this run would overwrite: choose a new or empty outDir \/ --out$/,
    );
    expect(contents(other)).toEqual(before);
    // Refused before the model is loaded (minutes for a download or a large model): a model that is not there is never looked for.
    await expect(classify(join(work, 'no-such-model'), other)).rejects.toThrow(
      /^output directory .*other-model holds a Hugging Face model/,
    );
    const pretrainedBefore = contents(pretrained);
    await expect(classify(model, pretrained)).rejects.toThrow(/holds a torch-bert pretrained \(masked-LM\) model, whose config\.json/);
    expect(contents(pretrained)).toEqual(pretrainedBefore);
  });

  it('pretrain refuses its own model folder and a classifier folder', async () => {
    const before = contents(pretrained);
    await expect(pretrain({ model: pretrained, data: texts, outDir: pretrained, epochs: 1, maxLength: 32 })).rejects.toThrow(
      /^output directory .*pretrained is the model folder the run reads/,
    );
    expect(contents(pretrained)).toEqual(before);

    const classifierDir = join(work, 'classifier');
    (await classify(model, classifierDir)).classifier.dispose();
    const classifierBefore = contents(classifierDir);
    await expect(pretrain({ model, data: texts, outDir: classifierDir, epochs: 1, maxLength: 32 })).rejects.toThrow(
      /holds a torch-bert classifier, whose config\.json this run would overwrite/,
    );
    expect(contents(classifierDir)).toEqual(classifierBefore);
    await expect(
      pretrain({ model: join(work, 'no-such-model'), data: texts, outDir: classifierDir, epochs: 1, maxLength: 32 }),
    ).rejects.toThrow(/holds a torch-bert classifier, whose config\.json this run would overwrite/);
  });

  it('loading a model folder or a pretrained folder as a classifier says what the folder holds', async () => {
    // Before: '<dir>/config.json is not a torch-bert classifier config', with no hint of what it is or what to give.
    const give = '; give a folder that torch-bert train wrote (its outDir / --out), or a Hugging Face sequence classifier';
    await expect(loadClassifier(model)).rejects.toThrow(
      `${model}/config.json is not a torch-bert classifier config: ${model} holds a Hugging Face model (model_type bert)${give}`,
    );
    await expect(loadClassifier(pretrained)).rejects.toThrow(
      `${pretrained}/config.json is not a torch-bert classifier config: ${pretrained} holds a torch-bert pretrained (masked-LM) model${give}`,
    );
  });

  it('loading a run stopped before its first evaluation says to resume it', async () => {
    // Before: 'cannot read classifier config <dir>/config.json: ENOENT: no such file or directory ...'.
    const stopped = join(work, 'stopped');
    const controller = new AbortController();
    const run = train({
      data: demoReviews,
      encoder: model,
      outDir: stopped,
      epochs: 1,
      maxLength: 32,
      signal: controller.signal,
      onProgress: (e) => {
        if (e.type === 'batch' && e.batch === 2) controller.abort();
      },
    });
    await expect(run).rejects.toThrow(/^training aborted at epoch 1, batch 3\/20/);
    expect(readdirSync(stopped)).toEqual(['training-state']);
    const load = loadClassifier(stopped);
    await expect(load).rejects.toBeInstanceOf(InputError);
    await expect(load).rejects.toThrow(
      `${stopped} holds no classifier yet, only the state of a training run stopped before its first evaluation: finish the run (resumeFrom / torch-bert train ... --resume ${stopped})`,
    );
  });

  it('a classifier folder given as the model says so and names the model it was trained from', async () => {
    // Before: '<dir> is not a Hugging Face model folder: it has no weights (model.safetensors, ...)'.
    const classifierDir = join(work, 'classifier-as-model');
    (await classify(model, classifierDir)).classifier.dispose();
    const run = classify(classifierDir, join(work, 'from-classifier'));
    await expect(run).rejects.toBeInstanceOf(ModelError);
    await expect(run).rejects.toThrow(
      `${classifierDir} is not a Hugging Face model folder: it has no weights (model.safetensors, model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json); it is a torch-bert classifier: give the model it was trained from (${model}), or load it with loadClassifier / --classifier`,
    );
  });

  it('an earlier output of the same kind, or a folder of unrelated files, is written to', async () => {
    const dir = join(work, 'rerun');
    (await classify(model, dir)).classifier.dispose();
    writeFileSync(join(dir, 'notes.txt'), 'mine\n');
    const again = await train({ data: demoReviews, encoder: model, outDir: dir, epochs: 2, maxLength: 32 });
    again.classifier.dispose();
    expect(JSON.parse(readFileSync(join(dir, 'history.json'), 'utf8'))).toHaveLength(2);
    expect(readFileSync(join(dir, 'notes.txt'), 'utf8')).toBe('mine\n');
    expect(existsSync(join(dir, 'classifier.pt'))).toBe(true);
  });
});

describe("an unfinished run's folder", () => {
  let model: string;
  let texts: string;
  beforeAll(() => {
    model = modelFolder('unfinished-model');
    texts = writeTexts(join(work, 'unfinished-texts.txt'));
  });

  /** What a fresh run over `dir`, whose state resumes at epoch 1 batch 2 (aborted after batch 1), is refused with. */
  const refusal = (dir: string, stateDirs = [join(dir, 'training-state')]) => {
    const { savedAt } = JSON.parse(readFileSync(join(stateDirs[0]!, 'state.json'), 'utf8'));
    return (
      `output directory ${dir} holds the training state of an unfinished run (it resumes at epoch 1, batch 2, after 1 optimizer step; saved ${savedAt}), ` +
      `which a new run would overwrite: resume it with the same options and resumeFrom: '${dir}' (CLI: the same command with --resume ${dir}), ` +
      `or, to start over, delete ${stateDirs.join(' and ')} or choose another outDir / --out`
    );
  };
  /** `run` started with `signal`, aborted after its first batch: an unfinished run's folder. */
  const abortedAfterFirstBatch = async (run: (signal: AbortSignal, onProgress: (e: ProgressEvent) => void) => Promise<unknown>) => {
    const controller = new AbortController();
    await expect(run(controller.signal, (e) => e.type === 'batch' && e.batch === 1 && controller.abort())).rejects.toThrow(
      /aborted at epoch 1, batch 2\//,
    );
  };

  it('train refuses to start over it, leaving its state as it was; resumed, the finished folder is written to again', async () => {
    // Before: the fresh run's first save (RunKeeper.begin) replaced the state at once, and the training it held was lost.
    const dir = join(work, 'unfinished');
    const options = { data: demoReviews, encoder: model, outDir: dir, epochs: 2, maxLength: 32 };
    await abortedAfterFirstBatch((signal, onProgress) => train({ ...options, signal, onProgress }));
    const before = contents(dir);
    expect(Object.keys(before)).toContain(join('training-state', 'state.json'));
    const fresh = train({ ...options, epochs: 1 });
    await expect(fresh).rejects.toBeInstanceOf(InputError);
    await expect(fresh).rejects.toThrow(refusal(dir));
    // Refused before the model is loaded (minutes for a download or a large model): a model that is not there is never looked for.
    await expect(train({ ...options, encoder: join(work, 'no-such-model') })).rejects.toThrow(refusal(dir));
    expect(contents(dir)).toEqual(before);
    // The state refused over is the one the run resumes from, to its end.
    const resumed = await train({ ...options, resumeFrom: dir });
    resumed.classifier.dispose();
    expect(resumed.history.map((h) => h.epoch)).toEqual([1, 2]);
    expect(readdirSync(dir).filter((n) => n.startsWith('training-state'))).toEqual([]);
    // A finished run's folder (no state left) takes a fresh run, as an earlier classifier folder.
    const again = await train({ ...options, epochs: 1 });
    again.classifier.dispose();
    expect(JSON.parse(readFileSync(join(dir, 'history.json'), 'utf8'))).toHaveLength(1);
  });

  it('names the state left as training-state.old by a save killed mid-swap, which a resume would read', async () => {
    const dir = join(work, 'unfinished-swap');
    await abortedAfterFirstBatch((signal, onProgress) =>
      train({ data: demoReviews, encoder: model, outDir: dir, epochs: 1, maxLength: 32, signal, onProgress }),
    );
    renameSync(join(dir, 'training-state'), join(dir, 'training-state.old'));
    const before = contents(dir);
    await expect(classify(model, dir)).rejects.toThrow(refusal(dir, [join(dir, 'training-state.old')]));
    expect(contents(dir)).toEqual(before);
  });

  it('a state.json that cannot be read is refused all the same, without where it resumes', async () => {
    const dir = join(work, 'unfinished-unreadable');
    await abortedAfterFirstBatch((signal, onProgress) =>
      train({ data: demoReviews, encoder: model, outDir: dir, epochs: 1, maxLength: 32, signal, onProgress }),
    );
    writeFileSync(join(dir, 'training-state', 'state.json'), '{"position": ');
    const before = contents(dir);
    await expect(classify(model, dir)).rejects.toThrow(
      `output directory ${dir} holds the training state of an unfinished run, which a new run would overwrite: ` +
        `resume it with the same options and resumeFrom: '${dir}' (CLI: the same command with --resume ${dir}), ` +
        `or, to start over, delete ${join(dir, 'training-state')} or choose another outDir / --out`,
    );
    expect(contents(dir)).toEqual(before);
  });

  it('a run still writing it is no unfinished run: the fresh run is told so, not to resume or delete its state', async () => {
    const dir = join(work, 'unfinished-live');
    await abortedAfterFirstBatch((signal, onProgress) =>
      train({ data: demoReviews, encoder: model, outDir: dir, epochs: 1, maxLength: 32, signal, onProgress }),
    );
    // A run in another process, still running (this test's parent), holds the folder and its state.
    writeFileSync(join(dir, RUN_LOCK_FILE), String(process.ppid));
    const before = contents(dir);
    await expect(classify(model, dir)).rejects.toThrow(
      `output directory ${dir} is being written by another run (process ${process.ppid}, still running): ` +
        'wait for it to end or stop it, or choose another outDir / --out',
    );
    expect(contents(dir)).toEqual(before);
  });

  it('pretrain refuses to start over it, leaving its state as it was, and resumes from it', async () => {
    const dir = join(work, 'unfinished-pretrained');
    const options = { model, data: texts, outDir: dir, epochs: 1, maxLength: 32, batchSize: 16 };
    await abortedAfterFirstBatch((signal, onProgress) => pretrain({ ...options, signal, onProgress }));
    const before = contents(dir);
    const fresh = pretrain(options);
    await expect(fresh).rejects.toBeInstanceOf(InputError);
    await expect(fresh).rejects.toThrow(refusal(dir));
    await expect(pretrain({ ...options, model: join(work, 'no-such-model') })).rejects.toThrow(refusal(dir));
    expect(contents(dir)).toEqual(before);
    const resumed = await pretrain({ ...options, resumeFrom: dir });
    expect(resumed.history.map((h) => h.epoch)).toEqual([1]);
    expect(existsSync(join(dir, 'training-state'))).toBe(false);
  });
});
