/**
 * What the user named as an encoder (`train({ encoder })`, `--model`, `Classifier.loadAdapters`'s
 * `encoder`) → a loaded encoder checked against the tokenizer and max length it will be given.
 *
 *   - a `.pt` file: TorchScript, loaded as it is (model-checks.ts `loadCheckedEncoder`);
 *   - a Hugging Face model folder, or a Hub id resolved into one (hub.ts `resolveModelSource`):
 *     config.json (hf-config.ts) and the weights (hf-checkpoint.ts) → `binding.buildEncoder`, a
 *     TorchScript module with transformers' names, so every path that takes a traced encoder
 *     (buildClassifier, LoRA, pruning, the feature cache, classifier.pt) takes it unchanged.
 *
 * A folder also supplies what a TorchScript file cannot: its tokenizer (so none need be named),
 * the default max length (tokenizer_config.json's model_max_length within the position table),
 * the family's LoRA targets, and a description of the source recorded in the classifier's
 * config.json (the Hub commit included).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { NativeScriptModule, NativeTensor } from '../addon/binding.js';
import { InputError, ModelError, messageOf } from '../addon/errors.js';
import { loadBinding } from '../addon/loader.js';
import { TextTokenizer } from '../data/tokenizer.js';
import { sha256File } from '../files/checkpoint.js';
import type { ModelFolderRead } from '../files/output-folder.js';
import { readCheckpoint } from './hf-checkpoint.js';
import { defaultMaxLength, type EncoderFamily, type HfEncoderConfig, parseHfConfig } from './hf-config.js';
import { type DownloadProgress, type ModelSource, resolveModelSource } from './hub.js';
import { initialMlmHeadWeights } from './mlm-head-init.js';
import { checkModelInputs, loadCheckedEncoder, tokenTypesFed } from './model-checks.js';
import { TOKENIZER_CONFIG_FILE, VOCAB_COMPANIONS, VOCAB_TXT } from './model-folder.js';
import { loadFolderTokenizer } from './wordpiece-vocab.js';

/** Where an encoder came from, as the classifier's config.json records it. */
export type EncoderSourceInfo =
  | { kind: 'torchscript'; file: string }
  | {
      kind: 'folder';
      dir: string;
      modelType: string;
      family: EncoderFamily;
      /** The weight files, relative to `dir` (an index first, then its shards). */
      weights: string[];
      /** Set for a Hub id: the repository, the revision asked for and the commit it resolved to. */
      repoId?: string;
      revision?: string;
      commit?: string;
      /**
       * The folder's config.json as trained on. Kept because the weights cannot tell the export the
       * attention heads, the activation or LayerNorm's epsilon, and the folder may be gone by then
       * (the classifier moved to another machine, a Hub snapshot pruned).
       */
      config?: Record<string, unknown>;
    };

export interface LoadedEncoder {
  module: NativeScriptModule;
  source: EncoderSourceInfo;
  /** The file, folder or Hub id (with its commit), for messages. */
  description: string;
  tokenizer: TextTokenizer;
  /**
   * The masked-language-model head (forward(hidden_states) -> logits [B, T, vocab], decoder tied
   * to the encoder's word embeddings), when asked for (`mlmHead: true`) and the folder's
   * checkpoint has one; null otherwise (a TorchScript file carries none). The caller disposes it.
   */
  mlmHead: NativeScriptModule | null;
  /**
   * A ForSequenceClassification or ForTokenClassification checkpoint's head tensors (`classifier.*`, `pre_classifier.*`,
   * float32), when asked for (`classificationHead: true`); empty otherwise. The caller disposes them.
   */
  classificationHead: Array<[string, NativeTensor]>;
  /** The tokenizer's file: the one given, or the folder's tokenizer.json / vocab.txt. */
  tokenizerFile: string;
  maxLength: number;
  /** Default LoRA targets of the folder's family (undefined for a TorchScript file: the general default applies). */
  loraTargets?: string[];
  /** Said once to the user: heads left out of the checkpoint, reduced-precision weights widened. */
  notes: string[];
  /**
   * What pins the encoder's weights, for the feature cache's key, the comparison of data-parallel
   * ranks and a resumed run's: a file's SHA-256, a folder's config and weight files' SHA-256s, or
   * a Hub commit and its file list. Computed once, at the first call (hashing reads every weight).
   */
  weightsKey(): Promise<string>;
}

