"""Reading the training data, and every check of `ssogen train`'s inputs that needs no torch: the `sso` config
of a generate output folder (pyarrow only), the model reference, `--out` and the checkpoint to resume from."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.special_files import refuse_special_files
from ssogen.dataset.splits import TRAIN
from ssogen.errors import NUM_PROCESSES_ENV, UserError
from ssogen.fingerprint import ModelFingerprint, json_sha256, model_fingerprint
from ssogen.formatting import counted, named_counts
from ssogen.io import read_json_object
from ssogen.models import require_available, resolve_model
from ssogen.ownership import GENERATE_UNFINISHED, changed_settings, not_complete, why_no_dataset
from ssogen.records import SSO_TEXT_COLUMNS, SSO_TRUNCATION_COLUMNS
from ssogen.train.config import TrainConfig, lora_names
from ssogen.train.integrations import check_deepspeed, check_report_to
from ssogen.train.output import CHECKPOINT_PREFIX, TRAINER_STATE, OutputVerdict, TrainOutput, checkpoint_problem


def check_process_count() -> None:
    """When `ssogen iterate --num-processes N` runs this train step (NUM_PROCESSES_ENV), the step runs in N
    processes (WORLD_SIZE, set by the launcher; 1 when unset): `accelerate launch` without a multi-GPU config on a
    machine without that many GPUs starts one process, a different global batch, without a word."""
    expected = os.environ.get(NUM_PROCESSES_ENV)
    if not expected:
        return
    started = int(os.environ.get("WORLD_SIZE", "1"))
    if started != int(expected):
        raise UserError(f"--num-processes {expected}: accelerate started {counted(started, 'process', 'processes')} "
                        "(it starts one unless its config or the machine's GPUs make it multi-GPU): give "
                        "--accelerate-config with distributed_type MULTI_GPU, or leave --num-processes out")


def sso_files(data_dir: Path) -> list[Path]:
    """The parquet shards of the train split of the `sso` config of a generate output folder, with clear errors
    (a test split, from `generate --test-size`, is held out: training never reads it)."""
    if not data_dir.exists():
        raise UserError(f"--data {data_dir}: no such data folder")
    if not data_dir.is_dir():
        raise UserError(f"--data {data_dir}: not a folder (expected a `ssogen generate` output folder)")
    refuse_special_files(data_dir)  # a FIFO manifest.json was "not finished", a FIFO data file "corrupt"
    folder = OutputFolder(data_dir)
    files = folder.split_files("sso").get(TRAIN, [])
    # generate writes its manifest after the data files: a first run killed among them left some, and no manifest.
    if folder.is_ssogen_folder() and not folder.manifest.is_file():
        raise UserError(f"--data {data_dir}: {why_no_dataset(folder.work_dir) or GENERATE_UNFINISHED}")
    if not files:
        raise UserError(f"--data {data_dir}: no `sso` config (expected {OutputFolder.data_files('sso')}); "
                        "is this a `ssogen generate` output folder?")
    status = folder.read_manifest().get("status") if folder.manifest.is_file() else None
    if unfinished := not_complete(folder.manifest, status):
        raise UserError(unfinished)
    return files


ROWS_PER_BATCH = 256  # rows made Python objects at once by `iter_sso_rows`


def _sso_table(data_dir: Path, path: Path) -> pa.Table:
    """One train-split file of the `sso` config with its columns checked: the text columns, and the `truncated_*`
    columns when present (older files lack them, and a missing or null value means a complete response)."""
    table = OutputFolder(data_dir).read_config("sso", path)
    missing = [c for c in SSO_TEXT_COLUMNS if c not in table.column_names]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} (the `sso` config needs "
                        f"{', '.join(SSO_TEXT_COLUMNS)})")
    present = [c for c in SSO_TRUNCATION_COLUMNS if c in table.column_names]
    if present and len(present) < len(SSO_TRUNCATION_COLUMNS):  # all or none (older files): a lost column
        lost = [c for c in SSO_TRUNCATION_COLUMNS if c not in present]  # would mark cut responses complete
        raise UserError(f"{path}: missing column(s) {', '.join(lost)} beside {', '.join(present)}")
    return table.select([*SSO_TEXT_COLUMNS, *present])


def _release_arrow_memory() -> None:
    """Give a read file's memory back to the system: Arrow's allocator keeps freed pages, which would stay in the
    process's resident memory for the whole training (~2x the tokenized dataset's size in the benchmark)."""
    pa.default_memory_pool().release_unused()


def check_sso_rows(data_dir: Path) -> int:
    """The checks of `read_sso_rows` on the Arrow columns, without making a Python object of any row (the rows
    are read as Python objects once, to train). Returns the number of rows."""
    total = 0
    for path in sso_files(data_dir):
        table = _sso_table(data_dir, path)
        for column in SSO_TEXT_COLUMNS:
            kind = table.schema.field(column).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
                raise UserError(f"{path}: column {column} holds {kind}, not text")
        nulls = {c: pc.index(pc.is_null(table.column(c)), True).as_py() for c in SSO_TEXT_COLUMNS
                 if table.column(c).null_count}
        if nulls:  # the first row with a null, and its first null column, as `read_sso_rows` names them
            number = min(nulls.values())
            column = next(c for c in SSO_TEXT_COLUMNS if nulls.get(c) == number)
            raise UserError(f"{path}: row {number}: column {column} is null")
        total += table.num_rows
        del table
        _release_arrow_memory()
    if not total:
        raise _no_rows(data_dir)
    return total


def _no_rows(data_dir: Path) -> UserError:
    """The `sso` config is empty; where the triplets are not, each was dropped (a filter of `score`, say): by which
    reasons. iterate's train step after a filter that dropped every row said only "no rows"."""
    try:
        reasons = OutputFolder(data_dir).read_config("triplets", split=TRAIN, columns=["drop_reason"])
    except UserError:  # no triplets, or none with the column: the config is empty, no more is known
        reasons = None
    said = f"--data {data_dir}: the `sso` config has no rows"
    if reasons is None or not reasons.num_rows:
        return UserError(said)
    counts = Counter(str(reason) for reason in reasons.column("drop_reason").to_pylist())
    return UserError(f"{said}: its triplets were all dropped ({named_counts(dict(counts.most_common()))}; "
                     "`drop_reason` in the triplets config)")


