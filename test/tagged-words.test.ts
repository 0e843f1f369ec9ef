/**
 * Token classification's data (lib/data/tagged-words.ts): the same sentences from each format
 * users have (CoNLL-2003's four columns, WNUT's and WikiANN's word<TAB>tag, datasets' JSON Lines
 * and arrays with tag names or class ids) read alike, and every problem named with its file and line.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputError } from '../lib/addon/errors.js';
import { readTaggedFile, readTaggedFiles, type TaggedSentences, tagIds, tagNames } from '../lib/data/tagged-words.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'torch-bert-tagged-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

/** Write a fixture file into the temp folder; its path. */
async function fixture(name: string, content: string): Promise<string> {
  const file = join(work, name);
  await writeFile(file, content);
  return file;
}

const WORDS = [
  ['EU', 'rejects', 'German', 'call'],
  ['Peter', 'Blackburn'],
  ['BRUSSELS', '1996-08-22'],
];
const TAGS = [
  ['B-ORG', 'O', 'B-MISC', 'O'],
  ['B-PER', 'I-PER'],
  ['B-LOC', 'O'],
];
const NAMES = ['O', 'B-PER', 'I-PER', 'B-ORG', 'I-ORG', 'B-LOC', 'I-LOC', 'B-MISC', 'I-MISC'];

const CONLL_2003 = [
  '-DOCSTART- -X- -X- O',
  '',
  'EU NNP B-NP B-ORG',
  'rejects VBZ B-VP O',
  'German JJ B-NP B-MISC',
  'call NN I-NP O',
  '',
  'Peter NNP B-NP B-PER',
  'Blackburn NNP I-NP I-PER',
  '',
  '-DOCSTART- -X- -X- O',
  '',
  'BRUSSELS NNP B-NP B-LOC',
  '1996-08-22 CD I-NP O',
];

const jsonRecords = (tags: unknown[][]) => WORDS.map((tokens, i) => ({ id: String(i), tokens, ner_tags: tags[i] }));
const jsonLines = (records: unknown[]) => `${records.map((r) => JSON.stringify(r)).join('\n')}\n`;
const ids = TAGS.map((tags) => tags.map((t) => NAMES.indexOf(t)));

function expectSentences(read: TaggedSentences, origins: string[]) {
  expect(read.words).toEqual(WORDS);
  expect(read.tags).toEqual(TAGS);
  expect(read.origins).toEqual(origins);
}

