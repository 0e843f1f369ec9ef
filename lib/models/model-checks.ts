/**
 * A model and the inputs it will get must agree before any work starts: the tokenizer's ids
 * must index rows of the model's word embedding table, the max length rows of its position
 * table, the token type ids rows of its token-type table. When they do not, the model fails
 * deep inside the TorchScript interpreter ("index out of range in self") after the data was
 * tokenized, so each rule is checked here, up front, from the model's own parameters, and a
 * mismatch names both files, both numbers and the fix.
 *
 * The tables are found by their parameter names' suffixes (Hugging Face's
 * `word_embeddings` / `position_embeddings` / `token_type_embeddings`, fairseq's
 * `embed_tokens` / `embed_positions`, GPT-2's `wte` / `wpe`, LLaMA-style `tok_embeddings`),
 * under any prefix (a classifier.pt's `encoder.`, a sentence-transformers module's
 * `0.auto_model.`), and confirmed by their shape (2-D, one shared width). A model whose word
 * or position table is not found that way is probed instead: one forward of a single text of
 * max length made of the tokenizer's largest id, before the data; a failure is then narrowed
 * down with short probes and reported in the same terms (see `probe`).
 *
 * RoBERTa-style position ids start at padding_idx + 1 (HF's create_position_ids_from_input_ids;
 * fairseq's LearnedPositionalEmbedding), so such a table of 514 rows reads 512 tokens. That is
 * only visible from outside the traced graph by a hint, and the offset is applied only when one
 * is present: a parameter path with a `roberta` component (a traced RobertaFor... model), a
 * tokenizer.json whose post-processor is `RobertaProcessing` (RoBERTa's own tokenizers), or
 * fairseq's `embed_positions` name. The offset is then the tokenizer's pad id + 1 (RoBERTa's
 * padding_idx is its pad token). A RoBERTa traced through AutoModel with a tokenizer of another
 * post-processor gives no hint: a max length within the offset of the table's size then fails
 * in the interpreter, whose message keeps its cause (native/addon/errors.h).
 */
import type { NativeScriptModule, NativeValue } from '../addon/binding.js';
import { InputError, ModelError, messageOf } from '../addon/errors.js';
import { loadBinding } from '../addon/loader.js';
import type { TextTokenizer } from '../data/tokenizer.js';

export interface EmbeddingTable {
  /** The parameter's full name, e.g. `embeddings.word_embeddings.weight`. */
  name: string;
  rows: number;
  width: number;
}

export interface EmbeddingTables {
  words?: EmbeddingTable;
  positions?: EmbeddingTable;
  tokenTypes?: EmbeddingTable;
}

const SUFFIXES: Record<keyof EmbeddingTables, string[]> = {
  words: ['word_embeddings.weight', 'embed_tokens.weight', 'wte.weight', 'tok_embeddings.weight'],
  positions: ['position_embeddings.weight', 'embed_positions.weight', 'wpe.weight'],
  tokenTypes: ['token_type_embeddings.weight'],
};

/**
 * The embedding tables among `params` (name, shape), by name suffix at a path boundary and
 * 2-D shape; the first match in registration order (a model's input embeddings come first).
 * A position or token-type table whose width differs from the word table's belongs to
 * something else and is not taken.
 */
export function findEmbeddingTables(params: ReadonlyArray<readonly [string, readonly number[]]>): EmbeddingTables {
  const tables: EmbeddingTables = {};
  for (const kind of Object.keys(SUFFIXES) as Array<keyof EmbeddingTables>) {
    const hit = params.find(([name, shape]) => shape.length === 2 && SUFFIXES[kind].some((s) => name === s || name.endsWith(`.${s}`)));
    if (hit) tables[kind] = { name: hit[0], rows: hit[1][0]!, width: hit[1][1]! };
  }
  for (const kind of ['positions', 'tokenTypes'] as const) {
    if (tables.words && tables[kind] && tables[kind]!.width !== tables.words.width) delete tables[kind];
  }
  return tables;
}

/**
 * The largest token type id a model is given for single texts, or null when it is given none:
 * single texts are all segment 0, and classifier.cc passes zeros to a forward that takes
 * token_type_ids (arity 3); one of arity 2 uses its own. Text pairs: `checkPairTokenTypes`.
 */
export function tokenTypesFed(arity: number): number | null {
  return takesTokenTypes(arity) ? 0 : null;
}

/** Whether an encoder's forward of `arity` inputs takes token_type_ids (forward(input_ids, attention_mask, token_type_ids)). */
export function takesTokenTypes(arity: number | undefined): boolean {
  return arity === 3;
}

export interface ModelInputs {
  /** What the model file is, for messages: a training run's encoder, or a saved classifier. */
  kind: 'encoder' | 'classifier';
  /** The model file named in messages. */
  modelFile: string;
  tokenizer: TextTokenizer;
  maxLength: number;
  /** Where the max length comes from, for messages: the option, or a classifier's config.json. */
  maxLengthFrom: string;
  /** The largest token type id the model's encoder is given (`tokenTypesFed`). */
  tokenTypes: number | null;
}

