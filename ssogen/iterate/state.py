"""The resume state of an `ssogen iterate` run: DIR/iterate.json, rewritten atomically after every change.

Each step has an entry: `running` (written before its subprocess starts), `done` (after it exits 0, or after an
interrupt that came as it finished: its result is whole) with a fresh stamp, or `interrupted` / `failed` with the
exit code (`running` stays only when iterate itself was killed). A step is reused only when it is done and the
stamps of its inputs are the ones it was made from, so redoing an earlier step invalidates exactly what was built
on it."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from ssogen.errors import UserError
from ssogen.io import TMP_SUFFIX, write_json_atomic
from ssogen.iterate.options import fingerprint_of
from ssogen.iterate.plan import RUN_OUTPUTS, STATE_FILE, Step
from ssogen.ownership import WORK_DIR, check_kind

ITERATION_FOLDER = re.compile(r"iter-\d+")


def _owned(path: Path) -> bool:
    """Files and folders that iterate writes into DIR (the only ones --overwrite removes; its lock and marker in
    WORK_DIR stay, as in the folders of the other commands)."""
    return path.name in RUN_OUTPUTS or _torn(path) or (
        path.is_dir() and ITERATION_FOLDER.fullmatch(path.name) is not None)


def _torn(path: Path) -> bool:
    """The temporary file of an atomic write of iterate.json or report.json that a kill cut short."""
    return path.is_file() and any(path.name.startswith(f".{name}.") and path.name.endswith(TMP_SUFFIX)
                                  for name in RUN_OUTPUTS)


def _entries(out: Path) -> list[Path]:
    """What DIR holds besides iterate's lock and marker."""
    return [entry for entry in out.iterdir() if entry.name != WORK_DIR] if out.is_dir() else []


def _refingerprint(stored: dict[str, Any]) -> str | None:
    """The stored options' fingerprint under this version's rule (a run an earlier version started)."""
    options = stored.get("options")
    return fingerprint_of(options)["fingerprint"] if isinstance(options, dict) else None


