import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../lib/addon/errors.js';
import {
  inferLabelNames,
  inferLabelSetNames,
  labelIds,
  loadExamples,
  numberVariantsNote,
  readCsv,
  stratifiedSplit,
} from '../lib/data/data.js';
import { readPretrainingTexts } from '../lib/data/mlm-data.js';

const dir = mkdtempSync(join(tmpdir(), 'torch-bert-data-'));
function csv(name: string, content: string | Buffer): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

describe('label notes', () => {
  it("names classes that are one number written differently ('1', '01', '1.0'), and only those", () => {
    expect(numberVariantsNote(inferLabelNames(['1', '01', '1.0', '0', '2'], (i) => `row ${i}`))).toBe(
      "classes '01' and '1' and '1.0' are one number written differently and train as different classes; if they are one class, write its labels alike",
    );
    expect(numberVariantsNote(['0.0', '1.0'])).toBeNull();
    expect(numberVariantsNote(['negative', 'positive', '1'])).toBeNull();
  });
});

describe('arrays', () => {
  it('refuses a hole in the second texts, as in the texts', async () => {
    // Before: accepted, and a prompt filled {text_b} with the word 'undefined'.
    const pairs = ['a fine plot'];
    pairs.length = 2;
    const run = loadExamples({ texts: ['good', 'bad'], labels: ['1', '0'], pairs });
    await expect(run).rejects.toBeInstanceOf(InputError);
    await expect(run).rejects.toThrow('example 1: the second text is not a string');
  });
});

