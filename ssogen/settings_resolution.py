"""Settings resolved from their three sources: `resolve_settings` merges defaults < config file < flags and blames
every bad value on where it came from: `--temperature: ...` for a flag, `run.yaml:3: temperature: ...` for a line
of the config file. All unknown keys of a file are reported at once, each with a did-you-mean, and a file that sets
one option twice (`max-tokens` and `max_tokens`) is refused. `read_settings_file` reads a file's options alone.

A module of its own: `ssogen.settings` defines the options (what `ssogen.cli.options` turns into typer
parameters); reading a `--config` file against them, and blaming, is a separate job built on those definitions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from ssogen.errors import UserError, closest_name
from ssogen.formatting import listed, plain_zero
from ssogen.origins import RemembersOrigins, remember_file_lines, with_config_lines
from ssogen.settings import (
    OptionSpec,
    PassThrough,
    command_of,
    commands_taking,
    option_specs,
    pass_through,
    union_args,
    yaml_key,
)
from ssogen.yamlfile import YamlDocument, YamlFileError, expand_home, read_yaml

M = TypeVar("M", bound=BaseModel)


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
        for name, (key, line, value) in _options_in_file(doc, model, extra).items():
            if value is None:  # `key: null` or `key:` with no value: the default, as when the line is left out
                continue
            values[name] = value
            origins[name] = f"{doc.shown}:{line}: {key}"
        if extra is not None and isinstance(doc.data, dict):  # each collected key's own line
            collected = values.get(extra.field, {})
            origins.update({f"{extra.field}.{yaml_key(key)}": f"{doc.shown}:{doc.line_of((key,))}: {key}"
                            for key in doc.data if yaml_key(key) in collected})
    for field, value in flags.items():
        if value is not None:
            values[field] = value
            origins[field] = specs[field].flag
    # -0.0 is 0 but prints as -0 (`--lambda -0` showed `-0·G` in the objective)
    values = {name: plain_zero(value) if isinstance(value, float) else value for name, value in values.items()}
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
        # a rule across options may name a collected key too (`warmup_steps` with --warmup-ratio): its line as well
        named = in_file | {yaml_key(origin.rsplit(": ", 1)[1]): origin.rsplit(": ", 1)[0]
                           for name, origin in origins.items() if name not in specs}
        raise UserError("; ".join(_blame(err, origins, specs, named) for err in exc.errors())) from None
    if isinstance(settings, RemembersOrigins):
        settings._origins = origins
    return settings


def read_settings_file(model: type[BaseModel], path: str | Path) -> dict[str, Any]:
    """The options a config file sets, by field name (unknown keys and options set twice are refused); their
    values are not validated yet."""
    found = _options_in_file(read_yaml(path), model, pass_through(model))
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


def _options_in_file(doc: YamlDocument, model: type[BaseModel], extra: PassThrough | None = None
                     ) -> dict[str, tuple[str, int, Any]]:
    """field -> (key as written, line, value) from a config file; every problem of the file in one error. The
    keys of `extra` that are no option are collected into its field as {name: value} (blamed on the first)."""
    specs = {spec.field: spec for spec in option_specs(model)}
    if doc.data is None:
        return {}
    if not isinstance(doc.data, dict):
        raise UserError(f"{doc.shown}:{doc.line_of(())}: expected a mapping of option names to values")
    by_key = {key: name for name, spec in specs.items() for key in spec.keys}
    off_switches = {yaml_key(spec.flags[0].split("/")[1].lstrip("-")): spec for spec in specs.values()
                    if spec.cli and "/" in spec.flags[0]}  # --drop-truncated, --no-fused-head: no keys
    others = extra.names() if extra is not None else frozenset()
    if extra is not None:
        by_key.update({alias: name for alias, name in extra.aliases.items() if alias not in by_key})
    # what a did-you-mean may name: never a key that is refused, or one no config file sets
    suggested = [key for key in [*by_key, *others] if key not in COMMAND_LINE_ONLY
                 and (extra is None or key not in extra.refused)]
    found: dict[str, tuple[str, int, Any]] = {}
    unknown: list[str] = []
    elsewhere: dict[tuple[str, ...], list[str]] = {}  # other commands -> their keys in this file
    problems: list[str] = []
    for key, value in doc.data.items():
        line = doc.line_of((key,))
        field = by_key.get(yaml_key(key))
        if field is None and extra is not None and yaml_key(key) in others:
            if yaml_key(key) in extra.refused:
                problems.append(f"{key} (line {line}) cannot be set: {extra.refused[yaml_key(key)]}")
                continue
            found.setdefault(extra.field, (key, line, {}))[2][yaml_key(key)] = value
            continue
        if yaml_key(key) in COMMAND_LINE_ONLY:  # train's --overwrite is a field, and was taken from a file
            problems.append(f"{key} (line {line}) is a command-line flag only: give {COMMAND_LINE_ONLY[yaml_key(key)]} "
                            "(a config file holds the run's options, so that it never replaces a run or skips one)")
            continue
        if field is None and yaml_key(key) in off_switches:  # its did-you-mean (keep-truncated) would mean the opposite
            on = off_switches[yaml_key(key)].flag.lstrip("-")
            on = yaml_key(on) if "_" in key else on
            try:  # `yes`, "off", 1: what the option itself would take
                fix = f"{on}: {str(not TypeAdapter(bool).validate_python(value)).lower()}"
            except ValidationError:
                fix = f"{on}: true or false"
            problems.append(f"{key} (line {line}) is the off switch of {off_switches[yaml_key(key)].flag}: write {fix}")
            continue
        if field is None and (commands := commands_taking(key, but=model)):
            elsewhere.setdefault(tuple(commands), []).append(f"{key} (line {line})")
            continue
        if field is None:
            unknown.append(f"{key} (line {line}{_did_you_mean(key, suggested)})")
            continue
        if field in found:
            first_key, first_line, _ = found[field]
            problems.append(f"{first_key!r} (line {first_line}) and {key!r} (line {line}) both set "
                            f"{specs[field].flag}; keep one")
            continue
        if isinstance(value, bool) and bool not in union_args(specs[field].annotation):
            # pydantic would take true as 1 (`limit: true` ran one row): YAML's yes/no/true/false are no numbers
            problems.append(f"{key} (line {line}): {str(value).lower()} is a yes/no value, which "
                            f"{specs[field].flag} does not take")
            continue
        if _wants_text(specs[field].annotation) and isinstance(value, int | float) and not isinstance(value, bool):
            value = doc.source_text((key,))  # `model: 1.10` names "1.10", not the float 1.1
        if isinstance(value, str):
            value = expand_home(value)
        found[field] = (key, line, value)
    own = command_of(model)
    for at, (takers, keys) in enumerate(elsewhere.items()):  # a generate config given to train
        options = "is an option" if len(keys) == 1 else "are options"
        problems.insert(at, f"{listed(keys)} {options} of {listed([f'`{c}`' for c in takers])}"
                        + (f", not of `{own}`" if own else ""))
    if unknown:
        problems.insert(0, "unknown key(s): " + ", ".join(unknown))
    if problems:
        raise UserError(f"{doc.shown}: " + "; ".join(problems))
    return found


def _did_you_mean(key: str, known: list[str]) -> str:
    close = closest_name(yaml_key(key), known)
    if close is None:
        return ""
    suggestion = close.replace("_", "-") if "-" in key else close
    return f"; did you mean {suggestion}?"


def _wants_text(annotation: Any) -> bool:
    args = [a for a in union_args(annotation) if a is not type(None)]
    return bool(args) and all(a in (str, Path) for a in args)
