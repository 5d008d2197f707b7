"""README.md stays true about the command line: its `ssogen` lines name real commands and flags (taken from the
click tree of `ssogen.cli.app`), every command has an example, option-table flags exist on their section's command,
its extras exist and its `make test` is what CI runs. Each check also rejects a bad snippet in a unit test below."""

from __future__ import annotations

import itertools
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from ssogen.cli import app

ROOT = Path(__file__).resolve().parents[2]
README, CI_SCRIPT, MAKEFILE, PYPROJECT = (
    (ROOT / name).read_text(encoding="utf-8") for name in ("README.md", ".ci/run", "Makefile", "pyproject.toml"))

CommandPath = tuple[str, ...]
FENCE = re.compile(r"^\s*```\s*(\w*)")
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
SEPARATORS = {"|", "||", "&", "&&", ";", ";;", "(", ")"}
SHELL_KEYWORDS = {"do", "then", "else", "time", "!", "{"}
ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
FLAG = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")  # --name, -k; not -1, not a-b
HEADING = re.compile(r"^#{1,6}\s+(.*)")
HEADING_COMMAND = re.compile(r"`ssogen ([a-z][a-z -]*)`")
EXTRAS = re.compile(r"\.\[([\w,-]+)\]")


def command_flags(command: Any, path: CommandPath = ()) -> dict[CommandPath, frozenset[str]]:
    """Each command path of the click tree (root: ()) and its flags: names, `--no-` forms, short aliases, help."""
    flags = set(command.context_settings.get("help_option_names", ["--help"]))
    flags |= {name for param in command.params if param.param_type_name == "option"
              for name in (*param.opts, *param.secondary_opts)}
    tree = {path: frozenset(flags)}
    for name, sub in getattr(command, "commands", {}).items():
        tree |= command_flags(sub, (*path, name))
    return tree


def command_options(command: Any, path: CommandPath = ()) -> dict[CommandPath, list[frozenset[str]]]:
    """Each command path and its options (help aside), each as the names any of which a table row may show."""
    tree = {path: [frozenset((*param.opts, *param.secondary_opts)) for param in command.params
                   if param.param_type_name == "option" and param.name != "help"]}
    for name, sub in getattr(command, "commands", {}).items():
        tree |= command_options(sub, (*path, name))
    return tree


CLI = command_flags(typer.main.get_command(app))
OPTIONS = command_options(typer.main.get_command(app))


def shell_lines(markdown: str) -> Iterator[tuple[int, str]]:
    """(line number, command line) in the fenced blocks of a shell language or none: `\\` continuations joined,
    heredoc bodies left out (they are file contents, not commands)."""
    in_shell = in_block = False
    heredoc_end: str | None = None
    pending: tuple[int, str] | None = None
    for number, line in enumerate(markdown.splitlines(), 1):
        if (fence := FENCE.match(line)) and heredoc_end is None:
            in_shell, in_block = not in_block and fence.group(1) in SHELL_LANGUAGES, not in_block
        elif in_shell and heredoc_end is not None:
            heredoc_end = None if line.strip() == heredoc_end else heredoc_end
        elif in_shell:
            start, text = pending or (number, "")
            pending = (start, text + line[:-1] + " ") if line.endswith("\\") else None
            if pending is None:
                heredoc_end = heredoc.group(2) if (heredoc := HEREDOC.search(text + line)) else None
                yield start, text + line


