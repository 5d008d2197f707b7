"""The weights dtype an engine runs at, known before it loads: `--dtype` with each precision named one way (half is
float16, float is float32) and `auto` resolved as the engines resolve it (`vllm_llm.vllm_llm_kwargs`,
`hf_engine.causal_lm_dtype`, then vLLM or transformers from the model's config, and transformers from the
checkpoint's headers for a config naming no dtype: `checkpoint_dtype`).

What a loaded engine reports (its `settings["dtype"]`) is the last word: this is the guess a cache is looked up with
before any engine loads (`ssogen score`), made without importing torch, transformers or vLLM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

from ssogen.engine.checkpoint_dtype import checkpoint_dtype
from ssogen.engine.devices import engine_runs_on_cpu
from ssogen.engine.options import EngineDtype, EngineKind, EngineOptions, canonical_dtype

_CONFIG_DTYPES = {"float32", "float16", "bfloat16"}


def engine_dtype(settings: dict[str, Any] | None) -> str | None:
    """The dtype an engine or scorer says it loaded the weights at (its `settings`), None when it says nothing."""
    dtype = (settings or {}).get("dtype")
    return canonical_dtype(dtype) if isinstance(dtype, str) else None


def expected_dtype(kind: EngineKind, model: str, options: EngineOptions | None) -> str | None:
    """The dtype an engine of `kind` will load `model` (a folder or hub id) at with `options`; None when only the
    loaded engine can tell (`--dtype auto` on a GPU with the transformers engine, for a config naming no dtype and
    a checkpoint whose headers are not at hand: a .bin one, or a hub model's not in the local cache)."""
    dtype = options.dtype if options is not None else "auto"
    if dtype != "auto":
        return canonical_dtype(dtype)
    if engine_runs_on_cpu(kind):
        return "float32"  # both engines load float32 for auto on the CPU (faster there than bf16)
    config = _read_config(model)
    declared = _declared_dtype(config)
    if kind == "vllm":
        # vLLM gives float32 models (and configs naming no dtype, read as float32) the GPU's first half-precision
        # dtype: bfloat16 wherever the GPU has it. On an older GPU the loaded engine says float16.
        return "bfloat16" if declared in (None, "float32") else declared
    # transformers' "auto": the config's dtype; without one, the checkpoint's.
    return declared or (checkpoint_dtype(model, config) if config is not None else None)


def precision_names(kind: EngineKind, model: str, options: EngineOptions) -> tuple[str, tuple[str, ...]]:
    """The precision `options` load `model` at here (`expected_dtype`; "auto" when only the loaded engine can tell)
    and every --dtype value that gives that precision here: the other spelling of a named one (half, float16), and
    `auto` when it resolves to it. What an earlier run, which recorded --dtype as typed, may have recorded for it."""
    resolved = expected_dtype(kind, model, options)
    if resolved is None:
        return "auto", ("auto",)
    auto = resolved if options.dtype == "auto" else expected_dtype(kind, model, options.model_copy(
        update={"dtype": "auto"}))
    return resolved, tuple(name for name in get_args(EngineDtype)
                           if (auto if name == "auto" else canonical_dtype(name)) == resolved)


def _read_config(model: str) -> dict[str, Any] | None:
    """The model's config.json, from the folder or the local hub cache; None when it is not at hand or no object."""
    path = _config_file(model)
    try:
        config = json.loads(path.read_text(encoding="utf-8")) if path is not None else None
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _declared_dtype(config: dict[str, Any] | None) -> str | None:
    """The dtype the model's config names (`dtype`, or `torch_dtype` before transformers 5; a multimodal model's
    text part); None when it names none or is not at hand."""
    for part in (config, config.get("text_config") if config is not None else None):
        if isinstance(part, dict):
            declared = part.get("dtype") or part.get("torch_dtype")
            if isinstance(declared, str) and declared.removeprefix("torch.") in _CONFIG_DTYPES:
                return declared.removeprefix("torch.")
    return None


def _config_file(model: str) -> Path | None:
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder / "config.json"
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, "config.json")  # the cache only: never a download
    except ValueError:  # no valid repo id (HFValidationError): the model's own checks name the problem
        return None
    return Path(cached) if isinstance(cached, str) else None
