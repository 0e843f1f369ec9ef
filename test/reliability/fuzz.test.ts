/**
 * Hostile input: thousands of generated inputs to the CSV / label / tokenizer loading path
 * (loadExamples → inferLabelNames → labelIds → TextTokenizer.encodeBatch, and
 * TextTokenizer.fromJson). Every case must end in an InputError or in a correct result:
 * - valid CSV made by an independent writer here (quoting, BOM, CRLF, blank lines, extra
 *   columns, unicode) must parse to exactly the generated texts, labels, class ids and line
 *   numbers;
 * - inputs broken in a known way (non-UTF-8, wrong column count, unterminated quote, empty,
 *   huge label id) must be InputErrors naming the file and the cause;
 * - randomly mutated inputs must be an InputError or a parse whose every field matches Python's
 *   csv module on the same bytes;
 * never another exception type, never a crash, never a hang (each case is timed).
 * Texts longer than maxLength are truncated to exactly maxLength ids ending in [SEP], and the
 * kept ids equal the first ids of the whole text's encoding.
 *
 * Reproduce a failure with RELIABILITY_SEED=<the printed seed>.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { InputError } from '../../lib/addon/errors.js';
import { inferLabelNames, labelIds, loadExamples, MAX_CLASS_ID } from '../../lib/data/data.js';
import { TextTokenizer } from '../../lib/data/tokenizer.js';
import { demoTokenizer, runPython } from '../fixtures.js';
import { rng, runSeed } from '../helpers/reliability.js';

const SEED = runSeed();
const work = mkdtempSync(join(tmpdir(), 'torch-bert-fuzz-'));
const MAX_LENGTH = 24;
/** Per-case time bound (ms): generous for a 2-core machine shared with others; a hang is far beyond it. */
const CASE_MS = 3000;

let random: () => number;
const int = (n: number) => Math.floor(random() * n);
const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
const chance = (p: number) => random() < p;

let tokenizer: TextTokenizer;
let tokenizerJson: string;
let clsId: number;
let sepId: number;
let fileCount = 0;

function file(content: string | Buffer, ext = 'csv'): string {
  const path = join(work, `case-${fileCount++}.${ext}`);
  writeFileSync(path, content);
  return path;
}

