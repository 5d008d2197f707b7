"""Batches for training: the six sequences of every row, packed (default) or left-padded.

Both layouts give the same keys for the log-prob computation (see `ssogen.train.packing`): which output position
predicts each response token, the token, and where its log-prob goes in a (B·6, T) grid. The packed layout writes
each shared context once and drops padding between rows; the left-padded one (`--no-packing`, and the fallback
for models where packing is not exact) gives each sequence its own line with a 2D padding mask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ssogen.response_logps import left_padded
from ssogen.train import packing as packing_layout
from ssogen.train.packing import pack_examples


def collator_multiples(device_type: str) -> dict[str, int | None]:
    """`SSOCollator`'s width multiples on this device type (`ssogen.train.packing.CUDA_LINE_MULTIPLE`: why)."""
    if device_type != "cuda":
        return {"pad_to_multiple_of": None, "line_multiple": None}
    return {"pad_to_multiple_of": packing_layout.CUDA_PAD_MULTIPLE, "line_multiple": packing_layout.CUDA_LINE_MULTIPLE}


@dataclass
class SSOCollator:
    """Collates rows (row-major: row 0's six sequences, then row 1's, ...) into one batch."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None  # width multiple of left-padded batches
    packing: bool = False
    line_multiple: int | None = None  # width multiple of packed lines

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.packing:
            return pack_examples(examples, self.pad_token_id, self.line_multiple)
        return left_padded(examples, self.pad_token_id, self.pad_to_multiple_of)
