"""README.md stays true about the command line: every `ssogen` command line in its shell blocks names a real
command with flags that command accepts, every command has an example, every flag of its option tables exists
on the command whose section holds the table, and its `make test` is what CI runs.

The README is parsed, not run: no engine, no model. The accepted flags come from the click commands typer builds
from `ssogen.cli.app`. Each check has a unit test on a small literal snippet that it must reject."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from ssogen.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI_SCRIPT = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")

Path_ = tuple[str, ...]
FENCE = re.compile(r"^\s*```\s*(\w*)")
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
SEPARATORS = {"|", "||", "&", "&&", ";", ";;", "(", ")"}
SHELL_KEYWORDS = {"do", "then", "else", "time", "!", "{"}
ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
FLAG = re.compile(r"^--?[A-Za-z][\w-]*")
TABLE_FLAG = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")
HEADING = re.compile(r"^#{1,6}\s+(.*)")
HEADING_COMMAND = re.compile(r"`ssogen ([a-z][a-z -]*)`")


def command_flags(command: Any, path: Path_ = ()) -> dict[Path_, frozenset[str]]:
    """Every command path of the click tree (the root is ()) and the flags it accepts: each option's names,
    its `--no-` form and short alias, and the help option."""
    help_names = command.context_settings.get("help_option_names", ["--help"])
    flags = {name for param in command.params if param.param_type_name == "option"
             for name in (*param.opts, *param.secondary_opts)}
    tree = {path: frozenset(flags | set(help_names))}
    for name, sub in getattr(command, "commands", {}).items():
        tree |= command_flags(sub, (*path, name))
    return tree


CLI = command_flags(typer.main.get_command(app))


def shell_lines(markdown: str) -> Iterator[tuple[int, str]]:
    """(line number, command line) in the fenced blocks of a shell language or none: `\\` continuations joined,
    heredoc bodies left out (they are file contents, not commands)."""
    in_shell = in_block = False
    heredoc_end: str | None = None
    pending: tuple[int, str] | None = None
    for number, line in enumerate(markdown.splitlines(), 1):
        fence = FENCE.match(line)
        if fence and heredoc_end is None:
            in_shell = not in_block and fence.group(1) in SHELL_LANGUAGES
            in_block = not in_block
            continue
        if not in_shell:
            continue
        if heredoc_end is not None:
            heredoc_end = None if line.strip() == heredoc_end else heredoc_end
            continue
        start, text = pending if pending else (number, "")
        text += line
        if text.endswith("\\"):
            pending = (start, text[:-1] + " ")
            continue
        pending = None
        if heredoc := HEREDOC.search(text):
            heredoc_end = heredoc.group(2)
        yield start, text


def commands_of(line: str) -> Iterator[list[str]]:
    """The simple commands of one shell line (split at pipes, `;`, `&&`; comments dropped), as words. A line
    with unbalanced quotes (prose in an unlabelled block, such as a folder tree) is split at white space."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        tokens = line.split("#")[0].split()
    words: list[str] = []
    for token in tokens:
        if token in SEPARATORS or token.startswith("<") or token.startswith(">"):
            if words:
                yield words
            words = []
        else:
            words.append(token)
    if words:
        yield words


def ssogen_arguments(words: list[str]) -> list[str] | None:
    """The words after `ssogen` when the command runs ssogen (directly, after `VAR=value` prefixes, or as
    `python -m ssogen` / `accelerate launch ... -m ssogen`), else None."""
    while words and (ASSIGNMENT.match(words[0]) or words[0] in SHELL_KEYWORDS):
        words = words[1:]
    if words and os.path.basename(words[0]) == "ssogen":
        return words[1:]
    for index, word in enumerate(words[:-1]):
        if word == "-m" and words[index + 1] == "ssogen":
            return words[index + 2:]
    return None


def ssogen_examples(markdown: str) -> list[tuple[int, list[str]]]:
    """(README line, arguments) of every ssogen command line in the shell blocks."""
    return [(number, arguments) for number, line in shell_lines(markdown) for words in commands_of(line)
            if (arguments := ssogen_arguments(words)) is not None]


