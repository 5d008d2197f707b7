"""Prefix-shared, padding-free SSO batches.

The six sequences of a row use three contexts, each followed by two responses: (x: y+, y-), (x+: y+, y-),
(x-: yo, y+). A packed batch writes each context once with both of its responses after it (a *group*) and lays
groups side by side on a few lines, without padding between them. The attention mask lets a response see its
context and itself (causally) but not the other response nor any other group, and each response's position ids
start where its context ends, so every response gets exactly the attention and positions it gets alone: a row
costs three context passes instead of six, and padding only fills the end of a line.

Per token a packed batch carries a group id (-1 for padding) and a span id (0 the context, 1, 2, ... its
responses, -1 padding); `attention_mask_4d` turns them into the (lines, 1, T, T) mask on the device.

The batch keys it shares with the left-padded layout (`input_ids`, `position_ids`, `target_*`, `response_lengths`,
`row_index`) are described in `ssogen.response_logps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ssogen.response_logps import target_fields
from ssogen.train.model_parts import text_config

CONTEXT_SPAN = 0
PADDING_ID = -1
# Attention implementations that take a custom 4D mask as is: SDPA a boolean one, eager an additive one.
PACKABLE_ATTENTION = ("sdpa", "eager")
# Largest accepted mean per-token difference between packed and unpacked log-probs in the first-batch check:
# rounding noise stays far below these; a mask or position the model ignores moves log-probs by much more.
CHECK_TOLERANCE = {"fp32": 1e-3, "half": 2e-2}
# Width multiples on CUDA. Left-padded batches: 16 keeps the attention mask aligned for the fused SDPA kernels.
# Packed lines: 128, so that line widths fall into a few buckets and the attention kernels' per-shape setup (cuDNN
# builds an execution plan for each new shape, a host cost that dominated the 0.5B profile) is reused across
# steps; it costs ~2% more tokens than 16 on the benchmark's batches. The CPU pads nothing.
CUDA_PAD_MULTIPLE = 16
CUDA_LINE_MULTIPLE = 128


@dataclass
class Group:
    """One context and the responses that follow it; `responses` holds (sequence slot, response tokens)."""

    context: torch.Tensor
    responses: list[tuple[int, torch.Tensor]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.context) + sum(len(tokens) for _, tokens in self.responses)


def row_groups(sequences: Sequence[Sequence[int] | torch.Tensor], lengths: list[int], first_slot: int) -> list[Group]:
    """Split a row's sequences (lists or 1-D tensors) into prompt + response and join neighbours with the same
    prompt into one group."""
    groups: list[Group] = []
    for column, (tokens, length) in enumerate(zip(sequences, lengths, strict=True)):
        sequence = torch.as_tensor(tokens, dtype=torch.long)
        cut = len(sequence) - length
        context, response = sequence[:cut], sequence[cut:]
        if groups and torch.equal(groups[-1].context, context):
            groups[-1].responses.append((first_slot + column, response))
        else:
            groups.append(Group(context=context, responses=[(first_slot + column, response)]))
    return groups


def fill_lines(sizes: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices of `sizes` per line, each line's total at most `capacity`."""
    lines: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        for line, free in enumerate(room):
            if sizes[index] <= free:
                lines[line].append(index)
                room[line] -= sizes[index]
                break
        else:
            lines.append([index])
            room.append(capacity - sizes[index])
    return lines


