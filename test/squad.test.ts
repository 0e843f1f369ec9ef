/**
 * Extractive question answering's pure parts: SQuAD's data (lib/answering/squad-data.ts) from
 * SQuAD's JSON and datasets' records, with every refusal named; the official EM / F1
 * (lib/answering/squad-metrics.ts), each expected value from evaluate-v2.0.py's functions run on
 * the same strings; and utils_qa.py's postprocess_qa_predictions (lib/answering/span-answers.ts),
 * whose expected candidates, float32 scores and probabilities are the Python function's output
 * (numpy, argsort kind='stable') on the logits below.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputError } from '../lib/addon/errors.js';
import { answerSpan, SPAN_DEFAULTS, type SpanOptions, type WindowLogits } from '../lib/answering/span-answers.js';
import { type QuestionExample, readQuestionFile, readQuestionFiles } from '../lib/answering/squad-data.js';
import { normalizeAnswer, type SquadScores, squadMetrics } from '../lib/answering/squad-metrics.js';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'torch-bert-squad-'));
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

const jsonLines = (records: unknown[]) => `${records.map((r) => JSON.stringify(r)).join('\n')}\n`;

describe('normalizeAnswer (SQuAD normalize_answer)', () => {
  it.each([
    ['The  Quick, brown FOX!', 'quick brown fox'],
    ['an apple a day', 'apple day'],
    ['theater anthem', 'theater anthem'],
    ['Los-Angeles', 'losangeles'],
    ['A', ''],
    ["The Eiffel Tower's height is 330 m.", 'eiffel towers height is 330 m'],
    // Punctuation goes before articles: "_the_" becomes "the", then nothing.
    ['_the_', ''],
    // string.punctuation is ASCII: curly quotes and the em dash stay.
    ['\u201cSmart\u201d quotes \u2014 dash', '\u201csmart\u201d quotes \u2014 dash'],
    // Python's \b is Unicode: é is a word character, so "thé" is no article.
    ['thé anthe the', 'thé anthe'],
    // A combining accent is not a word character in Python: "the" before it is an article.
    ['Über the\u0301 cafe', 'über \u0301 cafe'],
    // str.split(): no-break space, \x1c and \x85 are whitespace; the zero-width space is not.
    ['a\u00a0b\x1cc\u200bd\x85e', 'b c\u200bd e'],
    // str.lower() and toLowerCase() both write a word's final sigma as ς.
    ['ΟΔΟΣ the', 'οδος'],
  ])('%j → %j', (text, normalized) => {
    expect(normalizeAnswer(text)).toBe(normalized);
  });
});

/** An example with these gold answers (starts are not read by the metrics). */
const example = (id: string, answers: string[]): QuestionExample => ({
  id,
  question: '?',
  context: '',
  answers: { text: answers, answerStart: answers.map(() => 0) },
});

function expectScores(actual: SquadScores | undefined, expected: SquadScores): void {
  expect(actual?.total).toBe(expected.total);
  expect(actual?.exactMatch).toBeCloseTo(expected.exactMatch, 12);
  expect(actual?.f1).toBeCloseTo(expected.f1, 12);
}

