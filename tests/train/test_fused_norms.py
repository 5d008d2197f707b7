"""RMSNorm layers through torch's rms_norm (`ssogen.train.fused_norms`): on the CPU the very values and gradients of
transformers' modules, for every input and weight dtype."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

from ssogen.testing.tiny_model import tiny_random_model
from ssogen.train import fused_norms
from ssogen.train.dropout import disable_dropout
from tests.train.exact_changes import (
    assert_bit_equal,
    assert_same_logits_and_gradients,
    assert_training_unchanged_by,
    packed_logps_and_gradients,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A tiny model of each type whose RMSNorm class is in STANDARD_NORMS, OFFSET_NORMS or WEIGHT_FIRST_NORMS.
MODEL_TYPES = ["apertus", "arcee", "ernie4_5", "exaone4", "flex_olmo", "gemma", "gemma2", "gemma3_text", "glm",
               "glm4", "granite", "granitemoe", "hunyuan_v1_dense", "llama", "ministral", "mistral", "mixtral",
               "olmo2", "olmo3", "olmoe", "phi3", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "seed_oss", "smollm3"]


def norm_and_input(dtype: torch.dtype = torch.float32) -> tuple[Qwen2RMSNorm, torch.Tensor]:
    torch.manual_seed(0)
    norm = Qwen2RMSNorm(48, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(48))
    return norm.to(dtype), (3 * torch.randn(2, 7, 48)).to(dtype).requires_grad_()


def values_and_gradients(norm: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    out = norm(x)
    grads = torch.autograd.grad((out.float() * torch.linspace(-2, 2, out.numel()).view_as(out)).sum(),
                                [x, norm.weight])
    return [out.detach(), *grads]


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_norm_gives_the_modules_very_values_and_gradients(autocast: bool) -> None:
    """float32 input and weight (what ssogen trains, also under bf16 autocast): bit-equal on the CPU."""
    stock, x = norm_and_input()
    fused = copy.deepcopy(stock)
    assert fused_norms.install_fused_norms(fused) == 1
    assert isinstance(fused, Qwen2RMSNorm) and type(fused) is not Qwen2RMSNorm
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        expected, got = values_and_gradients(stock, x), values_and_gradients(fused, x)
    assert got[0].dtype == torch.float32
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def test_fused_norm_keeps_the_modules_rounding_for_every_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a half-precision input or weight the module rounds the normalized input to the input's dtype before the
    weight multiplies it: then rms_norm only normalizes (in float32) and the weight follows, bit-equal again; with
    float32 both, the weight goes into rms_norm."""
    calls: list[tuple[torch.dtype, bool]] = []
    real = fused_norms.rms_norm

    def counted(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
        calls.append((x.dtype, weight is not None))
        return real(x, weight, eps)

    monkeypatch.setattr(fused_norms, "rms_norm", counted)
    for norm_dtype, input_dtype, with_weight in [(torch.float32, torch.float32, True),
                                                 (torch.float32, torch.bfloat16, False),
                                                 (torch.bfloat16, torch.bfloat16, False),
                                                 (torch.bfloat16, torch.float32, False),
                                                 (torch.float64, torch.float64, False)]:
        stock, x = norm_and_input(norm_dtype)
        x = x.detach().to(input_dtype).requires_grad_()
        fused = copy.deepcopy(stock)
        fused_norms.install_fused_norms(fused)
        calls.clear()
        expected, got = values_and_gradients(stock, x), values_and_gradients(fused, x)
        assert calls == [(torch.float32, with_weight)], (norm_dtype, input_dtype)
        assert got[0].dtype == expected[0].dtype
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b), (norm_dtype, input_dtype)


