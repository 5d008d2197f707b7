"""Where an option's value came from, for errors raised after the settings were read.

`resolve_settings` knows whether a value came from a flag or from a line of a `--config` file. A check that
runs later (a `--model` folder that does not exist, `--dp` beyond the visible GPUs) names the flag; while a
command runs, `with_config_lines` adds the file's line to such a message: `--model /nope: no such folder (set
in gen.yaml:3)`. `RemembersOrigins` keeps them on a settings model whose values another library checks again
(train's TrainingArguments), so that its errors can be worded around the line."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

from pydantic import BaseModel, PrivateAttr

# flag -> "FILE:LINE" of each option the current command took from a config file; None outside a command
_FROM_FILE: ContextVar[dict[str, str] | None] = ContextVar("ssogen_options_from_file", default=None)


class RemembersOrigins(BaseModel):
    """A settings model whose values another library checks again later (train's TrainingArguments): `origin`
    names where a value came from, `--flag` or `FILE:LINE: key`, for an error raised then."""

    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    def origin(self, name: str, default: str) -> str:
        """`name`: a field, or `FIELD.KEY` for a key collected into a PASS_THROUGH field."""
        return self._origins.get(name, default)


@contextlib.contextmanager
def options_of_one_command() -> Iterator[None]:
    """The config-file lines remembered while the block runs are this command's only."""
    token = _FROM_FILE.set({})
    try:
        yield
    finally:
        _FROM_FILE.reset(token)


def remember_file_lines(lines: Mapping[str, str]) -> None:
    """flag -> "FILE:LINE" of the options a config file set (and no flag overrode)."""
    remembered = _FROM_FILE.get()
    if remembered is not None:
        remembered.update(lines)


def with_config_lines(message: str, lines: Mapping[str, str] | None = None) -> str:
    """`message` with " (set in FILE:LINE, ...)" for each flag it names whose value a config file set, in the
    order the message names them; a flag named only in parentheses is advice ("(--save-steps sets how often
    ...)"), not blamed. `lines`: flag -> "FILE:LINE"; the current command's by default."""
    lines = _FROM_FILE.get() if lines is None else lines
    if not lines or "(set in " in message:
        return message
    blamed = re.sub(r"\([^()]*\)", lambda aside: " " * len(aside.group()), message)  # same positions
    named = {flag: found.start() for flag in lines
             if (found := re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", blamed))}
    if not named:
        return message
    return message + f" (set in {', '.join(dict.fromkeys(lines[f] for f in sorted(named, key=named.__getitem__)))})"
