"""`ssogen judge`: pairwise judging of chosen against rejected by a model, on a seeded sample of a dataset folder.

Every sampled pair is judged twice (chosen shown as A, then as B) in one batched, greedy engine call. Results go
to OUT/judge.json (settings, metrics and every answer) and into the dataset card (its "Judged by a model"
section, in templates/card.md.jinja). The `pairs` config is sampled by query, each with its three pairs (P1, P2, P3),
and its metrics are given for each kind of pair as well as over all of them."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ssogen.chat import merge_system_into_user
from ssogen.dataset.card import card_is_generated, card_templates, write_card
from ssogen.dataset.configs import configs_of
from ssogen.dataset.folder import OutputFolder
from ssogen.dataset.special_files import refuse_special_files
from ssogen.engine import GenerationRequest, close_engine, stop_token_ids_of
from ssogen.engine.options import EngineFields, EngineOptions
from ssogen.engine.seeds import derive_seed
from ssogen.errors import STOPPED, UserError
from ssogen.fingerprint import model_record
from ssogen.judge.task import ORDERS, parse_verdict, render_prompt, template_source, winner
from ssogen.models import engine_load_errors, require_available, resolve_model
from ssogen.ownership import not_complete
from ssogen.settings import command_settings, option


class _JudgeFields(BaseModel):
    judge_model: str = option(..., "Judge model folder or hub id (a chat model).")
    sample: int = option(200, "Pairs to judge (a seeded sample; all when fewer); for the pairs config, queries, each "
                                "with its three pairs.", ge=1)
    seed: int = option(0, "Seed of the sample.", ge=0, lt=2**32)
    config: Literal["dpo", "reward", "pairs"] = option(
        "dpo", "Pairs from the dpo, the reward or the pairs config (P1, P2 and P3, with accuracies for each).")
    max_tokens: int = option(512, "New tokens per judge answer.", ge=1)
    templates: str | None = option(None, "Folder whose judge.jinja (and card.md.jinja) replace the bundled ones.",
                                   default_text="bundled", metavar="FOLDER", min_length=1)


# pydantic lists the last base's fields first: the help shows the judge's options, then the engine's.
@command_settings("ssogen judge")
class JudgeOptions(EngineFields, _JudgeFields):
    """Every option of `ssogen judge` (the folder is its argument)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # inf or nan is no setting

    def engine_options(self, seed: int | None = None) -> EngineOptions:
        return super().engine_options(self.seed if seed is None else seed)


def refuse_a_file_as_pairs(value: str | None) -> None:
    """`judge --config` chooses the pairs, where generate's and train's --config is a YAML file of options: a file
    given here is told so, before "--judge-model is required" (which the file was meant to set) hides it."""
    if value is None or value in ("dpo", "reward", "pairs"):
        return
    if Path(value).suffix.lower() in (".yaml", ".yml", ".json") or "/" in value or Path(value).exists():
        raise UserError(f"--config {value}: judge's --config chooses the pairs to judge, dpo, reward or pairs, "
                        "not a file of options (that is --config of generate and train); give judge's options as "
                        "flags")


@dataclass(frozen=True)
class Pair:
    id: str
    query: str
    chosen: str
    rejected: str
    kind: str | None = None  # P1, P2 or P3 in the `pairs` config, whose rows share their query's id

    @property
    def key(self) -> str:
        """What names the pair in requests and seeds: its id, and its kind where the id is its query's."""
        return self.id if self.kind is None else f"{self.id}:{self.kind}"


def _last(messages: list[dict[str, Any]], role: str) -> str:
    for message in reversed(messages):
        if message.get("role") == role:
            return str(message.get("content") or "")
    return ""


def _query(row: dict[str, Any], config: str) -> str:
    """The request the judge is shown. In `pairs`, P2's and P3's S+ or S- is at its top (as a chat template without
    a system role gets it): those pairs prefer an answer under that context, and P2 without it would be P1 again."""
    if config == "pairs":
        return _last(merge_system_into_user(row["prompt"]), "user")
    return _last(row["prompt"] if config == "dpo" else row["chosen"], "user")


