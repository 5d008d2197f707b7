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


# The only characters that re.IGNORECASE matches to an ASCII letter besides the ASCII letters themselves ('İ' and
# 'ı' to i, 'ſ' to s, the Kelvin sign to k); 'İ' is also the only character whose lower() is longer than one.
_MATCH_ASCII_LETTERS = ("\u0130", "\u0131", "\u017f", "\u212a")


def find_leaks(text: str, terms: Iterable[str]) -> list[str]:
    r"""Terms found in the text as whole words, case-insensitively (so 'Safe' does not match 'safety'): what
    `re.search(r"(?<!\w)TERM(?!\w)", text, re.IGNORECASE)` finds, with a plain substring search where that is
    exact (an ASCII term in a text without the four characters above): the regex ran at a few µs per KB and term,
    most of the time of `stats`, the card and `push-to-hub --dry-run` on large datasets."""
    found = []
    lowered = None if any(c in text for c in _MATCH_ASCII_LETTERS) else text.lower()
    for term in dict.fromkeys(t.casefold() for t in terms):
        if lowered is not None and term and term.isascii():
            hit = _whole_word_in(text, lowered, term)
        else:
            hit = re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, flags=re.IGNORECASE) is not None
        if hit:
            found.append(term)
    return found


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"  # the regex's \w


def _whole_word_in(text: str, lowered: str, term: str) -> bool:
    """`term` (ASCII, lower case) occurs in `lowered` (text.lower(), as long as text) with no word character of
    the text just before or after it."""
    start = lowered.find(term)
    while start != -1:
        end = start + len(term)
        if (start == 0 or not _is_word(text[start - 1])) and (end == len(text) or not _is_word(text[end])):
            return True
        start = lowered.find(term, start + 1)
    return False


def adjectives_of(library: Library | None) -> dict[str, tuple[str, str]]:
    """(good, bad) adjectives per casefolded feature and extra name: leakage looks for them in responses."""
    if library is None:
        return {}
    return {item.name.casefold(): (item.adjectives.good, item.adjectives.bad)
            for item in [*library.features, *library.extras]}
