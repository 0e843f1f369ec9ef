/**
 * Sentences of words as token rows, each word's tag on its first token: how Hugging Face's
 * run_ner.py aligns labels (`tokenize_and_align_labels` with `label_all_tokens=False`; its `True`
 * is everyTokenTagged). Each
 * word is tokenized on its own (is_split_into_words), the row is the words' tokens between the
 * tokenizer's special tokens, cut to the max length (a word whose first token is cut has no
 * position, as its label falls off in run_ner.py), and the positions a token classifier
 * predicts are the words' first tokens (StepBatch.positions).
 */
import type { StepBatch } from '../addon/binding.js';
import { InputError } from '../addon/errors.js';
import { gatherRows, stepBatch } from './batching.js';
import type { EncodedTexts, TextTokenizer } from './tokenizer.js';

/** Sentences as token rows, and where each word starts in its row. */
export interface WordRows {
  encoded: EncodedTexts;
  /** Per sentence, each word's first token (an index into its row); -1 for a word without one (no token, or cut). */
  firstTokens: Int32Array[];
  /** Per sentence, how many of each word's tokens its row holds (from its first on); 0 for a word without one. */
  tokenCounts: Int32Array[];
}

/**
 * A word's token ids, encoded with a space before it: what run_ner.py's `add_prefix_space=True`
 * gives a byte-level (RoBERTa) tokenizer's words, and nothing for WordPiece (BERT splits at the
 * space) or a SentencePiece tokenizer (its word-start marker either way).
 */
export function wordIds(tokenizer: TextTokenizer, word: string): number[] {
  return tokenizer.tokenIds(` ${word}`);
}

/** `wordIds`, each distinct word encoded once. */
function wordPieces(tokenizer: TextTokenizer): (word: string) => number[] {
  const pieces = new Map<string, number[]>();
  return (word) => {
    const known = pieces.get(word);
    if (known) return known;
    const ids = wordIds(tokenizer, word);
    pieces.set(word, ids);
    return ids;
  };
}

/** The tokens a row has for words, between the special tokens. */
function roomFor(tokenizer: TextTokenizer, maxLength: number): number {
  const { prefix, suffix } = tokenizer.framing;
  const room = maxLength - prefix.length - suffix.length;
  if (room < 1) throw new InputError(`maxLength ${maxLength} leaves no room for words between the special tokens`);
  return room;
}

/** Token rows of `sentences`, at most `maxLength` tokens each (see the top). */
export function encodeWords(tokenizer: TextTokenizer, sentences: readonly (readonly string[])[], maxLength: number): WordRows {
  const { prefix, suffix } = tokenizer.framing;
  const room = roomFor(tokenizer, maxLength);
  const piecesOf = wordPieces(tokenizer);
  const rows: number[][] = [];
  const tokenCounts: Int32Array[] = [];
  const firstTokens = sentences.map((words) => {
    const row = [...prefix];
    const first = new Int32Array(words.length).fill(-1);
    const counts = new Int32Array(words.length);
    for (const [w, word] of words.entries()) {
      const ids = piecesOf(word);
      if (ids.length === 0 || row.length - prefix.length >= room) continue;
      first[w] = row.length;
      const kept = ids.slice(0, room - (row.length - prefix.length));
      counts[w] = kept.length;
      row.push(...kept);
    }
    rows.push([...row, ...suffix]);
    tokenCounts.push(counts);
    return first;
  });
  return { encoded: packRows(rows, tokenizer.padId), firstTokens, tokenCounts };
}

/**
 * run_ner.py's `label_all_tokens=True`: every token of a word labelled, its first with the word's
 * tag, the others with `continuation[tag]` (run_ner.py's `b_to_i_label`: B-X's I-X where the tags
 * have one). Returned as rows in which each such token is a word of its own, one token long, with
 * those tags: the batches, the loss and validation's predictions are then the tokens', as
 * run_ner.py trains and scores them. A word without a token (none, or cut) still has none.
 */
export function everyTokenTagged(
  rows: WordRows,
  tags: readonly Int32Array[],
  continuation: ArrayLike<number>,
): { rows: WordRows; tags: Int32Array[] } {
  const firstTokens: Int32Array[] = [];
  const tokenTags: Int32Array[] = [];
  rows.firstTokens.forEach((firsts, s) => {
    const positions: number[] = [];
    const labels: number[] = [];
    firsts.forEach((token, w) => {
      const tag = tags[s]![w]!;
      for (let k = 0; k < rows.tokenCounts[s]![w]!; k++) {
        positions.push(token + k);
        labels.push(k === 0 ? tag : continuation[tag]!);
      }
    });
    firstTokens.push(Int32Array.from(positions));
    tokenTags.push(Int32Array.from(labels));
  });
  const tokenCounts = firstTokens.map((f) => new Int32Array(f.length).fill(1));
  return { rows: { encoded: rows.encoded, firstTokens, tokenCounts }, tags: tokenTags };
}

/** Sentences cut into windows of whole words; `from[i]` is where window i's first word is. */
export interface SentenceWindows {
  windows: string[][];
  from: Array<{ sentence: number; word: number }>;
}

/**
 * Sentences longer than `maxLength` tokens cut into consecutive windows of whole words, each
 * within it (a word longer than a row on its own is a window alone: its first token is still
 * read), so that every word is predicted; a sentence that fits is one window. A word's context is
 * its window's words.
 */
