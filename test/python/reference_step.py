#!/usr/bin/python3
"""Plain-PyTorch reference of ONE training step per technique, timed (for `npm run bench`).

Written as a PyTorch user would write it, with nothing but torch:
  - an EAGER BERT: the Hugging Face-exact module classes of make_encoder.py, with the weights
    of the traced encoder file (`torch.jit.load(file).state_dict()`). The traced file was
    traced in eval mode, so it has no dropout; the eager model is built with hidden and
    attention dropout 0 so that both compute the same function (checked: the eager last hidden
    state must match the traced one within 1e-4 before anything is timed). The number of
    attention heads is not stored in the weights: --heads, else the first divisor of the hidden
    size (head size 64 first) that reproduces the traced output;
  - a head on the [CLS] vector: Linear(H, head_hidden) - ReLU - Dropout(dropout) -
    Linear(head_hidden, classes) - LogSoftmax, created right after torch.manual_seed(seed);
  - NLLLoss, torch.optim.AdamW(lr, weight_decay) over the trainable parameters (one group),
    optional clip_grad_norm_ (off by default), optimizer.zero_grad() after the step;
  - techniques:
      frozen: the encoder in eval mode under torch.no_grad(); only the head trains;
      full:   every encoder parameter and the head train;
      lora:   PEFT-style LoRA on every layer's attention `query` and `value`:
              y = x @ W0^T + b + (alpha / r) * (dropout(x) @ A^T) @ B^T, with W0 and b frozen,
              A [r, in] kaiming-uniform(a=sqrt(5)) and B [out, r] zeros (PEFT's init); only
              A, B and the head train; the rest of the encoder is frozen;
      adapter: Houlsby bottleneck adapters (as AdapterHub's, placed as torch-bert places them):
              every layer's attention output projection and feed-forward output projection
              `dense` followed by h + up(act(down(h))), down [size, H] ~ N(0, 0.02), up and the
              biases zero; only adapters and head train.

Each timed step is: encoder forward, head forward, loss, backward, (clip,) optimizer.step(),
zero_grad, and reading the loss and the number of correct predictions back as Python numbers
(what the library's step returns). The same batch is used for every step. Each technique runs
on a fresh model (weights reloaded, head re-seeded), `--warmup` untimed steps, then `--steps`
timed ones.

Input batch: --batch FILE (JSON {"input_ids": [[...]], "attention_mask": [[...]], "labels": [...]},
e.g. real tokenized reviews; --batch-size/--seq-len are then read from it), else random ids in
[1000, vocab) (or [1, vocab) for small vocabularies) with full masks, labels alternating.

Output (stdout, or --out FILE), JSON:
  { "encoder", "batch": [B, T], "threads", "torch", "config": {...}, "heads",
    "techniques": { "<technique>": { "stepSeconds": {"median", "min", "max", "all": [...]},
                                     "trainableParameters", "firstLoss", "lastLoss" } } }

With --serve it instead keeps the encoder and batch loaded and answers setup/steps requests, one
JSON line each, on stdin/stdout (see serve()): the benchmark uses that to interleave blocks of its
own steps with these on a noisy machine, without paying Python's start-up each time.

  /usr/bin/python3 test/python/reference_step.py --encoder enc.pt --technique frozen,full,lora \\
      --batch batch.json --warmup 2 --steps 10 [--lora-rank 8 --lora-alpha 16] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

HERE = os.path.dirname(os.path.abspath(__file__))
# make_encoder.py (the eager BERT's module classes) lives with the package's scripts.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts", "python"))

from line_server import serve_lines  # noqa: E402
from make_encoder import BertModel2, BertModel3, Config  # noqa: E402

TECHNIQUES = ("frozen", "full", "lora", "adapter")
BUFFERS = {"embeddings.position_ids", "embeddings.token_type_ids"}


def log(msg: str) -> None:
    print(f"[reference_step] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------
# The eager encoder, from the traced file's weights
# ----------------------------------------------------------------------------------------
def config_from_state(sd: Dict[str, Tensor], heads: int) -> Config:
    word = sd["embeddings.word_embeddings.weight"]
    layers = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layer\.(\d+)\.", k)))
    return Config(
        vocab_size=word.shape[0],
        hidden=word.shape[1],
        layers=layers,
        heads=heads,
        intermediate=sd["encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position=sd["embeddings.position_embeddings.weight"].shape[0],
        type_vocab=sd["embeddings.token_type_embeddings.weight"].shape[0],
        dropout=0.0,  # the traced file has no dropout (traced in eval mode)
    )


def first_item(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, dict):
        return next(iter(out.values()))
    return out[0]


class EagerEncoder:
    """The traced file's weights in make_encoder.py's eager BertModel (same math, checked)."""

    def __init__(self, path: str, heads: Optional[int]):
        traced = torch.jit.load(path, map_location="cpu").eval()
        self.arity = len(traced.forward.schema.arguments) - 1
        sd = {k: v.detach().clone() for k, v in traced.state_dict().items() if k not in BUFFERS}
        self.state = sd
        hidden = sd["embeddings.word_embeddings.weight"].shape[1]
        if heads:
            candidates = [heads]
        else:
            preferred = [hidden // 64] if hidden % 64 == 0 else []
            candidates = preferred + [h for h in range(1, hidden + 1) if hidden % h == 0 and h not in preferred]
        gen = torch.Generator().manual_seed(0)
        vocab = sd["embeddings.word_embeddings.weight"].shape[0]
        ids = torch.randint(1, vocab, (2, 16), generator=gen)
        mask = torch.ones_like(ids)
        mask[1, 10:] = 0
        with torch.no_grad():
            want = first_item(traced(ids, mask) if self.arity == 2 else traced(ids, mask, torch.zeros_like(ids)))
            for h in candidates:
                self.config = config_from_state(sd, h)
                got = self.build().encode(ids, mask, None)[0]
                diff = float((got - want).abs().max())
                if diff < 1e-4:
                    self.heads = h
                    self.check_diff = diff
                    return
        raise SystemExit(f"{path}: no head count in {candidates} makes the eager BERT match the traced one; pass --heads")

    def build(self) -> nn.Module:
        model = (BertModel2 if self.arity == 2 else BertModel3)(self.config)
        model.load_state_dict(self.state, strict=True)
        return model


# ----------------------------------------------------------------------------------------
# PEFT-style LoRA
# ----------------------------------------------------------------------------------------
class LoraLinear(nn.Module):
    """peft.tuners.lora.Linear: base(x) + lora_B(lora_A(dropout(x))) * (alpha / r)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float):
        super().__init__()
        self.base_layer = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / r

    def forward(self, x: Tensor) -> Tensor:
        return self.base_layer(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling


class WeightSpaceLoraLinear(LoraLinear):
    """The same adapters kept in weight space (as torch-bert does): y = x @ (W0 + (alpha/r) B A)^T + b.
    Same function and gradients as LoraLinear without dropout; costs a full-size weight gradient
    per adapted layer in backward. For diagnosis only (--lora-style weight)."""

    def forward(self, x: Tensor) -> Tensor:
        w = torch.addmm(self.base_layer.weight, self.lora_B.weight, self.lora_A.weight, alpha=self.scaling)
        return nn.functional.linear(x, w, self.base_layer.bias)


def apply_lora(model: nn.Module, targets: List[str], r: int, alpha: float, dropout: float, style: str = "peft") -> int:
    for p in model.parameters():
        p.requires_grad_(False)
    adapted = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            path = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and any(path.endswith(t) for t in targets):
                setattr(module, child_name, (LoraLinear if style == "peft" else WeightSpaceLoraLinear)(child, r, alpha, dropout))
                adapted += 1
    if not adapted:
        raise SystemExit(f"no linear module matches the LoRA targets {targets}")
    return adapted


# ----------------------------------------------------------------------------------------
# Houlsby bottleneck adapters
# ----------------------------------------------------------------------------------------
ADAPTER_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU}


