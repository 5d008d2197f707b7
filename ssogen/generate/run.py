"""The `generate` pipeline: library + queries -> requests -> engine -> records -> pairs -> dataset folder.

Per chunk of rows: (1) feature selection by the policy (one batched call), (2) optional query-specific
principles (one batched call), (3) y+/y-/yo for every row in ONE batched call, ordered so that requests sharing
a system prompt are adjacent (prefix caching). Finished stages go to the append-only store (shards.py) after
each call, so a killed run resumes without recomputing them."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssogen.chat import context_messages, has_chat_template, prompt_token_ids, supports_system_role
from ssogen.dataset.folder import MANIFEST, write_configs, write_json_atomic
from ssogen.dataset.shards import ShardStore
from ssogen.engine import Engine, GenerationRequest, GenerationResult, make_engine, stop_token_ids_of
from ssogen.errors import UserError
from ssogen.generate.config import RunConfig, to_yaml
from ssogen.generate.filters import VARIANTS, apply_filters, leaked_prefix_pattern
from ssogen.generate.inputs import PromptsRead, read_prompts
from ssogen.generate.prompts import TEMPLATE_NAMES, PromptTemplates, TemplateError
from ssogen.generate.selection import (
    SELECTION_STOP,
    Selection,
    derive_seed,
    features_of,
    finish_selection,
    guided_regex,
    parse_feature_names,
    parse_principle_json,
)
from ssogen.principles import Library, LibraryError, LoadedLibrary, load_library
from ssogen.records import TripletRecord, row_id


@dataclass
class Row:
    id: str
    position: int
    prompt: str


@dataclass
class RunPlan:
    """Everything known before a model is loaded (what --dry-run shows)."""

    config: RunConfig
    loaded_library: LoadedLibrary
    templates: PromptTemplates
    templates_digest: str
    prompts: PromptsRead
    rows: list[Row]

    @property
    def library(self) -> Library:
        return self.loaded_library.library

    def fingerprint(self) -> dict[str, Any]:
        config = {k: v for k, v in self.config.model_dump().items() if k not in ("out", "limit", "chunk_size")}
        return {"fingerprint": self.config.fingerprint(self.loaded_library.sha256, self.templates_digest),
                "config": config, "library_sha256": self.loaded_library.sha256}


@dataclass
class ProgressUpdate:
    rows_done: int
    rows_total: int
    kept: int
    dropped: int
    tokens: int  # generated in this invocation
    elapsed_s: float


@dataclass
class GenerateResult:
    out: Path
    records: list[TripletRecord]
    manifest: dict[str, Any]


@dataclass
class _Counters:
    requests: Counter[str] = field(default_factory=Counter)
    tokens: int = 0


def _check_local_model(model: str) -> None:
    path = Path(model).expanduser()
    looks_local = model.startswith((".", "/", "~")) or path.exists() or model.count("/") != 1
    if looks_local and not path.exists():
        raise UserError(f"--model {model}: no such folder")
    if path.exists() and not (path / "config.json").exists():
        raise UserError(f"--model {model}: not a model folder (no config.json)")


def plan_run(config: RunConfig) -> RunPlan:
    """Load and validate the library, templates and prompts; no model is touched."""
    try:
        loaded = load_library(config.principles)
    except LibraryError as exc:
        more = f" (and {len(exc.problems) - 1} more problems)" if len(exc.problems) > 1 else ""
        raise UserError(f"invalid library: {exc.problems[0]}{more}") from None
    if config.features_per_query > len(loaded.library.features):
        raise UserError(f"--features-per-query {config.features_per_query}: the library has only "
                        f"{len(loaded.library.features)} features")
    try:
        templates = PromptTemplates(config.templates)
        digest = hashlib.sha256()
        for name in TEMPLATE_NAMES:
            digest.update(templates.source_of(name).read_bytes())
    except TemplateError as exc:
        raise UserError(str(exc)) from None
    prompts = read_prompts(config.prompts, prompt_field=config.prompt_field, split=config.split,
                           limit=config.limit)
    rows = [Row(id=row_id(r.text, r.position), position=r.position, prompt=r.text) for r in prompts.rows]
    return RunPlan(config=config, loaded_library=loaded, templates=templates, templates_digest=digest.hexdigest(),
                   prompts=prompts, rows=rows)


def _render(render: Callable[..., str], *args: Any) -> str:
    """Call a PromptTemplates method; a template problem becomes one clear UserError line."""
    try:
        return render(*args)
    except TemplateError as exc:
        raise UserError(str(exc)) from None


def dry_run_examples(plan: RunPlan, n: int = 2) -> list[dict[str, Any]]:
    """Rendered selection prompt and S+/S- for the first rows. No model: the features are a seeded random
    pick standing in for the policy's answer."""
    examples = []
    for row in plan.rows[:n]:
        cfg = plan.config
        selection = finish_selection([], plan.library, cfg.features_per_query, run_seed=cfg.seed,
                                     row_id=row.id, extra_prob=cfg.extra_prob)
        features = features_of(selection, plan.library)
        examples.append({
            "id": row.id,
            "prompt": row.prompt,
            "selection_prompt": _render(plan.templates.selection_prompt, plan.library, row.prompt,
                                        cfg.features_per_query),
            "features": selection.features,
            "extra": selection.extra,
            "system_good": _render(plan.templates.system_prompt, features, "good"),
            "system_bad": _render(plan.templates.system_prompt, features, "bad"),
        })
    return examples