def test_installed_norms_copy_and_come_off() -> None:
    config = Qwen2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=64)
    model = AutoModelForCausalLM.from_config(config)
    keys = list(model.state_dict())
    assert fused_norms.install_fused_norms(model) == 5  # two per layer and the final one
    assert fused_norms.install_fused_norms(model) == 5  # again: the same five, nothing wrapped twice
    assert list(model.state_dict()) == keys
    ids = torch.randint(0, 64, (1, 9))
    logits = model(input_ids=ids).logits
    other = copy.deepcopy(model)
    assert type(other.model.norm) is type(model.model.norm)
    assert torch.equal(other(input_ids=ids).logits, logits)
    fused_norms.remove_fused_norms(model)
    assert all(type(m) is Qwen2RMSNorm for m in model.modules() if "RMSNorm" in type(m).__name__)
    assert torch.equal(model(input_ids=ids).logits, logits)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_listed_model_type_gives_its_own_logits_and_gradients(model_type: str) -> None:
    """A tiny random model of each type: every RMSNorm installed, the same logits and gradients, bit for bit, in
    float32 and under bf16 autocast (where the q and k norms of Qwen3, Gemma 3 and OLMo see bf16)."""
    plain = tiny_random_model(model_type)
    disable_dropout(plain)  # as training does (Seed-OSS's config has dropout)
    fused = copy.deepcopy(plain)
    norms = sum("RMSNorm" in type(m).__name__ for m in plain.modules())
    assert norms >= 5
    assert fused_norms.install_fused_norms(fused) == norms
    assert_same_logits_and_gradients(plain, fused)


def test_every_listed_norm_class_is_one_the_model_test_runs() -> None:
    """No class is listed on the strength of reading its code alone: each is in one of MODEL_TYPES' models."""
    run = {type(m).__name__ for model_type in MODEL_TYPES for m in tiny_random_model(model_type, layers=1).modules()}
    listed = fused_norms.STANDARD_NORMS | fused_norms.OFFSET_NORMS | fused_norms.WEIGHT_FIRST_NORMS
    assert listed - run == set()


@pytest.mark.parametrize("family", ["gemma", "olmo2"])
def test_float32_norms_fuse_for_every_input_and_weight_dtype(family: str) -> None:
    """Gemma's norm computes in float32 whatever the input and casts the result back; OLMo 2's too, with the weight
    applied before the cast: so do the fused ones, for every pairing of input and weight dtypes."""
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.olmo2.modeling_olmo2 import Olmo2RMSNorm

    torch.manual_seed(0)
    stock = GemmaRMSNorm(48, eps=1e-6) if family == "gemma" else Olmo2RMSNorm(48, eps=1e-6)
    with torch.no_grad():
        stock.weight.copy_(0.1 * torch.randn(48))
    for weight_dtype in (torch.float32, torch.bfloat16):
        for input_dtype in (torch.float32, torch.bfloat16):
            norm = copy.deepcopy(stock).to(weight_dtype)
            fused = copy.deepcopy(norm)
            assert fused_norms.install_fused_norms(fused) == 1
            x = (3 * torch.randn(2, 7, 48)).to(input_dtype).requires_grad_()
            expected, got = values_and_gradients(norm, x), values_and_gradients(fused, x)
            assert got[0].dtype == expected[0].dtype
            for a, b in zip(got, expected, strict=True):
                assert torch.equal(a, b), (weight_dtype, input_dtype)


def test_other_norm_classes_keep_their_own() -> None:
    """Classes are known by name: one whose arithmetic was not read (here a subclass under another name, as a
    model's remote code might define) keeps its own forward."""

    class CustomRMSNorm(Qwen2RMSNorm):
        """Qwen2's arithmetic under a name fused_norms does not list."""

    norm = CustomRMSNorm(48)
    assert fused_norms.install_fused_norms(norm) == 0 and type(norm) is CustomRMSNorm


@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_logprobs_and_gradients_are_bit_equal(tiny_model: Path, checkpointing: bool) -> None:
    def install(model: Any) -> None:
        assert fused_norms.install_fused_norms(model) == 2 * model.config.num_hidden_layers + 1

    assert_bit_equal(packed_logps_and_gradients(tiny_model, checkpointing=checkpointing, install=install),
                     packed_logps_and_gradients(tiny_model, checkpointing=checkpointing, install=lambda model: None))


def test_training_with_and_without_fused_norms_gives_the_same_weights(tiny_model: Path, tmp_path: Path) -> None:
    assert_training_unchanged_by("fused_norms", "5 RMSNorm layers", tiny_model, tmp_path)
