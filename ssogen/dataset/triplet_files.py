"""The `triplets` of an output folder a batch of rows at a time, in input order, from its parquet files: `stats`, the
card and the end of `generate` then hold one batch of records, not every row (at 100k rows the records of every
row and the tables built from them took about 5x the text at once)."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ssogen.errors import UserError, file_system_error
from ssogen.records import TripletRecord

# Rows per batch: large enough that the per-batch work is noise, small enough that a batch is a few MB of text.
BATCH_ROWS = 2048
# The read buffer of a parquet file read a batch of rows at a time (`row_batches`).
READ_BUFFER_BYTES = 1 << 20

# A source of the triplets in input order: each call starts a new pass over every row, a batch at a time.
RecordBatches = Callable[[], Iterator[list[TripletRecord]]]


def in_batches(records: Iterable[TripletRecord], size: int = BATCH_ROWS) -> Iterator[list[TripletRecord]]:
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch


def as_records(rows: Iterable[dict[str, Any]]) -> list[TripletRecord]:
    """Rows of the triplets config as records (columns a newer ssogen added are ignored)."""
    known = TripletRecord.model_fields
    return [TripletRecord.model_validate({k: v for k, v in row.items() if k in known}) for row in rows]


def parquet_read_error(file: Path, exc: Exception) -> UserError:
    """Why `file` could not be read: the file system's one line (an unreadable file is not corrupt), else corrupt, in
    one line: Arrow's message of a page it cannot decode spans lines and quotes the damaged bytes."""
    if isinstance(exc, OSError) and (refused := file_system_error(exc, file)) is not None:
        return refused
    said = " ".join("".join(c if c.isprintable() else " " for c in str(exc)).split())
    return UserError(f"{file}: corrupt parquet file ({said})")


def read_table(file: Path, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(file, columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise parquet_read_error(file, exc) from None


def parquet_footer(file: Path) -> pq.FileMetaData | None:
    """The file's parquet footer; None when it is corrupt, the file system's one line when it may not be read."""
    try:
        return pq.read_metadata(file)
    except (pa.ArrowInvalid, OSError) as exc:
        if isinstance(exc, OSError) and (refused := file_system_error(exc, file)) is not None:
            raise refused from None
        return None


def check_columns(paths: Sequence[Path], folder: Path) -> None:
    """The files' columns can be read as one table (what reading them together refuses, said before any row)."""
    schemas = []
    for file in paths:
        try:
            schemas.append(pq.read_schema(file))
        except (pa.ArrowInvalid, OSError) as exc:
            raise parquet_read_error(file, exc) from None
    try:
        pa.unify_schemas(schemas, promote_options="default")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise UserError(f"{folder}: its files disagree on the columns ({exc})") from None


def check_footers(split_files: Mapping[str, Sequence[Path]], folder: Path) -> None:
    """`check_columns` over a config's files, every split: what `ssogen stats` needs of the configs it only
    describes (their row counts and columns, from the footers). A corrupt one was left out of the card, exit 0."""
    if every := [file for files in split_files.values() for file in files]:
        check_columns(every, folder)


def check_pages(paths: Sequence[Path], folder: Path) -> None:
    """`check_columns`, then every page of the files decoded, a batch held at a time and none made Python rows: a
    page that cannot be decoded (a file damaged inside, its footer intact) is one line before the command writes
    anything, not once its log is open. Decoding is about a quarter of reading the rows as records (0.15 s of
    0.57 s for 10,000 rows of bench/large_folders.py, 63 MB of text), a few per cent of a `stats`."""
    check_columns(paths, folder)
    for file in paths:
        for _ in batches(file, BATCH_ROWS):
            continue


def batches(file: Path, size: int, columns: Sequence[str] | None = None, *, threads: bool = True
            ) -> Iterator[pa.RecordBatch]:
    """The file's rows (`columns` only, if given) `size` at a time: a batch is held, not the file; a corrupt file
    is one clear line. Its pages are read as they are decoded: read whole (Arrow's default), the compressed column
    chunks of a row group (all of a file ssogen writes) were held at once, about half the text of the columns read.
    `threads`: decoded by Arrow's threads (faster), else in this one, as `write_configs` reads back what it wrote:
    there the batches took memory of their own (the allocator's per-thread heaps) beside what the tables written
    before had freed. Opened here: Arrow cannot open a path that is not UTF-8, which a folder may have."""
    try:
        with file.open("rb") as opened:
            reader = pq.ParquetFile(opened, buffer_size=READ_BUFFER_BYTES, pre_buffer=False)
            yield from reader.iter_batches(batch_size=size, columns=None if columns is None else list(columns),
                                           use_threads=threads)
    except (pa.ArrowInvalid, OSError) as exc:
        raise parquet_read_error(file, exc) from None


def row_batches(file: Path, size: int = BATCH_ROWS, columns: Sequence[str] | None = None
                ) -> Iterator[list[dict[str, Any]]]:
    """`batches` as lists of rows, decoded in this thread (the pair configs read from the triplets' files)."""
    for batch in batches(file, size, columns, threads=False):
        yield batch.to_pylist()


def _rows(file: Path, size: int, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    for batch in batches(file, size, columns):
        yield from batch.to_pylist()


def _records(file: Path, size: int) -> Iterator[TripletRecord]:
    rows = _rows(file, size)
    while batch := list(islice(rows, size)):
        yield from as_records(batch)


def _in_order(file: Path) -> bool:
    try:
        positions = pq.read_table(file, columns=["position"])["position"]
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        raise parquet_read_error(file, exc) from None
    return len(positions) < 2 or pc.all(pc.greater_equal(positions[1:], positions[:-1])).as_py() is not False


def record_batches(paths: Sequence[Path], folder: Path, size: int = BATCH_ROWS) -> Iterator[list[TripletRecord]]:
    """The records of triplets files (every split) sorted by input position, files earlier in `paths` first among
    equal positions (a stable sort of all of them). Files in input order (those ssogen writes) are merged a batch
    at a time; otherwise every row is read and sorted. Corrupt files, or files that disagree on the columns
    (`folder`: the config's), are one clear line before any row."""
    check_columns(paths, folder)
    return _batches(paths, size)


def _batches(paths: Sequence[Path], size: int) -> Iterator[list[TripletRecord]]:
    if all(_in_order(file) for file in paths):
        merged: Iterator[TripletRecord] = heapq.merge(*(_records(file, size) for file in paths),
                                                      key=lambda r: r.position)
    else:
        merged = iter(sorted((r for file in paths for r in _records(file, size)), key=lambda r: r.position))
    yield from in_batches(merged, size)


def rows_at(paths: Sequence[Path], indices: Sequence[int], size: int = BATCH_ROWS) -> list[dict[str, Any]]:
    """The rows at `indices` of the files read one after the other (as `OutputFolder.read_config` joins them), in
    the order asked, reading a batch at a time."""
    wanted, found, offset = set(indices), {}, 0
    for file in paths:
        for row in _rows(file, size):
            if offset in wanted:
                found[offset] = row
            offset += 1
            if len(found) == len(wanted):  # the card's examples are mostly the first rows: no need to read on
                return [found[i] for i in indices]
    return [found[i] for i in indices]
