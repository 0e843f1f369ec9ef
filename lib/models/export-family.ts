/**
 * Which Hugging Face architecture a trained encoder is, from its parameter names and shapes
 * alone: what `exportHuggingFace` needs to write a config.json that transformers' AutoModel
 * builds the same network from. A traced `AutoModel` (and make_encoder.py's BertModel) keeps
 * transformers' state_dict names, so the names say the family and the shapes say the sizes.
 *
 * What the weights cannot say — the number of attention heads (query's [H, H] is the same for
 * any split of H), LayerNorm's epsilon, the activation — comes from the caller (the classifier's
 * recorded encoder config, an option), else a family default that the result lists as assumed.
 */
import { ModelError } from '../addon/errors.js';

export type ExportFamily = 'bert' | 'roberta' | 'distilbert';

export interface NamedShape {
  name: string;
  shape: readonly number[];
}

/** The sizes read off the weights. */
export interface EncoderShapes {
  family: ExportFamily;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  intermediateSize: number;
  maxPositions: number;
  /** bert/roberta: rows of token_type_embeddings; distilbert: 0 (it has none). */
  typeVocabSize: number;
  /** bert/roberta: whether pooler.dense.* is there. */
  pooler: boolean;
}

/** Per layer: the module paths (under `encoder.layer.N.` / `transformer.layer.N.`) and their weight shapes as [out, in]. */
type LayerPlan = Array<[string, 'linear' | 'norm', (h: number, i: number) => [number, number] | [number]]>;

const BERT_LAYER: LayerPlan = [
  ['attention.self.query', 'linear', (h) => [h, h]],
  ['attention.self.key', 'linear', (h) => [h, h]],
  ['attention.self.value', 'linear', (h) => [h, h]],
  ['attention.output.dense', 'linear', (h) => [h, h]],
  ['attention.output.LayerNorm', 'norm', (h) => [h]],
  ['intermediate.dense', 'linear', (h, i) => [i, h]],
  ['output.dense', 'linear', (h, i) => [h, i]],
  ['output.LayerNorm', 'norm', (h) => [h]],
];

const DISTILBERT_LAYER: LayerPlan = [
  ['attention.q_lin', 'linear', (h) => [h, h]],
  ['attention.k_lin', 'linear', (h) => [h, h]],
  ['attention.v_lin', 'linear', (h) => [h, h]],
  ['attention.out_lin', 'linear', (h) => [h, h]],
  ['sa_layer_norm', 'norm', (h) => [h]],
  ['ffn.lin1', 'linear', (h, i) => [i, h]],
  ['ffn.lin2', 'linear', (h, i) => [h, i]],
  ['output_layer_norm', 'norm', (h) => [h]],
];

interface FamilyLayout {
  /** 'bert' stands for bert and roberta: the same names; which one is decided elsewhere. */
  family: 'bert' | 'distilbert';
  layers: string;
  layer: LayerPlan;
  /** The FFN weight whose rows give the intermediate size. */
  intermediate: string;
  tokenTypes: boolean;
  pooler: boolean;
}

const LAYOUTS: FamilyLayout[] = [
  {
    family: 'bert',
    layers: 'encoder.layer.',
    layer: BERT_LAYER,
    intermediate: 'intermediate.dense.weight',
    tokenTypes: true,
    pooler: true,
  },
  {
    family: 'distilbert',
    layers: 'transformer.layer.',
    layer: DISTILBERT_LAYER,
    intermediate: 'ffn.lin1.weight',
    tokenTypes: false,
    pooler: false,
  },
];

const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((v, i) => v === b[i]);
const shapeText = (s: readonly number[]) => `[${s.join(', ')}]`;

/** Every name the layout expects for these sizes, with its shape. */
function expectedNames(layout: FamilyLayout, s: { v: number; h: number; p: number; t: number; i: number; l: number; pooler: boolean }) {
  const out = new Map<string, number[]>([
    ['embeddings.word_embeddings.weight', [s.v, s.h]],
    ['embeddings.position_embeddings.weight', [s.p, s.h]],
  ]);
  if (layout.tokenTypes) out.set('embeddings.token_type_embeddings.weight', [s.t, s.h]);
  out.set('embeddings.LayerNorm.weight', [s.h]);
  out.set('embeddings.LayerNorm.bias', [s.h]);
  for (let n = 0; n < s.l; n++) {
    for (const [path, kind, shape] of layout.layer) {
      const [rows, cols] = shape(s.h, s.i);
      const prefix = `${layout.layers}${n}.${path}`;
      out.set(`${prefix}.weight`, kind === 'norm' ? [rows!] : [rows!, cols!]);
      out.set(`${prefix}.bias`, [rows!]);
    }
  }
  if (s.pooler) {
    out.set('pooler.dense.weight', [s.h, s.h]);
    out.set('pooler.dense.bias', [s.h]);
  }
  return out;
}

/** Sizes the layout reads off an encoder's parameters: v vocabulary, h hidden, p positions, t token types, i intermediate, l layers. */
type LayoutSizes = Parameters<typeof expectedNames>[1];

/** The first 6 items, then how many there are in all. */
const listed = (items: string[]) => items.slice(0, 6).join(', ') + (items.length > 6 ? `, ... (${items.length} in all)` : '');

