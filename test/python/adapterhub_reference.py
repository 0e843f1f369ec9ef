#!/usr/bin/python3
"""The Python side of test/adapterhub-export.test.ts: what AdapterHub's `adapters` library computes
with an exported adapter loaded on the base model (`model.load_adapter(dir)`,
`model.set_active_adapters(name)`, eval mode), written out in plain PyTorch (no `adapters` or
transformers here) from the files by their exact key names:

  - adapter_config.json: `config` is the BnConfig; the bottleneck layer's ORDER follows its fields as
    AdapterHub's Adapter.pre_forward / forward / post_forward apply them (methods/modeling.py):
      residual = h                        if residual_before_ln is True
      h = LN(h + input)                   if original_ln_before  (residual = h + input first if "post_add")
      residual = h                        if residual_before_ln is False
      up = adapter_up(act(adapter_down(h))) * scaling     (dropout: identity in eval)
      out = up + residual                 (ln_after would sit before or after this add)
      out = LN(out + input)               if original_ln_after
    where h is the sub-layer's output projection after its dropout, input the sub-layer's input and
    LN the sub-layer's own LayerNorm. Fields this reference does not implement (is_parallel,
    use_gating, phm_layer, ln_before, ln_after, a learned scaling, inv_adapter, leave_out) are an error.
  - pytorch_adapter.bin, read with torch.load: keys
    `<family>.encoder.layer.N.{attention.output,output}.adapters.NAME.{adapter_down.0,adapter_up}.{weight,bias}`
    (DistilBERT: `distilbert.transformer.layer.N.{attention_adapters,output_adapters}.adapters.NAME...`);
    the key set must be exactly what mh_adapter / output_adapter ask for on every layer.
  - head_config.json + pytorch_model_head.bin, when present: AdapterHub's ClassificationHead, a
    sequential of (Dropout, Linear(H, H), activation) × (layers - 1), Dropout, Linear(H, C), keys
    `heads.NAME.<index>.{weight,bias}`, on the first token or (use_pooler) the pooler output.
  - The base model: config.json and its weights under AutoModel's names (model.safetensors, or the
    file given as "weights"), strictly loaded into hf_reference.py's encoder (hf_folder_reference.py's
    read_base and load_encoder).

stdin: {"base": DIR, "weights": FILE or null, "dir": EXPORT_DIR, "input_ids": [[...]], "attention_mask": [[...]]}
stdout: {"probabilities": [[...]] or null, "features": [[...]] (the first token's last hidden state),
         "keys": [...], "head_keys": [...], "config": {...}, "head_config": {...} or null}
"""

import json
import os
import re
import sys
import types

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts", "python"))
from hf_folder_reference import encode, load_encoder, read_base  # noqa: E402
from hf_reference import activation  # noqa: E402

# transformers' get_activation names, as AdapterHub's Activation_Function_Class looks them up (lower case).
ACT = {"swish": "silu", "silu": "silu", "relu": "relu", "gelu": "gelu", "gelu_new": "gelu_new", "tanh": None}


def act(name, x):
    name = name.lower()
    if name == "tanh":
        return torch.tanh(x)
    return activation(ACT[name], x)


def bottleneck(c, w, h, input_tensor, layer_norm):
    """AdapterHub's bottleneck_layer_forward for one adapter with BnConfig `c` and weights `w`."""
    residual = h if c["residual_before_ln"] is True else None
    if c["original_ln_before"]:
        h = h + input_tensor
        if c["residual_before_ln"] == "post_add":
            residual = h
        h = layer_norm(h)
    if not c["residual_before_ln"]:
        residual = h
    down = act(c["non_linearity"], F.linear(h, w["adapter_down.0.weight"], w["adapter_down.0.bias"]))
    up = F.linear(down, w["adapter_up.weight"], w["adapter_up.bias"]) * c["scaling"]
    out = up + residual
    if c["original_ln_after"]:
        out = layer_norm(out + input_tensor)
    return out


def check_config(c):
    assert c.get("architecture", "bottleneck") == "bottleneck", c
    for field, value in [("is_parallel", False), ("use_gating", False), ("phm_layer", False), ("ln_before", False),
                         ("ln_after", False), ("inv_adapter", None), ("leave_out", [])]:
        if c.get(field, value) != value:
            raise SystemExit(f"this reference does not implement {field}={c[field]!r}")
    if not isinstance(c["scaling"], (int, float)):
        raise SystemExit(f"this reference does not implement scaling={c['scaling']!r}")


