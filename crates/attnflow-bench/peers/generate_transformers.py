"""The Hugging Face transformers side of `attnflow bench generate`.

attnflow runs this script with `python -c` and drives it over stdin, one
JSON command per line, so that the two sides can take turns (A B A B ...)
on the same token ids without reloading the model:

    {"load": {"path": "...gguf" or a directory, "threads": 2}}
    {"prefill": {"ids": [...]}}      -> every layer's attention kept
    {"decode": {"ids": [...], "tokens": 64}}
    {"quit": true}

Each answer is one JSON line: {"ok": ..., "seconds": ...} or {"error": "..."}.

* prefill: one forward pass over the ids with eager attention and
  `output_attentions=True` (every layer's maps materialised, as attnflow
  keeps them), logits of the last position only (`logits_to_keep=1`, what
  generation needs), float32.
* decode: the prompt once, then `tokens` greedy steps of one token each
  through the key/value cache; only the steps are timed. float32, the
  default (SDPA) attention.
"""
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def answer(value):
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def load(path, threads):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    kwargs = dict(dtype=torch.float32)
    if os.path.isfile(path):
        directory, name = os.path.split(os.path.abspath(path))
        kwargs["gguf_file"] = name
    else:
        directory = path
    eager = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager", **kwargs).eval()
    default = AutoModelForCausalLM.from_pretrained(directory, **kwargs).eval()
    return {
        "eager": eager,
        "default": default,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "threads": torch.get_num_threads(),
    }


def prefill(models, ids):
    import torch

    input_ids = torch.tensor([ids])
    with torch.inference_mode():
        started = time.perf_counter()
        output = models["eager"](input_ids, output_attentions=True, logits_to_keep=1)
        seconds = time.perf_counter() - started
    assert len(output.attentions) > 0
    return {"seconds": seconds, "next": int(output.logits[0, -1].argmax())}


def decode(models, ids, tokens):
    import torch

    model = models["default"]
    with torch.inference_mode():
        output = model(torch.tensor([ids]), use_cache=True, logits_to_keep=1)
        past = output.past_key_values
        token = output.logits[0, -1].argmax().view(1, 1)
        generated = []
        started = time.perf_counter()
        for _ in range(tokens):
            generated.append(int(token))
            output = model(token, past_key_values=past, use_cache=True)
            past = output.past_key_values
            token = output.logits[0, -1].argmax().view(1, 1)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "generated": generated}


def main():
    models = None
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            command = json.loads(line)
            if "load" in command:
                models = load(command["load"]["path"], command["load"].get("threads", 2))
                answer({"ok": True, "versions": models["versions"], "threads": models["threads"]})
            elif "prefill" in command:
                answer(dict(ok=True, **prefill(models, command["prefill"]["ids"])))
            elif "decode" in command:
                answer(dict(ok=True, **decode(models, command["decode"]["ids"], command["decode"]["tokens"])))
            elif "quit" in command:
                answer({"ok": True})
                return
            else:
                answer({"error": f"unknown command {line.strip()}"})
        except Exception as error:  # report every failure to the driver
            answer({"error": f"{type(error).__name__}: {error}"})


if __name__ == "__main__":
    main()