describe('CSV loading', () => {
  it('parses quoted fields with commas, quotes, newlines, CRLF and a BOM', async () => {
    const file = csv('ok.csv', '\uFEFFid,text,label\r\n1,"hello, ""world""\r\nsecond line",positive\r\n2,plain,negative\r\n');
    const raw = await readCsv(file);
    expect(raw.texts).toEqual(['hello, "world"\r\nsecond line', 'plain']);
    expect(raw.labels).toEqual(['positive', 'negative']);
    expect(raw.origin(1)).toBe(`${file} line 4`);
  });

  it('uses configurable column names', async () => {
    const file = csv('cols.csv', 'review,sentiment\ngreat,1\nbad,0\n');
    const raw = await loadExamples({ csv: file, textColumn: 'review', labelColumn: 'sentiment' });
    expect(raw.texts).toEqual(['great', 'bad']);
    expect(raw.labels).toEqual(['1', '0']);
  });

  it('names the file and the missing column', async () => {
    const file = csv('nocol.csv', 'review,label\nx,1\n');
    await expect(readCsv(file)).rejects.toThrow(new RegExp(`${file} has no column 'text' \\(its columns: review, label\\)`));
    await expect(readCsv(file, { textColumn: 'review', labelColumn: 'stars' })).rejects.toThrow(/no column 'stars'/);
  });

  it('reads JSON Lines and JSON arrays of records as it reads the same rows from CSV, pretraining too', async () => {
    const rows = [
      { text: 'a "good" film,\nin two lines', label: 'positive', second: 'yes' },
      { text: 'ein schlechter Film – zu lang', label: 'negative', second: 'no' },
      { text: 'neither', label: 'positive', second: 'maybe' },
    ];
    const quote = (t: string) => `"${t.replace(/"/g, '""')}"`;
    const fromCsv = await loadExamples({
      csv: csv('rows.csv', `text,label,second\n${rows.map((r) => [r.text, r.label, r.second].map(quote).join(',')).join('\n')}\n`),
      textPairColumn: 'second',
    });
    const lines = csv('rows.jsonl', `${rows.map((r) => JSON.stringify({ id: 7, ...r })).join('\n')}\n\n`);
    // datasets' to_json() writes JSON Lines under a .json name; pandas' orient='records' writes an array.
    const linesAsJson = csv('rows-lines.json', `\uFEFF${rows.map((r) => JSON.stringify(r)).join('\r\n')}`);
    const array = csv('rows.json', JSON.stringify(rows, null, 2));
    for (const file of [lines, linesAsJson, array]) {
      const raw = await loadExamples({ csv: file, textPairColumn: 'second' });
      expect([raw.texts, raw.labels, raw.pairs]).toEqual([fromCsv.texts, fromCsv.labels, fromCsv.pairs]);
    }
    expect((await loadExamples(lines)).origin(2)).toBe(`${lines} line 3`);
    expect((await loadExamples(array)).origin(1)).toBe(`${array} record 2`);
    // Several files read as one, CSV and JSON alike; pretraining reads a JSON file's text field.
    expect((await loadExamples([lines, array])).texts).toEqual([...fromCsv.texts, ...fromCsv.texts]);
    expect(await readPretrainingTexts([lines])).toEqual(rows.map((r) => r.text));
  });

  it("reads JSON labels as their types say: numbers as class ids or targets, lists as a multi-label example's classes, one field per class", async () => {
    const numbers = csv('numbers.jsonl', '{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n{"text": "c", "label": 2.5}\n');
    expect((await loadExamples(numbers, { labelKind: 'value' })).labels).toEqual(['1', '0', '2.5']);
    const sets = csv('sets.jsonl', '{"text": "a", "label": ["x", "y"]}\n{"text": "b", "label": []}\n');
    expect((await loadExamples(sets, { labelKind: 'set' })).labelSets).toEqual([['x', 'y'], []]);
    // Class ids, as datasets writes a Sequence(ClassLabel) (go_emotions' labels): read as a CSV cell's ids are.
    const ids = csv('ids.jsonl', '{"text": "a", "label": [27]}\n{"text": "b", "label": [0, 3]}\n{"text": "c", "label": []}\n');
    const raw = await loadExamples(ids, { labelKind: 'set' });
    expect(raw.labelSets).toEqual([['27'], ['0', '3'], []]);
    expect(inferLabelSetNames(raw.labelSets!, raw.origin)).toEqual(Array.from({ length: 28 }, (_, i) => String(i)));
    // Arrays alike.
    const arrays = await loadExamples({ texts: ['a', 'b', 'c'], labels: [[27], [0, ' x '], []] }, { labelKind: 'set' });
    expect(arrays.labelSets).toEqual([['27'], ['0', 'x'], []]);
    await expect(loadExamples({ texts: ['a'], labels: [[1.5]] }, { labelKind: 'set' })).rejects.toThrow(
      "example 0: a multi-label example's label is an array of class names or ids (empty when none applies), got [1.5]",
    );
    await expect(loadExamples(sets)).rejects.toThrow(
      `${sets}: each label is a list of classes, a multi-label example's (problemType 'multi_label_classification'); a single-label classifier reads one class per example`,
    );
    // A dataset in parts, lists in one and comma-separated cells in the other: one multi-label source.
    const cells = csv('sets.csv', 'text,label\nc,"x, y"\nd,\n');
    expect((await loadExamples([sets, cells], { labelKind: 'set' })).labelSets).toEqual([['x', 'y'], [], ['x', 'y'], []]);
    expect((await loadExamples([cells, sets], { labelKind: 'set' })).labelSets).toEqual([['x', 'y'], [], ['x', 'y'], []]);
    const columns = csv('columns.jsonl', '{"text": "a", "x": true, "y": 0}\n{"text": "b", "x": false, "y": 1}\n');
    expect((await loadExamples({ csv: columns, labelColumns: ['x', 'y'] }, { labelKind: 'set' })).labelSets).toEqual([['x'], ['y']]);
    // predict() reads texts alone: a file without labels, or whose labels it does not read.
    expect((await loadExamples(columns, { labelsRequired: false })).labels).toBeNull();
  });

  it('names the line, the field and what is wrong in a JSON file', async () => {
    const cases: Array<[string, string, string]> = [
      ['bad-line.jsonl', '{"text": "a", "label": "x"}\n{"text": "b", label: "y"}\n', 'line 2 is not a JSON object: '],
      [
        'not-object.jsonl',
        '{"text": "a", "label": "x"}\n["b", "y"]\n',
        'line 2: a record is a JSON object ({"text": ..., "label": ...}), got ["b","y"]',
      ],
      [
        'no-text.jsonl',
        '{"review": "a", "label": "x"}\n',
        "line 1 has no field 'text' (its fields: review, label); choose another with textColumn / --text-column",
      ],
      ['number-text.jsonl', '{"text": 5, "label": "x"}\n', "line 1: field 'text' is a number (5), not a text"],
      [
        'null-label.jsonl',
        '{"text": "a", "label": null}\n',
        "line 1: field 'label' is null; a label is a class name, a class id or a number",
      ],
      ['bad-array.json', '[{"text": "a", "label": "x"}', 'is not valid JSON: '],
      ['empty-array.json', '[]', 'has no records'],
    ];
    for (const [name, content, message] of cases) {
      const file = csv(name, content);
      await expect(loadExamples(file), name).rejects.toThrow(message);
      await expect(loadExamples(file), name).rejects.toThrow(file);
    }
    // An inherited property is no field: every object has a 'constructor', no record has one here.
    const inherited = csv('inherited.jsonl', '{"text": "a", "label": "x"}\n');
    await expect(loadExamples({ csv: inherited, textColumn: 'constructor' })).rejects.toThrow(
      `${inherited} line 1 has no field 'constructor' (its fields: text, label); choose another with textColumn / --text-column`,
    );
    const mixed = csv('mixed.jsonl', '{"text": "a", "label": ["x"]}\n{"text": "b", "label": "y"}\n');
    await expect(loadExamples(mixed, { labelKind: 'set' })).rejects.toThrow(
      `${mixed} line 2: field 'label' is a string ("y"); the first record's is a list of classes, so every record's must be one (class names or ids; empty where none applies)`,
    );
    const fractions = csv('number-list.jsonl', '{"text": "a", "label": [0.5, 1]}\n');
    await expect(loadExamples(fractions, { labelKind: 'set' })).rejects.toThrow(
      `${fractions} line 1: field 'label' is a list ([0.5,1]); the first record's is a list of classes, so every record's must be one (class names or ids; empty where none applies)`,
    );
    const multiHot = csv('multi-hot.jsonl', '{"text": "a", "label": [0, 1, 0]}\n{"text": "b", "label": [1, 0, 1]}\n');
    await expect(loadExamples(multiHot, { labelKind: 'set' })).rejects.toThrow(
      `${multiHot} line 1: field 'label' holds a list of 3 0s and 1s in every record, a multi-hot vector: give each class a field of its own, named with labelColumns (--label-columns), or list the classes that apply (names or ids)`,
    );
    const flag = csv('flag.jsonl', '{"text": "a", "x": "maybe"}\n');
    await expect(loadExamples({ csv: flag, labelColumns: ['x'] }, { labelKind: 'set' })).rejects.toThrow(
      `${flag} line 1: column 'x' holds 'maybe'; a label column's cell says whether its class applies: 1 or 0 (true or false)`,
    );
    const list = csv('list.jsonl', '{"text": "a", "x": [1]}\n');
    await expect(loadExamples({ csv: list, labelColumns: ['x'] }, { labelKind: 'value' })).rejects.toThrow(
      `${list} line 1: field 'x' is a list ([1]); a label column holds whether its class applies (true or false, 1 or 0) or an output's target (a number)`,
    );
  });

  it('reads a plain-text pretraining file as a CSV file is read: UTF-8 checked, BOM dropped', async () => {
    // Before: read as 'utf8' alone, invalid bytes became U+FFFD (trained as [UNK]) and the BOM began the first text.
    const bom = csv('bom.txt', '\uFEFFa good film\r\n\r\na bad film\n');
    expect(await readPretrainingTexts([bom])).toEqual(['a good film', 'a bad film']);
    // Before: a file with lone-CR line ends (classic Mac) was one text.
    expect(await readPretrainingTexts([csv('cr.txt', 'a good film\ra bad film\r')])).toEqual(['a good film', 'a bad film']);
    const latin1 = csv('latin1.txt', Buffer.concat([Buffer.from('a good film\nun caf'), Buffer.from([0xe9]), Buffer.from('\n')]));
    await expect(readPretrainingTexts([latin1])).rejects.toThrow(`data file ${latin1} is not valid UTF-8 text`);
    await expect(readPretrainingTexts([csv('empty.txt', '\n \n')])).rejects.toThrow(
      /data file .*empty\.txt is empty \(3 bytes of blank lines and spaces, no text\)$/,
    );
    // Before: a CSV file's blank texts were kept, each a row of [CLS] [SEP] alone with lineByLine.
    expect(await readPretrainingTexts([csv('blank-rows.csv', 'text\na good film\n""\n"  "\na bad film\n')])).toEqual([
      'a good film',
      'a bad film',
    ]);
  });
  it('refuses a tab-separated file, saying so', async () => {
    // Before: 'not valid CSV: Invalid Closing Quote ...' where a review quoted someone, else "no column 'text' (its columns: text\tlabel)".
    const quoted = csv('reviews.tsv.csv', 'text\tlabel\nshe said "superb" and it was\tpositive\n');
    const plain = csv('plain.csv', 'text\tlabel\na good film\tpositive\n');
    for (const file of [quoted, plain]) {
      await expect(readCsv(file)).rejects.toThrow(
        `data file ${file} is tab-separated (its header has tabs and no comma); torch-bert reads comma-separated CSV: convert it (e.g. pandas: read_csv(f, sep='\\t').to_csv(out, index=False))`,
      );
    }
    // A tab inside a comma-separated file's text is only text.
    expect((await readCsv(csv('tab-in-text.csv', 'text,label\na\tgood film,positive\n'))).texts).toEqual(['a\tgood film']);
  });
  it('refuses a header that names the chosen column twice', async () => {
    // Before: the first 'text' column was read and the second dropped, without a word.
    const file = join(dir, 'twice.csv');
    writeFileSync(file, 'text,text,label\nx,a good film,positive\ny,a bad film,negative\n');
    await expect(readCsv(file)).rejects.toThrow(
      `data file ${file} has two columns named 'text' (columns 1 and 2); rename one, or choose the text column with textColumn / --text-column`,
    );
  });
  it('names the file of a missing, empty, non-UTF-8 or malformed CSV', async () => {
    await expect(readCsv(join(dir, 'absent.csv'))).rejects.toThrow(/cannot read data file .*absent\.csv: ENOENT/);
    await expect(readCsv(csv('empty.csv', ''))).rejects.toThrow(/empty\.csv is empty \(0 bytes\)$/);
    await expect(readCsv(csv('bin.csv', Buffer.from([0x74, 0x65, 0x78, 0x74, 0x0a, 0xff, 0xfe, 0x0a])))).rejects.toThrow(/not valid UTF-8/);
    await expect(readCsv(csv('quote.csv', 'text,label\n"unterminated,1\n'))).rejects.toThrow(
      /quote\.csv is not valid CSV: Quote Not Closed/,
    );
    await expect(readCsv(csv('width.csv', 'text,label\na,1,extra\n'))).rejects.toThrow(
      /width\.csv is not valid CSV: Invalid Record Length/,
    );
    await expect(readCsv(csv('header.csv', 'text,label\n'))).rejects.toThrow(/header but no rows/);
  });

  it('rejects an empty text and an empty label, naming the line', async () => {
    const file = csv('emptytext.csv', 'text,label\ngood,1\n"  ",0\n');
    await expect(loadExamples(file)).rejects.toThrow(new RegExp(`${file} line 3: empty text`));
    const file2 = csv('emptylabel.csv', 'text,label\ngood,\n');
    await expect(loadExamples(file2)).rejects.toThrow(/line 2: empty label/);
  });

  it('reads a dataset in parts (several files, same columns) as one, naming the file and line of each example', async () => {
    const a = csv('part-a.csv', 'text,label\none,pos\ntwo,neg\n');
    const b = csv('part-b.csv', 'label,text\nneg,three\n');
    const raw = await loadExamples([a, b]);
    expect(raw.texts).toEqual(['one', 'two', 'three']);
    expect(raw.labels).toEqual(['pos', 'neg', 'neg']);
    expect([0, 1, 2].map(raw.origin)).toEqual([`${a} line 2`, `${a} line 3`, `${b} line 2`]);
    expect((await loadExamples({ csv: [a, b] })).texts).toEqual(raw.texts);
    const bad = csv('part-bad.csv', 'text,label\n,pos\n');
    await expect(loadExamples([a, bad])).rejects.toThrow(new RegExp(`${bad} line 2: empty text`));
    const unlabelled = csv('part-unlabelled.csv', 'text\nfour\n');
    await expect(loadExamples([a, unlabelled], { labelsRequired: false })).rejects.toThrow(
      /part-unlabelled\.csv has no label column but the other files have one/,
    );
    await expect(loadExamples([])).rejects.toThrow(/list of data files is empty/);
  });

  it('checks array sources', async () => {
    await expect(loadExamples({ texts: ['a', 'b'], labels: [1] })).rejects.toThrow(/2 texts but 1 labels/);
    const raw = await loadExamples({ texts: ['a', 'b'], labels: [1, 'x'] });
    expect(raw.labels).toEqual(['1', 'x']);
  });
});

