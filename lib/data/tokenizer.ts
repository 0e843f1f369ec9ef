/**
 * Text → token ids, via `@huggingface/tokenizers` reading a `tokenizer.json`. Second stop of a
 * batch's journey: texts become fixed-width rows of ids and attention masks, stored in one
 * flat Int32Array each so a batch can be handed to the native step without per-row copies.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Tokenizer } from '@huggingface/tokenizers';
import { AbortError, InputError, messageOf } from '../addon/errors.js';
import type { TokenizeJob, TokenizeReply } from './tokenizer-worker.js';

/** Texts per slice: a worker's unit of work, and the main thread's between two event-loop turns. */
export const SLICE = 256;
/**
 * Below this many texts, tokenizing on the main thread (in slices, yielding between them) beats
 * starting workers (each parses the tokenizer.json: ~0.1-0.2 s).
 */
const MIN_TEXTS_FOR_WORKERS = 1024;

/**
 * The compiled worker script, or null where there is none (running the TypeScript sources
 * without a build): then everything is tokenized on the main thread, with the same result.
 */
const workerScript: string | null = (() => {
  const here = import.meta.url;
  const candidates = here.endsWith('.ts')
    ? [new URL('../../dist/data/tokenizer-worker.js', here)]
    : [new URL('./tokenizer-worker.js', here)];
  for (const c of candidates) {
    const path = fileURLToPath(c);
    if (existsSync(path)) return path;
  }
  return null;
})();

export interface EncodeOptions {
  /** A second text for every text, encoded together as text pairs (`TextPairs`). */
  pairs?: TextPairs;
  /**
   * Worker threads to tokenize with. Default: the machine's available parallelism (tokenizing
   * runs before any model work, so it has the cores to itself). 1: on the main thread.
   */
  threads?: number;
  signal?: AbortSignal;
}

/**
 * Text pairs (NLI, paraphrase, question answering as classification): the second text of each
 * text, framed as the tokenizer's pair template says (`[CLS] a [SEP] b [SEP]` for BERT,
 * `<s> a </s></s> b </s>` for RoBERTa) and truncated as transformers' default truncation
 * (longest first) does. `tokenTypes`: keep each token's segment (the template's type ids) for an
 * encoder whose forward takes token_type_ids (BERT); without it they are dropped, as
 * transformers' DistilBERT and RoBERTa tokenizers do.
 */
export interface TextPairs {
  second: readonly string[];
  tokenTypes: boolean;
}

/** Token ids and masks for many texts, row-major [count, seqLen]. */
export interface EncodedTexts {
  inputIds: Int32Array;
  attentionMask: Int32Array;
  /** Each token's segment, for text pairs whose encoder takes token_type_ids (`TextPairs`); absent otherwise. */
  tokenTypeIds?: Int32Array;
  count: number;
  seqLen: number;
  /** Real (unpadded) token count of each row, special tokens included. */
  lengths: Int32Array;
}

/** Where a slice of encoded rows goes: `start` is its first text's index. */
type PlaceSlice = (start: number, part: Pick<EncodedTexts, 'inputIds' | 'attentionMask' | 'lengths' | 'tokenTypeIds'>) => void;

/**
 * Where the pair template puts its special tokens around two texts (`before` a `between` b
 * `after`), and the segment (token type id) of each position.
 */
export interface PairFraming {
  before: number[];
  between: number[];
  after: number[];
  types: { before: number[]; a: number; between: number[]; b: number; after: number[] };
}

export class TextTokenizer {
  /** The tokenizer.json content, kept so it can be saved next to the classifier. */
  readonly json: string;
  readonly padId: number;
  private readonly tokenizer: Tokenizer;
  /** Special tokens the post-processor puts before and after the text ([CLS] / [SEP] for BERT). */
  private readonly prefix: number[];
  private readonly suffix: number[];

