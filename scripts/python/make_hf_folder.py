#!/usr/bin/python3
"""Write a Hugging Face model folder with seeded random weights, in one of the layouts real
checkpoints come in, independently of this repository's TypeScript (the tests read these
folders with lib/models/hf-checkpoint.ts and must not be checked against themselves).

Weights: the parameter names and shapes of transformers' BertModel / RobertaModel /
DistilBertModel (and their MLM and other heads), written out by hand below. Matrices and
embeddings are normal(0, 0.02) as BERT's init; biases and LayerNorm parameters are perturbed
from BERT's zeros and ones (normal(0, 0.02) and 1 + normal(0, 0.1)), so that a bias or a
LayerNorm put in the wrong place changes the outputs.

Layouts (--layout):
  automodel    AutoModel names, float32, model.safetensors (with pooler)
  pretraining  as bert-base-uncased's own file: `bert.` prefix, LayerNorm gamma/beta, the MLM and
               NSP heads, the embeddings.position_ids buffer (int64)
  mlm          BertForMaskedLM as save_pretrained writes it: `bert.` prefix, MLM head without its
               tied decoder weight, no pooler
  f16, bf16    AutoModel names in float16 / bfloat16
  sharded      model.safetensors.index.json + 3 shards
  bin          pytorch_model.bin (torch.save, zip format), `bert.` prefix + heads
  bin-sharded  pytorch_model.bin.index.json + 2 .bin shards
  roberta      RobertaForMaskedLM (`roberta.` prefix, lm_head with its decoder's tied bias)
  distilbert   DistilBertForMaskedLM (`distilbert.` prefix, vocab_* head)
  bert-seqcls, roberta-seqcls, distilbert-seqcls
               Bert-, Roberta-, DistilBertForSequenceClassification as save_pretrained writes it:
               the family's prefix, the head's own names (classifier; classifier.dense and
               classifier.out_proj; pre_classifier and classifier), three classes named in
               id2label (SEQCLS_LABELS); the layers' matrices drawn 10x and the head's 25x wider,
               so that the classes' probabilities differ, and differ between texts
  bert-seqcls-legacy
               bert-seqcls's tensors as a transformers 2.x/3.x save has them (many classifiers on
               the Hub, e.g. textattack's, ship only this): pytorch_model.bin (torch.save, zip
               format), LayerNorm.gamma/beta, the embeddings.position_ids buffer
--problem-type (the *-seqcls layouts): config.json's problem_type, single_label_classification by
default; multi_label_classification; regression (one output, LABEL_0); unset (none written, which
transformers reads as regression for one output).
--round f16|bf16 writes float32 weights rounded through that dtype (the reference the f16/bf16
layouts must equal). --weights-out FILE also writes the AutoModel-named float32 weights as one
safetensors file (make_encoder.py --weights traces them).

Tokenizer (--tokenizer): json (assets/demo/tokenizer.json), vocab (its vocabulary as vocab.txt +
tokenizer_config.json), none.

Example: /usr/bin/python3 scripts/python/make_hf_folder.py --out /tmp/bert --layout pretraining
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import write_safetensors  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEMO_TOKENIZER = os.path.join(ROOT, "assets", "demo", "tokenizer.json")

def bert_body(a: argparse.Namespace, types: int) -> List[Tuple[str, List[int]]]:
    H, I = a.hidden, a.intermediate
    shapes = [
        ("embeddings.word_embeddings.weight", [a.vocab_size, H]),
        ("embeddings.position_embeddings.weight", [a.max_position, H]),
        ("embeddings.token_type_embeddings.weight", [types, H]),
        ("embeddings.LayerNorm.weight", [H]),
        ("embeddings.LayerNorm.bias", [H]),
    ]
    for i in range(a.layers):
        p = f"encoder.layer.{i}."
        for lin in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes += [(p + lin + ".weight", [H, H]), (p + lin + ".bias", [H])]
        shapes += [(p + "attention.output.LayerNorm.weight", [H]), (p + "attention.output.LayerNorm.bias", [H])]
        shapes += [(p + "intermediate.dense.weight", [I, H]), (p + "intermediate.dense.bias", [I])]
        shapes += [(p + "output.dense.weight", [H, I]), (p + "output.dense.bias", [H])]
        shapes += [(p + "output.LayerNorm.weight", [H]), (p + "output.LayerNorm.bias", [H])]
    return shapes


def distilbert_body(a: argparse.Namespace) -> List[Tuple[str, List[int]]]:
    H, I = a.hidden, a.intermediate
    shapes = [
        ("embeddings.word_embeddings.weight", [a.vocab_size, H]),
        ("embeddings.position_embeddings.weight", [a.max_position, H]),
        ("embeddings.LayerNorm.weight", [H]),
        ("embeddings.LayerNorm.bias", [H]),
    ]
    for i in range(a.layers):
        p = f"transformer.layer.{i}."
        for lin in ("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin"):
            shapes += [(p + lin + ".weight", [H, H]), (p + lin + ".bias", [H])]
        shapes += [(p + "sa_layer_norm.weight", [H]), (p + "sa_layer_norm.bias", [H])]
        shapes += [(p + "ffn.lin1.weight", [I, H]), (p + "ffn.lin1.bias", [I])]
        shapes += [(p + "ffn.lin2.weight", [H, I]), (p + "ffn.lin2.bias", [H])]
        shapes += [(p + "output_layer_norm.weight", [H]), (p + "output_layer_norm.bias", [H])]
    return shapes


def init(shapes: List[Tuple[str, List[int]]], gen: torch.Generator, pad: int) -> "OrderedDict[str, torch.Tensor]":
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for name, shape in shapes:
        norm = "LayerNorm" in name or "layer_norm" in name
        if norm and name.endswith("weight"):
            t = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            t = 0.02 * torch.randn(shape, generator=gen)
        if name.endswith("word_embeddings.weight"):
            t[pad] = 0  # nn.Embedding's padding_idx row
        out[name] = t
    return out


def family_of(layout: str) -> str:
    family = layout[: -len("-seqcls")] if layout.endswith("-seqcls") else layout
    return family if family in ("roberta", "distilbert") else "bert"


SEQCLS_LABELS = ["negative", "neutral", "positive"]


def config_json(a: argparse.Namespace, family: str, architecture: str, dtype: str) -> Dict[str, object]:
    if family == "distilbert":
        return {
            "activation": a.act, "architectures": [architecture], "attention_dropout": a.dropout, "dim": a.hidden, "dropout": a.dropout,
            "hidden_dim": a.intermediate, "initializer_range": 0.02, "max_position_embeddings": a.max_position,
            "model_type": "distilbert", "n_heads": a.heads, "n_layers": a.layers, "pad_token_id": a.pad,
            "qa_dropout": 0.1, "seq_classif_dropout": 0.2, "sinusoidal_pos_embds": False, "tie_weights_": True,
            "torch_dtype": dtype, "transformers_version": "4.40.0", "vocab_size": a.vocab_size,
        }
    c = {
        "architectures": [architecture], "attention_probs_dropout_prob": a.dropout, "classifier_dropout": None,
        "hidden_act": a.act, "hidden_dropout_prob": a.dropout, "hidden_size": a.hidden, "initializer_range": 0.02,
        "intermediate_size": a.intermediate, "layer_norm_eps": 1e-12 if family == "bert" else 1e-5,
        "max_position_embeddings": a.max_position, "model_type": family, "num_attention_heads": a.heads,
        "num_hidden_layers": a.layers, "pad_token_id": a.pad, "position_embedding_type": "absolute",
        "torch_dtype": dtype, "transformers_version": "4.40.0", "type_vocab_size": 2 if family == "bert" else 1,
        "use_cache": True, "vocab_size": a.vocab_size,
    }
    if family == "roberta":
        c.update({"bos_token_id": 0, "eos_token_id": 2})
    return c


def seqcls_labels(a: argparse.Namespace) -> List[str]:
    """The head's outputs by name: SEQCLS_LABELS, or for regression one output, LABEL_0 as transformers names it."""
    return ["LABEL_0"] if a.problem_type == "regression" else SEQCLS_LABELS


