"""Cheap filters (step 6 of docs/method.md). Every decision is recorded as a flag or a drop reason, never silent."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ssogen.principles import Library

VARIANTS = ("good", "bad", "raw")
# Drop reasons, in the order they are checked (the first that applies is recorded).
DROP_REASONS = ("prompt_too_long", "empty_response", "truncated", "identical_responses")


def leaked_prefix_pattern(library: Library) -> re.Pattern[str]:
    """Matches a leading "<Adjective> response:" for any adjective of the library (case-insensitive)."""
    adjectives = sorted({a for f in [*library.features, *library.extras]
                         for a in (f.adjectives.good, f.adjectives.bad)}, key=len, reverse=True)
    alternatives = "|".join(re.escape(a) for a in adjectives)
    return re.compile(rf"^\s*(?:{alternatives})\s+response\s*:\s*", flags=re.IGNORECASE)


@dataclass
class FilterOutcome:
    responses: dict[str, str]
    flags: list[str] = field(default_factory=list)
    kept: bool = True
    drop_reason: str | None = None


def apply_filters(responses: dict[str, str], finish_reasons: dict[str, str], *, prefix: re.Pattern[str],
                  keep_truncated: bool) -> FilterOutcome:
    """Strip leaked prefixes, flag empty/truncated responses, and decide whether the row is kept."""
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
    if empty:
        outcome.drop_reason = "empty_response"
    elif truncated and not keep_truncated:
        outcome.drop_reason = "truncated"
    elif identical:
        outcome.drop_reason = "identical_responses"
    outcome.kept = outcome.drop_reason is None
    return outcome
