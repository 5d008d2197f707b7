"""Principle libraries: the YAML schema, loading with file:line errors, and lookup of bundled libraries."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ssogen.formatting import counted
from ssogen.yamlfile import YamlDocument, YamlFileError, read_yaml

BUNDLED_DIR = Path(__file__).parent / "principles"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _differs_from_good(bad: str, info: ValidationInfo) -> str:
    """S+ and S- are built from the good and the bad side: the same text on both leaves nothing to contrast."""
    good = info.data.get("good")
    if isinstance(good, str) and bad.strip().casefold() == good.strip().casefold():
        raise ValueError("must differ from good (the same text on both sides gives S+ = S-)")
    return bad


class Adjectives(_Strict):
    good: str
    bad: str

    _check = field_validator("good", "bad")(_non_empty)
    _contrast = field_validator("bad")(_differs_from_good)


# The policy names its features as a list separated by these (`parse_feature_names`), and the ends of each item
# lose these characters: a name holding one could never be read back from an answer.
NAME_SEPARATORS = ",;\n"
NAME_STRIPPED = ".!*-\"'`"


class Feature(_Strict):
    """One axis of quality with a good and a bad principle text."""

    name: str
    adjectives: Adjectives
    meaning: str
    good: str
    bad: str

    _check = field_validator("name", "meaning", "good", "bad")(_non_empty)
    _contrast = field_validator("bad")(_differs_from_good)

    @field_validator("name")
    @classmethod
    def _readable_in_an_answer(cls, name: str) -> str:
        problems = []  # both, when both apply: one fix per run of `validate` is one too few
        if any(c in name for c in NAME_SEPARATORS):
            problems.append("must not hold a comma, semicolon or line break (they separate the names in the "
                            "policy's answer)")
        if name[:1] in NAME_STRIPPED or name[-1:] in NAME_STRIPPED:
            problems.append(f"must not begin or end with any of {NAME_STRIPPED} (they are stripped from the names "
                            "in the policy's answer)")
        if problems:
            raise ValueError("; and ".join(problems))
        return name


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

    @model_validator(mode="after")
    def _unique_names(self) -> Library:
        problems = _name_problems(self.model_dump())
        if problems:
            raise _NameProblem(problems[0][1])  # load_library lists all of them, with their lines
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


class _NameProblem(ValueError):
    """The first problem `_name_problems` finds in a validated library."""


@dataclass(frozen=True)
class LibraryProblem:
    """One problem found while loading a library file, printable as FILE:LINE: field: message; a problem of the
    file as a whole (missing, unreadable, empty) has no field and prints as FILE:LINE: message, or FILE: message
    at line 0."""

    path: str
    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line > 0 else self.path  # line 0: the file as a whole
        return f"{where}: {self.message}" if self.field is None else f"{where}: {self.field}: {self.message}"


class LibraryError(Exception):
    def __init__(self, problems: list[LibraryProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems

    @property
    def unreadable(self) -> bool:
        """The file could not be read as a library at all (missing, a folder, too large, not UTF-8, empty)."""
        return self.problems[0].field is None

    def summary(self) -> str:
        """The first problem, and how many more there are: one line for a command's error."""
        more = f" (and {counted(len(self.problems) - 1, 'more problem')})" if len(self.problems) > 1 else ""
        return f"{self.problems[0]}{more}"


@dataclass(frozen=True)
class LoadedLibrary:
    library: Library
    path: Path
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def origin(self) -> str:
        """Where it came from, without a local path: "bundled", or "file <name>" for a library of the user's."""
        return "bundled" if self.path.resolve().is_relative_to(BUNDLED_DIR.resolve()) else f"file {self.path.name}"


def resolve_library_path(name_or_path: str) -> Path:
    """`default` (or any bundled name) names a bundled library, even where the current folder holds something of
    that name (`generate --out default` made one, which every later run in that folder then took for its library);
    anything else is a path (`./default` for a file of that name)."""
    bundled = BUNDLED_DIR / f"{name_or_path}.yaml"
    if "/" not in name_or_path and bundled.is_file():
        return bundled
    return Path(name_or_path)


def bundled_library_names() -> list[str]:
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml"))


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
        not_bundled = ", and not a bundled library" if "/" not in shown else ""
        raise LibraryError([LibraryProblem(shown, 0, None, f"no such file{not_bundled} (bundled: "
                                           + ", ".join(bundled_library_names()) + ")")])
    try:
        doc = read_yaml(path, shown)
    except YamlFileError as exc:
        field = None if exc.whole_file else "<yaml>"  # the file as a whole has no field to name
        raise LibraryError([LibraryProblem(shown, exc.line, field, exc.message)]) from None
    if not doc.text.strip() or doc.data is None:
        raise LibraryError([LibraryProblem(shown, 1, None, "empty file")])
    if not isinstance(doc.data, dict):
        raise LibraryError([LibraryProblem(shown, 1, "<root>", "expected a mapping with name, version, "
                                           "description, features")])
    try:
        library = Library.model_validate(_version_as_written(doc))
    except ValidationError as exc:
        # The model stops at the first name problem, and checks names only once every field is valid: these come
        # from the raw mapping, all of them, beside the field errors.
        problems = [LibraryProblem(shown, doc.line_of(loc), _field_name(loc), message)
                    for loc, message in _name_problems(doc.data)]
        for err in exc.errors():
            if isinstance((err.get("ctx") or {}).get("error"), _NameProblem):
                continue
            loc = tuple(err["loc"])
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            problems.append(LibraryProblem(shown, doc.line_of(loc), _field_name(loc), message))
        raise LibraryError(sorted(problems, key=lambda p: p.line)) from None
    return LoadedLibrary(library=library, path=path, text=doc.text)


def _name_problems(data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """(location, message) of every duplicate feature or extra name and every example naming no feature, from the
    library's mapping (raw from the file, or dumped from a validated Library: one rule for both)."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    seen: set[str] = set()
    for kind in ("features", "extras"):
        items = data.get(kind)
        for i, item in enumerate(items if isinstance(items, list) else []):
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or not name.strip():
                continue
            if name.strip().casefold() in seen:
                problems.append(((kind, i, "name"), f"duplicate feature name {name.strip()!r} (names are compared "
                                 "case-insensitively)"))
            seen.add(name.strip().casefold())
    features = data.get("features")
    if not isinstance(features, list) or not features:  # its own error says so: no example could name one
        return problems
    known = {str(item["name"]).strip().casefold() for item in features
             if isinstance(item, dict) and isinstance(item.get("name"), str)}
    examples = data.get("examples")
    for i, example in enumerate(examples if isinstance(examples, list) else []):
        names = example.get("features") if isinstance(example, dict) else None
        for j, name in enumerate(names if isinstance(names, list) else []):
            if isinstance(name, str) and name.strip().casefold() not in known:
                problems.append((("examples", i, "features", j), f"{name.strip()!r} is not a feature of this library"))
    return problems


def _version_as_written(doc: YamlDocument) -> dict[str, Any]:
    """Versions are text: `version: 1.10` is "1.10" (YAML would read the float 1.1), `version: 2` is "2"."""
    data = dict(doc.data)
    version = data.get("version")
    if version is not None and not isinstance(version, str | bool | list | dict):
        data["version"] = doc.source_text(("version",))
    return data


def join_adjectives(words: list[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    if not words:
        return ""
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]
