"""--help names values the click way (FOLDER in the usage line; FOLDER, FILE, INTEGER, TEXT or [a|b] beside an
option that takes a value; nothing beside a flag), for every command, whatever typer's own style (typer 0.29 writes
`{folder}`, `<path>` and `<bool>` beside every flag)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

import pytest
import typer
from typer._click import Context
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.cli.helpstyle import CHOICES_LINE_WIDTH, Command, Group, stacked_choices
from ssogen.dataset.score import ScoreConfig
from ssogen.generate.config import RunConfig
from ssogen.iterate.options import IterateOptions
from ssogen.judge.run import JudgeOptions
from ssogen.settings import option_specs
from ssogen.train.config import TrainConfig

TYPER_TYPE_WORD = re.compile(r"<(?:bool|str|int|float|path|dir|file)>")


def _command_paths(command: typer.core.TyperGroup | typer.core.TyperCommand, path: tuple[str, ...] = ()
                   ) -> list[tuple[str, ...]]:
    paths = [path]
    for name, sub in getattr(command, "commands", {}).items():
        paths += _command_paths(sub, (*path, name))
    return paths


ALL_COMMANDS = _command_paths(typer.main.get_command(app))


def _help(path: tuple[str, ...], columns: int) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)}, prog_name="ssogen")
    assert result.exit_code == 0, result.output
    return result.output


def test_stats_help_shows_folder_path_and_no_type_beside_a_flag() -> None:
    shown = _help(("stats",), 100)
    assert "Usage: ssogen stats [OPTIONS] FOLDER" in shown
    assert re.search(r"FOLDER\s+An ssogen output folder", shown)  # its name says what it is: no PATH beside it
    assert re.search(r"--json\s+Print the statistics as JSON", shown)  # a flag: its help follows at once
    assert re.search(r"--plots\s+Draw PNG plots.*\n\W*--no-plots\s", shown)  # the --no- form under its flag
    assert re.search(r"--help\s+Show this message", shown)
    assert re.search(r"--templates\s+FOLDER\s+Folder whose card", shown)  # an explicit metavar stays
    assert re.search(r"--license\s+TEXT\s+Set the dataset's license", shown)
    assert not TYPER_TYPE_WORD.search(shown)


def test_plain_help_without_rich_keeps_a_pair_on_one_line() -> None:
    # The --no- form goes under its flag only in Rich's table; click's plain help (TYPER_USE_RICH=0) has its own layout.
    env = {**os.environ, "TYPER_USE_RICH": "0", "COLUMNS": "80"}
    shown = subprocess.run([sys.executable, "-m", "ssogen", "stats", "--help"], env=env, capture_output=True,
                           text=True, check=True).stdout
    assert re.search(r"--plots / --no-plots\s+Draw PNG plots", shown), shown


def test_a_missing_argument_is_named_as_the_usage_line_names_it() -> None:
    result = CliRunner().invoke(app, ["stats"], env={"COLUMNS": "200"}, prog_name="ssogen")
    assert result.exit_code == 2
    assert result.stderr == ("error: Missing argument 'FOLDER'. (usage: ssogen stats [OPTIONS] FOLDER; see ssogen "
                             "stats --help)\n")


@pytest.mark.parametrize("args", [["generate", "-k"], ["generate", "--bogus"]], ids=["no-value", "unknown"])
def test_an_option_error_of_click_s_parser_names_the_usage_too(args: list[str]) -> None:
    """click's parser raises these without a context: the usage hint was missing."""
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"}, prog_name="ssogen")
    assert result.exit_code == 2
    assert result.stderr.endswith(" (usage: ssogen generate [OPTIONS]; see ssogen generate --help)\n"), result.stderr


def test_a_command_line_click_cannot_parse_is_one_error_line() -> None:
    """It was typer's usage block and a boxed panel, unlike every other error."""
    result = CliRunner().invoke(app, ["train", "--data", "d", "--model", "m", "--out", "o", "--max-steps", "2.5"],
                                env={"COLUMNS": "80"}, prog_name="ssogen")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: Invalid value for '--max-steps': Input should be a valid integer")
    assert result.stderr.count("\n") == 1 and "─" not in result.stderr
    assert CliRunner().invoke(app, ["--version"]).exit_code == 0


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda path: " ".join(path) or "ssogen")
def test_every_help_screen_uses_click_value_names(path: tuple[str, ...]) -> None:
    shown = _help(path, 120)
    usage = next(line for line in shown.splitlines() if "Usage:" in line)
    assert "{" not in usage and not TYPER_TYPE_WORD.search(shown), shown


