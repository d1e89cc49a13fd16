#!/usr/bin/env python3
"""Times PyTorch's CPU scaled_dot_product_attention for `attnflow bench attention`.

Usage: attention_torch.py --n N [--heads 8] [--d 64] [--batch 1]
           [--causal] [--repeats R] [--min-seconds S] [--mode forward|backward|matmul]

Prints one JSON object on stdout:
  {"torch": "2.x", "threads": T, "mode": ..., "n": N, "seconds": best,
   "peak_rss_bytes": ...}
`seconds` is the best of at least `repeats` timed runs after one warm-up
run, repeated (up to 50 runs) until the runs add up to `min-seconds`: the
same rule the Rust side uses, so the two are comparable. In `matmul` mode it
times one n x n x n f32 matrix product (the machine's matmul ceiling as
PyTorch sees it). Peak memory is this process's VmHWM (Linux).
"""

import argparse
import json
import sys
import time


def peak_rss_bytes():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.0)
    parser.add_argument("--mode", choices=["forward", "backward", "matmul"], default="forward")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)

    if args.mode == "matmul":
        a = torch.randn(args.n, args.n)
        b = torch.randn(args.n, args.n)

        def run():
            torch.mm(a, b)

    else:
        shape = (args.batch, args.heads, args.n, args.d)
        grad = args.mode == "backward"
        q = torch.randn(shape, requires_grad=grad)
        k = torch.randn(shape, requires_grad=grad)
        v = torch.randn(shape, requires_grad=grad)

        if grad:
            probe = torch.randn(shape)

            def run():
                q.grad = k.grad = v.grad = None
                out = F.scaled_dot_product_attention(q, k, v, is_causal=args.causal)
                out.backward(probe)

        else:

            def run():
                with torch.no_grad():
                    F.scaled_dot_product_attention(q, k, v, is_causal=args.causal)

    run()
    best = float("inf")
    spent = 0.0
    runs = 0
    while runs < max(1, args.repeats) or (spent < args.min_seconds and runs < 50):
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        best = min(best, seconds)
        spent += seconds
        runs += 1
    json.dump(
        {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "mode": args.mode,
            "n": args.n,
            "seconds": best,
            "peak_rss_bytes": peak_rss_bytes(),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
