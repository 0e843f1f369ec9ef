/**
 * A model and its inputs that do not agree (lib/models/model-checks.ts) fail before any work with an
 * error naming both files and both numbers and carrying a stable `code`: a tokenizer.json of
 * another model, a max length beyond the position embeddings (RoBERTa's offset included), in
 * train(), loadClassifier()/predict()/evaluate() and the CLI; and an error that still comes out
 * of the TorchScript interpreter keeps its innermost message in its one line and its whole
 * traceback as `cause` (native/addon/errors.h) and under --verbose / TORCH_BERT_DEBUG.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadBinding } from '../lib/addon/loader.js';
import { TextTokenizer } from '../lib/data/tokenizer.js';
import { evaluate, loadClassifier, predict, train } from '../lib/index.js';
import { checkTables } from '../lib/models/model-checks.js';
import { demoReviews, demoTokenizer, fixturesDir, makeEncoder, repoRoot, runPython } from './fixtures.js';

const exec = promisify(execFile);
const cli = join(repoRoot, 'dist', 'cli.js');
const work = mkdtempSync(join(tmpdir(), 'torch-bert-checks-'));
const SMALL = { epochs: 1, batchSize: 32, headHidden: 16, learningRate: 1e-3 } as const;

async function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [cli, ...args], { env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/**
 * The demo tokenizer (589 ids) with its words moved up to end at id 30521, as bert-base-uncased's
 * vocabulary does, the special tokens left at 0-4: every text then has ids far beyond a
 * 1,000-row embedding table, as with a new user's bert-base tokenizer.json and a small encoder.
 */
function largeVocabTokenizer(): string {
  const spec = JSON.parse(readFileSync(demoTokenizer, 'utf8')) as { model: { vocab: Record<string, number> } };
  const largest = Math.max(...Object.values(spec.model.vocab));
  for (const [token, id] of Object.entries(spec.model.vocab)) if (id >= 5) spec.model.vocab[token] = id + (30521 - largest);
  const file = join(work, 'large-vocab-tokenizer.json');
  writeFileSync(file, JSON.stringify(spec));
  return file;
}

/** The demo tokenizer with RoBERTa's post-processor (same ids, same special tokens). */
function robertaProcessingTokenizer(): string {
  const spec = JSON.parse(readFileSync(demoTokenizer, 'utf8')) as Record<string, unknown>;
  spec.post_processor = { type: 'RobertaProcessing', sep: ['[SEP]', 3], cls: ['[CLS]', 2], trim_offsets: true, add_prefix_space: false };
  const file = join(work, 'roberta-processing-tokenizer.json');
  writeFileSync(file, JSON.stringify(spec));
  return file;
}

/**
 * Small traced encoders make_encoder.py does not make, built once by this Python and cached
 * under test/.fixtures by its hash: argv[1] the kind, argv[2] the output file.
 *  - unnamed: embedding tables named `lookup` / `where`, which no rule recognises (vocab 1000, 64 positions);
 *  - roberta / roberta-wrapped: Hugging Face RoBERTa's embeddings (position ids counted from
 *    padding_idx + 1 over the non-pad tokens, padding_idx = the demo's pad id 0), 589 ids, 20
 *    position rows (so at most 19 tokens); -wrapped puts it under a `roberta.` attribute as a
 *    traced RobertaFor... model is.
 */
