/**
 * The command line read: node's parseArgs per command (an unknown flag names the flag probably
 * meant), flag values as train()'s options take them, and the usage error they raise.
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { messageOf } from '../addon/errors.js';
import type { CsvSource } from '../data/data.js';
import type { MultiLabelThreshold } from '../training/metrics.js';
import { likelyMeant, type TrainOptions } from '../training/options.js';

export class UsageError extends Error {}

export type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * A flag's number, written in decimal (3, -1, 0.5, 5e-5; spaces around it are dropped), else
 * undefined. Number() alone would also read '0x10' as 16, '0b11' as 3 and '' (a weight in '1,,2') as 0.
 */
function decimal(raw: string): number | undefined {
  const n = Number(raw);
  return /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(raw.trim()) && Number.isFinite(n) ? n : undefined;
}

/** A numeric flag's value; whether it is in the option's range is the option's own check (options.ts). */
export function numberOption(values: Record<string, unknown>, name: string): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = typeof raw === 'string' ? decimal(raw) : undefined;
  if (n === undefined) throw new UsageError(`--${name} expects a number; got '${String(raw)}'`);
  return n;
}

/** A comma-separated flag (`--labels neg,pos`, `--lora-targets query,value`): its items, trimmed. */
export function listOption(values: Record<string, unknown>, name: string): string[] | undefined {
  const raw = values[name];
  return typeof raw === 'string' ? raw.split(',').map((item) => item.trim()) : undefined;
}

/** `--threshold 0.3`, or one per class: `--threshold toxic=0.3,threat=0.1`; whether they fit the classes is classThresholds' check. */
export function thresholdOption(values: Record<string, unknown>): MultiLabelThreshold | undefined {
  const raw = values.threshold;
  if (raw === undefined) return undefined;
  const text = String(raw);
  const usage = () => new UsageError(`--threshold expects a number like 0.3, or one per class like toxic=0.3,threat=0.1; got '${text}'`);
  if (!text.includes('=')) {
    const threshold = decimal(text);
    if (threshold === undefined) throw usage();
    return threshold;
  }
  return Object.fromEntries(
    text.split(',').map((item) => {
      const at = item.lastIndexOf('=');
      const value = decimal(item.slice(at + 1));
      if (at <= 0 || value === undefined) throw usage();
      return [item.slice(0, at).trim(), value];
    }),
  );
}

/** `--betas 0.9,0.999`: AdamW's two betas; their range is the option's own check. */
export function betasOption(values: Record<string, unknown>): [number, number] | undefined {
  const items = listOption(values, 'betas');
  if (items === undefined) return undefined;
  const betas = items.map(decimal);
  if (betas.length !== 2 || betas.some((b) => b === undefined))
    throw new UsageError(`--betas expects two numbers like 0.9,0.999; got '${String(values.betas)}'`);
  return betas as [number, number];
}

/** `--class-weights` or `--positive-weights`: `balanced`, or a weight per class. */
export function weightsOption(values: Record<string, unknown>, name: 'class-weights' | 'positive-weights'): TrainOptions['classWeights'] {
  const raw = values[name];
  if (raw === undefined) return undefined;
  if (raw === 'balanced') return 'balanced';
  const weights = String(raw).split(',').map(decimal);
  if (weights.some((w) => w === undefined))
    throw new UsageError(`--${name} expects 'balanced' or numbers like 1,2.5; got '${String(raw)}'`);
  return weights as number[];
}

/** A repeatable file option (`--data a.csv --data b.csv`): one path, or several read as one. */
export function requireFiles(values: Record<string, unknown>, name: string, command: string): string | string[] {
  const v = values[name];
  if (!Array.isArray(v) || v.length === 0) throw new UsageError(`${command}: --${name} is required (see 'torch-bert ${command} --help')`);
  return v.length === 1 ? (v[0] as string) : (v as string[]);
}

export function requireOption(values: Record<string, unknown>, name: string, command: string): string {
  const v = values[name];
  if (typeof v !== 'string' || v.length === 0)
    throw new UsageError(`${command}: --${name} is required (see 'torch-bert ${command} --help')`);
  return v;
}

/** --out, which `--resume DIR` alone may leave out: the resumed run goes on writing in DIR. */
export function outDirOption(values: Record<string, unknown>, command: string): string {
  const resume = values.resume;
  return typeof resume === 'string' && resume !== '' && values.out === undefined ? resume : requireOption(values, 'out', command);
}

/** `--data` or `--validation-data`: its files, read by the columns `--text-column` and `--label-column` (or `--label-columns`) name. */
export function csvOption(values: Record<string, unknown>, name: string): CsvSource {
  return {
    csv: requireFiles(values, name, 'train'),
    textColumn: values['text-column'] as string | undefined,
    labelColumn: values['label-column'] as string | undefined,
    labelColumns: listOption(values, 'label-columns'),
  };
}

/**
 * node's parseArgs for `torch-bert COMMAND`, but a flag the command does not have is refused
 * naming the flag probably meant, as train()'s option names are, and the command's --help: node
 * says only "Unknown option '--epoch'".
 */
export function parseCommandArgs<T extends ParseArgsConfig>(command: string, config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (err) {
    if ((err as { code?: string }).code !== 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw err;
    const flag = /^Unknown option '([^']*)'/.exec(messageOf(err))?.[1];
    if (flag === undefined) throw err;
    const meant = likelyMeant(
      flag,
      Object.keys(config.options ?? {}).map((name) => `--${name}`),
    );
    // predict's TEXTs: one that starts with '-' reads as a flag unless it comes after '--'.
    const asText = config.allowPositionals ? `; a TEXT that starts with '-' goes after '--' (-- "${flag}")` : '';
    throw new UsageError(
      `${command}: unknown option '${flag}'${meant ? `: did you mean '${meant}'?` : ''}${asText} (see 'torch-bert ${command} --help')`,
    );
  }
}

/**
 * `--verbose`, accepted by every command (anywhere before a `--`), or TORCH_BERT_DEBUG set: a
 * failure prints, after its one line, the stack and every cause in full (a TorchScript
 * interpreter error's whole traceback is its native error's `cause`).
 */
export function takeVerbose(argv: string[]): { verbose: boolean; argv: string[] } {
  const end = argv.indexOf('--');
  const flags = end < 0 ? argv : argv.slice(0, end);
  const rest = end < 0 ? [] : argv.slice(end);
  const kept = flags.filter((a) => a !== '--verbose');
  return { verbose: kept.length < flags.length || Boolean(process.env.TORCH_BERT_DEBUG), argv: [...kept, ...rest] };
}

/**
 * `--name -1` as `--name=-1`: node's parseArgs takes a value starting with '-' for an option and
 * refuses it as ambiguous, so a negative number would never reach the option's own check (which
 * says what the option needs).
 */
export function joinNegativeValues(argv: string[]): string[] {
  const joined: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') return [...joined, ...argv.slice(i)];
    const next = argv[i + 1];
    if (/^--[^=]+$/.test(arg) && next !== undefined && /^-(\d|\.\d|Infinity$|NaN$)/.test(next)) {
      joined.push(`${arg}=${next}`);
      i++;
    } else {
      joined.push(arg);
    }
  }
  return joined;
}
