"""The append-only, resumable store of finished work under OUT/.ssogen/.

Each invocation appends to its own JSONL files (`<stage>-<n>.jsonl`), flushed and fsynced after each chunk, so
a killed run loses at most the chunk in flight. On load a torn last line (kill -9 mid-write) is ignored; a
new invocation never appends after it because it opens new files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import IO, Any

from ssogen.dataset.folder import WORK_DIR
from ssogen.errors import UserError

FINGERPRINT = "fingerprint.json"
STAGES = ("selection", "rows")
# Files and folders a finished run writes into OUT; `--overwrite` removes exactly these, nothing else.
# (`stats.json`, `plots/` and `judge.json` come from `ssogen stats` / `score` / `judge`: stale after a new run,
# so they go too.)
RUN_OUTPUTS = (WORK_DIR, "data", "README.md", "manifest.json", "config.resolved.yaml", "library.yaml",
               "logs", "stats.json", "plots", "judge.json")


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


class ShardStore:
    def __init__(self, out_dir: str | Path) -> None:
        self.out = Path(out_dir)
        self.dir = self.out / WORK_DIR
        self._files: dict[str, IO[bytes]] = {}

    def prepare(self, fingerprint: dict[str, Any], *, overwrite: bool) -> bool:
        """Create or reopen the store. True when resuming a run of the same configuration."""
        marker = self.dir / FINGERPRINT
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out}: exists and is not a folder")
        if overwrite:
            for name in RUN_OUTPUTS:
                target = self.out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        resuming = False
        if marker.exists():
            stored = json.loads(marker.read_text(encoding="utf-8"))
            if stored.get("fingerprint") != fingerprint["fingerprint"]:
                changed = sorted(k for k in set(stored.get("config", {})) | set(fingerprint["config"])
                                 if stored.get("config", {}).get(k) != fingerprint["config"].get(k))
                raise UserError(f"--out {self.out}: holds a run with a different configuration (changed: "
                                f"{', '.join(changed) or 'library/templates'}); use --overwrite to replace "
                                "it or choose another --out")
            resuming = True
        elif not overwrite and self.out.exists() and any(self.out.iterdir()):
            raise UserError(f"--out {self.out}: folder is not empty and holds no ssogen run; use --overwrite "
                            "or choose another --out")
        self.dir.mkdir(parents=True, exist_ok=True)
        if not resuming:
            tmp = marker.with_name(FINGERPRINT + ".tmp")
            tmp.write_text(json.dumps(fingerprint, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, marker)
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
