/**
 * A Hugging Face sequence classifier (a folder or Hub id whose config.json's `architectures` name
 * BertForSequenceClassification, RobertaForSequenceClassification,
 * DistilBertForSequenceClassification, or a model of their architecture) built natively, as
 * transformers' `AutoModelForSequenceClassification.from_pretrained` reads it
 * (modeling_bert.py's BertForSequenceClassification, modeling_roberta.py's
 * RobertaClassificationHead, modeling_distilbert.py's DistilBertForSequenceClassification): the
 * encoder (encoder-source.ts), transformers' head of its family (buildClassifier's
 * 'sequence-classification') given the checkpoint's head tensors, and the classes of `id2label`.
 * `loadClassifier()` takes such a model as it takes a folder torch-bert trained.
 *
 * Its problem type is the config's `problem_type` (`sequenceClassifierProblem`): single-label
 * classification, multi-label classification or regression, each predicted as transformers'
 * pipelines do (a softmax, a sigmoid per class, the values).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { EncoderInfo, NativeScriptModule, NativeTensor, ProblemType } from '../addon/binding.js';
import { InputError, ModelError, messageOf } from '../addon/errors.js';
import { loadBinding } from '../addon/loader.js';
import { type LoadedEncoder, loadEncoderSource } from './encoder-source.js';
import type { ExportFamily } from './export-family.js';
import { isJsonObject } from './hf-config.js';
import type { DownloadProgress } from './hub.js';
import { CONFIG_FILE } from './model-folder.js';
import { type HeadSettings, headSettings, headSpec, sequenceClassificationKeys } from './sequence-classification.js';

/** What loadSequenceClassifier built: the classifier module (eval mode) and what its config records. */
export interface LoadedSequenceClassifier {
  module: NativeScriptModule;
  /** The encoder as loaded (its source, tokenizer, max length, notes); its module is now the classifier's. */
  encoder: LoadedEncoder;
  encoderInfo: EncoderInfo;
  head: HeadSettings & { head: 'sequence-classification' };
  /** Class (or, for regression, output) names in id order: `id2label`'s. */
  labels: string[];
  problemType: ProblemType;
}

/** Whether a config.json's `architectures` name a sequence classifier (`BertForSequenceClassification`, ...). */
function isSequenceClassifierConfig(config: unknown): boolean {
  return (
    isJsonObject(config) &&
    Array.isArray(config.architectures) &&
    config.architectures.some((a) => /ForSequenceClassification$/.test(String(a)))
  );
}

/** The config.json of a loaded folder or Hub snapshot, and its path for messages (a TorchScript file has none). */
function checkpointConfig(loaded: LoadedEncoder): { config: Record<string, unknown>; file: string } {
  const source = loaded.source;
  if (source.kind !== 'folder') return { config: {}, file: loaded.description };
  return { config: source.config ?? {}, file: join(source.dir, CONFIG_FILE) };
}

/**
 * Whether `dir` is a Hugging Face sequence classifier's folder, read from its config.json alone
 * (loadClassifier's choice between this and a folder torch-bert trained, whose config.json says
 * `format: torch-bert-classifier`).
 */
export async function isSequenceClassifierFolder(dir: string): Promise<boolean> {
  let config: unknown;
  try {
    config = JSON.parse(await readFile(join(dir, CONFIG_FILE), 'utf8'));
  } catch {
    return false;
  }
  return isSequenceClassifierConfig(config);
}

/**
 * A sequence classifier's problem type, as transformers' BertForSequenceClassification.forward
 * decides its loss: config.json's `problem_type` where it names one; else regression for a head
 * of one output, single-label classification for more (transformers would tell single- from
 * multi-label by the labels' dtype at training, which a checkpoint does not record: its pipelines
 * apply a softmax then, as here).
 */
export function sequenceClassifierProblem(config: Record<string, unknown>, classes: number, configFile: string): ProblemType {
  const problem = config.problem_type;
  if (problem === undefined || problem === null) return classes === 1 ? 'regression' : 'single_label_classification';
  if (problem === 'single_label_classification' || problem === 'multi_label_classification' || problem === 'regression') {
    if (problem !== 'regression' && classes === 1) {
      throw new ModelError(`${configFile}: problem_type ${problem} with a head of one output; a classifier has two classes or more`, {
        file: configFile,
        code: 'CHECKPOINT_MISMATCH',
      });
    }
    return problem;
  }
  throw new ModelError(
    `${configFile}: problem_type ${JSON.stringify(problem)} is none of transformers' (single_label_classification, multi_label_classification, regression)`,
    { file: configFile, code: 'UNSUPPORTED_MODEL' },
  );
}

