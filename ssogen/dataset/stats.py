"""What a generated dataset looks like: the funnel, lengths, length bias, duplicates, leakage, truncation and,
once scored, on-policy-ness. Pure computations over TripletRecords (the plots are in plots.py).

On-policy-ness is the SSO paper's measure of how close the pairs are to the policy that wrote them: the mean
over y+ and y- of exp(mean token log-prob of the response under the plain query x), so 1 means the policy
would have written exactly these tokens and values near 0 mean the pairs are off-policy for it.

Scope: the funnel counts every row of the run; every other section describes the kept rows (the pairs that
are published in the dpo/sso/reward configs). The scoring section reports both the kept rows and all scored
rows, because a likelihood filter makes the kept rows near-on-policy by construction.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel

from ssogen.dataset.leakage import adjectives_of, find_leaks, leak_terms
from ssogen.dataset.likelihood import has_pair_scores, ordering_holds
from ssogen.records import LOGPROB_FIELDS, VARIANTS, TripletRecord

if TYPE_CHECKING:  # pragma: no cover
    from ssogen.dataset.folder import OutputFolder

VARIANT_LABELS = {"good": "y+ (good system)", "bad": "y- (bad system)", "raw": "yo (plain)"}


class Summary(BaseModel):
    """Distribution of one quantity; None fields when there are no values."""

    count: int
    mean: float | None = None
    median: float | None = None
    p90: float | None = None
    min: float | None = None
    max: float | None = None


class Funnel(BaseModel):
    rows_in: int
    kept: int
    dropped: int
    dropped_by_reason: dict[str, int]
    flags: dict[str, int]
    empty_responses: dict[str, int] = {}  # per variant, all rows: dropped by default, kept with --keep-empty


class Lengths(BaseModel):
    tokens: dict[str, Summary]
    characters: dict[str, Summary]


class LengthBias(BaseModel):
    """Chosen (y+) against rejected (y-) of the P1 pair: ratio of the means and share of longer chosen."""

    ratio_tokens: float | None
    ratio_characters: float | None
    share_chosen_longer_tokens: float | None
    share_chosen_longer_characters: float | None


class Duplicates(BaseModel):
    """Rows whose text repeats an earlier kept row's text (count of rows minus distinct texts)."""

    prompts: int
    responses: dict[str, int]
    rows_with_equal_responses: int  # y+ == y-, y+ == yo or y- == yo inside one row


class Leakage(BaseModel):
    """Share of responses that name one of their row's principles, its adjectives, or 'guideline(s)'."""

    rate: dict[str, float | None]
    rows_any: float | None
    terms: dict[str, int]


class Truncation(BaseModel):
    """Share of responses cut at the token limit (finish reason 'length')."""

    rate: dict[str, float | None]
    rows_any: float | None


class Scoring(BaseModel):
    """On-policy-ness = mean of exp(mean token log-prob) of y+ and y- under the plain query."""

    scored_rows: int
    scored_kept_rows: int
    on_policy_kept: float | None
    on_policy_all: float | None
    on_policy_good_kept: float | None
    on_policy_bad_kept: float | None
    ordering_holds_kept: float | None
    ordering_holds_all: float | None
    mean_logprob_kept: dict[str, float | None]


class DatasetStats(BaseModel):
    funnel: Funnel
    lengths: Lengths
    length_bias: LengthBias
    features: dict[str, int]
    extras: dict[str, int]
    duplicates: Duplicates
    leakage: Leakage
    truncation: Truncation
    scoring: Scoring | None = None
    plots: list[str] = []


def summarize(values: Sequence[float]) -> Summary:
    """Mean, median and 90th percentile (linear interpolation between closest ranks, as numpy's default)."""
    if not values:
        return Summary(count=0)
    ordered = sorted(float(v) for v in values)
    return Summary(count=len(ordered), mean=sum(ordered) / len(ordered), median=_percentile(ordered, 50),
                   p90=_percentile(ordered, 90), min=ordered[0], max=ordered[-1])


