#!/usr/bin/python3
"""Prompt-based classification (LM-BFF) in plain PyTorch, for the prompt tests: the checkpoint's
MLM head over every position (hf_reference.py's transformers math), the logits of the label words
at the mask, softmax over them. Reads the model folder itself (config.json, model.safetensors);
nothing of lib/.

Usage: prompt_reference.py FOLDER < {"input_ids": [[...]], "attention_mask": [[...]], "mask_id": M, "label_ids": [...]}
prints {"probabilities": [[...]], "mask_positions": [...]}
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_reference import Config, load  # noqa: E402
from safetensors_io import read_safetensors  # noqa: E402


def native_config(c: dict) -> dict:
    family = c["model_type"]
    return {"family": family, "vocabSize": c["vocab_size"], "hiddenSize": c["hidden_size"], "numLayers": c["num_hidden_layers"],
            "numHeads": c["num_attention_heads"], "intermediateSize": c["intermediate_size"],
            "maxPositions": c["max_position_embeddings"], "typeVocabSize": c["type_vocab_size"], "layerNormEps": c["layer_norm_eps"],
            "padTokenId": c["pad_token_id"], "hiddenAct": c["hidden_act"], "pooler": False, "mlmHead": True}


def main() -> int:
    folder = sys.argv[1]
    request = json.load(sys.stdin)
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        c = Config(native_config(json.load(f)))
    tensors, _ = read_safetensors(os.path.join(folder, "model.safetensors"))
    prefix = c.family + "."
    weights = {(k[len(prefix):] if k.startswith(prefix) else k): v.float() for k, v in tensors.items()}
    weights = {k: v for k, v in weights.items() if not k.startswith("pooler.")}
    encoder, head = load(c, weights)
    ids = torch.tensor(request["input_ids"], dtype=torch.long)
    mask = torch.tensor(request["attention_mask"], dtype=torch.long)
    args = [ids, mask] + ([torch.zeros_like(ids)] if c.family == "bert" else [])
    with torch.no_grad():
        out = encoder(*args)
        hidden = out[0] if isinstance(out, tuple) else out
        logits = head(hidden)  # [B, T, vocab]: the decoder over every position, as transformers computes it
        positions = [int((row == request["mask_id"]).nonzero()[0]) for row in ids]
        at_mask = torch.stack([logits[b, p] for b, p in enumerate(positions)])
        probabilities = torch.softmax(at_mask[:, request["label_ids"]].double(), -1)
    print(json.dumps({"probabilities": probabilities.tolist(), "mask_positions": positions}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