/**
 * The classes (for regression, the outputs) of a sequence classifier's config.json, in id order:
 * `id2label`'s names for ids 0 to `classes` - 1 (transformers' LABEL_i where it has none).
 * Refuses an `id2label` or `num_labels` that disagrees with the head's `classes` outputs, and a
 * name given to two ids (predict and evaluate name classes by their names).
 */
export function sequenceClassifierLabels(config: Record<string, unknown>, classes: number, configFile: string): string[] {
  if (config.num_labels !== undefined && config.num_labels !== classes) {
    throw new ModelError(`${configFile} says num_labels ${String(config.num_labels)}, but the model's head has ${classes} outputs`, {
      file: configFile,
      code: 'CHECKPOINT_MISMATCH',
    });
  }
  if (config.id2label === undefined || config.id2label === null) return Array.from({ length: classes }, (_, i) => `LABEL_${i}`);
  const id2label = config.id2label;
  const ids = isJsonObject(id2label) ? Object.keys(id2label) : [];
  const complete =
    ids.length === classes &&
    Array.from({ length: classes }, (_, i) => isJsonObject(id2label) && typeof id2label[String(i)] === 'string').every(Boolean);
  if (!complete) {
    throw new ModelError(
      `${configFile}: id2label must name each of the head's ${classes} classes by its id (0 to ${classes - 1}); got ${JSON.stringify(id2label)}`,
      { file: configFile, code: 'CHECKPOINT_MISMATCH' },
    );
  }
  const labels = Array.from({ length: classes }, (_, i) => (id2label as Record<string, string>)[String(i)]!);
  const twice = labels.find((label, i) => labels.indexOf(label) !== i);
  if (twice !== undefined) {
    throw new ModelError(`${configFile}: id2label gives two classes the name '${twice}'; each class needs a name of its own`, {
      file: configFile,
      code: 'CHECKPOINT_MISMATCH',
    });
  }
  return labels;
}

/**
 * The checkpoint's head tensors (`weights`, by transformers' names) into the classifier's head
 * (`head.*`) of `family`: every tensor the head has, each of its shape (else a ModelError naming
 * it). The output layer's class `c` takes the checkpoint's row `rows[c]`.
 */
function copyHead(
  module: NativeScriptModule,
  family: ExportFamily,
  weights: ReadonlyMap<string, NativeTensor>,
  rows: readonly number[],
  description: string,
  file: string,
): void {
  const outputKey = OUTPUT_KEY[family];
  const headParams = module.namedParameters().filter(([name]) => name.startsWith('head.'));
  for (const [key, param] of sequenceClassificationKeys(family, headParams)) {
    const saved = weights.get(key);
    if (!saved || saved.shape.join(',') !== param.shape.join(',')) {
      throw new ModelError(
        `${description}: its checkpoint ${saved ? `holds ${key} as [${saved.shape.join(', ')}], where the head takes [${param.shape.join(', ')}]` : `lacks ${key}, a tensor of the head`}`,
        { file, code: 'CHECKPOINT_MISMATCH' },
      );
    }
    const isOutput = key === outputKey || key === outputKey.replace(/weight$/, 'bias');
    if (!isOutput || rows.every((row, c) => row === c)) {
      param.copyFrom(saved);
      continue;
    }
    copyRows(param, saved, rows);
  }
}

/**
 * `param` (rows of classes: an output layer's weight [C, ...] or bias [C]) set to `saved`'s rows
 * in another order: row c is `saved`'s row rows[c] (`saved` may have other rows besides).
 */
export function copyRows(param: NativeTensor, saved: NativeTensor, rows: readonly number[]): void {
  const values = saved.toArray() as Float32Array;
  const width = values.length / saved.shape[0]!;
  const ordered = new Float32Array(rows.length * width);
  for (const [c, row] of rows.entries()) ordered.set(values.subarray(row * width, (row + 1) * width), c * width);
  const tensor = loadBinding().Tensor.fromArray(ordered, param.shape);
  try {
    param.copyFrom(tensor);
  } finally {
    tensor.dispose();
  }
}

/** The head's last Linear, whose rows are the classes, by transformers' name. */
const OUTPUT_KEY: Record<ExportFamily, string> = {
  bert: 'classifier.weight',
  roberta: 'classifier.out_proj.weight',
  distilbert: 'classifier.weight',
};

/**
 * A classifier trained from a sequence classifier's checkpoint (`train()`'s head
 * 'sequence-classification'): its head starts from the checkpoint's where the checkpoint's
 * problem type is the run's and its classes are the run's (in any order: the output rows follow
 * the names; a regression head's one output is the run's), as
 * `AutoModelForSequenceClassification.from_pretrained` starts from the checkpoint's head when it
 * fits; else it keeps its initialisation. Returns the note saying which. The checkpoint's head
 * tensors (`loaded.classificationHead`) are freed either way.
 */
