"""Checks shared by the tests of ssogen's bit-equal training changes (`fused_norms`, `fused_rotary`): a packed
batch's log-probs and gradients with and without a change, and a short training run with and without its option."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from ssogen.testing.synthetic import write_synthetic_sso
from ssogen.train.config import TrainConfig
from ssogen.train.logprobs import sequence_logps
from ssogen.train.output import CONFIG_FILE
from ssogen.train.run import run_training
from tests.train.test_lean_backward import batch_of


def packed_logps_and_gradients(model_dir: Path, *, checkpointing: bool, install: Callable[[Any], None],
                               autocast: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The sequence log-probs of a packed batch and every parameter's gradient of a weighted sum of them, after
    `install(model)`."""
    batch = batch_of(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    install(model)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        sums, _ = sequence_logps(model, batch)
    (sums * torch.linspace(-1, 1, sums.numel()).view_as(sums)).sum().backward()
    return sums.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_bit_equal(got: tuple[torch.Tensor, dict[str, torch.Tensor]],
                     expected: tuple[torch.Tensor, dict[str, torch.Tensor]]) -> None:
    assert torch.equal(got[0], expected[0])
    assert got[1].keys() == expected[1].keys()
    for name, grad in expected[1].items():
        assert torch.equal(got[1][name], grad), name


def assert_same_logits_and_gradients(plain: Any, changed: Any) -> None:
    """Two copies of a tiny model (vocabulary 128), one changed: the same logits and gradients, bit for bit, in
    float32 and under bf16 autocast."""
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
    for autocast in (False, True):
        results = []
        for model in (plain, changed):
            model.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                logits = model(input_ids=ids).logits
            (logits.float() * torch.linspace(-1, 1, logits.size(-1))).sum().backward()
            results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                              if p.grad is not None}))
        assert_bit_equal(results[1], results[0])


def assert_training_unchanged_by(option: str, described: str, model_dir: Path, tmp_path: Path) -> None:
    """Three steps with `option` on and off give the same weights, bit for bit; the run records `described` (off:
    "off") in its outcome and its ssogen_train_config.json."""
    data = write_synthetic_sso(tmp_path / "data", 8)
    weights = []
    for on in (True, False):
        out = tmp_path / f"{option}-{on}"
        outcome = run_training(TrainConfig(data=data, model=str(model_dir), out=out, max_steps=3, lr=1e-3,
                                           batch_size=4, seed=5, save_steps=0, use_cpu=True, **{option: on}),
                               Console(file=io.StringIO()))
        assert outcome.extra[option] == (described if on else "off")
        assert json.loads((out / CONFIG_FILE).read_text())[option] == outcome.extra[option]
        weights.append(load_file(out / "model.safetensors"))
    start = load_file(model_dir / "model.safetensors")
    assert set(weights[0]) == set(weights[1]) == set(start)
    for name, tensor in weights[1].items():
        assert not torch.equal(tensor, start[name]), name  # trained, norms included
        assert torch.equal(weights[0][name], tensor), name
