"""Where the saved records of a run's rows lie in the append-only shards (dataset/shards.py): a shard file and a byte
offset per row, read back a batch at a time.

A row's record is KBs of text (S+ / S- and three responses); its place is a few bytes in flat arrays. Generate keeps
the places of its finished rows and selections, not the records: holding every record took GBs at 100k rows."""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Mapping, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

_NONE = -1  # a row with no saved record


class SavedRecords:
    """The latest saved record of each of a run's rows (later lines win, as `ShardStore.load`): its shard file and
    byte offset, by the row's slot (its place among the run's rows, from `slots`: row id -> slot). Records of ids
    not in `slots` (rows of another --limit) are not this run's and are left out. `flag`: one bit kept per saved
    row (generate: whether it was kept), for the counts that need no record."""

    def __init__(self, slots: Mapping[str, int], flag: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self._slots = slots
        self._flag = flag
        self._paths: list[Path] = []
        self._numbers: dict[Path, int] = {}
        self._files = array("i", [_NONE]) * len(slots)
        self._offsets = array("q", [0]) * len(slots)
        self.flags = bytearray(len(slots))
        self._saved = 0

    def add(self, record: dict[str, Any], path: Path, offset: int) -> None:
        """`record` was saved at `offset` (its line's first byte) of the shard `path`."""
        slot = self._slots.get(record["id"])
        if slot is None:
            return
        if path not in self._numbers:
            self._numbers[path] = len(self._paths)
            self._paths.append(path)
        self._saved += self._files[slot] == _NONE
        self._files[slot] = self._numbers[path]
        self._offsets[slot] = offset
        self.flags[slot] = bool(self._flag(record)) if self._flag else False

    def __contains__(self, row_id: str) -> bool:
        slot = self._slots.get(row_id)
        return slot is not None and self._files[slot] != _NONE

    def __len__(self) -> int:
        """How many of the run's rows have a saved record."""
        return self._saved

    def read(self, row_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The saved records of `row_ids`, in that order (KeyError for one not saved). Each file is opened once and
        read in offset order."""
        places = []
        for index, row_id in enumerate(row_ids):
            slot = self._slots[row_id]
            if self._files[slot] == _NONE:
                raise KeyError(row_id)
            places.append((self._files[slot], self._offsets[slot], index))
        places.sort()
        found: list[dict[str, Any]] = [{}] * len(row_ids)
        for number, group in groupby(places, key=lambda place: place[0]):
            with self._paths[number].open("rb") as f:
                for _, offset, index in group:
                    f.seek(offset)
                    found[index] = json.loads(f.readline())
        return found
