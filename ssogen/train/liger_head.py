"""The output layer's log-probs from liger-kernel's fused linear cross-entropy (`--head-kernel liger`, CUDA only):
the optional GPU kernel `LogProbHead` calls instead of its own chunked GEMMs."""

from __future__ import annotations

import torch


def liger_logps(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor) -> torch.Tensor:
    """-CE per token from liger-kernel's fused linear cross-entropy with reduction "none": it folds each token's
    incoming gradient into the recomputed logits gradient, so it is exact for any weighting of the log-probs."""
    from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction

    # Positional: input, weight, target, bias, ce_weight, ignore_index, lse_square_scale, label_smoothing,
    # reduction, softcap, return_z_loss, accum_dtype (float32 weight-gradient accumulation).
    loss = LigerFusedLinearCrossEntropyFunction.apply(hidden, weight, targets, bias, None, -100, 0.0, 0.0, "none",
                                                      None, False, torch.float32)[0]
    return -loss.float()
