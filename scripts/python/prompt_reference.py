#!/usr/bin/python3
"""Prompt-based classification (LM-BFF) in plain PyTorch, for the prompt tests: the checkpoint's
MLM head over every position (hf_reference.py's transformers math), the logits of the label words
at the mask, softmax over them. Reads the model folder itself (config.json, model.safetensors);
nothing of lib/.

Usage: prompt_reference.py FOLDER < {"input_ids": [[...]], "attention_mask": [[...]], "mask_id": M, "label_ids": [...]}
prints {"probabilities": [[...]], "mask_positions": [...]}
With "labels": [class per row] in the request, also the prompt head's training loss (cross-entropy
over the label words' logits at the mask, mean over the rows) and its gradients: "loss",
"label_bias_grad" (the MLM decoder bias's gradient at the label words' rows) and "grads" (every
head parameter of the transform, by its name in the head module).
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
    if family == "distilbert":
        return {"family": family, "vocabSize": c["vocab_size"], "hiddenSize": c["dim"], "numLayers": c["n_layers"],
                "numHeads": c["n_heads"], "intermediateSize": c["hidden_dim"], "maxPositions": c["max_position_embeddings"],
                "typeVocabSize": 0, "layerNormEps": 1e-12, "padTokenId": c["pad_token_id"], "hiddenAct": c["activation"],
                "pooler": False, "mlmHead": True}
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
    out = encoder(*args)
    hidden = out[0] if isinstance(out, tuple) else out
    logits = head(hidden)  # [B, T, vocab]: the decoder over every position, as transformers computes it
    positions = [int((row == request["mask_id"]).nonzero()[0]) for row in ids]
    at_mask = torch.stack([logits[b, p] for b, p in enumerate(positions)])
    label_logits = at_mask[:, request["label_ids"]]
    result = {"probabilities": torch.softmax(label_logits.detach().double(), -1).tolist(), "mask_positions": positions}
    if "labels" in request:
        loss = torch.nn.functional.cross_entropy(label_logits, torch.tensor(request["labels"], dtype=torch.long))
        loss.backward()
        # The decoder's bias: the one [vocab] parameter of the head (BERT's predictions.bias,
        # RoBERTa's bias, DistilBERT's vocab_projector.bias).
        (bias,) = [p for n, p in head.named_parameters() if n.endswith("bias") and p.shape == (c.vocab_size,)]
        result["loss"] = loss.item()
        result["label_bias_grad"] = bias.grad[request["label_ids"]].tolist()
        result["grads"] = {n: p.grad.flatten().tolist() for n, p in head.named_parameters()
                           if p.grad is not None and p.shape[0] != c.vocab_size}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