describe('readTaggedFile: the same sentences from every format', () => {
  it('reads CoNLL-2003 (four columns, -DOCSTART-, blank lines): the first column and the last', async () => {
    const file = await fixture('conll2003.conll', `${CONLL_2003.join('\n')}\n\n\n`);
    expectSentences(await readTaggedFile(file), [`${file} line 3`, `${file} line 8`, `${file} line 13`]);
  });

  it('reads CRLF, a BOM, no final newline, and lines of whitespace as blank lines', async () => {
    const lines = CONLL_2003.map((l) => (l === '' ? ' \t' : l));
    const file = await fixture('crlf.txt', `\uFEFF${lines.join('\r\n')}`);
    expectSentences(await readTaggedFile(file), [`${file} line 3`, `${file} line 8`, `${file} line 13`]);
  });

  it('ends a sentence at -DOCSTART- even without a blank line', async () => {
    const file = await fixture('docstart.iob', 'a X O\n-DOCSTART- -X- O\nb X O\n');
    const read = await readTaggedFile(file);
    expect(read.words).toEqual([['a'], ['b']]);
    expect(read.origins).toEqual([`${file} line 1`, `${file} line 3`]);
  });

  it('reads two tab-separated columns (WNUT, WikiANN), spaces around them too', async () => {
    const lines = WORDS.map((words, s) => words.map((w, k) => `${w}\t${TAGS[s]![k]}`).join('\n'));
    const file = await fixture('wnut.tsv', `${lines[0]}\n\n${lines[1]}  \n\n\n${lines[2]}\n`);
    expectSentences(await readTaggedFile(file), [`${file} line 1`, `${file} line 6`, `${file} line 10`]);
  });

  it('keeps Unicode spaces other than spaces and tabs as words', async () => {
    const file = await fixture('nbsp.conll', '\u00a0\tO\nx y\tB-PER\n');
    expect((await readTaggedFile(file)).words).toEqual([['\u00a0', 'x']]);
  });

  it('reads JSON Lines with tag names', async () => {
    const file = await fixture('names.jsonl', jsonLines(jsonRecords(TAGS)));
    expectSentences(await readTaggedFile(file), [`${file} line 1`, `${file} line 2`, `${file} line 3`]);
  });

  it('reads JSON Lines with class ids, named by labels', async () => {
    const file = await fixture('ids.jsonl', `\uFEFF${jsonLines(jsonRecords(ids)).replaceAll('\n', '\r\n')}`);
    expectSentences(await readTaggedFile(file, { labels: NAMES }), [`${file} line 1`, `${file} line 2`, `${file} line 3`]);
  });

  it('reads a JSON array, and skips a record of no words', async () => {
    const records = [{ tokens: [], ner_tags: [] }, ...jsonRecords(ids)];
    const file = await fixture('array.json', JSON.stringify(records, null, 2));
    expectSentences(await readTaggedFile(file, { labels: NAMES }), [`${file} record 2`, `${file} record 3`, `${file} record 4`]);
  });

  it('reads the fields the options name', async () => {
    const records = WORDS.map((words, i) => ({ words, tags: TAGS[i] }));
    const file = await fixture('fields.ndjson', jsonLines(records));
    expectSentences(await readTaggedFile(file, { wordsColumn: 'words', tagsColumn: 'tags' }), [
      `${file} line 1`,
      `${file} line 2`,
      `${file} line 3`,
    ]);
  });

  it('reads several files in order (readTaggedFiles)', async () => {
    const first = await fixture('part-1.conll', 'EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n');
    const second = await fixture('part-2.jsonl', jsonLines(jsonRecords(TAGS).slice(1)));
    expectSentences(await readTaggedFiles([first, second]), [`${first} line 1`, `${second} line 1`, `${second} line 2`]);
  });
});

