"""The Python PyTorch side of scripts/gpu-bench.mjs: the same training step as torch-bert's
binding.trainStep, written as a PyTorch user would, on the same encoder weights and GPU.

The encoder is the TorchScript file's weights in scripts/python/make_encoder.py's eager BertModel
(Hugging Face BertModel's math, checked against the traced file by reference_step.EagerEncoder),
as the CPU reference (scripts/python/reference_step.py) runs it. Per step: copy the batch to the
device, encoder forward in train mode, [CLS] vector, head Linear(H, 512) - ReLU - Dropout(0.1) -
Linear(512, 2) - LogSoftmax, NLL loss (float32, outside autocast), backward, AdamW(lr 1e-5,
weight decay 0.01).step(), zero_grad, loss and correct count read back (.item()).
full: every parameter trains; frozen: the encoder runs under no_grad, only the head trains;
lora: PEFT-style adapters (reference_step.LoraLinear: r 8, alpha 16, no dropout) on every
layer's attention query and value, adapters and head train.
Precision bf16: torch.autocast(bfloat16) around the forward, as torch-bert's `precision: 'bf16'`.
fp32 matmuls use TF32 when --tf32 1 (pass torch-bert's setting, so both sides match).

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
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "python"))
from reference_step import EagerEncoder, apply_lora  # noqa: E402

LORA_TARGETS = ["attention.self.query", "attention.self.value"]


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
                    model = eager.build()
                    if technique == "lora":
                        apply_lora(model, LORA_TARGETS, 8, 16.0, 0.0)
                    elif technique == "frozen":
                        for t in model.parameters():
                            t.requires_grad_(False)
                    elif technique != "full":
                        raise ValueError(f"technique {technique!r}")
                    model.to(dev).train()
                    hidden = eager.config.hidden_size
                    torch.manual_seed(42)
                    head = nn.Sequential(nn.Linear(hidden, 512), nn.ReLU(), nn.Dropout(0.1), nn.Linear(512, 2), nn.LogSoftmax(-1)).to(dev)
                    head.train()
                    params = [t for t in list(model.parameters()) + list(head.parameters()) if t.requires_grad]
                    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
                    g = torch.Generator().manual_seed(0)
                    ids = torch.randint(1000, a.vocab, (a.batch, seq), generator=g, dtype=torch.long)
                    mask = torch.ones_like(ids)
                    labels = torch.arange(a.batch) % 2
                    autocast = precision == "bf16"
                    if precision not in ("fp32", "bf16"):
                        raise ValueError(f"precision {precision!r}")

                    def step():
                        i, m, y = ids.to(dev, non_blocking=True), mask.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
                        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=autocast):
                            if technique == "frozen":
                                with torch.no_grad():
                                    h = model.encode(i, m, None)[0]
                            else:
                                h = model.encode(i, m, None)[0]
                            logp = head(h[:, 0])
                        loss = nn.functional.nll_loss(logp.float(), y)
                        loss.backward()
                        opt.step()
                        opt.zero_grad(set_to_none=True)
                        return loss.item(), int((logp.argmax(1) == y).sum().item())

                    for _ in range(a.warmup):
                        step()
                    sync(dev)
                    t0 = time.perf_counter()
                    for _ in range(a.steps):
                        step()
                    sync(dev)
                    dt = time.perf_counter() - t0
                    row.update(secondsPerStep=dt / a.steps, sequencesPerSecond=a.batch * a.steps / dt)
                    del model, head, opt, params
                except Exception as e:  # noqa: BLE001 - reported in the table
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
