#!/usr/bin/python3
"""Reference math of the Hugging Face encoders torch-bert builds natively (native/model/), in
plain eager PyTorch, for the tests to compare against (no `transformers` needed).

The modules mirror transformers' (modeling_bert.py BertModel and BertOnlyMLMHead,
modeling_roberta.py RobertaModel and RobertaLMHead, modeling_distilbert.py DistilBertModel and
DistilBertForMaskedLM's vocab_* head) with the same module and parameter names, eager attention,
and load their weights from a dict of tensors named as transformers' AutoModel state_dict plus
the masked-LM head's keys (`cls.`, `lm_head.`, `vocab_*`).

The config is torch-bert's NativeEncoderConfig (lib/addon/binding.ts) as JSON: family, vocabSize,
hiddenSize, numLayers, numHeads, intermediateSize, maxPositions, typeVocabSize, layerNormEps,
padTokenId, hiddenAct, pooler, mlmHead (and optional hiddenDropoutProb, attentionDropoutProb).

Commands (always the system Python, which has PyTorch):
  make --config CFG.json --seed N --out DIR [--decoder tied|same|own]
      random weights (seeded) -> DIR/weights.pt (a dict, as torch.save); two padded batches ->
      DIR/inputs.pt; the reference's outputs on them -> DIR/outputs.pt; the reference's
      state_dict keys (encoder, head) -> DIR/keys.json.
  jit --module M.pt --inputs DIR/inputs.pt --out OUT.pt [--head H.pt]
      runs a TorchScript encoder (and head) saved by torch-bert with torch.jit.load on the
      inputs, in eval mode, and saves its outputs named as `make` names them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
import torch.nn.functional as F

FLOAT_MIN = torch.finfo(torch.float32).min


class Config:
    def __init__(self, d: dict):
        self.family: str = d["family"]
        self.vocab_size: int = d["vocabSize"]
        self.hidden_size: int = d["hiddenSize"]
        self.num_layers: int = d["numLayers"]
        self.num_heads: int = d["numHeads"]
        self.intermediate_size: int = d["intermediateSize"]
        self.max_positions: int = d["maxPositions"]
        self.type_vocab_size: int = d["typeVocabSize"]
        self.layer_norm_eps: float = d["layerNormEps"]
        self.pad_token_id: int = d["padTokenId"]
        self.hidden_act: str = d["hiddenAct"]
        self.pooler: bool = d["pooler"]
        self.mlm_head: bool = d["mlmHead"]
        self.hidden_dropout: float = d.get("hiddenDropoutProb", 0.1)
        self.attention_dropout: float = d.get("attentionDropoutProb", 0.1)


def activation(name: str, x: Tensor) -> Tensor:
    """transformers.activations.ACT2FN[name](x)."""
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_pytorch_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "gelu_new":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    if name == "relu":
        return F.relu(x)
    if name == "silu":
        return F.silu(x)
    raise ValueError(f"unknown activation {name!r}")


# ---- BERT / RoBERTa (modeling_bert.py, modeling_roberta.py) ------------------------------------
class BertEmbeddings(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        roberta = c.family == "roberta"
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_positions, c.hidden_size,
                                                padding_idx=c.pad_token_id if roberta else None)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor]) -> Tensor:
        if self.c.family == "roberta":
            # create_position_ids_from_input_ids
            mask = input_ids.ne(self.c.pad_token_id).int()
            position_ids = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + self.c.pad_token_id
        else:
            position_ids = torch.arange(input_ids.size(1)).unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.heads = c.num_heads
        self.head_size = c.hidden_size // c.num_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout = nn.Dropout(c.attention_dropout)

    def split(self, x: Tensor) -> Tensor:
        return x.view(x.size()[:-1] + (self.heads, self.head_size)).permute(0, 2, 1, 3)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        q, k, v = self.split(self.query(hidden)), self.split(self.key(hidden)), self.split(self.value(hidden))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size) + mask
        probs = self.dropout(F.softmax(scores, dim=-1))
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return context.view(context.size()[:-2] + (self.heads * self.head_size,))


class BertDenseOutput(nn.Module):
    """BertSelfOutput / BertOutput."""

    def __init__(self, c: Config, inner: int):
        super().__init__()
        self.dense = nn.Linear(inner, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout)

    def forward(self, hidden: Tensor, input_tensor: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + input_tensor)


class BertAttention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = BertDenseOutput(c, c.hidden_size)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        return self.output(self.self(hidden, mask), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.act = c.hidden_act
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return activation(self.act, self.dense(hidden))


class BertLayer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertDenseOutput(c, c.intermediate_size)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        attention_output = self.attention(hidden, mask)
        return self.output(self.intermediate(attention_output), attention_output)


class BertEncoder(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(c) for _ in range(c.num_layers)])

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        for layer in self.layer:
            hidden = layer(hidden, mask)
        return hidden


class BertPooler(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class BertModel(nn.Module):
    """BertModel / RobertaModel."""

    def __init__(self, c: Config):
        super().__init__()
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)
        if c.pooler:
            self.pooler = BertPooler(c)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Optional[Tensor] = None):
        extended = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * FLOAT_MIN
        hidden = self.encoder(self.embeddings(input_ids, token_type_ids), extended)
        return (hidden, self.pooler(hidden)) if hasattr(self, "pooler") else hidden


# ---- DistilBERT (modeling_distilbert.py) ---------------------------------------------------------
class Embeddings(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_positions, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout)

    def forward(self, input_ids: Tensor) -> Tensor:
        position_ids = torch.arange(input_ids.size(1)).unsqueeze(0)
        embeddings = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.n_heads = c.num_heads
        self.dim = c.hidden_size
        self.dropout = nn.Dropout(c.attention_dropout)
        self.q_lin = nn.Linear(c.hidden_size, c.hidden_size)
        self.k_lin = nn.Linear(c.hidden_size, c.hidden_size)
        self.v_lin = nn.Linear(c.hidden_size, c.hidden_size)
        self.out_lin = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        bs, _, _ = x.size()
        dph = self.dim // self.n_heads

        def shape(t: Tensor) -> Tensor:
            return t.view(bs, -1, self.n_heads, dph).transpose(1, 2)

        q, k, v = shape(self.q_lin(x)), shape(self.k_lin(x)), shape(self.v_lin(x))
        q = q / math.sqrt(dph)
        scores = torch.matmul(q, k.transpose(2, 3))
        m = (mask == 0).view(bs, 1, 1, x.size(1)).expand_as(scores)
        scores = scores.masked_fill(m, torch.tensor(FLOAT_MIN))
        weights = self.dropout(F.softmax(scores, dim=-1))
        context = torch.matmul(weights, v).transpose(1, 2).contiguous().view(bs, -1, self.n_heads * dph)
        return self.out_lin(context)


class FFN(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.act = c.hidden_act
        self.dropout = nn.Dropout(c.hidden_dropout)
        self.lin1 = nn.Linear(c.hidden_size, c.intermediate_size)
        self.lin2 = nn.Linear(c.intermediate_size, c.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.lin2(activation(self.act, self.lin1(x))))


class TransformerBlock(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.attention = MultiHeadSelfAttention(c)
        self.sa_layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.ffn = FFN(c)
        self.output_layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        sa = self.sa_layer_norm(self.attention(x, mask) + x)
        return self.output_layer_norm(self.ffn(sa) + sa)


class Transformer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.layer = nn.ModuleList([TransformerBlock(c) for _ in range(c.num_layers)])

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class DistilBertModel(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.embeddings = Embeddings(c)
        self.transformer = Transformer(c)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Optional[Tensor] = None) -> Tensor:
        return self.transformer(self.embeddings(input_ids), attention_mask)


# ---- MLM heads -----------------------------------------------------------------------------------
class BertPredictionHeadTransform(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.act = c.hidden_act
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, h: Tensor) -> Tensor:
        return self.LayerNorm(activation(self.act, self.dense(h)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.transform = BertPredictionHeadTransform(c)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(self.transform(h), self.decoder.weight, self.bias)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.predictions = BertLMPredictionHead(c)

    def forward(self, h: Tensor) -> Tensor:
        return self.predictions(h)


class RobertaLMHead(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(self.layer_norm(F.gelu(self.dense(h))), self.decoder.weight, self.bias)


class DistilBertMLMHead(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.act = c.hidden_act
        self.vocab_transform = nn.Linear(c.hidden_size, c.hidden_size)
        self.vocab_layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.vocab_projector = nn.Linear(c.hidden_size, c.vocab_size)

    def forward(self, h: Tensor) -> Tensor:
        return self.vocab_projector(self.vocab_layer_norm(activation(self.act, self.vocab_transform(h))))


HEAD = {"bert": (BertOnlyMLMHead, "cls.", "predictions.decoder.weight"),
        "roberta": (RobertaLMHead, "lm_head.", "decoder.weight"),
        "distilbert": (DistilBertMLMHead, "", "vocab_projector.weight")}


def build(c: Config) -> Tuple[nn.Module, Optional[nn.Module]]:
    encoder = DistilBertModel(c) if c.family == "distilbert" else BertModel(c)
    head = HEAD[c.family][0](c) if c.mlm_head else None
    return encoder, head


def load(c: Config, weights: Dict[str, Tensor]) -> Tuple[nn.Module, Optional[nn.Module]]:
    """The reference modules with `weights` (checkpoint names); a tied decoder weight, absent
    from `weights`, is the word embeddings."""
    encoder, head = build(c)
    prefix, decoder = (HEAD[c.family][1], HEAD[c.family][2])
    enc_sd = {k: v for k, v in weights.items() if k in encoder.state_dict()}
    encoder.load_state_dict(enc_sd, strict=True)
    if head is not None:
        head_sd = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix) and k not in enc_sd}
        if c.family != "distilbert":
            head_sd.pop(decoder.replace("weight", "bias"), None)  # tied to the head's bias
        head_sd.setdefault(decoder, encoder.embeddings.word_embeddings.weight.detach())
        head.load_state_dict(head_sd, strict=True)
    encoder.eval()
    if head is not None:
        head.eval()
    return encoder, head


def random_weights(c: Config, seed: int, decoder: str) -> Dict[str, Tensor]:
    """Seeded weights large enough that every op matters: Linear and Embedding N(0, 0.2), biases
    N(0, 0.1), LayerNorm weights 1 + N(0, 0.1). `decoder`: 'tied' (no decoder weight: the word
    embeddings), 'same' (a decoder weight equal to them), 'own' (a different one)."""
    g = torch.Generator().manual_seed(seed)
    encoder, head = build(c)
    prefix, dec = HEAD[c.family][1], HEAD[c.family][2]
    named = list(encoder.state_dict().items())
    if head is not None:
        named += [(prefix + k, v) for k, v in head.state_dict().items() if k != dec]
    out: Dict[str, Tensor] = {}
    for name, t in named:
        if "LayerNorm" in name or "layer_norm" in name:
            w = (1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(t.shape, generator=g)
        elif name.endswith("bias"):
            w = 0.1 * torch.randn(t.shape, generator=g)
        else:
            w = 0.2 * torch.randn(t.shape, generator=g)
        out[name] = w.contiguous()
    if head is not None and decoder != "tied":
        words = out["embeddings.word_embeddings.weight"]
        out[prefix + dec] = words.clone() if decoder == "same" else 0.2 * torch.randn(words.shape, generator=g)
    return out


def random_inputs(c: Config, seed: int) -> Dict[str, Tensor]:
    """Two padded batches, b0 [2, 7] and b1 [3, 12]: row 0 full, the others shorter, padding with
    padTokenId; real ids never equal it (RoBERTa counts positions by it)."""
    g = torch.Generator().manual_seed(seed + 1)
    out: Dict[str, Tensor] = {}
    for name, (batch, seq) in (("b0", (2, 7)), ("b1", (3, 12))):
        ids = torch.randint(0, c.vocab_size - 1, (batch, seq), generator=g)
        ids = ids + (ids >= c.pad_token_id).long()  # skip the pad id
        mask = torch.ones(batch, seq, dtype=torch.long)
        for r in range(1, batch):
            valid = int(torch.randint(1, seq, (1,), generator=g))
            mask[r, valid:] = 0
            ids[r, valid:] = c.pad_token_id
        out[f"{name}.input_ids"] = ids
        out[f"{name}.attention_mask"] = mask
        if c.family == "bert":
            out[f"{name}.token_type_ids"] = torch.randint(0, c.type_vocab_size, (batch, seq), generator=g)
    return out


def run(c: Config, encoder, head, inputs: Dict[str, Tensor]) -> Dict[str, Tensor]:
    out: Dict[str, Tensor] = {}
    with torch.no_grad():
        for b in ("b0", "b1"):
            args = [inputs[f"{b}.input_ids"], inputs[f"{b}.attention_mask"]]
            if c.family == "bert":
                args.append(inputs[f"{b}.token_type_ids"])
            result = encoder(*args)
            hidden = result[0] if isinstance(result, tuple) else result
            out[f"{b}.last_hidden_state"] = hidden
            if isinstance(result, tuple):
                out[f"{b}.pooler_output"] = result[1]
            if head is not None:
                out[f"{b}.logits"] = head(hidden)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--config", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--decoder", choices=("tied", "same", "own"), default="tied")
    m.add_argument("--out", required=True)
    j = sub.add_parser("jit")
    j.add_argument("--config", required=True)
    j.add_argument("--module", required=True)
    j.add_argument("--head")
    j.add_argument("--inputs", required=True)
    j.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with open(args.config, encoding="utf-8") as f:
        c = Config(json.load(f))
    if args.command == "make":
        os.makedirs(args.out, exist_ok=True)
        weights = random_weights(c, args.seed, args.decoder)
        encoder, head = load(c, weights)
        inputs = random_inputs(c, args.seed)
        torch.save(weights, os.path.join(args.out, "weights.pt"))
        torch.save(inputs, os.path.join(args.out, "inputs.pt"))
        torch.save(run(c, encoder, head, inputs), os.path.join(args.out, "outputs.pt"))
        keys = {"encoder": list(encoder.state_dict().keys()),
                "head": list(head.state_dict().keys()) if head is not None else None}
        with open(os.path.join(args.out, "keys.json"), "w", encoding="utf-8") as f:
            json.dump(keys, f)
    else:
        encoder = torch.jit.load(args.module).eval()
        head = torch.jit.load(args.head).eval() if args.head else None
        torch.save(run(c, encoder, head, torch.load(args.inputs)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