describe('labels', () => {
  const origin = (i: number) => `row ${i}`;
  it('treats integer labels as class ids 0..max', () => {
    expect(inferLabelNames(['2', '0', '1', '0'], origin)).toEqual(['0', '1', '2']);
    expect(Array.from(labelIds(['2', '0', '1'], ['0', '1', '2'], origin))).toEqual([2, 0, 1]);
  });
  it('sorts string labels into stable ids', () => {
    const names = inferLabelNames(['pos', 'neg', 'neutral', 'pos'], origin);
    expect(names).toEqual(['neg', 'neutral', 'pos']);
    expect(Array.from(labelIds(['pos', 'neg'], names, origin))).toEqual([2, 0]);
  });
  it('reads integer labels as ids into given class names that they are not (labels: names for a 0/1 column)', () => {
    // Before: IMDB's 0/1 with labels ['negative', 'positive'] was refused ("label '1' is not one of the known classes").
    expect(Array.from(labelIds(['1', '0', '0', '1'], ['negative', 'positive'], origin))).toEqual([1, 0, 0, 1]);
    // Names the labels are stay names, whatever their order.
    expect(Array.from(labelIds(['1', '0'], ['1', '0'], origin))).toEqual([0, 1]);
    expect(() => labelIds(['1', '2'], ['negative', 'positive'], origin)).toThrow(
      "row 1: label '2' is not one of the known classes (negative, positive) nor a class id below 2 (integer labels are ids into the 2 class names)",
    );
    // Where a name is an integer, an integer label is that name, never an id: a stray '0' among
    // labels named '1'..'3' is refused, not read as ids (which would shift every row by a class).
    expect(() => labelIds(['1', '0', '3'], ['1', '2', '3'], origin)).toThrow("row 1: label '0' is not one of the known classes (1, 2, 3)");
    // A column that is not all ids stays names: 'neg' is a name, '1' is not.
    expect(() => labelIds(['neg', '1'], ['neg', 'pos'], origin)).toThrow("row 1: label '1' is not one of the known classes (neg, pos)");
  });
  it('rejects unknown, huge and single-class labels', () => {
    expect(() => labelIds(['pos', 'meh'], ['neg', 'pos'], origin)).toThrow(
      /row 1: label 'meh' is not one of the known classes \(neg, pos\)/,
    );
    expect(() => inferLabelNames(['0', '123456789'], origin)).toThrow(/row 1: label 123456789 is not a usable class id/);
    expect(() => inferLabelNames(['a', 'a'], origin)).toThrow(InputError);
  });
});

