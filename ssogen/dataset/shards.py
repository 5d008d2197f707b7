"""The append-only, resumable store of finished work under OUT/.ssogen/.

Each invocation appends to its own JSONL files (`<stage>-<n>.jsonl`), flushed and fsynced after each chunk, so
a killed run loses at most the chunk in flight. On load a torn last line (kill -9 mid-write) is ignored; a
new invocation never appends after it because it opens new files."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Collection, Iterator, Mapping
from itertools import accumulate
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from ssogen.dataset.folder import MARKER, WORK_DIR, OutputFolder
from ssogen.dataset.shard_index import SavedRecords
from ssogen.errors import UserError
from ssogen.io import check_writable_folder, read_json_object, write_json_atomic
from ssogen.ownership import check_fingerprint, check_kind

ENGINE_SETTINGS = "engine_settings.json"  # in the work dir; --overwrite clears it with the rest


def _read_jsonl(path: Path) -> Iterator[tuple[int, int, Any]]:
    """(line number, byte offset, value) of each complete line, a line at a time (a shard can hold GBs)."""
    with path.open("rb") as f:
        offset = 0
        for number, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                break  # torn last line of a killed writer
            try:
                value = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                break
            yield number, offset, value
            offset += len(raw)


def _first_problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return f"{'.'.join(str(part) for part in error['loc']) or 'record'}: {error['msg']}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ShardStore:
    """JSONL shards in one folder of an output folder's work dir: `.ssogen/` for generate (the default), or
    the score cache folder that `OutputFolder.score_cache` names."""

    def __init__(self, folder: OutputFolder | str | Path, directory: Path | None = None) -> None:
        self.folder = folder if isinstance(folder, OutputFolder) else OutputFolder(folder)
        self.dir = directory or self.folder.work_dir
        self._files: dict[str, IO[bytes]] = {}

    def check(self, fingerprint: dict[str, Any], *, overwrite: bool, hints: Mapping[str, str] | None = None,
              earlier: Collection[str] = (), alike: Mapping[str, Collection[Any]] | None = None) -> bool:
        """Read-only: may a run of this configuration use the output folder? True when it would resume. Refuses
        a non-empty folder without ssogen's marker (overwrite or not: it would remove a person's files) and a
        folder holding another configuration's run (unless overwrite; `hints`, `earlier`, `alike` as in
        `check_fingerprint`); writes nothing, so a refusal comes before any model is loaded."""
        if not self.holds_a_run_to_match(overwrite=overwrite):
            return False
        check_fingerprint(self.folder.fingerprint, fingerprint, refusal=f"--out {self.folder.root}: holds a run "
                          "with a different configuration", hints=hints, earlier=earlier, alike=alike)
        return True

    def holds_a_run_to_match(self, *, overwrite: bool) -> bool:
        """Read-only, `check` without the fingerprint: True when the folder holds finished work of a run that this
        one must match; refuses a folder of files ssogen did not write or of another command."""
        folder, out = self.folder, self.folder.root
        check_writable_folder(out)
        if not folder.holds_anything():
            return False
        if not folder.is_ssogen_folder():
            raise UserError(f"--out {out}: folder is not empty and holds no ssogen run (no {WORK_DIR}/{MARKER}); "
                            "--overwrite removes only what ssogen wrote, so choose a new or empty folder")
        check_kind(folder.work_dir, "dataset", label=f"--out {out}")
        # Nothing to resume: a run that stopped before its first row takes a new configuration.
        return not (overwrite or not folder.fingerprint.exists() or not self.holds_finished_work())

    def prepare(self, fingerprint: dict[str, Any], *, overwrite: bool, hints: Mapping[str, str] | None = None,
                earlier: Collection[str] = (), alike: Mapping[str, Collection[Any]] | None = None) -> bool:
        """Take the output folder for a run of this configuration (`check`, then remove an old run's files
        when overwriting and record the fingerprint: a run an earlier version started gets this version's).
        True when resuming a run of the same configuration. The caller holds the folder's lock
        (`OutputFolder.claim`)."""
        resuming = self.check(fingerprint, overwrite=overwrite, hints=hints, earlier=earlier, alike=alike)
        if overwrite or (not resuming and self.folder.fingerprint.exists()):  # the latter: a run with no rows
            self.folder.remove_run_outputs()
        self.dir.mkdir(parents=True, exist_ok=True)
        if not resuming or earlier:
            write_json_atomic(self.folder.fingerprint, fingerprint, sort_keys=True)
        return resuming

    def holds_finished_work(self) -> bool:
        """A record is saved (a non-empty shard) or the dataset is written: what a rerun resumes or keeps."""
        return (any(path.stat().st_size for path in self.dir.glob("*.jsonl"))
                or any(self.folder.root.glob("data/*")))

    def load(self, stage: str, check: Callable[[dict[str, Any]], object] | None = None) -> dict[str, dict[str, Any]]:
        """Finished records of a stage, keyed by row id (later files win; they are identical anyway). A line that
        is JSON but not such a record (an object with an id that `check` accepts) is one clear line naming it."""
        return {record["id"]: record for record, _, _ in self._saved(stage, check)}

    def index(self, stage: str, saved: SavedRecords, check: Callable[[dict[str, Any]], object] | None = None
              ) -> SavedRecords:
        """`load` without holding the records: where each one lies goes into `saved` (each line is still read and
        checked once, so a line that is not a record of the stage is refused as `load` refuses it)."""
        for record, path, offset in self._saved(stage, check):
            saved.add(record, path, offset)
        return saved

    def _saved(self, stage: str, check: Callable[[dict[str, Any]], object] | None
               ) -> Iterator[tuple[dict[str, Any], Path, int]]:
        """(record, its file, its line's byte offset) of each saved line, files in the order written."""
        for path in sorted(self.dir.glob(f"{stage}-*.jsonl"), key=lambda p: int(p.stem.split("-")[-1])):
            for number, offset, record in _read_jsonl(path):
                problem = None
                if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                    problem = "not an object with an id"
                elif check is not None:
                    try:
                        check(record)
                    except (ValueError, TypeError, KeyError) as exc:
                        problem = _first_problem(exc)
                if problem is not None:
                    raise UserError(f"{path}:{number}: not a {stage} record of ssogen ({problem}); delete this file "
                                    "to compute its rows again, or use --overwrite")
                yield record, path, offset

    def _file(self, stage: str) -> IO[bytes]:
        if stage not in self._files:
            numbers = [int(p.stem.split("-")[-1]) for p in self.dir.glob(f"{stage}-*.jsonl")]
            path = self.dir / f"{stage}-{max(numbers, default=-1) + 1:05d}.jsonl"
            self.dir.mkdir(parents=True, exist_ok=True)
            self._files[stage] = path.open("ab")
        return self._files[stage]

    def append(self, stage: str, records: list[dict[str, Any]]) -> list[tuple[Path, int]]:
        """Append records and make them durable before returning (flush + fsync); where each one now lies (its file,
        its line's byte offset) for a `SavedRecords`."""
        if not records:
            return []
        f = self._file(stage)
        path, start = Path(f.name), f.tell()  # the file's end: each append is flushed whole (or the file dropped)
        lines = [json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records]
        offsets = list(accumulate((len(line) for line in lines[:-1]), initial=start))
        try:
            f.write(b"".join(lines))
            f.flush()
            os.fsync(f.fileno())
        except OSError as exc:  # a full disk: the line torn here is ignored on load; never write after it
            self._files.pop(stage)
            with contextlib.suppress(OSError):  # closing flushes the rest of the failed write, and fails again
                f.close()
            exc.filename = exc.filename or f.name
            raise
        return [(path, offset) for offset in offsets]

    def save_engine_settings(self, settings: dict[str, Any] | None) -> None:
        """What the engine loaded for this run resolved its options to (the manifest's `engine_settings`), kept
        so that an invocation which finds every row saved and loads no engine can still record it."""
        if settings is not None:
            write_json_atomic(self.dir / ENGINE_SETTINGS, settings, sort_keys=True)

    def saved_engine_settings(self) -> dict[str, Any] | None:
        """The settings `save_engine_settings` kept (None: no engine was loaded for this run, or an older
        version ran it)."""
        return read_json_object(self.dir / ENGINE_SETTINGS)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