  private constructor(json: string, tokenizer: Tokenizer, file: string) {
    this.json = json;
    this.tokenizer = tokenizer;
    this.file = file;
    const config = JSON.parse(json) as { padding?: { pad_id?: unknown } | null };
    const padId: unknown = (typeof config.padding === 'object' ? config.padding?.pad_id : undefined) ?? tokenizer.token_to_id('[PAD]') ?? 0;
    if (!isTokenId(padId))
      throw new InputError(`tokenizer file ${file}: pad id ${String(padId)} is not a token id (an integer in [0, 2^31))`, { file });
    this.padId = padId;
    // Encoding the empty text yields exactly the special tokens the template adds; the text goes between them.
    const empty = this.checkIds(tokenizer.encode('').ids);
    const probe = tokenizer.encode('a', { add_special_tokens: false }).ids;
    const withSpecials = tokenizer.encode('a').ids;
    const at = indexOfSequence(withSpecials, probe);
    if (at < 0) throw new InputError(`tokenizer ${file}: cannot locate the text between its special tokens`, { file });
    this.prefix = empty.slice(0, at);
    this.suffix = empty.slice(at);
  }

  private pairFramingCache: PairFraming | undefined;

  /**
   * The pair template, found as `framing` is: two probe texts encoded as a pair, with their
   * segments, and the special tokens located around them.
   */
  get pairFraming(): PairFraming {
    if (this.pairFramingCache) return this.pairFramingCache;
    const a = this.tokenizer.encode('a', { add_special_tokens: false }).ids;
    const b = this.tokenizer.encode('b', { add_special_tokens: false }).ids;
    const pair = this.tokenizer.encode('a', { text_pair: 'b', return_token_type_ids: true });
    const atA = indexOfSequence(pair.ids, a);
    const atB = atA < 0 ? -1 : indexOfSequence(pair.ids.slice(atA + a.length), b);
    if (atA < 0 || atB < 0)
      throw new InputError(`tokenizer ${this.file}: cannot locate the two texts of a pair between its special tokens`, { file: this.file });
    const startB = atA + a.length + atB;
    const ids = this.checkIds(pair.ids);
    const types = pair.token_type_ids;
    this.pairFramingCache = {
      before: ids.slice(0, atA),
      between: ids.slice(atA + a.length, startB),
      after: ids.slice(startB + b.length),
      types: {
        before: types.slice(0, atA),
        a: types[atA]!,
        between: types.slice(atA + a.length, startB),
        b: types[startB]!,
        after: types.slice(startB + b.length),
      },
    };
    return this.pairFramingCache;
  }

  private readonly file: string;
  /** The mask token a model folder names (tokenizer_config.json / special_tokens_map.json), recorded by wordpiece-vocab.ts. */
  private namedMask: string | undefined;

  /** Records the mask token the model folder of this tokenizer names (`nameMaskToken` before `maskToken`). */
  nameMaskToken(token: string | undefined): void {
    this.namedMask = token;
  }

  /**
   * The one answer to "what is this tokenizer's mask token, and its id", for pretraining's masking
   * (`maskingVocabulary`) and prompting's templates (prompt-template.ts) alike: the mask token its
   * model folder names (special_tokens_map.json's `mask_token`, else tokenizer_config.json's, as
   * transformers reads them), else the one special added token of tokenizer.json whose name says
   * mask ([MASK], <mask>). A typed InputError (NO_MASK_TOKEN) when there is none, several, or the
   * named one is not in the vocabulary.
   */
  maskToken(): { token: string; id: number } {
    let token = this.namedMask;
    if (token === undefined) {
      const candidates = this.specialAddedTokens().filter((t) => /mask/i.test(t));
      if (candidates.length !== 1) {
        throw new InputError(
          `cannot tell the mask token of tokenizer ${this.file}: ` +
            (candidates.length === 0
              ? 'it has no special token named like a mask token'
              : `several special tokens could be it (${candidates.join(', ')})`) +
            ', and no model folder names it (mask_token in tokenizer_config.json or special_tokens_map.json)',
          { file: this.file, code: 'NO_MASK_TOKEN' },
        );
      }
      token = candidates[0]!;
    }
    const id = this.tokenId(token);
    if (id === undefined) {
      throw new InputError(`the mask token '${token}' is not in tokenizer ${this.file}'s vocabulary`, {
        file: this.file,
        code: 'NO_MASK_TOKEN',
      });
    }
    return { token, id };
  }

  /** The tokenizer.json this was loaded from (named in error messages). */
  get path(): string {
    return this.file;
  }

