/**
 * Extractive question answering's examples: a question, the context holding its answer, and the
 * gold answers as the context's characters. Read from SQuAD's own JSON (train-v1.1.json,
 * dev-v2.0.json: articles of paragraphs of questions) or from Hugging Face datasets' flat records
 * (`squad` / `squad_v2` as `to_json()` writes them: JSON Lines, or a JSON array). This mirrors
 * what run_qa.py gets from `load_dataset` (datasets' squad.py / squad_v2.py loading scripts turn
 * the nested JSON into the flat records), with one difference: run_qa.py trusts that an answer's
 * text is the context's characters at its answer_start, and we refuse an answer that is not.
 */

import { InputError } from '../addon/errors.js';
import { readTextFile } from '../data/data.js';
import { parseRecords } from '../data/json-records.js';

/**
 * One question. `answers.answerStart` are offsets into `context` as a JavaScript string indexes
 * it (UTF-16 code units), converted from the file's answer_start, which counts characters as
 * Python does (code points): the two differ only after a character outside the Basic
 * Multilingual Plane (an emoji, a rare CJK ideograph). No answers: the question has none in its
 * context (SQuAD 2.0's is_impossible).
 */
export interface QuestionExample {
  id: string;
  question: string;
  context: string;
  answers: { text: string[]; answerStart: number[] };
}

/** Where an example was read (a message's `FILE line N (id 'X')`), kept beside it until ids are checked. */
interface Located {
  example: QuestionExample;
  where: string;
  file: string;
}

/** Read one file's questions: SQuAD's JSON (an object with `data`), else datasets' records. An empty file is an InputError. */
export async function readQuestionFile(file: string): Promise<QuestionExample[]> {
  return uniqueIds(await readLocated(file)).map((l) => l.example);
}

/** Several files (a dataset in parts), concatenated in order; an id must not repeat across them. */
export async function readQuestionFiles(files: readonly string[]): Promise<QuestionExample[]> {
  if (files.length === 0) throw new InputError('no data files given: name at least one file of questions');
  const parts = await Promise.all(files.map(readLocated));
  return uniqueIds(parts.flat()).map((l) => l.example);
}

async function readLocated(file: string): Promise<Located[]> {
  const content = (await readTextFile(file)).toString('utf8').replace(/^\uFEFF/, '');
  const squad = squadDocument(content);
  const located = squad === undefined ? readFlatRecords(file, content) : readSquadDocument(file, squad);
  if (located.length === 0) {
    throw new InputError(
      `data file ${file} has no questions (expected SQuAD's JSON, {"data": [{"paragraphs": [{"context", "qas": [...]}]}]}, or records {"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}}, one per line or in an array)`,
      { file },
    );
  }
  return located;
}

/** Predictions are keyed by id (squadMetrics), so an id read twice would score one prediction twice. */
function uniqueIds(located: Located[]): Located[] {
  const seen = new Map<string, string>();
  for (const { example, where, file } of located) {
    const first = seen.get(example.id);
    if (first !== undefined) {
      throw new InputError(`${where}: the id '${example.id}' was given before, at ${first}; each question has an id of its own`, { file });
    }
    seen.set(example.id, where);
  }
  return located;
}

/**
 * SQuAD's JSON is one object with a `data` list; datasets' records never have that field. Anything
 * else (JSON Lines, whose whole text is not one JSON value; an array) is left to parseRecords.
 */
function squadDocument(content: string): Record<string, unknown> | undefined {
  if (!content.trimStart().startsWith('{')) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(content);
  } catch {
    return undefined;
  }
  return isObject(value) && Object.hasOwn(value, 'data') ? value : undefined;
}

/** SQuAD's nesting: data[].paragraphs[].qas[], each question with the paragraph's context. */
function readSquadDocument(file: string, document: Record<string, unknown>): Located[] {
  const out: Located[] = [];
  list(document, 'data', file, file).forEach((article, i) => {
    const articleWhere = `${file} data[${i}]`;
    list(object(article, articleWhere, file), 'paragraphs', articleWhere, file).forEach((paragraph, j) => {
      const paragraphWhere = `${articleWhere}.paragraphs[${j}]`;
      const fields = object(paragraph, paragraphWhere, file);
      const context = text(fields, 'context', paragraphWhere, file);
      list(fields, 'qas', paragraphWhere, file).forEach((qa, k) => {
        out.push(squadQuestion(object(qa, `${paragraphWhere}.qas[${k}]`, file), context, `${paragraphWhere}.qas[${k}]`, file));
      });
    });
  });
  return out;
}

