"""Options defined once: the flag, its help with the real default, the YAML key and the validation all come from
one pydantic field, and a bad value is blamed on the flag or on FILE:LINE of the config file."""

from __future__ import annotations

import pwd
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.cli.common import user_errors
from ssogen.cli.options import with_options
from ssogen.dataset.options import PushOptions, StatsOptions
from ssogen.dataset.score import ScoreConfig
from ssogen.errors import UserError
from ssogen.generate.config import RunConfig, resolve_config
from ssogen.iterate.options import IterateOptions
from ssogen.judge.run import JudgeOptions
from ssogen.origins import with_config_lines
from ssogen.settings import option, option_specs
from ssogen.settings_resolution import resolve_settings
from ssogen.train.config import TrainConfig, build_config


class Toy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = option(3, "How many.", ge=1)
    keep: bool = option(False, "Keep them.", flags=("--keep/--drop",))
    name: str = option(..., "A name.")


def _recording_app(model: type[BaseModel]) -> tuple[typer.Typer, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    toy_app = typer.Typer()

    @toy_app.command()
    @with_options(model)
    def command(options: dict[str, Any], config: Path | None = None) -> None:
        seen.append(resolve_settings(model, options, config).model_dump())

    return toy_app, seen


def test_one_field_gives_flag_help_default_and_validation(tmp_path: Path) -> None:
    toy_app, seen = _recording_app(Toy)
    help_text = CliRunner().invoke(toy_app, ["--help"], env={"COLUMNS": "200"}).output
    assert "How many. [default: 3]" in help_text and "--keep" in help_text and "--drop" in help_text
    assert "A name. Required (here or in --config)." in help_text
    assert CliRunner().invoke(toy_app, ["--name", "n", "--drop"]).exit_code == 0
    config = tmp_path / "toy.yaml"
    config.write_text("size: 5\nkeep: true\n")
    assert CliRunner().invoke(toy_app, ["--name", "n", "--config", str(config), "--size", "7"]).exit_code == 0
    assert seen == [{"size": 3, "keep": False, "name": "n"}, {"size": 7, "keep": True, "name": "n"}]


@pytest.mark.parametrize("model", [RunConfig, TrainConfig, ScoreConfig, JudgeOptions, IterateOptions, StatsOptions,
                                   PushOptions])
def test_help_of_every_option_shows_the_fields_own_default(model: type[BaseModel]) -> None:
    command_name = {RunConfig: "generate", TrainConfig: "train", ScoreConfig: "score", JudgeOptions: "judge",
                    IterateOptions: "iterate", StatsOptions: "stats", PushOptions: "push-to-hub"}[model]
    command = typer.main.get_command(app).commands[command_name]  # type: ignore[attr-defined]
    helps = {p.name: p.help or "" for p in command.params if p.param_type_name == "option"}
    for spec in option_specs(model):
        if not spec.cli:  # the TrainingArguments pass-through: config file only
            assert spec.field not in helps
            continue
        shown = spec.shown_default()
        assert spec.help in helps[spec.field].replace("\\[", "[")
        if shown is not None:
            assert helps[spec.field].endswith(f"\\[default: {shown}]"), (spec.field, helps[spec.field])
        assert "Default " not in helps[spec.field]  # no default retyped by hand
    if model is RunConfig:
        assert helps["temperature"].endswith("[default: 0.7]")
        assert "0.25 on the CPU build" in helps["kv_cache_gb"]


def test_bool_flags_keep_their_spellings() -> None:
    train_app, seen = _recording_app(TrainConfig)
    result = CliRunner().invoke(train_app, ["--data", "d", "--model", "m", "--out", "o", "--no-w", "--cpu",
                                            "--lambda", "0.3", "--loss", "dpo", "--lora", "--no-fused-head"])
    assert result.exit_code == 0, result.output
    assert (seen[0]["no_w"], seen[0]["use_cpu"], seen[0]["lam"], seen[0]["loss_type"], seen[0]["lora"],
            seen[0]["fused_head"]) == (True, True, 0.3, "dpo", True, False)
    generate_app, seen = _recording_app(RunConfig)
    for flag, kept in (("--keep-truncated", True), ("--drop-truncated", False)):
        assert CliRunner().invoke(generate_app, ["--model", "m", "--out", "o", "-k", "3", flag]).exit_code == 0
        assert (seen[-1]["keep_truncated"], seen[-1]["features_per_query"]) == (kept, 3)


def test_a_bad_flag_is_blamed_on_the_flag() -> None:
    with pytest.raises(UserError, match=r"^--temperature: Input should be greater than or equal to 0 \(got -1\)$"):
        resolve_config({"model": "m", "out": "o", "temperature": -1})


def test_a_bad_file_value_is_blamed_on_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: m\nout: o\ntemperature: -1\nselection: maybe\n")
    with pytest.raises(UserError) as info:
        resolve_config({}, path)
    assert str(info.value) == (f"{path}:4: selection: Input should be 'free' or 'guided' (got 'maybe'); "
                               f"{path}:3: temperature: Input should be greater than or equal to 0 (got -1)")
    # A flag replaces the bad file value: precedence defaults < file < flags.
    assert resolve_config({"temperature": 0.2, "selection": "guided"}, path).temperature == 0.2


def test_minus_zero_is_zero_from_a_flag_and_from_a_file(tmp_path: Path) -> None:
    """`--lambda -0` passed `ge=0` and showed as `-0·G` in the objective train prints."""
    import math

    path = tmp_path / "train.yaml"
    path.write_text("data: d\nmodel: m\nout: o\nwarmup_ratio: -0.0\n")
    config = resolve_settings(TrainConfig, {"lam": -0.0}, path)
    assert math.copysign(1, config.lam) == 1 and math.copysign(1, config.warmup_ratio) == 1
    assert "-0" not in config.loss_settings().formula()


def test_null_in_a_config_file_is_the_default(tmp_path: Path) -> None:
    """`temperature: null` or `max_tokens:` (left blank) was refused as "should be a valid number (got None)":
    null is the default, as for chunk_size, whose default depends on the engines."""
    path = tmp_path / "run.yaml"
    path.write_text("model: m\nout: o\ntemperature: null\nmax_tokens:\n")
    defaults = RunConfig.model_validate({"model": "m", "out": "o"})
    config = resolve_config({}, path)
    assert (config.temperature, config.max_tokens) == (defaults.temperature, defaults.max_tokens)
    assert resolve_config({"temperature": 0.2}, path).temperature == 0.2
    path.write_text("model:\nout: o\n")  # a required option left blank is still missing
    with pytest.raises(UserError, match=r"^--model is required"):
        resolve_config({}, path)


def test_a_later_check_of_a_file_value_names_the_line_as_well(tmp_path: Path) -> None:
    """An error found after the settings were read names the flag; where a config file set that flag (and no flag
    overrode it), the command's error line adds the file's line, in the order the message names the flags."""
    toy_app = typer.Typer()

    @toy_app.command()
    @user_errors
    @with_options(Toy)
    def command(options: dict[str, Any], config: Path | None = None) -> None:
        settings = resolve_settings(Toy, options, config)
        raise UserError(f"--name {settings.name}: no such thing; --size {settings.size} is too many")

    path = tmp_path / "toy.yaml"
    path.write_text("size: 4\nname: x\n")
    error = CliRunner().invoke(toy_app, ["--config", str(path)]).output.strip()
    assert error.endswith(f"is too many (set in {path}:2, {path}:1)"), error
    error = CliRunner().invoke(toy_app, ["--config", str(path), "--name", "y"]).output.strip()
    assert error.endswith(f"is too many (set in {path}:1)"), error
    # A flag named in parentheses is advice, not the cause: not blamed.
    assert with_config_lines("interrupted (--size sets how often)", {"--size": "toy.yaml:1"}) == \
        "interrupted (--size sets how often)"
    # Outside a command (the Python API) and for flags alone: the message as raised.
    error = CliRunner().invoke(toy_app, ["--name", "y", "--size", "2"]).output.strip()
    assert error.endswith("--size 2 is too many"), error


def test_a_home_path_in_a_config_file_is_expanded_as_the_shell_expands_a_flag(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`out: ~/x` was the folder `./~/x`, and `prompts: ~/q.jsonl` no such file: only the shell expands `~`."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "run.yaml"
    path.write_text("model: m\nout: ~/x\nprompts: ~/q.jsonl\n")
    config = resolve_config({}, path)
    assert (config.out, config.prompts) == (str(tmp_path / "home" / "x"), str(tmp_path / "home" / "q.jsonl"))
    # Another user's home as well (`~root/x`); a user that does not exist stays as written, as in the shell.
    root_home = pwd.getpwnam("root").pw_dir
    path.write_text("model: m\nout: ~root/x\nprompts: ~no-such-user-here/q.jsonl\n")
    config = resolve_config({}, path)
    assert (config.out, config.prompts) == (f"{root_home}/x", "~no-such-user-here/q.jsonl")


def test_all_unknown_keys_are_reported_at_once_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: m\ntemprature: 0.5\nmax-tokenz: 3\ncolour: red\n")
    with pytest.raises(UserError) as info:
        resolve_config({}, path)
    assert str(info.value) == (f"{path}: unknown key(s): temprature (line 2; did you mean temperature?), "
                               "max-tokenz (line 3; did you mean max-tokens?), colour (line 4)")


def test_a_key_of_another_command_is_named_as_its_option(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: m\nlr: 1.0e-6\nlorra: 3\nbatch-size: 2\nfilter: likelihood\n")
    with pytest.raises(UserError) as info:
        resolve_config({"out": "o"}, path)
    assert str(info.value) == (f"{path}: unknown key(s): lorra (line 3); lr (line 2) and batch-size (line 4) are "
                               "options of `ssogen train`, not of `ssogen generate`; filter (line 5) is an option of "
                               "`ssogen iterate` and `ssogen score`, not of `ssogen generate`")


def test_yes_or_no_is_not_a_number(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: m\nout: o\nlimit: true\nseed: false\nraw-greedy: true\n")
    with pytest.raises(UserError) as info:
        resolve_config({}, path)  # pydantic took true as 1: `limit: true` ran one row
    assert str(info.value) == (f"{path}: limit (line 3): true is a yes/no value, which --limit does not take; "
                               "seed (line 4): false is a yes/no value, which --seed does not take")
    path.write_text("model: m\nout: o\nraw-greedy: yes\n")
    assert resolve_config({}, path).raw_greedy is True  # where a flag is yes/no, so is its key


def test_a_command_line_flag_in_a_config_file_is_named_as_one(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: m\noverwrite: true\ndry-run: true\n")
    with pytest.raises(UserError) as info:
        resolve_config({}, path)
    assert str(info.value).startswith(f"{path}: overwrite (line 2) is a command-line flag only: give --overwrite "
                                      "(a config file holds the run's options")
    assert "dry-run (line 3) is a command-line flag only: give --dry-run" in str(info.value)
    # Also where it is a field of the command's settings: `overwrite: true` in a train config replaced a run.
    from ssogen.train.config import TrainConfig

    path.write_text("overwrite: true\n")
    with pytest.raises(UserError, match=r"overwrite \(line 1\) is a command-line flag only: give --overwrite"):
        resolve_settings(TrainConfig, {"data": "d", "model": "m", "out": "o"}, path)


def test_an_option_set_twice_names_both_keys_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("max-tokens: 5\nseed: 1\nmax_tokens: 6\n")
    with pytest.raises(UserError, match=r"'max-tokens' \(line 1\) and 'max_tokens' \(line 3\) both set --max-tokens"):
        resolve_config({"model": "m", "out": "o"}, path)
    train = tmp_path / "train.yaml"
    train.write_text("lambda: 0.2\nlam: 0.3\n")
    with pytest.raises(UserError, match=r"'lambda' \(line 1\) and 'lam' \(line 2\) both set --lambda"):
        build_config({"data": "d", "model": "m", "out": "o"}, train)


def test_flag_names_are_yaml_keys_and_text_fields_keep_their_text(tmp_path: Path) -> None:
    train = tmp_path / "train.yaml"
    train.write_text("lambda: 0.2\nloss: dpo\ncpu: true\nmodel: 1.10\n")
    settings = build_config({"data": "d", "out": "o"}, train)
    assert (settings.lam, settings.loss_type, settings.use_cpu, settings.model) == (0.2, "dpo", True, "1.10")


def test_missing_required_options_are_named_together() -> None:
    with pytest.raises(UserError, match=r"^--data and --out are required \(on the command line or in the config"):
        build_config({"model": "m"})


def test_version() -> None:
    from ssogen import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"ssogen {__version__}"


def test_no_option_takes_inf_or_nan() -> None:
    """`--kv-cache-gb inf` gave an OverflowError traceback, `--lr inf` trained to nan: a float option is finite."""
    import typing

    from pydantic import ValidationError

    from ssogen.dataset.score import ScoreConfig
    from ssogen.iterate.options import IterateOptions
    from ssogen.judge.run import JudgeOptions
    from ssogen.train.config import TrainConfig

    models = [RunConfig, TrainConfig, ScoreConfig, JudgeOptions, IterateOptions]
    checked = 0
    for model in models:
        for name, info in model.model_fields.items():
            if float not in typing.get_args(info.annotation) and info.annotation is not float:
                continue
            for value in (float("inf"), float("nan")):
                with pytest.raises(ValidationError) as error:
                    model.model_validate({name: value})
                assert any(e["loc"] == (name,) and e["type"] == "finite_number" for e in error.value.errors()), (
                    model.__name__, name, value)
                checked += 1
    assert checked > 20  # every float option of the five commands


@pytest.mark.parametrize("dp", ["2", "'2'", "2.0"])
def test_dp_in_a_config_file_sizes_the_chunks_as_the_flag_does(tmp_path: Path, dp: str) -> None:
    """`dp: "2"` or `dp: 2.0` in a config file ran 2 engines with the chunks of one (64 rows, not 128)."""
    path = tmp_path / "run.yaml"
    path.write_text(f"model: m\nout: o\ndp: {dp}\n")
    from_file = resolve_config({}, path)
    from_flag = resolve_config({"model": "m", "out": "o", "dp": 2})
    assert (from_file.dp, from_file.chunk_size) == (from_flag.dp, from_flag.chunk_size) == (2, 128)


def test_an_off_switch_in_a_config_file_names_the_key_that_says_it(tmp_path: Path) -> None:
    """`drop-truncated: true` was an unknown key "(did you mean keep-truncated?)", and `no_bf16: true` one "(did you
    mean bf16?)": the suggestion, followed, turned the option on instead of off."""
    path = tmp_path / "run.yaml"
    path.write_text("model: m\nout: o\ndrop-truncated: true\ndrop_empty: false\n")
    with pytest.raises(UserError) as info:
        resolve_config({}, path)
    assert str(info.value) == (f"{path}: drop-truncated (line 3) is the off switch of --keep-truncated: write "
                               "keep-truncated: false; drop_empty (line 4) is the off switch of --keep-empty: write "
                               "keep_empty: true")
    path.write_text("no_bf16: true\nno-fused-head: yes\n")
    with pytest.raises(UserError) as info:
        build_config({"data": "d", "model": "m", "out": "o"}, path)
    assert str(info.value) == (f"{path}: no_bf16 (line 1) is the off switch of --bf16: write bf16: false; "
                               "no-fused-head (line 2) is the off switch of --fused-head: write fused-head: false")


def test_the_log_names_each_option_by_its_flag_and_runs_again_as_logged(tmp_path: Path) -> None:
    """The log's first line read `ssogen train --folder=run1 ... --loss-type=dpo --lam=0.3 --use-cpu=True
    --fused-head=False`: field names that are no flags, an argument as a flag, and values a switch does not take."""
    import shlex

    from ssogen.cli.common import command_log

    seen: list[dict[str, Any]] = []
    logs: list[Path] = []
    toy_app = typer.Typer()

    @toy_app.command()
    @with_options(TrainConfig)
    @user_errors
    def train(options: dict[str, Any], folder: Path, overwrite_all: bool = False) -> None:
        seen.append(resolve_settings(TrainConfig, options).model_dump())
        with command_log(tmp_path, "train", libraries=False) as log:
            logs.append(log)

    args = ["run1", "--data", "my data", "--model", "m", "--out", "o", "--lambda", "0.3", "--cpu", "--loss", "dpo",
            "--no-fused-head", "--lora", "--lora-target-modules", "q_proj,v_proj", "--report-to", "none"]
    assert CliRunner().invoke(toy_app, args).exit_code == 0
    logged = logs[0].read_text().splitlines()[0].split(" train: ", 1)[1]
    # A value with a space is quoted, as a shell needs it (it was two words).
    assert logged == ("ssogen train run1 --no-overwrite-all '--data=my data' --model=m --out=o --loss=dpo "
                      "--lambda=0.3 --report-to=none --cpu --no-fused-head --lora --lora-target-modules=q_proj,v_proj"
                      ), logged
    assert CliRunner().invoke(toy_app, shlex.split(logged)[2:]).exit_code == 0
    assert seen[1] == seen[0]
