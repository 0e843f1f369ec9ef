#!/usr/bin/env node
/**
 * The `torch-bert` command: train | pretrain | eval | predict | export | tokens | qa | demo | doctor, one file
 * each in cli/. Same options as the API; tables and a live progress bar for people, `--json` for
 * programs. Exit code 0 on success, 1 with a one-line error on failure (a NativeLoadError: its
 * whole message, the fix included), 2 on a usage error, 130 when interrupted.
 */
import { AbortError, messageOf } from './addon/errors.js';
import { NativeLoadError } from './addon/loader.js';
import { joinNegativeValues, takeVerbose, UsageError } from './cli/args.js';
import { commandDemo } from './cli/demo.js';
import { commandEval } from './cli/eval.js';
import { commandExport } from './cli/export.js';
import { handErrorToLauncher, isLauncherWorker } from './cli/launcher.js';
import { commandPredict } from './cli/predict.js';
import { commandPretrain } from './cli/pretrain.js';
import { commandQa } from './cli/qa.js';
import { quietWorker, WorkersFailed } from './cli/run-control.js';
import { commandTokens } from './cli/tokens.js';
import { commandTrain } from './cli/train.js';

const USAGE = `torch-bert — fine-tune BERT classifiers from Node.js on libtorch

Usage:
  torch-bert train   --data FILE.csv --model MODEL [--tokenizer tokenizer.json] --out DIR [options]
  torch-bert eval    --classifier DIR --data FILE.csv [--json]
  torch-bert eval    --model M --template T --verbalizer LABEL=WORD... --data FILE.csv [--json]
  torch-bert predict --classifier DIR [--json] TEXT... | --data FILE.csv
  torch-bert predict --model M --template T --verbalizer LABEL=WORD... [--json] TEXT...
  torch-bert export  --classifier DIR --out HF_DIR [--heads N] [--format hf|adapterhub] [--name NAME] [--json]
  torch-bert pretrain --model MODEL --data FILE --out DIR [options]   masked-language-model pretraining
  torch-bert tokens train   --model MODEL --data FILE --out DIR [options]   token classification (NER, POS)
  torch-bert tokens eval    --classifier DIR --data FILE [--json]
  torch-bert tokens predict --classifier DIR [--json] SENTENCE...
  torch-bert qa train   --model MODEL --data FILE --out DIR [options]   question answering (SQuAD)
  torch-bert qa eval    --model DIR --data FILE [--json]
  torch-bert qa predict --model DIR --context TEXT [--json] QUESTION...
  torch-bert demo    [--out DIR] [--json]
  torch-bert doctor  [--json]      what to paste into a bug report

Every command takes --verbose: on failure, the full trace (as TORCH_BERT_DEBUG=1 does).

Run 'torch-bert COMMAND --help' for a command's options.`;

const COMMANDS: Record<string, (argv: string[]) => Promise<void>> = {
  train: commandTrain,
  pretrain: commandPretrain,
  tokens: commandTokens,
  qa: commandQa,
  eval: commandEval,
  predict: commandPredict,
  export: commandExport,
  demo: commandDemo,
  doctor: async (argv) => (await import('./cli/doctor.js')).commandDoctor(argv),
};

/** The error's stack, then each cause's (or its message, for a cause that is not an Error). */
function details(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err, depth = 0; e !== undefined && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    parts.push((depth ? 'caused by: ' : '') + (e instanceof Error ? (e.stack ?? e.message) : String(e)));
    if (!(e instanceof Error)) break;
  }
  return parts.join('\n');
}

/**
 * Prints a failure's line(s), or, in a worker of `--nproc-per-node`, hands them to the launcher,
 * which prints each error once for all its workers (launcher.ts workerErrorLines).
 */
function sayError(said: string, err: unknown): void {
  const relayed = (err as { code?: unknown }).code === 'RANK_FAILED_TO_START';
  if (!handErrorToLauncher({ said, relayed })) console.error(said);
}

async function main(args: string[]): Promise<number> {
  const { verbose, argv } = takeVerbose(joinNegativeValues(args));
  const [command, ...rest] = argv;
  // `torch-bert help train` as `torch-bert train --help`.
  if (command === 'help' && rest.length === 1 && rest[0]! in COMMANDS) return main([rest[0]!, '--help']);
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    console.log(USAGE);
    return command ? 0 : 2;
  }
  const run = COMMANDS[command];
  if (!run) {
    console.error(`torch-bert: unknown command '${command}'\n\n${USAGE}`);
    return 2;
  }
  try {
    await run(rest);
    return 0;
  } catch (err) {
    if (err instanceof WorkersFailed) {
      for (const line of err.errors) console.error(line);
      // Stopped on request (Ctrl-C, SIGTERM): not an error; every worker said where it stopped.
      const failed = err.failure && `${err.failure}; the other workers were asked to stop`;
      const said = [failed, err.killed].filter(Boolean).join('; ');
      if (said) console.error(`torch-bert: error: ${said}`);
      return err.exitCode;
    }
    if (err instanceof NativeLoadError) {
      // The loader's message is the whole explanation: what is wrong with the addon and how to fix it.
      sayError(err.message, err);
      return 1;
    }
    const parseArgsError = (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true;
    const usage = err instanceof UsageError || parseArgsError;
    // node's parseArgs says on its later lines what to do ("--epochs -x": write '--epochs=-XYZ').
    const message = parseArgsError ? messageOf(err).replace(/\s*\n\s*/g, ' ') : messageOf(err).split('\n')[0];
    if (err instanceof AbortError) {
      // A training loop's abort says where it stopped and what it kept; an earlier one has kept
      // nothing. The launcher's workers share one terminal and stop at the same step boundary:
      // rank 0 says it for all (started apart, by torchrun or by hand, each rank says its own).
      if (!(isLauncherWorker() && quietWorker())) console.error(`torch-bert: ${message}`);
      return 130;
    }
    // A cause holds more than the one line (e.g. a TorchScript traceback): say how to see it.
    const more = !verbose && err instanceof Error && err.cause !== undefined ? ' (--verbose for details)' : '';
    sayError(`torch-bert: error: ${message}${more}`, err);
    if (verbose) console.error(details(err));
    return usage ? 2 : 1;
  }
}

// Exit through process.exitCode so pending stdout writes are flushed.
main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