class HoulsbyAdapter(nn.Module):
    """A sub-layer's output projection, then the bottleneck: h = dense(x); h + up(act(down(h)))."""

    def __init__(self, dense: nn.Linear, size: int, activation: str):
        super().__init__()
        self.dense = dense
        self.down = nn.Linear(dense.out_features, size)
        self.act = ADAPTER_ACTIVATIONS[activation]()
        self.up = nn.Linear(size, dense.out_features)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dense(x)
        return h + self.up(self.act(self.down(h)))


def apply_adapters(model: nn.Module, size: int, activation: str) -> int:
    for p in model.parameters():
        p.requires_grad_(False)
    adapted = 0
    for name, module in list(model.named_modules()):
        if (name.endswith("attention.output") or name.endswith(".output")) and isinstance(getattr(module, "dense", None), nn.Linear):
            module.dense = HoulsbyAdapter(module.dense, size, activation)
            adapted += 1
    if not adapted:
        raise SystemExit("no attention.output / output sub-layer with a dense projection to adapt")
    return adapted


# ----------------------------------------------------------------------------------------
# One technique: fresh model, warmup, timed steps
# ----------------------------------------------------------------------------------------
class TechniqueRun:
    """One technique on a fresh model: the eager encoder with the file's weights, a freshly
    seeded head, the technique's trainable parameters and AdamW. `step()` is one timed step.
    `device`: where model and head live (the batch is copied there every step, as a training
    loop does); `precision` 'bf16': autocast around the forward, the loss in float32
    (scripts/gpu/gpu-bench.py)."""

    def __init__(self, technique: str, enc: EagerEncoder, batch: Tuple[Tensor, Tensor, Tensor], args: argparse.Namespace,
                 device: Optional[torch.device] = None, precision: str = "fp32"):
        if precision not in ("fp32", "bf16"):
            raise SystemExit(f"precision must be fp32 or bf16; got {precision!r}")
        self.device = device or torch.device("cpu")
        self.autocast = precision == "bf16"
        self.ids, self.mask, self.labels = batch
        self.max_grad_norm = args.max_grad_norm
        model = enc.build()
        torch.manual_seed(args.seed)
        head = nn.Sequential(
            nn.Linear(enc.config.hidden_size, args.head_hidden),
            nn.ReLU(),
            nn.Dropout(args.dropout),
            nn.Linear(args.head_hidden, args.num_classes),
            nn.LogSoftmax(dim=-1),
        )
        if technique == "frozen":
            for p in model.parameters():
                p.requires_grad_(False)
            model.eval()
        elif technique == "full":
            model.train()
        elif technique == "lora":
            apply_lora(model, args.lora_targets, args.lora_rank, args.lora_alpha, args.lora_dropout, args.lora_style)
            model.train()
        elif technique == "adapter":
            apply_adapters(model, args.adapter_size, args.adapter_activation)
            model.train()
        else:
            raise SystemExit(f"technique must be one of {TECHNIQUES}; got {technique!r}")
        head.train()
        model.to(self.device)
        head.to(self.device)
        self.model, self.head, self.frozen = model, head, technique == "frozen"
        self.params = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=args.lr, weight_decay=args.weight_decay)
        self.loss_fn = nn.NLLLoss()
        self.trainable_parameters = sum(p.numel() for p in self.params)

    def step(self) -> Tuple[float, float, int]:
        """One step; returns (seconds, loss, correct)."""
        t0 = time.perf_counter()
        dev = self.device
        # On the CPU in fp32 (the CPU benchmarks) nothing is added to the step: no copies, no
        # autocast region.
        ids, mask, labels = self.ids, self.mask, self.labels
        if dev.type != "cpu":
            ids, mask, labels = (t.to(dev, non_blocking=True) for t in (ids, mask, labels))
        autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with autocast:
            if self.frozen:
                with torch.no_grad():
                    hidden = self.model.encode(ids, mask, None)[0]
            else:
                hidden = self.model.encode(ids, mask, None)[0]
            logp = self.head(hidden[:, 0])
        loss = self.loss_fn(logp.float() if self.autocast else logp, labels)
        loss.backward()
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()
        loss_value, correct = loss.item(), int((logp.argmax(-1) == labels).sum())
        return time.perf_counter() - t0, loss_value, correct


