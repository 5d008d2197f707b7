"""What the four configs of an output folder hold: their schemas, their rows built from the triplets, the split
of the rows into train and test, and the `dataset_info` features of the card (pure: no files are touched here;
`OutputFolder` writes and reads them)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from ssogen.dataset.splits import TEST, TRAIN, SplitSpec, test_prompts
from ssogen.records import (
    PAIR_TRUNCATION_COLUMNS,
    SSO_TEXT_COLUMNS,
    SSO_TRUNCATION_COLUMNS,
    TripletRecord,
    dpo_pair,
    reward_pair,
    sso_row,
)

CONFIGS = ("triplets", "dpo", "sso", "reward")


def config_schema(config: str) -> pa.Schema:
    """Explicit schemas, so that empty configs and all-null columns still get the right types."""
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    truncation = [(name, pa.bool_()) for name in PAIR_TRUNCATION_COLUMNS]
    if config == "dpo":
        return pa.schema([("id", pa.string()), ("prompt", pa.list_(message)),
                          ("chosen", pa.list_(message)), ("rejected", pa.list_(message)), *truncation])
    if config == "reward":
        return pa.schema([("id", pa.string()), ("chosen", pa.list_(message)), ("rejected", pa.list_(message)),
                          *truncation])
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


def split_config_rows(records: Iterable[TripletRecord], split: SplitSpec | None
                      ) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """config -> split -> rows. Without a split spec every row is in train; with one, the rows of a query drawn
    for the test split are in test in every config (`ssogen.dataset.splits`)."""
    records = list(records)
    held_out = test_prompts((r.prompt for r in records), split) if split is not None else frozenset()
    by_split = {TRAIN: [r for r in records if r.prompt not in held_out],
                TEST: [r for r in records if r.prompt in held_out]}
    result: dict[str, dict[str, list[dict[str, Any]]]] = {config: {} for config in CONFIGS}
    for name, part in by_split.items():
        for config, rows in config_rows(part).items():
            result[config][name] = rows
    return result


def yaml_features(schema: pa.Schema) -> list[dict[str, Any]]:
    """A parquet schema as the `features` list of a card's `dataset_info` (the form `datasets` writes)."""
    return [{"name": field.name, **_yaml_type(field.type)} for field in schema]


def _yaml_type(kind: pa.DataType) -> dict[str, Any]:
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        inner = _yaml_type(kind.value_type)
        return {"list": inner["dtype"] if set(inner) == {"dtype"} else inner.get("struct", inner)}
    if pa.types.is_struct(kind):
        return {"struct": [{"name": f.name, **_yaml_type(f.type)} for f in kind]}
    names = {pa.string(): "string", pa.large_string(): "large_string", pa.bool_(): "bool", pa.int64(): "int64",
             pa.int32(): "int32", pa.float64(): "float64", pa.float32(): "float32", pa.null(): "null"}
    return {"dtype": names.get(kind, str(kind))}
