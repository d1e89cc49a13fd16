#!/usr/bin/env python3
"""Regenerates attnflow-core's PyTorch golden fixtures for exact attention.

    python3 tools/make_attention_fixtures.py

Writes crates/attnflow-core/tests/fixtures/attention_golden.safetensors (the
tensors) and attention_golden.json (one entry per case: what was run). Needs
torch, numpy and safetensors; CI does not run this, it only reads the
committed outputs. Every case stores its inputs, an upstream gradient `grad`,
the output, the attention weights and the gradients of the loss
`sum(output * grad)` with respect to every input (and, for multi-head cases,
every parameter).
"""
import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(20261128)
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "crates", "attnflow-core", "tests", "fixtures")

tensors = {}
cases = []


def put(prefix, name, t):
    tensors[f"{prefix}.{name}"] = t.detach().contiguous().to(torch.float32)


def reference_weights(q, k, scale, allowed, additive, causal, gqa):
    """The weights SDPA uses, computed explicitly (SDPA does not return them)."""
    if gqa and k.shape[-3] != q.shape[-3]:
        group = q.shape[-3] // k.shape[-3]
        k = k.repeat_interleave(group, dim=-3)
    scores = (q @ k.transpose(-2, -1)) * scale
    if additive is not None:
        scores = scores + additive
    n, m = q.shape[-2], k.shape[-2]
    if causal:
        scores = scores.masked_fill(~torch.ones(n, m, dtype=torch.bool).tril(), float("-inf"))
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1)


def sdpa_case(name, q_shape, k_shape, v_shape, causal=False, scale=None,
              padding=None, additive=False, allowed=False, gqa=False):
    prefix = f"sdpa.{name}"
    q = torch.randn(*q_shape, requires_grad=True)
    k = torch.randn(*k_shape, requires_grad=True)
    v = torch.randn(*v_shape, requires_grad=True)
    n, m = q_shape[-2], k_shape[-2]
    entry = {"kind": "sdpa", "name": name, "prefix": prefix, "causal": causal,
             "scale": scale, "mask": None, "gqa": gqa}
    allowed_mask = None
    additive_mask = None
    if padding is not None:
        # padding: number of padded keys at the end of each batch element
        key_padding = torch.zeros(q_shape[0], m, dtype=torch.bool)
        for b, count in enumerate(padding):
            if count:
                key_padding[b, m - count:] = True
        allowed_mask = (~key_padding)[:, None, None, :]
        put(prefix, "key_padding", key_padding.to(torch.float32))
        entry["mask"] = "key_padding"
    if allowed:
        allowed_mask = torch.rand(n, m) > 0.3
        allowed_mask[:, 0] = True  # keep every row attending to something
        put(prefix, "mask", allowed_mask.to(torch.float32))
        entry["mask"] = "allowed"
    if additive:
        additive_mask = torch.randn(n, m)
        additive_mask[torch.rand(n, m) > 0.8] = float("-inf")
        additive_mask[:, 0] = 0.0
        put(prefix, "mask", additive_mask)
        entry["mask"] = "additive"
    attn_mask = allowed_mask if allowed_mask is not None else additive_mask
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal,
                                         scale=scale, enable_gqa=gqa)
    effective_scale = scale if scale is not None else 1.0 / math.sqrt(q_shape[-1])
    weights = reference_weights(q, k, effective_scale, allowed_mask, additive_mask, causal, gqa)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    for key, t in [("q", q), ("k", k), ("v", v), ("grad", grad), ("output", out),
                   ("weights", weights), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad)]:
        put(prefix, key, t)
    cases.append(entry)


