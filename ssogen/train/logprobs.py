"""Response log-probs of a padded SSO batch in one forward pass, without materialising (positions × vocab) logits.

The batch is left-padded (see `ssogen.train.data`), so every response ends at the last position and only the last
`max response length + 1` positions reach the output layer (`logits_to_keep`). Two ways to get log-probs there:

* `LogProbHead` (default): replaces the model's linear output layer before training. Given target tokens it
  returns each target's log-prob, computing `hidden @ W` chunk by chunk and recomputing it in backward, so
  neither the logits nor their gradient ever exist in full (with a 150k vocabulary that is most of the memory).
  Without targets it is the ordinary linear layer, so generation and saving are unchanged.
* otherwise the model's own logits, reduced with `selected_token_logps` (chunked logsumexp, no log-softmax copy).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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


def _unwrap(model: Any) -> Any:
    """The transformers model under DDP/DeepSpeed (`.module`) and peft (`get_base_model()`) wrappers."""
    inner = model
    for _ in range(4):
        if isinstance(getattr(inner, "module", None), nn.Module):
            inner = inner.module
        elif hasattr(type(inner), "get_base_model"):
            inner = inner.get_base_model()
        else:
            break
    return inner


def _accepts_logits_to_keep(model: Any) -> bool:
    return "logits_to_keep" in inspect.signature(type(_unwrap(model)).forward).parameters


# Target elements (positions × vocab) of one chunk of float32 logits inside LogProbHead.
HEAD_CHUNK_ELEMENTS = 1 << 25
# Config fields through which a model rescales its logits after the output layer: LogProbHead's output would be
# rescaled too, so such models use their own logits instead.
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier",
                         "lm_head_multiplier")


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    device_type = tensor.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return tensor.dtype


class _HeadLogProb(torch.autograd.Function):
    """log softmax(h @ Wᵀ + b)[target] per position, chunked; backward recomputes each chunk's logits."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                targets: torch.Tensor) -> torch.Tensor:
        dtype = _compute_dtype(hidden)
        size = hidden.size(-1)
        chunk = max(1, HEAD_CHUNK_ELEMENTS // weight.size(0))
        flat_targets = targets.reshape(-1)
        with torch.autocast(hidden.device.type, enabled=False):
            h = hidden.reshape(-1, size).to(dtype)
            w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
            lse = torch.empty(h.size(0), dtype=torch.float32, device=h.device)
            selected = torch.empty_like(lse)
            for start in range(0, h.size(0), chunk):
                logits = F.linear(h[start:start + chunk], w, b).float()
                lse[start:start + chunk] = torch.logsumexp(logits, dim=-1)
                selected[start:start + chunk] = logits.gather(1, flat_targets[start:start + chunk, None]).squeeze(1)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.compute_dtype = dtype
        return (selected - lse).view(targets.shape)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        dtype = ctx.compute_dtype
        size = hidden.size(-1)
        chunk = max(1, HEAD_CHUNK_ELEMENTS // weight.size(0))
        flat_targets = targets.reshape(-1)
        grads = grad_output.reshape(-1).float()
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        want_bias = bias is not None and ctx.needs_input_grad[2]
        with torch.autocast(hidden.device.type, enabled=False):
            h = hidden.reshape(-1, size).to(dtype)
            w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
            grad_hidden = torch.empty_like(h) if want_hidden else None
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight else None
            grad_bias = torch.zeros(weight.size(0), dtype=torch.float32, device=weight.device) if want_bias else None
            for start in range(0, h.size(0), chunk):
                stop = start + chunk
                g = grads[start:stop, None]
                # d logp[target] / d logits = onehot(target) - softmax(logits), times the incoming gradient.
                grad_logits = torch.exp(F.linear(h[start:stop], w, b).float() - lse[start:stop, None]).mul_(-g)
                grad_logits.scatter_add_(1, flat_targets[start:stop, None], g)
                if grad_hidden is not None:
                    grad_hidden[start:stop] = grad_logits.to(dtype) @ w
                if grad_weight is not None:
                    grad_weight.addmm_(grad_logits.t(), h[start:stop].float())
                if grad_bias is not None:
                    grad_bias += grad_logits.sum(0)
        return (
            None if grad_hidden is None else grad_hidden.view_as(hidden).to(hidden.dtype),
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            None,
        )


class LogProbHead(nn.Module):
    """The model's linear output layer, able to return target log-probs instead of logits.

    Holds the very same weight (and bias) Parameters, so tied embeddings stay tied and the state dict keys are
    unchanged. With `targets` (N, K) set, an input of hidden states (N, K+1, H) gives (N, K) float32 log-probs of
    each target given the positions before it (position i predicts target i)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.targets: torch.Tensor | None = None
        object.__setattr__(self, "_original", linear)  # not a submodule: no second copy in the state dict

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.targets is None:
            return F.linear(hidden, self.weight, self.bias)
        return _HeadLogProb.apply(hidden[:, :-1], self.weight, self.bias, self.targets)

    def original(self) -> nn.Linear:
        linear: nn.Linear = self._original  # type: ignore[assignment]
        linear.weight, linear.bias = self.weight, self.bias  # in case something re-tied our Parameters
        return linear


def install_logprob_head(model: Any) -> bool:
    """Replace the output layer with `LogProbHead` when that is exact for this model; True if installed."""
    inner = _unwrap(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    config = getattr(inner, "config", None)
    text_config = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    if type(head) is not nn.Linear or not _accepts_logits_to_keep(inner) or not hasattr(inner, "set_output_embeddings"):
        return False
    if any(getattr(text_config, name, None) is not None for name in _LOGIT_POSTPROCESSING):
        return False
    inner.set_output_embeddings(LogProbHead(head))
    return True


def remove_logprob_head(model: Any) -> None:
    """Put the original linear output layer back (before saving, so the saved model is the stock class)."""
    inner = _unwrap(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if isinstance(head, LogProbHead):
        inner.set_output_embeddings(head.original())


def sequence_logps(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs and response lengths, both (B, 6), for a batch from `SSOCollator`."""
    input_ids = batch["input_ids"]
    lengths = batch["response_lengths"]  # (B, 6)
    flat_lengths = lengths.reshape(-1)
    keep = int(flat_lengths.max().item())
    targets = input_ids[:, -keep:]  # every response lies in the last `keep` positions
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": batch["attention_mask"],
                              "position_ids": batch["position_ids"], "use_cache": False}
    inner = _unwrap(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if isinstance(head, LogProbHead):
        head.targets = targets
        try:
            token_logps = model(**kwargs, logits_to_keep=keep + 1).logits
        finally:
            head.targets = None
    else:
        if _accepts_logits_to_keep(model):
            kwargs["logits_to_keep"] = keep + 1
        logits = model(**kwargs).logits
        # Logits at positions T-keep-1 .. T-2 predict the tokens at T-keep .. T-1.
        token_logps = selected_token_logps(logits[:, -(keep + 1):-1], targets)
    offsets = torch.arange(keep, device=input_ids.device)
    mask = offsets.unsqueeze(0) >= (keep - flat_lengths).unsqueeze(1)
    sums = (token_logps * mask).sum(dim=1)
    return sums.view(lengths.shape), lengths
