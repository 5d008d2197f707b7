"""Summed log-probs of the response part of token sequences, in one forward pass: the left-padded batch layout and
the reduction from logits to per-sequence sums. `ssogen score` (the transformers scorer) and `ssogen train` both
use it, so that scores and training see the same numbers for the same sequences.

Batch keys (the packed layout of `ssogen.train.packing` gives the same ones): `input_ids`, `position_ids` (R, T);
`target_index` (N,) the flat position in (R·T) whose output predicts each response token, `target_ids` (N,) that
token, `target_cell` (N,) its place in a (B·S, T) grid of per-sequence token log-probs (sequence slot · T + offset
in the response); `response_lengths` (B, S); `row_index` (B,). A left-padded batch adds `attention_mask` (R, T).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

# Positions per chunk when reducing over the vocabulary (bounds the float32 temporaries).
CHUNK_POSITIONS = 4096


def target_fields(examples: list[dict[str, Any]], index: list[torch.Tensor], targets: list[torch.Tensor],
                  cells: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys both layouts share: where each response token is predicted, the token, its cell in the grid."""
    return {
        "target_index": torch.cat(index),
        "target_ids": torch.cat(targets),
        "target_cell": torch.cat(cells),
        "response_lengths": torch.tensor([e["response_lengths"] for e in examples], dtype=torch.long),
        "row_index": torch.tensor([e["row_index"] for e in examples], dtype=torch.long),
    }


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
        seq = torch.as_tensor(seq, dtype=torch.long)  # a list or a 1-D tensor (`ssogen.train.data.SSODataset`)
        input_ids[slot, longest - len(seq):] = seq
        attention_mask[slot, longest - len(seq):] = 1
        # The response fills the last `count` positions; the position before each token predicts it.
        index.append(slot * longest + longest - count - 1 + torch.arange(count))
        targets.append(seq[len(seq) - count:])
        cells.append(slot * longest + torch.arange(count))
    # Positions count real tokens only, so a left-padded sequence sees the positions it would see alone.
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        **target_fields(examples, index, targets, cells),
    }


class _SelectedLogProb(torch.autograd.Function):
    """log softmax(logits)[target] per position; backward recomputes softmax chunk by chunk."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        flat = logits.reshape(-1, logits.size(-1))
        flat_targets = targets.reshape(-1)
        lse = torch.empty(flat.size(0), dtype=torch.float32, device=logits.device)
        for start in range(0, flat.size(0), CHUNK_POSITIONS):
            lse[start:start + CHUNK_POSITIONS] = torch.logsumexp(flat[start:start + CHUNK_POSITIONS].float(), -1)
        selected = flat.gather(1, flat_targets.unsqueeze(1)).squeeze(1).float()
        ctx.save_for_backward(logits, targets, lse)
        return (selected - lse).view(targets.shape)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets, lse = ctx.saved_tensors
        flat = logits.reshape(-1, logits.size(-1))
        flat_targets = targets.reshape(-1)
        flat_grad_out = grad_output.reshape(-1).float()
        grad = torch.empty_like(flat)
        for start in range(0, flat.size(0), CHUNK_POSITIONS):
            stop = start + CHUNK_POSITIONS
            g = flat_grad_out[start:stop].unsqueeze(1)
            chunk = torch.exp(flat[start:stop].float() - lse[start:stop].unsqueeze(1)).mul_(-g)
            chunk.scatter_add_(1, flat_targets[start:stop].unsqueeze(1), g)
            grad[start:stop] = chunk.to(grad.dtype)
        return grad.view_as(logits), None


def selected_token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Float32 log-prob of each target token; `logits` (..., V), `targets` (...)."""
    return _SelectedLogProb.apply(logits, targets)


def takes_logits_to_keep(model: Any) -> bool:
    """Whether the model's forward computes logits for the last positions only when asked (`model` unwrapped)."""
    return "logits_to_keep" in inspect.signature(type(model).forward).parameters


def forward_inputs(batch: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, Any]:
    return {"input_ids": batch["input_ids"], "attention_mask": mask, "position_ids": batch["position_ids"],
            "use_cache": False}


def logits_token_logps(model: Any, inputs: dict[str, Any], positions: torch.Tensor, targets: torch.Tensor, *,
                       trim: bool) -> torch.Tensor:
    """The (N,) log-probs of `targets` from the model's logits at `positions` (flat in R·T); `trim`: the model takes
    `logits_to_keep`, so that only the columns from the first predicting one on get logits."""
    width = inputs["input_ids"].size(1)
    # Only columns from the first predicting one on need logits (with left padding: the last few).
    first = int((positions % width).min().item()) if trim else 0
    if first:
        inputs = {**inputs, "logits_to_keep": width - first}
        positions = positions // width * (width - first) + positions % width - first
    logits = model(**inputs).logits
    return selected_token_logps(logits.reshape(-1, logits.size(-1)).index_select(0, positions), targets)


def summed_per_sequence(token_logps: torch.Tensor,
                        batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and response lengths, both (B, S), from the (N,) response token log-probs."""
    lengths = batch["response_lengths"]
    # Each token's log-prob into its (sequence, offset) cell of a (B·S, T) grid; rows sum to the sequences.
    grid = token_logps.new_zeros(lengths.numel() * batch["input_ids"].size(1)).scatter(0, batch["target_cell"],
                                                                                       token_logps)
    return grid.view(lengths.numel(), -1).sum(dim=1).view(lengths.shape), lengths


def padded_sequence_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and response lengths, both (B, S), of a `left_padded` batch under a model that no
    training wrapper hides."""
    token_logps = logits_token_logps(model, forward_inputs(batch, batch["attention_mask"]), batch["target_index"],
                                     batch["target_ids"], trim=takes_logits_to_keep(model))
    return summed_per_sequence(token_logps, batch)