def _changed(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted(set(stored) | set(current))
    return [key for key in keys if stored.get(key) != current.get(key)]


def _changed_options(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`_changed`, naming a changed config file's keys: `configs.train.lr` (the file given as --train-config) rather
    than `configs`."""
    named = []
    for key in _changed(stored, current):
        before, now = stored.get(key), current.get(key)
        if key == "configs" and isinstance(before, dict) and isinstance(now, dict):
            for name in _changed(before, now):
                inner = (before.get(name), now.get(name))
                keys = _changed(*inner) if all(isinstance(v, dict) for v in inner) else []  # type: ignore[arg-type]
                named += [f"configs.{name}.{k}" for k in keys] or [f"configs.{name}"]
        else:
            named.append(key)
    return named


# The steps (ids less their `iter-t/`) that a fingerprinted option goes into; any other one (the model, the
# queries, their slices, the recipe, an option of an earlier version) goes into every step. The steps built on
# them are changed too (`_changed_steps`): a later iteration starts from this one's model.
_SCORE = frozenset({"score", "generator-score"})
_TRAIN = frozenset({"train", "generator-train"})
_OPTION_STEPS: dict[str, frozenset[str]] = {
    "filter": _SCORE, "score": _SCORE, "objective": _TRAIN, "no_w": _TRAIN, "no_g": _TRAIN,
    "num_processes": _TRAIN, "accelerate_config_sha256": _TRAIN, "configs.train": _TRAIN,
    "configs.generator_train": _TRAIN, "generator_queries": frozenset({"generator-generate"}),
    # score and judge run on the generate config's engine settings (`plan.SHARED_ENGINE_KEYS`)
    "configs.generate": frozenset({"generate", "generator-generate", "judge"}) | _SCORE}


def _nothing_saved(step: Step) -> bool:
    return False


def _decided_steps(changed: list[str]) -> frozenset[str] | None:
    """The steps (ids less their `iter-t/`) that the changed options go into; None: every step."""
    steps: set[str] = set()
    for name in changed:
        key = ".".join(name.split(".")[:2]) if name.startswith("configs.") else name
        if key not in _OPTION_STEPS:
            return None
        steps |= _OPTION_STEPS[key]
    return frozenset(steps)


def _changed_steps(changed: list[str], steps: Sequence[Step], stored_steps: dict[str, Any]) -> list[str]:
    """The ids of the steps that `changed` (as `_changed_options` names them) decides, in the order they run (those
    only the stored run has after them): the steps it goes into and every step built on one of them."""
    decided = _decided_steps(changed)
    planned = [step.id for step in steps]
    ids = planned + [name for name in stored_steps if name not in set(planned)]
    inputs = {name: set(entry.get("inputs") or {}) for name, entry in stored_steps.items() if isinstance(entry, dict)}
    for step in steps:
        inputs[step.id] = inputs.get(step.id, set()) | set(step.inputs)
    found = {name for name in ids if decided is None or name.split("/", 1)[-1] in decided}
    while grown := {name for name in ids if name not in found and inputs.get(name, set()) & found}:
        found |= grown
    return [name for name in ids if name in found]


class RunState:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / STATE_FILE
        self.data: dict[str, Any] = {}
        # Options changed while no step they decide had finished or saved anything: what changed, and the steps
        # that start again with them (`open` drops their entries; the finished steps before them are kept).
        self.changed: list[str] = []
        self.redone: list[str] = []
        self.restarted: list[str] = []  # those of them that had run (and failed, or were stopped)

    def check(self, fingerprint: dict[str, Any], *, overwrite: bool, steps: Sequence[Step] = (),
              saved: Callable[[Step], bool] = _nothing_saved) -> Literal["resume", "changed", "start"]:
        """Read-only (what `--dry-run` asks): what `open` would do with DIR, or its one-line refusal. `steps`: the
        plan's; `saved(step)`: whether the step's folder holds its result or work it saved (rows, checkpoints)."""
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out}: exists and is not a folder")
        check_kind(self.out / WORK_DIR, "iterate", label=f"--out {self.out}")
        entries = [entry for entry in _entries(self.out) if not _torn(entry)]  # `open` removes those
        if self.path.exists():
            stored = self._read()
            if fingerprint["fingerprint"] in (stored.get("fingerprint"), _refingerprint(stored)):
                return "resume"
            if not overwrite:
                self._check_change(stored, fingerprint, steps, saved)
                return "changed"
        elif entries and not all(_owned(entry) for entry in entries):
            raise UserError(f"--out {self.out}: not empty and holds no ssogen iterate run ({STATE_FILE} missing); "
                            "choose a new or empty folder")
        elif entries and not overwrite:
            raise UserError(f"--out {self.out}: holds iteration folders but no {STATE_FILE}; use --overwrite to "
                            "start again there")
        return "start"

    def _check_change(self, stored: dict[str, Any], fingerprint: dict[str, Any], steps: Sequence[Step],
                      saved: Callable[[Step], bool]) -> None:
        """Other options are taken while no step they decide is done or holds saved work (a run that failed on
        them, say out of memory, has nothing of those steps to lose): those steps start again and the steps before
        them are kept. Otherwise the one-line refusal, naming what changed and what it would make inconsistent."""
        options = stored.get("options")
        stored_steps: dict[str, Any] = stored["steps"] if isinstance(stored.get("steps"), dict) else {}
        before = fingerprint_of(options)["options"] if isinstance(options, dict) else {}
        self.changed = _changed_options(before, fingerprint["options"])
        by_id = {step.id: step for step in steps}
        self.redone = _changed_steps(self.changed, steps, stored_steps) if isinstance(options, dict) else []
        kept = [name for name in self.redone if (stored_steps.get(name) or {}).get("status") == "done"
                or (name in by_id and saved(by_id[name]))]
        if not isinstance(options, dict) or kept:
            shown = ", ".join(kept[:3]) + (f" and {len(kept) - 3} more" if len(kept) > 3 else "")
            made = f"; {shown} hold{'s' if len(kept) == 1 else ''} work done with the old ones" if kept else ""
            raise UserError(f"--out {self.out}: holds an iterate run with other options (changed: "
                            f"{', '.join(self.changed) or 'config contents'}){made}; use --overwrite to replace "
                            "it (every step runs again), the earlier options to resume it, or another --out")

    def open(self, fingerprint: dict[str, Any], *, overwrite: bool, steps: Sequence[Step] = (),
             saved: Callable[[Step], bool] = _nothing_saved) -> bool:
        """Start or reopen the run in DIR; True when resuming. A run of other options is refused unless
        overwrite, which removes iterate's own outputs (and nothing else), or unless no step they decide is done
        or has saved anything (`check`): the run then resumes, those steps starting again with the new options."""
        action = self.check(fingerprint, overwrite=overwrite, steps=steps, saved=saved)
        for torn in filter(_torn, _entries(self.out)):  # under the run's lock: no write of ours is under way
            torn.unlink()
        if action == "resume":
            self.data = {**self._read(), **fingerprint}
            return True
        if action == "changed":
            stored = self._read()
            kept = {k: v for k, v in (stored.get("steps") or {}).items() if k not in self.redone}
            self.restarted = [name for name in self.redone if name in (stored.get("steps") or {})]
            self.data = {**stored, **fingerprint, "steps": kept}
            self._write()
            return True
        for entry in _entries(self.out):
            if _owned(entry):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        self.data = {**fingerprint, "steps": {}, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self._write()
        return False

    def stored(self) -> dict[str, Any]:
        """The state file as it is (what `--dry-run` shows the steps of)."""
        return self._read()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{self.path}:{exc.lineno}: invalid JSON ({exc.msg}); use --overwrite to start "
                            "again") from None
        if not isinstance(data, dict):
            raise UserError(f"{self.path}: not an iterate state file; use --overwrite to start again")
        return data

    def _write(self) -> None:
        write_json_atomic(self.path, self.data)

    def entry(self, step: Step) -> dict[str, Any] | None:
        return self.data["steps"].get(step.id)

    def input_stamps(self, step: Step) -> dict[str, str | None]:
        return {name: (self.data["steps"].get(name) or {}).get("stamp") for name in step.inputs}

    def matches(self, step: Step) -> bool:
        """The recorded entry was made from the current inputs and settings (done or still running)."""
        entry = self.entry(step)
        return bool(entry and entry.get("inputs") == self.input_stamps(step)
                    and entry.get("settings") == step.settings)

    def is_done(self, step: Step) -> bool:
        entry = self.entry(step)
        return bool(entry and entry.get("status") == "done" and self.matches(step))

    def mark_running(self, step: Step, argv: list[str]) -> None:
        self.data["steps"][step.id] = {"status": "running", "inputs": self.input_stamps(step),
                                       "settings": step.settings, "argv": argv,
                                       "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self._write()

    def mark_stopped(self, step: Step, code: int) -> None:
        """The step's process ended without a result: `interrupted` (exit 130) or `failed`, with its exit code (the
        entry's inputs and settings stay: a rerun resumes the step from what it saved)."""
        entry = self.data["steps"][step.id]
        entry.update(status="interrupted" if code == 130 else "failed", exit_code=code,
                     stopped=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self._write()

    def mark_done(self, step: Step, seconds: float) -> None:
        entry = self.data["steps"][step.id]
        # An entry an earlier version recorded `interrupted` while its step had finished (a rerun keeps it as done)
        # loses that exit code.
        for stale in ("exit_code", "stopped"):
            entry.pop(stale, None)
        entry.update(status="done", stamp=uuid.uuid4().hex, seconds=round(seconds, 1),
                     finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        self._write()
