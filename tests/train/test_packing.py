"""Prefix-shared packed batches: the same log-probs, loss, gradients and reference table as left-padded ones."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.testing.synthetic import synthetic_sso_rows, write_synthetic_sso
from ssogen.train import packing
from ssogen.train.collator import SSOCollator, collator_multiples
from ssogen.train.config import TrainConfig
from ssogen.train.data import encode_rows
from ssogen.train.logprobs import sequence_logps
from ssogen.train.loss import LossSettings, sso_loss
from ssogen.train.output_layer import install_logprob_head
from ssogen.train.packing import attention_mask_4d, fill_lines, pack_examples, packing_unsupported
from ssogen.train.run import run_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def uneven_examples(model_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """Three rows whose responses run from 1 token (an empty text plus eos) to ~60."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = synthetic_sso_rows(3, response_repeat=3)
    rows[0]["response_good"] = " ".join([rows[0]["response_good"]] * 2)
    rows[1]["response_bad"] = "x"
    rows[2]["response_raw"] = ""
    encoded, _, _ = encode_rows(rows, tokenizer, max_length=512, max_prompt_length=256)
    examples = list(encoded)
    assert min(e["response_lengths"][4] for e in examples) == 1 and max(max(e["response_lengths"])
                                                                         for e in examples) > 60
    return examples, tokenizer.pad_token_id


def load(model_dir: Path, fused: bool, attention: str = "sdpa") -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attention)
    assert install_logprob_head(model) if fused else True
    return model


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("system_role", [True, False])
def test_packed_batch_gives_the_same_sequence_logprobs(tiny_model: Path, tiny_model_no_system: Path,
                                                       system_role: bool, fused: bool, attention: str) -> None:
    model_dir = tiny_model if system_role else tiny_model_no_system
    examples, pad = uneven_examples(model_dir)
    model = load(model_dir, fused, attention)
    packed_batch = SSOCollator(pad, packing=True)(examples)
    plain_batch = SSOCollator(pad)(examples)
    with torch.no_grad():
        packed, lengths = sequence_logps(model, packed_batch)
        plain, plain_lengths = sequence_logps(model, plain_batch)
    assert torch.equal(lengths, plain_lengths)
    assert (packed - plain).abs().max().item() < 1e-4
    assert packed_batch["input_ids"].numel() < 0.7 * plain_batch["input_ids"].numel()  # contexts once, no padding


def test_line_width_buckets_change_no_logprob(tiny_model: Path) -> None:
    # On CUDA packed lines are widened to a multiple of 128 (shape buckets); the extra padding must be inert.
    assert collator_multiples("cuda") == {"pad_to_multiple_of": 16, "line_multiple": 128}
    assert collator_multiples("cpu") == {"pad_to_multiple_of": None, "line_multiple": None}
    examples, pad = uneven_examples(tiny_model)
    model = load(tiny_model, fused=True)
    tight = SSOCollator(pad, packing=True)(examples)
    bucketed = SSOCollator(pad, packing=True, pad_to_multiple_of=16, line_multiple=128)(examples)
    assert bucketed["input_ids"].size(1) % 128 == 0 and bucketed["input_ids"].size(1) > tight["input_ids"].size(1)
    with torch.no_grad():
        assert (sequence_logps(model, bucketed)[0] - sequence_logps(model, tight)[0]).abs().max().item() < 1e-5


@pytest.mark.parametrize("autocast", [False, True])
def test_additive_mask_in_the_attention_dtype_equals_the_boolean_one(tiny_model: Path, autocast: bool) -> None:
    # The trainer hands SDPA one additive mask in the dtype attention runs in (no per-layer conversion); SDPA's
    # own conversion of a boolean mask gives the same numbers, so log-probs and gradients are bit-identical.
    examples, pad = uneven_examples(tiny_model)
    batch = SSOCollator(pad, packing=True)(examples)
    dtype = torch.bfloat16 if autocast else torch.float32
    results = []
    for mask_dtype in (None, dtype):
        model = load(tiny_model, fused=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logps, _ = sequence_logps(model, batch, mask_dtype)
        logps.sum().backward()
        results.append((logps.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1], strict=True))
    mask = attention_mask_4d(batch["group_ids"], batch["span_ids"], "sdpa", dtype)
    assert mask.dtype == dtype and set(mask.unique().tolist()) == {0.0, float("-inf")}


