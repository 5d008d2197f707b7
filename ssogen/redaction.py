"""Secrets kept out of every log and every terminal line: `hide` registers one (a hub token), `scrub` replaces
each spelling of it by ***, and `ScrubFilter` does so for every logging record a handler receives.

A module of its own because more than the command log needs it: `ssogen.cli.common` scrubs the error and resume
lines it prints, `ssogen.dataset.publish` the hub's messages. A leaf: it imports nothing of ssogen."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

_SECRETS: set[str] = set()


def secret_forms(*secrets: str | None) -> list[str]:
    """Every way a message may spell a secret: as is, stripped, Python-escaped (repr of str and of bytes),
    JSON-escaped and URL-quoted; the longest first, so that no part of a longer form survives a shorter one."""
    forms: set[str] = set()
    for secret in secrets:
        for value in {secret or "", (secret or "").strip()}:
            if not value:
                continue
            forms.update({value, repr(value)[1:-1], json.dumps(value)[1:-1], repr(value.encode())[2:-1],
                          quote(value, safe="")})
    return sorted(forms, key=len, reverse=True)


def hide(secret: str | None) -> None:
    """Never let `secret` reach a log or stderr (replaced by ***), in any of its `secret_forms`."""
    if secret and secret.strip():
        _SECRETS.update(secret_forms(secret))


def scrub(text: str) -> str:
    for form in sorted(_SECRETS, key=len, reverse=True):  # the longest first: no part of a longer form survives
        text = text.replace(form, "***")
    return text


class ScrubFilter(logging.Filter):
    """Scrubs a record's message, and its traceback, before a handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            record.msg, record.args = scrub(record.getMessage()), None
            if record.exc_info:  # a traceback quotes the values it failed on: formatted here, then scrubbed
                record.exc_text, record.exc_info = logging.Formatter().formatException(record.exc_info), None
            record.exc_text = scrub(record.exc_text) if record.exc_text else record.exc_text
        return True