def test_value_names_of_train_options() -> None:
    shown = _help(("train",), 120)
    assert re.search(r"--data\s+FOLDER\s", shown) and re.search(r"--model\s+TEXT\s", shown)
    assert re.search(r"--max-steps\s+INTEGER\s", shown) and re.search(r"--lr\s+FLOAT\s", shown)
    assert re.search(r"--cpu\s+Train on the CPU", shown)


def test_value_names_of_other_typer_types_and_parsing_unchanged() -> None:
    toy = typer.Typer(cls=Group)  # typer adds its --install-completion flags after the command is made
    seen: list[tuple[object, ...]] = []

    @toy.command(cls=Command)
    def run(paths: Annotated[list[Path], typer.Argument()], mode: Literal["fast", "slow"] = "fast",
            size: Annotated[int, typer.Option(min=1, max=9)] = 1,
            verbose: Annotated[int, typer.Option("-v", count=True)] = 0,
            tag: Annotated[list[str] | None, typer.Option()] = None) -> None:
        seen.append((paths, mode, size, verbose, tag))

    shown = CliRunner().invoke(toy, ["--help"], env={"COLUMNS": "120"}, prog_name="toy").output
    assert "Usage: toy [OPTIONS] PATHS..." in shown and re.search(r"PATHS\.\.\.\s+\[required\]", shown)
    assert re.search(r"--mode\s+\[fast\|slow\]\s", shown) and re.search(r"--size\s+INTEGER RANGE \[1<=x<=9\]", shown)
    assert re.search(r"--tag\s+TEXT\s", shown) and re.search(r"-v\s+\[default: 0\]", shown)
    assert re.search(r"--install-completion\s+Install completion", shown) and not TYPER_TYPE_WORD.search(shown)
    result = CliRunner().invoke(toy, ["a", "b", "--mode", "slow", "--size", "3", "-vv", "--tag", "x", "--tag", "y"])
    assert result.exit_code == 0 and seen == [([Path("a"), Path("b")], "slow", 3, 2, ["x", "y"])]
    assert CliRunner().invoke(toy, ["a", "--size", "12"]).exit_code == 2


def _option_names(path: tuple[str, ...]) -> list[str]:
    """Every flag the command at path defines, --no- forms and --help included, from its click object."""
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    params = command.get_params(Context(command))
    return [name for param in params if isinstance(param, typer.core.TyperOption) and not param.hidden
            for name in (*param.opts, *param.secondary_opts)]


@pytest.mark.parametrize(("command", "flag", "name"), [
    ("generate", "--out", "FOLDER"), ("generate", "--templates", "FOLDER"), ("generate", "--config", "FILE"),
    ("judge", "--templates", "FOLDER"), ("score", "--templates", "FOLDER"), ("train", "--data", "FOLDER"),
    ("train", "--out", "FOLDER"), ("train", "--config", "FILE"), ("train", "--resume-from-checkpoint", "FOLDER"),
    ("iterate", "--out", "FOLDER"), ("iterate", "--train-config", "FILE"), ("iterate", "--accelerate-config", "FILE"),
])
def test_a_folder_or_file_option_is_named_so(command: str, flag: str, name: str) -> None:
    # A folder given as text (generate's --out may be a Hub repo's local folder) is a FOLDER, as one given as a Path.
    assert re.search(rf"{flag}\s+{name}\s", _help((command,), 120)), (command, flag)


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda path: " ".join(path) or "ssogen")
def test_no_help_screen_names_a_value_path_or_dir(path: tuple[str, ...]) -> None:
    """generate --out read DIR, train --out and stats' FOLDER argument PATH, make-tiny-model `PATH  PATH`."""
    shown = _help(path, 120)
    assert not re.search(r"(?<![\w/-])(PATH|DIR)S?(?![\w/-])", shown), shown


def _metavars() -> dict[str, set[str]]:
    """Every flag of every command -> the value names its help shows."""
    found: dict[str, set[str]] = {}
    for path in ALL_COMMANDS:
        command = typer.main.get_command(app)
        for name in path:
            command = command.commands[name]
        ctx = Context(command)
        for param in command.get_params(ctx):
            if isinstance(param, typer.core.TyperOption) and (shown := param.display_type_rich(ctx)) is not None:
                found.setdefault(param.opts[0], set()).add(shown.replace("\n", ""))
    return found


