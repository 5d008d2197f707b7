"""Build small Qwen2-architecture models offline: random weights, a locally trained byte-level BPE tokenizer,
and a ChatML chat template. Tests, the demo and the benchmarks use them; nothing is downloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal, cast

from ssogen.generate.inputs import demo_queries
from ssogen.io import share_like_new_files
from ssogen.ownership import TINY_MODEL_MARK
from ssogen.principles import load_library

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Like Gemma's template: a system message is an error, so callers must merge it into the user turn.
NO_SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}"
    "{% endif %}" + CHATML_TEMPLATE
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Written beside the model: its settings, and the sign that a rebuild may replace the folder's files.
SETTINGS_FILE = TINY_MODEL_MARK

# Sizes: the head size must be one that vLLM's CPU attention supports (32, 64, 80, ... 256, 512; 32 here):
# another loads but fails at the first generation (docs/cpu-vllm-notes.md).
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "vocab_size": 2048},
    # About 10M parameters: the size the benchmarks use.
    "small": {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 12, "num_attention_heads": 8,
              "num_key_value_heads": 2, "vocab_size": 4096},
}


def _tokenizer_corpus() -> list[str]:
    library = load_library("default").library
    lines = [q for q in demo_queries()]
    for feature in [*library.features, *library.extras]:
        lines += [feature.name, feature.meaning, feature.good, feature.bad,
                  feature.adjectives.good, feature.adjectives.bad]
    lines += [
        "The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( ) [ ] { } < > # : ; , . ! ?",
        "def main():\n    print('hello world')\n    return 0\n",
        "Sure, here is an answer. First, consider the question carefully. Then explain each step.",
    ]
    return lines * 4


def build_tiny_model(
    path: str | Path,
    *,
    size: Literal["tiny", "small"] = "tiny",
    reject_system_role: bool = False,
    seed: int = 0,
    max_position_embeddings: int = 4096,
    base_eos: bool = False,
    attention_dropout: float = 0.0,
) -> Path:
    """Write a ready-to-load model folder (config, safetensors weights, tokenizer, chat template).

    `base_eos` makes eos `<|endoftext|>` (tokenizer, config and generation_config) while the ChatML template still
    closes turns with `<|im_end|>`, as in a base model such as Qwen2.5 base. `attention_dropout` > 0 gives a model
    whose training forward differs from its eval forward unless dropout is switched off."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    dims = SIZES[size]
    eos_token = "<|endoftext|>" if base_eos else "<|im_end|>"

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=dims["vocab_size"],
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=eos_token,
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        model_max_length=max_position_embeddings,
    )
    tokenizer.chat_template = NO_SYSTEM_TEMPLATE if reject_system_role else CHATML_TEMPLATE
    tokenizer.save_pretrained(out)

    vocab = len(tokenizer)
    endoftext = cast(int, tokenizer.convert_tokens_to_ids("<|endoftext|>"))  # one token in, one id out
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=dims["hidden_size"],
        intermediate_size=dims["intermediate_size"],
        num_hidden_layers=dims["num_hidden_layers"],
        num_attention_heads=dims["num_attention_heads"],
        num_key_value_heads=dims["num_key_value_heads"],
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,  # ChatML models write no BOS; matching the tokenizer avoids a transformers warning
        eos_token_id=tokenizer.convert_tokens_to_ids(eos_token),
        pad_token_id=endoftext,
        attention_dropout=attention_dropout,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    # A base model's generation_config lists only <|endoftext|>: nothing in it stops a ChatML answer at <|im_end|>.
    stops = [endoftext] if base_eos else [config.eos_token_id, endoftext]
    model.generation_config = GenerationConfig(eos_token_id=stops, pad_token_id=config.pad_token_id)
    model.save_pretrained(out, safe_serialization=True)
    share_like_new_files(out)
    (out / SETTINGS_FILE).write_text(
        json.dumps({"size": size, "reject_system_role": reject_system_role, "seed": seed, "base_eos": base_eos,
                    "attention_dropout": attention_dropout}, indent=2) + "\n"
    )
    return out


def copy_without_chat_template(model: Path, target: Path) -> Path:
    """A copy of the model folder with no chat template at all (neither chat_template.jinja nor the tokenizer
    config's entry): a base model, which `generate` refuses."""
    shutil.copytree(model, target)
    (target / "chat_template.jinja").unlink()
    tokenizer_config = json.loads((target / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    (target / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return target


def tiny_random_model(model_type: str, layers: int = 2) -> Any:
    """A random-weight causal LM of any transformers model type at a tiny shape (hidden 32, 4 heads of 8, 2 key/value
    heads, vocabulary 128), SDPA attention, in training mode, seeded: for checks that a model type computes as
    expected once ssogen has changed some of its modules."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, vocab_size=128,
                                  max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).train()
