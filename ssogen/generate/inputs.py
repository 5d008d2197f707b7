"""Reading user queries: JSONL/JSON/parquet/CSV files, local `datasets` folders, hub ids, or the demo queries."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssogen.errors import UserError, file_system_error
from ssogen.generate.prompt_files import rows_from_file
from ssogen.generate.skips import LINE, ROW, note_place, skip_report
from ssogen.models import ask_hub, hub_offline, network_failure
from ssogen.temp_owner import owned_temp_folder

DEMO_QUERIES = Path(__file__).parent.parent / "data" / "demo_queries.jsonl"
INPUT_CACHE_PREFIX = "ssogen-input-"  # the temp folder's throwaway caches of `datasets` (`owned_temp_folder`)


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
    """The queries taken from an input. With --limit N taking stops at the N-th usable row: `rows_read` rows
    were looked at (`rows` taken, the rest `skipped`), of `input_rows` in the input. `queries_sha256` covers
    every usable row of the input, --limit or not (`_digest_entry`)."""

    source: str
    rows: list[PromptRow]
    queries_sha256: str = ""
    input_rows: int = 0
    rows_read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count, among the rows read
    # Reason -> where its first rows are (`skips.SHOWN_PLACES`), counted as `places` says (`skips.LINE`, `skips.ROW`).
    skipped_first: dict[str, list[int]] = field(default_factory=dict)
    places: str = ROW
    # Message-list rows reduced to their last user turn: what was left out -> rows (rows taken only).
    reduced: dict[str, int] = field(default_factory=dict)
    # What a published manifest says about the input: a file by its name and the sha256 of the bytes read here,
    # a folder by its name, a hub id as it is; never a local path (it would carry the user's home folder along).
    public: dict[str, str] = field(default_factory=dict)


def _refuse_an_unlistable_folder(path: Path) -> None:
    """One line naming the first folder under `path` (or `path` itself) that may not be listed. `datasets` leaves
    such a subfolder out without a word: the queries read were another set, or none ("a folder without files of
    queries"). Hidden folders and those starting with "__", which it leaves out anyway, are not looked in."""

    def refuse(error: OSError) -> None:
        raise file_system_error(error, path) or error

    for _, folders, _ in os.walk(path, onerror=refuse):
        folders[:] = [name for name in folders if not name.startswith((".", "__"))]


def _rows_from_dataset_folder(path: Path, split: str) -> list[Any]:
    import datasets

    _refuse_an_unlistable_folder(path)
    try:
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() \
                or (path / "state.json").exists():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise UserError(f"{path}: no split {split!r} (has: {', '.join(loaded)})")
                loaded = loaded[split]
            elif split != "train":  # one Dataset saved alone: it would be ignored
                raise UserError(f"--split {split}: {path} holds one dataset, which has no splits")
            return list(loaded)
        # A throwaway cache: reading the user's input must not write anywhere outside --out. It names this
        # process, so that the next command that reads a folder or hub dataset removes it after a `kill -9`.
        with owned_temp_folder(INPUT_CACHE_PREFIX) as cache:
            return list(datasets.load_dataset(str(path), split=split, cache_dir=cache))
    except UserError:
        raise
    except Exception as exc:
        if (full := _cache_full(exc, path, at=path)) is not None:
            raise full from None
        from datasets.data_files import EmptyDatasetError
        from datasets.exceptions import DataFilesNotFoundError

        if isinstance(exc, (DataFilesNotFoundError, EmptyDatasetError)):  # whose text names a loader's own files
            raise UserError(f"{path}: a folder without files of queries (.jsonl, .json, .csv, .parquet, ...) or a "
                            "saved dataset; give a file of queries, or a folder of such files") from None
        raise UserError(f"{path}: cannot load as a dataset ({type(exc).__name__}: {exc})".splitlines()[0]) \
            from None


def _cache_full(exc: Exception, source: str | Path, at: Path | None = None) -> UserError | None:
    """A full disk (or an unreadable file) while `datasets` loads the queries into its throwaway cache: the
    machine's one line, not a dataset that cannot be loaded. `at`: the local folder read, named where the error
    names no file (Arrow's refusal of an unreadable file of a saved dataset carries none; where its text quotes the
    file, that file is named)."""
    cache = f"loading --prompts {source} into a cache in {tempfile.gettempdir()}"
    return file_system_error(exc, at, writing=cache) if isinstance(exc, OSError) else None


def _ask_hub_for_dataset(name: str) -> None:
    """One quick question to the hub before `datasets` loads: an unreachable hub fails now, in one line, where
    `datasets` would retry for about 25 s and print every try; a dataset the hub does not know is named as such."""
    failed = f"--prompts {name}: no such file, and loading it as a hub dataset failed"
    if hub_offline():  # the download cache is a throwaway folder: nothing can be loaded from it
        raise UserError(f"{failed}: HF_HUB_OFFLINE is set; give a file or a dataset folder", exit_code=1)
    answer = ask_hub(name, "dataset")
    if answer.missing:
        raise UserError(f"{failed}: no such dataset on the hub (a private one needs HF_TOKEN)")
    if network_failure(answer.error):  # only an unreachable hub stops here; `datasets` reports the rest
        error = str(answer.error)
        raise UserError(f"{failed}: the hub cannot be reached ({type(answer.error).__name__}: "
                        f"{error.splitlines()[0] if error else ''}); check the network or give a file", exit_code=1)


def _rows_from_hub(name: str, split: str) -> list[Any]:
    import datasets

    _ask_hub_for_dataset(name)
    try:
        with owned_temp_folder(INPUT_CACHE_PREFIX) as cache:
            return list(datasets.load_dataset(name, split=split, cache_dir=cache))
    except Exception as exc:
        if (full := _cache_full(exc, name)) is not None:
            raise full from None
        # Exit 1 when the hub cannot be reached (the machine, not the input), as for a hub model.
        raise UserError(f"--prompts {name}: no such file, and loading it as a hub dataset failed "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                        1 if network_failure(exc) else 2) from None


def _is_message_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and "role" in m and "content" in m for m in value)


