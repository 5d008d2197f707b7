"""Conversations for the three SSO contexts (x, x+, x-) and chat-template rendering with the system fallback.

Shared by generate, score and train so that all three see exactly the same prompt text."""

from __future__ import annotations

from typing import Any

Message = dict[str, str]


def context_messages(query: str, system: str | None) -> list[Message]:
    """`[system S, user x]`, or `[user x]` for the plain context (no system message at all)."""
    messages: list[Message] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": query})
    return messages


def merge_system_into_user(messages: list[Message]) -> list[Message]:
    """For templates that reject a system role: put the system text at the top of the first user turn."""
    if not messages or messages[0]["role"] != "system":
        return list(messages)
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    for message in rest:
        if message["role"] == "user":
            message["content"] = f"{system}\n\n{message['content']}"
            return rest
    return [{"role": "user", "content": system}, *rest]


def supports_system_role(tokenizer: Any) -> bool:
    """True when the tokenizer's chat template accepts a leading system message."""
    probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    try:
        tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except Exception:  # templates raise TemplateError / ValueError / whatever raise_exception gives
        return False
    return True


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer: Any, messages: list[Message], *, system_supported: bool) -> str:
    """Chat-template text ending with the assistant generation prompt."""
    if not system_supported:
        messages = merge_system_into_user(messages)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prompt_token_ids(tokenizer: Any, messages: list[Message], *, system_supported: bool) -> list[int]:
    """Token ids of the rendered prompt without a second BOS (the template already writes any BOS)."""
    text = render_prompt(tokenizer, messages, system_supported=system_supported)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def sso_context_ids(tokenizer: Any, query: str, system_good: str, system_bad: str, *,
                    system_supported: bool) -> dict[str, list[int]]:
    """Prompt token ids of the three SSO contexts: 'plain' (x), 'good' (x+), 'bad' (x-)."""
    systems = {"plain": None, "good": system_good, "bad": system_bad}
    return {name: prompt_token_ids(tokenizer, context_messages(query, system), system_supported=system_supported)
            for name, system in systems.items()}


def response_token_ids(tokenizer: Any, text: str) -> list[int]:
    """A response as train and score see it: its text's tokens, then eos (the end-of-turn that ended sampling)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        from ssogen.errors import UserError

        raise UserError("the tokenizer has no eos token: cannot mark where a response ends")
    return [*tokenizer(text, add_special_tokens=False)["input_ids"], eos]