describe('squadMetrics (evaluate-v2.0.py, as fractions)', () => {
  // Each [gold answers, prediction, exact, f1] as evaluate-v2.0.py's get_raw_scores gives it.
  it.each([
    // Articles and punctuation normalized away; the best of several gold answers.
    [['Denver Broncos', 'Broncos', 'Denver Broncos'], 'the Denver Broncos!', 1, 1],
    // 1 of 2 gold tokens, all predicted tokens right: precision 1, recall 1/2, F1 2/3; the other gold answer shares none.
    [['Denver Broncos', 'Carolina Panthers'], 'Denver', 0, 2 / 3],
    // Counter overlap: cat min(2, 1) + dog min(1, 2) = 2 of 3 on each side.
    [['cat dog dog'], 'cat cat dog', 0, 2 / 3],
    // 3 of 11 predicted tokens ("the" dropped) are the second gold's 3: 2·(3/11)·1 / (3/11 + 1) = 3/7.
    [['Santa Clara, California', "Levi's Stadium"], "Levi's Stadium in the San Francisco Bay Area at Santa Clara, California", 0, 3 / 7],
    [['1995'], '1996', 0, 0],
    // A gold answer normalizing to nothing is dropped; none left, the gold is "", which "" matches.
    [['the'], '', 1, 1],
    // No answers: only "" is right.
    [[], '', 1, 1],
    [[], 'Broncos', 0, 0],
  ])('gold %j, predicted %j: exact %d, f1 %d', (answers, predicted, exact, f1) => {
    const scores = squadMetrics(new Map([['q', predicted]]), [example('q', answers)]);
    expectScores(scores, { exactMatch: exact, f1, total: 1 });
  });

  it('averages over the examples, with HasAns and NoAns breakdowns', () => {
    const examples = [
      example('a', ['Denver Broncos']),
      example('b', ['Denver Broncos', 'Carolina Panthers']),
      example('c', []),
      example('d', []),
    ];
    const predictions = new Map([
      ['a', 'the Denver Broncos!'],
      ['b', 'Denver'],
      ['c', ''],
      ['d', 'Broncos'],
      ['unscored', 'ignored, as evaluate-v2.0.py ignores it'],
    ]);
    const scores = squadMetrics(predictions, examples);
    // exact 1, 0, 1, 0; f1 1, 2/3, 1, 0.
    expectScores(scores, { exactMatch: 2 / 4, f1: (1 + 2 / 3 + 1) / 4, total: 4 });
    expectScores(scores.hasAnswer, { exactMatch: 1 / 2, f1: (1 + 2 / 3) / 2, total: 2 });
    expectScores(scores.noAnswer, { exactMatch: 1 / 2, f1: 1 / 2, total: 2 });
  });

  it('has no NoAns breakdown without unanswerable examples (SQuAD 1.1)', () => {
    const scores = squadMetrics(new Map([['a', 'Broncos']]), [example('a', ['Denver Broncos'])]);
    expect(scores.noAnswer).toBeUndefined();
    expectScores(scores.hasAnswer, { exactMatch: 0, f1: 2 / 3, total: 1 });
  });

  it('refuses a missing prediction and no examples', () => {
    expect(() => squadMetrics(new Map([['a', '']]), [example('a', []), example('b', ['x'])])).toThrow(/no prediction for question 'b'/);
    expect(() => squadMetrics(new Map(), [])).toThrow(InputError);
  });
});

const CONTEXT = "Super Bowl 50 was played at Levi's Stadium in Santa Clara, California.";
const PIZZA = 'Pizza is from Naples.';

/** The questions every format below holds, as read. */
const EXAMPLES: QuestionExample[] = [
  {
    id: 'q1',
    question: 'Where was Super Bowl 50 played?',
    context: CONTEXT,
    answers: { text: ["Levi's Stadium", 'Santa Clara, California'], answerStart: [28, 46] },
  },
  { id: 'q2', question: 'Where was Super Bowl 51 played?', context: CONTEXT, answers: { text: [], answerStart: [] } },
  { id: 'q3', question: 'Where is pizza from?', context: PIZZA, answers: { text: ['Naples'], answerStart: [14] } },
];

/** SQuAD 2.0's JSON: q2 is_impossible, with plausible_answers that are not answers. */
const SQUAD = {
  version: 'v2.0',
  data: [
    {
      title: 'Super_Bowl_50',
      paragraphs: [
        {
          context: CONTEXT,
          qas: [
            {
              id: 'q1',
              question: 'Where was Super Bowl 50 played?',
              answers: [
                { text: "Levi's Stadium", answer_start: 28 },
                { text: 'Santa Clara, California', answer_start: 46 },
              ],
              is_impossible: false,
            },
            {
              id: 'q2',
              question: 'Where was Super Bowl 51 played?',
              answers: [],
              plausible_answers: [{ text: "Levi's Stadium", answer_start: 28 }],
              is_impossible: true,
            },
          ],
        },
      ],
    },
    {
      title: 'Pizza',
      paragraphs: [
        { context: PIZZA, qas: [{ id: 'q3', question: 'Where is pizza from?', answers: [{ text: 'Naples', answer_start: 14 }] }] },
      ],
    },
  ],
};

