"""Rendering of the Jinja2 prompt templates: feature selection, contrastive system prompts, principle writer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from ssogen.principles import Feature, Library, join_adjectives

BUNDLED_TEMPLATES = Path(__file__).parent.parent / "templates"
TEMPLATE_NAMES = ("selection.jinja", "system.jinja", "principle_writer.jinja")


class TemplateError(Exception):
    """A template that fails to load or render; the message names the template and the line."""


@dataclass(frozen=True)
class PrincipleText:
    """One line of a contrastive system prompt: `name: text`."""

    name: str
    text: str


class PromptTemplates:
    """The three templates, from the bundled folder or a user's `--templates DIR` (missing files fall back)."""

    def __init__(self, override_dir: str | Path | None = None) -> None:
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

    def source_of(self, name: str) -> Path:
        if self.override_dir is not None and (self.override_dir / name).exists():
            return self.override_dir / name
        return BUNDLED_TEMPLATES / name

    def render(self, name: str, **variables: object) -> str:
        try:
            template = self._env.get_template(name)
            return template.render(**variables).strip()
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{self.source_of(name)}:{exc.lineno}: template syntax error: {exc.message}") \
                from None
        except jinja2.TemplateNotFound:
            raise TemplateError(f"{name}: template not found") from None
        except jinja2.UndefinedError as exc:
            line = _render_error_line(exc)
            raise TemplateError(f"{self.source_of(name)}:{line}: {exc.message}") from None

    def selection_prompt(self, library: Library, query: str, k: int) -> str:
        return self.render("selection.jinja", features=library.features, examples=library.examples,
                           query=query, k=k)

    def system_prompt(self, features: list[Feature], side: str,
                      principle_texts: list[str] | None = None) -> str:
        """Build S+ (side='good') or S- (side='bad') from the chosen features.

        `principle_texts` replaces the library's fixed texts (query-specific principles)."""
        if side not in ("good", "bad"):
            raise ValueError(f"side must be 'good' or 'bad', not {side!r}")
        texts = principle_texts or [getattr(f, side) for f in features]
        adjectives = join_adjectives([getattr(f.adjectives, side) for f in features])
        principles = [PrincipleText(f.name, t) for f, t in zip(features, texts, strict=True)]
        return self.render("system.jinja", adjectives=adjectives, principles=principles)

    def principle_writer_prompt(self, feature: Feature, query: str) -> str:
        return self.render("principle_writer.jinja", feature=feature, query=query)


def _render_error_line(exc: BaseException) -> int | str:
    """Line of the template frame in a Jinja render traceback ('?' when it cannot be found)."""
    tb = exc.__traceback__
    line: int | str = "?"
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(".jinja"):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
