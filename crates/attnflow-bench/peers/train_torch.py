#!/usr/bin/env python3
"""PyTorch side of `attnflow bench train`.

Trains the same small causal transformer as attnflow's benchmark model
(pre-norm GPT: token embedding, learned positions, LayerNorm, multi-head
causal attention through F.scaled_dot_product_attention, GELU(tanh) MLP,
final LayerNorm, head tied to the embedding; no dropout) with AdamW and
global-norm clipping at 1.0, on the copy task attnflow trains (random
prompts, scored on the copied half), on the CPU. Every weight matrix keeps
nn.Linear's initialisation, which attnflow's trainer also uses.

Prints one JSON object: tokens per second over the timed steps, and each
timed step's loss with the seconds elapsed when it ended.

    python3 crates/attnflow-bench/peers/train_torch.py --steps 60 --threads 2
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d_model, heads, d_ff):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d_model)
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.ln_2 = nn.LayerNorm(d_model)
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)

    def forward(self, x):
        batch, seq, width = x.shape
        h = self.ln_1(x)

        def split(t):
            return t.view(batch, seq, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = split(self.q_proj(h)), split(self.k_proj(h)), split(self.v_proj(h))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out_proj(attended.transpose(1, 2).reshape(batch, seq, width))
        return x + self.down(F.gelu(self.up(self.ln_2(x)), approximate="tanh"))


class Decoder(nn.Module):
    def __init__(self, vocab, d_model, heads, layers, d_ff, seq):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        # attnflow's embedding initialisation: N(0, 1/d_model).
        nn.init.normal_(self.embed.weight, std=1.0 / math.sqrt(d_model))
        self.positions = nn.Parameter(torch.randn(seq, d_model) / math.sqrt(d_model))
        self.blocks = nn.ModuleList(Block(d_model, heads, d_ff) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tokens):
        x = self.embed(tokens) + self.positions[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.norm(x) @ self.embed.weight.t()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-ff", type=int, default=512)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = Decoder(args.vocab, args.d_model, args.heads, args.layers, args.d_ff, args.seq)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimiser = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=3e-3,
    )

    # attnflow's bench task: copy in the autoregressive layout. Each sequence
    # is a prompt of seq/2 random symbols (ids 0 .. vocab-3), the separator
    # (id vocab-2), then the prompt again; the model reads the first seq
    # tokens and is scored (weighted cross-entropy over every position, as
    # attnflow computes it) on predicting the answer half.
    half = args.seq // 2
    separator = args.vocab - 2
    weight = torch.zeros(args.batch, args.seq)
    weight[:, half:] = 1.0
    weight = weight.reshape(-1)
    total = weight.sum()

    def step():
        prompt = torch.randint(0, separator, (args.batch, half))
        marker = torch.full((args.batch, 1), separator)
        sequence = torch.cat([prompt, marker, prompt], dim=1)
        logits = model(sequence[:, :-1])
        losses = F.cross_entropy(
            logits.reshape(-1, args.vocab), sequence[:, 1:].reshape(-1), reduction="none"
        )
        loss = (losses * weight).sum() / total
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        return loss.item()

    for _ in range(args.warmup_steps):
        step()
    started = time.perf_counter()
    losses, elapsed = [], []
    for _ in range(args.steps):
        loss = step()
        losses.append(loss)
        elapsed.append(time.perf_counter() - started)
    seconds = elapsed[-1]
    tokens = args.batch * args.seq * args.steps
    print(
        json.dumps(
            {
                "engine": "pytorch",
                "version": torch.__version__,
                "threads": torch.get_num_threads(),
                "steps": args.steps,
                "tokens": tokens,
                "seconds": seconds,
                "tokens_per_second": tokens / seconds,
                "last_loss": loss,
                "losses": losses,
                "elapsed": elapsed,
            }
        )
    )


if __name__ == "__main__":
    main()
