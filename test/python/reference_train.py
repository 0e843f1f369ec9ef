#!/usr/bin/python3
"""Reference trainer: a classifier head on a frozen TorchScript BERT encoder, in plain PyTorch.

This is the seed tutorial's job done correctly, kept independent of the library so parity
tests can compare the library's numbers with it:
  - the encoder is loaded with torch.jit.load, put in eval mode, frozen (requires_grad False)
    and run under torch.no_grad; forward(input_ids, attention_mask) or, when its schema
    has three inputs, forward(input_ids, attention_mask, token_type_ids=zeros); its output
    (tensor, tuple/list or dict) gives the last hidden state [B, T, H] as its first item;
  - pooling: 'cls' = h[:, 0], 'mean' = mean of h over positions where attention_mask is 1;
  - head: torch.manual_seed(seed), then nn.Sequential(Linear(H, headHidden), ReLU,
    Dropout(dropout), Linear(headHidden, numClasses), LogSoftmax(-1)) -- Linear 1 is created
    before Linear 2, and their init must stay bit-identical to the library's;
  - AdamW over the head's parameters; NLLLoss on the log-probabilities (the tutorial applied
    CrossEntropyLoss to log-softmax output, a double softmax);
  - epoch e (1-based): the training order is torch.randperm(nTrain, generator=
    torch.Generator().manual_seed(seed + e)), batches of batchSize (last partial batch kept),
    head.train(), forward/loss/backward/step/zero_grad per batch; dropout draws from the
    default generator seeded above;
  - validation: head.eval(), torch.no_grad, batches in order, no backward and no step (the
    tutorial trained on the validation set);
  - losses are example-weighted means of the batch-mean losses; the best epoch is the one
    with the lowest validation loss (its head is kept, and saved with --save-head).

Input: --spec FILE (JSON)
  { "encoder": "path.pt",
    "train": {"input_ids": [[...]], "attention_mask": [[...]], "labels": [...]},
    "validation": {same} (optional),
    "numClasses": 2, "epochs": 3, "batchSize": 16, "lr": 1e-3, "weightDecay": 0.01,
    "betas": [0.9, 0.999], "eps": 1e-8, "seed": 0, "headHidden": 512, "dropout": 0.1,
    "pooling": "cls" | "mean",
    "problemType": "single_label_classification" (default) | "regression" | "multi_label_classification" }
  regression: labels are numbers, the head ends at its Linear(headHidden, 1) (no LogSoftmax), the
  loss is MSELoss (transformers' problem_type regression), accuracies are null and each epoch
  also reports the validation Pearson's r ("valPearson", torch.corrcoef; with several outputs,
  labels rows of a target each, their r averaged).
  multi_label_classification: labels are multi-hot rows [numClasses] of 0/1, the head ends at its
  Linear (logits), the loss is BCEWithLogitsLoss, a class is predicted where its sigmoid is at least
  0.5 and accuracy is subset accuracy (every class of the example right). "positiveWeights":
  [numbers] or "balanced" (each class's negatives / positives among the training labels, 1 for a
  class with none) is the loss's pos_weight, in training and validation alike.
Output (stdout, or --out FILE):
  { "epochs": [{"epoch", "trainLoss", "trainAccuracy", "valLoss", "valAccuracy"}],
    "best": {"epoch", "valLoss", "valAccuracy"},
    "stepSeconds": median seconds of one training step (encoder forward + head
                   forward/backward/step on one batch) }
Without validation data, valLoss/valAccuracy are null and best is the last epoch.

  /usr/bin/python3 test/python/reference_train.py --spec spec.json [--out result.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn


def load_encoder(path: str):
    enc = torch.jit.load(path, map_location="cpu")
    enc.eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    arity = len(enc.forward.schema.arguments) - 1  # minus self
    if arity not in (2, 3):
        raise SystemExit(f"{path}: forward takes {arity} inputs; expected 2 (input_ids, attention_mask) or 3 (+ token_type_ids)")
    return enc, arity


def first_item(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, dict):
        return next(iter(out.values()))
    if isinstance(out, (tuple, list)):
        return out[0]
    raise SystemExit(f"encoder returned {type(out).__name__}; expected a tensor, tuple or dict")


class Frozen:
    def __init__(self, path: str, pooling: str):
        self.encoder, self.arity = load_encoder(path)
        if pooling not in ("cls", "mean"):
            raise SystemExit(f"pooling must be 'cls' or 'mean', not {pooling!r}")
        self.pooling = pooling

    def features(self, ids: Tensor, mask: Tensor) -> Tensor:
        with torch.no_grad():
            args = (ids, mask) if self.arity == 2 else (ids, mask, torch.zeros_like(ids))
            h = first_item(self.encoder(*args))
            if h.dim() != 3:
                raise SystemExit(f"encoder output has shape {list(h.shape)}; expected [batch, tokens, hidden]")
            if self.pooling == "cls":
                return h[:, 0]
            m = mask.to(h.dtype).unsqueeze(-1)
            return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


def tensors(split: Dict[str, Any], name: str, floats: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    try:
        ids = torch.tensor(split["input_ids"], dtype=torch.long)
        mask = torch.tensor(split["attention_mask"], dtype=torch.long)
        labels = torch.tensor(split["labels"], dtype=torch.float32 if floats else torch.long)
    except (KeyError, ValueError, TypeError) as e:
        raise SystemExit(f"spec.{name}: needs rectangular input_ids, attention_mask and labels ({e})")
    if ids.dim() != 2 or ids.shape != mask.shape or labels.shape[0] != ids.shape[0]:
        raise SystemExit(f"spec.{name}: shapes input_ids {list(ids.shape)}, attention_mask {list(mask.shape)}, labels {list(labels.shape)}")
    return ids, mask, labels


def positive_weights(given: Any, targets: Tensor) -> Optional[Tensor]:
    """BCEWithLogitsLoss's pos_weight: as given, or balanced (negatives / positives per class)."""
    if given is None:
        return None
    if given != "balanced":
        return torch.tensor(given, dtype=torch.float)
    positives = targets.sum(dim=0)
    negatives = targets.shape[0] - positives
    return torch.where(positives > 0, negatives / positives.clamp(min=1), torch.ones_like(positives))


