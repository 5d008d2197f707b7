"""`OutputFolder`: the one owner of an ssogen output folder's layout. Every other module asks it for paths.

The folder is a Hugging Face dataset repository (so `datasets.load_dataset(OUT, "dpo")` works and pushing is
an upload of the folder) plus ssogen's own files:

    README.md                                    the dataset card; its YAML header declares the configs
    data/<config>/train-00000-of-00001.parquet   one file per config: triplets, dpo, sso, reward, pairs
    data/<config>/test-00000-of-00001.parquet    the held-out split, with `generate --test-size`
    manifest.json                                versions, model, engine, seeds, sampling, counts, status
    config.resolved.yaml                         the run's options after defaults, config file and flags
    library.yaml                                 the principle library used (its sha256 is in the manifest)
    stats.json, plots/                           written by `ssogen stats` and `ssogen score`
    judge.json                                   written by `ssogen judge`: settings, metrics, every answer
    logs/<command>-<UTC time>.log                every command's full log (never published: it names local paths)
    .ssogen/                                     in-progress state, never published:
        marker.json                              ssogen's mark: the folder is ssogen's (--overwrite may clear it)
        lock                                     held by the one command writing the folder (`ssogen.lock`)
        fingerprint.json                         the configuration of the run this folder holds
        <stage>-<n>.jsonl                        append-only shards of finished generate work
        score/<key>/scores-<n>.jsonl             the `ssogen score` cache, one folder per model and settings
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa
import pyarrow.parquet as pq

from ssogen import ownership
from ssogen.dataset import triplet_files
from ssogen.dataset.configs import CONFIGS, Tap, config_schema, split_tables
from ssogen.dataset.splits import SPLITS, TEST, TRAIN, SplitSpec
from ssogen.dataset.triplet_files import BATCH_ROWS, RecordBatches, in_batches, record_batches
from ssogen.errors import UserError
from ssogen.io import TMP_SUFFIX, read_json_object, write_json_atomic, write_parquet_pieces_atomic, write_text_atomic
from ssogen.lock import Holder
from ssogen.ownership import FINGERPRINT, LOCK, LOG_PATTERN, MARKER, WORK_DIR, claim, holds_anything, remove_written
from ssogen.records import TripletRecord

if TYPE_CHECKING:  # pragma: no cover
    from ssogen.principles import Library

__all__ = ["CONFIGS", "OutputFolder"]
CARD = "README.md"
MANIFEST = "manifest.json"
RESOLVED_CONFIG = "config.resolved.yaml"
LIBRARY = "library.yaml"
STATS = "stats.json"
JUDGE = "judge.json"
PLOTS = "plots"
LOGS = "logs"
SCORE_CACHE = "score"
SHARD_SUFFIX = "-00000-of-00001.parquet"  # data/<config>/<split><SHARD_SUFFIX>
# The last line of every card ssogen renders: a card without it was written by a person and is left alone.
CARD_MARKER = "<!-- ssogen dataset card: `ssogen stats` and `ssogen score` rewrite this file -->"
# The files a run writes at the top of the folder (stats.json, plots and judge.json come from `stats`, `score`
# and `judge` and would describe the old run). `--overwrite` removes these, the parquet files ssogen writes under
# data/, the plots and logs it names (not the log the running command is writing), and the work dir; nothing else.
RUN_FILES = (CARD, MANIFEST, RESOLVED_CONFIG, LIBRARY, STATS, JUDGE)
RUN_PATTERNS = (*(f"data/{c}/{name}" for c in CONFIGS for name in (f"*{SHARD_SUFFIX}", f".*{TMP_SUFFIX}")),
                f"{PLOTS}/*.png", f"{PLOTS}/.*{TMP_SUFFIX}", f".*{TMP_SUFFIX}", LOG_PATTERN)


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
        self.marker = self.work_dir / MARKER
        self.lock_file = self.work_dir / LOCK

    def __repr__(self) -> str:
        return f"OutputFolder({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------------------------------
    def score_cache(self, key: str) -> Path:
        """The score cache of one (model, tokenization settings) key."""
        return self.work_dir / SCORE_CACHE / key

    def config_dir(self, config: str) -> Path:
        return self.root / "data" / config

    def config_file(self, config: str, split: str = TRAIN) -> Path:
        """The parquet file ssogen writes for a config's split (train unless told)."""
        return self.config_dir(config) / f"{split}{SHARD_SUFFIX}"

    @staticmethod
    def data_files(config: str, split: str | None = None) -> str:
        """A config's files (of one split) as a pattern relative to the folder, as the card's header declares."""
        return f"data/{config}/{split}-*.parquet" if split else f"data/{config}/*.parquet"

    def config_files(self, config: str) -> list[Path]:
        """Every parquet file of a config, sorted (a folder written by other tools may hold several)."""
        return sorted(self.config_dir(config).glob("*.parquet"))

    def split_files(self, config: str) -> dict[str, list[Path]]:
        """A config's files by split: `<split>-*.parquet`; in a folder whose files follow no split naming, every
        file counts as train."""
        files = self.config_files(config)
        named = {split: [p for p in files if p.name.startswith(f"{split}-")] for split in SPLITS}
        if not any(named.values()):
            return {TRAIN: files} if files else {}
        return {split: paths for split, paths in named.items() if paths}

    def log_file(self, command: str) -> Path:
        """A new log file for one invocation: logs/<command>-<UTC time>.log (-2, -3, ... within one second)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path, number = self.logs / f"{command}-{stamp}.log", 1
        while path.exists():
            number += 1
            path = self.logs / f"{command}-{stamp}-{number}.log"
        return path

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # -- checks --------------------------------------------------------------------------------------------------
    def require(self, path: Path) -> Path:
        """`path` inside the folder, or one clear line: no such folder / a file / not an ssogen output folder
        (every command taking a dataset folder checks it here: stats, score, judge, push-to-hub)."""
        if not self.root.is_dir():
            raise UserError(f"{self.root}: " + ("is a file, not a folder" if self.root.exists() else "no such folder"))
        if not path.exists():
            missing = f"not an ssogen output folder (missing {self.relative(path)})"
            raise UserError(f"{self.root}: {ownership.why_no_dataset(self.work_dir) or missing}")
        return path

    # -- configs -------------------------------------------------------------------------------------------------
    def write_config(self, config: str, rows: list[dict[str, Any]] | pa.Table, schema: pa.Schema | None = None,
                     split: str = TRAIN) -> Path:
        """One config's parquet file of a split from a table or rows (the config's own schema unless given)."""
        table = pa.Table.from_pylist(rows, schema=schema or config_schema(config)) if isinstance(rows, list) else rows
        write_parquet_pieces_atomic(path := self.config_file(config, split), [table])
        return path

    def write_configs(self, records: Iterable[TripletRecord] | RecordBatches, split: SplitSpec | None = None,
                      tap: Tap | None = None, *, system_supported: bool = True) -> dict[str, int]:
        """Every config's parquet files from the triplets (records, or batches of them: read once, `tap` seeing each
        batch), by `split` and `system_supported` as `split_tables` takes them; the rows per config. An empty test
        split has no file (`datasets` cannot read it); an earlier one is removed."""
        counts = {}
        batches = records if callable(records) else partial(in_batches, list(records))
        for config, parts in split_tables(batches, split, partial(self.config_file, "triplets"), tap,
                                          system_supported=system_supported):
            counts[config] = sum(write_parquet_pieces_atomic(self.config_file(config, name), pieces)
                                 for name, pieces in parts.items())
            if TEST not in parts:
                self.config_file(config, TEST).unlink(missing_ok=True)
            del parts  # not held while the next config is built
        return counts

    def paths(self, config: str, split: str | None = None) -> list[Path]:
        """The files `read_config` reads: one split, or every split (train first); the train file when none is."""
        by_split = self.split_files(config)
        return ([p for s in ([split] if split else SPLITS) for p in by_split.get(s, [])]
                or [self.require(self.config_file(config, split or TRAIN))])

    def read_config(self, config: str, path: Path | None = None, split: str | None = None,
                    columns: list[str] | None = None) -> pa.Table:
        """A config's table (`columns` only, if given): one file (`path`), one split, or every split (train
        first); a corrupt file is one clear line."""
        paths = [self.require(path)] if path is not None else self.paths(config, split)
        tables = [triplet_files.read_table(file, columns) for file in paths]
        try:
            return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise UserError(f"{self.config_dir(config)}: its files disagree on the columns ({exc})") from None

    def triplet_batches(self, size: int = BATCH_ROWS) -> Iterator[list[TripletRecord]]:
        """The `triplets` as records, every split, in input order, `size` rows at a time (`triplet_files`)."""
        return record_batches(self.paths("triplets"), self.config_dir("triplets"), size)

    def read_triplets(self) -> list[TripletRecord]:
        """Every row of `triplet_batches`, in input order (for the commands that need them all at once)."""
        return [record for batch in self.triplet_batches() for record in batch]

    def _footers(self) -> dict[str, dict[str, list[pq.FileMetaData]]]:
        """config -> split -> its files' parquet footers; configs with a corrupt file are left out (a file that may
        not be read is an error: leaving it out too would describe the folder wrongly, and exit 0)."""
        footers = {}
        for config in CONFIGS:
            found = {split: [triplet_files.parquet_footer(p) for p in paths]
                     for split, paths in self.split_files(config).items()}
            if found and all(None not in metas for metas in found.values()):
                footers[config] = cast(dict[str, list[pq.FileMetaData]], found)
        return footers

    def split_sizes(self) -> dict[str, dict[str, tuple[int, int]]]:
        """config -> split -> (rows, uncompressed bytes), from the parquet footers."""
        return {config: {split: (sum(m.num_rows for m in metas), sum(m.row_group(i).total_byte_size for m in metas
                                                                    for i in range(m.num_row_groups)))
                         for split, metas in splits.items()} for config, splits in self._footers().items()}

    def schemas(self) -> dict[str, pa.Schema]:
        """The schema of each config whose files can be read (its first file's)."""
        return {config: next(iter(splits.values()))[0].schema.to_arrow_schema()
                for config, splits in self._footers().items()}

    # -- manifest, options, library, stats -----------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any]:
        path = self.require(self.manifest)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None

    def write_manifest(self, manifest: dict[str, Any]) -> Path:
        return write_json_atomic(self.manifest, manifest)

    def mark_incomplete(self, rewriter: str | None = None, **resume: Any) -> None:
        """Set the manifest's status to in_progress (a folder being regenerated must not be published);
        `rewriter`: the command that only rewrites a finished run's files, whose rerun may finish it again;
        `resume`: what that rerun needs to finish the same rewrite (`rewriting_with`: score's filter)."""
        try:
            manifest = json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):  # none yet, or unreadable: nothing to mark
            return
        manifest["status"] = "in_progress"
        marks = {"rewriting": rewriter, "rewriting_with": resume} if rewriter else {}
        self.write_manifest({**{k: v for k, v in manifest.items() if k not in ("rewriting", "rewriting_with")},
                             **marks})

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
        judged = read_json_object(self.judge)
        return judged if judged is not None and isinstance(judged.get("metrics"), dict) else None

    def card_is_generated(self) -> bool:
        """True when README.md is missing or ssogen rendered it (it ends with CARD_MARKER)."""
        return not self.card.exists() or CARD_MARKER in self.card.read_text(encoding="utf-8", errors="replace")

    # -- ownership: the marker, the lock, a new run --------------------------------------------------------------
    def is_ssogen_folder(self) -> bool:
        """ssogen's mark is there (folders of older versions: their fingerprint.json)."""
        return self.marker.is_file() or self.fingerprint.is_file()

    def holds_anything(self) -> bool:
        return holds_anything(self.root)

    def claim(self, command: str) -> contextlib.AbstractContextManager[Holder | None]:
        """Hold the folder's lock, mark it as ssogen's; errors name it as given (generate's --out, else FOLDER)."""
        label = f"--out {self.root}" if command == "ssogen generate" else str(self.root)
        return claim(self.work_dir, label=label, command=command, kind="dataset")

    def remove_run_outputs(self) -> None:
        """What `--overwrite` does: remove the files ssogen wrote for a previous run, and nothing a person put
        there (a card a person wrote stays too). The lock and the marker stay: the folder remains ssogen's."""
        if self.root.is_dir():
            files = [self.root / name for name in RUN_FILES if name != CARD or self.card_is_generated()]
            remove_written(self.root, files, RUN_PATTERNS, self.work_dir,
                           [*(self.root / "data" / c for c in CONFIGS), self.root / "data", self.plots, self.logs])
