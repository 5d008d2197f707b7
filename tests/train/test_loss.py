"""The SSO losses against values computed by hand (math module, formulas written out) on fixed log-probs."""

from __future__ import annotations

import math

import pytest
import torch

from ssogen.train.loss import (
    BAD_GOOD,
    BAD_PLAIN,
    CHOSEN,
    GOOD_BAD,
    GOOD_GOOD,
    GOOD_PLAIN,
    PAIRS,
    RAW_BAD,
    REJECTED,
    dpo_loss,
    implicit_rewards,
    ipo_loss,
    pair_losses,
    sso_loss,
    steering_weight,
)
from ssogen.train.objective import LossSettings, describe

# Two rows; columns in SEQUENCES order: (x,y+) (x,y-) (x+,y+) (x+,y-) (x-,yo) (x-,y+).
POLICY = [[-12.0, -30.0, -9.0, -33.0, -14.0, -20.0],
          [-40.0, -18.0, -35.0, -21.0, -25.0, -44.0]]
REFERENCE = [[-13.0, -28.0, -11.0, -29.0, -15.0, -17.0],
             [-38.0, -19.0, -36.0, -20.0, -27.0, -41.0]]
LENGTHS = [[6, 10, 6, 10, 7, 6],
           [20, 9, 20, 9, 12, 20]]


def tensors(requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    policy = torch.tensor(POLICY, dtype=torch.float64, requires_grad=requires_grad)
    return policy, torch.tensor(REFERENCE, dtype=torch.float64), torch.tensor(LENGTHS, dtype=torch.float64)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def hand_dpo(row: int, w: int, lose: int, beta: float) -> float:
    p, r = POLICY[row], REFERENCE[row]
    z = beta * ((p[w] - r[w]) - (p[lose] - r[lose]))
    return -math.log(sigmoid(z))


def hand_ipo(row: int, w: int, lose: int, beta: float) -> float:
    p, r, n = POLICY[row], REFERENCE[row], LENGTHS[row]
    h = (p[w] - r[w]) / n[w] - (p[lose] - r[lose]) / n[lose]
    return (h - 1.0 / (2.0 * beta)) ** 2


def hand_w(row: int, alpha: float) -> float:
    p, n = POLICY[row], LENGTHS[row]
    return sigmoid(-(alpha * p[GOOD_PLAIN] / n[GOOD_PLAIN] + (1 - alpha) * p[BAD_PLAIN] / n[BAD_PLAIN]))


def hand_terms(row: int, base, beta: float = 0.1, alpha: float = 0.5):  # type: ignore[no-untyped-def]
    l1 = base(row, GOOD_PLAIN, BAD_PLAIN, beta)
    g = base(row, GOOD_GOOD, BAD_GOOD, beta) + base(row, RAW_BAD, GOOD_BAD, beta)
    return l1, g, hand_w(row, alpha)


def test_dpo_on_summed_logprobs_matches_hand_values() -> None:
    policy, reference, _ = tensors()
    got = dpo_loss(policy[:, 0], reference[:, 0], policy[:, 1], reference[:, 1], beta=0.1)
    # Row 0: β·[(-12+13) - (-30+28)] = 0.1·3 = 0.3 -> -log σ(0.3)
    assert got[0].item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.3))), abs=1e-12)
    assert got[1].item() == pytest.approx(hand_dpo(1, 0, 1, 0.1), abs=1e-12)