def main():
    args = json.load(sys.stdin)
    cfg, weights = read_base(args["base"], args.get("weights"))
    family = cfg["model_type"]
    with open(os.path.join(args["dir"], "adapter_config.json")) as f:
        meta = json.load(f)
    c = meta["config"]
    check_config(c)
    name = meta["name"]
    assert meta["model_type"] == family, (meta["model_type"], family)
    saved = torch.load(os.path.join(args["dir"], "pytorch_adapter.bin"), map_location="cpu", weights_only=True)

    if family == "distilbert":
        pattern = re.compile(r"^distilbert\.transformer\.layer\.(\d+)\.(attention_adapters|output_adapters)\.adapters\."
                             + re.escape(name) + r"\.(adapter_down\.0|adapter_up)\.(weight|bias)$")
        where = {"attention_adapters": "mh", "output_adapters": "out"}
        layers = cfg["n_layers"]
    else:
        pattern = re.compile(r"^" + family + r"\.encoder\.layer\.(\d+)\.(attention\.output|output)\.adapters\."
                             + re.escape(name) + r"\.(adapter_down\.0|adapter_up)\.(weight|bias)$")
        where = {"attention.output": "mh", "output": "out"}
        layers = cfg["num_hidden_layers"]
    adapters = {}
    for key, tensor in saved.items():
        m = pattern.match(key)
        if not m:
            raise SystemExit(f"unexpected adapter key {key}")
        layer, location, module, param = m.groups()
        adapters.setdefault((int(layer), where[location]), {})[f"{module}.{param}"] = tensor
    locations = (["mh"] if c["mh_adapter"] else []) + (["out"] if c["output_adapter"] else [])
    expected = {(i, loc) for i in range(layers) for loc in locations}
    if set(adapters) != expected or any(len(w) != 4 for w in adapters.values()):
        raise SystemExit(f"adapters at {sorted(adapters)}, expected {sorted(expected)}")
    hidden = cfg.get("hidden_size", cfg.get("dim"))
    size = int(hidden // c["reduction_factor"])  # AdapterHub's BottleneckLayer.add_adapter
    for w in adapters.values():
        assert list(w["adapter_down.0.weight"].shape) == [size, hidden], w["adapter_down.0.weight"].shape
        assert list(w["adapter_up.weight"].shape) == [hidden, size], w["adapter_up.weight"].shape

    encoder = load_encoder(cfg, weights)

    if family == "distilbert":
        for i, block in enumerate(encoder.transformer.layer):
            def forward(self, x, mask, i=i):
                sa = self.attention(x, mask)
                sa = bottleneck(c, adapters[(i, "mh")], sa, x, self.sa_layer_norm) if (i, "mh") in adapters \
                    else self.sa_layer_norm(sa + x)
                ffn = self.ffn(sa)
                return bottleneck(c, adapters[(i, "out")], ffn, sa, self.output_layer_norm) if (i, "out") in adapters \
                    else self.output_layer_norm(ffn + sa)
            block.forward = types.MethodType(forward, block)
    else:
        for i, layer in enumerate(encoder.encoder.layer):
            for loc, sub in (("mh", layer.attention.output), ("out", layer.output)):
                if (i, loc) not in adapters:
                    continue

                def forward(self, hidden_states, input_tensor, w=adapters[(i, loc)]):
                    return bottleneck(c, w, self.dropout(self.dense(hidden_states)), input_tensor, self.LayerNorm)
                sub.forward = types.MethodType(forward, sub)

    hidden_states, pooled = encode(encoder, args["input_ids"], args["attention_mask"])

    result = {"features": hidden_states[:, 0].tolist(), "keys": sorted(saved), "config": meta, "probabilities": None,
              "head_keys": [], "head_config": None}
    head_config_file = os.path.join(args["dir"], "head_config.json")
    if os.path.exists(head_config_file):
        with open(head_config_file) as f:
            head_meta = json.load(f)
        hc = head_meta["config"]
        assert hc["head_type"] == "classification" and head_meta["name"] == name, head_meta
        head = torch.load(os.path.join(args["dir"], "pytorch_model_head.bin"), map_location="cpu", weights_only=True)
        # PredictionHead.build: per layer a Dropout, then Linear(H, H) + activation, the last Linear(H, C).
        indices, index = [], 0
        for layer in range(hc["layers"]):
            index += 1  # the Dropout
            indices.append(index)
            index += 1
            if layer < hc["layers"] - 1 and hc["activation_function"]:
                index += 1
        expected_head = sorted(f"heads.{name}.{i}.{p}" for i in indices for p in ("weight", "bias"))
        if sorted(head) != expected_head:
            raise SystemExit(f"head keys {sorted(head)}, expected {expected_head}")
        x = pooled if hc["use_pooler"] else hidden_states[:, 0]
        with torch.no_grad():
            for n, i in enumerate(indices):
                x = F.linear(x, head[f"heads.{name}.{i}.weight"], head[f"heads.{name}.{i}.bias"])
                if n < len(indices) - 1 and hc["activation_function"]:
                    x = act(hc["activation_function"], x)
        assert x.shape[-1] == hc["num_labels"]
        result.update({"probabilities": torch.softmax(x, -1).tolist(), "head_keys": sorted(head), "head_config": head_meta})
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
