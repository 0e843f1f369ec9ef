#!/usr/bin/python3
"""The Python side of the PEFT export test of a LoRA classifier trained with the
sequence-classification head: what `PeftModel.from_pretrained(
AutoModelForSequenceClassification.from_pretrained(BASE), ADAPTER_DIR)` computes, written out in
plain PyTorch (no transformers or PEFT here), from the files by their exact key names:

  - BASE's config.json and its weights under AutoModel's names (its model.safetensors in
    make_hf_folder.py's automodel layout, else the file given as "weights": make_hf_folder.py's
    --weights-out, the same tensors as the folder's prefixed ones), read with safetensors_io.py;
  - adapter_config.json: peft_type LORA, task_type SEQ_CLS, r, lora_alpha (scaling = lora_alpha / r,
    PEFT's LoraLayer with use_rslora off), target_modules, modules_to_save;
  - adapter_model.safetensors: `base_model.model.<family>.<module>.lora_A.weight` [r, in] and
    `...lora_B.weight` [out, r] for each targeted module, and the head's tensors under
    `base_model.model.<module in modules_to_save>.<param>`. Any other key is an error.

In eval mode LoRA's dropout is the identity, so each targeted linear computes
W0·x + b + scaling·B·A·x = (W0 + scaling·B·A)·x + b: the reference adds scaling·B·A to W0, loads
the result into hf_reference.py's encoder (strictly, by hf_folder_reference.py's load_encoder), and
runs the family's head (seq_classification_reference.py's head_logits) on it.

stdin: {"base": BASE_DIR, "weights": FILE or null, "adapter": ADAPTER_DIR, "input_ids": [[...]], "attention_mask": [[...]]}
stdout: {"probabilities": [[...]], "keys": [...], "shapes": {...}, "config": {...}, "max_delta": x}
"""

import json
import os
import re
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts", "python"))
sys.path.insert(0, HERE)
from hf_folder_reference import encode, load_encoder, read_base  # noqa: E402
from safetensors_io import read_safetensors  # noqa: E402
from seq_classification_reference import HEAD_KEYS, head_logits  # noqa: E402


def main():
    args = json.load(sys.stdin)
    cfg, base = read_base(args["base"], args.get("weights"))
    family = cfg["model_type"]
    with open(os.path.join(args["adapter"], "adapter_config.json")) as f:
        acfg = json.load(f)
    assert acfg["peft_type"] == "LORA" and acfg["task_type"] == "SEQ_CLS", acfg
    adapter, _ = read_safetensors(os.path.join(args["adapter"], "adapter_model.safetensors"))
    scaling = acfg["lora_alpha"] / acfg["r"]

    lora = re.compile(r"^base_model\.model\." + re.escape(family) + r"\.(.+)\.lora_([AB])\.weight$")
    head_modules = set(acfg["modules_to_save"])
    head_names = {f"{m}.{p}" for m in HEAD_KEYS[family].values() for p in ("weight", "bias")}
    weights = {k: v.clone() for k, v in base.items()}
    head = {}
    max_delta = 0.0
    for key, tensor in adapter.items():
        m = lora.match(key)
        if m:
            module, which = m.groups()
            if not any(module == t or module.endswith("." + t) for t in acfg["target_modules"]):
                raise SystemExit(f"{key}: module {module} is not one of target_modules {acfg['target_modules']}")
            if which == "A":
                b = adapter[f"base_model.model.{family}.{module}.lora_B.weight"]
                delta = scaling * (b @ tensor)
                weights[f"{module}.weight"] = weights[f"{module}.weight"] + delta
                max_delta = max(max_delta, delta.abs().max().item())
            continue
        name = key[len("base_model.model."):] if key.startswith("base_model.model.") else None
        if name is None or name not in head_names or name.split(".")[0] not in head_modules:
            raise SystemExit(f"unexpected adapter key {key}")
        head[name] = tensor
    if sorted(head) != sorted(head_names):
        raise SystemExit(f"head keys {sorted(head)}, expected {sorted(head_names)}")

    # AutoModelForSequenceClassification's base: RoBERTa's has no pooler (the base file's is dropped).
    if family == "roberta":
        weights = {k: v for k, v in weights.items() if not k.startswith("pooler.")}
    hidden, pooled = encode(load_encoder(cfg, weights), args["input_ids"], args["attention_mask"])
    with torch.no_grad():
        logits = head_logits(family, head, pooled, hidden[:, 0])
    json.dump({"probabilities": torch.softmax(logits, -1).tolist(), "keys": sorted(adapter),
               "shapes": {k: list(v.shape) for k, v in adapter.items()}, "config": acfg,
               "max_delta": max_delta}, sys.stdout)


if __name__ == "__main__":
    main()
