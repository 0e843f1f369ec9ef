/**
 * `torch-bert qa` as a user runs it: train a question-answering model on SQuAD records with
 * --json (the library's run, number for number), evaluate, answer and export what it kept (the
 * library's numbers; Python reads the TorchScript file), the tables for people, and usage errors'
 * exit code. Runs the compiled CLI (dist/cli.js), as installed users do.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type QaTrainResult, trainQuestionAnswering } from '../lib/answering/qa-trainer.js';
import { QuestionAnswerer } from '../lib/answering/question-answerer.js';
import { questionWindows, windowOffsets } from '../lib/answering/question-windows.js';
import type { SpanAnswer } from '../lib/answering/span-answers.js';
import { TextTokenizer } from '../lib/data/tokenizer.js';
import { makeHfFolder, repoRoot, runPython } from './fixtures.js';
import { runCommand } from './helpers/run-command.js';

const cli = join(repoRoot, 'dist', 'cli.js');
const run = (args: string[]) => runCommand(process.execPath, [cli, ...args]);

interface SquadRecord {
  id: string;
  title: string;
  question: string;
  context: string;
  answers: { text: string[]; answer_start: number[] };
}

const FILLER = ['the', 'movie', 'was', 'great', 'plot', 'boring', 'film', 'good', 'bad', 'story', 'and', 'really', ',', '.'];
const WHO = ['penny', 'sister', 'parents', 'kids', 'critics'];
const WHERE = ['cafe', 'home', 'dinner', 'cinema'];

/**
 * `n` questions (Hugging Face datasets' squad_v2 records) about who or where the villain was, in
 * contexts of filler words, some long enough for two windows; every fifth asks what the context
 * does not say. A seeded LCG: the same every run.
 */
function questions(n: number, seed: number, prefix: string): SquadRecord[] {
  let state = seed;
  const next = (k: number) => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return Math.floor(state / 65536) % k;
  };
  const words = (count: number) => Array.from({ length: count }, () => FILLER[next(FILLER.length)]!).join(' ');
  return Array.from({ length: n }, (_, i) => {
    const who = WHO[next(WHO.length)]!;
    const where = WHERE[next(WHERE.length)]!;
    const before = `${words(2 + next(10))} the villain was `;
    const context = `${before}${who} at ${where} . ${words(2 + next(10))}`;
    const id = `${prefix}${i}`;
    if (i % 5 === 4) return { id, title: 't', question: 'who paid for dinner ?', context, answers: { text: [], answer_start: [] } };
    const asksWho = next(2) === 0;
    return {
      id,
      title: 't',
      question: `${asksWho ? 'who' : 'where'} was the villain ?`,
      context,
      answers: { text: [asksWho ? who : where], answer_start: [asksWho ? before.length : before.length + `${who} at `.length] },
    };
  });
}

/** SQuAD 2.0's own JSON of `records`, a paragraph each. */
function squadJson(records: readonly SquadRecord[]): string {
  const paragraphs = records.map((r) => ({
    context: r.context,
    qas: [
      {
        id: r.id,
        question: r.question,
        answers: r.answers.text.map((text, k) => ({ text, answer_start: r.answers.answer_start[k] })),
        is_impossible: r.answers.text.length === 0,
      },
    ],
  }));
  return JSON.stringify({ version: 'v2.0', data: [{ title: 't', paragraphs }] });
}

/** The run both the CLI and the library train. */
const RUN = { epochs: 2, batchSize: 4, learningRate: 1e-3, maxLength: 32, docStride: 8, nBest: 5, maxAnswerLength: 6, seed: 7 };

const CONTEXT = 'the movie was great , the villain was penny at home . the plot was boring';