  /**
   * What the model's embedding tables must cover (lib/models/model-checks.ts): the largest id this
   * tokenizer can produce (vocabulary and added tokens), the special tokens it puts around every
   * text and pads with, and its post-processor's type (`RobertaProcessing` marks RoBERTa's
   * position offset).
   */
  vocabulary(): { largestId: number; largestToken: string; special: Array<{ token: string; id: number }>; postProcessor: string | null } {
    let largestId = -1;
    let largestToken = '';
    for (const [token, id] of this.tokenizer.get_vocab(true)) {
      if (id > largestId) {
        largestId = id;
        largestToken = token;
      }
    }
    const special = [...new Set([...this.prefix, ...this.suffix, this.padId])].map((id) => ({
      token: this.tokenizer.id_to_token(id) ?? `#${id}`,
      id,
    }));
    for (const s of special) {
      if (s.id > largestId) {
        largestId = s.id;
        largestToken = s.token;
      }
    }
    const config = JSON.parse(this.json) as { post_processor?: { type?: unknown } | null };
    const type = config.post_processor?.type;
    return { largestId, largestToken, special, postProcessor: typeof type === 'string' ? type : null };
  }

  /**
   * What masked-language modelling needs (mlm-masking.ts): the mask token's id (`maskToken()`'s,
   * null when it finds none), len(tokenizer) (every id it can produce, added tokens included), the special
   * tokens it puts around texts and pads with, each id's token string, and whether the model is
   * byte-level BPE (a word starts at 'Ġ') or WordPiece (a word continues with '##').
   */
  maskingVocabulary(): {
    maskId: number | null;
    vocabSize: number;
    specialIds: Set<number>;
    tokens: Array<string | undefined>;
    byteLevel: boolean;
  } {
    const { largestId } = this.vocabulary();
    let maskId: number | null = null;
    try {
      maskId = this.maskToken().id;
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
    }
    const tokens: Array<string | undefined> = new Array(largestId + 1);
    for (const [token, id] of this.tokenizer.get_vocab(true)) tokens[id] = token;
    const config = JSON.parse(this.json) as { model?: { type?: unknown } };
    return {
      maskId,
      vocabSize: largestId + 1,
      specialIds: new Set([...this.prefix, ...this.suffix, this.padId]),
      tokens,
      byteLevel: config.model?.type === 'BPE',
    };
  }

  /** Ids of the whole text with the special tokens, never truncated (run_mlm.py's tokenize before group_texts). */
  encodeWhole(text: string): number[] {
    return [...this.prefix, ...this.tokenIds(text), ...this.suffix];
  }

  /** The special tokens put before and after every text ([CLS] and [SEP] for BERT; prompt-template.ts frames its rows with them). */
  get framing(): { prefix: readonly number[]; suffix: readonly number[] } {
    return { prefix: this.prefix, suffix: this.suffix };
  }

  /** The ids of `text` without special tokens, untruncated (prompt templates and label words). */
  tokenIds(text: string): number[] {
    try {
      return this.checkIds(this.tokenizer.encode(text, { add_special_tokens: false }).ids);
    } catch (err) {
      if (err instanceof InputError) throw err;
      throw new InputError(`tokenizer file ${this.file} cannot encode a text: ${messageOf(err)}`, { file: this.file, cause: err });
    }
  }

