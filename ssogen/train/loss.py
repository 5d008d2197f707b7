"""The SSO objective as pure functions: tensors of log-probs in, loss tensors out. No model code.
The equations, and where the paper's text and code differ, are in docs/method.md ("The objective").

Every function takes per-row sequence log-probs in the fixed order of `SEQUENCES` (one column per sequence):

    0 (x,  y+)   1 (x,  y-)   2 (x+, y+)   3 (x+, y-)   4 (x-, yo)   5 (x-, y+)

with `policy` and `reference` holding summed token log-probs of the response given its context (prompt tokens
masked) and `lengths` the number of response tokens. Per-token averages are `sum / length`.

Preference pairs: P1 = (x, y+ over y-), P2 = (x+, y+ over y-), P3 = (x-, yo over y+).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ssogen.train.objective import LossSettings, LossType

SEQUENCES = ("good_plain", "bad_plain", "good_good", "bad_good", "raw_bad", "good_bad")
GOOD_PLAIN, BAD_PLAIN, GOOD_GOOD, BAD_GOOD, RAW_BAD, GOOD_BAD = range(6)
# (context, response) of each sequence: contexts plain/good/bad = x, x+, x-; responses good/bad/raw = y+, y-, yo.
SEQUENCE_PARTS = (("plain", "good"), ("plain", "bad"), ("good", "good"), ("good", "bad"), ("bad", "raw"),
                  ("bad", "good"))
# Pair name -> (chosen sequence, rejected sequence).
PAIRS = {"p1": (GOOD_PLAIN, BAD_PLAIN), "p2": (GOOD_GOOD, BAD_GOOD), "p3": (RAW_BAD, GOOD_BAD)}
# The pairs side by side: their chosen sequences are the even columns, their rejected ones the odd, so all three are
# computed at once on strided views (no copies), each element as its pair alone would compute it.
CHOSEN, REJECTED = slice(0, None, 2), slice(1, None, 2)


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar: mean over rows
    per_row: torch.Tensor  # (B,)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # each (B,) or scalar, detached

    def metric_means(self) -> dict[str, torch.Tensor]:
        """Each metric's mean over the rows, all in one reduction rather than one per metric (a GPU step pays for
        every operator it launches, and these are tiny); scalars (0-d views of one tensor)."""
        names = list(self.metrics)
        rows = self.per_row.size(0)
        means = torch.stack([self.metrics[name].float().expand(rows) for name in names]).mean(1)
        return dict(zip(names, means.unbind(), strict=True))


def average(sums: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-token average log-prob; a zero length counts as one token so that nothing divides by zero."""
    return sums / lengths.clamp(min=1)


def dpo_loss(policy_w: torch.Tensor, ref_w: torch.Tensor, policy_l: torch.Tensor, ref_l: torch.Tensor,
             beta: float) -> torch.Tensor:
    """-log σ(β·[r(yw) - r(yl)]) on summed log-probs, r = logp_θ - logp_ref."""
    return -F.logsigmoid(beta * ((policy_w - ref_w) - (policy_l - ref_l)))


def ipo_loss(policy_w: torch.Tensor, ref_w: torch.Tensor, len_w: torch.Tensor, policy_l: torch.Tensor,
             ref_l: torch.Tensor, len_l: torch.Tensor, beta: float) -> torch.Tensor:
    """(h - 1/(2β))² with h the difference of per-token averaged log-prob ratios."""
    h = average(policy_w - ref_w, len_w) - average(policy_l - ref_l, len_l)
    return (h - 1.0 / (2.0 * beta)) ** 2


def pair_losses(policy: torch.Tensor, reference: torch.Tensor, lengths: torch.Tensor, loss_type: LossType,
                beta: float) -> torch.Tensor:
    """L(c, yw, yl) of P1, P2 and P3; (B, 3), one column per pair. Computed for the three at once: a GPU step pays
    for every operator it launches, and these are tiny."""
    won, lost = CHOSEN, REJECTED
    if loss_type == "dpo":
        return dpo_loss(policy[:, won], reference[:, won], policy[:, lost], reference[:, lost], beta)
    if loss_type == "ipo":
        return ipo_loss(policy[:, won], reference[:, won], lengths[:, won],
                        policy[:, lost], reference[:, lost], lengths[:, lost], beta)
    raise ValueError(f"unknown loss type {loss_type!r}")


