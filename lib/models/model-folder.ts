/**
 * Which files make a Hugging Face model folder, and whether a folder has them.
 *
 * One choice (`selectModelFiles`) serves three sources: a local folder, a Hub repository's file
 * list (to download only what is needed) and a snapshot in the Hugging Face cache (to use it
 * without a request). The sources differ only in what they know about a file: a folder or a
 * file list knows whether it exists; the cache may not know (Python's `huggingface_hub` writes
 * a `.no_exist` marker for files it found missing, but only for those it asked about).
 */
import { open, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ModelError } from '../addon/errors.js';
import { addressedName, archiveChecksums } from '../files/checkpoint.js';
import { folderKind } from '../files/output-folder.js';

export const CONFIG_FILE = 'config.json';
/** The weights file transformers' save_pretrained writes (and what torch-bert's writers name theirs). */
export const MODEL_FILE = 'model.safetensors';
/** transformers refuses a safetensors file whose metadata lacks a known format ('pt': torch tensors). */
export const SAFETENSORS_METADATA = { format: 'pt' };
/** Weight files in the order they are preferred: safetensors before pickles, one file before shards. */
export const WEIGHT_CANDIDATES = [
  'model.safetensors',
  'model.safetensors.index.json',
  'pytorch_model.bin',
  'pytorch_model.bin.index.json',
] as const;
/** A fast tokenizer; older BERT repos have only the WordPiece vocabulary. */
export const TOKENIZER_JSON = 'tokenizer.json';
export const VOCAB_TXT = 'vocab.txt';
/** The tokenizer's settings (casing, model_max_length, the tokenizer class). */
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';
export const SPECIAL_TOKENS_MAP_FILE = 'special_tokens_map.json';
/** Read alongside `vocab.txt` when the repository has them (casing, special tokens). */
export const VOCAB_COMPANIONS = [TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE] as const;

export type WeightFormat = 'safetensors' | 'pytorch';

/** The files of a model folder, as paths relative to it. */
export interface ModelFolderFiles {
  config: string;
  format: WeightFormat;
  /** One weight file, or the index followed by its shards. */
  weights: string[];
  /** `['tokenizer.json']`, or `['vocab.txt', ...companions present]`; undefined when the folder has no tokenizer. */
  tokenizer?: string[];
}

/** What a source knows about one file. */
export type FileState = 'present' | 'absent' | 'unknown';

export interface FileSource {
  state(path: string): FileState | Promise<FileState>;
  /** The text of a file whose state is 'present' (an index, to learn its shards). */
  readText(path: string): Promise<string>;
  /** The file as a message names it: a path on disk, or the repository's file. */
  where(path: string): string;
}

export type Selection =
  | { ok: true; files: ModelFolderFiles /** Candidates found absent on the way (the cache records them). */; absent: string[] }
  | { ok: false /** The file that decides, or a description of the alternatives. */; missing: string; state: 'absent' | 'unknown' };

const WEIGHTS_DESCRIPTION = `weights (${WEIGHT_CANDIDATES.join(', ')})`;

/**
 * Chooses the files a model needs from what `source` knows. An 'unknown' file stops the choice
 * (the caller asks someone who knows), unless `unknownAsAbsent` (offline: the cache is all there is).
 */
export async function selectModelFiles(source: FileSource, options: { tokenizer: boolean; unknownAsAbsent: boolean }): Promise<Selection> {
  const absent: string[] = [];
  const check = async (path: string): Promise<FileState> => {
    let s = await source.state(path);
    if (s === 'unknown' && options.unknownAsAbsent) s = 'absent';
    if (s === 'absent') absent.push(path);
    return s;
  };
  const missing = (path: string, state: FileState): Selection => ({
    ok: false,
    missing: path,
    state: state === 'unknown' ? 'unknown' : 'absent',
  });

  const configState = await check(CONFIG_FILE);
  if (configState !== 'present') return missing(CONFIG_FILE, configState);

  let weights: string[] | undefined;
  for (const candidate of WEIGHT_CANDIDATES) {
    const s = await check(candidate);
    if (s === 'unknown') return missing(candidate, s);
    if (s === 'absent') continue;
    if (!candidate.endsWith('.index.json')) {
      weights = [candidate];
      break;
    }
    const shards = shardsOfIndex(await source.readText(candidate), source.where(candidate));
    for (const shard of shards) {
      const shardState = await check(shard);
      if (shardState !== 'present') return missing(shard, shardState);
    }
    weights = [candidate, ...shards];
    break;
  }
  if (!weights) return { ok: false, missing: WEIGHTS_DESCRIPTION, state: 'absent' };
  const format: WeightFormat = weights[0]!.startsWith(MODEL_FILE) ? 'safetensors' : 'pytorch';

  let tokenizer: string[] | undefined;
  if (options.tokenizer) {
    const json = await check(TOKENIZER_JSON);
    if (json === 'unknown') return missing(TOKENIZER_JSON, json);
    if (json === 'present') tokenizer = [TOKENIZER_JSON];
    else {
      const vocab = await check(VOCAB_TXT);
      if (vocab === 'unknown') return missing(VOCAB_TXT, vocab);
      if (vocab === 'present') {
        tokenizer = [VOCAB_TXT];
        for (const companion of VOCAB_COMPANIONS) {
          const s = await check(companion);
          if (s === 'unknown') return missing(companion, s);
          if (s === 'present') tokenizer.push(companion);
        }
      }
    }
  }
  return { ok: true, files: { config: CONFIG_FILE, format, weights, tokenizer }, absent };
}

/** Every file a selection names. */
export function filesOf(files: ModelFolderFiles): string[] {
  return [files.config, ...files.weights, ...(files.tokenizer ?? [])];
}

