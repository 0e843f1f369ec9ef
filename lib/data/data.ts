/**
 * Labelled text in: a CSV file or arrays, labels mapped to class ids, and the seed's
 * stratified train/validation split. This is the first stop of a batch's journey:
 * CSV row → (text, label id) here → token ids in `tokenizer.ts` → `trainer.ts`.
 */

import { readFile, realpath } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parse } from 'csv-parse/sync';
import type { ProblemType } from '../addon/binding.js';
import { InputError, messageOf } from '../addon/errors.js';
import { isJsonFile, readJsonRecords } from './json-records.js';

/** The CSV columns read when none are named. */
export const DEFAULT_TEXT_COLUMN = 'text';
export const DEFAULT_LABEL_COLUMN = 'label';

/**
 * Labelled examples from a CSV file, or from several with the same columns read as one (a
 * dataset shipped in parts, e.g. IMDB's train-00-of-10.csv ... train-09-of-10.csv).
 */
export interface CsvSource {
  csv: string | readonly string[];
  /** Column holding the text. Default `text`. */
  textColumn?: string;
  /** Column holding the label. Default `label`. */
  labelColumn?: string;
  /**
   * Labels of several columns, read instead of `labelColumn`, each column's header the name of a
   * class or output: a multi-label classifier's, a column per class (as Jigsaw's toxic, obscene,
   * threat, ...), each cell saying whether the class applies to the row's text (`1` or `0`; `true`
   * or `false`); a regression model's of several outputs, a column per output, each cell its
   * target. The columns are the model's classes or outputs, in their order.
   */
  labelColumns?: readonly string[];
  /** Column holding each example's second text ({text_b} of a prompt template). Default: none. */
  textPairColumn?: string;
}

/** How a data file is read: its columns (a JSON file's fields), and whether it must have labels (predict()'s need not). */
export type CsvReadOptions = Omit<CsvSource, 'csv'> & { labelsRequired?: boolean };

/**
 * Labelled examples given directly. Labels may be class names or integer class ids; a regression
 * model's are numbers; a multi-label classifier's are each example's classes (an array of names,
 * empty where none applies).
 */
export interface ArraySource {
  texts: string[];
  /** Each example's second text, for pair templates. */
  pairs?: string[];
  labels: Array<string | number | ReadonlyArray<string | number>>;
}

/** A CSV path, several CSV paths (read as one), a `CsvSource`, or arrays. */
export type DataSource = string | readonly string[] | CsvSource | ArraySource;

/** Texts with their raw labels, and where each came from (for error messages). */
export interface RawExamples {
  texts: string[];
  /** Raw labels as strings (a CSV cell each), or null for unlabelled data. */
  labels: string[] | null;
  /**
   * A multi-label source given as lists (arrays, or a JSON file's): each example's classes
   * (`labelSets` reads the comma-separated cells of one label column, or the label columns, instead).
   */
  labelSets?: string[][];
  /** The label columns read (CsvSource.labelColumns): the classes or outputs, one column each. */
  labelColumns?: string[];
  /** Each example's cells of the label columns, in `labelColumns` order (`labelSets` and `regressionTargets` read them). */
  labelCells?: string[][];
  /** Second texts (textPairColumn / ArraySource.pairs), when asked for. */
  pairs?: string[];
  /** A human description of each example's origin, e.g. `data.csv line 12`. */
  origin: (index: number) => string;
  /** The file the examples came from, when there is one. */
  file?: string;
}

/** Integer class ids larger than this are rejected: they are almost always a wrong column. */
export const MAX_CLASS_ID = 9_999;

/** `value` as a list of file paths (a path, or a non-empty list of them, none empty); null when it is not one. */
export function filePathList(value: unknown): readonly string[] | null {
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || list.length === 0 || list.some((f) => typeof f !== 'string' || f === '')) return null;
  return list as readonly string[];
}

/** The CSV files a source names; none for arrays. */
export function sourceFiles(source: DataSource): string[] {
  const files = typeof source === 'string' || Array.isArray(source) ? source : (source as Partial<CsvSource> | null)?.csv;
  // Of another shape, the source is refused by loadExamples (checkSourceShape), naming what it takes.
  if (typeof files !== 'string' && !Array.isArray(files)) return [];
  return (typeof files === 'string' ? [files] : [...files]).filter((f): f is string => typeof f === 'string');
}

/**
 * Refuses a file named twice: read as one with the others, its rows would train twice (and a
 * stratified split would hold out copies of trained rows), or validation would measure rows the
 * classifier trains on, with nothing said.
 */