export function startHeadFromCheckpoint(
  module: NativeScriptModule,
  family: ExportFamily,
  loaded: LoadedEncoder,
  labels: readonly string[],
  problemType: ProblemType,
): string {
  const weights = new Map(loaded.classificationHead);
  loaded.classificationHead = [];
  try {
    return startHead(module, family, loaded, weights, labels, problemType);
  } finally {
    for (const t of weights.values()) t.dispose();
  }
}

function startHead(
  module: NativeScriptModule,
  family: ExportFamily,
  loaded: LoadedEncoder,
  weights: ReadonlyMap<string, NativeTensor>,
  labels: readonly string[],
  problemType: ProblemType,
): string {
  const { config, file } = checkpointConfig(loaded);
  const classes = weights.get(OUTPUT_KEY[family])?.shape[0];
  let theirs: string[];
  try {
    const problem = sequenceClassifierProblem(config, classes ?? 0, file);
    if (problem !== problemType) throw new Error(`it is a ${problem} head; this run's problem type is ${problemType}`);
    theirs = sequenceClassifierLabels(config, classes ?? 0, file);
  } catch (err) {
    return `the checkpoint's classification head was not used (${messageOf(err)}); the head starts initialised`;
  }
  if (problemType === 'regression') {
    if (classes !== 1) return `the checkpoint's regression head has ${classes} outputs, this run's one, so the head starts initialised`;
    copyHead(module, family, weights, [0], loaded.description, file);
    return "the head starts from the checkpoint's regression head";
  }
  const rows = labels.map((label) => theirs.indexOf(label));
  if (classes !== labels.length || rows.some((row) => row < 0)) {
    return (
      `the checkpoint's classification head classifies ${theirs.join(', ')}; this run's classes are ${labels.join(', ')}, ` +
      "so the head starts initialised (labels with the checkpoint's names would start it from the checkpoint's)"
    );
  }
  copyHead(module, family, weights, rows, loaded.description, file);
  return `the head starts from the checkpoint's classification head (its classes ${theirs.join(', ')})`;
}

/**
 * Builds the sequence classifier `spec` names (a folder, or a Hub id resolved through the cache)
 * on `device`: the encoder natively, the family's head with the checkpoint's head tensors
 * (every one the head has, each of its shape: ModelError naming the missing or mismatched
 * tensor), eval mode.
 */
export async function loadSequenceClassifier(
  spec: string,
  device: string,
  onDownload?: (progress: DownloadProgress) => void,
): Promise<LoadedSequenceClassifier> {
  const encoder = await loadEncoderSource(spec, {
    device,
    onDownload,
    fallbackMaxLength: 512,
    classificationHead: true,
    refuseTorchScript: (file) =>
      new InputError(
        `${file} is a file; a classifier is a folder torch-bert train wrote, or a Hugging Face sequence classifier (a folder or Hub id)`,
        { file },
      ),
  });
  const weights = new Map(encoder.classificationHead);
  let module: NativeScriptModule | undefined;
  try {
    const { config, file: configFile } = checkpointConfig(encoder);
    if (!isSequenceClassifierConfig(config)) {
      throw new InputError(
        `${encoder.description} is a Hugging Face model without a sequence-classification head (architectures ${JSON.stringify(config.architectures ?? null)}): ` +
          `train a classifier on it (train({ encoder }) / torch-bert train --model), then load that`,
        { file: configFile },
      );
    }
    const head = (await headSettings({
      head: 'sequence-classification',
      dropout: 0,
      pooling: 'cls',
      encoder: encoder.module,
      encoderName: encoder.description,
      source: encoder.source,
    })) as LoadedSequenceClassifier['head'];
    const outputKey = OUTPUT_KEY[head.family!];
    const outputWeight = weights.get(outputKey);
    if (outputWeight?.shape.length !== 2) {
      throw new ModelError(`${encoder.description} has no ${outputKey} [classes, hidden]: its checkpoint holds no classification head`, {
        file: configFile,
        code: 'CHECKPOINT_MISMATCH',
      });
    }
    const problemType = sequenceClassifierProblem(config, outputWeight.shape[0]!, configFile);
    const labels = sequenceClassifierLabels(config, outputWeight.shape[0]!, configFile);
    const hidden = outputWeight.shape[1]!;
    const built = loadBinding().buildClassifier(encoder.module, {
      numClasses: labels.length,
      problemType,
      headHidden: hidden,
      pooling: 'cls',
      seed: 0,
      ...headSpec(head),
    });
    module = built.module;
    copyHead(
      module,
      head.family!,
      weights,
      labels.map((_, c) => c),
      encoder.description,
      configFile,
    );
    module.train(false);
    return { module, encoder, encoderInfo: built.encoder, head, labels, problemType };
  } catch (err) {
    module?.dispose();
    encoder.module.dispose();
    throw err;
  } finally {
    for (const t of weights.values()) t.dispose();
  }
}
