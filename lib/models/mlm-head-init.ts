/**
 * A masked-language-model head for a checkpoint that has none (an AutoModel export, a
 * classifier's encoder), initialised as transformers' `_init_weights` does for BertForMaskedLM,
 * RobertaForMaskedLM and DistilBertForMaskedLM: Linear weights normal(0, initializer_range),
 * biases zero, LayerNorm weight 1 and bias 0, the head's vocabulary bias zero; the decoder weight
 * is not made here — `buildEncoder` ties it to the word embeddings. Names are those
 * `buildEncoder` takes (hf-checkpoint.ts's, prefix stripped). The normal draws come from the
 * run's seed through a counter-based generator (mlm-masking.ts), not torch's: the distribution
 * is transformers', the numbers are not.
 */
import type { NativeBinding, NativeTensor } from '../addon/binding.js';
import { KeyedRandom } from '../data/mlm-masking.js';
import type { EncoderFamily } from './hf-config.js';

/** The head's modules per family: its transform Linear, its LayerNorm, its vocabulary bias. */
const LAYOUT: Record<EncoderFamily, { dense: string; layerNorm: string; bias: string }> = {
  bert: {
    dense: 'cls.predictions.transform.dense',
    layerNorm: 'cls.predictions.transform.LayerNorm',
    bias: 'cls.predictions.bias',
  },
  roberta: { dense: 'lm_head.dense', layerNorm: 'lm_head.layer_norm', bias: 'lm_head.bias' },
  distilbert: { dense: 'vocab_transform', layerNorm: 'vocab_layer_norm', bias: 'vocab_projector.bias' },
};

/** Key of the generator's stream, apart from any masking stream of the same seed. */
const INIT_STREAM = -1;

export function initialMlmHeadWeights(
  binding: NativeBinding,
  family: EncoderFamily,
  shape: { hiddenSize: number; vocabSize: number; initializerRange: number },
  seed: number,
): Array<[string, NativeTensor]> {
  const { hiddenSize: h, vocabSize: v, initializerRange: std } = shape;
  const random = new KeyedRandom(seed, INIT_STREAM, 0);
  const dense = new Float32Array(h * h);
  // Box-Muller: two uniform draws per normal draw.
  for (let i = 0; i < dense.length; i++) {
    const u = 1 - random.next();
    dense[i] = std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random.next());
  }
  const t = (data: Float32Array, dims: number[]) => binding.Tensor.fromArray(data, dims);
  const l = LAYOUT[family];
  return [
    [`${l.dense}.weight`, t(dense, [h, h])],
    [`${l.dense}.bias`, t(new Float32Array(h), [h])],
    [`${l.layerNorm}.weight`, t(new Float32Array(h).fill(1), [h])],
    [`${l.layerNorm}.bias`, t(new Float32Array(h), [h])],
    [l.bias, t(new Float32Array(v), [v])],
  ];
}