def pack_examples(examples: list[dict[str, Any]], pad_token_id: int,
                  pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
    """The packed batch of `examples` (each: `sequences`, `response_lengths`, `row_index`); lines are as wide as
    the longest group, rounded up to `pad_to_multiple_of`."""
    slots_per_row = len(examples[0]["sequences"])
    groups = [group for number, example in enumerate(examples)
              for group in row_groups(example["sequences"], example["response_lengths"], number * slots_per_row)]
    # Lines as wide as the longest group: attention costs T² per line, so no line is made longer than needed.
    width = max(len(group) for group in groups)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    lines = fill_lines([len(group) for group in groups], width)
    input_ids = torch.full((len(lines), width), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(lines), width), dtype=torch.long)
    group_ids = torch.full((len(lines), width), PADDING_ID, dtype=torch.int32)
    span_ids = torch.full((len(lines), width), PADDING_ID, dtype=torch.int8)
    index: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    cells: list[torch.Tensor] = []
    for line, members in enumerate(lines):
        start = line * width
        offset = 0
        for number in members:
            group = groups[number]
            size = len(group.context)
            _write(input_ids, position_ids, group_ids, span_ids, line, offset, group.context, 0, number, CONTEXT_SPAN)
            cursor = offset + size
            for span, (slot, response) in enumerate(group.responses, start=1):
                count = len(response)
                _write(input_ids, position_ids, group_ids, span_ids, line, cursor, response, size, number, span)
                # The context's last token predicts every response's first token; then each token the next.
                index.append(torch.cat([torch.tensor([start + offset + size - 1]),
                                        start + cursor + torch.arange(count - 1)]))
                targets.append(response)
                cells.append(slot * width + torch.arange(count))
                cursor += count
            offset = cursor
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "group_ids": group_ids,
        "span_ids": span_ids,
        **target_fields(examples, index, targets, cells),
    }


def _write(input_ids: torch.Tensor, position_ids: torch.Tensor, group_ids: torch.Tensor, span_ids: torch.Tensor,
           line: int, offset: int, tokens: torch.Tensor, first_position: int, group: int, span: int) -> None:
    stop = offset + len(tokens)
    input_ids[line, offset:stop] = tokens
    position_ids[line, offset:stop] = first_position + torch.arange(len(tokens))
    group_ids[line, offset:stop] = group
    span_ids[line, offset:stop] = span


def attention_mask_4d(group_ids: torch.Tensor, span_ids: torch.Tensor, implementation: str,
                      dtype: torch.dtype | None = None) -> torch.Tensor:
    """(R, 1, T, T) mask: a token sees earlier tokens of its group that are context or of its own span.

    Padding shares group and span -1, so each padding token sees itself and no row of the mask is empty (an
    all-masked row would make SDPA return NaN). Additive float for eager; for SDPA boolean (True = attend), or
    additive (0 / -inf) in `dtype`, the dtype attention runs in: SDPA turns a boolean mask into that very
    additive one in every layer, and every layer keeps its copy for backward (1.4 GB at 0.5B without gradient
    checkpointing); made once here, one mask serves all layers, with identical results."""
    width = group_ids.size(1)
    causal = torch.ones(width, width, dtype=torch.bool, device=group_ids.device).tril()
    same_group = group_ids[:, :, None] == group_ids[:, None, :]
    keys, queries = span_ids[:, None, :], span_ids[:, :, None]
    mask = (same_group & causal & ((keys == CONTEXT_SPAN) | (keys == queries)))[:, None]
    if implementation == "eager":
        return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill_(
            ~mask, torch.finfo(torch.float32).min)
    if dtype is not None:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
    return mask


def attention_implementation(model: Any) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "_attn_implementation", None) or "eager")


def packing_unsupported(model: Any, max_length: int) -> str | None:
    """Why packed batches would not be exact for this model, or None; `model` is the bare transformers model.

    A custom 4D mask is used as is only by SDPA and eager attention; sliding-window layers would need the window
    inside the mask (harmless only when no sequence is longer than the window). Anything else that ignores the
    mask or the position ids is caught by the first-batch check (`packing_check_delta`)."""
    implementation = attention_implementation(model)
    if implementation not in PACKABLE_ATTENTION:
        return f"attention implementation {implementation!r} takes no custom attention mask"
    config = text_config(model)
    if not getattr(config, "is_causal", True):
        return "the model's attention is not causal"
    layer_types = set(getattr(config, "layer_types", None) or [])
    other = layer_types - {"full_attention", "sliding_attention"}
    if other:
        return f"layer types {', '.join(sorted(other))} take no custom attention mask"
    window = getattr(config, "sliding_window", None)
    windowed = "sliding_attention" in layer_types or (not layer_types and window is not None)
    if windowed and window is not None and window < max_length:
        return f"sliding-window attention (window {window} < --max-length {max_length})"
    return None


def packing_check_delta(packed: torch.Tensor, unpacked: torch.Tensor, lengths: torch.Tensor) -> float:
    """Mean absolute difference per response token between two (B, 6) tables of summed log-probs."""
    return float((packed.double() - unpacked.double()).abs().sum() / lengths.sum().clamp(min=1))