  /** The text of token ids as the tokenizer's decoder writes it (WordPiece's '##' joined, byte-level bytes as characters). */
  decode(ids: readonly number[]): string {
    return this.tokenizer.decode([...ids], { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  /** A token's string ('Ġgreat', '##ly'), for messages. */
  tokenString(id: number): string {
    return this.tokenizer.id_to_token(id) ?? `#${id}`;
  }

  /** A token's id, or undefined when the vocabulary (added tokens included) lacks it. */
  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token) ?? undefined;
  }

  /** tokenizer.json's added tokens marked special ([MASK], <mask>, ...). */
  specialAddedTokens(): string[] {
    const config = JSON.parse(this.json) as { added_tokens?: Array<{ content?: unknown; special?: unknown }> };
    return (config.added_tokens ?? []).filter((t) => t.special === true && typeof t.content === 'string').map((t) => t.content as string);
  }

  /** Ids go into Int32Arrays and index the embedding: anything else would be wrapped silently. */
  private checkIds(ids: number[]): number[] {
    for (const id of ids) {
      if (!isTokenId(id)) {
        throw new InputError(`tokenizer file ${this.file} produced token id ${String(id)}, which is not an integer in [0, 2^31)`, {
          file: this.file,
        });
      }
    }
    return ids;
  }

  /** Load a `tokenizer.json`; every failure names the file. */
  static async load(file: string): Promise<TextTokenizer> {
    let json: string;
    try {
      json = await readFile(file, 'utf8');
    } catch (err) {
      throw new InputError(`cannot read tokenizer file ${file}: ${messageOf(err)}`, { file, cause: err });
    }
    return TextTokenizer.fromJson(json, file);
  }

  static fromJson(json: string, file = 'tokenizer.json'): TextTokenizer {
    let config: unknown;
    try {
      config = JSON.parse(json);
    } catch (err) {
      throw new InputError(`tokenizer file ${file} is not valid JSON: ${messageOf(err)}`, { file, cause: err });
    }
    if (typeof config !== 'object' || config === null || !('model' in config)) {
      throw new InputError(`tokenizer file ${file} is not a Hugging Face tokenizer.json (no "model" section)`, { file });
    }
    try {
      const tokenizer = new Tokenizer(config, {});
      tokenizer.encode('a');
      return new TextTokenizer(json, tokenizer, file);
    } catch (err) {
      if (err instanceof InputError) throw err;
      throw new InputError(`tokenizer file ${file} cannot be used: ${messageOf(err)}`, { file, cause: err });
    }
  }

  /** Ids of one text with special tokens, truncated to `maxLength` (the specials are kept). */
  encodeOne(text: string, maxLength: number): number[] {
    const room = maxLength - this.prefix.length - this.suffix.length;
    if (room < 1) throw new InputError(`maxLength ${maxLength} leaves no room for text between the special tokens`);
    return [...this.prefix, ...this.firstTokens(text, room), ...this.suffix];
  }

  /**
   * The first `room` token ids of `text` (no special tokens). Tokenizing costs time and memory
   * in proportion to the text (a 10 MB text: ~10 s and ~0.7 GB), yet only `room` tokens are
   * kept; so growing prefixes are encoded, each cut just before an ASCII whitespace character so that
   * no word is split, until one yields more than `room` tokens: its first `room` tokens are the
   * whole text's (pre-tokenizers split at whitespace). Texts without whitespace near the cut
   * are encoded whole.
   */
  private firstTokens(text: string, room: number): number[] {
    try {
      return this.checkIds(this.firstTokensUnchecked(text, room));
    } catch (err) {
      if (err instanceof InputError) throw err;
      throw new InputError(`tokenizer file ${this.file} cannot encode a text: ${messageOf(err)}`, { file: this.file, cause: err });
    }
  }

  private firstTokensUnchecked(text: string, room: number): number[] {
    for (let limit = Math.max(4096, room * 16); limit < text.length; limit *= 4) {
      let cut = limit;
      // ASCII whitespace only: JavaScript's \s also matches \v, \f and U+FEFF, which BERT's
      // normalizer deletes, so a cut there split a word the whole text has in one piece.
      while (cut > limit / 2 && !/[ \t\n\r]/.test(text[cut]!)) cut--;
      if (cut <= limit / 2) continue;
      const ids = this.tokenizer.encode(text.slice(0, cut), { add_special_tokens: false }).ids;
      if (ids.length > room) return ids.slice(0, room);
    }
    const ids = this.tokenizer.encode(text, { add_special_tokens: false }).ids;
    return ids.length > room ? ids.slice(0, room) : ids;
  }

  /** The largest segment (token type id) the pair template gives: 1 for BERT's, 0 where it gives none. */
  get largestPairTokenType(): number {
    const { types } = this.pairFraming;
    return Math.max(types.a, types.b, ...types.before, ...types.between, ...types.after);
  }

  /**
   * Ids of a text pair with the pair template's special tokens, and each id's segment, at most
   * `maxLength` in all: the texts cut longest first (`truncateLongestFirst`).
   */
  encodePair(text: string, second: string, maxLength: number): { ids: number[]; types: number[] } {
    const { before, between, after, types } = this.pairFraming;
    const room = maxLength - before.length - between.length - after.length;
    if (room < 2) throw new InputError(`maxLength ${maxLength} leaves no room for two texts between the special tokens`);
    // Only the first room + 1 tokens of each text decide the lengths kept, except which text is
    // longer when both exceed the room: then the lengths are counted whole.
    let a = this.firstTokens(text, room + 1);
    let b = this.firstTokens(second, room + 1);
    let [lengthA, lengthB] = [a.length, b.length];
    if (a.length > room && b.length > room) [lengthA, lengthB] = [this.tokenIds(text).length, this.tokenIds(second).length];
    const [keepA, keepB] = truncateLongestFirst(lengthA, lengthB, room);
    a = a.slice(0, keepA);
    b = b.slice(0, keepB);
    const ids = [...before, ...a, ...between, ...b, ...after];
    const segments = [...types.before, ...a.map(() => types.a), ...types.between, ...b.map(() => types.b), ...types.after];
    return { ids, types: segments };
  }

  /**
   * Encode texts (or text pairs) into rows of exactly `maxLength` ids (truncated, then padded
   * with the pad id); with `pairs.tokenTypes`, each token's segment too (padding: 0).
   */
  encodeBatch(texts: readonly string[], maxLength: number, pairs?: TextPairs): EncodedTexts {
    checkMaxLength(maxLength);
    const count = texts.length;
    checkPairCount(texts, pairs);
    const inputIds = new Int32Array(count * maxLength).fill(this.padId);
    const attentionMask = new Int32Array(count * maxLength);
    const tokenTypeIds = pairs?.tokenTypes ? new Int32Array(count * maxLength) : undefined;
    const lengths = new Int32Array(count);
    texts.forEach((text, row) => {
      const encoded = pairs ? this.encodePair(text, pairs.second[row]!, maxLength) : { ids: this.encodeOne(text, maxLength), types: null };
      inputIds.set(encoded.ids, row * maxLength);
      attentionMask.fill(1, row * maxLength, row * maxLength + encoded.ids.length);
      if (tokenTypeIds && encoded.types) tokenTypeIds.set(encoded.types, row * maxLength);
      lengths[row] = encoded.ids.length;
    });
    return { inputIds, attentionMask, ...(tokenTypeIds ? { tokenTypeIds } : {}), count, seqLen: maxLength, lengths };
  }

  /**
   * `encodeBatch` without blocking the event loop, and faster: large inputs are tokenized by
   * worker threads in slices of 256 texts, small ones on the main thread a slice per event-loop
   * turn. The result is identical to `encodeBatch`'s.
   */
  async encodeBatchAsync(texts: readonly string[], maxLength: number, options: EncodeOptions = {}): Promise<EncodedTexts> {
    checkMaxLength(maxLength);
    const count = texts.length;
    const out: EncodedTexts = {
      inputIds: new Int32Array(count * maxLength),
      attentionMask: new Int32Array(count * maxLength),
      ...(options.pairs?.tokenTypes ? { tokenTypeIds: new Int32Array(count * maxLength) } : {}),
      count,
      seqLen: maxLength,
      lengths: new Int32Array(count),
    };
    await this.encodeInSlices(texts, maxLength, options, (start, part) => {
      out.inputIds.set(part.inputIds, start * maxLength);
      out.attentionMask.set(part.attentionMask, start * maxLength);
      if (part.tokenTypeIds) out.tokenTypeIds!.set(part.tokenTypeIds, start * maxLength);
      out.lengths.set(part.lengths, start);
    });
    return out;
  }

  /**
   * The `lengths` of `encodeBatchAsync`'s rows without the rows (a slice's at a time): what an
   * inference pass over many texts cuts its batches by before it tokenizes them a chunk at a time.
   */
  async rowLengthsAsync(texts: readonly string[], maxLength: number, options: EncodeOptions = {}): Promise<Int32Array> {
    checkMaxLength(maxLength);
    const lengths = new Int32Array(texts.length);
    await this.encodeInSlices(texts, maxLength, options, (start, part) => lengths.set(part.lengths, start));
    return lengths;
  }

  /** Every slice of `texts` encoded (on workers or the main thread, as `encodeBatchAsync` says) and given to `place` with its offset. */
  private async encodeInSlices(texts: readonly string[], maxLength: number, options: EncodeOptions, place: PlaceSlice): Promise<void> {
    const { signal, pairs } = options;
    checkPairCount(texts, pairs);
    const threads = Math.max(1, Math.min(options.threads ?? availableParallelism(), Math.ceil(texts.length / SLICE)));
    const count = texts.length;
    if (threads < 2 || count < MIN_TEXTS_FOR_WORKERS || workerScript === null) {
      for (let start = 0; start < count; start += SLICE) {
        if (signal?.aborted) throw new AbortError('tokenization was aborted', { cause: signal.reason });
        const second = pairs && { ...pairs, second: pairs.second.slice(start, start + SLICE) };
        place(start, this.encodeBatch(texts.slice(start, start + SLICE), maxLength, second));
        if (start + SLICE < count) await nextTurn();
      }
      return;
    }
    await this.encodeInWorkers(texts, pairs, maxLength, threads, place, signal);
  }

  /** Slices handed to `threads` workers as each becomes free; every reply placed at its offset. */
  private encodeInWorkers(
    texts: readonly string[],
    pairs: TextPairs | undefined,
    maxLength: number,
    threads: number,
    place: PlaceSlice,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const workers: Worker[] = [];
    return new Promise<void>((resolve, reject) => {
      let next = 0;
      let pending = 0;
      let settled = false;
      const finish = (err?: Error) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        for (const w of workers) void w.terminate();
        if (err) reject(err);
        else resolve();
      };
      const onAbort = () => finish(new AbortError('tokenization was aborted', { cause: signal!.reason }));
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort);
      const send = (worker: Worker) => {
        if (next >= texts.length) {
          if (pending === 0) finish();
          return;
        }
        const job: TokenizeJob = {
          start: next,
          texts: texts.slice(next, next + SLICE),
          ...(pairs ? { pairs: { second: pairs.second.slice(next, next + SLICE), tokenTypes: pairs.tokenTypes } } : {}),
          maxLength,
        };
        next += SLICE;
        pending++;
        worker.postMessage(job);
      };
      for (let i = 0; i < threads; i++) {
        // execArgv: [] — the script is plain compiled JS; the parent's flags (--input-type, --eval,
        // loaders) would only break it.
        const worker = new Worker(workerScript!, { workerData: { json: this.json, file: this.file }, execArgv: [] });
        workers.push(worker);
        worker.on('message', (reply: TokenizeReply) => {
          pending--;
          if ('error' in reply) return finish(new InputError(reply.error, { file: reply.file }));
          place(reply.start, reply);
          send(worker);
        });
        worker.on('error', (err) => finish(new InputError(`tokenizer worker failed: ${messageOf(err)}`, { file: this.file, cause: err })));
        worker.on('exit', (code) => {
          if (!settled) finish(new InputError(`tokenizer worker exited (code ${code}) before finishing`, { file: this.file }));
        });
        send(worker);
      }
    });
  }
}

