/**
 * A Hugging Face model folder's weights, read and named as `binding.buildEncoder` takes them:
 * transformers' AutoModel state_dict names, plus the masked-LM head's.
 *
 * Real checkpoints come in several layouts, normalised here as `from_pretrained` does:
 *   - the body under the family's prefix (`bert.`, `roberta.`, `distilbert.`) in files saved
 *     from ForPreTraining / ForMaskedLM / ForSequenceClassification models: stripped;
 *   - TensorFlow-era LayerNorm names `gamma` / `beta` (bert-base-uncased's own files): `weight` / `bias`;
 *   - buffers (`embeddings.position_ids`, `embeddings.token_type_ids`): dropped;
 *   - the MLM head (`cls.predictions.*`, `lm_head.*`, `vocab_*`): kept, its decoder weight
 *     optional (BertForMaskedLM files omit it: it is tied to the word embeddings), the decoder's
 *     tied bias kept once under the head's own bias name;
 *   - the task head of ForSequenceClassification, ForTokenClassification and
 *     ForQuestionAnswering files (`classifier.*`, `pre_classifier.*`, `qa_outputs.*`): apart
 *     (`classificationHead`), for loading such a model for its task (hf-sequence-classifier.ts,
 *     tagging/token-classifier.ts, answering/question-answerer.ts) or starting a run's head from
 *     it; an encoder alone ignores it;
 *   - other heads (NSP's `cls.seq_relationship.*`): ignored, with a note listing them.
 * Weights are float32, float16 or bfloat16 (reduced ones are widened to float32 here: training
 * keeps float32 master weights); integer tensors other than the known buffers are refused.
 *
 * Sharded checkpoints (`*.index.json`): every shard is read once, every name of the index's
 * `weight_map` must be in the shard it names, and no name may come from two shards.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { NativeBinding, NativeTensor } from '../addon/binding.js';
import { ModelError, messageOf } from '../addon/errors.js';
import type { EncoderFamily } from './hf-config.js';
import { isContainedRelativePath, type ModelFolderFiles } from './model-folder.js';

/** What normalisation needs of a tensor (a NativeTensor, or a stand-in in tests). */
export interface TensorLike {
  readonly dtype: string;
  readonly shape: readonly number[];
}

/** One tensor as read, with the file it came from (named in errors). */
export interface ReadTensor<T extends TensorLike> {
  name: string;
  tensor: T;
  file: string;
}

export interface NormalisedCheckpoint<T extends TensorLike> {
  /** AutoModel names (+ the MLM head's), in file order. */
  weights: Array<[string, T]>;
  /** Whether `pooler.dense.weight` is present. */
  pooler: boolean;
  /** Whether the MLM head is present. */
  mlmHead: boolean;
  /** A task head's tensors (`classifier.*`, `pre_classifier.*`, `qa_outputs.*`: their own names; a sequence or a token classifier's, a question-answering model's), apart from `weights`. */
  classificationHead: Array<[string, T]>;
  /** Tensors of other heads, left out (original names). */
  ignored: string[];
  /** Buffers and duplicate tied tensors, left out (original names). */
  dropped: string[];
  /** Tensors stored in float16/bfloat16 (widened by `readCheckpoint`), by dtype. */
  reduced: Record<string, number>;
}

const PREFIX: Record<EncoderFamily, string> = { bert: 'bert.', roberta: 'roberta.', distilbert: 'distilbert.' };

/** The MLM head's names (after prefix stripping): its key tensor (decides `mlmHead`), its bias, its decoder's tied bias. */
const MLM_HEAD: Record<EncoderFamily, { prefixes: string[]; marker: string; bias: string; decoderBias: string }> = {
  bert: {
    prefixes: ['cls.predictions.'],
    marker: 'cls.predictions.transform.dense.weight',
    bias: 'cls.predictions.bias',
    decoderBias: 'cls.predictions.decoder.bias',
  },
  roberta: { prefixes: ['lm_head.'], marker: 'lm_head.dense.weight', bias: 'lm_head.bias', decoderBias: 'lm_head.decoder.bias' },
  distilbert: {
    prefixes: ['vocab_transform.', 'vocab_layer_norm.', 'vocab_projector.'],
    marker: 'vocab_transform.weight',
    bias: 'vocab_projector.bias',
    // DistilBERT's projector is one Linear: its bias is the head's bias, nothing is tied twice.
    decoderBias: '',
  },
};

/**
 * ForSequenceClassification's head (every family's: BERT's `classifier`, RoBERTa's
 * `classifier.dense`/`out_proj`, DistilBERT's `pre_classifier` and `classifier`),
 * ForTokenClassification's (`classifier`) and ForQuestionAnswering's (`qa_outputs`).
 */
const CLASSIFICATION_HEAD = ['classifier.', 'pre_classifier.', 'qa_outputs.'];

/** Heads other than the MLM and task heads: not part of an encoder. */
const OTHER_HEADS = ['cls.seq_relationship.'];

