"""The output folder as a Hugging Face dataset repository: parquet per config, read back, written atomically.

Layout (SPEC §4):
    OUT/README.md                          dataset card, YAML header declares the configs
    OUT/data/<config>/train-00000-of-00001.parquet   for config in triplets, dpo, sso, reward
    OUT/manifest.json, OUT/config.resolved.yaml, OUT/library.yaml (+ sha256 in the manifest), OUT/logs/
    OUT/.ssogen/                           in-progress shards and caches (never published)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ssogen.errors import UserError
from ssogen.records import (
    SSO_TEXT_COLUMNS,
    SSO_TRUNCATION_COLUMNS,
    TripletRecord,
    dpo_pair,
    reward_pair,
    sso_row,
)

CONFIGS = ("triplets", "dpo", "sso", "reward")
WORK_DIR = ".ssogen"  # in-progress state inside the output folder; excluded from uploads
MANIFEST = "manifest.json"


def config_file(out_dir: str | Path, config: str) -> Path:
    return Path(out_dir) / "data" / config / "train-00000-of-00001.parquet"


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


def _schema(config: str) -> pa.Schema | None:
    """Explicit schemas so that empty configs and all-null columns still get the right types."""
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
    return None


def write_parquet_atomic(path: Path, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> None:
    """Write to a temporary file and rename, so a crash never leaves a half-written parquet file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_configs(out_dir: str | Path, records: Iterable[TripletRecord]) -> dict[str, int]:
    """Write every config's parquet file; return the row count per config."""
    counts = {}
    for config, rows in config_rows(records).items():
        write_parquet_atomic(config_file(out_dir, config), rows, _schema(config))
        counts[config] = len(rows)
    return counts


def read_triplets(out_dir: str | Path) -> list[TripletRecord]:
    """Read the `triplets` config back into records; clear errors for a missing or corrupt file."""
    path = config_file(out_dir, "triplets")
    if not Path(out_dir).is_dir():
        raise UserError(f"{out_dir}: no such folder")
    if not path.exists():
        raise UserError(f"{out_dir}: not an ssogen output folder (missing {path.relative_to(out_dir)})")
    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path}: corrupt parquet file ({exc})") from None
    known = TripletRecord.model_fields
    return [TripletRecord.model_validate({k: v for k, v in row.items() if k in known}) for row in rows]


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise UserError(f"{out_dir}: not an ssogen output folder (missing {MANIFEST})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def card_yaml_header(extra: dict[str, Any] | None = None) -> str:
    """The dataset card's YAML front matter: one entry per config so `load_dataset(OUT, NAME)` works."""
    from io import StringIO

    from ruamel.yaml import YAML

    header: dict[str, Any] = dict(extra or {})
    header["configs"] = [
        {"config_name": c, "data_files": [{"split": "train", "path": f"data/{c}/*.parquet"}],
         **({"default": True} if c == "dpo" else {})}
        for c in CONFIGS
    ]
    stream = StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(header, stream)
    return f"---\n{stream.getvalue()}---\n"


def empty_pairs_note(counts: dict[str, int]) -> str | None:
    """A warning when no row was kept: `datasets` cannot load a config without rows, so say why it is empty."""
    if counts.get("dpo", 0) > 0:
        return None
    return ("warning: no row was kept, so the dpo, sso and reward configs are empty (datasets.load_dataset cannot "
            "load an empty config); the drop reasons are in the triplets config")