def _last_user_turn(messages: list[dict[str, Any]]) -> tuple[Any, list[str]]:
    """The query of a conversation (its last user turn) and what was left out of it: a system turn (SSO writes its
    own system prompts), earlier turns (multi-turn history) and turns after it (e.g. the dataset's own answer)."""
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        return None, []
    last = users[-1]
    dropped = []
    if any(m.get("role") == "system" for m in messages):
        dropped.append("system_turn")
    if any(m.get("role") != "system" for m in messages[:last]):
        dropped.append("earlier_turns")
    if messages[last + 1:]:
        dropped.append("later_turns")
    return _text_of_parts(messages[last].get("content")), dropped


def _query_of(row: Any, prompt_field: str) -> tuple[Any, str | None, list[str]]:
    """(query text or None, skip reason, conversation parts left out) for one input row.

    The field may hold text or a message list; a row without the field falls back to its `messages` list."""
    if not isinstance(row, dict):
        return None, "not_an_object", []
    if prompt_field in row:
        value = row[prompt_field]
    elif "messages" in row:
        value = row["messages"]
    else:
        return None, "missing_field", []
    if isinstance(value, str):
        return value, None, []
    if _is_message_list(value):
        text, dropped = _last_user_turn(value)
        if text is None:
            return None, "no_user_turn", []
        return (text, None, dropped) if isinstance(text, str) else (None, "not_text", [])
    return None, "missing_field" if value is None else "not_text", []


def _text_of_parts(content: Any) -> Any:
    """Content given as text parts (OpenAI's [{"type": "text", "text": ...}]) as one text; an image part: not text."""
    parts = content if isinstance(content, list) else []
    if parts and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in parts):
        return "\n".join(p["text"] for p in parts)
    return content


