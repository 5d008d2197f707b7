"""Bring a folder's derived files up to date after its rows changed: stats.json, the plots and the card.

The one place that calls stats, plots and card together (`ssogen stats` and `ssogen score` use it), so that
none of those modules has to import another to finish its job."""

from __future__ import annotations

from pathlib import Path

from ssogen.dataset import stats_cache
from ssogen.dataset.card import card_is_generated, write_card
from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.plots import write_plots
from ssogen.dataset.stats import DatasetStats, StatsBuilder, folder_builder


def refresh(out_dir: str | Path, *, plots: bool = True, card: bool = True, templates: str | Path | None = None,
            numbers: StatsBuilder | None = None) -> DatasetStats:
    """Recompute the stats of a folder: OUT/stats.json, the plots and (unless a person wrote it) the card,
    from `templates`/card.md.jinja when that folder has one. `numbers`: the statistics of its triplets gathered
    already (the end of generate gathers them on its one pass over its saved rows); else they are gathered from the
    data files a batch at a time."""
    folder = OutputFolder(out_dir)
    folder.read_manifest()  # not an ssogen folder, or a corrupt manifest: one line before anything is written
    numbers = numbers or folder_builder(folder)
    stats = numbers.result()
    if plots:
        stats.plots = write_plots(folder, numbers)
    folder.write_stats(stats.model_dump())
    if card and card_is_generated(folder.root):  # a hand-written card is never overwritten (and needs no warning)
        write_card(folder.root, stats=stats, templates=templates)  # keeps the stats for the next render too
    else:  # for a card rendered later (push-to-hub), which would otherwise read every row again
        stats_cache.store(folder, stats)
    return stats