def run(spec: Dict[str, Any]) -> Tuple[Dict[str, Any], nn.Module]:
    num_classes = int(spec["numClasses"])
    epochs = int(spec["epochs"])
    bs = int(spec["batchSize"])
    seed = int(spec.get("seed", 0))
    problem = spec.get("problemType", "single_label_classification")
    regression = problem == "regression"
    multi = problem == "multi_label_classification"
    single = not regression and not multi
    frozen = Frozen(spec["encoder"], spec.get("pooling", "cls"))
    tr_ids, tr_mask, tr_y = tensors(spec["train"], "train", not single)
    val = spec.get("validation")
    has_val = bool(val) and len(val.get("labels", [])) > 0
    if has_val:
        va_ids, va_mask, va_y = tensors(val, "validation", not single)
    for y in [tr_y] + ([va_y] if has_val else []):
        if single and len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise SystemExit(f"labels must be in [0, {num_classes})")

    hidden = frozen.features(tr_ids[:1], tr_mask[:1]).shape[-1]
    torch.manual_seed(seed)
    head = nn.Sequential(
        nn.Linear(hidden, int(spec.get("headHidden", 512))),
        nn.ReLU(),
        nn.Dropout(float(spec.get("dropout", 0.1))),
        nn.Linear(int(spec.get("headHidden", 512)), num_classes),
        *([nn.LogSoftmax(dim=-1)] if single else []),
    )
    betas = spec.get("betas", [0.9, 0.999])
    opt = torch.optim.AdamW(
        head.parameters(),
        lr=float(spec["lr"]),
        betas=(float(betas[0]), float(betas[1])),
        eps=float(spec.get("eps", 1e-8)),
        weight_decay=float(spec.get("weightDecay", 0.01)),
    )
    nll = nn.NLLLoss()
    mse = nn.MSELoss()
    bce = nn.BCEWithLogitsLoss(pos_weight=positive_weights(spec.get("positiveWeights"), tr_y) if multi else None)
    loss_fn = (lambda out, y: mse(out, y.view_as(out))) if regression else bce if multi else nll

    def n_correct(out: Tensor, y: Tensor) -> int:
        if multi:
            return int(((torch.sigmoid(out) >= 0.5) == (y >= 0.5)).all(dim=-1).sum())
        return int((out.argmax(-1) == y).sum())
    n_train = tr_ids.shape[0]
    history: List[Dict[str, Any]] = []
    step_times: List[float] = []
    best: Optional[Dict[str, Any]] = None
    best_state = None

    for epoch in range(1, epochs + 1):
        head.train()
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed + epoch))
        tot_loss, correct = 0.0, 0
        for s in range(0, n_train, bs):
            idx = order[s : s + bs]
            t0 = time.perf_counter()
            feats = frozen.features(tr_ids[idx], tr_mask[idx])
            logp = head(feats)
            loss = loss_fn(logp, tr_y[idx])
            loss.backward()
            opt.step()
            opt.zero_grad()
            step_times.append(time.perf_counter() - t0)
            tot_loss += loss.item() * len(idx)
            if single:
                correct += n_correct(logp, tr_y[idx])
        row: Dict[str, Any] = {
            "epoch": epoch,
            "trainLoss": tot_loss / n_train if n_train else None,
            "trainAccuracy": correct / n_train if n_train and single else None,
            "valLoss": None,
            "valAccuracy": None,
        }
        if has_val:
            head.eval()
            n_val = va_ids.shape[0]
            vloss, vcorrect = 0.0, 0
            values = []
            with torch.no_grad():
                for s in range(0, n_val, bs):
                    logp = head(frozen.features(va_ids[s : s + bs], va_mask[s : s + bs]))
                    y = va_y[s : s + bs]
                    vloss += loss_fn(logp, y).item() * len(y)
                    if regression:
                        values.append(logp)
                    else:
                        vcorrect += n_correct(logp, y)
            row["valLoss"] = vloss / n_val
            row["valAccuracy"] = None if regression else vcorrect / n_val
            if regression:
                # Several outputs: each output's r, averaged (scikit-learn's multioutput='uniform_average').
                out, y = torch.cat(values), va_y.view(n_val, -1)
                row["valPearson"] = statistics.fmean(
                    torch.corrcoef(torch.stack([out[:, k], y[:, k]]))[0, 1].item() for k in range(out.shape[1])
                )
        history.append(row)
        print(f"[reference_train] epoch {epoch}: train loss {row['trainLoss']:.4f}"
              + (f" | val loss {row['valLoss']:.4f}" if has_val else ""),
              file=sys.stderr, flush=True)
        if best is None or not has_val or row["valLoss"] < best["valLoss"]:
            best = {"epoch": epoch, "valLoss": row["valLoss"], "valAccuracy": row["valAccuracy"]}
            best_state = copy.deepcopy(head.state_dict())

    if best_state is not None:
        head.load_state_dict(best_state)
    result = {
        "epochs": history,
        "best": best,
        "stepSeconds": statistics.median(step_times) if step_times else None,
    }
    return result, head


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Train a classifier head on a frozen TorchScript encoder (reference implementation).")
    p.add_argument("--spec", required=True, help="JSON spec file (see the module docstring)")
    p.add_argument("--out", help="write the result JSON here instead of stdout")
    p.add_argument("--save-head", help="save the best head's state_dict (torch.save) here")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with open(args.spec, encoding="utf-8") as f:
        spec = json.load(f)
    result, head = run(spec)
    if args.save_head:
        torch.save(head.state_dict(), args.save_head)
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
