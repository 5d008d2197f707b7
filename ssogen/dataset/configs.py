"""What the five configs of an output folder hold: their schemas, their rows built from the triplets, the split
of the rows into train and test, and the `dataset_info` features of the card (no file is written here: `OutputFolder`
writes them; the pair configs are built from the triplets' files it wrote)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ssogen.dataset.splits import SPLITS, TEST, TRAIN, SplitSpec, test_prompts
from ssogen.dataset.triplet_files import RecordBatches, row_batches
from ssogen.records import (
    PAIR_TRUNCATION_COLUMNS,
    SSO_TEXT_COLUMNS,
    SSO_TRUNCATION_COLUMNS,
    PairSource,
    TripletRecord,
    dpo_pair,
    reward_pair,
    sso_pairs,
    sso_row,
)

# `pairs` last: the four before it are written as they were before it existed.
CONFIGS = ("triplets", "dpo", "sso", "reward", "pairs")


def configs_of(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The configs a finished folder holds, by its manifest's counts: a folder written before `pairs` existed has
    the four before it, and its card and push name those four."""
    counted = manifest.get("configs")
    if isinstance(counted, dict) and "dpo" in counted and "pairs" not in counted:
        return CONFIGS[:-1]
    return CONFIGS


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
    if config == "pairs":
        return pa.schema([("id", pa.string()), ("pair", pa.string()), ("prompt", pa.list_(message)),
                          ("chosen", pa.list_(message)), ("rejected", pa.list_(message)), *truncation])
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


PAIR_CONFIGS = CONFIGS[1:]
PAIR_BUILDERS: dict[str, Callable[[PairSource], dict[str, Any]]] = {
    "dpo": dpo_pair, "sso": sso_row, "reward": reward_pair}
# The triplets columns each pair config is built from: those its builder reads (`PairSource`), and `kept`.
_CHOSEN_REJECTED = ("id", "prompt", "response_good", "response_bad", "finish_reason_good", "finish_reason_bad", "kept")
PAIR_SOURCE_COLUMNS = {"dpo": _CHOSEN_REJECTED, "reward": _CHOSEN_REJECTED,
                       "sso": (*PairSource.__annotations__, "kept"), "pairs": (*PairSource.__annotations__, "kept")}
# Rows of the triplets' files made Python objects at once while a pair config is built (a few MB of text).
READ_BACK_ROWS = 256

# Rows of `pairs` built and written at once, one parquet row group each: about 30 MB with S+ / S- of a few hundred
# words and 1-3 KB answers (`bench/large_folders.py`), where the whole config was 300 MB at 20,000 queries.
PAIRS_PIECE_ROWS = 6144
# A config's table of one split as it is written, one or more tables in a row (row groups of one file).
Pieces = Iterable[pa.Table]
# Sees each batch of records on the triplets' one pass (the end of generate counts its summary and statistics there).
Tap = Callable[[list[TripletRecord]], None]
# The triplets' file of a split, once it is written.
WrittenTriplets = Callable[[str], Path]


def pair_rows(config: str, *, system_supported: bool = True) -> Callable[[PairSource], list[dict[str, Any]]]:
    """A pair config's rows of one triplet: one in dpo, sso and reward; three in `pairs` (P1, P2, P3), whose prompts
    depend on whether the policy's chat template took a system role (`sso_pairs`)."""
    if config == "pairs":
        return partial(sso_pairs, system_supported=system_supported)
    build = PAIR_BUILDERS[config]
    return lambda source: [build(source)]


def config_rows(records: Iterable[TripletRecord], *, system_supported: bool = True) -> dict[str, list[dict[str, Any]]]:
    """All five configs from the triplets; pair configs hold kept rows only."""
    records = list(records)
    kept = [r for r in records if r.kept]
    return {
        "triplets": [r.model_dump() for r in records],
        "dpo": [dpo_pair(r) for r in kept],
        "sso": [sso_row(r) for r in kept],
        "reward": [reward_pair(r) for r in kept],
        "pairs": [row for r in kept for row in sso_pairs(r, system_supported=system_supported)],
    }


def split_tables(batches: RecordBatches, split: SplitSpec | None, written: WrittenTriplets, tap: Tap | None = None,
                 *, system_supported: bool = True) -> Iterator[tuple[str, dict[str, Pieces]]]:
    """(config, split -> its table in pieces) for each config in turn, so that only one config's table is held at
    once (the caller writes each before asking for the next). The triplets come from one pass over `batches`, a
    source of records that may be costly to make (generate parses and validates its saved rows); the pair configs
    from the triplets' rows as written, not validated again (`written`: the caller has written the triplets' files
    by the time the next config is asked for). Without a split spec every row is in train; with one, the rows of a
    query drawn for the test split are in test in every config (`ssogen.dataset.splits`). `system_supported`:
    whether the policy's chat template took a system role (the manifest's `system_role_merged` is its negation),
    for `pairs`. A split with no rows in a config is left out of its dict (train never is)."""
    triplets = triplet_tables(batches, split, tap)
    sources = {name: written(name) for name, table in triplets.items() if table.num_rows}
    kept = {name: pc.sum(table.column("kept")).as_py() or 0 for name, table in triplets.items()}
    yield "triplets", {name: [table] for name, table in triplets.items() if name == TRAIN or table.num_rows}
    del triplets
    for config in PAIR_CONFIGS:
        yield config, {name: pair_pieces(config, row_batches(sources[name], READ_BACK_ROWS, PAIR_SOURCE_COLUMNS[config])
                                         if name in sources else (), system_supported=system_supported)
                       for name in SPLITS if name == TRAIN or kept[name]}


