/**
 * `torch-bert tokens` as a user runs it: train a tagger on CoNLL files with --json, evaluate and
 * predict with what it kept, the tables for people, and a usage error's exit code. Runs the
 * compiled CLI (dist/cli.js), as installed users do.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TextTokenizer } from '../lib/data/tokenizer.js';
import { encodeWords } from '../lib/data/word-alignment.js';
import { TokenClassifier } from '../lib/tagging/token-classifier.js';
import { makeHfFolder, repoRoot, runPython } from './fixtures.js';
import { runCommand } from './helpers/run-command.js';

const cli = join(repoRoot, 'dist', 'cli.js');
const run = (args: string[]) => runCommand(process.execPath, [cli, ...args]);

/** The tag set in id order: not sorted, so that the result's labels show --labels was read. */
const LABELS = ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC'];
const FILLER = ['the', 'movie', 'was', 'great', 'plot', 'boring', 'and', 'at', '.'];
const ENTITIES: Array<[string[], string]> = [
  [['director'], 'PER'],
  [['villain', 'laughing'], 'PER'],
  [['cinema'], 'LOC'],
  [['theater', 'downtown'], 'LOC'],
];

/** `n` CoNLL sentences (word, POS, chunk, tag) of filler words around one or two entities, the same every run. */
function conll(n: number, seed: number): string {
  let state = seed;
  const next = (k: number) => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return Math.floor(state / 65536) % k;
  };
  const sentences: string[] = [];
  for (let s = 0; s < n; s++) {
    const lines: string[] = [];
    const filler = () => lines.push(`${FILLER[next(FILLER.length)]} NN O O`);
    filler();
    for (let e = 1 + next(2); e > 0; e--) {
      const [words, type] = ENTITIES[next(ENTITIES.length)]!;
      for (const [k, word] of words.entries()) lines.push(`${word} NN O ${k === 0 ? 'B' : 'I'}-${type}`);
      filler();
    }
    sentences.push(lines.join('\n'));
  }
  return `-DOCSTART- -X- -X- O\n\n${sentences.join('\n\n')}\n`;
}

