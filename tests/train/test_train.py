"""`ssogen train` on the tiny model (CPU): learning, outputs, reference cache, resume, collator, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

from ssogen.chat import context_messages, merge_system_into_user
from ssogen.cli import app
from ssogen.dataset.folder import OutputFolder
from ssogen.errors import UserError
from ssogen.response_logps import selected_token_logps
from ssogen.testing.synthetic import synthetic_sso_rows, write_synthetic_sso
from ssogen.train.collator import SSOCollator
from ssogen.train.config import TrainConfig, build_config
from ssogen.train.data import encode_rows
from ssogen.train.logprobs import sequence_logps
from ssogen.train.run import CONFIG_FILE, METRICS_FILE, run_training

FAST = {"logging_steps": 5, "warmup_ratio": 0.0, "max_length": 256, "max_prompt_length": 192}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def config(data: Path, model: Path, out: Path, **overrides: Any) -> TrainConfig:
    return TrainConfig(data=data, model=str(model), out=out, **{**FAST, **overrides})


@pytest.fixture(scope="module")
def sso_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_sso(tmp_path_factory.mktemp("data") / "gen", count=16, seed=0)


@pytest.fixture(scope="module")
def learned(sso_data: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The learning run: 40 steps at a raised lr, then a second run of other settings into the same folder with
    --overwrite, which keeps the reference cache (its key says what it was computed from)."""
    out = tmp_path_factory.mktemp("train") / "run"
    first = run_training(config(sso_data, tiny_model, out, max_steps=40, lr=3e-3, batch_size=4, save_steps=0,
                                final_eval=True), quiet())
    cache = out / first.reference_file
    first_cache = (cache.stat().st_mtime_ns, cache.read_bytes())
    first_metrics = json.loads((out / METRICS_FILE).read_text())
    console = quiet()
    second = run_training(config(sso_data, tiny_model, out, max_steps=2, lr=1e-4, batch_size=4, save_steps=0,
                                 overwrite=True), console)
    return {"out": out, "first": first, "second": second, "first_cache": first_cache,
            "first_metrics": first_metrics, "second_console": console.file.getvalue()}  # type: ignore[attr-defined]


def test_learning_drives_p1_accuracy_up_and_loss_down(learned: dict[str, Any]) -> None:
    first = learned["first"]
    assert first.steps == 40
    assert first.final_eval["rewards/p1/accuracy"] > 0.9
    logged = [entry for entry in first.log_history if "loss" in entry]
    assert logged[0]["loss/p1"] == pytest.approx(25.0, abs=1e-3)  # IPO at zero margin: (1/(2β))², β = 0.1
    assert logged[-1]["loss"] < 0.5 * logged[0]["loss"]
    assert logged[-1]["rewards/p1/accuracy"] > 0.9


def test_outputs_hold_model_config_metrics_and_card(learned: dict[str, Any]) -> None:
    out: Path = learned["out"]
    for name in ("model.safetensors", "config.json", "tokenizer.json", CONFIG_FILE, METRICS_FILE, "README.md"):
        assert (out / name).is_file(), name
    # The weights as readable as the config beside them (transformers wrote them 0o600, as a private temp file).
    assert (out / "model.safetensors").stat().st_mode & 0o777 == (out / "config.json").stat().st_mode & 0o777
    saved = json.loads((out / CONFIG_FILE).read_text())
    assert saved["loss"]["loss_type"] == "ipo" and saved["loss"]["beta"] == 0.1
    assert saved["loss"]["formula"] == "L(x,y+,y-) + 0.1·W·G"
    assert "per-token" in saved["loss"]["normalisation"]
    assert saved["config"]["alpha"] == 0.5 and saved["config"]["lam"] == 0.1
    assert saved["config"]["bf16"] is False  # the default, as decided on this CPU (saved as what ran)
    assert ", float32" in learned["second_console"]
    metrics = json.loads((out / METRICS_FILE).read_text())
    steps = [entry for entry in metrics["log_history"] if "loss" in entry]
    for key in ("loss/p1", "loss/p2", "loss/p3", "loss/G", "W", "rewards/p3/accuracy", "rewards/p2/margin",
                "logps/good_plain"):
        assert all(key in entry for entry in steps), key
    assert "train_runtime" in metrics["train_metrics"]
    card = (out / "README.md").read_text()
    assert "IPO" in card and "L(x,y+,y-) + 0.1·W·G" in card