def summary(times: List[float]) -> Dict[str, Any]:
    return {
        "median": statistics.median(times) if times else None,
        "min": min(times) if times else None,
        "max": max(times) if times else None,
        "all": times,
    }


def run_technique(technique: str, enc: EagerEncoder, batch: Tuple[Tensor, Tensor, Tensor], args: argparse.Namespace) -> Dict[str, Any]:
    run = TechniqueRun(technique, enc, batch, args)
    losses: List[float] = []
    for _ in range(args.warmup):
        losses.append(run.step()[1])
    times: List[float] = []
    for _ in range(args.steps):
        seconds, loss, _ = run.step()
        times.append(seconds)
        losses.append(loss)
    return {
        "stepSeconds": summary(times),
        "trainableParameters": run.trainable_parameters,
        "firstLoss": losses[0] if losses else None,
        "lastLoss": losses[-1] if losses else None,
    }


def serve(enc: EagerEncoder, batch: Tuple[Tensor, Tensor, Tensor], args: argparse.Namespace) -> None:
    """--serve: keep the encoder and batch loaded and answer one JSON line per request line on
    stdin, so a benchmark can interleave blocks of our steps and of these with no start-up cost:
      {"cmd": "setup", "technique": T}  -> {"ok": true, "trainableParameters": n}   (fresh model for T)
      {"cmd": "steps", "n": N}          -> {"seconds": [...], "losses": [...]}      (N steps of the current T)
      {"cmd": "quit"}                   -> exits
    """
    run: Optional[TechniqueRun] = None

    def setup(req: Dict[str, Any]) -> Dict[str, Any]:
        nonlocal run
        run = None  # free the previous model first
        run = TechniqueRun(req["technique"], enc, batch, args)
        return {"ok": True, "trainableParameters": run.trainable_parameters}

    def steps(req: Dict[str, Any]) -> Dict[str, Any]:
        if run is None:
            return {"error": "no technique set up"}
        results = [run.step() for _ in range(int(req["n"]))]
        return {"seconds": [r[0] for r in results], "losses": [r[1] for r in results]}

    serve_lines({"threads": torch.get_num_threads(), "torch": torch.__version__, "heads": enc.heads}, {"setup": setup, "steps": steps})


