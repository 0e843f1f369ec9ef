/**
 * seqeval 1.2.2's numbers (default mode, suffix=False), each expected value worked out by hand
 * from get_entities' end_of_chunk / start_of_chunk rules and the per-type counts, as the
 * comments show; seqeval cannot be installed here to compare against it directly.
 */
import { describe, expect, it } from 'vitest';
import { InputError } from '../lib/addon/errors.js';
import { type EntityMetrics, entityMetrics, entitySpans, formatEntityMetrics } from '../lib/training/entity-metrics.js';

function expectScores(
  actual: { precision: number; recall: number; f1: number },
  expected: { precision: number; recall: number; f1: number },
  what: string,
): void {
  expect(actual.precision, `precision of ${what}`).toBeCloseTo(expected.precision, 12);
  expect(actual.recall, `recall of ${what}`).toBeCloseTo(expected.recall, 12);
  expect(actual.f1, `f1 of ${what}`).toBeCloseTo(expected.f1, 12);
}

// seqeval's README example.
const readmeGold = [
  ['O', 'O', 'O', 'B-MISC', 'I-MISC', 'I-MISC', 'O'],
  ['B-PER', 'I-PER', 'O'],
];
const readmePredicted = [
  ['O', 'O', 'B-MISC', 'I-MISC', 'I-MISC', 'I-MISC', 'O'],
  ['B-PER', 'I-PER', 'O'],
];

describe('entitySpans (seqeval get_entities)', () => {
  it("seqeval's docstring example", () => {
    // B-PER starts at 0; the O at 2 ends it (I then O); B-LOC starts at 3; the sentence's O at 4 ends it.
    expect(entitySpans([['B-PER', 'I-PER', 'O', 'B-LOC']])).toEqual([
      ['PER', 0, 1],
      ['LOC', 3, 3],
    ]);
  });

  it('indexes words across sentences, each followed by one O', () => {
    // Joined: O O O B-MISC I-MISC I-MISC O | O | B-PER I-PER O | O: the second sentence starts at 8.
    expect(entitySpans(readmeGold)).toEqual([
      ['MISC', 3, 5],
      ['PER', 8, 9],
    ]);
    expect(entitySpans(readmePredicted)).toEqual([
      ['MISC', 2, 5],
      ['PER', 8, 9],
    ]);
  });

  it('IOB1: an I- after O starts an entity', () => {
    // 0 I-LOC: O then I starts; 2 O: I then O ends LOC 0..1; 3 I-PER starts; the sentence's O ends it.
    expect(entitySpans([['I-LOC', 'I-LOC', 'O', 'I-PER']])).toEqual([
      ['LOC', 0, 1],
      ['PER', 3, 3],
    ]);
  });

  it('a change of type ends one entity and starts another', () => {
    // 1 I-ORG after B-PER: not O and the type differs, so PER ends at 0 and ORG starts at 1.
    expect(entitySpans([['B-PER', 'I-ORG', 'I-ORG']])).toEqual([
      ['PER', 0, 0],
      ['ORG', 1, 2],
    ]);
    // B after B of the same type: B then B ends the first.
    expect(entitySpans([['B-PER', 'B-PER']])).toEqual([
      ['PER', 0, 0],
      ['PER', 1, 1],
    ]);
  });

  it('IOBES tags', () => {
    // 0 S starts; 1 B: S ends PER 0..0, B starts; 2 I, 3 E continue (B/I then I/E: no rule);
    // 4 E: E ends LOC 1..3, E then E starts; 5 S: E ends LOC 4..4; 6 S: S ends PER 5..5; the O ends PER 6..6.
    expect(entitySpans([['S-PER', 'B-LOC', 'I-LOC', 'E-LOC', 'E-LOC', 'S-PER', 'S-PER']])).toEqual([
      ['PER', 0, 0],
      ['LOC', 1, 3],
      ['LOC', 4, 4],
      ['PER', 5, 5],
      ['PER', 6, 6],
    ]);
    // O then E starts an entity, which the following O (after E) ends.
    expect(entitySpans([['O', 'E-MISC', 'O']])).toEqual([['MISC', 1, 1]]);
  });

  it('splits a tag run at a sentence boundary', () => {
    // Joined: B-PER I-PER | O | I-PER O | O: the appended O ends PER 0..1, then O then I starts at 3.
    expect(
      entitySpans([
        ['B-PER', 'I-PER'],
        ['I-PER', 'O'],
      ]),
    ).toEqual([
      ['PER', 0, 1],
      ['PER', 3, 3],
    ]);
    // The same tags as one sentence are one entity.
    expect(entitySpans([['B-PER', 'I-PER', 'I-PER', 'O']])).toEqual([['PER', 0, 2]]);
  });

  it("reads types as seqeval: after the first '-', '_' when none", () => {
    // 'B' and 'I' alone have type '_' ('' or '_'); 'B-geo-loc' splits once, at its first '-'.
    expect(entitySpans([['B', 'I', 'O', 'B-geo-loc']])).toEqual([
      ['_', 0, 1],
      ['geo-loc', 3, 3],
    ]);
  });

  it('no sentences: no entities', () => {
    expect(entitySpans([])).toEqual([]);
    expect(entitySpans([[], ['O']])).toEqual([]);
  });

  it('refuses an empty tag, naming where it is', () => {
    expect(() => entitySpans([['O'], ['B-PER', '']])).toThrow(/sentence 1, word 1/);
  });
});

