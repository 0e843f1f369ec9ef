/**
 * Labelled examples from JSON: JSON Lines (one object per line: what Hugging Face datasets'
 * `to_json()` and pandas' `to_json(orient='records', lines=True)` write) or a JSON array of
 * objects (`orient='records'`). The options name fields as they name a CSV file's columns
 * (`textColumn`, `labelColumn`, `labelColumns`, `textPairColumn`), and the examples come out as a
 * CSV file's do (`readCsv`), so everything downstream reads both alike.
 */

import { InputError, messageOf } from '../addon/errors.js';
import { type CsvReadOptions, DEFAULT_LABEL_COLUMN, DEFAULT_TEXT_COLUMN, listedClass, type RawExamples, readTextFile } from './data.js';

/** A JSON data file, by its name: `.jsonl` / `.ndjson` (JSON Lines), or `.json` (JSON Lines or an array of objects). */
export function isJsonFile(file: string): boolean {
  return /\.(json|jsonl|ndjson)$/i.test(file);
}

/** One object of the file, and where it is (for messages). */
export interface JsonRecord {
  fields: Record<string, unknown>;
  where: string;
}

/** Read a JSON Lines file, or a JSON array of objects, into texts and raw labels; every problem names the file and the line (or record). */
export async function readJsonRecords(file: string, options: CsvReadOptions = {}): Promise<RawExamples> {
  const records = parseRecords(file, (await readTextFile(file)).toString('utf8').replace(/^\uFEFF/, ''));
  if (records.length === 0) throw new InputError(`data file ${file} has no records`, { file });
  const textColumn = options.textColumn ?? DEFAULT_TEXT_COLUMN;
  const labelColumn = options.labelColumn ?? DEFAULT_LABEL_COLUMN;
  const texts = records.map((r) => textField(r, textColumn, file, 'textColumn / --text-column'));
  const pairs =
    options.textPairColumn === undefined
      ? undefined
      : records.map((r) => textField(r, options.textPairColumn!, file, 'textPairColumn / --text-pair-column'));
  const origin = (i: number) => records[i]!.where;
  const labels =
    options.labelColumns !== undefined
      ? labelColumnCells(records, options.labelColumns, file)
      : (options.labelsRequired ?? true) || records.every((r) => Object.hasOwn(r.fields, labelColumn))
        ? labelField(records, labelColumn, file)
        : { labels: null };
  return { texts, ...labels, ...(pairs ? { pairs } : {}), origin, file };
}

/**
 * The file's objects: a JSON array's, or one per non-blank line; each `where` is `FILE line N` or
 * `FILE record N`. `shape` shows a record in the message for a value that is not an object.
 */
