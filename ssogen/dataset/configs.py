"""What the four configs of an output folder hold: their schemas, their rows built from the triplets, the split
of the rows into train and test, and the `dataset_info` features of the card (pure: no files are touched here;
`OutputFolder` writes and reads them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa

from ssogen.dataset.splits import SPLITS, TEST, TRAIN, SplitSpec, test_prompts
from ssogen.dataset.triplet_files import RecordBatches
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


ROW_BUILDERS: dict[str, Callable[[TripletRecord], dict[str, Any]]] = {
    "triplets": TripletRecord.model_dump, "dpo": dpo_pair, "sso": sso_row, "reward": reward_pair}


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


def split_tables(batches: RecordBatches, split: SplitSpec | None) -> Iterator[tuple[str, dict[str, pa.Table]]]:
    """(config, split -> table) for each config in turn, built from the triplets a batch at a time (`batches` is
    read once for the split's prompts, then once per config), so that only one config's table is held at once.
    Without a split spec every row is in train; with one, the rows of a query drawn for the test split are in test
    in every config (`ssogen.dataset.splits`)."""
    held_out = test_prompts((r.prompt for batch in batches() for r in batch), split) if split else frozenset()
    for config in CONFIGS:
        schema, build = config_schema(config), ROW_BUILDERS[config]
        columns: dict[str, list[list[pa.Array]]] = {TRAIN: [[] for _ in schema], TEST: [[] for _ in schema]}
        for batch in batches():
            for name in SPLITS:
                rows = [build(r) for r in batch
                        if (config == "triplets" or r.kept) and (r.prompt in held_out) == (name == TEST)]
                if rows:
                    table = pa.Table.from_pylist(rows, schema=schema)
                    for column, array in zip(columns[name], table.columns, strict=True):
                        column.extend(array.chunks)
        yield config, {name: _joined(parts, schema) for name, parts in columns.items()}


def _joined(columns: list[list[pa.Array]], schema: pa.Schema) -> pa.Table:
    """One array per column, as a table built from all rows at once has: written from several chunks, a parquet
    file falls back from dictionary encoding or cuts a page at another row, and its bytes differ. Column by column,
    so that only one column is held twice."""
    if not columns[0]:
        return pa.Table.from_pylist([], schema=schema)
    joined = []
    for index in range(len(columns)):
        joined.append(pa.concat_arrays(columns[index]))
        columns[index] = []
    return pa.Table.from_arrays(joined, schema=schema)


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
