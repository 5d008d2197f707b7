"""The output folder of `ssogen train`: a model folder that ssogen owns, and what a rerun of the same command does
with it. No torch: every verdict comes before the heavy imports.

    OUT/model.safetensors, config.json, tokenizer files   the trained model (or adapter)
    OUT/ssogen_train_config.json, metrics.json, README.md written last: both JSON files present = finished
    OUT/checkpoint-<step>/                                transformers' checkpoints (trainer_state.json last)
    OUT/ref_logps-<key>.parquet                           the reference cache, keyed by what it depends on
    OUT/runs/<time>_<host>/                               TensorBoard's logs (--report-to tensorboard)
    OUT/.ssogen/marker.json, lock, fingerprint.json       ssogen's mark, the one-writer lock, the run's settings
    OUT/.ssogen/written.json                              the checkpoints and log folders the run made

A folder is used when it is new or empty, or when it carries the marker: with the same fingerprint a rerun
resumes from the newest complete checkpoint (one cut off mid-write is skipped) and a finished run is left as it
is. Another fingerprint is refused unless --overwrite, which removes what ssogen train wrote (the reference cache
stays: its key already says what it was computed from) and nothing else: of the checkpoint and log folders, those
the run recorded making (`ssogen.written`; a checkpoint a person copied in is neither removed nor resumed from); a
run that saved no checkpoint yet has nothing to lose, so any configuration may start over in its folder. The other
ranks of a multi-process run write beside the main one, under its claim (`claim`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ssogen.errors import UserError, file_system_error
from ssogen.fingerprint import WeightFileError, check_weight_files, weight_files
from ssogen.io import TMP_SUFFIX, check_writable_folder, write_json_atomic
from ssogen.lock import Holder, holds
from ssogen.models import CHAT_TEMPLATE_FILES, TOKENIZER_FILES
from ssogen.ownership import (
    FINGERPRINT,
    LOCK,
    LOG_PATTERN,
    MARKER,
    WORK_DIR,
    Claimed,
    check_fingerprint,
    check_kind,
    claim,
    follow,
    holds_anything,
    remove_written,
)
from ssogen.written import kept_line, record, recorded, relative_name

CONFIG_FILE = "ssogen_train_config.json"
METRICS_FILE = "metrics.json"
MODEL_CARD = "README.md"
# The model card's last line: a card without it (nor the heading of earlier versions' cards) was written by a
# person, and neither a finished run nor --overwrite replaces or removes it.
MODEL_CARD_MARKER = "<!-- ssogen model card: `ssogen train` rewrites this file -->"
_EARLIER_CARD_HEADING = "# Model trained with ssogen (Self-Steering Optimization)"
# PEFT's `save_pretrained` writes the hub's blank template (front matter naming peft, then this placeholder heading)
# where no card is: a LoRA run killed before its own card leaves that one, which no person wrote.
_PEFT_TEMPLATE_HEADING = "\n# Model Card for Model ID\n"
FINISHED_FILES = (CONFIG_FILE, METRICS_FILE)  # written after the model, in this order
CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE = "trainer_state.json"  # in each checkpoint, written last by transformers
# What a run writes besides weight files and checkpoints: removed by --overwrite.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, MODEL_CARD, "config.json", "generation_config.json", "adapter_config.json",
             "training_args.bin", *TOKENIZER_FILES, *CHAT_TEMPLATE_FILES)
RUN_PATTERNS = ("*.safetensors.index.json", "*.bin.index.json", f".*{TMP_SUFFIX}", LOG_PATTERN)
RUN_FOLDERS = ("additional_chat_templates",)  # written with the tokenizer
TENSORBOARD = "runs"  # the TensorBoard logs of --report-to tensorboard: runs/<time>_<host>/, one per invocation
_FOLLOWING: set[Path] = set()  # the folders this process (a rank but the main one) writes under another's claim
_FRESH: set[Path] = set()  # the folders this process's claim made ssogen's: they held nothing of an earlier run


@dataclass
class OutputVerdict:
    """What a run of this configuration does with the folder."""

    action: Literal["start", "resume", "finished"]
    checkpoint: Path | None = None  # resume: the newest complete checkpoint (None: start again in place)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # newer checkpoints cut off mid-write
    notes: list[str] = field(default_factory=list)  # warnings for the run (e.g. about --resume-from-checkpoint)
    clear: bool = True  # start: remove what an earlier run wrote here first (nothing to remove in a free folder)


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (None when it is complete). A trainer_state.json that may not
    be read (permission, an I/O error) is the machine's problem, not a checkpoint cut off: one line naming it, exit
    1. Skipped, it was called cut off, the run went back to an older checkpoint and failed on saving this one."""
    state_file = path / TRAINER_STATE
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {TRAINER_STATE} (cut off before transformers finished it)"
    except OSError as exc:
        raise (file_system_error(exc, state_file)
               or UserError(f"{state_file}: cannot be read ({exc.strerror or exc})", exit_code=1)) from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"{TRAINER_STATE} is cut off"
    if not isinstance(state, dict) or "global_step" not in state:
        return f"{TRAINER_STATE} holds no global_step"
    if not weight_files(path):
        return "no weight files"
    try:
        check_weight_files(path, flag="checkpoint", name=path.name)
    except WeightFileError as exc:
        return exc.problem
    return None


