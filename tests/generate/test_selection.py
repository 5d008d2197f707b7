"""Feature selection from the policy's answer: the prompt asks for several names, ssogen keeps a seeded random k
of the valid ones and fills at random when too few come back (SPEC §2.1 step 1)."""

from __future__ import annotations

from ssogen.generate.steps.selection import Selection, finish_selection, parse_feature_names
from ssogen.principles import load_library

LIBRARY = load_library("default").library
K = 2


def select(answer: str, row_id: str = "r1", k: int = K) -> Selection:
    names = parse_feature_names(answer, LIBRARY)
    return finish_selection(names, LIBRARY, k, run_seed=0, row_id=row_id, extra_prob=0.0)


def test_an_answer_ends_where_the_policy_starts_a_new_example() -> None:
    invented = " Safety\nRequest: Write a poem\nQualities: Literariness, Engagement"
    assert parse_feature_names(invented, LIBRARY) == ["Safety"]  # not the made-up request's Engagement


def test_numbered_lists_and_and_are_read() -> None:
    assert parse_feature_names(" 1. Safety\n2) Accuracy", LIBRARY) == ["Safety", "Accuracy"]
    assert parse_feature_names(" Safety and Accuracy", LIBRARY) == ["Safety", "Accuracy"]
    library = LIBRARY.model_copy(update={"features": [LIBRARY.features[0].model_copy(
        update={"name": "Safety and Ethics"})]})
    assert parse_feature_names(" safety and ethics", library) == ["Safety and Ethics"]  # a name holding "and"


def test_more_than_k_names_keep_a_seeded_random_k_of_them() -> None:
    answer = "Safety, Logicality, Accuracy, Engagement"
    named = ["Safety", "Logicality", "Accuracy", "Engagement"]
    assert parse_feature_names(answer, LIBRARY) == named
    picks = [select(answer, row_id=f"r{i}") for i in range(30)]
    for pick in picks:
        assert len(pick.features) == K and len(set(pick.features)) == K
        assert set(pick.features) <= set(named) and not pick.filled
    # Seeded by (run seed, row id): the same row always keeps the same names ...
    assert select(answer, row_id="r3") == picks[3]
    # ... and across rows every named feature is kept sometimes, not only the answer's first k.
    assert {name for pick in picks for name in pick.features} == set(named)
    assert any(set(pick.features) != set(named[:K]) for pick in picks)


def test_fewer_than_k_names_are_filled_at_random_and_marked() -> None:
    picks = [select("Accuracy", row_id=f"r{i}", k=3) for i in range(20)]
    for pick in picks:
        assert pick.filled and "Accuracy" in pick.features
        assert len(pick.features) == 3 and len(set(pick.features)) == 3
        assert set(pick.features) <= set(LIBRARY.feature_names)
    assert len({tuple(sorted(pick.features)) for pick in picks}) > 1  # the fill is random, per row
    exactly_k = select("Accuracy, Safety")
    assert not exactly_k.filled and set(exactly_k.features) == {"Accuracy", "Safety"}


def test_duplicate_names_count_once_whatever_their_case() -> None:
    answer = "safety, SAFETY, Safety., accuracy\nAccuracy"
    assert parse_feature_names(answer, LIBRARY) == ["Safety", "Accuracy"]
    assert set(select(answer).features) == {"Safety", "Accuracy"}
    # Three spellings of one name are one name: with k = 3 the third feature is a random fill.
    assert select("safety, Safety, SAFETY, Accuracy", k=3).filled


def test_unknown_names_are_dropped() -> None:
    answer = "Kindness, Safety, Humour, Concision, Safe"
    # Concision is an extra (added by probability, never chosen) and Safe is an adjective, not a feature name.
    assert parse_feature_names(answer, LIBRARY) == ["Safety"]
    pick = select(answer)
    assert pick.filled and "Safety" in pick.features and len(pick.features) == K
    nothing = select("I think kindness and humour, mostly.")
    assert nothing.filled and len(nothing.features) == K and set(nothing.features) <= set(LIBRARY.feature_names)


def test_the_answer_ends_at_the_few_shot_separator() -> None:
    assert parse_feature_names("Logicality, Accuracy\n###\nRequest: x\nQualities: Safety", LIBRARY) == [
        "Logicality", "Accuracy"]


def test_the_guided_regex_admits_exactly_k_different_names_in_any_order() -> None:
    """It admitted 1..n names, repeats included, so guided rows were still filled in at random."""
    import re

    from ssogen.generate.steps.selection import guided_regex
    from ssogen.principles import Feature, Library

    library = load_library("default").library
    regex = re.compile(guided_regex(library, 3))
    assert regex.fullmatch("Logicality, Safety, Accuracy") and regex.fullmatch(" Accuracy, Safety, Engagement")
    for answer in ("Safety, Safety, Accuracy", "Safety, Accuracy", "Safety, Accuracy, Logicality, Engagement",
                   "Safety, Kindness, Accuracy"):
        assert not regex.fullmatch(answer), answer
    # 30 features, 4 per query: 657,720 orders, past the limit; the loose regex (finish_selection keeps k).
    template = library.features[0].model_dump()
    large = library.model_copy(update={"features": [Feature(**{**template, "name": f"F{i}"}) for i in range(30)]})
    assert isinstance(large, Library) and re.fullmatch(guided_regex(large, 4), "F1, F1")