/** The same questions as datasets' squad_v2 to_json() writes them. */
const RECORDS = EXAMPLES.map((e) => ({
  id: e.id,
  title: e.id === 'q3' ? 'Pizza' : 'Super_Bowl_50',
  context: e.context,
  question: e.question,
  answers: { text: e.answers.text, answer_start: e.answers.answerStart },
}));

describe('readQuestionFile: the same questions from every format', () => {
  it("reads SQuAD's JSON, an is_impossible question without answers", async () => {
    const file = await fixture('dev-v2.0.json', JSON.stringify(SQUAD, null, 2));
    expect(await readQuestionFile(file)).toEqual(EXAMPLES);
  });

  it("reads datasets' JSON Lines (with CRLF and a BOM) and a JSON array", async () => {
    const lines = await fixture('squad.jsonl', `\uFEFF${jsonLines(RECORDS).replaceAll('\n', '\r\n')}`);
    expect(await readQuestionFile(lines)).toEqual(EXAMPLES);
    const array = await fixture('squad-array.json', JSON.stringify(RECORDS));
    expect(await readQuestionFile(array)).toEqual(EXAMPLES);
  });

  it("converts answer_start from Python's code points to JavaScript's UTF-16 offsets", async () => {
    // 🍕 is one character in Python (answer_start 7) and two UTF-16 units in JavaScript (8).
    const context = 'I 🍕 in Napoli.';
    const record = { id: 'p', question: 'Where?', context, answers: { text: ['Napoli'], answer_start: [7] } };
    const [read] = await readQuestionFile(await fixture('emoji.jsonl', jsonLines([record])));
    expect(read!.answers.answerStart).toEqual([8]);
    expect(context.slice(8, 8 + 'Napoli'.length)).toBe('Napoli');
    // A UTF-16 offset in the file is one character too far for Python: refused.
    const shifted = { ...record, answers: { text: ['Napoli'], answer_start: [8] } };
    await expect(readQuestionFile(await fixture('emoji-utf16.jsonl', jsonLines([shifted])))).rejects.toThrow(
      /emoji-utf16\.jsonl line 1 \(id 'p'\): answer 1 is "Napoli" but the context at its answer_start 8 reads "apoli\."/,
    );
  });

  it('reads several files as one, in order', async () => {
    const first = await fixture('part-1.jsonl', jsonLines(RECORDS.slice(0, 2)));
    const second = await fixture('part-2.json', JSON.stringify({ data: [SQUAD.data[1]] }));
    expect(await readQuestionFiles([first, second])).toEqual(EXAMPLES);
  });
});