const ENCODERS_PY = `
import os, sys, torch
from torch import nn
torch.manual_seed(0)
kind, out = sys.argv[1], sys.argv[2]
H = 16
class Unnamed(nn.Module):
    def __init__(self):
        super().__init__()
        self.lookup = nn.Embedding(1000, H)
        self.where = nn.Embedding(64, H)
        self.mix = nn.Linear(H, H)
    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.size(1)).unsqueeze(0)
        return torch.tanh(self.mix(self.lookup(input_ids) + self.where(positions)))
class RobertaEmbeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(589, H, padding_idx=0)
        self.position_embeddings = nn.Embedding(20, H, padding_idx=0)
    def forward(self, input_ids):
        mask = input_ids.ne(0).int()
        positions = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + 0
        return self.word_embeddings(input_ids) + self.position_embeddings(positions)
class Roberta(nn.Module):
    def __init__(self):
        super().__init__()
        self.embeddings = RobertaEmbeddings()
        self.dense = nn.Linear(H, H)
    def forward(self, input_ids, attention_mask):
        return torch.tanh(self.dense(self.embeddings(input_ids)))
class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.roberta = Roberta()
    def forward(self, input_ids, attention_mask):
        return self.roberta(input_ids, attention_mask)
model = {'unnamed': Unnamed, 'roberta': Roberta, 'roberta-wrapped': Wrapped}[kind]().eval()
ids = torch.ones(2, 8, dtype=torch.long)
torch.jit.trace(model, (ids, torch.ones_like(ids))).save(out + '.tmp')
os.replace(out + '.tmp', out)
`;

async function tracedEncoder(kind: 'unnamed' | 'roberta' | 'roberta-wrapped'): Promise<string> {
  const out = join(fixturesDir, `checks-${kind}-${createHash('sha256').update(ENCODERS_PY).digest('hex').slice(0, 12)}.pt`);
  if (!existsSync(out)) {
    mkdirSync(fixturesDir, { recursive: true });
    await runPython('-c', [ENCODERS_PY, kind, out]);
  }
  return out;
}

let encoder1000x64: string; // bert-shaped: 1,000 ids, 64 positions
let encoder512: string; // bert-shaped: the demo's 589 ids, 512 positions (bert-base's)
let largeTokenizer: string;
beforeAll(async () => {
  encoder1000x64 = await makeEncoder({ layers: 1, hidden: 32, heads: 2, intermediate: 64, vocabSize: 1000, maxPosition: 64, seed: 3 });
  encoder512 = await makeEncoder({ layers: 1, hidden: 32, heads: 2, intermediate: 64, tokenizer: demoTokenizer, seed: 3 });
  largeTokenizer = largeVocabTokenizer();
});

