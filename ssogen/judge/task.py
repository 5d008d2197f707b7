"""The judge task in one place: the prompt (templates/judge.jinja), the answer parser and what a verdict means.

Each pair is shown twice: once with the chosen answer as A ("chosen_first") and once as B ("chosen_second").
A verdict is the letter the judge picked; the winner is what that letter stood for in that order."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

TEMPLATE = "judge.jinja"
Order = Literal["chosen_first", "chosen_second"]
ORDERS: tuple[Order, ...] = ("chosen_first", "chosen_second")
Verdict = Literal["A", "B"]

# A whole line that names the verdict: "Verdict: A", "**Verdict:** B.", "verdict - answer A". The line must hold
# nothing else, so "Verdict: A or B" or "Verdict: a tie" are not read as a choice.
_VERDICT_LINE = re.compile(r"^[\s*_#>`]*(?i:verdict)[\s*_`]*[:=\-]?[\s*_`\[(]*(?:(?i:answer|response)\s+)?"
                           r"(?P<letter>[AB])[\s*_`\])]*[.!]?[\s*_`]*$")
# An answer that is only the letter (some judges answer tersely).
_BARE_LETTER = re.compile(r"^[\s*_`\[(]*(?P<letter>[AB])[\s*_`\])]*[.!]?\s*$")


def parse_verdict(answer: str) -> Verdict | None:
    """The letter the judge chose, or None when the answer does not say it unambiguously (no verdict line,
    or verdict lines naming both letters)."""
    bare = _BARE_LETTER.match(answer)
    if bare:
        return bare.group("letter")  # type: ignore[return-value]
    letters = {m.group("letter") for line in answer.splitlines() if (m := _VERDICT_LINE.match(line))}
    if len(letters) != 1:
        return None
    return letters.pop()  # type: ignore[return-value]


def winner(order: Order, verdict: Verdict | None) -> Literal["chosen", "rejected"] | None:
    """What the picked letter stood for in this order."""
    if verdict is None:
        return None
    chosen_letter = "A" if order == "chosen_first" else "B"
    return "chosen" if verdict == chosen_letter else "rejected"


def render_prompt(query: str, chosen: str, rejected: str, order: Order, templates: str | Path | None = None) -> str:
    """The judge prompt for one order; `templates` is a folder whose judge.jinja replaces the bundled one."""
    from ssogen.templating import Templates

    a, b = (chosen, rejected) if order == "chosen_first" else (rejected, chosen)
    return Templates(templates).render(TEMPLATE, query=query, response_a=a, response_b=b)


def check_template(templates: str | Path | None = None) -> None:
    """Compile judge.jinja (the user's when `templates` has one) now: a syntax error is one line naming
    --templates before any model loads, not a traceback at the first prompt."""
    from ssogen.errors import UserError
    from ssogen.templating import TemplateError, Templates

    try:
        Templates(templates).check(TEMPLATE)
    except TemplateError as exc:
        raise UserError(f"--templates: {exc}") from None


def template_source(templates: str | Path | None = None) -> Path:
    from ssogen.templating import Templates

    return Templates(templates).source_of(TEMPLATE)
