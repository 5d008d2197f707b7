"""What a generated dataset looks like: the funnel, lengths, length bias, duplicates, leakage, truncation and,
once scored, on-policy-ness (SPEC §2.4). Pure computations over TripletRecords, plus PNG plots.

Scope: the funnel counts every row of the run; every other section describes the kept rows (the pairs that
are published in the dpo/sso/reward configs). The scoring section reports both the kept rows and all scored
rows, because a likelihood filter makes the kept rows near-on-policy by construction.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel

from ssogen.records import TripletRecord

VARIANTS = ("good", "bad", "raw")  # y+, y-, yo
VARIANT_LABELS = {"good": "y+ (good system)", "bad": "y- (bad system)", "raw": "yo (plain)"}
STATS_FILE = "stats.json"
PLOTS_DIR = "plots"
LENGTH_PLOT = "lengths.png"
ON_POLICY_PLOT = "on_policy.png"
# Words that betray the system prompt whatever the library: the prompt calls its principles "guidelines".
# ("principle" is left out: "in principle" is ordinary prose.)
GENERIC_LEAK_TERMS = ("guideline", "guidelines")


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
    """On-policy-ness = mean of exp(mean token log-prob) of y+ and y- under the plain query (SPEC §2.4)."""

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

    equal = sum(1 for r in records
                if len({r.response_good, r.response_bad, r.response_raw}) < 3)
    return Duplicates(prompts=repeats([r.prompt for r in records]),
                      responses={v: repeats([response(r, v) for r in records]) for v in VARIANTS},
                      rows_with_equal_responses=equal)


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


def is_scored(record: TripletRecord) -> bool:
    """All six y+/y- log-probs present (yo under x is optional for the metrics)."""
    return all(getattr(record, name) is not None for name in (
        "lp_good_plain", "lp_good_good", "lp_good_bad", "lp_bad_plain", "lp_bad_good", "lp_bad_bad"))


def ordering_holds(record: TripletRecord) -> bool:
    """lp(y+|x+) > lp(y+|x) > lp(y+|x-) and lp(y-|x-) > lp(y-|x) > lp(y-|x+) (SPEC §2.1 step 7)."""
    r = record
    return bool(r.lp_good_good > r.lp_good_plain > r.lp_good_bad  # type: ignore[operator]
                and r.lp_bad_bad > r.lp_bad_plain > r.lp_bad_good)  # type: ignore[operator]


def on_policy(records: Sequence[TripletRecord], variants: Sequence[str] = ("good", "bad")) -> float | None:
    values = [math.exp(getattr(r, f"lp_{v}_plain")) for r in records for v in variants]
    return sum(values) / len(values) if values else None


def scoring(all_records: Sequence[TripletRecord]) -> Scoring | None:
    scored = [r for r in all_records if is_scored(r)]
    if not scored:
        return None
    kept = [r for r in scored if r.kept]
    from ssogen.records import LOGPROB_FIELDS

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


def library_adjectives(out_dir: str | Path, manifest: dict[str, object] | None = None) -> dict[str, tuple[str, str]]:
    """Adjectives per feature from the library stored in the folder (library.yaml), else the manifest's
    library path or name, else the bundled default; an unreadable library gives an empty map."""
    from ssogen.principles import LibraryError, load_library

    candidates: list[str] = []
    stored = Path(out_dir) / "library.yaml"
    if stored.exists():
        candidates.append(str(stored))
    info = (manifest or {}).get("library")
    if isinstance(info, dict):
        candidates += [str(info[k]) for k in ("path", "source", "name") if info.get(k)]
    elif isinstance(info, str):
        candidates.append(info)
    candidates.append("default")
    for candidate in candidates:
        try:
            library = load_library(candidate).library
        except (LibraryError, OSError):
            continue
        return {item.name.casefold(): (item.adjectives.good, item.adjectives.bad)
                for item in [*library.features, *library.extras]}
    return {}


def write_plots(out_dir: str | Path, records: Sequence[TripletRecord]) -> list[str]:
    """PNG histograms into OUT/plots/: token lengths per variant, and exp(avg log-prob | x) when scored.
    Returns the paths written, relative to the folder (the card links them that way)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    plots = out / PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    kept = [r for r in records if r.kept]
    written: list[str] = []

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=True)
    for axis, variant in zip(axes, VARIANTS, strict=True):
        values = [num_tokens(r, variant) for r in kept]
        axis.hist(values, bins=min(30, max(1, len(set(values)))), color="#4c72b0")
        axis.set_title(VARIANT_LABELS[variant])
        axis.set_xlabel("tokens")
    axes[0].set_ylabel("responses (kept rows)")
    fig.tight_layout()
    _save(fig, plots / LENGTH_PLOT)
    plt.close(fig)
    written.append(f"{PLOTS_DIR}/{LENGTH_PLOT}")

    scored = [r for r in kept if is_scored(r)]
    on_policy_path = plots / ON_POLICY_PLOT
    if scored:
        fig, axis = plt.subplots(figsize=(6, 3.5))
        for variant, color in (("good", "#55a868"), ("bad", "#c44e52")):
            axis.hist([math.exp(getattr(r, f"lp_{variant}_plain")) for r in scored], bins=20, range=(0, 1),
                      alpha=0.6, color=color, label=VARIANT_LABELS[variant])
        axis.set_xlabel("exp(mean token log-prob) under the plain query")
        axis.set_ylabel("responses (kept rows)")
        axis.legend()
        fig.tight_layout()
        _save(fig, on_policy_path)
        plt.close(fig)
        written.append(f"{PLOTS_DIR}/{ON_POLICY_PLOT}")
    elif on_policy_path.exists():
        on_policy_path.unlink()  # stale plot from an earlier scored state would contradict the card
    return written


def _save(fig: object, path: Path) -> None:
    """Write then rename so that a crash never leaves a truncated PNG behind."""
    import os

    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)  # type: ignore[attr-defined]
    os.replace(tmp, path)


def refresh(out_dir: str | Path, *, plots: bool = True, card: bool = True) -> DatasetStats:
    """Recompute the stats of a folder: OUT/stats.json, the plots and (unless a person wrote it) the card.
    Used by `stats` and `score`."""
    from ssogen.dataset.folder import read_manifest, read_triplets, write_json_atomic

    out = Path(out_dir)
    records = read_triplets(out)
    manifest = read_manifest(out)
    stats = compute_stats(records, library_adjectives(out, manifest))
    if plots:
        stats.plots = write_plots(out, records)
    write_json_atomic(out / STATS_FILE, stats.model_dump())
    if card:
        from ssogen.dataset.card import card_is_generated, write_card

        if card_is_generated(out):  # a hand-written card is never overwritten
            write_card(out, stats=stats)
    return stats
