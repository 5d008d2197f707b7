"""Feature selection from the policy's answer: the prompt asks for several names, ssogen keeps a seeded random k
of the valid ones and fills at random when too few come back (SPEC §2.1 step 1)."""

from __future__ import annotations

from pathlib import Path

from ssogen.engine import GenerationRequest
from ssogen.engine.seeds import derive_seed
from ssogen.generate.config import RunConfig
from ssogen.generate.inputs import Row
from ssogen.generate.steps.common import Session
from ssogen.generate.steps.selection import (
    Selection,
    finish_selection,
    parse_feature_names,
    select_features,
    selection_prompt,
)
from ssogen.principles import load_library
from ssogen.templating import Templates
from ssogen.testing.engines import ScriptedEngine

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


class AnsweringEngine(ScriptedEngine):
    """Records the selection requests and answers each with two names, then starts a made-up next example."""

    def answer(self, request: GenerationRequest) -> str:
        return " Accuracy, Logicality\n###\nRequest: more"


def test_the_selection_request_is_a_raw_completion_sampled_at_0_7_and_0_8_and_stopped_at_the_separator(
        tiny_model: Path) -> None:
    """SPEC §2.1 step 1: the few-shot prompt goes to the policy as it is (no chat template), sampled with the run's
    temperature 0.7 and top-p 0.8 and stopped at `###`, with a seed of its own per row."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    engine = AnsweringEngine(tokenizer)
    config = RunConfig(model=str(tiny_model), out=str(tiny_model.parent / "unused"), seed=5, extra_prob=0.0)
    session = Session(config=config, library=LIBRARY, templates=Templates(), engine=engine, system_supported=True,
                      stop_ids=[])
    rows = [Row(id=f"row{i}", position=i, prompt=f"question {i}") for i in range(2)]
    selections, answers, too_long = select_features(session, rows)
    assert too_long == [] and [r.key for r in engine.requests] == ["row0", "row1"]
    for row, request in zip(rows, engine.requests, strict=True):
        expected = tokenizer(selection_prompt(Templates(), LIBRARY, row.prompt, K))["input_ids"]
        assert request.prompt_token_ids == list(expected)  # the prompt as rendered, no chat turns around it
        assert (request.temperature, request.top_p, request.stop) == (0.7, 0.8, ["###"])
        assert request.seed == derive_seed(5, row.id, "selection-sample")
        assert request.guided_regex is None  # --selection free
        assert set(selections[row.id].features) == {"Accuracy", "Logicality"}
        assert not selections[row.id].filled and selections[row.id].extra == []
        assert answers[row.id].startswith(" Accuracy, Logicality")


def test_the_extra_principle_comes_with_the_library_s_probability_unless_extra_prob_says_otherwise() -> None:
    """SPEC §2.1 step 2: Concision is added with probability q = 0.2 (the library's) by default. Over 4,000 rows a
    share outside 0.2 ± 0.02 is four standard deviations off (and the seeds are fixed: the test cannot flicker)."""
    def share(extra_prob: float | None) -> float:
        picks = [finish_selection(["Safety", "Accuracy"], LIBRARY, K, run_seed=0, row_id=f"r{i}",
                                  extra_prob=extra_prob) for i in range(4000)]
        assert all(p.extra in ([], ["Concision"]) and p.features for p in picks)
        return sum(p.extra == ["Concision"] for p in picks) / len(picks)

    assert abs(share(None) - 0.2) < 0.02
    assert abs(share(0.6) - 0.6) < 0.03
