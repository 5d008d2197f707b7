"""Training rows: read the `sso` config and build the six token sequences per row through the chat template.

Each row gives six (context, response) sequences in `ssogen.train.loss.SEQUENCES` order. Prompts are rendered with
`ssogen.chat` (system fallback as in generate) so that train sees exactly the prompt text generate sampled from.
A complete response is its text's tokens followed by the chat template's end-of-turn token(s) (`ssogen.chat.
end_of_turn`, where sampling stopped); a response cut at the token limit (`truncated_*` in the `sso` config) gets
no end token.

The tokens are held compactly (`SSODataset`): the six sequences share three contexts (x, x+, x-) and three responses
(y+, y-, yo), so each of those six pieces is stored once per row, in one int32 array per piece with row offsets,
and a sequence is cut out of its context and response when the collator asks for it. A list of Python ints costs
~36 bytes per token (a pointer and an int object); this costs 4, and each context and response is stored once
instead of two or three times."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import torch

from ssogen.chat import (
    SSO_CONTEXTS,
    closed_response,
    end_of_turn,
    has_chat_template,
    sso_context_texts,
    supports_system_role,
    token_ids,
)
from ssogen.errors import UserError
from ssogen.records import SSO_TRUNCATION_COLUMNS
from ssogen.train.loss import SEQUENCE_PARTS

RESPONSES = {"good": "response_good", "bad": "response_bad", "raw": "response_raw"}
CONTEXTS = SSO_CONTEXTS
# The six stored pieces per row: the three contexts, then the three responses.
PIECES = (*(("context", name) for name in CONTEXTS), *(("response", name) for name in RESPONSES))
# Which stored piece each sequence cuts its prompt and its response from, in SEQUENCES order.
_PARTS = tuple((PIECES.index(("context", c)), PIECES.index(("response", r))) for c, r in SEQUENCE_PARTS)
# Rows whose six texts go to the tokenizer in one call: a fast tokenizer encodes a list in parallel, and Python's
# per-call overhead is paid once per group. A group's token lists are Python ints (~36 bytes a token) until stored,
# so groups stay small (iter_sso_rows makes Python objects of as many rows at once).
ROWS_PER_CALL = 256


@dataclass
class TruncationCounts:
    """How many sequences lost prompt tokens (start of prompt cut) or response tokens (end cut); `cut_in_data`
    counts the responses the data marks as cut at generation's token limit (not a truncation by train)."""

    prompts: int = 0
    responses: int = 0
    sequences: int = 0
    rows_affected: set[int] = field(default_factory=set)
    cut_in_data: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"sequences": self.sequences, "prompts_truncated": self.prompts,
                "responses_truncated": self.responses, "rows_affected": len(self.rows_affected)}