/** RoBERTa's position offset (padding_idx + 1) and why it applies, when something says so (see the top). */
function positionOffset(
  params: ReadonlyArray<readonly [string, readonly number[]]>,
  positions: EmbeddingTable,
  inputs: ModelInputs,
  postProcessor: string | null,
): { offset: number; why: string } | null {
  const offset = inputs.tokenizer.padId + 1;
  const named = params.find(([name]) => /(^|\.)roberta\./.test(name));
  if (named) return { offset, why: `its parameter ${named[0]} is RoBERTa's` };
  if (postProcessor === 'RobertaProcessing') return { offset, why: `tokenizer ${inputs.tokenizer.path} is RoBERTa's (RobertaProcessing)` };
  if (positions.name.endsWith('embed_positions.weight')) return { offset, why: `${positions.name} is fairseq's learned positions` };
  return null;
}

function fix(inputs: ModelInputs): string {
  return inputs.kind === 'encoder'
    ? "Use the encoder's own tokenizer: the tokenizer.json of the model it was traced from."
    : `Put back the tokenizer.json the classifier was trained with.`;
}

function lengthFix(inputs: ModelInputs, limit: number): string {
  return `Use a max length of at most ${limit} (${inputs.maxLengthFrom}).`;
}

/**
 * The checks that need only the parameters' shapes. Throws InputError with a `code` on a
 * mismatch; returns the tables found.
 */
export function checkTables(params: ReadonlyArray<readonly [string, readonly number[]]>, inputs: ModelInputs): EmbeddingTables {
  const tables = findEmbeddingTables(params);
  const vocabulary = inputs.tokenizer.vocabulary();
  const model = `${inputs.kind} ${inputs.modelFile}`;
  const tokenizerFile = inputs.tokenizer.path;
  if (tables.words && vocabulary.largestId >= tables.words.rows) {
    const rows = tables.words.rows;
    const specials = vocabulary.special.filter((s) => s.id >= rows);
    throw new InputError(
      `tokenizer ${tokenizerFile} does not belong to ${model}: the tokenizer has token ids up to ${vocabulary.largestId} ` +
        `('${vocabulary.largestToken}'), but the ${inputs.kind}'s word embedding table (${tables.words.name}) has ${rows} rows ` +
        `(ids 0-${rows - 1})` +
        (specials.length ? `; even its special tokens ${specials.map((s) => `${s.token} (${s.id})`).join(', ')} are out of range` : '') +
        `. ${fix(inputs)}`,
      { file: tokenizerFile, code: 'TOKENIZER_VOCAB_MISMATCH' },
    );
  }
  if (tables.positions) {
    const offset = positionOffset(params, tables.positions, inputs, vocabulary.postProcessor);
    const limit = tables.positions.rows - (offset?.offset ?? 0);
    if (inputs.maxLength > limit) {
      throw new InputError(
        `max length ${inputs.maxLength} (${inputs.maxLengthFrom}) is longer than ${model} can read: its position embedding table ` +
          `(${tables.positions.name}) has ${tables.positions.rows} rows` +
          (offset ? `, the first ${offset.offset} of them unused as RoBERTa's offset (${offset.why})` : '') +
          `, so a text can have at most ${limit} tokens. ${lengthFix(inputs, limit)}`,
        { code: 'MAX_LENGTH_EXCEEDS_POSITIONS' },
      );
    }
  }
  if (inputs.tokenTypes !== null) checkTokenTypeTable(tables, inputs.tokenTypes, model);
  return tables;
}

function checkTokenTypeTable(tables: EmbeddingTables, tokenType: number, model: string): void {
  if (!tables.tokenTypes || tokenType < tables.tokenTypes.rows) return;
  throw new InputError(
    `${model} cannot take token type id ${tokenType}: its token type table (${tables.tokenTypes.name}) has ` +
      `${tables.tokenTypes.rows} row${tables.tokenTypes.rows === 1 ? '' : 's'}, so it reads single texts only (type 0), not text pairs.`,
    { code: 'TOKEN_TYPE_EXCEEDS_TYPES' },
  );
}

/**
 * Text pairs given to `module` (an encoder or classifier whose encoder takes token_type_ids):
 * its token type table must have a row for every segment the tokenizer's pair template gives
 * (BERT's: 0 and 1). `model` names it in the message.
 */
export function checkPairTokenTypes(module: NativeScriptModule, tokenizer: TextTokenizer, model: string): void {
  const params = module.namedParameters().map(([name, tensor]) => [name, tensor.shape] as const);
  checkTokenTypeTable(findEmbeddingTables(params), tokenizer.largestPairTokenType, model);
}

function disposeValue(value: NativeValue): void {
  if (value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    for (const item of value) disposeValue(item);
  } else if ('dispose' in value && typeof value.dispose === 'function') {
    (value.dispose as () => void)();
  } else {
    for (const item of Object.values(value)) disposeValue(item);
  }
}