export async function checkFilesNamedOnce(training: readonly string[], validation: readonly string[] = []): Promise<void> {
  const seen = new Map<string, { file: string; validation: boolean }>();
  for (const [file, isValidation] of [...training.map((f) => [f, false] as const), ...validation.map((f) => [f, true] as const)]) {
    const key = await realpath(file).catch(() => resolve(file));
    const first = seen.get(key);
    if (first && isValidation && !first.validation) {
      throw new InputError(
        `validation file ${file} is also a training file (${first.file}): validation would measure rows the classifier trains on; give held-out rows (validationData / --validation-data), or leave it out to hold out a share of the data`,
        { file },
      );
    }
    if (first) {
      const option = isValidation ? 'validationData / --validation-data' : 'data / --data';
      throw new InputError(`${first.file} is named twice (${option}): its rows would count twice; name each file once`, { file });
    }
    seen.set(key, { file, validation: isValidation });
  }
}

function describeSource(source: DataSource): string {
  const files = sourceFiles(source);
  if (files.length === 0) return 'the given arrays';
  return files.length === 1 ? files[0]! : `${files[0]} (and ${files.length - 1} more files)`;
}

/** A data file by its name: JSON Lines or a JSON array of records (`.jsonl`, `.ndjson`, `.json`: readJsonRecords), else CSV. */
export function readDataFile(file: string, options: CsvReadOptions = {}): Promise<RawExamples> {
  return isJsonFile(file) ? readJsonRecords(file, options) : readCsv(file, options);
}

/** Several data files with the same columns, read as one: examples in file order. */
async function readDataFiles(files: readonly string[], options: CsvReadOptions): Promise<RawExamples> {
  if (files.length === 0) throw new InputError('data: the list of data files is empty');
  files.forEach((f, i) => {
    if (typeof f !== 'string' || f.length === 0) throw new InputError(`data: file ${i} of the list is not a path`);
  });
  if (files.length === 1) return readDataFile(files[0]!, options);
  const parts: RawExamples[] = [];
  for (const file of files) parts.push(await readDataFile(file, options));
  const labelled = parts.filter((p) => p.labels !== null).length;
  if (labelled !== 0 && labelled !== parts.length) {
    const without = parts.find((p) => p.labels === null)!;
    throw new InputError(`data file ${without.file} has no label column but the other files have one`, { file: without.file });
  }
  // starts[k]: index of part k's first example.
  const starts: number[] = [];
  let total = 0;
  for (const p of parts) {
    starts.push(total);
    total += p.texts.length;
  }
  const texts = parts.flatMap((p) => p.texts);
  const labels = labelled ? parts.flatMap((p) => p.labels!) : null;
  // A part's labels of lists (a JSON file's) make the whole a multi-label source: every part's sets, each read its way.
  const sets = labelled && parts.some((p) => p.labelSets) ? { labelSets: parts.flatMap(labelSets) } : {};
  const cells =
    labelled && parts[0]!.labelCells ? { labelCells: parts.flatMap((p) => p.labelCells!), labelColumns: parts[0]!.labelColumns! } : {};
  const pairs = options.textPairColumn !== undefined ? parts.flatMap((p) => p.pairs!) : undefined;
  const origin = (i: number) => {
    let k = starts.length - 1;
    while (k > 0 && starts[k]! > i) k--;
    return parts[k]!.origin(i - starts[k]!);
  };
  return { texts, labels, ...sets, ...cells, ...(pairs ? { pairs } : {}), origin, file: parts[0]!.file };
}

/** A data file's bytes, checked to be UTF-8 text that is not empty (NUL never belongs in one). */
export async function readTextFile(file: string): Promise<Buffer> {
  let content: Buffer;
  try {
    content = await readFile(file);
  } catch (err) {
    throw new InputError(`cannot read data file ${file}: ${messageOf(err)}`, { file, cause: err });
  }
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(content);
  } catch (err) {
    const utf16 = (content[0] === 0xff && content[1] === 0xfe) || (content[0] === 0xfe && content[1] === 0xff);
    throw new InputError(`data file ${file} is not valid UTF-8 text${utf16 ? ' (it is UTF-16; save it as UTF-8)' : ''}`, {
      file,
      cause: err,
    });
  }
  if (content.toString('utf8').trim().length === 0) {
    // Blank lines only: a file that looks written (it has a size) but holds nothing to read.
    const blank = content.length > 0 ? ` (${content.length} bytes of blank lines and spaces, no text)` : ' (0 bytes)';
    throw new InputError(`data file ${file} is empty${blank}`, { file });
  }
  // NUL marks UTF-16 (without BOM) or binary data, and csv-parse would even fold a NUL after a
  // closing quote into the field.
  const nul = content.indexOf(0);
  if (nul >= 0) {
    const line = 1 + content.subarray(0, nul).reduce((n, b) => n + (b === 0x0a ? 1 : 0), 0);
    throw new InputError(`data file ${file} contains a NUL byte (line ${line}): it is not UTF-8 text (UTF-16? save it as UTF-8)`, { file });
  }
  return content;
}

