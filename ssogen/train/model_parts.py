"""Reaching into a transformers model that training may have wrapped: the model itself and its text config; and
giving one of its modules another forward while it stays an instance of its own class."""

from __future__ import annotations

from typing import Any, cast

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


# (mixin, stock class) -> the subclass `give_forward` made for them, made once.
_MIXED_CLASSES: dict[tuple[type, type], type] = {}


def give_forward(module: nn.Module, mixin: type, prefix: str) -> None:
    """Make `module` an instance of `prefix + its class name`: `mixin` in front of its own class, with `stock_class`
    naming that class (type checks, copies and replicas still see the stock class; `take_back` undoes it)."""
    stock = type(module)
    if (mixin, stock) not in _MIXED_CLASSES:
        _MIXED_CLASSES[mixin, stock] = type(f"{prefix}{stock.__name__}", (mixin, stock), {"stock_class": stock})
    module.__class__ = _MIXED_CLASSES[mixin, stock]


def take_back(model: Any, mixin: type) -> None:
    """Every module of `model` that `give_forward` gave `mixin` is an instance of its stock class again."""
    for module in unwrap(model).modules():
        if isinstance(module, mixin):
            module.__class__ = cast(Any, module).stock_class  # set on the class by `give_forward`
