"""Projections that read the same input as one GEMM on their stacked weights: an attention layer's q, k and v, and
a gated MLP's gate and up.

Llama, Mistral, Qwen, Gemma and similar layers (`ORDERED_MODEL_TYPES`) call `q_proj`, `k_proj` and `v_proj` one
after another on the same hidden states, and `gate_proj` then `up_proj` on the MLP's input. Once installed, the
first projection's call computes the whole group with `_StackedProjections` and keeps the other outputs for the
calls that follow with the very same input tensor; any other call computes as the stock Linear. Per group and
forward that is one GEMM instead of two or three and one cast of the input instead of one per projection (autocast
casts it for each, and keeps each cast for backward); backward gives the input gradient and the stacked weight
gradient with one GEMM each. On a GPU, where a small model's step is bound by the host queueing kernels, that is
about 30 fewer operators per layer and step (bench/train_memory.py counts them). With gradient checkpointing the
tiled MLP (`ssogen.train.tiled_mlp`), which stacks gate and up itself, keeps its MLPs; only q, k and v are stacked
there.

Dtypes are the stock ones under autocast (bf16 GEMMs). The input gradient sums its products inside one GEMM and the
weight gradients are summed in float32, so results agree with separate projections to rounding and are no less
accurate (tests compare both against float64). Not installed under DeepSpeed or FSDP, whose sharded stages gather
each module's weights in that module's own forward hook (see `SSOTrainer.__init__`); in torch.nn.DataParallel's
replicas each projection computes on its own.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssogen.train import mixed_precision
from ssogen.train.mixed_precision import compute_dtype, stacked
from ssogen.train.model_parts import text_config, unwrap
from ssogen.train.tiled_mlp import is_tiled

# Groups of projections, by attribute name in their module, that the models call in this order on one input.
GROUPS = {"q, k, v": ("q_proj", "k_proj", "v_proj"), "gate, up": ("gate_proj", "up_proj")}
# Models whose layers call each group that way and change no output in place (read in transformers' modeling code;
# tests/train/test_stacked_projections.py checks each). In another model a group called out of order would still
# compute right, but the first call's outputs for the others would stay held until the group's next call (through
# the whole step), and an in-place change of an output (the first OLMo's clip_qkv) would fail: such models keep their
# separate projections.
ORDERED_MODEL_TYPES = frozenset({
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "granite", "smollm3", "starcoder2",
    "cohere", "olmo2", "olmo3", "ministral", "mixtral", "qwen2_moe", "qwen3_moe", "granitemoe", "flex_olmo", "glm",
    "glm4", "exaone4", "ernie4_5", "hunyuan_v1_dense", "apertus", "arcee", "seed_oss"})


class _StackedProjections(torch.autograd.Function):
    """(x @ [W1; W2; ...]ᵀ + [b1; b2; ...]) split into each projection's output; `count` weights, then as many
    biases (all None without bias)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, count: int, *params: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        weights, biases = params[:count], params[count:]
        dtype = compute_dtype(x)
        ctx.input_dtype, ctx.param_dtypes = x.dtype, [w.dtype for w in weights]  # type: ignore[union-attr]
        ctx.widths, ctx.leading = [w.size(0) for w in weights], x.shape[:-1]  # type: ignore[union-attr]
        with torch.autocast(x.device.type, enabled=False):
            flat = x.reshape(-1, x.size(-1)).to(dtype)
            weight = stacked(weights, dtype)  # type: ignore[arg-type]
            bias = None if biases[0] is None else stacked(biases, dtype)  # type: ignore[arg-type]
            ctx.has_bias = bias is not None
            ctx.save_for_backward(flat, weight)
            projected = F.linear(flat, weight, bias)
        return tuple(part.view(*ctx.leading, part.size(-1)) for part in projected.split(ctx.widths, dim=1))

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        flat, weight = ctx.saved_tensors
        count = len(ctx.widths)
        want_x, want_weights = ctx.needs_input_grad[0], ctx.needs_input_grad[2:2 + count]
        want_biases = ctx.needs_input_grad[2 + count:]
        with torch.autocast(flat.device.type, enabled=False):
            # The output gradients side by side, as the stacked weight's GEMMs want them (zeros for an output that
            # got none, as autograd would give).
            d_projected = torch.cat([flat.new_zeros((flat.size(0), width)) if grad is None
                                     else grad.reshape(-1, width).to(flat.dtype)
                                     for grad, width in zip(grads, ctx.widths, strict=True)], dim=1)
            grad_x = None
            if want_x:
                grad_x = mixed_precision.float_product(d_projected, weight)
                grad_x = grad_x.to(ctx.input_dtype).view(*ctx.leading, flat.size(1))
            grad_weights: list[torch.Tensor | None] = [None] * count
            if any(want_weights):
                total = mixed_precision.float_product(d_projected.t(), flat)
                grad_weights = [part.to(dtype) if want else None for part, dtype, want in
                                zip(total.split(ctx.widths), ctx.param_dtypes, want_weights, strict=True)]
            grad_biases: list[torch.Tensor | None] = [None] * count
            if ctx.has_bias and any(want_biases):
                sums = d_projected.sum(0, dtype=torch.promote_types(flat.dtype, torch.float32))
                grad_biases = [part.to(dtype) if want else None for part, dtype, want in
                               zip(sums.split(ctx.widths), ctx.param_dtypes, want_biases, strict=True)]
        return (grad_x, None, *grad_weights, *grad_biases)


