"""Training is right for any chat template: complete responses end with the template's end-of-turn token (not the
tokenizer's eos), responses cut at the token limit end with nothing, and the policy trains without dropout, so
every IPO term starts at exactly (1/(2β))² = 25 at β = 0.1."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from rich.console import Console

from ssogen.dataset.folder import OutputFolder
from ssogen.records import SSO_TEXT_COLUMNS
from ssogen.testing.synthetic import synthetic_sso_rows, write_synthetic_sso
from ssogen.train.config import TrainConfig
from ssogen.train.data import encode_rows
from ssogen.train.inputs import read_sso_rows
from ssogen.train.loss import SEQUENCE_PARTS
from ssogen.train.run import CONFIG_FILE, run_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"logging_steps": 1, "warmup_ratio": 0.0, "max_length": 256, "max_prompt_length": 192, "save_steps": 0,
        "max_steps": 1, "batch_size": 4, "lr": 1e-3}


def rows_with_cut_responses() -> list[dict[str, Any]]:
    """Eight rows; row 0 has y- cut at the token limit, row 1 has y+ and yo cut."""
    rows = synthetic_sso_rows(8, seed=1)
    rows[0]["truncated_bad"] = True
    rows[1]["truncated_good"] = rows[1]["truncated_raw"] = True
    return rows


def first_logged_step(outcome: Any) -> dict[str, float]:
    return next(entry for entry in outcome.log_history if "loss" in entry)


def test_complete_responses_end_with_im_end_and_cut_ones_with_their_last_text_token(
        tiny_model_base_eos: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_base_eos)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id != im_end  # like Qwen2.5 base
    rows = rows_with_cut_responses()
    encoded, _, _ = encode_rows(rows, tokenizer, max_length=512, max_prompt_length=384)
    for row, enc in zip(rows[:3], list(encoded)[:3], strict=True):
        for (_, response), sequence, length in zip(SEQUENCE_PARTS, enc["sequences"], enc["response_lengths"],
                                                   strict=True):
            text_ids = tokenizer(row[f"response_{response}"], add_special_tokens=False)["input_ids"]
            answer = sequence[-length:].tolist()
            if row[f"truncated_{response}"]:
                assert answer == text_ids  # cut: no end token at all
            else:
                assert answer == [*text_ids, im_end]  # complete: the template's turn end, never eos
            assert tokenizer.eos_token_id not in answer


def test_first_step_is_zero_margin_on_a_base_eos_model_with_cut_responses(tiny_model_base_eos: Path,
                                                                           tmp_path: Path) -> None:
    data = write_synthetic_sso(tmp_path / "data", 0, rows=rows_with_cut_responses())
    out = tmp_path / "run"
    outcome = run_training(TrainConfig(data=data, model=str(tiny_model_base_eos), out=out, **FAST),
                           Console(file=io.StringIO(), width=200))
    first = first_logged_step(outcome)
    for term in ("loss/p1", "loss/p2", "loss/p3"):
        assert first[term] == pytest.approx(25.0, abs=1e-4), term
    saved = json.loads((out / CONFIG_FILE).read_text())
    assert saved["data"]["end_of_turn"]["tokens"] == ["<|im_end|>"]
    assert saved["data"]["end_of_turn"]["source"] == "chat template"
    assert saved["data"]["end_of_turn"]["cut_responses"] == 3


def test_sso_files_without_truncation_columns_read_as_complete(tiny_model: Path, tmp_path: Path) -> None:
    old = [{name: row[name] for name in SSO_TEXT_COLUMNS} for row in synthetic_sso_rows(2)]
    OutputFolder(tmp_path).write_config("sso", old, pa.schema([(c, pa.string()) for c in SSO_TEXT_COLUMNS]))
    rows = read_sso_rows(tmp_path)
    assert [row["truncated_good"] or row["truncated_bad"] or row["truncated_raw"] for row in rows] == [False, False]


@pytest.fixture(scope="module")
def dropout_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ssogen.testing.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "dropout", attention_dropout=0.5)


def test_dropout_is_off_while_training_so_step_one_is_zero_margin(dropout_model: Path, tmp_path: Path) -> None:
    data = write_synthetic_sso(tmp_path / "data", 8, seed=2)
    console = Console(file=io.StringIO(), width=200)
    off = run_training(TrainConfig(data=data, model=str(dropout_model), out=tmp_path / "off", **FAST), console)
    assert round(first_logged_step(off)["loss/p1"], 3) == 25.000
    assert "off (as in TRL)" in console.file.getvalue()  # type: ignore[attr-defined]
    # The saved model keeps the user's dropout setting.
    assert json.loads((tmp_path / "off" / "config.json").read_text())["attention_dropout"] == 0.5
    kept = run_training(TrainConfig(data=data, model=str(dropout_model), out=tmp_path / "kept", keep_dropout=True,
                                    **FAST), Console(file=io.StringIO()))
    assert abs(first_logged_step(kept)["loss/p1"] - 25.0) > 1e-3  # with dropout the policy is not its reference


def test_a_save_writes_the_users_dropout_and_training_goes_on_without_it(dropout_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    from ssogen.train.dropout import disable_dropout

    model = AutoModelForCausalLM.from_pretrained(dropout_model)
    zeroed = disable_dropout(model)
    attention = [m for m in model.modules() if hasattr(m, "attention_dropout")]
    assert model.config.attention_dropout == 0.0 and attention
    with zeroed.user_values():
        assert model.config.attention_dropout == 0.5  # what save_pretrained writes
        assert all(m.attention_dropout == 0.0 for m in attention)  # forward reads these: still off
    assert model.config.attention_dropout == 0.0  # zero again for the rest of training (Gemma 2 reads the config)


def test_checkpoints_keep_the_users_dropout_and_a_resumed_run_trains_without_it(dropout_model: Path,
                                                                                tmp_path: Path) -> None:
    data = write_synthetic_sso(tmp_path / "data", 8, seed=2)
    settings = {**FAST, "max_steps": 2, "save_steps": 1}
    run = tmp_path / "run"
    done = run_training(TrainConfig(data=data, model=str(dropout_model), out=run, **settings),
                        Console(file=io.StringIO()))
    users_cache = json.loads((dropout_model / "config.json").read_text())["use_cache"]
    for folder in (run / "checkpoint-1", run / "checkpoint-2", run):
        saved = json.loads((folder / "config.json").read_text())
        assert saved["attention_dropout"] == 0.5, folder
        assert saved["use_cache"] == users_cache is True, folder  # training runs without the cache: not saved
    # A run cut off after checkpoint-1 resumes from it (whose config says 0.5) and still trains without dropout:
    # its second step is the uninterrupted run's.
    out = Path(shutil.copytree(run, tmp_path / "cut"))
    for name in ("model.safetensors", "config.json", "metrics.json", CONFIG_FILE, "README.md"):
        (out / name).unlink()
    shutil.rmtree(out / "checkpoint-2")
    console = Console(file=io.StringIO(), width=200)
    resumed = run_training(TrainConfig(data=data, model=str(dropout_model), out=out, **settings), console)
    assert "from checkpoint-1" in console.file.getvalue()  # type: ignore[attr-defined]
    steps = {entry["step"]: entry["loss"] for entry in resumed.log_history if "loss" in entry}
    assert list(steps) == [1, 2]  # step 1 comes from checkpoint-1's trainer state
    assert steps[2] == pytest.approx(next(e["loss"] for e in done.log_history if e.get("step") == 2), rel=1e-6)
    assert json.loads((out / "config.json").read_text())["attention_dropout"] == 0.5
