"""Golden fixture for attnflow-kernels' rotary embeddings.

Runs transformers' Llama rotary embedding (default, "linear" and "llama3"
scaling) and `apply_rotary_pos_emb` on seeded inputs, and writes the
frequencies, the cos/sin tables and the rotated queries to
crates/attnflow-kernels/tests/fixtures/rotary.json.

    /path/to/python tools/make_rotary_fixtures.py
"""

import json
import pathlib

import torch
import transformers
from transformers import LlamaConfig
from transformers.models.llama import modeling_llama

HEAD_DIM = 16
HEADS = 2
POSITIONS = 80
FIRST_POSITION = 7
SEQ = 5

CASES = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    "llama3": {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
}


def main():
    torch.manual_seed(0)
    out = {
        "made_by": "tools/make_rotary_fixtures.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "head_dim": HEAD_DIM,
        "heads": HEADS,
        "positions": POSITIONS,
        "first_position": FIRST_POSITION,
        "seq": SEQ,
        "cases": {},
    }
    q = torch.randn(1, HEADS, SEQ, HEAD_DIM, dtype=torch.float32)
    out["q"] = q.flatten().tolist()
    for name, rope in CASES.items():
        config = LlamaConfig(
            hidden_size=HEAD_DIM * HEADS,
            num_attention_heads=HEADS,
            head_dim=HEAD_DIM,
            max_position_embeddings=POSITIONS,
            rope_parameters=rope,
        )
        embedding = modeling_llama.LlamaRotaryEmbedding(config)
        positions = torch.arange(POSITIONS).unsqueeze(0)
        cos, sin = embedding(q, positions)
        half = HEAD_DIM // 2
        cos_window = cos[:, FIRST_POSITION : FIRST_POSITION + SEQ]
        sin_window = sin[:, FIRST_POSITION : FIRST_POSITION + SEQ]
        rotated, _ = modeling_llama.apply_rotary_pos_emb(q, q, cos_window, sin_window)
        out["cases"][name] = {
            "inv_freq": embedding.inv_freq.tolist(),
            "attention_scaling": float(embedding.attention_scaling),
            "cos": cos[0, :, :half].flatten().tolist(),
            "sin": sin[0, :, :half].flatten().tolist(),
            "rotated": rotated.flatten().tolist(),
        }
    path = pathlib.Path(__file__).resolve().parent.parent / "crates/attnflow-kernels/tests/fixtures/rotary.json"
    path.write_text(json.dumps(out, indent=None) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