def triplet_tables(batches: RecordBatches, split: SplitSpec | None, tap: Tap | None = None) -> dict[str, pa.Table]:
    """The triplets config by split from one pass over `batches`, `tap` seeing each batch. The test split's
    queries are drawn once every row is in the table (from its `prompt` column), then each column is split."""
    schema = config_schema("triplets")

    def dumped() -> Iterator[list[dict[str, Any]]]:
        for batch in batches():
            if tap is not None:
                tap(batch)
            yield [record.model_dump() for record in batch]

    arrays = _arrays(dumped(), schema)
    prompts = arrays[schema.get_field_index("prompt")]
    held_out = test_prompts(pc.unique(prompts).to_pylist(), split) if split else frozenset()
    if not held_out:
        return {TRAIN: pa.Table.from_arrays(arrays, schema=schema), TEST: _table((), schema)}
    in_test = pc.is_in(prompts, value_set=pa.array(sorted(held_out), pa.string()))
    in_train = pc.invert(in_test)
    del prompts
    parts: dict[str, list[pa.Array]] = {TRAIN: [], TEST: []}
    for index in range(len(arrays)):  # column by column, so that only one column is held twice
        column, arrays[index] = arrays[index], None
        parts[TRAIN].append(column.filter(in_train))
        parts[TEST].append(column.filter(in_test))
        del column
        pa.default_memory_pool().release_unused()  # as in `_arrays`
    return {name: pa.Table.from_arrays(columns, schema=schema) for name, columns in parts.items()}


class _Row:
    """A row read back from the triplets' file as the attributes the pair builders read (`PairSource`)."""

    __slots__ = ("_row",)

    def __init__(self, row: dict[str, Any]) -> None:
        self._row = row

    def __getattr__(self, name: str) -> Any:
        try:
            return self._row[name]
        except KeyError:
            raise AttributeError(name) from None


def pair_table(config: str, rows: Iterable[list[dict[str, Any]]], *, system_supported: bool = True) -> pa.Table:
    """A pair config's table of one split, from that split's triplets rows in input order, a batch at a time: the
    kept rows only (`rows` hold the config's `PAIR_SOURCE_COLUMNS`)."""
    schema, build = config_schema(config), pair_rows(config, system_supported=system_supported)
    return _table(([made for row in batch if row["kept"] for made in build(_Row(row))] for batch in rows), schema)


def pair_pieces(config: str, rows: Iterable[list[dict[str, Any]]], *, system_supported: bool = True) -> Pieces:
    """`pair_table` in pieces of `PAIRS_PIECE_ROWS` for `pairs`, whose one table was the peak of generate's end
    (three rows of long prompts per query); the other pair configs as one table, so that their files keep the
    bytes they had (`_arrays`)."""
    if config != "pairs":
        return [pair_table(config, rows, system_supported=system_supported)]
    return _pieces(config, rows, system_supported)


def _pieces(config: str, rows: Iterable[list[dict[str, Any]]], system_supported: bool) -> Iterator[pa.Table]:
    """Each batch made Arrow as it comes (its Python rows dropped at once), a piece yielded once it holds
    `PAIRS_PIECE_ROWS`; at least one piece, empty when no row is kept. Arrow's freed memory is handed back as in
    `_arrays` (after each piece too: the writer has dropped it when it asks for the next)."""
    schema, build = config_schema(config), pair_rows(config, system_supported=system_supported)
    pool = pa.default_memory_pool()
    pending: list[pa.Table] = []
    made_any = False
    for batch in rows:
        pending.append(pa.Table.from_pylist([made for row in batch if row["kept"] for made in build(_Row(row))],
                                            schema=schema))
        pool.release_unused()
        if sum(table.num_rows for table in pending) >= PAIRS_PIECE_ROWS:
            yield pa.concat_tables(pending)
            pending, made_any = [], True
            pool.release_unused()
    if pending or not made_any:
        yield pa.concat_tables(pending) if pending else schema.empty_table()
        del pending
        pool.release_unused()


def _table(batches: Iterable[list[dict[str, Any]]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays(_arrays(batches, schema), schema=schema)


def _arrays(batches: Iterable[list[dict[str, Any]]], schema: pa.Schema) -> list[pa.Array]:
    """One array per column of the rows of every batch, each batch made Arrow as it comes. One array, as a table
    built from all rows at once has: written from several chunks, a parquet file falls back from dictionary
    encoding or cuts a page at another row, and its bytes differ. Joined column by column, so that only one column
    is held twice. What Arrow freed (a batch's builders, a column's chunks) is handed back to the system at once:
    its allocator kept it, and built the next arrays in new memory (at 20k rows, a table took twice its size)."""
    pool = pa.default_memory_pool()
    columns: list[list[pa.Array]] = [[] for _ in schema]
    for rows in batches:
        if rows:
            table = pa.Table.from_pylist(rows, schema=schema)
            for column, array in zip(columns, table.columns, strict=True):
                column.extend(array.chunks)
            pool.release_unused()
    joined = []
    for index, field in enumerate(schema):
        joined.append(pa.concat_arrays(columns[index]) if columns[index] else pa.array([], type=field.type))
        columns[index] = []
        pool.release_unused()
    return joined


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