export interface EncoderLoadOptions {
  device: string;
  /** A tokenizer.json path (or a loaded tokenizer); default the folder's own. */
  tokenizer?: string | TextTokenizer;
  /** The max length the run uses; default the folder's (see the top), else `fallbackMaxLength`. */
  maxLength?: number;
  /** The default for a TorchScript file, which says nothing about lengths. */
  fallbackMaxLength: number;
  /** Where a given max length comes from, for messages. Default `maxLength / --max-length`. */
  maxLengthFrom?: string;
  /** Keep the checkpoint's MLM head (pretraining, prompting); by default it is not built. */
  mlmHead?: boolean;
  /** Keep a ForSequenceClassification checkpoint's head tensors (loading it as a classifier); by default they are left out with a note. */
  classificationHead?: boolean;
  /**
   * With `mlmHead`: a folder whose checkpoint has no MLM head gets one initialised as
   * transformers does (mlm-head-init.ts), drawn from this seed; without it, `mlmHead` is null.
   */
  initialiseMlmHead?: { seed: number };
  /**
   * The error for a TorchScript file, where the caller cannot use one (pretraining, prompting):
   * thrown before the file's tokenizer or max length is asked for, which would send the user to
   * fix those first.
   */
  refuseTorchScript?: (file: string) => Error;
  signal?: AbortSignal;
  onDownload?: (progress: DownloadProgress) => void;
}

/** Loads `spec` (a .pt file, a model folder or a Hub id) and checks it (see the top). */
export async function loadEncoderSource(spec: string, options: EncoderLoadOptions): Promise<LoadedEncoder> {
  const source = await resolveModelSource(spec, {
    tokenizer: options.tokenizer === undefined,
    signal: options.signal,
    onProgress: options.onDownload,
  });
  if (source.kind === 'torchscript' && options.refuseTorchScript) throw options.refuseTorchScript(source.file);
  return source.kind === 'torchscript' ? loadTorchScript(source.file, options) : loadFolder(source, options);
}

type FolderSource = Extract<ModelSource, { kind: 'folder' }>;

/** Where a max length given as an option comes from, for messages. */
const givenMaxLengthFrom = (options: EncoderLoadOptions): string => options.maxLengthFrom ?? 'maxLength / --max-length';

/** A tokenizer.json, or a vocab.txt read as its folder's (with the companions beside it), or one already loaded. */
async function loadTokenizer(tokenizer: string | TextTokenizer): Promise<TextTokenizer> {
  if (typeof tokenizer !== 'string') return tokenizer;
  if (basename(tokenizer) !== VOCAB_TXT) return TextTokenizer.load(tokenizer);
  const dir = dirname(tokenizer);
  return loadFolderTokenizer(dir, [VOCAB_TXT, ...VOCAB_COMPANIONS.filter((f) => existsSync(join(dir, f)))]);
}

/** A TorchScript file: its tokenizer must be named, its max length is the option's or the fallback. */
async function loadTorchScript(file: string, options: EncoderLoadOptions): Promise<LoadedEncoder> {
  if (options.tokenizer === undefined) {
    throw new InputError(
      `encoder ${file} is a TorchScript file, which carries no tokenizer: name its tokenizer.json (tokenizer / --tokenizer)`,
    );
  }
  const tokenizer = await loadTokenizer(options.tokenizer);
  const maxLength = options.maxLength ?? options.fallbackMaxLength;
  const module = await loadCheckedEncoder(file, options.device, { tokenizer, maxLength, maxLengthFrom: givenMaxLengthFrom(options) });
  return {
    module,
    source: { kind: 'torchscript', file },
    description: file,
    tokenizer,
    tokenizerFile: tokenizer.path,
    mlmHead: null,
    classificationHead: [],
    maxLength,
    notes: [],
    weightsKey: once(() => sha256File(file)),
  };
}

