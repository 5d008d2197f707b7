"""q, k, v and gate, up as one GEMM per group (`ssogen.train.stacked_projections`): the values and gradients of
separate projections."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForCausalLM

from ssogen.testing.synthetic import write_synthetic_sso
from ssogen.testing.tiny_model import tiny_random_model
from ssogen.train import stacked_projections
from ssogen.train.config import TrainConfig
from ssogen.train.dropout import disable_dropout
from ssogen.train.logprobs import sequence_logps
from ssogen.train.output import CONFIG_FILE
from ssogen.train.run import run_training
from tests.train.test_lean_backward import batch_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def projections(bias: bool, dtype: torch.dtype = torch.float32) -> list[nn.Linear]:
    """q, k and v of a grouped-query layer: hidden 16, 4 heads of 4, 2 key/value heads."""
    torch.manual_seed(2)
    return [nn.Linear(16, width, bias=bias, dtype=dtype) for width in (16, 8, 8)]


@pytest.mark.parametrize("bias", [False, True])
def test_stacked_projections_give_the_three_values_and_gradients(bias: bool) -> None:
    group = projections(bias, torch.float64)
    x = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    params = [x, *(p for linear in group for p in linear.parameters())]
    stacked = stacked_projections._StackedProjections.apply(x, 3, *(p.weight for p in group),
                                                           *(p.bias for p in group))
    separate = [linear(x) for linear in group]
    for a, b in zip(stacked, separate, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    # k's output unused: its weight gradient is zero, as with the separate projections.
    g_stacked = torch.autograd.grad((stacked[0] ** 2).sum() + (stacked[2] * 3).sum(), params)
    g_separate = torch.autograd.grad((separate[0] ** 2).sum() + (separate[2] * 3).sum(), params, allow_unused=True)
    for a, b in zip(g_stacked, g_separate, strict=True):
        torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b, atol=1e-12, rtol=0)


def test_stacked_projections_under_bf16_autocast_are_no_less_accurate() -> None:
    """bf16 GEMMs as autocast runs them; the input gradient sums its three products before rounding, where the
    separate projections round each, so both are held to their error against float64 on the same bf16 operands."""
    group = projections(bias=True)
    x = torch.randn(4, 9, 16, requires_grad=True)
    params = [x, *(p for linear in group for p in linear.parameters())]
    results = []
    for stacked in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs = (stacked_projections._StackedProjections.apply(x, 3, *(p.weight for p in group),
                                                                  *(p.bias for p in group))
                    if stacked else [linear(x) for linear in group])
        assert all(out.dtype == torch.bfloat16 for out in outs)
        loss = sum((out.float() * torch.linspace(-1, 1, out.size(-1))).square().sum() for out in outs)
        results.append((outs, torch.autograd.grad(loss, params)))
    x64 = x.detach().bfloat16().double().requires_grad_()
    exact = [nn.Linear(16, linear.out_features, dtype=torch.float64) for linear in group]
    for e, linear in zip(exact, group, strict=True):
        e.load_state_dict({k: v.bfloat16().double() for k, v in linear.state_dict().items()})
    outs64 = [e(x64) for e in exact]
    g_exact = torch.autograd.grad(sum((o * torch.linspace(-1, 1, o.size(-1), dtype=torch.float64)).square().sum()
                                      for o in outs64), [x64, *(p for e in exact for p in e.parameters())])
    (stock_outs, g_stock), (lean_outs, g_lean) = results
    for a, b, reference in [*zip(lean_outs, stock_outs, outs64, strict=True),
                            *zip(g_lean, g_stock, g_exact, strict=True)]:
        lean_error, stock_error = ((t.double() - reference).abs().max().item() for t in (a, b))
        assert lean_error <= 1.25 * stock_error + 1e-6 * reference.abs().max().item(), (lean_error, stock_error)
        assert stock_error < 0.02 * reference.abs().max().item()


@pytest.mark.parametrize("checkpointing", [None, "non-reentrant", "reentrant"])
def test_installed_model_gives_the_stock_logprobs_and_gradients(tiny_model: Path, checkpointing: str | None) -> None:
    batch = batch_of(tiny_model)
    results = []
    for stacked in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_model)
        if checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": checkpointing == "reentrant"})
        model.train()
        if stacked:
            layers = model.config.num_hidden_layers
            assert stacked_projections.install_stacked_projections(model) == {"q, k, v": layers, "gate, up": layers}
            assert stacked_projections.install_stacked_projections(model) == {"q, k, v": layers, "gate, up": layers}
        sums, _ = sequence_logps(model, batch)
        (sums * torch.linspace(-1, 1, sums.numel()).view_as(sums)).sum().backward()
        results.append((sums.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        attention, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
        if stacked:
            # k, v and up took what the first call of their group computed for them.
            assert not attention.k_proj._stacked_shared.pending and not mlp.up_proj._stacked_shared.pending
            stacked_projections.remove_stacked_projections(model)
            assert type(attention.q_proj) is nn.Linear and "_stacked_shared" not in attention.q_proj.__dict__
            assert type(mlp.gate_proj) is nn.Linear
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_a_call_on_another_input_computes_its_own_projection() -> None:
    attention = nn.Module()
    attention.q_proj, attention.k_proj, attention.v_proj = projections(bias=True)
    assert stacked_projections.install_stacked_projections(attention)["q, k, v"] == 1
    x, y = torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    q = attention.q_proj(x)
    k_other = attention.k_proj(y)  # not the input q's call saw: computed from y
    assert not attention.q_proj._stacked_shared.pending  # and what q's call kept for k and v is let go
    v = attention.v_proj(x)
    torch.testing.assert_close(q, F.linear(x, attention.q_proj.weight, attention.q_proj.bias))
    torch.testing.assert_close(k_other, F.linear(y, attention.k_proj.weight, attention.k_proj.bias))
    torch.testing.assert_close(v, F.linear(x, attention.v_proj.weight, attention.v_proj.bias))
    torch.testing.assert_close(attention.v_proj(x), v)  # a second call: computed again, the same


def test_a_replica_computes_with_its_own_weights() -> None:
    """As torch.nn.DataParallel's replicas, which copy each module's `__dict__`: the group attributes still name the
    original modules, so the replica must not compute with their weights."""
    attention = nn.Module()
    attention.q_proj, attention.k_proj, attention.v_proj = projections(bias=True)
    stacked_projections.install_stacked_projections(attention)
    replica = attention._replicate_for_data_parallel()
    for name in stacked_projections.GROUPS["q, k, v"]:  # as replicate() does: parameters as tensors (other values)
        original = getattr(attention, name)
        copy = original._replicate_for_data_parallel()
        copy.weight, copy.bias = 2 * original.weight.detach(), original.bias.detach() + 1
        setattr(replica, name, copy)
    x = torch.randn(5, 16)
    for name in stacked_projections.GROUPS["q, k, v"]:
        projection = getattr(replica, name)
        torch.testing.assert_close(projection(x), F.linear(x, projection.weight, projection.bias))


def test_projections_that_are_not_plain_linear_layers_keep_their_own_calls() -> None:
    class Scaled(nn.Linear):  # as an adapter or a quantised layer would be: not nn.Linear itself
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    attention = nn.Module()
    attention.q_proj, attention.k_proj, attention.v_proj = projections(bias=False)
    wrapped = Scaled(16, 8, bias=False)
    wrapped.load_state_dict(attention.k_proj.state_dict())
    attention.k_proj = wrapped
    assert stacked_projections.install_stacked_projections(attention)["q, k, v"] == 0
    attention.k_proj = projections(bias=False)[1]
    assert stacked_projections.install_stacked_projections(attention)["q, k, v"] == 1
    attention.k_proj = wrapped  # after installation: q's call computes q alone, k its own way
    x = torch.randn(5, 16)
    torch.testing.assert_close(attention.q_proj(x), F.linear(x, attention.q_proj.weight))
    torch.testing.assert_close(attention.k_proj(x), 2 * F.linear(x, wrapped.weight))


@pytest.mark.parametrize("model_type", sorted(stacked_projections.ORDERED_MODEL_TYPES))
def test_every_listed_model_type_gives_its_own_logits_and_gradients(model_type: str) -> None:
    """A tiny random model of each listed type, stacked against a copy left alone: every group installed where the
    model has it, the same logits, gradients to float32 rounding."""
    plain = tiny_random_model(model_type)
    disable_dropout(plain)  # as training does (Seed-OSS's and Granite MoE's configs have dropout)
    stacked = copy.deepcopy(plain)
    counts = stacked_projections.install_stacked_projections(stacked)
    # One stacked gate/up per MLP with separate gate and up Linear layers: each dense layer's, and Qwen2 MoE's shared
    # expert (experts held as one parameter have none).
    gated = sum(isinstance(getattr(m, "gate_proj", None), torch.nn.Linear)
                and isinstance(getattr(m, "up_proj", None), torch.nn.Linear) for m in plain.modules())
    assert counts == {"q, k, v": 2, "gate, up": gated}
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
    results = []
    for model in (plain, stacked):
        logits = model(input_ids=ids).logits
        (logits * torch.linspace(-1, 1, logits.size(-1))).sum().backward()
        results.append((logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-6, rtol=1e-6)
    for name, grad in results[0][1].items():
        scale = grad.abs().max().item()
        torch.testing.assert_close(results[1][1][name], grad, atol=1e-5 * scale, rtol=0, msg=name)


def test_models_not_known_to_call_the_projections_in_order_keep_them_separate() -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=64)
    assert stacked_projections.install_stacked_projections(Qwen2ForCausalLM(config)) == {"q, k, v": 1, "gate, up": 1}
    config.model_type = "someothermodel"  # same modules, a forward this module has not read
    assert stacked_projections.install_stacked_projections(Qwen2ForCausalLM(config)) == {"q, k, v": 0, "gate, up": 0}


def test_training_with_and_without_stacked_projections_gives_the_same_weights(tiny_model: Path,
                                                                             tmp_path: Path) -> None:
    data = write_synthetic_sso(tmp_path / "data", 8)
    weights = []
    for stacked in (True, False):
        out = tmp_path / f"stacked-{stacked}"
        outcome = run_training(TrainConfig(data=data, model=str(tiny_model), out=out, max_steps=3, lr=1e-3,
                                           batch_size=4, seed=5, save_steps=0, use_cpu=True,
                                           stacked_projections=stacked),
                               Console(file=io.StringIO()))
        assert outcome.extra["stacked_projections"] == ("q, k, v in 2 layers; gate, up in 2 layers" if stacked
                                                        else "off")
        written = json.loads((out / CONFIG_FILE).read_text())
        assert written["stacked_projections"] == outcome.extra["stacked_projections"]
        assert written["lean_backward"] == "off"
        weights.append(load_file(out / "model.safetensors"))
    start = load_file(tiny_model / "model.safetensors")
    assert set(weights[0]) == set(start)  # the saved model has the stock parameter names
    for name, tensor in weights[1].items():
        assert not torch.equal(tensor, start[name]) or "norm" in name, name
        torch.testing.assert_close(weights[0][name], tensor, atol=1e-6, rtol=1e-5, msg=name)
