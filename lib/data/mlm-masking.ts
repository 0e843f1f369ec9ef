/**
 * Masked-language-model masking with the distribution of transformers'
 * `DataCollatorForLanguageModeling.torch_mask_tokens` (and, with `wholeWordMask`, of
 * `DataCollatorForWholeWordMask`): a token is chosen with probability `mlmProbability` unless it
 * is a special token or padding; a chosen token becomes the mask token with probability 0.8,
 * else (half of the remaining 0.2) a token drawn uniformly from the whole vocabulary, else stays
 * as it is. The labels are the original ids at the chosen positions (transformers' -100
 * elsewhere is "not listed" here: the native step takes the chosen positions and their labels).
 *
 * Every draw of an example comes from a counter-based generator keyed by (seed, epoch, example
 * index) — a hash of the key and a counter, not one sequential stream — so an example's mask
 * does not depend on which batch it lands in, on resuming, or on how many processes share the
 * epoch. (transformers draws from the global torch generator per batch; the distribution is the
 * same, the individual draws are not.)
 */

/** What masking needs to know of the tokenizer. */
export interface MaskingVocabulary {
  maskId: number;
  /** len(tokenizer): random replacements are uniform over [0, vocabSize), as transformers' randint. */
  vocabSize: number;
  /** Ids never chosen: the special tokens the tokenizer puts around texts, and padding. */
  specialIds: ReadonlySet<number>;
  /**
   * For whole-word masking: whether the token with this id continues the previous token's word
   * (WordPiece: `##`-prefixed pieces; byte-level BPE: pieces that do not start with 'Ġ').
   */
  continuesWord?: (id: number) => boolean;
}

export interface MaskingOptions {
  mlmProbability: number;
  wholeWordMask: boolean;
  seed: number;
}

/** One example after masking: its ids with the replacements, the chosen positions (ascending) and their original ids. */
export interface MaskedExample {
  inputIds: Int32Array;
  positions: Int32Array;
  labels: Int32Array;
}

/**
 * A counter-based generator: uniform draws in [0, 1) determined by the key (seed, epoch, index)
 * and the draw's number alone (murmur3's 32-bit finaliser over the key, then over the counter
 * mixed with it, as SplitMix does). Two keys give unrelated streams.
 */
export class KeyedRandom {
  private readonly k0: number;
  private readonly k1: number;
  private counter = 0;

  constructor(seed: number, epoch: number, index: number) {
    let h = fmix32((seed | 0) ^ 0x9e3779b9);
    h = fmix32(h ^ Math.imul((seed / 2 ** 32) | 0, 0x85ebca6b));
    h = fmix32(h ^ Math.imul(epoch | 0, 0xc2b2ae35));
    h = fmix32(h ^ Math.imul(index | 0, 0x27d4eb2f));
    this.k0 = h;
    this.k1 = fmix32(h ^ 0x165667b1);
  }

  /** The next uniform draw in [0, 1), with 32 bits of resolution. */
  next(): number {
    const c = this.counter++;
    const x = fmix32(this.k0 ^ fmix32((Math.imul(c, 0x9e3779b9) + this.k1) | 0));
    return (x >>> 0) / 2 ** 32;
  }

  /** A uniform integer in [0, n). */
  below(n: number): number {
    return Math.min(n - 1, Math.floor(this.next() * n));
  }
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h | 0;
}

/** Python's round(): halves to even (transformers' num_to_predict uses it). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** transformers' DataCollatorForWholeWordMask caps the predictions per example at max_predictions=512. */
const MAX_PREDICTIONS = 512;

/**
 * Masks example `index` of `epoch`: `ids` are its real tokens (no padding; padding is never
 * chosen as it is not there). Pure: the same arguments give the same result.
 */
export function maskExample(
  ids: ArrayLike<number>,
  index: number,
  epoch: number,
  vocab: MaskingVocabulary,
  options: MaskingOptions,
): MaskedExample {
  const random = new KeyedRandom(options.seed, epoch, index);
  const n = ids.length;
  const chosen = new Uint8Array(n);
  if (options.wholeWordMask) {
    chooseWholeWords(ids, vocab, options.mlmProbability, random, chosen);
  } else {
    // bernoulli(probability_matrix) with special tokens' probability 0: one draw per token, in order.
    for (let i = 0; i < n; i++) {
      const u = random.next();
      if (!vocab.specialIds.has(ids[i]!) && u < options.mlmProbability) chosen[i] = 1;
    }
  }
  const inputIds = Int32Array.from(ids);
  const positions: number[] = [];
  const labels: number[] = [];
  for (let i = 0; i < n; i++) {
    if (!chosen[i]) continue;
    positions.push(i);
    labels.push(ids[i]!);
    // bernoulli(0.8) → mask; else bernoulli(0.5) → a random token; else unchanged.
    if (random.next() < 0.8) inputIds[i] = vocab.maskId;
    else if (random.next() < 0.5) inputIds[i] = random.below(vocab.vocabSize);
  }
  return { inputIds, positions: Int32Array.from(positions), labels: Int32Array.from(labels) };
}

/**
 * DataCollatorForWholeWordMask._whole_word_mask: the words (a first piece and its continuation
 * pieces; special tokens belong to none) in a shuffled order, taken while the covered tokens stay
 * within num_to_predict = min(512, max(1, round(len(tokens) * mlmProbability))) — len counting
 * the special tokens, as transformers does — a word that would overshoot skipped.
 */
function chooseWholeWords(
  ids: ArrayLike<number>,
  vocab: MaskingVocabulary,
  probability: number,
  random: KeyedRandom,
  chosen: Uint8Array,
): void {
  const continues = vocab.continuesWord ?? (() => false);
  const words: number[][] = [];
  let previousWasWord = false;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (vocab.specialIds.has(id)) {
      previousWasWord = false;
      continue;
    }
    if (previousWasWord && continues(id)) words.at(-1)!.push(i);
    else words.push([i]);
    previousWasWord = true;
  }
  // Fisher-Yates, as random.shuffle.
  for (let i = words.length - 1; i > 0; i--) {
    const j = random.below(i + 1);
    [words[i], words[j]] = [words[j]!, words[i]!];
  }
  const toPredict = Math.min(MAX_PREDICTIONS, Math.max(1, roundHalfEven(ids.length * probability)));
  let covered = 0;
  for (const word of words) {
    if (covered >= toPredict) break;
    if (covered + word.length > toPredict) continue;
    for (const i of word) chosen[i] = 1;
    covered += word.length;
  }
}

/** Which ids continue a word, from the tokens' strings: WordPiece's `##`, or byte-level BPE's missing 'Ġ'. */
export function wordContinuation(tokens: ReadonlyArray<string | undefined>, byteLevel: boolean): (id: number) => boolean {
  const flags = new Uint8Array(tokens.length);
  tokens.forEach((t, id) => {
    if (t === undefined) return;
    flags[id] = byteLevel ? (t.startsWith('Ġ') ? 0 : 1) : t.startsWith('##') ? 1 : 0;
  });
  return (id) => flags[id] === 1;
}
