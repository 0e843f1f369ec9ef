/**
 * Pretraining data: texts from CSV columns or plain text files, tokenized either one text per
 * row (`lineByLine`) or concatenated and cut into blocks (transformers' run_mlm.py), and the
 * masked batch of some rows.
 */

import type { StepBatch } from '../addon/binding.js';
import { InputError } from '../addon/errors.js';
import { gatherRows } from './batching.js';
import { checkFilesNamedOnce, DEFAULT_TEXT_COLUMN, readDataFile, readTextFile } from './data.js';
import { isJsonFile } from './json-records.js';
import { type MaskingOptions, type MaskingVocabulary, maskExample } from './mlm-masking.js';
import type { EncodedTexts, TextTokenizer } from './tokenizer.js';

/** A data file read by columns (a CSV file's textColumn, a JSON file's field), not as a document per line: by its extension. */
export const hasColumns = (file: string): boolean => file.toLowerCase().endsWith('.csv') || isJsonFile(file);

/**
 * The non-blank texts of every file in order: a `.csv` file's `textColumn`, a JSON file's
 * `textColumn` field (JSON Lines, or an array of records: readJsonRecords), or each line of any
 * other file (run_mlm.py's extensions; its line-by-line reading drops empty and whitespace-only texts).
 */
export async function readPretrainingTexts(files: readonly string[], textColumn = DEFAULT_TEXT_COLUMN): Promise<string[]> {
  if (files.length === 0) throw new InputError('pretrain(): `data` must name at least one file');
  await checkFilesNamedOnce(files);
  const texts: string[] = [];
  for (const file of files) {
    if (hasColumns(file)) {
      // Blank, as a text file's blank lines: a row of special tokens alone, with nothing to mask.
      texts.push(...(await readDataFile(file, { textColumn, labelsRequired: false })).texts.filter((t) => t.trim().length > 0));
      continue;
    }
    // Checked as a CSV file is (UTF-8, not empty, no NUL), its BOM dropped: read as 'utf8' alone,
    // invalid bytes became U+FFFD and trained as [UNK], and a BOM began the first text.
    const content = (await readTextFile(file)).toString('utf8').replace(/^\uFEFF/, '');
    // Lines end at LF, CRLF or a lone CR, as Python's universal newlines read them (run_mlm.py's datasets).
    for (const line of content.split(/\r\n?|\n/)) if (line.trim().length > 0) texts.push(line);
  }
  if (texts.length === 0) throw new InputError(`pretrain(): no text in ${files.join(', ')}`);
  return texts;
}

/** run_mlm.py maps group_texts over batches of 1000 texts (datasets' default): each batch's remainder is dropped. */
const GROUP_BATCH = 1000;

/**
 * run_mlm.py's default preprocessing: every text tokenized whole with its special tokens
 * ([CLS] text [SEP] for BERT: `tokenizer(examples[text_column_name],
 * return_special_tokens_mask=True)`), the token lists of each 1000 texts concatenated, the
 * remainder that does not fill a block dropped, and blocks of `blockSize` tokens cut (group_texts).
 * So a block holds the special tokens of the texts inside it, and need not start with [CLS].
 */
export function groupTexts(tokenizer: TextTokenizer, texts: readonly string[], blockSize: number): EncodedTexts {
  const blocks: number[][] = [];
  for (let start = 0; start < texts.length; start += GROUP_BATCH) {
    const all: number[] = [];
    for (const text of texts.slice(start, start + GROUP_BATCH)) for (const id of tokenizer.encodeWhole(text)) all.push(id);
    const total = Math.floor(all.length / blockSize) * blockSize;
    for (let at = 0; at < total; at += blockSize) blocks.push(all.slice(at, at + blockSize));
  }
  const count = blocks.length;
  const inputIds = new Int32Array(count * blockSize);
  for (const [i, b] of blocks.entries()) inputIds.set(b, i * blockSize);
  return {
    inputIds,
    attentionMask: new Int32Array(count * blockSize).fill(1),
    count,
    seqLen: blockSize,
    lengths: new Int32Array(count).fill(blockSize),
  };
}

/** One text per row, truncated to `maxLength` (run_mlm.py --line_by_line), padded to `maxLength`. */
export function lineByLine(tokenizer: TextTokenizer, texts: readonly string[], maxLength: number): Promise<EncodedTexts> {
  return tokenizer.encodeBatchAsync(texts, maxLength);
}

/**
 * The masked batch of `rows` (indices into `data`), padded to its longest row: each row masked
 * by its own index and `epoch` (mlm-masking.ts), its masked positions as flat indices into the
 * batch, its labels the original ids there.
 */
export function maskedBatch(
  data: EncodedTexts,
  rows: ArrayLike<number>,
  epoch: number,
  vocab: MaskingVocabulary,
  options: MaskingOptions,
): StepBatch & { positions: Int32Array; labels: Int32Array } {
  const batch = gatherRows(data, rows);
  const positions: number[] = [];
  const labels: number[] = [];
  for (let r = 0; r < batch.count; r++) {
    const index = rows[r]!;
    const start = r * batch.seqLen;
    const masked = maskExample(batch.inputIds.subarray(start, start + batch.lengths[r]!), index, epoch, vocab, options);
    batch.inputIds.set(masked.inputIds, start);
    for (let k = 0; k < masked.positions.length; k++) {
      positions.push(start + masked.positions[k]!);
      labels.push(masked.labels[k]!);
    }
  }
  return {
    inputIds: batch.inputIds,
    attentionMask: batch.attentionMask,
    batchSize: batch.count,
    seqLen: batch.seqLen,
    positions: Int32Array.from(positions),
    labels: Int32Array.from(labels),
  };
}