class _Shared:
    """What the first projection's call computed for the calls of the others that follow on the same input."""

    def __init__(self) -> None:
        self.input: torch.Tensor | None = None
        self.pending: dict[int, torch.Tensor] = {}

    def take(self, role: int, x: torch.Tensor) -> torch.Tensor | None:
        if self.input is not x or role not in self.pending:
            # Another input (cross-attention, a copy): what the first call computed will not be asked for; let it
            # go rather than hold it (and the whole stacked output it views) until the group's next call.
            self.input, self.pending = None, {}
            return None
        out = self.pending.pop(role)
        if not self.pending:
            self.input = None
        return out


class _StackedProjection(nn.Linear):
    """One projection of a group after `install_stacked_projections`: role 0 computes the group, the others take
    their outputs. The group and the shared outputs are plain attributes, not submodules (no cycle in the module
    tree)."""

    _stacked_role: int
    _stacked_group: tuple[nn.Linear, ...]
    _stacked_shared: _Shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared, role = self._stacked_shared, self._stacked_role
        if role:
            out = shared.take(role, x)
            return F.linear(x, self.weight, self.bias) if out is None else out
        group = self._stacked_group
        # Each on its own if the group changed after installation (an adapter, a bias), or in a copy whose
        # attributes still name the original modules (torch.nn.DataParallel's replicas copy `__dict__`).
        if group[0] is not self or not _stackable(group):
            shared.input, shared.pending = None, {}
            return F.linear(x, self.weight, self.bias)
        first, *others = _StackedProjections.apply(x, len(group), *(p.weight for p in group),
                                                   *(p.bias for p in group))
        shared.input, shared.pending = x, dict(enumerate(others, start=1))
        return first


def _stackable(group: tuple[Any, ...]) -> bool:
    return (all(isinstance(p, nn.Linear) and type(p) in (nn.Linear, _StackedProjection) for p in group)
            and len({p.in_features for p in group}) == 1 and len({p.bias is None for p in group}) == 1
            and len({(p.weight.dtype, p.weight.device) for p in group}) == 1)


def install_stacked_projections(model: Any) -> dict[str, int]:
    """Stack every group of GROUPS whose projections are plain Linear layers of one input width (gate and up not in
    a tiled MLP), in a model of ORDERED_MODEL_TYPES (or a bare module, without a config); returns how many of each
    were stacked."""
    counts = dict.fromkeys(GROUPS, 0)
    config = text_config(model)
    if config is not None and getattr(config, "model_type", None) not in ORDERED_MODEL_TYPES:
        return counts
    for module in unwrap(model).modules():
        for label, names in GROUPS.items():
            group = tuple(getattr(module, name, None) for name in names)
            if not _stackable(group) or is_tiled(module):
                continue
            shared = _Shared()
            for role, projection in enumerate(group):
                projection.__class__ = _StackedProjection
                object.__setattr__(projection, "_stacked_role", role)
                object.__setattr__(projection, "_stacked_group", group)
                object.__setattr__(projection, "_stacked_shared", shared)
            counts[label] += 1
    return counts


def describe(counts: dict[str, int]) -> str:
    """What `install_stacked_projections` stacked, in words: "q, k, v in 24 layers; gate, up in 24 layers"."""
    return "; ".join(f"{label} in {count} layers" for label, count in counts.items() if count) or "off"


def remove_stacked_projections(model: Any) -> None:
    for module in unwrap(model).modules():
        if isinstance(module, _StackedProjection):
            linear: nn.Module = module  # typed as any Module: its class becomes nn.Linear again
            linear.__class__ = nn.Linear
            for name in ("_stacked_role", "_stacked_group", "_stacked_shared"):
                module.__dict__.pop(name, None)