describe('readTaggedFile: problems named with their file and line', () => {
  const fails = async (name: string, content: string, message: RegExp, options = {}) => {
    const file = await fixture(name, content);
    const read = readTaggedFile(file, options);
    await expect(read).rejects.toThrow(InputError);
    await expect(read).rejects.toThrow(message);
  };

  it('refuses a CoNLL line of one column, naming file and line', async () => {
    await fails('one-column.conll', 'EU B-ORG\n\nrejects\n', /one-column\.conll line 3: 'rejects' has no tag/);
    await fails('csv.txt', 'EU,B-ORG\n', /csv\.txt line 1: 'EU,B-ORG' has no tag: .*spaces or tabs/);
  });

  it('refuses a file of no sentences, saying what is expected', async () => {
    await fails(
      'docstart-only.conll',
      '-DOCSTART- -X- -X- O\n\n',
      /data file .*docstart-only\.conll has no sentences .*a word and its tag per line/,
    );
    await fails(
      'empty-records.jsonl',
      jsonLines([{ tokens: [], ner_tags: [] }]),
      /empty-records\.jsonl has no sentences .*'tokens'.*'ner_tags'/,
    );
    await expect(readTaggedFiles([])).rejects.toThrow(/no data files given/);
  });

  it('refuses a missing field, naming it and its option', async () => {
    const content = jsonLines(jsonRecords(TAGS));
    await fails('no-words.jsonl', content, /no-words\.jsonl line 1 has no field 'words' .*wordsColumn \/ --words-column/, {
      wordsColumn: 'words',
    });
    await fails(
      'no-tags.jsonl',
      content,
      /no-tags\.jsonl line 1 has no field 'tags' \(its fields: id, tokens, ner_tags\).*tagsColumn \/ --tags-column/,
      {
        tagsColumn: 'tags',
      },
    );
  });

  it('refuses lists of different lengths, naming both', async () => {
    const records = [...jsonRecords(TAGS)];
    records[1] = { ...records[1]!, ner_tags: ['B-PER'] };
    await fails('lengths.jsonl', jsonLines(records), /lengths\.jsonl line 2: 'tokens' has 2 words but 'ner_tags' has 1 tags/);
    await fails('lengths.json', JSON.stringify(records), /lengths\.json record 2: 'tokens' has 2 words but 'ner_tags' has 1 tags/);
  });

  it('refuses class ids without labels, or out of their range', async () => {
    const content = jsonLines(jsonRecords(ids));
    await fails(
      'ids.jsonl',
      content,
      /ids\.jsonl line 1: field 'ner_tags' item 1 is class id 3, but no tag names are given: pass labels \/ --labels .*O,B-PER,I-PER/,
    );
    await fails(
      'range.jsonl',
      content,
      /range\.jsonl line 1: field 'ner_tags' item 1 is class id 3, but labels names 3 tags \(ids 0 to 2\)/,
      {
        labels: ['O', 'B-PER', 'I-PER'],
      },
    );
  });

  it('refuses words that are not strings, tags neither names nor ids, and lines that are not objects', async () => {
    await fails(
      'word.jsonl',
      jsonLines([{ tokens: ['a', 7], ner_tags: ['O', 'O'] }]),
      /word\.jsonl line 1: field 'tokens' item 2 is a number \(7\), not a word/,
    );
    await fails(
      'tag.jsonl',
      jsonLines([{ tokens: ['a', 'b'], ner_tags: ['O', ' '] }]),
      /tag\.jsonl line 1: field 'ner_tags' item 2 is a string/,
    );
    await fails(
      'float.jsonl',
      jsonLines([{ tokens: ['a'], ner_tags: [1.5] }]),
      /float\.jsonl line 1: field 'ner_tags' item 1 is a number \(1\.5\)/,
    );
    await fails(
      'list.jsonl',
      jsonLines([{ tokens: 'a b', ner_tags: ['O'] }]),
      /list\.jsonl line 1: field 'tokens' is a string \("a b"\), not a list/,
    );
    await fails('bad.jsonl', '{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": [\n', /bad\.jsonl line 2 is not a JSON object/);
    await fails('array.json', '[{"tokens": ["a"], "ner_tags": ["O"]}, 3]', /array\.json record 2: a record is a JSON object/);
  });
});

describe('tag sets and class ids', () => {
  const read: TaggedSentences = { words: WORDS, tags: TAGS, origins: ['a.conll line 1', 'a.conll line 7', 'a.conll line 10'] };

  it('sorts the tags read, as run_ner.py does', () => {
    expect(tagNames(read)).toEqual(['B-LOC', 'B-MISC', 'B-ORG', 'B-PER', 'I-PER', 'O']);
  });

  it('keeps given names in their order, and refuses a tag they lack, naming where it is', () => {
    expect(tagNames(read, NAMES)).toEqual(NAMES);
    expect(() =>
      tagNames(
        read,
        NAMES.filter((n) => n !== 'B-LOC'),
      ),
    ).toThrow(/a\.conll line 10: tag 'B-LOC' \(word 1, 'BRUSSELS'\) is not one of the tags/);
    expect(() => tagNames(read, [...NAMES, 'O'])).toThrow(/the tag 'O' is given twice/);
  });

  it('gives each tag its index in the names', () => {
    expect(tagIds(read, NAMES)).toEqual([Int32Array.of(3, 0, 7, 0), Int32Array.of(1, 2), Int32Array.of(5, 0)]);
    expect(tagIds(read, tagNames(read))).toEqual([Int32Array.of(2, 5, 1, 5), Int32Array.of(3, 4), Int32Array.of(0, 5)]);
  });
});