def reference_record(out: Path) -> dict[str, Any]:
    return json.loads((out / METRICS_FILE).read_text())["reference"]


def test_reference_cache_is_reused_on_rerun(learned: dict[str, Any]) -> None:
    out: Path = learned["out"]
    first = learned["first_metrics"]["reference"]
    assert not first["reused"] and first["loaded_from"] is None and first["seconds"] > 0  # the pass ran
    second = reference_record(out)
    assert second["reused"] and second["seconds"] == 0  # no reference pass the second time
    assert second["loaded_from"] == str(out / learned["first"].reference_file)
    cache = out / learned["first"].reference_file
    assert (cache.stat().st_mtime_ns, cache.read_bytes()) == learned["first_cache"]  # read, never rewritten
    assert learned["second"].reference_reused
    assert "reused cache" in learned["second_console"]
    assert len(list(out.glob("ref_logps-*.parquet"))) == 1


def test_one_train_command_checks_and_hashes_the_data_and_the_model_once(
        sso_data: Path, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command checks its inputs before it takes --out and decides about --out again under the lock: the rows
    are checked, the data files and the model's weights hashed once in all, and the reference cache keeps the key
    computed from the model's files (existing runs find their caches)."""
    from ssogen import fingerprint
    from ssogen.chat import chat_template_text, supports_system_role
    from ssogen.models import resolve_model
    from ssogen.train import inputs
    from ssogen.train.reference import cache_key

    calls: dict[str, int] = {}

    def counted(module: Any, name: str) -> None:
        original = getattr(module, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    for module, name in ((fingerprint, "_weights_digest"), (inputs, "check_sso_rows"), (inputs, "data_fingerprint")):
        counted(module, name)
    out = tmp_path / "out"
    result = _run_cli("--data", str(sso_data), "--model", str(tiny_model), "--out", str(out), "--max-steps", "1",
                      "--save-steps", "0", "--max-length", "256", "--max-prompt-length", "192", "--no-bf16")
    assert result.exit_code == 0, result.output
    assert calls == {"_weights_digest": 1, "check_sso_rows": 1, "data_fingerprint": 1}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    key = cache_key(data_fingerprint=inputs.data_fingerprint(sso_data),
                    model_id=fingerprint.model_fingerprint(resolve_model(str(tiny_model))).digest, max_length=256,
                    max_prompt_length=192, system_supported=supports_system_role(tokenizer),
                    chat_template=chat_template_text(tokenizer), dtype="fp32")
    assert reference_record(out)["file"] == f"ref_logps-{key}.parquet"


def test_changed_max_length_gets_a_new_reference(sso_data: Path, tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run_training(config(sso_data, tiny_model, out, max_steps=1, save_steps=0), quiet())
    second = run_training(config(sso_data, tiny_model, out, max_steps=1, save_steps=0, max_length=200,
                                 overwrite=True), quiet())
    assert not second.reference_reused and not reference_record(out)["reused"]  # computed again
    assert second.reference_file != first.reference_file
    assert len(list(out.glob("ref_logps-*.parquet"))) == 2


def test_resume_from_checkpoint_gives_the_same_weights(sso_data: Path, tiny_model: Path, tmp_path: Path) -> None:
    common = {"max_steps": 8, "lr": 1e-3, "batch_size": 4, "seed": 7, "save_steps": 4}
    run_training(config(sso_data, tiny_model, tmp_path / "a", **common), quiet())
    # A fresh folder: the reference must come from the checkpoint's copy, not from the trained weights.
    checkpoint = tmp_path / "a" / "checkpoint-4"
    resumed_run = run_training(config(sso_data, tiny_model, tmp_path / "b", resume_from_checkpoint=str(checkpoint),
                                      **common), quiet())
    assert resumed_run.reference_reused
    assert reference_record(tmp_path / "b")["loaded_from"] == str(checkpoint / resumed_run.reference_file)
    assert (resumed_run.steps, resumed_run.steps_run) == (8, 4)
    # train_loss of the resumed invocation averages steps 5-8 only, and the metrics say so.
    assert resumed_run.train_metrics["train_loss_from_step"] == 4
    assert "train_loss_from_step" not in json.loads((tmp_path / "a" / "metrics.json").read_text())["train_metrics"]
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["train_metrics"]["train_loss_from_step"] == 4
    # Killed after its last checkpoint, before its summary files: the rerun resumes and trains no step, so it has
    # no mean loss (it read 0.0).
    (tmp_path / "a" / CONFIG_FILE).unlink()
    nothing_left = run_training(config(sso_data, tiny_model, tmp_path / "a", **common), quiet())
    assert nothing_left.steps_run == 0 and nothing_left.train_metrics["train_loss"] is None
    uninterrupted = load_file(tmp_path / "a" / "model.safetensors")
    resumed = load_file(tmp_path / "b" / "model.safetensors")
    start = load_file(tiny_model / "model.safetensors")
    assert uninterrupted.keys() == resumed.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(tensor, resumed[name]), name
    assert any(not torch.equal(uninterrupted[n], start[n]) for n in start)


def test_gradient_accumulation_matches_the_larger_batch(sso_data: Path, tiny_model: Path, tmp_path: Path) -> None:
    common = {"max_steps": 1, "lr": 1e-3, "seed": 3, "save_steps": 0, "scheduler": "constant"}
    run_training(config(sso_data, tiny_model, tmp_path / "big", batch_size=4, **common), quiet())
    run_training(config(sso_data, tiny_model, tmp_path / "acc", batch_size=2, grad_accum=2, **common), quiet())
    big = load_file(tmp_path / "big" / "model.safetensors")
    accumulated = load_file(tmp_path / "acc" / "model.safetensors")
    for name, tensor in big.items():
        torch.testing.assert_close(accumulated[name], tensor, atol=1e-5, rtol=1e-4)


def test_a_model_with_named_chat_templates_trains_and_scores(sso_data: Path, tiny_model: Path,
                                                               tmp_path: Path) -> None:
    """transformers gives a dict for a model with `additional_chat_templates/`: the cache keys of train and score
    stopped with "'dict' object has no attribute 'encode'"."""
    import shutil

    from ssogen.dataset.score import score_folder
    from ssogen.testing.folders import make_record, write_dataset

    model = tmp_path / "named"
    shutil.copytree(tiny_model, model)
    (model / "additional_chat_templates").mkdir()
    shutil.copy(model / "chat_template.jinja", model / "additional_chat_templates" / "tool_use.jinja")
    outcome = run_training(config(sso_data, model, tmp_path / "out", max_steps=1, save_steps=0), quiet())
    assert outcome.steps == 1
    report = score_folder(write_dataset(tmp_path / "data", [make_record(0)]), str(model), engine="transformers")
    assert report.scored_now == 1


def test_lora_on_the_output_layer_names_the_fused_head(sso_data: Path, tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^--lora-target-modules lm_head: the output layer is ssogen's fused head "
                                        r"here, which takes no adapter; add --no-fused-head$"):
        run_training(config(sso_data, tiny_model, tmp_path / "out", max_steps=1, save_steps=0, lora=True,
                            lora_target_modules="lm_head"), quiet())
    outcome = run_training(config(sso_data, tiny_model, tmp_path / "plain", max_steps=1, save_steps=0, lora=True,
                                  lora_target_modules="lm_head", fused_head=False), quiet())
    assert outcome.steps == 1


def test_a_lora_run_writes_ssogen_s_card_and_keeps_one_written_by_hand(sso_data: Path, tiny_model: Path,
                                                                        tmp_path: Path) -> None:
    """PEFT's save writes a card of its own into the folder (or edits the one there) before ssogen writes its
    card: taken for a card written by hand, it stayed, and a card written by hand got PEFT's edits."""
    from ssogen.train.output import MODEL_CARD_MARKER

    out = tmp_path / "lora"
    run_training(config(sso_data, tiny_model, out, max_steps=1, lora=True, lora_r=4, save_steps=0), quiet())
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft") and card.rstrip().endswith(MODEL_CARD_MARKER)
    mine = "# My adapter\n\nNotes for the hub.\n"
    (out / "README.md").write_text(mine)
    run_training(config(sso_data, tiny_model, out, max_steps=2, lora=True, lora_r=4, save_steps=0, overwrite=True),
                 quiet())
    assert (out / "README.md").read_text() == mine


def test_lora_reference_is_the_base_model(sso_data: Path, tiny_model: Path, tmp_path: Path,
                                          learned: dict[str, Any]) -> None:
    outcome = run_training(config(sso_data, tiny_model, tmp_path / "lora", max_steps=3, lr=1e-2, lora=True,
                                  lora_r=4, save_steps=0), quiet())
    assert (tmp_path / "lora" / "adapter_config.json").is_file()
    assert not outcome.reference_reused
    # Same data, base model and lengths as the full-model run: identical reference log-probs.
    import pyarrow.parquet as pq

    lora_ref = pq.read_table(tmp_path / "lora" / outcome.reference_file).to_pydict()
    full_ref = pq.read_table(Path(learned["out"]) / outcome.reference_file).to_pydict()
    for column, values in full_ref.items():
        if column != "id":
            assert lora_ref[column] == pytest.approx(values, abs=1e-4)


def test_a_lora_adapter_names_its_local_base_by_absolute_path(sso_data: Path, tiny_model: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`--model tiny` (a folder relative to where training ran) was recorded as "tiny": the adapter then loaded only
    from that folder."""
    monkeypatch.chdir(tiny_model.parent)
    run_training(config(sso_data, Path(tiny_model.name), tmp_path / "lora", max_steps=1, lora=True, lora_r=4,
                        save_steps=0), quiet())
    adapter = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_model.resolve())


def test_lora_targets_take_a_comma_list_of_names_and_a_typo_is_one_line(sso_data: Path, tiny_model: Path,
                                                                        tmp_path: Path) -> None:
    """`q_proj,v_proj` was handed to peft as one regex over full names: a peft traceback."""
    assert config(sso_data, tiny_model, tmp_path, lora=True).lora_targets() == "all-linear"
    assert config(sso_data, tiny_model, tmp_path, lora=True, lora_target_modules=r".*\.(q|v)_proj").lora_targets() \
        == r".*\.(q|v)_proj"
    as_yaml = config(sso_data, tiny_model, tmp_path, lora=True, lora_target_modules=["q_proj", "v_proj"])
    assert as_yaml.lora_target_modules == "q_proj,v_proj" and as_yaml.lora_targets() == ["q_proj", "v_proj"]
    # The flag's text with spaces is the same option as the list: one fingerprint (a resume given the other
    # spelling was refused as another configuration).
    as_flag = config(sso_data, tiny_model, tmp_path, lora=True, lora_target_modules=" q_proj, v_proj ")
    assert as_flag.lora_target_modules == "q_proj,v_proj" and as_flag.fingerprinted() == as_yaml.fingerprinted()
    run_training(config(sso_data, tiny_model, tmp_path / "qv", max_steps=1, lora=True, lora_r=4, save_steps=0,
                        lora_target_modules="q_proj, v_proj"), quiet())
    adapter = json.loads((tmp_path / "qv" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    with pytest.raises(UserError, match=r"^--lora-target-modules nonexist: Target modules \{'nonexist'\} not found"):
        run_training(config(sso_data, tiny_model, tmp_path / "typo", max_steps=1, lora=True, save_steps=0,
                            lora_target_modules="nonexist"), quiet())


def test_v2_objective_trains(sso_data: Path, tiny_model: Path, tmp_path: Path) -> None:
    outcome = run_training(config(sso_data, tiny_model, tmp_path / "v2", objective="v2", max_steps=2,
                                  save_steps=0), quiet())
    saved = json.loads((tmp_path / "v2" / CONFIG_FILE).read_text())
    assert saved["loss"]["loss_type"] == "dpo" and saved["loss"]["sft_weight"] == 0.1
    assert "loss/plus" in [e for e in outcome.log_history if "loss" in e][0]


# -- sequences and log-probs -------------------------------------------------------------------------------------

def test_six_sequences_follow_the_chat_template_with_system_fallback(tiny_model_no_system: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_no_system)
    row = synthetic_sso_rows(1)[0]
    encoded, counts, system_supported = encode_rows([row], tokenizer, max_length=512, max_prompt_length=384)
    assert not system_supported and counts.prompts == counts.responses == 0
    sequences, lengths = [s.tolist() for s in encoded[0]["sequences"]], encoded[0]["response_lengths"]
    # (x+, y-): the system text merged into the user turn, then y- and the end-of-turn token.
    merged = merge_system_into_user(context_messages(row["prompt"], row["system_good"]))
    prompt = tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
    expected = tokenizer(prompt + row["response_bad"], add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id]
    assert sequences[3] == expected
    assert lengths[3] == len(tokenizer(row["response_bad"], add_special_tokens=False)["input_ids"]) + 1
    assert tokenizer.decode(sequences[3][-lengths[3]:]) == row["response_bad"] + "<|im_end|>"
    # (x, y+): plain context, no system text at all.
    assert row["system_good"] not in tokenizer.decode(sequences[0])


def test_truncation_is_counted(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = synthetic_sso_rows(2, response_repeat=4)
    encoded, counts, _ = encode_rows(rows, tokenizer, max_length=60, max_prompt_length=40)
    assert counts.prompts > 0 and counts.responses > 0 and counts.as_dict()["rows_affected"] == 2
    assert all(len(seq) <= 60 for row in encoded for seq in row["sequences"])
    assert all(length >= 1 for row in encoded for length in row["response_lengths"])


def test_truncation_keeps_the_prompt_end_and_fills_max_length(tiny_model: Path) -> None:
    """A long prompt keeps its last max_prompt_length tokens (the assistant header stays); a long sequence keeps
    the first max_length - len(prompt) response tokens, so it is exactly max_length long. Checked token by token
    against the untruncated encoding (itself checked against the chat template above)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = synthetic_sso_rows(2, response_repeat=4)
    full, counts, _ = encode_rows(rows, tokenizer, max_length=10**6, max_prompt_length=10**6)
    assert counts.prompts == counts.responses == 0
    max_length, max_prompt = 60, 40
    cut, _, _ = encode_rows(rows, tokenizer, max_length=max_length, max_prompt_length=max_prompt)
    prompts_cut = responses_cut = 0
    for whole, short in zip(full, cut, strict=True):
        for sequence, length, got, got_length in zip(whole["sequences"], whole["response_lengths"], short["sequences"],
                                                     short["response_lengths"], strict=True):
            sequence, got = sequence.tolist(), got.tolist()
            prompt, answer = sequence[:len(sequence) - length], sequence[len(sequence) - length:]
            if len(prompt) > max_prompt:
                prompt = prompt[len(prompt) - max_prompt:]
                prompts_cut += 1
            room = max_length - len(prompt)
            if len(answer) > room:
                answer = answer[:room]
                responses_cut += 1
                assert len(got) == max_length
            assert got == prompt + answer and got_length == len(answer)
    assert prompts_cut > 0 and responses_cut > 0


def test_left_padded_batch_gives_each_sequence_its_own_logprobs(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    encoded, _, _ = encode_rows(synthetic_sso_rows(2), tokenizer, max_length=256, max_prompt_length=192)
    examples = list(encoded)
    with torch.no_grad():
        sums, lengths = sequence_logps(model, SSOCollator(pad_token_id=tokenizer.pad_token_id)(examples))
        for row, example in enumerate(examples):
            for column, (seq, n) in enumerate(zip(example["sequences"], example["response_lengths"], strict=True)):
                ids = seq[None].long()
                logps = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
                alone = logps.gather(1, ids[0, 1:, None]).squeeze(1)[-n:].sum().item()
                assert sums[row, column].item() == pytest.approx(alone, abs=1e-3)
                assert lengths[row, column].item() == n


def test_lean_token_logps_match_log_softmax_values_and_gradients() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 50, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (3, 7))
    weights = torch.randn(3, 7, dtype=torch.float64)
    lean = selected_token_logps(logits, targets)
    plain = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(lean.double(), plain, atol=1e-6, rtol=0)
    (g_lean,) = torch.autograd.grad((lean.double() * weights).sum(), logits)
    (g_plain,) = torch.autograd.grad((plain * weights).sum(), logits)
    torch.testing.assert_close(g_lean, g_plain, atol=1e-6, rtol=0)


@pytest.mark.parametrize("keep_probabilities", [True, False])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_output_layer_matches_plain_logits_values_and_gradients(monkeypatch: pytest.MonkeyPatch,
                                                                        with_bias: bool,
                                                                        keep_probabilities: bool) -> None:
    from ssogen.train import output_layer as logprobs

    monkeypatch.setattr(logprobs, "HEAD_CHUNK_ELEMENTS", 7 * 40)  # 7 positions per chunk: several chunks
    monkeypatch.setattr(logprobs, "HEAD_CHUNK_ELEMENTS_KEPT", 6 * 40)  # with the probabilities kept: 6
    monkeypatch.setattr(logprobs, "HEAD_CHUNK_ROWS", 8)  # recompute tiles: 8 positions × 35 of the 40 columns
    torch.manual_seed(1)
    linear = torch.nn.Linear(16, 40, bias=with_bias, dtype=torch.float64)
    head = logprobs.LogProbHead(linear, keep_probabilities=keep_probabilities)
    hidden = torch.randn(3, 10, 16, dtype=torch.float64, requires_grad=True)
    # 20 targets at scattered positions of the 30, one position predicting two (as a shared context's last token).
    positions = torch.cat([torch.randperm(30)[:19], torch.tensor([4])])
    positions[0] = 4
    targets = torch.randint(0, 40, (20,))
    weights = torch.randn(20, dtype=torch.float64)
    head.positions, head.targets = positions, targets
    fused = head(hidden)
    head.positions = head.targets = None
    plain = torch.log_softmax(linear(hidden.reshape(30, 16)[positions]), -1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(fused.double(), plain, atol=1e-6, rtol=0)
    params = [hidden, linear.weight] + ([linear.bias] if with_bias else [])
    g_fused = torch.autograd.grad((fused.double() * weights).sum(), params)
    g_plain = torch.autograd.grad((plain * weights).sum(), params)
    for a, b in zip(g_fused, g_plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(head(hidden), linear(hidden))  # without targets: the ordinary layer


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("keep_probabilities", [True, False])
def test_output_layer_forward_is_bit_equal_to_float32_results_copied_into_place(
        monkeypatch: pytest.MonkeyPatch, keep_probabilities: bool, autocast: bool) -> None:
    """The chunk loop writes each result into its slice (`out=`); the values must be those of computing the chunk in
    float32 and copying: the log-probs and, when kept, the probabilities backward uses (in the compute dtype)."""
    from ssogen.train import output_layer as logprobs

    monkeypatch.setattr(logprobs, "HEAD_CHUNK_ELEMENTS", 7 * 300)  # several chunks, a short last one
    monkeypatch.setattr(logprobs, "HEAD_CHUNK_ELEMENTS_KEPT", 6 * 300)
    torch.manual_seed(2)
    weight = torch.randn(300, 32, requires_grad=True)
    hidden = (torch.randn(20, 32) * 3).requires_grad_(True)  # spread logits: bf16 rounding shows in the softmax
    targets = torch.randint(0, 300, (20,))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logps = logprobs._HeadLogProb.apply(hidden, weight, None, targets, keep_probabilities, None)
    dtype = torch.bfloat16 if autocast else torch.float32
    h, w, rows = hidden.detach().to(dtype), weight.detach().to(dtype), 6 if keep_probabilities else 7
    logits = torch.cat([F.linear(h[i:i + rows], w) for i in range(0, 20, rows)]).float()  # the same GEMMs
    top = logits.amax(dim=-1, keepdim=True)
    exps = (logits - top).exp()
    sums = exps.sum(dim=-1)
    expected = logits.gather(1, targets[:, None]).squeeze(1) - (sums.log() + top.squeeze(1))
    assert torch.equal(logps, expected)
    saved_probs = logps.grad_fn.saved_tensors[-1]
    if keep_probabilities:
        assert saved_probs.dtype == dtype
        assert torch.equal(saved_probs, (exps / sums[:, None]).to(dtype))
    else:
        assert saved_probs is None


def test_installed_head_gives_the_same_logprobs_and_parameter_gradients(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ssogen.train.output_layer import LogProbHead, install_logprob_head, remove_logprob_head

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    encoded, _, _ = encode_rows(synthetic_sso_rows(2), tokenizer, max_length=256, max_prompt_length=192)
    batch = SSOCollator(pad_token_id=tokenizer.pad_token_id)(
        list(encoded))
    results = []
    for fused in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_model)
        assert install_logprob_head(model) if fused else True
        sums, _ = sequence_logps(model, batch)
        (sums * torch.linspace(-1, 1, sums.numel()).view_as(sums)).sum().backward()
        results.append((sums.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        if fused:
            assert isinstance(model.get_output_embeddings(), LogProbHead)
            assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
            remove_logprob_head(model)
            assert type(model.get_output_embeddings()) is torch.nn.Linear
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-4, rtol=1e-5)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


# -- configuration and bad input -----------------------------------------------------------------------------

def test_yaml_config_and_command_line_override(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("data: d\nmodel: m\nout: o\nbeta: 0.2\nlambda: 0.3\nw-placement: all\nlr: 1.0e-6\n")
    settings = build_config({"beta": 0.5, "alpha": None}, path)
    assert (settings.beta, settings.lam, settings.w_placement, settings.lr) == (0.5, 0.3, "all", 1e-6)
    assert settings.loss_settings().formula() == "W·(L(x,y+,y-) + 0.3·G)"


def _run_cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["train", *args])


def _one_error_line(result: Any, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_input_gives_one_clear_line(sso_data: Path, tiny_model: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    (tmp_path / "no-sso").mkdir()
    _one_error_line(_run_cli("--data", str(tmp_path / "no-sso"), "--model", str(tiny_model), "--out", out),
                    "no `sso` config")
    missing = tmp_path / "missing_columns"
    OutputFolder(missing).write_config("sso", [{"id": "1", "prompt": "p"}],
                                       pa.schema([("id", pa.string()), ("prompt", pa.string())]))
    _one_error_line(_run_cli("--data", str(missing), "--model", str(tiny_model), "--out", out),
                    "missing column(s) system_good")
    empty = tmp_path / "empty"
    OutputFolder(empty).write_config("sso", [])
    _one_error_line(_run_cli("--data", str(empty), "--model", str(tiny_model), "--out", out), "no rows")
    _one_error_line(_run_cli("--data", str(sso_data), "--model", str(tmp_path / "nope"), "--out", out),
                    "--model", "no such folder")
    _one_error_line(_run_cli("--data", str(sso_data), "--model", str(tiny_model), "--out", out,
                             "--objective", "v2", "--no-g"), "--no-g cannot be used with --objective v2")
    _one_error_line(_run_cli("--data", str(sso_data), "--model", str(tiny_model), "--out", out,
                             "--max-prompt-length", "300", "--max-length", "200"), "--max-prompt-length")
    _one_error_line(_run_cli("--data", str(sso_data), "--model", str(tiny_model), "--out", out, "--beta", "-1"),
                    "--beta")
    assert not Path(out).exists()


BLOCKED_RUN = """
import sys
for name in ("trl", "vllm", "datasets"):
    sys.modules[name] = None  # find_spec() -> None and import -> ImportError: a GPU box without them
import io
from pathlib import Path
from rich.console import Console
import ssogen.cli  # the whole command line, as `python -m ssogen train` loads it
from ssogen.train.run import run_training
from ssogen.train.config import TrainConfig
outcome = run_training(TrainConfig(data=Path(sys.argv[1]), model=sys.argv[2], out=Path(sys.argv[3]), max_steps=2,
                                   save_steps=0, lora=True, lora_r=4, gradient_checkpointing=True,
                                   max_length=256, max_prompt_length=192), Console(file=io.StringIO()))
print("steps", outcome.steps)
"""


def test_train_path_needs_no_trl_vllm_or_datasets(sso_data: Path, tiny_model: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", BLOCKED_RUN, str(sso_data), str(tiny_model), str(tmp_path / "o")],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("steps 2")
