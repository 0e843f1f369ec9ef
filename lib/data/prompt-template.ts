/**
 * Prompt-based classification's input side (LM-BFF, Gao et al. 2021): a template turns a text
 * (or a pair) into one sequence holding the tokenizer's mask token, and a verbalizer maps each
 * class to one label word whose logit at the mask scores the class.
 *
 *   template   'Review: {text} It was [MASK].'   exactly one {text}, or one {text_a} and one
 *                                                 {text_b}; exactly one mask token, the
 *                                                 tokenizer's own ([MASK], <mask>, ...)
 *   verbalizer ['negative=terrible', 'positive=great']   label=word, each word one token
 *
 * The template is tokenized piece by piece (literal text, the texts, the mask), each piece with
 * the whitespace before it, so a byte-level BPE (RoBERTa: a word after a space is 'Ġword') sees
 * every word as it appears in the whole string; the mask token takes no space (RoBERTa's
 * <mask> strips the space before it). A label word is tokenized as it would stand at the mask:
 * after a space when the template has one there. Texts are truncated to fit the max length,
 * the template never (a pair longest-first, as Hugging Face tokenizers cut a pair:
 * tokenizer.ts truncateLongestFirst, the rule text pairs are cut by too).
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { NativeScriptModule } from '../addon/binding.js';
import { AbortError, InputError } from '../addon/errors.js';
import { type EncodedTexts, SLICE, type TextTokenizer, truncateLongestFirst } from './tokenizer.js';

/** What config.json records of a prompt, so predict/eval apply it to new texts. */
export interface PromptConfig {
  template: string;
  /** label=word pairs in class order. */
  verbalizer: Array<{ label: string; word: string }>;
  maskToken: string;
  maskTokenId: number;
  /** The label words' token ids, in class order. */
  labelTokenIds: number[];
}

/** A verbalizer as the API takes it: `['label=word', ...]`, or `{ label: word }` (class order = key order). */
export type VerbalizerSpec = readonly string[] | Readonly<Record<string, string>>;

type Piece = { kind: 'literal'; text: string } | { kind: 'mask' } | { kind: 'text'; slot: 0 | 1 };

const PLACEHOLDER = /\{([A-Za-z_]*)\}/g;

/** `label=word` entries → ordered pairs; every failure says which entry. */
export function parseVerbalizer(spec: VerbalizerSpec): Array<{ label: string; word: string }> {
  const pairs: Array<{ label: string; word: string }> = [];
  if (Array.isArray(spec)) {
    for (const entry of spec as readonly unknown[]) {
      const at = typeof entry === 'string' ? entry.indexOf('=') : -1;
      if (typeof entry !== 'string' || at <= 0 || at === entry.length - 1) {
        throw new InputError(`verbalizer entry ${JSON.stringify(entry)} is not LABEL=WORD (e.g. positive=great)`, {
          code: 'VERBALIZER_INVALID',
        });
      }
      pairs.push({ label: entry.slice(0, at), word: entry.slice(at + 1) });
    }
  } else if (typeof spec === 'object' && spec !== null) {
    for (const [label, word] of Object.entries(spec)) {
      if (typeof word !== 'string' || word.length === 0) {
        throw new InputError(`verbalizer: the word of label '${label}' must be a non-empty string`, { code: 'VERBALIZER_INVALID' });
      }
      pairs.push({ label, word });
    }
  } else {
    throw new InputError("verbalizer must be ['label=word', ...] or { label: 'word' }", { code: 'VERBALIZER_INVALID' });
  }
  if (pairs.length < 2) {
    throw new InputError(`a verbalizer needs at least two classes (label=word); got ${pairs.length}`, { code: 'VERBALIZER_INVALID' });
  }
  const seen = new Set<string>();
  for (const { label, word } of pairs) {
    if (seen.has(label)) throw new InputError(`verbalizer: label '${label}' is given twice`, { code: 'VERBALIZER_INVALID' });
    seen.add(label);
    if (word.trim() !== word || word.length === 0) {
      throw new InputError(`verbalizer: the word of label '${label}' ('${word}') must not be empty or start or end with whitespace`, {
        code: 'VERBALIZER_INVALID',
      });
    }
  }
  return pairs;
}

