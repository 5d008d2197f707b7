"""A model's RMSNorm layers through `torch.nn.functional.rms_norm`, which CUDA builds of torch run as one kernel
forward and one backward (`aten::_fused_rms_norm`, since torch 2.9: pytorch/pytorch#153666; before it, and on the
CPU, rms_norm runs the module's own operators).

transformers' RMSNorm module of Llama, Mistral, Qwen, Granite, SmolLM3, Phi-3 and other models (`STANDARD_NORMS`)
dispatches six operators forward and fourteen backward, and keeps for backward the normalized input besides the
input; Gemma's (`OFFSET_NORMS`) and OLMo's (`WEIGHT_FIRST_NORMS`) about as many. A layer has two norms (Gemma 2
and 3, OLMo 2 and 3: four): on a GPU, where a small model's step is bound by the host queueing kernels, that is 40
launches per layer and step against 4, and without gradient checkpointing one float32 (tokens x hidden) tensor per
norm that the fused kernel does not keep (its backward starts again from the input and the per-token scale).

The arithmetic is the module's. For STANDARD_NORMS with a float32 input and weight, which is what ssogen trains
(float32 weights under autocast keep the residual stream in float32), the weight is applied inside the kernel. With
a half-precision input (Qwen3's per-head q and k norms under autocast) or weight the module rounds the normalized
input to the input's dtype before the weight multiplies it: then the kernel only normalizes (in float32), and the
rounding and the product follow as in the module. Gemma's norms compute in float32 for any input and cast the
result back, as rms_norm on the float32 input does; OLMo's too, with the weight applied before the cast. On the CPU
rms_norm is the module's operators, bit-equal (tests/train/test_fused_norms.py); on CUDA the fused kernel sums in
another order, equal to rounding (bench/gpu_lean_check.py compares both with float64).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssogen.train.model_parts import give_forward, take_back, unwrap

# transformers' RMSNorm classes whose forward is `weight * (x * rsqrt(mean(x**2) + variance_epsilon))`, computed in
# float32 for a float32 input (read in transformers' modeling code; tests/train/test_fused_norms.py checks each on
# a tiny model).
STANDARD_NORMS = frozenset({
    "LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "GraniteRMSNorm", "SmolLM3RMSNorm", "Phi3RMSNorm",
    "MinistralRMSNorm", "MixtralRMSNorm", "Qwen2MoeRMSNorm", "Qwen3MoeRMSNorm", "OlmoeRMSNorm", "GlmRMSNorm",
    "Glm4RMSNorm", "Exaone4RMSNorm", "Ernie4_5RMSNorm", "HunYuanDenseV1RMSNorm", "ApertusRMSNorm", "ArceeRMSNorm",
    "GraniteMoeRMSNorm", "SeedOssRMSNorm"})
# Gemma's: `(x * rsqrt(mean(x**2) + eps)) * (1 + weight)`, all in float32 whatever the input's dtype, then cast back.
OFFSET_NORMS = frozenset({"GemmaRMSNorm", "Gemma2RMSNorm", "Gemma3RMSNorm"})
# OLMo 2's and 3's: `(weight * (x * rsqrt(mean(x**2) + eps))).to(x.dtype)` with x in float32: the weight multiplies
# before the cast back, whatever the input's dtype (their q and k norms see half precision under autocast).
WEIGHT_FIRST_NORMS = frozenset({"Olmo2RMSNorm", "Olmo3RMSNorm", "FlexOlmoRMSNorm"})


def rms_norm(hidden_states: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """The normalization over the last dimension, times `weight` unless None; looked up at each call
    (bench/train_memory.py gives it CUDA's operators on fake tensors)."""
    return F.rms_norm(hidden_states, (hidden_states.size(-1),), weight, eps)


class _Fused:
    """Mixed in front of a STANDARD_NORMS class (a subclass per class, so that type checks, copies and replicas
    still see the stock class)."""

    stock_class: type[nn.Module]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        module: Any = self
        weight, eps = module.weight, module.variance_epsilon
        if hidden_states.dtype == torch.float32 and weight.dtype == torch.float32:
            return rms_norm(hidden_states, weight, eps)
        # As the module rounds: normalized in float32, rounded to the input's dtype, then times the weight.
        return weight * rms_norm(hidden_states.to(torch.float32), None, eps).to(hidden_states.dtype)


class _FusedOffset(_Fused):
    """The same for an OFFSET_NORMS class, whose arithmetic is float32 for every input dtype."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        module: Any = self
        scale = 1.0 + module.weight.float()
        return rms_norm(hidden_states.float(), scale, module.eps).type_as(hidden_states)


class _FusedWeightFirst(_Fused):
    """The same for a WEIGHT_FIRST_NORMS class: normalized and weighted in float32, then cast back (a half-precision
    weight multiplies as the float32 it promotes to in the module)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        module: Any = self
        normalized = rms_norm(hidden_states.float(), module.weight.float(), module.variance_epsilon)
        return normalized.to(hidden_states.dtype)


def _mixin_for(module: nn.Module) -> type[_Fused] | None:
    """The mixin that computes `module`'s arithmetic with rms_norm, or None for a module it does not know."""
    name, weight = type(module).__name__, getattr(module, "weight", None)
    if not (isinstance(weight, nn.Parameter) and weight.dim() == 1):
        return None
    if isinstance(getattr(module, "variance_epsilon", None), float):
        if name in STANDARD_NORMS:
            return _Fused
        if name in WEIGHT_FIRST_NORMS:
            return _FusedWeightFirst
    if name in OFFSET_NORMS and isinstance(getattr(module, "eps", None), float):
        return _FusedOffset
    return None


def install_fused_norms(model: Any) -> int:
    """Route every RMSNorm of `STANDARD_NORMS`, `OFFSET_NORMS` and `WEIGHT_FIRST_NORMS` through `rms_norm`; returns
    how many (installed before included)."""
    count = 0
    for module in unwrap(model).modules():
        if isinstance(module, _Fused):
            count += 1
        elif (mixin := _mixin_for(module)) is not None:
            give_forward(module, mixin, "Fused")
            count += 1
    return count


def remove_fused_norms(model: Any) -> None:
    take_back(model, _Fused)
