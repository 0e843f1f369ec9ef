/**
 * A model folder's tokenizer: its `tokenizer.json`, or, for the older BERT repositories that
 * have only `vocab.txt`, the tokenizer.json transformers' BertTokenizerFast would make from it
 * (BertNormalizer lowercasing per `do_lower_case`, BertPreTokenizer, a WordPiece model over the
 * vocabulary, `[CLS] text [SEP]` around every text), built here so that everything downstream
 * (the tokenizer workers, the classifier's saved tokenizer.json) sees one format.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InputError, messageOf } from '../addon/errors.js';
import { TextTokenizer } from '../data/tokenizer.js';
import { SPECIAL_TOKENS_MAP_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_JSON, VOCAB_TXT } from './model-folder.js';

type Json = Record<string, unknown>;

/** A special token as tokenizer_config.json / special_tokens_map.json write it: a string or `{ content }`. */
function tokenText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null && typeof (value as Json).content === 'string') return (value as Json).content as string;
  return undefined;
}

/** vocab.txt's tokens (one a line, CRLF or LF) by id, its line number. */
function vocabOf(vocabText: string): Record<string, number> {
  const lines = vocabText.endsWith('\n') ? vocabText.slice(0, -1).split('\n') : vocabText.split('\n');
  const vocab: Record<string, number> = {};
  lines.forEach((token, id) => {
    // As transformers' load_vocab: the first line of a token wins (duplicates never occur in real vocabularies).
    const t = token.endsWith('\r') ? token.slice(0, -1) : token;
    if (!(t in vocab)) vocab[t] = id;
  });
  return vocab;
}

/**
 * The tokenizer.json text of BERT's WordPiece tokenizer over `vocabText` (one token per line,
 * the line number its id), with casing and special tokens from tokenizer_config.json and
 * special_tokens_map.json (either may be absent). `file` is named in errors.
 */
export function wordPieceTokenizerJson(
  vocabText: string,
  tokenizerConfig: Json | undefined,
  specialTokens: Json | undefined,
  file: string,
): string {
  const vocab = vocabOf(vocabText);
  const special = (key: string, fallback: string): string => {
    const name = tokenText(specialTokens?.[key]) ?? tokenText(tokenizerConfig?.[key]) ?? fallback;
    if (!(name in vocab)) throw new InputError(`${file} has no ${key} ${JSON.stringify(name)}`, { file });
    return name;
  };
  const unk = special('unk_token', '[UNK]');
  const cls = special('cls_token', '[CLS]');
  const sep = special('sep_token', '[SEP]');
  const pad = special('pad_token', '[PAD]');
  const mask = tokenText(specialTokens?.mask_token) ?? tokenText(tokenizerConfig?.mask_token) ?? '[MASK]';
  const specials = [...new Set([pad, unk, cls, sep, ...(mask in vocab ? [mask] : [])])];
  const lowercase = tokenizerConfig?.do_lower_case !== false;
  const stripAccents = typeof tokenizerConfig?.strip_accents === 'boolean' ? tokenizerConfig.strip_accents : null;
  const chinese = tokenizerConfig?.tokenize_chinese_chars !== false;
  return JSON.stringify({
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((content) => ({
      id: vocab[content],
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: chinese, strip_accents: stripAccents, lowercase },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: cls, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: sep, type_id: 0 } }],
      pair: [
        { SpecialToken: { id: cls, type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: sep, type_id: 0 } },
        { Sequence: { id: 'B', type_id: 1 } },
        { SpecialToken: { id: sep, type_id: 1 } },
      ],
      special_tokens: Object.fromEntries([cls, sep].map((t) => [t, { id: t, ids: [vocab[t]], tokens: [t] }])),
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: unk, continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
  });
}

async function readJsonIfListed(dir: string, files: readonly string[], name: string): Promise<Json | undefined> {
  if (!files.includes(name)) return undefined;
  const path = join(dir, name);
  try {
    return JSON.parse(await readFile(path, 'utf8')) as Json;
  } catch (err) {
    throw new InputError(`cannot read ${path}: ${messageOf(err)}`, { file: path, cause: err });
  }
}

/**
 * The tokenizer of a model folder, from its tokenizer files as model-folder.ts lists them
 * (`['tokenizer.json']`, or `['vocab.txt', ...companions]`).
 */
export async function loadFolderTokenizer(dir: string, files: readonly string[]): Promise<TextTokenizer> {
  const tokenizer = await loadTokenizerFiles(dir, files);
  // The mask token the folder names, for TextTokenizer.maskToken (its one rule).
  const [config, specials] = await Promise.all([TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE].map((f) => readJsonQuietly(join(dir, f))));
  tokenizer.nameMaskToken(tokenText(specials?.mask_token) ?? tokenText(config?.mask_token));
  return tokenizer;
}

/** A companion file, or undefined where it is missing or unreadable (the folder's other files decide then). */
async function readJsonQuietly(path: string): Promise<Json | undefined> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as unknown;
    return typeof parsed === 'object' && parsed !== null ? (parsed as Json) : undefined;
  } catch {
    return undefined;
  }
}

async function loadTokenizerFiles(dir: string, files: readonly string[]): Promise<TextTokenizer> {
  if (files.includes(TOKENIZER_JSON)) return TextTokenizer.load(join(dir, TOKENIZER_JSON));
  const vocabFile = join(dir, VOCAB_TXT);
  let vocabText: string;
  try {
    vocabText = await readFile(vocabFile, 'utf8');
  } catch (err) {
    throw new InputError(`cannot read ${vocabFile}: ${messageOf(err)}`, { file: vocabFile, cause: err });
  }
  const config = await readJsonIfListed(dir, files, TOKENIZER_CONFIG_FILE);
  const specials = await readJsonIfListed(dir, files, SPECIAL_TOKENS_MAP_FILE);
  return TextTokenizer.fromJson(wordPieceTokenizerJson(vocabText, config, specials, vocabFile), vocabFile);
}