/** The sizes, read off the tensors that give them (word and position embeddings, layer 0's FFN), or what is missing of those. */
function layoutSizes(layout: FamilyLayout, params: Map<string, readonly number[]>): LayoutSizes | string {
  const word = params.get('embeddings.word_embeddings.weight');
  const position = params.get('embeddings.position_embeddings.weight');
  const types = params.get('embeddings.token_type_embeddings.weight');
  const layerNumbers = new Set<number>();
  for (const name of params.keys()) {
    const m = name.startsWith(layout.layers) ? /^(\d+)\./.exec(name.slice(layout.layers.length)) : null;
    if (m) layerNumbers.add(Number(m[1]));
  }
  const numLayers = layerNumbers.size === 0 ? 0 : Math.max(...layerNumbers) + 1;
  const ffn = params.get(`${layout.layers}0.${layout.intermediate}`);
  const head = [];
  if (word?.length !== 2) head.push('embeddings.word_embeddings.weight (2-D)');
  if (position?.length !== 2) head.push('embeddings.position_embeddings.weight (2-D)');
  if (layout.tokenTypes && types?.length !== 2) head.push('embeddings.token_type_embeddings.weight (2-D)');
  if (numLayers === 0) head.push(`${layout.layers}0.*`);
  else if (ffn?.length !== 2) head.push(`${layout.layers}0.${layout.intermediate} (2-D)`);
  if (head.length > 0) return `missing ${head.join(', ')}; the encoder has ${listed([...params.keys()]) || 'no parameters'}`;
  return {
    v: word![0]!,
    h: word![1]!,
    p: position![0]!,
    t: layout.tokenTypes ? types![0]! : 0,
    i: ffn![0]!,
    l: numLayers,
    pooler: layout.pooler && params.has('pooler.dense.weight'),
  };
}

/** The layout's sizes and what does not fit it (missing names, unexpected names, wrong shapes). */
function tryLayout(layout: FamilyLayout, params: Map<string, readonly number[]>): { shapes?: EncoderShapes; problems: string[] } {
  const sizes = layoutSizes(layout, params);
  if (typeof sizes === 'string') return { problems: [sizes] };
  const expected = expectedNames(layout, sizes);
  const missing = [...expected.keys()].filter((n) => !params.has(n));
  const unexpected = [...params.keys()].filter((n) => !expected.has(n));
  const wrong = [...expected]
    .filter(([n, shape]) => params.has(n) && !sameShape(params.get(n)!, shape))
    .map(([n, shape]) => `${n} is ${shapeText(params.get(n)!)}, expected ${shapeText(shape)}`);
  const problems: string[] = [];
  if (missing.length) problems.push(`missing ${listed(missing)}`);
  if (unexpected.length) problems.push(`unexpected ${listed(unexpected)}`);
  if (wrong.length) problems.push(listed(wrong));
  if (problems.length) return { problems };
  return {
    problems,
    shapes: {
      family: layout.family,
      vocabSize: sizes.v,
      hiddenSize: sizes.h,
      numLayers: sizes.l,
      intermediateSize: sizes.i,
      maxPositions: sizes.p,
      typeVocabSize: sizes.t,
      pooler: sizes.pooler,
    },
  };
}

/**
 * The architecture of an encoder with these parameters (the encoder's own names, without the
 * classifier's `encoder.` prefix). Refuses, naming for each family what is missing, unexpected
 * or of the wrong shape, when none fits exactly. The family returned is 'bert' for BERT's names
 * (RoBERTa has the same: the caller tells them apart) or 'distilbert'.
 */
export function encoderShapes(parameters: readonly NamedShape[], file: string): EncoderShapes {
  const params = new Map(parameters.map((p) => [p.name, p.shape] as const));
  const reasons: string[] = [];
  for (const layout of LAYOUTS) {
    const { shapes, problems } = tryLayout(layout, params);
    if (shapes) return shapes;
    reasons.push(`${layout.family === 'bert' ? 'bert/roberta' : layout.family}: ${problems.join('; ')}`);
  }
  throw new ModelError(
    `cannot export ${file} as a Hugging Face model: its encoder's parameters are not those of a supported ` +
      `architecture (transformers' AutoModel names of BERT, RoBERTa or DistilBERT) — ${reasons.join(' | ')}`,
    { file, code: 'EXPORT_UNSUPPORTED_ENCODER' },
  );
}

/** Whether a tokenizer.json is RoBERTa's (its post-processor adds <s> ... </s>): what tells a traced RoBERTa from a BERT. */
export function isRobertaTokenizer(json: unknown): boolean {
  const post = typeof json === 'object' && json !== null ? (json as Record<string, unknown>).post_processor : null;
  return typeof post === 'object' && post !== null && (post as Record<string, unknown>).type === 'RobertaProcessing';
}

/** isRobertaTokenizer of a tokenizer file's text: text that is not JSON (a vocab.txt) is BERT's WordPiece, not RoBERTa's. */
export function isRobertaTokenizerText(text: string): boolean {
  try {
    return isRobertaTokenizer(JSON.parse(text) as unknown);
  } catch {
    return false;
  }
}

/**
 * The family: DistilBERT by its names; RoBERTa (BERT's names) when the recorded config's
 * model_type says so, or, when none is recorded (a traced file), when the tokenizer is RoBERTa's.
 */
export function familyOf(shapes: EncoderShapes, recordedModelType: string | null, robertaTokenizer: boolean): ExportFamily {
  if (shapes.family === 'distilbert') return 'distilbert';
  if (recordedModelType === 'roberta' || recordedModelType === 'xlm-roberta' || recordedModelType === 'camembert') return 'roberta';
  if (recordedModelType === null && robertaTokenizer) return 'roberta';
  return 'bert';
}
