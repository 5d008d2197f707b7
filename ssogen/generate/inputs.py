"""Reading user queries: JSONL/JSON/parquet/CSV files, local `datasets` folders, hub ids, or the demo queries."""

from __future__ import annotations

import csv
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssogen.errors import UserError

DEMO_QUERIES = Path(__file__).parent.parent / "data" / "demo_queries.jsonl"


def demo_queries() -> list[str]:
    """The bundled demo user queries, in file order."""
    with DEMO_QUERIES.open(encoding="utf-8") as f:
        return [json.loads(line)["prompt"] for line in f if line.strip()]


@dataclass
class PromptRow:
    position: int  # row index in the input, part of the stable row id
    text: str


@dataclass
class Row:
    """A query as the pipeline carries it: its stable id (`records.row_id`), input position and text."""

    id: str
    position: int
    prompt: str


@dataclass
class PromptsRead:
    source: str
    rows: list[PromptRow]
    rows_in: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count


def _rows_from_file(path: Path) -> list[Any]:
    suffix = path.suffix.lower()
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file")
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{number}: invalid JSON: {exc.msg}") from None
        return rows
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of objects")
        return data
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"{path}: cannot read parquet ({exc})") from None
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    raise UserError(f"{path}: unsupported file type {suffix or '(none)'} (use .jsonl, .json, .parquet, .csv "
                    "or a datasets folder)")


def _rows_from_dataset_folder(path: Path, split: str) -> list[Any]:
    import datasets

    try:
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() \
                or (path / "state.json").exists():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise UserError(f"{path}: no split {split!r} (has: {', '.join(loaded)})")
                loaded = loaded[split]
            return list(loaded)
        # A throwaway cache: reading the user's input must not write anywhere outside --out.
        with tempfile.TemporaryDirectory(prefix="ssogen-input-") as cache:
            return list(datasets.load_dataset(str(path), split=split, cache_dir=cache))
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path}: cannot load as a dataset ({type(exc).__name__}: {exc})".splitlines()[0]) \
            from None


def _rows_from_hub(name: str, split: str) -> list[Any]:
    import datasets

    try:
        with tempfile.TemporaryDirectory(prefix="ssogen-input-") as cache:
            return list(datasets.load_dataset(name, split=split, cache_dir=cache))
    except Exception as exc:
        raise UserError(f"--prompts {name}: no such file, and loading it as a hub dataset failed "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def _prompt_of(row: Any, prompt_field: str) -> Any:
    """The query text of a row: the chosen field, or the last user turn of a `messages` list."""
    if not isinstance(row, dict):
        return None
    if prompt_field in row:
        return row[prompt_field]
    messages = row.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return message.get("content")
    return None


def read_prompts(source: str | None, *, prompt_field: str = "prompt", split: str = "train",
                 limit: int | None = None) -> PromptsRead:
    """All usable prompts with their input positions; rows without the field or blank are counted."""
    if source is None:
        raw: list[Any] = [{"prompt": q} for q in demo_queries()]
        shown, prompt_field = "demo queries", "prompt"
    else:
        path = Path(source)
        shown = source
        if path.is_dir():
            raw = _rows_from_dataset_folder(path, split)
        elif path.is_file():
            raw = _rows_from_file(path)
        elif "/" in source and not source.startswith((".", "/", "~")) and path.suffix == "":
            raw = _rows_from_hub(source, split)
        else:
            raise UserError(f"--prompts {source}: no such file or folder")
    if not raw:
        raise UserError(f"{shown}: no rows")
    read = PromptsRead(source=shown, rows=[], rows_in=len(raw))
    for position, row in enumerate(raw):
        value = _prompt_of(row, prompt_field)
        if not isinstance(value, str):
            read.skipped["missing_field"] = read.skipped.get("missing_field", 0) + 1
            continue
        if not value.strip():
            read.skipped["blank_prompt"] = read.skipped.get("blank_prompt", 0) + 1
            continue
        if limit is None or len(read.rows) < limit:
            read.rows.append(PromptRow(position=position, text=value))
    if read.skipped.get("missing_field", 0) == len(raw):
        fields = sorted(raw[0]) if isinstance(raw[0], dict) else []
        raise UserError(f"{shown}: no row has a {prompt_field!r} field or a messages list with a user turn "
                        f"(fields: {', '.join(fields) or 'none'}; choose one with --prompt-field)")
    if not read.rows:
        raise UserError(f"{shown}: all {len(raw)} prompts are blank")
    return read