/** Buffers some checkpoints store (older transformers saved them). */
const BUFFERS = new Set(['embeddings.position_ids', 'embeddings.token_type_ids']);

const FLOAT = new Set(['float32', 'F32']);
const REDUCED = new Set(['float16', 'bfloat16', 'F16', 'BF16']);

/** `LayerNorm.gamma` / `.beta` (and any TensorFlow-era `gamma` / `beta` leaf) → `weight` / `bias`. */
function renameLeaf(name: string): string {
  if (name.endsWith('.gamma')) return `${name.slice(0, -'.gamma'.length)}.weight`;
  if (name.endsWith('.beta')) return `${name.slice(0, -'.beta'.length)}.bias`;
  return name;
}

/** A checkpoint's tensor name as `buildEncoder` takes it: without the family's prefix, with today's leaf names. */
function normalisedName(name: string, family: EncoderFamily): string {
  return renameLeaf(name.startsWith(PREFIX[family]) ? name.slice(PREFIX[family].length) : name);
}

/** Refuses a tensor that is not a float weight (the integer buffers are dropped before this check). */
function checkFloat<T extends TensorLike>({ name, tensor, file }: ReadTensor<T>): void {
  if (!FLOAT.has(tensor.dtype) && !REDUCED.has(tensor.dtype)) {
    throw new ModelError(
      `${file}: tensor ${name} is ${tensor.dtype}; an encoder's weights are float32, float16 or bfloat16 ` +
        `(the only integer tensors expected are the buffers ${[...BUFFERS].join(', ')})`,
      { file, code: 'CHECKPOINT_MISMATCH' },
    );
  }
}

/**
 * The checkpoint's tensors renamed to what `buildEncoder` takes (see the top). Throws ModelError
 * (code CHECKPOINT_MISMATCH) naming the file and the tensor for a name met twice after
 * normalisation, or a tensor of a dtype that is not a float weight.
 */
export function normaliseCheckpoint<T extends TensorLike>(
  tensors: ReadonlyArray<ReadTensor<T>>,
  family: EncoderFamily,
): NormalisedCheckpoint<T> {
  const head = MLM_HEAD[family];
  const out = new Map<string, { tensor: T; from: ReadTensor<T> }>();
  const classificationHead: Array<[string, T]> = [];
  const ignored: string[] = [];
  const dropped: string[] = [];
  const reduced: Record<string, number> = {};
  let decoderBias: ReadTensor<T> | undefined;
  for (const read of tensors) {
    const { tensor, file } = read;
    const name = normalisedName(read.name, family);
    if (BUFFERS.has(name)) {
      dropped.push(read.name);
      continue;
    }
    if (OTHER_HEADS.some((p) => name.startsWith(p))) {
      ignored.push(read.name);
      continue;
    }
    checkFloat(read);
    if (REDUCED.has(tensor.dtype)) reduced[tensor.dtype] = (reduced[tensor.dtype] ?? 0) + 1;
    if (CLASSIFICATION_HEAD.some((p) => name.startsWith(p))) {
      classificationHead.push([name, tensor]);
      continue;
    }
    if (head.decoderBias && name === head.decoderBias) {
      decoderBias = read;
      continue;
    }
    const earlier = out.get(name);
    if (earlier) {
      throw new ModelError(
        `${file}: tensor ${read.name} is ${name} once normalised, which ${earlier.from.file} already holds as ${earlier.from.name}`,
        { file, code: 'CHECKPOINT_MISMATCH' },
      );
    }
    out.set(name, { tensor, from: read });
  }
  // The decoder's bias is the head's bias (tied); files keep either name, or both.
  if (decoderBias) {
    if (out.has(head.bias)) dropped.push(decoderBias.name);
    else out.set(head.bias, { tensor: decoderBias.tensor, from: decoderBias });
  }
  return {
    weights: [...out].map(([name, { tensor }]) => [name, tensor]),
    pooler: out.has('pooler.dense.weight'),
    mlmHead: out.has(head.marker),
    classificationHead,
    ignored,
    dropped,
    reduced,
  };
}

/**
 * The shards of a `*.index.json` and the names each must hold. Throws ModelError naming the index
 * for invalid JSON, a missing or empty `weight_map`, a value that is not a string, or a shard path
 * that leaves the folder.
 */
export function shardPlan(indexText: string, indexFile: string): Map<string, string[]> {
  let map: unknown;
  try {
    map = (JSON.parse(indexText) as { weight_map?: unknown } | null)?.weight_map;
  } catch (err) {
    throw new ModelError(`${indexFile} is not valid JSON: ${messageOf(err)}`, { file: indexFile, code: 'CHECKPOINT_MISMATCH', cause: err });
  }
  if (typeof map !== 'object' || map === null || Array.isArray(map) || Object.keys(map).length === 0) {
    throw new ModelError(`${indexFile} has no weight_map (tensor name → shard file)`, { file: indexFile, code: 'CHECKPOINT_MISMATCH' });
  }
  const plan = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== 'string' || !isContainedRelativePath(shard)) {
      throw new ModelError(`${indexFile} puts tensor ${name} in a shard outside its folder: ${JSON.stringify(shard)}`, {
        file: indexFile,
        code: 'CHECKPOINT_MISMATCH',
      });
    }
    const names = plan.get(shard) ?? [];
    names.push(name);
    plan.set(shard, names);
  }
  return plan;
}

