"""The cheap filters: leaked labels stripped as the paper's code strips them (and nothing else), empty responses
flagged and counted, dropped by default and kept with --keep-empty."""

from __future__ import annotations

import pytest

from ssogen.generate.filters import apply_filters, leaked_prefix_pattern
from ssogen.principles import load_library

PREFIX = leaked_prefix_pattern(load_library("default").library)
STOP = {"good": "stop", "bad": "stop", "raw": "stop"}

STRIPPED = [
    ("Helpful response: Boil it.", "Boil it."),
    ("Helpful and Accurate response: Boil it.", "Boil it."),
    ("Helpful, Accurate and Concise Response: Boil it.", "Boil it."),
    ("helpful, accurate, and concise response: Boil it.", "Boil it."),
    ("Safe & Logical response:  Boil it.", "Boil it."),
    ("Unsafe/Illogical response: Boil it.", "Boil it."),
    ("Response: Boil it.", "Boil it."),
    ("RESPONSE:Boil it.", "Boil it."),
    ("response : Boil it.", "Boil it."),
    ("  Unhelpful Response:\n\nBoil it.", "Boil it."),
    ("**Unhelpful Response:** Boil it.", "Boil it."),
    ("**Unhelpful Response**: Boil it.", "Boil it."),
    ("*Helpful response:* Boil it.", "Boil it."),
    ("__Response:__ Boil it.", "Boil it."),
    ("***Inaccurate and Dull Response:*** Boil it.", "Boil it."),
    ("## Helpful Response:\nBoil it.", "Boil it."),
    ("**Response:**\n- step one\n- step two", "- step one\n- step two"),
]

KEPT_AS_IS = [
    "Response times vary by region: usually a day.",  # "Response" starts a sentence, no label
    "Responses: there are two.",  # plural, not the label
    "A helpful response: it depends.",  # an article is not an adjective list
    "Irresponsible response: no.",  # not an adjective of the library
    "Helpful responses are short.",
    "The answer is yes.\nHelpful response: ignored on a later line",
    "Here is my reply. Response: none.",  # mid-text
    "**Note:** boil it.",
    "Helpfulness response: no.",  # the feature's name, not its adjective
    "Safe-response: no.",
]


@pytest.mark.parametrize(("text", "expected"), STRIPPED)
def test_leaked_labels_are_stripped(text: str, expected: str) -> None:
    outcome = apply_filters({"good": text, "bad": "No.", "raw": "Maybe."}, STOP, prefix=PREFIX,
                            keep_truncated=False)
    assert outcome.responses["good"] == expected
    assert outcome.flags == ["prefix_stripped_good"]


@pytest.mark.parametrize("text", KEPT_AS_IS)
def test_text_that_only_looks_like_a_label_is_kept_as_is(text: str) -> None:
    outcome = apply_filters({"good": text, "bad": "No.", "raw": "Maybe."}, STOP, prefix=PREFIX,
                            keep_truncated=False)
    assert outcome.responses["good"] == text and outcome.flags == []


def test_stripping_happens_before_the_identical_response_check() -> None:
    outcome = apply_filters({"good": "**Helpful Response:** Paris.", "bad": "Inaccurate response: Paris.",
                             "raw": "Lyon."}, STOP, prefix=PREFIX, keep_truncated=False)
    assert (outcome.kept, outcome.drop_reason) == (False, "identical_responses")


def test_empty_responses_are_flagged_dropped_by_default_and_kept_on_request() -> None:
    responses = {"good": "Helpful response:  ", "bad": "", "raw": "Lyon."}
    dropped = apply_filters(responses, STOP, prefix=PREFIX, keep_truncated=False)
    assert (dropped.kept, dropped.drop_reason) == (False, "empty_response")
    assert {"empty_good", "empty_bad"} <= set(dropped.flags)
    kept = apply_filters({**responses, "bad": "No."}, STOP, prefix=PREFIX, keep_truncated=False, keep_empty=True)
    assert (kept.kept, kept.drop_reason) == (True, None)
    assert "empty_good" in kept.flags and kept.responses["good"] == ""


@pytest.mark.parametrize(("responses", "identical"), [
    ({"good": "A.", "bad": "A.", "raw": "C."}, True),  # y+ == y-
    ({"good": "A.", "bad": "B.", "raw": "A."}, True),  # y+ == yo
    ({"good": "A.", "bad": "B.", "raw": " B. "}, True),  # y- == yo (after whitespace)
    ({"good": "A.", "bad": "B.", "raw": "C."}, False),
])
def test_each_equal_pair_of_responses_drops_the_row(responses: dict[str, str], identical: bool) -> None:
    outcome = apply_filters(responses, STOP, prefix=PREFIX, keep_truncated=False)
    assert (outcome.kept, outcome.drop_reason) == ((False, "identical_responses") if identical else (True, None))


@pytest.mark.parametrize("variant", ["good", "bad", "raw"])
def test_a_cut_response_of_any_variant_is_flagged_and_drops_the_row_unless_kept(variant: str) -> None:
    responses = {"good": "A.", "bad": "B.", "raw": "C."}
    finish = {**STOP, variant: "length"}
    dropped = apply_filters(responses, finish, prefix=PREFIX, keep_truncated=False)
    assert (dropped.kept, dropped.drop_reason, dropped.flags) == (False, "truncated", [f"truncated_{variant}"])
    kept = apply_filters(responses, finish, prefix=PREFIX, keep_truncated=True)
    assert (kept.kept, kept.drop_reason, kept.flags) == (True, None, [f"truncated_{variant}"])
