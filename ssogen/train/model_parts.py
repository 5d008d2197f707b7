"""Reaching into a transformers model that training may have wrapped: the model itself and its text config."""

from __future__ import annotations

from typing import Any

from torch import nn


def unwrap(model: Any) -> Any:
    """The transformers model under DDP/DeepSpeed (`.module`) and peft (`get_base_model()`) wrappers."""
    inner = model
    for _ in range(4):
        if isinstance(getattr(inner, "module", None), nn.Module):
            inner = inner.module
        elif hasattr(type(inner), "get_base_model"):
            inner = inner.get_base_model()
        else:
            break
    return inner


def text_config(model: Any) -> Any:
    """The config of the model's language part (a multimodal config nests it), or None without a config."""
    config = getattr(unwrap(model), "config", None)
    return config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