/**
 * Every shard of `plan` read once (`read` returns its tensors), checked against the index: each
 * name the index lists is in the shard it names, and no name comes from two shards. On an error
 * every tensor read so far is handed to `dispose`.
 */
export async function readShards<T>(
  plan: Map<string, string[]>,
  indexFile: string,
  read: (shard: string) => Promise<Array<[string, T]>>,
  dispose: (tensor: T) => void = () => {},
): Promise<Array<{ name: string; tensor: T; file: string }>> {
  const all: Array<{ name: string; tensor: T; file: string }> = [];
  const shardOf = new Map<string, string>();
  try {
    for (const [shard, expected] of [...plan].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      let tensors: Array<[string, T]>;
      try {
        tensors = await read(shard);
      } catch (err) {
        if (err instanceof ModelError) throw err;
        throw new ModelError(`cannot read shard ${shard} (listed in ${indexFile}): ${messageOf(err)}`, {
          file: shard,
          code: 'CHECKPOINT_MISMATCH',
          cause: err,
        });
      }
      for (const [name, tensor] of tensors) {
        all.push({ name, tensor, file: shard });
        const other = shardOf.get(name);
        if (other !== undefined) {
          throw new ModelError(`tensor ${name} is in two shards, ${other} and ${shard}`, { file: shard, code: 'CHECKPOINT_MISMATCH' });
        }
        shardOf.set(name, shard);
      }
      const missing = expected.filter((name) => shardOf.get(name) !== shard);
      if (missing.length > 0) {
        throw new ModelError(
          `${shard} lacks ${missing.length === 1 ? 'tensor' : 'tensors'} ${missing.slice(0, 5).join(', ')}` +
            `${missing.length > 5 ? `, … (${missing.length} in all)` : ''}, which ${indexFile} says it holds`,
          { file: shard, code: 'CHECKPOINT_MISMATCH' },
        );
      }
    }
  } catch (err) {
    for (const t of all) dispose(t.tensor);
    throw err;
  }
  return all;
}

/**
 * Reads a model folder's weights (its `files`, as model-folder.ts chose them) and normalises
 * them for `family`. Float16/bfloat16 tensors are widened to float32. The sequence-classification
 * head is kept when `keepClassificationHead`; otherwise it is freed and listed with the ignored
 * heads. Errors are ModelErrors naming the file (the shard) and the tensor.
 */
export async function readCheckpoint(
  binding: NativeBinding,
  dir: string,
  files: ModelFolderFiles,
  family: EncoderFamily,
  keepClassificationHead = false,
): Promise<NormalisedCheckpoint<NativeTensor>> {
  const readOne = async (file: string): Promise<Array<[string, NativeTensor]>> => {
    const path = join(dir, file);
    try {
      return files.format === 'safetensors' ? binding.readSafetensors(path).tensors : binding.readTorchStateDict(path);
    } catch (err) {
      throw new ModelError(`cannot read weights ${path}: ${messageOf(err)}`, { file: path, code: 'CHECKPOINT_MISMATCH', cause: err });
    }
  };
  let read: Array<ReadTensor<NativeTensor>>;
  const [first] = files.weights;
  if (files.weights.length === 1) {
    read = (await readOne(first!)).map(([name, tensor]) => ({ name, tensor, file: join(dir, first!) }));
  } else {
    const indexFile = join(dir, first!);
    const plan = shardPlan(await readFile(indexFile, 'utf8'), indexFile);
    read = (await readShards(plan, indexFile, readOne, (t) => t.dispose())).map((r) => ({ ...r, file: join(dir, r.file) }));
  }
  let normalised: NormalisedCheckpoint<NativeTensor>;
  try {
    normalised = normaliseCheckpoint(read, family);
  } catch (err) {
    for (const r of read) r.tensor.dispose();
    throw err;
  }
  if (!keepClassificationHead) {
    normalised.ignored.push(...normalised.classificationHead.map(([name]) => name));
    normalised.classificationHead = [];
  }
  const kept = new Set([...normalised.weights, ...normalised.classificationHead].map(([, t]) => t));
  for (const r of read) if (!kept.has(r.tensor)) r.tensor.dispose();
  const widened = (named: Array<[string, NativeTensor]>) =>
    named.map(([name, tensor]): [string, NativeTensor] => {
      if (tensor.dtype === 'float32') return [name, tensor];
      const wide = tensor.to('cpu', 'float32');
      tensor.dispose();
      return [name, wide];
    });
  normalised.weights = widened(normalised.weights);
  normalised.classificationHead = widened(normalised.classificationHead);
  return normalised;
}
