"""`ssogen train --config`: every transformers.TrainingArguments field under its own name besides ssogen's
options (issue 9, item 12), and loggers checked before torch is imported."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.errors import UserError
from ssogen.testing.synthetic import write_synthetic_sso
from ssogen.train import integrations
from ssogen.train.config import TrainConfig, build_config
from ssogen.train.hf_arguments import ALIASES, REFUSED, training_argument_names

REQUIRED = {"data": Path("d"), "model": "m", "out": Path("o")}


def _config(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "train.yaml"
    path.write_text(text)
    return build_config(dict(REQUIRED), path)


def test_the_names_are_those_of_the_installed_training_arguments() -> None:
    from transformers import TrainingArguments

    assert training_argument_names() == {f.name for f in dataclasses.fields(TrainingArguments)}
    assert set(ALIASES) | set(REFUSED) <= training_argument_names()


def test_training_arguments_names_set_ssogen_options_and_pass_the_rest(tmp_path: Path) -> None:
    config = _config(tmp_path, "gradient_accumulation_steps: 4\nlearning_rate: 1.0e-6\nper_device_train_batch_size: 2\n"
                               "num_train_epochs: 2\nlr_scheduler_type: linear\nadam_beta2: 0.95\noptim: adamw_torch\n"
                               "seed: 7\n")
    assert (config.grad_accum, config.lr, config.batch_size, config.epochs, config.scheduler, config.seed) == (
        4, 1e-6, 2, 2.0, "linear", 7)
    assert config.train_args == {"adam_beta2": 0.95, "optim": "adamw_torch"}
    assert config.resolved()["train_args"] == {"adam_beta2": 0.95, "optim": "adamw_torch"}  # saved with the model
    # Flags still win over the file, under ssogen's names.
    flagged = build_config({**REQUIRED, "grad_accum": 8}, tmp_path / "train.yaml")
    assert flagged.grad_accum == 8


def test_one_setting_under_both_names_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"'lr' \(line 1\) and 'learning_rate' \(line 2\) both set --lr; keep one"):
        _config(tmp_path, "lr: 1.0e-6\nlearning_rate: 2.0e-6\n")
    with pytest.raises(UserError, match=r"'grad_accum' \(line 1\) and 'gradient_accumulation_steps' \(line 2\)"):
        _config(tmp_path, "grad_accum: 2\ngradient_accumulation_steps: 4\n")
    with pytest.raises(UserError) as both:
        _config(tmp_path, "lr: 1.0e-6\nwarmup_ratio: 0.1\nwarmup-steps: 10\n")
    # both lines, as for `lr` with `learning_rate` (only --warmup-ratio's was named)
    path = tmp_path / "train.yaml"
    assert str(both.value) == ("--warmup-ratio and warmup_steps both set the warmup; keep one (set in "
                               f"{path}:2, {path}:3)")
    with pytest.raises(UserError) as flag:
        build_config({**REQUIRED, "warmup_ratio": 0.2}, path)
    assert str(flag.value).endswith(f"keep one (set in {path}:3)")


def test_a_suggestion_never_names_a_refused_key_and_another_command_s_key_is_named_so(tmp_path: Path) -> None:
    """A generate config given to train: `max_tokens (line 1; did you mean hub_token?)`, a key train refuses."""
    path = tmp_path / "train.yaml"
    path.write_text("max_tokens: 64\nkeep_truncated: true\nhub_tokn: x\noverwrit: true\n")
    with pytest.raises(UserError) as info:
        build_config(dict(REQUIRED), path)
    assert str(info.value) == (
        f"{path}: unknown key(s): hub_tokn (line 3; did you mean hub_revision?), overwrit (line 4); max_tokens "
        "(line 1) is an option of `ssogen generate` and `ssogen judge`, not of `ssogen train`; keep_truncated "
        "(line 2) is an option of `ssogen generate`, not of `ssogen train`")


def test_unknown_keys_all_at_once_with_suggestions_from_both_vocabularies(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("gradient_acumulation_steps: 2\nlamda: 0.2\nadam_beta3: 0.9\nzzz: red\n")
    with pytest.raises(UserError) as info:
        build_config(dict(REQUIRED), path)
    assert str(info.value) == (
        f"{path}: unknown key(s): gradient_acumulation_steps (line 1; did you mean gradient_accumulation_steps?), "
        "lamda (line 2; did you mean lambda?), adam_beta3 (line 3; did you mean adam_beta2?), zzz (line 4)")


def test_settings_ssogen_must_own_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="remove_unused_columns \\(line 2\\) cannot be set: ssogen's collator"):
        _config(tmp_path, "lr: 1.0e-6\nremove_unused_columns: true\nhub_token: hf_x\n")
    with pytest.raises(UserError, match="hub_token \\(line 1\\) cannot be set: .*set HF_TOKEN"):
        _config(tmp_path, "hub_token: hf_x\n")


def test_passed_fields_reach_training_arguments(tmp_path: Path) -> None:
    from ssogen.train.training_args import training_arguments

    config = _config(tmp_path, "gradient_accumulation_steps: 3\nadam_beta2: 0.95\nwarmup_steps: 5\n"
                               "save_strategy: 'no'\ncpu: true\n")
    args = training_arguments(config)
    assert (args.gradient_accumulation_steps, args.adam_beta2, args.warmup_steps) == (3, 0.95, 5)
    assert args.save_strategy == "no" and args.remove_unused_columns is False
    default = training_arguments(_config(tmp_path, "cpu: true\n"))
    assert default.warmup_steps == pytest.approx(0.04)  # --warmup-ratio, as a ratio below 1
    # Set through the alias in the file: named as the file's line, not as --scheduler.
    with pytest.raises(UserError, match=r"invalid training option \(.*train\.yaml:2: lr_scheduler_type\): "
                                        "no-such-schedule is not a valid"):
        training_arguments(_config(tmp_path, "cpu: true\nlr_scheduler_type: no-such-schedule\n"))
    flag = build_config({**REQUIRED, "scheduler": "no-such-schedule"})
    with pytest.raises(UserError, match=r"invalid training option \(--scheduler\): no-such-schedule is not a valid"):
        training_arguments(flag)


def test_a_missing_logger_package_is_one_line_before_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    # Absent whatever this environment holds: the check asks importlib.util.find_spec.
    hidden = ("tensorboard", "tensorboardX", "wandb", "clearml")
    real = importlib.util.find_spec
    monkeypatch.setattr(integrations.importlib.util, "find_spec",
                        lambda name, *a: None if name in hidden else real(name, *a))
    for value in ("tensorboard", "none,wandb", ["wandb"], "clearml"):
        with pytest.raises(UserError) as info:
            integrations.check_report_to(value)
        assert info.value.exit_code == 1 and "package is not installed (pip install" in str(info.value)
    with pytest.raises(UserError, match="--report-to tensorbored: unknown logger") as unknown:
        integrations.check_report_to("tensorbored")
    assert unknown.value.exit_code == 2
    assert integrations.check_report_to("none") == [] and integrations.check_report_to("all") == ["all"]


def test_cli_training_with_training_arguments_in_the_config(tiny_model: Path, tmp_path: Path,
                                                            one_torch_thread: None) -> None:
    data = write_synthetic_sso(tmp_path / "data", count=4)
    config = tmp_path / "train.yaml"
    config.write_text("gradient_accumulation_steps: 2\nper_device_train_batch_size: 1\nlearning_rate: 1.0e-4\n"
                      "adam_beta2: 0.9\nmax_steps: 2\nlogging_steps: 1\nsave_steps: 0\n")
    out = tmp_path / "trained"
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--model", str(tiny_model), "--out", str(out),
                                      "--config", str(config), "--max-length", "256", "--max-prompt-length", "128"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "ssogen_train_config.json").read_text())["config"]
    assert (saved["grad_accum"], saved["batch_size"], saved["lr"]) == (2, 1, 1e-4)
    assert saved["train_args"] == {"adam_beta2": 0.9}
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert (args.gradient_accumulation_steps, args.adam_beta2, args.max_steps) == (2, 0.9, 2)
    (log,) = (out / "logs").glob("train-*.log")
    text = log.read_text()
    assert "INFO ssogen.train: step 2: " in text and "finished in" in text


FAKE_WANDB = {  # an installed wandb that cannot log in, as on a machine without an API key or a terminal
    "wandb/__init__.py": "run = None\n\nclass UsageError(Exception):\n    pass\n\n"
                         "def termwarn(*args, **kwargs):\n    pass\n\n"
                         "def init(*args, **kwargs):\n"
                         "    raise UsageError('api_key not configured (no-tty). call wandb.login(key=...)')\n",
    "wandb/sdk/__init__.py": "", "wandb/sdk/lib/__init__.py": "",
    "wandb/sdk/lib/config_util.py": "class ConfigError(Exception):\n    pass\n",
}


def test_a_logger_that_fails_while_training_is_one_line(tiny_model: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, one_torch_thread: None
                                                        ) -> None:
    import sys

    for name, text in FAKE_WANDB.items():
        (tmp_path / "site" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "site" / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    data = write_synthetic_sso(tmp_path / "data", count=4)
    out = tmp_path / "trained"
    try:
        result = CliRunner().invoke(app, ["train", "--data", str(data), "--model", str(tiny_model), "--out", str(out),
                                          "--report-to", "wandb", "--max-steps", "1", "--max-length", "256",
                                          "--max-prompt-length", "128"])
    finally:
        for module in [m for m in sys.modules if m == "wandb" or m.startswith("wandb.")]:
            del sys.modules[module]
    assert result.exit_code == 1, result.output
    # One error line (a warning of transformers' may come before it, depending on what ran in this process).
    assert [line for line in result.stderr.splitlines() if line.startswith("error")] == [
        "error: --report-to wandb: the logger failed: UsageError: api_key not configured (no-tty). call "
        "wandb.login(key=...) (fix it, or drop wandb from --report-to)"]
    (log,) = (out / "logs").glob("train-*.log")
    text = log.read_text()
    assert "ERROR ssogen.train: the wandb logger failed" in text and "Traceback" in text and "Traceback" not in \
        result.output
    # Anything else that fails inside training is not blamed on a logger.
    with pytest.raises(ZeroDivisionError), integrations.integration_errors(["wandb"]):
        _ = 1 / 0


def test_bf16_by_default_only_on_a_gpu_with_native_bf16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As TRL a plain run trains in bf16 on a GPU, but only where that is the fast path: not on the CPU, not on a
    GPU that emulates bf16, not when the config file asks for fp16. A given --bf16 / --no-bf16 always wins."""
    import torch

    from ssogen.train.training_args import use_bf16

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    native: list[bool] = []  # what the stand-in GPU answers, and what it was asked
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: native.append(including_emulation) or gpu_has_bf16)
    plain = _config(tmp_path, "")
    assert plain.bf16 is None and plain.fingerprinted()["bf16"] is None  # decided where it runs, not before
    for gpu_has_bf16 in (True, False):
        assert use_bf16(plain, cuda=True) is gpu_has_bf16
        assert use_bf16(plain, cuda=False) is False  # the CPU (or --cpu): float32
        assert use_bf16(_config(tmp_path, "fp16: true\n"), cuda=True) is False
        assert use_bf16(_config(tmp_path, "bf16: false\n"), cuda=True) is False
        assert use_bf16(_config(tmp_path, "bf16: true\n"), cuda=False) is True
    assert native == [False, False]  # asked only for the plain GPU case, and never with emulation counted
    # Under `accelerate launch` its configured mixed_precision decides (transformers follows it as well).
    for launcher, expected in (("bf16", True), ("fp16", False), ("no", False)):
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
        assert use_bf16(plain, cuda=True) is expected and use_bf16(plain, cuda=False) is expected
    assert use_bf16(_config(tmp_path, "bf16: false\n"), cuda=True) is False and len(native) == 2
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    from ssogen.train.training_args import training_arguments

    assert training_arguments(plain).bf16 is False  # this machine has no GPU