def test_packed_batch_gives_the_same_loss_and_gradients(tiny_model_no_system: Path) -> None:
    examples, pad = uneven_examples(tiny_model_no_system)
    results = []
    for packed in (True, False):
        model = load(tiny_model_no_system, fused=True)
        policy, lengths = sequence_logps(model, SSOCollator(pad, packing=packed)(examples))
        reference = policy.detach().double() + torch.linspace(-2, 2, policy.numel()).view_as(policy).double()
        loss = sso_loss(policy, reference, lengths, LossSettings()).loss
        loss.backward()
        results.append((loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for name, grad in results[1][1].items():
        torch.testing.assert_close(results[0][1][name], grad, atol=1e-4, rtol=1e-4, msg=name)


def test_layout_shares_each_context_and_restarts_positions() -> None:
    # One row: contexts [1 2 3] (x), [4 5] (x+), [6] (x-), responses of 2, 1, 3, 1, 2 and 2 tokens.
    contexts = [[1, 2, 3], [1, 2, 3], [4, 5], [4, 5], [6], [6]]
    responses = [[10, 11], [20], [30, 31, 32], [40], [50, 51], [60, 61]]
    example = {"row_index": 0, "sequences": [c + r for c, r in zip(contexts, responses, strict=True)],
               "response_lengths": [len(r) for r in responses]}
    batch = pack_examples([example], pad_token_id=0)
    # Three groups of 6, 6 and 5 tokens on lines 6 wide: each group alone on its line.
    assert batch["input_ids"].tolist() == [[1, 2, 3, 10, 11, 20], [4, 5, 30, 31, 32, 40], [6, 50, 51, 60, 61, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3], [0, 1, 2, 3, 4, 2], [0, 1, 2, 1, 2, 0]]
    mask = attention_mask_4d(batch["group_ids"], batch["span_ids"], "sdpa")[:, 0]
    assert mask[0, 5].tolist() == [True, True, True, False, False, True]  # y- sees x and itself, not y+
    assert mask[2, 4].tolist() == [True, False, False, True, True, False]  # y+ under x- skips yo
    assert mask[2, 5].tolist() == [False] * 5 + [True]  # padding sees only itself
    flat = batch["input_ids"].reshape(-1)
    # Predicting positions: the context's last token for each response's first token.
    predictors = batch["target_index"].tolist()
    assert flat[batch["target_index"][batch["target_ids"] == 20]].tolist() == [3]
    assert flat[batch["target_index"][batch["target_ids"] == 60]].tolist() == [6]
    assert sorted(batch["target_ids"].tolist()) == sorted(t for r in responses for t in r)
    assert len(set(batch["target_cell"].tolist())) == len(predictors)


def test_lines_are_filled_first_fit_longest_first() -> None:
    assert fill_lines([5, 3, 3, 2], 6) == [[0], [1, 2], [3]]
    assert fill_lines([2, 2, 2], 6) == [[0, 1, 2]]


def test_models_that_cannot_pack_are_named(tiny_model: Path) -> None:
    model = load(tiny_model, fused=False)
    assert packing_unsupported(model, 2048) is None
    model.config._attn_implementation = "flash_attention_2"
    assert "flash_attention_2" in (packing_unsupported(model, 2048) or "")
    model.config._attn_implementation = "sdpa"
    model.config.layer_types = ["sliding_attention"] * len(model.config.layer_types)
    model.config.sliding_window = 512
    assert "sliding-window" in (packing_unsupported(model, 2048) or "")
    assert packing_unsupported(model, 512) is None  # no sequence longer than the window: exact


@pytest.fixture(scope="module")
def sso_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_sso(tmp_path_factory.mktemp("data") / "gen", count=8, seed=0, response_repeat=2)


def one_step(data: Path, model: Path, out: Path, **overrides: Any) -> tuple[Any, str]:
    console = Console(file=io.StringIO(), width=200)
    outcome = run_training(TrainConfig(data=data, model=str(model), out=out, max_steps=1, batch_size=4, lr=1e-3,
                                       warmup_ratio=0.0, save_steps=0, logging_steps=1, max_length=256,
                                       max_prompt_length=192, **overrides), console)
    return outcome, console.file.getvalue()  # type: ignore[attr-defined]


def reference_table(outcome: Any) -> torch.Tensor:
    table = pq.read_table(outcome.out / outcome.reference_file).drop(["id"])
    return torch.tensor([column.to_pylist() for column in table.columns], dtype=torch.float64)


def test_training_gives_the_same_reference_and_first_loss_either_way(sso_data: Path, tiny_model: Path,
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    dtypes: list[torch.dtype | None] = []
    real_mask = packing.attention_mask_4d

    def recording_mask(*args: Any) -> torch.Tensor:
        dtypes.append(args[3] if len(args) > 3 else None)
        return real_mask(*args)

    monkeypatch.setattr(packing, "attention_mask_4d", recording_mask)
    packed, _ = one_step(sso_data, tiny_model, tmp_path / "packed")
    # The trainer's passes give SDPA its mask in the dtype attention runs in (float32 weights, no autocast here).
    assert torch.float32 in dtypes
    plain, _ = one_step(sso_data, tiny_model, tmp_path / "plain", packing=False)
    assert packed.extra["batches"].startswith("packed") and plain.extra["batches"] == "left-padded (--no-packing)"
    torch.testing.assert_close(reference_table(packed), reference_table(plain), atol=1e-4, rtol=0)
    first = [next(e for e in outcome.log_history if "loss" in e) for outcome in (packed, plain)]
    assert first[0]["loss"] == pytest.approx(first[1]["loss"], rel=1e-5)


def test_training_falls_back_when_packed_logprobs_disagree(sso_data: Path, tiny_model: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def leaky_mask(group_ids: torch.Tensor, span_ids: torch.Tensor, implementation: str,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
        width = group_ids.size(1)  # plain causal over the whole line: responses see each other and other rows
        return torch.ones(group_ids.size(0), 1, width, width, dtype=torch.bool).tril()

    monkeypatch.setattr(packing, "attention_mask_4d", leaky_mask)
    outcome, printed = one_step(sso_data, tiny_model, tmp_path / "leaky")
    assert outcome.extra["batches"].startswith("left-padded (packed log-probs differ")
    assert "Error" not in outcome.extra["batches"]  # the check compared log-probs; the mask was not rejected
    assert "packing: off" in printed
    plain, _ = one_step(sso_data, tiny_model, tmp_path / "plain", packing=False)
    torch.testing.assert_close(reference_table(outcome), reference_table(plain), atol=1e-6, rtol=0)


def test_packing_flag_is_in_the_help() -> None:
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "--no-packing" in result.output


def test_liger_head_without_liger_kernel_is_one_clear_error(sso_data: Path, tiny_model: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from ssogen.errors import UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "liger_kernel" else real(name, *a))
    with pytest.raises(UserError, match="--head-kernel liger needs liger-kernel") as raised:
        one_step(sso_data, tiny_model, tmp_path / "liger", head_kernel="liger")
    assert raised.value.exit_code == 1


def test_contexts_of_equal_length_are_separate_groups() -> None:
    # x+ and x- of the same length but different tokens: yo and y+ under x- must follow x-, not x+.
    contexts = [[1, 2], [1, 2], [4, 5, 6], [4, 5, 6], [7, 8, 9], [7, 8, 9]]
    responses = [[10], [20], [30], [40], [50], [60]]
    example = {"row_index": 0, "sequences": [c + r for c, r in zip(contexts, responses, strict=True)],
               "response_lengths": [1] * 6}
    batch = pack_examples([example], pad_token_id=0)
    # Three groups of 4, 5 and 5 tokens on lines 5 wide, longest first.
    assert batch["input_ids"].tolist() == [[4, 5, 6, 30, 40], [7, 8, 9, 50, 60], [1, 2, 10, 20, 0]]
    flat = batch["input_ids"].reshape(-1)
    assert flat[batch["target_index"][batch["target_ids"] == 50]].tolist() == [9]  # yo predicted from x-'s end
