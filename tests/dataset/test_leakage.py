"""`find_leaks` finds exactly what the whole-word, case-insensitive regex finds, on its fast path and off it."""

from __future__ import annotations

import random
import re

from ssogen.dataset.leakage import find_leaks


def regex_leaks(text: str, terms: list[str]) -> list[str]:
    """The definition: each distinct casefolded term the regex finds as a whole word."""
    return [term for term in dict.fromkeys(t.casefold() for t in terms)
            if re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, flags=re.IGNORECASE)]


TERMS = ["Safe", "Unsafe", "Safety", "guideline", "guidelines", "Well-structured", "ki", "Straße", "ıs", "Σίγμα"]


def test_cases_at_the_edges_of_the_fast_path() -> None:
    cases = [
        "Per the GUIDELINE, it is SAFE.", "That is unsafe; nothing is safer.", "safe_mode and safe2 and 2safe",
        "safé safe", "éSAFE", "saFE", "a WELL-STRUCTURED reply", "KI and \u212ai", "\u0130s it? \u0131s it?",
        "\u017fafe", "STRASSE or straße", "ΣΊΓΜΑ", "safesafe safe", "", "safe", "_safe_", "safe\u0301",
    ]
    for text in cases:
        assert find_leaks(text, TERMS) == regex_leaks(text, TERMS), text


def test_random_texts_agree_with_the_regex() -> None:
    rng = random.Random(0)
    alphabet = list("safeSAFEunty guidelinsGUIDELINS-_,.2 kKis") + ["\u212a", "\u0131", "\u0130", "\u017f", "é", "ß",
                                                                      "\u2019", "—", "σ", "ς", "Σ"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        terms = rng.sample(TERMS, rng.randrange(1, len(TERMS)))
        assert find_leaks(text, terms) == regex_leaks(text, terms), (text, terms)
