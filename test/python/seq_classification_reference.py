#!/usr/bin/python3
"""The Python side of test/seq-classification-head.test.ts: transformers' sequence-classification
heads written out in plain PyTorch (no transformers here), in their modeling files' order of
operations, in eval mode (dropout is the identity):

  BertForSequenceClassification:       logits = classifier(pooler_output)
  RobertaClassificationHead:           logits = out_proj(tanh(dense(h[:, 0])))
  DistilBertForSequenceClassification: logits = classifier(relu(pre_classifier(h[:, 0])))

Two modes (stdin JSON):
  {"mode": "export", "dir": EXPORT_DIR, "input_ids": [[...]], "attention_mask": [[...]]}
    reads an exported BertForSequenceClassification folder with its own safetensors reader
    (scripts/python/safetensors_io.py), the `bert.` keys into make_encoder.py's reference BertModel
    with strict loading and the head's keys by transformers' names (any other key is an error);
    stdout {"probabilities", "keys", "config"}.
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
from make_encoder import BertModel2, Config  # noqa: E402
from safetensors_io import read_safetensors  # noqa: E402


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
    folder = args["dir"]
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["architectures"] == ["BertForSequenceClassification"], cfg["architectures"]
    weights, _ = read_safetensors(os.path.join(folder, "model.safetensors"))
    base = {k[len("bert."):]: v for k, v in weights.items() if k.startswith("bert.")}
    head = {k: v for k, v in weights.items() if not k.startswith("bert.")}
    if sorted(head) != ["classifier.bias", "classifier.weight"]:
        raise SystemExit(f"unexpected head keys: {sorted(head)}")
    c = Config(vocab_size=cfg["vocab_size"], hidden=cfg["hidden_size"], layers=cfg["num_hidden_layers"],
               heads=cfg["num_attention_heads"], intermediate=cfg["intermediate_size"],
               max_position=cfg["max_position_embeddings"], type_vocab=cfg["type_vocab_size"],
               pad_token_id=cfg["pad_token_id"])
    model = BertModel2(c).eval()
    model.load_state_dict(base, strict=True)
    ids = torch.tensor(args["input_ids"], dtype=torch.long)
    mask = torch.tensor(args["attention_mask"], dtype=torch.long)
    with torch.no_grad():
        # BertModel's forward defaults token_type_ids to zeros, as the classifier feeds them.
        hidden, pooled = model.encode(ids, mask, torch.zeros_like(ids))
        logits = head_logits("bert", head, pooled, hidden[:, 0])
    return {"probabilities": torch.softmax(logits, -1).tolist(), "keys": sorted(weights), "config": cfg}


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
