"""Training rows: read the `sso` config and build the six token sequences per row through the chat template.

Each row gives six (context, response) sequences in `ssogen.train.loss.SEQUENCES` order. Prompts are rendered with
`ssogen.chat` (system fallback as in generate) so that train sees exactly the prompt text generate sampled from.
A complete response is its text's tokens followed by the chat template's end-of-turn token(s) (`ssogen.chat.
end_of_turn`, where sampling stopped); a response cut at the token limit (`truncated_*` in the `sso` config) gets
no end token."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ssogen.chat import end_of_turn, has_chat_template, response_token_ids, sso_context_ids, supports_system_role
from ssogen.dataset.folder import OutputFolder
from ssogen.errors import UserError
from ssogen.records import SSO_TEXT_COLUMNS, SSO_TRUNCATION_COLUMNS
from ssogen.train.loss import SEQUENCE_PARTS

RESPONSES = {"good": "response_good", "bad": "response_bad", "raw": "response_raw"}


def sso_files(data_dir: Path) -> list[Path]:
    """The parquet shards of the `sso` config of a generate output folder, with clear errors."""
    if not data_dir.exists():
        raise UserError(f"{data_dir}: no such data folder")
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: not a folder (expected a `ssogen generate` output folder)")
    files = OutputFolder(data_dir).config_files("sso")
    if not files:
        raise UserError(f"{data_dir}: no `sso` config (expected {OutputFolder.data_files('sso')}); "
                        "is this a `ssogen generate` output folder?")
    return files


def read_sso_rows(data_dir: Path) -> list[dict[str, Any]]:
    """All rows of the `sso` config (pyarrow only: the train path does not need `datasets`).

    The text columns are required; the `truncated_*` columns are read when present (older files lack them, and a
    missing or null value means a complete response)."""
    rows: list[dict[str, Any]] = []
    for path in sso_files(data_dir):
        table = OutputFolder(data_dir).read_config("sso", path)
        missing = [c for c in SSO_TEXT_COLUMNS if c not in table.column_names]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)} (the `sso` config needs "
                            f"{', '.join(SSO_TEXT_COLUMNS)})")
        present = [c for c in SSO_TRUNCATION_COLUMNS if c in table.column_names]
        for number, row in enumerate(table.select([*SSO_TEXT_COLUMNS, *present]).to_pylist()):
            null = [c for c in SSO_TEXT_COLUMNS if not isinstance(row[c], str)]
            if null:
                raise UserError(f"{path}: row {number}: column {null[0]} is null")
            for column in SSO_TRUNCATION_COLUMNS:
                row[column] = bool(row.get(column))
            rows.append(row)
    if not rows:
        raise UserError(f"{data_dir}: the `sso` config has no rows")
    return rows


def data_fingerprint(data_dir: Path) -> str:
    """sha256 over the `sso` parquet files' names and bytes: the data part of the reference-cache key."""
    digest = hashlib.sha256()
    for path in sso_files(data_dir):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


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
