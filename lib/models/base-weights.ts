/**
 * The base encoder a LoRA or adapter run was trained on, fingerprinted, so that
 * `Classifier.loadAdapters` refuses another: adapters and a head on the wrong base (a checkpoint
 * of the same architecture, or the run's own merged export, which would apply LoRA twice) predict
 * wrongly without any error.
 *
 * A fingerprint is one digest per weight tensor (its shape and values as float32, whatever the
 * dtype they are held in), sorted, with no names: the same weights
 * traced by transformers and built from a model folder may be named apart, and one of the two may
 * hold a tensor more (a pooler). Two encoders are the same base when one's digests all are among
 * the other's.
 */
import { createHash } from 'node:crypto';
import type { NativeScriptModule, NativeTensor } from '../addon/binding.js';
import { InputError } from '../addon/errors.js';

/** Hex digits kept of each tensor's SHA-256: 64 bits, no accidental match among a model's few hundred tensors. */
const DIGEST_HEX = 16;

function tensorDigest(tensor: NativeTensor): string {
  const f32 = tensor.dtype === 'float32' ? null : tensor.to('cpu', 'float32');
  try {
    const values = (f32 ?? tensor).toArray();
    return createHash('sha256')
      .update(`${tensor.shape.join('x')}:`)
      .update(Buffer.from(values.buffer, values.byteOffset, values.byteLength))
      .digest('hex')
      .slice(0, DIGEST_HEX);
  } finally {
    f32?.dispose();
  }
}

/** The fingerprint of an encoder's weights: one digest per parameter, sorted. */
export function weightDigests(encoder: NativeScriptModule): string[] {
  return encoder
    .namedParameters()
    .map(([, t]) => tensorDigest(t))
    .sort();
}

/**
 * Throws an InputError when `encoder` is not the base `recorded` fingerprints (neither's digests
 * all among the other's). Nothing to check in a config written before fingerprints were recorded.
 */
export function checkSameBase(
  recorded: readonly string[] | undefined,
  encoder: NativeScriptModule,
  where: { encoder: string; trainedOn: string; dir: string; configPath: string },
): void {
  if (!recorded) return;
  const loaded = new Set(weightDigests(encoder));
  const saved = new Set(recorded);
  const missing = [...saved].filter((d) => !loaded.has(d)).length;
  if (missing === 0 || [...loaded].every((d) => saved.has(d))) return;
  throw new InputError(
    `${where.encoder} is not the base encoder ${where.dir} was trained on: ${missing} of the ${saved.size} weight tensors ` +
      `recorded in ${where.configPath} (encoder.weightDigests) are not among its own. Name the encoder the run was trained ` +
      `on (${where.trainedOn}), not a merged export or another checkpoint (or, to apply them to another base on purpose, ` +
      'allowOtherBase: true / --allow-other-base)',
    { file: where.configPath, code: 'OTHER_BASE' },
  );
}