def test_the_recorded_precision_is_what_the_trainer_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers autocasts as `accelerate launch` was configured unless bf16 or fp16 is set; ssogen's attention
    mask, packing tolerance, reference-cache key and saved config follow the same rule."""
    from types import SimpleNamespace

    import torch

    from ssogen.train.training_args import autocast_dtype, mixed_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    flags = {(False, False): "no", (True, False): "bf16", (False, True): "fp16"}
    for (bf16, fp16), expected in flags.items():
        assert mixed_precision(SimpleNamespace(bf16=bf16, fp16=fp16)) == expected
    for launcher, expected in (("bf16", "bf16"), ("fp16", "fp16"), ("no", "no")):
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
        assert mixed_precision(SimpleNamespace(bf16=False, fp16=False)) == expected
        assert mixed_precision(SimpleNamespace(bf16=True, fp16=False)) == "bf16"  # the flag wins, as in transformers
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert autocast_dtype(SimpleNamespace(bf16=False, fp16=False)) is torch.float16
    assert autocast_dtype(SimpleNamespace(bf16=True, fp16=False)) is torch.bfloat16
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert autocast_dtype(SimpleNamespace(bf16=False, fp16=False)) is None


@pytest.mark.parametrize(("flags", "message"), [
    ({"no_w": True, "w_placement": "all"}, "--w-placement cannot be used with --no-w (there is no W)"),
    ({"no_w": True, "w_placement": "g"}, "--w-placement cannot be used with --no-w (there is no W)"),  # the default
    ({"objective": "v2", "w_placement": "g"}, "--w-placement cannot be used with --objective v2 (v2 has no W term)"),
    ({"no_w": True, "alpha": 0.3}, "--alpha cannot be used with --no-w (there is no W)"),
    ({"no_g": True, "lam": 0.2}, "--lambda cannot be used with --no-g (there is no G term to weigh)"),
    ({"objective": "v2", "alpha": 0.3}, "--alpha cannot be used with --objective v2 (v2 has no W or G term)"),
    ({"objective": "v2", "lam": 0.2}, "--lambda cannot be used with --objective v2 (v2 has no W or G term)"),
])
def test_an_option_of_a_term_the_objective_lacks_is_refused(flags: dict[str, object], message: str) -> None:
    """They were accepted, ignored, and entered the run's fingerprint all the same."""
    with pytest.raises(UserError, match=re.escape(message)):
        build_config({**REQUIRED, **flags})
    defaults = {name: value for name, value in flags.items() if name in ("no_w", "no_g", "objective")}
    assert build_config({**REQUIRED, **defaults}).alpha == 0.5  # the term's options left alone: fine