describe('train() checks the encoder against its inputs before any work', () => {
  it("rejects a tokenizer.json whose ids go past the encoder's word embeddings, naming both files and both numbers", async () => {
    const outDir = join(work, 'vocab-out');
    const run = train({ data: demoReviews, encoder: encoder1000x64, tokenizer: largeTokenizer, outDir, maxLength: 32, ...SMALL });
    await expect(run).rejects.toMatchObject({ name: 'InputError', code: 'TOKENIZER_VOCAB_MISMATCH', file: largeTokenizer });
    const message = await run.catch((e: Error) => e.message);
    expect(message).toContain(`tokenizer ${largeTokenizer} does not belong to encoder ${encoder1000x64}`);
    expect(message).toContain('token ids up to 30521');
    expect(message).toContain('(embeddings.word_embeddings.weight) has 1000 rows');
    expect(message).toMatch(/Use the encoder's own tokenizer/);
    // Checked before the output directory is touched.
    expect(existsSync(outDir)).toBe(false);
  });

  it('names the special tokens when even they are out of range', () => {
    const tokenizer = TextTokenizer.fromJson(readFileSync(demoTokenizer, 'utf8'), 'demo.json');
    // The demo tokenizer: [PAD] 0, [CLS] 2, [SEP] 3, words up to 588; a table of 2 rows.
    expect(() =>
      checkTables([['embeddings.word_embeddings.weight', [2, 8]]], {
        kind: 'encoder',
        modelFile: 'enc.pt',
        tokenizer,
        maxLength: 8,
        maxLengthFrom: 'maxLength',
        tokenTypes: null,
      }),
    ).toThrow(
      /token ids up to 588 \('[^']+'\), but the encoder's word embedding table \(embeddings\.word_embeddings\.weight\) has 2 rows \(ids 0-1\); even its special tokens \[CLS\] \(2\), \[SEP\] \(3\) are out of range\./,
    );
  });

  it('rejects a max length beyond the position embeddings (128 > 64; 100000 > 512), saying the largest that works', async () => {
    const outDir = join(work, 'length-out');
    const short = train({ data: demoReviews, encoder: encoder1000x64, tokenizer: demoTokenizer, outDir, maxLength: 128, ...SMALL });
    await expect(short).rejects.toMatchObject({ name: 'InputError', code: 'MAX_LENGTH_EXCEEDS_POSITIONS' });
    const message = await short.catch((e: Error) => e.message);
    expect(message).toContain(`max length 128 (maxLength / --max-length) is longer than encoder ${encoder1000x64} can read`);
    expect(message).toContain('(embeddings.position_embeddings.weight) has 64 rows');
    expect(message).toContain('Use a max length of at most 64');
    expect(existsSync(outDir)).toBe(false);

    const huge = train({ data: demoReviews, encoder: encoder512, tokenizer: demoTokenizer, maxLength: 100000, ...SMALL });
    await expect(huge).rejects.toMatchObject({ code: 'MAX_LENGTH_EXCEEDS_POSITIONS' });
    await expect(huge).rejects.toThrow(
      /max length 100000 .* has 512 rows, so a text can have at most 512 tokens\. Use a max length of at most 512/,
    );
    // The limit itself is accepted.
    const atLimit = await train({ data: demoReviews, encoder: encoder1000x64, tokenizer: demoTokenizer, maxLength: 64, ...SMALL });
    atLimit.classifier.dispose();
  });

  it("subtracts RoBERTa's position offset where the parameter names or the tokenizer say RoBERTa", async () => {
    const wrapped = await tracedEncoder('roberta-wrapped');
    // 20 rows, positions counted from padding_idx + 1 = 1: at most 19 tokens.
    const named = train({ data: demoReviews, encoder: wrapped, tokenizer: demoTokenizer, maxLength: 20, ...SMALL });
    await expect(named).rejects.toMatchObject({ code: 'MAX_LENGTH_EXCEEDS_POSITIONS' });
    await expect(named).rejects.toThrow(
      /\(roberta\.embeddings\.position_embeddings\.weight\) has 20 rows, the first 1 of them unused as RoBERTa's offset \(its parameter roberta\.embeddings\.word_embeddings\.weight is RoBERTa's\), so a text can have at most 19 tokens/,
    );
    const robertaTokenizer = robertaProcessingTokenizer();
    const plain = await tracedEncoder('roberta');
    await expect(train({ data: demoReviews, encoder: plain, tokenizer: robertaTokenizer, maxLength: 20, ...SMALL })).rejects.toThrow(
      /at most 19 tokens/,
    );
    const ok = await train({ data: demoReviews, encoder: wrapped, tokenizer: demoTokenizer, maxLength: 19, ...SMALL });
    ok.classifier.dispose();
  });

  it('checks token type ids against the token-type rows when the encoder is given them', () => {
    const tokenizer = TextTokenizer.fromJson(readFileSync(demoTokenizer, 'utf8'), 'demo.json');
    const params = [
      ['embeddings.word_embeddings.weight', [600, 8]],
      ['embeddings.position_embeddings.weight', [64, 8]],
      ['embeddings.token_type_embeddings.weight', [1, 8]],
    ] as const;
    const inputs = { kind: 'encoder', modelFile: 'enc.pt', tokenizer, maxLength: 32, maxLengthFrom: 'maxLength' } as const;
    // Single texts (type 0) fit one row; a text pair's second segment (type 1) does not.
    expect(() => checkTables(params, { ...inputs, tokenTypes: 0 })).not.toThrow();
    expect(() => checkTables(params, { ...inputs, tokenTypes: 1 })).toThrow(
      /encoder enc\.pt cannot take token type id 1: its token type table \(embeddings\.token_type_embeddings\.weight\) has 1 row/,
    );
    try {
      checkTables(params, { ...inputs, tokenTypes: 1 });
    } catch (err) {
      expect((err as { code?: string }).code).toBe('TOKEN_TYPE_EXCEEDS_TYPES');
    }
  });

  it('probes an encoder whose tables are not named, and reports the failure as the input it is', async () => {
    const unnamed = await tracedEncoder('unnamed');
    const vocab = train({ data: demoReviews, encoder: unnamed, tokenizer: largeTokenizer, maxLength: 32, ...SMALL });
    await expect(vocab).rejects.toMatchObject({ name: 'InputError', code: 'TOKENIZER_VOCAB_MISMATCH' });
    await expect(vocab).rejects.toThrow(
      /encoder .* fails on token id 30521 .*: index out of range in self \(in torch\.embedding, module lookup\)/,
    );
    const length = train({ data: demoReviews, encoder: unnamed, tokenizer: demoTokenizer, maxLength: 128, ...SMALL });
    await expect(length).rejects.toMatchObject({ name: 'InputError', code: 'MAX_LENGTH_EXCEEDS_POSITIONS' });
    await expect(length).rejects.toThrow(
      /max length 128 .* runs on texts of up to 64 tokens and fails on 65 .*index out of range in self.* Use a max length of at most 64/,
    );
  });

  it('accepts the real bert-base-uncased tokenizer.json only with an encoder of its 30,522 ids', async (context) => {
    const real = join(repoRoot, '..', 'shared', 'models', 'bert-base-uncased', 'tokenizer.json');
    if (!existsSync(real)) {
      context.skip(`${real} is not here (it is read in place from ../shared, never copied into the repository)`);
    }
    await expect(train({ data: demoReviews, encoder: encoder1000x64, tokenizer: real, maxLength: 32, ...SMALL })).rejects.toThrow(
      /token ids up to 30521 \('##～'\), but the encoder's word embedding table \(embeddings\.word_embeddings\.weight\) has 1000 rows/,
    );
  });
});