def test_limit_s_help_says_what_the_readme_and_the_code_say() -> None:
    """The help said "first N prompts"; --limit counts usable rows only (a blank one is skipped and not counted:
    tests/generate/test_generate_units.py), as the README says."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    limit = next(spec for spec in option_specs(RunConfig) if spec.field == "limit")
    assert "first N usable prompts" in limit.help and "| first N usable prompts" in readme
    assert re.search(r"--limit\s+INTEGER\s+Use only the first N usable", _help(("generate",), 120))


def test_the_readme_names_values_as_help_does() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    shown = _metavars()
    named = re.findall(r"`(--[\w-]+) (FOLDER|FILE|DIR|PATH)`", readme)
    assert named
    wrong = [(flag, name, shown.get(flag)) for flag, name in named if name not in shown.get(flag, set())]
    assert not wrong, wrong


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda path: " ".join(path) or "ssogen")
def test_every_flag_is_shown_in_full(path: tuple[str, ...], columns: int) -> None:
    # At 80 columns typer gave a --no-name form a column of its own beside --name; with train's long pairs Rich then
    # squeezed every column and cut flag names with "…".
    shown = _help(path, columns)
    cut = [line for line in shown.splitlines() if "…" in line]
    missing = [name for name in _option_names(path) if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", shown)]
    assert not cut and not missing, f"cut lines: {cut}\nflags not shown in full: {missing}\n{shown}"


@pytest.mark.parametrize(("command", "model"), [("generate", RunConfig), ("train", TrainConfig), ("score", ScoreConfig),
                                                ("judge", JudgeOptions), ("iterate", IterateOptions)])
def test_choices_are_shown_beside_the_flag(command: str, model: type) -> None:
    """Every command shows an option's choices (generate, score and judge showed TEXT for --engine, --selection,
    --filter, --config while train showed [v1|v2]); a long list goes over lines, so that the panel keeps room for
    help at 80 columns."""
    shown = _help((command,), 120)
    for spec in option_specs(model):
        if spec.choices is None:
            continue
        lines = stacked_choices("[" + "|".join(spec.choices) + "]").split("\n")
        assert all(len(line) <= CHOICES_LINE_WIDTH for line in lines) or len(lines) == 1
        pattern = rf"{spec.flag}\s+" + r"\s.*\n.*\s".join(re.escape(line) for line in lines) + r"\s"
        assert re.search(pattern, shown), (spec.flag, lines)
    if command == "generate":
        assert re.search(r"--engine\s+\[vllm\|\s.*\n.*\stransformers\]\s", shown)


def test_make_tiny_model_shows_its_sizes() -> None:
    from ssogen.testing.tiny_model import SIZES

    assert re.search(r"--size\s+" + re.escape("[" + "|".join(SIZES) + "]"), _help(("make-tiny-model",), 120))


@pytest.mark.parametrize(("metavar", "lines"), [
    ("[v1|v2]", ["[v1|v2]"]), ("[free|guided]", ["[free|guided]"]),
    ("[vllm|transformers]", ["[vllm|", "transformers]"]),
    ("[auto|bfloat16|float16|half|float32|float]", ["[auto|", "bfloat16|", "float16|half|", "float32|float]"]),
    ("FOLDER", ["FOLDER"]),
])
def test_a_long_list_of_choices_goes_over_lines(metavar: str, lines: list[str]) -> None:
    assert stacked_choices(metavar).split("\n") == lines


GROUP_PATHS = [path for path in ALL_COMMANDS if any(other[:len(path)] == path != other for other in ALL_COMMANDS)]


@pytest.mark.parametrize("path", GROUP_PATHS, ids=lambda path: " ".join(path) or "ssogen")
def test_each_command_s_summary_in_a_list_is_one_line(path: tuple[str, ...]) -> None:
    shown = _help(path, 250)  # wide enough that no summary of one line wraps
    rows = [line for line in shown.split("─ Commands ", 1)[1].splitlines() if line.startswith("│")]
    continued = [line for line in rows if re.match(r"│\s{3,}\S", line)]
    assert not continued, "a command's summary spans lines:\n" + "\n".join(continued)


@pytest.mark.parametrize(("command", "sentence"), [
    ("score", "are dropped from the pair configs with the reason likelihood:<stage>."),
    ("judge", "adds the numbers to the dataset card. Answers without a clear verdict are counted as unparseable"),
    ("iterate", "finished steps are kept, an interrupted generate or train continues where it stopped."),
])
def test_a_help_paragraph_wraps_at_the_terminal_not_at_the_docstring_s_lines(command: str, sentence: str) -> None:
    """Typer's rich help kept the docstring's line breaks after its first paragraph: a wide terminal showed
    "dropped from the pair" and "configs with the reason" on two lines."""
    assert sentence in _help((command,), columns=300)
