"""The append-only store under OUT/.ssogen/: torn last lines, resuming, refusing another run, --overwrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.shard_index import SavedRecords
from ssogen.dataset.shards import ShardStore
from ssogen.errors import UserError
from ssogen.testing.folders import make_record, snapshot, write_dataset, write_project_folder


def test_shards_tolerate_a_torn_last_line_and_refuse_other_configs(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "out")
    fingerprint = {"fingerprint": "x", "config": {"seed": 0}}
    assert store.prepare(fingerprint, overwrite=False) is False
    store.append("rows", [{"id": "a"}, {"id": "b"}])
    store.close()
    with (store.dir / "rows-00000.jsonl").open("ab") as f:
        f.write(b'{"id": "c", "tru')  # a writer killed mid-line
    again = ShardStore(tmp_path / "out")
    assert again.prepare(fingerprint, overwrite=False) is True
    assert sorted(again.load("rows")) == ["a", "b"]
    again.append("rows", [{"id": "c"}])  # goes to a new file, never after the torn line
    again.close()
    assert sorted(ShardStore(tmp_path / "out").load("rows")) == ["a", "b", "c"]
    with pytest.raises(UserError, match=r"different configuration \(changed: seed\)"):
        ShardStore(tmp_path / "out").prepare({"fingerprint": "y", "config": {"seed": 1}}, overwrite=False)
    assert ShardStore(tmp_path / "out").prepare({"fingerprint": "y", "config": {"seed": 1}}, overwrite=True) \
        is False
    assert ShardStore(tmp_path / "out").load("rows") == {}


def test_a_run_that_saved_no_row_gives_way_to_another_configuration(tmp_path: Path) -> None:
    """A run that failed before its first row (e.g. on a --dtype the engine refused) leaves only its fingerprint:
    the corrected command starts over instead of being refused; once a row is saved it is refused."""
    with OutputFolder(tmp_path / "out").claim("test"):
        assert ShardStore(tmp_path / "out").prepare({"fingerprint": "x", "config": {"dtype": "foo"}},
                                                    overwrite=False) is False
        store = ShardStore(tmp_path / "out")
        assert store.prepare({"fingerprint": "y", "config": {"dtype": "float32"}}, overwrite=False) is False
        assert json.loads(store.folder.fingerprint.read_text())["fingerprint"] == "y"
        store.append("rows", [{"id": "a"}])
        store.close()
        with pytest.raises(UserError, match=r"different configuration \(changed: dtype\)"):
            ShardStore(tmp_path / "out").prepare({"fingerprint": "x", "config": {"dtype": "foo"}}, overwrite=False)


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_ssogen_did_not_write_is_refused_even_with_overwrite(tmp_path: Path, overwrite: bool) -> None:
    """Issue 10 item 1: `--out . --overwrite` inside a project folder removed the user's data/, logs/ and
    README.md. Without ssogen's marker nothing is removed, overwrite or not."""
    project = write_project_folder(tmp_path / "project")
    before = snapshot(project)
    with pytest.raises(UserError, match=r"not empty and holds no ssogen run \(no \.ssogen/marker\.json\); --overwrite "
                                        r"removes only what ssogen wrote"):
        ShardStore(project).prepare({"fingerprint": "x", "config": {}}, overwrite=overwrite)
    assert snapshot(project) == before


def test_overwrite_in_a_marked_folder_removes_only_what_ssogen_wrote(tmp_path: Path) -> None:
    folder = OutputFolder(write_dataset(tmp_path / "out", [make_record(0)]))
    with folder.claim("test"):
        ShardStore(folder).prepare({"fingerprint": "x", "config": {"seed": 0}}, overwrite=False)
    folder.write_stats({})
    folder.plots.mkdir()
    (folder.plots / "lengths.png").write_bytes(b"stale")
    (folder.root / "mine.txt").write_text("keep me")
    (folder.config_dir("dpo") / "extra.parquet").write_bytes(b"a file a person put there")
    with pytest.raises(UserError, match=r"different configuration \(changed: seed\)"):
        ShardStore(folder).prepare({"fingerprint": "y", "config": {"seed": 1}}, overwrite=False)
    with folder.claim("test"):
        assert ShardStore(folder).prepare({"fingerprint": "y", "config": {"seed": 1}}, overwrite=True) is False
    left = sorted(str(p.relative_to(folder.root)) for p in folder.root.rglob("*") if p.is_file())
    assert left == [".ssogen/fingerprint.json", ".ssogen/lock", ".ssogen/marker.json", "data/dpo/extra.parquet",
                    "mine.txt"]


def test_the_score_cache_is_a_store_of_its_own_created_on_first_write(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path / "out")
    store = ShardStore(folder, folder.score_cache("key1"))
    assert store.load("scores") == {} and not store.dir.exists()
    store.append("scores", [{"id": "a", "lp": {}}])
    store.close()
    assert store.dir == tmp_path / "out" / ".ssogen" / "score" / "key1"
    assert ShardStore(folder, folder.score_cache("key1")).load("scores") == {"a": {"id": "a", "lp": {}}}
    assert ShardStore(folder).load("scores") == {}  # generate's own shards live beside it, apart


