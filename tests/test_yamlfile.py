"""The one YAML reader: hostile or careless files give one line naming the file (and line), never a hang."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssogen.cli import app
from ssogen.principles import BUNDLED_DIR, LibraryError, load_library
from ssogen.yamlfile import MAX_BYTES, YamlFileError, parse_yaml, read_yaml

DEFAULT_TEXT = (BUNDLED_DIR / "default.yaml").read_text(encoding="utf-8")
# 9 levels of 9 aliases each: 9**9 (387 million) strings once expanded, from a file of a few hundred bytes.
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


def test_lines_and_source_texts_are_kept() -> None:
    doc = parse_yaml("name: x\nversion: 1.10\nitems:\n  - k: 1\n    v: yes\n", "f.yaml")
    assert doc.data == {"name": "x", "version": 1.1, "items": [{"k": 1, "v": "yes"}]}  # YAML 1.2: yes is text
    assert doc.source_text(("version",)) == "1.10"
    assert [doc.line_of(loc) for loc in [("version",), ("items", 0), ("items", 0, "v"), ("items", 0, "nope")]] \
        == [2, 4, 5, 4]


def test_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert path.stat().st_size < 500
    with pytest.raises(YamlFileError, match=r"bomb\.yaml:1: YAML anchors and aliases are not allowed \(found &a\)"):
        read_yaml(path)


@pytest.mark.parametrize(("text", "line"), [("a: 1\nb: *x\n", 2), ("a: &x 1\n", 1), ("- &list [1]\n", 1)])
def test_any_anchor_or_alias_is_refused(text: str, line: int) -> None:
    with pytest.raises(YamlFileError, match=rf"^f\.yaml:{line}: YAML anchors and aliases are not allowed"):
        parse_yaml(text, "f.yaml")


def test_oversized_file_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * MAX_BYTES + "\n")
    with pytest.raises(YamlFileError, match=r"big\.yaml: \d+ bytes: larger than the 1 MiB limit"):
        read_yaml(path)


def test_an_unreadable_or_endless_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # /dev/zero says size 0 and never ends, a FIFO without a writer blocks the open: neither is read.
    with pytest.raises(YamlFileError, match=r"^/dev/zero: not a regular file \(a pipe or a device\); save its "
                                            "content to a file first$"):
        read_yaml("/dev/zero")
    path = tmp_path / "run.yaml"
    path.write_text("seed: 1\n")

    def refused(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refused)  # as root, a mode-000 file would still open
    with pytest.raises(YamlFileError, match=r"run\.yaml: cannot read it \(Permission denied\)$"):
        read_yaml(path)


def test_duplicate_keys_name_both_lines() -> None:
    with pytest.raises(YamlFileError, match=r"f\.yaml:3: key 'a' is written twice \(lines 1 and 3\)"):
        parse_yaml("a: 1\nb: 2\na: 3\n", "f.yaml")


@pytest.mark.parametrize(("text", "message"), [
    ("a: [1\n", "YAML syntax error"),
    ("a: !!python/object:os.system x\n", "YAML error: could not determine a constructor"),
    ("? [1]\n: 2\n", "a mapping key must be a plain value"),
    ("a: " + "[" * 3000 + "]" * 3000 + "\n", "YAML nested deeper than 32 levels"),
])
def test_other_bad_yaml_is_one_line(text: str, message: str) -> None:
    with pytest.raises(YamlFileError, match=message) as info:
        parse_yaml(text, "f.yaml")
    assert "\n" not in str(info.value)


def test_library_version_is_the_text_as_written(tmp_path: Path) -> None:
    path = tmp_path / "lib.yaml"
    path.write_text(DEFAULT_TEXT.replace("version: ", "version: 1.10 #", 1))
    assert load_library(str(path)).library.version == "1.10"
    path.write_text(DEFAULT_TEXT.replace("version: ", "version: 2 #", 1))
    assert load_library(str(path)).library.version == "2"


def test_library_alias_bomb_and_duplicate_key_are_one_line(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    result = CliRunner().invoke(app, ["principles", "validate", str(bomb)])
    assert result.exit_code == 2 and result.stderr.strip() == (
        f"{bomb}:1: <yaml>: YAML anchors and aliases are not allowed (found &a); write the value out")
    twice = tmp_path / "twice.yaml"
    twice.write_text(DEFAULT_TEXT + "name: again\n")
    with pytest.raises(LibraryError, match="key 'name' is written twice"):
        load_library(str(twice))