describe('torch-bert tokens (CLI)', () => {
  const work = mkdtempSync(join(tmpdir(), 'torch-bert-cli-tokens-'));
  const out = join(work, 'tagger');
  const trainFile = join(work, 'train.conll');
  const validationFile = join(work, 'validation.conll');
  let model: string;
  let trained: { code: number | null; stdout: string; stderr: string };

  beforeAll(async () => {
    if (!existsSync(cli)) throw new Error(`${cli} is missing: run 'npm run build:ts' first`);
    model = (await makeHfFolder({ layout: 'automodel', tokenizer: 'json', layers: 2, hidden: 32, heads: 4, intermediate: 64, seed: 3 }))
      .dir;
    writeFileSync(trainFile, conll(24, 1));
    writeFileSync(validationFile, conll(8, 2));
    trained = await run([
      'tokens',
      'train',
      '--model',
      model,
      '--data',
      trainFile,
      '--validation-data',
      validationFile,
      '--labels',
      LABELS.join(','),
      '--out',
      out,
      '--epochs',
      '2',
      '--batch-size',
      '4',
      '--lr',
      '5e-4',
      '--max-length',
      '16',
      '--threads',
      '1',
      '--json',
    ]);
  }, 300_000);
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('trains with --json into a BertForTokenClassification folder', () => {
    expect(trained.stderr).toBe('');
    expect(trained.code).toBe(0);
    const result = JSON.parse(trained.stdout);
    expect(result.outDir).toBe(out);
    expect(result.labels).toEqual(LABELS);
    expect(result.history).toHaveLength(2);
    expect([result.trainSentences, result.validationSentences]).toEqual([24, 8]);
    // The best epoch is the one of lowest validation loss (--best-metric loss, the default), and the kept metrics are its.
    const lowest = result.history.reduce((a: { validationLoss: number }, b: { validationLoss: number }) =>
      b.validationLoss < a.validationLoss ? b : a,
    );
    expect(result.best.epoch).toBe(lowest.epoch);
    expect(result.best.isBest).toBe(true);
    expect(result.metrics.loss).toBeCloseTo(result.best.validationLoss, 10);
    expect(result.metrics.accuracy).toBe(result.best.validationAccuracy);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(config.architectures).toEqual(['BertForTokenClassification']);
    expect(Object.values(config.id2label)).toEqual(LABELS);
  });

  it('evaluates the kept weights on the validation file as training did (eval --json)', async () => {
    const { metrics } = JSON.parse(trained.stdout);
    const evaluated = await run(['tokens', 'eval', '--classifier', out, '--data', validationFile, '--json']);
    expect(evaluated.stderr).toBe('');
    expect(evaluated.code).toBe(0);
    const m = JSON.parse(evaluated.stdout);
    expect(m.accuracy).toBe(metrics.accuracy);
    expect(m.f1).toBe(metrics.f1);
    expect(Math.abs(m.loss - metrics.loss)).toBeLessThan(1e-5);
    expect([m.words, m.entities]).toEqual([metrics.words, metrics.entities]);

    // For people: the counts and loss, then seqeval's classification report.
    const table = await run(['tokens', 'eval', '--classifier', out, '--data', validationFile]);
    expect(table.code).toBe(0);
    const [head, header] = table.stdout.split('\n');
    expect(head).toBe(`words ${m.words}, entities ${m.entities}, loss ${m.loss.toFixed(4)}`);
    expect(header).toMatch(/^type\s+precision\s+recall\s+f1\s+support$/);
    expect(table.stdout).toMatch(new RegExp(`\\naccuracy\\s+${m.accuracy.toFixed(4)}\\s+${m.words}\\n`));
  });

  it('predicts each word of each SENTENCE: --json, and word/TAG for people', async () => {
    const predicted = await run(['tokens', 'predict', '--classifier', out, '--json', 'the  director was']);
    expect(predicted.stderr).toBe('');
    expect(predicted.code).toBe(0);
    const lines = predicted.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const tagged = JSON.parse(lines[0]!);
    expect(Object.keys(tagged)).toEqual(['words', 'tags', 'scores']);
    expect(tagged.words).toEqual(['the', 'director', 'was']);
    expect(tagged.tags).toHaveLength(3);
    for (const tag of tagged.tags) expect(LABELS).toContain(tag);
    for (const score of tagged.scores) expect(score).toBeGreaterThan(0);

    const people = await run(['tokens', 'predict', '--classifier', out, 'the director was', 'at the cinema .']);
    expect(people.code).toBe(0);
    const shown = people.stdout.trimEnd().split('\n');
    expect(shown).toHaveLength(2);
    expect(shown[0]).toBe(tagged.words.map((w: string, i: number) => `${w}/${tagged.tags[i]}`).join(' '));
    expect(shown[1]).toMatch(/^at\/\S+ the\/\S+ cinema\/\S+ \.\/\S+$/);
  });

  it('prints the entities of each TEXT with --entities, as entities() finds them (--aggregation simple --json, and a line each for people)', async () => {
    const texts = ['the director was at the cinema , good', 'actors and the villain laughing .'];
    const printed = await run(['tokens', 'predict', '--classifier', out, '--entities', '--aggregation', 'simple', '--json', ...texts]);
    expect(printed.stderr).toBe('');
    expect(printed.code).toBe(0);
    const classifier = await TokenClassifier.load(out, { device: 'cpu' });
    let expected: Awaited<ReturnType<TokenClassifier['entities']>>;
    let simple: typeof expected;
    try {
      expected = await classifier.entities(texts);
      simple = await classifier.entities(texts, { aggregation: 'simple' });
    } finally {
      classifier.dispose();
    }
    const lines = printed.stdout.trim().split('\n');
    expect(lines).toHaveLength(2);
    const found = lines.map((line) => JSON.parse(line));
    expect(
      found.map((es: Array<{ type: string; start: number; end: number; text: string }>) =>
        es.map(({ type, start, end, text }) => [type, start, end, text]),
      ),
    ).toEqual(simple.map((es) => es.map(({ type, start, end, text }) => [type, start, end, text])));
    expect(found.flat().map((e: { score: number }) => e.score)).toEqual(simple.flat().map((e) => expect.closeTo(e.score, 6)));
    expect(simple.flat().length).toBeGreaterThan(0);

    const people = await run(['tokens', 'predict', '--classifier', out, '--entities', ...texts]);
    expect(people.code).toBe(0);
    expect(people.stdout).toBe(
      expected
        .map((es) => [...es.map((e) => `${e.type}\t${e.start}-${e.end}\t${e.text}\t${e.score.toFixed(4)}`), ''].join('\n') + '\n')
        .join(''),
    );
  });

  it("exports a TorchScript file (tokens export) whose forward_all_tokens gives predict's scores at the words' first tokens", async () => {
    const file = join(work, 'tagger.pt');
    const exported = await run(['tokens', 'export', '--classifier', out, '--out', file]);
    expect(exported.stderr).toBe('');
    expect(exported.code).toBe(0);
    expect(exported.stdout.trim()).toBe(
      `wrote ${file}: forward_all_tokens(input_ids, attention_mask) -> log-probabilities over ${LABELS.join(', ')}`,
    );
    const words = ['the', 'director', 'was', 'at', 'the', 'cinema'];
    const predicted = JSON.parse((await run(['tokens', 'predict', '--classifier', out, '--json', words.join(' ')])).stdout);
    const rows = encodeWords(await TextTokenizer.load(join(out, 'tokenizer.json')), [words], 16);
    const code = [
      'import json, sys, torch',
      'job = json.load(sys.stdin)',
      'with torch.no_grad():',
      '    lp = torch.jit.load(job["file"]).forward_all_tokens(torch.tensor([job["ids"]]), torch.tensor([job["mask"]]))',
      'print(json.dumps([[p.max().item(), int(p.argmax())] for p in lp[0].exp()]))',
    ].join('\n');
    const job = { file, ids: Array.from(rows.encoded.inputIds), mask: Array.from(rows.encoded.attentionMask) };
    const perToken = JSON.parse(await runPython('-c', [code], JSON.stringify(job))) as Array<[number, number]>;
    const firsts = Array.from(rows.firstTokens[0]!);
    expect(firsts.every((t) => t > 0)).toBe(true);
    expect(firsts.map((t) => LABELS[perToken[t]![1]])).toEqual(predicted.tags);
    firsts.forEach((t, w) => {
      expect(perToken[t]![0]).toBeCloseTo(predicted.scores[w], 5);
    });
  });

  it('prints the history and the kept weights’ entity scores for people (--technique lora, --label-all-tokens)', async () => {
    const human = await run([
      'tokens',
      'train',
      '--model',
      model,
      '--data',
      trainFile,
      '--validation-split',
      '0.25',
      '--out',
      join(work, 'human'),
      '--technique',
      'lora',
      '--lora-rank',
      '4',
      '--label-all-tokens',
      '--epochs',
      '1',
      '--max-length',
      '16',
      '--threads',
      '1',
    ]);
    expect(human.code, human.stderr).toBe(0);
    expect(JSON.parse(readFileSync(join(work, 'human', 'config.json'), 'utf8')).torch_bert.labelAllTokens).toBe(true);
    expect(JSON.parse(readFileSync(join(work, 'human', 'adapter', 'adapter_config.json'), 'utf8'))).toMatchObject({
      task_type: 'TOKEN_CLS',
      r: 4,
    });
    expect(human.stdout).toMatch(/^epoch\s+train loss\s+train acc\s+val loss\s+val acc\s+val F1\s+val macro-F1\s+time\s+best$/m);
    expect(human.stdout).toMatch(/validation metrics of the kept weights \(epoch 1, step \d+\), loss \d+\.\d{4}:\ntype\s+precision/);
    expect(human.stdout).toMatch(/^micro avg\s/m);
    expect(human.stdout).toContain(`saved to ${join(work, 'human')} (18 training and 6 validation sentences)`);
  });

  it('--nproc-per-node 2 starts a data-parallel run: rank 0 alone prints, writes and scores every validation word', async () => {
    const args = (dir: string, batch: string) => [
      'tokens',
      'train',
      '--model',
      model,
      '--data',
      trainFile,
      '--validation-data',
      validationFile,
      '--labels',
      LABELS.join(','),
      '--out',
      dir,
      '--epochs',
      '1',
      '--batch-size',
      batch,
      '--max-length',
      '16',
      '--json',
    ];
    const [two, one] = await Promise.all([
      run([...args(join(work, 'nproc'), '2'), '--nproc-per-node', '2']),
      run([...args(join(work, 'nproc-single'), '4'), '--threads', '1']),
    ]);
    expect(two.code, two.stderr).toBe(0);
    expect(one.code, one.stderr).toBe(0);
    // One JSON result (rank 0's), scored on the whole validation set (every word, as one process
    // scores it; the weights themselves differ here, the model's dropout drawing per rank: the
    // library's test compares them with dropout off).
    const lines = two.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const [ddp, single] = [JSON.parse(lines[0]!), JSON.parse(one.stdout)];
    expect([ddp.trainSentences, ddp.validationSentences]).toEqual([24, 8]);
    expect(ddp.metrics.words).toBe(single.metrics.words);
    expect(ddp.metrics.entities).toBe(single.metrics.entities);
    expect(existsSync(join(work, 'nproc', 'model.safetensors'))).toBe(true);
  }, 300_000);

  it('exits 2 on a usage error, naming the missing flag', async () => {
    const missing = await run(['tokens', 'train', '--data', trainFile, '--out', join(work, 'none')]);
    expect(missing.code).toBe(2);
    expect(missing.stdout).toBe('');
    expect(missing.stderr.trim()).toBe("torch-bert: error: tokens train: --model is required (see 'torch-bert tokens train --help')");
    expect(existsSync(join(work, 'none'))).toBe(false);

    // A --lora-* flag reaches trainTokenClassifier(), which refuses it without --technique lora (an error, not a usage error).
    const lora = await run(['tokens', 'train', '--model', model, '--data', trainFile, '--out', join(work, 'none'), '--lora-rank', '4']);
    expect(lora.code).toBe(1);
    expect(lora.stderr).toMatch(/lora goes with technique 'lora', but the technique is 'full'/);

    const help = await run(['tokens', 'train', '--help']);
    expect(help.code).toBe(0);
    for (const flag of ['--model', '--data', '--out', '--words-column', '--tags-column', '--labels', '--technique', '--resume'])
      expect(help.stdout).toContain(flag);
  });
});
