#!/usr/bin/env python3
"""Regenerates crates/attnflow-blueprint/tests/fixtures/flop_counter.json.

The `matmul` convention of attnflow's blueprint must equal what PyTorch's
`torch.utils.flop_counter.FlopCounterMode` reports. This script builds plain
PyTorch equivalents of the example blueprints GPT-2 small (1024 tokens) and
BERT-base (128 tokens), runs one forward pass under FlopCounterMode on the
`meta` device (no weights are allocated, nothing is downloaded), and records
the totals and the per-operator split.

ViT-B/16 (224×224) and the Llama-style decoder (TinyLlama sizes, 2048
tokens, grouped key/value heads repeated to every query head as in Hugging
Face's implementation) are counted the same way.

It also derives the same totals by hand (2 FLOPs per multiply-accumulate of
every matrix product, the two attention products counted densely) and
refuses to write the fixture if the two disagree, so the fixture is checked
twice: by torch and by arithmetic.

Run with the project's torch environment:
    /work/.torchenv/bin/python tools/blueprint_flop_fixture.py
Without torch, pass --analytic to write the hand-derived numbers only (the
fixture then says so in its "source" field).
"""

import json
import math
import os
import sys

FIXTURE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..",
    "crates",
    "attnflow-blueprint",
    "tests",
    "fixtures",
    "flop_counter.json",
)

GPT2 = dict(vocab=50257, n_ctx=1024, d=768, heads=12, layers=12, d_ff=3072, seq=1024, batch=1)
BERT = dict(vocab=30522, positions=512, types=2, d=768, heads=12, layers=12, d_ff=3072, seq=128, batch=1)
VIT = dict(image=224, patch=16, channels=3, d=768, heads=12, layers=12, d_ff=3072, classes=1000, batch=1)
LLAMA = dict(vocab=32000, d=2048, heads=32, kv_heads=4, layers=22, d_ff=5632, seq=2048, batch=1)


