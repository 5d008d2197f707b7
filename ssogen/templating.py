"""Jinja2 templates from the bundled `templates/` folder, each overridable by a file of the same name in a user's
`--templates FOLDER` (the prompt templates and the dataset card share this). Errors name the template file and
line, as one UserError line; an undefined variable is an error, never silently empty text."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jinja2

from ssogen.errors import UserError
from ssogen.io import NOT_A_REGULAR_FILE

BUNDLED_TEMPLATES = Path(__file__).parent / "templates"


class TemplateError(UserError):
    """A template that fails to load or render; the message names the template and the line."""


class Templates:
    """The bundled templates, or a user's folder whose files replace them (missing files fall back).
    `filters` adds Jinja filters (the card's number formatting)."""

    def __init__(self, override_dir: str | Path | None = None, bundled_dir: Path = BUNDLED_TEMPLATES,
                 filters: dict[str, Callable[..., Any]] | None = None) -> None:
        self.bundled_dir = bundled_dir
        self.override_dir = Path(override_dir) if override_dir is not None else None
        search = [str(bundled_dir)]
        if self.override_dir is not None:
            if not self.override_dir.is_dir():  # every override folder comes from a command's --templates
                what = "is a file, not a folder" if self.override_dir.exists() else "no such folder"
                raise TemplateError(f"--templates {self.override_dir}: {what}")
            for file in sorted(self.override_dir.glob("*.jinja")):  # reading a FIFO would block forever
                if file.exists() and not file.is_file() and not file.is_dir():
                    raise TemplateError(f"--templates {self.override_dir}: {file.name}: {NOT_A_REGULAR_FILE}")
            search.insert(0, str(self.override_dir))
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
        return self.bundled_dir / name

    def digest(self, names: Iterable[str]) -> str:
        """sha256 over the bytes of the named templates as they will be used (overrides included)."""
        digest = hashlib.sha256()
        for name in names:
            try:
                digest.update(self.source_of(name).read_bytes())
            except OSError as exc:
                raise TemplateError(f"{self.source_of(name)}: cannot read the template ({exc.strerror})") \
                    from None
        return digest.hexdigest()

    def check(self, name: str) -> None:
        """Load and compile a template now, so that a syntax error fails before any work is done."""
        self._template(name)

    def render(self, name: str, /, **variables: object) -> str:
        """The rendered template, stripped of surrounding whitespace. (`name` is positional only, so that a
        template may have a variable called `name`.)"""
        template = self._template(name)
        try:
            return template.render(**variables).strip()
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"{self.source_of(name)}:{_render_error_line(exc)}: {exc.message}") from None
        except (TypeError, ValueError) as exc:  # e.g. a filter given a value it cannot format
            raise TemplateError(f"{self.source_of(name)}:{_render_error_line(exc)}: {type(exc).__name__}: "
                                f"{exc}") from None

    def _template(self, name: str) -> jinja2.Template:
        try:
            return self._env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{self.source_of(name)}:{exc.lineno}: template syntax error: {exc.message}") \
                from None
        except jinja2.TemplateNotFound:
            raise TemplateError(f"{name}: template not found") from None
        except UnicodeDecodeError as exc:
            raise TemplateError(f"{self.source_of(name)}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                                f"offset {exc.start}); save the template as UTF-8") from None


def _render_error_line(exc: BaseException) -> int | str:
    """Line of the template frame in a Jinja render traceback ('?' when it cannot be found)."""
    tb = exc.__traceback__
    line: int | str = "?"
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(".jinja"):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
