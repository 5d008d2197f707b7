"""Numbers as text: the same share reads the same in `ssogen stats`, `ssogen judge`, the iteration report and the
dataset card (the output folder's README.md)."""

from __future__ import annotations


def percent(value: float | None) -> str:
    """A share (0-1) as a percentage with one decimal; a dash where there is none."""
    return "–" if value is None else f"{100 * value:.1f}%"