describe('entityMetrics (seqeval scores)', () => {
  it("seqeval's README example", () => {
    const m = entityMetrics(readmePredicted, readmeGold);
    // Gold MISC 3..5, PER 8..9; predicted MISC 2..5, PER 8..9: only PER matches.
    // Micro: tp 1 of 2 predicted, 2 gold. Accuracy: words 2 (O vs B-MISC) and 3 (B- vs I-MISC) differ: 8/10.
    expectScores(m, { precision: 0.5, recall: 0.5, f1: 0.5 }, 'micro avg');
    expect(m.accuracy).toBeCloseTo(0.8, 12);
    expect(m.macroF1).toBeCloseTo(0.5, 12); // (0 + 1) / 2
    expect(Object.keys(m.perType)).toEqual(['MISC', 'PER']);
    expect(m.perType.MISC).toEqual({ precision: 0, recall: 0, f1: 0, support: 1, predicted: 1 });
    expect(m.perType.PER).toEqual({ precision: 1, recall: 1, f1: 1, support: 1, predicted: 1 });
    expect([m.entities, m.predictedEntities, m.words]).toEqual([2, 2, 10]);
  });

  it('micro and macro averages differ', () => {
    const gold = [
      ['B-PER', 'I-PER', 'O', 'B-LOC', 'O', 'B-ORG'],
      ['B-LOC', 'O'],
    ];
    const predicted = [
      ['B-PER', 'I-PER', 'O', 'B-LOC', 'O', 'O'],
      ['B-LOC', 'B-LOC'],
    ];
    const m = entityMetrics(predicted, gold);
    // Gold: PER 0..1, LOC 3..3, ORG 5..5, LOC 7..7. Predicted: PER 0..1, LOC 3..3, LOC 7..7, LOC 8..8.
    // LOC: tp 2 of 3 predicted, 2 gold: p 2/3, r 1, f1 2·(2/3)·1/(5/3) = 0.8.
    // ORG: never predicted: p 0 (0/0), r 0/1, f1 0. PER: all 1.
    expectScores(m.perType.LOC!, { precision: 2 / 3, recall: 1, f1: 0.8 }, 'LOC');
    expectScores(m.perType.ORG!, { precision: 0, recall: 0, f1: 0 }, 'ORG');
    expectScores(m.perType.PER!, { precision: 1, recall: 1, f1: 1 }, 'PER');
    expect(Object.keys(m.perType)).toEqual(['LOC', 'ORG', 'PER']);
    expect(m.perType.LOC).toMatchObject({ support: 2, predicted: 3 });
    expect(m.perType.ORG).toMatchObject({ support: 1, predicted: 0 });
    // Micro: tp 3 of 4 predicted, 4 gold. Macro: (0.8 + 0 + 1) / 3. Accuracy: B-ORG and the second O missed, 6/8.
    expectScores(m, { precision: 0.75, recall: 0.75, f1: 0.75 }, 'micro avg');
    expect(m.macroF1).toBeCloseTo(0.6, 12);
    expect(m.accuracy).toBeCloseTo(0.75, 12);
    expect([m.entities, m.predictedEntities, m.words]).toEqual([4, 4, 8]);
  });

  it('a zero denominator gives 0', () => {
    // Gold has no entity, one is predicted: precision 0/1, recall 0/0 → 0, F1 0; one word of two right.
    const spurious = entityMetrics([['B-LOC', 'O']], [['O', 'O']]);
    expectScores(spurious, { precision: 0, recall: 0, f1: 0 }, 'micro avg');
    expect(spurious.perType).toEqual({ LOC: { precision: 0, recall: 0, f1: 0, support: 0, predicted: 1 } });
    expect(spurious.accuracy).toBeCloseTo(0.5, 12);
    // One gold entity, none predicted: precision 0/0 → 0, recall 0/1.
    const missed = entityMetrics([['O']], [['B-LOC']]);
    expect(missed.perType).toEqual({ LOC: { precision: 0, recall: 0, f1: 0, support: 1, predicted: 0 } });
    // No entities anywhere: every score 0, no types; the words are all right.
    const none = entityMetrics([['O', 'O']], [['O', 'O']]);
    expect(none).toEqual({
      precision: 0,
      recall: 0,
      f1: 0,
      macroF1: 0,
      accuracy: 1,
      perType: {},
      entities: 0,
      predictedEntities: 0,
      words: 2,
    } satisfies EntityMetrics);
    // No words at all (seqeval raises ZeroDivisionError for accuracy): 0.
    expect(entityMetrics([], []).accuracy).toBe(0);
  });

  it('refuses predictions that do not pair with gold, naming the first sentence that differs', () => {
    const call = (predicted: string[][], gold: string[][]) => () => entityMetrics(predicted, gold);
    expect(call([['O']], [['O'], ['O']])).toThrow(InputError);
    expect(call([['O']], [['O'], ['O']])).toThrow(/sentence 1 is only in gold/);
    expect(call([['O'], ['O'], ['O']], [['O'], ['O']])).toThrow(/sentence 2 is only in predicted/);
    expect(
      call(
        [['O', 'O'], ['O'], []],
        [
          ['O', 'O'],
          ['O', 'O'],
        ],
      ),
    ).toThrow(/sentence 1 has 1 predicted tags but 2 gold tags/);
  });
});

describe('formatEntityMetrics', () => {
  it("the README example as classification_report's rows", () => {
    // Columns as wide as 'micro avg', 'precision', 'recall', '0.0000', 'support'; numbers right-aligned, two spaces apart.
    expect(formatEntityMetrics(entityMetrics(readmePredicted, readmeGold))).toBe(
      [
        'type       precision  recall      f1  support',
        'MISC          0.0000  0.0000  0.0000        1',
        'PER           1.0000  1.0000  1.0000        1',
        '',
        'micro avg     0.5000  0.5000  0.5000        2',
        'macro avg     0.5000  0.5000  0.5000        2',
        'accuracy                      0.8000       10',
      ].join('\n'),
    );
  });
});
