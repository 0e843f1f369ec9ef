/**
 * A trained token classifier, loaded to tag words: a folder trainTokenClassifier() wrote, or any
 * Hugging Face *ForTokenClassification model (a folder or Hub id: BERT, RoBERTa/XLM-R,
 * DistilBERT), built natively as transformers' `AutoModelForTokenClassification.from_pretrained`
 * reads it (modeling_bert.py's BertForTokenClassification: the encoder without a pooler, dropout,
 * `classifier`), its tags from config.json's `id2label`.
 */
import { rename, rm } from 'node:fs/promises';
import type { NativeScriptModule, Precision } from '../addon/binding.js';
import { InputError, messageOf } from '../addon/errors.js';
import { loadBinding } from '../addon/loader.js';
import { resolveDevice } from '../classification/classifier.js';
import { consecutiveBatches } from '../data/batching.js';
import { readTaggedFiles, type TaggedReadOptions } from '../data/tagged-words.js';
import { encodeWords, sentenceWindows, splitWords, type TextWord, tokenSpans, wordBatch, wordIds } from '../data/word-alignment.js';
import { type LoadedEncoder, loadEncoderSource } from '../models/encoder-source.js';
import type { DownloadProgress } from '../models/hub.js';
import { entitySpans } from '../training/entity-metrics.js';
import type { Device } from '../training/options.js';
import { checkpointHead, copyTokenHead, folderOf, isTokenClassifierConfig, trainedSettings } from './token-classifier-folder.js';
import { type TokenMetrics, taggedSet, validateTokenClassifier } from './token-task.js';

/** An entity found in a text: its type, its characters [start, end) and their text, its words' mean probability. */
export interface TextEntity {
  type: string;
  text: string;
  start: number;
  end: number;
  score: number;
}

/** A token of a text tagged alone (`tagTokens`): its vocabulary string ('##ing', 'Ġword'), its tag and probability, its characters [start, end). */
export interface TaggedToken {
  token: string;
  tag: string;
  score: number;
  start: number;
  end: number;
}

/** One sentence tagged: a tag per word, and the tag's probability; null for a word without a token (one the tokenizer drops). */
export interface TaggedWords {
  words: string[];
  tags: Array<string | null>;
  scores: Array<number | null>;
}

/** How a word of several tokens is tagged (`predict`'s `aggregation`). */
export type WordAggregation = 'first' | 'average' | 'max';
const AGGREGATIONS: readonly WordAggregation[] = ['first', 'average', 'max'];

export interface PredictWordsOptions {
  /** Default 'first'. */
  aggregation?: WordAggregation;
  /** Sentences (windows) per native call. Default 32. */
  batchSize?: number;
  precision?: Precision;
}

/**
 * `entities`' options: the word aggregations, or 'simple' (the pipeline's
 * `aggregation_strategy="simple"`): each token tagged alone and the tokens grouped, so that an
 * entity may start or end inside a word.
 */
export type PredictEntitiesOptions = Omit<PredictWordsOptions, 'aggregation'> & { aggregation?: WordAggregation | 'simple' };

/** The most probable tag of a probability row and its probability (the lowest tag on a tie, as numpy's argmax). */
function bestTag(p: ArrayLike<number>): { tag: number; score: number } {
  let tag = 0;
  for (let c = 1; c < p.length; c++) if (p[c]! > p[tag]!) tag = c;
  return { tag, score: p[tag]! };
}

/** A word's tag and its probability from its tokens' probability rows (its first alone for 'first'), as the pipeline aggregates them (`predict`). */
function wordTag(rows: readonly Float32Array[], aggregation: WordAggregation): { tag: number; score: number } {
  if (aggregation === 'first' || rows.length === 1) return bestTag(rows[0]!);
  if (aggregation === 'max') {
    return rows.map(bestTag).reduce((top, next) => (next.score > top.score ? next : top));
  }
  const mean = new Float64Array(rows[0]!.length);
  for (const p of rows) for (let c = 0; c < mean.length; c++) mean[c]! += p[c]! / rows.length;
  return bestTag(mean);
}

