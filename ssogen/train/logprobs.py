"""Response log-probs of an SSO batch (packed or left-padded, see `ssogen.train.collator`) in one forward pass.

The batch names, for every response token, the output position that predicts it; only those positions reach the
output layer. Two ways to get log-probs there:

* `LogProbHead` (default, `ssogen.train.output_layer`): the model's output layer replaced by one that returns the
  target tokens' log-probs chunk by chunk, never the (tokens × vocab) logits.
* otherwise the model's own logits, reduced with `selected_token_logps` (chunked logsumexp, no log-softmax copy).
"""

from __future__ import annotations

from typing import Any

import torch

from ssogen.train.model_parts import unwrap
from ssogen.train.output_layer import LogProbHead, accepts_logits_to_keep, output_layer

# Positions per chunk when reducing over the vocabulary (bounds the float32 temporaries).
CHUNK_POSITIONS = 4096


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


def sequence_logps(model: Any, batch: dict[str, torch.Tensor],
                   attention_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and response lengths, both (B, 6), for a batch from `SSOCollator`.

    `attention_dtype`: the dtype attention runs in (the autocast dtype under mixed precision), for a packed
    batch's SDPA mask (`attention_mask_4d`); None gives a boolean mask."""
    from ssogen.train.packing import attention_implementation, attention_mask_4d

    input_ids = batch["input_ids"]
    lengths = batch["response_lengths"]
    positions, targets = batch["target_index"], batch["target_ids"]
    if "group_ids" in batch:
        mask = attention_mask_4d(batch["group_ids"], batch["span_ids"], attention_implementation(unwrap(model)),
                                 attention_dtype)
    else:
        mask = batch["attention_mask"]
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask, "position_ids": batch["position_ids"],
                              "use_cache": False}
    head = output_layer(model)
    if isinstance(head, LogProbHead):
        head.positions, head.targets = positions, targets
        try:
            token_logps = model(**kwargs, logits_to_keep=0).logits
        finally:
            head.positions = head.targets = None
    else:
        width = input_ids.size(1)
        # Only columns from the first predicting one on need logits (with left padding: the last few).
        first = int((positions % width).min().item()) if accepts_logits_to_keep(model) else 0
        if first:
            kwargs["logits_to_keep"] = width - first
            positions = positions // width * (width - first) + positions % width - first
        logits = model(**kwargs).logits
        token_logps = selected_token_logps(logits.reshape(-1, logits.size(-1)).index_select(0, positions), targets)
    # Each token's log-prob into its (sequence, offset) cell of a (B·6, T) grid; rows sum to the sequences.
    grid = token_logps.new_zeros(lengths.numel() * input_ids.size(1)).scatter(0, batch["target_cell"], token_logps)
    return grid.view(lengths.numel(), -1).sum(dim=1).view(lengths.shape), lengths
