/**
 * The seed's other two chapters on its own data (issue 15 item 5): masked-LM pretraining and
 * prompting, measured on IMDB with what exists offline — no pretrained weights, so a small BERT
 * with bert-base-uncased's vocabulary and tokenizer (../shared/models) starts from random weights:
 *
 *   1. the folder: a BertModel (tiny shape) initialised as transformers' `_init_weights` does
 *      (normal(0, 0.02) matrices and embeddings, [PAD] row zero, zero biases, LayerNorm 1/0),
 *      written here as config.json + model.safetensors + the tokenizer files — no Python;
 *   2. `pretrain()` on the first PRETRAIN_REVIEWS IMDB train texts (labels unused; never the test
 *      set), one epoch, blocks of 128 tokens; pretrain() adds the missing MLM head;
 *   3. the seed's frozen job (train({ technique: 'frozen' }), imdb-job's settings) on the
 *      encoder before and after pretraining: validation accuracy, then test accuracy on a fixed
 *      sample (the first TEST_REVIEWS of IMDB's test set, whose rows are shuffled with a fixed seed);
 *   4. the pretrained folder prompted with '{text} It was [MASK].' (negative=terrible,
 *      positive=great): zero-shot (promptClassifier) and 16-shot (train({ head: 'prompt',
 *      fewShot: 16, technique: 'full' })) on the same test sample.
 *
 * Everything runs in a temporary folder, removed at the end (the IMDB files are read where they
 * are, never copied into the repository). Not in the default suite (about 15 minutes on two
 * shared cores): `npm run bench -- --only imdb-mlm`; skipped with a message where ../shared lacks
 * IMDB or the tokenizer.
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { dataModule, f, imdbParts, pct, root, table, tokenizerFile, torchBert, useImdb } from './lib.mjs';

export const name = 'imdb-mlm';
/** Not part of a plain `npm run bench` (see the top of this file). */
export const optIn = true;

const SHAPE = { layers: 2, hidden: 128, heads: 2, intermediate: 512 };
const MAX_LENGTH = 128;
const SEED = 42;
const TEMPLATE = '{text} It was [MASK].';
const VERBALIZER = ['negative=terrible', 'positive=great'];
/** Per size: reviews read for each step (quick: a smoke run). */
const SIZES = {
  full: { pretrainReviews: 10000, trainReviews: 10000, testReviews: 5000, fewShotPool: 400 },
  quick: { pretrainReviews: 200, trainReviews: 400, testReviews: 200, fewShotPool: 200 },
};
const PRETRAIN = { epochs: 1, batchSize: 16, learningRate: 1e-3, warmupRatio: 0.06, maxLength: MAX_LENGTH };
/** imdb-job's frozen settings. */
const FROZEN = { technique: 'frozen', epochs: 5, batchSize: 32, learningRate: 1e-3, maxLength: MAX_LENGTH };
/** LM-BFF's prompt-based fine-tuning (full), with fewer steps than its 1000: K=16 per class, 30 epochs of 4 batches. */
const FEW_SHOT = { technique: 'full', fewShot: 16, epochs: 30, batchSize: 8, learningRate: 1e-4, maxLength: MAX_LENGTH };

