"""The work of one SSO triplet as TRL's DPOTrainer takes it: three string-prompt pairs (P1 under x, P2 under x+,
P3 under x-), the prompts rendered by ssogen's own chat helpers. Shared by the CPU and GPU training benchmarks,
so that both give TRL exactly the sequences ssogen trains on."""

from __future__ import annotations

from typing import Any


def trl_dpo_pairs(tokenizer: Any, rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    from ssogen.chat import context_messages, render_prompt, supports_system_role

    system_ok = supports_system_role(tokenizer)

    def prompt(query: str, system: str | None) -> str:
        return render_prompt(tokenizer, context_messages(query, system), system_supported=system_ok)

    pairs = []
    for row in rows:
        good, bad, raw = row["response_good"], row["response_bad"], row["response_raw"]
        pairs += [
            {"prompt": prompt(row["prompt"], None), "chosen": good, "rejected": bad},
            {"prompt": prompt(row["prompt"], row["system_good"]), "chosen": good, "rejected": bad},
            {"prompt": prompt(row["prompt"], row["system_bad"]), "chosen": raw, "rejected": good},
        ]
    return pairs
