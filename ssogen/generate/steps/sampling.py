"""Step 3, sampling: the contrastive system prompts S+ / S- (built from the chosen features), y+ / y- / yo for
every row in one engine call, and the triplet records with the cheap filters' decisions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ssogen.engine.seeds import derive_seed
from ssogen.generate.config import RunConfig
from ssogen.generate.filters import apply_filters, leaked_prefix_pattern
from ssogen.generate.inputs import Row
from ssogen.generate.steps.common import Session
from ssogen.generate.steps.selection import Selection, features_of
from ssogen.principles import Feature, join_adjectives
from ssogen.records import VARIANTS, TripletRecord
from ssogen.templating import TemplateError, Templates

TEMPLATE = "system.jinja"
# The context of each response: y+ under S+, y- under S-, yo under the plain query.
CONTEXTS = {"good": "system_good", "bad": "system_bad", "raw": None}


@dataclass(frozen=True)
class PrincipleText:
    """One line of a contrastive system prompt: `name: text`."""

    name: str
    text: str


def system_prompt(templates: Templates, features: list[Feature], side: str,
                  principle_texts: list[str] | None = None) -> str:
    """S+ (side='good') or S- (side='bad') from the chosen features.

    `principle_texts` replaces the library's fixed texts (query-specific principles)."""
    if side not in ("good", "bad"):
        raise ValueError(f"side must be 'good' or 'bad', not {side!r}")
    texts = principle_texts or [getattr(f, side) for f in features]
    adjectives = join_adjectives([getattr(f.adjectives, side) for f in features])
    principles = [PrincipleText(f.name, t) for f, t in zip(features, texts, strict=True)]
    return templates.render(TEMPLATE, adjectives=adjectives, principles=principles)


def check_system_template(templates: Templates, features: list[Feature]) -> None:
    """Before any model loads: S+ and S- of each feature alone must be non-empty and differ, or every row would be
    sampled under an empty or a shared system prompt (and kept, as y+ and y- still differ by chance)."""
    source = templates.source_of(TEMPLATE)
    for feature in features:
        good, bad = system_prompt(templates, [feature], "good"), system_prompt(templates, [feature], "bad")
        for side, text in (("S+", good), ("S-", bad)):
            if not text.strip():
                raise TemplateError(f"{source}: renders an empty {side} (feature {feature.name}); the contrastive "
                                    "system prompt must hold the principles")
        if good == bad:
            raise TemplateError(f"{source}: renders the same text for S+ and S- (feature {feature.name}); the "
                                "template must use the principles or adjectives it is given")


# What a stored selection record must hold (a shard line of another shape is refused, not half read).
SELECTION_FIELDS: dict[str, type] = {"features": list, "extra": list, "selection_filled": bool,
                                     "principle_fallback": bool, "system_good": str, "system_bad": str}


def check_selection_record(record: dict[str, Any]) -> None:
    for name, kind in SELECTION_FIELDS.items():
        if not isinstance(record.get(name), kind):
            raise ValueError(f"{name}: missing or not a {kind.__name__}")


def contrastive_prompts(session: Session, row_id: str, selection: Selection, answer: str,
                        texts: list[tuple[str, str] | None] | None) -> dict[str, Any]:
    """The stored outcome of selection (and principle writing) for a row: features, extras and S+ / S-."""
    features = features_of(selection, session.library)
    good, bad, fallback = None, None, False
    if texts is not None:
        fallback = any(p is None for p in texts)
        good = [p[0] if p else f.good for p, f in zip(texts, features, strict=True)]
        bad = [p[1] if p else f.bad for p, f in zip(texts, features, strict=True)]
    return {
        "id": row_id, "features": selection.features, "extra": selection.extra,
        "selection_filled": selection.filled, "principle_fallback": fallback, "answer": answer,
        "system_good": system_prompt(session.templates, features, "good", good),
        "system_bad": system_prompt(session.templates, features, "bad", bad),
    }


def too_long_record(row: Row, config: RunConfig, sel: dict[str, Any] | None) -> dict[str, Any]:
    """A finished, dropped record for a row whose prompt leaves no room in the context."""
    seeds = {v: derive_seed(config.seed, row.id, v) for v in VARIANTS}
    return TripletRecord(
        id=row.id, position=row.position, prompt=row.prompt,
        features=sel["features"] if sel else [], extra=sel["extra"] if sel else [],
        selection_filled=bool(sel and sel["selection_filled"]), selection_mode=config.selection,
        principle_source=config.principle_source, principle_fallback=bool(sel and sel["principle_fallback"]),
        system_good=sel["system_good"] if sel else "", system_bad=sel["system_bad"] if sel else "",
        response_good="", response_bad="", response_raw="",
        finish_reason_good="", finish_reason_bad="", finish_reason_raw="",
        num_tokens_good=0, num_tokens_bad=0, num_tokens_raw=0,
        seed_good=seeds["good"], seed_bad=seeds["bad"], seed_raw=seeds["raw"],
        kept=False, drop_reason="prompt_too_long").model_dump()


def sample_responses(session: Session, rows: list[Row], selections: dict[str, dict[str, Any]]
                     ) -> list[dict[str, Any]]:
    """y+, y-, yo for every row in one engine call; filters; finished triplet records."""
    cfg = session.config
    requests, done = [], []
    for row in rows:
        sel = selections[row.id]
        ids = {v: session.chat_ids(row.prompt, sel[c] if c else None) for v, c in CONTEXTS.items()}
        if any(session.too_long(x) for x in ids.values()):
            done.append(too_long_record(row, cfg, sel))
            continue
        for variant, prompt_ids in ids.items():
            greedy = variant == "raw" and cfg.raw_greedy
            requests.append(session.request(f"{row.id}:{variant}", prompt_ids,
                                            seed=derive_seed(cfg.seed, row.id, variant),
                                            max_tokens=cfg.max_tokens, temperature=0.0 if greedy else None))
    # Requests sharing a system prompt adjacent: the prefix cache then computes each system prompt once.
    # (Sorting token ids puts every shared prefix together.)
    requests.sort(key=lambda r: (r.prompt_token_ids, r.key))
    results = session.run("sampling", requests)
    prefix = leaked_prefix_pattern(session.library)
    for row in rows:
        if f"{row.id}:good" not in results:
            continue
        sel = selections[row.id]
        got = {v: results[f"{row.id}:{v}"] for v in VARIANTS}
        outcome = apply_filters({v: got[v].text for v in VARIANTS}, {v: got[v].finish_reason for v in VARIANTS},
                                prefix=prefix, keep_truncated=cfg.keep_truncated, keep_empty=cfg.keep_empty)
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
