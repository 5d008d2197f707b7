"""Rotary position embeddings in fewer operators (`ssogen.train.fused_rotary`): the very values and gradients of
transformers' `apply_rotary_pos_emb`, for every listed model type, q rounded to autocast's dtype where the attention
casts it to that dtype anyway."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers.models.olmo2 import modeling_olmo2
from transformers.models.qwen2 import modeling_qwen2

from ssogen.testing.tiny_model import tiny_random_model
from ssogen.train import fused_norms, fused_rotary, stacked_projections
from ssogen.train.dropout import disable_dropout
from tests.train.exact_changes import (
    assert_bit_equal,
    assert_same_logits_and_gradients,
    assert_training_unchanged_by,
    packed_logps_and_gradients,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STOCK = modeling_qwen2.apply_rotary_pos_emb
FUSED = fused_rotary.FusedApplyRotary(STOCK)
# OLMo 2's casts the results back to q's and k's dtypes.
OLMO_STOCK = modeling_olmo2.apply_rotary_pos_emb
OLMO_FUSED = fused_rotary.FusedApplyRotary(OLMO_STOCK, cast_back=True)


def rotary_inputs(x_dtype: torch.dtype, cos_dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """A stacked projection's output (batch 2, 5 tokens, q of 4 heads, k and v of 2, head size 8) and the
    position tables, as a layer sees them."""
    torch.manual_seed(3)
    projected = (3 * torch.randn(2, 5, 8 * 8)).to(x_dtype).requires_grad_()
    angles = torch.randn(2, 5, 4) * 4
    cos = torch.cat((angles.cos(), angles.cos()), -1).to(cos_dtype)
    sin = torch.cat((angles.sin(), angles.sin()), -1).to(cos_dtype)
    return projected, cos, sin


def rotated_and_gradient(apply: Any, projected: torch.Tensor, cos: torch.Tensor,
                         sin: torch.Tensor) -> list[torch.Tensor]:
    q, k, _ = projected.view(2, 5, 8, 8).transpose(1, 2).split([4, 2, 2], dim=1)
    q_embed, k_embed = apply(q, k, cos, sin)
    weights = torch.linspace(-2, 2, q_embed.numel()).view_as(q_embed)
    loss = (q_embed.float() * weights).sum() + (k_embed.float() ** 2).sum()
    (grad,) = torch.autograd.grad(loss, [projected])
    return [q_embed.detach(), k_embed.detach(), grad]


@pytest.mark.parametrize("family", ["qwen2", "olmo2"])
@pytest.mark.parametrize(("x_dtype", "cos_dtype"), [(torch.float32, torch.float32), (torch.bfloat16, torch.float32),
                                                     (torch.bfloat16, torch.bfloat16), (torch.float64, torch.float64)])
def test_fused_rotary_gives_the_stock_values_and_gradients(family: str, x_dtype: torch.dtype,
                                                           cos_dtype: torch.dtype) -> None:
    """bf16 q and k with float32 tables is what autocast over float32 weights gives: the stock output is float32
    (OLMo 2's: cast back to bf16) and autograd rounds each of its two gradient products to bf16 before summing them;
    so does the fused one. The same dtypes and memory layouts too."""
    stock, fused = (STOCK, FUSED) if family == "qwen2" else (OLMO_STOCK, OLMO_FUSED)
    projected, cos, sin = rotary_inputs(x_dtype, cos_dtype)
    expected = rotated_and_gradient(stock, projected, cos, sin)
    got = rotated_and_gradient(fused, projected, cos, sin)
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype and a.stride() == b.stride()
        assert torch.equal(a, b), (family, x_dtype, cos_dtype)


class Operators(TorchDispatchMode):
    """Counts the operators dispatched (views and metadata left out, as bench/train_memory.py counts)."""

    VIEWS = frozenset({"alias", "as_strided", "detach", "expand", "slice", "split", "split_with_sizes", "t",
                       "transpose", "unsqueeze", "view", "_unsafe_view", "select", "empty", "empty_like",
                       "empty_strided", "new_empty"})

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += func.__name__.split(".")[0] not in self.VIEWS
        return func(*args, **(kwargs or {}))


def test_fused_rotary_dispatches_four_operators_each_way_per_tensor() -> None:
    """The stock function: five per tensor forward and nine backward under autocast's dtypes (two of them
    `slice_backward`, a fill and a copy each on a GPU), OLMo 2's one more each way (the cast back); the fused one
    four and four."""
    counts = {}
    for name, apply in (("stock", STOCK), ("fused", FUSED), ("olmo stock", OLMO_STOCK), ("olmo fused", OLMO_FUSED)):
        _, cos, sin = rotary_inputs(torch.bfloat16, torch.float32)
        q = torch.randn(2, 4, 5, 8, dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(2, 2, 5, 8, dtype=torch.bfloat16, requires_grad=True)
        fused_rotary._SIGNED_SINES.get(sin)  # made once per forward, shared by the layers
        with Operators() as forward:
            q_embed, k_embed = apply(q, k, cos, sin)
        grads = [torch.ones_like(q_embed), torch.ones_like(k_embed)]
        with Operators() as backward:
            torch.autograd.backward([q_embed, k_embed], grads)
        counts[name] = (forward.count, backward.count)
    assert counts == {"stock": (10, 18), "fused": (8, 8), "olmo stock": (12, 20), "olmo fused": (8, 8)}


def test_signed_sine_is_made_once_per_table_and_dropped_with_it() -> None:
    sines = fused_rotary._SignedSines()
    sin = torch.randn(2, 5, 8)
    signed = sines.get(sin)
    assert torch.equal(signed, torch.cat((-sin[..., :4], sin[..., 4:]), -1))
    assert sines.get(sin) is signed
    other = sin.clone()
    assert sines.get(other) is not signed and len(sines.entries) == 2
    del sin, signed
    assert len(sines.entries) == 1


@pytest.mark.parametrize("model_type", sorted(fused_rotary.ROTARY_MODEL_TYPES))
def test_every_listed_model_type_gives_its_own_logits_and_gradients(model_type: str) -> None:
    """A tiny random model of each type (grouped-query attention): the same logits and gradients, bit for bit, in
    float32 and under bf16 autocast (Qwen3's, Gemma 3's, OLMo 2's, EXAONE 4's and Apertus' q and k norms
    included)."""
    plain = tiny_random_model(model_type)
    disable_dropout(plain)  # as training does
    fused = copy.deepcopy(plain)
    assert fused_rotary.install_fused_rotary(fused) == plain.config.num_hidden_layers
    assert_same_logits_and_gradients(plain, fused)


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "gemma2", "gemma3_text", "mixtral"])
def test_eager_attention_gives_the_same_logits_and_gradients(model_type: str) -> None:
    """Eager attention takes q rounded to autocast's dtype too: its float32 softmax is cast to q's dtype (bf16 now)
    and the next product casts it to bf16 anyway; Gemma 2 with its logit soft-capping."""
    plain = tiny_random_model(model_type)
    plain.config._attn_implementation = "eager"
    disable_dropout(plain)
    fused = copy.deepcopy(plain)
    assert fused_rotary.install_fused_rotary(fused) == plain.config.num_hidden_layers
    assert_same_logits_and_gradients(plain, fused)


def attention_query_dtypes(model: Any, monkeypatch: pytest.MonkeyPatch, autocast: bool = True) -> set[torch.dtype]:
    """The dtypes of q as the model's attention receives it (SDPA's own call, whichever implementation leads
    there), over one forward."""
    seen: set[torch.dtype] = set()
    stock_sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(query: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        seen.add(query.dtype)
        return stock_sdpa(query, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(input_ids=torch.arange(9)[None])
    return seen


def sdpa_under_another_name(module: Any, *args: Any, **kwargs: Any) -> Any:
    """SDPA registered as an attention implementation ssogen does not know (as flash-attention 2 would be)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, *args, **kwargs)


