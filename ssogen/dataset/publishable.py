"""What of an output folder may be published, and which of its files go up (`ssogen push-to-hub`).

A folder is refused when it is not an ssogen output, holds corrupt parquet, comes from an unfinished run, or when a
pair config has no rows (in any split) or blank responses. What never goes up: OUT/.ssogen/ (in-progress shards,
score caches) and any other hidden path, OUT/logs/ (the commands' logs name local paths, the user's home folder
among them, and the machine), temporary files of the atomic writers, Python caches, symbolic links (not followed:
what one points to may lie outside the folder), and folders that another ssogen command owns inside it (their own
.ssogen/marker.json, or make-tiny-model's mark). A pipe, a socket or a device among the files that would go up is
refused, named, rather than left out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from ssogen.dataset.configs import configs_of
from ssogen.dataset.folder import LOGS, MARKER, WORK_DIR, OutputFolder
from ssogen.dataset.triplet_files import BATCH_ROWS, batches, check_columns, read_table
from ssogen.errors import UserError
from ssogen.io import NOT_A_REGULAR_FILE_IN_FOLDER, TMP_SUFFIX, is_special_file
from ssogen.ownership import TINY_MODEL_MARK, not_complete

PAIR_RESPONSE_COLUMNS = {
    "dpo": ("chosen", "rejected"),
    "reward": ("chosen", "rejected"),
    "sso": ("response_good", "response_bad", "response_raw"),
    "pairs": ("chosen", "rejected"),
}


# column -> file -> its rows with a blank response there
Blanks = dict[str, dict[Path, int]]


@dataclass(frozen=True)
class UploadFile:
    path_in_repo: str
    local_path: Path
    size: int


def _excluded(relative: Path) -> bool:
    parts = relative.parts
    return (any(part.startswith(".") for part in parts)  # .ssogen/, .cache/, .git/, editor files
            or parts[0] == LOGS
            or "__pycache__" in parts
            or relative.name.endswith((TMP_SUFFIX, ".lock", ".incomplete")))


def _candidates(out: Path) -> Iterator[Path]:
    """The paths of the folder that would go up, sorted: not excluded, not a symbolic link (never followed: what it
    points to may lie outside the folder), not inside a folder that another ssogen command owns."""
    nested = [marker.parent.parent for marker in out.glob(f"*/**/{WORK_DIR}/{MARKER}")]
    nested += [mark.parent for mark in out.glob(f"*/**/{TINY_MODEL_MARK}")]
    for path in sorted(out.rglob("*")):
        if (not path.is_symlink() and not _excluded(path.relative_to(out))
                and not any(path.is_relative_to(folder) for folder in nested)):
            yield path


def refuse_special_uploads(out_dir: str | Path) -> None:
    """One line naming the first file that would go up and is a pipe, a socket or a device: it was left out of the
    upload without a word. Checked before anything is written (the lock, the log, the card)."""
    files_to_upload(out_dir)  # which refuses them


def files_to_upload(out_dir: str | Path) -> list[UploadFile]:
    """Every file of the folder that belongs on the Hub, sorted by path. A folder inside it that another ssogen
    command owns (a model trained into it, say) is not the dataset's and stays out. A pipe, a socket or a device
    is refused (`refuse_special_uploads`)."""
    out = Path(out_dir)
    files = []
    for path in _candidates(out):
        if is_special_file(path):
            raise UserError(f"{path}: {NOT_A_REGULAR_FILE_IN_FOLDER}")
        if path.is_file():
            files.append(UploadFile(path.relative_to(out).as_posix(), path, path.stat().st_size))
    return files


def _is_blank_response(value: object) -> bool:
    """A response that is null or empty; message lists count as blank when any content is."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list):
        return not value or any(_is_blank_response(m.get("content") if isinstance(m, dict) else m)
                                for m in value)
    return False


def _scan(folder: OutputFolder, config: str, columns: tuple[str, ...]) -> tuple[list[Path], int, Blanks]:
    """A config's files (those `read_config(config)` reads, in its order), its rows, and the blank responses of
    `columns` in each file. Every row is read, as reading the config whole did, with the same refusals (a corrupt
    file, files that disagree on the columns), but a batch at a time: the whole tables grew with the rows (`push-to-hub
    --dry-run` took 763 MB at 20,000 rows of bench/large_folders.py). A file without a column holds nulls there, as
    in the joined table."""
    paths = folder.paths(config)
    rows, blank = 0, {column: dict.fromkeys(paths, 0) for column in columns}
    for path in paths:
        read_table(path, columns=[])  # a file that does not open: the line reading it whole gave (footer only)
        for batch in batches(path, BATCH_ROWS):
            rows += batch.num_rows
            for column, counts in blank.items():
                values = batch.column(column).to_pylist() if column in batch.schema.names else [None] * batch.num_rows
                counts[path] += sum(map(_is_blank_response, values))
    check_columns(paths, folder.config_dir(config))
    return paths, rows, blank


def _blank_rows_error(config: str, column: str, counts: dict[Path, int]) -> UserError:
    """Name the file that holds the blank rows (with a test split it may be the test file, not train)."""
    path, found = next((p, n) for p, n in counts.items() if n)
    total = sum(counts.values())
    others = f", and {total - found} more in its other files" if total > found else ""
    return UserError(f"{path}: {found} row(s) with an empty or null {column!r} in the {config} config{others} "
                     "(--allow-incomplete to push anyway)")


def _refuse_an_empty_split(folder: OutputFolder, config: str) -> None:
    """A split without rows beside one with rows (`score --filter likelihood` dropped every train pair): users
    would load an empty split. Rows come from the footers; the file is named, or the folder when there are several."""
    for split, paths in folder.split_files(config).items():
        if sum(pq.read_metadata(path).num_rows for path in paths) == 0:
            where = paths[0] if len(paths) == 1 else folder.config_dir(config)
            raise UserError(f"{where}: the {split} split of the {config} config has no rows (its other splits "
                            f"have some); users would load an empty {split} split (--allow-incomplete to push "
                            "anyway)")


def check_publishable(out_dir: str | Path, *, allow_incomplete: bool = False) -> dict[str, int]:
    """Refuse folders that are not ssogen outputs, hold corrupt parquet, come from an unfinished run or whose
    pair configs hold no rows (in any split) or blank responses. Returns the row count per config."""
    folder = OutputFolder(out_dir)
    manifest = folder.read_manifest()
    counts: dict[str, int] = {}
    for config in configs_of(manifest):
        checked = () if allow_incomplete else PAIR_RESPONSE_COLUMNS.get(config, ())
        files, counts[config], blank = _scan(folder, config, checked)
        if allow_incomplete or config not in PAIR_RESPONSE_COLUMNS:
            continue
        if counts[config] == 0:
            where = files[0] if len(files) == 1 else folder.config_dir(config)  # every file of it is empty
            raise UserError(f"{where}: the {config} config has no rows (no kept pairs); nothing worth publishing "
                            "(--allow-incomplete to push anyway)")
        _refuse_an_empty_split(folder, config)
        for column in checked:
            if any(blank[column].values()):
                raise _blank_rows_error(config, column, blank[column])
    if (unfinished := not_complete(folder.manifest, manifest.get("status"))) and not allow_incomplete:
        raise UserError(f"{unfinished}, or pass --allow-incomplete")
    return counts
