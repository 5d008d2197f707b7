"""Options defined once. A pydantic field made with `option(...)` is the whole definition of a command option:
its type, default, constraints and help, its flag (`--field-name` unless the field names another), its YAML
key in a `--config` file (the field name or the flag, dashes or underscores), and its validation.
`ssogen.cli.options` builds the typer parameters from the same fields.

`resolve_settings` merges defaults < config file < flags and blames every bad value on where it came from:
`--temperature: ...` for a flag, `run.yaml:3: temperature: ...` for a line of the config file. All unknown keys
of a file are reported at once, each with a did-you-mean, and a file that sets one option twice (`max-tokens`
and `max_tokens`) is refused.

A settings model may also take another library's settings in its config file under their own names (`ssogen
train` takes every field of transformers' TrainingArguments): its `PASS_THROUGH` names them, says which of them
are ssogen options under another name (`learning_rate` is `lr`), and which cannot be set; the rest are collected
into one dict field that is not a flag."""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from pydantic.json_schema import JsonDict

from ssogen.errors import UserError, closest_name
from ssogen.origins import RemembersOrigins, remember_file_lines, with_config_lines
from ssogen.yamlfile import YamlDocument, YamlFileError, expand_home, read_yaml

M = TypeVar("M", bound=BaseModel)


def option(default: Any = ..., help: str = "", *, flags: tuple[str, ...] = (), panel: str | None = None,
           default_text: str | None = None, metavar: str | None = None, cli: bool = True, **constraints: Any) -> Any:
    """A pydantic Field that is also a command option.

    flags: typer declarations when not `--field-name`, e.g. ("--lambda",), ("--features-per-query", "-k") or
        ("--keep-truncated/--drop-truncated",); a bool without them is `--name/--no-name`.
    panel: the help panel the option is listed under.
    default_text: what the help says for a default that depends on other values (the field's default is None).
    metavar: the value's name in help where the type's (TEXT for a str) says too little, e.g. DIR.
    cli: False for the field that collects a PASS_THROUGH's keys (no flag, no key of its own).
    """
    extra: JsonDict = {"flags": list(flags), "panel": panel, "default_text": default_text, "metavar": metavar,
                       "cli": None if cli else False}
    return Field(default, description=help, json_schema_extra={k: v for k, v in extra.items() if v is not None
                                                               and v != [] and v != ""},
                 **constraints)


@dataclass(frozen=True)
class PassThrough:
    """Config-file keys that belong to another library's settings, accepted under their own names.

    field: the settings field (a dict) that receives {name: value}.
    label: what messages call them, e.g. "TrainingArguments".
    names: the library's names (a function, so that they are read only when a file is).
    aliases: library name -> the settings field that is the same setting (`learning_rate` -> `lr`).
    refused: library name -> why it cannot be set.
    """

    field: str
    label: str
    names: Callable[[], frozenset[str]]
    aliases: Mapping[str, str] = dataclass_field(default_factory=dict)
    refused: Mapping[str, str] = dataclass_field(default_factory=dict)