describe('a saved classifier is checked when it loads', () => {
  let dir: string;
  beforeAll(async () => {
    dir = join(work, 'classifier');
    const result = await train({
      data: demoReviews,
      encoder: encoder1000x64,
      tokenizer: demoTokenizer,
      outDir: dir,
      maxLength: 32,
      ...SMALL,
    });
    result.classifier.dispose();
  });
  const copyWith = (name: string, change: (files: { config: Record<string, unknown>; tokenizer: string }) => void): string => {
    const copy = join(work, name);
    mkdirSync(copy);
    for (const f of ['classifier.pt', 'history.json']) writeFileSync(join(copy, f), readFileSync(join(dir, f)));
    const files = {
      config: JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>,
      tokenizer: readFileSync(join(dir, 'tokenizer.json'), 'utf8'),
    };
    change(files);
    writeFileSync(join(copy, 'config.json'), JSON.stringify(files.config));
    writeFileSync(join(copy, 'tokenizer.json'), files.tokenizer);
    return copy;
  };

  it('rejects a tokenizer.json that is not the one it was trained with, in loadClassifier, predict, evaluate and the CLI', async () => {
    const swapped = copyWith('swapped-tokenizer', (f) => (f.tokenizer = readFileSync(largeTokenizer, 'utf8')));
    const expected = {
      code: 'TOKENIZER_VOCAB_MISMATCH',
      message: expect.stringContaining(
        `tokenizer ${join(swapped, 'tokenizer.json')} does not belong to classifier ${join(swapped, 'classifier.pt')}: the tokenizer has token ids up to 30521`,
      ),
    };
    await expect(loadClassifier(swapped)).rejects.toMatchObject(expected);
    await expect(predict(swapped, ['a fine film'])).rejects.toMatchObject(expected);
    await expect(evaluate(swapped, demoReviews)).rejects.toMatchObject(expected);
    await expect(loadClassifier(swapped)).rejects.toThrow(/\(encoder\.embeddings\.word_embeddings\.weight\) has 1000 rows/);
    const cliRun = await runCli(['predict', '--classifier', swapped, 'a fine film']);
    expect(cliRun.code).toBe(1);
    expect(cliRun.stderr.trim().split('\n')).toHaveLength(1);
    expect(cliRun.stderr).toMatch(/^torch-bert: error: tokenizer .* has token ids up to 30521 .* has 1000 rows/);
  });

  it("rejects a config.json max length beyond the encoder's positions, naming the config", async () => {
    const edited = copyWith('long-config', (f) => (f.config.maxLength = 100));
    await expect(loadClassifier(edited)).rejects.toMatchObject({ code: 'MAX_LENGTH_EXCEEDS_POSITIONS' });
    await expect(loadClassifier(edited)).rejects.toThrow(
      `max length 100 (maxLength in ${join(edited, 'config.json')}) is longer than classifier ${join(edited, 'classifier.pt')} can read`,
    );
  });
});

