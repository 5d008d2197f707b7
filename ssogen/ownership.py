"""What makes an output folder ssogen's, shared by the dataset folder (`ssogen.dataset.folder`) and the training
folder (`ssogen.train.output`): both keep in OUT/.ssogen/

    marker.json        ssogen's mark: written when a run claims the folder; only a folder carrying it (or a file
                       older versions wrote there) may be resumed into or cleared by --overwrite
    lock               the one-writer lock (`ssogen.lock`)
    fingerprint.json   what decides the run's results; a rerun resumes only when it is unchanged
    written.json       the folders the run made, recorded before it made them (`ssogen.written`)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssogen.errors import UserError
from ssogen.io import write_json_atomic
from ssogen.lock import Holder, check_free, folder_lock
from ssogen.runlog import active_logs
from ssogen.written import WRITTEN

WORK_DIR = ".ssogen"
MARKER = "marker.json"
LOCK = "lock"
FINGERPRINT = "fingerprint.json"
# `make-tiny-model` marks its folders with this file beside the weights instead (they hold no run, hence no .ssogen/).
TINY_MODEL_MARK = "ssogen_tiny_model.json"
# The names `OutputFolder.log_file` gives (logs/<command>-<UTC time>[-n].log): only these count as ssogen's logs.
LOG_PATTERN = "logs/*-????????T??????Z*.log"


@contextlib.contextmanager
def claim(work_dir: Path, *, label: str, command: str, kind: str,
          on_claimed: Callable[[Claimed | None], object] | None = None) -> Iterator[Holder | None]:
    """Hold the folder's lock for the block (one line naming the holder, exit 1, when another process has it) and
    mark the folder as ssogen's. Yields the holder of a lock a killed run left, if any.

    A block that fails (an exception; not an interruption) in a folder this claim made ssogen's, before any work was
    saved there, does not leave the folder claimed (a model that fails to load took a new --out for its command):
    bad input (exit 2) leaves no trace at all, any other failure its log (the traceback, the machine's error).
    `on_claimed` gets, once the folder is marked, what the claim would undo (for the processes that `follow` it)."""
    undo = Claimed.before(work_dir)
    with folder_lock(work_dir / LOCK, label=label, command=command) as left_behind:
        marker = work_dir / MARKER
        try:
            if not marker.exists():
                from ssogen import __version__

                write_json_atomic(marker, {"written_by": "ssogen", "version": __version__, "kind": kind,
                                           "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
            if on_claimed is not None:
                on_claimed(undo)
            yield left_behind
        except Exception as exc:
            if undo is not None:  # under the lock: no other run can have taken the folder meanwhile
                undo.remove_if_no_work(keep_logs=not _bad_input(exc))
            raise


@contextlib.contextmanager
def follow(undo: Claimed | None, *, own_logs: str) -> Iterator[None]:
    """For a process that writes beside a claim's holder without the lock (another rank of a multi-process run),
    entered once the holder marked the folder (`undo`: what its claim would undo, from `on_claimed`): a block that
    fails leaves what the holder's claim leaves. In a folder the claim made, before any work was saved, bad input
    removes this process's new logs (`own_logs`: their glob under the folder), and the folders the claim made go
    once empty; the holder's own files are the holder's to remove."""
    before = frozenset(undo.root.glob(own_logs)) if undo is not None else frozenset()
    try:
        yield
    except Exception as exc:
        if undo is not None:
            undo.remove_own_if_no_work(set(undo.root.glob(own_logs)) - before, keep_logs=not _bad_input(exc))
        raise


def _bad_input(exc: BaseException) -> bool:  # exit 2: the command leaves no trace
    return isinstance(exc, UserError) and exc.exit_code == 2


# What a claim and a run that saved no work leave in a folder: ssogen's files in OUT/.ssogen/ (the fingerprint is
# written before the model loads) and the command's log in OUT/logs/.
_CLAIM_FILES = (MARKER, LOCK, FINGERPRINT, WRITTEN)
_LOGS = LOG_PATTERN.split("/")[0]


@dataclass(frozen=True)
class Claimed:
    """A folder as it was before a claim made it ssogen's (it had no OUT/.ssogen/): whether it and its logs/ existed,
    the logs and the other entries it held (with their times of change), so that what the claim and a failed run
    added, and only that, can go."""

    root: Path
    made: tuple[Path, ...]  # the folders the lock's mkdir makes: the root and its missing parents, deepest first
    existed: dict[str, int]  # name -> st_mtime_ns of every entry but logs/ (none when the claim makes the folder)
    logs_before: frozenset[Path] | None  # None: no logs/ folder

    @classmethod
    def before(cls, work_dir: Path) -> Claimed | None:
        """None when the folder is ssogen's already (a run's folder, or a claim nested in one): never undone."""
        if work_dir.exists() or work_dir.is_symlink():
            return None
        root = folder = work_dir.parent
        made: list[Path] = []
        while not os.path.lexists(folder) and folder.parent != folder:
            made.append(folder)
            folder = folder.parent
        try:
            return cls(root, tuple(made), {} if made else _entries(root),
                       frozenset(root.glob(LOG_PATTERN)) if (root / _LOGS).is_dir() else None)
        except OSError:
            return None  # not listed, not undone (the claim says what is wrong)

    def remove_if_no_work(self, *, keep_logs: bool = False) -> None:
        """Remove the marker, the lock, the fingerprint, the new logs (unless `keep_logs`) and the folders the claim
        made, when the folder holds nothing else that it did not hold, unchanged, before; anything else is saved
        work (or a person's), and then nothing is removed. Files only by name, folders only when empty."""
        work_dir, logs = self.root / WORK_DIR, self.root / _LOGS
        before = self.logs_before or frozenset()
        try:
            new_logs = set(self.root.glob(LOG_PATTERN)) - before
            if (work_dir.is_symlink() or logs.is_symlink() or _entries(self.root) != self.existed
                    or any(entry.name not in _CLAIM_FILES or not entry.is_file() for entry in work_dir.iterdir())
                    or logs.is_dir() and not set(logs.iterdir()) <= new_logs | before):
                return
        except OSError:
            return
        self._remove([*(() if keep_logs else sorted(new_logs)), *(work_dir / n for n in _CLAIM_FILES)], work_dir)

    def remove_own_if_no_work(self, own_logs: Collection[Path], *, keep_logs: bool) -> None:
        """`follow`'s part: this process's new logs (unless `keep_logs`), then the folders the claim made once
        empty, when no work was saved (the folder holds no entry that it did not hold, unchanged, before)."""
        try:
            if (self.root / _LOGS).is_symlink() or _entries(self.root) != self.existed:
                return
        except OSError:
            return  # not listed, not undone
        self._remove([] if keep_logs else sorted(own_logs))

    def _remove(self, files: Iterable[Path], *folders: Path) -> None:
        for path in files:
            with contextlib.suppress(OSError):  # what cannot go stays
                path.unlink(missing_ok=True)
        for folder in [*folders, *(() if self.logs_before is not None else (self.root / _LOGS,)), *self.made]:
            with contextlib.suppress(OSError):  # only an empty one goes (a kept log keeps logs/ and the folder)
                folder.rmdir()


def _entries(root: Path) -> dict[str, int]:
    """The folder's entries but ssogen's own (OUT/.ssogen/, OUT/logs/), by name, with their times of change."""
    return {entry.name: entry.lstat().st_mtime_ns for entry in root.iterdir() if entry.name not in (WORK_DIR, _LOGS)}


# What each `kind` in the marker is, as a refusal names it.
KINDS = {"dataset": "a dataset folder of ssogen generate", "model": "a training run of ssogen train",
         "iterate": "a run of ssogen iterate"}


GENERATE_UNFINISHED = ("the `ssogen generate` run in this folder has not finished (its dataset is not complete); "
                       "run the same generate command again to finish it")


def _refuse_if_in_use(work_dir: Path) -> None:
    """A folder whose run has not finished may be one that a live process is still writing: then the error is
    "in use by process N" (exit 1), not "run the same command again" (which the lock would refuse)."""
    check_free(work_dir / LOCK, label=str(work_dir.parent))


def not_complete(manifest: Path, status: object) -> str | None:
    """The one line for a folder whose manifest says its run is not complete (generate or score stopped while it
    wrote the data files, which may then disagree), else None. A manifest without a status is of an old run. Raises
    the "in use" error instead while another process holds the folder (generate or score at work in it)."""
    if status in (None, "complete"):
        return None
    _refuse_if_in_use(manifest.parent / WORK_DIR)
    return (f"{manifest}: the run in this folder is not complete (status {status!r}); run the same `ssogen "
            "generate` (or `ssogen score`) command again to finish it")


def marker_kind(work_dir: Path) -> str | None:
    """The kind of output the marker names (None: no marker, or one of an older version without a kind)."""
    try:
        found = json.loads((work_dir / MARKER).read_text(encoding="utf-8")).get("kind")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def why_no_dataset(work_dir: Path) -> str | None:
    """Why a folder ssogen marked holds no dataset (a generate that has not finished, or another command's
    output); None for a folder without ssogen's marker."""
    kind = marker_kind(work_dir)
    if kind == "dataset":
        _refuse_if_in_use(work_dir)  # a first generate still running: not one to run again
        return GENERATE_UNFINISHED
    return f"holds {KINDS[kind]}, not {KINDS['dataset']}" if kind in KINDS else None


def check_kind(work_dir: Path, kind: str, *, label: str) -> None:
    """Refuse, --overwrite or not, a folder whose marker says another command's output lives there: clearing it
    would take the other run's files (a dataset's card and shards, a model's card and fingerprint) with it. A
    marker without a readable kind (older versions) passes: the fingerprint check still applies."""
    found = marker_kind(work_dir)
    if found in KINDS and found != kind:
        raise UserError(f"{label}: holds {KINDS[found]}, not {KINDS[kind]}; --overwrite never replaces one with "
                        "the other, so choose another --out")


def holds_anything(root: Path) -> bool:
    """Anything but ssogen's logs and a claim's bare lock: a folder that holds only the logs of commands that
    stopped early counts as empty (a person's logs/ is theirs: it counts), and so does a .ssogen/ holding only its
    lock file, which a claim stopped (Ctrl-C, kill) between taking the lock and writing the marker leaves: its
    command's "run it again" would otherwise be refused as a folder of files ssogen did not write."""
    if not root.is_dir():
        return False
    ours = set(root.glob(LOG_PATTERN))
    logs, work_dir = root / _LOGS, root / WORK_DIR
    return any(not (entry == logs and entry.is_dir() and all(p in ours for p in entry.iterdir()))
               and not (entry == work_dir and _holds_only_a_lock(entry))
               for entry in root.iterdir())


def _holds_only_a_lock(work_dir: Path) -> bool:
    if work_dir.is_symlink() or not work_dir.is_dir():
        return False
    return all(entry.name == LOCK and entry.is_file() and not entry.is_symlink() for entry in work_dir.iterdir())


def remove_written(root: Path, files: Iterable[Path], patterns: Iterable[str], work_dir: Path,
                   folders: Iterable[Path]) -> None:
    """What --overwrite removes: the named files and those matching the glob patterns under root (never the log
    this very command is writing), the in-progress state, then the folders that are empty now."""
    writing = active_logs()
    for target in [*files, *(p for pattern in patterns for p in root.glob(pattern))]:
        if target.is_file() and target.resolve() not in writing and not _through_a_link(root, target):
            target.unlink()
    clear_work_dir(work_dir)
    for folder in folders:
        with contextlib.suppress(OSError):  # left when something else is still inside
            folder.rmdir()


def _through_a_link(root: Path, target: Path) -> bool:
    """Whether a folder between root and target is a symbolic link: what lies behind one is not ours to remove
    (`data/x -> /elsewhere`), however its file names look."""
    return any(folder.is_symlink() for folder in target.parents if folder != root and root in folder.parents)


def clear_work_dir(work_dir: Path) -> None:
    """Remove the in-progress state of an old run; the lock and the marker stay (the folder remains ssogen's)."""
    if not work_dir.is_dir():
        return
    for entry in work_dir.iterdir():
        if entry.name not in (LOCK, MARKER):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def changed_settings(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The settings whose values differ between two fingerprints' configs, sorted."""
    return sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))


