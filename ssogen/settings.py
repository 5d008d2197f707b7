"""Options defined once. A pydantic field made with `option(...)` is the whole definition of a command option:
its type, default, constraints and help, its flag (`--field-name` unless the field names another), its YAML
key in a `--config` file (the field name or the flag, dashes or underscores), and its validation.
`option_specs` reads those definitions back: `ssogen.cli.options` builds the typer parameters from them, and
`ssogen.settings_resolution` reads a config file against them (`resolve_settings`: defaults < config file < flags,
every bad value blamed on its flag or file line), a job of its own that lives there.

A settings model may also take another library's settings in its config file under their own names (`ssogen
train` takes every field of transformers' TrainingArguments): its `PASS_THROUGH` names them, says which of them
are ssogen options under another name (`learning_rate` is `lr`), and which cannot be set; the rest are collected
into one dict field that is not a flag. A leaf: it imports nothing of ssogen."""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, TypeVar

from pydantic import BaseModel, Field
from pydantic.json_schema import JsonDict

M = TypeVar("M", bound=type[BaseModel])
# Each command's settings model -> the command (`ssogen generate`), filled by `command_settings` as the models'
# modules are imported: `ssogen.cli` imports them all.
_COMMANDS: dict[type[BaseModel], str] = {}


def option(default: Any = ..., help: str = "", *, flags: tuple[str, ...] = (), panel: str | None = None,
           default_text: str | None = None, metavar: str | None = None, cli: bool = True, **constraints: Any) -> Any:
    """A pydantic Field that is also a command option.

    flags: typer declarations when not `--field-name`, e.g. ("--lambda",), ("--features-per-query", "-k") or
        ("--keep-truncated/--drop-truncated",); a bool without them is `--name/--no-name`.
    panel: the help panel the option is listed under.
    default_text: what the help says for a default that depends on other values (the field's default is None).
    metavar: the value's name in help where the type's (TEXT for a str, PATH for a Path) says too little: FOLDER
        or FILE.
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
        return frozenset({self.field, yaml_key(self.flag.lstrip("-"))}) if self.cli else frozenset()

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
        args = [a for a in union_args(self.annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str

    def shown_default(self) -> str | None:
        if self.default_text is not None:
            return self.default_text
        if self.required or self.default is None:
            return None
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        return str(self.default)


def yaml_key(name: str) -> str:
    """A YAML key or flag name as a field name would spell it: dashes read as underscores."""
    return name.replace("-", "_")


def union_args(annotation: Any) -> tuple[Any, ...]:
    """The members of a union annotation (`int | None`: int, None), or the annotation alone."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


@functools.cache
def option_specs(model: type[BaseModel]) -> tuple[OptionSpec, ...]:
    specs = []
    for name, info in model.model_fields.items():
        # What `option` wrote: flags a list of str; panel, default_text and metavar str; cli False when set.
        extra: dict[str, Any] = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        is_bool = bool in union_args(info.annotation)
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


def command_settings(command: str) -> Callable[[M], M]:
    """Class decorator: the model holds every option of `command` (`ssogen generate`). A config file's key that is
    no option of its own command but one of another's is named as that command's option."""
    def register(model: M) -> M:
        _COMMANDS[model] = command
        return model

    return register


def command_of(model: type[BaseModel]) -> str | None:
    return _COMMANDS.get(model)


def commands_taking(key: str, but: type[BaseModel]) -> list[str]:
    """The commands other than `but`'s that have an option set by the YAML key `key` (registered ones only)."""
    return sorted(command for model, command in _COMMANDS.items() if model is not but and command != _COMMANDS.get(but)
                  and any(yaml_key(key) in spec.keys for spec in option_specs(model)))


def flag_name(model: type[BaseModel], field: str) -> str:
    return next(spec.flag for spec in option_specs(model) if spec.field == field)
