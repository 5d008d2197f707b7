"""The numbers of a generate run for its manifest and printed summary, and the warnings about the data as a whole:
counted in one pass over the rows, so that they can come a batch at a time (one batch of records held, not all)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ssogen.generate.inputs import PromptsRead
from ssogen.records import VARIANTS, TripletRecord

# Above these shares of the sampled rows the run is not what the user thinks it is: the summary warns.
TRUNCATED_WARNING_SHARE = 0.2
FILLED_WARNING_SHARE = 0.2


@dataclass
class Tally:
    """The counts of the rows added so far, for `summarize`: the end of generate adds each batch as it reads the
    saved rows, once. `tokens`: every row's tokens (the manifest's `tokens_total`)."""

    rows: int = 0
    tokens: int = 0
    kept: int = 0
    dropped: Counter[str | None] = field(default_factory=Counter)
    selection_filled: int = 0
    principle_fallback: int = 0
    flags: Counter[str] = field(default_factory=Counter)
    empty: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VARIANTS, 0))
    kept_tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VARIANTS, 0))
    features: Counter[str] = field(default_factory=Counter)
    # Of the sampled rows (not dropped as too long to prompt): for the warnings.
    sampled: int = 0
    sampled_truncated: int = 0
    sampled_filled: int = 0
    sampled_fallback: int = 0
    sampled_guided: bool = True

    def add(self, records: Iterable[TripletRecord]) -> None:
        for record in records:
            self._add(record)

    def _add(self, record: TripletRecord) -> None:
        self.rows += 1
        self.tokens += sum(getattr(record, f"num_tokens_{v}") for v in VARIANTS)
        self.selection_filled += record.selection_filled
        self.principle_fallback += record.principle_fallback
        self.flags.update(record.flags)
        self.features.update([*record.features, *record.extra])
        for variant in VARIANTS:
            self.empty[variant] += f"empty_{variant}" in record.flags
        if record.kept:
            self.kept += 1
            for variant in VARIANTS:
                self.kept_tokens[variant] += getattr(record, f"num_tokens_{variant}")
        else:
            self.dropped[record.drop_reason] += 1
        if record.drop_reason != "prompt_too_long":
            self.sampled += 1
            self.sampled_truncated += any(f.startswith("truncated_") for f in record.flags)
            self.sampled_filled += record.selection_filled
            self.sampled_fallback += record.principle_fallback
            self.sampled_guided = self.sampled_guided and record.selection_mode == "guided"


def _tally(records: Iterable[TripletRecord]) -> Tally:
    tally = Tally()
    tally.add(records)
    return tally


def run_warnings(records: Iterable[TripletRecord], max_tokens: int) -> list[str]:
    """Warnings about the data as a whole: too many responses cut at --max-tokens, feature selection falling back to
    a random pick for too many rows (then the principles are mostly chance, not the policy's choice), or policy-written
    principles falling back to the library's text for too many."""
    return _warnings(_tally(records), max_tokens)


def _warnings(tally: Tally, max_tokens: int) -> list[str]:
    sampled = tally.sampled
    if not sampled:
        return []
    found = []
    truncated = tally.sampled_truncated
    if truncated > TRUNCATED_WARNING_SHARE * sampled:
        found.append(f"{truncated} of {sampled} rows ({truncated / sampled:.0%}) have a response cut at "
                     f"--max-tokens {max_tokens}: raise --max-tokens, or the pairs compare unfinished answers")
    filled = tally.sampled_filled
    if filled > FILLED_WARNING_SHARE * sampled:
        guided = tally.sampled_guided  # cut short, or a library past the exact regex
        remedy = ("a larger --selection-max-tokens or fewer --features-per-query" if guided
                  else "--selection guided or fewer --features-per-query")
        found.append(f"feature selection fell back to a random pick for {filled} of {sampled} rows "
                     f"({filled / sampled:.0%}): the policy seldom named enough valid features, so most "
                     f"principles are chance (try {remedy})")
    fallback = tally.sampled_fallback
    if fallback > FILLED_WARNING_SHARE * sampled:
        found.append(f"--principle-source policy: the policy wrote no usable principle text for {fallback} of "
                     f"{sampled} rows ({fallback / sampled:.0%}), so they use the library's text (try a "
                     "stronger policy, or --principle-source library)")
    return found


def summarize(rows: Tally | Iterable[TripletRecord], prompts: PromptsRead, wall_s: float, tokens: int,
              generation_s: float | None = None, *, max_tokens: int | None = None) -> dict[str, Any]:
    """The run's numbers for the manifest and the printed summary, from the rows or their tally. `generation_s`:
    engine time (from the first engine call), which tokens/s is measured over; model loading is in `wall_time_s`
    only."""
    tally = rows if isinstance(rows, Tally) else _tally(rows)
    lengths = {v: round(tally.kept_tokens[v] / tally.kept, 2) if tally.kept else None for v in VARIANTS}
    good, bad = lengths["good"], lengths["bad"]
    return {
        "rows_in": len(prompts.rows),  # the rows taken (under --limit: the first N usable ones)
        "rows_read": prompts.rows_read,
        "input_rows": prompts.input_rows,
        "rows_skipped": dict(prompts.skipped),
        # Where the first skipped rows of each reason are: file lines from 1, or row indices from 0 (`skips`).
        "rows_skipped_at": {"unit": prompts.places, "first": {k: list(v) for k, v in prompts.skipped_first.items()}},
        # Message-list rows whose query is their last user turn: the parts left out -> rows.
        "conversation_parts_dropped": dict(prompts.reduced),
        "rows": tally.rows,
        "sampled": tally.sampled,
        "kept": tally.kept,
        "dropped": dict(tally.dropped),
        "selection_filled": tally.selection_filled,
        "principle_fallback": tally.principle_fallback,
        "flags": dict(tally.flags),
        "empty_responses": tally.empty,
        "mean_tokens_kept": lengths,
        "chosen_rejected_length_ratio": round(good / bad, 3) if good and bad else None,
        "feature_counts": dict(tally.features),
        "wall_time_s": round(wall_s, 2),
        "generation_time_s": round(generation_s, 3) if generation_s else None,
        "tokens_generated": tokens,
        "tokens_per_s": round(tokens / generation_s, 1) if generation_s and tokens else None,
        "warnings": _warnings(tally, max_tokens) if max_tokens is not None else [],
    }
