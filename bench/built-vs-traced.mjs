/**
 * `built-vs-traced`: a training step of the encoder built natively from a Hugging Face
 * checkpoint (binding.buildEncoder, native/model/) against the same weights traced by
 * scripts/python/make_encoder.py (what users brought before), per technique and shape. The
 * built encoder must cost nothing extra: target ratio built/traced ≤ 1.0 at every shape.
 *
 * Both sides are the same classifier set-up (bench/technique-model.mjs) on the same batch of
 * real reviews; the built encoder gets the traced one's weights (its parameters, by name), so
 * only the TorchScript code differs. Sides alternate in blocks; medians of blocks are compared.
 */
import { binding, dataModule, encoder, examples, f, median, SHAPES, shapeLabel, spread, stats, table, tokenizer } from './lib.mjs';
import { TECHNIQUES, techniqueModel } from './technique-model.mjs';

export const name = 'built-vs-traced';

const TARGET = 1.0;

/** The native builder's config for a make_encoder.py BERT of `shape`, sizes read off its weights. */
function configOf(shape, weights) {
  const byName = new Map(weights);
  const [vocabSize, hiddenSize] = byName.get('embeddings.word_embeddings.weight').shape;
  return {
    family: 'bert',
    vocabSize,
    hiddenSize,
    numLayers: shape.layers,
    numHeads: shape.heads,
    intermediateSize: shape.intermediate,
    maxPositions: byName.get('embeddings.position_embeddings.weight').shape[0],
    typeVocabSize: byName.get('embeddings.token_type_embeddings.weight').shape[0],
    layerNormEps: 1e-12,
    padTokenId: 0,
    hiddenAct: 'gelu',
    pooler: byName.has('pooler.dense.weight'),
    mlmHead: false,
  };
}

async function timeSteps(side, batch, n) {
  const seconds = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await binding.trainStep(side.model, side.optimizer, batch, { maxGradNorm: 0 });
    seconds.push((performance.now() - t0) / 1000);
  }
  return seconds;
}

export async function run({ quick, threads, shapes }) {
  const plan = (
    quick
      ? [{ shape: SHAPES.tiny, batchSize: 32, seqLen: 128, warmup: 2, blocks: 2, blockSteps: 2 }]
      : [
          { shape: SHAPES.tiny, batchSize: 32, seqLen: 128, warmup: 3, blocks: 6, blockSteps: 4 },
          { shape: SHAPES.small, batchSize: 32, seqLen: 128, warmup: 2, blocks: 4, blockSteps: 3 },
          { shape: SHAPES['bert-base'], batchSize: 8, seqLen: 128, warmup: 1, blocks: 4, blockSteps: 1 },
        ]
  ).filter((p) => !shapes || shapes.includes(p.shape.name));
  if (threads) binding.setNumThreads(threads);
  const tok = await tokenizer();
  const results = [];
  for (const p of plan) {
    const traced = await binding.ScriptModule.loadAsync((await encoder(p.shape)).file, 'cpu');
    const weights = traced.namedParameters().map(([n, t]) => [n, t.clone()]);
    const built = binding.buildEncoder(configOf(p.shape, weights), weights, 'cpu').encoder;
    for (const [, t] of weights) t.dispose();
    const data = await examples(p.batchSize);
    const names = dataModule.inferLabelNames(data.labels, data.origin);
    const encoded = tok.encodeBatch(data.texts, p.seqLen);
    const batch = {
      inputIds: encoded.inputIds,
      attentionMask: encoded.attentionMask,
      batchSize: encoded.count,
      seqLen: encoded.seqLen,
      labels: dataModule.labelIds(data.labels, names, data.origin),
    };
    const techniques = {};
    for (const t of TECHNIQUES) {
      const sides = { built: techniqueModel(binding, built.clone(), t), traced: techniqueModel(binding, traced.clone(), t) };
      try {
        for (const side of Object.values(sides)) await timeSteps(side, batch, p.warmup);
        const blocks = { built: [], traced: [] };
        for (let b = 0; b < p.blocks; b++) {
          for (const s of b % 2 === 0 ? ['built', 'traced'] : ['traced', 'built']) {
            blocks[s].push(median(await timeSteps(sides[s], batch, p.blockSteps)));
          }
        }
        techniques[t] = { built: stats(blocks.built), traced: stats(blocks.traced), ratio: median(blocks.built) / median(blocks.traced) };
        console.error(
          `bench: built-vs-traced ${p.shape.name} ${t}: built ${f(techniques[t].built.median)} (${spread(blocks.built)}), ` +
            `traced ${f(techniques[t].traced.median)} (${spread(blocks.traced)}), ratio ${f(techniques[t].ratio, 2)}`,
        );
      } finally {
        for (const side of Object.values(sides)) side.dispose();
      }
    }
    built.dispose();
    traced.dispose();
    results.push({ shape: p.shape, batch: `${p.batchSize}x${p.seqLen}`, techniques });
  }
  const rows = [];
  for (const r of results) {
    for (const t of TECHNIQUES) {
      const x = r.techniques[t];
      rows.push([
        shapeLabel(r.shape),
        r.batch,
        t,
        `${f(x.built.median * 1000, 1)} ms`,
        `${f(x.traced.median * 1000, 1)} ms`,
        f(x.ratio, 2),
        x.ratio <= TARGET ? 'met' : 'missed',
      ]);
    }
  }
  const markdown = table(['shape', 'batch', 'technique', 'built step', 'traced step', 'built / traced', `≤ ${TARGET}`], rows);
  return { settings: { plan, target: TARGET }, results, markdown };
}