/** buildClassifier's spec for the prompt head (native/module/classifier.cc): train(), promptClassifier() and loadAdapters() build it alike. */
export function promptSpec(mlmHead: NativeScriptModule, prompt: PromptConfig) {
  return {
    numClasses: prompt.labelTokenIds.length,
    headHidden: 1,
    dropout: 0,
    pooling: 'cls' as const,
    seed: 0,
    head: 'prompt' as const,
    mlmHead,
    maskTokenId: prompt.maskTokenId,
    labelTokenIds: prompt.labelTokenIds,
  };
}

/** A template and verbalizer checked against a tokenizer, ready to encode texts. */
export class PromptEncoder {
  /** Two texts per example ({text_a}, {text_b}) or one ({text}). */
  readonly pair: boolean;
  readonly labels: string[];
  /** The template's own tokens between the tokenizer's framing: ids, or a text slot. */
  private readonly parts: Array<number[] | 0 | 1>;
  /** The texts' slots, each with the whitespace the template puts before it. */
  private readonly slotPrefix: [string, string];
  private readonly fixedLength: number;

  private constructor(
    private readonly tokenizer: TextTokenizer,
    readonly config: PromptConfig,
  ) {
    const pieces = parseTemplate(config.template, config.maskToken);
    this.pair = pieces.some((p) => p.kind === 'text' && p.slot === 1);
    this.labels = config.verbalizer.map((v) => v.label);
    this.parts = [];
    this.slotPrefix = ['', ''];
    // Whitespace before a piece goes with it: byte-level BPE puts a space at the start of a word.
    let spaceBefore = false;
    for (const piece of pieces) {
      if (piece.kind === 'mask') {
        this.parts.push([config.maskTokenId]);
        spaceBefore = false;
      } else if (piece.kind === 'text') {
        this.parts.push(piece.slot);
        this.slotPrefix[piece.slot] = spaceBefore ? ' ' : '';
        spaceBefore = false;
      } else {
        const body = piece.text.trim();
        if (body.length > 0) {
          this.parts.push(tokenizer.tokenIds((spaceBefore || /^\s/.test(piece.text) ? ' ' : '') + body));
          spaceBefore = /\s$/.test(piece.text);
        } else {
          spaceBefore = true;
        }
      }
    }
    const { prefix, suffix } = tokenizer.framing;
    this.fixedLength = prefix.length + suffix.length + this.parts.reduce<number>((n, p) => n + (typeof p === 'number' ? 0 : p.length), 0);
  }

  /**
   * Checks `template` and `verbalizer` against `tokenizer` (whose mask token is `mask`): the
   * placeholders, the one mask token, and one token per label word, distinct.
   */
  static create(
    tokenizer: TextTokenizer,
    template: string,
    verbalizer: VerbalizerSpec,
    mask: { token: string; id: number },
  ): PromptEncoder {
    if (typeof template !== 'string') throw new InputError('template must be a string', { code: 'TEMPLATE_PLACEHOLDERS' });
    const pairs = parseVerbalizer(verbalizer);
    const pieces = parseTemplate(template, mask.token);
    // The word as it would stand at the mask: after a space when the template has one there.
    const at = pieces.findIndex((p) => p.kind === 'mask');
    const before = at > 0 ? pieces[at - 1]! : undefined;
    const spaced = before?.kind === 'literal' && /\s$/.test(before.text);
    const labelTokenIds: number[] = [];
    const byId = new Map<number, string>();
    for (const { label, word } of pairs) {
      const ids = tokenizer.tokenIds(spaced ? ` ${word}` : word);
      if (ids.length !== 1) {
        const pieces = ids.map((id) => `'${tokenizer.tokenString(id)}'`).join(' + ');
        throw new InputError(
          `verbalizer: the word '${word}' of label '${label}' is not one token of ${tokenizer.path}: it splits into ` +
            `${ids.length === 0 ? 'nothing' : pieces}${spaced ? ' (tokenized as it stands after the space before the mask)' : ''}; ` +
            `choose a word the vocabulary holds whole`,
          { code: 'VERBALIZER_WORD_SPLITS' },
        );
      }
      const other = byId.get(ids[0]!);
      if (other !== undefined) {
        throw new InputError(`verbalizer: labels '${other}' and '${label}' have the same token '${tokenizer.tokenString(ids[0]!)}'`, {
          code: 'VERBALIZER_DUPLICATE_TOKEN',
        });
      }
      byId.set(ids[0]!, label);
      labelTokenIds.push(ids[0]!);
    }
    return new PromptEncoder(tokenizer, { template, verbalizer: pairs, maskToken: mask.token, maskTokenId: mask.id, labelTokenIds });
  }

