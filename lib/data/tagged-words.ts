/**
 * Token classification's examples (NER, POS tagging): sentences as words, one tag per word, read
 * from a CoNLL file (a word per line, its tag in the last column, a blank line between sentences)
 * or from JSON: JSON Lines or an array of records, each with a list of words and a list of tags,
 * as Hugging Face datasets' `to_json()` writes conll2003, wnut_17 or wikiann.
 */

import { InputError } from '../addon/errors.js';
import { readTextFile } from './data.js';
import { isJsonFile, type JsonRecord, parseRecords } from './json-records.js';

/** Sentences as words, each word with one tag (token classification's examples). */
export interface TaggedSentences {
  words: string[][];
  tags: string[][];
  /** Where each sentence is, for messages: 'FILE line N' (its first word's line; a JSON array's: 'FILE record N'). */
  origins: string[];
}

export interface TaggedReadOptions {
  /** JSON data's field of words. Default 'tokens'. */
  wordsColumn?: string;
  /** JSON data's field of tags. Default 'ner_tags'. */
  tagsColumn?: string;
  /** Tag names by class id, for integer tags (and the tag set's order). */
  labels?: readonly string[];
}

/** The fields Hugging Face datasets' conll2003, wnut_17 and wikiann name their words and tags. */
export const DEFAULT_WORDS_COLUMN = 'tokens';
export const DEFAULT_TAGS_COLUMN = 'ner_tags';

/** Read one data file's sentences: JSON by its name (isJsonFile), else CoNLL columns. */
export async function readTaggedFile(file: string, options: TaggedReadOptions = {}): Promise<TaggedSentences> {
  const content = (await readTextFile(file)).toString('utf8').replace(/^\uFEFF/, '');
  const json = isJsonFile(file);
  const sentences = json ? readJsonSentences(file, content, options) : readConll(file, content);
  if (sentences.words.length === 0) {
    const expected = json
      ? `JSON Lines or an array of records, each with a list of words '${options.wordsColumn ?? DEFAULT_WORDS_COLUMN}' and of tags '${options.tagsColumn ?? DEFAULT_TAGS_COLUMN}'`
      : 'CoNLL columns: a word and its tag per line, a blank line between sentences';
    throw new InputError(`data file ${file} has no sentences (expected ${expected})`, { file });
  }
  return sentences;
}

/** Several files (a dataset in parts), concatenated in order; an empty result is an InputError. */
export async function readTaggedFiles(files: readonly string[], options: TaggedReadOptions = {}): Promise<TaggedSentences> {
  // Each part must hold sentences itself (readTaggedFile): an empty part is a wrong file, not a short one.
  const parts = await Promise.all(files.map((file) => readTaggedFile(file, options)));
  if (parts.length === 0) throw new InputError('no data files given: name at least one file of tagged sentences');
  return {
    words: parts.flatMap((p) => p.words),
    tags: parts.flatMap((p) => p.tags),
    origins: parts.flatMap((p) => p.origins),
  };
}

/**
 * The tag set: `given` (each tag read must be one of them: else InputError naming the tag and
 * where it is), else the tags read, sorted (run_ner.py's get_label_list: sorted(set(tags))).
 */
export function tagNames(sentences: TaggedSentences, given?: readonly string[]): string[] {
  if (given === undefined) return [...new Set(sentences.tags.flat())].sort();
  const duplicate = given.find((name, i) => given.indexOf(name) !== i);
  if (duplicate !== undefined)
    throw new InputError(`the tag '${duplicate}' is given twice in labels (--labels): each class id has one name`);
  tagIds(sentences, given);
  return [...given];
}

/** The tags as class ids into `names`, one Int32Array per sentence. */
export function tagIds(sentences: TaggedSentences, names: readonly string[]): Int32Array[] {
  const ids = new Map(names.map((name, i) => [name, i]));
  return sentences.tags.map((tags, s) =>
    Int32Array.from(tags, (tag, w) => {
      const id = ids.get(tag);
      if (id !== undefined) return id;
      throw new InputError(
        `${sentences.origins[s]}: tag '${tag}' (word ${w + 1}, '${sentences.words[s]![w]}') is not one of the tags (${names.join(', ')}); add it to labels (--labels), or leave labels out to use the tags read`,
      );
    }),
  );
}

function addSentence(out: TaggedSentences, words: string[], tags: string[], origin: string): void {
  // A sentence of no words has nothing to learn from.
  if (words.length === 0) return;
  out.words.push(words);
  out.tags.push(tags);
  out.origins.push(origin);
}

/**
 * Only spaces and tabs separate columns (and trim lines): other Unicode spaces (no-break,
 * zero-width) can be a corpus's words. A trailing CR is a CRLF file's line end.
 */