def read_pairs(folder: Path, config: str) -> list[Pair]:
    """The pairs of the `dpo` config (prompt / chosen / rejected), the `reward` config (two conversations) or the
    `pairs` config (three rows per query, `pair` naming each)."""
    refuse_special_files(folder)
    out = OutputFolder(folder)
    manifest = out.read_manifest()
    if unfinished := not_complete(out.manifest, manifest.get("status")):
        raise UserError(unfinished)
    if config not in configs_of(manifest):
        raise UserError(f"--config {config}: {folder} has no {config} config (an earlier ssogen wrote it, before "
                        "that config existed); judge its dpo or reward config")
    path = out.config_file(config)
    if not path.exists():
        raise UserError(f"{folder}: no {config} config ({out.relative(path)} missing)")
    pairs = []
    for row in out.read_config(config).to_pylist():
        pairs.append(Pair(id=row["id"], query=_query(row, config), chosen=_last(row["chosen"], "assistant"),
                          rejected=_last(row["rejected"], "assistant"), kind=row.get("pair")))
    if not pairs:
        raise UserError(f"{folder}: the {config} config has no pairs (no row was kept)")
    return pairs


def sample_pairs(pairs: list[Pair], size: int, seed: int) -> list[Pair]:
    """A seeded sample of `size` queries in the folder's order, each with all its pairs (the same seed and folder
    give the same pairs). A query has one pair in dpo and reward, so `size` pairs; three in `pairs`, and the same
    seed draws the same queries there as in dpo, so P1's numbers compare with dpo's."""
    queries: dict[str, list[Pair]] = {}
    for pair in pairs:
        queries.setdefault(pair.id, []).append(pair)
    if size >= len(queries):
        return list(pairs)
    groups = list(queries.values())
    return [pair for i in sorted(random.Random(seed).sample(range(len(groups)), size)) for pair in groups[i]]


