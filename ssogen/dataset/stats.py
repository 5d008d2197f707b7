"""What a generated dataset looks like: the funnel, lengths, length bias, duplicates, leakage, truncation and,
once scored, on-policy-ness. Pure computations over TripletRecords (the plots are in plots.py).

On-policy-ness is the SSO paper's measure of how close the pairs are to the policy that wrote them: the mean
over y+ and y- of exp(mean token log-prob of the response under the plain query x), so 1 means the policy
would have written exactly these tokens and values near 0 mean the pairs are off-policy for it.

Scope: the funnel counts every row of the run; every other section describes the kept rows (the pairs that
are published in the dpo/sso/reward/pairs configs). The scoring section reports both the kept rows and all scored
rows, because a likelihood filter makes the kept rows near-on-policy by construction.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
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


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _digest(text: str) -> bytes:
    # Duplicates are counted by a digest of each text: holding every text would hold the dataset.
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def response(record: TripletRecord, variant: str) -> str:
    return str(getattr(record, f"response_{variant}"))


def num_tokens(record: TripletRecord, variant: str) -> int:
    return int(getattr(record, f"num_tokens_{variant}"))


class StatsBuilder:
    """The statistics of triplets added a batch at a time, in input order: counts, and the numbers of each row
    (lengths, log-probs), never its text, so that memory grows with the rows and not with their text. The result
    is the one the same rows give added at once (the same values in the same order)."""

    def __init__(self, adjectives: dict[str, tuple[str, str]] | None = None) -> None:
        self.adjectives = adjectives or {}  # casefolded feature name -> its (good, bad) adjectives
        self.rows = self.kept = self.equal_rows = self.leak_rows = self.truncated_rows = 0
        self.reasons: Counter[str] = Counter()
        self.flags: Counter[str] = Counter()
        self.features: Counter[str] = Counter()
        self.extras: Counter[str] = Counter()
        self.terms: Counter[str] = Counter()
        # Of the kept rows, per variant: token and character lengths; leaking and truncated responses.
        self.tokens: dict[str, list[int]] = {v: [] for v in VARIANTS}
        self.characters: dict[str, list[int]] = {v: [] for v in VARIANTS}
        self.leaked = dict.fromkeys(VARIANTS, 0)
        self.truncated = dict.fromkeys(VARIANTS, 0)
        self.prompts: set[bytes] = set()
        self.responses: dict[str, set[bytes]] = {v: set() for v in VARIANTS}
        # Of the scored rows: lp(y+|x) and lp(y-|x) (all, kept), the kept rows' log-probs, the ordering holding.
        self.plain_all: list[tuple[float, float]] = []
        self.plain_kept: list[tuple[float, float]] = []
        self.logprobs_kept: dict[str, list[float]] = {name: [] for name in LOGPROB_FIELDS}
        self.ordering_all = self.ordering_kept = 0

    def add(self, records: Iterable[TripletRecord]) -> None:
        for record in records:
            self.rows += 1
            self.flags.update(record.flags)
            if has_pair_scores(record):
                self._add_scores(record)
            if not record.kept:
                self.reasons[record.drop_reason or "unspecified"] += 1
                continue
            self.kept += 1
            self.features.update(record.features)
            self.extras.update(record.extra)
            self.prompts.add(_digest(record.prompt))
            self.equal_rows += len({record.response_good, record.response_bad, record.response_raw}) < 3
            candidates = leak_terms(record, self.adjectives)
            leaks = cut = False
            for variant in VARIANTS:
                text = response(record, variant)
                self.tokens[variant].append(num_tokens(record, variant))
                self.characters[variant].append(len(text))
                self.responses[variant].add(_digest(text))
                if found := find_leaks(text, candidates):
                    self.leaked[variant] += 1
                    self.terms.update(found)
                    leaks = True
                if getattr(record, f"finish_reason_{variant}") == "length":
                    self.truncated[variant] += 1
                    cut = True
            self.leak_rows += leaks
            self.truncated_rows += cut

    def _add_scores(self, record: TripletRecord) -> None:
        plain = (float(record.lp_good_plain or 0.0), float(record.lp_bad_plain or 0.0))  # set: has_pair_scores
        holds = ordering_holds(record)
        self.plain_all.append(plain)
        self.ordering_all += holds
        if record.kept:
            self.plain_kept.append(plain)
            self.ordering_kept += holds
            for name in LOGPROB_FIELDS:
                if (value := getattr(record, name)) is not None:
                    self.logprobs_kept[name].append(value)

    def on_policy(self, plain: list[tuple[float, float]], variants: Sequence[int] = (0, 1)) -> float | None:
        """Mean of exp(lp(y|x)) over the rows' y+ (0) and y- (1), row by row."""
        return _mean([math.exp(pair[v]) for pair in plain for v in variants])

    def result(self) -> DatasetStats:
        kept = self.kept

        def ratio(chosen: list[int], rejected: list[int]) -> float | None:
            if not chosen or sum(rejected) == 0:
                return None
            return (sum(chosen) / len(chosen)) / (sum(rejected) / len(rejected))

        def longer(chosen: list[int], rejected: list[int]) -> float | None:
            return _share(sum(g > b for g, b in zip(chosen, rejected, strict=True)), kept)

        tokens, characters = self.tokens, self.characters
        scoring = None if not self.plain_all else Scoring(
            scored_rows=len(self.plain_all), scored_kept_rows=len(self.plain_kept),
            on_policy_kept=self.on_policy(self.plain_kept), on_policy_all=self.on_policy(self.plain_all),
            on_policy_good_kept=self.on_policy(self.plain_kept, (0,)),
            on_policy_bad_kept=self.on_policy(self.plain_kept, (1,)),
            ordering_holds_kept=_share(self.ordering_kept, len(self.plain_kept)),
            ordering_holds_all=_share(self.ordering_all, len(self.plain_all)),
            mean_logprob_kept={name: _mean(values) for name, values in self.logprobs_kept.items()})
        return DatasetStats(
            funnel=Funnel(rows_in=self.rows, kept=kept, dropped=self.rows - kept,
                          dropped_by_reason=dict(self.reasons.most_common()), flags=dict(self.flags.most_common()),
                          empty_responses={v: self.flags[f"empty_{v}"] for v in VARIANTS}),
            lengths=Lengths(tokens={v: summarize(tokens[v]) for v in VARIANTS},
                            characters={v: summarize(characters[v]) for v in VARIANTS}),
            length_bias=LengthBias(ratio_tokens=ratio(tokens["good"], tokens["bad"]),
                                   ratio_characters=ratio(characters["good"], characters["bad"]),
                                   share_chosen_longer_tokens=longer(tokens["good"], tokens["bad"]),
                                   share_chosen_longer_characters=longer(characters["good"], characters["bad"])),
            features=dict(self.features.most_common()), extras=dict(self.extras.most_common()),
            duplicates=Duplicates(prompts=kept - len(self.prompts),
                                  responses={v: kept - len(self.responses[v]) for v in VARIANTS},
                                  rows_with_equal_responses=self.equal_rows),
            leakage=Leakage(rate={v: _share(self.leaked[v], kept) for v in VARIANTS},
                            rows_any=_share(self.leak_rows, kept), terms=dict(self.terms.most_common())),
            truncation=Truncation(rate={v: _share(self.truncated[v], kept) for v in VARIANTS},
                                  rows_any=_share(self.truncated_rows, kept)),
            scoring=scoring,
        )


def compute_stats(records: Iterable[TripletRecord],
                  adjectives: dict[str, tuple[str, str]] | None = None) -> DatasetStats:
    """All statistics; `adjectives` maps a casefolded feature name to its (good, bad) adjectives."""
    builder = StatsBuilder(adjectives)
    builder.add(records)
    return builder.result()


def folder_builder(folder: OutputFolder) -> StatsBuilder:
    """The statistics of an output folder's triplets, read from its files a batch at a time, with leakage terms
    from the run's library."""
    builder = StatsBuilder(adjectives_of(folder.library()))
    for batch in folder.triplet_batches():
        builder.add(batch)
    return builder


def folder_stats(folder: OutputFolder) -> DatasetStats:
    return folder_builder(folder).result()
