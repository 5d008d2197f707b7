"""Dropout off in the policy while it trains (TRL's default), with the saved config left as the user's.

The reference log-probs come from a pass in eval mode, so a policy that trains with dropout already differs from
its reference at step 0 and no pair starts at zero margin. Models apply dropout in three ways, and all three are
switched off: `nn.Dropout` modules (GPT-2, Phi-3's residual dropout), a float attribute read in `forward` (Qwen2,
Llama, Gemma: `self.attention_dropout`) and the config read in `forward` (Gemma 2/3, Falcon). The config's values
are given back before the final model is saved; intermediate checkpoints carry the zeroed values."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch


def _is_dropout_name(name: str) -> bool:
    return "dropout" in name or name.endswith("pdrop")


def _configs(config: Any) -> Iterator[Any]:
    """A config and the sub-configs it holds (multimodal models keep the text model's config inside)."""
    yield config
    for value in vars(config).values():
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):
            yield from _configs(value)


def disable_dropout(model: torch.nn.Module) -> Callable[[], None]:
    """Set every dropout probability of `model` to 0; returns a function that restores the config's values."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if _is_dropout_name(name) and isinstance(value, float):
                setattr(module, name, 0.0)
    saved: list[tuple[Any, str, float]] = []
    config = getattr(model, "config", None)
    if config is not None:
        for sub in _configs(config):
            for name, value in list(vars(sub).items()):
                if _is_dropout_name(name) and isinstance(value, float) and value != 0.0:
                    saved.append((sub, name, value))
                    setattr(sub, name, 0.0)

    def restore() -> None:
        for sub, name, value in saved:
            setattr(sub, name, value)

    return restore
