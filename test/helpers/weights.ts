/**
 * Trained weights side by side, for the tests that compare runs (data-parallel against one
 * process, NCCL against Gloo, pretraining folders): read them into plain arrays by name, and the
 * largest absolute difference between two sets.
 */
import { expect } from 'vitest';
import type { NativeBinding } from '../../lib/addon/binding.js';

/** The tensors of a file written by the addon's saveTensors (e.g. a rank's trained weights), by name. */
export function savedWeights(binding: NativeBinding, file: string): Map<string, Float32Array> {
  const tensors = binding.loadTensors(file);
  return new Map(Object.entries(tensors).map(([name, t]) => [name, Float32Array.from(t.toArray() as ArrayLike<number>)]));
}

/** Largest absolute difference between two sets of the same parameters (the same names and shapes). */
export function maxDifference(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
  let worst = 0;
  for (const [name, x] of a) {
    const y = b.get(name)!;
    expect(y.length, name).toBe(x.length);
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
  }
  return worst;
}
