"""Batches for training: the six sequences of every row, packed (default) or left-padded.

Both layouts give the same keys for the log-prob computation (see `ssogen.train.packing`): which output position
predicts each response token, the token, and where its log-prob goes in a (B·6, T) grid. The packed layout writes
each shared context once and drops padding between rows; the left-padded one (`--no-packing`, and the fallback
for models where packing is not exact) gives each sequence its own line with a 2D padding mask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ssogen.train import packing as packing_layout
from ssogen.train.packing import pack_examples, target_fields


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


def left_padded(examples: list[dict[str, Any]], pad_token_id: int,
                pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """One line per sequence, padded on the left so that every response ends at the last position."""
    sequences = [seq for example in examples for seq in example["sequences"]]
    lengths = [n for example in examples for n in example["response_lengths"]]
    longest = max(len(s) for s in sequences)
    if pad_to_multiple_of:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(sequences), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    index, targets, cells = [], [], []
    for slot, (seq, count) in enumerate(zip(sequences, lengths, strict=True)):
        input_ids[slot, longest - len(seq):] = torch.tensor(seq, dtype=torch.long)
        attention_mask[slot, longest - len(seq):] = 1
        # The response fills the last `count` positions; the position before each token predicts it.
        index.append(slot * longest + longest - count - 1 + torch.arange(count))
        targets.append(torch.tensor(seq[len(seq) - count:], dtype=torch.long))
        cells.append(slot * longest + torch.arange(count))
    # Positions count real tokens only, so a left-padded sequence sees the positions it would see alone.
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        **target_fields(examples, index, targets, cells),
    }