/** An entity of `text` over the characters [start, end), its score the mean of its tokens' or words' scores. */
function textEntity(text: string, type: string, start: number, end: number, scores: readonly number[]): TextEntity {
  return { type, text: text.slice(start, end), start, end, score: scores.reduce((a, b) => a + b, 0) / scores.length };
}

export interface TokenClassifierLoadOptions {
  device?: Device;
  /** Tokens per sentence, special tokens included. Default: what the folder was trained with (config.json's `torch_bert.maxLength`), else the model's. */
  maxLength?: number;
  onDownload?: (progress: DownloadProgress) => void;
}

export class TokenClassifier {
  private constructor(
    private readonly module: NativeScriptModule,
    private readonly encoder: LoadedEncoder,
    /** Tag names in class-id order. */
    readonly labels: readonly string[],
    /** Tokens per sentence the classifier reads, special tokens included. */
    readonly maxLength: number,
    /** Trained with labelAllTokens (run_ner.py's label_all_tokens): `evaluate` then scores tokens, as its validation did. */
    readonly labelAllTokens: boolean,
  ) {}

  /** A token classifier from a folder (trainTokenClassifier()'s, or transformers') or a Hub id. */
  static async load(spec: string, options: TokenClassifierLoadOptions = {}): Promise<TokenClassifier> {
    const encoder = await loadEncoderSource(spec, {
      device: resolveDevice(options.device ?? 'auto'),
      onDownload: options.onDownload,
      maxLength: options.maxLength,
      fallbackMaxLength: 512,
      classificationHead: true,
      refuseTorchScript: (file) =>
        new InputError(`${file} is a file; a token classifier is a Hugging Face *ForTokenClassification folder or Hub id`, { file }),
    });
    const weights = new Map(encoder.classificationHead);
    encoder.classificationHead = [];
    let module: NativeScriptModule | undefined;
    try {
      const { family, config, configFile } = folderOf(encoder);
      if (!isTokenClassifierConfig(config)) {
        throw new InputError(
          `${encoder.description} is not a token classifier (architectures ${JSON.stringify(config.architectures ?? null)}): ` +
            'train one on it with trainTokenClassifier(), then load that',
          { file: configFile },
        );
      }
      const head = checkpointHead(weights, config, encoder.description, configFile);
      const labels = head.tags;
      module = loadBinding().buildClassifier(encoder.module, {
        numClasses: labels.length,
        headHidden: 1,
        pooling: 'cls',
        seed: 0,
        head: 'token-classification',
        family,
        dropout: 0,
      }).module;
      copyTokenHead(
        module,
        head,
        labels.map((_, c) => c),
        encoder.description,
        configFile,
      );
      module.train(false);
      // The sentences read as in training: words past the trained length were never seen there.
      const trained = trainedSettings(config);
      const maxLength = options.maxLength ?? trained.maxLength ?? encoder.maxLength;
      return new TokenClassifier(module, encoder, labels, maxLength, trained.labelAllTokens);
    } catch (err) {
      module?.dispose();
      encoder.module.dispose();
      throw err;
    } finally {
      for (const t of weights.values()) t.dispose();
    }
  }

  /**
   * Each word's tag and its probability, for sentences given as words. `aggregation` says how a
   * word of several tokens is read, as transformers' token-classification pipeline's
   * `aggregation_strategy`: 'first' (default: its first token, as training reads it), 'average'
   * (its tokens' probabilities averaged, then the most probable tag), 'max' (the tag of its token
   * whose best probability is highest). A sentence longer than `maxLength` tokens is read in
   * windows of whole words (`sentenceWindows`), so every word with a token is tagged; null for a
   * word without one.
   */
  async predict(sentences: readonly (readonly string[])[], options: PredictWordsOptions = {}): Promise<TaggedWords[]> {
    checkSentences(sentences);
    const aggregation = options.aggregation ?? 'first';
    if (!AGGREGATIONS.includes(aggregation)) {
      throw new InputError(`aggregation must be one of ${AGGREGATIONS.join(', ')}; got ${JSON.stringify(aggregation)}`);
    }
    const out: TaggedWords[] = sentences.map((words) => ({ words: [...words], tags: [], scores: [] }));
    await this.readWords(sentences, aggregation !== 'first', options, (sentence, rows) => {
      const word = rows.length === 0 ? null : wordTag(rows, aggregation);
      out[sentence]!.tags.push(word === null ? null : this.labels[word.tag]!);
      out[sentence]!.scores.push(word === null ? null : word.score);
    });
    return out;
  }

