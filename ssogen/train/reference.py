"""Reference log-probs computed once per (data, model, sequence settings) and cached in the training output.

Before the first step, one no-grad pass of the starting model (with a LoRA adapter switched off) gives the six
summed reference log-probs of every row; training then looks them up by row index, so no second model sits in
memory. The table is written to `OUT/ref_logps-<key>.parquet`, where the key hashes the data fingerprint, the
model's fingerprint (`ssogen.fingerprint.model_fingerprint`), the dtype, the max lengths and the chat-template handling;
a rerun with the same key reads the file instead of running the pass. Each checkpoint gets a copy, so a resumed
run never recomputes the reference from already-trained weights."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ssogen.errors import UserError
from ssogen.fingerprint import json_sha256
from ssogen.io import write_atomic, write_parquet_atomic
from ssogen.train.loss import SEQUENCES

logger = logging.getLogger("ssogen.train.run")

CACHE_PREFIX = "ref_logps-"


def cache_key(*, data_fingerprint: str, model_id: str, max_length: int, max_prompt_length: int,
              system_supported: bool, chat_template: str, dtype: str) -> str:
    parts = {
        "data": data_fingerprint, "model": model_id, "max_length": max_length,
        "max_prompt_length": max_prompt_length, "system_role_supported": system_supported,
        "chat_template": hashlib.sha256(chat_template.encode()).hexdigest(), "dtype": dtype,
        "format": 2,  # 2: complete responses end with the template's end-of-turn token(s), not eos
    }
    return json_sha256(parts)[:24]


@dataclass
class ReferenceTable:
    """Summed reference log-probs (N, 6) in `SEQUENCES` order, indexed by row position."""

    key: str
    row_ids: list[str]
    logps: torch.Tensor | None = None
    reused: bool = False
    loaded_from: Path | None = None  # the cache file `try_load` read (saved in metrics.json)
    _device_copy: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def file_name(self) -> str:
        return f"{CACHE_PREFIX}{self.key}.parquet"

    def lookup(self, row_index: torch.Tensor) -> torch.Tensor:
        """The rows' reference log-probs, on `row_index`'s device, indexed there in a copy of the table made once:
        `row_index.cpu()` would make the host wait for all the GPU work queued so far (the policy's forward) in
        the middle of every training step."""
        if self.logps is None:
            raise RuntimeError("reference log-probs requested before they were computed")
        copy = self._device_copy
        if copy is None or copy[0] is not self.logps or copy[1].device != row_index.device:
            copy = self._device_copy = (self.logps, self.logps.to(row_index.device))
        return copy[1][row_index]

    def save(self, out_dir: Path) -> Path:
        assert self.logps is not None
        columns: dict[str, Any] = {"id": pa.array(self.row_ids, pa.string())}
        for index, name in enumerate(SEQUENCES):
            columns[name] = pa.array(self.logps[:, index].tolist(), pa.float64())
        return write_parquet_atomic(out_dir / self.file_name, pa.table(columns))

    def try_load(self, folders: list[Path]) -> Path | None:
        """Fill `logps` from the first folder holding this key's file whose ids match the data."""
        for folder in folders:
            path = folder / self.file_name
            if not path.is_file():
                continue
            try:
                table = pq.read_table(path)
                ids = table.column("id").to_pylist()
            except (pa.ArrowInvalid, OSError, KeyError) as exc:  # cut off mid-copy: compute it again
                logger.warning("%s: unreadable (%s); ignoring this cache", path, exc)
                continue
            if ids != self.row_ids:
                logger.warning("%s: row ids differ from the data; ignoring this cache", path)
                continue
            self.logps = torch.tensor([table.column(name).to_pylist() for name in SEQUENCES],
                                      dtype=torch.float64).T.contiguous()
            self.reused = True
            self.loaded_from = path
            return path
        return None

    def copy_to(self, out_dir: Path, checkpoint_dir: Path) -> None:
        source = out_dir / self.file_name
        if source.is_file() and checkpoint_dir.is_dir():
            with source.open("rb") as f:
                write_atomic(checkpoint_dir / self.file_name, lambda target: shutil.copyfileobj(f, target))


@contextlib.contextmanager
def adapters_disabled(model: Any) -> Iterator[None]:
    """With a peft model, run the base model (adapter off); otherwise do nothing."""
    disable = getattr(model, "disable_adapter", None)
    if callable(disable) and hasattr(model, "peft_config"):
        with disable():
            yield
    else:
        yield


def compute_reference(table: ReferenceTable, *, model: Any, unwrapped_model: Any, dataset: Any, collator: Any,
                      accelerator: Any, batch_size: int) -> None:
    """One no-grad pass over all rows, sharded across processes and gathered; fills `table.logps`."""
    from torch.utils.data import DataLoader

    from ssogen.train.logprobs import sequence_logps

    loader = accelerator.prepare(DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator))
    result = torch.full((len(dataset), len(SEQUENCES)), float("nan"), dtype=torch.float64)
    was_training = unwrapped_model.training
    unwrapped_model.eval()
    try:
        with torch.no_grad(), adapters_disabled(unwrapped_model):
            for batch in loader:
                sums, _ = sequence_logps(model, batch)
                indices, sums = accelerator.gather_for_metrics((batch["row_index"], sums.float()))
                result[indices.cpu()] = sums.cpu().double()
    finally:
        unwrapped_model.train(was_training)
    if torch.isnan(result).any():
        raise UserError("reference pass left rows without log-probs (a distributed gather lost rows)", 1)
    table.logps = result
