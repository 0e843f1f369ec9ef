#!/usr/bin/python3
"""One extractive question-answering training step as transformers computes it, timed:
BertForQuestionAnswering's math (scripts/python/hf_reference.py's encoder, loaded from a Hugging
Face folder's config.json and model.safetensors, with the folder's hidden and attention dropout,
fed the token types of the question / context pair; then qa_outputs, a Linear(hidden, 2) over
EVERY token, no dropout before it, as BERT's head has none), split into start and end logits
[B, T]; loss = (CrossEntropyLoss(start_logits, start_positions) + CrossEntropyLoss(end_logits,
end_positions)) / 2 over every position of the padded rows (positions clamped to [0, T] and T
ignored, as transformers does), backward, torch.optim.AdamW (lr 5e-5, weight decay 0.01, one
group, no clipping), zero_grad(set_to_none). For bench/qa-step.mjs, against torch-bert's step
(buildClassifier's 'question-answering': the 2B start and end rows, log-softmax over each row).

qa_outputs starts as BertPreTrainedModel._init_weights starts it and as torch-bert's
buildClassifier (seed) does: after the encoder and the Linear are built, torch.manual_seed(seed),
then weight = torch.empty(2, hidden).normal_(0, initializer_range), bias zero.

The check step runs in eval mode, so that no dropout mask is drawn and its loss and gradient
norm are the ones torch-bert's first step computes (the bench compares them); the timed steps
run in train mode.

  reference_qa_step.py --folder DIR --batch B.json [--seed S] [--threads N] --warmup N --steps N
    the check step, --warmup steps, then --steps timed steps; prints JSON {"seconds": [per timed
    step], "losses": [...], "checkLoss", "checkGradNorm", "threads": torch.get_num_threads()}
  reference_qa_step.py --folder DIR --batch B.json [--seed S] [--threads N] --serve
    keeps the model and batch loaded and answers one JSON line per request line on stdin
    (scripts/python/line_server.py): first {"ready": true, "threads", "torch"}; then
    {"cmd": "check"} -> {"loss", "gradNorm"} (the check step; first),
    {"cmd": "steps", "n": N} -> {"seconds": [...], "losses": [...]}, {"cmd": "quit"} exits.
B.json: {"input_ids": [[...]], "attention_mask": [[...]], "token_type_ids": [[...]],
"start_positions": [...], "end_positions": [...]} (one start and one end per row).
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


class QaStep:
    """The model, its AdamW and the batch; step() is one training step."""

    def __init__(self, folder: str, batch_file: str, seed: int):
        cfg = read_config(folder)
        if cfg["model_type"] != "bert":
            raise SystemExit(f"reference_qa_step.py: a BERT folder is expected, got model_type {cfg['model_type']}")
        c = reference_config(cfg, pooler=False)
        c.hidden_dropout = cfg["hidden_dropout_prob"]
        c.attention_dropout = cfg["attention_probs_dropout_prob"]
        raw, _ = read_safetensors(os.path.join(folder, "model.safetensors"))
        weights = {(k[5:] if k.startswith("bert.") else k): v.float() for k, v in raw.items()}
        self.encoder, _ = load(c, weights)  # the encoder's keys strictly; the pooler's are not read
        self.qa_outputs = nn.Linear(c.hidden_size, 2)  # its default init is overwritten below
        torch.manual_seed(seed)
        with torch.no_grad():
            self.qa_outputs.weight.copy_(torch.empty(2, c.hidden_size).normal_(0.0, cfg.get("initializer_range", 0.02)))
            self.qa_outputs.bias.zero_()
        self.modules = [self.encoder, self.qa_outputs]
        with open(batch_file) as f:
            b = json.load(f)
        self.ids = torch.tensor(b["input_ids"])
        self.mask = torch.tensor(b["attention_mask"])
        self.types = torch.tensor(b["token_type_ids"])
        self.starts = torch.tensor(b["start_positions"])
        self.ends = torch.tensor(b["end_positions"])
        self.params = list(self.encoder.parameters()) + list(self.qa_outputs.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=5e-5, weight_decay=0.01)

    def step(self, grad_norm: bool = False):
        hidden = self.encoder(self.ids, self.mask, self.types)
        logits = self.qa_outputs(hidden)
        start_logits, end_logits = logits.split(1, dim=-1)
        start_logits = start_logits.squeeze(-1).contiguous()
        end_logits = end_logits.squeeze(-1).contiguous()
        ignored = start_logits.size(1)
        starts = self.starts.clamp(0, ignored)
        ends = self.ends.clamp(0, ignored)
        loss = (F.cross_entropy(start_logits, starts, ignore_index=ignored) + F.cross_entropy(end_logits, ends, ignore_index=ignored)) / 2
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


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--folder", required=True)
    p.add_argument("--batch", required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    p.add_argument("--serve", action="store_true", help="answer check/steps requests, one JSON line each, on stdin/stdout")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    run = QaStep(a.folder, a.batch, a.seed)
    if a.serve:
        serve_lines({"threads": torch.get_num_threads(), "torch": torch.__version__},
                    {"check": lambda _: run.check(), "steps": lambda req: run.steps(int(req["n"]))})
        return 0
    check = run.check()
    run.steps(a.warmup)
    timed = run.steps(a.steps)
    json.dump({**timed, "checkLoss": check["loss"], "checkGradNorm": check["gradNorm"], "threads": torch.get_num_threads()}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
