/** `torch-bert eval`: loss and metrics of a classifier on labelled data. */
import { formatMetrics } from '../training/metrics.js';
import { listOption, numberOption, parseCommandArgs, requireFiles, thresholdOption } from './args.js';
import { BASE_HELP, BASE_OPTIONS, openClassifier, PROMPT_HELP, PROMPT_OPTIONS } from './classifier-flags.js';
import { predictPrinter } from './output.js';

export const EVAL_HELP = `torch-bert eval — loss and accuracy of a saved classifier, or of a zero-shot prompt, on labelled data
(a regression model's: mean squared error, mean absolute error, Pearson and Spearman, its labels values; a
multi-label classifier's: per-class precision, recall and F1, subset accuracy, micro and macro F1, its
labels each example's classes, comma-separated, or one column per class: --label-columns)

  --classifier DIR         directory written by 'torch-bert train', or a Hugging Face sequence
                           classifier (a folder or Hub id: *ForSequenceClassification)
${BASE_HELP}
${PROMPT_HELP}
  --data FILE.csv          labelled data, CSV or JSON Lines (repeatable: files read as one)
  --text-column NAME       (the one the classifier was trained on, else text)
  --label-column NAME      (the one the classifier was trained on, else label)
  --label-columns A,B      a column per class (multi-label: 1 or 0) or per output (regression:
                           its target) (those the classifier was trained on)
  --text-pair-column NAME  the second text of each example, for text pairs or a template's
                           {text_b} (the one the classifier was trained on)
  --threshold X            a multi-label classifier's: a class applies at a sigmoid of at least X,
                           or per class: A=0.3,B=0.1 (0.5)
  --batch-size N           (32)
  --device auto|cpu|cuda|cuda:N  (auto)
  --json                   print one JSON object`;

export async function commandEval(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('eval', {
    args: argv,
    options: {
      ...PROMPT_OPTIONS,
      ...BASE_OPTIONS,
      'text-pair-column': { type: 'string' },
      classifier: { type: 'string' },
      data: { type: 'string', multiple: true },
      'text-column': { type: 'string' },
      'label-column': { type: 'string' },
      'label-columns': { type: 'string' },
      threshold: { type: 'string' },
      'batch-size': { type: 'string' },
      device: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) return void console.log(EVAL_HELP);
  const data = requireFiles(values, 'data', 'eval');
  const classifier = await openClassifier(values, 'eval');
  try {
    const result = await classifier.evaluate(
      {
        csv: data,
        textColumn: values['text-column'],
        labelColumn: values['label-column'],
        labelColumns: listOption(values, 'label-columns'),
        textPairColumn: values['text-pair-column'],
      },
      { batchSize: numberOption(values, 'batch-size'), threshold: thresholdOption(values), onProgress: predictPrinter(!values.json) },
    );
    const head = `examples ${result.examples}, loss ${result.loss.toFixed(4)}`;
    if (values.json) {
      // A single-label classifier's has its accuracy; a regression model's loss is the mean squared error.
      const accuracy = 'accuracy' in result ? { accuracy: result.accuracy } : {};
      console.log(JSON.stringify({ loss: result.loss, ...accuracy, examples: result.examples, metrics: result.metrics }));
    } else {
      console.log(`${head}\n${formatMetrics(result.metrics)}`);
    }
  } finally {
    classifier.dispose();
  }
}
