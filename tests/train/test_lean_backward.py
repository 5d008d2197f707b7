"""Gradient checkpointing's leaner backward: the tiled MLP (`ssogen.train.tiled_mlp`) and the output layer's
deferred weight gradient (`LogProbHead.defer_weight_grad`) give the gradients of the stock model."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP

from ssogen.testing.synthetic import synthetic_sso_rows, write_synthetic_sso
from ssogen.testing.tiny_model import tiny_random_model
from ssogen.train import output_layer, tiled_mlp, trainer
from ssogen.train.collator import SSOCollator
from ssogen.train.config import TrainConfig
from ssogen.train.data import encode_rows
from ssogen.train.dropout import disable_dropout
from ssogen.train.logprobs import sequence_logps
from ssogen.train.run import run_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_tiled_mlp_gives_the_stock_values_and_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    # Backward: 7 of the 30 tokens per tile, 5 tiles, one short; forward: 3 tiles.
    monkeypatch.setattr(tiled_mlp, "TILE_ELEMENTS", tiled_mlp._LIVE_IN_BACKWARD * 7 * 48)
    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=16, intermediate_size=48, hidden_act="silu")
    mlp = Qwen2MLP(config).double()
    x = torch.randn(3, 10, 16, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 10, 16, dtype=torch.float64)
    params = [x, *mlp.parameters()]
    stock = mlp(x)
    g_stock = torch.autograd.grad((stock * weights).sum(), params)
    tiled = tiled_mlp._TiledSwiGLU.apply(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
    g_tiled = torch.autograd.grad((tiled * weights).sum(), params)
    torch.testing.assert_close(tiled, stock, atol=1e-12, rtol=0)
    for a, b in zip(g_tiled, g_stock, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_tiled_mlp_under_bf16_autocast_matches_the_stock_module() -> None:
    """Same bf16 products, so the same output; the gradients differ by rounding only (the stacked gate/up GEMM
    sums both input-gradient products before rounding, the stock module rounds each), so each is held to its
    error against float64 arithmetic on the same bf16-rounded operands: no worse than the stock module's."""
    torch.manual_seed(1)
    config = Qwen2Config(hidden_size=32, intermediate_size=64, hidden_act="silu")
    mlp = Qwen2MLP(config)
    x = torch.randn(4, 9, 32, requires_grad=True)
    results = []
    for tiled in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = (tiled_mlp._TiledSwiGLU.apply(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
                   if tiled else mlp(x))
        grads = torch.autograd.grad(out.float().square().sum(), [x, *mlp.parameters()])
        results.append((out, grads))
    (stock, g_stock), (lean, g_lean) = results
    assert lean.dtype == stock.dtype == torch.bfloat16
    assert torch.equal(lean, stock)  # the same bf16 products
    exact = Qwen2MLP(config).double()
    exact.load_state_dict({name: value.bfloat16().double() for name, value in mlp.state_dict().items()})
    x64 = x.detach().bfloat16().double().requires_grad_()
    g_exact = torch.autograd.grad(exact(x64).square().sum(), [x64, *exact.parameters()])
    for a, b, reference in zip(g_lean, g_stock, g_exact, strict=True):
        assert a.dtype == b.dtype == torch.float32
        lean_error, stock_error = ((g.double() - reference).abs().max().item() for g in (a, b))
        assert lean_error <= 1.25 * stock_error, (lean_error, stock_error)
        assert stock_error < 0.02 * reference.abs().max().item()


def count_tiled_passes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the tiled MLP's passes over its tokens (each forward that computes, each backward) in "tiled"."""
    calls = {"tiled": 0}
    original = tiled_mlp._tiles

    def counted(tokens: int, intermediate: int, live: int) -> list[tuple[int, int]]:
        calls["tiled"] += 1
        return original(tokens, intermediate, live)

    monkeypatch.setattr(tiled_mlp, "_tiles", counted)
    return calls


def batch_of(model_dir: Path, rows: int = 2) -> dict[str, torch.Tensor]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoded, _, _ = encode_rows(synthetic_sso_rows(rows), tokenizer, max_length=256, max_prompt_length=192)
    return SSOCollator(pad_token_id=tokenizer.pad_token_id, packing=True)(
        list(encoded))


def gradients(model_dir: Path, batch: dict[str, torch.Tensor], lean: bool,
              reentrant: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
    model.train()
    head = None
    if lean:
        assert tiled_mlp.install_tiled_mlp(model) == model.config.num_hidden_layers
        assert output_layer.install_logprob_head(model, keep_probabilities=False)
        head = output_layer.output_layer(model)
        head.defer_weight_grad = True
    sums, _ = sequence_logps(model, batch)
    (sums * torch.linspace(-1, 1, sums.numel()).view_as(sums)).sum().backward()
    if head is not None:
        embedding = model.get_input_embeddings().weight.grad.clone()
        head.apply_deferred_weight_grad()
        assert not torch.equal(embedding, model.get_input_embeddings().weight.grad)  # the head's part came now
    return sums.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_lean_backward_under_checkpointing_gives_the_stock_gradients(tiny_model: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      reentrant: bool) -> None:
    """ssogen checkpoints non-reentrantly; a --config may ask for the reentrant kind, whose recompute also runs
    inside backward and uses the MLP's output for nothing but the graph."""
    monkeypatch.setattr(tiled_mlp, "TILE_ELEMENTS", tiled_mlp._LIVE_IN_BACKWARD * 64 * 128)  # 64 tokens per tile
    batch = batch_of(tiny_model)
    stock_sums, stock_grads = gradients(tiny_model, batch, lean=False, reentrant=reentrant)
    calls = count_tiled_passes(monkeypatch)
    lean_sums, lean_grads = gradients(tiny_model, batch, lean=True, reentrant=reentrant)
    # Forward and backward once per layer: the checkpoint's recompute did not run the MLP.
    assert calls["tiled"] == 2 * 2
    torch.testing.assert_close(lean_sums, stock_sums, atol=1e-5, rtol=1e-5)
    for name, grad in stock_grads.items():
        torch.testing.assert_close(lean_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("model_type", sorted(tiled_mlp.SAFE_MODEL_TYPES))
def test_every_listed_model_type_skips_the_mlp_in_the_recompute(model_type: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny random model of each listed type under non-reentrant checkpointing: the tiled MLP computes once forward
    and once backward per layer (the recompute skips it, which is right only where nothing saves the MLP's output)
    and the logits and gradients are the stock model's."""
    monkeypatch.setattr(tiled_mlp, "TILE_ELEMENTS", tiled_mlp._LIVE_IN_BACKWARD * 8 * 64)  # 8 of 32 tokens per tile
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
    results = []
    calls: dict[str, int] = {}
    for lean in (False, True):
        model = tiny_random_model(model_type)
        disable_dropout(model)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if lean:
            assert tiled_mlp.install_tiled_mlp(model) == 2
            calls = count_tiled_passes(monkeypatch)
        logits = model(input_ids=ids).logits
        (logits * torch.linspace(-1, 1, logits.size(-1))).sum().backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert calls["tiled"] == 2 * 2
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, atol=1e-5 * grad.abs().max().item(), rtol=0, msg=name)


def test_adapter_wrapped_projections_keep_the_stock_mlp(tiny_model: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    mlp = model.model.layers[0].mlp
    assert tiled_mlp.install_tiled_mlp(model) == 2
    assert type(mlp).__name__ == "TiledQwen2MLP" and isinstance(mlp, Qwen2MLP)
    assert tiled_mlp.install_tiled_mlp(model) == 2  # again: nothing changes
    mlp.up_proj = torch.nn.Sequential(mlp.up_proj)  # as an adapter wrapping the projection after installation
    x = torch.randn(1, 3, model.config.hidden_size)
    torch.testing.assert_close(mlp(x), Qwen2MLP.forward(mlp, x))
    tiled_mlp.remove_tiled_mlp(model)
    assert type(mlp) is Qwen2MLP


def test_a_copy_of_a_tiled_mlp_computes_with_its_own_weights() -> None:
    """As torch.nn.DataParallel's replicas: the tiled forward belongs to the class, not to one module."""
    import copy

    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM(Qwen2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, vocab_size=64))
    tiled_mlp.install_tiled_mlp(model)
    mlp = model.model.layers[0].mlp
    replica = copy.deepcopy(mlp)
    with torch.no_grad():
        replica.down_proj.weight.mul_(2)
    x = torch.randn(2, 3, 16)
    torch.testing.assert_close(replica(x), 2 * mlp(x))


def test_no_tokens_give_an_empty_output() -> None:
    mlp = Qwen2MLP(Qwen2Config(hidden_size=8, intermediate_size=16, hidden_act="silu"))
    x = torch.zeros(0, 8, requires_grad=True)
    out = tiled_mlp._TiledSwiGLU.apply(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
    assert out.shape == (0, 8)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == (0, 8)


def test_a_failed_backward_leaves_no_deferred_gradient_behind() -> None:
    """A step that fails in backward (out of memory, retried by auto_find_batch_size) must add nothing later."""
    torch.manual_seed(2)
    head = output_layer.LogProbHead(torch.nn.Linear(8, 20, bias=False), keep_probabilities=False)
    head.defer_weight_grad = True
    hidden = torch.randn(1, 5, 8, requires_grad=True)

    def out_of_memory(grad: torch.Tensor) -> torch.Tensor:
        assert len(head._deferred) == 1  # the head's backward ran first
        raise RuntimeError("out of memory")

    def step(fail: bool) -> None:
        head.positions, head.targets = torch.arange(5), torch.randint(0, 20, (5,))
        logps = head(hidden if not fail else hidden * 1)
        head.positions = head.targets = None
        if fail:  # raises in backward, after the head's backward deferred its weight gradient
            logps.grad_fn.next_functions[0][0].register_hook(lambda *grads: out_of_memory(grads[0]))
        logps.sum().backward()

    with pytest.raises(RuntimeError, match="out of memory"), head.weight_grad_after_backward():
        step(fail=True)
    assert head._deferred == [] and head.weight.grad is None
    with head.weight_grad_after_backward():
        step(fail=False)
    assert head._deferred == [] and head.weight.grad is not None


@pytest.mark.parametrize(("optimizer", "deferred"), [("adamw_torch", True), ("galore_adamw_layerwise", False),
                                                     ("lomo", False)])
def test_optimizers_that_step_inside_backward_get_the_whole_gradient(tiny_model: Path, optimizer: str,
                                                                     deferred: bool,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    monkeypatch.setattr(trainer, "DEFERRED_HEAD_DEVICES", frozenset({"cpu"}))
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert output_layer.install_logprob_head(model, keep_probabilities=False)
    owner = SimpleNamespace(
        model=model, is_deepspeed_enabled=False, is_fsdp_enabled=False, lean_backward_used="off",
        args=SimpleNamespace(gradient_checkpointing=True, optim=optimizer, world_size=1, device=torch.device("cpu")))
    head = trainer.SSOTrainer.lean_backward(owner)  # type: ignore[arg-type]
    assert (head is not None) is deferred
    assert owner.lean_backward_used.startswith("MLP backward in token tiles (2 layers)")
    assert ("output-layer weight gradient after the layers" in owner.lean_backward_used) is deferred


@pytest.mark.parametrize("defer_on_cpu", [False, True])
def test_checkpointed_training_uses_the_lean_backward_and_learns_the_same(tiny_model: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          defer_on_cpu: bool) -> None:
    if defer_on_cpu:  # by default only on CUDA
        monkeypatch.setattr(trainer, "DEFERRED_HEAD_DEVICES", frozenset({"cpu", "cuda"}))
    data = write_synthetic_sso(tmp_path / "data", count=8, seed=0)
    calls = count_tiled_passes(monkeypatch)
    calls["deferred"] = 0
    original_apply = output_layer.LogProbHead.apply_deferred_weight_grad

    def counted_apply(self: output_layer.LogProbHead) -> None:
        calls["deferred"] += bool(self._deferred)
        original_apply(self)

    monkeypatch.setattr(output_layer.LogProbHead, "apply_deferred_weight_grad", counted_apply)
    weights = []
    for checkpointing in (False, True):
        out = tmp_path / f"gc-{checkpointing}"
        outcome = run_training(TrainConfig(data=data, model=str(tiny_model), out=out, max_steps=3, lr=1e-3,
                                           batch_size=4, seed=5, save_steps=0, use_cpu=True,
                                           gradient_checkpointing=checkpointing), Console(file=io.StringIO()))
        assert outcome.extra["lean_backward"] == (
            "off" if not checkpointing else "MLP backward in token tiles (2 layers)"
            + ("; output-layer weight gradient after the layers" if defer_on_cpu else ""))
        # With checkpointing the tiled MLPs keep their gate and up; only q, k and v are stacked there.
        assert outcome.extra["stacked_projections"] == "q, k, v in 2 layers" + (
            "" if checkpointing else "; gate, up in 2 layers")
        weights.append(load_file(out / "model.safetensors"))
        if not checkpointing:
            assert calls == {"deferred": 0, "tiled": 0}
    # Three steps: the head's weight gradient deferred in each (where asked), both MLPs tiled in forward and
    # backward of each, and in the packing check and reference pass (forward only).
    assert calls["deferred"] == (3 if defer_on_cpu else 0)
    assert calls["tiled"] >= 3 * 2 * 2
    start = load_file(tiny_model / "model.safetensors")
    for name, tensor in weights[0].items():
        assert not torch.equal(tensor, start[name]) or "norm" in name, name
        torch.testing.assert_close(weights[1][name], tensor, atol=1e-6, rtol=1e-5, msg=name)


def test_deferred_gradient_of_a_bf16_head_equals_the_one_from_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights in bf16 (no autocast): the deferred sum is float32 per vocabulary slice, rounded once, as backward's."""
    monkeypatch.setattr(output_layer, "HEAD_CHUNK_ROWS", 8)  # 3 position chunks, vocabulary slices of 256 // 8
    monkeypatch.setattr(output_layer, "HEAD_CHUNK_ELEMENTS", 256)
    grads = []
    for deferred in (False, True):
        torch.manual_seed(3)
        linear = torch.nn.Linear(16, 80, bias=False, dtype=torch.bfloat16)
        head = output_layer.LogProbHead(linear, keep_probabilities=False)
        head.defer_weight_grad = deferred
        hidden = torch.randn(1, 20, 16, dtype=torch.bfloat16, requires_grad=True)
        head.positions, head.targets = torch.arange(20), torch.randint(0, 80, (20,))
        with head.weight_grad_after_backward():
            (head(hidden) * torch.linspace(-1, 1, 20)).sum().backward()
        assert linear.weight.grad is not None and linear.weight.grad.dtype == torch.bfloat16
        grads.append(linear.weight.grad)
    assert torch.equal(grads[1], grads[0])
