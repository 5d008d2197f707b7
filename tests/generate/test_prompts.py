"""Prompt templates: adjective joining, principle lines, the selection prompt, overrides and template errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssogen.generate.steps.principle_writing import principle_writer_prompt
from ssogen.generate.steps.sampling import system_prompt
from ssogen.generate.steps.selection import selection_prompt
from ssogen.principles import join_adjectives, load_library
from ssogen.templating import TemplateError, Templates

LIB = load_library("default").library


@pytest.mark.parametrize(
    ("names", "good", "bad"),
    [
        (["Safety"], "Safe", "Unsafe"),
        (["Safety", "Accuracy"], "Safe and Accurate", "Unsafe and Inaccurate"),
        (["Safety", "Accuracy", "Engagement"], "Safe, Accurate and Engaging", "Unsafe, Inaccurate and Dull"),
    ],
)
def test_contrastive_system_prompts_join_adjectives(names: list[str], good: str, bad: str) -> None:
    templates = Templates()
    features = [LIB.feature(n) for n in names]
    s_good = system_prompt(templates, features, "good")
    s_bad = system_prompt(templates, features, "bad")
    assert f"must be {good}." in s_good
    assert f"must be {bad}." in s_bad
    for f in features:
        assert f"{f.name}: {f.good}" in s_good
        assert f"{f.name}: {f.bad}" in s_bad
        assert f.good not in s_bad
    assert "Do not mention" in s_good and "Do not mention" in s_bad


def test_join_adjectives_edge_cases() -> None:
    assert join_adjectives([]) == ""
    assert join_adjectives(["A", "B", "C", "D"]) == "A, B, C and D"


def test_query_specific_principle_texts_replace_library_text() -> None:
    features = [LIB.feature("Safety")]
    text = system_prompt(Templates(), features, "good", principle_texts=["Refuse lock picking politely."])
    assert "Safety: Refuse lock picking politely." in text
    assert LIB.feature("Safety").good not in text


def test_selection_prompt_lists_every_feature_and_ends_with_the_query() -> None:
    prompt = selection_prompt(Templates(), LIB, "How do I bake bread?", k=2)
    for f in LIB.features:
        assert f"- {f.name}: {f.meaning}" in prompt
    assert "Concision" not in prompt  # extras are not chosen by the policy
    assert "Qualities: Safety, Helpfulness\n###" in prompt
    assert prompt.endswith("Request: How do I bake bread?\nQualities:")
    assert "the several qualities that matter most" in prompt  # not exactly k: ssogen keeps k itself


def test_principle_writer_prompt_asks_for_json() -> None:
    prompt = principle_writer_prompt(Templates(), LIB.feature("Accuracy"), "What is 2+2?")
    assert '{"good": "...", "bad": "..."}' in prompt and "What is 2+2?" in prompt


def test_override_dir_replaces_only_the_given_template(tmp_path: Path) -> None:
    (tmp_path / "system.jinja").write_text("Be {{ adjectives }}!{% for p in principles %} [{{ p.name }}]{% endfor %}")
    templates = Templates(tmp_path)
    features = [LIB.feature("Safety"), LIB.feature("Accuracy")]
    assert system_prompt(templates, features, "bad") == "Be Unsafe and Inaccurate! [Safety] [Accuracy]"
    assert "Request:" in selection_prompt(templates, LIB, "q", 2)  # falls back to the bundled one


def test_template_syntax_error_names_template_and_line(tmp_path: Path) -> None:
    (tmp_path / "system.jinja").write_text("line one\nline two {% for p in principles %}\nno endfor\n")
    with pytest.raises(TemplateError, match=r"system\.jinja:\d+: template syntax error"):
        system_prompt(Templates(tmp_path), [LIB.feature("Safety")], "good")


def test_template_undefined_variable_names_template_and_line(tmp_path: Path) -> None:
    (tmp_path / "system.jinja").write_text("ok\n{{ no_such_variable }}\n")
    with pytest.raises(TemplateError, match=r"system\.jinja:2: 'no_such_variable' is undefined"):
        system_prompt(Templates(tmp_path), [LIB.feature("Safety")], "good")


def test_missing_override_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"^--templates .*nope: no such folder$"):
        Templates(tmp_path / "nope")
    (tmp_path / "file").write_text("")
    with pytest.raises(TemplateError, match=r"^--templates .*file: is a file, not a folder$"):
        Templates(tmp_path / "file")
