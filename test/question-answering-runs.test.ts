/**
 * Question answering's runs beyond the parity test's (question-answering.test.ts): an aborted run
 * resumed ends with the uninterrupted run's weights bit for bit; technique 'lora' keeps its
 * adapters merged and as PEFT's QUESTION_ANS adapter; the TorchScript file answers in Python as
 * QuestionAnswerer does; a RoBERTa folder (byte-level BPE, no token types) trains and answers
 * with characters of its contexts; and what trainQuestionAnswering() / QuestionAnswerer.load()
 * refuse.
 */
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError } from '../lib/addon/errors.js';
import { loadBinding } from '../lib/addon/loader.js';
import { type QaTrainOptions, type QaTrainResult, trainQuestionAnswering } from '../lib/answering/qa-trainer.js';
import { QuestionAnswerer } from '../lib/answering/question-answerer.js';
import { questionWindows, windowOffsets } from '../lib/answering/question-windows.js';
import { answerSpan, SPAN_DEFAULTS } from '../lib/answering/span-answers.js';
import { freePort, rankVariables } from '../lib/cli/launcher.js';
import { TextTokenizer } from '../lib/data/tokenizer.js';
import { sha256File } from '../lib/files/checkpoint.js';
import type { BatchEvent, EpochMetrics } from '../lib/training/options.js';
import { makeEncoder, makeHfFolder, repoRoot, runPython } from './fixtures.js';
import { runCommand } from './helpers/run-command.js';
import { jsonl, questions } from './helpers/squad-questions.js';
import { maxDifference } from './helpers/weights.js';

const SIZES = { tokenizer: 'json' as const, layers: 2, hidden: 32, heads: 4, intermediate: 64 };
const RUN = { epochs: 2, batchSize: 4, learningRate: 1e-3, seed: 7, maxLength: 24, docStride: 4 };

/** A kept folder's model.safetensors as name → values. */
function readTensors(file: string): Map<string, Float32Array> {
  const { tensors } = loadBinding().readSafetensors(file);
  try {
    return new Map(tensors.map(([name, t]) => [name, t.toArray() as Float32Array]));
  } finally {
    for (const [, t] of tensors) t.dispose();
  }
}

const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Math.max(...Array.from(a, (x, i) => Math.abs(x - b[i]!)));
const history = (h: EpochMetrics[]) =>
  h.map((e) => [e.epoch, e.trainLoss, e.trainAccuracy, e.validationLoss, e.validationExactMatch, e.validationF1]);