def test_an_out_under_a_read_only_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 10 item 9. (Tests run as root here, who may write anywhere: the permission answer is simulated.)"""
    import os

    from ssogen.train.output import TrainOutput

    read_only = tmp_path / "read-only"
    read_only.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != read_only and access(path, mode, **kw))
    with pytest.raises(UserError, match=rf"^--out {read_only}/out: {read_only} is not writable$"):
        ShardStore(read_only / "out").check({"fingerprint": "x", "config": {}}, overwrite=False)
    with pytest.raises(UserError, match=rf"^--out {read_only}/model: {read_only} is not writable$"):
        TrainOutput(read_only / "model").verdict({"fingerprint": "x", "config": {}}, overwrite=False)
    assert list(read_only.iterdir()) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_dataset_and_a_training_run_never_take_each_others_folder(tmp_path: Path, overwrite: bool) -> None:
    """Walkthrough: `train --out RUN1 --overwrite` on generate's folder removed its shards, logs and card and wrote
    a model among the parquet files; `generate --out MODEL --overwrite` would clear a model's card and state. The
    marker's kind refuses both, overwrite or not, before anything is touched."""
    from ssogen.train.output import TrainOutput

    dataset = OutputFolder(write_dataset(tmp_path / "run1", [make_record(0)]))
    with dataset.claim("ssogen generate"):
        ShardStore(dataset).prepare({"fingerprint": "x", "config": {"seed": 0}}, overwrite=False)
    model = TrainOutput(tmp_path / "run1-model")
    with model.claim():
        (model.root / "model.safetensors").write_bytes(b"weights")
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match=r"^--out .*run1: holds a dataset folder of ssogen generate, not a training "
                                        r"run of ssogen train; --overwrite never replaces"):
        TrainOutput(dataset.root).verdict({"fingerprint": "t", "config": {}}, overwrite=overwrite)
    with pytest.raises(UserError, match=r"^--out .*run1-model: holds a training run of ssogen train, not a dataset "
                                        r"folder of ssogen generate"):
        ShardStore(model.root).prepare({"fingerprint": "x", "config": {"seed": 0}}, overwrite=overwrite)
    assert snapshot(tmp_path) == before


def test_the_index_of_saved_records_reads_back_what_load_gives_without_holding_it(tmp_path: Path) -> None:
    """Generate keeps where each saved row lies (file, byte offset), not the row: the index reads back what `load`
    gives for this run's rows (later lines win, a torn last line is not saved, rows of another run are left out),
    and what is appended after it was made."""
    store = ShardStore(tmp_path / "out")
    store.prepare({"fingerprint": "x", "config": {}}, overwrite=False)
    store.append("rows", [{"id": "a", "v": 1, "kept": True}, {"id": "other", "v": 0, "kept": True}])
    store.append("rows", [{"id": "b", "v": "é" * 3, "kept": False}])
    store.close()
    with (store.dir / "rows-00000.jsonl").open("ab") as f:
        f.write(b'{"id": "c", "tru')
    again = ShardStore(tmp_path / "out")
    again.append("rows", [{"id": "a", "v": 2, "kept": False}])
    saved = again.index("rows", SavedRecords({"a": 0, "b": 1, "c": 2}, flag=lambda r: r["kept"]))
    assert len(saved) == 2 and "a" in saved and "b" in saved and "c" not in saved and "other" not in saved
    assert saved.read(["b", "a"]) == [again.load("rows")["b"], again.load("rows")["a"]] \
        == [{"id": "b", "v": "ééé", "kept": False}, {"id": "a", "v": 2, "kept": False}]
    assert list(saved.flags) == [0, 0, 0]
    for record, (path, offset) in zip(new := [{"id": "c", "kept": True}], again.append("rows", new), strict=True):
        saved.add(record, path, offset)
    again.close()
    assert saved.read(["c", "a"]) == [{"id": "c", "kept": True}, {"id": "a", "v": 2, "kept": False}]
    assert len(saved) == 3 and list(saved.flags) == [0, 0, 1]
    with pytest.raises(KeyError):
        SavedRecords({"a": 0}).read(["a"])
    (again.dir / "rows-00009.jsonl").write_text('{"id": "d"}\n')
    with pytest.raises(UserError, match=r"rows-00009.jsonl:1: not a rows record of ssogen \('kept'\)"):
        again.index("rows", SavedRecords({"d": 0}), lambda r: r["kept"])


def test_a_claim_stopped_before_its_marker_leaves_a_folder_the_same_command_takes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C between taking the lock and writing the marker left .ssogen/lock alone; the interrupted command
    said to run it again, and the rerun was refused as a folder ssogen did not write. A person's file beside it,
    or anything else in .ssogen/, still counts."""
    import ssogen.ownership

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(ssogen.ownership, "write_json_atomic", interrupted)
        with pytest.raises(KeyboardInterrupt), OutputFolder(out).claim("ssogen generate"):
            raise AssertionError("the claim was not interrupted")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [".ssogen", ".ssogen/lock"]
    assert not OutputFolder(out).holds_anything()
    with OutputFolder(out).claim("ssogen generate"):
        assert ShardStore(out).prepare({"fingerprint": "x", "config": {}}, overwrite=False) is False
    assert OutputFolder(out).marker.is_file()

    for beside_the_lock in ("notes.txt", ".ssogen/notes.txt"):
        folder = tmp_path / f"other-{len(beside_the_lock)}"
        (folder / ".ssogen").mkdir(parents=True)
        (folder / ".ssogen" / "lock").write_bytes(b"")
        (folder / beside_the_lock).write_text("a person's")
        assert OutputFolder(folder).holds_anything()
        with pytest.raises(UserError, match="holds no ssogen run"):
            ShardStore(folder).check({"fingerprint": "x", "config": {}}, overwrite=False)
