#!/usr/bin/env python3
"""Regenerates the example inputs in examples/analysis/.

* attention.safetensors: `attentions`, shape (layers=3, batch=1, heads=4,
  n=9, n=9) — softmax of seeded random scores with a causal mask, the
  layout `attnflow attention inspect` reads (as exported by
  `torch.stack(model(..., output_attentions=True).attentions)`);
* tokens.txt: the nine tokens, one per line;
* vision.csv, language.csv: two row-stochastic 9 × 9 maps for
  `attnflow attention blend`.

Run: /work/.torchenv/bin/python tools/make_analysis_examples.py
"""
import pathlib

import numpy as np
from safetensors.numpy import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "examples/analysis"
TOKENS = ["[CLS]", "the", "cat", "sat", "on", "the", "mat", ".", "[SEP]"]


def softmax(scores):
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    return weights / weights.sum(axis=-1, keepdims=True)


def main():
    rng = np.random.default_rng(7)
    n = len(TOKENS)
    causal = np.tril(np.ones((n, n), dtype=bool))
    scores = rng.normal(size=(3, 1, 4, n, n)) * 2.0
    scores = np.where(causal, scores, -np.inf)
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({"attentions": softmax(scores).astype(np.float32)}, str(OUT / "attention.safetensors"))
    (OUT / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    for name in ["vision", "language"]:
        weights = softmax(rng.normal(size=(n, n)) * 1.5)
        rows = [",".join(f"{v:.17g}" for v in row) for row in weights]
        (OUT / f"{name}.csv").write_text("\n".join(rows) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
