"""The transformers engine's --dtype: what `from_pretrained` is given on each device."""

from __future__ import annotations

import torch

from ssogen.engine.hf_engine import causal_lm_dtype


def test_auto_is_float32_on_the_cpu_and_the_models_own_dtype_on_a_gpu() -> None:
    """`--dtype auto` loaded float32 on a GPU too, though the help promised the model's dtype there."""
    assert causal_lm_dtype("auto", "cpu") is torch.float32
    assert causal_lm_dtype("auto", "cuda") == "auto"


def test_a_named_dtype_is_that_dtype_on_every_device() -> None:
    for device in ("cpu", "cuda"):
        assert causal_lm_dtype("bfloat16", device) is torch.bfloat16
        assert causal_lm_dtype("half", device) is torch.float16
        assert causal_lm_dtype("float", device) is torch.float32