def analytic_gpt2(c):
    tokens = c["batch"] * c["seq"]
    d, f, n, h = c["d"], c["d_ff"], c["seq"], c["heads"]
    linear = tokens * (d * 3 * d + d * d + d * f + f * d)  # c_attn, c_proj, c_fc, mlp c_proj
    attention = 2 * c["batch"] * h * n * n * (d // h)  # QK^T and weights x V, dense
    head = tokens * d * c["vocab"]
    return 2 * (c["layers"] * (linear + attention) + head)


def analytic_bert(c):
    tokens = c["batch"] * c["seq"]
    d, f, n, h = c["d"], c["d_ff"], c["seq"], c["heads"]
    linear = tokens * (4 * d * d + d * f + f * d)  # q, k, v, o, intermediate, output
    attention = 2 * c["batch"] * h * n * n * (d // h)
    pooler = c["batch"] * d * d  # on the first token only
    return 2 * (c["layers"] * (linear + attention) + pooler)


def analytic_vit(c):
    patches = (c["image"] // c["patch"]) ** 2
    tokens = c["batch"] * (patches + 1)
    d, f, h = c["d"], c["d_ff"], c["heads"]
    conv = c["batch"] * patches * c["channels"] * c["patch"] ** 2 * d
    linear = tokens * (3 * d * d + d * d + d * f + f * d)
    attention = 2 * c["batch"] * h * (patches + 1) ** 2 * (d // h)
    head = c["batch"] * d * c["classes"]
    return 2 * (conv + c["layers"] * (linear + attention) + head)


def analytic_llama(c):
    tokens = c["batch"] * c["seq"]
    d, f, h, n = c["d"], c["d_ff"], c["heads"], c["seq"]
    head_dim = d // h
    linear = tokens * (d * d + 2 * d * c["kv_heads"] * head_dim + d * d + 3 * d * f)
    attention = 2 * c["batch"] * h * n * n * head_dim  # every query head, dense
    return 2 * (c["layers"] * (linear + attention) + tokens * d * c["vocab"])


def torch_counts():
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    class SelfAttention(nn.Module):
        def __init__(self, d, heads, causal, fused):
            super().__init__()
            self.heads, self.causal, self.fused = heads, causal, fused
            if fused:
                self.qkv = nn.Linear(d, 3 * d)
            else:
                self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
            self.out = nn.Linear(d, d)

        def forward(self, x):
            b, n, d = x.shape
            if self.fused:
                q, k, v = self.qkv(x).split(d, dim=2)
            else:
                q, k, v = self.q(x), self.k(x), self.v(x)
            split = lambda t: t.view(b, n, self.heads, d // self.heads).transpose(1, 2)
            q, k, v = split(q), split(k), split(v)
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
            if self.causal:
                mask = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            y = (weights @ v).transpose(1, 2).reshape(b, n, d)
            return self.out(y)

    class Gpt2Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(c["d"]), nn.LayerNorm(c["d"])
            self.attn = SelfAttention(c["d"], c["heads"], causal=True, fused=True)
            self.fc, self.proj = nn.Linear(c["d"], c["d_ff"]), nn.Linear(c["d_ff"], c["d"])

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.proj(nn.functional.gelu(self.fc(self.ln_2(x)), approximate="tanh"))

    class Gpt2(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(c["vocab"], c["d"]), nn.Embedding(c["n_ctx"], c["d"])
            self.h = nn.ModuleList(Gpt2Block(c) for _ in range(c["layers"]))
            self.ln_f = nn.LayerNorm(c["d"])
            self.lm_head = nn.Linear(c["d"], c["vocab"], bias=False)
            self.lm_head.weight = self.wte.weight

        def forward(self, tokens):
            positions = torch.arange(tokens.shape[1], device=tokens.device)
            x = self.wte(tokens) + self.wpe(positions)
            for block in self.h:
                x = block(x)
            return self.lm_head(self.ln_f(x))

    class BertLayer(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.attention = SelfAttention(c["d"], c["heads"], causal=False, fused=False)
            self.norm1, self.norm2 = nn.LayerNorm(c["d"], eps=1e-12), nn.LayerNorm(c["d"], eps=1e-12)
            self.intermediate, self.output = nn.Linear(c["d"], c["d_ff"]), nn.Linear(c["d_ff"], c["d"])

        def forward(self, x):
            x = self.norm1(x + self.attention(x))
            return self.norm2(x + self.output(nn.functional.gelu(self.intermediate(x))))

    class Bert(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.words = nn.Embedding(c["vocab"], c["d"])
            self.positions = nn.Embedding(c["positions"], c["d"])
            self.types = nn.Embedding(c["types"], c["d"])
            self.norm = nn.LayerNorm(c["d"], eps=1e-12)
            self.layers = nn.ModuleList(BertLayer(c) for _ in range(c["layers"]))
            self.pooler = nn.Linear(c["d"], c["d"])

        def forward(self, tokens, segments):
            positions = torch.arange(tokens.shape[1], device=tokens.device)
            x = self.norm(self.words(tokens) + self.positions(positions) + self.types(segments))
            for layer in self.layers:
                x = layer(x)
            return torch.tanh(self.pooler(x[:, 0]))

    class VitBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(c["d"], eps=1e-6), nn.LayerNorm(c["d"], eps=1e-6)
            self.attn = SelfAttention(c["d"], c["heads"], causal=False, fused=True)
            self.fc1, self.fc2 = nn.Linear(c["d"], c["d_ff"]), nn.Linear(c["d_ff"], c["d"])

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))

    class Vit(nn.Module):
        def __init__(self, c):
            super().__init__()
            patches = (c["image"] // c["patch"]) ** 2
            self.patch_embed = nn.Conv2d(c["channels"], c["d"], c["patch"], stride=c["patch"])
            self.cls_token = nn.Parameter(torch.zeros(1, 1, c["d"]))
            self.pos_embed = nn.Parameter(torch.zeros(1, patches + 1, c["d"]))
            self.blocks = nn.ModuleList(VitBlock(c) for _ in range(c["layers"]))
            self.norm = nn.LayerNorm(c["d"], eps=1e-6)
            self.head = nn.Linear(c["d"], c["classes"])

        def forward(self, pixels):
            x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x)[:, 0])

    class RmsNorm(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x):
            return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)

    def rotate(x, cos, sin):
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    class LlamaLayer(nn.Module):
        def __init__(self, c):
            super().__init__()
            d, self.heads, self.kv_heads = c["d"], c["heads"], c["kv_heads"]
            self.head_dim = d // c["heads"]
            self.attention_norm, self.mlp_norm = RmsNorm(d), RmsNorm(d)
            self.q = nn.Linear(d, d, bias=False)
            self.k = nn.Linear(d, self.kv_heads * self.head_dim, bias=False)
            self.v = nn.Linear(d, self.kv_heads * self.head_dim, bias=False)
            self.o = nn.Linear(d, d, bias=False)
            self.gate = nn.Linear(d, c["d_ff"], bias=False)
            self.up = nn.Linear(d, c["d_ff"], bias=False)
            self.down = nn.Linear(c["d_ff"], d, bias=False)

        def forward(self, x, cos, sin):
            b, n, d = x.shape
            h = self.attention_norm(x)
            q = self.q(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
            k = self.k(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
            v = self.v(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
            repeat = self.heads // self.kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            mask = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
            x = x + self.o((weights @ v).transpose(1, 2).reshape(b, n, d))
            h = self.mlp_norm(x)
            return x + self.down(nn.functional.silu(self.gate(h)) * self.up(h))

    class Llama(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c
            self.embed = nn.Embedding(c["vocab"], c["d"])
            self.layers = nn.ModuleList(LlamaLayer(c) for _ in range(c["layers"]))
            self.norm = RmsNorm(c["d"])
            self.lm_head = nn.Linear(c["d"], c["vocab"], bias=False)

        def forward(self, tokens):
            n, head_dim = tokens.shape[1], self.c["d"] // self.c["heads"]
            angles = torch.arange(n, device=tokens.device)[:, None] * torch.ones(head_dim, device=tokens.device)
            cos, sin = angles.cos(), angles.sin()
            x = self.embed(tokens)
            for layer in self.layers:
                x = layer(x, cos, sin)
            return self.lm_head(self.norm(x))

    def count(model, *inputs):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(*inputs)
        by_operator = {}
        for op, flops in counter.get_flop_counts()["Global"].items():
            name = getattr(op, "__name__", str(op))
            by_operator[name] = by_operator.get(name, 0) + int(flops)
        params = sum(p.numel() for p in model.parameters())
        return int(counter.get_total_flops()), by_operator, int(params)

    with torch.device("meta"):
        gpt2 = Gpt2(GPT2)
        bert = Bert(BERT)
        tokens = torch.zeros(GPT2["batch"], GPT2["seq"], dtype=torch.long)
        bert_tokens = torch.zeros(BERT["batch"], BERT["seq"], dtype=torch.long)
        segments = torch.zeros(BERT["batch"], BERT["seq"], dtype=torch.long)
        vit = Vit(VIT)
        pixels = torch.zeros(VIT["batch"], VIT["channels"], VIT["image"], VIT["image"])
        llama = Llama(LLAMA)
        llama_tokens = torch.zeros(LLAMA["batch"], LLAMA["seq"], dtype=torch.long)
        return torch.__version__, {
            "gpt2-small": count(gpt2, tokens),
            "bert-base": count(bert, bert_tokens, segments),
            "vit-b16": count(vit, pixels),
            "llama-style": count(llama, llama_tokens),
        }


def main():
    analytic_only = "--analytic" in sys.argv
    expected = {
        "gpt2-small": analytic_gpt2(GPT2),
        "bert-base": analytic_bert(BERT),
        "vit-b16": analytic_vit(VIT),
        "llama-style": analytic_llama(LLAMA),
    }
    models = {
        "gpt2-small": {"spec": "examples/blueprints/gpt2-small.toml", "set": {"seq": GPT2["seq"], "batch": GPT2["batch"]}},
        "bert-base": {"spec": "examples/blueprints/bert-base.toml", "set": {"seq": BERT["seq"], "batch": BERT["batch"]}},
        "vit-b16": {"spec": "examples/blueprints/vit-b16.toml", "set": {"image": VIT["image"], "batch": VIT["batch"]}},
        "llama-style": {"spec": "examples/blueprints/llama-style.toml", "set": {"seq": LLAMA["seq"], "batch": LLAMA["batch"]}},
    }
    if analytic_only:
        source = "analytic (hand-derived; torch was not used)"
        for name in models:
            models[name]["flops"] = expected[name]
    else:
        version, counts = torch_counts()
        source = f"torch.utils.flop_counter.FlopCounterMode, torch {version}, meta device"
        for name, (total, by_operator, params) in counts.items():
            if total != expected[name]:
                sys.exit(f"{name}: FlopCounterMode says {total}, hand derivation says {expected[name]}")
            models[name].update(flops=total, by_operator=by_operator, torch_params=params)
    fixture = {"source": source, "generated_by": "tools/blueprint_flop_fixture.py", "models": models}
    os.makedirs(os.path.dirname(FIXTURE), exist_ok=True)
    temporary = FIXTURE + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(fixture, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, FIXTURE)
    print(json.dumps(fixture, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
