#!/usr/bin/python3
"""The masked-language-model loss and gradients as transformers computes them
(BertForMaskedLM / RobertaForMaskedLM / DistilBertForMaskedLM: the MLM head's decoder over every
position, then CrossEntropyLoss with ignore_index -100 over the masked positions), on the
reference modules of hf_reference.py, for test/pretrain.test.ts to compare the native step
against (which runs the head on the masked rows only).

Reads one JSON object on stdin:
  config        torch-bert's NativeEncoderConfig (pooler and mlmHead included)
  weights       path of a safetensors file with the checkpoint's names (family prefix or not)
  inputIds      [B][T] ids (already masked), attentionMask [B][T]
  labels        [B][T]: the original id at masked positions, -100 elsewhere
Writes JSON: {"loss": float, "grads": {name: flat list}} with names as the reference's
state_dict (encoder names without prefix; head names with the family's head prefix). The decoder
weight is tied to the word embeddings (one parameter), so its gradient is part of theirs.
Eval mode (no dropout).
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_reference import HEAD, Config, load  # noqa: E402
from safetensors_io import read_safetensors  # noqa: E402

PREFIX = {"bert": "bert.", "roberta": "roberta.", "distilbert": "distilbert."}


def main() -> int:
    job = json.load(sys.stdin)
    c = Config(job["config"])
    raw, _ = read_safetensors(job["weights"])
    prefix = PREFIX[c.family]
    weights = {(k[len(prefix):] if k.startswith(prefix) else k): v.float() for k, v in raw.items()}
    weights = {k: v for k, v in weights.items() if not (k.startswith("pooler.") and not c.pooler)}
    encoder, head = load(c, weights)
    # Tie: the decoder weight IS the word embedding parameter (transformers' tie_weights).
    words = encoder.embeddings.word_embeddings.weight
    if c.family == "bert":
        head.predictions.decoder.weight = words
    elif c.family == "roberta":
        head.decoder.weight = words
    else:
        head.vocab_projector.weight = words
    ids = torch.tensor(job["inputIds"], dtype=torch.long)
    mask = torch.tensor(job["attentionMask"], dtype=torch.long)
    labels = torch.tensor(job["labels"], dtype=torch.long)
    out = encoder(ids, mask)
    hidden = out[0] if isinstance(out, tuple) else out
    logits = head(hidden)  # [B, T, vocab]: every position, as transformers
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100)
    loss.backward()
    grads = {}
    for name, p in encoder.named_parameters():
        if p.grad is not None:
            grads[name] = p.grad.flatten().tolist()
    head_prefix = HEAD[c.family][1]
    for name, p in head.named_parameters():
        if p is words:
            continue
        if p.grad is not None:
            grads[head_prefix + name] = p.grad.flatten().tolist()
    json.dump({"loss": loss.item(), "grads": grads}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
