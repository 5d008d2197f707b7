"""The record types that flow through the pipeline: one triplet per query, and the pairs built from it.

`TripletRecord` is the `triplets` config's row: a contract users build on, so fields are only added."""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from ssogen.chat import as_template_gets, context_messages

Message = dict[str, str]

# The three responses of a row, as field suffixes: y+ (under S+), y- (under S-), yo (plain).
VARIANTS = ("good", "bad", "raw")

# Log-prob columns that `ssogen score` fills: mean token log-prob of a response under a context.
# Names: lp_<response>_<context>, response in good/bad/raw (y+, y-, yo), context plain/good/bad (x, x+, x-).
LOGPROB_FIELDS = (
    "lp_good_plain", "lp_good_good", "lp_good_bad",
    "lp_bad_plain", "lp_bad_good", "lp_bad_bad",
    "lp_raw_plain",
)


def row_id(prompt: str, position: int) -> str:
    """Stable id from the prompt text and its position in the input (duplicates stay distinct)."""
    digest = hashlib.sha256(f"{position}\x00{prompt}".encode()).hexdigest()
    return digest[:16]


class TripletRecord(BaseModel):
    """One query with its chosen principles, the two system prompts and the three sampled responses."""

    model_config = ConfigDict(extra="forbid")

    id: str
    position: int
    prompt: str
    features: list[str]
    extra: list[str]
    selection_filled: bool
    selection_mode: str
    principle_source: str
    principle_fallback: bool = False
    system_good: str
    system_bad: str
    response_good: str
    response_bad: str
    response_raw: str
    finish_reason_good: str
    finish_reason_bad: str
    finish_reason_raw: str
    num_tokens_good: int
    num_tokens_bad: int
    num_tokens_raw: int
    seed_good: int
    seed_bad: int
    seed_raw: int
    flags: list[str] = []
    kept: bool
    drop_reason: str | None = None
    lp_good_plain: float | None = None
    lp_good_good: float | None = None
    lp_good_bad: float | None = None
    lp_bad_plain: float | None = None
    lp_bad_good: float | None = None
    lp_bad_bad: float | None = None
    lp_raw_plain: float | None = None


class PairSource(Protocol):
    """What the pair configs are built from: a `TripletRecord`, or a `triplets` row read back from its parquet file
    as it is (`ssogen.dataset.configs`: the values were a record's when written, and need no validating again)."""

    id: str
    prompt: str
    system_good: str
    system_bad: str
    response_good: str
    response_bad: str
    response_raw: str
    finish_reason_good: str
    finish_reason_bad: str
    finish_reason_raw: str


def dpo_pair(record: PairSource) -> dict[str, Any]:
    """P1 in TRL's conversational explicit-prompt format: plain query, y+ chosen over y- (`pair_truncation`)."""
    return {
        "id": record.id,
        "prompt": [{"role": "user", "content": record.prompt}],
        "chosen": [{"role": "assistant", "content": record.response_good}],
        "rejected": [{"role": "assistant", "content": record.response_bad}],
        **pair_truncation(record),
    }


def reward_pair(record: PairSource) -> dict[str, Any]:
    """Full conversations for TRL's RewardTrainer (implicit prompt): y+ chosen over y- (`pair_truncation`)."""
    user = {"role": "user", "content": record.prompt}
    return {
        "id": record.id,
        "chosen": [user, {"role": "assistant", "content": record.response_good}],
        "rejected": [user, {"role": "assistant", "content": record.response_bad}],
        **pair_truncation(record),
    }


# True where chosen (y+) / rejected (y-) was cut at --max-tokens (kept with --keep-truncated). TRL closes every
# assistant message with the chat template's end-of-turn token, so such a pair teaches the model to stop mid-answer;
# these columns let a user drop them (`ds.filter(lambda r: not (r["truncated_chosen"] or r["truncated_rejected"]))`).
PAIR_TRUNCATION_COLUMNS = ("truncated_chosen", "truncated_rejected")


def pair_truncation(record: PairSource) -> dict[str, bool]:
    return {"truncated_chosen": record.finish_reason_good == "length",
            "truncated_rejected": record.finish_reason_bad == "length"}


SSO_TEXT_COLUMNS = ("id", "prompt", "system_good", "system_bad", "response_good", "response_bad", "response_raw")
# True where the response was cut at --max-tokens (finish reason "length", kept with --keep-truncated): train then
# appends no end-of-turn token after it. `sso` files written before these columns existed read as all complete.
SSO_TRUNCATION_COLUMNS = ("truncated_good", "truncated_bad", "truncated_raw")


def sso_row(record: PairSource) -> dict[str, Any]:
    """What `ssogen train` reads: query, S+, S-, y+, y-, yo (the three pairs are built from these), and which of
    the three responses were cut at the token limit."""
    row: dict[str, Any] = {name: getattr(record, name) for name in SSO_TEXT_COLUMNS}
    for variant in VARIANTS:
        row[f"truncated_{variant}"] = getattr(record, f"finish_reason_{variant}") == "length"
    return row


# The `pairs` config: each kept row's three SSO pairs (SPEC §2.1 step 8), one row each and in this order. Per pair:
# its name, the triplet field holding its system prompt (None: the plain query x), and the responses it prefers
# and rejects, as VARIANTS suffixes.
SSO_PAIRS = (("P1", None, "good", "bad"), ("P2", "system_good", "good", "bad"), ("P3", "system_bad", "raw", "good"))


def sso_pairs(record: PairSource, *, system_supported: bool = True) -> list[dict[str, Any]]:
    """P1, P2 and P3 in TRL's conversational explicit-prompt format, each with the truncation flags of its own
    chosen and rejected response. The prompt is the context as the policy's chat template got it when sampling:
    with `system_supported` false, S+ or S- merged into the user turn, so that TRL's rendering of it with that
    template is the context the responses were sampled under."""
    rows = []
    for name, system, chosen, rejected in SSO_PAIRS:
        context = context_messages(record.prompt, getattr(record, system) if system else None)
        rows.append({
            "id": record.id,
            "pair": name,
            "prompt": as_template_gets(context, system_supported=system_supported),
            "chosen": [{"role": "assistant", "content": getattr(record, f"response_{chosen}")}],
            "rejected": [{"role": "assistant", "content": getattr(record, f"response_{rejected}")}],
            "truncated_chosen": getattr(record, f"finish_reason_{chosen}") == "length",
            "truncated_rejected": getattr(record, f"finish_reason_{rejected}") == "length",
        })
    return rows
