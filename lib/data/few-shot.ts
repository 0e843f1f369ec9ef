/**
 * Few-shot training sets (LM-BFF's K examples per class): K rows of each class drawn with the
 * seed, and, without separate validation data, at most 500 other rows per class to validate on.
 * One permutation of all rows (`torch.randperm(n)` from the seed, as the stratified split uses)
 * is walked in order; each class takes its first K rows for training, its next ones for
 * validation. The same seed gives the same sample; each class is sampled on its own.
 */
import { InputError } from '../addon/errors.js';

export const FEW_SHOT_VALIDATION_PER_CLASS = 500;

export function fewShotSplit(
  classIds: Int32Array,
  labels: readonly string[],
  k: number,
  seed: number,
  permute: (n: number, seed: number) => Int32Array,
  withValidation: boolean,
): { train: Int32Array; validation: Int32Array | null } {
  const counts = new Int32Array(labels.length);
  for (const c of classIds) counts[c]!++;
  const short = labels.filter((_, c) => counts[c]! < k);
  if (short.length > 0) {
    throw new InputError(
      `fewShot ${k}: class${short.length > 1 ? 'es' : ''} ${short.map((l) => `'${l}' (${counts[labels.indexOf(l)]} examples)`).join(', ')} ` +
        `ha${short.length > 1 ? 've' : 's'} fewer than ${k} examples in the training data`,
    );
  }
  const taken = new Int32Array(labels.length);
  const validating = new Int32Array(labels.length);
  const role = new Uint8Array(classIds.length); // 1 train, 2 validation
  for (const row of permute(classIds.length, seed)) {
    const c = classIds[row]!;
    if (taken[c]! < k) {
      taken[c]!++;
      role[row] = 1;
    } else if (withValidation && validating[c]! < FEW_SHOT_VALIDATION_PER_CLASS) {
      validating[c]!++;
      role[row] = 2;
    }
  }
  const train: number[] = [];
  const validation: number[] = [];
  role.forEach((r, i) => {
    if (r === 1) train.push(i);
    else if (r === 2) validation.push(i);
  });
  if (withValidation && validation.length === 0) {
    throw new InputError(`fewShot ${k}: no examples are left to validate on; give validationData or more data`);
  }
  return { train: Int32Array.from(train), validation: withValidation ? Int32Array.from(validation) : null };
}