def test_a_bad_training_arguments_value_names_its_key_in_the_config(tmp_path: Path) -> None:
    """transformers' message quotes the value only ("foo is not a valid OptimizerNames")."""
    from ssogen.train.training_args import training_arguments

    with pytest.raises(UserError, match=r"^invalid training option \(.*train\.yaml:2: optim\): foo is not a valid "):
        training_arguments(_config(tmp_path, "save_strategy: 'no'\noptim: foo\n"))  # only the refused one named
    # A config built without its file's lines (a copy validated anew) still names the key.
    copied = TrainConfig.model_validate({**REQUIRED, "train_args": {"optim": "foo"}})
    with pytest.raises(UserError, match=r"^invalid training option \(optim in --config\): foo is not a valid "):
        training_arguments(copied)


def test_fp16_in_the_file_beside_bf16_names_both_places(tmp_path: Path) -> None:
    from ssogen.train.training_args import training_arguments

    (tmp_path / "train.yaml").write_text("fp16: true\n")
    config = build_config({**REQUIRED, "bf16": True}, tmp_path / "train.yaml")
    with pytest.raises(UserError, match=r"^invalid training option \(.*train\.yaml:1: fp16, --bf16\): At most one "):
        training_arguments(config)


def test_values_transformers_keeps_unchecked_are_checked_before_the_model_loads(tmp_path: Path) -> None:
    """`adam_beta2: high` failed in the optimizer, cosine's `min_lr_rate` in the schedule: both after loading."""
    from ssogen.train.training_args import training_arguments

    with pytest.raises(UserError, match=r"train\.yaml:1: adam_beta2: expected a number \(got 'high'\)$"):
        training_arguments(_config(tmp_path, "adam_beta2: high\n"))
    with pytest.raises(UserError, match=r"train\.yaml:1: lr_scheduler_kwargs: not settings of --scheduler cosine "
                                        r"\(.*min_lr_rate"):
        training_arguments(_config(tmp_path, "lr_scheduler_kwargs: {min_lr_rate: 0.1}\n"))
    # The README's example: the same kwargs with the schedule that takes them.
    assert training_arguments(_config(tmp_path, "lr_scheduler_kwargs: {min_lr_rate: 0.1}\nlr_scheduler_type: "
                                                "cosine_with_min_lr\nadam_beta2: 0.95\n")).adam_beta2 == 0.95


