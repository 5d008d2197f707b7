"""What defines the SSO objective, without torch: the settings `ssogen train` validates and prints before it
imports anything heavy, and their description saved with the model. `ssogen.train.loss` computes it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

LossType = Literal["ipo", "dpo"]
Objective = Literal["v1", "v2"]
WPlacement = Literal["g", "all"]

NORMALISATION = {
    "ipo": "per-token averaged log-prob ratios: h = (avg_θ(yw)-avg_ref(yw)) - (avg_θ(yl)-avg_ref(yl))",
    "dpo": "summed log-prob ratios: β·[(logp_θ(yw)-logp_ref(yw)) - (logp_θ(yl)-logp_ref(yl))]",
}


@dataclass(frozen=True)
class LossSettings:
    """Everything that defines the objective; printed at start and saved with the model."""

    objective: Objective = "v1"
    loss_type: LossType = "ipo"
    beta: float = 0.1
    alpha: float = 0.5
    lam: float = 0.1
    w_placement: WPlacement = "g"
    w_detach: bool = False
    use_w: bool = True
    use_g: bool = True
    sft_weight: float = 0.0

    def formula(self) -> str:
        """The objective in words, matching exactly what `sso_loss` computes.

        v1 with γ > 0 follows the paper's code: the SFT mix joins L(x,y+,y-) before any weighting, so W weights it
        wherever W weights L (`all`, `--no-g`) and leaves it unweighted where W weights G only (`g`)."""
        if self.objective == "v2":
            plus = f" + {self.sft_weight:g}·sft(y+|x+)" if self.sft_weight else ""
            minus = f" + {self.sft_weight:g}·sft(yo|x-)" if self.sft_weight else ""
            return f"L(x+,y+,y-){plus} + L(x-,yo,y+){minus}"
        w = "W" + ("(detached)" if self.w_detach else "")
        base = "L(x,y+,y-)"
        if self.sft_weight:
            mix = (f"sft(y+|x) + {self.lam:g}·sft(y+|x+) + {self.lam:g}·sft(yo|x-)" if self.use_g
                   else "sft(y+|x)")
            base += f" + {self.sft_weight:g}·({mix})"
        if not self.use_g:
            if not self.use_w:
                return base
            return f"{w}·({base})" if self.sft_weight else f"{w}·{base}"
        if not self.use_w:
            return f"{base} + {self.lam:g}·G"
        if self.w_placement == "all":
            return f"{w}·({base} + {self.lam:g}·G)"
        return f"{base} + {self.lam:g}·{w}·G"


def describe(settings: LossSettings) -> dict[str, object]:
    """What is printed at start and saved with the model: the loss, its normalisation, every coefficient."""
    s = settings
    info: dict[str, object] = {
        "objective": s.objective,
        "formula": s.formula(),
        "loss_type": s.loss_type,
        "normalisation": NORMALISATION[s.loss_type],
        "beta": s.beta,
        "sft_weight": s.sft_weight,
        "sft": "sft(y|c) = -avg_θ(y|c)",
    }
    if s.objective == "v1":
        info.update({
            "alpha": s.alpha, "lambda": s.lam, "w_placement": s.w_placement, "w_detach": s.w_detach,
            "use_w": s.use_w, "use_g": s.use_g,
            "W": "σ(-(α·avg_θ(y+|x) + (1-α)·avg_θ(y-|x)))",
            "G": "L(x+,y+,y-) + L(x-,yo,y+)",
        })
    if s.loss_type == "ipo":
        info["ipo_target"] = 1.0 / (2.0 * s.beta)
    info["zero_margin_loss"] = round((1.0 / (2.0 * s.beta)) ** 2 if s.loss_type == "ipo" else math.log(2.0), 6)
    return info