function checkMaxLength(maxLength: number): void {
  if (!Number.isInteger(maxLength) || maxLength < 2) throw new InputError(`maxLength must be an integer ≥ 2; got ${maxLength}`);
}

/**
 * How many tokens of each text stay when `room` must hold both, as Hugging Face tokenizers'
 * longest_first does (transformers' default, fast tokenizers): the shorter text is kept whole
 * while it fits in half the room, the longer takes the rest; else each gets half, the odd token
 * going to the longer (to the second on a tie). transformers' slow tokenizers differ there: they
 * give the odd token to the first.
 */
export function truncateLongestFirst(a: number, b: number, room: number): [number, number] {
  if (a + b <= room) return [a, b];
  const shorter = Math.min(a, b);
  if (2 * shorter <= room) return a <= b ? [a, room - a] : [room - b, b];
  const half = Math.floor(room / 2);
  return a > b ? [room - half, half] : [half, room - half];
}

function checkPairCount(texts: readonly string[], pairs: TextPairs | undefined): void {
  if (pairs && pairs.second.length !== texts.length) {
    throw new InputError(`${texts.length} texts but ${pairs.second.length} second texts: give one second text per text`);
  }
}

function isTokenId(id: unknown): id is number {
  return typeof id === 'number' && Number.isInteger(id) && id >= 0 && id < 2 ** 31;
}

function indexOfSequence(haystack: readonly number[], needle: readonly number[]): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
