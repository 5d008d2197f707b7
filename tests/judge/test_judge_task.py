"""The judge's answer parser, what a verdict means in each order, and the metrics, on hand-written answers."""

from __future__ import annotations

from typing import Any

import pytest

from ssogen.judge.run import Pair, compute_metrics, sample_pairs
from ssogen.judge.task import parse_verdict, render_prompt, winner


@pytest.mark.parametrize("answer, expected", [
    ("Answer A explains the steps; B is wrong.\nVerdict: A", "A"),
    ("B is accurate and complete.\n\nVerdict: B", "B"),
    ("**Verdict:** B.", "B"),
    ("Reasoning...\nVerdict: Answer A", "A"),
    ("verdict - b", None),  # a lower-case letter could be the article "a": never read as a choice
    ("VERDICT: [B]", "B"),
    ("A", "A"),
    ("  **B**  ", "B"),
    ("Verdict: A\nOn reflection...\nVerdict: A", "A"),  # repeated, consistent
])
def test_clear_verdicts_are_parsed(answer: str, expected: str | None) -> None:
    assert parse_verdict(answer) == expected


@pytest.mark.parametrize("answer", [
    "",
    "Both answers are fine.",
    "Verdict: A or B",
    "Verdict: a tie",
    "Verdict: C",
    "I think A is better than B.",  # a preference in prose is not a verdict line
    "Verdict: A\nWait, no.\nVerdict: B",  # contradicts itself
    "Verdict: AB",
    "The verdict: A is clearly better",
    "<|im_start|>assistant Verdict",
])
def test_unclear_answers_are_unparseable(answer: str) -> None:
    assert parse_verdict(answer) is None


def test_the_winner_depends_on_which_position_held_chosen() -> None:
    assert winner("chosen_first", "A") == "chosen" and winner("chosen_first", "B") == "rejected"
    assert winner("chosen_second", "B") == "chosen" and winner("chosen_second", "A") == "rejected"
    assert winner("chosen_first", None) is None


def test_prompt_puts_chosen_in_the_named_position() -> None:
    first = render_prompt("What is 2+2?", "It is 4.", "It is 5.", "chosen_first")
    second = render_prompt("What is 2+2?", "It is 4.", "It is 5.", "chosen_second")
    assert first.index("It is 4.") < first.index("It is 5.") and second.index("It is 5.") < second.index("It is 4.")
    assert "What is 2+2?" in first and first.rstrip().endswith('"Verdict: A" or "Verdict: B".')


def _judged(pair_id: str, first: str | None, second: str | None) -> dict[str, Any]:
    return {"id": pair_id,
            "chosen_first": {"verdict": first, "winner": winner("chosen_first", first)},  # type: ignore[arg-type]
            "chosen_second": {"verdict": second, "winner": winner("chosen_second", second)}}  # type: ignore[arg-type]


def test_metrics_by_hand() -> None:
    results = [
        _judged("1", "A", "B"),   # chosen wins in both orders
        _judged("2", "A", "A"),   # position A both times: chosen, then rejected (position bias)
        _judged("3", "B", "B"),   # position B both times: rejected, then chosen (position bias)
        _judged("4", None, "B"),  # first answer unparseable, second says chosen
        {"id": "5", "skipped": "too_long"},
    ]
    m = compute_metrics(results)
    assert (m["pairs"], m["pairs_judged"], m["pairs_too_long"], m["judgments"]) == (5, 4, 1, 8)
    assert (m["unparseable"], m["unparseable_chosen_first"], m["unparseable_chosen_second"]) == (1, 1, 0)
    # chosen first: A, A, B parsed -> chosen, chosen, rejected
    assert m["accuracy_chosen_first"] == pytest.approx(2 / 3)
    # chosen second: B, A, B, B -> chosen, rejected, chosen, chosen
    assert m["accuracy_chosen_second"] == pytest.approx(3 / 4)
    assert m["share_of_judgments_chosen"] == pytest.approx(5 / 7)
    assert m["both_orders_chosen"] == 1 and m["both_orders_chosen_rate"] == pytest.approx(1 / 4)
    assert m["pairs_both_parsed"] == 3 and m["position_bias_rate"] == pytest.approx(2 / 3)
    assert m["first_position_rate"] == pytest.approx(3 / 7)  # A in: 1 first, 2 first, 2 second


def test_metrics_with_nothing_parsed_are_none_not_zero() -> None:
    m = compute_metrics([_judged("1", None, None)])
    assert m["unparseable"] == 2 and m["accuracy_chosen_first"] is None and m["position_bias_rate"] is None
    assert m["both_orders_chosen_rate"] == 0.0 and m["share_of_judgments_chosen"] is None


def test_sample_is_seeded_and_keeps_the_folder_order() -> None:
    pairs = [Pair(str(i), "q", "c", "r") for i in range(50)]
    a, b = sample_pairs(pairs, 10, seed=3), sample_pairs(pairs, 10, seed=3)
    assert a == b and len(a) == 10 and [int(p.id) for p in a] == sorted(int(p.id) for p in a)
    assert sample_pairs(pairs, 10, seed=4) != a and sample_pairs(pairs, 99, seed=3) == pairs


def test_the_judge_compares_200_pairs_of_the_dpo_config_by_default() -> None:
    from ssogen.judge.run import JudgeOptions

    options = JudgeOptions(judge_model="judge")  # SPEC §2.4: the paper judged 200 pairs
    assert (options.sample, options.config) == (200, "dpo")