def seqcls_config(a: argparse.Namespace, family: str, architecture: str, dtype: str) -> Dict[str, object]:
    """config_json's, with the task: transformers writes id2label / label2id (num_labels follows from them)."""
    c = config_json(a, family, architecture, dtype)
    labels = seqcls_labels(a)
    c.update({"id2label": {str(i): label for i, label in enumerate(labels)},
              "label2id": {label: i for i, label in enumerate(labels)}})
    if a.problem_type != "unset":
        c["problem_type"] = a.problem_type
    return c


def seqcls(a: argparse.Namespace, family: str, gen: torch.Generator):
    """A *ForSequenceClassification file: the family's body under its prefix, then the head by transformers' names."""
    H, C = a.hidden, len(seqcls_labels(a))
    if family == "distilbert":
        body = init(distilbert_body(a), gen, a.pad)
        head = init([("pre_classifier.weight", [H, H]), ("pre_classifier.bias", [H]), ("classifier.weight", [C, H]),
                     ("classifier.bias", [C])], gen, a.pad)
        prefix, architecture = "distilbert.", "DistilBertForSequenceClassification"
    elif family == "roberta":
        body = init(bert_body(a, 1), gen, a.pad)
        head = init([("classifier.dense.weight", [H, H]), ("classifier.dense.bias", [H]), ("classifier.out_proj.weight", [C, H]),
                     ("classifier.out_proj.bias", [C])], gen, a.pad)
        prefix, architecture = "roberta.", "RobertaForSequenceClassification"
    else:
        body = init(bert_body(a, 2), gen, a.pad)
        body.update(init([("pooler.dense.weight", [H, H]), ("pooler.dense.bias", [H])], gen, a.pad))
        head = init([("classifier.weight", [C, H]), ("classifier.bias", [C])], gen, a.pad)
        prefix, architecture = "bert.", "BertForSequenceClassification"
    # The layers' matrices 10x wider too: with BERT's 0.02 the first token's state hardly depends
    # on the rest of the text (DistilBERT's [CLS] moved by 5e-6 between texts).
    body = OrderedDict((k, 10 * v if k.startswith(("encoder.", "transformer.")) and k.endswith(".weight") and "LayerNorm" not in k
                        and "layer_norm" not in k else v) for k, v in body.items())
    out = OrderedDict((prefix + k, v) for k, v in body.items())
    out.update((k, 25 * v) for k, v in head.items())
    return out, body, architecture, "float32"


