"""A scripted engine for tests of the generate steps: it keeps every request it was sent and answers each with
`answer` (a subclass says what), so that a test can check the requests a step built without running a model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ssogen.engine import GenerationRequest, GenerationResult


class ScriptedEngine(ABC):
    """Satisfies the `Engine` protocol's generate side; `requests` holds every request in the order sent."""

    name = "scripted"
    settings: dict[str, Any] = {}
    max_model_len = 4096

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.requests: list[GenerationRequest] = []

    @abstractmethod
    def answer(self, request: GenerationRequest) -> str:
        """The text this engine answers `request` with (each test's subclass scripts it)."""

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.requests += requests
        return [GenerationResult(key=r.key, text=self.answer(r), num_tokens=3, finish_reason="stop") for r in requests]
