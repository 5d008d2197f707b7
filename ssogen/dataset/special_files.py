"""A dataset folder's files that the commands reading it open (`stats`, `score`, `judge`, `train --data`) are
regular files: checked, by their type alone, before any of them is opened. A FIFO (named pipe) that no process
writes blocks its open forever (manifest.json, the card, a data file, a score cache shard), and one at .ssogen/lock
made taking the lock a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ssogen.dataset.folder import CONFIGS, RUN_FILES, OutputFolder
from ssogen.errors import UserError
from ssogen.io import NOT_A_REGULAR_FILE_IN_FOLDER, is_special_file


def refuse_special_files(folder: Path) -> None:
    """One line naming the first file the commands read that is a pipe, a socket or a device."""
    for path in _read_files(OutputFolder(folder)):
        if is_special_file(path):
            raise UserError(f"{path}: {NOT_A_REGULAR_FILE_IN_FOLDER}")


def _read_files(out: OutputFolder) -> Iterator[Path]:
    """The files ssogen writes at the top of the folder, every parquet file of a config (any split, any name), and
    everything under .ssogen/ (marker, lock, fingerprint, shards, caches); not the logs and plots, which are only
    written."""
    yield from (out.root / name for name in RUN_FILES)
    for config in CONFIGS:
        yield from out.config_files(config)
    if out.work_dir.is_dir():
        yield from sorted(out.work_dir.rglob("*"))
