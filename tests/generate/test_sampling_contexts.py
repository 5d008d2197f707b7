"""Step 5 and the pair table of SPEC §2.1 with a recording engine: y+ is sampled under S+, y- under S-, yo under the
plain query (no system prompt), each with its own seed from (run seed, row id, variant); the record keeps each
response under its own name, after the cheap filters. No model runs: the engine answers from the prompt it got."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssogen.engine import GenerationRequest
from ssogen.engine.seeds import derive_seed
from ssogen.generate.config import RunConfig
from ssogen.generate.inputs import Row
from ssogen.generate.steps.common import Session
from ssogen.generate.steps.sampling import contrastive_prompts, sample_responses
from ssogen.generate.steps.selection import Selection
from ssogen.principles import load_library
from ssogen.templating import Templates
from ssogen.testing.engines import ScriptedEngine

LIBRARY = load_library("default").library
S_GOOD = "GOODSYSTEM follow the good principles"
S_BAD = "BADSYSTEM follow the bad principles"


class RecordingEngine(ScriptedEngine):
    """Answers by what its prompt holds: "from S+", "from S-" or "from x" (no system text), and a leaked label on
    yo's answer so that the filters have something to strip."""

    def answer(self, request: GenerationRequest) -> str:
        prompt = self.tokenizer.decode(request.prompt_token_ids)
        assert not (S_GOOD in prompt and S_BAD in prompt)
        text = "from S+" if S_GOOD in prompt else "from S-" if S_BAD in prompt else "Helpful response: from x"
        return f"{text} ({request.key.split(':')[0]})"


@pytest.mark.parametrize("raw_greedy", [False, True])
def test_each_response_is_sampled_under_its_own_context_with_its_own_seed(tiny_model: Path,
                                                                           raw_greedy: bool) -> None:
    from transformers import AutoTokenizer

    engine = RecordingEngine(AutoTokenizer.from_pretrained(tiny_model))
    config = RunConfig(model=str(tiny_model), out=str(tiny_model.parent / "unused"), seed=11, raw_greedy=raw_greedy,
                       temperature=0.7)
    session = Session(config=config, library=LIBRARY, templates=Templates(), engine=engine, system_supported=True,
                      stop_ids=[])
    rows = [Row(id=f"row{i}", position=i, prompt=f"question {i}") for i in range(2)]
    selections = {row.id: {"features": ["Safety"], "extra": [], "selection_filled": False,
                           "principle_fallback": False, "system_good": S_GOOD, "system_bad": S_BAD} for row in rows}
    records = sample_responses(session, rows, selections)

    by_key = {request.key: request for request in engine.requests}
    assert sorted(by_key) == sorted(f"row{i}:{v}" for i in range(2) for v in ("good", "bad", "raw"))
    for record in records:
        row_id = record["id"]
        assert record["kept"] and record["drop_reason"] is None
        # y+ under S+, y- under S-, yo under the plain query; yo's leaked label stripped.
        assert record["response_good"] == f"from S+ ({row_id})"
        assert record["response_bad"] == f"from S- ({row_id})"
        assert record["response_raw"] == f"from x ({row_id})"
        assert record["flags"] == ["prefix_stripped_raw"]
        for variant in ("good", "bad", "raw"):
            seed = derive_seed(11, row_id, variant)
            assert by_key[f"{row_id}:{variant}"].seed == seed == record[f"seed_{variant}"]
        assert len({record["seed_good"], record["seed_bad"], record["seed_raw"]}) == 3
        # Only yo may be greedy (--raw-greedy); y+ and y- are always sampled.
        assert by_key[f"{row_id}:raw"].temperature == (0.0 if raw_greedy else 0.7)
        assert by_key[f"{row_id}:good"].temperature == by_key[f"{row_id}:bad"].temperature == 0.7