@dataclass(frozen=True)
class OptionSpec:
    """One field of a settings model seen as a command option."""

    field: str
    flags: tuple[str, ...]
    help: str
    panel: str | None
    annotation: Any
    required: bool
    default: Any
    default_text: str | None
    metavar: str | None = None
    cli: bool = True

    @property
    def flag(self) -> str:
        """The long flag as messages name it: `--lambda`, `--keep-truncated`."""
        return self.flags[0].split("/")[0]

    @property
    def keys(self) -> frozenset[str]:
        """YAML keys that set this option, with '-' read as '_' (none for a PASS_THROUGH's field)."""
        return frozenset({self.field, _key(self.flag.lstrip("-"))}) if self.cli else frozenset()

    @property
    def base_type(self) -> Any:
        """The value type without None (Literal choices are text on the command line)."""
        return str if self.choices is not None else self._value_type

    @property
    def choices(self) -> tuple[str, ...] | None:
        """The values of a Literal type: help shows a short list as [a|b]; pydantic checks them (on the command line as
        in a config file), so that a bad one is blamed on its flag or file line like any other bad value."""
        if typing.get_origin(self._value_type) is not typing.Literal:
            return None
        return tuple(str(value) for value in typing.get_args(self._value_type))

    @property
    def _value_type(self) -> Any:
        args = [a for a in _union_args(self.annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str

    def shown_default(self) -> str | None:
        if self.default_text is not None:
            return self.default_text
        if self.required or self.default is None:
            return None
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        return str(self.default)


def _key(name: str) -> str:
    return name.replace("-", "_")


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


@functools.cache
def option_specs(model: type[BaseModel]) -> tuple[OptionSpec, ...]:
    specs = []
    for name, info in model.model_fields.items():
        # What `option` wrote: flags a list of str; panel, default_text and metavar str; cli False when set.
        extra: dict[str, Any] = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        is_bool = bool in _union_args(info.annotation)
        flag = "--" + name.replace("_", "-")
        flags = tuple(extra.get("flags") or ([f"{flag}/--no-{flag[2:]}"] if is_bool else [flag]))
        specs.append(OptionSpec(field=name, flags=flags, help=info.description or "", panel=extra.get("panel"),
                                annotation=info.annotation, required=info.is_required(),
                                default=None if info.is_required() else info.default,
                                default_text=extra.get("default_text"), metavar=extra.get("metavar"),
                                cli=extra.get("cli", True)))
    return tuple(specs)


def pass_through(model: type[BaseModel]) -> PassThrough | None:
    found = getattr(model, "PASS_THROUGH", None)
    return found if isinstance(found, PassThrough) else None


def flag_name(model: type[BaseModel], field: str) -> str:
    return next(spec.flag for spec in option_specs(model) if spec.field == field)


def resolve_settings(model: type[M], flags: Mapping[str, Any], config_file: str | Path | None = None, *,
                     accepts_config: bool = True) -> M:
    """defaults < config file < flags. `flags` maps field names to values; None means "not given"."""
    specs = {spec.field: spec for spec in option_specs(model)}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}  # field -> "--flag" or "FILE:LINE: key"
    if config_file is not None:
        try:
            doc = read_yaml(config_file)
        except YamlFileError as exc:  # missing, a folder, too large: name the flag, as for any other path
            if exc.whole_file and exc.line == 0:
                raise UserError(f"--config {exc}") from None
            raise
        extra = pass_through(model)
        for name, (key, line, value) in _options_in_file(doc, specs, extra).items():
            values[name] = value
            origins[name] = f"{doc.shown}:{line}: {key}"
        if extra is not None and isinstance(doc.data, dict):  # each collected key's own line
            collected = values.get(extra.field, {})
            origins.update({f"{extra.field}.{_key(key)}": f"{doc.shown}:{doc.line_of((key,))}: {key}"
                            for key in doc.data if _key(key) in collected})
    for field, value in flags.items():
        if value is not None:
            values[field] = value
            origins[field] = specs[field].flag
    where = " (on the command line or in the config file)" if accepts_config else ""
    missing = [spec.flag for spec in specs.values() if spec.required and values.get(spec.field) in (None, "")]
    if missing:
        raise UserError(" and ".join(missing) + (" is" if len(missing) == 1 else " are") + " required" + where)
    in_file = {specs[name].flag: origin.rsplit(": ", 1)[0] for name, origin in origins.items()
               if name in specs and origin != specs[name].flag}
    remember_file_lines(in_file)  # for the checks that run later and name the flag
    try:
        settings = model.model_validate(values)
    except ValidationError as exc:
        raise UserError("; ".join(_blame(err, origins, specs, in_file) for err in exc.errors())) from None
    if isinstance(settings, RemembersOrigins):
        settings._origins = origins
    return settings


def read_settings_file(model: type[BaseModel], path: str | Path) -> dict[str, Any]:
    """The options a config file sets, by field name (unknown keys and options set twice are refused); their
    values are not validated yet."""
    specs = {spec.field: spec for spec in option_specs(model)}
    found = _options_in_file(read_yaml(path), specs, pass_through(model))
    return {name: value for name, (_, _, value) in found.items()}


def _blame(err: Any, origins: dict[str, str], specs: dict[str, OptionSpec], in_file: dict[str, str]) -> str:
    message = err["msg"].removeprefix("Value error, ")
    field = str(err["loc"][0]) if err["loc"] else None
    if field is None or field not in specs:  # a rule across options: its message names the flags
        return with_config_lines(message, in_file)
    got = f" (got {err['input']!r})" if err["type"] != "missing" else ""
    return f"{origins.get(field, specs[field].flag)}: {message}{got}"


# Flags of the commands that no config file sets, whether or not they are fields of the command's settings.
COMMAND_LINE_ONLY = {"overwrite": "--overwrite", "dry_run": "--dry-run", "config": "--config"}


def _options_in_file(doc: YamlDocument, specs: dict[str, OptionSpec], extra: PassThrough | None = None
                     ) -> dict[str, tuple[str, int, Any]]:
    """field -> (key as written, line, value) from a config file; every problem of the file in one error. The
    keys of `extra` that are no option are collected into its field as {name: value} (blamed on the first)."""
    if doc.data is None:
        return {}
    if not isinstance(doc.data, dict):
        raise UserError(f"{doc.shown}:{doc.line_of(())}: expected a mapping of option names to values")
    by_key = {key: name for name, spec in specs.items() for key in spec.keys}
    off_switches = {_key(spec.flags[0].split("/")[1].lstrip("-")): spec for spec in specs.values()
                    if spec.cli and "/" in spec.flags[0]}  # --drop-truncated, --no-fused-head: no keys
    others = extra.names() if extra is not None else frozenset()
    if extra is not None:
        by_key.update({alias: name for alias, name in extra.aliases.items() if alias not in by_key})
    found: dict[str, tuple[str, int, Any]] = {}
    unknown: list[str] = []
    problems: list[str] = []
    for key, value in doc.data.items():
        line = doc.line_of((key,))
        field = by_key.get(_key(key))
        if field is None and extra is not None and _key(key) in others:
            if _key(key) in extra.refused:
                problems.append(f"{key} (line {line}) cannot be set: {extra.refused[_key(key)]}")
                continue
            found.setdefault(extra.field, (key, line, {}))[2][_key(key)] = value
            continue
        if _key(key) in COMMAND_LINE_ONLY:  # train's --overwrite is a field, and was taken from a file
            problems.append(f"{key} (line {line}) is a command-line flag only: give {COMMAND_LINE_ONLY[_key(key)]} "
                            "(a config file holds the run's options, so that it never replaces a run or skips one)")
            continue
        if field is None and _key(key) in off_switches:  # its did-you-mean (keep-truncated) would mean the opposite
            on = off_switches[_key(key)].flag.lstrip("-")
            on = _key(on) if "_" in key else on
            try:  # `yes`, "off", 1: what the option itself would take
                fix = f"{on}: {str(not TypeAdapter(bool).validate_python(value)).lower()}"
            except ValidationError:
                fix = f"{on}: true or false"
            problems.append(f"{key} (line {line}) is the off switch of {off_switches[_key(key)].flag}: write {fix}")
            continue
        if field is None:
            unknown.append(f"{key} (line {line}{_did_you_mean(key, [*by_key, *others])})")
            continue
        if field in found:
            first_key, first_line, _ = found[field]
            problems.append(f"{first_key!r} (line {first_line}) and {key!r} (line {line}) both set "
                            f"{specs[field].flag}; keep one")
            continue
        if isinstance(value, bool) and bool not in _union_args(specs[field].annotation):
            # pydantic would take true as 1 (`limit: true` ran one row): YAML's yes/no/true/false are no numbers
            problems.append(f"{key} (line {line}): {str(value).lower()} is a yes/no value, which "
                            f"{specs[field].flag} does not take")
            continue
        if _wants_text(specs[field].annotation) and isinstance(value, int | float) and not isinstance(value, bool):
            value = doc.source_text((key,))  # `model: 1.10` names "1.10", not the float 1.1
        if isinstance(value, str):
            value = expand_home(value)
        found[field] = (key, line, value)
    if unknown:
        problems.insert(0, "unknown key(s): " + ", ".join(unknown))
    if problems:
        raise UserError(f"{doc.shown}: " + "; ".join(problems))
    return found


def _did_you_mean(key: str, known: list[str]) -> str:
    close = closest_name(_key(key), known)
    if close is None:
        return ""
    suggestion = close.replace("_", "-") if "-" in key else close
    return f"; did you mean {suggestion}?"


def _wants_text(annotation: Any) -> bool:
    args = [a for a in _union_args(annotation) if a is not type(None)]
    return bool(args) and all(a in (str, Path) for a in args)
