/**
 * The resumable training state: everything an interrupted run needs to continue and end with
 * the same weights as an uninterrupted one — the trainable tensors, the optimizer's moments,
 * libtorch's RNG state (dropout masks), and where in the schedule the run stood. Batches are a
 * pure function of (seed, epoch), so "where" is just (epoch, batch index, optimizer step).
 *
 * Layout: `<outDir>/training-state/` with `state.json`, `tensors.pt` (a dict Python's
 * `torch.load` reads), `optimizer.pt` and `rng.bin` (rank 0's; a data-parallel run's other
 * ranks' in `rng-rank<R>.bin`: their dropout masks differ, and so does how far each rank's
 * generator has run, since the masks' sizes follow each rank's batches). It is written as a new directory and then
 * swapped in with renames, so a crash mid-save leaves the previous state (or `.old`) intact
 * (see `saveTrainingState`).
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NativeAdamW, NativeBinding, NativeTensor } from '../addon/binding.js';
import { InputError, messageOf } from '../addon/errors.js';
import { ensureWritableDir } from '../files/checkpoint.js';
import {
  checkOutputFolder,
  claimOutputFolder,
  folderKind,
  kindInWords,
  liveWriter,
  type ModelFolderRead,
  type OutputKind,
} from '../files/output-folder.js';
import { WRITER_ID_PATTERN, writerId, writerIsAlive } from '../files/writer-identity.js';
import { localModelFolder } from '../models/hub.js';
import type { Distributed } from './distributed.js';
import { type EpochMetrics, type Evaluation, settingDifferences } from './options.js';

export const STATE_DIR = 'training-state';

/** Where the run stands, and what it has seen so far. */
export interface RunPosition {
  /** Epoch to continue in (1-based). */
  epoch: number;
  /** Index of the next batch within that epoch. */
  batch: number;
  /** Optimizer steps done. */
  optimizerSteps: number;
  history: EpochMetrics[];
  evaluations: Evaluation[];
  /** Best value of the best metric so far (lower is better for loss, higher otherwise). */
  bestValue: number | null;
  evaluationsWithoutImprovement: number;
  /** Training loss/correct/seen accumulated in the current epoch before the interruption. */
  epochLossSum: number;
  epochCorrect: number;
  epochSeen: number;
  /**
   * Batches skipped for a NaN/Inf loss or gradient so far, so that a resumed run reports them
   * too. Absent in states written before it was recorded: resumePosition reads that as none.
   */
  skippedBatches: SkippedBatch[];
}

/** A training batch whose loss or gradient was not finite, skipped with `onNonFinite: 'skip'`. */
export interface SkippedBatch {
  epoch: number;
  /** 1-based batch within the epoch. */
  batch: number;
  reason: string;
}

export interface SavedState {
  formatVersion: 1;
  /** Settings that must be equal for a resume to mean anything. */
  fingerprint: Record<string, unknown>;
  /** As written: states from before skippedBatches was recorded lack it. */
  position: Omit<RunPosition, 'skippedBatches'> & { skippedBatches?: SkippedBatch[] };
  savedAt: string;
}

/** Remove a directory so that it never looks complete while half-deleted: its marker goes first. */
async function removeStateDir(path: string): Promise<void> {
  await rm(join(path, 'state.json'), { force: true });
  await rm(path, { recursive: true, force: true });
}

/**
 * The state of a run that has ended well is of no further use (it is the last epoch's start: a
 * resume would train that epoch again; any other run is refused by its fingerprint), and it
 * weighs three times the trained weights (the tensors and AdamW's two moments): removed, `.old`
 * first. Rank 0 alone, as it alone saves it.
 */
export async function removeTrainingState(outDir: string): Promise<void> {
  await removeStateDir(join(outDir, `${STATE_DIR}.old`));
  await removeStateDir(join(outDir, STATE_DIR));
}

/** What a save writes: the run's fingerprint and position, the trained tensors, AdamW's moments, the RNG states. */
export interface StateToSave {
  fingerprint: Record<string, unknown>;
  position: RunPosition;
  tensors: Array<[string, NativeTensor]>;
  optimizer: NativeAdamW;
  /** Every rank's RNG state (base64), in rank order, in a data-parallel run. */
  rankRngs?: string[];
}

