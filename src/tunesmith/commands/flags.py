"""Command-line flags from typed settings: one `--flag` per field of a pydantic model, typed,
with the field's description as its `--help`, and the parsed flags back into the model.

A field may say more in `json_schema_extra`: `positional` (an argument without a dash; optional
when the field has a default), `flags` (its option strings, when they are not `--field-name`:
`["-o", "--output"]`, or an older spelling kept beside the new one), `repeat` (the flag may be
given several times), `metavar`, `negatable` (a switch off by default that also has its --no-
spelling, which scripts written when it was on by default use).
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from typing import Any, Literal, Optional

from pydantic import BaseModel, ValidationError

from tunesmith.errors import UserError

FLAG_ALIASES = {"from_run": ["--from-run", "--from"]}  # the short spelling users type: tunesmith train --from RUN


def positional(**extra) -> dict:
    """`json_schema_extra` of a positional argument."""
    return {"positional": True, **extra}


def add_flags(parser: argparse.ArgumentParser, model: type[BaseModel], skip: tuple = ()) -> None:
    """One argument per field of `model`. Every flag defaults to None, so `given` tells what
    was typed from what was left to the model's (or a config file's) default."""
    for name, field in model.model_fields.items():
        if name in skip or name == "config_version":  # written by tunesmith, not a setting to choose
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        kind, choices = _flag_type(field.annotation)
        # "(default: None)" says nothing: an unset optional setting's description says what happens
        said = field.is_required() or field.default is None or field.default == []
        help_text = field.description if said else f"{field.description} (default: {field.default})"
        if extra.get("positional"):
            many = "+" if kind is list else None
            parser.add_argument(name, nargs=many or (None if field.is_required() else "?"), default=None,
                                type=None if kind is list else kind, metavar=extra.get("metavar"), help=help_text)
            continue
        flags = extra.get("flags") or FLAG_ALIASES.get(name) or ["--" + name.replace("_", "-")]
        common = {"dest": name, "default": None, "help": help_text}
        if kind is bool and field.default is False and not extra.get("negatable"):  # an opt-in switch: --no-auth
            parser.add_argument(*flags, action="store_true", **common)
        elif kind is bool:
            parser.add_argument(*flags, action=argparse.BooleanOptionalAction, **common)
        elif kind is list and extra.get("repeat"):
            parser.add_argument(*flags, action="append", metavar=extra.get("metavar"), **common)
        elif kind is list:
            parser.add_argument(*flags, type=_comma_list, metavar=extra.get("metavar", "A,B"), **common)
        else:
            parser.add_argument(*flags, type=kind, choices=choices, metavar=extra.get("metavar"),
                                required=field.is_required(), **common)


def given(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The fields of `model` given on the command line (not None)."""
    return {n: getattr(args, n) for n in model.model_fields if getattr(args, n, None) is not None}


def settings_of(args: argparse.Namespace, model: type[BaseModel]):
    """`model` from the flags, with a bad value named by its flag in one line."""
    try:
        return model(**given(args, model))
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else ""
        field = model.model_fields.get(name)
        extra = field.json_schema_extra if field is not None and isinstance(field.json_schema_extra, dict) else {}
        flag = name if extra.get("positional") else (extra.get("flags") or ["--" + name.replace("_", "-")])[-1]
        value = f" {err['input']}" if name and not isinstance(err.get("input"), dict) else ""
        raise UserError(f"{flag}{value}: {err['msg'].removeprefix('Value error, ')}") from None


def _flag_type(annotation: Any) -> tuple[Any, Optional[list[str]]]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _flag_type(inner[0])
    if origin is Literal:
        return str, list(typing.get_args(annotation))
    if origin is list:
        return list, None
    if origin is dict:
        return _json_mapping, None
    return annotation, None


def _json_mapping(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError('give a JSON object, like \'{"refund": "asks for money back"}\'') from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("give a JSON object of names to texts")
    return value


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def training_field(name: str):
    """TrainConfig's field `name` (type, default, description), for a verb that takes the same
    setting: one definition, one flag name, one help text."""
    import copy

    from tunesmith.config import TrainConfig

    return copy.deepcopy(TrainConfig.model_fields[name])
