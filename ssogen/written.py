"""The folders a command made in its output folder, recorded in OUT/.ssogen/written.json before it makes each one,
so that `--overwrite` removes those and nothing a person put beside them (a checkpoint copied in, the TensorBoard
runs of another tool), which it names in one line instead.

The record is written ahead and atomically: a crash between the record and the folder leaves a name without a
folder (nothing to remove), never a folder of the run that the record lacks. A folder without a record holds a run
of an earlier ssogen, which recorded nothing: what it made cannot be told from what a person put there, so it is
all kept (`kept_line` says so)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from ssogen.io import read_json_object, write_json_atomic

WRITTEN = "written.json"  # in the work dir (.ssogen/), beside the marker


def recorded(work_dir: Path) -> frozenset[str] | None:
    """The folders the run recorded, relative to the output folder (POSIX paths); None without a record (a run of
    an earlier ssogen). A name that leaves the folder (absolute, `..`) is not one ssogen wrote: left out."""
    data = read_json_object(work_dir / WRITTEN)
    if data is None or not isinstance(data.get("folders"), list):
        return None
    return frozenset(name for name in data["folders"] if isinstance(name, str) and _inside(name))


def record(work_dir: Path, names: Iterable[str] = ()) -> None:
    """Add `names` (relative POSIX paths of folders the run is about to make) to the record, creating it (an empty
    one says that the run records what it makes: nothing unrecorded in the folder is its)."""
    known = recorded(work_dir)
    if known is None or not set(names) <= known:
        write_json_atomic(work_dir / WRITTEN, {"folders": sorted({*(known or ()), *names})})


def relative_name(root: Path, folder: Path) -> str | None:
    """`folder` as the record names it, or None when it lies outside `root` (not ssogen's to record)."""
    try:
        return Path(folder).absolute().relative_to(Path(root).absolute()).as_posix()
    except ValueError:
        return None


def kept_line(root: Path, kept: Iterable[Path], *, recorded_anything: bool, command: str) -> str | None:
    """The one line naming what a clearing left in `root` because the run did not record it (None: nothing)."""
    names = sorted(path.relative_to(root).as_posix() for path in kept)
    if not names:
        return None
    why = (f"{command} did not record making them" if recorded_anything else "the run there, of an earlier "
           "ssogen, recorded none of the folders it made, so they cannot be told from yours: remove them yourself "
           "if they are its")
    return f"kept in {root} ({why}): {', '.join(names)}"


def _inside(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "." not in path.parts
