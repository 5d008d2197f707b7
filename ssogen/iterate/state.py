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
from collections.abc import Collection
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


def _only_train_configs_changed(stored: dict[str, Any], fingerprint: dict[str, Any]) -> bool:
    options = stored.get("options")
    if not isinstance(options, dict) or not isinstance(options.get("configs"), dict):
        return False
    before, now = fingerprint_of(options)["options"], fingerprint["options"]  # runtime keys left out of both
    if _changed({**before, "configs": None}, {**now, "configs": None}):
        return False
    changed = set(_changed(before["configs"], now["configs"]))
    return bool(changed) and changed <= {"train", "generator_train"}


class RunState:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / STATE_FILE
        self.data: dict[str, Any] = {}
        self.train_configs_replaced = False  # open() took new train configs (no train step was done)

    def check(self, fingerprint: dict[str, Any], *, overwrite: bool, train_steps: Collection[str] = ()
              ) -> Literal["resume", "new-train-configs", "start"]:
        """Read-only (what `--dry-run` asks): what `open` would do with DIR, or its one-line refusal."""
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out}: exists and is not a folder")
        check_kind(self.out / WORK_DIR, "iterate", label=f"--out {self.out}")
        entries = [entry for entry in _entries(self.out) if not _torn(entry)]  # `open` removes those
        if self.path.exists():
            stored = self._read()
            if fingerprint["fingerprint"] in (stored.get("fingerprint"), _refingerprint(stored)):
                return "resume"
            if not overwrite and _only_train_configs_changed(stored, fingerprint) and not any(
                    (stored.get("steps") or {}).get(step, {}).get("status") == "done" for step in train_steps):
                return "new-train-configs"
            if not overwrite:
                changed = _changed_options(stored.get("options", {}), fingerprint["options"])
                raise UserError(f"--out {self.out}: holds an iterate run with other options (changed: "
                                f"{', '.join(changed) or 'config contents'}); use --overwrite to replace it, or "
                                "another --out")
        elif entries and not all(_owned(entry) for entry in entries):
            raise UserError(f"--out {self.out}: not empty and holds no ssogen iterate run ({STATE_FILE} missing); "
                            "choose a new or empty folder")
        elif entries and not overwrite:
            raise UserError(f"--out {self.out}: holds iteration folders but no {STATE_FILE}; use --overwrite to "
                            "start again there")
        return "start"

    def open(self, fingerprint: dict[str, Any], *, overwrite: bool, train_steps: Collection[str] = ()) -> bool:
        """Start or reopen the run in DIR; True when resuming. A run of other options is refused unless
        overwrite, which removes iterate's own outputs (and nothing else). Only the train configs changed while
        none of `train_steps` (the ids of the train steps) is done (say, the first one failed on a bad value):
        the run resumes and its train steps start again with the new configs."""
        action = self.check(fingerprint, overwrite=overwrite, train_steps=train_steps)
        for torn in filter(_torn, _entries(self.out)):  # under the run's lock: no write of ours is under way
            torn.unlink()
        if action == "resume":
            self.data = {**self._read(), **fingerprint}
            return True
        if action == "new-train-configs":
            stored = self._read()
            steps = {k: v for k, v in (stored.get("steps") or {}).items() if k not in train_steps}
            self.data = {**stored, **fingerprint, "steps": steps}
            self._write()
            self.train_configs_replaced = True
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
