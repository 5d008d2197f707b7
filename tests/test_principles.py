"""Principle libraries: the bundled default, and every bad-input case giving FILE:LINE: field: message."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.principles import BUNDLED_DIR, Library, LibraryError, load_library

runner = CliRunner()
DEFAULT_TEXT = (BUNDLED_DIR / "default.yaml").read_text(encoding="utf-8")
# The examples name Safety where they named Accuracy: a case that renames Accuracy has that one problem.
NO_ACCURACY_EXAMPLES = DEFAULT_TEXT.replace("Accuracy]", "Safety]")


def line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


def test_default_library_has_the_papers_features() -> None:
    lib = load_library("default").library
    assert [f.name for f in lib.features] == [
        "Safety", "Logicality", "Comprehensiveness", "Helpfulness", "Literariness", "Accuracy", "Engagement"]
    # SPEC §3: every feature's adjective pair, and the extra's (they open S+ and S-: "must be Safe and Logical").
    assert [(f.adjectives.good, f.adjectives.bad) for f in lib.features] == [
        ("Safe", "Unsafe"), ("Logical", "Illogical"), ("Comprehensive", "Incomplete"), ("Helpful", "Unhelpful"),
        ("Literary", "Boring"), ("Accurate", "Inaccurate"), ("Engaging", "Dull")]
    assert [(e.adjectives.good, e.adjectives.bad) for e in lib.extras] == [("Concise", "Verbose")]
    assert [(e.name, e.probability) for e in lib.extras] == [("Concision", 0.2)]
    assert lib.feature("accuracy").adjectives.bad == "Inaccurate"


def sentences(text: str) -> list[str]:
    """Split at '.', '!' or '?' followed by a space and a capital letter (the texts use no abbreviations)."""
    return re.split(r"(?<=[.!?])\s+(?=[A-Z])", text.strip())


def test_default_texts_are_four_to_six_sentences_and_good_and_bad_differ() -> None:
    lib = load_library("default").library
    texts = []
    for feature in [*lib.features, *lib.extras]:
        good, bad = sentences(feature.good), sentences(feature.bad)
        assert 4 <= len(good) <= 6, (feature.name, "good", good)
        assert 4 <= len(bad) <= 6, (feature.name, "bad", bad)
        # A bad principle reverses its good one behaviour by behaviour, so the two run sentence for sentence.
        assert len(good) == len(bad), feature.name
        assert all(g != b for g, b in zip(good, bad, strict=True)), feature.name
        assert feature.good != feature.bad and feature.good.endswith(".") and feature.bad.endswith(".")
        assert "\n" not in feature.meaning  # one line: the selection prompt's description
        texts += [feature.good, feature.bad]
    assert len(set(texts)) == len(texts)
    assert "well-being" in lib.feature("Safety").good and "professional" in lib.feature("Safety").good


def texts_sha256(library: Library) -> str:
    """Digest of everything a library puts into prompts (all but its name), as parsed from the YAML."""
    content = library.model_dump(exclude={"name"})
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# texts_sha256 of `default` version 1.0 (commit 1e8571c), recorded when the `short` library was made from it.
DEFAULT_V1_TEXTS_SHA256 = "5c6fa3ca306659030365ae4bf470e357ddc8b009e9ac88164397422e31277288"


def test_short_keeps_the_version_1_texts_byte_for_byte() -> None:
    short = load_library("short").library
    assert short.name == "short" and short.version == "1.0"
    assert texts_sha256(short) == DEFAULT_V1_TEXTS_SHA256
    assert texts_sha256(load_library("default").library) != DEFAULT_V1_TEXTS_SHA256
    assert [f.name for f in short.features] == load_library("default").library.feature_names


def test_list_without_argument_shows_every_bundled_library() -> None:
    result = runner.invoke(app, ["principles", "list"])
    assert result.exit_code == 0, result.output
    for name in ("default", "short"):
        loaded = load_library(name)
        row = next(line for line in result.output.splitlines() if f" {name} " in line and "Concision" in line)
        assert f" {loaded.library.version} " in row and loaded.sha256[:16] in row
    assert "default v2.0" in result.output  # followed by default's features
    one = runner.invoke(app, ["principles", "list", "short"])
    assert one.exit_code == 0 and "short v1.0" in one.output and "Bundled libraries" not in one.output
    assert load_library("short").sha256 in one.output.replace("\n", "")
    both = runner.invoke(app, ["principles", "validate", "default", "short"])
    assert both.exit_code == 0 and "default: ok (default v2.0" in both.output and "short: ok (short v1.0" in both.output


def test_validate_ok_and_list_and_show() -> None:
    result = runner.invoke(app, ["principles", "validate", "default", str(BUNDLED_DIR / "default.yaml")])
    assert result.exit_code == 0, result.output
    assert "7 features, 1 extra)" in result.output  # not "1 extras"
    listed = runner.invoke(app, ["principles", "list"])
    assert listed.exit_code == 0 and "Concision" in listed.output and "Literariness" in listed.output
    shown = runner.invoke(app, ["principles", "show", "default", "logicality"])
    assert shown.exit_code == 0 and "Illogical" in shown.output
    missing = runner.invoke(app, ["principles", "show", "default", "Kindness"])
    assert missing.exit_code == 2 and "no feature named 'Kindness'" in missing.stderr


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# (case name, file content, expected line (None: computed from needle), needle for the line, expected text)
CASES = [
    ("syntax", DEFAULT_TEXT.replace("  - name: Helpfulness", "  - name: Helpfulness: [oops"),
     "Helpfulness: [oops", "<yaml>: YAML syntax error"),
    ("missing_field", DEFAULT_TEXT.replace(
        "    meaning: whether facts, numbers and code in the reply are correct\n", ""),
     "- name: Accuracy", "features[5].meaning: Field required"),
    ("unknown_key", DEFAULT_TEXT.replace("    meaning: whether facts", "    colour: red\n    meaning: whether facts"),
     "colour: red", "features[5].colour: unknown key"),
    ("wrong_type", DEFAULT_TEXT.replace("adjectives: {good: Safe, bad: Unsafe}", "adjectives: [Safe, Unsafe]"),
     "adjectives: [Safe, Unsafe]", "features[0].adjectives: Input should be a valid dictionary"),
    ("empty_text", DEFAULT_TEXT.replace(
        "    meaning: whether the reasoning is sound and each step follows from the previous one", "    meaning: ''"),
     "meaning: ''", "features[1].meaning: must not be empty"),
    ("duplicate", NO_ACCURACY_EXAMPLES.replace("  - name: Accuracy", "  - name: safety"),
     "- name: safety", "features[5].name: duplicate feature name 'safety'"),
    ("name_with_comma", NO_ACCURACY_EXAMPLES.replace("  - name: Accuracy", "  - name: Accuracy, facts"),
     "- name: Accuracy, facts", "features[5].name: must not hold a comma, semicolon or line break"),
    ("name_ending_in_a_dot", NO_ACCURACY_EXAMPLES.replace("  - name: Accuracy", "  - name: Accuracy."),
     "- name: Accuracy.", "features[5].name: must not begin or end with any of"),
    ("name_with_both", NO_ACCURACY_EXAMPLES.replace("  - name: Accuracy", "  - name: Logic, Reasoning."),
     "- name: Logic, Reasoning.", "features[5].name: must not hold a comma, semicolon or line break (they separate "
     "the names in the policy's answer); and must not begin or end with any of"),
    # One text on both sides: S+ = S-, which generate then blamed on the system template.
    ("same_adjectives", DEFAULT_TEXT.replace("{good: Safe, bad: Unsafe}", "{good: Safe, bad: safe}"),
     "adjectives: {good: Safe, bad: safe}", "features[0].adjectives.bad: must differ from good"),
    ("same_texts", "name: x\nversion: '1'\ndescription: d\nfeatures:\n  - name: Safety\n    adjectives: {good: Safe, "
     "bad: Unsafe}\n    meaning: m\n    good: Be careful.\n    bad: Be careful.\n",
     "bad: Be careful.", "features[0].bad: must differ from good (the same text on both sides gives S+ = S-)"),
    ("probability", DEFAULT_TEXT.replace("probability: 0.2", "probability: 1.5"),
     "probability: 1.5", "extras[0].probability: Input should be less than or equal to 1"),
    ("negative_probability", DEFAULT_TEXT.replace("probability: 0.2", "probability: -0.1"),
     "probability: -0.1", "extras[0].probability: Input should be greater than or equal to 0"),
    ("no_features", "name: x\nversion: '1'\ndescription: d\nfeatures: []\n",
     "features: []", "features: List should have at least 1 item"),
    ("empty_file", "", None, "1: empty file"),
    ("not_utf8", b"name: x\nversion: '1'\n\xff\xfe description\n", None, "3: not UTF-8 text"),
    ("example_feature", DEFAULT_TEXT.replace("features: [Safety, Helpfulness]", "features: [Safety, Kindness]"),
     "[Safety, Kindness]", "examples[0].features[1]: 'Kindness' is not a feature of this library"),
]


@pytest.mark.parametrize(("case", "content", "needle", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_library_gives_file_line_field_message(
    tmp_path: Path, case: str, content: str | bytes, needle: str | None, expected: str
) -> None:
    path = _write(tmp_path, f"{case}.yaml", content)
    result = runner.invoke(app, ["principles", "validate", str(path)])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    if needle is not None:
        assert isinstance(content, str)
        assert lines[0].startswith(f"{path}:{line_of(content, needle)}: "), lines[0]
        assert expected in lines[0]
    else:
        assert lines[0].startswith(f"{path}:{expected}"), lines[0]


def test_without_features_the_examples_are_not_blamed_once_per_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "misspelt.yaml", DEFAULT_TEXT.replace("features:\n", "Features:\n", 1))
    result = runner.invoke(app, ["principles", "validate", str(path)])
    assert result.exit_code == 2
    assert [line.split(": ", 1)[1] for line in result.stderr.strip().splitlines()] == [
        "features: Field required", "Features: unknown key"]


def test_missing_path_and_mixed_validate(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    bad = _write(tmp_path, "bad.yaml", DEFAULT_TEXT.replace("probability: 0.2", "probability: 2"))
    result = runner.invoke(app, ["principles", "validate", "default", str(missing), str(bad)])
    assert result.exit_code == 2
    assert f"{missing}: no such file (bundled: default, short)" in result.stderr  # a path: no bundled reading
    assert f"{bad}:{line_of(DEFAULT_TEXT, 'probability: 0.2')}: extras[0].probability" in result.stderr
    assert "default: ok" in result.stdout


def test_list_and_show_give_one_error_line(tmp_path: Path) -> None:
    """A name that is neither a file nor a bundled library says both, with no placeholder for a field; an
    invalid library is its first problem and a pointer to `validate`; a mistyped feature gets a suggestion."""
    for args in (["list", "nosuch"], ["show", "nosuch", "Accuracy"]):
        result = runner.invoke(app, ["principles", *args])
        assert result.exit_code == 2
        assert result.stderr.strip() == ("error: nosuch: no such file, and not a bundled library (bundled: default, "
                                         "short)")
    bad = _write(tmp_path, "bad.yaml", DEFAULT_TEXT.replace("probability: 0.2", "probability: 3").replace(
        "    meaning: whether facts", "    colour: red\n    meaning: whether facts"))
    result = runner.invoke(app, ["principles", "list", str(bad)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"error: invalid library: {bad}:")
    assert f"(and 1 more problem); `ssogen principles validate {bad}` lists every problem" in result.stderr
    typo = runner.invoke(app, ["principles", "show", "default", "acuracy"])
    assert typo.exit_code == 2
    assert typo.stderr.startswith("error: default: no feature named 'acuracy' (did you mean Accuracy? has: Safety,")


def test_several_problems_each_get_a_line(tmp_path: Path) -> None:
    text = DEFAULT_TEXT.replace("probability: 0.2", "probability: 3").replace(
        "    meaning: whether facts", "    colour: red\n    meaning: whether facts")
    path = _write(tmp_path, "two.yaml", text)
    result = runner.invoke(app, ["principles", "validate", str(path)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 2


def test_every_duplicate_name_is_reported_beside_the_field_errors(tmp_path: Path) -> None:
    """validate named only the first duplicate, and none while another field was invalid."""
    text = (DEFAULT_TEXT.replace("  - name: Accuracy", "  - name: safety").replace("  - name: Logicality",
                                                                                    "  - name: SAFETY")
            .replace("probability: 0.2", "probability: 3"))
    result = runner.invoke(app, ["principles", "validate", str(_write(tmp_path, "dups.yaml", text))])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [
        "features[1].name: duplicate feature name 'SAFETY' (names are compared case-insensitively)",
        "features[5].name: duplicate feature name 'safety' (names are compared case-insensitively)",
        "extras[0].probability: Input should be less than or equal to 1",
        "examples[1].features[0]: 'Logicality' is not a feature of this library",  # renamed: these are true too
        "examples[1].features[1]: 'Accuracy' is not a feature of this library",
        "examples[3].features[2]: 'Accuracy' is not a feature of this library"], lines


def test_list_and_show_print_brackets_in_library_text_as_written(tmp_path: Path) -> None:
    # rich reads "[...]" as markup: "[see policy]" vanished and "[/x]" raised MarkupError (a traceback).
    text = (BUNDLED_DIR / "short.yaml").read_text()
    text = text.replace("Safety", '"Safety[/x]"').replace(
        "explain briefly why,", "explain briefly why [see policy],")
    path = _write(tmp_path, "brackets.yaml", text)
    assert runner.invoke(app, ["principles", "validate", str(path)]).exit_code == 0
    listed = runner.invoke(app, ["principles", "list", str(path)])
    assert listed.exit_code == 0, listed.output
    assert "Safety[/x]" in listed.output
    shown = runner.invoke(app, ["principles", "show", str(path), "safety[/x]"])
    assert shown.exit_code == 0, shown.output
    assert "Safety[/x]" in shown.output and "[see policy]" in shown.output


def test_a_bundled_name_is_the_bundled_library_whatever_the_current_folder_holds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`generate --out default` made a folder `default`; every later run in that folder, left to the default
    library, then failed with "--principles default: is a directory, not a YAML file"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").mkdir()
    (tmp_path / "short").write_text("name: mine\n")
    assert load_library("default").library.features == load_library(BUNDLED_DIR / "default.yaml").library.features
    assert load_library("short").path == BUNDLED_DIR / "short.yaml"
    with pytest.raises(LibraryError, match=r"^\./short:1: version: Field required"):  # the file, as a path
        load_library("./short")
