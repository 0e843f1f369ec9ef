"""The Python PyTorch side of scripts/gpu-bench.mjs: the same training loop as torch-bert's
binding.trainStep, written as a PyTorch user would, on the same TorchScript encoder and GPU.

Per step: copy the batch to the GPU, encoder forward (TorchScript, train mode), [CLS] vector,
head Linear(H, 512) - ReLU - Dropout(0.1) - Linear(512, 2) - LogSoftmax, NLL loss, backward,
AdamW(lr 1e-5, weight decay 0.01).step(), zero_grad, loss and correct count read back (.item()).
full: every parameter trains; frozen: encoder parameters have requires_grad False, only the head trains.

  python3 scripts/gpu-bench.py --encoder bert.pt --seqs 128,256 --techniques full,frozen --batch 32
Prints one JSON object.
"""
import argparse
import json
import time

import torch
from torch import nn


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--encoder", required=True)
    p.add_argument("--seqs", default="128,256")
    p.add_argument("--techniques", default="full,frozen")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--device", default="cuda")
    a = p.parse_args()
    dev = torch.device(a.device)
    results = []
    for seq in [int(s) for s in a.seqs.split(",")]:
        for technique in a.techniques.split(","):
            row = {"seq": seq, "technique": technique, "batch": a.batch}
            try:
                enc = torch.jit.load(a.encoder, map_location=dev)
                hidden = next(t for n, t in enc.named_parameters() if n.endswith("word_embeddings.weight")).shape[1]
                torch.manual_seed(42)
                head = nn.Sequential(nn.Linear(hidden, 512), nn.ReLU(), nn.Dropout(0.1), nn.Linear(512, 2), nn.LogSoftmax(-1)).to(dev)
                if technique == "frozen":
                    for t in enc.parameters():
                        t.requires_grad_(False)
                    params = list(head.parameters())
                else:
                    params = list(enc.parameters()) + list(head.parameters())
                opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
                enc.train()
                head.train()
                g = torch.Generator().manual_seed(0)
                ids = torch.randint(1000, a.vocab, (a.batch, seq), generator=g, dtype=torch.long)
                mask = torch.ones_like(ids)
                labels = torch.arange(a.batch) % 2

                def step():
                    i, m, y = ids.to(dev), mask.to(dev), labels.to(dev)
                    out = enc(i, m)
                    h = out[0] if isinstance(out, (tuple, list)) else (next(iter(out.values())) if isinstance(out, dict) else out)
                    logp = head(h[:, 0])
                    loss = nn.functional.nll_loss(logp, y)
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
                del enc, head, opt, params
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
        "results": results,
    }))


if __name__ == "__main__":
    main()
