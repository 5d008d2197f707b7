"""Jinja2 templates from the bundled `templates/` folder, each replaceable by a file of the same name in a
user's `--templates DIR` (the prompt templates and the dataset card share this mechanism).

Errors name the template file and line; undefined variables are errors, never silently empty text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2

BUNDLED_TEMPLATES = Path(__file__).parent / "templates"


class TemplateError(Exception):
    """A template that fails to load or render; the message names the template file and the line."""


class TemplateFolder:
    """The bundled templates, overridden file by file by `override_dir` (files it lacks fall back)."""

    def __init__(self, override_dir: str | Path | None = None,
                 filters: dict[str, Callable[..., Any]] | None = None) -> None:
        search = [str(BUNDLED_TEMPLATES)]
        if override_dir is not None:
            override = Path(override_dir)
            if not override.is_dir():
                raise TemplateError(f"{override}: templates folder does not exist")
            search.insert(0, str(override))
        self.override_dir = Path(override_dir) if override_dir is not None else None
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(search),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            autoescape=False,
        )
        self._env.filters.update(filters or {})

    def source_of(self, name: str) -> Path:
        """The file a template name resolves to: the user's copy when there is one, else the bundled one."""
        if self.override_dir is not None and (self.override_dir / name).exists():
            return self.override_dir / name
        return BUNDLED_TEMPLATES / name

    def check(self, name: str) -> None:
        """Load and compile a template now, so that a syntax error fails before any work is done."""
        self._template(name)

    def render(self, name: str, /, **variables: object) -> str:
        template = self._template(name)
        try:
            return template.render(**variables)
        except (jinja2.UndefinedError, TypeError, ValueError) as exc:
            message = exc.message if isinstance(exc, jinja2.UndefinedError) else f"{type(exc).__name__}: {exc}"
            raise TemplateError(f"{self.source_of(name)}:{_render_error_line(exc)}: {message}") from None

    def _template(self, name: str) -> jinja2.Template:
        try:
            return self._env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{self.source_of(name)}:{exc.lineno}: template syntax error: {exc.message}") \
                from None
        except jinja2.TemplateNotFound:
            raise TemplateError(f"{name}: template not found") from None


def _render_error_line(exc: BaseException) -> int | str:
    """Line of the template frame in a Jinja render traceback ('?' when it cannot be found)."""
    tb = exc.__traceback__
    line: int | str = "?"
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(".jinja"):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