def test_query_specific_principles_go_to_their_side_and_a_missing_one_falls_back() -> None:
    class Stub:
        library, templates = LIBRARY, Templates()

    safety, accuracy = LIBRARY.feature("Safety"), LIBRARY.feature("Accuracy")
    selection = Selection(features=["Safety", "Accuracy"], extra=[], filled=False)
    written = contrastive_prompts(Stub(), "r", selection, "", [("GOOD-SAFETY", "BAD-SAFETY"), None])  # type: ignore[arg-type]
    assert written["principle_fallback"] is True  # one of two fell back
    assert "Safety: GOOD-SAFETY" in written["system_good"] and f"Accuracy: {accuracy.good}" in written["system_good"]
    assert "Safety: BAD-SAFETY" in written["system_bad"] and f"Accuracy: {accuracy.bad}" in written["system_bad"]
    assert "GOOD-SAFETY" not in written["system_bad"] and safety.bad not in written["system_bad"]
    every = contrastive_prompts(Stub(), "r", selection, "", [("g1", "b1"), ("g2", "b2")])  # type: ignore[arg-type]
    assert every["principle_fallback"] is False


def test_sampling_and_selection_defaults_follow_the_spec(tmp_path: Path) -> None:
    # SPEC §2.1: k = 2 features, temperature 0.7, top-p 0.8, 2048 new tokens, yo sampled (not greedy).
    config = RunConfig(model="m", out=str(tmp_path / "out"))
    assert (config.features_per_query, config.temperature, config.top_p, config.max_tokens, config.raw_greedy) == (
        2, 0.7, 0.8, 2048, False)


def test_an_extra_principle_joins_both_system_prompts_after_the_chosen_features() -> None:
    """SPEC §2.1 steps 2 and 4: the extra (Concision) is added to the query's list, so S+ asks for a "Safe and
    Concise" response with Concision's good text and S- for an "Unsafe and Verbose" one with its bad text."""
    class Stub:
        library, templates = LIBRARY, Templates()

    concision = LIBRARY.feature("Concision")
    selection = Selection(features=["Safety"], extra=["Concision"], filled=False)
    written = contrastive_prompts(Stub(), "r", selection, "", None)  # type: ignore[arg-type]
    assert written["features"] == ["Safety"] and written["extra"] == ["Concision"]
    assert "must be Safe and Concise." in written["system_good"]
    assert "must be Unsafe and Verbose." in written["system_bad"]
    assert f"Concision: {concision.good}" in written["system_good"]
    assert f"Concision: {concision.bad}" in written["system_bad"]


@pytest.mark.parametrize("model", ["tiny_model", "tiny_model_no_system"])
def test_the_pairs_prompts_render_the_contexts_the_responses_were_sampled_under(model: str,
                                                                                request: pytest.FixtureRequest
                                                                                ) -> None:
    """The `pairs` config's prompts, through the policy's chat template as TRL applies it, are token for token the
    prompts sampling gave the engine: P1 is x (where yo was sampled), P2 x+ (y+), P3 x- (y-). A template without
    a system role (the second model) gets S+ / S- merged into the user turn, in generate and in `pairs` alike."""
    from transformers import AutoTokenizer

    from ssogen.chat import supports_system_role
    from ssogen.records import TripletRecord, sso_pairs

    tokenizer = AutoTokenizer.from_pretrained(request.getfixturevalue(model))
    system_supported = supports_system_role(tokenizer)
    assert system_supported == (model == "tiny_model")
    engine = RecordingEngine(tokenizer)
    config = RunConfig(model="m", out="unused", seed=11)
    session = Session(config=config, library=LIBRARY, templates=Templates(), engine=engine,
                      system_supported=system_supported, stop_ids=[])
    row = Row(id="row0", position=0, prompt="question 0")
    selection = {"features": ["Safety"], "extra": [], "selection_filled": False, "principle_fallback": False,
                 "system_good": S_GOOD, "system_bad": S_BAD}
    [record] = sample_responses(session, [row], {row.id: selection})
    sampled = {sent.key: sent.prompt_token_ids for sent in engine.requests}
    pairs = sso_pairs(TripletRecord.model_validate(record), system_supported=system_supported)
    for pair, variant in zip(pairs, ("raw", "good", "bad"), strict=True):
        text = tokenizer.apply_chat_template(pair["prompt"], tokenize=False, add_generation_prompt=True)
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == sampled[f"row0:{variant}"], pair["pair"]
