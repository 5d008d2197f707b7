"""Principle libraries: the YAML schema, loading with file:line errors, and lookup of bundled libraries."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

BUNDLED_DIR = Path(__file__).parent / "principles"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


class Adjectives(_Strict):
    good: str
    bad: str

    _check = field_validator("good", "bad")(_non_empty)


class Feature(_Strict):
    """One axis of quality with a good and a bad principle text."""

    name: str
    adjectives: Adjectives
    meaning: str
    good: str
    bad: str

    _check = field_validator("name", "meaning", "good", "bad")(_non_empty)


class Extra(Feature):
    """A principle added to a query's list with a fixed probability (Concision in the default library)."""

    probability: float = Field(ge=0.0, le=1.0)


class SelectionExample(_Strict):
    """A worked example for the few-shot feature-selection prompt."""

    query: str
    features: list[str] = Field(min_length=1)

    _check = field_validator("query")(_non_empty)


class Library(_Strict):
    name: str
    version: str
    description: str
    features: list[Feature] = Field(min_length=1)
    extras: list[Extra] = Field(default_factory=list)
    examples: list[SelectionExample] = Field(default_factory=list)

    _check = field_validator("name", "version", "description")(_non_empty)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # `version: 1.0` parses as a float in YAML; accept it as text.
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _unique_names(self) -> Library:
        seen: dict[str, int] = {}
        for i, item in enumerate([*self.features, *self.extras]):
            key = item.name.casefold()
            if key in seen:
                kind, idx = ("features", i) if i < len(self.features) else ("extras", i - len(self.features))
                raise _DuplicateName(kind, idx, item.name)
            seen[key] = i
        names = {f.name.casefold() for f in self.features}
        for i, example in enumerate(self.examples):
            for j, name in enumerate(example.features):
                if name.casefold() not in names:
                    raise _UnknownExampleFeature(i, j, name)
        return self

    def feature(self, name: str) -> Feature:
        """Find a feature or extra by name, case-insensitively."""
        for item in [*self.features, *self.extras]:
            if item.name.casefold() == name.casefold():
                return item
        raise KeyError(name)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


class _DuplicateName(ValueError):
    def __init__(self, kind: str, index: int, name: str) -> None:
        super().__init__(f"duplicate feature name {name!r} (names are compared case-insensitively)")
        self.loc = (kind, index, "name")


class _UnknownExampleFeature(ValueError):
    def __init__(self, example: int, index: int, name: str) -> None:
        super().__init__(f"{name!r} is not a feature of this library")
        self.loc = ("examples", example, "features", index)


@dataclass(frozen=True)
class LibraryProblem:
    """One problem found while loading a library file, printable as FILE:LINE: field: message."""

    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line > 0 else self.path  # line 0: the file as a whole
        return f"{where}: {self.field}: {self.message}"


class LibraryError(Exception):
    def __init__(self, problems: list[LibraryProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class LoadedLibrary:
    library: Library
    path: Path
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def resolve_library_path(name_or_path: str) -> Path:
    """`default` (or any bundled name) names a bundled library; anything else is a path."""
    candidate = Path(name_or_path)
    bundled = BUNDLED_DIR / f"{name_or_path}.yaml"
    if not candidate.exists() and "/" not in name_or_path and bundled.exists():
        return bundled
    return candidate


def bundled_library_names() -> list[str]:
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml"))


def _line_of(node: Any, loc: tuple[Any, ...]) -> int:
    """Walk a ruamel round-trip tree along a pydantic error location; return the 1-based line."""
    line = 1
    for key in loc:
        if isinstance(node, CommentedMap):
            line = node.lc.line + 1
            if key in node:
                line = node.lc.key(key)[0] + 1
                node = node[key]
                continue
            return line
        if isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            line = node.lc.item(key)[0] + 1
            node = node[key]
            continue
        break
    if isinstance(node, CommentedMap | CommentedSeq):
        return max(line, node.lc.line + 1) if not loc else line
    return line


def _field_name(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for key in loc:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        else:
            parts.append(("." if parts else "") + str(key))
    return "".join(parts) or "<root>"


def load_library(name_or_path: str | Path) -> LoadedLibrary:
    """Load and validate a library; raise LibraryError with one FILE:LINE problem per error."""
    path = resolve_library_path(str(name_or_path))
    shown = str(name_or_path) if not path.is_relative_to(BUNDLED_DIR) else str(path)
    if not path.exists():
        raise LibraryError([LibraryProblem(shown, 0, "<file>", "no such file (bundled libraries: "
                                           + ", ".join(bundled_library_names()) + ")")])
    if path.is_dir():
        raise LibraryError([LibraryProblem(shown, 0, "<file>", "is a directory, not a YAML file")])
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise LibraryError([LibraryProblem(shown, line, "<file>", "not UTF-8 text")]) from None
    if not text.strip():
        raise LibraryError([LibraryProblem(shown, 1, "<file>", "empty file")])
    yaml = YAML(typ="rt")
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise LibraryError([LibraryProblem(shown, line, "<yaml>", f"YAML syntax error: {problem}")]) from None
    except YAMLError as exc:
        raise LibraryError([LibraryProblem(shown, 1, "<yaml>", f"YAML error: {exc}")]) from None
    if tree is None:
        raise LibraryError([LibraryProblem(shown, 1, "<file>", "empty file")])
    if not isinstance(tree, CommentedMap):
        raise LibraryError([LibraryProblem(shown, 1, "<root>", "expected a mapping with name, version, "
                                           "description, features")])
    try:
        library = Library.model_validate(_plain(tree))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, _DuplicateName | _UnknownExampleFeature):
                loc = ctx_err.loc
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key"
            problems.append(LibraryProblem(shown, _line_of(tree, loc), _field_name(loc), message))
        raise LibraryError(problems) from None
    return LoadedLibrary(library=library, path=path, text=text)


def _plain(node: Any) -> Any:
    """ruamel round-trip containers to plain dicts/lists (pydantic then sees ordinary types)."""
    if isinstance(node, CommentedMap):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(v) for v in node]
    return node


def join_adjectives(words: list[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    if not words:
        return ""
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]