describe('stratified split', () => {
  // A deterministic stand-in for libtorch's randperm: the split logic is what is under test here.
  const reverse = (n: number) => Int32Array.from({ length: n }, (_, i) => n - 1 - i);
  it('keeps each class share in validation', () => {
    const classes = Int32Array.from([...Array(80).fill(0), ...Array(20).fill(1)]);
    const { train, validation } = stratifiedSplit(classes, 0.2, 42, reverse);
    expect(validation.length).toBe(20);
    expect(train.length).toBe(80);
    expect(Array.from(validation).filter((i) => classes[i] === 1).length).toBe(4);
    expect(Array.from(validation).filter((i) => classes[i] === 0).length).toBe(16);
    // reverse order: the last 16 of class 0 (64..79) and the last 4 of class 1 (96..99)
    expect(Array.from(validation)).toEqual([...Array.from({ length: 16 }, (_, i) => 64 + i), 96, 97, 98, 99]);
    expect(new Set([...train, ...validation]).size).toBe(100);
  });
  it('rejects a split that leaves a side empty', () => {
    expect(() => stratifiedSplit(Int32Array.from([0, 1]), 0.2, 1, reverse)).toThrow(/too few examples/);
    expect(() => stratifiedSplit(Int32Array.from([0, 1]), 1.5, 1, reverse)).toThrow(/between 0 and 1/);
  });
  it('says why nothing was held out, and suspects the label column when nearly every example is its own class', () => {
    // Before: 'too few examples (800) to split 0.2 off for validation' for 800 rows whose label column held the texts.
    const distinct = Int32Array.from({ length: 800 }, (_, i) => i);
    expect(() => stratifiedSplit(distinct, 0.2, 1, reverse)).toThrow(
      'too few examples per class to hold out 0.2 of each for validation (800 classes among 800 examples, at most 1 in one; a class needs 3): is the label column right? If so, give more data, a larger validationSplit or validationData',
    );
    const small = Int32Array.from([0, 0, 1, 1]);
    expect(() => stratifiedSplit(small, 0.2, 1, reverse)).toThrow(
      'too few examples per class to hold out 0.2 of each for validation (2 classes among 4 examples, at most 2 in one; a class needs 3): give more data, a larger validationSplit or validationData',
    );
  });
});
