/**
 * The README's surface against the product: the snippets, commands, option tables, error codes,
 * API names and file lists a new user copies from it must exist as written.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { libSources, PYTHON, repoRoot } from './fixtures.js';

const exec = promisify(execFile);
const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');

const codeBlocks = (lang: string): string[] =>
  [...readme.matchAll(/```(\w*)\n([\s\S]*?)```/g)].filter((m) => m[1] === lang).map((m) => m[2]);

const backticked = (text: string): string[] => [...text.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]);

/** The text under the heading that starts with `title`, up to the next heading of its level or above. */
function section(title: string): string {
  const lines = readme.split('\n');
  const start = lines.findIndex((l) => /^#+ /.test(l) && l.replace(/^#+ /, '').startsWith(title));
  if (start < 0) throw new Error(`README has no heading starting with ${JSON.stringify(title)}`);
  const level = lines[start].indexOf(' ');
  const end = lines.findIndex((l, i) => i > start && /^#+ /.test(l) && l.indexOf(' ') <= level);
  return lines.slice(start, end < 0 ? undefined : end).join('\n');
}

/** The first cells of the rows of the first table in `text` whose header row starts with `header`. */
function firstColumn(text: string, header: string): string[] {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.startsWith(header));
  if (start < 0) throw new Error(`no table with header ${JSON.stringify(header)}`);
  const end = lines.findIndex((l, i) => i > start && !l.startsWith('|'));
  return lines.slice(start + 2, end < 0 ? undefined : end).map((l) => l.split('|')[1]);
}

/** The property names of an exported interface of a lib/ file (its path under lib/). */
function interfaceKeys(file: string, name: string): string[] {
  const src = readFileSync(join(repoRoot, 'lib', file), 'utf8');
  // A generic interface's parameters (`TrainResult<P extends ...>`) sit between its name and its
  // body, and what it extends after them: the keys of an interface it extends that lib/ declares
  // (`PretrainOptions extends TaskLoopOptions`) are its keys too.
  const found = new RegExp(`export interface ${name}(<[^{]*>)?(?: extends ([\\w, ]+))? \\{`).exec(src);
  if (!found) throw new Error(`lib/${file} declares no interface ${name}`);
  const own = [...src.slice(found.index, src.indexOf('\n}\n', found.index)).matchAll(/^ {2}(\w+)\??:/gm)].map((m) => m[1]!);
  const inherited = (found[2] ?? '')
    .split(',')
    .map((n) => n.trim())
    .flatMap((base) => {
      const at = libSources().find((f) => readFileSync(join(repoRoot, 'lib', f), 'utf8').includes(`export interface ${base} `));
      return at ? interfaceKeys(at, base) : [];
    });
  return [...inherited, ...own];
}

/** The top-level keys of the README's `NAME`: `{ key, key: { nested }, key: Type[] }` summary of a result type. */
function summaryKeys(name: string): string[] {
  const at = readme.indexOf(`\`${name}\`: \`{`);
  if (at < 0) throw new Error(`README has no \`${name}\`: \`{ ... }\` summary`);
  let body = readme.slice(at).split('`')[3]!.slice(1, -1);
  // Nested groups out, innermost first, until only the top level's `key` and `key: Type` are left.
  while (/[{[]/.test(body)) {
    const outer = body.replace(/\{[^{}]*\}|\[[^[\]]*\]/g, '');
    if (outer === body) throw new Error(`README's \`${name}\` summary has an unclosed { or [`);
    body = outer;
  }
  return body.split(',').map((entry) => /^\s*(\w+)/.exec(entry)![1]!);
}

describe('README surface', () => {
  it("has TypeScript snippets that compile against the package's declarations", async () => {
    const snippets = codeBlocks('ts');
    expect(snippets.length).toBeGreaterThan(0);
    const dir = mkdtempSync(join(tmpdir(), 'torch-bert-readme-'));
    try {
      for (const [i, s] of snippets.entries()) writeFileSync(join(dir, `snippet-${i}.mts`), s);
      const compilerOptions = {
        target: 'ES2022',
        module: 'ES2022',
        moduleResolution: 'Bundler',
        strict: true,
        noEmit: true,
        skipLibCheck: true,
        types: ['node'],
        typeRoots: [join(repoRoot, 'node_modules', '@types')],
        // `import ... from 'torch-bert'` as an installed user writes it: the package's own types.
        paths: { 'torch-bert': [join(repoRoot, 'dist', 'index.d.ts')] },
      };
      writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions, include: ['*.mts'] }));
      const tsc = join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
      const result = await exec(process.execPath, [tsc, '-p', dir]).catch((e: { stdout: string }) => e);
      expect(result.stdout).toBe('');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("names only flags that the command's --help lists", async () => {
    // Every `torch-bert COMMAND ...` in code spans and code blocks (a block's `\` continues a line).
    const lines = [...backticked(readme), ...codeBlocks('bash').flatMap((b) => b.replace(/\\\n/g, ' ').split('\n'))];
    const used = new Map<string, Set<string>>();
    for (const line of lines) {
      for (const m of line.matchAll(/torch-bert (train|eval|predict|export|pretrain|demo|doctor)\b([^#]*)/g)) {
        const flags = used.get(m[1]) ?? new Set<string>();
        for (const f of m[2].matchAll(/(?<![\w-])--[a-z][a-z0-9-]*/g)) flags.add(f[0]);
        used.set(m[1], flags);
      }
    }
    expect([...used.keys()].sort()).toEqual(['demo', 'doctor', 'eval', 'export', 'predict', 'pretrain', 'train']);
    const missing: string[] = [];
    for (const [command, flags] of used) {
      const { stdout } = await exec(process.execPath, [join(repoRoot, 'dist', 'cli.js'), command, '--help']);
      const listed = new Set([...stdout.matchAll(/--[a-z][a-z0-9-]*/g)].map((f) => f[0]).concat(['--help', '--verbose']));
      for (const flag of flags) if (!listed.has(flag)) missing.push(`${command} ${flag}`);
    }
    expect(missing).toEqual([]);
  });
  it('names every error code a program can tell apart', () => {
    const errors = readFileSync(join(repoRoot, 'lib', 'addon', 'errors.ts'), 'utf8');
    const start = errors.indexOf('export type ErrorCode');
    const codes = [...errors.slice(start, errors.indexOf(';', start)).matchAll(/'([A-Z_]+)'/g)].map((m) => m[1]);
    expect(codes.length).toBeGreaterThan(10);
    const named = new Set(backticked(readme));
    expect(codes.filter((c) => !named.has(c))).toEqual([]);
  });
  it('lists every option of train() and pretrain() in their tables', () => {
    const documented = (title: string) => new Set(firstColumn(section(title), '| option |').flatMap(backticked));
    const train = documented('`train(options)`');
    const pretrain = documented('Masked-language-model pretraining');
    expect(interfaceKeys('training/options.ts', 'TrainOptions').filter((k) => !train.has(k))).toEqual([]);
    expect(interfaceKeys('pretraining/pretrainer.ts', 'PretrainOptions').filter((k) => !pretrain.has(k))).toEqual([]);
  });
  it('lists every field of TrainResult and PretrainResult in their summaries', () => {
    expect(summaryKeys('TrainResult').sort()).toEqual(interfaceKeys('classification/trainer.ts', 'TrainResult').sort());
    expect(summaryKeys('PretrainResult').sort()).toEqual(interfaceKeys('pretraining/pretrainer.ts', 'PretrainResult').sort());
  });
  it('names every value the package exports', async () => {
    const pkg: Record<string, unknown> = await import(join(repoRoot, 'dist', 'index.js'));
    const spans = [...backticked(readme), ...codeBlocks('ts')].join('\n');
    expect(Object.keys(pkg).filter((name) => !new RegExp(`\\b${name}\\b`).test(spans))).toEqual([]);
  });
  it('calls by name only functions the package exports', async () => {
    // A bare `name(` in the README is a call a reader will import from 'torch-bert'.
    const libFunctions = new Set(
      libSources()
        .filter((f) => f !== 'index.ts')
        .flatMap((f) =>
          [...readFileSync(join(repoRoot, 'lib', f), 'utf8').matchAll(/^export (?:async )?function (\w+)/gm)].map((m) => m[1]),
        ),
    );
    const called = [...new Set([...readme.matchAll(/`([a-zA-Z_]\w*)\(/g)].map((m) => m[1]))].filter((n) => libFunctions.has(n));
    expect(called).toContain('train');
    const pkg: Record<string, unknown> = await import(join(repoRoot, 'dist', 'index.js'));
    expect(called.filter((n) => typeof pkg[n] !== 'function')).toEqual([]);
  });
  it("resolves a model folder through the package's resolveModelSource, as the Hub section shows", async () => {
    const { resolveModelSource, terminalProgress } = await import('../lib/index.js');
    const folder = join(repoRoot, 'assets', 'demo', 'encoder');
    const source = await resolveModelSource(folder, { tokenizer: false });
    expect(source).toEqual({
      kind: 'folder',
      dir: folder,
      files: { config: 'config.json', format: 'safetensors', weights: ['model.safetensors'], tokenizer: undefined },
    });
    // Not a terminal: no bar, so logs and pipes stay clean.
    expect(terminalProgress({ isTTY: false, write: () => true })).toBeUndefined();
  });
  it('names every lib/ module and scripts/python/ script in Architecture', () => {
    const named = new Set(backticked(section('Architecture')));
    const files = [
      ...libSources().map((f) => basename(f)),
      ...readdirSync(join(repoRoot, 'scripts', 'python')).filter((f) => f.endsWith('.py')),
    ];
    expect(files.filter((f) => !named.has(f))).toEqual([]);
  });
  it('dates every benchmark once in Performance, as its own section does', () => {
    const benches = readdirSync(join(repoRoot, 'bench'))
      .map((f) =>
        f.endsWith('.mjs') ? readFileSync(join(repoRoot, 'bench', f), 'utf8').match(/^export const name = '([\w-]+)'/m)?.[1] : undefined,
      )
      .filter((n): n is string => n !== undefined);
    expect(benches).toContain('techniques-step');
    // The opening list of Performance: "- YYYY-MM-DD ...: `bench`, `bench`", a bench in one item only.
    const opening = section('Performance').split('\n### ')[0];
    const dateOf = new Map<string, string[]>();
    for (const m of opening.matchAll(/^- (\d{4}-\d{2}-\d{2})\b(.*(?:\n {2}.*)*)/gm)) {
      for (const name of backticked(m[2])) dateOf.set(name, [...(dateOf.get(name) ?? []), m[1]]);
    }
    expect(benches.filter((b) => dateOf.get(b)?.length !== 1)).toEqual([]);
    // A section headed with benchmarks' names says "Measured <date>" only with one of their dates.
    for (const heading of readme.matchAll(/^#{3,4} (.*)$/gm)) {
      const dates = backticked(heading[1]).flatMap((n) => dateOf.get(n) ?? []);
      if (dates.length === 0) continue;
      for (const m of section(heading[1]).matchAll(/Measured (?:on )?(\d{4}-\d{2}-\d{2})/g)) expect(dates, heading[1]).toContain(m[1]);
    }
  });
  it("computes the on-paper step's FLOPs from bert-base's shapes", () => {
    const text = section('Scaling out on paper').replace(/\s+/g, ' ');
    const m = text.match(/about ([\d.]+) TFLOP \(6 × ([\d.]+) M matrix parameters × ([\d,]+) tokens, plus attention's ([\d.]+) TFLOP\)/);
    expect(m).not.toBeNull();
    const [layers, hidden, intermediate, batch, length] = [12, 768, 3072, 32, 128];
    // Per layer: the query, key, value and output projections, and the feed-forward pair.
    const matrixParameters = layers * (4 * hidden * hidden + 2 * hidden * intermediate);
    const tokens = batch * length;
    // Scores and their weighted sum, 2·T²·H multiply-adds each per sequence, times 3 for backward.
    const attention = 3 * layers * 4 * batch * length * length * hidden;
    const [total, millions, statedTokens, statedAttention] = (m as RegExpMatchArray).slice(1).map((v) => Number(v.replace(/,/g, '')));
    expect(millions).toBeCloseTo(matrixParameters / 1e6, 1);
    expect(statedTokens).toBe(tokens);
    expect(statedAttention).toBeCloseTo(attention / 1e12, 2);
    expect(total).toBeCloseTo((6 * matrixParameters * tokens + attention) / 1e12, 2);
  });
  it('has a torch-only Python snippet that gives the saved classifier the probabilities predict() gives', async () => {
    const { loadClassifier, TextTokenizer, train } = await import('../lib/index.js');
    const dir = mkdtempSync(join(tmpdir(), 'torch-bert-readme-py-'));
    try {
      const outDir = join(dir, 'sentiment-classifier');
      const demo = join(repoRoot, 'assets', 'demo');
      await train({
        data: join(demo, 'reviews.csv'),
        encoder: join(demo, 'encoder'),
        tokenizer: join(demo, 'tokenizer.json'),
        outDir,
        epochs: 1,
        maxLength: 32,
      });
      const text = 'What a wonderful film.';
      const classifier = await loadClassifier(outDir);
      const [expected] = await classifier.predict([text]);
      classifier.dispose();
      const tokenizer = await TextTokenizer.load(join(outDir, 'tokenizer.json'));
      const encoded = await tokenizer.encodeBatchAsync([text], 32);
      const ids = Array.from(encoded.inputIds).slice(0, encoded.lengths[0]);
      // The README's snippet as written, after the ids it says come from the same tokenizer.json.
      const snippet = codeBlocks('python').find((b) => b.includes('torch.jit.load("sentiment-classifier/classifier.pt")'));
      expect(snippet).toBeDefined();
      const script = [
        'import json, torch',
        `input_ids = torch.tensor([${JSON.stringify(ids)}])`,
        'attention_mask = torch.ones_like(input_ids)',
        snippet,
        'print(json.dumps(probabilities[0].tolist()))',
      ].join('\n');
      const { stdout } = await exec(PYTHON, ['-c', script], { cwd: dir });
      const probabilities: number[] = JSON.parse(stdout);
      const labels = Object.keys(expected.probabilities);
      expect(probabilities).toHaveLength(labels.length);
      for (const [i, label] of labels.entries()) expect(probabilities[i]).toBeCloseTo(expected.probabilities[label], 5);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
