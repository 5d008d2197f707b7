"""The append-only store under OUT/.ssogen/: torn last lines, resuming, refusing another run, --overwrite."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.shards import ShardStore
from ssogen.errors import UserError


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


def test_a_foreign_non_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="holds no ssogen run"):
        ShardStore(tmp_path).prepare({"fingerprint": "x", "config": {}}, overwrite=False)
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "lengths.png").write_bytes(b"stale")
    (tmp_path / "stats.json").write_text("{}")
    ShardStore(tmp_path).prepare({"fingerprint": "x", "config": {}}, overwrite=True)
    assert (tmp_path / "mine.txt").read_text() == "keep me"  # --overwrite removes only ssogen's own files
    assert not (tmp_path / "plots").exists() and not (tmp_path / "stats.json").exists()  # stale stats go


def test_the_score_cache_is_a_store_of_its_own_created_on_first_write(tmp_path: Path) -> None:
    folder = OutputFolder(tmp_path / "out")
    store = ShardStore(folder, folder.score_cache("key1"))
    assert store.load("scores") == {} and not store.dir.exists()
    store.append("scores", [{"id": "a", "lp": {}}])
    store.close()
    assert store.dir == tmp_path / "out" / ".ssogen" / "score" / "key1"
    assert ShardStore(folder, folder.score_cache("key1")).load("scores") == {"a": {"id": "a", "lp": {}}}
    assert ShardStore(folder).load("scores") == {}  # generate's own shards live beside it, apart