describe('question answering runs (resume, LoRA, TorchScript, RoBERTa, refusals)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'torch-bert-qa-runs-'));
  // 44 windows: whole global batches of 4 for the data-parallel case.
  const train = questions(19, 11, 't', false);
  const validation = questions(6, 12, 'v', false);
  const data = join(dir, 'train.jsonl');
  const validationData = join(dir, 'validation.jsonl');
  let bert: { dir: string; weights: string };

  const run = (model: string, outDir: string, batches: BatchEvent[], options: Partial<QaTrainOptions> = {}) =>
    trainQuestionAnswering({
      model,
      data,
      validationData,
      outDir,
      schedule: 'constant',
      threads: 1,
      ...RUN,
      ...options,
      onProgress: (e) => {
        if (e.type === 'batch') batches.push(e);
        options.onProgress?.(e);
      },
    });

  beforeAll(async () => {
    writeFileSync(data, jsonl(train));
    writeFileSync(validationData, jsonl(validation));
    bert = await makeHfFolder({ layout: 'automodel', ...SIZES, dropout: 0, seed: 3 });
  }, 300_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("resumes a run aborted in epoch 2 to the uninterrupted run's kept weights, bit for bit, and its history", async () => {
    // Dropout 0.1 and a warmup then linear decay: the resumed run must restore the RNG and the
    // schedule's place as well as the weights and AdamW's moments.
    const folder = (await makeHfFolder({ layout: 'automodel', ...SIZES, dropout: 0.1, seed: 5 })).dir;
    const settings = { schedule: 'linear' as const, warmupRatio: 0.2, epochs: 3, bestMetric: 'f1' as const };
    const wholeBatches: BatchEvent[] = [];
    const whole = await run(folder, join(dir, 'whole'), wholeBatches, settings);
    const perEpoch = wholeBatches.length / 3;
    expect(perEpoch).toBeGreaterThan(5);

    const parts = join(dir, 'parts');
    const controller = new AbortController();
    const before: BatchEvent[] = [];
    let seen = 0;
    const stopAt = perEpoch + 2;
    await expect(
      run(folder, parts, before, {
        ...settings,
        signal: controller.signal,
        onProgress: (e) => {
          if (e.type === 'batch' && ++seen === stopAt) controller.abort();
        },
      }),
    ).rejects.toBeInstanceOf(AbortError);
    expect(existsSync(join(parts, 'training-state', 'state.json'))).toBe(true);

    const after: BatchEvent[] = [];
    const resumed = await run(folder, parts, after, { ...settings, resumeFrom: parts });
    expect(after.map((b) => [b.epoch, b.batch, b.loss, b.learningRate])).toEqual(
      wholeBatches.slice(stopAt).map((b) => [b.epoch, b.batch, b.loss, b.learningRate]),
    );
    expect(history(resumed.history)).toEqual(history(whole.history));
    expect(resumed.evaluations).toEqual(whole.evaluations);
    expect(existsSync(join(parts, 'training-state'))).toBe(false);
    const a = readTensors(join(dir, 'whole', 'model.safetensors'));
    const b = readTensors(join(parts, 'model.safetensors'));
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    expect(a.has('qa_outputs.weight')).toBe(true);
    for (const [name, t] of a) expect(bytes(t).equals(bytes(b.get(name)!)), name).toBe(true);
  }, 300_000);

  it("technique 'lora' keeps the adapters merged into the weights, and as PEFT's QUESTION_ANS adapter: the folder, loaded without them, scores as the adapted model did", async () => {
    const out = join(dir, 'lora');
    const result = await run(bert.dir, out, [], { technique: 'lora', learningRate: 5e-3, lora: { rank: 4, alpha: 8 } });
    const source = readTensors(bert.weights);
    const kept = readTensors(join(out, 'model.safetensors'));
    const changed = [...kept.keys()].filter((k) => k.startsWith('bert.') && !bytes(kept.get(k)!).equals(bytes(source.get(k.slice(5))!)));
    expect(changed.sort()).toEqual(
      [0, 1].flatMap((l) => ['query', 'value'].map((m) => `bert.encoder.layer.${l}.attention.self.${m}.weight`)).sort(),
    );
    expect(JSON.parse(readFileSync(join(out, 'adapter', 'adapter_config.json'), 'utf8'))).toMatchObject({
      peft_type: 'LORA',
      task_type: 'QUESTION_ANS',
      base_model_name_or_path: bert.dir,
      r: 4,
      lora_alpha: 8,
      target_modules: ['attention.self.query', 'attention.self.value'],
      modules_to_save: ['qa_outputs'],
    });
    const adapter = readTensors(join(out, 'adapter', 'adapter_model.safetensors'));
    const targets = changed.map((k) => k.slice('bert.'.length, -'.weight'.length));
    expect([...adapter.keys()].sort()).toEqual(
      [
        ...targets.flatMap((m) => [`base_model.model.bert.${m}.lora_A.weight`, `base_model.model.bert.${m}.lora_B.weight`]),
        'base_model.model.qa_outputs.bias',
        'base_model.model.qa_outputs.weight',
      ].sort(),
    );
    const hidden = SIZES.hidden;
    for (const m of targets) {
      const [a, b, w0] = [
        adapter.get(`base_model.model.bert.${m}.lora_A.weight`)!,
        adapter.get(`base_model.model.bert.${m}.lora_B.weight`)!,
        source.get(`${m}.weight`)!,
      ];
      const merged = w0.map((w, at) => {
        const [row, col] = [Math.floor(at / hidden), at % hidden];
        let update = 0;
        for (let r = 0; r < 4; r++) update += b[row * 4 + r]! * a[r * hidden + col]!;
        return w + (8 / 4) * update;
      });
      expect(maxAbsDiff(merged, kept.get(`bert.${m}.weight`)!)).toBeLessThan(1e-6);
    }
    for (const p of ['weight', 'bias'])
      expect(bytes(adapter.get(`base_model.model.qa_outputs.${p}`)!).equals(bytes(kept.get(`qa_outputs.${p}`)!))).toBe(true);
    const torchBert = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).torch_bert as { archiveSha256: Record<string, string> };
    expect(torchBert.archiveSha256['adapter/adapter_model.safetensors']).toBe(
      await sha256File(join(out, 'adapter', 'adapter_model.safetensors')),
    );
    // Validation ran the adapters in activation space; the folder holds plain merged weights.
    const answerer = await QuestionAnswerer.load(out, { device: 'cpu' });
    try {
      const metrics = await answerer.evaluate(validationData, { batchSize: RUN.batchSize });
      expect(metrics.exactMatch).toBe(result.metrics!.exactMatch);
      expect(metrics.f1).toBe(result.metrics!.f1);
      expect(metrics.loss).toBeCloseTo(result.metrics!.loss, 5);
    } finally {
      answerer.dispose();
    }
  }, 300_000);

  it("saveTorchScript writes a file Python's torch.jit.load runs alone: span_logits gives answer()'s answers and logits", async () => {
    const out = join(dir, 'for-torchscript');
    await run(bert.dir, out, [], { epochs: 1 });
    const file = join(dir, 'answerer.pt');
    const asked = validation.map((r) => ({ question: r.question, context: r.context }));
    const answerer = await QuestionAnswerer.load(out, { device: 'cpu' });
    let answers: Awaited<ReturnType<QuestionAnswerer['answer']>>;
    try {
      answers = await answerer.answer(asked);
      await answerer.saveTorchScript(file);
    } finally {
      answerer.dispose();
    }
    const tokenizer = await TextTokenizer.load(join(out, 'tokenizer.json'));
    const windows = questionWindows(
      tokenizer,
      validation.map((r) => ({ id: r.id, question: r.question, context: r.context, answers: { text: [], answerStart: [] } })),
      { maxLength: RUN.maxLength, docStride: RUN.docStride, tokenTypes: true },
    );
    const { inputIds, attentionMask, tokenTypeIds, count, seqLen } = windows.encoded;
    const matrix = (a: Int32Array) => Array.from({ length: count }, (_, r) => Array.from(a.subarray(r * seqLen, (r + 1) * seqLen)));
    const code = [
      'import json, sys, torch',
      'job = json.load(sys.stdin)',
      'm = torch.jit.load(job["file"])',
      'with torch.no_grad():',
      '    x = m.span_logits_token_types(torch.tensor(job["ids"]), torch.tensor(job["mask"]), torch.tensor(job["types"]))',
      'print(json.dumps({"shape": list(x.shape), "logits": x.tolist()}))',
    ].join('\n');
    const theirs = JSON.parse(
      await runPython(
        '-c',
        [code],
        JSON.stringify({ file, ids: matrix(inputIds), mask: matrix(attentionMask), types: matrix(tokenTypeIds!) }),
      ),
    ) as { shape: number[]; logits: number[][][] };
    expect(theirs.shape).toEqual([count, seqLen, 2]);
    validation.forEach((r, e) => {
      const own = [...windows.example.keys()].filter((w) => windows.example[w] === e);
      const logits = own.map((w) => {
        const length = windows.encoded.lengths[w]!;
        const rows = theirs.logits[w]!.slice(0, length);
        return { start: rows.map((p) => p[0]!), end: rows.map((p) => p[1]!), offsets: windowOffsets(windows, w, length) };
      });
      const python = answerSpan(r.context, logits, SPAN_DEFAULTS);
      expect(answers[e]!.text, r.id).toBe(python.text);
      expect(answers[e]!.candidates[0]!.startLogit).toBeCloseTo(python.candidates[0]!.startLogit, 4);
      expect(answers[e]!.candidates[0]!.endLogit).toBeCloseTo(python.candidates[0]!.endLogit, 4);
    });
  }, 300_000);

  it('loads a BertForQuestionAnswering folder another tool saved (bert. prefix, LayerNorm gamma/beta, no pooler) and answers as the reference reads it', async () => {
    // Written by Python as save_pretrained lays it out, with bert-base-uncased's TensorFlow-era
    // LayerNorm names, from the source folder's encoder and a qa_outputs drawn from a seed.
    const folder = join(dir, 'saved-by-python');
    const code = [
      'import json, os, shutil, sys, torch',
      'sys.path.insert(0, "scripts/python")',
      'from safetensors_io import read_safetensors, write_safetensors',
      'src, dest = sys.argv[1], sys.argv[2]',
      'weights, _ = read_safetensors(os.path.join(src, "model.safetensors"))',
      'leaf = lambda k: k[:-7] + ".gamma" if k.endswith("LayerNorm.weight") else k[:-5] + ".beta" if k.endswith("LayerNorm.bias") else k',
      'out = {"bert." + leaf(k): v for k, v in weights.items() if not k.startswith("pooler.")}',
      'torch.manual_seed(11)',
      'out["qa_outputs.weight"] = torch.randn(2, out["bert.embeddings.word_embeddings.weight"].shape[1]) * 0.5',
      'out["qa_outputs.bias"] = torch.randn(2) * 0.1',
      'os.makedirs(dest)',
      'cfg = json.load(open(os.path.join(src, "config.json")))',
      'cfg["architectures"] = ["BertForQuestionAnswering"]',
      'json.dump(cfg, open(os.path.join(dest, "config.json"), "w"))',
      'shutil.copy(os.path.join(src, "tokenizer.json"), dest)',
      'write_safetensors(os.path.join(dest, "model.safetensors"), out)',
    ].join('\n');
    await runPython('-c', [code, bert.dir, folder]);
    const answerer = await QuestionAnswerer.load(folder, { device: 'cpu' });
    let answers: Awaited<ReturnType<QuestionAnswerer['answer']>>;
    try {
      // A folder without torch-bert's block reads as run_qa.py does: 384 tokens or the model's
      // positions if fewer (this one has 64), stride 128, padded.
      expect([answerer.windows.maxLength, answerer.windows.docStride, answerer.padToMaxLength]).toEqual([64, 128, true]);
      answers = await answerer.answer(validation.map((r) => ({ question: r.question, context: r.context })));
    } finally {
      answerer.dispose();
    }
    const theirs = JSON.parse(
      await runPython(
        'test/python/qa_reference.py',
        [],
        JSON.stringify({
          mode: 'answer',
          folder,
          examples: validation.map((r) => ({ id: r.id, question: r.question, context: r.context })),
          maxLength: 64,
          docStride: 128,
          batchSize: 32,
          padToMaxLength: true,
        }),
      ),
    ) as { predictions: { [id: string]: string }; nbest: { [id: string]: Array<{ text: string; probability: number }> } };
    expect(answers.map((a) => a.text)).toEqual(validation.map((r) => theirs.predictions[r.id]));
    answers.forEach((a, i) => {
      const best = theirs.nbest[validation[i]!.id]!;
      expect(a.candidates.map((c) => c.text)).toEqual(best.map((c) => c.text));
      expect(a.probability).toBeCloseTo(best[0]!.probability, 5);
    });
  }, 300_000);

  it('trains a RoBERTa folder (byte-level BPE, no token types) and answers with characters of the contexts', async () => {
    // The folder with a byte-level BPE tokenizer of its own (RoBERTa's pre-tokenizer and pair template).
    const roberta = join(dir, 'roberta-model');
    cpSync((await makeHfFolder({ layout: 'roberta', ...SIZES, dropout: 0, seed: 9 })).dir, roberta, { recursive: true });
    await runPython('scripts/python/make_bpe_tokenizer.py', [join(roberta, 'tokenizer.json')]);
    // Its pad id is RoBERTa's, 1: the config's too, as the position ids count from it.
    const config = JSON.parse(readFileSync(join(roberta, 'config.json'), 'utf8'));
    writeFileSync(join(roberta, 'config.json'), JSON.stringify({ ...config, pad_token_id: 1 }));
    const out = join(dir, 'roberta');
    const result = await run(roberta, out, [], { epochs: 3, maxLength: 48, docStride: 8 });
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).architectures).toEqual(['RobertaForQuestionAnswering']);
    const losses = result.history.map((h) => h.validationLoss);
    expect(losses.at(-1)).toBeLessThan(losses[0]!);
    const answerer = await QuestionAnswerer.load(out, { device: 'cpu' });
    try {
      expect(answerer.windows.tokenTypes).toBe(false);
      // RoBERTa's pair template: <s> question </s></s> context </s>.
      const tokenizer = await TextTokenizer.load(join(out, 'tokenizer.json'));
      const { before, between, after } = tokenizer.pairFraming;
      expect([before.length, between.length, after.length]).toEqual([1, 2, 1]);
      const answers = await answerer.answer(validation.map((r) => ({ question: r.question, context: r.context })));
      answers.forEach((a, i) => {
        expect(a.text).not.toBe('');
        expect(validation[i]!.context.slice(a.start, a.end)).toBe(a.text);
      });
    } finally {
      answerer.dispose();
    }
  }, 300_000);

  /**
   * DistributedDataParallel's semantics: two Gloo ranks with batch 2 end with one process's
   * weights with batch 4, and every rank validates every question, so every rank reports one
   * process's metrics. Rank 0 alone writes.
   */
  it.skipIf(!loadBinding().distributedBackends().includes('gloo'))(
    '2 ranks with batch 2 end with the weights and validation of 1 process with batch 4; rank 0 alone writes',
    async () => {
      const helper = join(repoRoot, 'test', 'helpers', 'distributed-qa-train.mjs');
      const options = (outDir: string, batchSize: number) =>
        JSON.stringify({
          model: bert.dir,
          data,
          validationData,
          outDir,
          ...RUN,
          batchSize,
          learningRate: 2e-3,
          // Equal arithmetic in another order: eps 1e-6 keeps AdamW from turning rounding-level
          // gradients into steps of the learning rate (test/distributed.test.ts says more).
          eps: 1e-6,
          threads: 1,
          distributedTimeout: 60,
        });
      const single = join(dir, 'ddp-single');
      const one = await runCommand(process.execPath, [helper, options(single, 4)]);
      expect(one.code, one.stderr).toBe(0);
      const port = await freePort();
      const ranks = await Promise.all(
        [0, 1].map((rank) =>
          runCommand(process.execPath, [helper, options(join(dir, rank === 0 ? 'ddp' : 'ddp-rank1'), 2)], rankVariables(rank, 2, port)),
        ),
      );
      for (const r of ranks) expect(r.code, r.stderr).toBe(0);
      expect(existsSync(join(dir, 'ddp-rank1'))).toBe(false);
      // qa_outputs.bias adds one constant to every position's start (end) logit, and the softmax
      // over the positions does not see a constant: its gradient is zero but for rounding, which
      // AdamW scales into steps (in PyTorch alike), so it has a bound of its own; every other
      // weight is one process's.
      const [ddp, alone] = [readTensors(join(dir, 'ddp', 'model.safetensors')), readTensors(join(single, 'model.safetensors'))];
      expect(maxAbsDiff(ddp.get('qa_outputs.bias')!, alone.get('qa_outputs.bias')!)).toBeLessThan(1e-4);
      for (const t of [ddp, alone]) t.delete('qa_outputs.bias');
      expect(maxDifference(ddp, alone)).toBeLessThan(1e-5);
      const reference = JSON.parse(one.stdout) as QaTrainResult;
      for (const r of ranks) {
        const result = JSON.parse(r.stdout) as QaTrainResult;
        expect(result.history.map((h) => [h.validationExactMatch, h.validationF1])).toEqual(
          reference.history.map((h) => [h.validationExactMatch, h.validationF1]),
        );
        expect(result.history.map((h) => h.validationLoss)).toEqual(reference.history.map((h) => expect.closeTo(h.validationLoss, 5)));
      }
      // The weights moved: one process with batch 2 ends elsewhere.
      const small = join(dir, 'ddp-b2');
      expect((await runCommand(process.execPath, [helper, options(small, 2)])).code).toBe(0);
      expect(maxDifference(readTensors(join(small, 'model.safetensors')), readTensors(join(single, 'model.safetensors')))).toBeGreaterThan(
        1e-4,
      );
    },
    300_000,
  );

  describe('refusals', () => {
    it('refuses a TorchScript encoder, naming the file', async () => {
      const encoder = await makeEncoder({ layers: 1, hidden: 16, heads: 2, intermediate: 32 });
      await expect(run(encoder, join(dir, 'ts'), [])).rejects.toThrow(
        new RegExp(
          `trainQuestionAnswering\\(\\): ${encoder.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is a TorchScript file; question answering trains a Hugging Face model folder`,
        ),
      );
    });

    it('refuses an unknown option and an unknown bestMetric', async () => {
      await expect(run(bert.dir, join(dir, 'bad'), [], { docStrid: 3 } as Partial<QaTrainOptions>)).rejects.toThrow(/docStrid.*docStride/);
      await expect(run(bert.dir, join(dir, 'bad'), [], { bestMetric: 'accuracy' as 'f1' })).rejects.toThrow(
        /bestMetric must be one of loss, f1, exactMatch; got "accuracy"/,
      );
    });

    it('refuses to load a folder that is not a question-answering model', async () => {
      await expect(QuestionAnswerer.load(bert.dir, { device: 'cpu' })).rejects.toThrow(
        /is not a question-answering model.*trainQuestionAnswering/,
      );
    });
  });
});
