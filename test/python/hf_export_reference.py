#!/usr/bin/python3
"""The Python side of test/export.test.ts: reads an exported Hugging Face folder without
transformers or the safetensors package into scripts/python/hf_reference.py's encoder with
load_state_dict(strict=True) (scripts/python/hf_folder_reference.py), so every key must be
transformers' name and shape, and returns what the test compares.

stdin: {"dir": EXPORT_DIR, "input_ids": [[...]], "attention_mask": [[...]], "pooling": "cls"|"mean",
        "base_encoder": TORCHSCRIPT_FILE or null}
stdout: {"features": [[...]], "probabilities": [[...]], "metadata": {...}, "head_metadata": {...},
         "keys": [...], and with base_encoder and an adapter/ folder: "adapter": {"keys": [...],
         "shapes": {...}, "max_merge_diff": x, "max_b": x, "max_update": x}}
"""

import json
import os
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts", "python"))
from hf_folder_reference import encode, load_folder  # noqa: E402
from safetensors_io import read_safetensors  # noqa: E402


def main():
    args = json.load(sys.stdin)
    folder = args["dir"]
    exported = load_folder(folder)
    cfg, weights, metadata = exported.config, exported.weights, exported.metadata
    hidden, _ = encode(exported.encoder, args["input_ids"], args["attention_mask"])
    mask = torch.tensor(args["attention_mask"], dtype=torch.long)
    with torch.no_grad():
        if args["pooling"] == "cls":
            pooled = hidden[:, 0]
        else:
            m = mask[:, :, None].to(hidden.dtype)
            pooled = (hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
        head, head_metadata = read_safetensors(os.path.join(folder, cfg["torch_bert"]["head"]["file"]))
        x = F.relu(F.linear(pooled, head["dense.weight"], head["dense.bias"]))
        logits = F.linear(x, head["out_proj.weight"], head["out_proj.bias"])
        probabilities = torch.softmax(logits, -1)

    out = {"features": pooled.tolist(), "probabilities": probabilities.tolist(), "metadata": metadata,
           "head_metadata": head_metadata, "keys": list(weights.keys())}

    adapter_dir = os.path.join(folder, "adapter")
    if args.get("base_encoder") and os.path.isdir(adapter_dir):
        with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
            acfg = json.load(f)
        adapter, _ = read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
        base = dict(torch.jit.load(args["base_encoder"]).named_parameters())
        scaling = acfg["lora_alpha"] / acfg["r"]  # PEFT's LoraLayer scaling (use_rslora off)
        merge_diff, max_b, max_update = 0.0, 0.0, 0.0
        prefix = "base_model.model."
        for key in adapter:
            if not key.endswith(".lora_A.weight"):
                continue
            module = key[len(prefix):-len(".lora_A.weight")]
            a = adapter[key]
            b = adapter[f"{prefix}{module}.lora_B.weight"]
            w0 = base[f"{module}.weight"].detach()
            merged = w0 + scaling * (b @ a)
            merge_diff = max(merge_diff, (merged - weights[f"{module}.weight"]).abs().max().item())
            max_b = max(max_b, b.abs().max().item())
            max_update = max(max_update, (weights[f"{module}.weight"] - w0).abs().max().item())
        out["adapter"] = {"keys": list(adapter.keys()), "shapes": {k: list(v.shape) for k, v in adapter.items()},
                          "max_merge_diff": merge_diff, "max_b": max_b, "max_update": max_update}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
