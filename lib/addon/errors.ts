/**
 * Errors raised by the TypeScript layer. Native failures arrive as plain `Error`s carrying
 * libtorch's message; the classes here add what the user needs to find the cause: the file,
 * the row, the column.
 */

/**
 * Stable codes of the errors a program may want to tell apart (`err.code`; README, *Errors*).
 * The messages may be reworded; the codes stay.
 */
export type ErrorCode =
  | 'TOKENIZER_VOCAB_MISMATCH'
  | 'MAX_LENGTH_EXCEEDS_POSITIONS'
  | 'TOKEN_TYPE_EXCEEDS_TYPES'
  | 'ENCODER_PROBE_FAILED'
  | 'PARAMETERS_WITHOUT_GRADIENT'
  | 'UNSUPPORTED_MODEL'
  | 'CHECKPOINT_MISMATCH'
  | 'EXPORT_UNSUPPORTED_ENCODER'
  | 'EXPORT_HEADS_UNKNOWN'
  | 'EXPORT_ADAPTERHUB_UNSUPPORTED'
  | 'HEAD_UNSUPPORTED_ENCODER'
  | 'HEAD_NO_POOLER'
  | 'TEMPLATE_PLACEHOLDERS'
  | 'TEMPLATE_MASK'
  | 'TEMPLATE_TOO_LONG'
  | 'VERBALIZER_INVALID'
  | 'VERBALIZER_WORD_SPLITS'
  | 'VERBALIZER_DUPLICATE_TOKEN'
  | 'NO_MASK_TOKEN'
  | 'NO_MLM_HEAD'
  | 'OTHER_BASE'
  | 'PROBLEM_TYPE_MISMATCH'
  | 'RANKS_DISAGREE'
  | 'RANK_FAILED_TO_START';

/** Bad user input: a file, a CSV row or column, a label, an option. */
export class InputError extends Error {
  readonly file?: string;
  readonly row?: number;
  readonly column?: string;
  readonly code?: ErrorCode;
  constructor(message: string, details: { file?: string; row?: number; column?: string; code?: ErrorCode; cause?: unknown } = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'InputError';
    this.file = details.file;
    this.row = details.row;
    this.column = details.column;
    this.code = details.code;
  }
}

/** A TorchScript file that cannot be used as an encoder or classifier. */
export class ModelError extends Error {
  readonly file?: string;
  readonly code?: ErrorCode;
  constructor(message: string, details: { file?: string; code?: ErrorCode; cause?: unknown } = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'ModelError';
    this.file = details.file;
    this.code = details.code;
  }
}

/** A NaN or Inf loss or gradient stopped training; the message names the epoch, batch and rows. */
export class NumericalError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NumericalError';
  }
}

/** The run was cancelled through its AbortSignal (the CLI: Ctrl-C, SIGTERM); an abort of the training loop says what it kept. */
export class AbortError extends Error {
  constructor(message = 'training was aborted', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AbortError';
  }
}

/**
 * An abort from below (the signal's own DOMException, a native cancel) as this library's
 * AbortError saying what was aborted; any other error as it is.
 */
export function asAbortError(err: unknown, what: string): unknown {
  if (err instanceof Error && err.name === 'AbortError' && !(err instanceof AbortError)) return new AbortError(what, { cause: err });
  return err;
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
