/**
 * A LoRA classifier's adapters in PEFT's format (`PeftModel.from_pretrained(base, dir)`):
 * adapter_config.json and adapter_model.safetensors, as PEFT's own save_pretrained writes them,
 * for a transformers AutoModel (the default head, which transformers has no class for: task
 * FEATURE_EXTRACTION) or, for a classifier trained with `head: 'sequence-classification'`, for the
 * family's AutoModelForSequenceClassification (task SEQ_CLS, the head as `modules_to_save`); a
 * token classifier's LoRA run (tagging/token-classifier-folder.ts) for its ForTokenClassification
 * (TOKEN_CLS) in the same way.
 *
 * The two LoRAs compute the same thing: PEFT's LoRA adds `lora_B(lora_A(dropout(x))) * scaling`
 * to the base linear's output with `scaling = lora_alpha / r` (use_rslora off), A [r, in] and
 * B [out, r] stored as the weights of two bias-free nn.Linear; ours adds
 * `(alpha / r) · B·A·dropout(x)` (LoraState::Scaling) with the same shapes. Target modules
 * match the same way (the module path equals the target or ends with '.' + target), so our
 * targets ('attention.self.query') are PEFT's target_modules as they are.
 */
import type { NativeTensor } from '../addon/binding.js';

export const ADAPTER_DIR = 'adapter';
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';

/** The classifier's name for the encoder's modules starts with this; PEFT's with `base_model.model.`. */
const CLASSIFIER_ENCODER = 'encoder.';
const PEFT_PREFIX = 'base_model.model.';

export interface LoraSettings {
  rank: number;
  alpha: number;
  dropout: number;
  targets: string[];
}

/**
 * PEFT's key for one of our adapter tensors: `encoder.encoder.layer.0.attention.self.query.lora_A`
 * (the classifier's path) → `base_model.model.encoder.layer.0.attention.self.query.lora_A.weight`
 * (PeftModel → LoraModel → the AutoModel; the adapter name 'default' is not stored). `basePrefix`
 * is where the encoder sits in the transformers model the adapter goes on: '' for an AutoModel,
 * `bert.` (`roberta.`, `distilbert.`) for a ForSequenceClassification.
 */
export function peftKey(adapterName: string, basePrefix = ''): string {
  if (!adapterName.startsWith(CLASSIFIER_ENCODER) || !/\.lora_[AB]$/.test(adapterName)) {
    throw new Error(`not an encoder adapter tensor name: '${adapterName}'`);
  }
  return `${PEFT_PREFIX}${basePrefix}${adapterName.slice(CLASSIFIER_ENCODER.length)}.weight`;
}

/** Our adapter tensors under PEFT's keys, in module order. */
export function peftTensors(parameters: Array<[string, NativeTensor]>, basePrefix = ''): Array<[string, NativeTensor]> {
  return parameters.map(([name, tensor]) => [peftKey(name, basePrefix), tensor]);
}

/**
 * A head trained in full next to the adapters, under PEFT's keys: PEFT wraps each module named in
 * `modules_to_save` (ModulesToSaveWrapper), trains a copy of it and saves that copy's state under
 * the module's own path (`base_model.model.classifier.weight`: the wrapper's
 * `modules_to_save.default.` is not stored, and is put back on load). `headKeys` are the head's
 * tensors under the transformers model's key names (`classifier.weight`, `classifier.dense.bias`,
 * `pre_classifier.weight`, ...); returns them under PEFT's keys, and the modules to save: each
 * key's first component, in order.
 */
export function peftModulesToSave<T>(headKeys: Array<[string, T]>): { tensors: Array<[string, T]>; modules: string[] } {
  const modules: string[] = [];
  const tensors = headKeys.map(([key, t]): [string, T] => {
    const module = key.split('.')[0]!;
    if (!modules.includes(module)) modules.push(module);
    return [`${PEFT_PREFIX}${key}`, t];
  });
  return { tensors, modules };
}

/**
 * PEFT's task of the model the adapter goes on: the AutoModel, or the ForSequenceClassification
 * (ForTokenClassification: a token classifier's LoRA run; ForQuestionAnswering: a
 * question-answering model's) with its head saved whole.
 */
export type PeftTask = { type: 'FEATURE_EXTRACTION' } | { type: 'SEQ_CLS' | 'TOKEN_CLS' | 'QUESTION_ANS'; modulesToSave: string[] };

/**
 * adapter_config.json. Only fields every PEFT version since 0.3 reads (an older LoraConfig
 * refuses keyword arguments it does not know, so nothing of ours goes in here: the provenance is
 * in the exported model's config.json). `baseModel` is the Hub id (with `revision` its commit)
 * or folder of the base encoder when one is known, else null (PEFT writes null for a base that is not a transformers
 * model: a TorchScript encoder file).
 */
export function adapterConfig(
  lora: LoraSettings,
  baseModel: string | null,
  revision: string | null,
  task: PeftTask = { type: 'FEATURE_EXTRACTION' },
): Record<string, unknown> {
  return {
    peft_type: 'LORA',
    task_type: task.type,
    base_model_name_or_path: baseModel,
    revision,
    r: lora.rank,
    lora_alpha: lora.alpha,
    lora_dropout: lora.dropout,
    target_modules: [...lora.targets],
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    // PeftModelForSequenceClassification (…ForTokenClassification) adds 'classifier' and 'score' to these itself; DistilBERT's
    // pre_classifier is named here so that it is wrapped, trained and loaded too.
    modules_to_save: 'modulesToSave' in task ? [...task.modulesToSave] : null,
    layers_to_transform: null,
    layers_pattern: null,
  };
}
