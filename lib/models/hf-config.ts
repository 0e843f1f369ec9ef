/**
 * A Hugging Face `config.json` → the encoder the native builder makes (`binding.buildEncoder`),
 * and the per-family defaults a run takes from it (LoRA targets, token types, max length).
 *
 * Families, by `model_type`: `bert` (BERT's architecture under every name: MiniLM, BioBERT and
 * the multilingual checkpoints say `bert` too), `roberta` (also `xlm-roberta` and `camembert`,
 * the same modules under other names) and `distilbert` (its own field names: `dim`, `n_layers`,
 * `n_heads`, `hidden_dim`, `activation`). A field a config.json leaves out takes the default of
 * its transformers config class, as `from_pretrained` does: `save_pretrained` writes only the
 * fields that differ from those defaults.
 *
 * Everything the builder cannot reproduce is refused together, in one ModelError naming each
 * field, its value and the file: an unknown `model_type`, relative position embeddings, an
 * activation outside the builder's list, a decoder or cross-attention.
 */
import type { NativeEncoderConfig } from '../addon/binding.js';
import { ModelError } from '../addon/errors.js';

export type EncoderFamily = NativeEncoderConfig['family'];
export type HiddenAct = NativeEncoderConfig['hiddenAct'];

/** `model_type` → family. */
const FAMILIES: Record<string, EncoderFamily> = {
  bert: 'bert',
  roberta: 'roberta',
  'xlm-roberta': 'roberta',
  camembert: 'roberta',
  distilbert: 'distilbert',
};

/** transformers' class-name prefix of each model_type (XLMRobertaModel, XLMRobertaTokenizerFast, ...). */
const CLASS_PREFIXES: Record<string, string> = {
  bert: 'Bert',
  roberta: 'Roberta',
  'xlm-roberta': 'XLMRoberta',
  camembert: 'Camembert',
  distilbert: 'DistilBert',
};

/** How transformers names a model: its config's `model_type`, and its classes (`className('ForMaskedLM')`). */
export interface TransformersNames {
  modelType: string;
  className(kind: string): string;
}

/**
 * The names a written config.json gives a model of `family` that was read as `modelType`: its own
 * where it is one of the family's (XLM-R stays `xlm-roberta`, XLMRobertaModel,
 * XLMRobertaTokenizerFast, as save_pretrained writes them: RoBERTa's tokenizer class would also
 * reset a pre-tokenizer that adds a prefix space, as XLM-R's Metaspace does), else the family's.
 */
export function transformersNames(family: EncoderFamily, modelType: unknown): TransformersNames {
  const kept = typeof modelType === 'string' && FAMILIES[modelType] === family ? modelType : family;
  const prefix = CLASS_PREFIXES[kept]!;
  return { modelType: kept, className: (kind) => prefix + kind };
}

/** transformers' ACT2FN names the builder implements (`swish` is transformers' alias of `silu`). */
const ACTIVATIONS: Record<string, HiddenAct> = {
  gelu: 'gelu',
  gelu_new: 'gelu_new',
  gelu_pytorch_tanh: 'gelu_pytorch_tanh',
  relu: 'relu',
  silu: 'silu',
  swish: 'silu',
};

/** The config class defaults (transformers' BertConfig, RobertaConfig, DistilBertConfig). */
const DEFAULTS = {
  bert: { vocab_size: 30522, pad_token_id: 0, layer_norm_eps: 1e-12, type_vocab_size: 2 },
  roberta: { vocab_size: 50265, pad_token_id: 1, layer_norm_eps: 1e-12, type_vocab_size: 2 },
  distilbert: { vocab_size: 30522, pad_token_id: 0 },
} as const;

/** Parameter path suffixes LoRA adapts by default: attention's query and value. */
export const LORA_TARGETS: Record<EncoderFamily, string[]> = {
  bert: ['attention.self.query', 'attention.self.value'],
  roberta: ['attention.self.query', 'attention.self.value'],
  distilbert: ['attention.q_lin', 'attention.v_lin'],
};

/** What config.json decides; `pooler` and `mlmHead` come from the checkpoint (hf-checkpoint.ts). */
export type ConfigPart = Omit<NativeEncoderConfig, 'pooler' | 'mlmHead'>;

export interface HfEncoderConfig {
  /** The `model_type` as written (`xlm-roberta`), for messages and the recorded source. */
  modelType: string;
  native: ConfigPart;
  /** Default LoRA targets (parameter path suffixes). */
  loraTargets: string[];
  /** Whether the encoder's forward takes token_type_ids (BERT only). */
  tokenTypes: boolean;
  /** The most tokens a text can have: the position table's rows (RoBERTa: less its padding_idx + 1 offset). */
  positionLimit: number;
}

