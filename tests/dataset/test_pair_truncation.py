"""The pair configs say which answers were cut at --max-tokens (kept with --keep-truncated): TRL closes every
answer with the end-of-turn token, so a user must be able to drop those pairs; TRL still trains on the configs
as they are, the `pairs` config's three SSO pairs included."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ssogen.dataset.card import write_card
from ssogen.dataset.folder import OutputFolder
from ssogen.testing.folders import make_record, write_dataset


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    out = write_dataset(tmp_path / "out", [
        make_record(0),
        make_record(1, finish_reason_good="length", flags=["truncated_good"]),
        make_record(2, finish_reason_bad="length", flags=["truncated_bad"]),
        make_record(3, finish_reason_raw="length", flags=["truncated_raw"]),  # yo is in neither pair
    ])
    write_card(out)  # the card's header declares the configs, as after generate
    return out


@pytest.mark.parametrize("config", ["dpo", "reward"])
def test_pair_configs_flag_cut_answers(folder: Path, config: str, tmp_path: Path) -> None:
    from datasets import load_dataset

    pairs = load_dataset(str(folder), config, split="train", cache_dir=str(tmp_path / "cache"))
    assert pairs["truncated_chosen"] == [False, True, False, False]
    assert pairs["truncated_rejected"] == [False, False, True, False]
    complete = pairs.filter(lambda r: not (r["truncated_chosen"] or r["truncated_rejected"]))
    assert len(complete) == 2


def test_the_pairs_config_flags_each_pairs_own_answers(folder: Path, tmp_path: Path) -> None:
    """P1 and P2 prefer y+ to y-, P3 yo to y+: a cut yo (row 3) flags P3's chosen answer only."""
    from datasets import load_dataset

    pairs = load_dataset(str(folder), "pairs", split="train", cache_dir=str(tmp_path / "cache"))
    flags = [(r["pair"], r["truncated_chosen"], r["truncated_rejected"]) for r in pairs]
    ok = [("P1", False, False), ("P2", False, False), ("P3", False, False)]
    assert flags == [*ok,
                     ("P1", True, False), ("P2", True, False), ("P3", False, True),
                     ("P1", False, True), ("P2", False, True), ("P3", False, False),
                     ("P1", False, False), ("P2", False, False), ("P3", True, False)]


def test_trl_renders_the_pairs_prompts_with_the_policys_template(tiny_model: Path, tiny_model_no_system: Path,
                                                                  tmp_path: Path) -> None:
    """TRL's own chat-template step takes a `pairs` row as it is: S+ reaches P2's prompt and S- P3's, also through
    a template that refuses a system role, where the folder of such a policy holds them in the user turn."""
    from transformers import AutoTokenizer
    from trl.data_utils import maybe_apply_chat_template

    record = make_record(0, "Name a colour.", system_good="GOOD-PRINCIPLES", system_bad="BAD-PRINCIPLES")
    for model, merged in ((tiny_model, False), (tiny_model_no_system, True)):
        out = write_dataset(tmp_path / model.name, [record], system_role_merged=merged)
        rows = pq.read_table(OutputFolder(out).config_file("pairs")).to_pylist()
        tokenizer = AutoTokenizer.from_pretrained(model)
        rendered = [maybe_apply_chat_template(row, tokenizer) for row in rows]
        p1, p2, p3 = (r["prompt"] for r in rendered)
        assert "Name a colour." in p1 and "PRINCIPLES" not in p1
        assert "GOOD-PRINCIPLES" in p2 and "BAD-PRINCIPLES" not in p2
        assert "BAD-PRINCIPLES" in p3 and "GOOD-PRINCIPLES" not in p3
        assert rendered[2]["chosen"].startswith(record.response_raw)  # P3: yo over y+
        assert rendered[2]["rejected"].startswith(record.response_good)


def test_trl_trains_on_the_pair_configs_with_the_flags(folder: Path, tiny_model: Path, tmp_path: Path) -> None:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    common = {"max_steps": 1, "per_device_train_batch_size": 2, "report_to": [], "save_strategy": "no",
              "use_cpu": True, "bf16": False}
    for config in ("dpo", "pairs"):
        dpo = load_dataset(str(folder), config, split="train", cache_dir=str(tmp_path / "cache"))
        trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), processing_class=tokenizer,
                             args=DPOConfig(output_dir=str(tmp_path / config), **common), train_dataset=dpo)
        assert trainer.train().global_step == 1
    reward = load_dataset(str(folder), "reward", split="train", cache_dir=str(tmp_path / "cache"))
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    classifier.config.pad_token_id = tokenizer.pad_token_id
    trainer = RewardTrainer(model=classifier, args=RewardConfig(output_dir=str(tmp_path / "rm"), **common),
                            train_dataset=reward, processing_class=tokenizer)
    assert trainer.train().global_step == 1
