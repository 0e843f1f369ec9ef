#!/usr/bin/env node
/**
 * Token pruning (native/graph/token_pruning.h) on a real Hugging Face BertModel, where the
 * `transformers` package exists (the GPU machines have it; this project's CI machine does not).
 * Traces a small randomly initialised BertModel (no download) once per attention implementation
 * the installed transformers offers (eager, sdpa), builds a [CLS] classifier on each, and
 * compares `features` with pruning off and on: what was narrowed, and the largest difference.
 *
 *   node scripts/gpu/hf-pruning-check.mjs --python PY --out DIR
 * Writes DIR/hf-pruning.json and prints one line per variant; exits 1 when a variant differs by
 * more than 1e-5 or prunes nothing, or when no variant could be traced at all (transformers 5.x
 * changed how its models trace: a check that compared nothing proved nothing), 0 otherwise
 * (also when transformers is missing: skipped).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const { values: opt } = parseArgs({ options: { python: { type: 'string', default: 'python3' }, out: { type: 'string', default: '.' } } });

const TRACE = `
import json, sys, torch
try:
    import transformers
    from transformers import BertConfig, BertModel
except Exception as e:
    print(json.dumps({"skipped": f"no transformers: {e}"})); sys.exit(0)
out = []
for impl in ("eager", "sdpa"):
    try:
        config = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=512, torchscript=True, attn_implementation=impl)
        torch.manual_seed(0)
        model = BertModel(config).eval()
        ids = torch.randint(5, 1000, (2, 12)); mask = torch.ones(2, 12, dtype=torch.long); mask[1, 8:] = 0
        traced = torch.jit.trace(model, (ids, mask), strict=False)
        path = f"{sys.argv[1]}/hf-bert-{impl}.pt"
        traced.save(path)
        out.append({"impl": impl, "file": path, "transformers": transformers.__version__, "torch": torch.__version__})
    except Exception as e:
        out.append({"impl": impl, "error": str(e)[:300]})
print(json.dumps(out))
`;

const work = mkdtempSync(join(tmpdir(), 'torch-bert-hf-pruning-'));
let failed = false;
try {
  const traced = JSON.parse(execFileSync(opt.python, ['-c', TRACE, work], { encoding: 'utf8' }).trim().split('\n').pop());
  if (!Array.isArray(traced)) {
    console.log(`hf-pruning: skipped (${traced.skipped})`);
    writeFileSync(join(opt.out, 'hf-pruning.json'), JSON.stringify(traced, null, 2) + '\n');
    process.exit(0);
  }
  const { loadBinding } = await import(join(root, 'dist', 'index.js'));
  const b = loadBinding();
  const n = 2 * 12;
  const ids = b.Tensor.fromArray(
    new Int32Array(n).map((_, i) => 5 + ((i * 37) % 990)),
    [2, 12],
    'int64',
  );
  const mask = b.Tensor.fromArray(
    new Int32Array(n).map((_, i) => (i >= 20 ? 0 : 1)),
    [2, 12],
    'int64',
  );
  const results = [];
  for (const t of traced) {
    if (t.error) {
      results.push(t);
      console.log(`hf-pruning: ${t.impl}: not traced (${t.error})`);
      continue;
    }
    const features = (prune) => {
      b.setTokenPruning(prune);
      const { module } = b.buildClassifier(b.ScriptModule.load(t.file), {
        numClasses: 2,
        headHidden: 8,
        dropout: 0,
        pooling: 'cls',
        seed: 1,
      });
      module.train(false);
      const x = Array.from(module.runMethod('features', ids, mask).toArray());
      return { x, ops: module.prunedOps('features') };
    };
    let full;
    try {
      full = features(false);
    } catch (err) {
      // A trace of torch 2.x's sdpa path holds aten::scaled_dot_product_attention, which a
      // libtorch before 2.0 (Debian's 1.13 on the CPU machines) cannot load: nothing to compare.
      if (!/Unknown builtin op/.test(err.message)) throw err;
      results.push({ ...t, error: `libtorch ${b.versions().libtorch} cannot load the trace: ${err.message.trim().split('\n')[0]}` });
      console.log(`hf-pruning: ${t.impl}: not loaded (${results.at(-1).error})`);
      continue;
    }
    const pruned = features(true);
    b.setTokenPruning(true);
    const diff = Math.max(...full.x.map((v, i) => Math.abs(v - pruned.x[i])));
    const ok = diff < 1e-5 && Array.isArray(pruned.ops) && pruned.ops.length > 0;
    failed ||= !ok;
    results.push({ ...t, maxAbsDiff: diff, prunedOps: pruned.ops, ok });
    console.log(
      `hf-pruning: ${t.impl} (transformers ${t.transformers}, torch ${t.torch}): ${ok ? 'ok' : 'FAILED'}, max |pruned - full| ${diff.toExponential(2)}, narrowed ${pruned.ops?.length ?? 0} ops: ${(pruned.ops ?? []).join(' ')}`,
    );
  }
  if (!results.some((r) => 'ok' in r)) {
    console.log(
      `hf-pruning: FAILED: no attention variant could be traced (${traced.map((t) => t.impl).join(', ')}), so nothing was compared`,
    );
    failed = true;
  }
  writeFileSync(join(opt.out, 'hf-pruning.json'), JSON.stringify(results, null, 2) + '\n');
} finally {
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