def compute_metrics(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and rates over judged pairs (pairs too long for the judge are left out and counted).

    accuracy per order = chosen wins / parsed answers in that order; `both_orders_chosen_rate` = pairs whose
    two answers both say chosen / judged pairs (an unparseable answer counts against); position bias = parsed
    pairs whose two answers name the same letter (so the verdict followed the position, not the content)."""
    judged = [r for r in results if "skipped" not in r]
    metrics: dict[str, Any] = {"pairs": len(results), "pairs_judged": len(judged),
                               "pairs_too_long": len(results) - len(judged)}
    parsed_total = chosen_total = first_letter = 0
    for order in ORDERS:
        verdicts = [r[order] for r in judged]
        parsed = [v for v in verdicts if v["verdict"] is not None]
        wins = sum(v["winner"] == "chosen" for v in parsed)
        metrics[f"unparseable_{order}"] = len(verdicts) - len(parsed)
        metrics[f"accuracy_{order}"] = wins / len(parsed) if parsed else None
        parsed_total, chosen_total = parsed_total + len(parsed), chosen_total + wins
        first_letter += sum(v["verdict"] == "A" for v in parsed)
    both_parsed = [r for r in judged if all(r[o]["verdict"] is not None for o in ORDERS)]
    both_chosen = sum(all(r[o]["winner"] == "chosen" for o in ORDERS) for r in both_parsed)
    same_letter = sum(r["chosen_first"]["verdict"] == r["chosen_second"]["verdict"] for r in both_parsed)
    metrics.update({
        "judgments": 2 * len(judged),
        "unparseable": 2 * len(judged) - parsed_total,
        "share_of_judgments_chosen": chosen_total / parsed_total if parsed_total else None,
        "both_orders_chosen": both_chosen,
        "both_orders_chosen_rate": both_chosen / len(judged) if judged else None,
        "pairs_both_parsed": len(both_parsed),
        "position_bias_rate": same_letter / len(both_parsed) if both_parsed else None,
        "first_position_rate": first_letter / parsed_total if parsed_total else None,
    })
    return metrics


def judge_metrics(results: list[dict[str, Any]]) -> dict[str, Any]:
    """`compute_metrics` over every judged pair; for the `pairs` config (results naming their `pair`) also the
    number of queries and the same metrics for each kind of pair in `by_pair` (P1, P2 and P3 compare different
    things: their accuracies pooled would hide which of them a judge agrees with)."""
    metrics = compute_metrics(results)
    kinds = list(dict.fromkeys(r["pair"] for r in results if "pair" in r))
    if kinds:
        metrics["queries"] = len({r["id"] for r in results})
        metrics["by_pair"] = {kind: compute_metrics([r for r in results if r.get("pair") == kind]) for kind in kinds}
    return metrics


def _ask_judge(engine: Any, pairs: list[Any], options: JudgeOptions, model_path: str,
               ) -> tuple[dict[str, Any], set[str]]:
    """The judge's answer to every pair in both orders, by request key; and the pairs too long to ask about.
    `model_path`: the judge as loaded (`ModelRef.path`)."""
    from ssogen.chat import has_chat_template, prompt_token_ids

    tokenizer = engine.tokenizer
    if not has_chat_template(tokenizer):
        raise UserError(f"--judge-model {options.judge_model}: the tokenizer has no chat template")
    stop_ids = stop_token_ids_of(model_path, tokenizer)
    requests, too_long = [], set()
    for pair in pairs:
        built = {}
        for order in ORDERS:
            text = render_prompt(pair.query, pair.chosen, pair.rejected, order, options.templates)
            built[order] = prompt_token_ids(tokenizer, [{"role": "user", "content": text}], system_supported=True)
        if any(len(ids) >= engine.max_model_len for ids in built.values()):
            too_long.add(pair.key)
            continue
        for order, ids in built.items():
            room = engine.max_model_len - len(ids)
            requests.append(GenerationRequest(
                key=f"{pair.key}:{order}", prompt_token_ids=ids, max_tokens=min(options.max_tokens, room),
                temperature=0.0, top_p=1.0, seed=derive_seed(options.seed, pair.key, order),
                stop_token_ids=stop_ids))
    return {r.key: r for r in engine.generate(requests)}, too_long


def judge_folder(folder: Path, options: JudgeOptions, engine: Any = None) -> dict[str, Any]:
    """Judge the sample, write FOLDER/judge.json and refresh the card; returns what was written."""
    from ssogen.engine.launch import make_engine

    pairs = sample_pairs(read_pairs(folder, options.config), options.sample, options.seed)
    source = template_source(options.templates)
    card_templates(options.templates)  # a broken card.md.jinja there fails now, not after the judging
    judge_ref = resolve_model(options.judge_model, flag="--judge-model")
    require_available(judge_ref, flag="--judge-model")
    owns_engine = engine is None  # an engine built here is shut down here
    if engine is None:
        with engine_load_errors(judge_ref, options.engine, flag="--judge-model", max_model_len=options.max_model_len):
            engine = make_engine(options.engine, judge_ref.path, options.engine_options())
    try:
        answers, too_long = _ask_judge(engine, pairs, options, judge_ref.path)
    except STOPPED:  # the sample is one engine call: nothing of it was saved, whatever the CLI's default line says
        raise UserError(f"interrupted: no judgment was saved ({len(pairs)} pairs are judged in one batch); run the "
                        "same command again to judge them from the start", exit_code=130) from None
    finally:
        if owns_engine:
            close_engine(engine)
    results: list[dict[str, Any]] = []
    for pair in pairs:
        entry: dict[str, Any] = {"id": pair.id} if pair.kind is None else {"id": pair.id, "pair": pair.kind}
        if pair.key in too_long:
            results.append({**entry, "skipped": "too_long"})
            continue
        for order in ORDERS:
            answer = answers[f"{pair.key}:{order}"]
            verdict = parse_verdict(answer.text)
            entry[order] = {"verdict": verdict, "winner": winner(order, verdict), "answer": answer.text,
                            "finish_reason": answer.finish_reason}
        results.append(entry)
    # A local judge by its folder name and fingerprint, the template by its name: no local path is written.
    judge = {f"judge_{key}": value for key, value in model_record(judge_ref).items()}
    own_template = options.templates is not None and source.parent.resolve() == Path(options.templates).resolve()
    written = {
        **judge, "config": options.config, "sample": options.sample,
        "seed": options.seed, "engine": engine.name, "max_tokens": options.max_tokens,
        "template": {"file": source.name, "origin": "--templates" if own_template else "bundled",
                     "sha256": hashlib.sha256(source.read_bytes()).hexdigest()},
        "metrics": judge_metrics(results),
        "pairs": results,
    }
    OutputFolder(folder).write_judge(written)
    if card_is_generated(folder):  # the same --templates folder may hold a card.md.jinja too
        write_card(folder, templates=options.templates)
    return written