/** One forward of a single text of `length` copies of `id` (attention everywhere); the error, or null. */
async function forwardFails(module: NativeScriptModule, id: number, length: number): Promise<unknown> {
  const { Tensor } = loadBinding();
  const inputs = [
    Tensor.fromArray(new Int32Array(length).fill(id), [1, length], 'int64', module.device),
    Tensor.fromArray(new Int32Array(length).fill(1), [1, length], 'int64', module.device),
  ];
  if (takesTokenTypes(module.forwardArity)) inputs.push(Tensor.fromArray(new Int32Array(length), [1, length], 'int64', module.device));
  try {
    disposeValue(await module.forwardAsync(...inputs));
    return null;
  } catch (err) {
    return err;
  } finally {
    for (const t of inputs) t.dispose();
  }
}

/**
 * For a model whose tables `checkTables` could not find: one forward of the largest id at the
 * max length. If it fails, short probes tell which input is wrong: the largest id in a text of
 * 2 tokens (the vocabulary), then the longest length that still runs, found by bisection with
 * the pad id (the positions). A model that fails even on 2 pad tokens is reported as it fails.
 */
async function probe(module: NativeScriptModule, inputs: ModelInputs): Promise<void> {
  // A forward of other inputs cannot be probed with token ids; buildClassifier says what it must take.
  if (module.forwardArity !== 2 && module.forwardArity !== 3) return;
  const { largestId, largestToken } = inputs.tokenizer.vocabulary();
  const model = `${inputs.kind} ${inputs.modelFile}`;
  const failed = await forwardFails(module, largestId, inputs.maxLength);
  if (!failed) return;
  const pad = inputs.tokenizer.padId;
  const baseline = await forwardFails(module, pad, 2);
  if (baseline) {
    throw new ModelError(`${model} fails on a text of 2 tokens (pad id ${pad}): ${messageOf(baseline)}`, {
      file: inputs.modelFile,
      code: 'ENCODER_PROBE_FAILED',
      cause: baseline,
    });
  }
  const vocabulary = await forwardFails(module, largestId, 2);
  if (vocabulary) {
    throw new InputError(
      `tokenizer ${inputs.tokenizer.path} does not belong to ${model}: the ${inputs.kind} fails on token id ${largestId} ('${largestToken}'), ` +
        `the tokenizer's largest (its embedding table was not found by name, so this was found by running it): ${messageOf(vocabulary)}. ${fix(inputs)}`,
      { file: inputs.tokenizer.path, code: 'TOKENIZER_VOCAB_MISMATCH', cause: vocabulary },
    );
  }
  // Runs at 2 tokens, fails at maxLength: the longest length that runs lies between.
  let runs = 2;
  let fails = inputs.maxLength;
  let lastFailure = failed;
  while (fails - runs > 1) {
    const mid = Math.floor((runs + fails) / 2);
    const err = await forwardFails(module, pad, mid);
    if (err) {
      fails = mid;
      lastFailure = err;
    } else {
      runs = mid;
    }
  }
  throw new InputError(
    `max length ${inputs.maxLength} (${inputs.maxLengthFrom}) is longer than ${model} can read: it runs on texts of up to ${runs} tokens ` +
      `and fails on ${fails} (its position table was not found by name, so this was found by running it): ${messageOf(lastFailure)}. ` +
      lengthFix(inputs, runs),
    { code: 'MAX_LENGTH_EXCEEDS_POSITIONS', cause: lastFailure },
  );
}

/**
 * Check `module` against the tokenizer, max length and token types it will be given (see the
 * top): from its parameters, or by probing it when its tables are not found by name.
 */
export async function checkModelInputs(module: NativeScriptModule, inputs: ModelInputs): Promise<void> {
  const params = module.namedParameters().map(([name, tensor]) => [name, tensor.shape] as const);
  const tables = checkTables(params, inputs);
  if (!tables.words || !tables.positions) await probe(module, inputs);
}

/**
 * Load an encoder file onto `device` and check it against the tokenizer and max length it will
 * be given: a training run's (before the data is tokenized or the output directory touched),
 * or a LoRA classifier's (`Classifier.loadAdapters`, its max length from its config.json).
 */
export async function loadCheckedEncoder(
  file: string,
  device: string,
  inputs: Omit<ModelInputs, 'kind' | 'modelFile' | 'tokenTypes' | 'maxLengthFrom'> & { maxLengthFrom?: string },
): Promise<NativeScriptModule> {
  let encoder: NativeScriptModule;
  try {
    encoder = await loadBinding().ScriptModule.loadAsync(file, device);
  } catch (err) {
    throw new ModelError(`cannot load encoder ${file}: ${messageOf(err)}`, { file, cause: err });
  }
  try {
    await checkModelInputs(encoder, {
      maxLengthFrom: 'maxLength / --max-length',
      ...inputs,
      kind: 'encoder',
      modelFile: file,
      tokenTypes: tokenTypesFed(encoder.forwardArity),
    });
  } catch (err) {
    encoder.dispose();
    throw err;
  }
  return encoder;
}