def _percentile(ordered: Sequence[float], q: float) -> float:
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _share(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def response(record: TripletRecord, variant: str) -> str:
    return str(getattr(record, f"response_{variant}"))


def num_tokens(record: TripletRecord, variant: str) -> int:
    return int(getattr(record, f"num_tokens_{variant}"))


def funnel(records: Sequence[TripletRecord]) -> Funnel:
    kept = sum(1 for r in records if r.kept)
    reasons = Counter(r.drop_reason or "unspecified" for r in records if not r.kept)
    flags = Counter(flag for r in records for flag in r.flags)
    return Funnel(rows_in=len(records), kept=kept, dropped=len(records) - kept,
                  dropped_by_reason=dict(reasons.most_common()), flags=dict(flags.most_common()),
                  empty_responses={v: flags[f"empty_{v}"] for v in VARIANTS})


def lengths(records: Sequence[TripletRecord]) -> Lengths:
    return Lengths(
        tokens={v: summarize([num_tokens(r, v) for r in records]) for v in VARIANTS},
        characters={v: summarize([len(response(r, v)) for r in records]) for v in VARIANTS},
    )


def length_bias(records: Sequence[TripletRecord]) -> LengthBias:
    def ratio(chosen: list[int], rejected: list[int]) -> float | None:
        if not chosen or sum(rejected) == 0:
            return None
        return (sum(chosen) / len(chosen)) / (sum(rejected) / len(rejected))

    tok_good, tok_bad = [r.num_tokens_good for r in records], [r.num_tokens_bad for r in records]
    chr_good, chr_bad = [len(r.response_good) for r in records], [len(r.response_bad) for r in records]
    return LengthBias(
        ratio_tokens=ratio(tok_good, tok_bad),
        ratio_characters=ratio(chr_good, chr_bad),
        share_chosen_longer_tokens=_share(sum(g > b for g, b in zip(tok_good, tok_bad, strict=True)), len(records)),
        share_chosen_longer_characters=_share(sum(g > b for g, b in zip(chr_good, chr_bad, strict=True)),
                                              len(records)),
    )


def duplicates(records: Sequence[TripletRecord]) -> Duplicates:
    def repeats(texts: list[str]) -> int:
        return len(texts) - len(set(texts))

    equal = sum(1 for r in records if len({r.response_good, r.response_bad, r.response_raw}) < 3)
    return Duplicates(prompts=repeats([r.prompt for r in records]),
                      responses={v: repeats([response(r, v) for r in records]) for v in VARIANTS},
                      rows_with_equal_responses=equal)


def leakage(records: Sequence[TripletRecord], adjectives: dict[str, tuple[str, str]]) -> Leakage:
    leaked = {v: 0 for v in VARIANTS}
    rows_any = 0
    terms: Counter[str] = Counter()
    for record in records:
        candidates = leak_terms(record, adjectives)
        row_leaks = False
        for variant in VARIANTS:
            found = find_leaks(response(record, variant), candidates)
            if found:
                leaked[variant] += 1
                row_leaks = True
                terms.update(found)
        rows_any += row_leaks
    return Leakage(rate={v: _share(leaked[v], len(records)) for v in VARIANTS},
                   rows_any=_share(rows_any, len(records)), terms=dict(terms.most_common()))


def truncation(records: Sequence[TripletRecord]) -> Truncation:
    def cut(record: TripletRecord, variant: str) -> bool:
        return getattr(record, f"finish_reason_{variant}") == "length"

    return Truncation(rate={v: _share(sum(cut(r, v) for r in records), len(records)) for v in VARIANTS},
                      rows_any=_share(sum(any(cut(r, v) for v in VARIANTS) for r in records), len(records)))


def on_policy(records: Sequence[TripletRecord], variants: Sequence[str] = ("good", "bad")) -> float | None:
    values = [math.exp(getattr(r, f"lp_{v}_plain")) for r in records for v in variants]
    return sum(values) / len(values) if values else None


def scoring(all_records: Sequence[TripletRecord]) -> Scoring | None:
    scored = [r for r in all_records if has_pair_scores(r)]
    if not scored:
        return None
    kept = [r for r in scored if r.kept]
    means: dict[str, float | None] = {}
    for name in LOGPROB_FIELDS:
        values = [getattr(r, name) for r in kept if getattr(r, name) is not None]
        means[name] = sum(values) / len(values) if values else None
    return Scoring(
        scored_rows=len(scored), scored_kept_rows=len(kept),
        on_policy_kept=on_policy(kept), on_policy_all=on_policy(scored),
        on_policy_good_kept=on_policy(kept, ("good",)), on_policy_bad_kept=on_policy(kept, ("bad",)),
        ordering_holds_kept=_share(sum(ordering_holds(r) for r in kept), len(kept)),
        ordering_holds_all=_share(sum(ordering_holds(r) for r in scored), len(scored)),
        mean_logprob_kept=means,
    )


def compute_stats(records: Sequence[TripletRecord],
                  adjectives: dict[str, tuple[str, str]] | None = None) -> DatasetStats:
    """All statistics; `adjectives` maps a casefolded feature name to its (good, bad) adjectives."""
    kept = [r for r in records if r.kept]
    features = Counter(name for r in kept for name in r.features)
    extras = Counter(name for r in kept for name in r.extra)
    return DatasetStats(
        funnel=funnel(records), lengths=lengths(kept), length_bias=length_bias(kept),
        features=dict(features.most_common()), extras=dict(extras.most_common()),
        duplicates=duplicates(kept), leakage=leakage(kept, adjectives or {}), truncation=truncation(kept),
        scoring=scoring(records),
    )


def folder_stats(folder: OutputFolder, records: Sequence[TripletRecord] | None = None) -> DatasetStats:
    """The statistics of an output folder's triplets, with leakage terms from the run's library."""
    if records is None:
        records = folder.read_triplets()
    return compute_stats(records, adjectives_of(folder.library()))