def iter_sso_rows(data_dir: Path) -> Iterator[dict[str, Any]]:
    """The rows of the `sso` config's train split, one at a time (pyarrow only: the train path does not need
    `datasets`); each file's Arrow table is the only copy of the text held while its rows go by.

    The text columns are required; the `truncated_*` columns are read when present (older files lack them, and a
    missing or null value means a complete response)."""
    for path in sso_files(data_dir):
        # A few hundred rows at a time become Python objects; the generator holds the file's batches until done.
        rows = (row for batch in _sso_table(data_dir, path).to_batches(max_chunksize=ROWS_PER_BATCH)
                for row in batch.to_pylist())
        for number, row in enumerate(rows):
            null = [c for c in SSO_TEXT_COLUMNS if not isinstance(row[c], str)]
            if null:
                raise UserError(f"{path}: row {number}: column {null[0]} is null")
            for column in SSO_TRUNCATION_COLUMNS:
                row[column] = bool(row.get(column))
            yield row
        del rows
        _release_arrow_memory()


def read_sso_rows(data_dir: Path) -> list[dict[str, Any]]:
    """All rows of the `sso` config's train split as a list (`iter_sso_rows`), at least one."""
    rows = list(iter_sso_rows(data_dir))
    if not rows:
        raise _no_rows(data_dir)
    return rows


def data_fingerprint(data_dir: Path) -> str:
    """sha256 over the `sso` parquet files' names and bytes: the data part of the reference-cache key."""
    digest = hashlib.sha256()
    for path in sso_files(data_dir):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def run_fingerprint(config: TrainConfig) -> dict[str, Any]:
    """What decides the trained weights: the settings, the `sso` data's bytes and the starting model's fingerprint
    (`ssogen.fingerprint`); a rerun resumes the run in --out only when this is unchanged."""
    model = model_fingerprint(resolve_model(config.model))
    content = {**config.fingerprinted(), "data.sso_sha256": data_fingerprint(config.data),
               **{f"model.{part}": value for part, value in model.parts.items()}}
    digest = json_sha256(content, default=str)
    return {"fingerprint": digest, "config": content}


def check_training_inputs(config: TrainConfig) -> tuple[dict[str, Any], OutputVerdict]:
    """Everything about the inputs and --out that can fail, checked before torch and transformers are imported.
    Returns the run's fingerprint and what it would do with --out (start, resume or nothing: finished)."""
    fingerprint = check_inputs(config)
    return fingerprint, output_verdict(config, fingerprint)


