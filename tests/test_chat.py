"""The end-of-turn tokens come from the chat template itself, for every family's way of closing a turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ssogen.chat import (
    chat_template_text,
    end_of_turn,
    response_token_ids,
    special_ids,
    sso_context_ids,
    supports_system_role,
)

# Each family's template reduced to how it writes a turn (role header, content, closing tokens, separator).
LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
          " + m['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
GEMMA = ("{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
         "{{ '<start_of_turn>' + role + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}")
# Phi-3 closes the whole conversation with eos, but only when no generation prompt follows.
PHI3 = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}")
MISTRAL = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + "
           "' [/INST]' }}{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}")
PLAIN = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n\\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
CHATML = None  # the tiny model's own template

EXTRA = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<start_of_turn>", "<end_of_turn>", "<|user|>",
         "<|assistant|>", "<|end|>", "<s>", "</s>"]


def family_tokenizer(model: Path, template: str | None, eos: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.add_special_tokens({"additional_special_tokens": EXTRA})
    if template is not None:
        tokenizer.chat_template = template
    tokenizer.eos_token = eos
    tokenizer.bos_token = "<s>"
    return tokenizer


@pytest.mark.parametrize(("template", "eos", "expected", "source"), [
    (CHATML, "<|endoftext|>", ["<|im_end|>"], "chat template"),  # Qwen2.5 base: eos differs from the turn end
    (LLAMA3, "<|eot_id|>", ["<|eot_id|>"], "chat template"),
    (GEMMA, "</s>", ["<end_of_turn>"], "chat template"),
    (PHI3, "<|endoftext|>", ["<|end|>"], "chat template"),
    (MISTRAL, "</s>", ["</s>"], "chat template"),
    (PLAIN, "<|endoftext|>", ["<|endoftext|>"], "eos token"),  # a template with no closing token: eos
], ids=["chatml-base", "llama3", "gemma", "phi3", "mistral", "plain-text"])
def test_end_of_turn_is_what_the_template_writes_after_a_reply(tiny_model: Path, template: str | None, eos: str,
                                                                expected: list[str], source: str) -> None:
    tokenizer = family_tokenizer(tiny_model, template, eos)
    found = end_of_turn(tokenizer)
    assert list(found.tokens) == expected and found.source == source
    assert list(found.ids) == tokenizer.convert_tokens_to_ids(expected)
    assert special_ids(tokenizer, found.ids) == list(found.ids)


def test_complete_responses_end_with_the_turn_end_and_cut_ones_do_not(tiny_model: Path) -> None:
    tokenizer = family_tokenizer(tiny_model, GEMMA, "</s>")
    end = end_of_turn(tokenizer).ids
    text_ids = tokenizer("Paris.", add_special_tokens=False)["input_ids"]
    assert response_token_ids(tokenizer, "Paris.", end) == [*text_ids, *end]
    assert response_token_ids(tokenizer, "Paris.", end, complete=False) == text_ids
    assert response_token_ids(tokenizer, "", end, complete=False) == list(end)  # never zero tokens


def test_ordinary_text_ids_are_never_stop_tokens(tiny_model: Path) -> None:
    tokenizer = family_tokenizer(tiny_model, None, "<|im_end|>")
    text_ids = tokenizer("hello", add_special_tokens=False)["input_ids"]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert special_ids(tokenizer, [*text_ids, im_end]) == [im_end]


def test_one_failing_rendering_still_gives_the_turn_end(tiny_model: Path) -> None:
    # This template refuses a conversation that goes on after an assistant turn: only the last-turn rendering
    # works, and it ends with an end-of-conversation eos after the newline.
    refuses = ("{% if messages | length > 2 %}{{ raise_exception('two turns only') }}{% endif %}" + PHI3)
    assert list(end_of_turn(family_tokenizer(tiny_model, refuses, "<|endoftext|>")).tokens) == ["<|end|>"]


# Accepts a system message and leaves it out (only user and assistant branches), as older Phi-3 templates did.
DROPS_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ '<|user|>\\n' + m['content'] + '<|end|>\\n' }}"
                "{% elif m['role'] == 'assistant' %}{{ '<|assistant|>\\n' + m['content'] + '<|end|>\\n' }}{% endif %}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")


def test_a_template_that_leaves_the_system_message_out_gets_it_merged(tiny_model: Path) -> None:
    tokenizer = family_tokenizer(tiny_model, DROPS_SYSTEM, "<|endoftext|>")
    assert not supports_system_role(tokenizer)  # it renders [system, user] without complaint
    contexts = sso_context_ids(tokenizer, "Q?", "Be safe.", "Be unsafe.", system_supported=False)
    assert len({tuple(ids) for ids in contexts.values()}) == 3  # x, x+ and x- differ: S+ and S- reach the model
    assert "Be safe." in tokenizer.decode(contexts["good"])
    assert supports_system_role(family_tokenizer(tiny_model, CHATML, "<|endoftext|>"))


def test_named_chat_templates_give_one_text(tiny_model: Path) -> None:
    tokenizer = family_tokenizer(tiny_model, CHATML, "<|endoftext|>")
    single = chat_template_text(tokenizer)
    assert single == tokenizer.chat_template and single
    tokenizer.chat_template = {"tool_use": "B", "default": single}
    assert chat_template_text(tokenizer) == chat_template_text(tokenizer) != single
    tokenizer.chat_template = None
    assert chat_template_text(tokenizer) == ""
