"""Engine adapters: what the pipeline hands to an engine and gets back, whichever engine it is.

The package's modules, by job:
    ssogen.engine              GenerationRequest / GenerationResult / Engine (the contract), stop_token_ids_of
                               (where sampling stops), close_engine (stops a pool's engines, or one engine)
    ssogen.engine.options      EngineOptions, EngineFields (--engine, --tp, ...), EngineKind, check_kind,
                               is_pooled, the CPU build's KV-cache size
    ssogen.engine.vllm_llm     the vLLM import (lazy) and the vllm.LLM: is_cpu_build, vllm_llm_kwargs,
                               build_vllm_llm, vllm_settings, shutdown_vllm_llm, collect_dropped_engines
    vllm_engine, hf_engine     the two engines; scoring: the two scorers
    launch, factory            `launch.make_engine` / `make_scorer` build what a command asked for, `factory` one
                               engine in this process; placement, devices, pool, workers, ray_pool: --dp and Ray
This module imports none of them: the engines and the pipeline all import it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class GenerationRequest:
    """One sampling request. `prompt_token_ids` is already chat-formatted (or a raw completion prompt)."""

    key: str
    prompt_token_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    # Structured outputs (vLLM only): a regex the whole response must match.
    guided_regex: str | None = None


@dataclass
class GenerationResult:
    key: str
    text: str
    num_tokens: int
    finish_reason: str  # "stop" | "length" (vLLM's names; the transformers engine uses the same)


class Engine(Protocol):
    name: str
    tokenizer: Any
    max_model_len: int
    settings: dict[str, Any]  # what the options resolved to (see `vllm_llm.vllm_settings`); the manifest records it

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]: ...


def stop_token_ids_of(model: str, tokenizer: Any) -> list[int]:
    """Where sampling stops: the model's generation_config eos ids, the tokenizer's eos, and the chat template's
    end-of-turn token(s) (a base model's generation_config may list only <|endoftext|>, and its ChatML answers would
    run on past <|im_end|>). Only special/added tokens: ordinary text never ends a response. Never hard-coded."""
    from ssogen.chat import end_of_turn, special_ids

    ids: list[int] = []
    try:
        from transformers import GenerationConfig

        eos = GenerationConfig.from_pretrained(model).eos_token_id
    except Exception:  # no generation_config.json: the tokenizer's eos is all we have
        eos = None
    if isinstance(eos, int):
        ids.append(eos)
    elif isinstance(eos, list):
        ids.extend(int(i) for i in eos)
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    if getattr(tokenizer, "chat_template", None):
        ids.extend(special_ids(tokenizer, end_of_turn(tokenizer).ids))
    return list(dict.fromkeys(ids))


def close_engine(engine: Any) -> None:
    """Stop a pool's engine processes, or shut a single engine down (vLLM: its engine core); engines without
    a `close` (transformers) need nothing."""
    close = getattr(engine, "close", None)
    if callable(close):
        close()
