import math

from ssogen.formatting import counted, listed, named_counts, percent, plain_zero


def test_named_counts_keep_the_mapping_order_and_are_empty_for_none() -> None:
    assert named_counts({"sso": 3, "dpo": 0, "equal_responses": 12}) == "sso 3, dpo 0, equal_responses 12"
    assert named_counts({}) == ""


def test_counted_and_percent() -> None:
    assert [counted(n, "row") for n in (0, 1, 2)] == ["0 rows", "1 row", "2 rows"]
    assert [counted(n, "query", "queries") for n in (1, 2)] == ["1 query", "2 queries"]
    assert (percent(0.1234), percent(None)) == ("12.3%", "–")


def test_listed() -> None:
    assert [listed(items) for items in ([], ["a"], ["a", "b"], ["a", "b", "c"])] == ["", "a", "a and b", "a, b and c"]


def test_plain_zero_is_never_negative_zero() -> None:
    assert f"{round(-3e-7, 6):.4g}" == "-0"  # how it came about
    assert [f"{plain_zero(v):.4g}" for v in (round(-3e-7, 6), 0.0, -1e-5, 2.5)] == ["0", "0", "-1e-05", "2.5"]
    assert math.copysign(1, plain_zero(-0.0)) == 1