/** A safetensors file of float32 tensors ([name, Float32Array, shape][]). */
function writeSafetensors(file, tensors) {
  const header = {};
  let offset = 0;
  for (const [key, data, shape] of tensors) {
    header[key] = { dtype: 'F32', shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(
    file,
    Buffer.concat([head, Buffer.from(json), ...tensors.map(([, d]) => Buffer.from(d.buffer, d.byteOffset, d.byteLength))]),
  );
}

/**
 * A randomly initialised BertModel folder with the shared bert-base-uncased tokenizer, the
 * distribution of transformers' BertPreTrainedModel._init_weights (the numbers from a seeded
 * counter-based generator, not torch's).
 */
async function randomBertFolder(dir, seed) {
  const { KeyedRandom } = await import(join(root, 'dist', 'data', 'mlm-masking.js'));
  const random = new KeyedRandom(seed, -2, 0);
  const vocab = 30522;
  const { hidden: h, intermediate: ffn, layers } = SHAPE;
  const normal = (n) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = 0.02 * Math.sqrt(-2 * Math.log(1 - random.next())) * Math.cos(2 * Math.PI * random.next());
    return a;
  };
  const tensors = [];
  const linear = (prefix, out, inp) => {
    tensors.push([`${prefix}.weight`, normal(out * inp), [out, inp]], [`${prefix}.bias`, new Float32Array(out), [out]]);
  };
  const layerNorm = (prefix) => {
    tensors.push([`${prefix}.weight`, new Float32Array(h).fill(1), [h]], [`${prefix}.bias`, new Float32Array(h), [h]]);
  };
  const words = normal(vocab * h);
  words.fill(0, 0, h); // padding_idx 0 ([PAD]) zeroed, as nn.Embedding(padding_idx=0)
  tensors.push(['embeddings.word_embeddings.weight', words, [vocab, h]]);
  tensors.push(['embeddings.position_embeddings.weight', normal(512 * h), [512, h]]);
  tensors.push(['embeddings.token_type_embeddings.weight', normal(2 * h), [2, h]]);
  layerNorm('embeddings.LayerNorm');
  for (let l = 0; l < layers; l++) {
    const p = `encoder.layer.${l}`;
    for (const m of ['query', 'key', 'value']) linear(`${p}.attention.self.${m}`, h, h);
    linear(`${p}.attention.output.dense`, h, h);
    layerNorm(`${p}.attention.output.LayerNorm`);
    linear(`${p}.intermediate.dense`, ffn, h);
    linear(`${p}.output.dense`, h, ffn);
    layerNorm(`${p}.output.LayerNorm`);
  }
  linear('pooler.dense', h, h);
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  const config = {
    architectures: ['BertModel'],
    attention_probs_dropout_prob: 0.1,
    hidden_act: 'gelu',
    hidden_dropout_prob: 0.1,
    hidden_size: h,
    initializer_range: 0.02,
    intermediate_size: ffn,
    layer_norm_eps: 1e-12,
    max_position_embeddings: 512,
    model_type: 'bert',
    num_attention_heads: SHAPE.heads,
    num_hidden_layers: layers,
    pad_token_id: 0,
    position_embedding_type: 'absolute',
    torch_dtype: 'float32',
    type_vocab_size: 2,
    vocab_size: vocab,
  };
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  copyFileSync(tokenizerFile, join(dir, 'tokenizer.json'));
  copyFileSync(join(dirname(tokenizerFile), 'vocab.txt'), join(dir, 'vocab.txt'));
  writeFileSync(
    join(dir, 'tokenizer_config.json'),
    `${JSON.stringify({ do_lower_case: true, model_max_length: 512, mask_token: '[MASK]', tokenizer_class: 'BertTokenizer' }, null, 2)}\n`,
  );
  return tensors.reduce((n, [, d]) => n + d.length, 0);
}

/** The first `n` reviews of IMDB's `split` parts, labels named negative/positive (0/1 in the files). */
async function reviews(split, n) {
  const texts = [];
  const labels = [];
  for (const part of imdbParts(split)) {
    if (texts.length >= n) break;
    const raw = await dataModule.loadExamples({ csv: part, textColumn: 'text', labelColumn: 'label' });
    for (let i = 0; i < raw.texts.length && texts.length < n; i++) {
      texts.push(raw.texts[i]);
      labels.push(String(raw.labels[i]) === '1' ? 'positive' : 'negative');
    }
  }
  return { texts, labels };
}

const seconds = (t0) => (performance.now() - t0) / 1000;

/** ROC AUC of `scores` for the positives (Mann-Whitney: ties count one half). */
function rocAuc(scores, positive) {
  const order = scores.map((s, i) => [s, i]).sort((a, b) => a[0] - b[0]);
  let rankSum = 0;
  for (let i = 0; i < order.length; ) {
    let j = i;
    while (j < order.length && order[j][0] === order[i][0]) j++;
    const rank = (i + 1 + j) / 2; // mean 1-based rank of the tied run
    for (let k = i; k < j; k++) if (positive[order[k][1]]) rankSum += rank;
    i = j;
  }
  const p = positive.filter(Boolean).length;
  const n = positive.length - p;
  return (rankSum - (p * (p + 1)) / 2) / (p * n);
}

export async function run({ quick }) {
  if (!useImdb) {
    const why = 'skipped: needs ../shared/data/imdb and ../shared/models/bert-base-uncased (not found, or TORCH_BERT_BENCH_DATA=demo)';
    console.error(`bench: imdb-mlm ${why}`);
    return { settings: {}, results: { skipped: why }, markdown: why };
  }
  const size = quick ? SIZES.quick : SIZES.full;
  const work = mkdtempSync(join(os.tmpdir(), 'torch-bert-imdb-mlm-'));
  const log = (s) => console.error(`bench: imdb-mlm: ${s}`);
  try {
    const initial = join(work, 'random-bert');
    const pretrained = join(work, 'pretrained');
    let t0 = performance.now();
    const parameters = await randomBertFolder(initial, SEED);
    log(`random BertModel folder (${parameters.toLocaleString('en-US')} parameters) in ${f(seconds(t0), 1)} s`);

    // 2. MLM pretraining on train texts only (labels dropped).
    const corpus = await reviews('train', size.pretrainReviews);
    const corpusCsv = join(work, 'pretrain.csv');
    writeFileSync(corpusCsv, `text\n${corpus.texts.map((t) => `"${t.replace(/"/g, '""')}"`).join('\n')}\n`);
    log(`pretraining on ${corpus.texts.length} train reviews ...`);
    t0 = performance.now();
    const pre = await torchBert.pretrain({ model: initial, data: corpusCsv, outDir: pretrained, seed: SEED, ...PRETRAIN });
    const pretrainSeconds = seconds(t0);
    log(
      `pretrain ${f(pretrainSeconds, 0)} s: held-out loss ${f(pre.best.validationLoss, 3)} (perplexity ${f(pre.best.perplexity, 0)}), ` +
        `masked-token accuracy ${pct(pre.best.validationAccuracy, 1)}`,
    );

    // 3. The frozen job before and after pretraining.
    const labelled = await reviews('train', size.trainReviews);
    const test = await reviews('test', size.testReviews);
    const frozen = {};
    for (const [key, encoder] of [
      ['before', initial],
      ['after', pretrained],
    ]) {
      t0 = performance.now();
      const outDir = join(work, `frozen-${key}`);
      const trained = await torchBert.train({ data: labelled, encoder, outDir, seed: SEED, ...FROZEN });
      const tested = await torchBert.evaluate(outDir, test);
      frozen[key] = {
        validationAccuracy: trained.best.validationAccuracy,
        bestEpoch: trained.best.epoch,
        testAccuracy: tested.accuracy,
        testLoss: tested.loss,
        seconds: seconds(t0),
      };
      log(`frozen ${key}: validation ${pct(trained.best.validationAccuracy, 2)}, test ${pct(tested.accuracy, 2)} (${f(seconds(t0), 0)} s)`);
    }

    // 4. Prompting the pretrained folder.
    t0 = performance.now();
    const zero = await torchBert.promptClassifier({ model: pretrained, template: TEMPLATE, verbalizer: VERBALIZER, maxLength: MAX_LENGTH });
    let zeroShot;
    try {
      const r = await zero.evaluate(test);
      const predictedPositive = r.predictions.reduce((n, p) => n + p, 0) / r.examples;
      // Whether P(great) ranks the reviews at all, apart from where the label words' prior puts the threshold.
      const scores = (await zero.predict(test.texts)).map((p) => p.probabilities.positive);
      const auc = rocAuc(
        scores,
        test.labels.map((l) => l === 'positive'),
      );
      zeroShot = { accuracy: r.accuracy, loss: r.loss, predictedPositive, rocAuc: auc, seconds: seconds(t0) };
    } finally {
      zero.dispose();
    }
    log(
      `zero-shot: test ${pct(zeroShot.accuracy, 2)} (predicts positive for ${pct(zeroShot.predictedPositive, 1)}, ROC AUC of P(great) ${f(zeroShot.rocAuc, 3)}; ${f(zeroShot.seconds, 0)} s)`,
    );

    t0 = performance.now();
    const pool = await reviews('train', size.fewShotPool);
    const fewDir = join(work, 'few-shot');
    const few = await torchBert.train({
      data: pool,
      encoder: pretrained,
      outDir: fewDir,
      head: 'prompt',
      template: TEMPLATE,
      verbalizer: VERBALIZER,
      seed: SEED,
      ...FEW_SHOT,
    });
    const fewTest = await torchBert.evaluate(fewDir, test);
    const fewShot = {
      trainExamples: 2 * FEW_SHOT.fewShot,
      validationExamples: size.fewShotPool - 2 * FEW_SHOT.fewShot,
      validationAccuracy: few.best.validationAccuracy,
      bestEpoch: few.best.epoch,
      testAccuracy: fewTest.accuracy,
      testLoss: fewTest.loss,
      seconds: seconds(t0),
    };
    log(`16-shot: validation ${pct(fewShot.validationAccuracy, 2)}, test ${pct(fewShot.testAccuracy, 2)} (${f(fewShot.seconds, 0)} s)`);

    const positives = test.labels.filter((l) => l === 'positive').length;
    const results = {
      shape: SHAPE,
      parameters,
      pretrain: {
        reviews: corpus.texts.length,
        ...PRETRAIN,
        seconds: pretrainSeconds,
        steps: pre.evaluations.at(-1)?.step ?? null,
        trainBlocks: pre.trainRows,
        heldOutBlocks: pre.validationRows,
        best: pre.best,
      },
      frozen,
      testSample: { reviews: test.texts.length, positive: positives },
      zeroShot,
      fewShot,
    };
    const cmd = '`npm run bench -- --only imdb-mlm`';
    const markdown = [
      `**MLM pretraining and prompting on IMDB** (${cmd}) — a BertModel of ${SHAPE.layers} layers, H=${SHAPE.hidden} ` +
        `(${(parameters / 1e6).toFixed(1)} M parameters, 3.9 M of them the word embeddings) with bert-base-uncased's vocabulary and tokenizer, ` +
        `random init (transformers' distribution, seed ${SEED}); \`pretrain()\` on the first ${corpus.texts.length.toLocaleString('en-US')} ` +
        `IMDB train reviews (labels unused), ${PRETRAIN.epochs} epoch, blocks of ${MAX_LENGTH} tokens, batch ${PRETRAIN.batchSize}, lr ${PRETRAIN.learningRate} ` +
        `(warmup ${PRETRAIN.warmupRatio}, linear decay): ${f(pretrainSeconds / 60, 1)} min, held-out masked-LM loss ${f(pre.best.validationLoss, 3)} ` +
        `(perplexity ${f(pre.best.perplexity, 0)}; a uniform guess is ln 30522 = 10.33), masked-token accuracy ${pct(pre.best.validationAccuracy, 1)}. ` +
        `Test sample: the first ${test.texts.length.toLocaleString('en-US')} IMDB test reviews (${positives} positive).`,
      '',
      table(
        ['encoder', 'job', 'validation accuracy', 'test accuracy'],
        [
          [
            'random init',
            `frozen, ${labelled.texts.length.toLocaleString('en-US')} train reviews (80/20 split), 5 epochs`,
            pct(frozen.before.validationAccuracy, 2),
            pct(frozen.before.testAccuracy, 2),
          ],
          ['MLM-pretrained', 'the same', pct(frozen.after.validationAccuracy, 2), pct(frozen.after.testAccuracy, 2)],
          [
            'MLM-pretrained',
            `zero-shot prompt \`${TEMPLATE}\` terrible/great (predicts positive for ${pct(zeroShot.predictedPositive, 1)}; ROC AUC of P(great) ${f(zeroShot.rocAuc, 3)})`,
            '—',
            pct(zeroShot.accuracy, 2),
          ],
          [
            'MLM-pretrained',
            `16-shot prompt fine-tuning (full, ${FEW_SHOT.epochs} epochs, batch ${FEW_SHOT.batchSize}, lr ${FEW_SHOT.learningRate}; validation ${fewShot.validationExamples} other train reviews)`,
            pct(fewShot.validationAccuracy, 2),
            pct(fewShot.testAccuracy, 2),
          ],
        ],
      ),
    ].join('\n');
    return {
      settings: {
        shape: SHAPE,
        sizes: size,
        pretrain: PRETRAIN,
        frozen: FROZEN,
        fewShot: FEW_SHOT,
        template: TEMPLATE,
        verbalizer: VERBALIZER,
      },
      results,
      markdown,
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
