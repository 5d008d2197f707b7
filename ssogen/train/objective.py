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
        """The objective in words, matching exactly what `sso_loss` computes."""
        sft = f" + {self.sft_weight:g}·sft(y+|x)" if self.sft_weight else ""
        if self.objective == "v2":
            plus = f" + {self.sft_weight:g}·sft(y+|x+)" if self.sft_weight else ""
            minus = f" + {self.sft_weight:g}·sft(yo|x-)" if self.sft_weight else ""
            return f"L(x+,y+,y-){plus} + L(x-,yo,y+){minus}"
        w = "W" + ("(detached)" if self.w_detach else "")
        if not self.use_g:
            core = f"{w}·L(x,y+,y-)" if self.use_w else "L(x,y+,y-)"
        elif not self.use_w:
            core = f"L(x,y+,y-) + {self.lam:g}·G"
        elif self.w_placement == "all":
            core = f"{w}·(L(x,y+,y-) + {self.lam:g}·G)"
        else:
            core = f"L(x,y+,y-) + {self.lam:g}·{w}·G"
        return core + sft


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