/** The header's index of `column`; a file without it is refused, naming its columns and the option that chooses it. */
function columnIndex(header: string[], column: string, file: string, what: string, option: string): number {
  const index = header.indexOf(column);
  if (index < 0) {
    throw new InputError(`data file ${file} has no column '${column}' (its columns: ${header.join(', ')}); choose ${what} with ${option}`, {
      file,
      column,
    });
  }
  // Two columns of the name: the first would be read, the other dropped, without a word.
  const again = header.indexOf(column, index + 1);
  if (again >= 0) {
    throw new InputError(
      `data file ${file} has two columns named '${column}' (columns ${index + 1} and ${again + 1}); rename one, or choose ${what} with ${option}`,
      { file, column },
    );
  }
  return index;
}

/**
 * Each row's first line in the file (1-based), from the byte offsets csv-parse reports: a row
 * starts where the previous record (the header included) ended, its delimiter included, after
 * any skipped empty lines. Lines end at LF, CRLF or a lone CR.
 */
function firstLines(records: Array<{ info: { bytes: number } }>, content: Buffer): number[] {
  const lines: number[] = new Array(records.length - 1);
  let line = 1;
  let offset = 0;
  for (let i = 0; i < lines.length; i++) {
    let start = records[i]!.info.bytes;
    while (start < content.length && (content[start] === 0x0a || content[start] === 0x0d)) start++;
    for (; offset < start; offset++) {
      if (content[offset] === 0x0a || (content[offset] === 0x0d && content[offset + 1] !== 0x0a)) line++;
    }
    lines[i] = line;
  }
  return lines;
}

/**
 * A header with tabs and no comma is a tab-separated file: read as CSV it is one column (no
 * text and label column), or a parse error about a quote where a review quotes someone.
 */
function checkCommaSeparated(file: string, content: Buffer): void {
  const end = content.indexOf(0x0a);
  const header = content.subarray(0, end < 0 ? content.length : end);
  if (header.includes(0x09) && !header.includes(0x2c)) {
    throw new InputError(
      `data file ${file} is tab-separated (its header has tabs and no comma); torch-bert reads comma-separated CSV: convert it (e.g. pandas: read_csv(f, sep='\\t').to_csv(out, index=False))`,
      { file },
    );
  }
}

/**
 * Read a CSV file (RFC 4180: quoted fields, embedded newlines, BOM, CRLF) into texts and raw labels.
 * Every problem names the file and, where there is one, the line and column.
 */
export async function readCsv(file: string, options: CsvReadOptions = {}): Promise<RawExamples> {
  const textColumn = options.textColumn ?? DEFAULT_TEXT_COLUMN;
  const labelColumn = options.labelColumn ?? DEFAULT_LABEL_COLUMN;
  const content = await readTextFile(file);
  checkCommaSeparated(file, content);
  // Parsing the bytes (not a decoded string) makes info.bytes a byte offset into `content`,
  // from which each record's first line number is counted for error messages.
  let records: Array<{ record: string[]; info: { bytes: number } }>;
  try {
    records = parse(content, { bom: true, info: true, relax_column_count: false, skip_empty_lines: true }) as never;
  } catch (err) {
    throw new InputError(`data file ${file} is not valid CSV: ${messageOf(err)}`, { file, cause: err });
  }
  const header = records[0]?.record;
  if (!header) throw new InputError(`data file ${file} has no header row`, { file });
  const textIndex = columnIndex(header, textColumn, file, 'the text column', 'textColumn / --text-column');
  const labelIndex =
    options.labelColumns !== undefined
      ? -1
      : (options.labelsRequired ?? true)
        ? columnIndex(header, labelColumn, file, 'the label column', 'labelColumn / --label-column')
        : header.indexOf(labelColumn);
  const pairIndex =
    options.textPairColumn === undefined
      ? -1
      : columnIndex(header, options.textPairColumn, file, "the second text's column", 'textPairColumn / --text-pair-column');
  const rows = records.slice(1).map(({ record }) => record);
  if (rows.length === 0) throw new InputError(`data file ${file} has a header but no rows`, { file });
  const lines = firstLines(records, content);
  const origin = (i: number) => `${file} line ${lines[i]}`;
  const cells = options.labelColumns !== undefined ? labelColumnCells(header, rows, options.labelColumns, file) : null;
  return {
    texts: rows.map((r) => r[textIndex]!),
    labels: cells ? cells.labels : labelIndex >= 0 ? rows.map((r) => r[labelIndex]!.trim()) : null,
    ...cells,
    ...(pairIndex >= 0 ? { pairs: rows.map((r) => r[pairIndex]!) } : {}),
    origin,
    file,
  };
}

