#!/usr/bin/python3
"""One token-classification training step as transformers computes it, timed:
BertForTokenClassification's math (scripts/python/hf_reference.py's encoder, loaded from a Hugging
Face folder's config.json and model.safetensors, with the folder's hidden and attention dropout;
then dropout (classifier_dropout, else hidden_dropout_prob) and a Linear classifier over EVERY
position), F.cross_entropy(ignore_index=-100) over the labelled positions (the words' first
tokens), backward, torch.optim.AdamW (lr 5e-5, weight decay 0.01, one group, no clipping),
zero_grad(set_to_none). For bench/token-step.mjs, against torch-bert's step (the head on the
words' first tokens only).

The classifier starts as BertPreTrainedModel._init_weights starts it and as torch-bert's
buildClassifier (seed) does: after the encoder and the Linear are built, torch.manual_seed(seed),
then weight = torch.empty(numLabels, hidden).normal_(0, initializer_range), bias zero.

The check step runs in eval mode, so that no dropout mask is drawn and its loss and gradient
norm are the ones torch-bert's first step computes (the bench compares them); the timed steps
run in train mode.

  reference_token_step.py --folder DIR --batch B.json --num-labels N [--seed S] [--threads N] --warmup N --steps N
    the check step, --warmup steps, then --steps timed steps; prints JSON {"seconds": [per timed
    step], "losses": [...], "checkLoss", "checkGradNorm", "threads": torch.get_num_threads()}
  reference_token_step.py --folder DIR --batch B.json --num-labels N [--seed S] [--threads N] --serve
    keeps the model and batch loaded and answers one JSON line per request line on stdin (the
    bench interleaves blocks of its steps and of these): first {"ready": true, "threads",
    "torch"}; then {"cmd": "check"} -> {"loss", "gradNorm"} (the check step; first),
    {"cmd": "steps", "n": N} -> {"seconds": [...], "losses": [...]}, {"cmd": "quit"} exits.
B.json: {"input_ids": [[...]], "attention_mask": [[...]], "labels": [[...]] (-100 off the words' first tokens)}.
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
from line_server import serve_lines  # noqa: E402
from safetensors_io import read_safetensors  # noqa: E402


class TokenStep:
    """The model, its AdamW and the batch; step() is one training step."""

    def __init__(self, folder: str, batch_file: str, num_labels: int, seed: int):
        cfg = read_config(folder)
        if cfg["model_type"] != "bert":
            raise SystemExit(f"reference_token_step.py: a BERT folder is expected, got model_type {cfg['model_type']}")
        c = reference_config(cfg, pooler=False)
        c.hidden_dropout = cfg["hidden_dropout_prob"]
        c.attention_dropout = cfg["attention_probs_dropout_prob"]
        raw, _ = read_safetensors(os.path.join(folder, "model.safetensors"))
        weights = {(k[5:] if k.startswith("bert.") else k): v.float() for k, v in raw.items()}
        self.encoder, _ = load(c, weights)  # the encoder's keys strictly; the pooler's are not read
        self.classifier = nn.Linear(c.hidden_size, num_labels)  # its default init is overwritten below
        torch.manual_seed(seed)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.empty(num_labels, c.hidden_size).normal_(0.0, cfg.get("initializer_range", 0.02)))
            self.classifier.bias.zero_()
        head_dropout = cfg.get("classifier_dropout")
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"] if head_dropout is None else head_dropout)
        self.modules = [self.encoder, self.dropout, self.classifier]
        with open(batch_file) as f:
            b = json.load(f)
        self.ids = torch.tensor(b["input_ids"])
        self.mask = torch.tensor(b["attention_mask"])
        self.labels = torch.tensor(b["labels"])
        self.params = list(self.encoder.parameters()) + list(self.classifier.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=5e-5, weight_decay=0.01)

    def step(self, grad_norm: bool = False):
        hidden = self.encoder(self.ids, self.mask)
        logits = self.classifier(self.dropout(hidden))
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), self.labels.view(-1), ignore_index=-100)
        loss.backward()
        norm = None
        if grad_norm:
            norm = torch.sqrt(sum((t.grad.double() ** 2).sum() for t in self.params if t.grad is not None)).item()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss, norm

    def check(self):
        """One step in eval mode (no dropout), untimed: its loss and gradient norm."""
        for m in self.modules:
            m.eval()
        loss, norm = self.step(grad_norm=True)
        for m in self.modules:
            m.train()
        return {"loss": loss.item(), "gradNorm": norm}

    def steps(self, n: int):
        seconds, losses = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            loss, _ = self.step()
            seconds.append(time.perf_counter() - t0)
            losses.append(loss.item())
        return {"seconds": seconds, "losses": losses}


def serve(run: TokenStep) -> None:
    """--serve: answer {"cmd": "check"} and {"cmd": "steps", "n": N} (line_server.py)."""
    serve_lines({"threads": torch.get_num_threads(), "torch": torch.__version__},
                {"check": lambda _: run.check(), "steps": lambda req: run.steps(int(req["n"]))})


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--folder", required=True)
    p.add_argument("--batch", required=True)
    p.add_argument("--num-labels", type=int, required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    p.add_argument("--serve", action="store_true", help="answer check/steps requests, one JSON line each, on stdin/stdout")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    run = TokenStep(a.folder, a.batch, a.num_labels, a.seed)
    if a.serve:
        serve(run)
        return 0
    check = run.check()
    run.steps(a.warmup)
    timed = run.steps(a.steps)
    json.dump({**timed, "checkLoss": check["loss"], "checkGradNorm": check["gradNorm"], "threads": torch.get_num_threads()}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