export function parseRecords(file: string, content: string, shape = '{"text": ..., "label": ...}'): JsonRecord[] {
  const asObject = (value: unknown, where: string): JsonRecord => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new InputError(`${where}: a record is a JSON object (${shape}), got ${JSON.stringify(value)?.slice(0, 60)}`, {
        file,
      });
    }
    return { fields: value as Record<string, unknown>, where };
  };
  if (content.trimStart().startsWith('[')) {
    let array: unknown[];
    try {
      array = JSON.parse(content) as unknown[];
    } catch (err) {
      throw new InputError(`data file ${file} is not valid JSON: ${messageOf(err)}`, { file, cause: err });
    }
    return array.map((value, i) => asObject(value, `${file} record ${i + 1}`));
  }
  const records: JsonRecord[] = [];
  // Lines end at LF or CRLF (JSON Lines); a blank line holds no record.
  content.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${file} line ${i + 1}`;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      throw new InputError(`${where} is not a JSON object: ${messageOf(err)} (a JSON Lines file has one object per line)`, {
        file,
        row: records.length,
        cause: err,
      });
    }
    records.push(asObject(value, where));
  });
  return records;
}

/** A field the record must have, naming the record's fields and the option that chooses another where it has none. */
function field(record: JsonRecord, name: string, file: string, option: string): unknown {
  if (!Object.hasOwn(record.fields, name)) {
    throw new InputError(
      `${record.where} has no field '${name}' (its fields: ${Object.keys(record.fields).join(', ')}); choose another with ${option}`,
      { file, column: name },
    );
  }
  return record.fields[name];
}

function textField(record: JsonRecord, name: string, file: string, option: string): string {
  const value = field(record, name, file, option);
  if (typeof value !== 'string') {
    throw new InputError(`${record.where}: field '${name}' is ${describe(value)}, not a text`, { file, column: name });
  }
  return value;
}

/**
 * Each record's label: a class name (a string), a class id or a regression target (a number), or
 * a multi-label example's classes (a list of names, or of class ids as datasets writes a
 * Sequence(ClassLabel): go_emotions' `labels`; then every record's label is one).
 */
function labelField(records: JsonRecord[], name: string, file: string): { labels: string[]; labelSets?: string[][] } {
  const option = 'labelColumn / --label-column';
  const values = records.map((r) => field(r, name, file, option));
  if (Array.isArray(values[0])) {
    const labelSets = values.map((value, i) => {
      const classes = Array.isArray(value) ? value.map(listedClass) : [undefined];
      if (classes.some((c) => c === undefined)) {
        throw new InputError(
          `${records[i]!.where}: field '${name}' is ${describe(value)}; the first record's is a list of classes, so every record's must be one (class names or ids; empty where none applies)`,
          { file, row: i, column: name },
        );
      }
      return classes as string[];
    });
    checkNotMultiHot(labelSets, records, name, file);
    return { labels: labelSets.map((set) => set.join(',')), labelSets };
  }
  const labels = values.map((value, i) => {
    if (typeof value === 'string') return value.trim();
    if (typeof value === 'number' && Number.isFinite(value)) return String(value);
    throw new InputError(`${records[i]!.where}: field '${name}' is ${describe(value)}; a label is a class name, a class id or a number`, {
      file,
      row: i,
      column: name,
    });
  });
  return { labels };
}

/**
 * Lists of 0s and 1s of one length in every record are a multi-hot vector per example, not class
 * ids: read as ids, [0, 1, 0] would say classes 0 and 1 apply. Refused, naming what reads them.
 */
function checkNotMultiHot(sets: string[][], records: JsonRecord[], name: string, file: string): void {
  const width = sets[0]!.length;
  if (width < 2 || !sets.every((set) => set.length === width && set.every((c) => c === '0' || c === '1'))) return;
  throw new InputError(
    `${records[0]!.where}: field '${name}' holds a list of ${width} 0s and 1s in every record, a multi-hot vector: give each class a field of its own, named with labelColumns (--label-columns), or list the classes that apply (names or ids)`,
    { file, column: name },
  );
}

/**
 * Each record's fields of the label columns (CsvSource.labelColumns) as a CSV file's cells: a
 * class's true or false (1 or 0), or an output's target (a number); `labelSets` and
 * `regressionTargets` read them as the problem type says.
 */
function labelColumnCells(
  records: JsonRecord[],
  columns: readonly string[],
  file: string,
): Required<Pick<RawExamples, 'labelCells' | 'labelColumns'>> & { labels: string[] } {
  const labelCells = records.map((record, i) =>
    columns.map((column) => {
      const value = field(record, column, file, 'labelColumns / --label-columns');
      if ((typeof value === 'number' && Number.isFinite(value)) || typeof value === 'boolean' || typeof value === 'string')
        return String(value);
      throw new InputError(
        `${record.where}: field '${column}' is ${describe(value)}; a label column holds whether its class applies (true or false, 1 or 0) or an output's target (a number)`,
        { file, row: i, column },
      );
    }),
  );
  return { labelCells, labelColumns: [...columns], labels: labelCells.map((cells) => cells.join(',')) };
}

/** A JSON value as a message shows it: its type, and its start. */
function describe(value: unknown): string {
  if (value === null) return 'null';
  const json = JSON.stringify(value);
  const shown = json.length > 40 ? `${json.slice(0, 40)}...` : json;
  return `${Array.isArray(value) ? 'a list' : typeof value === 'object' ? 'an object' : `a ${typeof value}`} (${shown})`;
}