/** A label column's cell: whether its class applies (1 or 0, true or false, as pandas writes integer and boolean columns). */
const APPLIES = new Map([
  ['1', true],
  ['0', false],
  ['true', true],
  ['false', false],
]);

/** Whether a label column's cell says its class applies; undefined for a cell that says neither. */
function classApplies(cell: string): boolean | undefined {
  return APPLIES.get(cell.trim().toLowerCase());
}

/** Each row's cells of the label columns (CsvSource.labelColumns), and `labels` showing them joined. */
function labelColumnCells(
  header: string[],
  rows: string[][],
  columns: readonly string[],
  file: string,
): Required<Pick<RawExamples, 'labelCells' | 'labelColumns'>> & { labels: string[] } {
  const indices = columns.map((column) => columnIndex(header, column, file, 'the label columns', 'labelColumns / --label-columns'));
  const labelCells = rows.map((row) => indices.map((index) => row[index]!.trim()));
  return { labelCells, labelColumns: [...columns], labels: labelCells.map((cells) => cells.join(',')) };
}

/** The CSV columns `source` is read from (its label column, or its label columns); undefined for arrays. */
export function csvColumns(
  source: DataSource,
): { textColumn: string; labelColumn: string } | { textColumn: string; labelColumns: string[] } | undefined {
  if (typeof source === 'string' || Array.isArray(source)) return { textColumn: DEFAULT_TEXT_COLUMN, labelColumn: DEFAULT_LABEL_COLUMN };
  if ('csv' in (source as object)) {
    const csv = source as CsvSource;
    const textColumn = csv.textColumn ?? DEFAULT_TEXT_COLUMN;
    if (csv.labelColumns !== undefined) return { textColumn, labelColumns: [...csv.labelColumns] };
    return { textColumn, labelColumn: csv.labelColumn ?? DEFAULT_LABEL_COLUMN };
  }
  return undefined;
}

/** A JavaScript caller's source of another type would otherwise fail as a TypeError deep in the reader. */
export function checkSourceShape(source: unknown): void {
  const shapes = 'a CSV path, a list of paths, { csv, textColumn, labelColumn } or { texts, labels }';
  if (typeof source !== 'string' && (typeof source !== 'object' || source === null)) {
    throw new InputError(`a data source must be ${shapes}; got ${source === null ? 'null' : typeof source}`);
  }
  const csv = (source as Partial<CsvSource>).csv;
  if (typeof source === 'object' && 'csv' in source && typeof csv !== 'string' && !Array.isArray(csv)) {
    throw new InputError(`a data source's csv must be a path or a list of paths; got ${csv === null ? 'null' : typeof csv}`);
  }
  const { labelColumn, labelColumns } = source as Partial<CsvSource>;
  if (labelColumns === undefined) return;
  const names: unknown[] = Array.isArray(labelColumns) ? Array.from(labelColumns) : [];
  if (names.length === 0 || names.some((name) => typeof name !== 'string' || name === '')) {
    throw new InputError(`a data source's labelColumns must list the label columns (one per class); got ${JSON.stringify(labelColumns)}`);
  }
  const twice = names.find((name, i) => names.indexOf(name) !== i);
  if (twice !== undefined) throw new InputError(`a data source's labelColumns name '${twice}' twice; name each class's column once`);
  if (labelColumn !== undefined) {
    throw new InputError(`a data source reads its labels from labelColumn ('${labelColumn}') or labelColumns (one per class), not both`);
  }
}

/**
 * What a label is: a class name or id ('class'), a regression target ('value': any finite
 * number, `regressionTargets`), or the classes of a multi-label example ('set': `labelSets`).
 */
export type LabelKind = 'class' | 'value' | 'set';

/** What a label is for a model of each problem type. */
export const LABEL_KIND: Record<ProblemType, LabelKind> = {
  single_label_classification: 'class',
  regression: 'value',
  multi_label_classification: 'set',
};

