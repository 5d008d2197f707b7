"""What the steps of a generate run share: the session that holds the loaded engine,
builds requests from token ids and counts every engine call."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ssogen.chat import context_messages, has_chat_template, prompt_token_ids, supports_system_role
from ssogen.engine import Engine, GenerationRequest, GenerationResult, stop_token_ids_of
from ssogen.errors import UserError
from ssogen.generate.config import RunConfig
from ssogen.principles import Library
from ssogen.templating import Templates


@dataclass
class Session:
    """One run's engine with what the steps need around it: the options, the library, the templates, whether
    the chat template takes a system role, the stop tokens, and counts of requests and generated tokens."""

    config: RunConfig
    library: Library
    templates: Templates
    engine: Engine
    system_supported: bool
    stop_ids: list[int]
    requests: Counter[str] = field(default_factory=Counter)
    tokens: int = 0
    # Engine time: from the start of the first call to the end of the last (model loading is not in it).
    first_call: float | None = None
    last_call_end: float | None = None

    @classmethod
    def open(cls, config: RunConfig, library: Library, templates: Templates, engine: Engine, model_path: str,
             ) -> Session:
        """`model_path`: the policy as loaded (`ModelRef.path`: a folder with ~ expanded, or a hub id)."""
        tokenizer = engine.tokenizer
        if not has_chat_template(tokenizer):
            raise UserError(f"--model {config.model}: the tokenizer has no chat template")
        return cls(config=config, library=library, templates=templates, engine=engine,
                   system_supported=supports_system_role(tokenizer),
                   stop_ids=stop_token_ids_of(model_path, tokenizer))

    @property
    def generation_s(self) -> float:
        """Seconds from the first engine call to the end of the last (0 before any call)."""
        if self.first_call is None or self.last_call_end is None:
            return 0.0
        return self.last_call_end - self.first_call

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    def chat_ids(self, query: str, system: str | None) -> list[int]:
        """Token ids of the chat prompt [system, user] (the system text merged when the template does not write it)."""
        return prompt_token_ids(self.tokenizer, context_messages(query, system),
                                system_supported=self.system_supported)

    def too_long(self, ids: list[int]) -> bool:
        """True when a prompt leaves no room for even one new token."""
        return len(ids) >= self.engine.max_model_len

    def request(self, key: str, ids: list[int], *, seed: int, max_tokens: int, temperature: float | None = None,
                stop: list[str] | None = None, regex: str | None = None) -> GenerationRequest:
        """A request with the run's sampling settings; max_tokens shrinks to the room left in the context."""
        room = self.engine.max_model_len - len(ids)
        return GenerationRequest(
            key=key, prompt_token_ids=ids, max_tokens=max(1, min(max_tokens, room)),
            temperature=self.config.temperature if temperature is None else temperature, top_p=self.config.top_p,
            seed=seed, stop=stop or [], stop_token_ids=self.stop_ids, guided_regex=regex)

    def run(self, stage: str, requests: list[GenerationRequest]) -> dict[str, GenerationResult]:
        """One batched engine call; results by request key."""
        if self.first_call is None:
            self.first_call = time.monotonic()
        results = self.engine.generate(requests)
        self.last_call_end = time.monotonic()
        self.requests[stage] += len(requests)
        self.tokens += sum(r.num_tokens for r in results)
        return {r.key: r for r in results}
