"""Numbers as text: a count with its noun in the right number, and the same share reads the same in `ssogen
stats`, `ssogen judge`, the iteration report and the dataset card (the output folder's README.md)."""

from __future__ import annotations

from collections.abc import Mapping
from io import StringIO
from typing import Any


def percent(value: float | None) -> str:
    """A share (0-1) as a percentage with one decimal; a dash where there is none."""
    return "–" if value is None else f"{100 * value:.1f}%"


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """`1 row`, `2 rows`, `0 rows`; `plural` for a noun whose plural does not add an s (`query`, `queries`)."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def plain_zero(value: float) -> float:
    """`value`, but 0.0 for -0.0, which prints as `-0` (a small negative rounded: `round(-3e-7, 6)` is -0.0)."""
    return 0.0 if value == 0 else value


def listed(items: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return " and ".join(filter(None, [", ".join(items[:-1]), *items[-1:]]))


def named_counts(counts: Mapping[str, object]) -> str:
    """`dpo 3, sso 3` in the mapping's order; empty for no entries (each caller says what none reads as)."""
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def plain_text(renderable: Any, **print_options: Any) -> str:
    """What rich prints for `renderable`, without colour or terminal codes, 120 columns wide: a table or a line as
    a command log holds it."""
    from rich.console import Console

    plain = Console(file=StringIO(), width=120, color_system=None, force_terminal=False)
    plain.print(renderable, **print_options)
    return plain.file.getvalue().rstrip()  # type: ignore[attr-defined]