class TrainOutput:
    """The paths of a training output folder and the verdicts on it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.card = self.root / MODEL_CARD
        self.train_config = self.root / CONFIG_FILE
        self.metrics = self.root / METRICS_FILE
        self.work_dir = self.root / WORK_DIR
        self.marker = self.work_dir / MARKER
        self.lock_file = self.work_dir / LOCK
        self.fingerprint = self.work_dir / FINGERPRINT

    def card_is_generated(self) -> bool:
        """True when README.md is missing or ssogen train wrote it: safe to replace or remove."""
        if not self.card.is_file():
            return not self.card.exists()
        text = self.card.read_text(encoding="utf-8", errors="replace")
        if MODEL_CARD_MARKER in text:
            return True
        front_matter, _, body = text.partition("\n---\n")
        return text.startswith("---") and (_EARLIER_CARD_HEADING in body or (
            "library_name: peft" in front_matter and _PEFT_TEMPLATE_HEADING in f"\n{body}"))

    def hand_written_card(self) -> bytes | None:
        """README.md's bytes when a person wrote it, else None. Read before the model is saved: PEFT's
        `save_pretrained` writes a card of its own there, or edits the one it finds."""
        return None if not self.card.is_file() or self.card_is_generated() else self.card.read_bytes()

    def checkpoints(self) -> list[Path]:
        """checkpoint-<step> folders, newest first."""
        found = [p for p in self.root.glob(f"{CHECKPOINT_PREFIX}*")
                 if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
        return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]), reverse=True)

    def run_checkpoints(self) -> list[Path]:
        """The checkpoints the run recorded saving, newest first (all of them in a run of an earlier ssogen, which
        recorded none): a checkpoint copied in is not the run's to resume from."""
        names = recorded(self.work_dir)
        return [p for p in self.checkpoints() if names is None or p.name in names]

    def record_folder(self, folder: Path) -> None:
        """Before the run makes `folder` (a checkpoint, a log folder): record it as the run's (main process)."""
        if (name := relative_name(self.root, folder)) is not None:
            record(self.work_dir, [name])

    def newest_checkpoint(self) -> tuple[Path | None, list[tuple[Path, str]]]:
        """The newest complete checkpoint of the run, and the newer ones skipped with the reason."""
        skipped: list[tuple[Path, str]] = []
        for checkpoint in self.run_checkpoints():
            problem = checkpoint_problem(checkpoint)
            if problem is None:
                return checkpoint, skipped
            skipped.append((checkpoint, problem))
        return None, skipped

    def finished(self) -> bool:
        return all((self.root / name).is_file() for name in FINISHED_FILES)

    def is_ssogen_folder(self) -> bool:
        """The marker is there (folders of older versions: ssogen's own config file beside the model)."""
        return self.marker.is_file() or self.fingerprint.is_file() or self.train_config.is_file()

    def verdict(self, fingerprint: dict[str, Any], *, overwrite: bool, earlier: tuple[str, ...] = ()) -> OutputVerdict:
        """Read-only: what a run of this configuration would do here; one clear line when it may not. `earlier`: what
        an earlier ssogen stored for this configuration (`train.inputs.earlier_fingerprint`)."""
        out = self.root
        check_writable_folder(out)
        if not holds_anything(out) or out.absolute() in _FRESH:  # new, empty, or only the logs of commands that
            return OutputVerdict("start", clear=False)           # stopped early (they stay, as do the other ranks')
        if not self.is_ssogen_folder():
            raise UserError(f"--out {out}: folder is not empty and holds no ssogen training run (no {WORK_DIR}/"
                            f"{MARKER}); --overwrite removes only what ssogen wrote, so choose a new or empty folder")
        check_kind(self.work_dir, "model", label=f"--out {out}")
        if overwrite or not (self.train_config.exists() or self.run_checkpoints() or weight_files(out)):
            # A marked folder whose run saved nothing (it stopped before its first checkpoint, e.g. on a bad
            # --scheduler): nothing to resume or keep, so any configuration may start over in it.
            return OutputVerdict("start")
        if not self.fingerprint.exists():
            raise UserError(f"--out {out}: holds a training run of an earlier ssogen without a fingerprint; use "
                            "--overwrite to replace it or choose another --out")
        # --bf16 left to its default is fingerprinted as such (the device decides it later), not as on or off.
        hints = {"bf16": "pass --bf16 or --no-bf16 as that run did (without either, the choice is left to the "
                         "device and recorded as such)"} if fingerprint["config"].get("bf16", False) is None else None
        check_fingerprint(self.fingerprint, fingerprint, refusal=f"--out {out}: holds a training run of another "
                          "configuration", hints=hints, earlier=earlier)
        if self.finished():
            return OutputVerdict("finished")
        checkpoint, skipped = self.newest_checkpoint()
        return OutputVerdict("resume", checkpoint, skipped)

    def interruption(self) -> UserError:
        """What a Ctrl-C leaves: the checkpoint the same command resumes from (steps after it are trained again)."""
        checkpoint, _ = self.newest_checkpoint()
        if checkpoint is not None:
            kept = f"the same command resumes from {checkpoint.name} in {self.root}"
        elif self.root.is_dir():
            kept = f"no checkpoint was saved yet, so the same command starts over in {self.root}"
        else:  # stopped while the model loaded, before the folder was made
            return UserError("interrupted before training began; nothing was written", exit_code=130)
        return UserError(f"interrupted; {kept} (--save-steps sets how often one is saved)", exit_code=130)

    @contextlib.contextmanager
    def claim(self, *, main_process: bool = True) -> Iterator[Holder | None]:
        """Hold the folder's lock and mark it as ssogen's. The other processes of a multi-process run (its process
        group started: `TrainingArguments` starts it) train beside the main one under its claim: each waits until
        the main one holds the folder, so that nothing a rank writes comes before the claim, and a failure leaves
        of its files what the main process leaves of its own (`ssogen.ownership.follow`). Where a rank fails before
        the main one took the folder, the launcher stops them all and no rank wrote anything."""
        group, root = _process_group(), self.root.absolute()
        if main_process:
            outermost = not holds(self.lock_file)

            def claimed(undo: Claimed | None) -> None:
                if undo is not None:  # this claim made the folder ssogen's: nothing in it to clear (`verdict`)
                    _FRESH.add(root)
                if group is not None and outermost:
                    _broadcast(group, undo)

            try:
                with claim(self.work_dir, label=f"--out {self.root}", command="ssogen train", kind="model",
                           on_claimed=claimed) as left_behind:
                    yield left_behind
            finally:
                if outermost:
                    _FRESH.discard(root)
            return
        if group is None or root in _FOLLOWING:  # no group: nothing to wait for; nested: waited already
            yield None
            return
        undo = _broadcast(group, None)
        _FOLLOWING.add(root)
        try:
            with follow(undo, own_logs=f"logs/train-rank{group.get_rank()}-????????T??????Z*.log"):
                yield None
        finally:
            _FOLLOWING.discard(root)

    def start(self, fingerprint: dict[str, Any], verdict: OutputVerdict) -> str | None:
        """Under the lock, in the main process: clear an old run when starting over a marked folder, record the
        fingerprint of this one and start the record of the folders it makes (a run an earlier ssogen began, which
        recorded none, resumes with its checkpoints as the run's). Returns the line naming what the clearing kept."""
        kept = self.remove_run_outputs() if verdict.action == "start" and verdict.clear else None
        write_json_atomic(self.fingerprint, fingerprint, sort_keys=True)
        adopted = self.checkpoints() if recorded(self.work_dir) is None and verdict.action == "resume" else []
        record(self.work_dir, [p.name for p in adopted])
        return kept

    def remove_run_outputs(self) -> str | None:
        """What --overwrite does: remove what ssogen train wrote (the reference caches stay), nothing else (a model
        card written by hand stays): of the checkpoints and TensorBoard's runs/, only the folders the run recorded.
        Returns the one line naming the folders kept (None: none)."""
        if not self.root.is_dir():
            return None
        names = recorded(self.work_dir)
        logs = self.root / TENSORBOARD
        found = [*self.checkpoints(), *(sorted(logs.iterdir()) if logs.is_dir() and not logs.is_symlink() else [])]
        ours = [f for f in found if names is not None and f.relative_to(self.root).as_posix() in names]
        for folder in [*ours, *(self.root / name for name in RUN_FOLDERS)]:
            if folder.is_symlink():  # the link goes, not what it points at (rmtree refuses a link anyway)
                folder.unlink()
            elif folder.is_dir():
                shutil.rmtree(folder)
        files = [self.root / name for name in RUN_FILES if name != MODEL_CARD or self.card_is_generated()]
        remove_written(self.root, [*files, *weight_files(self.root)], RUN_PATTERNS, self.work_dir,
                       [self.root / "logs", logs])
        return kept_line(self.root, [f for f in found if f not in ours], recorded_anything=names is not None,
                         command="ssogen train")


def _process_group() -> Any | None:
    """torch.distributed, when this process is one of several in a started process group (never imported here)."""
    dist: Any = sys.modules.get("torch.distributed")
    started = dist is not None and dist.is_available() and dist.is_initialized()
    return dist if started and dist.get_world_size() > 1 and "RANK" in os.environ else None


def _broadcast(group: Any, undo: Claimed | None) -> Claimed | None:
    """The main process's claim (what it would undo) to every process; the others wait here for it."""
    shared: list[Claimed | None] = [undo]
    group.broadcast_object_list(shared, src=0)
    return shared[0]
