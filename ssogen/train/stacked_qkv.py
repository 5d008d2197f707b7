"""An attention layer's q, k and v projections as one GEMM on their stacked weights.

Llama, Mistral and Qwen attention layers call `q_proj`, `k_proj` and `v_proj` one after another on the same hidden
states. Once installed, `q_proj`'s call computes all three with `_StackedProjections` and keeps k's and v's outputs
for the calls of `k_proj` and `v_proj` that follow with the very same input tensor; any other call computes as the
stock Linear. Per layer and forward that is one GEMM instead of three and one cast of the input instead of three
(autocast casts it for each projection, and each cast is kept for backward); backward gives the input gradient
and the three weight gradients with one GEMM each instead of three and three. On a GPU, where a small model's
step is bound by the host queueing kernels, that is 22 fewer operators per layer and step (30 with gradient
checkpointing, whose forward runs twice; bench/train_memory.py counts them).

Dtypes are the stock ones under autocast (bf16 GEMMs). The input gradient sums its three products inside one GEMM
and the weight gradients are summed in float32, so results agree with the separate projections to rounding and
are no less accurate (tests compare both against float64). Not installed under DeepSpeed or FSDP, whose sharded
stages gather each module's weights in that module's own forward hook (see `SSOTrainer.__init__`); in
torch.nn.DataParallel's replicas each projection computes on its own.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssogen.train import mixed_precision
from ssogen.train.mixed_precision import compute_dtype, float_accumulator
from ssogen.train.model_parts import unwrap

_NAMES = ("q_proj", "k_proj", "v_proj")


class _StackedProjections(torch.autograd.Function):
    """(x @ [Wq; Wk; Wv]ᵀ + [bq; bk; bv]) split into q, k and v; weights and biases as three tensors each."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, *params: torch.Tensor | None) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        weights, biases = params[:3], params[3:]
        dtype = compute_dtype(x)
        ctx.input_dtype, ctx.param_dtypes = x.dtype, [w.dtype for w in weights]  # type: ignore[union-attr]
        ctx.widths, ctx.leading = [w.size(0) for w in weights], x.shape[:-1]  # type: ignore[union-attr]
        with torch.autocast(x.device.type, enabled=False):
            flat = x.reshape(-1, x.size(-1)).to(dtype)
            stacked = torch.cat(weights, out=flat.new_empty((sum(ctx.widths), flat.size(1))))  # type: ignore[arg-type]
            bias = None if biases[0] is None else torch.cat(biases, out=flat.new_empty(sum(ctx.widths)))  # type: ignore[arg-type]
            ctx.has_bias = bias is not None
            ctx.save_for_backward(flat, stacked)
            projected = F.linear(flat, stacked, bias)
        return tuple(part.view(*ctx.leading, part.size(-1)) for part in projected.split(ctx.widths, dim=1))

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        flat, stacked = ctx.saved_tensors
        want_x, want_weights, want_biases = ctx.needs_input_grad[0], ctx.needs_input_grad[1:4], ctx.needs_input_grad[4:]
        with torch.autocast(flat.device.type, enabled=False):
            # The three output gradients side by side, as the stacked weight's GEMMs want them (zeros for an
            # output that got none, as autograd would give).
            d_projected = torch.cat([flat.new_zeros((flat.size(0), width)) if grad is None
                                     else grad.reshape(-1, width).to(flat.dtype)
                                     for grad, width in zip(grads, ctx.widths, strict=True)], dim=1)
            grad_x = None
            if want_x:
                grad_x = float_accumulator(flat.shape, flat)
                mixed_precision.accumulate_float(grad_x, d_projected, stacked)
                grad_x = grad_x.to(ctx.input_dtype).view(*ctx.leading, flat.size(1))
            grad_weights: list[torch.Tensor | None] = [None] * 3
            if any(want_weights):
                total = float_accumulator(stacked.shape, flat)
                mixed_precision.accumulate_float(total, d_projected.t(), flat)
                grad_weights = [part.to(dtype) if want else None for part, dtype, want in
                                zip(total.split(ctx.widths), ctx.param_dtypes, want_weights, strict=True)]
            grad_biases: list[torch.Tensor | None] = [None] * 3
            if ctx.has_bias and any(want_biases):
                sums = d_projected.sum(0, dtype=torch.promote_types(flat.dtype, torch.float32))
                grad_biases = [part.to(dtype) if want else None for part, dtype, want in
                               zip(sums.split(ctx.widths), ctx.param_dtypes, want_biases, strict=True)]
        return (grad_x, *grad_weights, *grad_biases)


class _Shared:
    """What `q_proj`'s call computed for the calls of `k_proj` and `v_proj` that follow on the same input."""

    def __init__(self) -> None:
        self.input: torch.Tensor | None = None
        self.pending: dict[int, torch.Tensor] = {}

    def take(self, role: int, x: torch.Tensor) -> torch.Tensor | None:
        if self.input is not x or role not in self.pending:
            # Another input (cross-attention, a copy): what q's call computed will not be asked for; let it go
            # rather than hold it (and the whole stacked output it views) until the layer's next call.
            self.input, self.pending = None, {}
            return None
        out = self.pending.pop(role)
        if not self.pending:
            self.input = None
        return out


class _StackedProjection(nn.Linear):
    """`q_proj` (role 0), `k_proj` (1) or `v_proj` (2) of one attention layer after `install_stacked_qkv`; the
    group and the shared outputs are plain attributes, not submodules (no cycle in the module tree)."""

    _stacked_role: int
    _stacked_group: tuple[nn.Linear, nn.Linear, nn.Linear]
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
        q, k, v = _StackedProjections.apply(x, *(p.weight for p in group), *(p.bias for p in group))
        shared.input, shared.pending = x, {1: k, 2: v}
        return q


def _stackable(group: tuple[Any, ...]) -> bool:
    return (all(isinstance(p, nn.Linear) and type(p) in (nn.Linear, _StackedProjection) for p in group)
            and len({p.in_features for p in group}) == 1 and len({p.bias is None for p in group}) == 1
            and len({(p.weight.dtype, p.weight.device) for p in group}) == 1)


def install_stacked_qkv(model: Any) -> int:
    """Give every attention layer whose q, k and v projections are plain Linear layers of one input width the
    stacked GEMM; returns how many layers have it."""
    count = 0
    for module in unwrap(model).modules():
        group = tuple(getattr(module, name, None) for name in _NAMES)
        if not _stackable(group):
            continue
        shared = _Shared()
        for role, projection in enumerate(group):
            projection.__class__ = _StackedProjection  # type: ignore[union-attr]
            object.__setattr__(projection, "_stacked_role", role)
            object.__setattr__(projection, "_stacked_group", group)
            object.__setattr__(projection, "_stacked_shared", shared)
        count += 1
    return count


def remove_stacked_qkv(model: Any) -> None:
    for module in unwrap(model).modules():
        if isinstance(module, _StackedProjection):
            module.__class__ = nn.Linear
            for name in ("_stacked_role", "_stacked_group", "_stacked_shared"):
                module.__dict__.pop(name, None)