beforeAll(() => {
  console.log(`fuzz: seed ${SEED} (RELIABILITY_SEED=${SEED} reproduces this run)`);
  tokenizerJson = readFileSync(demoTokenizer, 'utf8');
  tokenizer = TextTokenizer.fromJson(tokenizerJson, demoTokenizer);
  const vocab = (JSON.parse(tokenizerJson) as { model: { vocab: Record<string, number> } }).model.vocab;
  clsId = vocab['[CLS]']!;
  sepId = vocab['[SEP]']!;
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Each test draws from its own stream, so `-t <name>` with the same seed reproduces it alone. */
beforeEach((context) => {
  let h = SEED;
  for (const ch of context.task.name) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  random = rng(h);
});

// ---- text generators -------------------------------------------------------------------

const WORDS = ['the', 'film', 'was', 'great', 'bad', 'acting', 'plot', 'wonderful', 'dull', 'and', 'it', 'a', 'movie'];
const ODD = [
  ',',
  '"',
  '""',
  '\n',
  '\r\n',
  '\r',
  ' ',
  '\t',
  "'",
  ';',
  '\\',
  '\u00e9',
  'ü',
  '日本語',
  '😀',
  '👍🏽',
  '\u0301',
  '\u200b',
  '\u202e',
  '\ufeff',
  '\u0007',
  '\u2028',
  '中',
  'ß',
  'ﬁ',
  '#',
  '[SEP]',
  '[CLS]',
  '##',
  '\u00a0',
];

/** A random text with at least one letter (so it is not empty after trim()). */
function randomText(maxParts = 12): string {
  const parts = [pick(WORDS)];
  const n = int(maxParts);
  for (let i = 0; i < n; i++) parts.push(chance(0.6) ? pick(WORDS) : pick(ODD));
  for (let i = parts.length - 1; i > 0; i--) {
    const j = int(i + 1);
    [parts[i], parts[j]] = [parts[j]!, parts[i]!];
  }
  return parts.join(chance(0.7) ? ' ' : '');
}

function needsQuotes(field: string): boolean {
  return /[",\r\n]/.test(field) || field.length === 0;
}

function quote(field: string, always: boolean): string {
  return always || needsQuotes(field) ? `"${field.replaceAll('"', '""')}"` : field;
}

interface ValidCsv {
  content: string;
  texts: string[];
  /** Labels as written (before trim). */
  rawLabels: string[];
  /** 1-based line on which each data row starts. */
  lines: number[];
  labelKind: 'names' | 'ids';
}

/** A valid CSV per RFC 4180 (+ BOM, CRLF, blank lines), with what it must parse to. */
function validCsv(options: { rows?: number; text?: () => string } = {}): ValidCsv {
  const extra = Array.from({ length: int(3) }, (_, i) => pick(['id', 'note', 'x y', 'a,b', 'q"q', '']) + i);
  const header = ['text', 'label', ...extra];
  for (let i = header.length - 1; i > 0; i--) {
    const j = int(i + 1);
    [header[i], header[j]] = [header[j]!, header[i]!];
  }
  const eol = chance(0.5) ? '\r\n' : '\n';
  const rows = options.rows ?? 1 + int(25);
  const labelKind = chance(0.5) ? 'names' : 'ids';
  const classNames = Array.from(
    { length: 2 + int(4) },
    (_, i) => pick(['pos', 'neg', 'néutral', 'a,b', 'say "hi"', '😀', 'multi\nline', 'x']) + i,
  );
  const numClasses = 2 + int(6);
  let content = chance(0.3) ? '\ufeff' : '';
  let line = 1;
  // Line breaks: LF, CRLF, or a lone CR (as editors count them).
  const lineOf = (s: string) => (s.match(/\r\n|\n|\r/g) ?? []).length;
  const headerLine = header.map((h) => quote(h, chance(0.2))).join(',') + eol;
  content += headerLine;
  line += lineOf(headerLine);
  const texts: string[] = [];
  const rawLabels: string[] = [];
  const lines: number[] = [];
  for (let r = 0; r < rows; r++) {
    while (chance(0.1)) {
      content += eol;
      line++;
    }
    const text = options.text ? options.text() : randomText();
    const label = labelKind === 'names' ? (chance(0.2) ? ' ' : '') + pick(classNames) + (chance(0.2) ? '  ' : '') : String(int(numClasses));
    const record = header.map((h) => (h === 'text' ? text : h === 'label' ? label : randomText(3)));
    lines.push(line);
    const written = record.map((f) => quote(f, chance(0.2))).join(',');
    content += written;
    line += lineOf(written);
    if (r < rows - 1 || chance(0.7)) {
      content += eol;
      line++;
    }
    texts.push(text);
    rawLabels.push(label);
  }
  return { content, texts, rawLabels, lines, labelKind };
}

/** What loading must produce, computed without the library: labels trimmed, class names and ids. */
function expectedLabels(v: ValidCsv): { labels: string[]; names: string[] | null; ids: number[] | null } {
  const labels = v.rawLabels.map((l) => l.trim());
  let names: string[];
  if (v.labelKind === 'ids') {
    const max = Math.max(...labels.map(Number));
    names = Array.from({ length: max + 1 }, (_, i) => String(i));
  } else {
    names = [...new Set(labels)].sort();
  }
  if (names.length < 2) return { labels, names: null, ids: null };
  return { labels, names, ids: labels.map((l) => names.indexOf(l)) };
}

// ---- running one case --------------------------------------------------------------------

interface Outcome {
  error?: unknown;
  texts?: string[];
  labels?: string[];
  origins?: string[];
  names?: string[];
  ids?: number[];
  ms: number;
}

const stats = { cases: 0, parsed: 0, inputErrors: 0, slowest: 0 };

/** The whole loading path; any exception is returned, to be checked by the caller. */
async function load(path: string | { texts: unknown; labels: unknown }): Promise<Outcome> {
  const t0 = performance.now();
  const out: Outcome = { ms: 0 };
  try {
    const raw = await loadExamples(path as never);
    out.texts = raw.texts;
    out.labels = raw.labels!;
    out.origins = raw.texts.map((_, i) => raw.origin(i));
    out.names = inferLabelNames(raw.labels!, raw.origin);
    out.ids = Array.from(labelIds(raw.labels!, out.names, raw.origin));
    const encoded = tokenizer.encodeBatch(raw.texts, MAX_LENGTH);
    checkEncoded(encoded, raw.texts.length);
  } catch (err) {
    out.error = err;
  }
  out.ms = performance.now() - t0;
  stats.cases++;
  stats.slowest = Math.max(stats.slowest, out.ms);
  if (out.error) stats.inputErrors += out.error instanceof InputError ? 1 : 0;
  else stats.parsed++;
  return out;
}

function checkEncoded(e: ReturnType<TextTokenizer['encodeBatch']>, count: number): void {
  expect(e.count).toBe(count);
  expect(e.inputIds.length).toBe(count * MAX_LENGTH);
  for (let r = 0; r < count; r++) {
    const n = e.lengths[r]!;
    expect(n).toBeGreaterThanOrEqual(2);
    expect(n).toBeLessThanOrEqual(MAX_LENGTH);
    expect(e.inputIds[r * MAX_LENGTH]).toBe(clsId);
    expect(e.inputIds[r * MAX_LENGTH + n - 1]).toBe(sepId);
    for (let c = 0; c < MAX_LENGTH; c++) expect(e.attentionMask[r * MAX_LENGTH + c]).toBe(c < n ? 1 : 0);
  }
}

/** The case ended in an InputError (never a TypeError, RangeError, CsvError...) within the time bound. */
function expectInputError(o: Outcome, what: string, pattern?: RegExp): void {
  expect(o.error, `${what}: expected an InputError, got ${o.error === undefined ? 'a parse' : String(o.error)}`).toBeInstanceOf(InputError);
  if (pattern) expect((o.error as Error).message, what).toMatch(pattern);
  expect(o.ms, `${what}: took ${o.ms.toFixed(0)} ms`).toBeLessThan(CASE_MS);
}

function expectInputErrorOrParse(o: Outcome, what: string): void {
  if (o.error !== undefined) {
    expect(o.error, `${what}: ${String(o.error)}${(o.error as Error).stack ? '\n' + (o.error as Error).stack : ''}`).toBeInstanceOf(
      InputError,
    );
  } else {
    expect(o.texts!.length).toBeGreaterThan(0);
    expect(o.labels!.length).toBe(o.texts!.length);
    for (const t of o.texts!) expect(typeof t === 'string' && t.trim().length > 0).toBe(true);
    for (const l of o.labels!) expect(typeof l === 'string' && l.length > 0 && l === l.trim()).toBe(true);
    expect(o.ids!.every((id) => id >= 0 && id < o.names!.length)).toBe(true);
  }
  expect(o.ms, `${what}: took ${o.ms.toFixed(0)} ms`).toBeLessThan(CASE_MS);
}

// ---- the cases ------------------------------------------------------------------------------

describe('CSV / labels / tokenizer under hostile input', () => {
  it('valid CSV (quoting, BOM, CRLF, blank lines, extra columns, unicode) parses to exactly what was written', async () => {
    for (let c = 0; c < 400; c++) {
      const v = validCsv();
      const path = file(v.content);
      const o = await load(path);
      const want = expectedLabels(v);
      if (want.names === null) {
        expectInputError(o, `case ${path}`, /single class/);
        continue;
      }
      expect(o.error, `case ${path}: ${String(o.error)}`).toBeUndefined();
      expect(o.texts).toEqual(v.texts);
      expect(o.labels).toEqual(want.labels);
      expect(o.names).toEqual(want.names);
      expect(o.ids).toEqual(want.ids);
      expect(o.origins).toEqual(v.lines.map((l) => `${path} line ${l}`));
      expect(o.ms).toBeLessThan(CASE_MS);
    }
  });

  it('breakage of known kind is an InputError naming the cause', async () => {
    const utf8Breakers = [
      [0xff],
      [0xfe],
      [0xc0, 0x80],
      [0xed, 0xa0, 0x80],
      [0xe2, 0x82],
      [0x80],
      [0xf8, 0x88, 0x80, 0x80, 0x80],
      [0xf4, 0x90, 0x80, 0x80],
    ];
    for (let c = 0; c < 300; c++) {
      const v = validCsv();
      const bytes = Buffer.from(v.content, 'utf8');
      // Non-UTF-8: an invalid sequence inserted at a character boundary.
      let at = int(bytes.length + 1);
      while (at < bytes.length && (bytes[at]! & 0xc0) === 0x80) at++;
      const broken = Buffer.concat([bytes.subarray(0, at), Buffer.from(pick(utf8Breakers)), bytes.subarray(at)]);
      let path = file(chance(0.1) ? Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(v.content, 'utf16le')]) : broken);
      expectInputError(await load(path), `non-UTF-8 ${path}`, /not valid UTF-8/);

      // A record with one field too many or too few.
      const lines = v.content.split(/(?<=\n)/);
      const eol = v.content.includes('\r\n') ? '\r\n' : '\n';
      const body = v.content.endsWith('\n') ? v.content : v.content + eol;
      path = file(body + (chance(0.5) ? 'only one field' : Array.from({ length: 6 + int(3) }, () => 'f').join(',')) + eol);
      expectInputError(await load(path), `column count ${path}`, /Invalid Record Length|not valid CSV/);

      // An unterminated quote.
      path = file(body + `"${randomText().replaceAll('"', '')}` + (chance(0.5) ? eol : ''));
      expectInputError(await load(path), `unterminated quote ${path}`, /Quote Not Closed|not valid CSV/);

      // A huge (or not quite usable) integer label id.
      if (v.labelKind === 'ids') {
        const huge = pick(['10000', '99999999999999999999', String(MAX_CLASS_ID + 1 + int(1e9)), '1' + '0'.repeat(400)]);
        const row = int(v.rawLabels.length);
        const labels = v.rawLabels.map((l, i) => (i === row ? huge : l));
        const texts = v.texts.map((t) => quote(t, true));
        path = file('text,label\n' + texts.map((t, i) => `${t},${labels[i]}`).join('\n') + '\n');
        expectInputError(await load(path), `huge label ${path}`, /not a usable class id/);
      }
      void lines;
    }
    // Empty and header-only files.
    for (const content of [
      '',
      '\ufeff',
      '\n\n\n',
      '   \r\n  ',
      'text,label',
      'text,label\r\n',
      '\ufefftext,label\n\n\n',
      'label,text\n',
      'text\nhello\n',
      'label\n1\n',
    ]) {
      const path = file(content);
      expectInputError(await load(path), `empty ${JSON.stringify(content)}`, /empty|no rows|no column|no header/);
    }
    // NUL bytes (UTF-16 without BOM, binary data).
    for (let c = 0; c < 20; c++) {
      const v = validCsv();
      const at = int(v.content.length + 1);
      const path = file(chance(0.5) ? Buffer.from(v.content, 'utf16le') : v.content.slice(0, at) + '\u0000' + v.content.slice(at));
      expectInputError(await load(path), `NUL ${path}`, /NUL byte|not valid UTF-8/);
    }
    // Missing file, a directory.
    expectInputError(await load(join(work, 'missing.csv')), 'missing', /cannot read data file/);
    expectInputError(await load(work), 'directory', /cannot read data file/);
  });

  it('random bytes and random text are an InputError or a parse that Python csv agrees with', async () => {
    const accepted: Array<{ path: string; texts: string[]; labels: string[] }> = [];
    const mutations = ['"', ',', '\n', '\r', '\r\n', ' ', '\ufeff', '\u0000', 'x', '""', '\\'];
    for (let c = 0; c < 1500; c++) {
      let content: Buffer;
      const kind = c % 3;
      if (kind === 0) {
        // Random bytes, sometimes behind a plausible header.
        const bytes = Buffer.from(Array.from({ length: int(400) }, () => (chance(0.3) ? pick([0x22, 0x2c, 0x0a, 0x0d]) : int(256))));
        content = chance(0.5) ? Buffer.concat([Buffer.from('text,label\n'), bytes]) : bytes;
      } else if (kind === 1) {
        // Random valid UTF-8 text with CSV punctuation.
        let s = 'text,label\n';
        const n = int(40);
        for (let i = 0; i < n; i++) s += chance(0.5) ? pick(mutations) : chance(0.5) ? pick(WORDS) : pick(ODD);
        content = Buffer.from(s, 'utf8');
      } else {
        // Valid CSV with a few random edits.
        let s = validCsv({ rows: 1 + int(6) }).content;
        const eol = s.includes('\r\n') ? '\r\n' : '\n';
        const edits = 1 + int(3);
        for (let e = 0; e < edits; e++) {
          const at = int(s.length + 1);
          const op = int(3);
          // Mostly the file's own line terminator (files mixing them are only checked by invariants).
          const insert = chance(0.7) ? pick(['"', ',', eol, ' ', '\ufeff', '\u0000', 'x', '""']) : pick(mutations);
          if (op === 0) s = s.slice(0, at) + insert + s.slice(at);
          else if (op === 1) s = s.slice(0, at) + s.slice(at + 1 + int(3));
          else s = s.slice(0, at);
        }
        content = Buffer.from(s, 'utf8');
      }
      const path = file(content);
      const o = await load(path);
      expectInputErrorOrParse(o, `random ${path}`);
      if (!o.error) accepted.push({ path, texts: o.texts!, labels: o.labels! });
    }
    // An independent CSV reader on every accepted file: same texts and labels.
    const py = `
import csv, json, sys
spec = json.load(sys.stdin)
out = []
for path in spec["paths"]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = [r for r in csv.reader(f, strict=True) if r]
        header = rows[0]
        ti, li = header.index("text"), header.index("label")
        out.append({"texts": [r[ti] for r in rows[1:]], "labels": [r[li].strip(spec["whitespace"]) for r in rows[1:]]})
    except Exception as e:
        out.append({"error": repr(e)})
print(json.dumps(out))
`;
    // Files mixing line terminators (a bare CR or LF in an unquoted field of a file whose records
    // end otherwise) are read differently, both defensibly: csv-parse keeps the stray terminator
    // in the field, Python's csv ends the record there. They are checked by the invariants only.
    const mixed = (path: string) => {
      const text = readFileSync(path, 'latin1');
      const kinds = new Set(text.match(/\r\n|\n|\r/g) ?? []);
      return kinds.size > 1;
    };
    const compared = accepted.filter((a) => !mixed(a.path));
    // Labels are trimmed as JavaScript's trim() does (which, unlike Python's strip(), includes U+FEFF).
    const jsWhitespace = Array.from({ length: 0x10000 }, (_, c) => String.fromCharCode(c))
      .filter((c) => c.trim() === '')
      .join('');
    const python = JSON.parse(
      await runPython('-c', [py], JSON.stringify({ paths: compared.map((a) => a.path), whitespace: jsWhitespace })),
    ) as Array<{ texts: string[]; labels: string[]; error?: string }>;
    expect(python).toHaveLength(compared.length);
    const disagreements = compared
      .map((a, i) => ({ ...a, python: python[i]! }))
      .filter(
        (a) =>
          a.python.error ||
          JSON.stringify(a.texts) !== JSON.stringify(a.python.texts) ||
          JSON.stringify(a.labels) !== JSON.stringify(a.python.labels),
      );
    for (const d of disagreements.slice(0, 5)) {
      console.log(
        `disagreement on ${d.path}: ${JSON.stringify(readFileSync(d.path, 'utf8'))}\n ours ${JSON.stringify([d.texts, d.labels])}\n python ${JSON.stringify(d.python)}`,
      );
    }
    expect(disagreements.map((d) => d.path)).toEqual([]);
    console.log(
      `fuzz: ${accepted.length} of 1500 random inputs parsed (${compared.length} checked against Python's csv, the others mix line terminators), the rest were InputErrors`,
    );
  });

  it('a 10 MB field parses, and its text is truncated to maxLength ending in [SEP], quickly', async () => {
    const big =
      Array.from({ length: (10 * 1024 * 1024) / 8 }, () => pick(WORDS) + ' ')
        .join('')
        .slice(0, 10 * 1024 * 1024 - 1) + 'x';
    const v = validCsv({ rows: 3, text: () => randomText() });
    const lines = v.content.split('\n');
    // Put the 10 MB text as a quoted field with embedded quotes and newlines in its own row.
    const bigField = `"${big.slice(0, 1000)}""\n""${big.slice(1000)}"`;
    const content = 'text,label\n' + `${bigField},1\n` + v.texts.map((t) => `${quote(t, true)},0`).join('\n') + '\n';
    void lines;
    const path = file(content);
    const t0 = performance.now();
    const raw = await loadExamples(path);
    const ms = performance.now() - t0;
    expect(raw.texts[0]).toBe(`${big.slice(0, 1000)}"\n"${big.slice(1000)}`);
    expect(raw.texts.slice(1)).toEqual(v.texts);
    const t1 = performance.now();
    const encoded = tokenizer.encodeBatch(raw.texts, MAX_LENGTH);
    const encodeMs = performance.now() - t1;
    expect(encoded.lengths[0]).toBe(MAX_LENGTH);
    expect(encoded.inputIds[MAX_LENGTH - 1]).toBe(sepId);
    console.log(`fuzz: 10 MB field parsed in ${ms.toFixed(0)} ms, encoded in ${encodeMs.toFixed(0)} ms`);
    expect(ms).toBeLessThan(10_000);
    expect(encodeMs).toBeLessThan(1_000);
  });

  it('long texts are truncated to exactly maxLength ids ending in [SEP], equal to the start of the full encoding', () => {
    const plain = new Tokenizer(JSON.parse(tokenizerJson), {});
    for (let c = 0; c < 300; c++) {
      const maxLength = 3 + int(60);
      const text = Array.from({ length: 1 + int(c % 10 === 0 ? 3000 : 80) }, () => randomText(4)).join(pick([' ', '\n', '  ', '']));
      const full = plain.encode(text, { add_special_tokens: false }).ids;
      const e = tokenizer.encodeBatch([text], maxLength);
      const n = e.lengths[0]!;
      const room = maxLength - 2;
      expect(n).toBe(Math.min(full.length, room) + 2);
      if (full.length >= room) expect(n).toBe(maxLength);
      expect(e.inputIds[0]).toBe(clsId);
      expect(e.inputIds[n - 1]).toBe(sepId);
      expect(Array.from(e.inputIds.subarray(1, n - 1))).toEqual(full.slice(0, room));
    }
  });

  it('array sources with wrong types are InputErrors', async () => {
    const garbage: unknown[] = [
      undefined,
      null,
      NaN,
      -1,
      1.5,
      Infinity,
      {},
      [],
      Symbol('s'),
      10n,
      () => 1,
      '',
      '  ',
      'ok',
      0,
      1,
      true,
      new Date(0),
      2 ** 60,
    ];
    for (let c = 0; c < 600; c++) {
      const n = int(6);
      const texts: unknown[] = Array.from({ length: n }, () => (chance(0.7) ? randomText(3) : pick(garbage)));
      const labels: unknown[] = Array.from({ length: n + (chance(0.1) ? 1 : 0) }, () =>
        chance(0.7) ? pick(['a', 'b', 0, 1]) : pick(garbage),
      );
      if (chance(0.05)) delete texts[0];
      const source = chance(0.05) ? { texts: pick(garbage), labels } : { texts, labels };
      const o = await load(source as { texts: unknown; labels: unknown });
      const valid =
        Array.isArray(source.texts) &&
        source.texts.length === labels.length &&
        n > 0 &&
        texts.every((t, i) => i in texts && typeof t === 'string' && t.trim().length > 0) &&
        labels.every((l) => (typeof l === 'string' && l.trim().length > 0) || (typeof l === 'number' && Number.isSafeInteger(l) && l >= 0));
      if (!valid) {
        expectInputError(
          o,
          `array source ${JSON.stringify(source, (_, x) => (typeof x === 'bigint' || typeof x === 'symbol' ? String(x) : x))}`,
        );
      } else {
        expectInputErrorOrParse(o, 'array source');
        if (!o.error) {
          expect(o.texts).toEqual(texts);
          expect(o.labels).toEqual(labels.map((l) => String(l).trim()));
        }
      }
    }
  });

  it('random tokenizer.json content is an InputError or a tokenizer that encodes within bounds', () => {
    const base = JSON.parse(tokenizerJson) as Record<string, unknown>;
    const randomJson = (depth = 0): unknown => {
      const k = int(depth > 2 ? 6 : 8);
      if (k === 0) return null;
      if (k === 1) return chance(0.5);
      if (k === 2) return pick([0, -1, 1.5, 2 ** 40, -(2 ** 31) - 1, 1e308, 3]);
      if (k === 3)
        return pick([
          '',
          'WordPiece',
          'BPE',
          'Unigram',
          'WordLevel',
          '[UNK]',
          '[CLS]',
          'x',
          'Sequence',
          'TemplateProcessing',
          'BertPreTokenizer',
        ]);
      if (k === 4) return [];
      if (k === 5) return {};
      if (k === 6) return Array.from({ length: int(4) }, () => randomJson(depth + 1));
      return Object.fromEntries(
        Array.from({ length: int(4) }, () => [
          pick(['type', 'vocab', 'model', 'id', 'ids', 'single', 'pad_id', 'unk_token', 'merges', 'x']),
          randomJson(depth + 1),
        ]),
      );
    };
    /** Replace a random nested value of the demo tokenizer.json. */
    const mutate = (value: unknown, depth: number): unknown => {
      if (depth > 0 && chance(0.25)) return randomJson(2);
      if (Array.isArray(value)) return value.map((v) => (chance(0.2) ? mutate(v, depth + 1) : v)).filter(() => !chance(0.05));
      if (value && typeof value === 'object') {
        const entries = Object.entries(value as Record<string, unknown>);
        // Big maps (the vocabulary): mutate a few entries only.
        const p = entries.length > 50 ? 3 / entries.length : 0.3;
        return Object.fromEntries(entries.filter(() => !chance(p / 3)).map(([k, v]) => [k, chance(p) ? mutate(v, depth + 1) : v]));
      }
      return value;
    };
    let usable = 0;
    for (let c = 0; c < 800; c++) {
      let json: string;
      const kind = c % 4;
      if (kind === 0) json = JSON.stringify(randomJson());
      else if (kind === 1) json = JSON.stringify({ ...base, ...Object.fromEntries([[pick(Object.keys(base)), randomJson(1)]]) });
      else if (kind === 2) json = JSON.stringify(mutate(base, 0));
      else
        json = chance(0.5)
          ? tokenizerJson.slice(0, int(tokenizerJson.length))
          : Buffer.from(Array.from({ length: int(200) }, () => int(256))).toString('latin1');
      const t0 = performance.now();
      let tok: TextTokenizer | undefined;
      try {
        tok = TextTokenizer.fromJson(json, 'fuzz.json');
      } catch (err) {
        expect(err, `tokenizer case ${c}: ${String(err)}\n${(err as Error).stack}\n${json.slice(0, 500)}`).toBeInstanceOf(InputError);
      }
      if (tok) {
        usable++;
        const texts = [randomText(), 'a wonderful film', randomText(40).repeat(20), 'ü 😀 中'];
        try {
          const e = tok.encodeBatch(texts, MAX_LENGTH);
          expect(e.count).toBe(texts.length);
          expect(Number.isInteger(tok.padId) && tok.padId >= 0).toBe(true);
          // Independently: every id in a row is one the library itself produces for that text
          // (nothing wrapped by the Int32Array), padding is the pad id.
          const plain = new Tokenizer(JSON.parse(json), {});
          for (let r = 0; r < texts.length; r++) {
            expect(e.lengths[r]).toBeLessThanOrEqual(MAX_LENGTH);
            const allowed = new Set([...plain.encode(texts[r]!).ids, ...plain.encode(texts[r]!, { add_special_tokens: false }).ids]);
            for (let i = 0; i < MAX_LENGTH; i++) {
              const id = e.inputIds[r * MAX_LENGTH + i]!;
              if (i < e.lengths[r]!) expect(allowed.has(id), `tokenizer case ${c}: id ${id} of text ${r}`).toBe(true);
              else expect(id).toBe(tok.padId);
            }
          }
        } catch (err) {
          expect(err, `tokenizer case ${c} encode: ${String(err)}\n${(err as Error).stack}\n${json.slice(0, 500)}`).toBeInstanceOf(
            InputError,
          );
        }
      }
      expect(performance.now() - t0, `tokenizer case ${c}`).toBeLessThan(CASE_MS);
    }
    console.log(`fuzz: ${usable} of 800 random tokenizer.json contents were usable tokenizers`);

    // Ids that an Int32Array would wrap, and pad ids that are not ids, are named, not wrapped.
    const withVocab = (id: unknown) =>
      JSON.stringify({ ...base, model: { ...(base.model as object), vocab: { ...(base.model as { vocab: object }).vocab, film: id } } });
    for (const id of [2 ** 40, 2 ** 31, -1, 1.5]) {
      let error: unknown;
      try {
        TextTokenizer.fromJson(withVocab(id), 'v.json').encodeBatch(['the film'], MAX_LENGTH);
      } catch (err) {
        error = err;
      }
      expect(error, `vocab id ${id}`).toBeInstanceOf(InputError);
    }
    for (const padId of [-1, 'x', 2 ** 40, 0.5]) {
      expect(() => TextTokenizer.fromJson(JSON.stringify({ ...base, padding: { pad_id: padId } }), 'p.json'), `pad id ${padId}`).toThrow(
        InputError,
      );
    }
    console.log(
      `fuzz: ${stats.cases} loading cases, ${stats.parsed} parsed, ${stats.inputErrors} InputErrors, slowest ${stats.slowest.toFixed(0)} ms`,
    );
  });
});
