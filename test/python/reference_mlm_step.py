#!/usr/bin/python3
"""One masked-language-model training step as transformers computes it, timed: BertForMaskedLM's
math (scripts/python/hf_reference.py's modules, decoder tied to the word embeddings), the
decoder over EVERY position, CrossEntropyLoss(ignore_index=-100) over the masked ones,
backward, torch.optim.AdamW (lr 5e-5, weight decay 0.01, no clipping), zero_grad(set_to_none).
For bench/mlm-step.mjs, against torch-bert's step (the head on the masked rows only).

  reference_mlm_step.py --config CFG.json --weights model.safetensors --batch B.json --warmup N --steps N
B.json: {"input_ids": [[...]], "attention_mask": [[...]], "labels": [[...]] (-100 off the masked)}.
Prints JSON: {"seconds": [per timed step], "losses": [...], "threads": torch.get_num_threads()}.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "python"))
from hf_reference import Config, load  # noqa: E402
from safetensors_io import read_safetensors  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--batch", required=True)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    a = p.parse_args()
    with open(a.config) as f:
        c = Config(json.load(f))
    raw, _ = read_safetensors(a.weights)
    weights = {(k[5:] if k.startswith("bert.") else k): v.float() for k, v in raw.items()}
    encoder, head = load(c, weights)
    head.predictions.decoder.weight = encoder.embeddings.word_embeddings.weight
    encoder.train()
    head.train()
    with open(a.batch) as f:
        b = json.load(f)
    ids = torch.tensor(b["input_ids"])
    mask = torch.tensor(b["attention_mask"])
    labels = torch.tensor(b["labels"])
    params = list({id(t): t for t in list(encoder.parameters()) + list(head.parameters())}.values())
    opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.01)
    seconds, losses = [], []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        hidden = encoder(ids, mask)
        logits = head(hidden)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            seconds.append(dt)
            losses.append(loss.item())
    json.dump({"seconds": seconds, "losses": losses, "threads": torch.get_num_threads()}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
