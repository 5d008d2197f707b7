"""What `ssogen score` asks the engine for: the seven (context, response) log-prob requests of a row and the
token conventions they follow.

Conventions (shared with `ssogen train`, which builds its sequences with the same ssogen.chat helpers):
* contexts are rendered by ssogen.chat exactly as generate sampled from them: x = [user], x+ = [system S+,
  user], x- = [system S-, user], with the system text merged into the user turn when the chat template rejects
  a system role; the prompt text is tokenized with add_special_tokens=False (the template writes any BOS);
* a response is its text's tokens (add_special_tokens=False) followed, when it is complete, by the chat template's
  end-of-turn token(s) (`ssogen.chat.end_of_turn`), where sampling stopped; a response cut at --max-tokens
  (finish reason "length") gets none; the mean is over all of these tokens, end token(s) included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ssogen.records import TripletRecord

# (field, context, response) in request order: the requests of one context are adjacent, so sequences that share
# a prompt prefix sit next to each other in every batch.
SCORED = (
    ("lp_good_plain", "plain", "good"), ("lp_bad_plain", "plain", "bad"), ("lp_raw_plain", "plain", "raw"),
    ("lp_good_good", "good", "good"), ("lp_bad_good", "good", "bad"),
    ("lp_good_bad", "bad", "good"), ("lp_bad_bad", "bad", "bad"),
)
CONVENTION = ("mean over response tokens + the template's end-of-turn token(s) (none after a response cut at the "
              "token limit); chat-template prompt, add_special_tokens=False")


def build_requests(record: TripletRecord, tokenizer: Any, system_supported: bool,
                   end_ids: Sequence[int] | None = None) -> list[Any]:
    """The seven (context, response) requests of a row in SCORED order, keyed `<row id>/<field>`.

    `end_ids`: the template's end-of-turn ids (derived from the tokenizer when not given)."""
    from ssogen.chat import end_of_turn, response_token_ids, sso_context_ids
    from ssogen.engine.scoring import ScoreRequest

    if end_ids is None:
        end_ids = end_of_turn(tokenizer).ids
    # The same helpers as the training collator: score and train see identical token sequences.
    prompts = sso_context_ids(tokenizer, record.prompt, record.system_good, record.system_bad,
                              system_supported=system_supported)
    responses = {v: response_token_ids(tokenizer, getattr(record, f"response_{v}"), end_ids,
                                       complete=getattr(record, f"finish_reason_{v}") != "length")
                 for v in ("good", "bad", "raw")}
    return [ScoreRequest(f"{record.id}/{name}", prompts[context], responses[response])
            for name, context, response in SCORED]
