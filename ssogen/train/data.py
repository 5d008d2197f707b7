"""Training rows: read the `sso` config and build the six token sequences per row through the chat template.

Each row gives six (context, response) sequences in `ssogen.train.loss.SEQUENCES` order. Prompts are rendered with
`ssogen.chat` (system fallback as in generate) so that train sees exactly the prompt text generate sampled from.
A complete response is its text's tokens followed by the chat template's end-of-turn token(s) (`ssogen.chat.
end_of_turn`, where sampling stopped); a response cut at the token limit (`truncated_*` in the `sso` config) gets
no end token."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ssogen.chat import end_of_turn, has_chat_template, response_token_ids, sso_context_ids, supports_system_role
from ssogen.errors import UserError
from ssogen.train.loss import SEQUENCE_PARTS

RESPONSES = {"good": "response_good", "bad": "response_bad", "raw": "response_raw"}


@dataclass
class TruncationCounts:
    """How many sequences lost prompt tokens (start of prompt cut) or response tokens (end cut)."""

    prompts: int = 0
    responses: int = 0
    sequences: int = 0
    rows_affected: set[int] = field(default_factory=set)

    def as_dict(self) -> dict[str, int]:
        return {"sequences": self.sequences, "prompts_truncated": self.prompts,
                "responses_truncated": self.responses, "rows_affected": len(self.rows_affected)}


@dataclass
class EncodedRow:
    index: int
    row_id: str
    sequences: list[list[int]]  # six token lists (prompt + response), SEQUENCES order
    response_lengths: list[int]


def encode_rows(rows: list[dict[str, Any]], tokenizer: Any, *, max_length: int,
                max_prompt_length: int) -> tuple[list[EncodedRow], TruncationCounts, bool]:
    """Tokenize the six sequences of every row; truncation is counted, never silent.

    A prompt longer than `max_prompt_length` keeps its end (the assistant header must stay); a sequence longer
    than `max_length` loses the end of its response. A complete response ends with the end-of-turn token(s), a
    response marked `truncated_*` does not. Returns (rows, counts, system role supported)."""
    if not has_chat_template(tokenizer):
        raise UserError("--model: the tokenizer has no chat template; ssogen formats x, x+ and x- through the "
                        "chat template (as generate does), so train needs a chat model")
    system_supported = supports_system_role(tokenizer)
    end_ids = end_of_turn(tokenizer).ids
    counts = TruncationCounts()
    encoded: list[EncodedRow] = []
    for index, row in enumerate(rows):
        prompts = sso_context_ids(tokenizer, row["prompt"], row["system_good"], row["system_bad"],
                                  system_supported=system_supported)
        responses = {name: response_token_ids(tokenizer, row[column], end_ids,
                                              complete=not row.get(f"truncated_{name}", False))
                     for name, column in RESPONSES.items()}
        sequences, lengths = [], []
        for context, response in SEQUENCE_PARTS:
            prompt, answer = prompts[context], responses[response]
            counts.sequences += 1
            if len(prompt) > max_prompt_length:
                prompt = prompt[-max_prompt_length:]
                counts.prompts += 1
                counts.rows_affected.add(index)
            if len(prompt) + len(answer) > max_length:
                answer = answer[: max_length - len(prompt)]
                counts.responses += 1
                counts.rows_affected.add(index)
            sequences.append(prompt + answer)
            lengths.append(len(answer))
        encoded.append(EncodedRow(index=index, row_id=row["id"], sequences=sequences, response_lengths=lengths))
    return encoded, counts, system_supported


class SSODataset(torch.utils.data.Dataset):
    """Encoded rows as a map-style dataset (what transformers.Trainer samples from)."""

    def __init__(self, rows: list[EncodedRow]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        return {"row_index": row.index, "sequences": row.sequences, "response_lengths": row.response_lengths}
