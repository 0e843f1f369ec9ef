#!/usr/bin/python3
"""Where the reference's training step spends its time: one step of test/python/reference_step.py
(eager BERT, the same weights and batch as the techniques-step benchmark) under
torch.autograd.profiler, split into time inside libtorch's compute kernels and the rest (Python,
dispatch, framework: what a native loop could remove).

  /usr/bin/python3 bench/profile-reference.py --shape tiny [--technique frozen,full,lora] [--steps 9]

Needs the encoder and batch files the techniques-step benchmark caches in bench/.cache (run
`npm run bench -- --only techniques-step --shapes SHAPE` once). Prints one line per technique.
"""
import argparse
import collections
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "test", "python"))
import reference_step as R  # noqa: E402

# Ops whose own (self) time is arithmetic on tensor data: matrix products and element-wise or
# reduction kernels. Views, reshapes and bookkeeping ops are not counted as kernel time.
KERNELS = {
    "aten::mm", "aten::addmm", "aten::bmm", "aten::gelu", "aten::gelu_backward", "aten::_softmax",
    "aten::_softmax_backward_data", "aten::native_layer_norm", "aten::native_layer_norm_backward",
    "aten::copy_", "aten::add", "aten::mul", "aten::div", "aten::add_", "aten::mul_", "aten::div_",
    "aten::embedding_dense_backward", "aten::index_select", "aten::sum", "aten::addcdiv_", "aten::sqrt",
    "aten::lerp_", "aten::addcmul_", "aten::nll_loss_forward", "aten::nll_loss_backward",
    "aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::threshold_backward", "aten::relu",
    "aten::tanh", "aten::tanh_backward", "aten::fill_", "aten::zero_", "aten::index_add_", "aten::rsub",
    "aten::_foreach_mul_", "aten::_foreach_add_", "aten::_foreach_addcmul_", "aten::_foreach_addcdiv_",
    "aten::_foreach_sqrt", "aten::_foreach_div_", "aten::_foreach_lerp_", "aten::masked_fill_",
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="tiny", choices=("tiny", "small", "bert-base"))
    p.add_argument("--technique", default="frozen,full,lora")
    p.add_argument("--steps", type=int, default=9, help="untimed steps before the profiled one")
    args = p.parse_args()
    torch.set_num_threads(1)
    cache = os.path.join(ROOT, "bench", ".cache")
    rows = 8 if args.shape == "bert-base" else 32
    batch_file = os.path.join(cache, f"step-batch-{args.shape}-{rows}x128.json")
    encoder = os.path.join(cache, f"{args.shape}-bert.pt")
    for f in (batch_file, encoder):
        if not os.path.exists(f):
            raise SystemExit(f"{f} is missing: run `npm run bench -- --only techniques-step --shapes {args.shape}` first")
    ns = argparse.Namespace(batch=batch_file, batch_size=rows, seq_len=128, num_classes=2, lora_rank=8, lora_alpha=16.0,
                            lora_dropout=0.0, lora_targets=["attention.self.query", "attention.self.value"],
                            lora_style="peft", lr=1e-5, weight_decay=0.01, max_grad_norm=0.0, head_hidden=512,
                            dropout=0.1, seed=42)
    enc = R.EagerEncoder(encoder, None)
    batch = R.load_batch(ns, enc.config.vocab_size)
    for technique in args.technique.split(","):
        run = R.TechniqueRun(technique, enc, batch, ns)
        for _ in range(args.steps):
            run.step()
        with torch.autograd.profiler.profile() as prof:
            run.step()
        events = [e for e in prof.function_events]
        span = max(e.time_range.end for e in events) - min(e.time_range.start for e in events)
        self_time = collections.Counter()
        for e in events:
            self_time[e.name] += e.self_cpu_time_total
        kernels = sum(v for k, v in self_time.items() if k in KERNELS)
        gemm = sum(self_time[k] for k in ("aten::mm", "aten::addmm", "aten::bmm"))
        print(f"{args.shape} {technique}: step {span / 1e3:.1f} ms profiled; compute kernels {kernels / 1e3:.1f} ms "
              f"({100 * kernels / span:.0f}%, GEMMs {100 * gemm / span:.0f}%); outside them {100 - 100 * kernels / span:.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
