"""Response log-probs of an SSO batch (packed or left-padded, see `ssogen.train.collator`) in one forward pass.

The batch names, for every response token, the output position that predicts it; only those positions reach the
output layer. Two ways to get log-probs there:

* `LogProbHead` (default, `ssogen.train.output_layer`): the model's output layer replaced by one that returns the
  target tokens' log-probs chunk by chunk, never the (tokens × vocab) logits.
* otherwise the model's own logits, reduced as the transformers scorer reduces them (`ssogen.response_logps`:
  chunked logsumexp, no log-softmax copy).
"""

from __future__ import annotations

from typing import Any

import torch

from ssogen.response_logps import forward_inputs, logits_token_logps, summed_per_sequence
from ssogen.train.model_parts import unwrap
from ssogen.train.output_layer import LogProbHead, accepts_logits_to_keep, output_layer


def sequence_logps(model: Any, batch: dict[str, torch.Tensor],
                   attention_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and response lengths, both (B, 6), for a batch from `SSOCollator`.

    `attention_dtype`: the dtype attention runs in (the autocast dtype under mixed precision), for a packed
    batch's SDPA mask (`attention_mask_4d`); None gives a boolean mask."""
    from ssogen.train.packing import attention_implementation, attention_mask_4d

    positions, targets = batch["target_index"], batch["target_ids"]
    if "group_ids" in batch:
        mask = attention_mask_4d(batch["group_ids"], batch["span_ids"], attention_implementation(unwrap(model)),
                                 attention_dtype)
    else:
        mask = batch["attention_mask"]
    inputs = forward_inputs(batch, mask)
    head = output_layer(model)
    if isinstance(head, LogProbHead):
        head.positions, head.targets = positions, targets
        try:
            token_logps = model(**inputs, logits_to_keep=0).logits
        finally:
            head.positions = head.targets = None
    else:
        token_logps = logits_token_logps(model, inputs, positions, targets, trim=accepts_logits_to_keep(model))
    return summed_per_sequence(token_logps, batch)
