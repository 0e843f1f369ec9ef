/**
 * The `torch-bert` command as a user runs it: train → eval → predict with --json, exit codes,
 * one-line errors. Runs the compiled CLI (dist/cli.js), as installed users do.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { demoReviews, demoTokenizer, INFORMATIVE_ENCODER, makeEncoder, repoRoot } from './fixtures.js';

const exec = promisify(execFile);
const cli = join(repoRoot, 'dist', 'cli.js');

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [cli, ...args], { maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/**
 * `args` run on a terminal (util-linux's `script` gives the command one for stdin, stdout and
 * stderr): what the terminal shows, both streams as one, line ends as \n.
 */
async function runOnTerminal(args: string[]): Promise<string> {
  const command = [process.execPath, cli, ...args].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
  const { stdout } = await exec('script', ['-qec', command, '/dev/null'], { maxBuffer: 64 * 1024 * 1024 });
  return stdout.replaceAll('\r\n', '\n');
}

describe('torch-bert CLI', () => {
  const work = mkdtempSync(join(tmpdir(), 'torch-bert-cli-'));
  const out = join(work, 'classifier');
  let encoder: string;
  beforeAll(async () => {
    if (!existsSync(cli)) throw new Error(`${cli} is missing: run 'npm run build:ts' first`);
    encoder = await makeEncoder(INFORMATIVE_ENCODER);
  });

  /** `train` on `data` with the test encoder and the demo tokenizer into `dir`, then `flags`. */
  const trainArgs = (data: string, dir: string, flags: string[]) => [
    'train',
    '--data',
    data,
    '--model',
    encoder,
    '--tokenizer',
    demoTokenizer,
    '--out',
    dir,
    ...flags,
  ];
  /** The technique tests' settings: one epoch at max length 48, learning rate 5e-3, a 64->32->2 head. */
  const TECHNIQUE = ['--epochs', '1', '--max-length', '48', '--lr', '5e-3', '--head-hidden', '32'];

  it('trains, evaluates and predicts with --json', async () => {
    const trained = await run(
      trainArgs(demoReviews, out, [
        '--epochs',
        '2',
        '--batch-size',
        '32',
        '--max-length',
        '48',
        '--lr',
        '1e-3',
        '--head-hidden',
        '64',
        '--json',
      ]),
    );
    expect(trained.stderr).toBe('');
    expect(trained.code).toBe(0);
    const summary = JSON.parse(trained.stdout);
    expect(summary.labels).toEqual(['negative', 'positive']);
    expect(summary.history).toHaveLength(2);
    expect(summary.best.validationAccuracy).toBeGreaterThan(0.75);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(config.metrics.validationLoss).toBeCloseTo(summary.best.validationLoss, 10);

    const evaluated = await run(['eval', '--classifier', out, '--data', demoReviews, '--json']);
    expect(evaluated.code).toBe(0);
    const metrics = JSON.parse(evaluated.stdout);
    expect(metrics.examples).toBe(summary.trainExamples + summary.validationExamples);
    expect(metrics.accuracy).toBeGreaterThan(0.75);

    // The same data in two parts (--data repeated) evaluates to the same numbers.
    const [header, ...rows] = readFileSync(demoReviews, 'utf8').trimEnd().split('\n');
    const parts = [rows.slice(0, 100), rows.slice(100)].map((part, i) => {
      const file = join(work, `part-${i}.csv`);
      writeFileSync(file, [header, ...part].join('\n') + '\n');
      return file;
    });
    const inParts = await run(['eval', '--classifier', out, '--data', parts[0]!, '--data', parts[1]!, '--json']);
    expect(inParts.code, inParts.stderr).toBe(0);
    const partsMetrics = JSON.parse(inParts.stdout);
    expect(partsMetrics.examples).toBe(metrics.examples);
    expect(partsMetrics.accuracy).toBe(metrics.accuracy);
    expect(partsMetrics.loss).toBeCloseTo(metrics.loss, 6);

    const predicted = await run(['predict', '--classifier', out, '--json', 'a wonderful and moving film', 'dull and terrible']);
    expect(predicted.code).toBe(0);
    const lines = predicted.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.label)).toEqual(['positive', 'negative']);
    // The README's CLI section spells this line out: the text, its label, the probabilities.
    expect(lines.map((l) => [Object.keys(l), l.text])).toEqual([
      [['text', 'label', 'probabilities'], 'a wonderful and moving film'],
      [['text', 'label', 'probabilities'], 'dull and terrible'],
    ]);
    for (const l of lines) expect(l.probabilities.negative + l.probabilities.positive).toBeCloseTo(1, 5);
  });

  it('prints tables for people', async () => {
    const predicted = await run(['predict', '--classifier', out, 'a wonderful and moving film']);
    expect(predicted.code).toBe(0);
    expect(predicted.stdout).toMatch(/label\s+probability\s+text/);
    expect(predicted.stdout).toMatch(/positive\s+0\.\d{4}\s+a wonderful and moving film/);

    // A long text with line breaks is one line of the table, cut with an ellipsis, and widens no
    // other row: it used to be printed whole and pad every row to its width (420 KB for 5 texts).
    const long = `A wonderful film.\n\n${'It moved me. '.repeat(40)}`;
    const both = await run(['predict', '--classifier', out, long, 'dull']);
    expect(both.code).toBe(0);
    const rows = both.stdout.trimEnd().split('\n').slice(2);
    expect(rows).toHaveLength(2);
    const cell = (row: string) => row.replace(/^\s*\S+\s+0\.\d{4} {2}/, '');
    expect(cell(rows[0]!)).toBe(`A wonderful film. ${'It moved me. '.repeat(40)}`.slice(0, 71) + '…');
    expect(cell(rows[1]!)).toBe('dull');
  });

  it('predict reads its texts from --data, as it predicts them given as TEXT', async () => {
    // Before: TEXT arguments only, so a file of texts had to go through xargs in pieces (the
    // argument list's limit), and a text starting with '-' was taken for an option.
    const texts = ['a wonderful and moving film', '-- dull, "quoted", and terrible', 'an ordinary film'];
    const file = join(work, 'to-predict.csv');
    writeFileSync(file, `id,review\n${texts.map((t, i) => `${i},"${t.replaceAll('"', '""')}"`).join('\n')}\n`);
    const jsonLines = (stdout: string) =>
      stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
    const asText = await run(['predict', '--classifier', out, '--json', '--', ...texts]);
    expect(asText.code, asText.stderr).toBe(0);
    const fromFile = await run(['predict', '--classifier', out, '--json', '--data', file, '--text-column', 'review', '--batch-size', '2']);
    expect(fromFile.code, fromFile.stderr).toBe(0);
    expect(jsonLines(fromFile.stdout).map((l) => l.text)).toEqual(texts);
    const expected = jsonLines(asText.stdout);
    jsonLines(fromFile.stdout).forEach((l, i) => {
      expect(l.label).toBe(expected[i].label);
      expect(l.probabilities.positive).toBeCloseTo(expected[i].probabilities.positive, 5);
    });
    // Without --text-column: the column the classifier was trained on (text); a label column is ignored.
    const demo = await run(['predict', '--classifier', out, '--data', demoReviews]);
    expect(demo.code, demo.stderr).toBe(0);
    expect(demo.stdout.trimEnd().split('\n')).toHaveLength(2 + readFileSync(demoReviews, 'utf8').trimEnd().split('\n').length - 1);
    for (const args of [[], ['--data', file, 'a text']]) {
      const refused = await run(['predict', '--classifier', out, ...args]);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toBe(
        "torch-bert: error: predict: give at least one TEXT, or --data FILE.csv, not both (see 'torch-bert predict --help')\n",
      );
    }
  });

  it('eval and predict --data draw their progress on a terminal, not with --json nor when stderr is no terminal', async () => {
    // Before: nothing until every text was predicted (25,000 texts: ~45 s without a sign of life).
    const total = readFileSync(demoReviews, 'utf8').trimEnd().split('\n').length - 1;
    for (const command of [
      ['eval', '--classifier', out, '--data', demoReviews, '--batch-size', '64'],
      ['predict', '--classifier', out, '--data', demoReviews, '--batch-size', '64'],
    ]) {
      const shown = await runOnTerminal(command);
      const bars = [...shown.matchAll(/\rpredicting \[[#-]{24}\] (\d+)\/(\d+) texts/g)];
      expect(bars.map((m) => Number(m[2]))).toEqual(bars.map(() => total));
      // A batch (at most 64 texts) at a time, to the last text.
      const done = bars.map((m) => Number(m[1]));
      expect(done.length).toBeGreaterThanOrEqual(total / 64);
      expect(done.at(-1)).toBe(total);
      done.forEach((d, i) => {
        expect(d - (done[i - 1] ?? 0)).toBeGreaterThan(0);
        expect(d - (done[i - 1] ?? 0)).toBeLessThanOrEqual(64);
      });
      // The finished bar keeps its line; the results follow it.
      const results = shown.slice(shown.lastIndexOf(`${total}/${total} texts`));
      expect(results).toMatch(command[0] === 'eval' ? new RegExp(`\nexamples ${total}, loss`) : /\n\s*label\s+probability\s+text\n/);

      const json = await runOnTerminal([...command, '--json']);
      expect(json).not.toContain('predicting');
      const lines = json.trimEnd().split('\n');
      expect(lines).toHaveLength(command[0] === 'eval' ? 1 : total);
      for (const line of lines) JSON.parse(line);

      const piped = await run(command);
      expect(piped.code, piped.stderr).toBe(0);
      expect(piped.stderr).toBe('');
    }
  });

  it('eval reads the columns the classifier was trained on; an older config without them falls back to text/label', async () => {
    // The demo reviews under other column names, and with the columns swapped round, so that
    // reading by position or by the default names cannot pass.
    const [, ...rows] = readFileSync(demoReviews, 'utf8').trimEnd().split('\n');
    const renamed = join(work, 'renamed.csv');
    const swap = (row: string) => {
      const at = row.lastIndexOf(',');
      return `${row.slice(at + 1)},${row.slice(0, at)}`;
    };
    writeFileSync(renamed, ['sentiment,review', ...rows.map(swap)].join('\n') + '\n');
    const dir = join(work, 'columns');
    const trained = await run(
      trainArgs(renamed, dir, [
        '--text-column',
        'review',
        '--label-column',
        'sentiment',
        '--epochs',
        '1',
        '--max-length',
        '48',
        '--lr',
        '1e-3',
        '--head-hidden',
        '32',
        '--json',
      ]),
    );
    expect(trained.stderr).toBe('');
    expect(trained.code).toBe(0);
    const configFile = join(dir, 'config.json');
    const config = JSON.parse(readFileSync(configFile, 'utf8'));
    expect([config.textColumn, config.labelColumn]).toEqual(['review', 'sentiment']);

    const evaluated = await run(['eval', '--classifier', dir, '--data', renamed, '--json']);
    expect(evaluated.stderr).toBe('');
    expect(evaluated.code).toBe(0);
    expect(JSON.parse(evaluated.stdout).examples).toBe(rows.length);
    // Columns given on the command line still win.
    const explicit = await run([
      'eval',
      '--classifier',
      dir,
      '--data',
      demoReviews,
      '--text-column',
      'text',
      '--label-column',
      'label',
      '--json',
    ]);
    expect(explicit.code, explicit.stderr).toBe(0);
    expect(JSON.parse(explicit.stdout).accuracy).toBe(JSON.parse(evaluated.stdout).accuracy);

    // A config written before the columns were recorded reads text/label.
    delete config.textColumn;
    delete config.labelColumn;
    writeFileSync(configFile, JSON.stringify(config, null, 2));
    const old = await run(['eval', '--classifier', dir, '--data', demoReviews, '--json']);
    expect(old.code, old.stderr).toBe(0);
    expect(JSON.parse(old.stdout).accuracy).toBe(JSON.parse(evaluated.stdout).accuracy);
    const oldOnRenamed = await run(['eval', '--classifier', dir, '--data', renamed]);
    expect(oldOnRenamed.code).toBe(1);
    expect(oldOnRenamed.stderr).toMatch(/no column 'text'/);
  });

  it('fails with one line and a non-zero exit code', async () => {
    const missing = await run(['eval', '--classifier', join(work, 'nowhere'), '--data', demoReviews]);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
    expect(missing.stderr).toMatch(/^torch-bert: error: cannot read classifier config .*nowhere\/config\.json/);

    const usage = await run(['train', '--data', demoReviews]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/--model is required/);

    const badNumber = await run(trainArgs(demoReviews, out, ['--epochs', 'five']));
    expect(badNumber.code).toBe(2);
    expect(badNumber.stderr).toMatch(/--epochs expects a number; got 'five'/);

    const unknown = await run(['fly']);
    expect(unknown.code).toBe(2);
  });

  it("refuses a flag the command lacks naming the flag probably meant and the command's --help", async () => {
    // Before: node's "Unknown option '--epoch'" alone, where train() says "did you mean 'epochs'?".
    const refusal = async (args: string[]) => {
      const r = await run(args);
      return [r.code, r.stderr];
    };
    expect(await refusal(trainArgs(demoReviews, join(work, 'unknown-flag'), ['--epoch', '1']))).toEqual([
      2,
      "torch-bert: error: train: unknown option '--epoch': did you mean '--epochs'? (see 'torch-bert train --help')\n",
    ]);
    expect(await refusal(['eval', '--classifier', out, '--Data', demoReviews])).toEqual([
      2,
      "torch-bert: error: eval: unknown option '--Data': did you mean '--data'? (see 'torch-bert eval --help')\n",
    ]);
    // Nothing within two edits: no guess. predict's texts may start with a dash: how to pass one.
    expect(await refusal(['predict', '--classifier', out, '--frobnicate', 'a text'])).toEqual([
      2,
      `torch-bert: error: predict: unknown option '--frobnicate'; a TEXT that starts with '-' goes after '--' (-- "--frobnicate") (see 'torch-bert predict --help')\n`,
    ]);
    expect(existsSync(join(work, 'unknown-flag'))).toBe(false);
  });

  it('refuses an empty --out with --resume, as pretrain does and as train does without --resume', async () => {
    // Before: `--resume DIR --out ""` went on to train() with outDir '', which resumes and then keeps nothing.
    const resume = join(work, 'resume-empty-out');
    const empty = await run(['train', '--data', demoReviews, '--model', encoder, '--resume', resume, '--out', '']);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/^torch-bert: error: train: --out is required/);
  });

  it('reads a negative number as the value of its option and says what is wrong with it', async () => {
    // Before: node's parseArgs took '-1' for an option and answered "Option '--epochs' argument is ambiguous."
    for (const [flag, message] of [
      ['--epochs', 'epochs must be an integer ≥ 1; got -1'],
      ['--lr', 'learningRate must be a finite number ≥ 0; got -1'],
      ['--seed', 'seed must be an integer ≥ 0; got -1'],
    ]) {
      const negative = await run(trainArgs(demoReviews, join(work, 'negative'), [flag!, '-1']));
      expect(negative.stderr).toBe(`torch-bert: error: ${message}\n`);
      expect(negative.code).toBe(1);
    }
    expect(existsSync(join(work, 'negative'))).toBe(false);
  });

  it('reads a numeric flag as a decimal number, one rule for every flag, and says what is wrong with any other value', async () => {
    // --batch-size 0 makes an accepted value fail fast, on the batch size, without training.
    const refusal = async (flags: string[]) => {
      const r = await run(trainArgs(demoReviews, join(work, 'numbers'), [...flags, '--batch-size', '0']));
      return { code: r.code, stderr: r.stderr.replace(/^torch-bert: error: /, '').trimEnd() };
    };
    // Before: Number() read '0x10' as 16, '0b1' as 1 and the empty weight of '1,' as 0.
    for (const [flag, value] of [
      ['--epochs', '0x10'],
      ['--lr', '0b1'],
      ['--seed', '1,5'],
      ['--epochs', 'NaN'],
      ['--epochs', 'Infinity'],
      ['--epochs', ''],
      ['--max-length', '1e999'],
    ]) {
      expect(await refusal([flag!, value!])).toEqual({ code: 2, stderr: `${flag} expects a number; got '${value}'` });
    }
    expect(await refusal(['--class-weights', '1,'])).toEqual({
      code: 2,
      stderr: "--class-weights expects 'balanced' or numbers like 1,2.5; got '1,'",
    });
    expect(await refusal(['--betas', '0.9'])).toEqual({ code: 2, stderr: "--betas expects two numbers like 0.9,0.999; got '0.9'" });
    expect(await refusal(['--epochs=-x'])).toEqual({ code: 2, stderr: "--epochs expects a number; got '-x'" });
    // Before: only the first line of node's message, "Option '--epochs' argument is ambiguous."
    expect(await refusal(['--epochs', '-x'])).toEqual({
      code: 2,
      stderr:
        "Option '--epochs' argument is ambiguous. Did you forget to specify the option argument for '--epochs'? To specify an option argument starting with a dash use '--epochs=-XYZ'.",
    });
    // A number in range is the option's own check (options.ts), for the API and the CLI alike.
    const fraction = await run(trainArgs(demoReviews, join(work, 'numbers'), ['--epochs', '2.5']));
    expect([fraction.code, fraction.stderr]).toEqual([1, 'torch-bert: error: epochs must be an integer ≥ 1; got 2.5\n']);
    for (const accepted of [
      ['--epochs', '1e0'],
      ['--lr', ' 5e-3 '],
      ['--class-weights', '1, 2.5'],
      ['--betas', '0.9, 0.98'],
      ['--eps', '1e-6'],
    ]) {
      expect(await refusal(accepted)).toEqual({ code: 1, stderr: 'batchSize must be an integer ≥ 1; got 0' });
    }
    // train()'s betas, eps and labels, which had no flag: each reaches its option (its own check says so).
    for (const [flags, message] of [
      [['--betas', '0.9,1.5'], 'betas must be two numbers in [0, 1); got [0.9, 1.5]'],
      [['--eps', '-1'], 'eps must be a finite number ≥ 0; got -1'],
      [['--labels', 'good,bad'], `${demoReviews} line 2: label 'positive' is not one of the known classes (good, bad)`],
    ] as const) {
      const r = await run(trainArgs(demoReviews, join(work, 'numbers'), [...flags]));
      expect([r.code, r.stderr]).toEqual([1, `torch-bert: error: ${message}\n`]);
    }
  });

  it('trains with LoRA, reports metrics and writes the HTML report', async () => {
    const dir = join(work, 'lora');
    const trained = await run(
      trainArgs(demoReviews, dir, [...TECHNIQUE, '--technique', 'lora', '--lora-rank', '4', '--lora-alpha', '8', '--report', '--json']),
    );
    expect(trained.code).toBe(0);
    const summary = JSON.parse(trained.stdout);
    expect(summary.technique).toBe('lora');
    // 2 layers x (query + value) x (A [4, 64] + B [64, 4]), plus the head 64->32->2
    expect(summary.trainableParameters).toBe(2 * 2 * (4 * 64 + 64 * 4) + (32 * 64 + 32 + 2 * 32 + 2));
    expect(summary.metrics.confusionMatrix.flat().reduce((a: number, b: number) => a + b, 0)).toBe(summary.validationExamples);
    expect(summary.metrics.perClass.map((c: { label: string }) => c.label)).toEqual(['negative', 'positive']);
    expect(readFileSync(join(dir, 'report.html'), 'utf8')).toContain('<svg');
  });

  it('trains bottleneck adapters with --technique adapter, --adapter-config and --adapter-size', async () => {
    const dir = join(work, 'adapter');
    const trained = await run(
      trainArgs(demoReviews, dir, [
        ...TECHNIQUE,
        '--technique',
        'adapter',
        '--adapter-config',
        'pfeiffer',
        '--adapter-size',
        '4',
        '--json',
      ]),
    );
    expect(trained.code).toBe(0);
    const summary = JSON.parse(trained.stdout);
    expect(summary.technique).toBe('adapter');
    // Pfeiffer: 2 layers x the feed-forward output x (down [4, 64] + 4 + up [64, 4] + 64), plus the head 64->32->2
    expect(summary.trainableParameters).toBe(2 * (4 * 64 + 4 + 64 * 4 + 64) + (32 * 64 + 32 + 2 * 32 + 2));
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    expect(config.hyperparameters.adapter).toEqual({
      config: 'pfeiffer',
      size: 4,
      reductionFactor: null,
      activation: 'relu',
      trainLayerNorm: false,
    });
  });

  it('stops on SIGINT with a resumable state, which the same command without --resume refuses to overwrite, and --resume finishes the run', async () => {
    const dir = join(work, 'interrupted');
    const args = trainArgs(demoReviews, dir, ['--epochs', '8', '--max-length', '48', '--head-hidden', '32', '--feature-cache', 'none']);
    const child = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (/epoch 1\/8/.test(stderr) && !child.killed) child.kill('SIGINT');
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(130);
    expect(stderr).toMatch(/training aborted at epoch \d+, batch \d+\/\d+; resume with .*--resume .*interrupted/);
    // It names what it kept: epoch 1's evaluation was the first, so a best.
    expect(stderr.trim().split('\n').at(-1)).toMatch(/; the best checkpoint so far \(epoch \d+, step \d+\) is kept in .*interrupted$/);
    const stateFile = join(dir, 'training-state', 'state.json');
    const state = readFileSync(stateFile, 'utf8');
    // Before: the command started over at once, its first save replacing the state (and the epoch trained).
    const { position, savedAt } = JSON.parse(state);
    const steps = `${position.optimizerSteps} optimizer step${position.optimizerSteps === 1 ? '' : 's'}`;
    expect(await run(args)).toEqual({
      code: 1,
      stdout: '',
      stderr:
        `torch-bert: error: output directory ${dir} holds the training state of an unfinished run ` +
        `(it resumes at epoch ${position.epoch}, batch ${position.batch + 1}, after ${steps}; saved ${savedAt}), ` +
        `which a new run would overwrite: resume it with the same options and resumeFrom: '${dir}' (CLI: the same command with --resume ${dir}), ` +
        `or, to start over, delete ${join(dir, 'training-state')} or choose another outDir / --out\n`,
    });
    expect(readFileSync(stateFile, 'utf8')).toBe(state);
    const resumed = await run([...args, '--resume', dir, '--json']);
    expect(resumed.code).toBe(0);
    expect(JSON.parse(resumed.stdout).history).toHaveLength(8);
  });

  it('documents every command with --help', async () => {
    for (const command of ['train', 'eval', 'predict', 'demo']) {
      const help = await run([command, '--help']);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain(`torch-bert ${command}`);
      // `torch-bert help COMMAND` is the same (it printed the overview).
      expect((await run(['help', command])).stdout).toBe(help.stdout);
    }
    // What export writes depends on the head; each kind is named (a prompt run's is a ForMaskedLM folder).
    const exportHelp = await run(['export', '--help']);
    expect(exportHelp.code).toBe(0);
    for (const kind of [
      'torch_bert_head.safetensors',
      '--head sequence-classification',
      '--head prompt exports as a *ForMaskedLM folder',
    ]) {
      expect(exportHelp.stdout).toContain(kind);
    }
    const train = await run(['train', '--help']);
    for (const flag of [
      '--data',
      '--model',
      '--tokenizer',
      '--out',
      '--text-column',
      '--label-column',
      '--epochs',
      '--batch-size',
      '--max-length',
      '--lr',
      '--seed',
      '--device',
      '--json',
    ]) {
      expect(train.stdout).toContain(flag);
    }
  });
});
