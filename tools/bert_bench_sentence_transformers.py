#!/usr/bin/env python3
"""Embedding throughput of sentence-transformers on CPU, the peer that
`attnflow embed` is measured against.

    python3 tools/bert_bench_sentence_transformers.py --write-input texts.txt
    ATTNFLOW_TEST_MODEL_DIR=/path/to/model \
        python3 tools/bert_bench_sentence_transformers.py texts.txt [--batch-size 32]

`--write-input FILE` writes 1,000 deterministic English-like sentences
(4 to 40 words) to FILE, one per line, for both tools to read. Timing
excludes model loading, as `attnflow embed`'s "texts/s" line does; one
warm-up batch runs first. Prints one JSON line with texts/s and the torch
thread count. Loads the model from the directory only (HF_HUB_OFFLINE=1).
"""
import argparse
import json
import os
import random
import time

os.environ["HF_HUB_OFFLINE"] = "1"

WORDS = (
    "the a of to and in is was that for on with as by at from this an be "
    "model attention layer head token sentence network weight matrix query key "
    "value softmax training data result paper figure table method approach "
    "small large fast slow new old first last every each many few simple deep "
    "learns shows gives uses reads writes finds makes runs takes keeps builds "
    "river mountain city kitchen garden music winter morning student teacher "
    "doctor engineer question answer story picture window market language"
).split()


def write_input(path, count=1000, seed=0):
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as file:
        for _ in range(count):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 40))]
            words[0] = words[0].capitalize()
            file.write(" ".join(words) + ".\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("input", nargs="?")
    parser.add_argument("--write-input")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.write_input:
        write_input(args.write_input)
        print(f"wrote {args.write_input}")
        return
    import torch
    from sentence_transformers import SentenceTransformer

    model_dir = os.environ["ATTNFLOW_TEST_MODEL_DIR"]
    with open(args.input, encoding="utf-8") as file:
        texts = file.read().splitlines()
    model = SentenceTransformer(model_dir, device="cpu", local_files_only=True)
    model.encode(texts[: args.batch_size], batch_size=args.batch_size)
    started = time.perf_counter()
    model.encode(texts, batch_size=args.batch_size, normalize_embeddings=False)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "peer": "sentence-transformers",
                "texts": len(texts),
                "seconds": seconds,
                "texts_per_second": len(texts) / seconds,
                "torch_threads": torch.get_num_threads(),
                "batch_size": args.batch_size,
            }
        )
    )


if __name__ == "__main__":
    main()
