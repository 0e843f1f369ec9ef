#!/usr/bin/python3
"""The PyTorch side of the `predict` benchmark (bench/predict.mjs): the inference forward of a
classifier saved by torch-bert's train() (its classifier.pt: the traced encoder and the head,
forward(input_ids, attention_mask) -> log-probabilities), loaded with torch.jit.load and run
under torch.inference_mode() on the batches Classifier.predict() ran (recorded by the
benchmark: the same rows, the same order, the same padding), then softmax, as torch-bert's
evaluation step returns probabilities. Tokenizing is not on this side (no `tokenizers` here).

A persistent process: prints {"ready", "threads", "torch"}, then answers one JSON request line
with one JSON reply line:
  {"cmd": "probabilities"}                  one pass over every batch, its seconds and every
                                            row's probabilities (batch order)
  {"cmd": "batches", "start": S, "end": E}  batches S to E - 1, their seconds (timed here, with
                                            perf_counter)
  {"cmd": "quit"}

  /usr/bin/python3 bench/predict.py --classifier DIR/classifier.pt --batches batches.json [--threads N]

batches.json: {"file": raw int32 ids then mask of each batch in turn, "shapes": [[rows, width], ...]}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "python"))
from line_server import serve_lines  # noqa: E402


def load_batches(spec_file: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    with open(spec_file) as f:
        spec = json.load(f)
    with open(spec["file"], "rb") as f:
        data = torch.frombuffer(bytearray(f.read()), dtype=torch.int32)
    batches = []
    at = 0
    for rows, width in spec["shapes"]:
        n = rows * width
        # int64, as torch-bert's evaluation step hands them to the model.
        ids = data[at : at + n].view(rows, width).long()
        mask = data[at + n : at + 2 * n].view(rows, width).long()
        at += 2 * n
        batches.append((ids, mask))
    if at != data.numel():
        raise ValueError(f"{spec['file']} holds {data.numel()} values, the shapes {at}")
    return batches


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--classifier", required=True)
    p.add_argument("--batches", required=True)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = torch.jit.load(args.classifier, map_location="cpu").eval()
    batches = load_batches(args.batches)

    def run(start: int, end: int) -> tuple[float, list[torch.Tensor]]:
        out = []
        t0 = time.perf_counter()
        with torch.inference_mode():
            for ids, mask in batches[start:end]:
                out.append(model(ids, mask).softmax(1))
        return time.perf_counter() - t0, out

    def probabilities(_: dict) -> dict:
        seconds, out = run(0, len(batches))
        return {"seconds": seconds, "probabilities": torch.cat(out).flatten().tolist()}

    serve_lines(
        {"threads": torch.get_num_threads(), "torch": torch.__version__},
        {"probabilities": probabilities, "batches": lambda req: {"seconds": run(req["start"], req["end"])[0]}},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