def test_ipo_uses_per_token_averages() -> None:
    policy, reference, lengths = tensors()
    got = ipo_loss(policy[:, 0], reference[:, 0], lengths[:, 0], policy[:, 1], reference[:, 1], lengths[:, 1], 0.1)
    # Row 0: h = (1/6) - (-2/10) = 0.3666..., loss = (h - 5)^2
    assert got[0].item() == pytest.approx((1 / 6 + 0.2 - 5.0) ** 2, abs=1e-12)
    assert got[1].item() == pytest.approx(hand_ipo(1, 0, 1, 0.1), abs=1e-12)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_zero_margin_values(beta: float) -> None:
    same = torch.tensor([[-5.0, -7.0, -5.0, -7.0, -3.0, -4.0]], dtype=torch.float64)
    lengths = torch.tensor([[3, 4, 3, 4, 2, 3]], dtype=torch.float64)
    settings = LossSettings(use_g=False, use_w=False, beta=beta)
    assert sso_loss(same, same, lengths, settings).loss.item() == pytest.approx((1 / (2 * beta)) ** 2)
    dpo = LossSettings(use_g=False, use_w=False, beta=beta, loss_type="dpo")
    assert sso_loss(same, same, lengths, dpo).loss.item() == pytest.approx(math.log(2))
    assert describe(settings)["zero_margin_loss"] == pytest.approx((1 / (2 * beta)) ** 2)


def test_weight_range_and_value() -> None:
    avg = torch.linspace(-50.0, 0.0, 101, dtype=torch.float64)
    w = steering_weight(avg, avg.flip(0), alpha=0.3)
    assert bool((w >= 0.5).all()) and bool((w < 1.0).all())
    assert steering_weight(torch.tensor(0.0), torch.tensor(0.0), 0.5).item() == 0.5
    # α·a + (1-α)·b = 0.3·(-2) + 0.7·(-1) = -1.3 -> σ(1.3)
    assert steering_weight(torch.tensor(-2.0), torch.tensor(-1.0), 0.3).item() == pytest.approx(
        1 / (1 + math.exp(-1.3)), abs=1e-7)


@pytest.mark.parametrize("loss_type", ["ipo", "dpo"])
@pytest.mark.parametrize("case", ["g", "all", "no_w", "no_g", "neither", "sft"])
def test_v1_placements_and_ablations(loss_type: str, case: str) -> None:
    lam, alpha, gamma = 0.1, 0.5, 0.2
    settings = LossSettings(
        loss_type=loss_type,  # type: ignore[arg-type]
        lam=lam, alpha=alpha,
        w_placement="all" if case == "all" else "g",
        use_w=case not in ("no_w", "neither"),
        use_g=case not in ("no_g", "neither"),
        sft_weight=gamma if case == "sft" else 0.0,
    )
    base = hand_ipo if loss_type == "ipo" else hand_dpo
    expected = []
    for row in range(2):
        l1, g, w = hand_terms(row, base, alpha=alpha)
        value = {
            "g": l1 + lam * w * g,
            "all": w * (l1 + lam * g),
            "no_w": l1 + lam * g,
            "no_g": w * l1,
            "neither": l1,
            "sft": l1 + gamma * hand_sft_mix(row, lam) + lam * w * g,
        }[case]
        expected.append(value)
    out = sso_loss(*tensors(), settings)
    assert out.per_row.tolist() == pytest.approx(expected, abs=1e-10)
    assert out.loss.item() == pytest.approx(sum(expected) / 2, abs=1e-10)
    g_hand = [hand_terms(row, base)[1] for row in range(2)]
    assert out.metrics["loss/G"].tolist() == pytest.approx(g_hand, abs=1e-10)


def hand_sft_mix(row: int, lam: float, use_g: bool = True) -> float:
    """sft(y+|x) + λ·sft(y+|x+) + λ·sft(yo|x-) with G (the paper's code), sft(y+|x) alone without; sft = -avg."""
    p, n = POLICY[row], LENGTHS[row]
    mix = -p[GOOD_PLAIN] / n[GOOD_PLAIN]
    if use_g:
        mix += lam * (-p[GOOD_GOOD] / n[GOOD_GOOD]) + lam * (-p[RAW_BAD] / n[RAW_BAD])
    return mix


