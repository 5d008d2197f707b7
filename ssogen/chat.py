"""Conversations for the three SSO contexts (x, x+, x-) and chat-template rendering with the system fallback.

Shared by generate, score and train so that all three see exactly the same prompt text."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
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


SYSTEM_PROBE = "ssogen-system-probe"


def supports_system_role(tokenizer: Any) -> bool:
    """True when the tokenizer's chat template writes a leading system message. A template that raises on one,
    and one that accepts it but leaves it out (older Phi-3 templates), get the system text merged into the user
    turn: else S+ and S- would never reach the model and x+, x- and x would be one prompt."""
    probe = [{"role": "system", "content": SYSTEM_PROBE}, {"role": "user", "content": "u"}]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    except Exception:  # templates raise TemplateError / ValueError / whatever raise_exception gives
        return False
    return SYSTEM_PROBE in text


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_template_text(tokenizer: Any) -> str:
    """The chat template as one text for a cache key: a model with named templates (`additional_chat_templates/`)
    has a dict of them."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        return json.dumps(template, sort_keys=True)
    return template if isinstance(template, str) else ""


def as_template_gets(messages: list[Message], *, system_supported: bool) -> list[Message]:
    """The messages the chat template is given: the system text merged into the user turn where the template has
    no system role. `render_prompt` goes through here, and so do the `pairs` config's prompts, so that TRL applying
    the same template to them renders the context the policy sampled under."""
    return list(messages) if system_supported else merge_system_into_user(messages)


def render_prompt(tokenizer: Any, messages: list[Message], *, system_supported: bool) -> str:
    """Chat-template text ending with the assistant generation prompt."""
    messages = as_template_gets(messages, system_supported=system_supported)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prompt_token_ids(tokenizer: Any, messages: list[Message], *, system_supported: bool) -> list[int]:
    """Token ids of the rendered prompt without a second BOS (the template already writes any BOS)."""
    text = render_prompt(tokenizer, messages, system_supported=system_supported)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


SSO_CONTEXTS = ("plain", "good", "bad")  # x, x+ and x-


def sso_context_texts(tokenizer: Any, query: str, system_good: str, system_bad: str, *,
                      system_supported: bool) -> list[str]:
    """The rendered prompts of the three SSO contexts, in `SSO_CONTEXTS` order (`render_prompt`)."""
    return [render_prompt(tokenizer, context_messages(query, system), system_supported=system_supported)
            for system in (None, system_good, system_bad)]


def sso_context_ids(tokenizer: Any, query: str, system_good: str, system_bad: str, *,
                    system_supported: bool) -> dict[str, list[int]]:
    """Prompt token ids of the three SSO contexts: 'plain' (x), 'good' (x+), 'bad' (x-)."""
    texts = sso_context_texts(tokenizer, query, system_good, system_bad, system_supported=system_supported)
    return {name: list(tokenizer(text, add_special_tokens=False)["input_ids"])
            for name, text in zip(SSO_CONTEXTS, texts, strict=True)}


def token_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """The token ids of each text, without added special tokens, in one tokenizer call: a fast tokenizer encodes
    a list in parallel (in Rust), and each text's ids are those of a call on that text alone (`prompt_token_ids`,
    `response_token_ids`)."""
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


# --- the end of an assistant turn ---------------------------------------------------------------------------
#
# Rule: the end-of-turn tokens are the tokens the chat template writes right after an assistant message's
# content, in both places a message can sit: last in the conversation, and followed by another user turn. The
# template is rendered both ways with a sentinel as the assistant content; the tokens after the sentinel that the
# two renderings share, from the first non-whitespace token up to (excluding) the next whitespace-only token, are
# the end of the turn. So ChatML gives <|im_end|>, Gemma <end_of_turn>, Llama 3 <|eot_id|> and Phi-3 <|end|>,
# while what only one rendering writes (the next turn's header, Phi-3's end-of-conversation <|endoftext|>) and the
# newline a template puts between turns are left out: sampling stops at the end token, so the model never emits
# that newline. When the template writes nothing but whitespace there (or cannot render the probe), the
# tokenizer's eos token is used instead.

_SENTINEL = "SSOGEN_SENTINEL_REPLY"


@dataclass(frozen=True)
class EndOfTurn:
    """The token ids that close an assistant turn, their text, and where they came from."""

    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    source: str  # "chat template" or "eos token"

    def as_dict(self) -> dict[str, Any]:
        return {"tokens": list(self.tokens), "ids": list(self.ids), "source": self.source}


def _after_sentinel(tokenizer: Any, messages: list[Message]) -> list[int] | None:
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    except Exception:  # a template may reject the probe conversation; the other rendering may still work
        return None
    if not isinstance(text, str) or _SENTINEL not in text:
        return None
    tail = text[text.rindex(_SENTINEL) + len(_SENTINEL):]
    return list(tokenizer(tail, add_special_tokens=False)["input_ids"])


def _is_blank(tokenizer: Any, token_id: int) -> bool:
    return not tokenizer.decode([token_id]).strip()


def end_of_turn(tokenizer: Any) -> EndOfTurn:
    """The end-of-turn tokens of the tokenizer's chat template (rule above); eos when the template has none."""
    user = {"role": "user", "content": "Hi"}
    reply = {"role": "assistant", "content": _SENTINEL}
    last = _after_sentinel(tokenizer, [user, reply])
    followed = _after_sentinel(tokenizer, [user, reply, {"role": "user", "content": "More"}])
    tails = [t for t in (last, followed) if t is not None]
    shared: list[int] = []
    if tails:
        for column in zip(*tails, strict=False):
            if len(set(column)) > 1:
                break
            shared.append(column[0])
    while shared and _is_blank(tokenizer, shared[0]):
        shared.pop(0)
    # Up to the first whitespace token: what follows it belongs to the next turn or the end of the conversation
    # (this also keeps the rule right when only one of the two renderings worked).
    shared = shared[:next((i for i, t in enumerate(shared) if _is_blank(tokenizer, t)), len(shared))]
    source = "chat template"
    if not shared:
        if tokenizer.eos_token_id is None:
            from ssogen.errors import UserError

            raise UserError("the chat template closes no assistant turn with a token and the tokenizer has no eos "
                            "token: cannot mark where a response ends")
        shared, source = [int(tokenizer.eos_token_id)], "eos token"
    tokens = tuple(tokenizer.convert_ids_to_tokens(shared))
    return EndOfTurn(ids=tuple(int(i) for i in shared), tokens=tokens, source=source)


def special_ids(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """The ids among `ids` that are special or added tokens (safe to stop sampling on: never ordinary text)."""
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    return [i for i in ids if i in special]


def response_token_ids(tokenizer: Any, text: str, end_ids: Sequence[int], *, complete: bool = True) -> list[int]:
    """A response as train and score see it: its text's tokens, then the end-of-turn ids when it is complete.

    A response cut at the token limit ends where it was cut (no end token: the model never wrote one there);
    an empty cut response still gets the end ids, since a response must have at least one token to score."""
    return closed_response(list(tokenizer(text, add_special_tokens=False)["input_ids"]), end_ids, complete=complete)


def closed_response(ids: list[int], end_ids: Sequence[int], *, complete: bool) -> list[int]:
    """A response's text tokens `ids` (extended in place) with the end-of-turn ids as `response_token_ids` adds
    them."""
    if complete or not ids:
        ids.extend(end_ids)
    return ids
