/**
 * The one rule for a run's output folder before anything is written to it: a save replaces
 * config.json, the tokenizer and the weights by name, so the folder may hold nothing, an
 * interrupted run's state, or an earlier output of the same kind of run; never another model
 * (a Hugging Face folder, the other kind of torch-bert output) and never the model the run
 * reads, whose files the save would replace. An interrupted run's state is for the run that
 * resumes it: a fresh run is refused it once the folder is claimed (training-state.ts
 * checkNoUnfinishedRun), as its first save would replace that state.
 */
import { link, mkdir, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InputError, messageOf } from '../addon/errors.js';
import { CONFIG_FILE } from './checkpoint.js';
import { WRITER_ID_PATTERN, writerId, writerIsAlive } from './writer-identity.js';

/** Present while a run writes the folder: its writer's identity (writer-identity.ts). */
export const RUN_LOCK_FILE = '.torch-bert-run.lock';

/** What a torch-bert run writes: `train`'s classifier, `pretrain`'s masked-LM folder, `trainTokenClassifier`'s or `trainQuestionAnswering`'s folder. */
export type OutputKind = 'classifier' | 'mlm' | 'token-classifier' | 'question-answerer';

const KIND_NAMES: Record<OutputKind, string> = {
  classifier: 'a torch-bert classifier',
  mlm: 'a torch-bert pretrained (masked-LM) model',
  'token-classifier': 'a torch-bert token classifier',
  'question-answerer': 'a torch-bert question-answering model',
};

/** A folder's kind (`folderKind`) in words, for messages. */
export function kindInWords(kind: OutputKind | string): string {
  return kind in KIND_NAMES ? KIND_NAMES[kind as OutputKind] : kind;
}

/** The model folder a run reads (a model given as a folder or a Hub id's snapshot), in its words for messages. */
export interface ModelFolderRead {
  dir: string;
  description: string;
}

/**
 * Refuses an output folder the run would damage (see the top); an absent folder passes. A resumed
 * run writes the folder it resumes from: its checkpoint and state are there, and a run resumed
 * into another folder left that one without the weights kept before the interruption (only
 * history.json) and the first with a state no run would finish. The model folder is known once
 * the model is found; a run checks first without it, before loading anything (minutes for a
 * download or a large model), and again with it under the folder's claim.
 */
export async function checkOutputFolder(
  outDir: string,
  kind: OutputKind,
  resumeFrom: string | undefined,
  modelFolder?: ModelFolderRead | null,
): Promise<void> {
  if (resumeFrom !== undefined && !(await samePath(outDir, resumeFrom))) {
    throw new InputError(
      `output directory ${outDir} is not the folder the run resumes from (${resumeFrom}): a resumed run goes on writing its own ` +
        `folder, where its checkpoint is; leave outDir / --out out, or copy ${resumeFrom} to ${outDir} and resume from the copy`,
      { file: outDir },
    );
  }
  if (modelFolder && (await samePath(outDir, modelFolder.dir))) {
    throw new InputError(
      `output directory ${outDir} is the model folder the run reads (${modelFolder.description}); saving there would replace its files: choose another outDir / --out`,
      { file: outDir },
    );
  }
  const holds = await folderKind(outDir);
  if (holds !== null && holds !== kind) {
    throw new InputError(
      `output directory ${outDir} holds ${kindInWords(holds)}, whose config.json this run would overwrite: choose a new or empty outDir / --out`,
      { file: outDir },
    );
  }
}

/** The kind of output `dir/config.json` describes, a description of anything else, or null without one. */
export async function folderKind(dir: string): Promise<OutputKind | string | null> {
  let text: string;
  try {
    text = await readFile(join(dir, CONFIG_FILE), 'utf8');
  } catch {
    // No config.json (or no folder): nothing a save would overwrite by name but its own files.
    return null;
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch {
    return 'a config.json that is not JSON';
  }
  const json = (typeof config === 'object' && config !== null ? config : {}) as Record<string, unknown>;
  if (json.format === 'torch-bert-classifier') return 'classifier';
  const marker = json.torch_bert as { format?: unknown } | undefined;
  if (marker?.format === 'torch-bert-mlm') return 'mlm';
  if (marker?.format === 'torch-bert-token-classifier') return 'token-classifier';
  if (marker?.format === 'torch-bert-question-answerer') return 'question-answerer';
  return typeof json.model_type === 'string' ? `a Hugging Face model (model_type ${json.model_type})` : 'a config.json of another program';
}

async function samePath(a: string, b: string): Promise<boolean> {
  try {
    return (await realpath(a)) === (await realpath(b));
  } catch {
    // One of them does not exist (the output folder is new): not the same folder.
    return false;
  }
}

/** The pid of the run that writes `outDir` now (its RUN_LOCK_FILE's writer, still running), if one does. */
export async function liveWriter(outDir: string): Promise<string | undefined> {
  const owner = new RegExp(`^${WRITER_ID_PATTERN}$`).exec(await readFile(join(outDir, RUN_LOCK_FILE), 'utf8').catch(() => ''));
  return owner && writerIsAlive(Number(owner[1]), owner[2]) ? owner[1] : undefined;
}

/**
 * Claims `outDir` for this run until the returned release is called: two runs writing one folder
 * (a command started twice) would each finish the other's saves halfway (a copy of a checkpoint
 * the other had just removed: ENOENT) and leave weights, config and history of different runs.
 * A second run is refused while the first runs; the lock of a run that was killed (its writer no
 * longer runs) is taken over. Called before anything in the folder is touched (ensureWritableDir
 * completes interrupted saves).
 */
export async function claimOutputFolder(outDir: string): Promise<() => Promise<void>> {
  const lock = join(outDir, RUN_LOCK_FILE);
  // Written whole, then linked into place: a lock never exists without its writer's identity.
  const claim = `${lock}.tmp-${writerId()}`;
  try {
    await mkdir(outDir, { recursive: true });
    await writeFile(claim, writerId());
    // Twice: once more after removing a killed run's lock (link fails if another run took it first).
    for (let attempt = 1; ; attempt++) {
      try {
        await link(claim, lock);
        return () => rm(lock, { force: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const writer = await liveWriter(outDir);
      if (writer !== undefined) {
        throw new InputError(
          `output directory ${outDir} is being written by another run (process ${writer}, still running): ` +
            'wait for it to end or stop it, or choose another outDir / --out',
          { file: outDir },
        );
      }
      if (attempt === 2) throw new Error(`${lock} is held by a process that no longer runs and could not be removed`);
      await rm(lock, { force: true });
    }
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw new InputError(`output directory ${outDir} cannot be written: ${messageOf(err)}`, { file: outDir, cause: err });
  } finally {
    // Not over the error above (rm fails too where the folder could not be made).
    await rm(claim, { force: true }).catch(() => undefined);
  }
}