class SSODataset(torch.utils.data.Dataset):
    """Tokenized rows as a map-style dataset (what transformers.Trainer samples from).

    Item i: `row_index` i, `sequences` the six token sequences (1-D int32 tensors, prompt then response) and
    `response_lengths` (six ints). Built by `encode_rows`."""

    def __init__(self, row_ids: list[str], pieces: list[array], offsets: list[array], prompt_lengths: array,
                 response_lengths: array) -> None:
        self.row_ids = row_ids
        # numpy views of the arrays' own buffers (no copy); small numpy slices cost less than torch's per item.
        self._pieces = [np.frombuffer(values, dtype=np.int32) for values in pieces]
        self._offsets = [np.frombuffer(starts, dtype=np.int64) for starts in offsets]
        self._prompt_lengths = np.frombuffer(prompt_lengths, dtype=np.int32).reshape(-1, len(_PARTS))
        self._response_lengths = np.frombuffer(response_lengths, dtype=np.int32).reshape(-1, len(_PARTS))

    def __len__(self) -> int:
        return len(self.row_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        pieces = [values[int(starts[index]):int(starts[index + 1])]
                  for values, starts in zip(self._pieces, self._offsets, strict=True)]
        sequences = []
        for (context, response), kept_prompt, kept_response in zip(
                _PARTS, self._prompt_lengths[index].tolist(), self._response_lengths[index].tolist(), strict=True):
            prompt = pieces[context]
            # A cut prompt keeps its end (the assistant header), a cut response its start.
            sequences.append(torch.from_numpy(np.concatenate(
                (prompt[len(prompt) - kept_prompt:], pieces[response][:kept_response]))))
        return {"row_index": index, "sequences": sequences,
                "response_lengths": self._response_lengths[index].tolist()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[index] for index in range(len(self)))

    @property
    def nbytes(self) -> int:
        """Bytes held for the tokens and lengths (the row ids aside)."""
        arrays: list[np.ndarray] = [*self._pieces, *self._offsets, self._prompt_lengths, self._response_lengths]
        return sum(int(values.nbytes) for values in arrays)


def encode_rows(rows: Iterable[dict[str, Any]], tokenizer: Any, *, max_length: int,
                max_prompt_length: int) -> tuple[SSODataset, TruncationCounts, bool]:
    """Tokenize the six sequences of every row; truncation is counted, never silent.

    A prompt longer than `max_prompt_length` keeps its end (the assistant header must stay); a sequence longer
    than `max_length` loses the end of its response. A complete response ends with the end-of-turn token(s), a
    response marked `truncated_*` does not. `rows` is read once, row by row (an iterator need not be held in
    memory). Returns (dataset, counts, system role supported)."""
    if not has_chat_template(tokenizer):
        raise UserError("--model: the tokenizer has no chat template; ssogen formats x, x+ and x- through the "
                        "chat template (as generate does), so train needs a chat model")
    system_supported = supports_system_role(tokenizer)
    end_ids = end_of_turn(tokenizer).ids
    counts = TruncationCounts()
    row_ids: list[str] = []
    pieces = [array("i") for _ in PIECES]
    offsets = [array("q", [0]) for _ in PIECES]
    prompt_lengths, response_lengths = array("i"), array("i")
    for index, row, texts_ids in _tokenized(rows, tokenizer, system_supported):
        row_ids.append(row["id"])
        counts.cut_in_data += sum(bool(row.get(column)) for column in SSO_TRUNCATION_COLUMNS)
        responses = [closed_response(ids, end_ids, complete=not row.get(f"truncated_{name}", False))
                     for name, ids in zip(RESPONSES, texts_ids[len(CONTEXTS):], strict=True)]
        tokens = texts_ids[:len(CONTEXTS)] + responses
        for values, starts, ids in zip(pieces, offsets, tokens, strict=True):
            values.extend(ids)
            starts.append(len(values))
        for context, response in _PARTS:
            prompt, answer = tokens[context], tokens[response]
            counts.sequences += 1
            kept_prompt = min(len(prompt), max_prompt_length)
            if kept_prompt < len(prompt):
                counts.prompts += 1
                counts.rows_affected.add(index)
            kept_response = len(answer[: max_length - kept_prompt])
            if kept_prompt + len(answer) > max_length:
                counts.responses += 1
                counts.rows_affected.add(index)
            prompt_lengths.append(kept_prompt)
            response_lengths.append(kept_response)
    dataset = SSODataset(row_ids, pieces, offsets, prompt_lengths, response_lengths)
    return dataset, counts, system_supported


def _tokenized(rows: Iterable[dict[str, Any]], tokenizer: Any, system_supported: bool
               ) -> Iterator[tuple[int, dict[str, Any], list[list[int]]]]:
    """(index, row, the token ids of its six texts in `PIECES` order, end-of-turn ids not added) for every row,
    tokenized `ROWS_PER_CALL` rows per tokenizer call."""
    iterator, first = iter(rows), 0
    while group := list(islice(iterator, ROWS_PER_CALL)):
        texts: list[str] = []
        for row in group:
            texts += sso_context_texts(tokenizer, row["prompt"], row["system_good"], row["system_bad"],
                                       system_supported=system_supported)
            texts += [row[column] for column in RESPONSES.values()]
        ids = token_ids(tokenizer, texts)
        width = len(PIECES)
        for offset, row in enumerate(group):
            yield first + offset, row, ids[offset * width:(offset + 1) * width]
        first += len(group)
