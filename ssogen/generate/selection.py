"""Feature selection (SPEC §2.1 steps 1-3): parse the policy's answer, seeded shuffle/fill, extras, principles."""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass

from ssogen.principles import Feature, Library

SELECTION_STOP = "###"  # ends each few-shot example in templates/selection.jinja


def derive_seed(run_seed: int, row_id: str, purpose: str) -> int:
    """A per-request seed from (run seed, row id, purpose): independent of batching, chunking and resuming."""
    digest = hashlib.sha256(f"{run_seed}\x00{row_id}\x00{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def parse_feature_names(answer: str, library: Library) -> list[str]:
    """Library feature names in the answer (comma/newline separated, case-insensitive), de-duplicated."""
    by_key = {f.name.casefold(): f.name for f in library.features}
    names: list[str] = []
    for part in re.split(r"[,\n;]", answer.split(SELECTION_STOP)[0]):
        key = part.strip().strip(".!*-\"'` ").casefold()
        name = by_key.get(key)
        if name is not None and name not in names:
            names.append(name)
    return names


@dataclass
class Selection:
    features: list[str]
    extra: list[str]
    filled: bool


def finish_selection(answer_names: list[str], library: Library, k: int, *, run_seed: int, row_id: str,
                     extra_prob: float | None) -> Selection:
    """Shuffle the valid names with the row's seed, keep k, fill at random when short; roll the extras.

    The policy is asked for several relevant features, not exactly k: when it names more than k, a seeded
    random k of them is kept (so the choice varies between rows instead of always taking its first names);
    when it names fewer, the rest is drawn at random from the library and `filled` records that."""
    rng = random.Random(derive_seed(run_seed, row_id, "selection"))
    names = list(answer_names)
    rng.shuffle(names)
    chosen = names[:k]
    filled = len(chosen) < k
    if filled:
        rest = [f.name for f in library.features if f.name not in chosen]
        rng.shuffle(rest)
        chosen += rest[: k - len(chosen)]
    extra_rng = random.Random(derive_seed(run_seed, row_id, "extra"))
    extra = [e.name for e in library.extras
             if extra_rng.random() < (e.probability if extra_prob is None else extra_prob)]
    return Selection(features=chosen, extra=extra, filled=filled)


def guided_regex(library: Library) -> str:
    """A regex admitting 1..(number of features) library names separated by ', ' (vLLM structured outputs).

    Like the free prompt it lets the policy name several features; `finish_selection` then keeps k of them."""
    name = "(" + "|".join(re.escape(f.name) for f in library.features) + ")"
    return f" ?{name}(, {name}){{0,{len(library.features) - 1}}}"


def parse_principle_json(text: str) -> tuple[str, str] | None:
    """(good, bad) from the principle writer's JSON answer, or None when it does not parse."""
    match = re.search(r"\{.*?\}", text, flags=re.DOTALL)
    if match is None:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    good, bad = data.get("good"), data.get("bad")
    if not (isinstance(good, str) and isinstance(bad, str) and good.strip() and bad.strip()):
        return None
    return good.strip(), bad.strip()


def features_of(selection: Selection, library: Library) -> list[Feature]:
    return [library.feature(n) for n in [*selection.features, *selection.extra]]
