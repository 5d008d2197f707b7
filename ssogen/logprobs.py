"""Response log-probs of a padded SSO batch in one forward pass, with a memory-lean token log-prob.

The batch is left-padded (see `ssogen.collator`), so every response ends at the last position and only the last
`max response length + 1` positions need logits (`logits_to_keep`). The log-prob of each target token is
`logit[target] - logsumexp(logits)`, computed in chunks by a custom autograd function that never keeps a
full-vocabulary log-softmax (or a float32 copy of bf16 logits) alive for the backward pass."""

from __future__ import annotations

import inspect
from typing import Any

import torch

# Positions per chunk when reducing over the vocabulary (bounds the float32 temporaries).
CHUNK_POSITIONS = 4096


class _SelectedLogProb(torch.autograd.Function):
    """log softmax(logits)[target] per position; backward recomputes softmax chunk by chunk."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        flat = logits.reshape(-1, logits.size(-1))
        flat_targets = targets.reshape(-1)
        lse = torch.empty(flat.size(0), dtype=torch.float32, device=logits.device)
        for start in range(0, flat.size(0), CHUNK_POSITIONS):
            lse[start:start + CHUNK_POSITIONS] = torch.logsumexp(flat[start:start + CHUNK_POSITIONS].float(), -1)
        selected = flat.gather(1, flat_targets.unsqueeze(1)).squeeze(1).float()
        ctx.save_for_backward(logits, targets, lse)
        return (selected - lse).view(targets.shape)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
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


def _accepts_logits_to_keep(model: Any) -> bool:
    """True when the causal LM under any DDP/DeepSpeed/peft wrapper takes `logits_to_keep` (transformers does)."""
    inner = model
    for _ in range(4):
        if isinstance(getattr(inner, "module", None), torch.nn.Module):  # DDP, DeepSpeed engine
            inner = inner.module
        elif hasattr(type(inner), "get_base_model"):  # peft
            inner = inner.get_base_model()
        else:
            break
    return "logits_to_keep" in inspect.signature(type(inner).forward).parameters


def sequence_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and response lengths, both (B, 6), for a batch from `SSOCollator`."""
    input_ids = batch["input_ids"]
    lengths = batch["response_lengths"]  # (B, 6)
    flat_lengths = lengths.reshape(-1)
    keep = int(flat_lengths.max().item())
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": batch["attention_mask"],
                              "position_ids": batch["position_ids"], "use_cache": False}
    if _accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep + 1
    logits = model(**kwargs).logits
    # Logits at positions T-keep-1 .. T-2 predict the tokens at T-keep .. T-1 (where every response lies).
    logits = logits[:, -(keep + 1):-1]
    targets = input_ids[:, -keep:]
    token_logps = selected_token_logps(logits, targets)
    offsets = torch.arange(keep, device=input_ids.device)
    mask = offsets.unsqueeze(0) >= (keep - flat_lengths).unsqueeze(1)
    sums = (token_logps * mask).sum(dim=1)
    return sums.view(lengths.shape), lengths
