#!/usr/bin/env python3
"""Writes the small example inputs of `attnflow attention sdpa`.

    python3 tools/make_attention_examples.py

Standard library only: a safetensors file is an 8-byte little-endian header
length, a JSON header, then the raw little-endian tensor data.

* examples/attention/self_attention.safetensors: q, k, v of shape
  (batch 2, heads 4, n 6, d 8) and a key-padding mask (batch 1 pads its last
  two keys).
* examples/attention/multi_head.safetensors: q = k = v of shape (2, 6, 16)
  and the four projections of a 16-wide, 4-head block (run with --heads 4).
"""
import json
import math
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "examples", "attention")
rng = random.Random(7)


def normal(count, scale=1.0):
    return [rng.gauss(0.0, scale) for _ in range(count)]


def write(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, values) in tensors.items():
        fmt = {"F32": "f", "U8": "B"}[dtype]
        blob = struct.pack("<%d%s" % (len(values), fmt), *values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)


os.makedirs(OUT, exist_ok=True)
shape = [2, 4, 6, 8]
count = math.prod(shape)
write(os.path.join(OUT, "self_attention.safetensors"), {
    "q": ("F32", shape, normal(count)),
    "k": ("F32", shape, normal(count)),
    "v": ("F32", shape, normal(count)),
    "key_padding": ("U8", [2, 6], [0] * 6 + [0, 0, 0, 0, 1, 1]),
})

width, heads, n = 16, 4, 6
x = normal(2 * n * width)
projection = lambda: ("F32", [width, width], normal(width * width, 1.0 / math.sqrt(width)))
bias = lambda: ("F32", [width], normal(width, 0.1))
write(os.path.join(OUT, "multi_head.safetensors"), {
    "q": ("F32", [2, n, width], x), "k": ("F32", [2, n, width], x), "v": ("F32", [2, n, width], x),
    "q_proj.weight": projection(), "k_proj.weight": projection(),
    "v_proj.weight": projection(), "out_proj.weight": projection(),
    "q_proj.bias": bias(), "k_proj.bias": bias(), "v_proj.bias": bias(), "out_proj.bias": bias(),
})
print("wrote", OUT)
