"""The statistics the card was last rendered with, kept in OUT/.ssogen/ with a stamp of what they describe.

Re-rendering the card (`push-to-hub`, with or without `--dry-run`; `judge`) needs the statistics of every triplet:
reading and validating every row again (most of a dry run's 3.7 s at 20,000 rows). The command that last wrote
the card or stats.json (generate, stats, score) had them in hand, from the files as they are now. They are kept
with a stamp of their inputs: the triplets' files (path, size, mtime, inode: a rewrite, always atomic, makes a new
inode), the library they were read with (library.yaml's bytes and the manifest's `library`) and the code that
counts (ssogen's version and the sources of the modules that read and count the rows).
A card rendered from a matching stamp is byte-identical to one rendered from the rows; any mismatch, or a missing or
unreadable file, reads the rows as before. Never published: .ssogen/ stays local, and `--overwrite` clears it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ssogen.dataset.stats import DatasetStats
from ssogen.errors import UserError
from ssogen.io import read_json_object, write_json_atomic

if TYPE_CHECKING:  # pragma: no cover
    from ssogen.dataset.folder import OutputFolder

CACHE = "card-stats.json"


def _code() -> str:
    """The code that turns rows into statistics: another version of it may count differently."""
    from ssogen import __version__
    from ssogen.dataset import leakage, likelihood, stats, triplet_files
    from ssogen.records import __file__ as records

    digest = hashlib.sha256(__version__.encode())
    for module in (stats.__file__, leakage.__file__, likelihood.__file__, triplet_files.__file__, records):
        digest.update(Path(str(module)).read_bytes())
    return digest.hexdigest()


def _stamp(folder: OutputFolder) -> dict[str, Any] | None:
    """What the statistics of `folder_stats(folder)` depend on, as it is now; None when it cannot be told."""
    try:
        files = []
        for path in folder.paths("triplets"):
            found = path.stat()
            files.append([folder.relative(path), found.st_size, found.st_mtime_ns, found.st_ino])
        library = hashlib.sha256(folder.library_file.read_bytes()).hexdigest()
        manifest = folder.read_manifest()
        code = _code()
    except (UserError, OSError, ValueError):
        return None
    return {"code": code, "triplets": files, "library_yaml": library, "library": manifest.get("library")}


def load(folder: OutputFolder) -> DatasetStats | None:
    """The kept statistics when they describe the folder as it is now, else None (read the rows)."""
    kept = read_json_object(folder.work_dir / CACHE)
    if kept is None or kept.get("stamp") is None or kept.get("stamp") != _stamp(folder):
        return None
    try:
        return DatasetStats.model_validate(kept.get("stats"))
    except ValidationError:
        return None


def store(folder: OutputFolder, stats: DatasetStats) -> None:
    """Keep `stats`, the statistics of the folder's triplets as they are now (plots left out: a card rendered
    without given stats has none in them)."""
    stamp = _stamp(folder)
    if stamp is None:
        return
    try:
        write_json_atomic(folder.work_dir / CACHE, {"stamp": stamp, "stats": stats.model_dump() | {"plots": []}})
    except OSError:  # a cache: a folder it cannot be written to still gets its card
        return
