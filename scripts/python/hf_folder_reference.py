"""A Hugging Face model folder as torch-bert's export writes it (config.json + model.safetensors),
read without transformers or the safetensors package (safetensors_io.py's reader) into
hf_reference.py's encoder of its family with load_state_dict(strict=True): every encoder key must
be transformers' name and shape, and none may be missing. The tests' Python references of the
exported folders (test/python/hf_export_reference.py, seq_classification_reference.py) load
through it.

Both layouts load: an AutoModel's (`BertModel`, `RobertaModel`, `DistilBertModel`: the encoder's
keys unprefixed) and a ForSequenceClassification's (the encoder under `bert.`, `roberta.` or
`distilbert.`; the other keys are the head's, returned as they are).

The references that change a base model's weights or forward before running it
(test/python/adapterhub_reference.py, peft_seq_cls_reference.py) use its parts: read_base for the
base folder's config and AutoModel-named weights, load_encoder for the strict load, encode.
"""

from __future__ import annotations

import json
import os
from typing import Dict, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from hf_reference import Config, build
from safetensors_io import read_safetensors


class Folder(NamedTuple):
    config: dict                  # config.json
    family: str                   # bert, roberta or distilbert (config.json's model_type)
    weights: Dict[str, Tensor]    # model.safetensors, as written
    metadata: Optional[Dict[str, str]]
    encoder: nn.Module            # hf_reference.py's, eval mode, strictly loaded
    head: Dict[str, Tensor]       # the keys outside the encoder (none for an AutoModel)


def reference_config(cfg: dict, pooler: bool) -> Config:
    """hf_reference.Config (torch-bert's NativeEncoderConfig) from transformers' config.json."""
    family = cfg["model_type"]
    if family == "distilbert":
        return Config({"family": family, "vocabSize": cfg["vocab_size"], "hiddenSize": cfg["dim"],
                       "numLayers": cfg["n_layers"], "numHeads": cfg["n_heads"], "intermediateSize": cfg["hidden_dim"],
                       "maxPositions": cfg["max_position_embeddings"], "typeVocabSize": 0,
                       "layerNormEps": 1e-12, "padTokenId": cfg["pad_token_id"], "hiddenAct": cfg["activation"],
                       "pooler": False, "mlmHead": False, "hiddenDropoutProb": 0, "attentionDropoutProb": 0})
    return Config({"family": family, "vocabSize": cfg["vocab_size"], "hiddenSize": cfg["hidden_size"],
                   "numLayers": cfg["num_hidden_layers"], "numHeads": cfg["num_attention_heads"],
                   "intermediateSize": cfg["intermediate_size"], "maxPositions": cfg["max_position_embeddings"],
                   "typeVocabSize": cfg["type_vocab_size"], "layerNormEps": cfg["layer_norm_eps"],
                   "padTokenId": cfg["pad_token_id"], "hiddenAct": cfg["hidden_act"], "pooler": pooler,
                   "mlmHead": False, "hiddenDropoutProb": 0, "attentionDropoutProb": 0})


def read_config(folder: str) -> dict:
    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f)


def read_base(folder: str, weights_file: Optional[str] = None) -> Tuple[dict, Dict[str, Tensor]]:
    """A base model folder's config.json and its encoder's weights under AutoModel's names:
    `weights_file` where given (make_hf_folder.py's --weights-out, for a folder whose own keys are
    prefixed), else the folder's model.safetensors."""
    weights, _ = read_safetensors(weights_file or os.path.join(folder, "model.safetensors"))
    return read_config(folder), weights


def load_encoder(cfg: dict, weights: Dict[str, Tensor]) -> nn.Module:
    """hf_reference.py's encoder for config.json `cfg` (with a pooler where the weights have one),
    `weights` (AutoModel's names) loaded strictly; eval mode."""
    encoder, _ = build(reference_config(cfg, pooler=any(k.startswith("pooler.") for k in weights)))
    encoder.load_state_dict(weights, strict=True)
    return encoder.eval()


def load_folder(folder: str) -> Folder:
    cfg = read_config(folder)
    family = cfg["model_type"]
    weights, metadata = read_safetensors(os.path.join(folder, "model.safetensors"))
    whole = cfg["architectures"][0].endswith("ForSequenceClassification")
    prefix = family + "." if whole else ""
    base = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    head = {k: v for k, v in weights.items() if not k.startswith(prefix)}
    return Folder(cfg, family, weights, metadata, load_encoder(cfg, base), head)


def encode(encoder: nn.Module, input_ids, attention_mask, token_type_ids=None) -> Tuple[Tensor, Optional[Tensor]]:
    """The last hidden state and (where the encoder has a pooler) the pooler output, without
    autograd; token_type_ids (text pairs' segments) only where given, else zero as the
    classifier feeds single texts."""
    ids = torch.tensor(input_ids, dtype=torch.long)
    mask = torch.tensor(attention_mask, dtype=torch.long)
    with torch.no_grad():
        if token_type_ids is None:
            out = encoder(ids, mask)
        else:
            out = encoder(ids, mask, torch.tensor(token_type_ids, dtype=torch.long))
    return out if isinstance(out, tuple) else (out, None)