def test_q_leaves_in_autocast_dtype_only_for_attentions_that_cast_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under SDPA q arrives in bf16 (the fused function rounded it); under an unknown implementation, without
    autocast, and in HunYuan (whose q norm follows the rotation) it keeps the stock dtype; and the rounding saves
    one cast per layer each way."""
    from transformers import AttentionInterface

    AttentionInterface.register("ssogen_test_sdpa", sdpa_under_another_name)
    model = tiny_random_model("qwen2")
    disable_dropout(model)
    assert fused_rotary.install_fused_rotary(model) == 2
    assert attention_query_dtypes(model, monkeypatch) == {torch.bfloat16}
    assert attention_query_dtypes(model, monkeypatch, autocast=False) == {torch.float32}
    counts = {}
    for implementation in ("sdpa", "ssogen_test_sdpa"):
        model.config._attn_implementation = implementation
        model.zero_grad(set_to_none=True)  # no accumulation into the last run's gradients
        with torch.autocast("cpu", dtype=torch.bfloat16), Operators() as forward:
            logits = model(input_ids=torch.arange(9)[None]).logits
        with Operators() as backward:
            logits.float().sum().backward()
        counts[implementation] = (forward.count, backward.count)
    assert attention_query_dtypes(model, monkeypatch) == {torch.float32}  # still the unknown implementation
    forward_as_is, backward_as_is = counts["ssogen_test_sdpa"]
    assert counts["sdpa"] == (forward_as_is - 2, backward_as_is - 2)  # 2 layers, one cast each
    hunyuan = tiny_random_model("hunyuan_v1_dense")
    assert fused_rotary.install_fused_rotary(hunyuan) == 2
    assert attention_query_dtypes(hunyuan, monkeypatch) == {torch.float32}


@pytest.mark.parametrize("model_type", ["cohere", "glm", "phi3"])
def test_other_rotary_functions_keep_their_own(model_type: str) -> None:
    """Interleaved halves (Cohere, GLM), partial rotation (Phi-3): not installed."""
    assert fused_rotary.install_fused_rotary(tiny_random_model(model_type, layers=1)) == 0


def test_the_module_and_other_models_keep_the_stock_function(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_random_model("qwen2")
    other = tiny_random_model("qwen2")
    ids = torch.randint(0, 128, (1, 9))
    logits = model(input_ids=ids).logits
    assert fused_rotary.install_fused_rotary(model) == 2
    assert fused_rotary.install_fused_rotary(model) == 2  # again: the same two, nothing wrapped twice
    attention = model.model.layers[0].self_attn
    assert isinstance(attention, modeling_qwen2.Qwen2Attention) and type(attention) is not modeling_qwen2.Qwen2Attention
    assert modeling_qwen2.apply_rotary_pos_emb is STOCK
    assert type(other.model.layers[0].self_attn) is modeling_qwen2.Qwen2Attention
    copied = copy.deepcopy(model)
    assert type(copied.model.layers[0].self_attn) is type(attention)
    assert torch.equal(copied(input_ids=ids).logits, logits)
    fused_rotary.remove_fused_rotary(model)
    assert type(attention) is modeling_qwen2.Qwen2Attention
    # A function replaced in the module (as liger-kernel's patches do) is that one's to run.
    monkeypatch.setattr(modeling_qwen2, "apply_rotary_pos_emb", lambda *args, **kwargs: STOCK(*args, **kwargs))
    assert fused_rotary.install_fused_rotary(other) == 0
    monkeypatch.undo()
    assert fused_rotary.install_fused_rotary(other) == 2


@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_logprobs_and_gradients_are_bit_equal(tiny_model: Path, checkpointing: bool) -> None:
    """Under bf16 autocast, with the stacked projections (q and k are views of one product) and the fused norms, as
    SSOTrainer runs them."""

    def install(rotary: bool) -> Callable[[Any], None]:
        def on(model: Any) -> None:
            stacked_projections.install_stacked_projections(model)
            fused_norms.install_fused_norms(model)
            if rotary:
                assert fused_rotary.install_fused_rotary(model) == model.config.num_hidden_layers
        return on

    assert_bit_equal(*(packed_logps_and_gradients(tiny_model, checkpointing=checkpointing, install=install(rotary),
                                                  autocast=True) for rotary in (True, False)))


def test_training_with_and_without_fused_rotary_gives_the_same_weights(tiny_model: Path, tmp_path: Path) -> None:
    assert_training_unchanged_by("fused_rotary", "2 attention layers", tiny_model, tmp_path)
