"""The pair configs built from one triplet, written out by hand: `dpo` is P1 (plain query, y+ over y-) in TRL's
explicit-prompt format, `reward` the same pair as full conversations, `sso` the texts train builds P1-P3 from
plus which responses were cut at the token limit (SPEC §2.1 step 8, §4)."""

from __future__ import annotations

from ssogen.dataset.configs import config_rows
from ssogen.testing.folders import make_record


def test_pair_configs_of_one_row_by_hand() -> None:
    record = make_record(0, "What is 2+2?", system_good="S plus", system_bad="S minus", response_good="Four.",
                         response_bad="Five.", response_raw="It is 4.", finish_reason_bad="length",
                         finish_reason_raw="abort")
    dropped = make_record(1, kept=False, drop_reason="identical_responses")
    rows = config_rows([record, dropped])
    user = {"role": "user", "content": "What is 2+2?"}
    assert rows["dpo"] == [{"id": record.id, "prompt": [user],
                            "chosen": [{"role": "assistant", "content": "Four."}],
                            "rejected": [{"role": "assistant", "content": "Five."}],
                            "truncated_chosen": False, "truncated_rejected": True}]
    assert rows["reward"] == [{"id": record.id,
                               "chosen": [user, {"role": "assistant", "content": "Four."}],
                               "rejected": [user, {"role": "assistant", "content": "Five."}],
                               "truncated_chosen": False, "truncated_rejected": True}]
    # Only finish reason "length" is a cut response (an aborted or otherwise ended one is not).
    assert rows["sso"] == [{"id": record.id, "prompt": "What is 2+2?", "system_good": "S plus",
                            "system_bad": "S minus", "response_good": "Four.", "response_bad": "Five.",
                            "response_raw": "It is 4.", "truncated_good": False, "truncated_bad": True,
                            "truncated_raw": False}]
    assert [r["id"] for r in rows["triplets"]] == [record.id, dropped.id]


def test_the_pairs_config_holds_p1_p2_p3_of_each_kept_row_by_hand() -> None:
    """SPEC §2.1 step 8: P1 x (y+ over y-), P2 x+ (y+ over y-), P3 x- (yo over y+), each flagged by its own
    responses' truncation (y- and yo cut here, y+ complete)."""
    record = make_record(0, "What is 2+2?", system_good="S plus", system_bad="S minus", response_good="Four.",
                         response_bad="Five.", response_raw="It is 4.", finish_reason_bad="length",
                         finish_reason_raw="length")
    dropped = make_record(1, kept=False, drop_reason="identical_responses")
    user = {"role": "user", "content": "What is 2+2?"}

    def answer(text: str) -> list[dict[str, str]]:
        return [{"role": "assistant", "content": text}]

    assert config_rows([record, dropped])["pairs"] == [
        {"id": record.id, "pair": "P1", "prompt": [user], "chosen": answer("Four."), "rejected": answer("Five."),
         "truncated_chosen": False, "truncated_rejected": True},
        {"id": record.id, "pair": "P2", "prompt": [{"role": "system", "content": "S plus"}, user],
         "chosen": answer("Four."), "rejected": answer("Five."), "truncated_chosen": False, "truncated_rejected": True},
        {"id": record.id, "pair": "P3", "prompt": [{"role": "system", "content": "S minus"}, user],
         "chosen": answer("It is 4."), "rejected": answer("Four."), "truncated_chosen": True,
         "truncated_rejected": False},
    ]
    # A chat template without a system role: S+ and S- head the user turn, as generate gave them to the policy.
    merged = config_rows([record], system_supported=False)["pairs"]
    assert [row["prompt"] for row in merged] == [
        [user], [{"role": "user", "content": "S plus\n\nWhat is 2+2?"}],
        [{"role": "user", "content": "S minus\n\nWhat is 2+2?"}]]
    assert [{k: v for k, v in row.items() if k != "prompt"} for row in merged] == [
        {k: v for k, v in row.items() if k != "prompt"} for row in config_rows([record])["pairs"]]