def commands_of(line: str) -> Iterator[list[str]]:
    """The simple commands of one shell line (split at pipes, `;`, `&&`, redirections; comments dropped). A line
    with unbalanced quotes (prose in an unlabelled block, such as a folder tree) is split at white space."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        tokens = line.split("#")[0].split()
    for is_separator, words in itertools.groupby(tokens, lambda word: word in SEPARATORS or word[0] in "<>"):
        if not is_separator:
            yield list(words)


def ssogen_arguments(words: list[str]) -> list[str] | None:
    """The words after `ssogen` in a command that runs it (after `VAR=value`, or `... -m ssogen`), else None."""
    while words and (ASSIGNMENT.match(words[0]) or words[0] in SHELL_KEYWORDS):
        words = words[1:]
    if words and os.path.basename(words[0]) == "ssogen":
        return words[1:]
    starts = [index + 2 for index in range(len(words) - 1) if words[index:index + 2] == ["-m", "ssogen"]]
    return words[starts[0]:] if starts else None


def ssogen_examples(markdown: str) -> list[tuple[int, list[str]]]:
    """(README line, arguments) of every ssogen command line in the shell blocks."""
    return [(number, arguments) for number, line in shell_lines(markdown) for words in commands_of(line)
            if (arguments := ssogen_arguments(words)) is not None]


def resolve(arguments: list[str], cli: dict[CommandPath, frozenset[str]]) -> tuple[CommandPath, list[str]]:
    """The command path the arguments name, and their unknown sub-command or flags (values are not checked)."""
    path: CommandPath = ()
    problems = []
    for word in arguments:
        if flag := FLAG.match(word):
            if flag.group(0) not in cli[path]:
                problems.append(f"`ssogen {' '.join(path)}` has no flag {flag.group(0)}")
        elif any(other[:len(path)] == path and len(other) > len(path) for other in cli):  # a group
            if (*path, word) not in cli:
                return path, [*problems, f"`ssogen {' '.join(path)}` has no sub-command {word!r}"]
            path = (*path, word)
    return path, problems


def example_problems(markdown: str, cli: dict[CommandPath, frozenset[str]]) -> list[str]:
    return [f"README.md:{number}: {problem}" for number, arguments in ssogen_examples(markdown)
            for problem in resolve(arguments, cli)[1]]


def commands_without_example(markdown: str, cli: dict[CommandPath, frozenset[str]]) -> list[str]:
    """Command paths that no example runs, itself or (a group) one of its sub-commands."""
    shown = {resolve(arguments, cli)[0] for _, arguments in ssogen_examples(markdown)}
    return sorted(" ".join(path) for path in cli if path and not any(seen[:len(path)] == path for seen in shown))


def table_flags(markdown: str) -> Iterator[tuple[int, str, list[CommandPath]]]:
    """(line, flag, commands of the section) for every flag in backticks in a table row's first cell. The
    section's commands are those its nearest heading names as `ssogen X` (none: any command)."""
    section: list[CommandPath] = []
    in_block = False
    for number, line in enumerate(markdown.splitlines(), 1):
        in_block ^= bool(FENCE.match(line))
        if in_block:
            continue  # a `# comment` in a shell block is no heading
        if heading := HEADING.match(line):
            section = [tuple(name.split()) for name in HEADING_COMMAND.findall(heading.group(1))]
        elif line.startswith("|"):
            for code in re.findall(r"`([^`]*)`", re.split(r"(?<!\\)\|", line)[1]):
                yield from ((number, flag, section) for flag in FLAG.findall(code))


def table_problems(markdown: str, cli: dict[CommandPath, frozenset[str]]) -> list[str]:
    return [f"README.md:{number}: table flag {flag} is not a flag of "
            + (" or ".join(f"`ssogen {' '.join(path)}`" for path in section) or "any command")
            for number, flag, section in table_flags(markdown)
            if not any(flag in cli.get(path, frozenset()) for path in section or cli)]


def options_missing_from_tables(markdown: str, options: dict[CommandPath, list[frozenset[str]]]) -> list[str]:
    """The options of a command that has an option table (a section of that one command) in none of its rows."""
    shown: dict[CommandPath, set[str]] = {}
    for _, flag, section in table_flags(markdown):
        if len(section) == 1:
            shown.setdefault(section[0], set()).add(flag)
    return [f"`ssogen {' '.join(path)}` {sorted(names)[0]}: in no row of its README option table"
            for path, flags in shown.items() for names in options.get(path, []) if not names & flags]


def ci_problems(markdown: str, ci_script: str, makefile: str) -> list[str]:
    """README's `make` commands are Makefile targets, and its `make test` is all CI runs (past `set` and `cd`)."""
    made = [" ".join(words) for _, line in shell_lines(markdown) for words in commands_of(line) if words[0] == "make"]
    ci = [" ".join(words) for line in ci_script.splitlines() for words in commands_of(line)
          if words[0] not in {"set", "cd"}]
    targets = set(re.findall(r"^([\w-]+)\s*:", makefile, re.MULTILINE))
    problems = [f"README runs `{line}`: no Makefile target" for line in made if not set(line.split()[1:]) <= targets]
    problems += [] if "make test" in made else ["README gives no `make test`"]
    return problems + ([] if ci == ["make test"] else [f".ci/run runs {ci}, README's test command is `make test`"])


def extras_problems(markdown: str, pyproject: str, makefile: str) -> list[str]:
    """README's `.[extra,...]` are extras of pyproject.toml, and those its `make` lines name the Makefile's."""
    section = pyproject.split("[project.optional-dependencies]")[1].split("\n[")[0]
    defined = set(re.findall(r"^([\w-]+)\s*=", section, re.MULTILINE))
    named = {extra for group in EXTRAS.findall(markdown) for extra in group.split(",")}
    problems = [f"README installs extra {extra!r}: not in pyproject.toml" for extra in sorted(named - defined)]
    return problems + [f"README's `{line.split('#')[0].strip()}` installs .[{group}], the Makefile never does"
                       for line in markdown.splitlines() if line.startswith("make ")
                       for group in EXTRAS.findall(line) if f".[{group}]" not in makefile]


# The real README, its Makefile and CI script.


def test_every_readme_command_line_names_a_command_and_its_flags() -> None:
    examples = ssogen_examples(README)
    assert len(examples) > 20 and {resolve(arguments, CLI)[0] for _, arguments in examples} >= {("train",)}
    assert example_problems(README, CLI) == []


def test_every_command_has_a_readme_example() -> None:
    assert commands_without_example(README, CLI) == []


def test_every_flag_of_a_readme_option_table_exists_on_its_command() -> None:
    assert len(list(table_flags(README))) > 50
    assert table_problems(README, CLI) == []


