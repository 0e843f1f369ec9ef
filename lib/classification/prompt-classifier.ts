/**
 * Prompt-based classification (LM-BFF, Gao et al. 2021) with the checkpoint's MLM head: a class's
 * probability is the softmax over the label words' logits at the template's mask.
 *
 *   const c = await promptClassifier({ model: 'roberta-folder', template: '{text} It was <mask>.',
 *                                      verbalizer: ['negative=terrible', 'positive=great'] });
 *   await c.predict(['A wonderful film.']);   // same shapes as a trained classifier's
 *
 * The model is the classifier of `head: 'prompt'` (native/module/classifier.cc): forward(input_ids,
 * attention_mask) -> class log-probabilities, with the mask row found in its graph, so a saved
 * classifier.pt keeps its contract; config.json records the prompt (prompt-template.ts), which
 * predict/evaluate apply to new texts. `preparePrompt` is shared with train({ head: 'prompt' }).
 */
import type { BuiltClassifier, NativeScriptModule } from '../addon/binding.js';
import { InputError } from '../addon/errors.js';
import { loadBinding, packageVersion } from '../addon/loader.js';
import { PromptEncoder, promptSpec, type VerbalizerSpec } from '../data/prompt-template.js';
import { type LoadedEncoder, loadEncoderSource } from '../models/encoder-source.js';
import { checkOptionNames, type Device } from '../training/options.js';
import { Classifier, type ClassifierConfig, resolveDevice } from './classifier.js';

export interface PromptClassifierOptions {
  /** A Hugging Face model folder or Hub id whose checkpoint has its MLM head (BERT, RoBERTa or DistilBERT family). */
  model: string;
  /** E.g. '{text} It was [MASK].' (the tokenizer's own mask token); pairs: {text_a} and {text_b}. */
  template: string;
  /** `['negative=terrible', 'positive=great']` or `{ negative: 'terrible', positive: 'great' }`: class order as given. */
  verbalizer: VerbalizerSpec;
  /** Tokens per example, template and special tokens included (default: the folder's). */
  maxLength?: number;
  device?: Device;
  /** A tokenizer.json instead of the folder's own. */
  tokenizer?: string;
}

/** promptClassifier's option names (plain JavaScript's misspelt keys: options.ts checkOptionNames). */
const PROMPT_CLASSIFIER_OPTION_NAMES = Object.keys({
  model: 1,
  template: 1,
  verbalizer: 1,
  maxLength: 1,
  device: 1,
  tokenizer: 1,
} satisfies Record<keyof PromptClassifierOptions, 1>);

/** The refusal of a TorchScript encoder for prompting (loadEncoderSource's refuseTorchScript, before its tokenizer and max length are asked for). */
export function noMlmHeadInTorchScript(file: string): InputError {
  return new InputError(
    `prompting needs the model's masked-language-model head, and ${file} is a TorchScript encoder, which carries none: name a Hugging Face folder or Hub id whose checkpoint has it (…ForMaskedLM, …ForPreTraining)`,
    { code: 'NO_MLM_HEAD' },
  );
}

/**
 * The MLM head, mask token and prompt of a loaded encoder, checked; throws a clear InputError where
 * prompting cannot work (a TorchScript file was refused at its load: noMlmHeadInTorchScript).
 */
export async function preparePrompt(
  loaded: LoadedEncoder,
  template: string,
  verbalizer: VerbalizerSpec,
): Promise<{ mlmHead: NativeScriptModule; prompt: PromptEncoder }> {
  if (loaded.mlmHead === null) {
    throw new InputError(
      `prompting needs the model's masked-language-model head, and the checkpoint of ${loaded.description} has none (no cls.predictions.* / lm_head.* / vocab_transform, vocab_projector): use a …ForMaskedLM or …ForPreTraining checkpoint`,
      { code: 'NO_MLM_HEAD' },
    );
  }
  const mask = loaded.tokenizer.maskToken();
  const prompt = PromptEncoder.create(loaded.tokenizer, template, verbalizer, mask);
  return { mlmHead: loaded.mlmHead, prompt };
}

/** A zero-shot prompt classifier: `predict` and `evaluate` as a trained classifier's (see the top). */
export async function promptClassifier(options: PromptClassifierOptions): Promise<Classifier> {
  if (typeof options?.model !== 'string') throw new InputError('promptClassifier: model must be a model folder or Hub id');
  checkOptionNames('promptClassifier()', options, PROMPT_CLASSIFIER_OPTION_NAMES);
  const binding = loadBinding();
  const device = resolveDevice(options.device);
  const loaded = await loadEncoderSource(options.model, {
    device,
    tokenizer: options.tokenizer,
    maxLength: options.maxLength,
    fallbackMaxLength: 128,
    mlmHead: true,
    refuseTorchScript: noMlmHeadInTorchScript,
  });
  let built: BuiltClassifier;
  let prompt: PromptEncoder;
  try {
    const prepared = await preparePrompt(loaded, options.template, options.verbalizer);
    prompt = prepared.prompt;
    built = binding.buildClassifier(loaded.module, promptSpec(prepared.mlmHead, prompt.config));
  } catch (err) {
    loaded.module.dispose();
    throw err;
  } finally {
    // The classifier holds the MLM head's transform; its handle is not needed.
    loaded.mlmHead?.dispose();
  }
  built.module.train(false);
  built.module.setRequiresGrad(false);
  return Classifier.fromModule(built.module, loaded.tokenizer, zeroShotConfig(options.model, loaded, built, prompt));
}

/** The config of a zero-shot classifier, as a trained one's: its labels, template and encoder, nothing trained. */
function zeroShotConfig(model: string, loaded: LoadedEncoder, built: BuiltClassifier, prompt: PromptEncoder): ClassifierConfig {
  return {
    format: 'torch-bert-classifier',
    formatVersion: 1,
    labels: prompt.labels,
    maxLength: loaded.maxLength,
    pooling: 'cls',
    headHidden: 0,
    dropout: 0,
    head: 'prompt',
    prompt: prompt.config,
    encoder: { ...built.encoder, file: model, source: loaded.source },
    output: 'log_probabilities',
    libtorchVersion: loadBinding().versions().libtorch,
    torchBertVersion: packageVersion(),
    hyperparameters: { technique: 'zero-shot' },
    metrics: {},
    createdAt: new Date().toISOString(),
  };
}
