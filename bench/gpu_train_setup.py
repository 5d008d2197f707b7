"""The models and rows of bench/gpu_train.py (and bench/train_memory.py): random-init Qwen2 and Qwen3 models of real
shapes with the project's locally trained tokenizer, synthetic `sso` rows with long system prompts and responses, and
the tokens per step each batch layout puts through the model. gpu_train.py runs `build` in a process of its own:

    python bench/gpu_train_setup.py ROOT        # reads ROOT/args.json, prints the JSON of what it built
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # ssogen from this checkout when not installed

VOCAB = 151_936
# Model fields by shape; `model_type` (default qwen2) names the transformers architecture.
SHAPES: dict[str, dict[str, Any]] = {
    "0.5b": {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
             "intermediate_size": 4864, "vocab_size": VOCAB},
    "1.5b": {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
             "intermediate_size": 8960, "vocab_size": VOCAB},
    "3b": {"hidden_size": 2048, "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2,
           "intermediate_size": 11008, "vocab_size": VOCAB},
    # For trying the script on a CPU: the same layout, tiny.
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
             "intermediate_size": 128, "vocab_size": 8192},
    # Qwen3: per-head RMSNorms on q and k, head size 128 at every width, no q/k/v biases (0.6B and 1.7B tie their
    # embeddings, as all shapes here do).
    "qwen3-0.6b": {"model_type": "qwen3", "hidden_size": 1024, "num_hidden_layers": 28, "num_attention_heads": 16,
                   "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 3072, "vocab_size": VOCAB},
    "qwen3-1.7b": {"model_type": "qwen3", "hidden_size": 2048, "num_hidden_layers": 28, "num_attention_heads": 16,
                   "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 6144, "vocab_size": VOCAB},
    "qwen3-tiny": {"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "num_key_value_heads": 1, "head_dim": 32, "intermediate_size": 128, "vocab_size": 8192},
    # OLMo 2 1B's layers (four RMSNorms each: after attention and MLP, and on the whole q and k), with the
    # vocabulary and tied embeddings of the shapes above (OLMo 2's own: 100,352 tokens, untied).
    "olmo2-1b": {"model_type": "olmo2", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 16,
                 "num_key_value_heads": 16, "intermediate_size": 8192, "vocab_size": VOCAB},
    "olmo2-tiny": {"model_type": "olmo2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 8192},
}
# Token lengths of the synthetic rows, scaled by --length-scale.
LENGTHS = {"prompt": (20, 60), "system": (300, 800), "response": (160, 520)}


def words() -> list[str]:
    from ssogen.generate.inputs import demo_queries
    from ssogen.principles import load_library

    library = load_library("default").library
    texts = [*demo_queries()] + [f"{f.meaning} {f.good} {f.bad}" for f in [*library.features, *library.extras]]
    return " ".join(texts).split()


def text_of(tokenizer: Any, pool: list[str], rng: random.Random, count: int) -> str:
    """Text of about `count` tokens: random words, cut at `count` tokens."""
    ids: list[int] = []
    while len(ids) < count:
        ids += tokenizer(" " + " ".join(rng.choices(pool, k=count)), add_special_tokens=False)["input_ids"]
    return str(tokenizer.decode(ids[:count]))


def write_rows(out: Path, tokenizer: Any, count: int, scale: float, seed: int = 0) -> Path:
    from ssogen.dataset.folder import OutputFolder
    from ssogen.records import SSO_TRUNCATION_COLUMNS, row_id

    rng = random.Random(seed)
    pool = words()

    def sample(kind: str) -> str:
        low, high = LENGTHS[kind]
        return text_of(tokenizer, pool, rng, max(1, round(rng.randint(low, high) * scale)))

    rows = []
    for position in range(count):
        prompt = sample("prompt")
        rows.append({"id": row_id(prompt, position), "prompt": prompt, "system_good": sample("system"),
                     "system_bad": sample("system"), "response_good": sample("response"),
                     "response_bad": sample("response"), "response_raw": sample("response"),
                     **dict.fromkeys(SSO_TRUNCATION_COLUMNS, False)})
    OutputFolder(out).write_config("sso", rows)
    return out


def model_config(shape: str, tokenizer: Any, **overrides: Any) -> Any:
    """The transformers config of `shape`: tied embeddings, rope theta 1e6, the tokenizer's special tokens."""
    from transformers import AutoConfig

    fields = dict(SHAPES[shape])
    model_type = fields.pop("model_type", "qwen2")
    return AutoConfig.for_model(model_type, **fields, max_position_embeddings=4096, tie_word_embeddings=True,
                                bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id, rope_theta=1_000_000.0, **overrides)


def build(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The tokenizer, one model folder per shape (bf16 safetensors) and the data; runs in a worker process."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ssogen.testing.tiny_model import build_tiny_model

    source = build_tiny_model(root / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(source)
    models = {}
    for shape in args.shapes:
        torch.manual_seed(0)
        with torch.device(args.device):
            model = AutoModelForCausalLM.from_config(model_config(shape, tokenizer))
            model = model.to(torch.bfloat16 if args.device == "cuda" else torch.float32)
        folder = root / f"model-{shape}"
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        models[shape] = str(folder)
        del model
    rows = args.batch * args.steps
    data = write_rows(root / "data", tokenizer, rows, args.length_scale)
    return {"models": models, "data": str(data), "layout": layout_stats(tokenizer, data, args)}


def layout_stats(tokenizer: Any, data: Path, args: argparse.Namespace) -> dict[str, float]:
    """Mean tokens per step through the model: the six sequences, ssogen packed, ssogen left-padded, TRL padded."""
    from ssogen.train.collator import collator_multiples, left_padded
    from ssogen.train.data import encode_rows
    from ssogen.train.inputs import read_sso_rows
    from ssogen.train.packing import pack_examples

    encoded, _, _ = encode_rows(read_sso_rows(data), tokenizer, max_length=args.max_length,
                                max_prompt_length=args.max_length // 2)
    examples = list(encoded)
    batches = [examples[i:i + args.batch] for i in range(0, len(examples), args.batch)]
    pad = tokenizer.pad_token_id
    sequences = [sum(len(s) for e in b for s in e["sequences"]) for b in batches]
    multiple = collator_multiples(args.device)["line_multiple"]  # the widths ssogen's collator gives on the device
    packed = [pack_examples(b, pad, multiple)["input_ids"].numel() for b in batches]
    padded = [left_padded(b, pad)["input_ids"].numel() for b in batches]
    responses = [sum(e["response_lengths"]) for b in batches for e in b]
    return {"sequence_tokens": statistics.mean(sequences), "packed_tokens": statistics.mean(packed),
            "padded_tokens": statistics.mean(padded), "response_tokens": sum(responses) / len(batches)}


def build_main(root: Path) -> None:
    saved = json.loads((root / "args.json").read_text())
    args = argparse.Namespace(**saved)
    print(json.dumps(build(args, root)))


if __name__ == "__main__":
    build_main(Path(sys.argv[1]))
