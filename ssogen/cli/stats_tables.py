"""The rich tables `ssogen stats` prints: a dataset's statistics (`ssogen.dataset.stats`) rendered for a
terminal (funnel, lengths, checks, scoring), and put into the command's log as its summary (`show`)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from ssogen.cli.common import show
from ssogen.formatting import named_counts, percent

if TYPE_CHECKING:  # pragma: no cover
    from ssogen.dataset.stats import DatasetStats


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def print_stats(stats: DatasetStats, folder: Path) -> None:
    """Rich tables: funnel, lengths, checks, scoring."""
    from ssogen.dataset.stats import VARIANT_LABELS
    from ssogen.records import VARIANTS

    f = stats.funnel
    funnel = Table(title="Funnel (all rows)", title_justify="left")
    funnel.add_column("stage")
    funnel.add_column("rows", justify="right")
    funnel.add_row("rows in", str(f.rows_in))
    funnel.add_row("kept", str(f.kept))
    funnel.add_row("dropped", str(f.dropped))
    for reason, count in f.dropped_by_reason.items():
        funnel.add_row(f"  {reason}", str(count))
    for flag, count in f.flags.items():
        funnel.add_row(f"flag: {flag}", str(count))
    show(funnel)

    lengths = Table(title="Lengths of the kept rows (tokens | characters)", title_justify="left")
    for column in ("response", "tok mean", "tok median", "tok p90", "chr mean", "chr median", "chr p90"):
        lengths.add_column(column, justify="left" if column == "response" else "right")
    for variant in VARIANTS:
        t, c = stats.lengths.tokens[variant], stats.lengths.characters[variant]
        lengths.add_row(VARIANT_LABELS[variant], _num(t.mean), _num(t.median), _num(t.p90),
                        _num(c.mean), _num(c.median), _num(c.p90))
    show(lengths)

    b, d, leak, trunc = stats.length_bias, stats.duplicates, stats.leakage, stats.truncation
    checks = Table(title="Checks on the kept rows", title_justify="left")
    checks.add_column("check")
    for variant in VARIANTS:
        checks.add_column(variant, justify="right")
    checks.add_column("any / total", justify="right")
    checks.add_row("duplicate responses", *[str(d.responses[v]) for v in VARIANTS],
                   str(d.rows_with_equal_responses))
    checks.add_row("leakage", *[percent(leak.rate[v]) for v in VARIANTS], percent(leak.rows_any))
    checks.add_row("truncated", *[percent(trunc.rate[v]) for v in VARIANTS], percent(trunc.rows_any))
    show(checks)
    show(f"duplicate prompts: {d.prompts}   chosen/rejected length ratio: {_num(b.ratio_tokens, 3)} "
         f"tokens, {_num(b.ratio_characters, 3)} characters; chosen longer in "
         f"{percent(b.share_chosen_longer_tokens)} of pairs", highlight=False, soft_wrap=True)
    if stats.features:
        show("features (kept rows): " + named_counts(stats.features)
             + ("   extras: " + named_counts(stats.extras) if stats.extras else ""), highlight=False, soft_wrap=True)
    s = stats.scoring
    if s is not None:
        scoring = Table(title="Scoring", title_justify="left")
        for column in ("metric", "kept", "all scored"):
            scoring.add_column(column, justify="left" if column == "metric" else "right")
        scoring.add_row("rows", str(s.scored_kept_rows), str(s.scored_rows))
        scoring.add_row("on-policy-ness: mean exp(avg log-prob | x)", _num(s.on_policy_kept, 4),
                        _num(s.on_policy_all, 4))
        scoring.add_row("likelihood ordering holds", percent(s.ordering_holds_kept), percent(s.ordering_holds_all))
        show(scoring)
    else:
        # The folder is known, the scoring model is not: M stays a placeholder.
        show(f"not scored: run `ssogen score {shlex.quote(str(folder))} --model M` for on-policy-ness",
             highlight=False, markup=False, soft_wrap=True)