def test_every_option_of_a_command_with_an_option_table_has_a_row() -> None:
    assert options_missing_from_tables(README, OPTIONS) == []


def test_readme_test_command_is_what_ci_runs_and_its_extras_exist() -> None:
    assert ci_problems(README, CI_SCRIPT, MAKEFILE) == []
    assert extras_problems(README, PYPROJECT, MAKEFILE) == []


def test_make_demo_runs_ssogen_with_real_flags() -> None:
    recipe = [line.replace("$(VENV)/bin/", "") for line in MAKEFILE.splitlines() if "bin/ssogen" in line]
    assert len(recipe) >= 3 and example_problems("```\n" + "\n".join(recipe) + "\n```\n", CLI) == []


# The parser and each check, on snippets.
SNIPPET = """\
```bash
cat > gen.yaml <<'YAML'
ssogen generate --not-a-command
YAML
HF_HUB_OFFLINE=1 ssogen generate --model m \\
    --out o --limit 5   # --a-comment
accelerate launch --config_file c.yaml -m ssogen train --data d --out o | tee log
for t in 1 2; do ssogen judge run --judge-model J > j.txt; done
```
```yaml
ssogen stats --yaml-is-no-command
```
"""


def test_parser_joins_lines_drops_comments_and_heredocs_and_finds_wrapped_ssogen() -> None:
    assert ssogen_examples(SNIPPET) == [(5, ["generate", "--model", "m", "--out", "o", "--limit", "5"]),
                                        (7, ["train", "--data", "d", "--out", "o"]),
                                        (8, ["judge", "run", "--judge-model", "J"])]


def test_a_wrong_flag_or_sub_command_in_an_example_is_found() -> None:
    snippet = "```\nssogen train --data d --lamda 0.1\nssogen principles lst\nssogen stats r --no-plots -k 1\n```"
    assert example_problems(snippet, CLI) == ["README.md:2: `ssogen train` has no flag --lamda",
                                              "README.md:3: `ssogen principles` has no sub-command 'lst'",
                                              "README.md:4: `ssogen stats` has no flag -k"]


def test_a_command_without_example_is_found() -> None:
    missing = commands_without_example("```bash\nssogen principles list\nssogen env --json\n```", CLI)
    assert "generate" in missing and "principles show" in missing
    assert "principles" not in missing and "principles list" not in missing and "env" not in missing


def test_an_option_missing_from_its_commands_table_is_found() -> None:
    snippet = "### `ssogen judge` — judging\n| option | default |\n|---|---|\n| `--judge-model`, `--sample` | |\n"
    missing = options_missing_from_tables(snippet, OPTIONS)
    assert "`ssogen judge` --seed: in no row of its README option table" in missing
    assert not any("--judge-model" in line or "--sample" in line for line in missing)
    assert options_missing_from_tables("### Anything\n| `--seed` | 0 |\n", OPTIONS) == []  # no command's table


def test_a_table_flag_missing_from_its_section_command_is_found() -> None:
    snippet = ("### `ssogen train` — training\n```bash\n# a comment in a shell block, no heading\n```\n"
               "| option | default |\n|---|---|\n| `--objective v1\\|v2`, `--loss ipo\\|dpo` | v1 |\n"
               "| `--temperature` / `-T` | 0.7 |\n### Anything\n| `--temperature`, `--no-such-flag` | |\n"
               "| `data/dpo/*.parquet` | pairs |\n")
    assert [flag for _, flag, _ in table_flags(snippet)] == ["--objective", "--loss", "--temperature", "-T",
                                                             "--temperature", "--no-such-flag"]
    assert table_problems(snippet, CLI) == ["README.md:8: table flag --temperature is not a flag of `ssogen train`",
                                            "README.md:8: table flag -T is not a flag of `ssogen train`",
                                            "README.md:10: table flag --no-such-flag is not a flag of any command"]


def test_ci_running_another_command_than_readme_is_found() -> None:
    readme = "```bash\nmake demo   # run\nmake test   # test\n```"
    assert ci_problems(readme, "set -e\ncd x\nmake test\n", "demo:\ntest: a\n") == []
    assert ci_problems(readme, "set -e\npytest -q\n", "demo:\ntest:\n") == [
        ".ci/run runs ['pytest -q'], README's test command is `make test`"]
    assert ci_problems(readme.replace("make test", "make check"), "make test\n", "demo:\ntest:\n") == [
        "README runs `make check`: no Makefile target", "README gives no `make test`"]


def test_an_extra_that_does_not_exist_is_found() -> None:
    pyproject = '[project.optional-dependencies]\ncpu = ["x"]\ntest = ["y"]\n\n[project.scripts]\n'
    readme = "pip install -e '.[cpu]'\nmake test   # install .[cpu,test]\n"
    assert extras_problems(readme, pyproject, "pip install '.[cpu,test]'") == []
    assert extras_problems(readme.replace("cpu]", "gpu]"), pyproject, "pip install '.[cpu]'") == [
        "README installs extra 'gpu': not in pyproject.toml",
        "README's `make test` installs .[cpu,test], the Makefile never does"]