type Json = Record<string, unknown>;

/**
 * Reads config.json's fields, each with its config class's default, noting every value the
 * builder cannot take in `problems` (and going on with a stand-in, so that all are listed).
 */
class FieldReader {
  readonly problems: string[] = [];
  /** Fields refused above: their stand-in values must not feed the checks between fields. */
  private readonly invalid = new Set<string>();
  constructor(private readonly c: Json) {}

  int(name: string, fallback: number | undefined, min: number): number {
    const v = this.c[name] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
      this.problems.push(`${name} ${JSON.stringify(v ?? null)} (an integer ≥ ${min} is needed)`);
      this.invalid.add(name);
      return min;
    }
    return v;
  }

  /** None of these fields was refused (a field the family does not read counts as valid). */
  valid(...names: string[]): boolean {
    return names.every((n) => !this.invalid.has(n));
  }

  positiveNumber(name: string, fallback: number): number {
    const v = this.c[name] ?? fallback;
    if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) {
      this.problems.push(`${name} ${JSON.stringify(v)} (a positive number is needed)`);
      return fallback;
    }
    return v;
  }

  probability(name: string): number {
    const v = this.c[name] ?? 0.1;
    if (typeof v !== 'number' || !(v >= 0 && v < 1)) {
      this.problems.push(`${name} ${JSON.stringify(v)} (a probability in [0, 1) is needed)`);
      return 0.1;
    }
    return v;
  }

  activation(name: string): HiddenAct {
    const v = this.c[name] ?? 'gelu';
    const act = typeof v === 'string' ? ACTIVATIONS[v] : undefined;
    if (!act) this.problems.push(`${name} ${JSON.stringify(v)} (supported: ${Object.keys(ACTIVATIONS).join(', ')})`);
    return act ?? 'gelu';
  }
}

/** DistilBertConfig's fields (its own names). */
function distilBertConfig(read: FieldReader): ConfigPart {
  const d = DEFAULTS.distilbert;
  return {
    family: 'distilbert',
    vocabSize: read.int('vocab_size', d.vocab_size, 1),
    hiddenSize: read.int('dim', 768, 1),
    numLayers: read.int('n_layers', 6, 1),
    numHeads: read.int('n_heads', 12, 1),
    intermediateSize: read.int('hidden_dim', 3072, 1),
    maxPositions: read.int('max_position_embeddings', 512, 1),
    typeVocabSize: 0,
    // DistilBERT's LayerNorms are built with eps 1e-12, whatever the config says.
    layerNormEps: 1e-12,
    padTokenId: read.int('pad_token_id', d.pad_token_id, 0),
    hiddenAct: read.activation('activation'),
    hiddenDropoutProb: read.probability('dropout'),
    attentionDropoutProb: read.probability('attention_dropout'),
    // `sinusoidal_pos_embds` only decides how the position table is initialised; the stored table is used either way.
  };
}

/** BertConfig's and RobertaConfig's fields (absolute position embeddings only). */
function bertConfig(read: FieldReader, c: Json, family: 'bert' | 'roberta'): ConfigPart {
  const d = DEFAULTS[family];
  const positions = c.position_embedding_type ?? 'absolute';
  if (positions !== 'absolute') read.problems.push(`position_embedding_type ${JSON.stringify(positions)} (only "absolute" is built)`);
  return {
    family,
    vocabSize: read.int('vocab_size', d.vocab_size, 1),
    hiddenSize: read.int('hidden_size', 768, 1),
    numLayers: read.int('num_hidden_layers', 12, 1),
    numHeads: read.int('num_attention_heads', 12, 1),
    intermediateSize: read.int('intermediate_size', 3072, 1),
    maxPositions: read.int('max_position_embeddings', 512, 1),
    typeVocabSize: read.int('type_vocab_size', d.type_vocab_size, 1),
    layerNormEps: read.positiveNumber('layer_norm_eps', d.layer_norm_eps),
    padTokenId: read.int('pad_token_id', d.pad_token_id, 0),
    hiddenAct: read.activation('hidden_act'),
    hiddenDropoutProb: read.probability('hidden_dropout_prob'),
    attentionDropoutProb: read.probability('attention_probs_dropout_prob'),
  };
}