  /**
   * `sentences` read as predict() reads them (in windows of whole words, `batchSize` windows a
   * native call): `visit(sentence, rows)` for each word in order, with its tokens' probability
   * rows (its first token's alone unless `everyToken`; none for a word without a token).
   */
  private async readWords(
    sentences: readonly (readonly string[])[],
    everyToken: boolean,
    options: { batchSize?: number; precision?: Precision },
    visit: (sentence: number, rows: Float32Array[]) => void,
  ): Promise<void> {
    const { windows, from } = sentenceWindows(this.encoder.tokenizer, sentences, this.maxLength);
    const rows = encodeWords(this.encoder.tokenizer, windows, this.maxLength);
    const classes = this.labels.length;
    for (const indices of consecutiveBatches(windows.length, options.batchSize ?? 32)) {
      const batch = wordBatch(rows, indices, undefined, everyToken);
      const { probabilities } = await loadBinding().evalStep(this.module, batch, { precision: options.precision ?? 'fp32' });
      let at = 0;
      // A sentence's windows are consecutive: its words come in order.
      for (const window of indices) {
        rows.firstTokens[window]!.forEach((first, w) => {
          const count = first < 0 ? 0 : everyToken ? rows.tokenCounts[window]![w]! : 1;
          visit(
            from[window]!.sentence,
            Array.from({ length: count }, (_, k) => probabilities.subarray((at + k) * classes, (at + k + 1) * classes)),
          );
          at += count;
        });
      }
    }
  }

  /**
   * The entities of each text, as transformers' token-classification pipeline finds them with
   * `aggregation` ('first' by default): the text split into words (BERT's pre-tokenization:
   * `splitWords`), each word tagged (`predict`'s aggregations), or with 'simple' each of its tokens
   * (`tokenSpans` places them in the text); the tags grouped into entities as seqeval reads IOB
   * tags (B- starts one, I- of its type continues it, another type or O ends it; a word without a
   * token counts as O), each entity's score its words' (tokens') mean.
   */
  async entities(texts: readonly string[], options: PredictEntitiesOptions = {}): Promise<TextEntity[][]> {
    checkTexts(texts, 'entities()');
    const aggregation = options.aggregation ?? 'first';
    if (aggregation !== 'simple' && !AGGREGATIONS.includes(aggregation)) {
      throw new InputError(`aggregation must be one of ${[...AGGREGATIONS, 'simple'].join(', ')}; got ${JSON.stringify(aggregation)}`);
    }
    const words = texts.map(splitWords);
    if (aggregation === 'simple') return this.tokenEntities(texts, words, options);
    const tagged = await this.predict(
      words.map((ws) => ws.map((w) => w.word)),
      { ...options, aggregation },
    );
    return tagged.map(({ tags, scores }, i) =>
      entitySpans([tags.map((tag) => tag ?? 'O')]).map(([type, first, last]) =>
        textEntity(
          texts[i]!,
          type,
          words[i]![first]!.start,
          words[i]![last]!.end,
          scores.slice(first, last + 1).map((s) => s ?? 0),
        ),
      ),
    );
  }

  /** `entities` with 'simple': each token's own tag and probability, the tokens grouped. */
  private async tokenEntities(texts: readonly string[], words: TextWord[][], options: PredictEntitiesOptions): Promise<TextEntity[][]> {
    const tokens = await this.readTokens(words, options);
    return tokens.map((ts, i) =>
      entitySpans([ts.map((t) => t.tag)]).map(([type, first, last]) =>
        textEntity(
          texts[i]!,
          type,
          ts[first]!.start,
          ts[last]!.end,
          ts.slice(first, last + 1).map((t) => t.score),
        ),
      ),
    );
  }

  /**
   * Every token of each text with its own tag and probability, and its characters: what the
   * pipeline returns by default (`aggregation_strategy="none"`, which leaves out the O tokens).
   * The text is split into words as `entities` splits it, each word's tokens placed in it by
   * `tokenSpans`; a text longer than `maxLength` tokens is read in windows of whole words.
   */
  async tagTokens(texts: readonly string[], options: Omit<PredictWordsOptions, 'aggregation'> = {}): Promise<TaggedToken[][]> {
    checkTexts(texts, 'tagTokens()');
    return this.readTokens(texts.map(splitWords), options);
  }

