"""Reading a prompts file's rows, one parser per format (JSONL, JSON, parquet, CSV/TSV); each problem of the file
is one line naming the file and, where it has one, the line."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

from ssogen.errors import UserError
from ssogen.formatting import counted

# The prompts file types, as --help and the error for any other name them (.ndjson is read as .jsonl, unnamed).
FILE_TYPES = (".jsonl", ".json", ".parquet", ".csv", ".tsv")


def _decode(path: Path, raw: bytes) -> str:
    """The file's bytes as UTF-8 text; any other encoding (Latin-1, UTF-16, binary data) is one line naming where."""
    try:
        return raw.decode("utf-8-sig")  # a leading byte-order mark (Windows exports) is not text
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8 "
                        "(a binary file is not a prompts file)") from None


def rows_from_file(path: Path) -> tuple[list[Any], str, list[int] | None]:
    """From one read of the file: its rows, the sha256 of its bytes, and the line each row starts at, counted from 1
    (blank lines are no rows: a row's index is not its line), where the format has lines (JSONL, CSV/TSV; else None)."""
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file")
    if suffix not in (*FILE_TYPES, ".ndjson"):
        raise UserError(f"{path}: unsupported file type {suffix or '(none)'} (use {', '.join(FILE_TYPES)} "
                        "or a datasets folder)")
    raw = path.read_bytes()
    rows, lines = _parse_file(path, suffix, raw)
    return rows, hashlib.sha256(raw).hexdigest(), lines


def _parse_file(path: Path, suffix: str, raw: bytes) -> tuple[list[Any], list[int] | None]:
    if suffix in (".jsonl", ".ndjson"):
        rows, lines = [], []
        # Lines end at \n only: JSON text may hold U+2028 and other characters str.splitlines() breaks at.
        for number, line in enumerate(_decode(path, raw).split("\n"), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: invalid JSON: {exc.msg}") from None
            lines.append(number)
        return rows, lines
    if suffix == ".json":
        try:
            data = json.loads(_decode(path, raw))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of objects")
        return data, None
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(pa.BufferReader(raw)).to_pylist(), None
        except (pa.ArrowInvalid, OSError) as exc:
            problem = str(exc).replace("'<Buffer>'", f"'{path}'")  # pyarrow calls bytes in memory '<Buffer>'
            raise UserError(f"{path}: cannot read parquet ({problem})") from None
    try:
        return _table_rows(path, _decode(path, raw), "\t" if suffix == ".tsv" else ",")
    except csv.Error as exc:
        raise UserError(f"{path}: not a valid {suffix[1:].upper()} file ({exc})") from None


def _table_rows(path: Path, text: str, delimiter: str) -> tuple[list[dict[str, str]], list[int]]:
    """A CSV/TSV file's rows by its header, and the line each starts at. A row with more or fewer cells than the
    header is refused: an unquoted comma (or line break) in a prompt would otherwise cut the prompt short, or make
    two rows of one, unseen."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return [], []
    repeated = sorted({name for name in header if name and header.count(name) > 1})  # unnamed: a spreadsheet's
    if repeated:
        raise UserError(f"{path}:{reader.line_num}: the header names column(s) {', '.join(map(repr, repeated))} "
                        "twice; a row would keep only the last of each")
    rows, lines = [], []
    start = reader.line_num + 1
    for cells in reader:
        line, start = start, reader.line_num + 1  # a quoted cell's line breaks make a row of several lines
        if not cells:  # a blank line
            continue
        if len(cells) != len(header):
            separator = "tab" if delimiter == "\t" else "comma"
            raise UserError(f"{path}:{reader.line_num}: {counted(len(cells), 'cell')} where the header has "
                            f"{len(header)}; put a cell that holds a {separator} or a line break in double quotes "
                            '("...")')
        rows.append(dict(zip(header, cells, strict=True)))
        lines.append(line)
    return rows, lines