/** A JSON object (not null, not an array): what config.json and its nested fields must be to be read. */
export const isJsonObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A config.json field's number; undefined where it is absent, null or not a finite number. */
export const configNumber = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/**
 * transformers' dropout p before a family's classification head, as its modeling files read it:
 * `classifier_dropout`, where null `hidden_dropout_prob` (BertFor…Classification,
 * RobertaClassificationHead, RobertaForTokenClassification); DistilBERT's sequence head
 * `seq_classif_dropout`, its token head `dropout`. Undefined where the config does not say.
 */
export function headDropout(
  family: EncoderFamily,
  config: Record<string, unknown>,
  head: 'sequence-classification' | 'token-classification',
): number | undefined {
  if (family === 'distilbert') return configNumber(head === 'sequence-classification' ? config.seq_classif_dropout : config.dropout);
  return configNumber(config.classifier_dropout) ?? configNumber(config.hidden_dropout_prob);
}

/**
 * Reads config.json's object (`file` is named in errors). Throws one ModelError (code
 * UNSUPPORTED_MODEL) listing every field the builder cannot reproduce.
 */
export function parseHfConfig(config: unknown, file: string): HfEncoderConfig {
  if (!isJsonObject(config)) {
    throw new ModelError(`${file} is not a JSON object`, { file, code: 'UNSUPPORTED_MODEL' });
  }
  const c = config as Json;
  const modelType = typeof c.model_type === 'string' ? c.model_type : familyFromArchitectures(c.architectures);
  const family = modelType === undefined ? undefined : FAMILIES[modelType];
  if (!family) {
    throw unsupported(file, [
      `model_type ${JSON.stringify(c.model_type ?? null)} (supported: ${Object.keys(FAMILIES).join(', ')})` +
        (c.model_type === undefined ? ` and architectures ${JSON.stringify(c.architectures ?? null)} name none of them` : ''),
    ]);
  }
  const read = new FieldReader(c);
  const problems = read.problems;
  for (const flag of ['is_decoder', 'add_cross_attention'] as const) {
    if (c[flag] === true) problems.push(`${flag} true (only encoders without cross-attention are built)`);
  }
  const native = family === 'distilbert' ? distilBertConfig(read) : bertConfig(read, c, family);
  // Checks between fields, each only on values the config really gave (a refused field reads as its minimum).
  if (read.valid('hidden_size', 'num_attention_heads', 'dim', 'n_heads') && native.hiddenSize % native.numHeads !== 0) {
    problems.push(`hidden size ${native.hiddenSize} not a multiple of the ${native.numHeads} attention heads`);
  }
  if (read.valid('pad_token_id', 'vocab_size') && native.padTokenId >= native.vocabSize) {
    problems.push(`pad_token_id ${native.padTokenId} (not below vocab_size ${native.vocabSize})`);
  }
  const positionLimit = native.maxPositions - (family === 'roberta' ? native.padTokenId + 1 : 0);
  if (read.valid('max_position_embeddings', 'pad_token_id') && positionLimit < 2) {
    problems.push(`max_position_embeddings ${native.maxPositions} (leaves fewer than 2 positions)`);
  }
  if (problems.length > 0) throw unsupported(file, problems);
  return { modelType: modelType!, native, loraTargets: LORA_TARGETS[family], tokenTypes: family === 'bert', positionLimit };
}

/** Old configs without `model_type`: the family their first architecture names (`BertForMaskedLM` → bert). */
function familyFromArchitectures(architectures: unknown): string | undefined {
  const first = Array.isArray(architectures) && typeof architectures[0] === 'string' ? architectures[0] : '';
  // The longest prefix first: DistilBert before Bert, XLMRoberta before Roberta.
  const byLength = Object.entries(CLASS_PREFIXES).sort(([, a], [, b]) => b.length - a.length);
  return byLength.find(([, prefix]) => first.startsWith(prefix))?.[0];
}

function unsupported(file: string, problems: string[]): ModelError {
  return new ModelError(`${file} describes a model the encoder builder cannot make: ${problems.join('; ')}`, {
    file,
    code: 'UNSUPPORTED_MODEL',
  });
}

/**
 * transformers writes this for tokenizers without a limit (`int(1e30)`); anything this large
 * means "no limit", not a length.
 */
const NO_LIMIT = 1e12;

/**
 * The default max length: tokenizer_config.json's `model_max_length` when it has one, capped by
 * what the position table can read (`positionLimit`).
 */
export function defaultMaxLength(config: HfEncoderConfig, tokenizerConfig: unknown): number {
  const limit = (tokenizerConfig as Json | null | undefined)?.model_max_length;
  if (typeof limit === 'number' && Number.isInteger(limit) && limit >= 2 && limit < NO_LIMIT) {
    return Math.min(limit, config.positionLimit);
  }
  return config.positionLimit;
}
