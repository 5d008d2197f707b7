"""Rotary position embeddings with fewer operators each way, in the model's own arithmetic.

transformers' `apply_rotary_pos_emb` of Llama, Qwen, Mistral, Gemma, OLMo and other models (`ROTARY_MODEL_TYPES`)
computes `x * cos + rotate_half(x) * sin` for q and for k, where `rotate_half(x)` is `cat(-x2, x1)` over the two
halves of the head dimension. Under autocast over float32 weights (bf16 q and k, float32 tables) that is five
operators per tensor forward and, through autograd, nine backward: two products, their casts back to bf16, a
negation, two `slice_backward` (a zero fill and a copy each on a GPU) and two sums. OLMo 2's and 3's cast the result
back to q's dtype: one more each way. On a GPU, where a small model's step is bound by the host queueing kernels,
that is 28 operators per layer and step.

`_RotaryProduct` computes it as `x * cos + swap(x) * signed_sin`, with `swap(x) = cat(x2, x1)` and `signed_sin =
cat(-sin1, sin2)`, made once per forward (its layers share one `sin`): the sign moves from x to sin, which is exact.
Backward is `g * cos + swap(g * signed_sin)`, each product rounded to x's dtype inside its own kernel (`out=`), where
autograd rounds it with a cast: four operators each way. Values, gradients, dtypes and memory layouts are the stock
function's, bit for bit (tests/train/test_fused_rotary.py, every listed model type, float32 and bf16 autocast).

Where the attention is SDPA or eager and autocast is on, q leaves the rotation already rounded to autocast's dtype
(in the sum's own kernel): both attentions take q in that dtype (SDPA and eager's product cast it under autocast;
eager casts its float32 softmax to q's dtype and the next product casts it again), so this drops one cast each way
and changes no value. k stays as it is: with grouped-query attention its copies repeated across query heads sum
their gradients, in float32 as the stock code does. Other attentions (flash-attention 2 casts q, k and v only when
q is float32) get the stock dtypes.

Installed per attention module: its class's own `forward` is given a copy of its module's globals in which
`apply_rotary_pos_emb` is the fused one, so the module and other models of the same type keep theirs.
"""

from __future__ import annotations

import types
import weakref
from typing import Any

import torch
from torch import nn

from ssogen.train.model_parts import give_forward, take_back, text_config, unwrap

# Model types whose modeling module defines the standard `apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)`
# and `rotate_half` (compared with Llama's in transformers' code) and whose attention calls it on the whole head
# dimension; tests/train/test_fused_rotary.py checks each on a tiny model. Others (Cohere's and GLM's interleaved
# halves, partial rotary in Phi-3) keep the stock function.
PLAIN_ROTARY_TYPES = frozenset({
    "llama", "mistral", "ministral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
    "gemma3_text", "granite", "granitemoe", "smollm3", "starcoder2", "olmoe", "exaone4", "hunyuan_v1_dense",
    "apertus", "arcee", "seed_oss"})
# OLMo 2's and 3's: the same, then cast back to q's and k's own dtypes.
CAST_BACK_ROTARY_TYPES = frozenset({"olmo2", "olmo3", "flex_olmo"})
ROTARY_MODEL_TYPES = PLAIN_ROTARY_TYPES | CAST_BACK_ROTARY_TYPES
# Types whose attention passes the rotated q straight to the attention function (HunYuan normalises it first).
Q_TO_ATTENTION_TYPES = PLAIN_ROTARY_TYPES - {"hunyuan_v1_dense"}
# Attention implementations that compute with q in autocast's dtype whatever dtype it arrives in.
Q_CASTING_ATTENTION = frozenset({"sdpa", "eager"})
FUNCTION_NAME = "apply_rotary_pos_emb"


def swap_halves(x: torch.Tensor) -> torch.Tensor:
    """cat(x2, x1) over the last dimension: one operator (torch.roll copies a non-contiguous input first on CUDA)."""
    half = x.size(-1) // 2
    return torch.cat((x[..., half:], x[..., :half]), dim=-1)


class _RotaryProduct(torch.autograd.Function):
    """x * cos + swap(x) * signed_sin, which is x * cos + rotate_half(x) * sin; with `out_dtype`, rounded to it (in
    the sum's own kernel)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor,
                out_dtype: torch.dtype | None) -> torch.Tensor:
        ctx.save_for_backward(cos, signed_sin)
        ctx.x_dtype = x.dtype
        kept, rotated = x * cos, swap_halves(x) * signed_sin
        if out_dtype is not None and kept.dtype != out_dtype:
            return torch.add(kept, rotated, out=torch.empty_like(kept, dtype=out_dtype))
        return torch.add(kept, rotated)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        cos, signed_sin = ctx.saved_tensors
        # Each product rounded to x's dtype (`out`) before the sum, as autograd's casts round them; contiguous, as
        # autograd's sum is (a q or k norm before the rotation sums its weight's gradient in that layout's order).
        grad_x = torch.mul(grad, cos, out=grad.new_empty(grad.shape, dtype=ctx.x_dtype))
        rotated = torch.mul(grad, signed_sin, out=grad.new_empty(grad.shape, dtype=ctx.x_dtype))
        return grad_x.add_(swap_halves(rotated)), None, None, None


class _SignedSines:
    """signed_sin for each `sin` tensor alive (every layer of one forward passes the same one; Gemma 3 has two, local
    and global), dropped with it."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor]] = {}

    def get(self, sin: torch.Tensor) -> torch.Tensor:
        key = id(sin)
        entry = self.entries.get(key)
        if entry is not None and entry[0]() is sin:
            return entry[1]
        half = sin.size(-1) // 2
        with torch.no_grad():
            signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)

        def forget(ref: weakref.ref[torch.Tensor]) -> None:
            if self.entries.get(key, (None,))[0] is ref:
                del self.entries[key]

        self.entries[key] = (weakref.ref(sin, forget), signed)
        return signed