/**
 * Write the state as a new directory, then swap it in. At every moment of a crash, `<outDir>/
 * training-state` or (only while it is absent) `training-state.old` is a complete state:
 *   a. remove temporary directories of saves whose process died;
 *   b. write `training-state.tmp-<pid>.<start time>` (writer-identity.ts), state.json last (a
 *      write that fails, e.g. on a full disk, removes it);
 *   c. if a previous swap died with only `.old` left, rename it back first (never delete the
 *      only complete state);
 *   d. remove `.old`, rename the current state to `.old`, the new one into place, remove `.old`.
 */
export async function saveTrainingState(binding: NativeBinding, outDir: string, state: StateToSave): Promise<void> {
  const final = join(outDir, STATE_DIR);
  const fresh = `${final}.tmp-${writerId()}`;
  const old = `${final}.old`;
  const prefix = `${STATE_DIR}.tmp-`;
  const writer = new RegExp(`^${WRITER_ID_PATTERN}$`);
  for (const name of await readdir(outDir).catch(() => [] as string[])) {
    const id = name.startsWith(prefix) ? writer.exec(name.slice(prefix.length)) : null;
    if (id && !writerIsAlive(Number(id[1]), id[2])) await removeStateDir(join(outDir, name));
  }
  await removeStateDir(fresh);
  try {
    await writeStateDir(binding, fresh, state);
  } catch (err) {
    // A save that failed (a full disk) leaves no half state taking the space the next one needs.
    await removeStateDir(fresh).catch(() => undefined);
    throw err;
  }
  if (!existsSync(join(final, 'state.json')) && existsSync(join(old, 'state.json'))) {
    await removeStateDir(final);
    await rename(old, final);
  }
  await removeStateDir(old);
  if (existsSync(final)) await rename(final, old);
  await rename(fresh, final);
  await removeStateDir(old);
}

/** Step b of saveTrainingState: the state as a new directory `dir`, state.json last. */
async function writeStateDir(binding: NativeBinding, dir: string, state: StateToSave): Promise<void> {
  await mkdir(dir, { recursive: true });
  binding.saveTensors(join(dir, 'tensors.pt'), Object.fromEntries(state.tensors));
  state.optimizer.save(join(dir, 'optimizer.pt'));
  await writeFile(join(dir, 'rng.bin'), binding.getRngState());
  for (const [rank, rng] of (state.rankRngs ?? []).entries()) {
    if (rank > 0) await writeFile(join(dir, rankRngFile(rank)), Buffer.from(rng, 'base64'));
  }
  const saved: SavedState = {
    formatVersion: 1,
    fingerprint: state.fingerprint,
    position: state.position,
    savedAt: new Date().toISOString(),
  };
  // state.json last: its presence marks a complete state directory.
  await writeFile(join(dir, 'state.json'), JSON.stringify(saved, null, 2) + '\n');
}

/** The complete state directories in `dir`: the current one, then `.old` (left by an interrupted swap). */
function completeStateDirectories(dir: string): string[] {
  return [join(dir, STATE_DIR), join(dir, `${STATE_DIR}.old`)].filter((candidate) => existsSync(join(candidate, 'state.json')));
}

/** Find a complete state directory in `dir` (the current one, or `.old` if a swap was interrupted). */
async function stateDirectory(dir: string): Promise<string> {
  const [found] = completeStateDirectories(dir);
  if (found !== undefined) return found;
  // A run saves its state before its first step and removes it when it ends well: a folder
  // holding a run's output and no state is a finished run's (resuming it would train no further).
  const kind = await folderKind(dir);
  const why =
    kind === 'classifier' || kind === 'mlm'
      ? `the run that wrote it has finished (${kindInWords(kind)}): there is nothing to resume`
      : 'a run saves one before its first step, so a run stopped earlier has nothing to resume: start it again without resumeFrom / --resume';
  throw new InputError(`${dir} holds no resumable training state (looked for ${join(dir, STATE_DIR, 'state.json')}): ${why}`, {
    file: dir,
  });
}

/**
 * The output folder made the run's once its model is loaded (checkOutputFolderFirst ran before):
 * checked again with the model's folder, claimed (the returned release frees it), an unfinished
 * run's state refused to a fresh run, interrupted saves completed. Every trainer's one sequence.
 */
export async function claimRunFolder(
  outDir: string,
  kind: OutputKind,
  resumeFrom: string | undefined,
  modelFolder: ModelFolderRead | null,
): Promise<() => Promise<void>> {
  await checkOutputFolder(outDir, kind, resumeFrom, modelFolder);
  const release = await claimOutputFolder(outDir);
  try {
    if (resumeFrom === undefined) await checkNoUnfinishedRun(outDir);
    await ensureWritableDir(outDir);
    return release;
  } catch (err) {
    await release();
    throw err;
  }
}

