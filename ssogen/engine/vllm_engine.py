"""The vLLM engine: one `vllm.LLM`, every chunk's requests in one batched `generate` call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ssogen.engine import GenerationRequest, GenerationResult
from ssogen.engine.options import EngineOptions
from ssogen.engine.vllm_llm import build_vllm_llm, import_vllm, shutdown_vllm_llm, vllm_settings

if TYPE_CHECKING:
    from vllm.inputs import TokensPrompt


class VLLMEngine:
    name = "vllm"

    def __init__(self, model: str, options: EngineOptions) -> None:
        from transformers import AutoTokenizer

        self.llm = build_vllm_llm(model, options)
        # Our own HF tokenizer renders chat templates, so both engines see byte-identical prompts.
        self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=options.trust_remote_code)
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self.settings = vllm_settings(self.llm)

    def sampling_params(self, request: GenerationRequest) -> Any:
        vllm = import_vllm()
        structured = None
        if request.guided_regex is not None:
            from vllm.sampling_params import StructuredOutputsParams

            structured = StructuredOutputsParams(regex=request.guided_regex)
        return vllm.SamplingParams(
            n=1,
            temperature=request.temperature,
            top_p=request.top_p if request.temperature > 0 else 1.0,
            max_tokens=request.max_tokens,
            seed=request.seed,
            stop=list(request.stop) or None,
            stop_token_ids=list(request.stop_token_ids) or None,
            structured_outputs=structured,
        )

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        prompts: list[TokensPrompt] = [{"prompt_token_ids": r.prompt_token_ids} for r in requests]
        params = [self.sampling_params(r) for r in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for request, output in zip(requests, outputs, strict=True):
            completion = output.outputs[0]
            results.append(GenerationResult(
                key=request.key,
                text=completion.text,
                num_tokens=len(completion.token_ids),
                finish_reason=str(completion.finish_reason or "stop"),
            ))
        return results

    def close(self) -> None:
        shutdown_vllm_llm(self.llm)