def test_a_rule_across_options_names_the_config_lines_that_set_them(tmp_path: Path) -> None:
    """Its message names flags; a value that came from the file is found at its line, not on the command line."""
    path = tmp_path / "train.yaml"
    with pytest.raises(UserError, match=re.escape(f"--alpha cannot be used with --no-w (there is no W) (set in "
                                                  f"{path}:2, {path}:1)")):
        _config(tmp_path, "no_w: true\nalpha: 0.3\n")
    path.write_text("alpha: 0.3\n")
    with pytest.raises(UserError, match=re.escape(f"(there is no W) (set in {path}:1)")):
        build_config({**REQUIRED, "no_w": True}, path)


def test_objective_defaults_follow_the_spec(tmp_path: Path) -> None:
    # v1: IPO base, β 0.1, α 0.5, λ 0.1, no SFT mix; v2 ("data generator"): DPO base with γ = 0.1 (SPEC §2.2).
    base = {"data": tmp_path, "model": "m", "out": tmp_path / "out"}
    v1 = TrainConfig(**base).loss_settings()
    assert (v1.objective, v1.loss_type, v1.beta, v1.alpha, v1.lam, v1.sft_weight) == ("v1", "ipo", 0.1, 0.5, 0.1, 0.0)
    assert (v1.w_placement, v1.w_detach, v1.use_w, v1.use_g) == ("g", False, True, True)
    v2 = TrainConfig(**base, objective="v2").loss_settings()
    assert (v2.objective, v2.loss_type, v2.sft_weight, v2.beta) == ("v2", "dpo", 0.1, 0.1)


def test_schedule_and_length_defaults_are_the_papers_settings(tmp_path: Path) -> None:
    # SPEC §2.2 (the paper's v2 settings): lr 5e-7, one epoch, cosine, warmup 0.04, 2048 tokens of which 1024 prompt.
    from ssogen.train.training_args import training_arguments

    config = _config(tmp_path, "cpu: true\n")
    assert (config.lr, config.epochs, config.scheduler, config.warmup_ratio) == (5e-7, 1.0, "cosine", 0.04)
    assert (config.max_length, config.max_prompt_length) == (2048, 1024)
    args = training_arguments(config)
    assert (args.learning_rate, args.num_train_epochs, args.max_steps) == (5e-7, 1.0, -1)
    assert str(args.lr_scheduler_type).rsplit(".", 1)[-1].lower() == "cosine"
