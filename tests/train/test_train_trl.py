"""ssogen's base loss on a pair equals TRL's DPOTrainer loss (IPO and DPO) on the same sequences and reference.

The policy and the reference are two different tiny models (same tokenizer, different random weights), so the
margins are far from zero and the comparison means something. TRL is used here only (not on the train path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ssogen.chat import context_messages, render_prompt
from ssogen.testing.synthetic import synthetic_sso_rows
from ssogen.testing.tiny_model import build_tiny_model
from ssogen.train.collator import SSOCollator
from ssogen.train.data import encode_rows
from ssogen.train.logprobs import sequence_logps
from ssogen.train.loss import sso_loss
from ssogen.train.objective import LossSettings

ROWS = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy_path = build_tiny_model(tmp_path_factory.mktemp("models") / "policy", seed=1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert AutoTokenizer.from_pretrained(policy_path).get_vocab() == tokenizer.get_vocab()
    return {"tokenizer": tokenizer, "reference": AutoModelForCausalLM.from_pretrained(tiny_model),
            "policy": AutoModelForCausalLM.from_pretrained(policy_path)}


def ssogen_pair_losses(models: dict[str, Any], loss_type: str) -> dict[str, torch.Tensor]:
    tokenizer = models["tokenizer"]
    encoded, _, _ = encode_rows(synthetic_sso_rows(ROWS, seed=5), tokenizer, max_length=512, max_prompt_length=384)
    batch = SSOCollator(pad_token_id=tokenizer.pad_token_id)(
        list(encoded))
    with torch.no_grad():
        policy, lengths = sequence_logps(models["policy"], batch)
        reference, _ = sequence_logps(models["reference"], batch)
    settings = LossSettings(loss_type=loss_type, beta=0.1, use_w=False, use_g=False)  # type: ignore[arg-type]
    out = sso_loss(policy, reference, lengths, settings)
    return {"p1": out.metrics["loss/p1"], "p2": out.metrics["loss/p2"], "base": out.loss}


def trl_pair_loss(models: dict[str, Any], loss_type: str, system_column: str | None, tmp_path: Path) -> float:
    """TRL's DPOTrainer loss on one batch of the pair (plain or good-system prompt, y+ over y-)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tokenizer = models["tokenizer"]
    rows = synthetic_sso_rows(ROWS, seed=5)
    # Standard (text) format: the prompt is the chat-rendered context; TRL appends eos to each completion.
    data = Dataset.from_list([{
        "prompt": render_prompt(tokenizer, context_messages(r["prompt"], r[system_column] if system_column else None),
                                system_supported=True),
        "chosen": r["response_good"], "rejected": r["response_bad"]} for r in rows])
    trl_loss = {"ipo": "ipo", "dpo": "sigmoid"}[loss_type]
    args = DPOConfig(output_dir=str(tmp_path / "trl"), loss_type=[trl_loss], beta=0.1, max_length=None,
                     precompute_ref_log_probs=True, per_device_train_batch_size=ROWS, report_to=[], use_cpu=True,
                     dataset_num_proc=None)
    trainer = DPOTrainer(model=models["policy"], ref_model=models["reference"], args=args, train_dataset=data,
                         processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(ROWS)])
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, batch))


@pytest.mark.parametrize("loss_type", ["ipo", "dpo"])
def test_p1_base_loss_equals_trl(models: dict[str, Any], loss_type: str, tmp_path: Path) -> None:
    ours = ssogen_pair_losses(models, loss_type)
    theirs = trl_pair_loss(models, loss_type, None, tmp_path)
    assert ours["base"].item() == pytest.approx(ours["p1"].mean().item())
    assert ours["base"].item() == pytest.approx(theirs, rel=1e-4)
    zero_margin = 25.0 if loss_type == "ipo" else 0.6931
    assert abs(theirs - zero_margin) > 1e-2  # policy != reference: a real comparison


def test_p2_pair_loss_equals_trl_with_the_good_system_prompt(models: dict[str, Any], tmp_path: Path) -> None:
    ours = ssogen_pair_losses(models, "ipo")
    theirs = trl_pair_loss(models, "ipo", "system_good", tmp_path)
    assert ours["p2"].mean().item() == pytest.approx(theirs, rel=1e-4)