/** `{ texts, labels, pairs? }` as raw examples: arrays of one length, each label a class name or id (or a number, for values). */
function fromArrays(arrays: ArraySource, labelKind: LabelKind): RawExamples {
  if (!Array.isArray(arrays.texts)) throw new InputError('data.texts must be an array of strings');
  if (!Array.isArray(arrays.labels)) throw new InputError('data.labels must be an array of labels');
  if (arrays.texts.length !== arrays.labels.length) {
    throw new InputError(`data has ${arrays.texts.length} texts but ${arrays.labels.length} labels`);
  }
  if (arrays.texts.length === 0) throw new InputError('data has no examples');
  if (labelKind === 'set') return { ...fromLabelSets(arrays), origin: (i) => `example ${i}` };
  const labels: string[] = new Array(arrays.labels.length);
  // Index loops, not forEach: a sparse array's holes must be caught, not skipped.
  for (let i = 0; i < arrays.labels.length; i++) {
    const l: unknown = arrays.labels[i];
    if (typeof l === 'string') labels[i] = l.trim();
    else if (typeof l === 'number' && Number.isSafeInteger(l) && l >= 0) labels[i] = String(l);
    else if (labelKind === 'value' && typeof l === 'number' && Number.isFinite(l)) labels[i] = String(l);
    else if (labelKind === 'value') {
      throw new InputError(
        `example ${i}: label ${typeof l === 'number' ? l : `of type ${l === null ? 'null' : typeof l}`} is not a finite number`,
        {
          row: i,
        },
      );
    } else {
      throw new InputError(
        `example ${i}: label ${typeof l === 'number' ? l : `of type ${l === null ? 'null' : typeof l}`} is neither a class name (string) nor a class id (integer ≥ 0)`,
        { row: i },
      );
    }
  }
  if (arrays.pairs !== undefined && (!Array.isArray(arrays.pairs) || arrays.pairs.length !== arrays.texts.length)) {
    throw new InputError(`data.pairs must be an array of ${arrays.texts.length} strings (one per text)`);
  }
  return { texts: arrays.texts, labels, ...(arrays.pairs ? { pairs: arrays.pairs } : {}), origin: (i) => `example ${i}` };
}

/**
 * A class in a multi-label example's list: a name, or a class id (an integer ≥ 0, named as a CSV
 * cell names it); undefined for anything else.
 */
export function listedClass(c: unknown): string | undefined {
  if (typeof c === 'string' && c.trim() !== '') return c.trim();
  return typeof c === 'number' && Number.isSafeInteger(c) && c >= 0 ? String(c) : undefined;
}

/** A multi-label source's arrays: each label an array of class names or ids (none, where no class applies). */
function fromLabelSets(arrays: ArraySource): Pick<RawExamples, 'texts' | 'labels' | 'labelSets' | 'pairs'> {
  const sets: string[][] = new Array(arrays.labels.length);
  for (let i = 0; i < arrays.labels.length; i++) {
    const set: unknown = arrays.labels[i];
    const classes = Array.isArray(set) ? Array.from(set, listedClass) : [undefined];
    if (classes.some((c) => c === undefined)) {
      throw new InputError(
        `example ${i}: a multi-label example's label is an array of class names or ids (empty when none applies), got ${JSON.stringify(set) ?? typeof set}`,
        { row: i },
      );
    }
    sets[i] = classes as string[];
  }
  if (arrays.pairs !== undefined && (!Array.isArray(arrays.pairs) || arrays.pairs.length !== arrays.texts.length)) {
    throw new InputError(`data.pairs must be an array of ${arrays.texts.length} strings (one per text)`);
  }
  return {
    texts: arrays.texts,
    labels: sets.map((set) => set.join(',')),
    labelSets: sets,
    ...(arrays.pairs ? { pairs: arrays.pairs } : {}),
  };
}

/**
 * Each multi-label example's classes: its list's (ArraySource, a JSON file's), those of the label
 * columns whose cell says so, or its label cell's names, comma-separated ("sports,politics"; spaces
 * around a name dropped; an empty cell: no class applies).
 */
export function labelSets(raw: RawExamples): string[][] {
  if (raw.labelSets) return raw.labelSets;
  if (raw.labelCells) {
    return raw.labelCells.map((cells, i) => raw.labelColumns!.filter((column, k) => appliesAt(raw, i, column, cells[k]!)));
  }
  return raw.labels!.map((cell) =>
    cell
      .split(',')
      .map((name) => name.trim())
      .filter((name) => name !== ''),
  );
}

/** Whether a label column's cell says its class applies; else an InputError naming the example and the column. */
function appliesAt(raw: RawExamples, i: number, column: string, cell: string): boolean {
  const applies = classApplies(cell);
  if (applies === undefined) {
    throw new InputError(
      `${raw.origin(i)}: column '${column}' holds '${cell}'; a label column's cell says whether its class applies: 1 or 0 (true or false)`,
      { file: raw.file, row: i, column },
    );
  }
  return applies;
}

/** The class names of multi-label examples: those `inferLabelNames` finds among all their classes. */
export function inferLabelSetNames(sets: readonly string[][], origin: (i: number) => string): string[] {
  const { names, owners } = flatten(sets);
  return inferLabelNames(names, (k) => origin(owners[k]!));
}

/**
 * Multi-label targets: a row of `names.length` per example, 1 where a class applies (each class
 * one of `names`: labelIds' rule). Examples read from label columns must have one for each class
 * and no other: a class without a column would read as never applying.
 */
