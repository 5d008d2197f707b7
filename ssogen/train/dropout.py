"""Dropout off in the policy while it trains (TRL's default), with every saved config left as the user's.

The reference log-probs come from a pass in eval mode, so a policy that trains with dropout already differs from
its reference at step 0 and no pair starts at zero margin. Models apply dropout in three ways, and all three are
switched off: `nn.Dropout` modules (GPT-2, Phi-3's residual dropout), a float attribute read in `forward` (Qwen2,
Llama, Gemma: `self.attention_dropout`) and the config read in `forward` (Gemma 2/3, Falcon). The config's values
are the user's again while a model is saved (`ZeroedDropout.user_values`, around every save of `SSOTrainer`:
intermediate checkpoints and the final model), and zero again afterwards while training goes on. A resumed run
loads the starting model and switches its dropout off before the checkpoint's weights are loaded, so it trains
without dropout too."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
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


@dataclass
class ZeroedDropout:
    """The config values `disable_dropout` set to 0: (config or sub-config, attribute, the user's value)."""

    values: list[tuple[Any, str, float]] = field(default_factory=list)

    def restore(self) -> None:
        """Give the config its user's values back for good."""
        for config, name, value in self.values:
            setattr(config, name, value)

    @contextlib.contextmanager
    def user_values(self) -> Iterator[None]:
        """The user's values in the config for the block (a save); afterwards what was there before (zero while
        training). Only the config values that were zeroed: the modules' own attributes stay off meanwhile."""
        before = [getattr(config, name) for config, name, _ in self.values]
        self.restore()
        try:
            yield
        finally:
            for (config, name, _), value in zip(self.values, before, strict=True):
                setattr(config, name, value)


def disable_dropout(model: torch.nn.Module) -> ZeroedDropout:
    """Set every dropout probability of `model` to 0; returns the config values it zeroed, to restore on save."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if _is_dropout_name(name) and isinstance(value, float):
                setattr(module, name, 0.0)
    zeroed = ZeroedDropout()
    config = getattr(model, "config", None)
    if config is not None:
        for sub in _configs(config):
            for name, value in list(vars(sub).items()):
                if _is_dropout_name(name) and isinstance(value, float) and value != 0.0:
                    zeroed.values.append((sub, name, value))
                    setattr(sub, name, 0.0)
    return zeroed