/** A model folder (or a Hub snapshot): its own tokenizer unless one is named, the encoder built natively from config.json. */
async function loadFolder(source: FolderSource, options: EncoderLoadOptions): Promise<LoadedEncoder> {
  const { dir, files } = source;
  const description = source.repoId ? `${source.repoId}@${source.commit} (${dir})` : dir;
  const configFile = join(dir, files.config);
  const rawConfig = await readJson(configFile, true);
  const config = parseHfConfig(rawConfig, configFile);
  const tokenizer = await folderTokenizer(source, description, options.tokenizer);
  const { maxLength, from } = await folderMaxLength(source, config, description, options);

  const initialRange = (rawConfig as { initializer_range?: unknown }).initializer_range;
  const initialise =
    options.mlmHead === true && options.initialiseMlmHead
      ? { seed: options.initialiseMlmHead.seed, initializerRange: typeof initialRange === 'number' ? initialRange : 0.02 }
      : undefined;
  const module = await buildFromFolder(dir, files, config, options.device, {
    mlmHead: options.mlmHead === true,
    classificationHead: options.classificationHead === true,
    initialise,
  });
  try {
    await checkModelInputs(module.encoder, {
      kind: 'encoder',
      modelFile: description,
      tokenizer,
      maxLength,
      maxLengthFrom: from,
      tokenTypes: tokenTypesFed(module.encoder.forwardArity),
    });
  } catch (err) {
    module.encoder.dispose();
    module.mlmHead?.dispose();
    for (const [, t] of module.classificationHead) t.dispose();
    throw err;
  }
  return {
    module: module.encoder,
    source: {
      kind: 'folder',
      dir,
      modelType: config.modelType,
      family: config.native.family,
      weights: files.weights,
      ...(source.repoId ? { repoId: source.repoId, revision: source.revision, commit: source.commit } : {}),
      // parseHfConfig above refused anything but an object.
      config: rawConfig as Record<string, unknown>,
    },
    description,
    tokenizer,
    tokenizerFile: tokenizer.path,
    mlmHead: module.mlmHead,
    classificationHead: module.classificationHead,
    maxLength,
    loraTargets: config.loraTargets,
    notes: module.notes,
    weightsKey: once(() => folderWeightsKey(source)),
  };
}

/** The tokenizer named, else the folder's own (tokenizer.json, or vocab.txt for older BERT repos). */
async function folderTokenizer(
  source: FolderSource,
  description: string,
  named: string | TextTokenizer | undefined,
): Promise<TextTokenizer> {
  if (named !== undefined) return loadTokenizer(named);
  if (!source.files.tokenizer) {
    throw new InputError(`model ${description} has no tokenizer (tokenizer.json, or vocab.txt): name one (tokenizer / --tokenizer)`, {
      file: source.dir,
    });
  }
  return loadFolderTokenizer(source.dir, source.files.tokenizer);
}

/** The max length asked for, else the folder's default; either within its position table. Also says where it came from, for messages. */
async function folderMaxLength(
  source: FolderSource,
  config: HfEncoderConfig,
  description: string,
  options: EncoderLoadOptions,
): Promise<{ maxLength: number; from: string }> {
  const chosen =
    options.maxLength === undefined
      ? {
          maxLength: defaultMaxLength(config, await readJson(join(source.dir, TOKENIZER_CONFIG_FILE), false)),
          from: `the default of ${description}: tokenizer_config.json's model_max_length within max_position_embeddings`,
        }
      : { maxLength: options.maxLength, from: givenMaxLengthFrom(options) };
  checkPositionLimit(config, chosen.maxLength, chosen.from, description);
  return chosen;
}

/** The feature cache's key of a folder's weights: a Hub commit pins every file; a local folder's files are hashed. */
async function folderWeightsKey(source: FolderSource): Promise<string> {
  const { dir, files } = source;
  const hash = createHash('sha256');
  if (source.repoId && source.commit) {
    hash.update(`hub\0${source.repoId}\0${source.commit}\0${[files.config, ...files.weights].join('\0')}`);
  } else {
    for (const file of [files.config, ...files.weights]) hash.update(`${file}\0${await sha256File(join(dir, file))}\0`);
  }
  return hash.digest('hex');
}

/**
 * RoBERTa's position ids start after its padding_idx, which nothing in the built module's
 * parameter names tells model-checks.ts: the limit is checked here from config.json.
 */
