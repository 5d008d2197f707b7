"""What makes an output folder ssogen's, shared by the dataset folder (`ssogen.dataset.folder`) and the training
folder (`ssogen.train.output`): both keep in OUT/.ssogen/

    marker.json        ssogen's mark: written when a run claims the folder; only a folder carrying it (or a file
                       older versions wrote there) may be resumed into or cleared by --overwrite
    lock               the one-writer lock (`ssogen.lock`)
    fingerprint.json   what decides the run's results; a rerun resumes only when it is unchanged
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ssogen.errors import UserError
from ssogen.io import write_json_atomic
from ssogen.lock import Holder, folder_lock

WORK_DIR = ".ssogen"
MARKER = "marker.json"
LOCK = "lock"
FINGERPRINT = "fingerprint.json"


@contextlib.contextmanager
def claim(work_dir: Path, *, label: str, command: str, kind: str) -> Iterator[Holder | None]:
    """Hold the folder's lock for the block (one line naming the holder, exit 1, when another process has it) and
    mark the folder as ssogen's. Yields the holder of a lock a killed run left, if any."""
    with folder_lock(work_dir / LOCK, label=label, command=command) as left_behind:
        marker = work_dir / MARKER
        if not marker.exists():
            from ssogen import __version__

            write_json_atomic(marker, {"written_by": "ssogen", "version": __version__, "kind": kind,
                                       "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        yield left_behind


def clear_work_dir(work_dir: Path) -> None:
    """Remove the in-progress state of an old run; the lock and the marker stay (the folder remains ssogen's)."""
    if not work_dir.is_dir():
        return
    for entry in work_dir.iterdir():
        if entry.name not in (LOCK, MARKER):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def check_fingerprint(path: Path, fingerprint: dict[str, Any], *, refusal: str) -> None:
    """Refuse when the stored fingerprint differs from this run's: `refusal (changed: a, b); use --overwrite ...`,
    naming each changed setting (a model's parts as `model.<part>`). An unreadable file is one line too."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        stored_config = stored["config"]
        if not isinstance(stored_config, dict):
            raise TypeError("config is not a mapping")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__}); use --overwrite to start the run again or "
                        "choose another --out") from None
    if stored.get("fingerprint") == fingerprint["fingerprint"]:
        return
    current = fingerprint["config"]
    changed = sorted(k for k in set(stored_config) | set(current) if stored_config.get(k) != current.get(k))
    hint = "; the model's files are not those this run used" if any(k.startswith("model.") for k in changed) else ""
    raise UserError(f"{refusal} (changed: {', '.join(changed) or 'library/templates'}){hint}; use --overwrite to "
                    "replace it or choose another --out")