export function multiLabelTargets(raw: RawExamples, names: readonly string[]): Float32Array {
  if (raw.labelColumns) checkColumnsAreNames(raw.labelColumns, names, 'class', raw.file);
  const sets = labelSets(raw);
  const { names: flat, owners } = flatten(sets);
  const ids = labelIds(flat, names, (k) => raw.origin(owners[k]!));
  const targets = new Float32Array(sets.length * names.length);
  ids.forEach((id, k) => {
    targets[owners[k]! * names.length + id] = 1;
  });
  return targets;
}

/**
 * Label columns and the model's classes (or outputs), the same names in any order; else an
 * InputError naming what differs: a class without a column would read as never applying.
 */
function checkColumnsAreNames(
  columns: readonly string[],
  names: readonly string[],
  what: 'class' | 'output',
  file: string | undefined,
): void {
  const missing = names.filter((name) => !columns.includes(name));
  const extra = columns.filter((name) => !names.includes(name));
  if (missing.length === 0 && extra.length === 0) return;
  const plural = what === 'class' ? 'classes' : 'outputs';
  const differences = [
    ...(missing.length > 0 ? [`no column for ${missing.map((name) => `'${name}'`).join(', ')}`] : []),
    ...(extra.length > 0
      ? [
          `${extra.map((name) => `'${name}'`).join(', ')} ${extra.length === 1 ? `is not a${what === 'output' ? 'n' : ''} ${what}` : `are not ${plural}`}`,
        ]
      : []),
  ];
  throw new InputError(
    `${file ?? 'data'}: the label columns must be the ${plural} (${names.join(', ')}), one column each: ${differences.join('; ')}`,
    { file },
  );
}

/** Every example's class names in one list, with the example each came from. */
function flatten(sets: readonly string[][]): { names: string[]; owners: number[] } {
  return { names: sets.flat(), owners: sets.flatMap((set, i) => set.map(() => i)) };
}

/** Every text (and second text) a non-empty string, every label non-empty (a multi-label one may be), and labels there when required. */
function checkExamples(raw: RawExamples, where: string, labelsRequired: boolean, labelKind: LabelKind): void {
  for (let i = 0; i < raw.texts.length; i++) {
    const t: unknown = raw.texts[i];
    if (typeof t !== 'string') throw new InputError(`${raw.origin(i)}: text is not a string`, { file: raw.file, row: i });
    if (t.trim().length === 0) {
      throw new InputError(`${raw.origin(i)}: empty text`, { file: raw.file, row: i });
    }
  }
  // An index loop, as for the texts: forEach would skip a sparse array's holes.
  for (let i = 0; i < (raw.pairs?.length ?? 0); i++) {
    const t: unknown = raw.pairs![i];
    if (typeof t !== 'string' || t.trim().length === 0) {
      throw new InputError(`${raw.origin(i)}: the second text is ${typeof t !== 'string' ? 'not a string' : 'empty'}`, {
        file: raw.file,
        row: i,
      });
    }
  }
  if (raw.labelSets && labelKind !== 'set' && labelsRequired) {
    const reader = labelKind === 'value' ? 'a regression model reads a number' : 'a single-label classifier reads one class';
    throw new InputError(
      `${where}: each label is a list of classes, a multi-label example's (problemType 'multi_label_classification'); ${reader} per example`,
      { file: raw.file },
    );
  }
  if (raw.labels) {
    raw.labels.forEach((l, i) => {
      if (l.length === 0 && labelKind !== 'set') throw new InputError(`${raw.origin(i)}: empty label`, { file: raw.file, row: i });
    });
  } else if (labelsRequired) {
    throw new InputError(`${where}: no labels`);
  }
}

/** Load any data source into raw examples, validating texts and (when required) labels. */
export async function loadExamples(
  source: DataSource,
  options: { labelsRequired?: boolean; labelKind?: LabelKind } = {},
): Promise<RawExamples> {
  const labelsRequired = options.labelsRequired ?? true;
  const labelKind = options.labelKind ?? 'class';
  checkSourceShape(source);
  if ((source as Partial<CsvSource>).labelColumns !== undefined && labelKind === 'class') {
    throw new InputError(
      "labelColumns reads a column per class (problemType 'multi_label_classification') or per output (a regression model of several); a single-label classifier reads one label per example, from labelColumn",
    );
  }
  let raw: RawExamples;
  if (typeof source === 'string') {
    raw = await readDataFile(source, { labelsRequired });
  } else if (Array.isArray(source)) {
    raw = await readDataFiles(source as readonly string[], { labelsRequired });
  } else if ('csv' in source) {
    const csv = (source as CsvSource).csv;
    raw =
      typeof csv === 'string'
        ? await readDataFile(csv, { ...source, labelsRequired })
        : await readDataFiles(csv, { ...source, labelsRequired });
  } else {
    raw = fromArrays(source as ArraySource, labelKind);
  }
  checkExamples(raw, describeSource(source), labelsRequired, labelKind);
  // A multi-label source's label columns say cell by cell whether each class applies: read, and checked, once here.
  return raw.labelCells && labelKind === 'set' ? { ...raw, labelSets: labelSets(raw) } : raw;
}