const COLUMN_SEPARATOR = /[ \t]+/;
const LINE_EDGES = /^[ \t\r]+|[ \t\r]+$/g;

/**
 * CoNLL columns: the word first, the tag last, whatever is between: CoNLL-2003's lines are
 * `EU NNP B-NP B-ORG` (word, POS, chunk, NER tag), WNUT's and WikiANN's `word<TAB>tag`.
 */
function readConll(file: string, content: string): TaggedSentences {
  const out: TaggedSentences = { words: [], tags: [], origins: [] };
  let words: string[] = [];
  let tags: string[] = [];
  let start = 0;
  const endSentence = () => {
    addSentence(out, words, tags, `${file} line ${start}`);
    words = [];
    tags = [];
  };
  content.split('\n').forEach((raw, i) => {
    const line = raw.replace(LINE_EDGES, '');
    // -DOCSTART- separates CoNLL-2003's documents: no word, and no sentence runs across it.
    if (line === '' || line.startsWith('-DOCSTART-')) {
      endSentence();
      return;
    }
    const columns = line.split(COLUMN_SEPARATOR);
    if (columns.length < 2) {
      throw new InputError(
        `${file} line ${i + 1}: '${line.slice(0, 60)}' has no tag: a line is a word and its tag separated by spaces or tabs (the word first, the tag last), a blank line between sentences`,
        { file },
      );
    }
    if (words.length === 0) start = i + 1;
    words.push(columns[0]!);
    tags.push(columns.at(-1)!);
  });
  endSentence();
  return out;
}

function readJsonSentences(file: string, content: string, options: TaggedReadOptions): TaggedSentences {
  const wordsColumn = options.wordsColumn ?? DEFAULT_WORDS_COLUMN;
  const tagsColumn = options.tagsColumn ?? DEFAULT_TAGS_COLUMN;
  const out: TaggedSentences = { words: [], tags: [], origins: [] };
  for (const record of parseRecords(file, content, '{"tokens": [...], "ner_tags": [...]}')) {
    const words = list(record, wordsColumn, 'wordsColumn / --words-column', file);
    const tags = list(record, tagsColumn, 'tagsColumn / --tags-column', file);
    if (words.length !== tags.length) {
      throw new InputError(
        `${record.where}: '${wordsColumn}' has ${words.length} words but '${tagsColumn}' has ${tags.length} tags: each word has one tag`,
        { file },
      );
    }
    const where = (k: number, column: string) => `${record.where}: field '${column}' item ${k + 1}`;
    addSentence(
      out,
      words.map((word, k) => {
        if (typeof word === 'string') return word;
        throw new InputError(`${where(k, wordsColumn)} is ${describe(word)}, not a word (a string)`, { file, column: wordsColumn });
      }),
      tags.map((tag, k) => tagName(tag, options.labels, where(k, tagsColumn), file)),
      record.where,
    );
  }
  return out;
}

/**
 * A tag: its name, or a class id (datasets writes a Sequence(ClassLabel) as ids) naming
 * `labels[id]`; the names are the dataset's features, not in the file, so they must be given.
 */
function tagName(tag: unknown, labels: readonly string[] | undefined, where: string, file: string): string {
  if (typeof tag === 'string' && tag.trim() !== '') return tag.trim();
  if (!Number.isInteger(tag)) {
    throw new InputError(`${where} is ${describe(tag)}: a tag is a tag name or a class id`, { file });
  }
  const id = tag as number;
  const name = labels?.[id];
  if (name !== undefined && id >= 0) return name;
  const given = labels === undefined ? 'no tag names are given' : `labels names ${labels.length} tags (ids 0 to ${labels.length - 1})`;
  throw new InputError(
    `${where} is class id ${id}, but ${given}: pass labels / --labels with the dataset's tag names in id order, such as O,B-PER,I-PER,...`,
    { file },
  );
}

/** A record's list field; a record without it names its fields and the option that chooses another. */
function list(record: JsonRecord, name: string, option: string, file: string): unknown[] {
  if (!Object.hasOwn(record.fields, name)) {
    throw new InputError(
      `${record.where} has no field '${name}' (its fields: ${Object.keys(record.fields).join(', ')}); choose another with ${option}`,
      { file, column: name },
    );
  }
  const value = record.fields[name];
  if (!Array.isArray(value))
    throw new InputError(`${record.where}: field '${name}' is ${describe(value)}, not a list`, { file, column: name });
  return value;
}

/** A JSON value as a message shows it: its type, and its start. */
function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  const json = JSON.stringify(value);
  const shown = json.length > 40 ? `${json.slice(0, 40)}...` : json;
  return `${Array.isArray(value) ? 'a list' : typeof value === 'object' ? 'an object' : `a ${typeof value}`} (${shown})`;
}