def check_fingerprint(path: Path, fingerprint: dict[str, Any], *, refusal: str,
                      hints: Mapping[str, str] | None = None, earlier: Collection[str] = (),
                      alike: Mapping[str, Collection[Any]] | None = None) -> None:
    """Refuse when the stored fingerprint differs from this run's (and from `earlier`: what earlier versions' rules
    give this run): `refusal (changed: a, b); use --overwrite ...`, naming each changed setting (a model's parts as
    `model.<part>`), then what it means: `hints` maps a setting to a sentence (e.g. naming the input it comes from);
    a setting the stored run lacks says it was written by an earlier ssogen. `alike`: per setting, the stored values
    that mean this run's (as an earlier version recorded it), not named as changed. An unreadable file is one line
    too."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        stored_config = stored["config"]
        if not isinstance(stored_config, dict):
            raise TypeError("config is not a mapping")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__}); use --overwrite to start the run again or "
                        "choose another --out") from None
    if stored.get("fingerprint") in (fingerprint["fingerprint"], *earlier):
        return
    changed = [k for k in changed_settings(stored_config, fingerprint["config"])
               if stored_config.get(k) not in (alike or {}).get(k, ())]
    older = [k for k in changed if k not in stored_config]
    # Digests of inputs kept beside the config (generate: the library and the templates), when the run stored them.
    changed += [k for k in sorted(set(fingerprint) - {"fingerprint", "config"})
                if k in stored and stored[k] != fingerprint[k]]
    notes = ["the model's files are not those this run used"] if any(k.startswith("model.") for k in changed) else []
    if older:
        notes.append(f"that run was written by an earlier ssogen, which did not record {', '.join(older)}")
    notes += [text for key, text in (hints or {}).items() if key in changed and key not in older]
    hint = "".join(f"; {note}" for note in notes)
    raise UserError(f"{refusal} (changed: {', '.join(changed) or 'library/templates'}){hint}; use --overwrite to "
                    "replace it or choose another --out")