export function sentenceWindows(tokenizer: TextTokenizer, sentences: readonly (readonly string[])[], maxLength: number): SentenceWindows {
  const room = roomFor(tokenizer, maxLength);
  const piecesOf = wordPieces(tokenizer);
  const out: SentenceWindows = { windows: [], from: [] };
  sentences.forEach((words, sentence) => {
    let start = 0;
    let used = 0;
    words.forEach((word, w) => {
      const count = piecesOf(word).length;
      if (used + count > room && w > start) {
        out.windows.push(words.slice(start, w));
        out.from.push({ sentence, word: start });
        [start, used] = [w, 0];
      }
      used += count;
    });
    out.windows.push(words.slice(start));
    out.from.push({ sentence, word: start });
  });
  return out;
}

/** Rows of ids as EncodedTexts, padded to the longest. */
function packRows(rows: readonly number[][], padId: number): EncodedTexts {
  const seqLen = Math.max(1, ...rows.map((r) => r.length));
  const inputIds = new Int32Array(rows.length * seqLen).fill(padId);
  const attentionMask = new Int32Array(rows.length * seqLen);
  const lengths = new Int32Array(rows.length);
  for (const [r, row] of rows.entries()) {
    inputIds.set(row, r * seqLen);
    attentionMask.fill(1, r * seqLen, r * seqLen + row.length);
    lengths[r] = row.length;
  }
  return { inputIds, attentionMask, count: rows.length, seqLen, lengths };
}

/** A batch of sentences with the positions of their words' first tokens (or all their tokens), in sentence and word order. */
export type WordBatch = StepBatch & { positions: Int32Array };

/**
 * The batch of sentences `indices` (padded to its longest row), its positions (each word with a
 * first token, sentence by sentence; with `everyToken`, each of the word's tokens), and with
 * `tags` (class ids per word) the positions' labels.
 */
export function wordBatch(rows: WordRows, indices: ArrayLike<number>, tags?: readonly Int32Array[], everyToken = false): WordBatch {
  const gathered = gatherRows(rows.encoded, indices);
  const positions: number[] = [];
  const labels: number[] = [];
  for (let r = 0; r < indices.length; r++) {
    const sentence = indices[r]!;
    for (const [w, token] of rows.firstTokens[sentence]!.entries()) {
      if (token < 0) continue;
      const count = everyToken ? rows.tokenCounts[sentence]![w]! : 1;
      for (let k = 0; k < count; k++) {
        positions.push(r * gathered.seqLen + token + k);
        if (tags) labels.push(tags[sentence]![w]!);
      }
    }
  }
  return { ...stepBatch(gathered, tags ? Int32Array.from(labels) : undefined), positions: Int32Array.from(positions) };
}

/**
 * Per-position results of `wordBatch(rows, indices)` back onto the words: `values[k]` is the
 * k-th position's; a word without a position gets `missing`.
 */
export function perWord(rows: WordRows, indices: ArrayLike<number>, values: ArrayLike<number>, missing: number): Int32Array[] {
  let k = 0;
  return Array.from({ length: indices.length }, (_, r) =>
    rows.firstTokens[indices[r]!]!.map((token) => (token < 0 ? missing : values[k++]!)),
  );
}

/**
 * Where each of a word's tokens (`ids`, its `wordIds`) is in the text, [start, end): the word
 * decoded a token more at a time (the tokenizer's decoder: WordPiece's '##', a byte-level 'Ġ',
 * SentencePiece's '▁'), the lengths mapped onto the word's characters, where the whole decodes to
 * as many characters as the word has (lowercasing and precomposed accents stripped keep them);
 * otherwise each token spans the whole word. A byte-level token that ends inside a character (a
 * character of several UTF-8 bytes split between tokens: the decoded prefix ends in U+FFFD)
 * spans that whole character, and so does the next token, as the fast tokenizer's offsets say.
 */
export function tokenSpans(tokenizer: TextTokenizer, word: TextWord, ids: readonly number[]): Array<[number, number]> {
  // A word the tokenizer drops whole (a control character BERT's normalizer deletes) has no token to place.
  if (ids.length === 0) return [];
  const decoded = (k: number) => tokenizer.decode(ids.slice(0, k)).trimStart();
  if (decoded(ids.length).length !== word.word.length) return ids.map(() => [word.start, word.end]);
  // The start of the token to come: the end of the characters decoded whole so far.
  let from = 0;
  return ids.map((_, k) => {
    const text = decoded(k + 1);
    const partial = text.endsWith('\uFFFD') && word.word[text.length - 1] !== '\uFFFD';
    const whole = Math.max(from, Math.min(partial ? text.length - 1 : text.length, word.word.length));
    // A character cut by the token's end is the token's too (one or two UTF-16 units).
    const cut = partial && whole < word.word.length ? String.fromCodePoint(word.word.codePointAt(whole)!).length : 0;
    const span: [number, number] = [word.start + from, word.start + whole + cut];
    from = whole;
    return span;
  });
}

/** A word of a text and where it is: the characters [start, end). */
export interface TextWord {
  word: string;
  start: number;
  end: number;
}

/**
 * BERT's pre-tokenizer's punctuation: Unicode's (P*) and every ASCII character that is not a
 * letter, a digit or a space ($, +, <, ^, `, |, ~ included).
 */
const WORDS = /[^\s\p{P}!-/:-@[-`{-~]+|[\p{P}!-/:-@[-`{-~]/gu;

/**
 * A text's words as BERT's pre-tokenizer splits it (BertPreTokenizer): at whitespace, and each
 * punctuation character a word of its own ("don't" is don, ', t), so that a text's words are the
 * words its tokens belong to, and an entity's characters are its words'.
 */
export function splitWords(text: string): TextWord[] {
  return Array.from(text.matchAll(WORDS), (m) => ({ word: m[0], start: m.index, end: m.index + m[0].length }));
}