/** A decimal number as CSV and JSON write one (`2.5`, `-1`, `4e-3`): what a regression target may be. */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/**
 * Regression targets, row-major [examples, outputs] in `outputs` order: each example's label (one
 * output), or its cells of the label columns, which must be the outputs (several); each a finite
 * decimal number a float32 holds, else an InputError naming the example.
 */
export function regressionTargets(raw: RawExamples, outputs: readonly string[]): Float32Array {
  if (raw.labelCells) {
    checkColumnsAreNames(raw.labelColumns!, outputs, 'output', raw.file);
    const at = outputs.map((name) => raw.labelColumns!.indexOf(name));
    return Float32Array.from({ length: raw.labelCells.length * outputs.length }, (_, j) => {
      const [i, c] = [Math.floor(j / outputs.length), at[j % outputs.length]!];
      const cell = raw.labelCells![i]![c]!;
      return targetValue(cell, () => `${raw.origin(i)}: label '${cell}' of column '${raw.labelColumns![c]}'`);
    });
  }
  if (outputs.length !== 1) {
    throw new InputError(
      `${raw.file ?? 'data'}: a regression model of ${outputs.length} outputs (${outputs.join(', ')}) reads a target per output: name their columns with labelColumns (--label-columns)`,
      { file: raw.file },
    );
  }
  return Float32Array.from(raw.labels!, (l, i) => targetValue(l, () => `${raw.origin(i)}: label '${l}'`));
}

/** A target value: a finite decimal number a float32 holds (else an InputError: `label` names the example and the text). */
function targetValue(text: string, label: () => string): number {
  const value = Number(text);
  if (!DECIMAL.test(text) || !Number.isFinite(Math.fround(value))) {
    throw new InputError(`${label()} is not a number a float32 holds; a regression model's labels are its target values`);
  }
  return value;
}

/** A label that is a class id: a non-negative integer, written without leading zeros. */
const INTEGER_LABEL = /^(0|[1-9][0-9]*)$/;

/**
 * Decide the class names from the raw labels. Integer labels are class ids 0..max (names
 * '0'..'max'); anything else is a class name, sorted so the id assignment is stable.
 */
export function inferLabelNames(rawLabels: readonly string[], origin: (i: number) => string): string[] {
  if (rawLabels.every((l) => INTEGER_LABEL.test(l))) {
    let max = 0;
    rawLabels.forEach((l, i) => {
      const id = Number(l);
      if (id > MAX_CLASS_ID) {
        throw new InputError(
          `${origin(i)}: label ${l} is not a usable class id (integer labels must be class ids 0..${MAX_CLASS_ID}); is the label column right?`,
        );
      }
      max = Math.max(max, id);
    });
    const names = Array.from({ length: max + 1 }, (_, i) => String(i));
    if (names.length < 2) throw new InputError('the data has a single class; a classifier needs at least two');
    return names;
  }
  const names = [...new Set(rawLabels)].sort();
  if (names.length < 2) throw new InputError(`the data has a single class (${names[0]}); a classifier needs at least two`);
  return names;
}

/**
 * A note for classes no training example has: the classifier keeps an output for each that never
 * learns, typically integer labels counted from 1 (ids are counted from 0). Null when every class has one.
 */
export function absentClassNote(trainIds: Int32Array, names: readonly string[]): string | null {
  const seen = new Set(trainIds);
  const absent = names.filter((_, id) => !seen.has(id));
  if (absent.length === 0) return null;
  const integerIds = names.every((n, id) => n === String(id));
  return (
    `no training example has class ${absent.map((n) => `'${n}'`).join(', ')}; the classifier has an output for it that never learns` +
    (integerIds ? ' (integer labels are class ids counted from 0: if yours count from 1, subtract 1 or use class names)' : '')
  );
}

/**
 * A note for class names that differ only in case ('Positive', 'positive'): kept apart as classes,
 * as they must be, though they are most often one class written two ways. Null when none do.
 */