def resolve(arguments: list[str], cli: dict[Path_, frozenset[str]]) -> tuple[Path_, list[str]]:
    """The command path the arguments name and their problems: an unknown sub-command, a flag the command
    does not take. Other words are values or placeholders and are not checked."""
    path: Path_ = ()
    problems = []
    for word in arguments:
        is_group = any(len(other) > len(path) and other[:len(path)] == path for other in cli)
        if flag := FLAG.match(word):
            if flag.group(0) not in cli[path]:
                problems.append(f"`ssogen {' '.join(path)}` has no flag {flag.group(0)}")
        elif is_group:
            if (*path, word) not in cli:
                problems.append(f"`ssogen {' '.join(path)}` has no sub-command {word!r}")
                break
            path = (*path, word)
    return path, problems


def example_problems(markdown: str, cli: dict[Path_, frozenset[str]]) -> list[str]:
    return [f"README.md:{number}: {problem}" for number, arguments in ssogen_examples(markdown)
            for problem in resolve(arguments, cli)[1]]


def commands_without_example(markdown: str, cli: dict[Path_, frozenset[str]]) -> list[str]:
    """Command paths (groups included) that no example runs, itself or one of its sub-commands."""
    shown = {resolve(arguments, cli)[0] for _, arguments in ssogen_examples(markdown)}
    return sorted(" ".join(path) for path in cli if path and not any(seen[:len(path)] == path for seen in shown))


def table_flags(markdown: str) -> Iterator[tuple[int, str, list[Path_]]]:
    """(line, flag, commands of the section) for every flag in backticks in a table row's first cell. The
    section's commands are those its nearest heading names as `ssogen X` (none: any command)."""
    section: list[Path_] = []
    in_block = False
    for number, line in enumerate(markdown.splitlines(), 1):
        in_block ^= bool(FENCE.match(line))
        if in_block:
            continue  # a `# comment` in a shell block is no heading
        if heading := HEADING.match(line):
            section = [tuple(name.split()) for name in HEADING_COMMAND.findall(heading.group(1))]
        elif line.startswith("|"):
            first_cell = re.split(r"(?<!\\)\|", line)[1]
            for code in re.findall(r"`([^`]*)`", first_cell):
                yield from ((number, flag, section) for flag in TABLE_FLAG.findall(code))


def table_problems(markdown: str, cli: dict[Path_, frozenset[str]]) -> list[str]:
    problems = []
    for number, flag, section in table_flags(markdown):
        owners = section or list(cli)
        if not any(flag in cli.get(path, frozenset()) for path in owners):
            where = " or ".join(f"`ssogen {' '.join(path)}`" for path in section) or "any command"
            problems.append(f"README.md:{number}: table flag {flag} is not a flag of {where}")
    return problems


def make_commands(markdown: str) -> list[str]:
    """The `make` command lines of the shell blocks, as written (comments dropped)."""
    return [" ".join(words) for _, line in shell_lines(markdown) for words in commands_of(line)
            if words[0] == "make"]


def script_commands(script: str) -> list[str]:
    """The commands of a shell script other than its set-up (`set`, `cd`), comments dropped."""
    return [" ".join(words) for line in script.splitlines() for words in commands_of(line)
            if words[0] not in {"set", "cd"}]


def ci_problems(markdown: str, ci_script: str, makefile: str) -> list[str]:
    """README's `make` commands must be Makefile targets, and its `make test` must be all that CI runs."""
    targets = set(re.findall(r"^([\w-]+)\s*:", makefile, re.MULTILINE))
    problems = [f"README runs `{line}`: no such Makefile target" for line in make_commands(markdown)
                if not set(line.split()[1:]) <= targets]
    if "make test" not in make_commands(markdown):
        problems.append("README gives no `make test`")
    if script_commands(ci_script) != ["make test"]:
        problems.append(f".ci/run runs {script_commands(ci_script)}, README's test command is `make test`")
    return problems


# The real README.


def test_readme_has_examples_of_many_commands() -> None:
    examples = ssogen_examples(README)
    assert len(examples) > 20, examples
    assert {resolve(arguments, CLI)[0][:1] for _, arguments in examples} >= {("generate",), ("train",)}