def test_sft_mix_row_zero_by_hand() -> None:
    # Row 0: sft(y+|x) = 12/6 = 2, sft(y+|x+) = 9/6 = 1.5, sft(yo|x-) = 14/7 = 2 -> mix = 2 + 0.1·1.5 + 0.1·2 = 2.35.
    assert hand_sft_mix(0, 0.1) == pytest.approx(2.35, abs=1e-12)
    out = sso_loss(*tensors(), LossSettings(sft_weight=0.2, lam=0.1))
    assert out.metrics["loss/sft"][0].item() == pytest.approx(2.35, abs=1e-12)
    l1, g, w = hand_terms(0, hand_ipo)
    assert out.per_row[0].item() == pytest.approx(l1 + 0.2 * 2.35 + 0.1 * w * g, abs=1e-10)
    # --no-g: the paper's code weights L and the SFT term together: W·(L + γ·sft(y+|x)) = W·(L + 0.2·2).
    no_g = sso_loss(*tensors(), LossSettings(sft_weight=0.2, use_g=False))
    assert no_g.per_row[0].item() == pytest.approx(w * (l1 + 0.2 * 2.0), abs=1e-10)


@pytest.mark.parametrize("loss_type", ["ipo", "dpo"])
@pytest.mark.parametrize(("case", "formula"), [
    ("g", "L(x,y+,y-) + 0.2·(sft(y+|x) + 0.1·sft(y+|x+) + 0.1·sft(yo|x-)) + 0.1·W·G"),
    ("all", "W·(L(x,y+,y-) + 0.2·(sft(y+|x) + 0.1·sft(y+|x+) + 0.1·sft(yo|x-)) + 0.1·G)"),
    ("no_w", "L(x,y+,y-) + 0.2·(sft(y+|x) + 0.1·sft(y+|x+) + 0.1·sft(yo|x-)) + 0.1·G"),
    ("no_g", "W·(L(x,y+,y-) + 0.2·(sft(y+|x)))"),
    ("neither", "L(x,y+,y-) + 0.2·(sft(y+|x))"),
])
def test_sft_mix_in_every_placement_matches_its_formula(loss_type: str, case: str, formula: str) -> None:
    lam, gamma = 0.1, 0.2
    settings = LossSettings(loss_type=loss_type, lam=lam, sft_weight=gamma,  # type: ignore[arg-type]
                            w_placement="all" if case == "all" else "g",
                            use_w=case not in ("no_w", "neither"), use_g=case not in ("no_g", "neither"))
    assert settings.formula() == formula
    base = hand_ipo if loss_type == "ipo" else hand_dpo
    expected = []
    for row in range(2):
        l1, g, w = hand_terms(row, base)
        mixed = l1 + gamma * hand_sft_mix(row, lam, use_g=case not in ("no_g", "neither"))
        expected.append({"g": mixed + lam * w * g, "all": w * (mixed + lam * g), "no_w": mixed + lam * g,
                         "no_g": w * mixed, "neither": mixed}[case])
    assert sso_loss(*tensors(), settings).per_row.tolist() == pytest.approx(expected, abs=1e-10)


def test_v2_objective_is_l_plus_plus_l_minus_with_dpo_and_sft() -> None:
    gamma, beta = 0.1, 0.1
    out = sso_loss(*tensors(), LossSettings(objective="v2", loss_type="dpo", sft_weight=gamma, beta=beta))
    for row in range(2):
        p, n = POLICY[row], LENGTHS[row]
        l_plus = hand_dpo(row, GOOD_GOOD, BAD_GOOD, beta) + gamma * (-p[GOOD_GOOD] / n[GOOD_GOOD])
        l_minus = hand_dpo(row, RAW_BAD, GOOD_BAD, beta) + gamma * (-p[RAW_BAD] / n[RAW_BAD])
        assert out.per_row[row].item() == pytest.approx(l_plus + l_minus, abs=1e-10)
        assert out.metrics["loss/plus"][row].item() == pytest.approx(l_plus, abs=1e-10)
    assert "W" not in out.metrics


