"""A config object's fields as command-line flags, for every command that has one.

`vtr extract` takes ``flows.config.ExtractConfig`` (a pydantic model) and `vtr train`,
`sweep` and `ablate` take ``training.runs.TrainConfig`` (a dataclass) this way: one flag per
field (``--frame-batch-size`` for ``frame_batch_size``, ``--amp/--no-amp`` for a bool), its
help and default read from the field, so each option and its default live in the config
once. A flag left out is not passed on (its value is None), so the config's own default,
or a recipe's value under the flags, counts.

Values by the field's type: a ``Literal`` takes one of its values, a list is
comma-separated, a dict is ``key=value`` repeated (values read as JSON when they parse),
and a field named in ``json_fields`` is one JSON object.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import typing
from typing import Any, Callable

import typer


class FlagError(ValueError):
    """A flag's value that cannot be read (a usage error: exit status 2)."""

    exit_code = 2


@dataclasses.dataclass(frozen=True)
class ConfigField:
    name: str
    annotation: Any
    default: Any
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def config_fields(cls: type, help: dict[str, str] | None = None) -> list[ConfigField]:
    """The fields of a pydantic model (help: its description) or a dataclass (help: ``help``)."""
    if hasattr(cls, "model_fields"):
        return [ConfigField(n, f.annotation, f.default, f.description or "") for n, f in cls.model_fields.items()]
    hints = typing.get_type_hints(cls)
    return [ConfigField(f.name, hints[f.name], f.default, (help or {}).get(f.name, ""))
            for f in dataclasses.fields(cls)]


def _flag_type(annotation: Any, json_field: bool) -> tuple[Any, str]:
    """The type Typer parses for a field, and a note on the values it takes."""
    if json_field:
        return str, "a JSON object"
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return str, " | ".join(map(str, args))
    if origin is dict:
        return list[str], "key=value, repeatable; values read as JSON when they parse"
    if origin is list:
        return str, "comma-separated: " + ",".join(typing.get_args(args[0]) if args else ())
    if type(None) in args:
        return _flag_type([a for a in args if a is not type(None)][0], False)
    return annotation, ""


def _shown(default: Any) -> str:
    if isinstance(default, (list, tuple)):
        return ",".join(map(str, default))
    return "none" if default is None or default == {} else str(default)


def flag_params(fields: list[ConfigField], json_fields: tuple[str, ...] = (),
                panel: str | None = None) -> list[inspect.Parameter]:
    """One keyword parameter per field, each a Typer option whose unset value is None."""
    params = []
    for f in fields:
        kind, values = _flag_type(f.annotation, f.name in json_fields)
        doc = " ".join(p for p in (f.help, f"({values})" if values and values not in f.help else "") if p)
        decl = f"{f.flag}/--no-{f.flag[2:]}" if kind is bool else f.flag
        params.append(inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, annotation=typing.Optional[kind],
            default=typer.Option(None, decl, help=doc if "default" in doc else f"{doc} (default: {_shown(f.default)})",
                                 show_default=False, rich_help_panel=panel)))
    return params


def with_config_flags(cls: type, fn: Callable, *, into: str, help: dict[str, str] | None = None,
                      json_fields: tuple[str, ...] = (), panel: str | None = None) -> Callable:
    """``fn`` with one flag per field of ``cls`` added to its signature; it receives the
    flags given, read into their fields' values, as the dict parameter ``into``."""
    fields = config_fields(cls, help)
    sig = inspect.signature(fn)
    own = [p for n, p in sig.parameters.items() if n != into]

    @functools.wraps(fn)
    def wrapper(**kw):
        given = {f.name: read_flag(f, kw.pop(f.name), json_fields) for f in fields}
        return fn(**kw, **{into: {k: v for k, v in given.items() if v is not None}})

    wrapper.__signature__ = sig.replace(parameters=own + flag_params(fields, json_fields, panel))
    return wrapper


def read_flag(f: ConfigField, value: Any, json_fields: tuple[str, ...] = ()) -> Any:
    """A flag's text as its field's value (None: not given)."""
    if value is None or value == []:
        return None
    if f.name in json_fields:
        return json_object(value, f.flag)
    origin = typing.get_origin(f.annotation)
    if origin is dict:
        return key_values(value, f.flag)
    if origin is list and isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    return value


def key_values(items: list[str], flag: str) -> dict:
    """``key=value`` items; values are read as JSON when they parse (numbers, true/false)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FlagError(f"{flag}: wants key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def json_object(text: str, flag: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise FlagError(f"{flag}: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(value, dict):
        raise FlagError(f"{flag}: wants a JSON object {{...}}, got {type(value).__name__} {text!r}")
    return value


def validated(cls: type, values: dict) -> Any:
    """``cls(**values)`` for a pydantic model; its first validation error as one ``FlagError``
    naming the flag."""
    from pydantic import ValidationError

    try:
        return cls(**values)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
        raise FlagError(f"--{where.replace('_', '-')}: {err['msg']} (got {err.get('input')!r})") from None
