"""The card's statistics kept in .ssogen/ (`stats_cache`): a card rendered from them is byte-identical to one
rendered from the rows, and `push-to-hub --dry-run` no longer reads every triplet to re-render the card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.dataset import card, stats_cache
from ssogen.dataset.card import render_card
from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.refresh import refresh
from ssogen.dataset.splits import SplitSpec
from ssogen.dataset.stats import folder_stats
from ssogen.principles import load_library
from ssogen.testing.folders import make_record, write_dataset
from tests.dataset.test_stats import hand_records

REPO = "org/sso-data"


def _from_the_rows(monkeypatch: pytest.MonkeyPatch, out: Path, repo_id: str | None = REPO) -> str:
    """The card as it was rendered before the statistics were kept: every row read again."""
    with monkeypatch.context() as patched:
        patched.setattr(stats_cache, "load", lambda folder: None)
        return render_card(out, repo_id=repo_id)


@pytest.fixture
def folder(tmp_path: Path) -> OutputFolder:
    """Kept and dropped rows, scored ones, leaks, a cut response, repeated texts; a test split; as after `stats`."""
    records = [*hand_records(), *(make_record(6 + i, response_good=f"a careful and safe answer {i}") for i in range(8))]
    out = OutputFolder(tmp_path / "out")
    write_dataset(out.root, records, library={"name": "default", "version": "1.0", "sha256": "f00d" * 16})
    out.write_configs(records, SplitSpec(test_size=0.25, seed=3))
    shutil.copy(load_library("default").path, out.library_file)
    refresh(out.root)
    return out


def test_a_card_from_the_kept_stats_is_byte_identical_to_one_from_the_rows(folder: OutputFolder,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    kept = stats_cache.load(folder)
    assert kept is not None and kept.scoring is not None and kept.funnel.dropped == 3
    # The same values of the same types (a float kept as 1.0 is shown as 1.000, an int as 1).
    assert json.dumps(kept.model_dump()) == json.dumps(folder_stats(folder).model_dump())
    assert render_card(folder.root, repo_id=REPO) == _from_the_rows(monkeypatch, folder.root)
    assert render_card(folder.root) == _from_the_rows(monkeypatch, folder.root, None)


def test_the_dry_run_reads_no_row_for_the_card_and_shows_the_same_card(folder: OutputFolder,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _from_the_rows(monkeypatch, folder.root)

    def no_rows(*args: object) -> None:
        raise AssertionError("the card's statistics were computed from the rows again")

    monkeypatch.setattr(card, "folder_stats", no_rows)
    result = CliRunner().invoke(app, ["push-to-hub", str(folder.root), "--repo-id", REPO, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert expected in result.stdout


@pytest.mark.parametrize("change", ["triplets", "library", "library entry", "cache"])
def test_kept_stats_that_may_not_describe_the_folder_are_not_used(folder: OutputFolder, change: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows rewritten without the card (by hand, or by a command stopped before its card), another library, or a
    cache of another shape: the rows are read, and the card is the one they give."""
    before = render_card(folder.root, repo_id=REPO)
    if change == "triplets":
        folder.write_configs(hand_records())
    elif change == "library":
        folder.library_file.write_text(load_library("short").text, encoding="utf-8")
    elif change == "library entry":
        folder.write_manifest({**folder.read_manifest(), "library": {"name": "short"}})
    else:
        kept = json.loads((folder.work_dir / stats_cache.CACHE).read_text())
        kept["stats"]["funnel"] = "?"
        (folder.work_dir / stats_cache.CACHE).write_text(json.dumps(kept))
    assert stats_cache.load(folder) is None
    after = render_card(folder.root, repo_id=REPO)
    assert after == _from_the_rows(monkeypatch, folder.root)
    assert (after != before) == (change != "cache")


def test_a_folder_without_its_library_file_keeps_nothing(folder: OutputFolder) -> None:
    """Its statistics come from the library the manifest names, which may change with ssogen: not kept."""
    (folder.work_dir / stats_cache.CACHE).unlink()
    folder.library_file.unlink()
    refresh(folder.root)
    assert not (folder.work_dir / stats_cache.CACHE).exists() and stats_cache.load(folder) is None


def test_the_end_of_generate_keeps_the_stats_the_rows_give(tiny_model: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """generate counts its statistics on its own pass over the saved rows, not from the files: what it keeps must
    be what the files give, or a push after generate would carry another card than before."""
    from ssogen.generate.run import run_generate
    from tests.generate.test_finish_memory import _saved_run

    config, _ = _saved_run(tiny_model, tmp_path, "run", 12, 40)
    run_generate(config)
    folder = OutputFolder(config.out)
    kept = stats_cache.load(folder)
    assert kept is not None and json.dumps(kept.model_dump()) == json.dumps(folder_stats(folder).model_dump())
    assert render_card(folder.root, repo_id=REPO) == _from_the_rows(monkeypatch, folder.root)
