"""Batches for training: the six sequences of every row, left-padded.

Left padding makes every response end at the last position, so the model only needs logits for the last
`max response length + 1` positions (`logits_to_keep`), which is where most memory and time go."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class SSOCollator:
    """Pads the 6·B sequences of a batch (row-major: row 0's six, then row 1's, ...) on the left."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences = [seq for example in examples for seq in example["sequences"]]
        longest = max(len(s) for s in sequences)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(sequences), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
        for i, seq in enumerate(sequences):
            input_ids[i, longest - len(seq):] = torch.tensor(seq, dtype=torch.long)
            attention_mask[i, longest - len(seq):] = 1
        # Positions count real tokens only, so a left-padded sequence sees the positions it would see alone.
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "response_lengths": torch.tensor([e["response_lengths"] for e in examples], dtype=torch.long),
            "row_index": torch.tensor([e["row_index"] for e in examples], dtype=torch.long),
        }
