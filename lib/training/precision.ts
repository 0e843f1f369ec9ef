/**
 * The precision a run asked for against the device and CPU that compute it: fp16 only on CUDA,
 * and a warning where the CPU would emulate bfloat16 (what doctor reports too).
 */
import { readFileSync } from 'node:fs';
import { InputError } from '../addon/errors.js';
import type { ResolvedTrainOptions } from './options.js';

/**
 * CPU flags for native bfloat16 (Linux /proc/cpuinfo): x86 avx512_bf16 / amx_bf16, Arm bf16.
 * Empty: bfloat16 is emulated on this CPU (much slower than float32); null: unknown.
 */
export function cpuBf16(): string[] | null {
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const flags = new Set((/^(?:flags|Features)\s*:(.*)$/m.exec(info)?.[1] ?? '').trim().split(/\s+/));
    return ['avx512_bf16', 'amx_bf16', 'bf16'].filter((f) => flags.has(f));
  } catch {
    return null;
  }
}

/** Refuses fp16 off CUDA; warns (TORCH_BERT_BF16_EMULATED) where bf16 would run emulated on this CPU. */
export function checkPrecision(opts: Pick<ResolvedTrainOptions, 'precision'>, device: string): void {
  if (opts.precision === 'fp16' && !device.startsWith('cuda')) {
    throw new InputError(`precision 'fp16' needs a CUDA device, but the device is ${device}: use 'bf16' or 'fp32' on the CPU`);
  }
  if (opts.precision === 'bf16' && device === 'cpu' && cpuBf16()?.length === 0) {
    process.emitWarning(
      "precision 'bf16' on this CPU is emulated (it has no AVX512-BF16, AMX or Arm BF16): expect training to be far slower " +
        "than with 'fp32' (measured 15-30x with libtorch 2.13), or libtorch to reject it. Use precision 'fp32' on this CPU.",
      { code: 'TORCH_BERT_BF16_EMULATED' },
    );
  }
}
