/**
 * What tokenizer_config.json says for transformers to load a tokenizer.json as trained: the
 * facts read off the tokenizer.json (its casing, special tokens, padding id, RoBERTa's byte-level
 * layout) and the fields they give. Written by every folder torch-bert saves for transformers
 * (export.ts, export-prompt.ts, pretraining's mlm-output.ts).
 */
import { isRobertaTokenizer } from './export-family.js';
import { isJsonObject, type TransformersNames } from './hf-config.js';

/** What an exported folder needs from the tokenizer.json. */
export interface TokenizerFacts {
  lowercase: boolean | null;
  roberta: boolean;
  padId: number | null;
  special: Record<string, string>;
}

export function tokenizerFacts(json: Record<string, unknown>): TokenizerFacts {
  const normalizers = (n: unknown): Record<string, unknown>[] =>
    !isJsonObject(n) ? [] : n.type === 'Sequence' && Array.isArray(n.normalizers) ? n.normalizers.flatMap(normalizers) : [n];
  const norms = normalizers(json.normalizer);
  const lowercase =
    norms.length === 0 ? null : norms.some((n) => n.type === 'Lowercase' || (n.type === 'BertNormalizer' && n.lowercase === true));
  const added = Array.isArray(json.added_tokens) ? json.added_tokens.filter(isJsonObject) : [];
  const byContent = new Map(added.map((t) => [String(t.content), Number(t.id)]));
  const padding = isJsonObject(json.padding) ? json.padding : null;
  const padId = typeof padding?.pad_id === 'number' ? padding.pad_id : (byContent.get('[PAD]') ?? byContent.get('<pad>') ?? null);
  const special: Record<string, string> = {};
  const roles: Array<[string, string[]]> = [
    ['cls_token', ['[CLS]', '<s>']],
    ['sep_token', ['[SEP]', '</s>']],
    ['pad_token', ['[PAD]', '<pad>']],
    ['unk_token', ['[UNK]', '<unk>']],
    ['mask_token', ['[MASK]', '<mask>']],
  ];
  for (const [role, names] of roles) {
    const found = names.find((n) => byContent.has(n));
    if (found) special[role] = found;
  }
  return { lowercase, roberta: isRobertaTokenizer(json), padId, special };
}

/**
 * What tokenizer_config.json says of a tokenizer.json for transformers to load it as trained: the
 * model's own fast class, its casing (a BertTokenizerFast told nothing lowercases, rewriting a cased
 * normalizer) and its special tokens.
 */
export function tokenizerDescription(facts: TokenizerFacts, names: TransformersNames): Record<string, unknown> {
  return {
    tokenizer_class: names.className('TokenizerFast'),
    ...(facts.lowercase !== null ? { do_lower_case: facts.lowercase } : {}),
    ...facts.special,
  };
}