def test_gradient_through_w_only_when_not_detached() -> None:
    lam, alpha = 0.1, 0.5
    grads = {}
    for detach in (False, True):
        policy, reference, lengths = tensors(requires_grad=True)
        loss = sso_loss(policy, reference, lengths, LossSettings(lam=lam, alpha=alpha, w_detach=detach)).loss
        (grads[detach],) = torch.autograd.grad(loss, policy)
    difference = grads[False] - grads[True]
    # Only (x,y+) and (x,y-) feed W. dW/dp(y+|x) = W(1-W)·(-α/|y+|); the loss is a mean over 2 rows.
    for row in range(2):
        _, g, w = hand_terms(row, hand_ipo, alpha=alpha)
        n = LENGTHS[row]
        expected_good = lam * g * w * (1 - w) * (-alpha / n[GOOD_PLAIN]) / 2
        expected_bad = lam * g * w * (1 - w) * (-(1 - alpha) / n[BAD_PLAIN]) / 2
        assert difference[row, GOOD_PLAIN].item() == pytest.approx(expected_good, rel=1e-9)
        assert difference[row, BAD_PLAIN].item() == pytest.approx(expected_bad, rel=1e-9)
        assert difference[row, 2:].abs().max().item() == 0.0
        assert abs(expected_good) > 1e-6


def test_reward_metrics_follow_the_loss_normalisation() -> None:
    out = sso_loss(*tensors(), LossSettings())
    # IPO: β·avg ratio. Row 0 P1: 0.1·(1/6) - 0.1·(-2/10) > 0
    assert out.metrics["rewards/p1/margin"][0].item() == pytest.approx(0.1 * (1 / 6 + 0.2), abs=1e-12)
    assert out.metrics["rewards/p1/accuracy"].tolist() == [1.0, 0.0]  # row 1: -2/20 - 1/9 < 0
    dpo = sso_loss(*tensors(), LossSettings(loss_type="dpo"))
    assert dpo.metrics["rewards/p3/margin"][0].item() == pytest.approx(0.1 * ((-14 + 15) - (-20 + 17)), abs=1e-12)


@pytest.mark.parametrize("loss_type", ["ipo", "dpo"])
def test_the_three_pairs_at_once_equal_each_pair_alone_bit_for_bit(loss_type: str) -> None:
    """P1, P2, P3 are computed together on strided views (the even and odd columns); each must be exactly its pair
    computed on its own columns, and so must the reward margins and accuracies."""
    assert list(PAIRS.values()) == list(zip(range(6)[CHOSEN], range(6)[REJECTED], strict=True))
    torch.manual_seed(4)
    policy, reference = -torch.rand(16, 6) * 80, -torch.rand(16, 6) * 80
    lengths = torch.randint(0, 40, (16, 6)).float()  # zero lengths included (clamped to one token)
    together = pair_losses(policy, reference, lengths, loss_type, 0.1)
    out = sso_loss(policy, reference, lengths, LossSettings(loss_type=loss_type))  # type: ignore[arg-type]
    rewards = implicit_rewards(policy, reference, lengths, loss_type, 0.1)  # type: ignore[arg-type]
    for index, (name, (w, lose)) in enumerate(PAIRS.items()):
        if loss_type == "dpo":
            alone = dpo_loss(policy[:, w], reference[:, w], policy[:, lose], reference[:, lose], 0.1)
        else:
            alone = ipo_loss(policy[:, w], reference[:, w], lengths[:, w], policy[:, lose], reference[:, lose],
                             lengths[:, lose], 0.1)
        assert torch.equal(together[:, index], alone)
        assert torch.equal(out.metrics[f"loss/{name}"], alone)
        margin = rewards[:, w] - rewards[:, lose]
        assert torch.equal(out.metrics[f"rewards/{name}/margin"], margin)
        assert torch.equal(out.metrics[f"rewards/{name}/accuracy"], (margin > 0).float())