  /** The texts' words (`splitWords`) read token by token: each token's tag, probability and characters. */
  private async readTokens(words: TextWord[][], options: { batchSize?: number; precision?: Precision }): Promise<TaggedToken[][]> {
    const tokenizer = this.encoder.tokenizer;
    const tokens = words.map((): TaggedToken[] => []);
    const read = words.map(() => 0);
    await this.readWords(
      words.map((ws) => ws.map((w) => w.word)),
      true,
      options,
      (text, rows) => {
        const word = words[text]![read[text]!++]!;
        const ids = wordIds(tokenizer, word.word);
        const spans = tokenSpans(tokenizer, word, ids);
        rows.forEach((p, k) => {
          const { tag, score } = bestTag(p);
          tokens[text]!.push({
            token: tokenizer.tokenString(ids[k]!),
            tag: this.labels[tag]!,
            score,
            start: spans[k]![0],
            end: spans[k]![1],
          });
        });
      },
    );
    return tokens;
  }

  /**
   * The classifier as one TorchScript file, for Python's `torch.jit.load` and C++ libtorch's
   * `torch::jit::load`, without Node or transformers: its `forward_all_tokens(input_ids,
   * attention_mask)` is BertForTokenClassification's forward in eval mode, every token's
   * log-probabilities over the tags ([batch, tokens, tags], the tags in `labels`' order: the
   * folder's `id2label`). Rows are the folder's tokenizer's, as `encodeWords` makes them; a word's
   * tag is read at its first token. Written whole or not at all (a temporary file renamed).
   */
  async saveTorchScript(path: string): Promise<void> {
    if (typeof path !== 'string' || path === '') throw new InputError('saveTorchScript(path): path is the .pt file to write');
    const tmp = `${path}.tmp-${process.pid}`;
    try {
      await this.module.saveAsync(tmp);
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw new InputError(`cannot write ${path}: ${messageOf(err)}`, { file: path, cause: err });
    }
  }

  /**
   * seqeval's entity scores, the words' accuracy and the loss on tagged sentences (CoNLL or JSON
   * files), as the classifier's validation computed them: over the words, or, for a folder trained
   * with labelAllTokens, over every token as run_ner.py scores such a model (`labelAllTokens`
   * says which).
   */
  async evaluate(
    data: string | readonly string[],
    options: TaggedReadOptions & { batchSize?: number; precision?: Precision; labelAllTokens?: boolean } = {},
  ): Promise<TokenMetrics> {
    const files = typeof data === 'string' ? [data] : data;
    const sentences = await readTaggedFiles(files, { labels: this.labels, ...options });
    const set = taggedSet(this.encoder.tokenizer, this.maxLength, sentences, this.labels, options.labelAllTokens ?? this.labelAllTokens);
    const validation = await validateTokenClassifier(loadBinding(), this.module, set, this.labels, {
      batchSize: options.batchSize ?? 32,
      precision: options.precision ?? 'fp32',
    });
    return validation.metrics;
  }

  dispose(): void {
    this.module.dispose();
    this.encoder.module.dispose();
  }
}

/** `method` takes texts: a list of strings. */
function checkTexts(texts: unknown, method: string): void {
  if (!Array.isArray(texts) || texts.some((t) => typeof t !== 'string')) throw new InputError(`${method} takes a list of texts`);
}

/** predict() takes sentences as lists of words (already split, as CoNLL data has them). */
function checkSentences(sentences: unknown): void {
  const ok = Array.isArray(sentences) && sentences.every((s) => Array.isArray(s) && s.every((w) => typeof w === 'string'));
  if (!ok) throw new InputError("predict() takes sentences as lists of words, e.g. [['EU', 'rejects', 'German', 'call']]");
}

/** Loads a token classifier (`TokenClassifier.load`). */
export function loadTokenClassifier(spec: string, options?: TokenClassifierLoadOptions): Promise<TokenClassifier> {
  return TokenClassifier.load(spec, options);
}
