"""The one error type that the CLI turns into a single clear line and a non-zero exit, the interruption a
SIGTERM raises, and the "did you mean" lookup their messages share."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input or an impossible request, described for the user (name the file, line or field).

    `exit_code` is 2 for bad input by default; 130 is used for an interrupted run."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(KeyboardInterrupt):
    """Raised by the CLI's SIGTERM handler: the command stops as on Ctrl-C (work saved, engines stopped). Unlike
    Ctrl-C, the signal reached this process only, so a command running a child passes it on."""


# Set by `ssogen iterate` for the commands it runs as steps: an interrupted step does not print its own "to resume"
# line (iterate prints the one to run).
STEP_OF_ITERATE_ENV = "SSOGEN_STEP_OF_ITERATE"


def closest_name(word: str, known: Iterable[str]) -> str | None:
    """The known name nearest to `word`, compared case-insensitively, for a "did you mean" hint; None when
    none is close enough to be a likely typo."""
    by_folded = {name.casefold(): name for name in known}
    close = difflib.get_close_matches(word.casefold(), list(by_folded), n=1, cutoff=0.6)
    return by_folded[close[0]] if close else None