/**
 * Refuses a fresh run (one without resumeFrom) an output folder that holds an unfinished run's
 * state — interrupted, killed or failed: the fresh run's first save (RunKeeper.begin) would replace
 * it, and with it all the training it holds, for one forgotten resumeFrom / --resume. A run that
 * ended well removed its state (removeTrainingState), so its folder passes, as one without any.
 * Called under the folder's claim (output-folder.ts claimOutputFolder): the state of a run still
 * writing the folder is that run's, and the claim refuses the fresh run, saying so.
 */
export async function checkNoUnfinishedRun(outDir: string): Promise<void> {
  const found = completeStateDirectories(outDir);
  if (found.length === 0) return;
  throw new InputError(
    `output directory ${outDir} holds the training state of an unfinished run${await whereItResumes(found[0]!)}, ` +
      `which a new run would overwrite: resume it with the same options and resumeFrom: '${outDir}' ` +
      `(CLI: the same command with --resume ${outDir}), or, to start over, delete ${found.join(' and ')} ` +
      'or choose another outDir / --out',
    { file: outDir },
  );
}

/**
 * The output folder checked before a run loads anything (the model, a download, the data:
 * minutes), so that a refusal comes at once, and on a data-parallel run as a set-up error every
 * rank reports (distributed.ts startAsRank): checkOutputFolder, with the model's folder where the
 * model is named by a local folder, then checkNoUnfinishedRun for a fresh run. A folder a live run
 * writes is left to the claim's refusal ("being written by another run"), and the checks under
 * the claim stay the ones that hold.
 */
export async function checkOutputFolderFirst(
  outDir: string | undefined,
  kind: OutputKind,
  model: string,
  resumeFrom: string | undefined,
): Promise<void> {
  if (outDir === undefined) return;
  const modelDir = await localModelFolder(model);
  await checkOutputFolder(outDir, kind, resumeFrom, modelDir === null ? null : { dir: modelDir, description: modelDir });
  if (resumeFrom !== undefined || (await liveWriter(outDir)) !== undefined) return;
  await checkNoUnfinishedRun(outDir);
}

/**
 * Where the state in `directory` resumes, in words (the batch 1-based, as an abort names it), or
 * nothing when its state.json cannot be read: the refusal stands without it.
 */
async function whereItResumes(directory: string): Promise<string> {
  let saved: Partial<SavedState>;
  try {
    saved = JSON.parse(await readFile(join(directory, 'state.json'), 'utf8'));
  } catch {
    return '';
  }
  const at = saved.position;
  if (!at || ![at.epoch, at.batch, at.optimizerSteps].every(Number.isInteger)) return '';
  const steps = `${at.optimizerSteps} optimizer step${at.optimizerSteps === 1 ? '' : 's'}`;
  const when = typeof saved.savedAt === 'string' ? `; saved ${saved.savedAt}` : '';
  return ` (it resumes at epoch ${at.epoch}, batch ${at.batch + 1}, after ${steps}${when})`;
}

/**
 * Read the complete state in `dir`. Finding the directory and reading its state.json are two
 * steps: a save running meanwhile may rename the directory found in between (step c or d of
 * saveTrainingState), so a state.json gone by the time it is read sends the reader back to
 * finding the directory, a bounded number of times (each swap leaves a complete one behind).
 */
export async function readTrainingState(dir: string): Promise<SavedState & { directory: string }> {
  for (let attempt = 1; ; attempt++) {
    const directory = await stateDirectory(dir);
    try {
      const saved = JSON.parse(await readFile(join(directory, 'state.json'), 'utf8')) as SavedState;
      if (saved.formatVersion !== 1) throw new Error(`unknown format version ${saved.formatVersion}`);
      return { ...saved, directory };
    } catch (err) {
      // Only a missing file is a rename landing between the two steps; a bad state.json is final.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && attempt < 5) continue;
      throw new InputError(`cannot read training state in ${directory}: ${messageOf(err)}`, { file: directory, cause: err });
    }
  }
}

