/**
 * The caching CPU allocator (native/cpu_allocator.h): installed at load, reuses freed blocks,
 * respects its byte limit, changes no result (a process with the cache off computes the same
 * bits), and TORCH_BERT_CPU_CACHE_MB=0 keeps libtorch's own allocator.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { NativeBinding } from '../lib/addon/binding.js';
import { loadBinding } from '../lib/addon/loader.js';
import { makeEncoder, repoRoot } from './fixtures.js';

let b: NativeBinding;
let encoder: string;

beforeAll(async () => {
  b = loadBinding();
  encoder = await makeEncoder({ layers: 2, hidden: 64, heads: 4, intermediate: 256, vocabSize: 200, seed: 3 });
});

/**
 * Runs `body` in a fresh Node process with `env` (the compiled library in dist/, built by
 * `pretest`); `b` is the binding there, `encoder` the test encoder. Returns what it prints as JSON.
 */
function child(body: string, env: Record<string, string>): any {
  const script = `
    const { loadBinding } = await import(${JSON.stringify(path.join(repoRoot, 'dist', 'index.js'))});
    const b = loadBinding();
    const encoder = ${JSON.stringify(encoder)};
    ${body}
  `;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, ...env }, encoding: 'utf8' });
  return JSON.parse(out.trim().split('\n').pop()!);
}

/** [CLS] features of a fixed batch of 32 x 64 tokens (activations of 0.5-2 MB: cacheable), in the process whose binding `bb` is. */
const FEATURES = `
  async function features(bb) {
    const enc = bb.ScriptModule.load(encoder);
    const { module } = bb.buildClassifier(enc, { numClasses: 2, headHidden: 8, dropout: 0, pooling: 'cls', seed: 1 });
    module.train(false);
    const n = 32 * 64;
    const inputIds = new Int32Array(n).map((_, i) => 5 + ((i * 37) % 190));
    const attentionMask = new Int32Array(n).map((_, i) => (i % 64 < 10 + (i / 64 | 0) ? 1 : 0));
    const out = [];
    for (let r = 0; r < 3; r++) {
      const f = await bb.extractFeatures(module, { inputIds, attentionMask, batchSize: 32, seqLen: 64 });
      out.push(Array.from(f.toArray()));
      f.dispose();
    }
    return out;
  }
`;

