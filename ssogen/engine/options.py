"""Engine settings: which engine (`--engine`), `EngineOptions` (what an engine is built with) and `EngineFields`
(the engine's command options, the same for `generate` and `score`), with the CPU build's KV-cache size.

A module of its own: the commands' settings, the placement plan and the worker processes read these values
without building an engine, and nothing here loads vLLM or transformers."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ssogen.errors import UserError
from ssogen.settings import option

EngineKind = Literal["vllm", "transformers"]
# The weight dtypes vLLM's ModelConfig accepts (half = float16, float = float32); the transformers engine takes the
# same names from torch.
EngineDtype = Literal["auto", "bfloat16", "float16", "half", "float32", "float"]
# --dtype's other spellings of a precision (vLLM's and torch's names), by the name engines report it under.
_DTYPE_ALIASES = {"half": "float16", "float": "float32"}


def canonical_dtype(name: str) -> str:
    """`name` as an engine reports the dtype (`str(torch_dtype)` without "torch."): float16 for half, float32
    for float; any other name as it is ("auto" included: it names no precision)."""
    return _DTYPE_ALIASES.get(name, name)


# KV cache given to the CPU build when the user names none: vLLM would otherwise size it from a whole NUMA
# node and refuse to start (docs/cpu-vllm-notes.md). 256 MiB holds thousands of tokens of a small model.
DEFAULT_CPU_KV_CACHE_BYTES = 256 * 2**20
# vLLM's CPU build lets this variable (GiB) replace the KV-cache size it is given; ssogen reads it instead, so that
# --kv-cache-gb wins over it, and it over the default, and the dry run and manifest say what was used.
CPU_KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"


class EngineOptions(BaseModel):
    """Engine settings. `None` means "pick the right value for this build" (see `vllm_llm.vllm_llm_kwargs`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf or nan is no setting

    dtype: EngineDtype = Field("auto", description="Weights dtype; 'auto' = float32 on CPU, the model's dtype on GPU.")
    max_model_len: int | None = Field(None, ge=16, description="Context length (prompt + response).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per model replica (--tp).")
    data_parallel_size: int = Field(1, ge=1, description=(
        "Independent engines of tensor_parallel_size GPUs each (--dp), each in its own process, fed from one "
        "work queue; on the CPU build each engine gets its own CPU cores."))
    ray_address: str | None = Field(None, min_length=1, description=(
        "Run the engines as Ray actors on this cluster ('auto' or ray://HOST:PORT) instead of local processes."))
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    kv_cache_memory_bytes: int | None = Field(
        None, ge=1, description="Explicit KV-cache size; default 256 MiB on the CPU build, vLLM's own on GPU.")
    enforce_eager: bool | None = Field(None, description="Skip torch.compile; default True on CPU.")
    enable_prefix_caching: bool = True
    seed: int = 0
    trust_remote_code: bool = False


ENGINE_PANEL = "Engine"
# Rows per chunk for each engine: every engine of a --dp pool gets a full batch from each chunk.
CHUNK_ROWS_PER_ENGINE = 64


class EngineFields(BaseModel):
    """The engine's command options, the same for `generate` and `score`; `engine_options()` turns them into
    EngineOptions."""

    engine: EngineKind = option("vllm", "vllm, or transformers (slower, one request at a time: for machines "
                                "without vLLM).", panel=ENGINE_PANEL)
    tp: int = option(1, "Tensor-parallel GPUs per engine (vLLM).", ge=1, panel=ENGINE_PANEL)
    dp: int = option(1, "Data-parallel engines, each of --tp GPUs in its own process (on the CPU build: its own "
                     "cores), fed from one work queue; the results equal those of --dp 1.", ge=1, panel=ENGINE_PANEL)
    ray_address: str | None = option(None, "Run the --dp engines as Ray actors on this cluster: auto or "
                                     "ray://HOST:PORT (needs ssogen[ray]).", min_length=1, panel=ENGINE_PANEL,
                                     default_text="local processes")
    dtype: EngineDtype = option("auto", "Weights dtype: auto (float32 on CPU, the model's dtype on GPU), bfloat16, "
                                "float16 (or half) or float32 (or float).", panel=ENGINE_PANEL)
    max_model_len: int | None = option(None, "Context length (prompt + response).", ge=16, panel=ENGINE_PANEL,
                                       default_text="the model's")
    gpu_memory_utilization: float = option(0.9, "Share of GPU memory for vLLM.", gt=0.0, le=1.0,
                                           panel=ENGINE_PANEL)
    kv_cache_gb: float | None = option(
        None, "KV-cache size in GiB (vLLM).", ge=0.001, panel=ENGINE_PANEL,
        default_text=f"{CPU_KV_CACHE_ENV} or {DEFAULT_CPU_KV_CACHE_BYTES / 2**30:g} on the CPU build, vLLM's own "
                     "on GPU")

    def engine_options(self, seed: int = 0) -> EngineOptions:
        return EngineOptions(
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            tensor_parallel_size=self.tp,
            data_parallel_size=self.dp,
            ray_address=self.ray_address,
            gpu_memory_utilization=self.gpu_memory_utilization,
            kv_cache_memory_bytes=int(self.kv_cache_gb * 2**30) if self.kv_cache_gb else None,
            seed=seed,
        )


def cpu_kv_cache_bytes(options: EngineOptions) -> int:
    """The CPU build's KV-cache size: --kv-cache-gb, else VLLM_CPU_KVCACHE_SPACE GiB when set (not 0), else 256 MiB."""
    if options.kv_cache_memory_bytes:
        return options.kv_cache_memory_bytes
    value = os.environ.get(CPU_KV_CACHE_ENV, "").strip()
    try:
        gib = int(value) if value else 0
    except ValueError:
        raise UserError(f"{CPU_KV_CACHE_ENV}={value!r}: not a whole number of GiB") from None
    return gib * 2**30 if gib > 0 else DEFAULT_CPU_KV_CACHE_BYTES


def is_pooled(options: EngineOptions) -> bool:
    """Several engines (or Ray actors) behind one interface, rather than one engine in this process."""
    return options.data_parallel_size > 1 or options.ray_address is not None


def check_kind(kind: str) -> None:
    if kind not in ("vllm", "transformers"):
        raise UserError(f"--engine: unknown engine {kind!r} (choose vllm or transformers)")