  /** From a saved classifier's config.json (checked as when it was made). */
  static fromConfig(tokenizer: TextTokenizer, config: PromptConfig): PromptEncoder {
    const made = PromptEncoder.create(
      tokenizer,
      config.template,
      config.verbalizer.map((v) => `${v.label}=${v.word}`),
      { token: config.maskToken, id: config.maskTokenId },
    );
    if (made.config.labelTokenIds.some((id, i) => id !== config.labelTokenIds[i])) {
      throw new InputError(`the recorded label token ids ${config.labelTokenIds.join(', ')} are not the tokenizer's for the verbalizer`, {
        code: 'VERBALIZER_INVALID',
      });
    }
    return made;
  }

  /**
   * The tokens left for the texts in rows of `maxLength`: refuses second texts the template has no
   * place for (or their absence where it has), and a template that leaves each text no token.
   */
  private roomForTexts(pairs: readonly string[] | null, maxLength: number): number {
    if (this.pair && pairs === null) {
      throw new InputError(
        // Each way in takes the second texts its own way.
        'the template has {text_a} and {text_b}: give a second text for each example (train, evaluate, torch-bert eval: ' +
          'textPairColumn / --text-pair-column; predict(texts, { pairs }); torch-bert predict: --data with --text-pair-column)',
        {
          code: 'TEMPLATE_PLACEHOLDERS',
        },
      );
    }
    if (!this.pair && pairs !== null) {
      throw new InputError('a second text was given, but the template has only {text}: write {text_a} and {text_b} for pairs', {
        code: 'TEMPLATE_PLACEHOLDERS',
      });
    }
    const room = maxLength - this.fixedLength;
    const slots = this.pair ? 2 : 1;
    if (room < slots) {
      throw new InputError(
        `the template takes ${this.fixedLength} of max length ${maxLength} tokens (special tokens included), leaving ${Math.max(room, 0)} for ` +
          `the text${slots > 1 ? 's' : ''}; use a longer max length or a shorter template`,
        { code: 'TEMPLATE_TOO_LONG' },
      );
    }
    return room;
  }

  /** Rows of exactly `maxLength` ids: the template with each text truncated to fit (see the top). */
  encode(texts: readonly string[], pairs: readonly string[] | null, maxLength: number): EncodedTexts {
    const out = this.emptyRows(texts.length, pairs, maxLength);
    this.encodeRows(out, texts, pairs, 0, texts.length);
    return out;
  }

  /**
   * As `encode`, a slice of texts per event-loop turn, as `TextTokenizer.encodeBatchAsync` does on
   * the main thread: at once, 25,000 reviews held the event loop (and an abort) for 14 s.
   */
  async encodeAsync(
    texts: readonly string[],
    pairs: readonly string[] | null,
    maxLength: number,
    signal?: AbortSignal,
  ): Promise<EncodedTexts> {
    const out = this.emptyRows(texts.length, pairs, maxLength);
    await inSlices(texts.length, signal, (from, to) => this.encodeRows(out, texts, pairs, from, to));
    return out;
  }

  /** The `lengths` of `encodeAsync`'s rows without the rows (a slice's at a time), as `TextTokenizer.rowLengthsAsync`. */
  async rowLengthsAsync(
    texts: readonly string[],
    pairs: readonly string[] | null,
    maxLength: number,
    signal?: AbortSignal,
  ): Promise<Int32Array> {
    this.roomForTexts(pairs, maxLength);
    const lengths = new Int32Array(texts.length);
    await inSlices(texts.length, signal, (from, to) => {
      lengths.set(this.encode(texts.slice(from, to), pairs?.slice(from, to) ?? null, maxLength).lengths, from);
    });
    return lengths;
  }

  /** `count` rows of `maxLength` padding ids, once the texts are known to fit (`roomForTexts`). */
  private emptyRows(count: number, pairs: readonly string[] | null, maxLength: number): EncodedTexts {
    this.roomForTexts(pairs, maxLength);
    return {
      inputIds: new Int32Array(count * maxLength).fill(this.tokenizer.padId),
      attentionMask: new Int32Array(count * maxLength),
      count,
      seqLen: maxLength,
      lengths: new Int32Array(count),
    };
  }

