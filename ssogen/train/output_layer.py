"""The output layer as `LogProbHead`: target log-probs straight from hidden states, for `sequence_logps`.

Installed in place of the model's linear output layer before training. Given positions and target tokens it
returns each target's log-prob, computing `hidden @ W` chunk by chunk in the compute dtype (bf16 GEMMs under
autocast, float32 log-sum-exp and weight-gradient accumulation), so the (tokens × vocab) logits never exist in
float32 and never reach autograd. Backward uses the softmax kept from forward when that fits
(`STORED_PROBS_MAX_BYTES`: three GEMMs in all) or recomputes the logits in tiles (always with gradient
checkpointing: four GEMMs, less memory). With `defer_weight_grad` (gradient checkpointing, one process) the
recomputing backward gives only the hidden-state gradient, and `apply_deferred_weight_grad` adds the weight gradient
after the layers' backward, when their activations are gone: one more GEMM, and the (vocab × hidden) float32
gradient no longer adds to the peak. `--head-kernel liger` uses liger-kernel's fused linear cross-entropy instead.
Without targets it is the ordinary linear layer, so generation and saving are unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ssogen.response_logps import takes_logits_to_keep
from ssogen.train import mixed_precision
from ssogen.train.liger_head import liger_logps
from ssogen.train.mixed_precision import compute_dtype, float_accumulator
from ssogen.train.model_parts import text_config, unwrap


def accepts_logits_to_keep(model: Any) -> bool:
    return takes_logits_to_keep(unwrap(model))


# Target elements (positions × vocab) of one chunk of float32 logits inside LogProbHead.
HEAD_CHUNK_ELEMENTS = 1 << 25
# The same when the probabilities are kept for backward (no checkpointing): a quarter as many chunks to launch, in
# larger GEMMs. A chunk then sits beside the kept probabilities, near the step's peak at most (bench/train_memory.py,
# against 1 << 26: 130 operators fewer per 0.5B step and a peak 261 MiB (0.8%) higher, now at the forward's end;
# the same peak at 1.5B).
HEAD_CHUNK_ELEMENTS_KEPT = 1 << 27
# Positions per tile when backward recomputes the logits (tiles are this many positions × a vocabulary slice).
HEAD_CHUNK_ROWS = 4096
# LogProbHead keeps the (positions × vocab) probabilities from forward for backward, instead of recomputing the
# logits there, when they take at most this many bytes (in the compute dtype: bf16 under autocast).
STORED_PROBS_MAX_BYTES = 4 << 30
# Config fields through which a model rescales its logits after the output layer: LogProbHead's output would be
# rescaled too, so such models use their own logits instead.
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier",
                         "lm_head_multiplier")


class _HeadLogProb(torch.autograd.Function):
    """log softmax(h @ Wᵀ + b)[target] per row of h (N, H), chunk by chunk, GEMMs in the compute dtype.

    With `keep` the probabilities (N, V) are kept from forward (compute dtype), and backward turns them in place
    into the logits gradient: three GEMMs in all. Without it backward recomputes each chunk's logits (four), and
    with a `deferred` list (no bias) leaves the weight gradient out and appends what it needs to that list."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, keep: bool, deferred: list[tuple[torch.Tensor, ...]] | None) -> torch.Tensor:
        dtype = compute_dtype(hidden)
        keep = keep and hidden.size(0) * weight.size(0) * torch.finfo(dtype).bits // 8 <= STORED_PROBS_MAX_BYTES
        chunk = max(1, (HEAD_CHUNK_ELEMENTS_KEPT if keep else HEAD_CHUNK_ELEMENTS) // weight.size(0))
        with torch.autocast(hidden.device.type, enabled=False):
            h = hidden.to(dtype)
            w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
            lse = torch.empty(h.size(0), dtype=torch.float32, device=h.device)
            selected = torch.empty_like(lse)
            probs = torch.empty((h.size(0), w.size(0)), dtype=dtype, device=h.device) if keep else None
            for start in range(0, h.size(0), chunk):
                stop = start + chunk
                logits = F.linear(h[start:stop], w, b).float()
                # Results go straight into their slices (`out=`): no copy kernel each (a host-bound step pays for
                # every operator); the values are those of computing in float32 and then copying.
                torch.gather(logits, 1, targets[start:stop, None], out=selected[start:stop, None])
                # logsumexp in place: one float32 chunk alive, not two (logsumexp's own exp is a second one).
                top = logits.amax(dim=-1, keepdim=True)
                exps = logits.sub_(top).exp_()
                sums = exps.sum(dim=-1)
                if probs is not None:
                    torch.div(exps, sums[:, None], out=probs[start:stop])
                torch.add(sums.log_(), top.squeeze(1), out=lse[start:stop])
                del logits, exps  # before the next chunk's logits exist
        logps = selected - lse
        ctx.save_for_backward(hidden, weight, bias, targets, lse if probs is None else logps, probs)
        ctx.compute_dtype = dtype
        ctx.deferred = deferred if probs is None and bias is None else None
        return logps

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        hidden, weight, bias, targets, saved, probs = ctx.saved_tensors
        dtype = ctx.compute_dtype
        grads = grad_output.float()
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        want_bias = bias is not None and ctx.needs_input_grad[2]
        with torch.autocast(hidden.device.type, enabled=False):
            h = hidden.to(dtype)
            w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
            if probs is not None:
                grad_logits = _logits_grad_from_probs(probs, targets, saved, grads)
                grad_hidden = grad_logits @ w if want_hidden else None
                grad_weight = None
                if want_weight:
                    grad_weight = mixed_precision.float_product(grad_logits.t(), h)
                grad_bias = grad_logits.sum(0, dtype=torch.promote_types(dtype, torch.float32)) if want_bias else None
            else:
                if want_weight and ctx.deferred is not None:
                    ctx.deferred.append((h, targets, saved, grads))
                    want_weight = False
                grad_hidden, grad_weight, grad_bias = _recomputed_grads(
                    h, w, b, targets, saved, grads, want_hidden, want_weight, want_bias)
        return (
            None if grad_hidden is None else grad_hidden.to(hidden.dtype),
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            None,
            None,
            None,
        )


def _logits_grad_from_probs(probs: torch.Tensor, targets: torch.Tensor, logps: torch.Tensor,
                            grads: torch.Tensor) -> torch.Tensor:
    """g·(onehot(target) - p), written over `probs`. The target's 1 - p comes from the float32 log-prob
    (-expm1), not from the stored p, which in bf16 would lose it entirely for confident tokens."""
    probs.mul_(-grads[:, None])
    target_grad = grads * -torch.expm1(logps)
    return probs.scatter_(1, targets[:, None], target_grad[:, None].to(probs.dtype))


def _recomputed_grads(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, targets: torch.Tensor,
                      lse: torch.Tensor, grads: torch.Tensor, want_hidden: bool, want_weight: bool,
                      want_bias: bool) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients from recomputed logits, in tiles of (up to HEAD_CHUNK_ROWS positions × a vocabulary slice), so
    that each slice of the weight gradient is accumulated once per position chunk, not once per small chunk."""
    rows, cols = _tile_shape(h)
    columns, hits, scale = _target_columns(targets, grads, cols, w.size(0))
    grad_hidden = float_accumulator(h.shape, h) if want_hidden else None
    grad_weight = float_accumulator(w.shape, h) if want_weight else None
    grad_bias = float_accumulator((w.size(0),), h) if want_bias else None
    for start in range(0, h.size(0), rows):
        stop = start + rows
        chunk = h[start:stop]
        for index, first in enumerate(range(0, w.size(0), cols)):
            tile_w = w[first:first + cols]
            tile = _logits_grad_tile(chunk, tile_w, None if b is None else b[first:first + cols], lse[start:stop],
                                     scale[start:stop], columns[start:stop, index, None], hits[start:stop, index, None])
            if grad_hidden is not None:
                mixed_precision.accumulate_float(grad_hidden[start:stop], tile, tile_w)
            if grad_weight is not None:
                mixed_precision.accumulate_float(grad_weight[first:first + cols], tile.t(), chunk)
            if grad_bias is not None:
                grad_bias[first:first + cols] += tile.sum(0, dtype=grad_bias.dtype)
            del tile  # before the next tile exists, not when the name is bound again
    return grad_hidden, grad_weight, grad_bias


def _tile_shape(h: torch.Tensor) -> tuple[int, int]:
    rows = max(1, min(h.size(0), HEAD_CHUNK_ROWS))
    return rows, max(1, HEAD_CHUNK_ELEMENTS // rows)


def _target_columns(targets: torch.Tensor, grads: torch.Tensor, cols: int,
                    vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For tiles over vocabulary slices of `cols` columns: where each slice adds the one-hot term (N, slices: the
    target's column in its slice, an in-range one elsewhere), what it adds (N, slices: the incoming gradient in the
    target's slice, 0 elsewhere), and the negated gradient (N, 1). Made once per backward, so tiles take views (a
    host-bound GPU step pays for every operator of every tile)."""
    slice_of = torch.div(targets, cols, rounding_mode="floor")
    index = torch.arange(-(-vocab // cols), device=targets.device)
    last_column = (vocab - 1 - index * cols).clamp_(max=cols - 1)
    columns = torch.minimum((targets - slice_of * cols)[:, None], last_column)
    hits = grads[:, None] * (slice_of[:, None] == index)
    return columns, hits, -grads[:, None]


def _logits_grad_tile(chunk: torch.Tensor, tile_w: torch.Tensor, tile_b: torch.Tensor | None, lse: torch.Tensor,
                      scale: torch.Tensor, columns: torch.Tensor, hit: torch.Tensor) -> torch.Tensor:
    """The logits gradient of `chunk`'s positions over one vocabulary slice, recomputed: d logp[target] / d logits
    = onehot(target) - softmax(logits), times the incoming gradient (`scale` is its negation). The one-hot term is
    `hit` added at `columns` (`_target_columns`); rows whose target lies in another slice add 0, so no host sync."""
    tile = F.linear(chunk, tile_w, tile_b).float().sub_(lse[:, None]).exp_().mul_(scale)
    return tile.scatter_add_(1, columns, hit).to(chunk.dtype)


def _add_weight_grad(grad_weight: torch.Tensor, weight: torch.Tensor, h: torch.Tensor, targets: torch.Tensor,
                     lse: torch.Tensor, grads: torch.Tensor) -> None:
    """`grad_weight += ` the output layer's weight gradient, from recomputed logits. Vocabulary slices outer, so
    that each slice of the weight is cast to the compute dtype once (no full-size copy); a half-precision
    `grad_weight` gets each slice's sum in float32, rounded once, as backward's own gradient would be."""
    rows, cols = _tile_shape(h)
    columns, hits, scale = _target_columns(targets, grads, cols, weight.size(0))
    for index, first in enumerate(range(0, weight.size(0), cols)):
        tile_w = weight[first:first + cols].to(h.dtype)
        target = grad_weight[first:first + cols]
        total = target if target.dtype.itemsize >= 4 else float_accumulator(target.shape, target)
        for start in range(0, h.size(0), rows):
            stop = start + rows
            tile = _logits_grad_tile(h[start:stop], tile_w, None, lse[start:stop], scale[start:stop],
                                     columns[start:stop, index, None], hits[start:stop, index, None])
            mixed_precision.accumulate_float(total, tile.t(), h[start:stop])
            del tile
        if total is not target:
            target.add_(total)


class LogProbHead(nn.Module):
    """The model's linear output layer, able to return target log-probs instead of logits.

    Holds the very same weight (and bias) Parameters, so tied embeddings stay tied and the state dict keys are
    unchanged. With `positions` and `targets` (both (N,)) set, an input of hidden states (R, T, H) gives (N,)
    float32 log-probs: of each target given the output at its flat position in (R·T). `keep_probabilities`: keep
    the softmax from forward for backward (faster) rather than recompute the logits there (leaner)."""

    def __init__(self, linear: nn.Linear, keep_probabilities: bool = True, kernel: str = "torch") -> None:
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.keep_probabilities = keep_probabilities
        self.kernel = kernel
        self.positions: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None
        # Leave the weight gradient out of backward (recompute path only) until `apply_deferred_weight_grad`.
        self.defer_weight_grad = False
        self._deferred: list[tuple[torch.Tensor, ...]] = []
        object.__setattr__(self, "_original", linear)  # not a submodule: no second copy in the state dict

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.targets is None or self.positions is None:
            return F.linear(hidden, self.weight, self.bias)
        selected = hidden.reshape(-1, hidden.size(-1)).index_select(0, self.positions)
        if self.kernel == "liger" and selected.is_cuda:
            return liger_logps(selected, self.weight, self.bias, self.targets)
        keep = self.keep_probabilities and torch.is_grad_enabled() and (selected.requires_grad
                                                                        or self.weight.requires_grad)
        deferred = self._deferred if self.defer_weight_grad else None
        return _HeadLogProb.apply(selected, self.weight, self.bias, self.targets, keep, deferred)

    @contextlib.contextmanager
    def weight_grad_after_backward(self) -> Iterator[None]:
        """Around a forward and backward: afterwards the deferred weight gradient is added; if they fail, what
        backward deferred is dropped (a retried step, as with auto_find_batch_size, must not add it)."""
        try:
            yield
        except BaseException:
            self._deferred.clear()
            raise
        self.apply_deferred_weight_grad()

    def apply_deferred_weight_grad(self) -> None:
        """Add the weight gradient that backward left out (`defer_weight_grad`) to `weight.grad`; call it after
        every backward. Single process only: a DDP/FSDP reducer would have synchronised `.grad` without it."""
        pending, self._deferred = self._deferred, []
        with torch.no_grad(), torch.autocast(self.weight.device.type, enabled=False):
            for h, targets, lse, grads in pending:
                if self.weight.grad is None:
                    self.weight.grad = torch.zeros_like(self.weight)
                _add_weight_grad(self.weight.grad, self.weight, h, targets, lse, grads)

    def original(self) -> nn.Linear:
        linear: nn.Linear = self._original  # type: ignore[assignment]
        linear.weight, linear.bias = self.weight, self.bias  # in case something re-tied our Parameters
        return linear


def install_logprob_head(model: Any, keep_probabilities: bool = True, kernel: str = "torch") -> bool:
    """Replace the output layer with `LogProbHead` when that is exact for this model; True if installed."""
    inner = unwrap(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if type(head) is not nn.Linear or not accepts_logits_to_keep(inner) or not hasattr(inner, "set_output_embeddings"):
        return False
    if any(getattr(text_config(inner), name, None) is not None for name in _LOGIT_POSTPROCESSING):
        return False
    inner.set_output_embeddings(LogProbHead(head, keep_probabilities, kernel))
    return True


def remove_logprob_head(model: Any) -> None:
    """Put the original linear output layer back (before saving, so the saved model is the stock class)."""
    inner = unwrap(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if isinstance(head, LogProbHead):
        inner.set_output_embeddings(head.original())


def output_layer(model: Any) -> Any:
    inner = unwrap(model)
    return inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
