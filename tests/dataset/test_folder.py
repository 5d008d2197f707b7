"""`OutputFolder`: the layout, the configs round trip, the manifest, the stored library and `--overwrite`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ssogen.dataset.folder import CONFIGS, RUN_OUTPUTS, OutputFolder
from ssogen.errors import UserError
from ssogen.principles import load_library
from ssogen.testing.folders import make_record, write_dataset


def test_the_layout_is_a_hub_dataset_repository_plus_hidden_state(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path)
    assert folder.config_file("dpo") == tmp_path / "data" / "dpo" / "train-00000-of-00001.parquet"
    assert OutputFolder.data_files("sso") == "data/sso/*.parquet"
    assert [folder.relative(p) for p in (folder.card, folder.manifest, folder.resolved_config, folder.library_file,
                                         folder.stats, folder.plots, folder.fingerprint, folder.score_cache("k"))] \
        == ["README.md", "manifest.json", "config.resolved.yaml", "library.yaml", "stats.json", "plots",
            ".ssogen/fingerprint.json", ".ssogen/score/k"]


def test_configs_round_trip_and_empty_configs_keep_their_types(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path)
    records = [make_record(0), make_record(1, kept=False, drop_reason="equal_responses", lp_good_plain=-1.5)]
    assert folder.write_configs(records) == {"triplets": 2, "dpo": 1, "sso": 1, "reward": 1}
    assert folder.read_triplets() == records
    assert folder.row_counts() == {"triplets": 2, "dpo": 1, "sso": 1, "reward": 1}
    folder.write_configs([records[1]])  # nothing kept: the pair configs are empty but typed
    schema = pq.read_schema(folder.config_file("dpo"))
    assert str(schema.field("chosen").type) == "list<element: struct<role: string, content: string>>"
    assert set(folder.schemas()) == set(CONFIGS)
    assert not list(tmp_path.rglob("*.tmp"))


def test_missing_and_corrupt_files_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such folder"):
        OutputFolder(tmp_path / "nope").read_manifest()
    with pytest.raises(UserError, match=r"not an ssogen output folder \(missing data/triplets/"):
        OutputFolder(tmp_path).read_triplets()
    with pytest.raises(UserError, match=r"missing manifest.json"):
        OutputFolder(tmp_path).read_manifest()
    (tmp_path / "manifest.json").write_text('{\n  "model": \n}')
    with pytest.raises(UserError, match=r"manifest.json:3: invalid JSON"):
        OutputFolder(tmp_path).read_manifest()
    folder = OutputFolder(tmp_path)
    folder.config_file("triplets").parent.mkdir(parents=True)
    folder.config_file("triplets").write_bytes(b"not parquet")
    with pytest.raises(UserError, match="corrupt parquet file"):
        folder.read_triplets()


def test_the_library_comes_from_the_stored_file_then_the_manifest(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "out", [make_record(0)], library={"name": "no-such-library"})
    folder = OutputFolder(out)
    assert folder.library() is None
    folder.write_manifest({**folder.read_manifest(), "library": {"name": "default"}})
    assert folder.library().name == "default"  # the bundled library by its name
    custom = load_library("default").text.replace("name: default", "name: stored-copy", 1)
    folder.write_library(custom)
    assert folder.library_file.read_text() == custom  # stored byte for byte (the manifest's sha256 holds)
    assert folder.library().name == "stored-copy"


def test_mark_incomplete_flips_the_status_of_a_finished_run(tmp_path: Path) -> None:
    folder = OutputFolder(write_dataset(tmp_path / "out", [make_record(0)]))
    folder.mark_incomplete()
    assert folder.read_manifest()["status"] == "in_progress"
    OutputFolder(tmp_path / "fresh").mark_incomplete()  # no manifest yet: nothing to do
    assert not (tmp_path / "fresh").exists()


def test_remove_run_outputs_removes_exactly_what_a_run_wrote(tmp_path: Path) -> None:
    folder = OutputFolder(write_dataset(tmp_path / "out", [make_record(0)]))
    folder.write_library(load_library("default").text)
    folder.write_resolved_config("seed: 0\n")
    folder.write_stats({})
    (folder.plots).mkdir()
    folder.work_dir.mkdir()
    (folder.root / "notes.txt").write_text("mine")
    folder.remove_run_outputs()
    assert sorted(p.name for p in folder.root.iterdir()) == ["notes.txt"]
    assert {"data", ".ssogen", "plots"} <= set(RUN_OUTPUTS)
    shutil.rmtree(folder.root)
    folder.remove_run_outputs()  # a folder that does not exist: nothing to remove
