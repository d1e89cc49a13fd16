#!/usr/bin/env python3
"""The peer of `attnflow bench embed`: sentence-transformers on the CPU.

    python3 embed_sentence_transformers.py MODEL_DIR TEXTS.txt BATCH OUT.f32

Embeds the texts of a file (one per line) after one warm-up batch, writes the
embeddings as little-endian f32 (so attnflow can compare them with its own),
and prints one JSON line: seconds (model loading excluded), versions, threads.
Loads the model from the directory only (HF_HUB_OFFLINE=1).
"""
import json, os, sys, time
os.environ["HF_HUB_OFFLINE"] = "1"
try:
    import torch
    import sentence_transformers
    from sentence_transformers import SentenceTransformer
except Exception as error:
    print(json.dumps({"status": "skipped", "reason": f"sentence-transformers is not importable ({type(error).__name__}: {error})"}))
    sys.exit(0)
model_dir, input_path, batch, output_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(input_path, encoding="utf-8") as file:
    texts = file.read().split("\n")[:-1]
model = SentenceTransformer(model_dir, device="cpu", local_files_only=True)
model.encode(texts[:batch], batch_size=batch)
started = time.perf_counter()
embeddings = model.encode(texts, batch_size=batch, convert_to_numpy=True)
seconds = time.perf_counter() - started
embeddings.astype("<f4").tofile(output_path)
print(json.dumps({"status": "measured", "seconds": seconds, "version": sentence_transformers.__version__,
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