def load_batch(args: argparse.Namespace, vocab: int) -> Tuple[Tensor, Tensor, Tensor]:
    if args.batch:
        with open(args.batch, encoding="utf-8") as f:
            spec = json.load(f)
        ids = torch.tensor(spec["input_ids"], dtype=torch.long)
        mask = torch.tensor(spec["attention_mask"], dtype=torch.long)
        labels = torch.tensor(spec["labels"], dtype=torch.long)
        if ids.dim() != 2 or ids.shape != mask.shape or labels.shape != (ids.shape[0],):
            raise SystemExit(f"{args.batch}: shapes input_ids {list(ids.shape)}, attention_mask {list(mask.shape)}, labels {list(labels.shape)}")
        if int(ids.max()) >= vocab:
            raise SystemExit(f"{args.batch}: token id {int(ids.max())} is outside the encoder's vocabulary ({vocab})")
    else:
        gen = torch.Generator().manual_seed(args.seed)
        low = 1000 if vocab > 2000 else 1
        ids = torch.randint(low, vocab, (args.batch_size, args.seq_len), generator=gen)
        mask = torch.ones_like(ids)
        labels = torch.arange(args.batch_size) % args.num_classes
    if int(labels.max()) >= args.num_classes:
        raise SystemExit(f"labels must be < --num-classes {args.num_classes}")
    return ids, mask, labels


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Time one training step per technique in plain PyTorch (eager BERT).")
    p.add_argument("--encoder", required=True, help="traced encoder file (weights and shape come from it)")
    p.add_argument("--technique", default="frozen", help="frozen, full, lora, adapter, or a comma-separated list (each on a fresh model)")
    p.add_argument("--batch", help="JSON batch {input_ids, attention_mask, labels}; default random ids with full masks")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--num-classes", type=int, default=2)
    p.add_argument("--heads", type=int, help="attention heads (default: inferred by matching the traced output)")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-dropout", type=float, default=0.0)
    p.add_argument("--lora-targets", default="attention.self.query,attention.self.value")
    p.add_argument("--adapter-size", type=int, default=64)
    p.add_argument("--adapter-activation", choices=tuple(ADAPTER_ACTIVATIONS), default="swish")
    p.add_argument("--lora-style", choices=("peft", "weight"), default="peft",
                   help="peft: adapters on the activations (the reference); weight: W0 + (alpha/r) B A formed "
                        "before each linear, as torch-bert does (diagnosis; no adapter dropout)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-grad-norm", type=float, default=0.0, help="clip_grad_norm_ (0: off)")
    p.add_argument("--head-hidden", type=int, default=512)
    p.add_argument("--dropout", type=float, default=0.1, help="head dropout")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's choice)")
    p.add_argument("--out", help="write the JSON here instead of stdout")
    p.add_argument("--serve", action="store_true",
                   help="answer setup/steps requests, one JSON line each, on stdin/stdout (see serve())")
    args = p.parse_args(argv)
    args.lora_targets = [t for t in args.lora_targets.split(",") if t]
    techniques = [t.strip() for t in args.technique.split(",") if t.strip()]
    for t in techniques:
        if t not in TECHNIQUES:
            raise SystemExit(f"--technique: {t!r} is not one of {', '.join(TECHNIQUES)}")
    if args.lora_style == "weight" and args.lora_dropout > 0:
        raise SystemExit("--lora-style weight has no adapter dropout; use --lora-dropout 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    enc = EagerEncoder(args.encoder, args.heads)
    batch = load_batch(args, enc.config.vocab_size)
    log(f"{args.encoder}: {enc.config.num_hidden_layers} layers, hidden {enc.config.hidden_size}, {enc.heads} heads "
        f"(eager vs traced max abs diff {enc.check_diff:.1e}); batch {list(batch[0].shape)}; "
        f"{torch.get_num_threads()} thread(s)")
    if args.serve:
        serve(enc, batch, args)
        return 0
    results: Dict[str, Any] = {}
    for t in techniques:
        results[t] = run_technique(t, enc, batch, args)
        s = results[t]["stepSeconds"]
        log(f"{t}: median {s['median']:.4f} s/step (min {s['min']:.4f}, max {s['max']:.4f}) over {args.steps} steps")
    out = {
        "encoder": args.encoder,
        "batch": list(batch[0].shape),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "heads": enc.heads,
        "config": {
            "layers": enc.config.num_hidden_layers,
            "hidden": enc.config.hidden_size,
            "intermediate": enc.config.intermediate_size,
            "vocab": enc.config.vocab_size,
            "lora": {"rank": args.lora_rank, "alpha": args.lora_alpha, "dropout": args.lora_dropout, "targets": args.lora_targets,
                     "style": args.lora_style},
            "lr": args.lr,
            "weightDecay": args.weight_decay,
            "maxGradNorm": args.max_grad_norm,
            "headHidden": args.head_hidden,
            "dropout": args.dropout,
            "warmup": args.warmup,
            "steps": args.steps,
        },
        "techniques": results,
    }
    text = json.dumps(out, indent=2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