describe('torch-bert qa (CLI)', () => {
  const work = mkdtempSync(join(tmpdir(), 'torch-bert-cli-qa-'));
  const out = join(work, 'answerer');
  const trainFile = join(work, 'train.jsonl');
  const validationFile = join(work, 'validation.json');
  const validation = questions(10, 2, 'v');
  let model: string;
  let trained: { code: number | null; stdout: string; stderr: string };
  let library: QaTrainResult;

  beforeAll(async () => {
    if (!existsSync(cli)) throw new Error(`${cli} is missing: run 'npm run build:ts' first`);
    model = (
      await makeHfFolder({ layout: 'automodel', tokenizer: 'json', layers: 2, hidden: 32, heads: 4, intermediate: 64, dropout: 0, seed: 3 })
    ).dir;
    writeFileSync(
      trainFile,
      `${questions(24, 1, 't')
        .map((r) => JSON.stringify(r))
        .join('\n')}\n`,
    );
    writeFileSync(validationFile, squadJson(validation));
    [trained, library] = await Promise.all([
      run([
        'qa',
        'train',
        '--model',
        model,
        '--data',
        trainFile,
        '--validation-data',
        validationFile,
        '--out',
        out,
        '--version-2-with-negative',
        '--pad-to-longest',
        '--epochs',
        String(RUN.epochs),
        '--batch-size',
        String(RUN.batchSize),
        '--lr',
        String(RUN.learningRate),
        '--max-length',
        String(RUN.maxLength),
        '--doc-stride',
        String(RUN.docStride),
        '--n-best',
        String(RUN.nBest),
        '--max-answer-length',
        String(RUN.maxAnswerLength),
        '--seed',
        String(RUN.seed),
        '--best-metric',
        'f1',
        '--threads',
        '1',
        '--json',
      ]),
      trainQuestionAnswering({
        model,
        data: trainFile,
        validationData: validationFile,
        outDir: join(work, 'library'),
        versionTwo: true,
        padToMaxLength: false,
        bestMetric: 'f1',
        threads: 1,
        ...RUN,
      }),
    ]);
  }, 300_000);
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('trains with --json as trainQuestionAnswering() does with the same options, into a BertForQuestionAnswering folder', () => {
    expect(trained.stderr).toBe('');
    expect(trained.code).toBe(0);
    const result = JSON.parse(trained.stdout);
    expect(result.outDir).toBe(out);
    expect([result.trainQuestions, result.trainWindows, result.validationQuestions]).toEqual([
      library.trainQuestions,
      library.trainWindows,
      library.validationQuestions,
    ]);
    expect(result.trainQuestions).toBe(24);
    expect(result.trainWindows).toBeGreaterThan(24); // some contexts need two windows
    const numbers = (h: QaTrainResult['history'][number]) => [
      h.epoch,
      h.trainLoss,
      h.validationLoss,
      h.validationExactMatch,
      h.validationF1,
      h.isBest,
    ];
    expect(result.history.map(numbers)).toEqual(library.history.map(numbers));
    expect(result.history).toHaveLength(RUN.epochs);
    expect(result.best).toEqual(library.best);
    // --best-metric f1: the kept epoch is the one of highest F1 (the first of equals).
    const highest = Math.max(...result.history.map((h: { validationF1: number }) => h.validationF1));
    expect(result.best.epoch).toBe(result.history.find((h: { validationF1: number }) => h.validationF1 === highest).epoch);
    // The kept weights' metrics, fractions, the answers an object by question id (no candidates).
    const { answers, ...scores } = library.metrics!;
    expect(result.metrics).toEqual({
      ...scores,
      answers: Object.fromEntries(
        [...answers].map(([id, a]) => [id, { text: a.text, start: a.start, end: a.end, probability: a.probability }]),
      ),
    });
    expect(result.metrics.total).toBe(10);
    expect([result.metrics.hasAnswer.total, result.metrics.noAnswer.total]).toEqual([8, 2]);
    for (const m of [result.metrics.exactMatch, result.metrics.f1]) expect(m >= 0 && m <= 1).toBe(true);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(config.architectures).toEqual(['BertForQuestionAnswering']);
    expect(config.torch_bert).toMatchObject({
      maxLength: RUN.maxLength,
      docStride: RUN.docStride,
      padToMaxLength: false,
      versionTwo: true,
    });
  });

  it('evaluates the kept weights as QuestionAnswerer.evaluate() and as training did (eval --json, and the table for people)', async () => {
    const kept = JSON.parse(trained.stdout).metrics;
    const evaluated = await run([
      'qa',
      'eval',
      '--model',
      out,
      '--data',
      validationFile,
      '--n-best',
      String(RUN.nBest),
      '--max-answer-length',
      String(RUN.maxAnswerLength),
      '--json',
    ]);
    expect(evaluated.stderr).toBe('');
    expect(evaluated.code).toBe(0);
    const m = JSON.parse(evaluated.stdout);
    const answerer = await QuestionAnswerer.load(out, { device: 'cpu' });
    let expected: Awaited<ReturnType<QuestionAnswerer['evaluate']>>;
    try {
      expected = await answerer.evaluate(validationFile, { nBest: RUN.nBest, maxAnswerLength: RUN.maxAnswerLength });
    } finally {
      answerer.dispose();
    }
    expect(Object.keys(m)).toEqual(['exactMatch', 'f1', 'total', 'hasAnswer', 'noAnswer', 'loss', 'answers']);
    expect([m.exactMatch, m.f1, m.total, m.hasAnswer, m.noAnswer, m.loss]).toEqual([
      expected.exactMatch,
      expected.f1,
      expected.total,
      expected.hasAnswer,
      expected.noAnswer,
      expected.loss,
    ]);
    expect(Object.keys(m.answers)).toEqual(validation.map((r) => r.id));
    for (const [id, a] of expected.answers)
      expect(m.answers[id]).toEqual({ text: a.text, start: a.start, end: a.end, probability: a.probability });
    // The numbers training kept (its batches of 4 windows against eval's 32: the loss alike, not bit for bit).
    expect([m.exactMatch, m.f1, m.total]).toEqual([kept.exactMatch, kept.f1, kept.total]);
    expect(Math.abs(m.loss - kept.loss)).toBeLessThan(1e-5);

    const table = await run([
      'qa',
      'eval',
      '--model',
      out,
      '--data',
      validationFile,
      '--n-best',
      String(RUN.nBest),
      '--max-answer-length',
      String(RUN.maxAnswerLength),
    ]);
    expect(table.code).toBe(0);
    const row = (name: string, s: { exactMatch: number; f1: number; total: number }) =>
      new RegExp(`^${name}\\s+${s.exactMatch.toFixed(4)}\\s+${s.f1.toFixed(4)}\\s+${s.total}$`);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe(`questions ${m.total}, loss ${m.loss.toFixed(4)}`);
    expect(lines[1]).toMatch(/^questions\s+exact match\s+f1\s+total$/);
    expect(lines[2]).toMatch(row('all', m));
    expect(lines[3]).toMatch(row('HasAns', m.hasAnswer));
    expect(lines[4]).toMatch(row('NoAns', m.noAnswer));
    expect(lines).toHaveLength(5);
  });

  it('answers each QUESTION as answer() does: --json (--candidates), --context-file, and a line each for people', async () => {
    const asked = ['who was the villain ?', 'where was the villain ?', 'who paid for dinner ?'];
    const predicted = await run(['qa', 'predict', '--model', out, '--context', CONTEXT, '--json', ...asked]);
    expect(predicted.stderr).toBe('');
    expect(predicted.code).toBe(0);
    const answerer = await QuestionAnswerer.load(out, { device: 'cpu' });
    let expected: SpanAnswer[];
    let three: SpanAnswer[];
    try {
      expected = await answerer.answer(asked.map((question) => ({ question, context: CONTEXT })));
      three = await answerer.answer(
        asked.map((question) => ({ question, context: CONTEXT })),
        { nBest: 3 },
      );
    } finally {
      answerer.dispose();
    }
    const lines = predicted.stdout.trim().split('\n');
    expect(lines.map((line) => JSON.parse(line))).toEqual(
      expected.map((a) => ({ text: a.text, start: a.start, end: a.end, probability: a.probability })),
    );
    for (const a of expected) if (a.text !== '') expect(CONTEXT.slice(a.start, a.end)).toBe(a.text);

    const contextFile = join(work, 'context.txt');
    writeFileSync(contextFile, CONTEXT);
    const withCandidates = await run([
      'qa',
      'predict',
      '--model',
      out,
      '--context-file',
      contextFile,
      '--n-best',
      '3',
      '--json',
      '--candidates',
      ...asked,
    ]);
    expect(withCandidates.code, withCandidates.stderr).toBe(0);
    const parsed = withCandidates.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(parsed).toEqual(
      three.map((a) => ({ text: a.text, start: a.start, end: a.end, probability: a.probability, candidates: a.candidates })),
    );
    // At most --n-best spans, and the null answer (the folder's --version-2-with-negative) after them where it is not among them.
    for (const a of parsed as SpanAnswer[]) {
      expect(a.candidates.filter((c) => c.text !== '').length).toBeLessThanOrEqual(3);
      expect(a.candidates.filter((c) => c.text === '')).toHaveLength(1);
    }

    const people = await run(['qa', 'predict', '--model', out, '--context', CONTEXT, ...asked]);
    expect(people.code).toBe(0);
    expect(people.stdout).toBe(
      expected
        .map((a, i) => `${asked[i]}\t${a.text === '' ? '(no answer)' : a.text}\t${a.start}-${a.end}\t${a.probability.toFixed(4)}\n`)
        .join(''),
    );
  });

  it("exports a TorchScript file (qa export) whose span_logits_token_types Python reads as answer()'s candidates' logits", async () => {
    const file = join(work, 'answerer.pt');
    const exported = await run(['qa', 'export', '--model', out, '--out', file]);
    expect(exported.stderr).toBe('');
    expect(exported.code).toBe(0);
    expect(exported.stdout.trim()).toBe(
      `wrote ${file}: span_logits_token_types(input_ids, attention_mask, token_type_ids) -> start and end logits [batch, tokens, 2]`,
    );
    const question = 'who was the villain ?';
    const answerer = await QuestionAnswerer.load(out, { device: 'cpu' });
    let answer: SpanAnswer;
    try {
      [answer] = (await answerer.answer([{ question, context: CONTEXT }], { nBest: RUN.nBest })) as [SpanAnswer];
      expect(answerer.windows).toEqual({ maxLength: RUN.maxLength, docStride: RUN.docStride, tokenTypes: true });
    } finally {
      answerer.dispose();
    }
    // The question and its context in one window, as the model reads them.
    const tokenizer = await TextTokenizer.load(join(out, 'tokenizer.json'));
    const windows = questionWindows(tokenizer, [{ id: 'q', question, context: CONTEXT, answers: { text: [], answerStart: [] } }], {
      maxLength: RUN.maxLength,
      docStride: RUN.docStride,
      tokenTypes: true,
    });
    expect(windows.encoded.count).toBe(1);
    const length = windows.encoded.lengths[0]!;
    const take = (values: ArrayLike<number>) => Array.from(values).slice(0, length);
    const code = [
      'import json, sys, torch',
      'job = json.load(sys.stdin)',
      'with torch.no_grad():',
      '    out = torch.jit.load(job["file"]).span_logits_token_types(*(torch.tensor([job[k]]) for k in ("ids", "mask", "types")))',
      'print(json.dumps({"shape": list(out.shape), "logits": out[0].tolist()}))',
    ].join('\n');
    const job = {
      file,
      ids: take(windows.encoded.inputIds),
      mask: take(windows.encoded.attentionMask),
      types: take(windows.encoded.tokenTypeIds!),
    };
    const { shape, logits } = JSON.parse(await runPython('-c', [code], JSON.stringify(job))) as { shape: number[]; logits: number[][] };
    expect(shape).toEqual([1, length, 2]);
    // Each span candidate's logits are those of its first token's start and its last token's end.
    const offsets = windowOffsets(windows, 0, length);
    const spans = answer.candidates.filter((c) => c.text !== '');
    expect(spans.length).toBeGreaterThan(1);
    for (const c of spans) {
      const first = offsets.findIndex((o) => o !== null && o[0] === c.start);
      const last = offsets.findIndex((o) => o !== null && o[1] === c.end);
      expect([first, last].every((p) => p > 0)).toBe(true);
      expect(logits[first]![0]).toBeCloseTo(c.startLogit, 4);
      expect(logits[last]![1]).toBeCloseTo(c.endLogit, 4);
    }
  });

  it('prints the history and the kept weights’ SQuAD scores for people (--best-metric exact-match, --technique frozen)', async () => {
    const dir = join(work, 'human');
    const human = await run([
      'qa',
      'train',
      '--model',
      model,
      '--data',
      trainFile,
      '--validation-split',
      '0.25',
      '--out',
      dir,
      '--technique',
      'frozen',
      '--best-metric',
      'exact-match',
      '--epochs',
      '2',
      '--max-length',
      String(RUN.maxLength),
      '--doc-stride',
      String(RUN.docStride),
      '--threads',
      '1',
    ]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/^epoch\s+train loss\s+val loss\s+val EM\s+val F1\s+time\s+best$/m);
    expect(human.stdout).toMatch(/^\s+1\s+\d+\.\d{4}\s+\d+\.\d{4}\s+\d\.\d{4}\s+\d\.\d{4}\s/m);
    expect(human.stdout).toMatch(
      /validation metrics of the kept weights \(epoch \d, step \d+\), loss \d+\.\d{4}:\nquestions\s+exact match\s+f1\s+total\nall\s+\d\.\d{4}\s+\d\.\d{4}\s+6\n/,
    );
    expect(human.stdout).toContain(`saved to ${dir} (18 questions in `);
    expect(human.stdout).toMatch(/windows for training, 6 questions for validation\)\n$/);
    // --best-metric exact-match kept the epoch of the highest exact match.
    const history = JSON.parse(readFileSync(join(dir, 'history.json'), 'utf8')) as Array<{ epoch: number; validationExactMatch: number }>;
    const kept = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).torch_bert.kept;
    expect(kept.validationExactMatch).toBe(Math.max(...history.map((h) => h.validationExactMatch)));
    // Each epoch's line on stderr, with SQuAD's scores.
    expect(human.stderr).toMatch(
      /^epoch 1\/2: train loss \d+\.\d{4}.* \| validation loss \d+\.\d{4} exact match \d\.\d{4} F1 \d\.\d{4} \|/m,
    );
  });

  it('--nproc-per-node 2 starts a data-parallel run: rank 0 alone prints, writes and scores every validation question', async () => {
    const dir = join(work, 'nproc');
    const two = await run([
      'qa',
      'train',
      '--model',
      model,
      '--data',
      trainFile,
      '--validation-data',
      validationFile,
      '--out',
      dir,
      '--epochs',
      '1',
      '--batch-size',
      '2',
      '--max-length',
      String(RUN.maxLength),
      '--doc-stride',
      String(RUN.docStride),
      '--nproc-per-node',
      '2',
      '--json',
    ]);
    expect(two.code, two.stderr).toBe(0);
    const lines = two.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const result = JSON.parse(lines[0]!);
    expect([result.trainQuestions, result.trainWindows, result.validationQuestions]).toEqual([
      library.trainQuestions,
      library.trainWindows,
      library.validationQuestions,
    ]);
    expect(result.metrics.total).toBe(validation.length);
    expect(Object.keys(result.metrics.answers)).toEqual(validation.map((r) => r.id));
    expect(existsSync(join(dir, 'model.safetensors'))).toBe(true);
  }, 300_000);

  it('exits 2 on a usage error, naming the flag', async () => {
    const missing = await run(['qa', 'train', '--model', model, '--out', join(work, 'none')]);
    expect(missing.code).toBe(2);
    expect(missing.stdout).toBe('');
    expect(missing.stderr.trim()).toBe("torch-bert: error: qa train: --data is required (see 'torch-bert qa train --help')");

    const metric = await run([
      'qa',
      'train',
      '--model',
      model,
      '--data',
      trainFile,
      '--out',
      join(work, 'none'),
      '--best-metric',
      'accuracy',
    ]);
    expect(metric.code).toBe(2);
    expect(metric.stderr.trim()).toBe("torch-bert: error: qa train: --best-metric expects loss, f1 or exact-match; got 'accuracy'");
    expect(existsSync(join(work, 'none'))).toBe(false);

    const context = await run(['qa', 'predict', '--model', out, 'who was the villain ?']);
    expect(context.code).toBe(2);
    expect(context.stderr.trim()).toBe(
      "torch-bert: error: qa predict: --context TEXT or --context-file FILE is required (see 'torch-bert qa predict --help')",
    );
    const noQuestion = await run(['qa', 'predict', '--model', out, '--context', CONTEXT]);
    expect(noQuestion.code).toBe(2);
    expect(noQuestion.stderr).toMatch(/qa predict: give at least one QUESTION/);
    const verb = await run(['qa', 'answer']);
    expect(verb.code).toBe(2);
    expect(verb.stderr.trim()).toBe(
      "torch-bert: error: qa: unknown verb 'answer': train, eval, predict or export (see 'torch-bert qa --help')",
    );
    const flag = await run(['qa', 'eval', '--model', out, '--data', validationFile, '--nbest', '3']);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/qa eval: unknown option '--nbest': did you mean '--n-best'\?/);

    const help = await run(['qa', 'train', '--help']);
    expect(help.code).toBe(0);
    for (const f of [
      '--model',
      '--data',
      '--out',
      '--doc-stride',
      '--version-2-with-negative',
      '--n-best',
      '--max-answer-length',
      '--null-score-diff-threshold',
      '--best-metric',
      '--technique',
      '--lora-rank',
      '--resume',
      '--nproc-per-node',
    ])
      expect(help.stdout).toContain(f);
    const top = await run(['qa', '--help']);
    expect(top.code).toBe(0);
    for (const verbLine of ['qa train', 'qa eval', 'qa predict', 'qa export']) expect(top.stdout).toContain(`torch-bert ${verbLine} `);
    const usage = await run(['--help']);
    expect(usage.stdout).toContain('torch-bert qa train');
  });
});