describe('readQuestionFile: problems named with their file and question', () => {
  const fails = async (name: string, content: string, message: RegExp) => {
    const file = await fixture(name, content);
    const read = readQuestionFile(file);
    await expect(read).rejects.toThrow(InputError);
    await expect(read).rejects.toThrow(message);
  };
  const withAnswers = (answers: unknown) => jsonLines([{ ...RECORDS[0], answers }]);

  it('refuses missing and ill-typed fields', async () => {
    const { question: _, ...noQuestion } = RECORDS[0]!;
    await fails(
      'no-question.jsonl',
      jsonLines([noQuestion]),
      /no-question\.jsonl line 1 \(id 'q1'\) has no field 'question' \(its fields: id, title, context, answers\)/,
    );
    await fails(
      'number-id.jsonl',
      jsonLines([{ ...RECORDS[0], id: 1 }]),
      /number-id\.jsonl line 1: field 'id' is a number \(1\), not a text/,
    );
    await fails(
      'answers-list.jsonl',
      withAnswers(["Levi's Stadium"]),
      /answers-list\.jsonl line 1 \(id 'q1'\): field 'answers' is a list .*, not a JSON object/,
    );
    await fails(
      'text-number.jsonl',
      withAnswers({ text: [5], answer_start: [28] }),
      /text-number\.jsonl line 1 \(id 'q1'\): answers\.text item 1 is a number \(5\), not a text/,
    );
    await fails(
      'squad-context.json',
      JSON.stringify({ data: [{ paragraphs: [{ context: 5, qas: [] }] }] }),
      /squad-context\.json data\[0\]\.paragraphs\[0\]: field 'context' is a number \(5\), not a text/,
    );
    await fails(
      'squad-paragraphs.json',
      JSON.stringify({ data: [{ paragraphs: {} }] }),
      /squad-paragraphs\.json data\[0\]: field 'paragraphs' is an object \(\{\}\), not a list/,
    );
    await fails('not-object.jsonl', '[1, 2]\n', /not-object\.jsonl record 1: a record is a JSON object/);
  });

  it('refuses answer lists of different lengths and starts that are not characters of the context', async () => {
    await fails(
      'lengths.jsonl',
      withAnswers({ text: ['a', 'b'], answer_start: [28] }),
      /lengths\.jsonl line 1 \(id 'q1'\): answers has 2 texts but 1 answer_starts/,
    );
    const length = CONTEXT.length;
    for (const start of [-1, length + 1, 2.5, '28']) {
      await fails(
        'start.jsonl',
        withAnswers({ text: ["Levi's Stadium"], answer_start: [start] }),
        new RegExp(
          `start\\.jsonl line 1 \\(id 'q1'\\): answer 1's answer_start is .*; it is an integer from 0 to the context's length, ${length}`,
        ),
      );
    }
  });

  it('refuses an answer that is not the context at its start, showing both', async () => {
    await fails(
      'shifted.jsonl',
      withAnswers({ text: ["Levi's Stadium"], answer_start: [27] }),
      /shifted\.jsonl line 1 \(id 'q1'\): answer 1 is "Levi's Stadium" but the context at its answer_start 27 reads " Levi's Stadiu"/,
    );
    const squad = structuredClone(SQUAD) as any;
    squad.data[1]!.paragraphs[0]!.qas[0]!.answers[0]!.answer_start = 0;
    await fails(
      'shifted.json',
      JSON.stringify(squad),
      /shifted\.json data\[1\]\.paragraphs\[0\]\.qas\[0\] \(id 'q3'\): answer 1 is "Naples" but the context at its answer_start 0 reads "Pizza "/,
    );
  });

  it('refuses an is_impossible question with answers', async () => {
    const squad = structuredClone(SQUAD) as any;
    squad.data[0]!.paragraphs[0]!.qas[0]!.is_impossible = true;
    await fails(
      'impossible.json',
      JSON.stringify(squad),
      /impossible\.json data\[0\]\.paragraphs\[0\]\.qas\[0\] \(id 'q1'\) is_impossible but has 2 answers/,
    );
  });

  it('refuses duplicate ids, in a file and across files', async () => {
    await fails(
      'twice.jsonl',
      jsonLines([RECORDS[0], RECORDS[2], RECORDS[0]]),
      /twice\.jsonl line 3 \(id 'q1'\): the id 'q1' was given before, at .*twice\.jsonl line 1 \(id 'q1'\)/,
    );
    const first = await fixture('first.jsonl', jsonLines(RECORDS));
    const second = await fixture('second.json', JSON.stringify(SQUAD));
    const read = readQuestionFiles([first, second]);
    await expect(read).rejects.toThrow(InputError);
    await expect(read).rejects.toThrow(
      /second\.json data\[0\]\.paragraphs\[0\]\.qas\[0\] \(id 'q1'\): the id 'q1' was given before, at .*first\.jsonl line 1 \(id 'q1'\)/,
    );
  });

  it('refuses empty files and no files', async () => {
    // readTextFile refuses a file of blank lines; an empty array or data list holds no questions.
    await fails('blank.jsonl', '\n\n', /data file .*blank\.jsonl is empty/);
    await fails('empty-array.json', '[]', /data file .*empty-array\.json has no questions \(expected SQuAD's JSON/);
    await fails('empty.json', JSON.stringify({ version: '1.1', data: [] }), /data file .*empty\.json has no questions/);
    await expect(readQuestionFiles([])).rejects.toThrow(/no data files given/);
  });
});

const FOX = 'The quick brown fox jumps over the lazy dog.';
/** Each word's characters in FOX: The, quick, brown, fox, jumps, over, the, lazy, dog, '.'. */
const WORDS: Array<[number, number]> = [
  [0, 3],
  [4, 9],
  [10, 15],
  [16, 19],
  [20, 25],
  [26, 30],
  [31, 34],
  [35, 39],
  [40, 43],
  [43, 44],
];
/** A window's offsets: [CLS], two question tokens and [SEP] (none), the words, [SEP]; logits past them are padding. */
const offsets = (first: number, last: number) => [null, null, null, null, ...WORDS.slice(first, last), null];

// Window A holds words 0-5 and a padding position whose logits (5.0, 4.0) are the largest; B holds words 4-9.
const A: WindowLogits = {
  start: [0.5, 0.1, 0.2, 0.0, 1.3, 0.7, 2.1, 0.4, 0.3, 0.2, 0.0, 5.0],
  end: [0.4, 0.0, 0.1, 0.0, 0.2, 0.3, 0.6, 2.2, 0.1, 0.5, 0.0, 4.0],
  offsets: offsets(0, 6),
};
const B: WindowLogits = {
  start: Float32Array.of(0.3, 0.0, 0.0, 0.0, 0.2, 0.1, 1.0, 3.1, 0.4, 0.2, 0.1, -1.0),
  end: Float32Array.of(0.2, 0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.9, 2.7, 0.5, 0.0, -1.0),
  offsets: offsets(4, 10),
};
// The best start is "brown" (3.0), the best end "quick" (3.0) before it; "over" (2.5) ends a 4-word span.
const M: WindowLogits = {
  start: [0.0, 0.1, 0.1, 0.1, 1.0, 0.1, 3.0, 0.1, 0.1, 0.1, 0.1],
  end: [0.0, 0.1, 0.1, 0.1, 0.1, 3.0, 0.1, 0.5, 0.1, 2.5, 0.1],
  offsets: offsets(0, 6),
};
// B with [CLS] logits 4.0 + 3.5 = 7.5: the null score beats "lazy dog" (5.8) by 1.7.
const N: WindowLogits = { ...B, start: [4.0, ...Array.from(B.start).slice(1)], end: [3.5, ...Array.from(B.end).slice(1)] };
// The best start is a question token (5.0 at 1): with nBest 1 there is no span.
const E: WindowLogits = { start: [0.7, 5.0, 0.1, 0.1, 0.2, 0.3], end: [0.5, 0.1, 0.1, 0.1, 0.2, 0.3], offsets: offsets(0, 1) };
// "brown" and "fox" tie for the best start (1.5): the later position is taken.
const T: WindowLogits = {
  start: [0.0, 0.0, 0.0, 0.0, 0.5, 1.5, 0.5, 1.5, 0.2, 0.1, 0.0],
  end: [0.0, 0.0, 0.0, 0.0, 0.1, 0.1, 0.1, 0.2, 2.0, 0.1, 0.0],
  offsets: offsets(0, 6),
};

/** utils_qa.py's answer and its candidates: [text, start, end, float32 score, probability], best first. */
interface Reference {
  answer: string;
  candidates: Array<[string, number, number, number, number]>;
}

// postprocess_qa_predictions (argsort kind='stable') on the windows above, printed by Python.
const REFERENCE: Record<string, Reference> = {
  twoWindows: {
    answer: 'lazy dog',
    candidates: [
      ['lazy dog', 35, 43, 5.800000190734863, 0.7202385067939758],
      ['brown fox', 10, 19, 4.300000190734863, 0.16070693731307983],
      ['lazy', 35, 39, 4.0, 0.11905460059642792],
    ],
  },
  twoWindowsDefaults: {
    answer: 'lazy dog',
    candidates: [
      ['lazy dog', 35, 43, 5.800000190734863, 0.4537583887577057],
      ['brown fox', 10, 19, 4.300000190734863, 0.10124718397855759],
      ['lazy', 35, 39, 4.0, 0.07500573992729187],
      ['the lazy dog', 31, 43, 3.700000047683716, 0.05556562915444374],
      ['lazy dog.', 35, 44, 3.5999999046325684, 0.05027784779667854],
      ['The quick brown fox', 0, 19, 3.5, 0.04549328237771988],
      ['dog', 40, 43, 3.1000001430511475, 0.030495062470436096],
      ['quick brown fox', 4, 19, 2.9000000953674316, 0.024967243894934654],
      ['jumps over the lazy dog', 20, 43, 2.9000000953674316, 0.024967243894934654],
      ['over the lazy dog', 26, 43, 2.799999952316284, 0.02259129472076893],
      ['brown', 10, 15, 2.6999998092651367, 0.0204414464533329],
      ['fox', 16, 19, 2.6000001430511475, 0.018496191129088402],
      ['brown fox jumps over', 10, 30, 2.5999999046325684, 0.018496185541152954],
      ['brown fox jumps', 10, 25, 2.1999998092651367, 0.012398364022374153],
      ['The quick brown', 0, 15, 1.899999976158142, 0.009184936992824078],
      ['the lazy', 31, 39, 1.899999976158142, 0.009184936992824078],
      ['The quick brown fox jumps over', 0, 30, 1.7999999523162842, 0.008310874924063683],
      ['The quick', 0, 9, 1.5999999046325684, 0.006804367061704397],
      ['The', 0, 3, 1.5, 0.0061568464152514935],
      ['the lazy dog.', 31, 44, 1.5, 0.0061568464152514935],
    ],
  },
  maxLength30: {
    answer: 'brown fox jumps over',
    candidates: [
      ['brown fox jumps over', 10, 30, 5.5, 0.48284387588500977],
      ['The quick', 0, 9, 4.0, 0.10773702710866928],
      ['brown fox', 10, 19, 3.5, 0.06534580886363983],
      ['The quick brown fox jumps over', 0, 30, 3.5, 0.06534580886363983],
      ['brown fox jumps', 10, 25, 3.0999999046325684, 0.04380260407924652],
      ['brown', 10, 15, 3.0999999046325684, 0.04380260407924652],
      ['quick', 4, 9, 3.0999999046325684, 0.04380260407924652],
      ['over', 26, 30, 2.5999999046325684, 0.026567621156573296],
      ['jumps over', 20, 30, 2.5999999046325684, 0.026567621156573296],
      ['fox jumps over', 16, 30, 2.5999999046325684, 0.026567621156573296],
      ['quick brown fox jumps over', 4, 30, 2.5999999046325684, 0.026567621156573296],
      ['The quick brown fox', 0, 19, 1.5, 0.00884359423071146],
      ['The quick brown fox jumps', 0, 25, 1.100000023841858, 0.005928037688136101],
      ['The quick brown', 0, 15, 1.100000023841858, 0.005928037688136101],
      ['The', 0, 3, 1.100000023841858, 0.005928037688136101],
      ['fox', 16, 19, 0.6000000238418579, 0.0035955370403826237],
      ['quick brown fox', 4, 19, 0.6000000238418579, 0.0035955370403826237],
      ['jumps', 20, 25, 0.20000000298023224, 0.002410160144791007],
      ['fox jumps', 16, 25, 0.20000000298023224, 0.002410160144791007],
      ['quick brown fox jumps', 4, 25, 0.20000000298023224, 0.002410160144791007],
    ],
  },
  maxLength3: {
    answer: 'The quick',
    candidates: [
      ['The quick', 0, 9, 4.0, 0.26247158646583557],
      ['brown fox', 10, 19, 3.5, 0.15919707715511322],
      ['brown fox jumps', 10, 25, 3.0999999046325684, 0.10671298205852509],
      ['brown', 10, 15, 3.0999999046325684, 0.10671298205852509],
      ['quick', 4, 9, 3.0999999046325684, 0.10671298205852509],
      ['over', 26, 30, 2.5999999046325684, 0.06472469121217728],
      ['jumps over', 20, 30, 2.5999999046325684, 0.06472469121217728],
      ['fox jumps over', 16, 30, 2.5999999046325684, 0.06472469121217728],
      ['The quick brown', 0, 15, 1.100000023841858, 0.01444203034043312],
      ['The', 0, 3, 1.100000023841858, 0.01444203034043312],
      ['fox', 16, 19, 0.6000000238418579, 0.008759534917771816],
      ['quick brown fox', 4, 19, 0.6000000238418579, 0.008759534917771816],
      ['jumps', 20, 25, 0.20000000298023224, 0.005871692206710577],
      ['fox jumps', 16, 25, 0.20000000298023224, 0.005871692206710577],
      ['quick brown', 4, 15, 0.20000000298023224, 0.005871692206710577],
    ],
  },
  v2SpanWins: {
    answer: 'lazy dog',
    candidates: [
      ['lazy dog', 35, 43, 5.800000190734863, 0.7176584005355835],
      ['brown fox', 10, 19, 4.300000190734863, 0.16013123095035553],
      ['lazy', 35, 39, 4.0, 0.1186281070113182],
      ['', 0, 0, 0.5, 0.0035822587087750435],
    ],
  },
  v2NullWins: {
    answer: '',
    candidates: [
      ['', 0, 0, 7.5, 0.8244832158088684],
      ['lazy dog', 35, 43, 5.800000190734863, 0.1506195217370987],
      ['lazy', 35, 39, 4.0, 0.02489723637700081],
    ],
  },
  v2NullUnderThreshold: {
    answer: 'lazy dog',
    candidates: [
      ['', 0, 0, 7.5, 0.8244832158088684],
      ['lazy dog', 35, 43, 5.800000190734863, 0.1506195217370987],
      ['lazy', 35, 39, 4.0, 0.02489723637700081],
    ],
  },
  emptyV1: {
    answer: 'empty',
    candidates: [['empty', 0, 0, 0.0, 1.0]],
  },
  emptyV2: {
    answer: '',
    candidates: [
      ['empty', 0, 0, 0.0, 0.2314752080183145],
      ['', 0, 0, 1.2000000476837158, 0.7685247919816856],
    ],
  },
  emptyV2Threshold: {
    answer: 'empty',
    candidates: [
      ['empty', 0, 0, 0.0, 0.2314752080183145],
      ['', 0, 0, 1.2000000476837158, 0.7685247919816856],
    ],
  },
  ties: {
    answer: 'fox jumps',
    candidates: [['fox jumps', 16, 25, 3.5, 1.0]],
  },
};

function expectReference(context: string, windows: WindowLogits[], options: Partial<SpanOptions>, expected: Reference) {
  const answer = answerSpan(context, windows, { ...SPAN_DEFAULTS, ...options });
  expect(answer.text).toBe(expected.answer);
  // Texts, characters and float32 scores exactly: the order (ties included) is utils_qa.py's.
  expect(answer.candidates.map((c) => [c.text, c.start, c.end, c.score])).toEqual(
    expected.candidates.map(([t, s, e, score]) => [t, s, e, score]),
  );
  // numpy's softmax ran in float32.
  answer.candidates.forEach((c, i) => {
    expect(c.probability).toBeCloseTo(expected.candidates[i]![4], 6);
  });
  expect(answer.candidates.reduce((sum, c) => sum + c.probability, 0)).toBeCloseTo(1, 12);
  return answer;
}

describe('answerSpan (utils_qa.py postprocess_qa_predictions)', () => {
  it('takes the best span across windows; padding takes a place among the n best but gives no span', () => {
    const answer = expectReference(FOX, [A, B], { nBest: 3 }, REFERENCE.twoWindows!);
    expect(answer).toMatchObject({ text: 'lazy dog', start: 35, end: 43, probability: answer.candidates[0]!.probability });
    // float32: 3.1f + 2.7f rounded to float32, not the float64 sum.
    expect(answer.candidates[0]!.score).toBe(Math.fround(Math.fround(3.1) + Math.fround(2.7)));
    expect(answer.candidates[0]!.score).not.toBe(Math.fround(3.1) + Math.fround(2.7));
    expect(answer.candidates[0]).toMatchObject({ startLogit: Math.fround(3.1), endLogit: Math.fround(2.7) });
  });

  it("keeps run_qa.py's 20 best with the defaults", () => {
    const answer = expectReference(FOX, [A, B], {}, REFERENCE.twoWindowsDefaults!);
    expect(answer.candidates).toHaveLength(20);
  });

  it('skips spans ending before they start and spans longer than maxAnswerLength', () => {
    // ("brown", "quick") would score 6.0 but ends before it starts.
    expect(expectReference(FOX, [M], {}, REFERENCE.maxLength30!).text).toBe('brown fox jumps over');
    // "brown fox jumps over" is 4 tokens: with at most 3, "The quick" is best.
    const short = expectReference(FOX, [M], { maxAnswerLength: 3 }, REFERENCE.maxLength3!);
    expect(short).toMatchObject({ text: 'The quick', start: 0, end: 9 });
    expect(short.candidates.every((c) => c.text.split(' ').length <= 3)).toBe(true);
  });

  it('takes the later of tied positions (np.argsort kind="stable", reversed)', () => {
    expect(expectReference(FOX, [T], { nBest: 1 }, REFERENCE.ties!).text).toBe('fox jumps');
  });

  it('versionTwo: the lowest null score joins the candidates, and a span wins unless the null score beats it by more than the threshold', () => {
    const spanWins = expectReference(FOX, [A, B], { nBest: 3, versionTwo: true }, REFERENCE.v2SpanWins!);
    // Window B's null score (0.3 + 0.2) is the lower; not among the 3 best, it is appended.
    expect(spanWins.candidates.at(-1)).toMatchObject({
      text: '',
      start: 0,
      end: 0,
      startLogit: Math.fround(0.3),
      endLogit: Math.fround(0.2),
    });
    expect(spanWins.text).toBe('lazy dog');

    const nullWins = expectReference(FOX, [N], { nBest: 3, versionTwo: true }, REFERENCE.v2NullWins!);
    expect(nullWins).toMatchObject({ text: '', start: 0, end: 0, probability: nullWins.candidates[0]!.probability });

    expectReference(FOX, [N], { nBest: 3, versionTwo: true, nullScoreDiffThreshold: 2 }, REFERENCE.v2NullUnderThreshold!);
    // The difference, 7.5 - 3.1f - 2.7f in float32, is not more than itself: the span wins.
    const diff = Math.fround(Math.fround(7.5 - Math.fround(3.1)) - Math.fround(2.7));
    expect(diff).toBe(1.7000000476837158);
    expect(answerSpan(FOX, [N], { ...SPAN_DEFAULTS, versionTwo: true, nullScoreDiffThreshold: diff }).text).toBe('lazy dog');
    expect(answerSpan(FOX, [N], { ...SPAN_DEFAULTS, versionTwo: true, nullScoreDiffThreshold: diff - 1e-6 }).text).toBe('');
  });

  it('puts "empty" first where there is no span, or only the null one', () => {
    const v1 = expectReference(FOX, [E], { nBest: 1 }, REFERENCE.emptyV1!);
    expect(v1).toMatchObject({ text: 'empty', start: 0, end: 0, probability: 1 });
    // v2: "empty" (score 0) is the best non-null candidate; the null score 1.2 beats it by 1.2.
    expect(expectReference(FOX, [E], { nBest: 1, versionTwo: true }, REFERENCE.emptyV2!).text).toBe('');
    expect(expectReference(FOX, [E], { nBest: 1, versionTwo: true, nullScoreDiffThreshold: 2 }, REFERENCE.emptyV2Threshold!).text).toBe(
      'empty',
    );
  });

  it('refuses options that are not positive integers or a finite threshold, and an example without windows', () => {
    for (const options of [{ nBest: 0 }, { nBest: 1.5 }, { maxAnswerLength: 0 }, { nullScoreDiffThreshold: Number.NaN }]) {
      expect(() => answerSpan(FOX, [A], { ...SPAN_DEFAULTS, ...options })).toThrow(InputError);
    }
    expect(() => answerSpan(FOX, [A], { ...SPAN_DEFAULTS, nBest: 0 })).toThrow(/nBest is 0; it is a whole number of at least 1/);
    expect(() => answerSpan(FOX, [], SPAN_DEFAULTS)).toThrow(/at least one window/);
  });
});
