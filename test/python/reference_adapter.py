#!/usr/bin/python3
"""Plain-PyTorch reference of one training step with bottleneck adapters (Houlsby et al. 2019),
for test/native-techniques.test.ts: the same function torch-bert's graph rewrite computes,
written the eager way a PyTorch user would, with nothing but torch.

  - the encoder: make_encoder.py's eager BERT (Hugging Face's module classes and math) with
    the weights of the classifier file's `encoder.` (dropout 0: the file was traced in eval mode);
  - the adapters: every adapted sub-layer's output projection `dense` is wrapped as
    h = dense(x); h + up(act(down(h))), with down/up from the adapters file torch-bert saved
    (`<sub-layer>.adapter.{down,up}.{weight,bias}`, `activation`); they alone of the encoder
    train;
  - the head: the classifier file's own `head_forward` on the pooled features ([CLS] row, or the
    attention-masked mean), NLL loss, one torch.optim.AdamW step over adapters + head.

  /usr/bin/python3 test/python/reference_adapter.py --classifier plain.pt --adapters adapters.pt \\
      --heads 2 --pooling mean --batch '{"input_ids": [[...]], "attention_mask": [[...]], "labels": [...]}' \\
      [--lr 1e-2 --weight-decay 0.01]

Prints JSON: {"loss", "grads": {name: [...]}, "stepped": {name: [...]}} (classifier names).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts", "python"))

from make_encoder import BertModel2  # noqa: E402
from reference_step import BUFFERS, config_from_state  # noqa: E402

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "swish": F.silu}
SUFFIX = ".adapter.down.weight"


class AdaptedDense(nn.Module):
    """A sub-layer's output projection followed by a Houlsby bottleneck adapter."""

    def __init__(self, dense: nn.Linear, tensors: dict, prefix: str, activation: str):
        super().__init__()
        self.dense = dense
        self.down = nn.Linear(dense.out_features, tensors[prefix + ".adapter.down.weight"].shape[0])
        self.up = nn.Linear(self.down.out_features, dense.out_features)
        with torch.no_grad():
            self.down.weight.copy_(tensors[prefix + ".adapter.down.weight"])
            self.down.bias.copy_(tensors[prefix + ".adapter.down.bias"])
            self.up.weight.copy_(tensors[prefix + ".adapter.up.weight"])
            self.up.bias.copy_(tensors[prefix + ".adapter.up.bias"])
        self.act = ACTIVATIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        h = self.dense(x)
        return h + self.up(self.act(self.down(h)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--adapters", required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--pooling", choices=("cls", "mean"), required=True)
    ap.add_argument("--batch", required=True)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    args = ap.parse_args()
    torch.set_num_threads(1)

    clf = torch.jit.load(args.classifier)
    clf.train()
    state = {k[len("encoder."):]: v.detach().clone() for k, v in clf.state_dict().items() if k.startswith("encoder.")}
    state = {k: v for k, v in state.items() if k not in BUFFERS}
    model = BertModel2(config_from_state(state, args.heads))
    model.load_state_dict(state, strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    saved = torch.load(args.adapters)
    tensors = {}
    for prefix in sorted(k[: -len(SUFFIX)] for k in saved if isinstance(k, str) and k.endswith(SUFFIX)):
        sublayer = model.get_submodule(prefix[len("encoder."):])
        adapted = AdaptedDense(sublayer.dense, saved, prefix, saved["activation"])
        sublayer.dense = adapted
        for name in ("down", "up"):
            for what in ("weight", "bias"):
                tensors[f"{prefix}.adapter.{name}.{what}"] = getattr(getattr(adapted, name), what)
    for n, p in clf.named_parameters():
        if n.startswith("head."):
            tensors[n] = p

    batch = json.loads(args.batch)
    ids = torch.tensor(batch["input_ids"])
    mask = torch.tensor(batch["attention_mask"])
    labels = torch.tensor(batch["labels"])
    h = model.encode(ids, mask, None)[0]
    if args.pooling == "cls":
        features = h[:, 0]
    else:
        m = mask.unsqueeze(-1).to(h.dtype)
        features = (h * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
    loss = F.nll_loss(clf.head_forward(features), labels)
    loss.backward()
    grads = {n: t.grad.flatten().tolist() for n, t in tensors.items()}
    torch.optim.AdamW(list(tensors.values()), lr=args.lr, weight_decay=args.weight_decay).step()
    print(json.dumps({"loss": loss.item(), "grads": grads, "stepped": {n: t.detach().flatten().tolist() for n, t in tensors.items()}}))


if __name__ == "__main__":
    main()