function checkPositionLimit(config: HfEncoderConfig, maxLength: number, from: string, description: string): void {
  if (maxLength <= config.positionLimit) return;
  const offset = config.native.family === 'roberta' ? `, less ${config.native.padTokenId + 1} for RoBERTa's position offset` : '';
  throw new InputError(
    `max length ${maxLength} (${from}) is longer than ${description} can read: max_position_embeddings is ${config.native.maxPositions}${offset}, ` +
      `so a text can have at most ${config.positionLimit} tokens. Use a max length of at most ${config.positionLimit}.`,
    { code: 'MAX_LENGTH_EXCEEDS_POSITIONS' },
  );
}

/** `compute`'s promise, made at the first call and returned at every one. */
function once<T>(compute: () => Promise<T>): () => Promise<T> {
  let made: Promise<T> | undefined;
  return () => (made ??= compute());
}

/** A JSON file's value; a missing or unreadable one is undefined unless `required`; not JSON is a ModelError naming it. */
export async function readJson(file: string, required: boolean): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (!required) return undefined;
    throw new ModelError(`cannot read ${file}: ${messageOf(err)}`, { file, cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ModelError(`${file} is not valid JSON: ${messageOf(err)}`, { file, cause: err });
  }
}

/** config + weights → the TorchScript encoder, and its MLM head when `keepMlmHead` and the checkpoint has one. */
async function buildFromFolder(
  dir: string,
  files: Parameters<typeof readCheckpoint>[2],
  config: HfEncoderConfig,
  device: string,
  keep: { mlmHead: boolean; classificationHead: boolean; initialise?: { seed: number; initializerRange: number } },
): Promise<{
  encoder: NativeScriptModule;
  mlmHead: NativeScriptModule | null;
  classificationHead: Array<[string, NativeTensor]>;
  notes: string[];
}> {
  const binding = loadBinding();
  const { mlmHead: keepMlmHead, initialise } = keep;
  const checkpoint = await readCheckpoint(binding, dir, files, config.native.family, keep.classificationHead);
  const { classificationHead } = checkpoint;
  const notes: string[] = [];
  if (keepMlmHead && initialise && !checkpoint.mlmHead) {
    const { hiddenSize, vocabSize } = config.native;
    checkpoint.weights.push(
      ...initialMlmHeadWeights(
        binding,
        config.native.family,
        { hiddenSize, vocabSize, initializerRange: initialise.initializerRange },
        initialise.seed,
      ),
    );
    checkpoint.mlmHead = true;
    notes.push(
      `the checkpoint has no MLM head; one was initialised as transformers does (normal(0, ${initialise.initializerRange}) weights, zero biases, decoder tied to the word embeddings)`,
    );
  }
  if (checkpoint.ignored.length > 0) {
    notes.push(`the checkpoint's other heads are not part of the encoder and were left out: ${checkpoint.ignored.join(', ')}`);
  }
  const reduced = Object.entries(checkpoint.reduced);
  if (reduced.length > 0) {
    notes.push(
      `the checkpoint holds ${reduced.map(([dtype, n]) => `${n} ${dtype} tensors`).join(' and ')}; they were widened to float32 (training keeps float32 weights)`,
    );
  }
  try {
    const built = binding.buildEncoder(
      { ...config.native, pooler: checkpoint.pooler, mlmHead: checkpoint.mlmHead },
      checkpoint.weights,
      device,
    );
    // Built whenever the checkpoint has one (its tensors must go somewhere), kept when asked for.
    if (keepMlmHead) return { encoder: built.encoder, mlmHead: built.mlmHead, classificationHead, notes };
    built.mlmHead?.dispose();
    return { encoder: built.encoder, mlmHead: null, classificationHead, notes };
  } catch (err) {
    for (const [, t] of classificationHead) t.dispose();
    throw new ModelError(`cannot build the encoder of ${dir}: ${messageOf(err)}`, { file: dir, code: 'CHECKPOINT_MISMATCH', cause: err });
  } finally {
    for (const [, tensor] of checkpoint.weights) tensor.dispose();
  }
}

/** The folder `loaded` was read from (a local folder or a Hub snapshot), for checkOutputFolder; null for a TorchScript file. */
export function modelFolderRead(loaded: LoadedEncoder): ModelFolderRead | null {
  return loaded.source.kind === 'folder' ? { dir: loaded.source.dir, description: loaded.description } : null;
}
