/** `torch-bert predict`: texts given on the command line or in a CSV, classified. */
import type { ProblemType } from '../addon/binding.js';
import type { Classifier, Prediction } from '../classification/classifier.js';
import { loadExamples } from '../data/data.js';
import { numberOption, parseCommandArgs, requireFiles, thresholdOption, UsageError } from './args.js';
import { BASE_HELP, BASE_OPTIONS, openClassifier, PROMPT_HELP, PROMPT_OPTIONS } from './classifier-flags.js';
import { predictionTable, predictPrinter } from './output.js';

export const PREDICT_HELP = `torch-bert predict — classify texts with a saved classifier, or zero-shot with a prompt

  torch-bert predict --classifier DIR [--json] TEXT...
  torch-bert predict --classifier DIR [--json] --pair SECOND TEXT [--pair SECOND TEXT]...
  torch-bert predict --classifier DIR [--json] --data FILE.csv [--text-column NAME]
  torch-bert predict --model M --template T --verbalizer LABEL=WORD... [--json] TEXT...

  --classifier DIR         directory written by 'torch-bert train', or a Hugging Face sequence
                           classifier (a folder or Hub id: *ForSequenceClassification)
${BASE_HELP}
${PROMPT_HELP}
  --data FILE.csv          the texts instead of TEXT... (repeatable: files read as one; a label
                           column, if any, is ignored)
  --text-column NAME       (the one the classifier was trained on, else text)
  --pair SECOND            the second text of a TEXT, for text pairs or a template's {text_b}:
                           one per TEXT, in order (repeatable)
  --text-pair-column NAME  with --data: the second text of each example, for text pairs or a
                           template's {text_b} (the one the classifier was trained on)
  --threshold X            a multi-label classifier's: a class applies at a sigmoid of at least X,
                           or per class: A=0.3,B=0.1 (0.5)
  --batch-size N           (32)
  --device auto|cpu|cuda|cuda:N  (auto)
  --json                   one JSON object per line: {"text","label","probabilities"} ("pair" too for
                           pairs); a multi-label classifier's {"text","labels","probabilities"},
                           a regression model's {"text","value","values"}`;

/**
 * predict --data's texts: its --text-column, else the column the classifier was trained on, else
 * `text`; and their second texts, from --text-pair-column, else the classifier's pair column.
 */
async function textsOf(
  values: Record<string, unknown>,
  classifier: Classifier<ProblemType>,
): Promise<{ texts: string[]; pairs?: string[] }> {
  const csv = requireFiles(values, 'data', 'predict');
  const textColumn = (values['text-column'] as string | undefined) ?? classifier.config.textColumn;
  const textPairColumn = (values['text-pair-column'] as string | undefined) ?? classifier.config.textPairColumn;
  return loadExamples({ csv, textColumn, textPairColumn }, { labelsRequired: false });
}

export async function commandPredict(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs('predict', {
    args: argv,
    options: {
      ...PROMPT_OPTIONS,
      ...BASE_OPTIONS,
      classifier: { type: 'string' },
      data: { type: 'string', multiple: true },
      'text-column': { type: 'string' },
      'text-pair-column': { type: 'string' },
      pair: { type: 'string', multiple: true },
      threshold: { type: 'string' },
      'batch-size': { type: 'string' },
      device: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) return void console.log(PREDICT_HELP);
  if ((positionals.length === 0) === (values.data === undefined))
    throw new UsageError("predict: give at least one TEXT, or --data FILE.csv, not both (see 'torch-bert predict --help')");
  if (values['text-pair-column'] !== undefined && values.data === undefined)
    throw new UsageError('predict: --text-pair-column goes with --data (a TEXT argument is one text: give its second text with --pair)');
  const given = values.pair as string[] | undefined;
  if (given !== undefined && values.data !== undefined)
    throw new UsageError('predict: --pair gives the second text of a TEXT argument; with --data, name the column with --text-pair-column');
  if (given !== undefined && given.length !== positionals.length)
    throw new UsageError(`predict: ${given.length} --pair for ${positionals.length} TEXT: give one --pair per TEXT, in order`);
  const classifier = await openClassifier(values, 'predict');
  try {
    const { texts, pairs } = values.data ? await textsOf(values, classifier) : { texts: positionals, pairs: given };
    const predictions = await classifier.predict(texts, {
      pairs,
      threshold: thresholdOption(values),
      batchSize: numberOption(values, 'batch-size'),
      // Given as TEXT, the texts are few: their predictions come at once.
      onProgress: values.data ? predictPrinter(!values.json) : undefined,
    });
    if (values.json) {
      // The prediction's own fields, after the text (a single-label one's labelId is left out, as before).
      predictions.forEach((p, i) => {
        const { labelId: _, ...fields } = p as Partial<Prediction>;
        console.log(JSON.stringify({ text: texts[i], ...(pairs ? { pair: pairs[i] } : {}), ...fields }));
      });
    } else {
      console.log(predictionTable(classifier.problemType, predictions, texts, pairs));
    }
  } finally {
    classifier.dispose();
  }
}
