"""The Python PyTorch side of scripts/gpu-bench.mjs: the same training step as torch-bert's
binding.trainStep, written as a PyTorch user would, on the same encoder weights and GPU.

Each configuration is scripts/python/reference_step.py's TechniqueRun, the CPU reference's
step, on the device: the TorchScript file's weights in make_encoder.py's eager BertModel (Hugging
Face BertModel's math, checked against the traced file), [CLS] vector, head Linear(H, 512) -
ReLU - Dropout(0.1) - Linear(512, 2) - LogSoftmax seeded 42, NLL loss (float32, outside
autocast), backward, AdamW(lr 1e-5, weight decay 0.01), zero_grad, loss and correct count read
back (.item()); the batch is copied to the device every step. full: every parameter trains;
frozen: the encoder runs under no_grad, only the head trains; lora: PEFT-style adapters (r 8,
alpha 16, no dropout) on every layer's attention query and value. Precision bf16:
torch.autocast(bfloat16) around the forward, as torch-bert's `precision: 'bf16'`. fp32 matmuls
use TF32 when --tf32 1 (pass torch-bert's setting, so both sides match).

  python3 scripts/gpu-bench.py --encoder bert.pt --seqs 128,256 --techniques full,lora,frozen \
      --precisions fp32,bf16 --batch 32 --tf32 1
Prints one JSON object.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "python"))
from reference_step import EagerEncoder, TechniqueRun  # noqa: E402

# TechniqueRun's settings, as bench/technique-model.mjs sets up torch-bert's side.
SETTINGS = dict(num_classes=2, head_hidden=512, dropout=0.1, seed=42, lr=1e-5, weight_decay=0.01, max_grad_norm=0.0,
                lora_targets=["attention.self.query", "attention.self.value"], lora_rank=8, lora_alpha=16.0,
                lora_dropout=0.0, lora_style="peft")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--encoder", required=True)
    p.add_argument("--seqs", default="128,256")
    p.add_argument("--techniques", default="full,lora,frozen")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--heads", type=int, help="attention heads (default: inferred)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tf32", type=int, default=0, help="allow TF32 matmuls in fp32 (1) or not (0)")
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = bool(a.tf32)
    torch.backends.cudnn.allow_tf32 = bool(a.tf32)
    eager = EagerEncoder(a.encoder, a.heads)
    results = []
    for seq in [int(s) for s in a.seqs.split(",")]:
        for technique in a.techniques.split(","):
            for precision in a.precisions.split(","):
                row = {"seq": seq, "technique": technique, "precision": precision, "batch": a.batch}
                try:
                    g = torch.Generator().manual_seed(0)
                    ids = torch.randint(1000, a.vocab, (a.batch, seq), generator=g, dtype=torch.long)
                    batch = (ids, torch.ones_like(ids), torch.arange(a.batch) % 2)
                    run = TechniqueRun(technique, eager, batch, argparse.Namespace(**SETTINGS), device=dev, precision=precision)
                    for _ in range(a.warmup):
                        run.step()
                    sync(dev)
                    t0 = time.perf_counter()
                    for _ in range(a.steps):
                        run.step()
                    sync(dev)
                    dt = time.perf_counter() - t0
                    row.update(secondsPerStep=dt / a.steps, sequencesPerSecond=a.batch * a.steps / dt)
                    del run
                except (Exception, SystemExit) as e:  # noqa: BLE001 - reported in the table (TechniqueRun exits on bad settings)
                    row["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                results.append(row)
    print(json.dumps({
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "tf32": bool(a.tf32),
        "results": results,
    }))


if __name__ == "__main__":
    main()
