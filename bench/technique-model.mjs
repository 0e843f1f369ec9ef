/**
 * One technique's classifier and optimizer, set up as train() sets them up, for the step
 * benchmarks (techniques-step, probe-step, scripts/gpu/gpu-bench.mjs): head Linear(H, 512) - ReLU -
 * Dropout(0.1) - Linear(512, 2) seeded 42, CLS pooling; frozen, lora and adapter freeze the
 * encoder, lora adds adapters (LORA) on attention query and value, adapter bottleneck adapters
 * (ADAPTER: Houlsby, after both sub-layers of every layer); one AdamW group (lr 1e-5, weight decay
 * 0.01). The Python references (test/python/reference_step.py, scripts/gpu/gpu-bench.py) build
 * the same.
 */
export const LORA = { rank: 8, alpha: 16, dropout: 0, targets: ['attention.self.query', 'attention.self.value'] };
export const ADAPTER = { config: 'houlsby', size: 64, activation: 'swish' };
export const TECHNIQUES = ['frozen', 'full', 'lora'];
/** TECHNIQUES and the bottleneck adapters (techniques-step; the GPU bench keeps TECHNIQUES). */
export const STEP_TECHNIQUES = [...TECHNIQUES, 'adapter'];

/**
 * `encoder`: a ScriptModule the classifier takes over (disposing the result does not dispose
 * it). `device`: where to move the classifier before the adapters are made (they follow W0's).
 */
export function techniqueModel(binding, encoder, technique, { device } = {}) {
  if (!STEP_TECHNIQUES.includes(technique)) throw new Error(`technique must be frozen, full, lora or adapter, got ${technique}`);
  const { module: model } = binding.buildClassifier(encoder, { numClasses: 2, headHidden: 512, dropout: 0.1, pooling: 'cls', seed: 42 });
  if (device) model.to(device);
  let adapters;
  let params;
  if (technique === 'full') {
    params = model.namedParameters().map(([, t]) => t);
  } else {
    model.setRequiresGrad(false, 'encoder.');
    params = model
      .namedParameters()
      .filter(([n]) => n.startsWith('head.'))
      .map(([, t]) => t);
    if (technique === 'lora') {
      adapters = binding.applyLora(model, { ...LORA, seed: 42 });
      params.push(...adapters.parameters().map(([, t]) => t));
    } else if (technique === 'adapter') {
      adapters = binding.applyAdapters(model, { ...ADAPTER, seed: 42 });
      params.push(...adapters.parameters().map(([, t]) => t));
    }
  }
  const optimizer = new binding.AdamW([{ params, lr: 1e-5, weightDecay: 0.01 }]);
  model.train(true);
  return {
    model,
    optimizer,
    params,
    dispose() {
      adapters?.dispose();
      optimizer.dispose();
      model.dispose();
    },
  };
}
