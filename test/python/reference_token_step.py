#!/usr/bin/python3
"""One token-classification training step as transformers computes it, timed:
BertForTokenClassification's math (scripts/python/hf_reference.py's encoder, loaded from a Hugging
Face folder's config.json and model.safetensors, with the folder's hidden and attention dropout;
then dropout (hidden_dropout_prob) and a Linear classifier over EVERY position),
F.cross_entropy(ignore_index=-100) over the labelled positions (the words' first tokens),
backward, torch.optim.AdamW (lr 5e-5, weight decay 0.01, one group, no clipping),
zero_grad(set_to_none). For bench/token-step.mjs, against torch-bert's step (the head on the
words' first tokens only).

The classifier starts as BertPreTrainedModel._init_weights starts it and as torch-bert's
buildClassifier (seed) does: torch.manual_seed(seed) after the encoder is built, weight
normal(0, initializer_range), bias zero.

The first step (the check step, untimed) runs in eval mode, so that no dropout mask is drawn
and its loss is the one torch-bert's first step computes (the bench compares them); then
--warmup steps and --steps timed steps in train mode.

  reference_token_step.py --folder DIR --batch B.json --num-labels N --seed S --warmup N --steps N [--threads N]
B.json: {"input_ids": [[...]], "attention_mask": [[...]], "labels": [[...]] (-100 off the words' first tokens)}.
Prints JSON: {"seconds": [per timed step], "checkLoss": float, "checkGradNorm": float, "losses": [...],
"threads": torch.get_num_threads()}.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "python"))
from hf_folder_reference import read_config, reference_config  # noqa: E402
from hf_reference import load  # noqa: E402
from safetensors_io import read_safetensors  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--folder", required=True)
    p.add_argument("--batch", required=True)
    p.add_argument("--num-labels", type=int, required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)

    cfg = read_config(a.folder)
    if cfg["model_type"] != "bert":
        raise SystemExit(f"reference_token_step.py: a BERT folder is expected, got model_type {cfg['model_type']}")
    c = reference_config(cfg, pooler=False)
    c.hidden_dropout = cfg["hidden_dropout_prob"]
    c.attention_dropout = cfg["attention_probs_dropout_prob"]
    raw, _ = read_safetensors(os.path.join(a.folder, "model.safetensors"))
    weights = {(k[5:] if k.startswith("bert.") else k): v.float() for k, v in raw.items()}
    encoder, _ = load(c, weights)  # the encoder's keys strictly; the pooler's are not read

    torch.manual_seed(a.seed)
    classifier = nn.Linear(c.hidden_size, a.num_labels)
    with torch.no_grad():
        classifier.weight.normal_(0.0, cfg.get("initializer_range", 0.02))
        classifier.bias.zero_()
    head_dropout = cfg.get("classifier_dropout")
    dropout = nn.Dropout(cfg["hidden_dropout_prob"] if head_dropout is None else head_dropout)
    modules = [encoder, dropout, classifier]

    with open(a.batch) as f:
        b = json.load(f)
    ids = torch.tensor(b["input_ids"])
    mask = torch.tensor(b["attention_mask"])
    labels = torch.tensor(b["labels"])
    params = list(encoder.parameters()) + list(classifier.parameters())
    opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.01)

    def step():
        hidden = encoder(ids, mask)
        logits = classifier(dropout(hidden))
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100)
        loss.backward()
        norm = None
        if check:
            norm = torch.sqrt(sum((t.grad.double() ** 2).sum() for t in params if t.grad is not None)).item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item() if check else loss, norm

    # The check step: eval mode (no dropout), untimed.
    check = True
    for m in modules:
        m.eval()
    check_loss, check_norm = step()
    check = False
    for m in modules:
        m.train()

    seconds, losses = [], []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss, _ = step()
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            seconds.append(dt)
            losses.append(loss.item())
    json.dump(
        {"seconds": seconds, "checkLoss": check_loss, "checkGradNorm": check_norm, "losses": losses,
         "threads": torch.get_num_threads()},
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
