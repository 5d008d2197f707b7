"""What `ssogen generate --dry-run` reports beyond the plan: the requests the run would make (a resume's counts
when it would resume) and the rendered prompts of the first rows. No model is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ssogen.dataset.shard_index import SavedRecords
from ssogen.dataset.shards import ShardStore
from ssogen.generate.plan import RunPlan
from ssogen.generate.steps import sampling, selection


@dataclass(frozen=True)
class RequestCounts:
    """The engine requests of the run; a resume's count only what it has left to do."""

    rows: int
    resumes: bool
    done: int  # rows an earlier run finished
    selections_kept: int  # selections an earlier run made for rows not finished yet
    selection: int
    principle_writing: int | None  # at least this many, when the policy writes the principles (None: it does not)
    sampling: int


def request_counts(plan: RunPlan, resumes: bool) -> RequestCounts:
    """What the run would ask the engine for; `resumes`: the output folder holds this run, whose finished rows and
    selections a rerun keeps (the real run's counts)."""
    cfg = plan.config
    rows, slots = len(plan.rows), {row.id: slot for slot, row in enumerate(plan.rows)}
    done: set[str] = set()
    selected: set[str] = set()
    if resumes:  # where the saved records lie, not the records (GBs for a large run)
        store = ShardStore(cfg.out)
        finished, chosen = (store.index(stage, SavedRecords(slots)) for stage in ("rows", "selection"))
        done = {row_id for row_id in slots if row_id in finished}
        selected = {row_id for row_id in slots if row_id in chosen} - done
    left = rows - len(done)
    # The policy writes one principle pair per chosen feature: k per row, and more where a random extra is added.
    writing = cfg.features_per_query * (left - len(selected)) if cfg.principle_source == "policy" else None
    return RequestCounts(rows=rows, resumes=resumes, done=len(done), selections_kept=len(selected),
                         selection=left - len(selected), principle_writing=writing, sampling=3 * left)


def dry_run_examples(plan: RunPlan, n: int = 2) -> list[dict[str, Any]]:
    """Rendered selection prompt and S+/S- for the first rows. No model: the features are a seeded random
    pick standing in for the policy's answer."""
    examples = []
    cfg = plan.config
    for row in plan.rows[:n]:
        chosen = selection.finish_selection([], plan.library, cfg.features_per_query, run_seed=cfg.seed,
                                            row_id=row.id, extra_prob=cfg.extra_prob)
        features = selection.features_of(chosen, plan.library)
        examples.append({
            "id": row.id,
            "prompt": row.prompt,
            "selection_prompt": selection.selection_prompt(plan.templates, plan.library, row.prompt,
                                                           cfg.features_per_query),
            "features": chosen.features,
            "extra": chosen.extra,
            "system_good": sampling.system_prompt(plan.templates, features, "good"),
            "system_bad": sampling.system_prompt(plan.templates, features, "bad"),
        })
    return examples