/**
 * A relative path that stays inside the folder it is joined to: no absolute path, no `..` or `.`
 * component, no empty component, no backslash (a separator on Windows), no NUL. Paths come from
 * repositories (index files, file lists) and revision names, and are joined onto cache folders.
 */
export function isContainedRelativePath(path: string): boolean {
  if (path === '' || path.startsWith('/') || path.includes('\\') || path.includes('\0') || /^[A-Za-z]:/.test(path)) return false;
  return path.split('/').every((part) => part !== '' && part !== '.' && part !== '..');
}

/** The shard file names of a `*.index.json` (`weight_map` values), each checked to stay inside the folder. */
function shardsOfIndex(text: string, indexFile: string): string[] {
  let map: unknown;
  try {
    map = (JSON.parse(text) as { weight_map?: unknown }).weight_map;
  } catch (err) {
    throw new ModelError(`${indexFile} is not valid JSON`, { file: indexFile, cause: err });
  }
  if (typeof map !== 'object' || map === null) throw new ModelError(`${indexFile} has no weight_map`, { file: indexFile });
  const shards = [...new Set(Object.values(map as Record<string, unknown>))];
  if (shards.length === 0) throw new ModelError(`${indexFile} lists no shards`, { file: indexFile });
  for (const shard of shards) {
    if (typeof shard !== 'string' || !isContainedRelativePath(shard)) {
      throw new ModelError(`${indexFile} names a shard outside its folder: ${JSON.stringify(shard)}`, { file: indexFile });
    }
  }
  return (shards as string[]).sort();
}

/** Zip archives (torch.save since 1.6, TorchScript) start with a local file header. */
const ZIP_MAGIC = Buffer.from([0x50, 0x4b, 0x03, 0x04]);

/**
 * Refuses a `.bin` in torch's legacy pickle format: only the zip format can be read without a
 * Python unpickler (the native side reads the zip's tensor records).
 */
async function checkZipPickle(file: string): Promise<void> {
  const head = Buffer.alloc(4);
  const handle = await open(file, 'r');
  try {
    await handle.read(head, 0, 4, 0);
  } finally {
    await handle.close();
  }
  if (!head.equals(ZIP_MAGIC)) {
    throw new ModelError(
      `${file} is in torch's legacy (pre-1.6, non-zip) pickle format, which cannot be read; re-save it with torch >= 1.6 ` +
        `(torch.save(torch.load(path), path)) or convert it to safetensors (model.save_pretrained(dir, safe_serialization=True))`,
      { file },
    );
  }
}

async function fileState(path: string): Promise<FileState> {
  try {
    return (await stat(path)).isFile() ? 'present' : 'absent';
  } catch {
    return 'absent';
  }
}

/**
 * The files of a local model folder (a cache snapshot included), checked: config.json, a
 * complete set of weights, pickled weights in the zip format. Throws ModelError naming what is
 * missing or unreadable.
 */
export async function inspectModelFolder(dir: string): Promise<ModelFolderFiles> {
  const folder = resolve(dir);
  const selection = await selectModelFiles(
    { state: (p) => fileState(join(folder, p)), readText: (p) => readFile(join(folder, p), 'utf8'), where: (p) => join(folder, p) },
    { tokenizer: true, unknownAsAbsent: true },
  );
  if (!selection.ok) {
    // Locally nothing is unknown, so what is missing is config.json, every weight file (listed
    // already) or a shard an index names; say which, the list once.
    const why =
      selection.missing === CONFIG_FILE
        ? ` (it needs ${CONFIG_FILE} and ${WEIGHTS_DESCRIPTION})`
        : selection.missing === WEIGHTS_DESCRIPTION
          ? ''
          : ', a shard its weights index lists';
    throw new ModelError(
      `${folder} is not a Hugging Face model folder: it has no ${selection.missing}${why}${await classifierHint(folder)}`,
      {
        file: folder,
      },
    );
  }
  if (selection.files.format === 'pytorch') {
    for (const file of selection.files.weights) if (file.endsWith('.bin')) await checkZipPickle(join(folder, file));
  }
  return { ...selection.files, weights: await committedWeights(folder, selection.files.weights) };
}

/**
 * The weights config.json commits. A folder written by pretraining (mlm-output.ts) records its
 * model.safetensors' SHA-256; a save killed after that commit and before its last rename left the
 * committed file under its content-addressed name (checkpoint.ts commitFolder), and that one is
 * read. A stat, no hashing: the content-addressed file exists only whole, and only until published.
 */
async function committedWeights(folder: string, weights: string[]): Promise<string[]> {
  if (weights.length !== 1 || weights[0] !== MODEL_FILE) return weights;
  let config: object;
  try {
    config = JSON.parse(await readFile(join(folder, CONFIG_FILE), 'utf8')) as object;
  } catch {
    return weights; // Read again, with its own message, where config.json is parsed.
  }
  const sha = archiveChecksums(config).get(MODEL_FILE);
  if (!sha) return weights;
  const addressed = addressedName(MODEL_FILE, sha);
  return (await fileState(join(folder, addressed))) === 'present' ? [addressed] : weights;
}

/** A torch-bert classifier given as a model: where its encoder came from, the model meant. */
async function classifierHint(folder: string): Promise<string> {
  if ((await folderKind(folder)) !== 'classifier') return '';
  const config = JSON.parse(await readFile(join(folder, CONFIG_FILE), 'utf8')) as { encoder?: { file?: unknown } };
  const base = typeof config.encoder?.file === 'string' ? ` (${config.encoder.file})` : '';
  return `; it is a torch-bert classifier: give the model it was trained from${base}, or load it with loadClassifier / --classifier`;
}
