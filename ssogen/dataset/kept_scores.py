"""What a rewrite of a scored folder's data files keeps of `ssogen score` (a finished `generate` run asked again with
another --limit, --test-size or --license).

The last score's cache holds every row it scored, by row id and a hash of the row's texts, at the dtype named in the
manifest's `score` entry: the rewrite takes each remaining row's scores from there (no engine) and applies the filter
that score left applied, with `scored_rows`, the post-processing `ssogen score` itself runs. The rewritten data is
then what that score, run again with its options, makes of the rewritten rows. A row the cache has no score for (one
a larger --limit added) stays unscored, as score leaves a row too long for its engine: the filter drops it as
`likelihood:unscored`, and a warning names the command that scores it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.likelihood import (
    LIKELIHOOD,
    LikelihoodFilterOptions,
    apply_likelihood_filter,
    has_pair_scores,
    likelihood_candidate,
)
from ssogen.dataset.score_cache import Scores, cached_scores
from ssogen.dataset.score_requests import CONVENTION
from ssogen.dataset.shards import ShardStore
from ssogen.records import TripletRecord
from ssogen.settings import flag_name

SCORES_DROPPED = ("the log-probs and any likelihood filter of `ssogen score` were dropped with the rewritten rows: "
                  "run it again (its cache makes that quick)")


def scored_rows(records: Iterable[TripletRecord], scores: Scores, filter_options: LikelihoodFilterOptions | None
                ) -> list[TripletRecord]:
    """The rows with their scores, then filtered when a filter applies: what `ssogen score` writes."""
    updated = [r.model_copy(update=scores[r.id]) if r.id in scores else r for r in records]
    return apply_likelihood_filter(updated, filter_options) if filter_options is not None else updated


def too_long_rows(scores: Scores) -> int:
    """Rows left unscored as too long for the scorer's context: a cache line whose seven scores are null."""
    return sum(1 for lp in scores.values() if all(v is None for v in lp.values()))


@dataclass(frozen=True)
class LastScore:
    """The folder's last finished `ssogen score`: its manifest entry, its cache, the dtype of its scores and the
    filter it left applied."""

    entry: dict[str, Any]
    cache: ShardStore
    dtype: str
    filter: LikelihoodFilterOptions | None


def last_score(folder: OutputFolder, manifest: dict[str, Any]) -> LastScore | None:
    """The last score whose scores a rewrite can keep; None when there is none, or when its scores cannot be told
    from the cache: a score stopped while it rewrote the data files (the entry is an earlier score's), another
    version's conventions, no dtype, or a cache that is gone."""
    entry = manifest.get("score")
    if not isinstance(entry, dict) or manifest.get("rewriting") == "score" or entry.get("convention") != CONVENTION:
        return None
    cache, dtype, settings = entry.get("cache"), entry.get("dtype"), entry.get("filter")
    if not isinstance(cache, str) or not isinstance(dtype, str) or not (folder.root / cache).is_dir():
        return None
    try:
        filter_options = LikelihoodFilterOptions.model_validate(settings) if settings is not None else None
    except ValueError:
        return None
    return LastScore(entry, ShardStore(folder, folder.root / cache), dtype, filter_options)


@dataclass(frozen=True)
class KeptScores:
    """The rewritten rows with the last score's scores and filter; `unscored`: rows to score that the cache has no
    score for."""

    rows: list[TripletRecord]
    last: LastScore
    scores: Scores
    unscored: int

    def entry(self, configs: dict[str, int]) -> dict[str, Any]:
        """The manifest's `score` entry for the rewritten data (`configs`: the rows per data file)."""
        return {**self.last.entry, "rows_scored": sum(1 for r in self.rows if has_pair_scores(r)),
                "rows_too_long": too_long_rows(self.scores), "configs": configs}

    def warning(self, folder_name: str) -> str | None:
        """One line naming the command that scores the rows the cache had no score for; None when it had all."""
        if not self.unscored:
            return None
        options, one = self.last.filter, self.unscored == 1
        command = f"ssogen score {folder_name} --model {self.last.entry.get('model')}{filter_flags(options)}"
        them = "it" if one else "them"
        until = f"; until then the likelihood filter drops {them} ({LIKELIHOOD}:unscored)" if options else ""
        return (f"{self.unscored} row{'' if one else 's'} added since `ssogen score` {'is' if one else 'are'} not "
                f"scored (the others keep their scores and filter): run `{command}` to score {them}{until}")


def keep_scores(rows: list[TripletRecord], last: LastScore) -> KeptScores | None:
    """The rows as the last score, run again with its options, would write them, from its cache; None when the cache
    holds a score for none of them (the rewrite then drops the scores, and says so)."""
    targets = [r for r in rows if likelihood_candidate(r)]
    try:
        # The rows it left unscored as too long count whatever --max-model-len they were too long for: the rewrite
        # keeps what that score decided.
        scores = cached_scores(last.cache, targets, None, last.dtype, any_length=True)
    finally:
        last.cache.close()
    if not scores:
        return None
    return KeptScores(scored_rows(rows, scores, last.filter), last, scores, len(targets) - len(scores))


def filter_flags(options: LikelihoodFilterOptions | None) -> str:
    """The flags of `ssogen score` that give `options` (its defaults left out); empty without a filter."""
    if options is None:
        return ""
    defaults = LikelihoodFilterOptions()
    flags = [f" --filter {LIKELIHOOD}"]
    for name in LikelihoodFilterOptions.model_fields:
        value, flag = getattr(options, name), flag_name(LikelihoodFilterOptions, name)
        if value != getattr(defaults, name):
            flags.append(f" --no-{flag[2:]}" if value is False else f" {flag} {value:g}")
    return "".join(flags)
