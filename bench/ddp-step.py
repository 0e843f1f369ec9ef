#!/usr/bin/python3
"""One rank of the `ddp-step` benchmark's PyTorch side (bench/ddp-step.mjs): a full fine-tuning
training step of the same classifier torch-bert's side trains (test/python/reference_step.py's
eager BERT with the traced encoder's weights, head Linear(H, 512) - ReLU - Dropout(0.1) -
Linear(512, 2) - LogSoftmax seeded 42, NLLLoss, AdamW lr 1e-5 weight decay 0.01), on the same
batch, as a PyTorch user writes data-parallel training: torch.distributed with Gloo from
torchrun's variables (env://), the model wrapped in DistributedDataParallel (its defaults:
25 MB buckets, gradients all-reduced from autograd hooks during backward).

--mode ddp: DistributedDataParallel; --mode local: the same two processes without DDP (no
all-reduce: the cost of communication is the difference).

Each timed step: forward, loss, backward, optimizer.step(), zero_grad(), the loss and the number
of correct predictions read back (what torch-bert's step returns). --warmup untimed steps first;
the ranks start the timed steps together (a barrier). Prints {"rank", "steps": [seconds...]} on
stdout.

  RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 /usr/bin/python3 bench/ddp-step.py \\
      --encoder enc.pt --batch batch.json --mode ddp --warmup 2 --steps 10 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "test", "python"))

from reference_step import EagerEncoder  # noqa: E402


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, hidden: int):
        super().__init__()
        self.encoder = encoder
        torch.manual_seed(42)
        self.head = nn.Sequential(nn.Linear(hidden, 512), nn.ReLU(), nn.Dropout(0.1), nn.Linear(512, 2), nn.LogSoftmax(dim=-1))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.encode(ids, mask, None)[0][:, 0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoder", required=True)
    p.add_argument("--batch", required=True, help="JSON {input_ids, attention_mask, labels}")
    p.add_argument("--mode", choices=("ddp", "local"), required=True)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo")
    with open(args.batch, encoding="utf-8") as f:
        spec = json.load(f)
    ids = torch.tensor(spec["input_ids"], dtype=torch.long)
    mask = torch.tensor(spec["attention_mask"], dtype=torch.long)
    labels = torch.tensor(spec["labels"], dtype=torch.long)
    enc = EagerEncoder(args.encoder, None)
    model: nn.Module = Classifier(enc.build(), enc.config.hidden_size)
    model.train()
    # The pooler is not on the loss's path: frozen (as torch-bert's side), so DDP needs no
    # find_unused_parameters.
    for name, q in model.named_parameters():
        if ".pooler." in f".{name}":
            q.requires_grad_(False)
    params = [q for q in model.parameters() if q.requires_grad]
    if args.mode == "ddp":
        model = DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01)
    loss_fn = nn.NLLLoss()

    def step() -> float:
        t0 = time.perf_counter()
        logp = model(ids, mask)
        loss = loss_fn(logp, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss.item()
        int((logp.argmax(-1) == labels).sum())
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        step()
    dist.barrier()
    times = [step() for _ in range(args.steps)]
    dist.barrier()
    print(json.dumps({"rank": dist.get_rank(), "steps": times}), flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