describe('an error from inside the TorchScript interpreter keeps its cause', () => {
  it('has the innermost message, the operation and the module in its message, and the whole traceback as cause', async () => {
    const binding = loadBinding();
    const module = binding.ScriptModule.load(encoder1000x64);
    const ids = binding.Tensor.fromArray(new Int32Array(4).fill(5000), [1, 4], 'int64');
    const mask = binding.Tensor.fromArray(new Int32Array(4).fill(1), [1, 4], 'int64');
    let error: (Error & { code?: string }) | undefined;
    try {
      module.forward(ids, mask);
    } catch (err) {
      error = err as Error;
    }
    expect(error?.message).toBe('index out of range in self (in torch.embedding, module embeddings.word_embeddings)');
    expect(error?.code).toBe('TORCH_BERT_SCRIPT_ERROR');
    expect((error!.cause as Error).message).toMatch(
      /^The following operation failed in the TorchScript interpreter\.\nTraceback of TorchScript/,
    );
    expect((error!.cause as Error).message).toMatch(/RuntimeError: index out of range in self\n$/);
    // The same through a step on a worker thread, in the classifier built around the encoder.
    const built = binding.buildClassifier(module, { numClasses: 2, headHidden: 4, dropout: 0, pooling: 'cls', seed: 0 });
    const step = binding.evalStep(built.module, {
      inputIds: new Int32Array(4).fill(5000),
      attentionMask: new Int32Array(4).fill(1),
      batchSize: 1,
      seqLen: 4,
    });
    await expect(step).rejects.toMatchObject({
      message: 'index out of range in self (in torch.embedding, module encoder.embeddings.word_embeddings)',
      code: 'TORCH_BERT_SCRIPT_ERROR',
      cause: { message: expect.stringContaining('Traceback of TorchScript, original code') },
    });
    for (const d of [ids, mask, built.module, module]) d.dispose();
  });

  it("reaches the CLI's one line, and --verbose or TORCH_BERT_DEBUG prints the traceback", async () => {
    // A RoBERTa-style encoder with nothing that says RoBERTa: the check allows all 20 position
    // rows, the 20th token's position is 20, and the interpreter fails during training.
    const roberta = await tracedEncoder('roberta');
    const data = join(work, 'long-texts.csv');
    writeFileSync(
      data,
      'text,label\n' +
        Array.from({ length: 16 }, (_, i) => `${'a wonderful and moving film '.repeat(6)},${i % 2 ? 'positive' : 'negative'}`).join('\n') +
        '\n',
    );
    const args = [
      'train',
      '--data',
      data,
      '--model',
      roberta,
      '--tokenizer',
      demoTokenizer,
      '--out',
      join(work, 'cli-roberta'),
      '--max-length',
      '20',
      '--epochs',
      '1',
    ];
    const plain = await runCli(args);
    expect(plain.code).toBe(1);
    expect(plain.stderr.trim().split('\n')).toHaveLength(1);
    expect(plain.stderr).toContain(
      'torch-bert: error: index out of range in self (in torch.embedding, module encoder.embeddings.position_embeddings)',
    );
    expect(plain.stderr).toContain('(--verbose for details)');
    expect(plain.stderr).not.toContain('Traceback');
    for (const verbose of [await runCli([...args, '--verbose']), await runCli(args, { TORCH_BERT_DEBUG: '1' })]) {
      expect(verbose.code).toBe(1);
      expect(verbose.stderr.split('\n')[0]).toContain('torch-bert: error: index out of range in self');
      expect(verbose.stderr).toContain('caused by: Error: The following operation failed in the TorchScript interpreter.');
      expect(verbose.stderr).toContain('RuntimeError: index out of range in self');
    }
  });
});
