"""Step 1, feature selection: the few-shot prompt, one batched engine call, and the parser of the policy's
answer (library names only; a seeded shuffle keeps k, a seeded fill when it names too few; then the extras)."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from ssogen.engine.seeds import derive_seed
from ssogen.generate.inputs import Row
from ssogen.generate.steps.common import Session
from ssogen.principles import Feature, Library
from ssogen.templating import Templates

TEMPLATE = "selection.jinja"
SELECTION_STOP = "###"  # ends each few-shot example in templates/selection.jinja


def selection_prompt(templates: Templates, library: Library, query: str, k: int) -> str:
    """The few-shot prompt asking for the several features that matter most for `query` (a raw completion
    prompt; not exactly k, as in the paper: `finish_selection` keeps k)."""
    return templates.render(TEMPLATE, features=library.features, examples=library.examples, query=query, k=k)


# A policy that goes on past its answer writes the next few-shot example: its names are not this query's.
NEXT_EXAMPLE = re.compile(r"\n\s*Request:")
LIST_MARKER = re.compile(r"^\d+[.)]\s+")  # "1. Safety" of an answer written as a numbered list


def parse_feature_names(answer: str, library: Library) -> list[str]:
    """Library feature names in the answer (comma/newline separated, also "A and B", case-insensitive), up to the
    end of the answer (`###`, or a next `Request:` the policy made up), de-duplicated."""
    by_key = {f.name.casefold(): f.name for f in library.features}
    names: list[str] = []
    for part in re.split(r"[,\n;]", NEXT_EXAMPLE.split(answer.split(SELECTION_STOP)[0])[0]):
        part = LIST_MARKER.sub("", part.strip())
        pieces = [part] if _key(part) in by_key else re.split(r"\s+and\s+", part)  # a name may hold "and"
        for piece in pieces:
            name = by_key.get(_key(piece))
            if name is not None and name not in names:
                names.append(name)
    return names


def _key(part: str) -> str:
    return part.strip().strip(".!*-\"'` ").casefold()


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


# The exact regex spells out every ordered choice of k names: 5,040 of them (10 features, 4 per query) are ~80 KB
# of regex, which xgrammar compiled in 0.27 s with a 2,048-token vocabulary on this CPU; larger ones were not tried.
EXACT_GUIDED_SEQUENCES = 5040


def guided_regex(library: Library, k: int) -> str:
    """A regex for vLLM's structured outputs: exactly k different library names separated by ', ', in the policy's
    order, so every guided row gets its k features from the policy. It spells out every ordered choice (a trie);
    past EXACT_GUIDED_SEQUENCES of them it admits 1..(number of features) names, repeats included, and
    `finish_selection` keeps k of those named (filling at random when fewer differ)."""
    names = [re.escape(f.name) for f in library.features]
    if math.perm(len(names), k) > EXACT_GUIDED_SEQUENCES:
        name = "(" + "|".join(names) + ")"
        return f" ?{name}(, {name}){{0,{len(names) - 1}}}"

    def choices(used: frozenset[int], left: int) -> str:
        return "(" + "|".join(
            name + (f", {choices(used | {i}, left - 1)}" if left > 1 else "")
            for i, name in enumerate(names) if i not in used) + ")"

    return f" ?{choices(frozenset(), k)}"


def features_of(selection: Selection, library: Library) -> list[Feature]:
    return [library.feature(n) for n in [*selection.features, *selection.extra]]


def select_features(session: Session, rows: list[Row]) -> tuple[dict[str, Selection], dict[str, str], list[Row]]:
    """The selection of every row in one engine call: (selections and raw answers by row id, rows whose prompt
    leaves no room to answer)."""
    cfg, library = session.config, session.library
    regex = guided_regex(library, cfg.features_per_query) if cfg.selection == "guided" else None
    requests, too_long = [], []
    for row in rows:
        text = selection_prompt(session.templates, library, row.prompt, cfg.features_per_query)
        # A raw completion prompt: no chat template writes a BOS here, so the tokenizer adds its own.
        ids = list(session.tokenizer(text)["input_ids"])
        if session.too_long(ids) or session.too_long(session.chat_ids(row.prompt, None)):
            too_long.append(row)
            continue
        requests.append(session.request(row.id, ids, seed=derive_seed(cfg.seed, row.id, "selection-sample"),
                                        max_tokens=max(cfg.selection_max_tokens, 10 * cfg.features_per_query),
                                        stop=[SELECTION_STOP], regex=regex))
    answers = session.run("selection", requests)
    selections = {}
    for request in requests:
        names = parse_feature_names(answers[request.key].text, library)
        selections[request.key] = finish_selection(names, library, cfg.features_per_query, run_seed=cfg.seed,
                                                   row_id=request.key, extra_prob=cfg.extra_prob)
    return selections, {key: result.text for key, result in answers.items()}, too_long
