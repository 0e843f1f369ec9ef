/**
 * No leaks: 20 consecutive cycles in one process (a child started with --expose-gc), each
 * training three small classifiers — frozen, full and LoRA techniques, with checkpoints and
 * training states written — predicting with each, and loading one back to predict again. After
 * every cycle the child collects garbage and reports its RSS; the RSS after cycle 20 must be
 * within 10% of the RSS after cycle 2 (the first cycle warms caches and allocators up).
 *
 * The encoder is big enough (~2 MB of weights, ~7 MB with AdamW's moments for the full
 * technique) that keeping one model or optimizer per run alive would add far more than 10%.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoTokenizer, makeEncoder } from '../fixtures.js';
import { collect, exited, spawnTs } from '../helpers/reliability.js';

const CYCLES = 20;
const JEMALLOC = '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2';
const work = mkdtempSync(join(tmpdir(), 'torch-bert-leaks-'));
let encoder: string;

beforeAll(async () => {
  encoder = await makeEncoder({ layers: 2, hidden: 128, heads: 2, intermediate: 512, tokenizer: demoTokenizer, seed: 5 });
});

let running: ChildProcess | undefined;
afterAll(() => {
  // A timed-out test leaves its child behind otherwise.
  if (running && running.exitCode === null && running.signalCode === null) running.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

describe('memory over repeated train() + predict() cycles', () => {
  // ~1 minute on an idle 2-core machine; more when it is shared.
  it(`RSS after cycle ${CYCLES} is within 10% of RSS after cycle 2`, { timeout: 300_000 }, async () => {
    // RSS measures what the allocator keeps, not what the process holds. With jemalloc returning
    // freed pages at once (decay 0) RSS follows live memory (measured here: cycle 2 306.6 MiB, cycle
    // 20 316.0, +3%); glibc's malloc keeps fragments, and its dynamic mmap threshold moves large
    // freed blocks into the arenas, making RSS swing ±10% between cycles without any leak (421 →
    // 492 → 454 MiB); with the threshold fixed, tensors stay mmapped and are returned on free, but
    // arenas still creep in steps (+8% over 20 cycles, flat with jemalloc). So jemalloc when it is
    // installed (Debian/Ubuntu: libjemalloc2), else glibc with a fixed mmap threshold.
    const env: NodeJS.ProcessEnv = existsSync(JEMALLOC)
      ? { LD_PRELOAD: JEMALLOC, MALLOC_CONF: 'dirty_decay_ms:0,muzzy_decay_ms:0' }
      : { MALLOC_MMAP_THRESHOLD_: '65536' };
    console.log(`leaks: allocator ${env.LD_PRELOAD ? 'jemalloc (decay 0)' : 'glibc malloc (mmap threshold 64 KiB)'}`);
    const child = spawnTs('test/helpers/leak-cycles.ts', [encoder, work, String(CYCLES), 'gc'], { nodeArgs: ['--expose-gc'], env });
    running = child;
    const out = collect(child);
    const { code } = await exited(child);
    expect(code, out.stderr()).toBe(0);
    const rss = new Map<number, number>();
    const heap = new Map<number, number>();
    const external = new Map<number, number>();
    for (const line of out.stdout().split('\n')) {
      const m = /^cycle (\d+) (\d+) (\d+) (\d+) (\d+)$/.exec(line);
      if (m) {
        rss.set(Number(m[1]), Number(m[2]));
        heap.set(Number(m[1]), Number(m[3]));
        external.set(Number(m[1]), Number(m[5]));
      }
    }
    expect(rss.size).toBe(CYCLES);
    const mb = (x: number) => (x / 2 ** 20).toFixed(1);
    console.log(
      `leaks: RSS (MiB) by cycle: ${[...rss].map(([c, r]) => `${c}:${mb(r)}`).join(' ')}\n` +
        `leaks: JS heap (MiB) by cycle: ${[...heap].map(([c, h]) => `${c}:${mb(h)}`).join(' ')}\n` +
        `leaks: external (MiB) by cycle: ${[...external].map(([c, h]) => `${c}:${mb(h)}`).join(' ')}\n` +
        `leaks: cycle 2 ${mb(rss.get(2)!)} MiB, cycle ${CYCLES} ${mb(rss.get(CYCLES)!)} MiB: ${(((rss.get(CYCLES)! - rss.get(2)!) / rss.get(2)!) * 100).toFixed(1)}%`,
    );
    expect(rss.get(CYCLES)!).toBeLessThanOrEqual(rss.get(2)! * 1.1);
    // The JS heap does not grow either (no retained results, classifiers or tokenizers), nor the
    // native memory the addon reports to V8 as held by live JS objects (tensors, modules).
    expect(heap.get(CYCLES)!).toBeLessThanOrEqual(heap.get(2)! * 1.1);
    expect(external.get(CYCLES)!).toBeLessThanOrEqual(external.get(2)! * 1.1);
  });
});