_SIGNED_SINES = _SignedSines()


class FusedApplyRotary:
    """The fused `apply_rotary_pos_emb`, falling back to the model's own where its arguments are unusual. With
    `cast_back` both results are rounded to their input's dtype; with `q_in_autocast_dtype` q's is rounded to
    autocast's dtype where autocast is on."""

    def __init__(self, stock: Any, cast_back: bool = False, q_in_autocast_dtype: bool = False) -> None:
        self.stock, self.cast_back, self.q_in_autocast_dtype = stock, cast_back, q_in_autocast_dtype

    def __call__(self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 unsqueeze_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        width = cos.size(-1)
        if (cos.requires_grad or sin.requires_grad or width % 2 or q.size(-1) != width or k.size(-1) != width
                or sin.shape != cos.shape):
            return self.stock(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)
        signed = _SIGNED_SINES.get(sin).unsqueeze(unsqueeze_dim)
        cos = cos.unsqueeze(unsqueeze_dim)
        q_dtype, k_dtype = (q.dtype, k.dtype) if self.cast_back else (None, None)
        if self.q_in_autocast_dtype and torch.is_autocast_enabled(q.device.type):
            q_dtype = torch.get_autocast_dtype(q.device.type)
        return _RotaryProduct.apply(q, cos, signed, q_dtype), _RotaryProduct.apply(k, cos, signed, k_dtype)


class _FusedRotary:
    """Mixed in front of an attention class; the subclass for each class carries the class's `forward` rebound to
    the fused function, in two versions: q rounded to autocast's dtype (for attentions that cast it to that dtype
    anyway) or not."""

    stock_class: type[nn.Module]
    _forward_q_rounded: Any
    _forward_q_as_is: Any

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        implementation = getattr(getattr(self, "config", None), "_attn_implementation", None)
        if implementation in Q_CASTING_ATTENTION:
            return self._forward_q_rounded(*args, **kwargs)
        return self._forward_q_as_is(*args, **kwargs)


# (attention class, whether q may be rounded) -> (the module function its mixin replaces, the mixin; None: not
# installable).
_MIXINS: dict[tuple[type, bool], tuple[Any, type[_FusedRotary] | None]] = {}


def _rebound(forward: types.FunctionType, function: FusedApplyRotary) -> types.FunctionType:
    """`forward` reading `function` as its module's `apply_rotary_pos_emb`, from a copy of the module's globals (the
    module and other models keep the stock function)."""
    namespace = {**forward.__globals__, FUNCTION_NAME: function}
    rebound = types.FunctionType(forward.__code__, namespace, forward.__name__, forward.__defaults__)
    rebound.__kwdefaults__ = forward.__kwdefaults__
    rebound.__qualname__, rebound.__doc__ = forward.__qualname__, forward.__doc__
    return rebound


def _mixin_for(cls: type, cast_back: bool, q_rounded: bool) -> type[_FusedRotary] | None:
    """A mixin whose `forward` is `cls.forward` reading the fused function, or None where `cls.forward` does not
    call its module's own `apply_rotary_pos_emb` (another class, a closure, or a function replaced since import,
    as liger-kernel's patches do: then it is left to that one). `q_rounded`: whether q may leave in autocast's
    dtype where the attention is one of `Q_CASTING_ATTENTION`."""
    forward = cls.__dict__.get("forward")
    if not (isinstance(forward, types.FunctionType) and forward.__closure__ is None
            and FUNCTION_NAME in forward.__code__.co_names):
        return None
    stock = forward.__globals__.get(FUNCTION_NAME)
    cached = _MIXINS.get((cls, q_rounded))
    if cached is None or cached[0] is not stock:
        mixin = None
        if isinstance(stock, types.FunctionType) and stock.__module__ == cls.__module__:
            as_is = _rebound(forward, FusedApplyRotary(stock, cast_back))
            rounded = _rebound(forward, FusedApplyRotary(stock, cast_back, q_in_autocast_dtype=True)) \
                if q_rounded else as_is
            mixin = type(f"_FusedRotary{cls.__name__}", (_FusedRotary,),
                         {"_forward_q_rounded": rounded, "_forward_q_as_is": as_is})
        cached = _MIXINS[cls, q_rounded] = (stock, mixin)
    return cached[1]


def install_fused_rotary(model: Any) -> int:
    """Give every attention module of a `ROTARY_MODEL_TYPES` model the fused rotary embedding; returns how many
    (installed before included)."""
    model_type = getattr(text_config(model), "model_type", None)
    if model_type not in ROTARY_MODEL_TYPES:
        return 0
    count = 0
    for module in unwrap(model).modules():
        if isinstance(module, _FusedRotary):
            count += 1
        elif (mixin := _mixin_for(type(module), model_type in CAST_BACK_ROTARY_TYPES,
                                  model_type in Q_TO_ATTENTION_TYPES)) is not None:
            give_forward(module, mixin, "FusedRotary")
            count += 1
    return count


def remove_fused_rotary(model: Any) -> None:
    take_back(model, _FusedRotary)