def test_metric_means_are_each_metrics_mean_over_the_rows() -> None:
    policy, reference, lengths = tensors()
    out = sso_loss(policy, reference, lengths, LossSettings(sft_weight=0.1))
    out.metrics["a scalar"] = torch.tensor(3.0, dtype=torch.float64)
    means = out.metric_means()
    assert list(means) == list(out.metrics)
    for name, value in out.metrics.items():
        assert means[name].dim() == 0
        assert means[name].item() == pytest.approx(value.float().mean().item(), rel=1e-6), name


def test_formula_names_every_variant() -> None:
    assert LossSettings().formula() == "L(x,y+,y-) + 0.1·W·G"
    assert LossSettings(w_placement="all").formula() == "W·(L(x,y+,y-) + 0.1·G)"
    assert LossSettings(use_w=False).formula() == "L(x,y+,y-) + 0.1·G"
    assert LossSettings(use_g=False).formula() == "W·L(x,y+,y-)"
    assert LossSettings(w_detach=True).formula() == "L(x,y+,y-) + 0.1·W(detached)·G"
    assert LossSettings(objective="v2", sft_weight=0.1).formula() == (
        "L(x+,y+,y-) + 0.1·sft(y+|x+) + L(x-,yo,y+) + 0.1·sft(yo|x-)")


@pytest.mark.parametrize("alpha", [0.2, 0.8])
def test_w_weights_y_plus_by_alpha_and_y_minus_by_one_minus_alpha_inside_sso_loss(alpha: float) -> None:
    """α ≠ 0.5: the weight W of the loss comes from α·avg(y+|x) + (1-α)·avg(y-|x), not the other way round (at the
    default α = 0.5 the two are the same, so the other tests cannot tell them apart)."""
    out = sso_loss(*tensors(), LossSettings(alpha=alpha))
    for row in range(2):
        p, n = POLICY[row], LENGTHS[row]
        # Written out: avg(y+|x) = p[0]/n[0], avg(y-|x) = p[1]/n[1].
        w = 1.0 / (1.0 + math.exp(alpha * p[0] / n[0] + (1 - alpha) * p[1] / n[1]))
        l1, g, _ = hand_terms(row, hand_ipo, alpha=alpha)
        assert out.metrics["W"][row].item() == pytest.approx(w, abs=1e-12)
        assert out.per_row[row].item() == pytest.approx(l1 + 0.1 * w * g, abs=1e-10)
    # Row 0 by hand at α = 0.2: avg(y+|x) = -12/6 = -2, avg(y-|x) = -30/10 = -3 -> W = σ(0.4 + 2.4) = σ(2.8).
    if alpha == 0.2:
        assert out.metrics["W"][0].item() == pytest.approx(1 / (1 + math.exp(-2.8)), abs=1e-12)


def test_zero_margins_are_not_counted_as_accurate() -> None:
    # Policy = reference (the first step of training): every margin is 0, and a pair counts as right only when its
    # chosen response's reward is strictly above the rejected one's (as TRL counts it).
    policy, _, lengths = tensors()
    out = sso_loss(policy, policy.clone(), lengths, LossSettings())
    for name in PAIRS:
        assert out.metrics[f"rewards/{name}/accuracy"].tolist() == [0.0, 0.0]


def test_logged_logps_are_per_token_averages() -> None:
    out = sso_loss(*tensors(), LossSettings())
    # Row 0: (x,y+) -12 over 6 tokens = -2; (x-,yo) -14 over 7 = -2. Row 1: (x,y-) -18 over 9 = -2.
    assert out.metrics["logps/good_plain"].tolist() == pytest.approx([-2.0, -2.0], abs=1e-12)
    assert out.metrics["logps/raw_bad"][0].item() == pytest.approx(-2.0, abs=1e-12)
    assert out.metrics["logps/bad_plain"][1].item() == pytest.approx(-2.0, abs=1e-12)
