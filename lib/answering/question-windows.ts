/**
 * Questions and their contexts as token rows: how Hugging Face's run_qa.py prepares them
 * (`prepare_train_features` / `prepare_validation_features`, transformers'
 * examples/pytorch/question-answering/run_qa.py, with a fast tokenizer's `truncation="only_second"`,
 * `stride=doc_stride`, `return_overflowing_tokens=True`, `return_offsets_mapping=True`). A
 * context longer than a row is read in windows that overlap by `docStride` tokens; each window
 * is a row `[CLS] question [SEP] window [SEP]` (the tokenizer's pair template), labelled with the
 * answer's first and last token where the window holds the whole answer, else with the row's
 * first token ([CLS]: "no answer here"). Each context token keeps its characters in the context
 * (the offsets), so that a span of tokens is a span of the text.
 */
import { InputError } from '../addon/errors.js';
import type { EncodedTexts, TextTokenizer } from '../data/tokenizer.js';
import { splitWords, type TextWord, tokenSpans } from '../data/word-alignment.js';
import type { QuestionExample } from './squad-data.js';

/** A context as tokens: their ids and each one's characters [start, end) in the context. */
export interface ContextTokens {
  ids: number[];
  spans: Array<[number, number]>;
}

/** Windows of questions' contexts as rows, with what the answer spans and evaluation need. */
export interface QuestionWindows {
  /** The rows (token types where the encoder takes them), at most maxLength tokens each, padded to maxLength. */
  encoded: EncodedTexts;
  /** Each window's example (an index into the examples). */
  example: Int32Array;
  /** Each window's labels: the answer's first and last token in the row, or both 0 (the row's first token) where the window does not hold the whole answer. */
  starts: Int32Array;
  ends: Int32Array;
  /** Where each window's context tokens are: the row position of its first, the index of that token in its context's tokens, how many. */
  contextAt: Int32Array;
  contextFrom: Int32Array;
  contextCount: Int32Array;
  /** Each example's context tokens (their characters). */
  contexts: ContextTokens[];
}

export interface WindowSettings {
  maxLength: number;
  /** Tokens two consecutive windows of a context share (run_qa.py's doc_stride). */
  docStride: number;
  /** Keep the pair template's token types (an encoder that takes token_type_ids: BERT). */
  tokenTypes: boolean;
}

/**
 * Byte-level BPE's pre-tokenizer pattern (GPT-2's, RoBERTa's ByteLevel with use_regex): a piece
 * carries the space before it, which is part of its first token ('Ġword').
 */
const BYTE_LEVEL_PIECES = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Which pre-tokenizer a tokenizer.json splits texts with, as far as the pieces of a context depend on it. */
function preTokenizerKind(tokenizerJson: string): 'bert' | 'byte-level' | 'whitespace' {
  const config = JSON.parse(tokenizerJson) as { pre_tokenizer?: { type?: string; pretokenizers?: Array<{ type?: string }> } | null };
  const types = [config.pre_tokenizer?.type, ...(config.pre_tokenizer?.pretokenizers ?? []).map((p) => p.type)];
  if (types.includes('BertPreTokenizer')) return 'bert';
  if (types.includes('ByteLevel')) return 'byte-level';
  return 'whitespace';
}

/**
 * A text's pieces as the tokenizer's pre-tokenizer splits it, each to be encoded alone (`encode`:
 * with the space before it where that is part of its tokens) and placed at `word` (its
 * characters, that space left out): encoding the pieces one by one gives the whole text's ids,
 * and `tokenSpans` places each piece's tokens. BERT: words and punctuation (splitWords);
 * byte-level BPE: GPT-2's pattern; otherwise (SentencePiece's Metaspace, Whitespace) the
 * whitespace-separated words, each with a word-start marker either way.
 */
function textPieces(kind: ReturnType<typeof preTokenizerKind>, text: string): Array<{ encode: string; word: TextWord }> {
  if (kind === 'bert') return splitWords(text).map((word) => ({ encode: word.word, word }));
  if (kind === 'whitespace') {
    return Array.from(text.matchAll(/\S+/gu), (m) => ({ encode: m[0], word: { word: m[0], start: m.index, end: m.index + m[0].length } }));
  }
  return Array.from(text.matchAll(BYTE_LEVEL_PIECES), (m) => {
    const lead = m[0].length - m[0].trimStart().length;
    const start = m.index + (lead === m[0].length ? 0 : lead);
    return { encode: m[0], word: { word: m[0].slice(start - m.index), start, end: m.index + m[0].length } };
  });
}

/** A context's tokens and their characters (the fast tokenizer's offset mapping). */
export function contextTokens(tokenizer: TextTokenizer, context: string): ContextTokens {
  const kind = preTokenizerKind(tokenizer.json);
  const ids: number[] = [];
  const spans: Array<[number, number]> = [];
  for (const piece of textPieces(kind, context)) {
    const pieceIds = tokenizer.tokenIds(piece.encode);
    ids.push(...pieceIds);
    spans.push(...tokenSpans(tokenizer, piece.word, pieceIds));
  }
  return { ids, spans };
}

/**
 * The windows of `examples` (see the top). A question too long to leave a window more than
 * docStride context tokens is refused, as the fast tokenizer refuses it.
 */