describe('the caching CPU allocator', () => {
  it('is installed at load, serves repeated allocations from its cache, and empties on request', () => {
    const stats = b.cpuCacheStats();
    expect(stats.installed).toBe(true);
    expect(stats.limitBytes).toBe(1024 * 2 ** 20);
    const a = b.Tensor.fromArray(new Float32Array(600 * 300).fill(0.5), [600, 300]);
    const w = b.Tensor.fromArray(new Float32Array(300 * 600).fill(0.25), [300, 600]);
    const before = b.cpuCacheStats();
    for (let i = 0; i < 10; i++) {
      const c = b.matmul(a, w); // 600 x 600 floats = 1.4 MB: a cacheable block
      expect((c.toArray() as Float32Array)[0]).toBeCloseTo(300 * 0.125, 4);
      c.dispose();
    }
    const after = b.cpuCacheStats();
    expect(after.hits - before.hits).toBeGreaterThanOrEqual(9);
    expect(after.cachedBytes).toBeGreaterThan(0);
    expect(after.cachedBytes).toBeLessThanOrEqual(after.limitBytes);
    b.emptyCpuCache();
    expect(b.cpuCacheStats().cachedBytes).toBe(0);
    expect(b.cpuCacheStats().cachedBlocks).toBe(0);
    a.dispose();
    w.dispose();
  });

  it('changes no result: the same features, bit for bit, with the cache off in another process', async () => {
    const cached = child(`${FEATURES} const f = await features(b); console.log(JSON.stringify({ stats: b.cpuCacheStats(), f }));`, {});
    const plain = child(`${FEATURES} const f = await features(b); console.log(JSON.stringify({ stats: b.cpuCacheStats(), f }));`, {
      TORCH_BERT_CPU_CACHE_MB: '0',
    });
    expect(cached.stats.installed).toBe(true);
    expect(cached.stats.hits).toBeGreaterThan(0);
    expect(plain.stats.installed).toBe(false);
    expect(plain.stats.hits).toBe(0);
    expect(cached.f[0].length).toBe(32 * 64);
    // Reused blocks hold stale data: a kernel reading memory it did not write would differ here.
    for (let r = 0; r < 3; r++) expect(cached.f[r]).toEqual(plain.f[0]);
  });

  it('keeps at most its limit (TORCH_BERT_CPU_CACHE_MB), evicting, and frees blocks larger than it', () => {
    const out = child(
      `
      const big = b.Tensor.fromArray(new Float32Array(1000 * 500), [1000, 500]);
      const small = b.Tensor.fromArray(new Float32Array(300 * 250), [300, 250]);
      const live = [];
      // Four live 300 KB blocks at once, then freed together: 1.2 MB, over a 1 MiB limit.
      for (let i = 0; i < 4; i++) live.push(small.clone());
      for (const t of live) t.dispose();
      const afterSmall = b.cpuCacheStats();
      big.clone().dispose(); // 2 MB: more than the limit, never cached
      console.log(JSON.stringify({ afterSmall, afterBig: b.cpuCacheStats() }));
      `,
      { TORCH_BERT_CPU_CACHE_MB: '1' },
    );
    expect(out.afterSmall.limitBytes).toBe(2 ** 20);
    expect(out.afterSmall.cachedBytes).toBeGreaterThan(0);
    expect(out.afterSmall.cachedBytes).toBeLessThanOrEqual(2 ** 20);
    expect(out.afterSmall.evictedBytes).toBeGreaterThan(0);
    expect(out.afterBig.cachedBytes).toBe(out.afterSmall.cachedBytes);
  });

  it('evicts the blocks freed longest ago first, so the sizes a loop keeps reusing stay cached', () => {
    // Limit 2 MiB: a stale 512 KiB block, then two 1 MiB blocks freed (2.5 MiB): the stale one goes,
    // and the next round of 1 MiB allocations is served from the cache. (Evicting the largest, the
    // earlier policy, dropped a 1 MiB block and kept the stale one.)
    const out = child(
      `
      const make = (n) => b.Tensor.fromArray(new Float32Array(n), [n]);
      make(128 * 1024).dispose();
      const x = make(256 * 1024), y = make(256 * 1024);
      x.dispose();
      y.dispose();
      const freed = b.cpuCacheStats();
      const x2 = make(256 * 1024), y2 = make(256 * 1024);
      const reused = b.cpuCacheStats();
      const stale = make(128 * 1024);
      console.log(JSON.stringify({ freed, reused, stale: b.cpuCacheStats() }));
      `,
      { TORCH_BERT_CPU_CACHE_MB: '2' },
    );
    expect(out.freed.misses).toBe(3);
    expect(out.freed.evictedBytes).toBe(512 * 1024);
    expect(out.freed.cachedBytes).toBe(2 * 1024 * 1024);
    expect(out.reused.hits - out.freed.hits).toBe(2);
    expect(out.reused.misses).toBe(out.freed.misses);
    expect(out.stale.misses).toBe(out.reused.misses + 1);
  });

  it('puts blocks of 2 MiB and more in transparent huge pages, unless TORCH_BERT_HUGE_PAGES=0', () => {
    // A 16 MB tensor, written through, then the process's AnonHugePages from /proc/self/smaps_rollup.
    const body = `
      const { readFileSync } = await import('node:fs');
      const huge = () => Number(/AnonHugePages:\\s+(\\d+)/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))[1]);
      const before = huge();
      const row = b.Tensor.fromArray(new Float32Array(4 << 20).fill(1), [1, 4 << 20]);
      const column = b.Tensor.fromArray(new Float32Array(4 << 20).fill(1), [4 << 20, 1]);
      console.log(JSON.stringify({ stats: b.cpuCacheStats(), grewKb: huge() - before, sum: b.matmul(row, column).toArray()[0] }));
    `;
    const on = child(body, {});
    const off = child(body, { TORCH_BERT_HUGE_PAGES: '0' });
    expect(on.stats.hugePages).toBe(true);
    expect(on.stats.hugePageBlocks).toBeGreaterThanOrEqual(1);
    expect(off.stats.hugePages).toBe(false);
    expect(off.stats.hugePageBlocks).toBe(0);
    expect(on.sum).toBe(4 << 20);
    expect(off.sum).toBe(4 << 20);
    // Where the kernel offers THP on request (this machine: "madvise"), the block is in huge pages.
    const thp = readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8');
    if (!thp.includes('[never]')) expect(on.grewKb).toBeGreaterThanOrEqual(16 * 1024);
    expect(off.grewKb).toBeLessThan(2 * 1024);
  });
});
