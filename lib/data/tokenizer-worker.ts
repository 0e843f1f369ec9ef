/**
 * A tokenizer worker thread (see `TextTokenizer.encodeBatchAsync`): builds the tokenizer from
 * the JSON it is given, then encodes each slice of texts it is sent, posting the rows back
 * (their buffers transferred, not copied). A failure is posted as its message, to be rethrown
 * as an InputError on the main thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { InputError, messageOf } from '../addon/errors.js';
import { type TextPairs, TextTokenizer } from './tokenizer.js';

export interface TokenizeJob {
  start: number;
  texts: string[];
  /** The second texts of `texts`, for text pairs. */
  pairs?: TextPairs;
  maxLength: number;
}

export type TokenizeReply =
  | { start: number; inputIds: Int32Array; attentionMask: Int32Array; tokenTypeIds?: Int32Array; lengths: Int32Array }
  | { start: number; error: string; file?: string };

const port = parentPort!;
const { json, file } = workerData as { json: string; file: string };
const tokenizer = TextTokenizer.fromJson(json, file);

port.on('message', (job: TokenizeJob) => {
  try {
    const { inputIds, attentionMask, tokenTypeIds, lengths } = tokenizer.encodeBatch(job.texts, job.maxLength, job.pairs);
    const reply: TokenizeReply = { start: job.start, inputIds, attentionMask, ...(tokenTypeIds ? { tokenTypeIds } : {}), lengths };
    const buffers = [inputIds.buffer, attentionMask.buffer, lengths.buffer, ...(tokenTypeIds ? [tokenTypeIds.buffer] : [])];
    port.postMessage(reply, buffers as ArrayBuffer[]);
  } catch (err) {
    const reply: TokenizeReply = { start: job.start, error: messageOf(err), file: err instanceof InputError ? err.file : undefined };
    port.postMessage(reply);
  }
});
