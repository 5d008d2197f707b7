"""`OutputFolder`: the one owner of an ssogen output folder's layout. Every other module asks it for paths.

The folder is a Hugging Face dataset repository (so `datasets.load_dataset(OUT, "dpo")` works and pushing is
an upload of the folder) plus ssogen's own files:

    README.md                                    the dataset card; its YAML header declares the configs
    data/<config>/train-00000-of-00001.parquet   one file per config: triplets, dpo, sso, reward
    manifest.json                                versions, model, engine, seeds, sampling, counts, status
    config.resolved.yaml                         the run's options after defaults, config file and flags
    library.yaml                                 the principle library used (its sha256 is in the manifest)
    stats.json, plots/                           written by `ssogen stats` and `ssogen score`
    judge.json                                   written by `ssogen judge`: settings, metrics, every answer
    logs/
    .ssogen/                                     in-progress state, never published:
        fingerprint.json                         the configuration of the run this folder holds
        <stage>-<n>.jsonl                        append-only shards of finished generate work
        score/<key>/scores-<n>.jsonl             the `ssogen score` cache, one folder per model and settings
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from ssogen.errors import UserError
from ssogen.io import write_json_atomic, write_parquet_atomic, write_text_atomic
from ssogen.records import (
    SSO_TEXT_COLUMNS,
    SSO_TRUNCATION_COLUMNS,
    TripletRecord,
    dpo_pair,
    reward_pair,
    sso_row,
)

if TYPE_CHECKING:  # pragma: no cover
    from ssogen.principles import Library

CONFIGS = ("triplets", "dpo", "sso", "reward")
CARD = "README.md"
MANIFEST = "manifest.json"
RESOLVED_CONFIG = "config.resolved.yaml"
LIBRARY = "library.yaml"
STATS = "stats.json"
JUDGE = "judge.json"
PLOTS = "plots"
LOGS = "logs"
WORK_DIR = ".ssogen"  # in-progress state; `push-to-hub` leaves out every hidden path
FINGERPRINT = "fingerprint.json"
SCORE_CACHE = "score"
SHARD_FILE = "train-00000-of-00001.parquet"
T = TypeVar("T")
# What a run writes at the top of the folder; `--overwrite` removes exactly these, nothing else. (stats.json,
# plots/ and judge.json come from `stats` / `score` / `judge` and would describe the old run, so they go too.)
RUN_OUTPUTS = (WORK_DIR, "data", CARD, MANIFEST, RESOLVED_CONFIG, LIBRARY, LOGS, STATS, PLOTS, JUDGE)


def config_schema(config: str) -> pa.Schema:
    """Explicit schemas, so that empty configs and all-null columns still get the right types."""
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    if config == "dpo":
        return pa.schema([("id", pa.string()), ("prompt", pa.list_(message)),
                          ("chosen", pa.list_(message)), ("rejected", pa.list_(message))])
    if config == "reward":
        return pa.schema([("id", pa.string()), ("chosen", pa.list_(message)), ("rejected", pa.list_(message))])
    if config == "sso":
        return pa.schema([*((name, pa.string()) for name in SSO_TEXT_COLUMNS),
                          *((name, pa.bool_()) for name in SSO_TRUNCATION_COLUMNS)])
    if config == "triplets":
        fields = []
        for name, info in TripletRecord.model_fields.items():
            annotation = str(info.annotation)
            if "list" in annotation:
                kind: pa.DataType = pa.list_(pa.string())
            elif "bool" in annotation:
                kind = pa.bool_()
            elif "int" in annotation:
                kind = pa.int64()
            elif "float" in annotation:
                kind = pa.float64()
            else:
                kind = pa.string()
            fields.append((name, kind))
        return pa.schema(fields)
    raise ValueError(f"unknown config {config!r} (known: {', '.join(CONFIGS)})")


def config_rows(records: Iterable[TripletRecord]) -> dict[str, list[dict[str, Any]]]:
    """All four configs from the triplets; pair configs hold kept rows only."""
    records = list(records)
    kept = [r for r in records if r.kept]
    return {
        "triplets": [r.model_dump() for r in records],
        "dpo": [dpo_pair(r) for r in kept],
        "sso": [sso_row(r) for r in kept],
        "reward": [reward_pair(r) for r in kept],
    }


class OutputFolder:
    """An output folder at `root` (which need not exist yet): its paths, and reading and writing its files.

    Whole files are written atomically (`ssogen.io`), so a crash leaves the previous version in place."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.card = self.root / CARD
        self.manifest = self.root / MANIFEST
        self.resolved_config = self.root / RESOLVED_CONFIG
        self.library_file = self.root / LIBRARY
        self.stats = self.root / STATS
        self.judge = self.root / JUDGE
        self.plots = self.root / PLOTS
        self.logs = self.root / LOGS
        self.work_dir = self.root / WORK_DIR
        self.fingerprint = self.work_dir / FINGERPRINT

    def __repr__(self) -> str:
        return f"OutputFolder({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------------------------------
    def score_cache(self, key: str) -> Path:
        """The score cache of one (model, tokenization settings) key."""
        return self.work_dir / SCORE_CACHE / key

    def config_dir(self, config: str) -> Path:
        return self.root / "data" / config

    def config_file(self, config: str) -> Path:
        """The parquet file ssogen writes for a config."""
        return self.config_dir(config) / SHARD_FILE

    @staticmethod
    def data_files(config: str) -> str:
        """A config's files as a pattern relative to the folder (the card's YAML header declares these)."""
        return f"data/{config}/*.parquet"

    def config_files(self, config: str) -> list[Path]:
        """Every parquet file of a config, sorted (a folder written by other tools may hold several)."""
        return sorted(self.config_dir(config).glob("*.parquet"))

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # -- checks --------------------------------------------------------------------------------------------------
    def require(self, path: Path) -> Path:
        """`path` inside the folder, or one clear line: no such folder / not an ssogen output folder."""
        if not self.root.is_dir():
            raise UserError(f"{self.root}: no such folder")
        if not path.exists():
            raise UserError(f"{self.root}: not an ssogen output folder (missing {self.relative(path)})")
        return path

    # -- configs -------------------------------------------------------------------------------------------------
    def write_config(self, config: str, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> Path:
        """One config's parquet file from rows (the config's own schema unless another is given)."""
        table = pa.Table.from_pylist(rows, schema=schema or config_schema(config))
        return write_parquet_atomic(self.config_file(config), table)

    def write_configs(self, records: Iterable[TripletRecord]) -> dict[str, int]:
        """Every config's parquet file from the triplets; returns the row count per config."""
        counts = {}
        for config, rows in config_rows(records).items():
            self.write_config(config, rows)
            counts[config] = len(rows)
        return counts

    def read_config(self, config: str, path: Path | None = None) -> pa.Table:
        """A config's table (or one of its files); a corrupt file is one clear line."""
        path = self.require(path or self.config_file(config))
        try:
            return pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UserError(f"{path}: corrupt parquet file ({exc})") from None

    def read_triplets(self) -> list[TripletRecord]:
        """The `triplets` config as records (columns a newer ssogen added are ignored)."""
        rows = self.read_config("triplets").to_pylist()
        known = TripletRecord.model_fields
        return [TripletRecord.model_validate({k: v for k, v in row.items() if k in known}) for row in rows]

    def row_counts(self) -> dict[str, int]:
        """Rows per config from the parquet footers (configs whose file is missing or unreadable are left out)."""
        return {config: meta.num_rows for config, meta in self._each_readable(pq.read_metadata).items()}

    def schemas(self) -> dict[str, pa.Schema]:
        """The schema of each config whose file can be read."""
        return self._each_readable(pq.read_schema)

    def _each_readable(self, read: Callable[[Path], T]) -> dict[str, T]:
        found: dict[str, T] = {}
        for config in CONFIGS:
            try:
                found[config] = read(self.config_file(config))
            except Exception:  # missing or corrupt: the commands that read rows report it
                continue
        return found

    # -- manifest, options, library, stats -----------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any]:
        path = self.require(self.manifest)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None

    def write_manifest(self, manifest: dict[str, Any]) -> Path:
        return write_json_atomic(self.manifest, manifest)

    def mark_incomplete(self) -> None:
        """Set the manifest's status to in_progress (a folder being regenerated must not be published)."""
        if not self.manifest.exists():
            return
        try:
            manifest = json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return
        manifest["status"] = "in_progress"
        self.write_manifest(manifest)

    def write_resolved_config(self, yaml_text: str) -> Path:
        return write_text_atomic(self.resolved_config, yaml_text)

    def write_library(self, yaml_text: str) -> Path:
        """Store the library's text exactly as read, so that its sha256 in the manifest matches the file."""
        return write_text_atomic(self.library_file, yaml_text)

    def library(self, manifest: dict[str, Any] | None = None) -> Library | None:
        """The principle library of the run: the stored library.yaml, else the manifest's library source or
        bundled name; None when none of them loads (the card and stats then do without it)."""
        from ssogen.principles import LibraryError, load_library

        candidates = [str(self.library_file)] if self.library_file.exists() else []
        info = (manifest if manifest is not None else self.read_manifest()).get("library")
        if isinstance(info, dict):
            candidates += [str(info[key]) for key in ("source", "name") if info.get(key)]
        for candidate in candidates:
            try:
                return load_library(candidate).library
            except (LibraryError, OSError):
                continue
        return None

    def write_stats(self, stats: dict[str, Any]) -> Path:
        return write_json_atomic(self.stats, stats)

    def write_judge(self, judged: dict[str, Any]) -> Path:
        return write_json_atomic(self.judge, judged)

    def read_judge(self) -> dict[str, Any] | None:
        """judge.json, or None when the folder was never judged (or the file is unreadable: judge again)."""
        try:
            judged = json.loads(self.judge.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return judged if isinstance(judged, dict) and isinstance(judged.get("metrics"), dict) else None

    # -- a new run -----------------------------------------------------------------------------------------------
    def remove_run_outputs(self) -> None:
        """What `--overwrite` does: remove the files of a previous run, and nothing a person put there."""
        for name in RUN_OUTPUTS:
            target = self.root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    def holds_anything(self) -> bool:
        return self.root.exists() and any(self.root.iterdir())


def empty_pairs_note(counts: dict[str, int]) -> str | None:
    """A warning when no row was kept: `datasets` cannot load a config without rows, so say why it is empty."""
    if counts.get("dpo", 0) > 0:
        return None
    return ("warning: no row was kept, so the dpo, sso and reward configs are empty (datasets.load_dataset cannot "
            "load an empty config); the drop reasons are in the triplets config")
