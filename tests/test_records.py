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
