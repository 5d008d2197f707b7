"""What a rewrite of a scored folder's data files keeps of `ssogen score` (`kept_scores`), on the tiny model: the end
to end runs are in tests/generate/test_generate.py."""

from __future__ import annotations

from pathlib import Path

from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.kept_scores import SCORES_DROPPED, keep_scores, last_score
from ssogen.dataset.likelihood import LikelihoodFilterOptions
from ssogen.dataset.score import score_folder
from ssogen.engine.options import EngineOptions
from ssogen.generate.rerun import undone_work
from ssogen.testing.folders import make_record, write_dataset


def test_a_row_too_long_for_the_last_score_stays_as_that_score_left_it(tiny_model: Path, tmp_path: Path) -> None:
    """The cache line of a row too long for the scorer names the --max-model-len it was too long for, which the
    manifest does not keep: the rewrite takes the line whatever the limit, so the row is unscored and dropped as
    score left it, not counted as a new row that a warning asks to score."""
    rows = [make_record(i, f"question number {i} " * (30 if i == 0 else 1)) for i in range(3)]
    out = write_dataset(tmp_path / "out", rows)
    keep_all = LikelihoodFilterOptions(ordering=False, on_policy=False, contrast=False)
    score_folder(out, str(tiny_model), engine="transformers", engine_options=EngineOptions(max_model_len=80),
                 filter_options=keep_all)
    folder = OutputFolder(out)
    manifest = folder.read_manifest()
    last = last_score(folder, manifest)
    assert last is not None and last.filter == keep_all
    kept = keep_scores(rows, last)  # the rows as generate writes them again: unscored
    assert kept is not None and (kept.unscored, kept.warning("out")) == (0, None)
    assert kept.rows == folder.read_triplets() and kept.rows[0].drop_reason == "likelihood:unscored"
    assert kept.entry(manifest["configs"]) == manifest["score"]  # rows_too_long: 1


def test_a_score_stopped_while_it_rewrote_the_data_is_not_kept_and_the_warning_says_so(tiny_model: Path,
                                                                                       tmp_path: Path) -> None:
    """Its manifest entry is an earlier score's (or none, the first time): what the stopped score began is not known,
    so a rewrite drops the scores and says to run score again."""
    out = write_dataset(tmp_path / "out", [make_record(i) for i in range(2)])
    folder = OutputFolder(out)
    assert undone_work(folder, last_score(folder, folder.read_manifest())) == []  # never scored: nothing to say
    score_folder(out, str(tiny_model), engine="transformers")
    assert last_score(folder, folder.read_manifest()) is not None
    folder.mark_incomplete(rewriter="score", filter=None)  # as a score stopped between two data files leaves it
    assert last_score(folder, folder.read_manifest()) is None
    assert undone_work(folder, None) == [SCORES_DROPPED]
    manifest = folder.read_manifest()
    del manifest["score"]  # the first score stopped so: the manifest has no entry yet
    folder.write_manifest(manifest)
    assert undone_work(folder, None) == [SCORES_DROPPED]
