"""What counts as principle leakage: the words whose presence in a response betrays its row's system prompt (its
principle names, their adjectives from the library, 'guideline(s)') and how a response is searched for them.
stats.py counts the leaking responses of a dataset with these."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ssogen.records import TripletRecord

if TYPE_CHECKING:  # pragma: no cover
    from ssogen.principles import Library

# Words that betray the system prompt whatever the library: the prompt calls its principles "guidelines".
# ("principle" is left out: "in principle" is ordinary prose.)
GENERIC_LEAK_TERMS = ("guideline", "guidelines")


def leak_terms(record: TripletRecord, adjectives: dict[str, tuple[str, str]]) -> list[str]:
    """Words whose presence in a response reveals the row's system prompt: its principle names, their
    good and bad adjectives (from the library), and 'guideline(s)'."""
    terms: list[str] = list(GENERIC_LEAK_TERMS)
    for name in [*record.features, *record.extra]:
        terms.append(name)
        terms.extend(adjectives.get(name.casefold(), ()))
    return terms


def find_leaks(text: str, terms: Iterable[str]) -> list[str]:
    """Terms found in the text as whole words, case-insensitively (so 'Safe' does not match 'safety')."""
    found = []
    for term in dict.fromkeys(t.casefold() for t in terms):
        if re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, flags=re.IGNORECASE):
            found.append(term)
    return found


def adjectives_of(library: Library | None) -> dict[str, tuple[str, str]]:
    """(good, bad) adjectives per casefolded feature and extra name: leakage looks for them in responses."""
    if library is None:
        return {}
    return {item.name.casefold(): (item.adjectives.good, item.adjectives.bad)
            for item in [*library.features, *library.extras]}
