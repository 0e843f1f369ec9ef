"""The safetensors format in plain Python (struct + json + torch), for the tests' independent
side: no `safetensors` package is installed here, and what the tests check the native reader
and writer against must not be those same native functions.

Format: u64 little-endian header size N, N bytes of JSON (`{"__metadata__"?: {str: str},
name: {"dtype", "shape", "data_offsets": [begin, end]}}`, offsets into the bytes after the
header), then the tensors' bytes, row-major, little-endian. The writer pads the header with
spaces to a multiple of 8 as the reference writer does; the reader checks that the offsets
tile the data exactly (no holes, no overlaps) and that every size agrees with its shape.
"""

from __future__ import annotations

import json
import struct
from typing import Dict, Mapping, Optional, Tuple

import torch

DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
NAMES = {dtype: name for name, dtype in DTYPES.items()}


def write_safetensors(path: str, tensors: Mapping[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None) -> None:
    """Writes `tensors` in the order given."""
    header: Dict[str, object] = {}
    chunks = []
    offset = 0
    for name, t in tensors.items():
        t = t.detach().contiguous().reshape(-1)
        raw = t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.to(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for chunk in chunks:
            f.write(chunk)


def read_safetensors(path: str) -> Tuple[Dict[str, torch.Tensor], Optional[Dict[str, str]]]:
    """Every tensor (in offset order) and the metadata, with the format's rules checked."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    metadata = header.pop("__metadata__", None)
    buffer = data[8 + n:]
    tensors: Dict[str, torch.Tensor] = {}
    end = 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, stop = info["data_offsets"]
        if begin != end:
            raise ValueError(f"{path}: {name} starts at {begin}, not {end}: holes or overlaps")
        dtype = DTYPES[info["dtype"]]
        count = 1
        for d in info["shape"]:
            count *= d
        size = torch.empty((), dtype=dtype).element_size()
        if stop - begin != count * size:
            raise ValueError(f"{path}: {name}: {stop - begin} bytes for shape {info['shape']}")
        raw = bytearray(buffer[begin:stop])
        if dtype == torch.bool:
            t = torch.frombuffer(raw, dtype=torch.uint8).to(torch.bool) if raw else torch.empty(0, dtype=torch.bool)
        else:
            t = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(info["shape"])
        end = stop
    if end != len(buffer):
        raise ValueError(f"{path}: {len(buffer) - end} bytes after the last tensor")
    return tensors, metadata
