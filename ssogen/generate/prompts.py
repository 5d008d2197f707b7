"""Rendering of the Jinja2 prompt templates: feature selection, contrastive system prompts, principle writer."""

from __future__ import annotations

from dataclasses import dataclass

from ssogen.principles import Feature, Library, join_adjectives
from ssogen.templating import TemplateError, Templates

TEMPLATE_NAMES = ("selection.jinja", "system.jinja", "principle_writer.jinja")
__all__ = ["TEMPLATE_NAMES", "PrincipleText", "PromptTemplates", "TemplateError"]


@dataclass(frozen=True)
class PrincipleText:
    """One line of a contrastive system prompt: `name: text`."""

    name: str
    text: str


class PromptTemplates(Templates):
    """The three prompt templates, from the bundled folder or a user's `--templates DIR`."""

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
