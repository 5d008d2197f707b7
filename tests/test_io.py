"""The atomic writer: a file is either the old one or the new one, whatever happens during the write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ssogen.io import TMP_SUFFIX, write_atomic, write_json_atomic, write_text_atomic


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TMP_SUFFIX))


def test_writes_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "card.md"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second ✓")
    assert path.read_text(encoding="utf-8") == "second ✓"
    assert leftovers(path.parent) == []


def test_the_file_gets_the_mode_an_ordinary_open_would_give(tmp_path: Path) -> None:
    ordinary = tmp_path / "ordinary"
    ordinary.write_text("x")
    written = write_text_atomic(tmp_path / "atomic", "x")
    assert written.stat().st_mode & 0o777 == ordinary.stat().st_mode & 0o777


def test_a_failing_writer_keeps_the_old_file(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "manifest.json", "old")

    def half_then_fail(f: object) -> None:
        f.write(b"new but not fin")  # type: ignore[attr-defined]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_json_is_indented_utf8_with_a_final_newline(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "m.json", {"b": 1, "a": "é", "p": tmp_path}, sort_keys=True)
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n  "a": "é",') and text.endswith("}\n")
    assert json.loads(text)["p"] == str(tmp_path)


KILLED_WRITER = """
import sys, time
from ssogen.io import write_atomic

def slow(f):
    f.write(b"new half")
    f.flush()
    print("half written", flush=True)
    time.sleep(60)

write_atomic(sys.argv[1], slow)
"""


def test_kill_9_in_the_middle_of_a_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "README.md", "old card")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "half written"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert path.read_text() == "old card"
    # The torn temporary file stays behind, hidden and named *.tmp: push-to-hub and `*.parquet` globs skip it.
    assert [name.startswith(".README.md.") for name in leftovers(tmp_path)] == [True]


def test_a_dangling_link_as_the_output_folder_is_one_line(tmp_path: Path) -> None:
    from ssogen.errors import UserError
    from ssogen.io import check_writable_folder

    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(UserError, match=rf"^--out {link}: a symbolic link to {tmp_path}/gone, which does not exist$"):
        check_writable_folder(link)
    check_writable_folder(tmp_path / "new")  # a plain path to create is fine


def test_read_json_object_is_none_for_what_only_means_not_done_yet(tmp_path: Path) -> None:
    from ssogen.io import read_json_object

    path = tmp_path / "stats.json"
    assert read_json_object(path) is None  # missing
    for unreadable in (b"\xff\xfe not utf-8", b'{"cut": ', b"[1, 2]"):  # not text, not JSON, not an object
        path.write_bytes(unreadable)
        assert read_json_object(path) is None, unreadable
    path.write_text('{"funnel": {"kept": 3}}')
    assert read_json_object(path) == {"funnel": {"kept": 3}}


def test_parquet_pieces_are_one_file_and_no_piece_is_an_error(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ssogen.io import write_parquet_atomic, write_parquet_pieces_atomic

    pieces = [pa.table({"a": [1, 2]}), pa.table({"a": [3]})]
    assert write_parquet_pieces_atomic(tmp_path / "x.parquet", iter(pieces)) == 3
    assert pq.read_table(tmp_path / "x.parquet").column("a").to_pylist() == [1, 2, 3]
    assert pq.ParquetFile(tmp_path / "x.parquet").metadata.num_row_groups == 2
    with pytest.raises(ValueError, match="no table"):
        write_parquet_pieces_atomic(tmp_path / "y.parquet", [])
    assert sorted(tmp_path.iterdir()) == [tmp_path / "x.parquet"]  # neither an empty file nor a temporary left
    # One piece: the bytes of one table written at once (the configs other than `pairs` keep theirs).
    table = pa.table({"a": [str(i) * 40 for i in range(500)], "b": list(range(500))})
    write_parquet_pieces_atomic(tmp_path / "one.parquet", [table])
    write_parquet_atomic(tmp_path / "whole.parquet", table)
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
