"""The transformers engine: plain `generate`, one request at a time with its own seed (no vLLM needed).

One request at a time is what makes per-request seeds exact here: the sampled tokens depend only on the
request's prompt and seed, never on what else is in the batch."""

from __future__ import annotations

from typing import Any

from ssogen.engine import GenerationRequest, GenerationResult
from ssogen.engine.options import EngineOptions
from ssogen.errors import UserError


def load_causal_lm(model: str, options: EngineOptions) -> tuple[Any, Any, str, int]:
    """(tokenizer, model in eval mode on the best device, device, context length) for the transformers paths."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=options.trust_remote_code)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = AutoModelForCausalLM.from_pretrained(
        model, dtype=causal_lm_dtype(options.dtype, device), trust_remote_code=options.trust_remote_code,
    ).to(device)  # type: ignore[arg-type]  # `to` is functools.wraps(nn.Module.to): its stub wants self first
    lm.eval()
    context = getattr(lm.config, "max_position_embeddings", None) or 2048
    return tokenizer, lm, device, int(options.max_model_len or context)


def causal_lm_dtype(dtype: str, device: str) -> Any:
    """What `from_pretrained` gets for --dtype, as the option's help says: `auto` is float32 on the CPU and the
    model's own dtype (transformers' "auto", from its config) on a GPU; a named dtype is that torch dtype."""
    import torch

    if dtype == "auto":
        return "auto" if device == "cuda" else torch.float32
    return getattr(torch, dtype)  # half and float are torch's names too


def causal_lm_settings(lm: Any, device: str, context: int) -> dict[str, Any]:
    """The manifest's record of a transformers engine or scorer (the counterpart of `vllm_settings`)."""
    return {"dtype": str(lm.dtype).removeprefix("torch."), "max_model_len": context, "device": device}


class TransformersEngine:
    name = "transformers"

    def __init__(self, model: str, options: EngineOptions) -> None:
        self.tokenizer, self.model, self.device, self.max_model_len = load_causal_lm(model, options)
        self.settings = causal_lm_settings(self.model, self.device, self.max_model_len)

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return [self._one(r) for r in requests]

    def _one(self, request: GenerationRequest) -> GenerationResult:
        import torch

        if request.guided_regex is not None:
            raise UserError("--selection guided needs vLLM structured outputs; use --selection free "
                            "with --engine transformers")
        max_new = min(request.max_tokens, self.max_model_len - len(request.prompt_token_ids))
        input_ids = torch.tensor([request.prompt_token_ids], device=self.device)
        sample = request.temperature > 0
        kwargs = {"do_sample": sample, "max_new_tokens": max(1, max_new),
                  "eos_token_id": list(request.stop_token_ids) or None,
                  "pad_token_id": self.tokenizer.pad_token_id or (request.stop_token_ids or [0])[0]}
        if sample:
            kwargs.update(temperature=request.temperature, top_p=request.top_p, top_k=0)
        if request.stop:
            kwargs.update(stop_strings=list(request.stop), tokenizer=self.tokenizer)
        torch.manual_seed(request.seed)
        with torch.no_grad():
            output = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
        new_tokens = output[0, input_ids.shape[1]:].tolist()
        generated = len(new_tokens)  # counts the stop token, as vLLM's token_ids do
        finish = "length"
        if new_tokens and new_tokens[-1] in request.stop_token_ids:
            new_tokens, finish = new_tokens[:-1], "stop"  # vLLM also leaves the stop token out of the text
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        for stop in request.stop:
            if stop in text:
                text, finish = text[: text.index(stop)], "stop"
        if finish == "length" and generated < max_new:
            finish = "stop"
        return GenerationResult(key=request.key, text=text, num_tokens=generated, finish_reason=finish)
