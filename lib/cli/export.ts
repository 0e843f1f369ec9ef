/** `torch-bert export`: a classifier as a Hugging Face folder, or its adapters in AdapterHub's format. */
import { type ExportResult, exportHuggingFace } from '../export/export.js';
import { type AdapterHubExportResult, exportAdapterHub } from '../export/export-adapterhub.js';
import { numberOption, parseCommandArgs, requireOption, UsageError } from './args.js';

export const EXPORT_HELP = `torch-bert export — a saved classifier as a Hugging Face model folder (AutoModel.from_pretrained)

Writes config.json (with id2label and a torch_bert block describing the head), model.safetensors
(the encoder's trained weights; LoRA merged), tokenizer.json + tokenizer_config.json, the head in
torch_bert_head.safetensors, and for a LoRA classifier its adapters in PEFT's format in adapter/.
A classifier trained with --head sequence-classification exports whole instead
(AutoModelForSequenceClassification.from_pretrained): its head is in model.safetensors.
One trained with --head prompt exports as a *ForMaskedLM folder (AutoModelForMaskedLM): the
base model folder's decoder with the label words' trained rows (that folder must still be
there), the template and verbalizer in config.json's torch_bert.prompt; no head file.

  --classifier DIR         directory written by 'torch-bert train'
  --out HF_DIR             the folder to write (new, or empty)
  --heads N                attention heads of the encoder, when the classifier does not record
                           its encoder's config.json (one trained on a TorchScript file)
  --format hf|adapterhub   (hf) adapterhub: a --technique adapter classifier's bottleneck adapters
                           for AdapterHub's load_adapter (adapter_config.json, pytorch_adapter.bin;
                           the head as head_config.json + pytorch_model_head.bin where AdapterHub's
                           classification head computes the same), on the base model
  --name NAME              (torch_bert) the adapter's name in AdapterHub's keys (--format adapterhub)
  --json                   print one JSON object: the folder, the family and the files written`;

export async function commandExport(argv: string[]): Promise<void> {
  const { values } = parseCommandArgs('export', {
    args: argv,
    options: {
      classifier: { type: 'string' },
      out: { type: 'string' },
      heads: { type: 'string' },
      format: { type: 'string' },
      name: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) return void console.log(EXPORT_HELP);
  const classifier = requireOption(values, 'classifier', 'export');
  const out = requireOption(values, 'out', 'export');
  const format = values.format ?? 'hf';
  if (format !== 'hf' && format !== 'adapterhub') throw new UsageError(`export: --format must be hf or adapterhub; got '${format}'`);
  if (format === 'adapterhub') {
    if (values.heads !== undefined)
      throw new UsageError("export: --heads goes with --format hf (AdapterHub's files do not hold the architecture)");
    printAdapterHubExport(await exportAdapterHub({ classifier, out, name: values.name }), classifier, Boolean(values.json));
    return;
  }
  if (values.name !== undefined) throw new UsageError('export: --name goes with --format adapterhub');
  printHuggingFaceExport(
    await exportHuggingFace({ classifier, out, heads: numberOption(values, 'heads') }),
    classifier,
    Boolean(values.json),
  );
}

/** What `torch-bert export --format adapterhub` prints: one JSON object, or the files and notes for people. */
function printAdapterHubExport(result: AdapterHubExportResult, classifier: string, json: boolean): void {
  if (json) {
    console.log(
      JSON.stringify({
        out: result.out,
        family: result.family,
        name: result.name,
        files: result.files,
        head: result.head,
        notes: result.notes,
      }),
    );
    return;
  }
  console.log(
    `exported the adapters of ${classifier} in AdapterHub's format (adapter '${result.name}', ${result.family}) to ${result.out}:`,
  );
  for (const f of result.files) console.log(`  ${f}`);
  for (const n of result.notes) console.log(`note: ${n}`);
}

/** What `torch-bert export` prints of a Hugging Face folder: one JSON object, or the files and assumptions for people. */
function printHuggingFaceExport(result: ExportResult, classifier: string, json: boolean): void {
  if (json) {
    console.log(
      JSON.stringify({ out: result.out, family: result.family, files: result.files, assumed: result.assumed, adapter: result.adapter }),
    );
    return;
  }
  console.log(`exported ${classifier} as a Hugging Face ${result.family} model to ${result.out}:`);
  for (const f of result.files) console.log(`  ${f}`);
  if (result.assumed.length) console.log(`assumed (family defaults; nothing recorded them): ${result.assumed.join(', ')}`);
}
