"""Naming the input rows `ssogen generate` skips, in one line: each reason's count and where its first rows are
(`1 not an object (line 4), 5 blank (rows 2, 3, 8, …)`), so that a user can find them in the input."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# The rows of each reason named by their place; the others are counted only.
SHOWN_PLACES = 3
# How a place counts: a file's line from 1, as an editor shows it (JSONL, CSV/TSV: blank lines and a quoted cell's
# line breaks count too), or a row's index in the input from 0, as `position` in the triplets (JSON lists,
# parquet, dataset folders, hub datasets).
LINE, ROW = "line", "row"


def reason_names(prompt_field: str) -> dict[str, str]:
    """Why a row gave no query, in words."""
    return {"missing_field": f"no {prompt_field!r} value", "blank_prompt": "blank",  # absent or null
            "no_user_turn": "a message list without a user turn",
            "not_text": f"{prompt_field!r} is neither text nor a message list", "not_an_object": "not an object"}


def note_place(first: dict[str, list[int]], reason: str, place: int) -> None:
    """Keep `place` among the first places of `reason` while it has fewer than `SHOWN_PLACES`."""
    places = first.setdefault(reason, [])
    if len(places) < SHOWN_PLACES:
        places.append(place)


def _places(places: Sequence[int], count: int, unit: str) -> str:
    shown = ", ".join(map(str, places)) + (", …" if count > len(places) else "")
    return f"{unit}{'s' if len(places) > 1 else ''} {shown}"


def skip_report(counts: Mapping[str, int], first: Mapping[str, Sequence[int]], unit: str, prompt_field: str) -> str:
    """`1 not an object (line 4), 1 blank (line 7)`: each reason's count and its first places (none known: the
    count alone, as in the manifest of a run of an earlier version); empty when no row was skipped."""
    names = reason_names(prompt_field)
    parts = []
    for reason, count in counts.items():
        places = first.get(reason, [])
        parts.append(f"{count} {names.get(reason, reason)}" + (f" ({_places(places, count, unit)})" if places else ""))
    return ", ".join(parts)
