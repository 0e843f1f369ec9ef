/**
 * What eval and predict classify with: a saved classifier (--classifier DIR), or a zero-shot
 * prompt classifier (--model, --template, --verbalizer), and those flags' help.
 */
import type { ProblemType } from '../addon/binding.js';
import { Classifier, PROBLEM_TYPES } from '../classification/classifier.js';
import { promptClassifier } from '../classification/prompt-classifier.js';
import { namesHubModel } from '../models/hub.js';
import type { Device } from '../training/options.js';
import { numberOption, type Options, requireOption, UsageError } from './args.js';
import { fetchModelWithProgress } from './run-control.js';

export const PROMPT_HELP = `  or, zero-shot (LM-BFF: a class's probability is the softmax over the label words' logits at the mask):
  --model M                a Hugging Face folder or Hub id whose checkpoint has its MLM head (BERT, RoBERTa, DistilBERT)
  --template T             e.g. "{text} It was [MASK]." (the tokenizer's own mask token: <mask> for
                           RoBERTa); {text_a} and {text_b} for pairs; texts are truncated, the template never
  --verbalizer LABEL=WORD  one per class, in class order; each word one token of the vocabulary
  --max-length N           tokens per example, template included (the folder's)
  --tokenizer FILE.json    instead of the folder's own`;

/** --base: a lora or adapter run built from its small files (Classifier.loadAdapters). */
export const BASE_HELP = `  --base MODEL             with --classifier DIR of a lora or adapter run: build it from its small
                           files (adapters.pt, head.pt) on the base encoder it was trained on
                           (Classifier.loadAdapters; DIR/classifier.pt is not read)
  --allow-other-base       with --base: build on a base whose weights are not those the run was
                           trained on (refused by default: the adapters would predict wrongly)`;

export const BASE_OPTIONS: Options = {
  base: { type: 'string' },
  'allow-other-base': { type: 'boolean' },
};

export const PROMPT_OPTIONS: Options = {
  model: { type: 'string' },
  template: { type: 'string' },
  verbalizer: { type: 'string', multiple: true },
  'max-length': { type: 'string' },
  tokenizer: { type: 'string' },
};

/** --classifier DIR (with --base: from its small files), or a zero-shot prompt classifier from --model, --template and --verbalizer. */
export async function openClassifier(values: Record<string, unknown>, command: string): Promise<Classifier<ProblemType>> {
  const device = values.device as Device | undefined;
  if (values.model === undefined) {
    const dir = requireOption(values, 'classifier', command);
    for (const flag of ['template', 'verbalizer']) {
      if (values[flag] !== undefined)
        throw new UsageError(`${command}: --${flag} goes with --model (a zero-shot prompt), not --classifier`);
    }
    const allowOtherBase = values['allow-other-base'] as boolean | undefined;
    if (allowOtherBase && values.base === undefined) throw new UsageError(`${command}: --allow-other-base goes with --base`);
    if (values.base !== undefined)
      return Classifier.loadAdapters(dir, { encoder: values.base as string, device, allowOtherBase, problemType: PROBLEM_TYPES });
    // A Hugging Face sequence classifier named by its Hub id: downloaded ahead with progress, as --model is.
    if (namesHubModel(dir)) await fetchModelWithProgress({ model: dir });
    // Every problem type: the commands print each.
    return Classifier.load(dir, { device, problemType: PROBLEM_TYPES });
  }
  if (values.classifier !== undefined) throw new UsageError(`${command}: give --classifier or --model, not both`);
  if (values.base !== undefined) throw new UsageError(`${command}: --base goes with --classifier (a lora or adapter run), not --model`);
  const template = values.template as string | undefined;
  const verbalizer = values.verbalizer as string[] | undefined;
  if (template === undefined || verbalizer === undefined) {
    throw new UsageError(
      `${command}: --model needs --template and --verbalizer LABEL=WORD (one per class; see 'torch-bert ${command} --help')`,
    );
  }
  await fetchModelWithProgress(values);
  return promptClassifier({
    model: values.model as string,
    template,
    verbalizer,
    maxLength: numberOption(values, 'max-length'),
    tokenizer: values.tokenizer as string | undefined,
    device,
  });
}