def read_prompts(source: str | None, *, prompt_field: str = "prompt", split: str = "train",
                 limit: int | None = None) -> PromptsRead:
    """All usable prompts with their input positions; rows without the field or blank are counted.

    A field (or `messages`) holding a message list gives its last user turn; the parts of the conversation that
    were left out are counted in `reduced` for the rows taken."""
    lines: list[int] | None = None  # a file's line of each row, where it has lines
    if source is None:
        for flag, value, default in (("--prompt-field", prompt_field, "prompt"), ("--split", split, "train")):
            if value != default:  # it would be ignored: the bundled queries have one field and one split
                raise UserError(f"{flag} {value}: applies to --prompts, which is not given (the bundled demo "
                                "queries would be used)")
        raw: list[Any] = [{"prompt": q} for q in demo_queries()]
        shown, prompt_field, public = "demo queries", "prompt", {"source": "demo queries", "origin": "bundled"}
    else:
        path = Path(source)
        shown = source
        if path.is_dir():
            raw = _rows_from_dataset_folder(path, split)
            public = {"source": path.resolve().name, "origin": "local folder"}
        elif path.is_file():
            if split != "train":  # it would be ignored: a file has one set of rows
                raise UserError(f"--split {split}: {source} is a file, which has no splits (--split is for a "
                                "dataset folder or a hub dataset)")
            raw, sha256, lines = rows_from_file(path)
            public = {"source": path.name, "origin": "local file", "sha256": sha256}
        elif "/" in source and not source.startswith((".", "/", "~")) and path.suffix == "":
            raw = _rows_from_hub(source, split)
            public = {"source": source, "origin": "hub"}
        elif path.exists():  # a pipe (`<(...)`): a resumed run must read the same queries again
            raise UserError(f"--prompts {source}: not a regular file or folder; save the queries to a file first")
        else:
            raise UserError(f"--prompts {source}: no such file or folder")
    if not raw:
        raise UserError(f"{shown}: no rows")
    read = PromptsRead(source=shown, rows=[], input_rows=len(raw), public=public, places=ROW if lines is None else LINE)
    digest = hashlib.sha256()
    for position, row in enumerate(raw):
        taking = limit is None or len(read.rows) < limit
        value, reason, dropped = _query_of(row, prompt_field)
        if reason is None and not value.strip():
            reason = "blank_prompt"
        if reason is None:
            digest.update(_digest_entry(position, value))
        if not taking:
            continue  # past --limit: only the digest looks at the row
        read.rows_read += 1
        if reason is not None:
            read.skipped[reason] = read.skipped.get(reason, 0) + 1
            note_place(read.skipped_first, reason, position if lines is None else lines[position])
            continue
        read.rows.append(PromptRow(position=position, text=value))
        for part in dropped:
            read.reduced[part] = read.reduced.get(part, 0) + 1
    if not read.rows:
        raise UserError(_nothing_usable(read, raw, prompt_field))
    read.queries_sha256 = digest.hexdigest()
    return read


def _digest_entry(position: int, text: str) -> bytes:
    """A usable row's part of `PromptsRead.queries_sha256`: its (position, text) as a JSON line (ASCII escapes: a
    lone surrogate from a JSON file hashes too). These decide a run's rows (their ids are `records.row_id(text,
    position)`), whatever the file's format, name or place, --prompt-field or --split."""
    return json.dumps([position, text]).encode() + b"\n"


def _nothing_usable(read: PromptsRead, raw: list[Any], prompt_field: str) -> str:
    """One line saying why no row gave a query, and where the first rows of each reason are."""
    shown, skipped = read.source, read.skipped
    if skipped.get("blank_prompt") == len(raw):
        return f"{shown}: all {len(raw)} prompts are blank"
    if skipped.get("missing_field") == len(raw):
        fields = sorted(raw[0]) if isinstance(raw[0], dict) else []
        return (f"{shown}: no row has a {prompt_field!r} field or a messages list (fields: "
                f"{', '.join(fields) or 'none'}; choose one with --prompt-field)")
    return (f"{shown}: no usable prompt in {len(raw)} rows: "
            f"{skip_report(skipped, read.skipped_first, read.places, prompt_field)}")