  /** Rows `from` to `to` (exclusive) of `out`: the template with texts `from` to `to` in it. */
  private encodeRows(out: EncodedTexts, texts: readonly string[], pairs: readonly string[] | null, from: number, to: number): void {
    const { inputIds, attentionMask, lengths, seqLen: maxLength } = out;
    const room = maxLength - this.fixedLength;
    const { prefix, suffix } = this.tokenizer.framing;
    for (let row = from; row < to; row++) {
      const a = this.tokenizer.tokenIds(this.slotPrefix[0] + texts[row]!);
      const b = pairs ? this.tokenizer.tokenIds(this.slotPrefix[1] + pairs[row]!) : [];
      const [keepA, keepB] = truncateLongestFirst(a.length, b.length, room);
      const slotIds = [a.slice(0, keepA), b.slice(0, keepB)];
      const ids = [...prefix];
      for (const part of this.parts) {
        if (typeof part === 'number') ids.push(...slotIds[part]!);
        else ids.push(...part);
      }
      ids.push(...suffix);
      inputIds.set(ids, row * maxLength);
      attentionMask.fill(1, row * maxLength, row * maxLength + ids.length);
      lengths[row] = ids.length;
    }
  }
}

/** `each(from, to)` for every slice of `count` texts, one per event-loop turn; stops at an abort, before the next slice. */
async function inSlices(count: number, signal: AbortSignal | undefined, each: (from: number, to: number) => void): Promise<void> {
  for (let start = 0; start < count; start += SLICE) {
    if (signal?.aborted) throw new AbortError('tokenization was aborted', { cause: signal.reason });
    each(start, Math.min(start + SLICE, count));
    if (start + SLICE < count) await nextTurn();
  }
}

/** The template's pieces: literal text, the mask, the text slots; refusals say what is wrong. */
function parseTemplate(template: string, maskToken: string): Piece[] {
  const names = [...template.matchAll(PLACEHOLDER)].map((m) => m[1]!);
  const unknown = names.filter((n) => n !== 'text' && n !== 'text_a' && n !== 'text_b');
  if (unknown.length > 0) {
    throw new InputError(
      `template ${JSON.stringify(template)}: unknown placeholder {${unknown[0]}}; write {text}, or {text_a} and {text_b}`,
      {
        code: 'TEMPLATE_PLACEHOLDERS',
      },
    );
  }
  const n = (name: string) => names.filter((x) => x === name).length;
  const single = n('text') === 1 && n('text_a') === 0 && n('text_b') === 0;
  const pair = n('text') === 0 && n('text_a') === 1 && n('text_b') === 1;
  if (!single && !pair) {
    throw new InputError(
      `template ${JSON.stringify(template)} must hold exactly one {text}, or exactly one {text_a} and one {text_b}; ` +
        `it has ${names.length === 0 ? 'none' : names.map((x) => `{${x}}`).join(', ')}`,
      { code: 'TEMPLATE_PLACEHOLDERS' },
    );
  }
  const masks = template.split(maskToken).length - 1;
  if (masks !== 1) {
    const other = ['[MASK]', '<mask>'].find((t) => t !== maskToken && template.includes(t));
    throw new InputError(
      `template ${JSON.stringify(template)} must hold the tokenizer's mask token ${maskToken} exactly once; it holds it ${masks} times` +
        (other ? ` (${other} is another tokenizer's mask token)` : ''),
      { code: 'TEMPLATE_MASK' },
    );
  }
  const pieces: Piece[] = [];
  const re = new RegExp(`(\\{text\\}|\\{text_a\\}|\\{text_b\\}|${maskToken.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')})`);
  for (const part of template.split(re)) {
    if (part === '') continue;
    if (part === maskToken) pieces.push({ kind: 'mask' });
    else if (part === '{text}' || part === '{text_a}') pieces.push({ kind: 'text', slot: 0 });
    else if (part === '{text_b}') pieces.push({ kind: 'text', slot: 1 });
    else pieces.push({ kind: 'literal', text: part });
  }
  return pieces;
}
