"""Atomic file writes: every file ssogen writes whole goes through `write_atomic`.

The bytes go to a hidden temporary file in the target's folder (same file system, so the rename is atomic),
are flushed and fsynced, and then `os.replace` puts the file in place. A crash, kill -9 or Ctrl-C therefore
leaves either the old file or the new one, never a torn one; the temporary name starts with "." and ends with
".tmp", so `push-to-hub` and `load_dataset`'s `*.parquet` patterns never pick one up.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from ssogen.errors import UserError

TMP_SUFFIX = ".tmp"


def check_writable_folder(out: Path, flag: str = "--out") -> None:
    """Before anything is written: `out` must be a folder, or creatable (its nearest existing ancestor a folder
    this process may write to). Raises ssogen's one-line error."""
    if out.is_symlink() and not out.exists():  # a folder cannot be made where a dangling link is
        raise UserError(f"{flag} {out}: a symbolic link to {os.readlink(out)}, which does not exist")
    if out.exists():
        if not out.is_dir():
            raise UserError(f"{flag} {out}: exists and is not a folder")
        existing = out
    else:
        existing = next(p for p in out.absolute().parents if p.exists())
        if not existing.is_dir():
            raise UserError(f"{flag} {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {out}: {existing} is not writable")


NOT_A_REGULAR_FILE = "not a regular file (a pipe or a device); save its content to a file first"
# A file inside a dataset folder that a command would read or upload: it is not a pipe given as an input.
NOT_A_REGULAR_FILE_IN_FOLDER = ("not a regular file (a pipe, a socket or a device); replace it with a regular file or "
                                "move it out of the folder")


def input_file_problem(path: Path, kind: str = "file") -> str | None:
    """Why `path` cannot be read as an input file, or None. Only a regular file is read: a FIFO with no writer
    blocks its open forever (a terminal, its read), and a file is read more than once (by iterate and each of its
    steps, by every process of a multi-GPU train), where the pipe of `<(...)` gives its content once."""
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return f"is a directory, not a {kind}"
    return None if path.is_file() else NOT_A_REGULAR_FILE


def is_special_file(path: Path) -> bool:
    """`path` (a link followed) is neither a regular file nor a folder: a FIFO, a socket or a device, whose open
    can block forever; False when nothing is there."""
    return path.exists() and not path.is_file() and not path.is_dir()


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder; the rename is still atomic
            os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Call `write(file)` on a temporary binary file, then put it at `path`. Creates the parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        # 0o666 minus the umask: the same mode as an ordinary open(), unlike tempfile's private 0o600.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:  # a read-only folder: name the file being written, not its temporary
        exc.filename = str(path)
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.filename in (None, str(tmp)):  # a full disk: the same
            exc.filename = str(path)
        raise
    _fsync_folder(path.parent)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any, *, sort_keys: bool = False) -> Path:
    """Indented UTF-8 JSON with a final newline; values JSON does not know (paths, dates) become strings."""
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=sort_keys, default=str) + "\n"
    return write_text_atomic(path, text)


def write_parquet_atomic(path: str | Path, table: Any) -> Path:
    """A `pyarrow.Table` as one parquet file."""
    import pyarrow.parquet as pq

    return write_atomic(path, lambda f: pq.write_table(table, f))


def write_parquet_pieces_atomic(path: str | Path, tables: Iterable[Any]) -> int:
    """`pyarrow.Table`s of one schema as one parquet file, each written as it comes (a row group or more each), so
    that only one is held at a time; the rows written. One table gives the bytes `write_parquet_atomic` gives."""
    import pyarrow.parquet as pq

    written = 0

    def write(f: IO[bytes]) -> None:
        nonlocal written
        writer = None
        try:
            for table in tables:
                if writer is None:
                    writer = pq.ParquetWriter(f, table.schema)
                writer.write_table(table)
                written += table.num_rows
                del table  # not held while the next is made
            if writer is None:  # no schema to write an empty file with
                raise ValueError(f"{path}: no table to write")
        finally:
            if writer is not None:
                writer.close()

    write_atomic(path, write)
    return written


def write_png_atomic(path: str | Path, figure: Any, *, dpi: int = 100) -> Path:
    """A matplotlib figure as PNG."""
    return write_atomic(path, lambda f: figure.savefig(f, format="png", dpi=dpi))


def share_like_new_files(folder: str | Path, pattern: str = "*.safetensors") -> None:
    """Give the files of `folder` matching `pattern` the mode any new file gets under the user's umask. transformers
    writes weights through a private (0o600) temporary file: beside a readable config.json, a model that the rest
    of a shared cluster could load, but not its weights."""
    umask = os.umask(0)
    os.umask(umask)
    for path in Path(folder).glob(pattern):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~umask)


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """A JSON object from a file ssogen wrote, or None when the file is missing, unreadable, not UTF-8, not JSON or
    not an object: for the files whose absence only means that a step has not run."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: JSONDecodeError and UnicodeDecodeError
        return None
    return data if isinstance(data, dict) else None