export function questionWindows(tokenizer: TextTokenizer, examples: readonly QuestionExample[], settings: WindowSettings): QuestionWindows {
  const { before, between, after, types } = tokenizer.pairFraming;
  const rows: number[][] = [];
  const rowTypes: number[][] = [];
  const example: number[] = [];
  const starts: number[] = [];
  const ends: number[] = [];
  const contextAt: number[] = [];
  const contextFrom: number[] = [];
  const contextCount: number[] = [];
  const contexts: ContextTokens[] = [];
  for (const [e, ex] of examples.entries()) {
    // run_qa.py strips the question's leading whitespace ("some questions have lots of it").
    const question = tokenizer.tokenIds(ex.question.trimStart());
    const context = contextTokens(tokenizer, ex.context);
    contexts.push(context);
    const head = [...before, ...question, ...between];
    const room = settings.maxLength - head.length - after.length;
    // A context that needs windows needs them to advance: the fast tokenizer refuses a stride
    // that is not shorter than the room.
    if (room < 1 || (context.ids.length > room && room <= settings.docStride)) {
      throw new InputError(
        `question ${ex.id}: its ${question.length} tokens leave ${Math.max(room, 0)} context tokens per window at maxLength ${settings.maxLength}, ` +
          `which must be more than docStride ${settings.docStride} for a context of ${context.ids.length} tokens: give a larger maxLength or a smaller docStride`,
      );
    }
    const headTypes = [...types.before, ...question.map(() => types.a), ...types.between];
    for (const from of windowStarts(context.ids.length, room, settings.docStride)) {
      const count = Math.min(room, context.ids.length - from);
      rows.push([...head, ...context.ids.slice(from, from + count), ...after]);
      rowTypes.push([...headTypes, ...Array<number>(count).fill(types.b), ...types.after]);
      const [start, end] = answerLabels(ex, context.spans.slice(from, from + count), head.length, head.length + count + after.length);
      example.push(e);
      starts.push(start);
      ends.push(end);
      contextAt.push(head.length);
      contextFrom.push(from);
      contextCount.push(count);
    }
  }
  return {
    encoded: padRows(rows, settings.tokenTypes ? rowTypes : null, tokenizer.padId, settings.maxLength),
    example: Int32Array.from(example),
    starts: Int32Array.from(starts),
    ends: Int32Array.from(ends),
    contextAt: Int32Array.from(contextAt),
    contextFrom: Int32Array.from(contextFrom),
    contextCount: Int32Array.from(contextCount),
    contexts,
  };
}

/**
 * Where each window starts among a context's `n` tokens: every `room - docStride` tokens, until a
 * window reaches the end (the fast tokenizer's overflowing windows; one window, maybe empty,
 * for a context that fits).
 */
export function windowStarts(n: number, room: number, docStride: number): number[] {
  const starts = [0];
  while (starts.at(-1)! + room < n) starts.push(starts.at(-1)! + room - docStride);
  return starts;
}

/**
 * A window's labels, as prepare_train_features walks the offsets: the row's first token twice
 * unless the window's context tokens (`spans`, from row position `at`) hold the first answer's
 * characters; then the token where the answer starts and the one where it ends. The walk is
 * run_qa.py's, quirk included: where the answer starts in the window's last token, the walk
 * steps past it onto the trailing special tokens (their offsets are (0, 0)) and the start label
 * is the row's last token.
 */
function answerLabels(ex: QuestionExample, spans: ReadonlyArray<[number, number]>, at: number, rowLength: number): [number, number] {
  if (ex.answers.text.length === 0 || spans.length === 0) return [0, 0];
  const startChar = ex.answers.answerStart[0]!;
  const endChar = startChar + ex.answers.text[0]!.length;
  if (!(spans[0]![0] <= startChar && spans.at(-1)![1] >= endChar)) return [0, 0];
  let s = 0;
  while (s < spans.length && spans[s]![0] <= startChar) s++;
  // Past the context the (0, 0) offsets of the special tokens keep the walk going to the row's end.
  const start = s < spans.length ? at + s - 1 : rowLength - 1;
  let e = spans.length - 1;
  while (e >= 0 && spans[e]![1] >= endChar) e--;
  // Before the context, a special token's end offset 0 stops the walk (endChar > 0 there).
  return [start, at + e + 1];
}

/** Rows right-padded to `seqLen` (pad id, attention 0, token type 0). */
function padRows(rows: readonly number[][], types: readonly number[][] | null, padId: number, seqLen: number): EncodedTexts {
  const inputIds = new Int32Array(rows.length * seqLen).fill(padId);
  const attentionMask = new Int32Array(rows.length * seqLen);
  const tokenTypeIds = types ? new Int32Array(rows.length * seqLen) : undefined;
  const lengths = new Int32Array(rows.length);
  for (const [r, row] of rows.entries()) {
    inputIds.set(row, r * seqLen);
    attentionMask.fill(1, r * seqLen, r * seqLen + row.length);
    tokenTypeIds?.set(types![r]!, r * seqLen);
    lengths[r] = row.length;
  }
  return { inputIds, attentionMask, ...(tokenTypeIds ? { tokenTypeIds } : {}), count: rows.length, seqLen, lengths };
}

/** A window's offsets, position by position over `width` positions: the context tokens' characters, null elsewhere (postprocessing's offset mapping). */
export function windowOffsets(windows: QuestionWindows, w: number, width: number): Array<[number, number] | null> {
  const spans = windows.contexts[windows.example[w]!]!.spans;
  const at = windows.contextAt[w]!;
  const from = windows.contextFrom[w]!;
  const count = windows.contextCount[w]!;
  return Array.from({ length: width }, (_, p) => (p >= at && p < at + count ? spans[from + p - at]! : null));
}
