"""What `generate` does when asked again for a run it has finished.

The same rows, split and license: nothing is written. Writing the dataset again from the saved rows would undo what
`score` added to it (the log-probs and the likelihood filter) and leave `stats.json` describing other data. With
other rows (another --limit) or another split the data files are written again, keeping the scores and filter of the
last score (`kept_scores`); the warnings returned say what of the later commands' work that undoes, and stats, plots
and card are recomputed if `stats` had been run."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ssogen.dataset.card import write_card
from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.kept_scores import SCORES_DROPPED, LastScore, last_score
from ssogen.dataset.refresh import refresh
from ssogen.dataset.splits import SplitSpec
from ssogen.dataset.stats import StatsBuilder
from ssogen.errors import UserError


def _manifest(folder: OutputFolder) -> dict[str, Any] | None:
    if not folder.manifest.is_file():
        return None
    try:
        return folder.read_manifest()
    except UserError:
        return None


def unchanged_finished_run(folder: OutputFolder, fingerprints: Collection[str], row_ids: list[str],
                           split: SplitSpec | None, license: str, templates: str | None) -> dict[str, Any] | None:
    """The manifest of the finished run in `folder` when writing it again would give the same data files and card
    facts; None when it must be written. Decided from the manifest and the triplets' ids alone, before any saved
    row is loaded (at 1M rows, minutes and GBs to say "nothing to do"). `fingerprints`: this run's, then what
    earlier versions' rules gave it (`RunPlan.earlier_fingerprints`: a run one of them finished is kept as it is). A
    missing card is written (`templates`)."""
    manifest = _manifest(folder)
    if manifest is None or manifest.get("status") != "complete" or manifest.get("fingerprint") not in fingerprints:
        return None
    if manifest.get("split") != (split.model_dump() if split else None) or manifest.get("license") != license:
        return None
    try:
        ids = folder.read_config("triplets", columns=["id", "position"]).sort_by("position")["id"].to_pylist()
    except (UserError, OSError, ValueError, KeyError):  # files missing or unreadable: write them again
        return None
    if ids != row_ids:
        return None
    if not folder.card.is_file():
        write_card(folder.root, templates=templates)
    return manifest


def scores_to_keep(folder: OutputFolder) -> LastScore | None:
    """Before the data files are written again: the last `ssogen score`, whose scores and filter the rewrite keeps
    (`kept_scores`); None when there is none or its scores cannot be kept."""
    manifest = _manifest(folder)
    return last_score(folder, manifest) if manifest is not None else None


def undone_work(folder: OutputFolder, last: LastScore | None) -> list[str]:
    """Before the data files are written again: what of `score` and `judge` that undoes (for the warnings).
    `last`: the score whose scores the rewrite keeps (`scores_to_keep`)."""
    manifest = _manifest(folder) or {}
    undone = []
    if (manifest.get("score") or manifest.get("rewriting") == "score") and last is None:
        undone.append(SCORES_DROPPED)
    if folder.judge.is_file():
        undone.append("judge.json describes the pairs before this rerun: run `ssogen judge` again")
    return undone


def write_card_and_stats(folder: OutputFolder, templates: str | None, numbers: StatsBuilder) -> None:
    """The card; stats.json and the plots too when `stats` wrote them before (they would describe the old rows).
    `numbers`: the statistics of the triplets just written, gathered as they were."""
    if folder.stats.is_file():
        refresh(folder.root, templates=templates, numbers=numbers)
    else:
        write_card(folder.root, templates=templates, stats=numbers.result())
