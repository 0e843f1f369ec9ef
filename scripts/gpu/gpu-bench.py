"""The Python PyTorch side of scripts/gpu/gpu-bench.mjs: the same training step as torch-bert's
binding.trainStep, written as a PyTorch user would, on the same encoder weights and GPU.

Each configuration is test/python/reference_step.py's TechniqueRun, the CPU reference's
step, on the device: the TorchScript file's weights in make_encoder.py's eager BertModel (Hugging
Face BertModel's math, checked against the traced file), [CLS] vector, head Linear(H, 512) -
ReLU - Dropout(0.1) - Linear(512, 2) - LogSoftmax seeded 42, NLL loss (float32, outside
autocast), backward, AdamW(lr 1e-5, weight decay 0.01), zero_grad, loss and correct count read
back (.item()); the batch is copied to the device every step. full: every parameter trains;
frozen: the encoder runs under no_grad, only the head trains; lora: PEFT-style adapters (r 8,
alpha 16, no dropout) on every layer's attention query and value. Precision bf16:
torch.autocast(bfloat16) around the forward, as torch-bert's `precision: 'bf16'`. fp32 matmuls
use TF32 when --tf32 1 (pass torch-bert's setting, so both sides match).

Attention (--attention sdpa, the default): as transformers' BertModel runs it by default
(attn_implementation "sdpa"): torch.nn.functional.scaled_dot_product_attention, with no mask
when nothing is padded (so the fused kernels apply), else the additive mask. A PyTorch without
it (1.x, the CPU machine's 1.13) runs the eager attention instead, and the header line says so.

  python3 scripts/gpu/gpu-bench.py --encoder bert.pt --rows full/256/bf16,lora/256/bf16 --batch 32 --tf32 1
  python3 scripts/gpu/gpu-bench.py --encoder bert.pt --serve ...   # rows from stdin, one JSON object a line
Prints one JSON line first (versions, GPU, attention), then one JSON line per row as soon as it
is measured (flushed: a run stopped by a time limit keeps every row measured before it).
"""
import argparse
import json
import os
import sys
import time

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts", "python"))
sys.path.insert(0, os.path.join(ROOT, "test", "python"))
import make_encoder  # noqa: E402
from reference_step import EagerEncoder, TechniqueRun  # noqa: E402

# TechniqueRun's settings, as bench/technique-model.mjs sets up torch-bert's side.
SETTINGS = dict(num_classes=2, head_hidden=512, dropout=0.1, seed=42, lr=1e-5, weight_decay=0.01, max_grad_norm=0.0,
                lora_targets=["attention.self.query", "attention.self.value"], lora_rank=8, lora_alpha=16.0,
                lora_dropout=0.0, lora_style="peft")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def sdpa_attention_forward(self, hidden_states, attention_mask):
    """transformers' BertSdpaSelfAttention: the same projections, one fused attention call."""
    q = self.transpose_for_scores(self.query(hidden_states))
    k = self.transpose_for_scores(self.key(hidden_states))
    v = self.transpose_for_scores(self.value(hidden_states))
    # Under autocast q is bf16 while the additive mask is float32; SDPA wants them alike.
    mask = None if attention_mask is None else attention_mask.to(q.dtype)
    ctx = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout.p if self.training else 0.0)
    ctx = ctx.permute(0, 2, 1, 3).contiguous()
    return ctx.view(ctx.size()[:-2] + (self.all_head_size,))


def sdpa_encode(self, input_ids, attention_mask, token_type_ids):
    # transformers drops an all-ones mask for SDPA (_prepare_4d_attention_mask_for_sdpa): no
    # mask lets PyTorch pick the flash / memory-efficient kernels.
    if bool(attention_mask.all()):
        extended = None
    else:
        dtype = self.embeddings.word_embeddings.weight.dtype
        extended = (1.0 - attention_mask[:, None, None, :].to(dtype=dtype)) * torch.finfo(dtype).min
    sequence_output = self.encoder(self.embeddings(input_ids, token_type_ids), extended)
    return sequence_output, self.pooler(sequence_output)


def use_attention(kind: str) -> str:
    """Makes make_encoder's BertModel use `kind`; returns what it really uses (for the header)."""
    if kind == "sdpa":
        if not hasattr(nn.functional, "scaled_dot_product_attention"):
            return f"eager (torch {torch.__version__} has no scaled_dot_product_attention)"
        make_encoder.BertSelfAttention.forward = sdpa_attention_forward
        make_encoder.BertModel.encode = sdpa_encode
        return "sdpa"
    return "eager"


def emit(obj) -> None:
    print(json.dumps(obj), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--encoder", required=True)
    p.add_argument("--rows", default="", help="technique/seq/precision,... measured in this order (unless --serve)")
    p.add_argument("--serve", action="store_true", help='rows from stdin, one {"technique","seq","precision"} a line')
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--heads", type=int, help="attention heads (default: inferred)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--attention", choices=["sdpa", "eager"], default="sdpa")
    p.add_argument("--tf32", type=int, default=0, help="allow TF32 matmuls in fp32 (1) or not (0)")
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = bool(a.tf32)
    torch.backends.cudnn.allow_tf32 = bool(a.tf32)
    attention = use_attention(a.attention)
    # After use_attention: EagerEncoder checks the model it builds against the traced file.
    eager = EagerEncoder(a.encoder, a.heads)
    emit({
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "tf32": bool(a.tf32),
        "attention": attention,
    })

    def measure(technique: str, seq: int, precision: str) -> dict:
        row = {"seq": seq, "technique": technique, "precision": precision, "batch": a.batch}
        try:
            g = torch.Generator().manual_seed(0)
            ids = torch.randint(1000, a.vocab, (a.batch, seq), generator=g, dtype=torch.long)
            batch = (ids, torch.ones_like(ids), torch.arange(a.batch) % 2)
            run = TechniqueRun(technique, eager, batch, argparse.Namespace(**SETTINGS), device=dev, precision=precision)
            for _ in range(a.warmup):
                run.step()
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(a.steps):
                run.step()
            sync(dev)
            dt = time.perf_counter() - t0
            row.update(secondsPerStep=dt / a.steps, sequencesPerSecond=a.batch * a.steps / dt)
            del run
        except (Exception, SystemExit) as e:  # noqa: BLE001 - reported in the table (TechniqueRun exits on bad settings)
            row["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        return row

    if a.serve:
        for line in sys.stdin:
            if line.strip():
                r = json.loads(line)
                emit(measure(r["technique"], int(r["seq"]), r["precision"]))
    else:
        for spec in filter(None, a.rows.split(",")):
            technique, seq, precision = spec.split("/")
            emit(measure(technique, int(seq), precision))


if __name__ == "__main__":
    main()