export function caseVariantsNote(names: readonly string[]): string | null {
  const byLower = new Map<string, string[]>();
  for (const n of names) byLower.set(n.toLowerCase(), [...(byLower.get(n.toLowerCase()) ?? []), n]);
  const variants = [...byLower.values()].filter((group) => group.length > 1);
  if (variants.length === 0) return null;
  const listed = variants.map((group) => group.map((n) => `'${n}'`).join(' and ')).join('; ');
  return `classes ${listed} differ only in case and train as different classes; if they are one class, write its labels alike`;
}

/**
 * A note for class names that are one number written differently ('1', '01', '1.0', as a
 * spreadsheet or pandas may write some rows): kept apart as classes, like case variants. Null when none are.
 */
export function numberVariantsNote(names: readonly string[]): string | null {
  const byValue = new Map<number, string[]>();
  for (const n of names) {
    if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(n)) continue;
    byValue.set(Number(n), [...(byValue.get(Number(n)) ?? []), n]);
  }
  const variants = [...byValue.values()].filter((group) => group.length > 1);
  if (variants.length === 0) return null;
  const listed = variants.map((group) => group.map((n) => `'${n}'`).join(' and ')).join('; ');
  return `classes ${listed} are one number written differently and train as different classes; if they are one class, write its labels alike`;
}

/**
 * Map raw labels to class ids: each a class name, or, when no name is an integer and every label
 * is, each an id into `names` (`labels: ['negative', 'positive']` names a 0/1 column). Only then:
 * where a name is an integer, '1' must mean that name, never the id 1 (a stray '0' among labels
 * named '1'..'5' would otherwise shift every row by one class, silently). A label that is neither
 * is an error naming its row.
 */
export function labelIds(rawLabels: readonly string[], names: readonly string[], origin: (i: number) => string): Int32Array {
  const idOf = new Map(names.map((n, i) => [n, i]));
  const asIds = !names.some((n) => INTEGER_LABEL.test(n)) && rawLabels.every((l) => INTEGER_LABEL.test(l));
  const ids = new Int32Array(rawLabels.length);
  rawLabels.forEach((l, i) => {
    const id = asIds ? Number(l) : idOf.get(l);
    if (id === undefined || id >= names.length) {
      const orId = asIds ? ` nor a class id below ${names.length} (integer labels are ids into the ${names.length} class names)` : '';
      throw new InputError(`${origin(i)}: label '${l}' is not one of the known classes (${names.join(', ')})${orId}`);
    }
    ids[i] = id;
  });
  return ids;
}

/**
 * The seed's stratified split: every class keeps (as nearly as rounding allows) the same
 * share in validation. `permute(n, seed)` is libtorch's randperm, so Python can reproduce
 * the split exactly. Returns sorted example indices.
 */
export function stratifiedSplit(
  classIds: Int32Array,
  validationFraction: number,
  seed: number,
  permute: (n: number, seed: number) => Int32Array,
): { train: Int32Array; validation: Int32Array } {
  if (!(validationFraction > 0 && validationFraction < 1)) {
    throw new InputError(`validationSplit must be between 0 and 1 (exclusive); got ${validationFraction}`);
  }
  const order = permute(classIds.length, seed);
  const perClass = new Map<number, number>();
  for (const c of classIds) perClass.set(c, (perClass.get(c) ?? 0) + 1);
  const wanted = new Map<number, number>();
  for (const [c, n] of perClass) wanted.set(c, Math.round(n * validationFraction));
  const isValidation = new Uint8Array(classIds.length);
  for (const index of order) {
    const c = classIds[index]!;
    const left = wanted.get(c)!;
    if (left > 0) {
      isValidation[index] = 1;
      wanted.set(c, left - 1);
    }
  }
  const train: number[] = [];
  const validation: number[] = [];
  isValidation.forEach((v, i) => {
    (v ? validation : train).push(i);
  });
  if (validation.length === 0) throw new InputError(noValidationMessage(perClass, classIds.length, validationFraction));
  if (train.length === 0) {
    throw new InputError(
      `too few examples (${classIds.length}) to split ${validationFraction} off for validation; give more data or validationData`,
    );
  }
  return { train: Int32Array.from(train), validation: Int32Array.from(validation) };
}

/**
 * Why the stratified split held nothing out: every class too small for its share to round to one
 * example. Nearly as many classes as examples is the mark of a wrong label column (a text or an id).
 */
function noValidationMessage(perClass: Map<number, number>, examples: number, fraction: number): string {
  const largest = Math.max(...perClass.values());
  const needed = Math.ceil(0.5 / fraction);
  const suspect = perClass.size * 2 > examples ? 'is the label column right? If so, ' : '';
  return (
    `too few examples per class to hold out ${fraction} of each for validation (${perClass.size} classes among ${examples} examples, ` +
    `at most ${largest} in one; a class needs ${needed}): ${suspect}give more data, a larger validationSplit or validationData`
  );
}