/** One of SQuAD's questions: answers are a list of {text, answer_start}; is_impossible ones have none (plausible_answers are not answers). */
function squadQuestion(qa: Record<string, unknown>, context: string, location: string, file: string): Located {
  const id = text(qa, 'id', location, file);
  const where = `${location} (id '${id}')`;
  const question = text(qa, 'question', where, file);
  const answers = list(qa, 'answers', where, file).map((answer, a) => object(answer, `${where} answer ${a + 1}`, file));
  const impossible = qa.is_impossible ?? false;
  if (typeof impossible !== 'boolean')
    throw new InputError(`${where}: field 'is_impossible' is ${describe(impossible)}, not true or false`, { file });
  if (impossible && answers.length > 0) {
    throw new InputError(`${where} is_impossible but has ${answers.length} answers: an unanswerable question's answers are []`, { file });
  }
  const texts = answers.map((answer, a) => text(answer, 'text', `${where} answer ${a + 1}`, file));
  const starts = answers.map((answer, a) => field(answer, 'answer_start', `${where} answer ${a + 1}`, file));
  return { example: { id, question, context, answers: checkedAnswers(context, texts, starts, where, file) }, where, file };
}

/** datasets' flat records: {"id", "title", "context", "question", "answers": {"text": [...], "answer_start": [...]}}. */
function readFlatRecords(file: string, content: string): Located[] {
  const shape = '{"id": ..., "question": ..., "context": ..., "answers": {"text": [...], "answer_start": [...]}}';
  return parseRecords(file, content, shape).map((record) => {
    const id = text(record.fields, 'id', record.where, file);
    const where = `${record.where} (id '${id}')`;
    const context = text(record.fields, 'context', where, file);
    const question = text(record.fields, 'question', where, file);
    const answers = object(field(record.fields, 'answers', where, file), `${where}: field 'answers'`, file);
    const texts = list(answers, 'text', `${where}: answers`, file).map((t, a) => {
      if (typeof t === 'string') return t;
      throw new InputError(`${where}: answers.text item ${a + 1} is ${describe(t)}, not a text`, { file });
    });
    const starts = list(answers, 'answer_start', `${where}: answers`, file);
    if (texts.length !== starts.length) {
      throw new InputError(
        `${where}: answers has ${texts.length} texts but ${starts.length} answer_starts: each answer's text has its start`,
        { file },
      );
    }
    return { example: { id, question, context, answers: checkedAnswers(context, texts, starts, where, file) }, where, file };
  });
}

/**
 * The answers with their starts as UTF-16 offsets, each checked: an integer start in the context
 * (in code points, as Python counts the file's), and the context's characters there the answer's
 * text. run_qa.py labels the tokens at answer_start, so a wrong start trains on the wrong words.
 */
function checkedAnswers(context: string, texts: string[], starts: unknown[], where: string, file: string): QuestionExample['answers'] {
  const units = codeUnitOffsets(context);
  const answerStart = starts.map((start, a) => {
    const length = units === null ? context.length : units.length - 1;
    if (typeof start !== 'number' || !Number.isInteger(start) || start < 0 || start > length) {
      throw new InputError(
        `${where}: answer ${a + 1}'s answer_start is ${describe(start)}; it is an integer from 0 to the context's length, ${length}`,
        { file },
      );
    }
    const unit = units === null ? start : units[start]!;
    const found = context.slice(unit, unit + texts[a]!.length);
    if (found !== texts[a]) {
      throw new InputError(
        `${where}: answer ${a + 1} is ${JSON.stringify(texts[a])} but the context at its answer_start ${start} reads ${JSON.stringify(found)}: an answer is the context's characters at its start`,
        { file },
      );
    }
    return unit;
  });
  return { text: texts, answerStart };
}

/** The UTF-16 offset of each code point offset 0..N of `text`; null where they are the same (no surrogates: the usual case). */
function codeUnitOffsets(text: string): number[] | null {
  if (!/[\uD800-\uDFFF]/.test(text)) return null;
  const offsets: number[] = [];
  let unit = 0;
  // for...of steps by code point, as Python's str indexes (a lone surrogate is one step in both).
  for (const character of text) {
    offsets.push(unit);
    unit += character.length;
  }
  offsets.push(unit);
  return offsets;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function object(value: unknown, where: string, file: string): Record<string, unknown> {
  if (isObject(value)) return value;
  throw new InputError(`${where} is ${describe(value)}, not a JSON object`, { file });
}

function field(fields: Record<string, unknown>, name: string, where: string, file: string): unknown {
  if (Object.hasOwn(fields, name)) return fields[name];
  throw new InputError(`${where} has no field '${name}' (its fields: ${Object.keys(fields).join(', ') || 'none'})`, { file, column: name });
}

function text(fields: Record<string, unknown>, name: string, where: string, file: string): string {
  const value = field(fields, name, where, file);
  if (typeof value === 'string') return value;
  throw new InputError(`${where}: field '${name}' is ${describe(value)}, not a text`, { file, column: name });
}

function list(fields: Record<string, unknown>, name: string, where: string, file: string): unknown[] {
  const value = field(fields, name, where, file);
  if (Array.isArray(value)) return value;
  throw new InputError(`${where}: field '${name}' is ${describe(value)}, not a list`, { file, column: name });
}

/** A JSON value as a message shows it: its type, and its start. */
function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  const json = JSON.stringify(value);
  const shown = json.length > 40 ? `${json.slice(0, 40)}...` : json;
  return `${Array.isArray(value) ? 'a list' : typeof value === 'object' ? 'an object' : `a ${typeof value}`} (${shown})`;
}
