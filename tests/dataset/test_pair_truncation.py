"""The pair configs say which answers were cut at --max-tokens (kept with --keep-truncated): TRL closes every
answer with the end-of-turn token, so a user must be able to drop those pairs; TRL still trains on the configs
as they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssogen.dataset.card import write_card
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


def test_trl_trains_on_the_pair_configs_with_the_flags(folder: Path, tiny_model: Path, tmp_path: Path) -> None:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    common = {"max_steps": 1, "per_device_train_batch_size": 2, "report_to": [], "save_strategy": "no",
              "use_cpu": True, "bf16": False}
    dpo = load_dataset(str(folder), "dpo", split="train", cache_dir=str(tmp_path / "cache"))
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), processing_class=tokenizer,
                         args=DPOConfig(output_dir=str(tmp_path / "dpo"), **common), train_dataset=dpo)
    assert trainer.train().global_step == 1
    reward = load_dataset(str(folder), "reward", split="train", cache_dir=str(tmp_path / "cache"))
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    classifier.config.pad_token_id = tokenizer.pad_token_id
    trainer = RewardTrainer(model=classifier, args=RewardConfig(output_dir=str(tmp_path / "rm"), **common),
                            train_dataset=reward, processing_class=tokenizer)
    assert trainer.train().global_step == 1
