"""Log-probs of fixed responses under fixed prompts (prefill only), for `ssogen score`.

Two scorers with one interface: vLLM's `prompt_logprobs` (the default) and a transformers forward pass (no vLLM
needed). Both take token ids that the caller built (chat template + response tokens), so both see exactly the
same sequences, and both return the mean token log-prob of the response part of each sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ssogen.engine.options import EngineKind, EngineOptions, check_kind
from ssogen.engine.vllm_llm import build_vllm_llm, import_vllm, shutdown_vllm_llm, vllm_settings

if TYPE_CHECKING:
    from vllm.inputs import TokensPrompt


@dataclass(frozen=True)
class ScoreRequest:
    """Score `response_ids` as the continuation of `prompt_ids`."""

    key: str
    prompt_ids: list[int]
    response_ids: list[int]

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


class Scorer(Protocol):
    name: str
    tokenizer: Any
    # Longest sequence (prompt + response) this scorer accepts.
    max_sequence_length: int
    settings: dict[str, Any]  # what the options resolved to, for the manifest (as an Engine's)

    def mean_logprobs(self, requests: list[ScoreRequest]) -> list[float]: ...


def _check(requests: list[ScoreRequest], limit: int) -> None:
    for request in requests:
        if not request.response_ids:
            raise ValueError(f"{request.key}: empty response has no tokens to score")
        if request.length > limit:
            raise ValueError(f"{request.key}: {request.length} tokens exceed the scorer's limit of {limit}")


class VLLMScorer:
    """`SamplingParams(max_tokens=1, prompt_logprobs=0)` on `{"prompt_token_ids": prompt + response}`: vLLM
    returns, for every prompt position after the first, the log-prob of the actual token there (raw log-probs
    of the model's logits, float32 on CPU). One generated token is the price of a prefill-only pass.

    vLLM does not read its prefix cache for requests that ask for prompt log-probs (cached positions would
    have no logits), so adjacent requests sharing a context are still prefilled in full; keeping them adjacent
    costs nothing and lets vLLM batch sequences of similar length together."""

    name = "vllm"

    def __init__(self, model: str, options: EngineOptions) -> None:
        from transformers import AutoTokenizer

        self.llm = build_vllm_llm(model, options)
        self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=options.trust_remote_code)
        # The sequence plus the one token vLLM insists on generating must fit the context.
        self.max_sequence_length = int(self.llm.llm_engine.model_config.max_model_len) - 1
        self.settings = vllm_settings(self.llm)

    def mean_logprobs(self, requests: list[ScoreRequest]) -> list[float]:
        if not requests:
            return []
        _check(requests, self.max_sequence_length)
        vllm = import_vllm()
        params = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        prompts: list[TokensPrompt] = [{"prompt_token_ids": r.prompt_ids + r.response_ids} for r in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        means = []
        for request, output in zip(requests, outputs, strict=True):
            ids = request.prompt_ids + request.response_ids
            per_position: Any = output.prompt_logprobs  # [None, {token: Logprob}, ...], aligned with `ids`
            if per_position is None:
                raise RuntimeError(f"{request.key}: vLLM returned no prompt log-probs")
            total = 0.0
            for position in range(len(request.prompt_ids), len(ids)):
                total += float(per_position[position][ids[position]].logprob)
            means.append(total / len(request.response_ids))
        return means

    def close(self) -> None:
        shutdown_vllm_llm(self.llm)


class TransformersScorer:
    """A no-grad forward pass per batch, with the response log-prob code training uses
    (`ssogen.response_logps`: left padding, logits only for the response positions)."""

    name = "transformers"

    def __init__(self, model: str, options: EngineOptions, *, max_batch_tokens: int = 16384) -> None:
        from ssogen.engine.hf_engine import causal_lm_settings, load_causal_lm

        self.tokenizer, self.model, self.device, self.max_sequence_length = load_causal_lm(model, options)
        self.settings = causal_lm_settings(self.model, self.device, self.max_sequence_length)
        self.max_batch_tokens = max_batch_tokens

    def _batches(self, requests: list[ScoreRequest]) -> list[list[int]]:
        """Indices grouped so that (batch size x longest sequence) stays under max_batch_tokens."""
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for index, request in enumerate(requests):
            if current and max(longest, request.length) * (len(current) + 1) > self.max_batch_tokens:
                batches.append(current)
                current, longest = [], 0
            current.append(index)
            longest = max(longest, request.length)
        if current:
            batches.append(current)
        return batches

    def mean_logprobs(self, requests: list[ScoreRequest]) -> list[float]:
        import torch

        from ssogen.response_logps import left_padded, padded_sequence_logps

        _check(requests, self.max_sequence_length)
        means: list[float] = [0.0] * len(requests)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for batch in self._batches(requests):
            tensors = left_padded([{"row_index": row, "sequences": [requests[i].prompt_ids + requests[i].response_ids],
                                    "response_lengths": [len(requests[i].response_ids)]}
                                   for row, i in enumerate(batch)], pad)
            with torch.no_grad():
                sums, counts = padded_sequence_logps(self.model, {k: v.to(self.device) for k, v in tensors.items()})
            for row, index in enumerate(batch):
                means[index] = float(sums[row, 0]) / int(counts[row, 0])
        return means


def make_single_scorer(kind: EngineKind, model: str, options: EngineOptions) -> Scorer:
    check_kind(kind)
    return VLLMScorer(model, options) if kind == "vllm" else TransformersScorer(model, options)