def test_every_readme_command_line_names_a_command_and_its_flags() -> None:
    assert example_problems(README, CLI) == []


def test_every_command_has_a_readme_example() -> None:
    assert commands_without_example(README, CLI) == []


def test_every_flag_of_a_readme_option_table_exists_on_its_command() -> None:
    assert len(list(table_flags(README))) > 50
    assert table_problems(README, CLI) == []


def test_readme_test_command_is_what_ci_runs() -> None:
    assert ci_problems(README, CI_SCRIPT, MAKEFILE) == []


def test_make_demo_runs_ssogen_with_real_flags() -> None:
    recipe_lines = [line.replace("$(VENV)/bin/", "") for line in MAKEFILE.splitlines() if "bin/ssogen" in line]
    assert len(recipe_lines) >= 3
    assert example_problems("```bash\n" + "\n".join(recipe_lines) + "\n```\n", CLI) == []


# The parser and each check, on snippets.

SNIPPET = """\
```bash
cat > gen.yaml <<'YAML'
ssogen generate --not-a-command
YAML
HF_HUB_OFFLINE=1 ssogen generate --model m \\
    --out o --limit 5   # --a-comment
accelerate launch --config_file c.yaml -m ssogen train --data d --out o | tee log
for t in 1 2; do ssogen judge run --judge-model J; done
```

```yaml
ssogen stats --yaml-is-no-command
```
"""


def test_parser_joins_lines_drops_comments_and_heredocs_and_finds_wrapped_ssogen() -> None:
    assert ssogen_examples(SNIPPET) == [
        (5, ["generate", "--model", "m", "--out", "o", "--limit", "5"]),
        (7, ["train", "--data", "d", "--out", "o"]),
        (8, ["judge", "run", "--judge-model", "J"]),
    ]


def test_a_wrong_flag_or_sub_command_in_an_example_is_found() -> None:
    snippet = "```\nssogen train --data d --lamda 0.1\nssogen principles lst\nssogen stats r --no-plots -k 1\n```"
    assert example_problems(snippet, CLI) == [
        "README.md:2: `ssogen train` has no flag --lamda",
        "README.md:3: `ssogen principles` has no sub-command 'lst'",
        "README.md:4: `ssogen stats` has no flag -k",
    ]


def test_a_command_without_example_is_found() -> None:
    snippet = "```bash\nssogen principles list\nssogen env --json\n```"
    missing = commands_without_example(snippet, CLI)
    assert "generate" in missing and "principles show" in missing
    assert "principles" not in missing and "principles list" not in missing and "env" not in missing


def test_a_table_flag_missing_from_its_section_command_is_found() -> None:
    snippet = """\
### `ssogen train` — training
```bash
# a comment in a shell block, no heading
```
| option | default |
|---|---|
| `--objective v1\\|v2`, `--loss ipo\\|dpo` | v1 |
| `--temperature` / `-T` | 0.7 |
### Anything
| `--temperature`, `--no-such-flag` | |
| `data/dpo/*.parquet` | pairs |
"""
    assert [flag for _, flag, _ in table_flags(snippet)] == ["--objective", "--loss", "--temperature", "-T",
                                                             "--temperature", "--no-such-flag"]
    assert table_problems(snippet, CLI) == [
        "README.md:8: table flag --temperature is not a flag of `ssogen train`",
        "README.md:8: table flag -T is not a flag of `ssogen train`",
        "README.md:10: table flag --no-such-flag is not a flag of any command",
    ]


def test_ci_running_another_command_than_readme_is_found() -> None:
    readme = "```bash\nmake demo   # run\nmake test   # test\n```"
    assert ci_problems(readme, "set -e\ncd x\nmake test\n", "demo:\ntest: a\n") == []
    assert ci_problems(readme, "set -e\npytest -q\n", "demo:\ntest:\n") == [
        ".ci/run runs ['pytest -q'], README's test command is `make test`"]
    assert ci_problems(readme.replace("make test", "make check"), "make test\n", "demo:\ntest:\n") == [
        "README runs `make check`: no such Makefile target", "README gives no `make test`"]
