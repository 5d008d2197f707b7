"""The likelihood filter of the SSO paper's code, applied by `ssogen score --filter likelihood`: three stages on
the scored log-probs of y+ and y- under x, x+ and x-, each of which can be switched off or given a margin."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from ssogen.records import LOGPROB_FIELDS, TripletRecord
from ssogen.settings import option

LIKELIHOOD = "likelihood"
FILTER_PANEL = "Likelihood filter (--filter likelihood)"
# The log-probs of y+ and y- (yo's is not used by the filter).
PAIR_FIELDS = tuple(name for name in LOGPROB_FIELDS if not name.startswith("lp_raw"))


class LikelihoodFilterOptions(BaseModel):
    """The three stages of the likelihood filter in the SSO paper's code (its text does not describe it); each
    can be switched off or given a margin. lp(y|c) is the mean token log-prob of response y under context c.

    1. ordering: lp(y+|x+) - lp(y+|x) > m, lp(y+|x) - lp(y+|x-) > m, lp(y-|x-) - lp(y-|x) > m and
       lp(y-|x) - lp(y-|x+) > m (m = ordering_margin, 0 = strict order).
    2. on-policy: lp(y+|x) >= mean + m and lp(y-|x) >= mean + m (m = on_policy_margin).
    3. contrast: lp(y+|x+) - lp(y+|x-) > mean + m and lp(y-|x-) - lp(y-|x+) > mean + m (m = contrast_margin).

    Each stage's means are taken over the rows that passed the stages before it (as the paper's code does),
    so a stage judges rows against the population it actually receives."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf or nan is no setting

    ordering: bool = option(True, "Stage 1: lp(y+|x+) > lp(y+|x) > lp(y+|x-) and lp(y-|x-) > lp(y-|x) > lp(y-|x+).",
                            panel=FILTER_PANEL)
    ordering_margin: float = option(0.0, "Each step of the ordering must exceed this.", ge=0.0, panel=FILTER_PANEL)
    on_policy: bool = option(True, "Stage 2: keep lp(y+|x) and lp(y-|x) at or above their means (the "
                             "near-on-policy half).", panel=FILTER_PANEL)
    on_policy_margin: float = option(0.0, "Added to the stage-2 means.", panel=FILTER_PANEL)
    contrast: bool = option(True, "Stage 3: keep contrasts lp(y+|x+) - lp(y+|x-) and lp(y-|x-) - lp(y-|x+) "
                            "above their means.", panel=FILTER_PANEL)
    contrast_margin: float = option(0.0, "Added to the stage-3 means.", panel=FILTER_PANEL)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def likelihood_filter(rows: Sequence[TripletRecord], options: LikelihoodFilterOptions | None = None,
                      ) -> list[str | None]:
    """For each row (all six y+/y- log-probs set), None to keep it or the drop reason `likelihood:<stage>`."""
    options = options or LikelihoodFilterOptions()
    reasons: list[str | None] = [None] * len(rows)
    alive = list(range(len(rows)))
    for index in alive:
        missing = [name for name in PAIR_FIELDS if getattr(rows[index], name) is None]
        if missing:
            raise ValueError(f"row {rows[index].id}: not scored ({', '.join(missing)} missing)")

    def drop(survivors: list[int], reason: str) -> list[int]:
        kept, passing = [], set(survivors)  # a set: a list made the filter quadratic (minutes at 200k rows)
        for index in alive:
            if index in passing:
                kept.append(index)
            else:
                reasons[index] = f"{LIKELIHOOD}:{reason}"
        return kept

    if options.ordering:
        alive = drop([i for i in alive if ordering_holds(rows[i], options.ordering_margin)], "ordering")
    if options.on_policy and alive:
        mean_good = _mean([rows[i].lp_good_plain for i in alive])  # type: ignore[misc]
        mean_bad = _mean([rows[i].lp_bad_plain for i in alive])  # type: ignore[misc]
        m = options.on_policy_margin
        alive = drop([i for i in alive if rows[i].lp_good_plain >= mean_good + m  # type: ignore[operator]
                      and rows[i].lp_bad_plain >= mean_bad + m], "off_policy")  # type: ignore[operator]
    if options.contrast and alive:
        good_gap = {i: rows[i].lp_good_good - rows[i].lp_good_bad for i in alive}  # type: ignore[operator]
        bad_gap = {i: rows[i].lp_bad_bad - rows[i].lp_bad_good for i in alive}  # type: ignore[operator]
        mean_good, mean_bad = _mean(list(good_gap.values())), _mean(list(bad_gap.values()))
        m = options.contrast_margin
        alive = drop([i for i in alive if good_gap[i] > mean_good + m and bad_gap[i] > mean_bad + m], "contrast")
    return reasons


def ordering_holds(r: Any, margin: float = 0.0) -> bool:
    """Each step of lp(y+|x+) > lp(y+|x) > lp(y+|x-) and lp(y-|x-) > lp(y-|x) > lp(y-|x+) by more than margin: each
    system prompt pulls its own response up and the other one down (the filter's first stage; `stats` reports the
    share of rows where it holds)."""
    return bool(r.lp_good_good - r.lp_good_plain > margin and r.lp_good_plain - r.lp_good_bad > margin
                and r.lp_bad_bad - r.lp_bad_plain > margin and r.lp_bad_plain - r.lp_bad_good > margin)


def apply_likelihood_filter(records: Sequence[TripletRecord], options: LikelihoodFilterOptions | None = None,
                            ) -> list[TripletRecord]:
    """Re-decide every row that the cheap filters kept: rows an earlier likelihood filter dropped are judged
    again (so a rerun with other thresholds starts from the same population); rows without scores are dropped
    as `likelihood:unscored`. Rows dropped for other reasons stay as they are."""
    out = list(records)
    candidates = [i for i, r in enumerate(out) if likelihood_candidate(r)]
    scored = [i for i in candidates if has_pair_scores(out[i])]
    reasons = likelihood_filter([out[i] for i in scored], options)
    decided = dict(zip(scored, reasons, strict=True))
    for i in candidates:
        reason = decided.get(i, f"{LIKELIHOOD}:unscored")
        out[i] = out[i].model_copy(update={"kept": reason is None, "drop_reason": reason})
    return out


def likelihood_candidate(record: TripletRecord) -> bool:
    return record.kept or (record.drop_reason or "").startswith(f"{LIKELIHOOD}:")


def has_pair_scores(record: TripletRecord) -> bool:
    """All six y+/y- log-probs present (yo's under x is optional)."""
    return all(getattr(record, name) is not None for name in PAIR_FIELDS)
