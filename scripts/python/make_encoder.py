#!/usr/bin/python3
"""Build a BERT encoder in plain PyTorch and save it as TorchScript (torch.jit.trace).

The module mirrors Hugging Face `transformers.BertModel` exactly: the same module and
parameter names (so `state_dict()` keys equal BertModel's: `embeddings.word_embeddings.weight`,
`encoder.layer.0.attention.self.query.weight`, ..., `pooler.dense.bias`), the same forward
math (eager attention, erf GELU, LayerNorm eps 1e-12, extended attention mask
`(1 - mask[:, None, None, :]) * finfo.min` added to the scores, tanh pooler on the first
token) and the same initialisation (normal(0, 0.02) Linear/Embedding weights, zero biases
and padding row, LayerNorm 1/0). It is traced in eval mode (dropout off) and checked
against the eager module at several batch sizes and sequence lengths.

`--pretrain CSV` first fine-tunes the whole encoder, with a throwaway linear head on the
[CLS] vector, on a labelled CSV so that its features carry information (a randomly
initialised BERT gives near-constant [CLS] vectors; this stands in for the pretrained
weights a user would normally bring). Text is tokenized with wordpiece.py, which reads the
same tokenizer.json as the TypeScript side and produces the same ids.

Examples (always the system Python, which has PyTorch):
  /usr/bin/python3 scripts/python/make_encoder.py --out /tmp/enc.pt --vocab-size 1000
  /usr/bin/python3 scripts/python/make_encoder.py --out assets/demo/encoder.pt \\
      --tokenizer assets/demo/tokenizer.json --pretrain assets/demo/pretrain.csv
Progress and a summary go to stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def log(msg: str) -> None:
    print(f"[make_encoder] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------
# Model (Hugging Face BertModel, eager attention)
# ----------------------------------------------------------------------------------------
class Config:
    def __init__(self, vocab_size: int, hidden: int, layers: int, heads: int, intermediate: int,
                 max_position: int, type_vocab: int, dropout: float = 0.1, pad_token_id: int = 0):
        if hidden % heads != 0:
            raise ValueError(f"--hidden {hidden} is not a multiple of --heads {heads}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden
        self.num_hidden_layers = layers
        self.num_attention_heads = heads
        self.intermediate_size = intermediate
        self.max_position_embeddings = max_position
        self.type_vocab_size = type_vocab
        self.hidden_dropout_prob = dropout
        self.attention_probs_dropout_prob = dropout
        self.layer_norm_eps = 1e-12
        self.initializer_range = 0.02
        self.pad_token_id = pad_token_id


class BertEmbeddings(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)
        # As in transformers >= 4.31: buffers, not saved in state_dict.
        self.register_buffer(
            "position_ids", torch.arange(c.max_position_embeddings).expand((1, -1)), persistent=False
        )
        self.register_buffer(
            "token_type_ids", torch.zeros((1, c.max_position_embeddings), dtype=torch.long), persistent=False
        )

    def forward(self, input_ids: Tensor, token_type_ids: Optional[Tensor] = None) -> Tensor:
        seq_length = input_ids.size(1)
        position_ids = self.position_ids[:, :seq_length]
        if token_type_ids is None:
            token_type_ids = self.token_type_ids[:, :seq_length].expand(input_ids.size(0), seq_length)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        embeddings = self.LayerNorm(embeddings)
        return self.dropout(embeddings)


class BertSelfAttention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.num_attention_heads = c.num_attention_heads
        self.attention_head_size = c.hidden_size // c.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.query = nn.Linear(c.hidden_size, self.all_head_size)
        self.key = nn.Linear(c.hidden_size, self.all_head_size)
        self.value = nn.Linear(c.hidden_size, self.all_head_size)
        self.dropout = nn.Dropout(c.attention_probs_dropout_prob)

    def transpose_for_scores(self, x: Tensor) -> Tensor:
        new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        return x.view(new_x_shape).permute(0, 2, 1, 3)

    def forward(self, hidden_states: Tensor, attention_mask: Tensor) -> Tensor:
        query_layer = self.transpose_for_scores(self.query(hidden_states))
        key_layer = self.transpose_for_scores(self.key(hidden_states))
        value_layer = self.transpose_for_scores(self.value(hidden_states))
        scores = torch.matmul(query_layer, key_layer.transpose(-1, -2))
        scores = scores / math.sqrt(self.attention_head_size)
        scores = scores + attention_mask
        probs = nn.functional.softmax(scores, dim=-1)
        probs = self.dropout(probs)
        context = torch.matmul(probs, value_layer)
        context = context.permute(0, 2, 1, 3).contiguous()
        new_shape = context.size()[:-2] + (self.all_head_size,)
        return context.view(new_shape)


class BertSelfOutput(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        hidden_states = self.dropout(self.dense(hidden_states))
        return self.LayerNorm(hidden_states + input_tensor)


class BertAttention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = BertSelfOutput(c)

    def forward(self, hidden_states: Tensor, attention_mask: Tensor) -> Tensor:
        return self.output(self.self(hidden_states, attention_mask), hidden_states)


class BertIntermediate(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return nn.functional.gelu(self.dense(hidden_states))  # exact (erf) GELU, HF "gelu"


class BertOutput(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.dense = nn.Linear(c.intermediate_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        hidden_states = self.dropout(self.dense(hidden_states))
        return self.LayerNorm(hidden_states + input_tensor)


class BertLayer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertOutput(c)

    def forward(self, hidden_states: Tensor, attention_mask: Tensor) -> Tensor:
        attention_output = self.attention(hidden_states, attention_mask)
        return self.output(self.intermediate(attention_output), attention_output)


class BertEncoder(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(c) for _ in range(c.num_hidden_layers)])

    def forward(self, hidden_states: Tensor, attention_mask: Tensor) -> Tensor:
        for layer in self.layer:
            hidden_states = layer(hidden_states, attention_mask)
        return hidden_states


class BertPooler(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class BertModel(nn.Module):
    """Hugging Face BertModel; `forward` is defined by the subclasses below so that the traced
    TorchScript signature has exactly 2 or 3 inputs."""

    output_kind = "tuple"

    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)
        self.pooler = BertPooler(c)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)

    def encode(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        dtype = self.embeddings.word_embeddings.weight.dtype
        extended = attention_mask[:, None, None, :].to(dtype=dtype)
        extended = (1.0 - extended) * torch.finfo(dtype).min
        hidden = self.embeddings(input_ids, token_type_ids)
        sequence_output = self.encoder(hidden, extended)
        return sequence_output, self.pooler(sequence_output)

    def shape_output(self, last_hidden_state: Tensor, pooler_output: Tensor):
        kind = self.output_kind
        if kind == "tuple":
            return last_hidden_state, pooler_output
        if kind == "dict":
            return {"last_hidden_state": last_hidden_state, "pooler_output": pooler_output}
        if kind == "tensor":
            return last_hidden_state
        if kind == "bad":
            return pooler_output  # [B, H]: not a [B, T, H] hidden state, to test error messages
        raise ValueError(kind)


class BertModel2(BertModel):
    def forward(self, input_ids: Tensor, attention_mask: Tensor):
        return self.shape_output(*self.encode(input_ids, attention_mask, None))


class BertModel3(BertModel):
    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor):
        return self.shape_output(*self.encode(input_ids, attention_mask, token_type_ids))


def hf_state_dict_keys(c: Config) -> List[str]:
    """The keys of transformers.BertModel(config).state_dict() (transformers >= 4.31)."""
    keys = [
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias",
    ]
    for i in range(c.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                     "output.dense", "output.LayerNorm"):
            keys += [p + name + ".weight", p + name + ".bias"]
    keys += ["pooler.dense.weight", "pooler.dense.bias"]
    return keys


# ----------------------------------------------------------------------------------------
# Pretraining on a labelled CSV
# ----------------------------------------------------------------------------------------
def read_labelled_csv(path: str, text_col: str, label_col: str) -> Tuple[List[str], List[int], List[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or text_col not in reader.fieldnames or label_col not in reader.fieldnames:
            raise SystemExit(f"{path}: needs columns {text_col!r} and {label_col!r}; has {reader.fieldnames}")
        rows = [(r[text_col], r[label_col].strip()) for r in reader]
    if not rows:
        raise SystemExit(f"{path}: no rows")
    raw = [lab for _, lab in rows]
    try:
        ints = [int(x) for x in raw]
        names = [str(v) for v in sorted(set(ints))]
        index = {v: i for i, v in enumerate(sorted(set(ints)))}
        labels = [index[v] for v in ints]
    except ValueError:
        names = sorted(set(raw))
        index = {v: i for i, v in enumerate(names)}
        labels = [index[v] for v in raw]
    if len(names) < 2:
        raise SystemExit(f"{path}: column {label_col!r} has a single class")
    return [t for t, _ in rows], labels, names


def pretrain(model: BertModel, args: argparse.Namespace) -> None:
    from wordpiece import WordPieceTokenizer

    if not args.tokenizer:
        raise SystemExit("--pretrain needs --tokenizer")
    tok = WordPieceTokenizer.from_file(args.tokenizer)
    texts, labels, names = read_labelled_csv(args.pretrain, args.text_column, args.label_column)
    max_len = min(args.pretrain_max_length, model.config.max_position_embeddings)
    encoded = [tok.encode(t) for t in texts]
    for i, ids in enumerate(encoded):
        if len(ids) > max_len:
            encoded[i] = ids[: max_len - 1] + ids[-1:]
    n = len(encoded)
    gen = torch.Generator().manual_seed(args.seed)
    perm = torch.randperm(n, generator=gen).tolist()
    n_val = max(1, n // 10) if n >= 20 else 0
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    H = model.config.hidden_size
    head = nn.Linear(H, len(names))
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.pretrain_lr, weight_decay=0.01)
    bs = args.pretrain_batch_size
    steps_per_epoch = math.ceil(len(train_idx) / bs)
    total = max(1, steps_per_epoch * args.pretrain_epochs)
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    loss_fn = nn.CrossEntropyLoss()
    n_types = model.config.type_vocab_size

    def batch(idx: List[int]) -> Tuple[Tensor, Tensor, Tensor]:
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), tok.pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[r, : len(encoded[i])] = 1
        return ids, mask, torch.tensor([labels[i] for i in idx])

    def cls(ids: Tensor, mask: Tensor) -> Tensor:
        tt = torch.zeros_like(ids) if n_types > 0 else None
        return model.encode(ids, mask, tt)[0][:, 0]

    log(f"pretraining on {args.pretrain}: {len(train_idx)} train / {n_val} held-out rows, "
        f"classes {names}, {args.pretrain_epochs} epochs, lr {args.pretrain_lr}, batch {bs}, max length {max_len}")
    for epoch in range(1, args.pretrain_epochs + 1):
        t0 = time.perf_counter()
        model.train()
        head.train()
        order = [train_idx[i] for i in torch.randperm(len(train_idx), generator=gen).tolist()]
        tot_loss, correct = 0.0, 0
        for s in range(0, len(order), bs):
            ids, mask, y = batch(order[s : s + bs])
            logits = head(cls(ids, mask))
            loss = loss_fn(logits, y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            tot_loss += loss.item() * len(y)
            correct += int((logits.argmax(-1) == y).sum())
        msg = f"pretrain epoch {epoch}: loss {tot_loss / len(order):.4f} acc {correct / len(order):.4f}"
        if n_val:
            model.eval()
            head.eval()
            vloss, vcorrect = 0.0, 0
            with torch.no_grad():
                for s in range(0, n_val, 256):
                    ids, mask, y = batch(val_idx[s : s + 256])
                    logits = head(cls(ids, mask))
                    vloss += loss_fn(logits, y).item() * len(y)
                    vcorrect += int((logits.argmax(-1) == y).sum())
            msg += f" | held-out loss {vloss / n_val:.4f} acc {vcorrect / n_val:.4f}"
        log(msg + f" ({time.perf_counter() - t0:.1f}s)")
    model.eval()


# ----------------------------------------------------------------------------------------
# Tracing and checks
# ----------------------------------------------------------------------------------------
def example_inputs(c: Config, signature: int, batch: int, seq: int, gen: torch.Generator) -> Tuple[Tensor, ...]:
    ids = torch.randint(0, c.vocab_size, (batch, seq), generator=gen)
    mask = torch.ones((batch, seq), dtype=torch.long)
    for b in range(batch):
        valid = int(torch.randint(1, seq + 1, (1,), generator=gen)) if b > 0 else seq
        mask[b, valid:] = 0
        ids[b, valid:] = c.pad_token_id
    if signature == 2:
        return ids, mask
    types = torch.randint(0, c.type_vocab_size, (batch, seq), generator=gen)
    return ids, mask, types


def flatten(out) -> List[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [out[k] for k in sorted(out)]
    return list(out)


def max_diff(a, b) -> float:
    fa, fb = flatten(a), flatten(b)
    assert len(fa) == len(fb), "output structure differs"
    return max(float((x - y).abs().max()) for x, y in zip(fa, fb))


def check_traced(eager: nn.Module, traced, c: Config, signature: int, label: str) -> float:
    gen = torch.Generator().manual_seed(1234)
    P = c.max_position_embeddings
    shapes = [(1, 1), (1, min(5, P)), (3, min(7, P)), (2, min(16, P)), (5, min(33, P)), (2, P)]
    worst = 0.0
    with torch.no_grad():
        for b, t in shapes:
            x = example_inputs(c, signature, b, t, gen)
            d = max_diff(eager(*x), traced(*x))
            worst = max(worst, d)
            if not d < 1e-5:
                raise SystemExit(f"{label} differs from eager at batch {b} seq {t}: max abs diff {d:g}")
    return worst


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Build a Hugging Face-compatible BERT encoder and save it as TorchScript (torch.jit.trace).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output TorchScript file (.pt)")
    p.add_argument("--hf-out", metavar="DIR",
                   help="also write the encoder as a Hugging Face model folder (config.json + model.safetensors)")
    v = p.add_mutually_exclusive_group()
    v.add_argument("--tokenizer", help="tokenizer.json (vocabulary size is read from it; needed for --pretrain)")
    v.add_argument("--vocab-size", type=int, help="vocabulary size when no --tokenizer is given (then 1000)")
    p.add_argument("--layers", type=int, default=2, help="encoder layers")
    p.add_argument("--hidden", type=int, default=64, help="hidden size")
    p.add_argument("--heads", type=int, default=2, help="attention heads (must divide --hidden)")
    p.add_argument("--intermediate", type=int, default=None, help="feed-forward width (None: 4 * hidden)")
    p.add_argument("--max-position", type=int, default=512, help="position embeddings (longest sequence)")
    p.add_argument("--type-vocab", type=int, default=2, help="token type (segment) embeddings")
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed for the init; also seeds pretraining")
    p.add_argument("--weights", metavar="FILE.safetensors",
                   help="load these BertModel-named float32 weights instead of the random init (the sizes must match)")
    p.add_argument("--signature", type=int, choices=(2, 3), default=2,
                   help="2: forward(input_ids, attention_mask); 3: forward(input_ids, attention_mask, token_type_ids)")
    p.add_argument("--output", choices=("tuple", "dict", "tensor", "bad"), default="tuple",
                   help="tuple: (last_hidden_state, pooler_output); dict: {'last_hidden_state', 'pooler_output'}; "
                        "tensor: last_hidden_state; bad: a [B, H] tensor (to test error messages)")
    g = p.add_argument_group("pretraining (makes the encoder informative)")
    g.add_argument("--pretrain", metavar="CSV", help="labelled CSV to fine-tune the whole encoder on before tracing")
    g.add_argument("--pretrain-epochs", type=int, default=10, help="passes over the CSV (10%% of it is held out to report accuracy)")
    g.add_argument("--pretrain-lr", type=float, default=2e-3, help="AdamW peak learning rate (10%% warm-up, linear decay)")
    g.add_argument("--pretrain-batch-size", type=int, default=32, help="pretraining batch size")
    g.add_argument("--pretrain-max-length", type=int, default=64, help="truncate pretraining texts to this many tokens")
    g.add_argument("--pretrain-dropout", type=float, default=0.0,
                   help="hidden and attention dropout while pretraining (HF uses 0.1; 0 learns more reliably "
                        "at this size); the traced module is in eval mode either way")
    g.add_argument("--text-column", default="text", help="CSV column with the text")
    g.add_argument("--label-column", default="label", help="CSV column with the label (ints or strings)")
    g.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (None: PyTorch's choice)")
    return p.parse_args(argv)


def write_hf_folder(model: "BertModel", out_dir: str) -> None:
    """The encoder as transformers' save_pretrained writes a BertModel: config.json + model.safetensors."""
    from safetensors_io import write_safetensors

    c = model.config
    config = {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": c.hidden_size,
        "initializer_range": c.initializer_range,
        "intermediate_size": c.intermediate_size,
        "layer_norm_eps": c.layer_norm_eps,
        "max_position_embeddings": c.max_position_embeddings,
        "model_type": "bert",
        "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers,
        "pad_token_id": c.pad_token_id,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "type_vocab_size": c.type_vocab_size,
        "vocab_size": c.vocab_size,
    }
    os.makedirs(out_dir, exist_ok=True)
    state = {name: t for name, t in model.state_dict().items() if name in set(hf_state_dict_keys(c))}
    write_safetensors(os.path.join(out_dir, "model.safetensors"), state, {"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    log(f"Hugging Face folder: {out_dir}")


def vocab_size_of(tokenizer_path: str) -> int:
    with open(tokenizer_path, encoding="utf-8") as f:
        spec = json.load(f)
    ids = list(spec["model"]["vocab"].values()) + [t["id"] for t in spec.get("added_tokens") or []]
    return max(ids) + 1


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    vocab_size = vocab_size_of(args.tokenizer) if args.tokenizer else (args.vocab_size or 1000)
    if min(args.layers, args.hidden, args.heads, args.max_position, args.type_vocab, vocab_size) < 1:
        raise SystemExit("make_encoder.py: sizes must be positive")
    if args.hidden % args.heads:
        raise SystemExit(f"make_encoder.py: --hidden {args.hidden} is not a multiple of --heads {args.heads}")
    c = Config(
        vocab_size=vocab_size,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        intermediate=args.intermediate or 4 * args.hidden,
        max_position=args.max_position,
        type_vocab=args.type_vocab,
        dropout=args.pretrain_dropout,
    )
    torch.manual_seed(args.seed)
    cls = BertModel2 if args.signature == 2 else BertModel3
    model = cls(c)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"BERT: vocab {c.vocab_size}, {c.num_hidden_layers} layers, hidden {c.hidden_size}, {c.num_attention_heads} heads, "
        f"intermediate {c.intermediate_size}, max positions {c.max_position_embeddings}, type vocab {c.type_vocab_size}; "
        f"{n_params:,} parameters")

    keys = list(model.state_dict().keys())
    expected = hf_state_dict_keys(c)
    if keys != expected:
        raise SystemExit(f"state_dict keys differ from HF BertModel: {sorted(set(keys) ^ set(expected))}")

    if args.weights:
        from safetensors_io import read_safetensors

        state, _ = read_safetensors(args.weights)
        wrong = [name for name, t in state.items() if t.dtype != torch.float32]
        if wrong:
            raise SystemExit(f"--weights {args.weights}: only float32 is read; {wrong[0]} is {state[wrong[0]].dtype}")
        if set(state) != set(expected):
            raise SystemExit(f"--weights {args.weights}: names differ from HF BertModel: {sorted(set(state) ^ set(expected))}")
        model.load_state_dict(state, strict=True)
        log(f"weights from {args.weights}")

    if args.pretrain:
        pretrain(model, args)

    model.eval()
    model.output_kind = args.output
    example = example_inputs(c, args.signature, 2, min(16, c.max_position_embeddings), torch.Generator().manual_seed(7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-derived Python values
        traced = torch.jit.trace(model, example, strict=(args.output != "dict"), check_trace=False)
    worst = check_traced(model, traced, c, args.signature, "traced module")

    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    tmp = f"{args.out}.{os.getpid()}.tmp"
    torch.jit.save(traced, tmp)
    loaded = torch.jit.load(tmp)
    worst = max(worst, check_traced(model, loaded, c, args.signature, "saved module"))
    # TorchScript keeps every buffer in state_dict (it has no notion of non-persistent
    # buffers), exactly like a traced transformers.BertModel; parameters must match HF's.
    param_names = [k for k, _ in loaded.named_parameters()]
    state_keys = set(loaded.state_dict().keys())
    buffers = {"embeddings.position_ids", "embeddings.token_type_ids"}
    if param_names != expected or state_keys != set(expected) | buffers:
        os.unlink(tmp)
        raise SystemExit(f"saved module names differ from HF BertModel: {sorted((state_keys - buffers) ^ set(expected))}")
    os.replace(tmp, args.out)  # atomic: concurrent builders of the same file never see a partial one
    if args.hf_out:
        write_hf_folder(model, args.hf_out)
    log(f"traced (signature {args.signature}, output {args.output}); traced vs eager max abs diff {worst:.2e}; "
        f"schema: {loaded.forward.schema}")
    log(f"wrote {args.out} ({os.path.getsize(args.out):,} bytes) in {time.perf_counter() - t_start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
