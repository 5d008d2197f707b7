"""What the benchmarks that compare this checkout with another share: the two sides, the order that alternates
which side goes first, and a tiny model with synthetic `sso` folders to run them on."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

THIS = Path(__file__).resolve().parents[1]


def sides_of(baseline: Path | None) -> dict[str, Path]:
    """side name -> the checkout whose package runs on that side."""
    return {"this": THIS, **({"baseline": baseline} if baseline else {})}


def alternating(sides: dict[str, Path], reps: int) -> Iterator[tuple[int, str]]:
    """(repetition, side), the sides in turn, swapping which goes first on every repetition (a machine warming
    up or slowing down then favours neither)."""
    for rep in range(reps):
        for side in sorted(sides, reverse=rep % 2 == 1):
            yield rep, side


def tiny_model_and_data(work: Path, rows: list[int], response_repeat: int) -> tuple[Path, dict[int, Path]]:
    """A tiny model and a synthetic `sso` data folder per row count, under `work`, built by this checkout."""
    sys.path.insert(0, str(THIS))
    from ssogen.testing.synthetic import write_synthetic_sso
    from ssogen.testing.tiny_model import build_tiny_model

    model = build_tiny_model(work / "tiny")
    return model, {n: write_synthetic_sso(work / f"data-{n}", n, response_repeat=response_repeat) for n in rows}