/**
 * A fingerprint's `contents`: what the run's paths name, by content — the training and validation
 * data as read, the tokenizer, the model's weights (a run's RunIdentity digests, as data-parallel
 * ranks compare them) — so that a resumed run refuses another file under the same name or the
 * same number of rows. The state resumed is not its own content.
 */
export function runContents(digests: Record<string, string>): Record<string, string> {
  const { 'training state': _state, ...contents } = digests;
  return contents;
}

/**
 * Check the resumed run is the same run, naming every setting that differs. A fingerprint's
 * `options` (the run's options as given, distributed.ts sharedSettings) are compared one by one,
 * by name and by what they do (options.ts settingDifferences: `encoderLearningRate` given at
 * `learningRate` is the run that left it out), and its `contents` (runContents) by what they are;
 * a state written before they were recorded has neither, and is compared on the rest.
 */
export function checkFingerprint(saved: Record<string, unknown>, current: Record<string, unknown>, dir: string): void {
  const withOptions = saved.options !== undefined;
  const flat = ({ options, contents, ...rest }: Record<string, unknown>) => (withOptions ? { ...(options as object), ...rest } : rest);
  const [before, now] = [flat(saved), flat(current)];
  const differences = settingDifferences(before, now).map((d) => `${d.name}: saved ${d.a}, now ${d.b}`);
  // What the paths name, by content (runContents), where the saved state recorded it: said by name, not by digest.
  const [had, has] = [saved.contents, current.contents] as Array<Record<string, string> | undefined>;
  if (had && has) {
    for (const what of Object.keys({ ...had, ...has })) if (had[what] !== has[what]) differences.push(`the ${what} differs`);
  }
  if (differences.length > 0) {
    throw new InputError(`cannot resume from ${dir}: the run's settings differ (${differences.join('; ')})`, { file: dir });
  }
}

/**
 * How a run cuts its epochs, from a fingerprint: `batchSize` rows per rank and batch,
 * `gradientAccumulationSteps` batches per optimizer step, `worldSize` ranks (absent: one).
 */
interface BatchLayout {
  batchSize: number;
  gradientAccumulationSteps: number;
  worldSize: number;
}

const LAYOUT_KEYS = ['batchSize', 'gradientAccumulationSteps', 'worldSize'] as const;

function layoutOf(fingerprint: Record<string, unknown>): BatchLayout {
  return {
    batchSize: Number(fingerprint.batchSize),
    gradientAccumulationSteps: Number(fingerprint.gradientAccumulationSteps ?? 1),
    worldSize: Number(fingerprint.worldSize ?? 1),
  };
}

function describeLayout(l: BatchLayout): string {
  return `${l.worldSize} rank${l.worldSize === 1 ? '' : 's'} × batch ${l.batchSize} × accumulation ${l.gradientAccumulationSteps} = ${globalBatch(l)}`;
}

function globalBatch(l: BatchLayout): number {
  return l.batchSize * l.worldSize * l.gradientAccumulationSteps;
}

/** Optimizer steps per epoch of `rows` training rows (each rank's share padded as DistributedSampler's). */
function stepsPerEpoch(l: BatchLayout, rows: number): number {
  return Math.ceil(Math.ceil(Math.ceil(rows / l.worldSize) / l.batchSize) / l.gradientAccumulationSteps);
}

/**
 * Check a resumed run is the same run (checkFingerprint) and return where it continues. The
 * batch layout may change — another world size, batch size or accumulation, e.g. 2 ranks × 4
 * resumed as 1 process × 8 — when the global batch (batch size × world size × accumulation
 * steps) and the optimizer steps per epoch stay the same: the k-th optimizer step of an epoch
 * then takes the same rows of the epoch's permutation whatever the layout (the ranks' k-th
 * batches are consecutive rows of it, distributed.ts rankShare), so only the batch index within
 * the epoch is translated (optimizer steps done × the new accumulation). Any other change is
 * refused with a message naming both layouts. The fingerprint's layout keys are `batchSize`,
 * `gradientAccumulationSteps` and `worldSize` (absent: 1).
 */