def check_inputs(config: TrainConfig) -> dict[str, Any]:
    """The checks of the data, the model, the checkpoint to resume from and the loggers; returns the run's
    fingerprint (`run_fingerprint`). This reads every data file twice (checked, hashed) and the model's files once:
    a command does it once and hands the fingerprint on (to `output_verdict` under the lock, and to training's
    reference-cache key), since the lock guards --out, not the data or the model."""
    if config.out.resolve().is_relative_to(config.data.resolve()):  # the dataset's push-to-hub would carry it
        raise UserError(f"--out {config.out}: inside --data {config.data}; the model would be written into the "
                        "dataset folder, so choose a folder outside it")
    check_sso_rows(config.data)
    if config.resume_from_checkpoint:
        checkpoint = Path(config.resume_from_checkpoint)
        if not checkpoint.is_dir():
            raise UserError(f"--resume-from-checkpoint: {checkpoint}: no such checkpoint folder")
        if not checkpoint.name.startswith(CHECKPOINT_PREFIX) and not (checkpoint / TRAINER_STATE).exists():
            raise UserError(f"--resume-from-checkpoint {checkpoint}: not a checkpoint folder (a {CHECKPOINT_PREFIX}N "
                            f"folder of a training run, with its {TRAINER_STATE})")
        problem = checkpoint_problem(checkpoint)
        if problem is not None:
            raise UserError(f"--resume-from-checkpoint {checkpoint}: incomplete checkpoint ({problem})")
    require_available(resolve_model(config.model))
    check_report_to(config.report_to)  # a logger whose package is missing: one line now, not a traceback later
    check_deepspeed(config)
    if config.head_kernel == "liger" and importlib.util.find_spec("liger_kernel") is None:
        raise UserError("--head-kernel liger needs liger-kernel (pip install liger-kernel)", 1)
    return run_fingerprint(config)  # reads the model's files: truncated weights fail here


def output_verdict(config: TrainConfig, fingerprint: dict[str, Any]) -> OutputVerdict:
    """What a run of this fingerprint would do with --out (and the notes on --resume-from-checkpoint); reads
    --out only, so it is cheap to decide again under the lock."""
    output = TrainOutput(config.out)
    verdict = output.verdict(fingerprint, overwrite=config.overwrite, earlier=earlier_fingerprint(output, fingerprint))
    if config.resume_from_checkpoint:
        verdict.notes += given_checkpoint_notes(Path(config.resume_from_checkpoint), fingerprint, config.max_steps)
    return verdict


def model_digest(fingerprint: dict[str, Any]) -> str:
    """The starting model's `ModelFingerprint.digest` (the reference-cache key's model part) from the run's
    fingerprint, which holds every part as `model.<part>`: the model's files are not read again."""
    config = fingerprint["config"]
    return ModelFingerprint({key[len("model."):]: value for key, value in config.items()
                             if key.startswith("model.")}).digest


def earlier_fingerprint(output: TrainOutput, fingerprint: dict[str, Any]) -> tuple[str, ...]:
    """The fingerprint that an earlier ssogen stored in --out for this very configuration: it recorded
    --lora-target-modules as typed (`q_proj, v_proj`), before the names were written one way; such a run resumes."""
    stored = read_json_object(output.fingerprint) or {}
    config = stored.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("lora_target_modules"), str):
        return ()
    as_now = {**config, "lora_target_modules": lora_names(config["lora_target_modules"])}
    return (str(stored.get("fingerprint")),) if as_now == fingerprint["config"] else ()


def given_checkpoint_notes(checkpoint: Path, fingerprint: dict[str, Any], max_steps: int) -> list[str]:
    """A --resume-from-checkpoint (complete: `checkpoint_problem`) that leaves nothing to train is refused (the
    model saved would be the checkpoint's, under this run's settings); one of a run of other settings is taken,
    as transformers does (continuing with another learning rate or more steps is a use), with a warning naming
    them."""
    flag = f"--resume-from-checkpoint {checkpoint}"
    step = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))["global_step"]
    if max_steps > 0 and step >= max_steps:
        raise UserError(f"{flag}: saved at step {step}, so --max-steps {max_steps} leaves nothing to train; raise "
                        "--max-steps")
    try:
        stored = json.loads(TrainOutput(checkpoint.parent).fingerprint.read_text(encoding="utf-8"))["config"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return []  # not saved by ssogen train (or unreadable): nothing to compare
    changed = changed_settings(stored, fingerprint["config"]) if isinstance(stored, dict) else []
    return [f"{flag}: saved by a run of other settings (changed: {', '.join(changed)}); training continues from "
            "it with this run's"] if changed else []
