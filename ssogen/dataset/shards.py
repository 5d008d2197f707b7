"""The append-only, resumable store of finished work under OUT/.ssogen/.

Each invocation appends to its own JSONL files (`<stage>-<n>.jsonl`), flushed and fsynced after each chunk, so
a killed run loses at most the chunk in flight. On load a torn last line (kill -9 mid-write) is ignored; a
new invocation never appends after it because it opens new files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from ssogen.dataset.folder import OutputFolder
from ssogen.errors import UserError
from ssogen.io import write_json_atomic


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break  # torn last line of a killed writer
            try:
                records.append(json.loads(raw))
            except json.JSONDecodeError:
                break
    return records


def _check_writable_folder(out: Path) -> None:
    """`--out` must be a folder, or creatable: its nearest existing ancestor a writable folder."""
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out}: exists and is not a folder")
        existing = out
    else:
        existing = next(p for p in out.absolute().parents if p.exists())
        if not existing.is_dir():
            raise UserError(f"--out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {existing} is not writable")


class ShardStore:
    """JSONL shards in one folder of an output folder's work dir: `.ssogen/` for generate (the default), or
    the score cache folder that `OutputFolder.score_cache` names."""

    def __init__(self, folder: OutputFolder | str | Path, directory: Path | None = None) -> None:
        self.folder = folder if isinstance(folder, OutputFolder) else OutputFolder(folder)
        self.dir = directory or self.folder.work_dir
        self._files: dict[str, IO[bytes]] = {}

    def check(self, fingerprint: dict[str, Any], *, overwrite: bool) -> bool:
        """Read-only: may a run of this configuration use the output folder? True when it would resume. Refuses
        a folder holding another configuration's run (unless overwrite) and a non-empty folder without a run;
        writes nothing, so a refusal comes before any model is loaded."""
        folder, out = self.folder, self.folder.root
        _check_writable_folder(out)
        if overwrite or not out.exists():
            return False
        if folder.fingerprint.exists():
            try:
                stored = json.loads(folder.fingerprint.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise UserError(f"{folder.fingerprint}: unreadable ({type(exc).__name__}); use --overwrite to start "
                                "the run again or choose another --out") from None
            if stored.get("fingerprint") != fingerprint["fingerprint"]:
                changed = sorted(k for k in set(stored.get("config", {})) | set(fingerprint["config"])
                                 if stored.get("config", {}).get(k) != fingerprint["config"].get(k))
                raise UserError(f"--out {out}: holds a run with a different configuration (changed: "
                                f"{', '.join(changed) or 'library/templates'}); use --overwrite to replace "
                                "it or choose another --out")
            return True
        if folder.holds_anything():
            raise UserError(f"--out {out}: folder is not empty and holds no ssogen run; use --overwrite "
                            "or choose another --out")
        return False

    def prepare(self, fingerprint: dict[str, Any], *, overwrite: bool) -> bool:
        """Claim the output folder for a run of this configuration (`check`, then remove an old run's files
        when overwriting and record the fingerprint). True when resuming a run of the same configuration."""
        resuming = self.check(fingerprint, overwrite=overwrite)
        if overwrite:
            self.folder.remove_run_outputs()
        self.dir.mkdir(parents=True, exist_ok=True)
        if not resuming:
            write_json_atomic(self.folder.fingerprint, fingerprint, sort_keys=True)
        return resuming

    def load(self, stage: str) -> dict[str, dict[str, Any]]:
        """Finished records of a stage, keyed by row id (later files win; they are identical anyway)."""
        found: dict[str, dict[str, Any]] = {}
        for path in sorted(self.dir.glob(f"{stage}-*.jsonl"), key=lambda p: int(p.stem.split("-")[-1])):
            for record in _read_jsonl(path):
                found[record["id"]] = record
        return found

    def _file(self, stage: str) -> IO[bytes]:
        if stage not in self._files:
            numbers = [int(p.stem.split("-")[-1]) for p in self.dir.glob(f"{stage}-*.jsonl")]
            path = self.dir / f"{stage}-{max(numbers, default=-1) + 1:05d}.jsonl"
            self.dir.mkdir(parents=True, exist_ok=True)
            self._files[stage] = path.open("ab")
        return self._files[stage]

    def append(self, stage: str, records: list[dict[str, Any]]) -> None:
        """Append records and make them durable before returning (flush + fsync)."""
        if not records:
            return
        f = self._file(stage)
        f.write(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records))
        f.flush()
        os.fsync(f.fileno())

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