export function resumePosition(saved: SavedState, current: Record<string, unknown>, dir: string, trainRows: number): RunPosition {
  const dropLayout = (f: object): Record<string, unknown> =>
    Object.fromEntries(Object.entries(f).filter(([k]) => !(LAYOUT_KEYS as readonly string[]).includes(k)));
  // The options hold the layout too (batchSize, gradientAccumulationSteps).
  const withoutLayout = ({ options, ...f }: Record<string, unknown>) =>
    options === undefined ? dropLayout(f) : { ...dropLayout(f), options: dropLayout(options as object) };
  checkFingerprint(withoutLayout(saved.fingerprint), withoutLayout(current), dir);
  const before = layoutOf(saved.fingerprint);
  const now = layoutOf(current);
  const position: RunPosition = { ...saved.position, skippedBatches: saved.position.skippedBatches ?? [] };
  if (LAYOUT_KEYS.every((k) => before[k] === now[k])) return position;
  const changed = LAYOUT_KEYS.filter((k) => before[k] !== now[k]).map((k) => `${k}: saved ${before[k]}, now ${now[k]}`);
  const refuse = (why: string) =>
    new InputError(
      `cannot resume from ${dir}: the run's settings differ (${changed.join('; ')}): ` +
        `${why} (saved ${describeLayout(before)}, now ${describeLayout(now)}); ` +
        'a run may resume with another world size, batch size or accumulation only with the same global batch ' +
        '(batch size × world size × gradient accumulation steps) and the same optimizer steps per epoch',
      { file: dir },
    );
  if (globalBatch(before) !== globalBatch(now)) throw refuse('the global batch differs');
  if (stepsPerEpoch(before, trainRows) !== stepsPerEpoch(now, trainRows)) throw refuse('the optimizer steps per epoch differ');
  // Saved between optimizer steps (training-loop.ts), so at a window's start.
  if (position.batch % before.gradientAccumulationSteps !== 0) throw refuse('the state was saved inside an accumulation window');
  return { ...position, batch: (position.batch / before.gradientAccumulationSteps) * now.gradientAccumulationSteps };
}

/**
 * The keeper's `saveState` hook: the state saved in `outDir` at each position it is given, or
 * nothing without an output folder (a run without outDir, a data-parallel rank other than 0).
 */
export function stateSaver(
  binding: NativeBinding,
  outDir: string | undefined,
  state: Pick<StateToSave, 'fingerprint' | 'tensors' | 'optimizer'>,
  dist: Pick<Distributed, 'allGather'> | null,
): (position: RunPosition) => Promise<void> {
  return async (position) => {
    // Every rank saves at the same positions (the keeper's, after the ranks agreed to stop), so
    // each can hand rank 0 its RNG state there.
    const rankRngs = dist?.allGather(Buffer.from(binding.getRngState()).toString('base64'));
    if (outDir) await saveTrainingState(binding, outDir, { ...state, position, rankRngs });
  };
}

/** The file of rank `rank`'s RNG state (rank > 0) in a training state directory; rank 0's is rng.bin. */
function rankRngFile(rank: number): string {
  return `rng-rank${rank}.bin`;
}

/** Put the saved tensors, optimizer moments and RNG state back into a freshly built run. */
export async function restoreTrainingState(
  binding: NativeBinding,
  directory: string,
  tensors: Array<[string, NativeTensor]>,
  optimizer: NativeAdamW,
  rank = 0,
): Promise<void> {
  const saved = binding.loadTensors(join(directory, 'tensors.pt'));
  // A state that trained other tensors than this run does (written before what trains was
  // decided by lib/training/trainable.ts, e.g. with the unused pooler in full fine-tuning) would otherwise
  // fail inside the optimizer's state loading with libtorch's message.
  const wanted = new Set(tensors.map(([name]) => name));
  const extra = Object.keys(saved).filter((name) => !wanted.has(name));
  if (extra.length > 0) {
    for (const value of Object.values(saved)) value.dispose();
    throw new InputError(
      `training state in ${directory} trained tensors this run does not (${extra.slice(0, 4).join(', ')}${extra.length > 4 ? ', ...' : ''}): ` +
        'it was written by an earlier torch-bert or with other freeze options; resume it with those, or start the run again',
      { file: directory },
    );
  }
  for (const [name, tensor] of tensors) {
    const value = saved[name];
    if (!value) throw new InputError(`training state in ${directory} lacks tensor ${name}`, { file: directory });
    tensor.copyFrom(value);
    value.dispose();
  }
  optimizer.load(join(directory, 'optimizer.pt'));
  // Each rank continues its own generator where one was saved for it (a state of as many ranks or more).
  const own = join(directory, rankRngFile(rank));
  const rng = rank > 0 && existsSync(own) ? own : join(directory, 'rng.bin');
  binding.setRngState(new Uint8Array(await readFile(rng)));
}
