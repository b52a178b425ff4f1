"""`key=value` settings -> the keyword arguments of config dataclasses, each value checked against its field's type.

The one way every job (`wm train`, `wm bc`, `wm refine` and the Python API) turns settings into configs: a setting
goes to the config that has a field of its name, its value is converted to the field's type (from the type hints
of the dataclass), and anything else is a one-line `WMError` that names the setting and what it should be.

Values given as text (the command line's) are read by the field's type:
  bool         true/false, yes/no, on/off, 1/0 (any case)
  int          a whole number (1e5 too; not 1.5, not a bool)
  float        a finite number (an int stays an int)
  str          the text as it is
  X | None     none or null, else an X
  list, tuple  a JSON list (`[32,64,64]`), its items checked when the hint names their types
  dict         a JSON object, or one entry of it by a dotted key (`predictor.depth=4`)
Python values (the API's) are checked by the same rules; text is accepted wherever the command line's would be.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import types
import typing
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from wm.errors import WMError

Settings = Iterable[str] | Mapping[str, object]
BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
NONES = ("none", "null")


def route_settings(
    settings: Settings,
    targets: Mapping[str, object],
    nested: Mapping[str, object] | None = None,
    exclude: Collection[str] = (),
) -> dict[str, dict]:
    """`{target name: {field: checked value}}`: the keyword arguments each config of `targets` gets from `settings`.

    `settings` are `key=value` texts (`["lr=1e-3", "predictor.depth=4"]`) or a mapping of keys to values (text or
    Python values: `{"compile": False}`). `targets` names the config dataclasses (types or instances; only their
    fields and type hints are read); a key goes to the first target with a field of that name. A dotted key
    (`encoder.width=96`) sets one entry of a dict field: `nested` names the class whose fields (a dataclass) or
    constructor parameters type the entries of such a field (`{"encoder": PixelEncoderConfig}`); entries of a dict
    field without one are JSON values (else text). A dict field's value is the dict of the entries given, for the
    caller to merge over its defaults. Keys in `exclude` (dotted ones too) cannot be set. An unknown key, a value
    of the wrong type or a text without `=` is a one-line WMError.
    """
    nested = nested or {}
    fields = {name: _typed_fields(cls) for name, cls in targets.items()}
    owners = {}
    for target, hints in reversed(fields.items()):  # the first target with the field wins
        owners.update({field: target for field in hints if field not in exclude})
    out = {name: {} for name in targets}
    for key, value in _items(settings):
        field, dot, entry = key.partition(".")
        if field not in owners:
            raise WMError(f"unknown setting {key!r}; known settings: {', '.join(sorted(owners))}")
        hint, given = fields[owners[field]][field], out[owners[field]]
        if dot and _origin(hint) is not dict:
            raise WMError(f"setting {key}: {field} has no entries to set (it is {_describe(hint)})")
        if dot:
            given.setdefault(field, {})[entry] = _entry(key, value, nested.get(field), exclude)
        elif field in nested:  # a whole dict of entries, each checked
            entries = {
                k: _entry(f"{field}.{k}", v, nested[field], exclude) for k, v in _convert(key, value, dict).items()
            }
            given[field] = {**given.get(field, {}), **entries}
        else:
            given[field] = _convert(key, value, hint)
    return out


def _items(settings: Settings) -> Iterable[tuple[str, object]]:
    if isinstance(settings, Mapping):
        yield from ((str(k).strip(), v) for k, v in settings.items())
        return
    for pair in settings:
        key, eq, value = str(pair).partition("=")
        if not eq or not key.strip():
            raise WMError(f"setting {pair!r} is not key=value; e.g. lr=1e-3 or predictor.depth=4")
        yield key.strip(), value


def _typed_fields(cls) -> dict[str, object]:
    """`{name: type hint}` of a dataclass's fields, or of a class's (function's) constructor parameters."""
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls if isinstance(cls, type) else type(cls))
        return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls.__init__ if isinstance(cls, type) else cls)
    params = inspect.signature(cls).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: hints.get(p.name, Any) for p in params if p.kind in kinds}


def _entry(key: str, value, cls, exclude: Collection[str]):
    """The value of one entry (`key` = `field.entry`) of a dict field typed by `cls` (None: a JSON value)."""
    if cls is None:
        return _convert(key, value, Any)
    field, _, entry = key.partition(".")
    hints = {k: v for k, v in _typed_fields(cls).items() if f"{field}.{k}" not in exclude}
    if entry not in hints:
        raise WMError(f"unknown setting {key!r}; known {field} settings: {', '.join(sorted(hints))}")
    return _convert(key, value, hints[entry])


def _convert(key: str, value, hint):
    try:
        return _as(value, hint)
    except ValueError:
        shown = value if isinstance(value, str) else repr(value)
        raise WMError(f"setting {key}={shown}: expected {_describe(hint)}") from None


def _origin(hint):
    """The bare class of a hint: `list` for `list[int]`, `dict` for `dict`, a union's type for unions."""
    origin = typing.get_origin(hint) or hint
    return types.UnionType if origin is typing.Union else origin


def _as(value, hint):
    """`value` as a value of type `hint`; ValueError where it is none."""
    origin, args = _origin(hint), typing.get_args(hint)
    if origin is types.UnionType:
        if type(None) in args and (value is None or str(value).strip().lower() in NONES):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _as(value, arg)
            except ValueError:
                continue
        raise ValueError
    if hint is Any:
        return _json(value) if isinstance(value, str) else value
    if hint is bool:
        return _bool(value)
    if hint in (int, float):
        return _number(value, hint)
    if origin in (list, tuple, dict):
        return _container(_json(value) if isinstance(value, str) else value, origin, args)
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ValueError


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in BOOLS:
        return BOOLS[value.strip().lower()]
    raise ValueError


def _number(value, hint: type):
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            value = float(text)  # ValueError when it is no number
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError
    if hint is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        return int(value)
    return value


def _container(value, origin: type, args: tuple):
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError
        return value
    if not isinstance(value, (list, tuple)):
        raise ValueError
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ValueError
        return tuple(_as(v, a) for v, a in zip(value, args, strict=True))
    items = [_as(v, args[0]) for v in value] if args else list(value)
    return tuple(items) if origin is tuple else items


def _describe(hint) -> str:
    """What a value of type `hint` is, for error messages: `a bool (true/false)`, `a whole number or none`."""
    origin, args = _origin(hint), typing.get_args(hint)
    if origin is types.UnionType:
        return " or ".join("none" if a is type(None) else _describe(a) for a in args)
    named = {bool: "a bool (true/false)", int: "a whole number", float: "a finite number", str: "a string"}
    if hint in named:
        return named[hint]
    if origin is dict:
        return 'a JSON object, e.g. {"depth": 4}'
    if origin in (list, tuple):
        items = [_describe(a).removeprefix("a ") for a in args if a is not Ellipsis]
        shown = ", ".join(items) + (", ..." if Ellipsis in args or (items and origin is list) else "")
        return f"a JSON list [{shown}]" if items else "a JSON list, e.g. [1, 2]"
    return f"a {getattr(hint, '__name__', hint)}"


def require_at_least(what: str, minimum: float, **values) -> None:
    """A WMError naming the first of `values` below `minimum` (or not a number: NaN), as `what` settings."""
    for name, value in values.items():
        if not value >= minimum:
            raise WMError(f"{what} setting {name}={value} must be at least {minimum}")