def build(a: argparse.Namespace) -> Tuple["OrderedDict[str, torch.Tensor]", "OrderedDict[str, torch.Tensor]", str, str]:
    """(the file's tensors in the layout, the AutoModel-named float32 weights, architecture, torch_dtype)."""
    family = family_of(a.layout)
    gen = torch.Generator().manual_seed(a.seed)
    H, V = a.hidden, a.vocab_size
    if a.layout == "bert-seqcls-legacy":
        tensors, body, architecture, dtype = seqcls(a, family, gen)
        legacy = OrderedDict([("bert.embeddings.position_ids", torch.arange(a.max_position).unsqueeze(0))])
        for k, v in tensors.items():
            legacy[k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")] = v
        return legacy, body, architecture, dtype
    if a.layout.endswith("-seqcls"):
        return seqcls(a, family, gen)
    if family == "distilbert":
        body = init(distilbert_body(a), gen, a.pad)
        head = init([("vocab_transform.weight", [H, H]), ("vocab_transform.bias", [H]), ("vocab_layer_norm.weight", [H]),
                     ("vocab_layer_norm.bias", [H]), ("vocab_projector.bias", [V])], gen, a.pad)
        head["vocab_projector.weight"] = body["embeddings.word_embeddings.weight"].clone()
        out = OrderedDict(("distilbert." + k, v) for k, v in body.items())
        out.update(head)
        return out, body, "DistilBertForMaskedLM", "float32"
    body = init(bert_body(a, 2 if family == "bert" else 1), gen, a.pad)
    if family == "roberta":
        head = init([("lm_head.dense.weight", [H, H]), ("lm_head.dense.bias", [H]), ("lm_head.layer_norm.weight", [H]),
                     ("lm_head.layer_norm.bias", [H]), ("lm_head.bias", [V])], gen, a.pad)
        head["lm_head.decoder.bias"] = head["lm_head.bias"].clone()  # tied; save_pretrained keeps both names
        out = OrderedDict(("roberta." + k, v) for k, v in body.items())
        out.update(head)
        return out, body, "RobertaForMaskedLM", "float32"
    pooler = init([("pooler.dense.weight", [H, H]), ("pooler.dense.bias", [H])], gen, a.pad)
    mlm = init([("cls.predictions.transform.dense.weight", [H, H]), ("cls.predictions.transform.dense.bias", [H]),
                ("cls.predictions.transform.LayerNorm.weight", [H]), ("cls.predictions.transform.LayerNorm.bias", [H]),
                ("cls.predictions.bias", [V])], gen, a.pad)
    nsp = init([("cls.seq_relationship.weight", [2, H]), ("cls.seq_relationship.bias", [2])], gen, a.pad)
    automodel = OrderedDict(body)
    automodel.update(pooler)
    if a.layout in ("automodel", "f16", "bf16", "sharded"):
        dtype = {"f16": torch.float16, "bf16": torch.bfloat16}.get(a.layout, torch.float32)
        rounded = a.round and {"f16": torch.float16, "bf16": torch.bfloat16}[a.round]
        out = OrderedDict((k, v.to(rounded).float() if rounded else v.to(dtype)) for k, v in automodel.items())
        return out, automodel, "BertModel", str(dtype).replace("torch.", "")
    if a.layout == "mlm":
        out = OrderedDict(("bert." + k, v) for k, v in body.items())
        out.update(mlm)
        return out, body, "BertForMaskedLM", "float32"
    # pretraining / bin / bin-sharded: bert-base-uncased's own file.
    out = OrderedDict()
    out["bert.embeddings.position_ids"] = torch.arange(a.max_position).unsqueeze(0)
    for k, v in automodel.items():
        out["bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")] = v
    for k, v in mlm.items():
        out[k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")] = v
    out["cls.predictions.decoder.weight"] = body["embeddings.word_embeddings.weight"].clone()
    out.update(nsp)
    return out, automodel, "BertForPreTraining", "float32"


def write_shards(out_dir: str, tensors: "OrderedDict[str, torch.Tensor]", n: int, kind: str) -> None:
    names = list(tensors)
    per = (len(names) + n - 1) // n
    weight_map: Dict[str, str] = {}
    total = 0
    for s in range(n):
        part = OrderedDict((k, tensors[k]) for k in names[s * per:(s + 1) * per])
        if kind == "safetensors":
            fname = f"model-{s + 1:05d}-of-{n:05d}.safetensors"
            write_safetensors(os.path.join(out_dir, fname), part, {"format": "pt"})
        else:
            fname = f"pytorch_model-{s + 1:05d}-of-{n:05d}.bin"
            torch.save(dict(part), os.path.join(out_dir, fname))
        for k, v in part.items():
            weight_map[k] = fname
            total += v.numel() * v.element_size()
    index = "model.safetensors.index.json" if kind == "safetensors" else "pytorch_model.bin.index.json"
    with open(os.path.join(out_dir, index), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def write_tokenizer(a: argparse.Namespace) -> None:
    if a.tokenizer == "none":
        return
    if a.tokenizer == "json":
        shutil.copyfile(DEMO_TOKENIZER, os.path.join(a.out, "tokenizer.json"))
        return
    with open(DEMO_TOKENIZER, encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    with open(os.path.join(a.out, "vocab.txt"), "w", encoding="utf-8") as f:
        for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
            f.write(token + "\n")
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "model_max_length": a.model_max_length, "tokenizer_class": "BertTokenizer",
                   "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                   "mask_token": "[MASK]"}, f, indent=2)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--layout", default="automodel",
                   choices=["automodel", "pretraining", "mlm", "f16", "bf16", "sharded", "bin", "bin-sharded", "roberta", "distilbert",
                            "bert-seqcls", "roberta-seqcls", "distilbert-seqcls", "bert-seqcls-legacy"])
    p.add_argument("--round", choices=["f16", "bf16"], help="automodel layout only: float32 values rounded through this dtype")
    p.add_argument("--tokenizer", default="json", choices=["json", "vocab", "none"])
    p.add_argument("--model-max-length", type=int, default=512, help="tokenizer_config.json's model_max_length (vocab tokenizer)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=64)
    p.add_argument("--vocab-size", type=int, default=589, help="default: the demo tokenizer's")
    p.add_argument("--max-position", type=int, default=64)
    p.add_argument("--pad", type=int, default=0, help="pad_token_id (the demo tokenizer's [PAD] is 0)")
    p.add_argument("--act", default="gelu")
    p.add_argument("--dropout", type=float, default=0.1, help="the config's hidden and attention dropout probabilities")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--problem-type", default="single_label_classification",
                   choices=["single_label_classification", "multi_label_classification", "regression", "unset"],
                   help="*-seqcls layouts: config.json's problem_type (unset: none written); regression has one output, LABEL_0")
    p.add_argument("--weights-out", help="also write the AutoModel-named float32 weights here (safetensors)")
    a = p.parse_args()
    if a.round and a.layout != "automodel":
        p.error("--round goes with --layout automodel")
    os.makedirs(a.out, exist_ok=True)
    tensors, automodel, architecture, dtype = build(a)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        write_config = seqcls_config if "-seqcls" in a.layout else config_json
        json.dump(write_config(a, family_of(a.layout), architecture, dtype), f, indent=2, sort_keys=True)
    if a.layout == "sharded":
        write_shards(a.out, tensors, 3, "safetensors")
    elif a.layout == "bin-sharded":
        write_shards(a.out, tensors, 2, "bin")
    elif a.layout in ("bin", "bert-seqcls-legacy"):
        torch.save(dict(tensors), os.path.join(a.out, "pytorch_model.bin"))
    else:
        write_safetensors(os.path.join(a.out, "model.safetensors"), tensors, {"format": "pt"})
    write_tokenizer(a)
    if a.weights_out:
        write_safetensors(a.weights_out, OrderedDict((k, v.float()) for k, v in automodel.items()), {"format": "pt"})
    print(f"[make_hf_folder] {a.layout}: {len(tensors)} tensors -> {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