def _versions() -> dict[str, str | None]:
    from ssogen import __version__
    from ssogen.envinfo import vllm_build

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    vllm_version, build = vllm_build()
    return {"ssogen": __version__, "vllm": vllm_version, "vllm_build": build, "torch": version("torch"),
            "transformers": version("transformers")}


class _Generator:
    """Runs the stages for chunks of rows against one engine; holds the derived constants of a run."""

    def __init__(self, plan: RunPlan, engine: Engine, store: ShardStore, counters: _Counters,
                 request_order: str = "grouped") -> None:
        self.plan, self.engine, self.store, self.counters = plan, engine, store, counters
        self.request_order = request_order
        self.cfg = plan.config
        self.tokenizer = engine.tokenizer
        if not has_chat_template(self.tokenizer):
            raise UserError(f"--model {self.cfg.model}: the tokenizer has no chat template")
        self.system_supported = supports_system_role(self.tokenizer)
        self.stop_ids = stop_token_ids_of(self.cfg.model, self.tokenizer)
        self.prefix = leaked_prefix_pattern(plan.library)
        self.regex = guided_regex(plan.library) if self.cfg.selection == "guided" else None

    # -- helpers
    def _chat_ids(self, query: str, system: str | None) -> list[int]:
        return prompt_token_ids(self.tokenizer, context_messages(query, system),
                                system_supported=self.system_supported)

    def _request(self, key: str, ids: list[int], *, seed: int, max_tokens: int, temperature: float | None = None,
                 stop: list[str] | None = None, regex: str | None = None) -> GenerationRequest:
        room = self.engine.max_model_len - len(ids)
        return GenerationRequest(
            key=key, prompt_token_ids=ids, max_tokens=max(1, min(max_tokens, room)),
            temperature=self.cfg.temperature if temperature is None else temperature, top_p=self.cfg.top_p,
            seed=seed, stop=stop or [], stop_token_ids=self.stop_ids, guided_regex=regex)

    def _run(self, stage: str, requests: list[GenerationRequest]) -> dict[str, GenerationResult]:
        results = self.engine.generate(requests)
        self.counters.requests[stage] += len(requests)
        self.counters.tokens += sum(r.num_tokens for r in results)
        return {r.key: r for r in results}

    def _too_long(self, ids: list[int]) -> bool:
        return len(ids) >= self.engine.max_model_len

    def _dropped_too_long(self, row: Row, sel: dict[str, Any] | None) -> dict[str, Any]:
        seeds = {v: derive_seed(self.cfg.seed, row.id, v) for v in VARIANTS}
        return TripletRecord(
            id=row.id, position=row.position, prompt=row.prompt,
            features=sel["features"] if sel else [], extra=sel["extra"] if sel else [],
            selection_filled=bool(sel and sel["selection_filled"]), selection_mode=self.cfg.selection,
            principle_source=self.cfg.principle_source, principle_fallback=bool(sel and sel["principle_fallback"]),
            system_good=sel["system_good"] if sel else "", system_bad=sel["system_bad"] if sel else "",
            response_good="", response_bad="", response_raw="",
            finish_reason_good="", finish_reason_bad="", finish_reason_raw="",
            num_tokens_good=0, num_tokens_bad=0, num_tokens_raw=0,
            seed_good=seeds["good"], seed_bad=seeds["bad"], seed_raw=seeds["raw"],
            kept=False, drop_reason="prompt_too_long").model_dump()

    # -- stages
    def select(self, rows: list[Row]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Selection records for rows (and too-long rows as finished, dropped records)."""
        cfg, lib, templates = self.cfg, self.plan.library, self.plan.templates
        requests, too_long = [], []
        for row in rows:
            text = _render(templates.selection_prompt, lib, row.prompt, cfg.features_per_query)
            # A raw completion prompt: no chat template writes a BOS here, so the tokenizer adds its own.
            ids = list(self.tokenizer(text)["input_ids"])
            if self._too_long(ids) or self._too_long(self._chat_ids(row.prompt, None)):
                too_long.append(self._dropped_too_long(row, None))
                continue
            requests.append(self._request(row.id, ids, seed=derive_seed(cfg.seed, row.id, "selection-sample"),
                                          max_tokens=max(cfg.selection_max_tokens, 10 * cfg.features_per_query),
                                          stop=[SELECTION_STOP],
                                          regex=self.regex))
        answers = self._run("selection", requests)
        selections = {}
        for request in requests:
            names = parse_feature_names(answers[request.key].text, lib)
            selections[request.key] = finish_selection(names, lib, cfg.features_per_query, run_seed=cfg.seed,
                                                       row_id=request.key, extra_prob=cfg.extra_prob)
        texts = self._principle_texts(rows, selections) if cfg.principle_source == "policy" else {}
        records = []
        for row in rows:
            if row.id not in selections:
                continue
            selection, features = selections[row.id], features_of(selections[row.id], lib)
            good, bad, fallback = None, None, False
            if row.id in texts:
                pairs = texts[row.id]
                fallback = any(p is None for p in pairs)
                good = [p[0] if p else f.good for p, f in zip(pairs, features, strict=True)]
                bad = [p[1] if p else f.bad for p, f in zip(pairs, features, strict=True)]
            records.append({
                "id": row.id, "features": selection.features, "extra": selection.extra,
                "selection_filled": selection.filled, "principle_fallback": fallback,
                "answer": answers[row.id].text,
                "system_good": _render(templates.system_prompt, features, "good", good),
                "system_bad": _render(templates.system_prompt, features, "bad", bad),
            })
        return records, too_long

    def _principle_texts(self, rows: list[Row], selections: dict[str, Selection]
                         ) -> dict[str, list[tuple[str, str] | None]]:
        """Query-specific (good, bad) texts per chosen feature from the policy; None where the JSON fails."""
        lib, templates = self.plan.library, self.plan.templates
        requests, layout = [], {}
        for row in rows:
            if row.id not in selections:
                continue
            layout[row.id] = []
            for feature in features_of(selections[row.id], lib):
                text = _render(templates.principle_writer_prompt, feature, row.prompt)
                ids = prompt_token_ids(self.tokenizer, [{"role": "user", "content": text}],
                                       system_supported=self.system_supported)
                key = f"{row.id}:{feature.name}"
                layout[row.id].append(key)
                requests.append(self._request(key, ids, seed=derive_seed(self.cfg.seed, row.id,
                                                                         f"principle-{feature.name}"),
                                              max_tokens=self.cfg.principle_max_tokens))
        answers = self._run("principles", requests)
        return {rid: [parse_principle_json(answers[k].text) for k in keys] for rid, keys in layout.items()}

    def sample(self, rows: list[Row], selections: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """y+, y-, yo for every row in one engine call; filters; finished triplet records."""
        cfg = self.cfg
        requests, done = [], []
        contexts = {"good": "system_good", "bad": "system_bad", "raw": None}
        for row in rows:
            sel = selections[row.id]
            ids = {v: self._chat_ids(row.prompt, sel[c] if c else None) for v, c in contexts.items()}
            if any(self._too_long(x) for x in ids.values()):
                done.append(self._dropped_too_long(row, sel))
                continue
            for variant, prompt_ids in ids.items():
                greedy = variant == "raw" and cfg.raw_greedy
                requests.append(self._request(f"{row.id}:{variant}", prompt_ids,
                                              seed=derive_seed(cfg.seed, row.id, variant),
                                              max_tokens=cfg.max_tokens, temperature=0.0 if greedy else None))
        # Requests sharing a system prompt adjacent: the prefix cache then computes each system prompt once.
        # (Sorting token ids puts every shared prefix together.) "shuffled" exists for the benchmark only.
        requests.sort(key=lambda r: (r.prompt_token_ids, r.key))
        if self.request_order == "shuffled":
            random.Random(cfg.seed).shuffle(requests)
        results = self._run("sampling", requests)
        for row in rows:
            if f"{row.id}:good" not in results:
                continue
            sel = selections[row.id]
            got = {v: results[f"{row.id}:{v}"] for v in VARIANTS}
            outcome = apply_filters({v: got[v].text for v in VARIANTS}, {v: got[v].finish_reason for v in VARIANTS},
                                    prefix=self.prefix, keep_truncated=cfg.keep_truncated)
            done.append(TripletRecord(
                id=row.id, position=row.position, prompt=row.prompt,
                features=sel["features"], extra=sel["extra"], selection_filled=sel["selection_filled"],
                selection_mode=cfg.selection, principle_source=cfg.principle_source,
                principle_fallback=sel["principle_fallback"],
                system_good=sel["system_good"], system_bad=sel["system_bad"],
                response_good=outcome.responses["good"], response_bad=outcome.responses["bad"],
                response_raw=outcome.responses["raw"],
                finish_reason_good=got["good"].finish_reason, finish_reason_bad=got["bad"].finish_reason,
                finish_reason_raw=got["raw"].finish_reason,
                num_tokens_good=got["good"].num_tokens, num_tokens_bad=got["bad"].num_tokens,
                num_tokens_raw=got["raw"].num_tokens,
                seed_good=derive_seed(cfg.seed, row.id, "good"), seed_bad=derive_seed(cfg.seed, row.id, "bad"),
                seed_raw=derive_seed(cfg.seed, row.id, "raw"),
                flags=outcome.flags, kept=outcome.kept, drop_reason=outcome.drop_reason).model_dump())
        return done


def check_model(config: RunConfig) -> None:
    """Fail early, before any progress output: the model must exist and have a chat template."""
    _check_local_model(config.model)
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(config.model)
    except Exception as exc:
        raise UserError(f"--model {config.model}: cannot load the tokenizer ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not has_chat_template(tokenizer):
        raise UserError(f"--model {config.model}: the tokenizer has no chat template")
    if config.engine == "transformers" and config.selection == "guided":
        raise UserError("--selection guided needs vLLM structured outputs; use --selection free with "
                        "--engine transformers")


def _build_engine(config: RunConfig) -> Engine:
    check_model(config)
    try:
        return make_engine(config.engine, config.model, config.engine_options())
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"--model {config.model}: the {config.engine} engine failed to load it "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def summarize(records: list[TripletRecord], prompts: PromptsRead, wall_s: float, tokens: int) -> dict[str, Any]:
    kept = [r for r in records if r.kept]

    def mean(values: list[int]) -> float | None:
        return round(sum(values) / len(values), 2) if values else None

    lengths = {v: mean([getattr(r, f"num_tokens_{v}") for r in kept]) for v in VARIANTS}
    good, bad = lengths["good"], lengths["bad"]
    return {
        "rows_in": prompts.rows_in,
        "rows_skipped": dict(prompts.skipped),
        "rows": len(records),
        "sampled": sum(1 for r in records if r.drop_reason != "prompt_too_long"),
        "kept": len(kept),
        "dropped": dict(Counter(r.drop_reason for r in records if not r.kept)),
        "selection_filled": sum(r.selection_filled for r in records),
        "principle_fallback": sum(r.principle_fallback for r in records),
        "flags": dict(Counter(f for r in records for f in r.flags)),
        "mean_tokens_kept": lengths,
        "chosen_rejected_length_ratio": round(good / bad, 3) if good and bad else None,
        "feature_counts": dict(Counter(n for r in records for n in [*r.features, *r.extra])),
        "wall_time_s": round(wall_s, 2),
        "tokens_generated": tokens,
        "tokens_per_s": round(tokens / wall_s, 1) if wall_s > 0 else None,
    }


def _mark_incomplete(out: Path) -> None:
    """A folder being (re)generated must not be published as finished: its data files are about to change."""
    path = out / MANIFEST
    if path.exists():
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return
        manifest["status"] = "in_progress"
        write_json_atomic(path, manifest)


def run_generate(config: RunConfig, *, overwrite: bool = False, engine: Engine | None = None,
                 on_progress: Callable[[ProgressUpdate], None] | None = None,
                 plan: RunPlan | None = None, request_order: str = "grouped") -> GenerateResult:
    """Run (or resume) a generation into config.out and write the dataset folder. `engine` may be given to
    reuse a loaded engine (benchmarks); it must match config.model."""
    started = time.monotonic()
    plan = plan or plan_run(config)
    out = Path(config.out)
    store = ShardStore(out)
    resumed = store.prepare(plan.fingerprint(), overwrite=overwrite)
    finished = store.load("rows")
    selections = store.load("selection")
    wanted = {row.id for row in plan.rows}
    pending = [row for row in plan.rows if row.id not in finished]
    counters = _Counters()
    engine_name = config.engine
    system_merged: bool | None = None
    if pending:
        _mark_incomplete(out)
    try:
        if pending:
            engine = engine or _build_engine(config)
            generator = _Generator(plan, engine, store, counters, request_order)
            system_merged = not generator.system_supported
            engine_name = engine.name

            def report() -> None:
                if on_progress is not None:
                    done = [finished[i] for i in wanted if i in finished]
                    kept = sum(1 for r in done if r["kept"])
                    on_progress(ProgressUpdate(len(done), len(plan.rows), kept, len(done) - kept,
                                               counters.tokens, time.monotonic() - started))

            report()
            for start in range(0, len(pending), config.chunk_size):
                chunk = pending[start:start + config.chunk_size]
                need = [row for row in chunk if row.id not in selections]
                new_selections, too_long = generator.select(need)
                store.append("selection", new_selections)
                selections.update({s["id"]: s for s in new_selections})
                store.append("rows", too_long)
                finished.update({r["id"]: r for r in too_long})
                to_sample = [row for row in chunk if row.id not in finished]
                records = generator.sample(to_sample, selections)
                store.append("rows", records)
                finished.update({r["id"]: r for r in records})
                report()
    except KeyboardInterrupt:
        store.close()
        done = sum(1 for i in wanted if i in finished)
        raise UserError(f"interrupted: {done} of {len(plan.rows)} rows are saved in {out / '.ssogen'}; run the "
                        "same command again to resume", exit_code=130) from None
    finally:
        store.close()
    if system_merged is None:  # nothing left to sample: learn the template's behaviour without a model
        from transformers import AutoTokenizer

        system_merged = not supports_system_role(AutoTokenizer.from_pretrained(config.model))
    records = [TripletRecord.model_validate(finished[row.id]) for row in plan.rows]
    counts = write_configs(out, records)
    (out / "config.resolved.yaml").write_text(to_yaml(config), encoding="utf-8")
    (out / "library.yaml").write_text(plan.loaded_library.text, encoding="utf-8")
    wall = time.monotonic() - started
    manifest = {
        "name": out.resolve().name,
        "status": "complete",
        "versions": _versions(),
        "model": config.model,
        "engine": engine_name,
        "engine_options": config.engine_options().model_dump(),
        "seed": config.seed,
        "sampling": {"temperature": config.temperature, "top_p": config.top_p, "max_tokens": config.max_tokens,
                     "raw_greedy": config.raw_greedy, "seeds": "per request: sha256(seed, row id, variant)"},
        "selection": {"mode": config.selection, "features_per_query": config.features_per_query,
                      "extra_prob": config.extra_prob, "principle_source": config.principle_source},
        "library": {"name": plan.library.name, "version": plan.library.version, "file": "library.yaml",
                    "source": str(plan.loaded_library.path), "sha256": plan.loaded_library.sha256},
        "prompts": {"source": plan.prompts.source, "prompt_field": config.prompt_field},
        "system_role_merged": system_merged,
        "fingerprint": plan.fingerprint()["fingerprint"],
        "configs": counts,
        "resumed": resumed,
        "requests_this_invocation": dict(counters.requests),
        "summary": summarize(records, plan.prompts, wall, counters.tokens),
        "tokens_total": sum(r.num_tokens_good + r.num_tokens_bad + r.num_tokens_raw for r in records),
    }
    write_json_atomic(out / MANIFEST, manifest)
    from ssogen.dataset.card import write_card

    write_card(out)
    return GenerateResult(out=out, records=records, manifest=manifest)

