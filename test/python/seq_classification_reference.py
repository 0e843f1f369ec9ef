#!/usr/bin/python3
"""The Python side of test/seq-classification-head.test.ts: transformers' sequence-classification
heads written out in plain PyTorch (no transformers here), in their modeling files' order of
operations, in eval mode (dropout is the identity):

  BertForSequenceClassification:       logits = classifier(pooler_output)
  RobertaClassificationHead:           logits = out_proj(tanh(dense(h[:, 0])))
  DistilBertForSequenceClassification: logits = classifier(relu(pre_classifier(h[:, 0])))

Two modes (stdin JSON):
  {"mode": "export", "dir": EXPORT_DIR, "input_ids": [[...]], "attention_mask": [[...]],
   "token_type_ids": [[...]] (optional: text pairs' segments, BERT only)}
    reads an exported Bert-, Roberta- or DistilBertForSequenceClassification folder
    (scripts/python/hf_folder_reference.py: the `bert.`/`roberta.`/`distilbert.` keys into
    hf_reference.py's encoder with strict loading), and the head's keys by transformers' names
    (any other key is an error); stdout {"probabilities", "keys", "config"}.
  {"mode": "head", "encoder": TORCHSCRIPT_FILE, "family": "bert"|"roberta"|"distilbert",
   "head": {NAME: [...] or [[...]]}, "input_ids", "attention_mask"}
    runs the encoder file, then the family's head with the given weights; stdout {"probabilities"}.
"""

import json
import os
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts", "python"))
from hf_folder_reference import encode, load_folder  # noqa: E402


def head_logits(family, w, pooler_output, first_token):
    if family == "bert":
        return F.linear(pooler_output, w["classifier.weight"], w["classifier.bias"])
    if family == "roberta":
        x = torch.tanh(F.linear(first_token, w["classifier.dense.weight"], w["classifier.dense.bias"]))
        return F.linear(x, w["classifier.out_proj.weight"], w["classifier.out_proj.bias"])
    if family == "distilbert":
        x = F.relu(F.linear(first_token, w["pre_classifier.weight"], w["pre_classifier.bias"]))
        return F.linear(x, w["classifier.weight"], w["classifier.bias"])
    raise ValueError(family)


# The classifier's head parameter names (under `head.`) -> transformers' key names.
HEAD_KEYS = {
    "bert": {"classifier": "classifier"},
    "roberta": {"dense": "classifier.dense", "out_proj": "classifier.out_proj"},
    "distilbert": {"pre_classifier": "pre_classifier", "classifier": "classifier"},
}


def export_mode(args):
    exported = load_folder(args["dir"])
    family = exported.family
    architecture = {"bert": "BertForSequenceClassification", "roberta": "RobertaForSequenceClassification",
                    "distilbert": "DistilBertForSequenceClassification"}[family]
    assert exported.config["architectures"] == [architecture], exported.config["architectures"]
    expected = sorted(f"{v}.{p}" for v in HEAD_KEYS[family].values() for p in ("weight", "bias"))
    if sorted(exported.head) != expected:
        raise SystemExit(f"unexpected head keys: {sorted(exported.head)}, expected {expected}")
    hidden, pooled = encode(exported.encoder, args["input_ids"], args["attention_mask"], args.get("token_type_ids"))
    with torch.no_grad():
        logits = head_logits(family, exported.head, pooled, hidden[:, 0])
    return {"probabilities": torch.softmax(logits, -1).tolist(), "logits": logits.tolist(), "keys": sorted(exported.weights),
            "config": exported.config}


def head_mode(args):
    family = args["family"]
    encoder = torch.jit.load(args["encoder"]).eval()
    ids = torch.tensor(args["input_ids"], dtype=torch.long)
    mask = torch.tensor(args["attention_mask"], dtype=torch.long)
    w = {HEAD_KEYS[family][k.split(".")[0]] + "." + k.split(".")[1]: torch.tensor(v, dtype=torch.float32)
         for k, v in args["head"].items()}
    with torch.no_grad():
        n_inputs = len(encoder.forward.schema.arguments) - 1
        out = encoder(ids, mask) if n_inputs == 2 else encoder(ids, mask, torch.zeros_like(ids))
        logits = head_logits(family, w, out[1], out[0][:, 0])
    return {"probabilities": torch.softmax(logits, -1).tolist()}


def main():
    args = json.load(sys.stdin)
    out = export_mode(args) if args["mode"] == "export" else head_mode(args)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
