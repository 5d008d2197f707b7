"""Step 2 (`--principle-source policy`): the policy writes a query-specific good and bad principle for each
chosen feature, as JSON; the prompt, the engine call and the JSON parser. Where the JSON does not parse, the
library's text is used and the row records `principle_fallback`."""

from __future__ import annotations

import json

from ssogen.engine.seeds import derive_seed
from ssogen.generate.inputs import Row
from ssogen.generate.steps.common import Session
from ssogen.generate.steps.selection import Selection, features_of
from ssogen.principles import Feature
from ssogen.templating import Templates

TEMPLATE = "principle_writer.jinja"


def principle_writer_prompt(templates: Templates, feature: Feature, query: str) -> str:
    return templates.render(TEMPLATE, feature=feature, query=query)


def parse_principle_json(text: str) -> tuple[str, str] | None:
    """(good, bad) from the principle writer's answer: the first JSON object in it with non-empty "good" and "bad"
    strings (braces inside the strings and nested objects are fine), or None when there is none."""
    decoder = json.JSONDecoder()
    for start in (i for i, char in enumerate(text) if char == "{"):
        try:
            data, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        good, bad = (data.get("good"), data.get("bad")) if isinstance(data, dict) else (None, None)
        if isinstance(good, str) and isinstance(bad, str) and good.strip() and bad.strip():
            return good.strip(), bad.strip()
    return None


def write_principles(session: Session, rows: list[Row], selections: dict[str, Selection],
                     ) -> dict[str, list[tuple[str, str] | None]]:
    """Query-specific (good, bad) texts per chosen feature, in one engine call; None where the JSON fails."""
    requests = []
    layout: dict[str, list[str]] = {}  # row id -> the request keys of its features
    for row in rows:
        if row.id not in selections:
            continue
        layout[row.id] = []
        for feature in features_of(selections[row.id], session.library):
            text = principle_writer_prompt(session.templates, feature, row.prompt)
            ids = session.chat_ids(text, None)
            key = f"{row.id}:{feature.name}"
            layout[row.id].append(key)
            requests.append(session.request(key, ids, seed=derive_seed(session.config.seed, row.id,
                                                                      f"principle-{feature.name}"),
                                            max_tokens=session.config.principle_max_tokens))
    answers = session.run("principles", requests)
    return {rid: [parse_principle_json(answers[k].text) for k in keys] for rid, keys in layout.items()}