def steering_weight(avg_good_plain: torch.Tensor, avg_bad_plain: torch.Tensor, alpha: float,
                    detach: bool = False) -> torch.Tensor:
    """W = σ(-(α·avg_θ(y+|x) + (1-α)·avg_θ(y-|x))); in [0.5, 1) because averaged log-probs are <= 0."""
    weight = torch.sigmoid(-(alpha * avg_good_plain + (1.0 - alpha) * avg_bad_plain))
    return weight.detach() if detach else weight


def sft_loss(policy_sum: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """sft(y|c) = -avg_θ(y|c)."""
    return -average(policy_sum, length)


def implicit_rewards(policy: torch.Tensor, reference: torch.Tensor, lengths: torch.Tensor, loss_type: LossType,
                     beta: float) -> torch.Tensor:
    """β·(logp_θ - logp_ref) per sequence, per-token averaged for IPO (the loss's own convention); (B, 6)."""
    ratio = policy - reference
    return beta * (average(ratio, lengths) if loss_type == "ipo" else ratio)


def sso_loss(policy: torch.Tensor, reference: torch.Tensor, lengths: torch.Tensor,
             settings: LossSettings) -> LossOutput:
    """The configured SSO objective. `policy`, `reference`, `lengths`: (B, 6) in `SEQUENCES` order."""
    s = settings
    lengths = lengths.to(policy.dtype)
    reference = reference.to(policy.dtype)

    l_p1, l_p2, l_p3 = pair_losses(policy, reference, lengths, s.loss_type, s.beta).unbind(1)
    avg = average(policy, lengths)
    metrics: dict[str, torch.Tensor] = {"loss/p1": l_p1, "loss/p2": l_p2, "loss/p3": l_p3}

    if s.objective == "v2":
        plus = l_p2 + s.sft_weight * sft_loss(policy[:, GOOD_GOOD], lengths[:, GOOD_GOOD])
        minus = l_p3 + s.sft_weight * sft_loss(policy[:, RAW_BAD], lengths[:, RAW_BAD])
        per_row = plus + minus
        metrics.update({"loss/plus": plus, "loss/minus": minus})
    else:
        g = l_p2 + l_p3
        w = (steering_weight(avg[:, GOOD_PLAIN], avg[:, BAD_PLAIN], s.alpha, s.w_detach) if s.use_w
             else torch.ones_like(l_p1))
        base = l_p1
        if s.sft_weight:
            # The paper code's SFT mix: sft(y+|x), plus λ-weighted sft(y+|x+) and sft(yo|x-) when G is on.
            mix = sft_loss(policy[:, GOOD_PLAIN], lengths[:, GOOD_PLAIN])
            if s.use_g:
                mix = mix + s.lam * (sft_loss(policy[:, GOOD_GOOD], lengths[:, GOOD_GOOD])
                                     + sft_loss(policy[:, RAW_BAD], lengths[:, RAW_BAD]))
            base = base + s.sft_weight * mix
            metrics["loss/sft"] = mix
        if not s.use_g:
            per_row = w * base
        elif s.w_placement == "all":
            per_row = w * (base + s.lam * g)
        else:
            per_row = base + s.lam * w * g
        metrics.update({"loss/G": g, "W": w})

    rewards = implicit_rewards(policy, reference, lengths, s.loss_type, s.beta)
    margins = rewards[:, CHOSEN] - rewards[:, REJECTED]
    accuracies = (margins > 0).to(policy.dtype)
    for index, (name, (chosen, rejected)) in enumerate(PAIRS.items()):
        metrics[f"rewards/{name}/chosen"] = rewards[:, chosen]
        metrics[f"rewards/{name}/rejected"] = rewards[:, rejected]
        metrics[f"rewards/{name}/margin"] = margins[:, index]
        metrics[f"rewards/{name}/accuracy"] = accuracies[:, index]
    for index, name in enumerate(SEQUENCES):
        metrics[f"logps/{name}"] = avg[:, index]
    metrics = {k: v.detach() for k, v in metrics.items()}
    return LossOutput(loss=per_row.mean(), per_row=per_row, metrics=metrics)