def mha_case(name, embed_dim, heads, batch, n, m, kdim=None, vdim=None, bias=True,
             causal=False, padding=None, unbatched=False):
    prefix = f"mha.{name}"
    mha = torch.nn.MultiheadAttention(embed_dim, heads, bias=bias, batch_first=True,
                                      kdim=kdim, vdim=vdim)
    with torch.no_grad():  # non-zero biases so that they are really tested
        for p_name, p in mha.named_parameters():
            if "bias" in p_name:
                p.normal_(0, 0.5)
    kd, vd = kdim or embed_dim, vdim or embed_dim
    lead = () if unbatched else (batch,)
    query = torch.randn(*lead, n, embed_dim, requires_grad=True)
    key = query if (m is None) else torch.randn(*lead, m, kd, requires_grad=True)
    value = query if (m is None) else torch.randn(*lead, m, vd, requires_grad=True)
    self_attention = m is None
    m = n if m is None else m
    key_padding_mask = None
    attn_mask = None
    if padding is not None:
        key_padding_mask = torch.zeros(batch, m, dtype=torch.bool)
        for b, count in enumerate(padding):
            if count:
                key_padding_mask[b, m - count:] = True
        put(prefix, "key_padding", key_padding_mask.to(torch.float32))
    if causal:
        attn_mask = ~torch.ones(n, m, dtype=torch.bool).tril()  # True = blocked
    out, weights = mha(query, key, value, key_padding_mask=key_padding_mask,
                       attn_mask=attn_mask, need_weights=True, average_attn_weights=False)
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    # Our layout: q_proj / k_proj / v_proj / out_proj, each (out, in).
    if mha._qkv_same_embed_dim:
        wq, wk, wv = mha.in_proj_weight.chunk(3)
        gq, gk, gv = mha.in_proj_weight.grad.chunk(3)
    else:
        wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        gq, gk, gv = wq.grad, wk.grad, wv.grad
    params = {"q_proj.weight": (wq, gq), "k_proj.weight": (wk, gk), "v_proj.weight": (wv, gv),
              "out_proj.weight": (mha.out_proj.weight, mha.out_proj.weight.grad)}
    if bias:
        bq, bk, bv = mha.in_proj_bias.chunk(3)
        gbq, gbk, gbv = mha.in_proj_bias.grad.chunk(3)
        params.update({"q_proj.bias": (bq, gbq), "k_proj.bias": (bk, gbk), "v_proj.bias": (bv, gbv),
                       "out_proj.bias": (mha.out_proj.bias, mha.out_proj.bias.grad)})
    for p_name, (value_t, grad_t) in params.items():
        put(prefix, f"param.{p_name}", value_t)
        put(prefix, f"param_grad.{p_name}", grad_t)
    put(prefix, "query", query)
    put(prefix, "dquery", query.grad)
    if not self_attention:
        put(prefix, "key", key)
        put(prefix, "value", value)
        put(prefix, "dkey", key.grad)
        put(prefix, "dvalue", value.grad)
    for key_name, t in [("grad", grad), ("output", out), ("weights", weights)]:
        put(prefix, key_name, t)
    cases.append({"kind": "mha", "name": name, "prefix": prefix, "embed_dim": embed_dim,
                  "heads": heads, "key_dim": kdim, "value_dim": vdim, "bias": bias,
                  "causal": causal, "key_padding": padding is not None,
                  "self_attention": self_attention, "unbatched": unbatched})


sdpa_case("single_head_n7_d8", (7, 8), (7, 8), (7, 8))
sdpa_case("batched_rank3_n7_d64", (2, 7, 64), (2, 7, 64), (2, 7, 64))
sdpa_case("n1_d8", (2, 3, 1, 8), (2, 3, 1, 8), (2, 3, 1, 8))
sdpa_case("n33_d64", (2, 3, 33, 64), (2, 3, 33, 64), (2, 3, 33, 64))
sdpa_case("causal_n33_d8", (2, 2, 33, 8), (2, 2, 33, 8), (2, 2, 33, 8), causal=True)
sdpa_case("causal_cross_n7_m33", (1, 2, 7, 8), (1, 2, 33, 8), (1, 2, 33, 16), causal=True)
sdpa_case("padding_cross_n7_m33_d64", (2, 2, 7, 64), (2, 2, 33, 64), (2, 2, 33, 64), padding=[0, 5])
sdpa_case("allowed_n7_d8", (1, 2, 7, 8), (1, 2, 7, 8), (1, 2, 7, 8), allowed=True)
sdpa_case("additive_n7_d8", (2, 1, 7, 8), (2, 1, 7, 8), (2, 1, 7, 8), additive=True)
sdpa_case("scale_0p3_n33_d8", (1, 2, 33, 8), (1, 2, 33, 8), (1, 2, 33, 8), scale=0.3)
sdpa_case("gqa_h4_kv2_n7_d8", (2, 4, 7, 8), (2, 2, 7, 8), (2, 2, 7, 8), gqa=True)

mha_case("self_e16_h4_n7", 16, 4, 2, 7, None)
mha_case("cross_e16_h2_n7_m33_padding", 16, 2, 2, 7, 33, kdim=8, vdim=12, padding=[0, 4])
mha_case("causal_nobias_e64_h8_n33", 64, 8, 2, 33, None, bias=False, causal=True)
mha_case("unbatched_e8_h2_n1", 8, 2, 1, 1, 5, unbatched=True)

os.makedirs(OUT, exist_ok=True)
save_file(tensors, os.path.join(OUT, "attention_golden.safetensors"),
          metadata={"generator": "tools/make_attention_fixtures.py", "torch": torch.__version__})
with open(os.path.join(OUT, "attention_golden.json"), "w") as f:
    json.dump({"generator": "tools/make_attention_fixtures.py", "torch": torch.__version__,
               "cases": cases}, f, indent=1)
print(f"wrote {len(cases)} cases, {len(tensors)} tensors to {OUT}")
