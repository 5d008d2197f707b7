"""The one error type that the CLI turns into a single clear line and a non-zero exit."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an impossible request, described for the user (name the file, line or field).

    `exit_code` is 2 for bad input by default; 130 is used for an interrupted run."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
