/**
 * SQuAD records for the question-answering tests: questions about who or where the villain was,
 * in contexts of filler words from the demo vocabulary, long enough to need several windows at
 * the tests' lengths.
 */

/** A question as Hugging Face datasets' squad records have it. */
export interface SquadRecord {
  id: string;
  title: string;
  question: string;
  context: string;
  answers: { text: string[]; answer_start: number[] };
}

const FILLER = [
  'the',
  'movie',
  'was',
  'great',
  'plot',
  'boring',
  'film',
  'good',
  'bad',
  'story',
  'and',
  'really',
  ',',
  '.',
  'at',
  'watched',
];
const WHO = ['penny', 'sister', 'parents', 'kids', 'critics', 'audience'];
const WHERE = ['cafe', 'home', 'dinner', 'cinema'];

/**
 * `n` questions about who or where the villain was, in contexts of filler words long enough to
 * need several windows at the test's length; with `unanswerable`, every fifth asks what the
 * context does not say (SQuAD 2.0). A seeded LCG: the same every run.
 */
export function questions(n: number, seed: number, prefix: string, unanswerable: boolean): SquadRecord[] {
  let state = seed;
  const next = (k: number) => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return Math.floor(state / 65536) % k;
  };
  const words = (count: number) => Array.from({ length: count }, () => FILLER[next(FILLER.length)]!).join(' ');
  return Array.from({ length: n }, (_, i) => {
    const who = WHO[next(WHO.length)]!;
    const where = WHERE[next(WHERE.length)]!;
    const before = `${words(2 + next(14))} the villain was `;
    const context = `${before}${who} at ${where} . ${words(3 + next(12))}`;
    const id = `${prefix}${i}`;
    if (unanswerable && i % 5 === 4)
      return { id, title: 't', question: 'who paid for dinner ?', context, answers: { text: [], answer_start: [] } };
    const asksWho = next(2) === 0;
    const answer = asksWho ? who : where;
    const start = asksWho ? before.length : before.length + `${who} at `.length;
    return {
      id,
      title: 't',
      question: `${asksWho ? 'who' : 'where'} was the villain ?`,
      context,
      answers: { text: [answer], answer_start: [start] },
    };
  });
}

/** Records as JSON Lines. */
export const jsonl = (records: readonly SquadRecord[]) => records.map((r) => JSON.stringify(r)).join('\n') + '\n';
