"""The one reader of YAML files that people write (run configs, train configs, principle libraries).

Every YAML input gets the same guards and the same blame:
* a size cap (1 MiB) and no anchors or aliases: a few hundred bytes of nested aliases expand to gigabytes
  (a "billion laughs" file), and hand-written configs and libraries have no use for them;
* a key written twice in one mapping is an error naming both lines, never a silent pick;
* every mapping key and list item keeps its line, so a bad value is reported as FILE:LINE, and every scalar
  keeps the text it was written as, so a string field can take `version: 1.10` as "1.10" rather than the
  float 1.1.
The file is parsed into events first (no values are built, nothing expands), then composed and built by
hand from the node tree with ruamel's safe constructor for single scalars only."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import ConstructorError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionEndEvent, CollectionStartEvent, ScalarEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ssogen.errors import UserError
from ssogen.io import input_file_problem

MAX_BYTES = 1 << 20  # configs and libraries are a few KiB; anything this large is a mistake or an attack
# Libraries nest 4 levels deep. ruamel's parser slows down quadratically with depth (3000 nested lists take
# half a minute), so the scan stops at this depth, long before that.
MAX_DEPTH = 32

# A path into the document: mapping keys (as strings) and list indexes, like a pydantic error location.
Location = tuple[str | int, ...]


class YamlFileError(UserError):
    """A YAML file that cannot be read. `whole_file` says whether the file as a whole (missing, too large, not
    UTF-8) rather than its YAML is at fault; `line` is 1-based, 0 for the file as a whole."""

    def __init__(self, shown: str, line: int, message: str, *, whole_file: bool = False) -> None:
        super().__init__(f"{shown}:{line}: {message}" if line > 0 else f"{shown}: {message}")
        self.shown, self.line, self.message, self.whole_file = shown, line, message, whole_file


@dataclass(frozen=True)
class YamlDocument:
    """A parsed file: plain data (dicts with string keys, lists, scalars) plus where each part was written."""

    shown: str
    text: str
    data: Any  # None for an empty file
    lines: dict[Location, int]
    sources: dict[Location, str]

    def line_of(self, loc: Location) -> int:
        """Line of the deepest part of `loc` that exists (a missing key is blamed on its mapping)."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return self.lines.get((), 1)

    def source_text(self, loc: Location) -> str | None:
        """A scalar as written in the file (quotes removed), before YAML decided its type."""
        return self.sources.get(loc)


def read_yaml(path: str | Path, shown: str | None = None) -> YamlDocument:
    """Read and check a YAML file; any problem raises YamlFileError naming `shown` (default: the path)."""
    path = Path(path)
    shown = shown or str(path)
    if (problem := input_file_problem(path, "YAML file")) is not None:  # a FIFO would block the open forever
        raise YamlFileError(shown, 0, problem, whole_file=True)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise YamlFileError(shown, 0, f"{size} bytes: larger than the {MAX_BYTES // 2**20} MiB limit for a "
                            "YAML file", whole_file=True)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)  # at most: a file growing meanwhile, or one of /proc saying size 0
    except OSError as exc:  # no permission, an I/O error
        raise YamlFileError(shown, 0, f"cannot read it ({exc.strerror or exc})", whole_file=True) from None
    if len(raw) > MAX_BYTES:
        raise YamlFileError(shown, 0, f"larger than the {MAX_BYTES // 2**20} MiB limit for a YAML file",
                            whole_file=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlFileError(shown, raw[: exc.start].count(b"\n") + 1, "not UTF-8 text", whole_file=True) from None
    return parse_yaml(text, shown)


def parse_yaml(text: str, shown: str) -> YamlDocument:
    """The checks and the build of `read_yaml`, for text already in memory."""
    yaml = YAML(typ="safe", pure=True)
    try:
        _scan_events(yaml, text, shown)
        root = yaml.compose(text)
        if root is None:
            return YamlDocument(shown, text, None, {}, {})
        builder = _Builder(yaml, shown)
        data = builder.build(root, ())
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        what = "YAML error" if isinstance(exc, ConstructorError) else "YAML syntax error"
        raise YamlFileError(shown, mark.line + 1 if mark is not None else 1, f"{what}: {problem}") from None
    except YAMLError as exc:
        raise YamlFileError(shown, 1, f"YAML error: {str(exc).splitlines()[0]}") from None
    builder.lines[()] = root.start_mark.line + 1
    return YamlDocument(shown, text, data, builder.lines, builder.sources)


def _scan_events(yaml: YAML, text: str, shown: str) -> None:
    """Scan the event stream (which expands nothing) for anchors, aliases and deep nesting."""
    depth = 0
    for event in yaml.parse(text):
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlFileError(shown, event.start_mark.line + 1, f"YAML nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
        if isinstance(event, AliasEvent | ScalarEvent | CollectionStartEvent) and event.anchor:
            sign = "*" if isinstance(event, AliasEvent) else "&"
            raise YamlFileError(shown, event.start_mark.line + 1, f"YAML anchors and aliases are not allowed "
                                f"(found {sign}{event.anchor}); write the value out")


class _Builder:
    """Plain data from a composed node tree, recording lines and source texts on the way."""

    def __init__(self, yaml: YAML, shown: str) -> None:
        self.constructor = yaml.constructor
        self.shown = shown
        self.lines: dict[Location, int] = {}
        self.sources: dict[Location, str] = {}

    def build(self, node: Node, loc: Location) -> Any:
        if isinstance(node, MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    raise YamlFileError(self.shown, key_node.start_mark.line + 1,
                                        "a mapping key must be a plain value, not a list or a mapping")
                key, line = str(key_node.value), key_node.start_mark.line + 1
                if key in result:
                    raise YamlFileError(self.shown, line, f"key {key!r} is written twice (lines "
                                        f"{self.lines[(*loc, key)]} and {line}); keep one")
                self.lines[(*loc, key)] = line
                result[key] = self.build(value_node, (*loc, key))
            return result
        if isinstance(node, SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*loc, index)] = item.start_mark.line + 1
                items.append(self.build(item, (*loc, index)))
            return items
        self.sources[loc] = str(node.value)
        return self.constructor.construct_object(node, deep=True)


_HOME_PREFIX = re.compile(r"~[A-Za-z0-9_.-]*(?=/|$)")  # `~`, `~/x`, `~user`, `~user/x`: what a shell expands


def expand_home(value: str) -> str:
    """A path written in a YAML file with `~` expanded as the shell expands it in a flag (`out: ~/x` was the folder
    `./~/x`). An unknown `~user` stays as written, as in the shell."""
    if not _HOME_PREFIX.match(value):
        return value
    try:
        return str(Path(value).expanduser())
    except RuntimeError:  # no such user, or no home to expand to
        return value
