"""Cheap filters (step 6 of docs/method.md). Every decision is recorded as a flag or a drop reason, never silent."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ssogen.principles import Library
from ssogen.records import VARIANTS


def leaked_prefix_pattern(library: Library) -> re.Pattern[str]:
    """Matches a leaked label at the very start of a response, as the paper's code strips them: "Response:" alone
    or after a list of the library's adjectives ("Helpful response:", "Helpful and Accurate response:",
    "Safe, Logical & Concise Response:"), in any case, optionally as a markdown heading or in emphasis
    ("**Unhelpful Response:**", "**Response**:", "## Helpful response:"), plus the whitespace after it.

    Only the start of the text is looked at, and the colon is required, so "Response times vary..." and a label
    on a later line are left alone."""
    adjectives = sorted({a for f in [*library.features, *library.extras]
                         for a in (f.adjectives.good, f.adjectives.bad)}, key=len, reverse=True)
    adjective = "(?:" + "|".join(re.escape(a) for a in adjectives) + ")"
    separator = r"(?:\s*,\s*(?:and\s+)?|\s+and\s+|\s*[&/]\s*)"
    adjective_list = rf"{adjective}(?:{separator}{adjective})*\s+"
    emphasis = r"[*_]{1,3}"
    return re.compile(rf"^\s*(?:#{{1,6}}\s+)?(?:{emphasis})?(?:{adjective_list})?response\s*(?:{emphasis})?\s*:"
                      rf"(?:{emphasis})?\s*", flags=re.IGNORECASE)


@dataclass
class FilterOutcome:
    responses: dict[str, str]
    flags: list[str] = field(default_factory=list)
    kept: bool = True
    drop_reason: str | None = None


def apply_filters(responses: dict[str, str], finish_reasons: dict[str, str], *, prefix: re.Pattern[str],
                  keep_truncated: bool, keep_empty: bool = False) -> FilterOutcome:
    """Strip leaked prefixes, flag empty/truncated responses, and decide whether the row is kept.

    Empty responses (nothing but whitespace once a leaked prefix is gone) are flagged `empty_<variant>` always and
    dropped unless `keep_empty`; truncated ones likewise with `keep_truncated`."""
    outcome = FilterOutcome(responses=dict(responses))
    for variant in VARIANTS:
        stripped = prefix.sub("", responses[variant], count=1)
        if stripped != responses[variant]:
            outcome.flags.append(f"prefix_stripped_{variant}")
            outcome.responses[variant] = stripped
    empty = [v for v in VARIANTS if not outcome.responses[v].strip()]
    truncated = [v for v in VARIANTS if finish_reasons[v] == "length"]
    outcome.flags += [f"empty_{v}" for v in empty] + [f"truncated_{v}" for v in truncated]
    texts = {v: outcome.responses[v].strip() for v in VARIANTS}
    identical = texts["good"] == texts["bad"] or texts["good"] == texts["raw"] or texts["bad"] == texts["raw"]
    if empty and not keep_empty:
        outcome.drop_reason = "empty_response"
    elif truncated and not keep_truncated:
        outcome.drop_reason = "truncated"
    elif identical:
        outcome.drop_reason = "identical_responses"
    outcome.kept = outcome.drop_reason is None
    return outcome
