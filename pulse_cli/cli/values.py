"""Command-line values read without pydantic, so that a bad argument is refused at once.

Typer (0.29) reads every parameter through a pydantic TypeAdapter: importing pydantic and building the
adapters is most of what an argument error costs (about 70 of 160 ms, against 85 ms for `pulse --version`).
The types `pulse` uses are read here instead, for the values whose meaning is plain: ASCII decimal numbers
(with Typer's bounds), words or fractions where a number or an int is expected, strings, paths, exact
choice names, lists of those. Any other value (`--steps 1_000`, `--steps 3.0`, `--eps nan`, a type not
listed) goes to Typer's own reading, so what is accepted and every message stay Typer's (pydantic's words
included); `tests/test_cli_values.py` compares the two on every parameter of every command.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

from typer._click.exceptions import BadParameter
from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
from typer._param_types import coerce_cli_choice, coerce_cli_path

# What both readings take to the same number: Python's and pydantic's parsers agree on these, and
# the lengths keep int() and float() far from their limits.
_INT = re.compile(r"[+-]?[0-9]{1,18}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]{1,30}(?:\.[0-9]{0,30})?|\.[0-9]{1,30})(?:[eE][+-]?[0-9]{1,3})?")


class _NotPlain(Exception):
    """A value this module does not read: Typer's reading decides."""


def use_plain_values(param: Any) -> None:
    """Give a Typer parameter the plain reading when its type is one this module knows."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or getattr(param, "_runtime_param", "absent") is not None:
        return  # not a Typer parameter, or Typer changed: its own reading stays
    read = _reader(descriptor.annotation, descriptor)
    if read is not None:
        param._runtime_param = PlainValue(descriptor.parameter_info, descriptor.annotation, descriptor, read)


@dataclass(frozen=True)
class PlainValue(RuntimeParam):
    """Typer's runtime reading of one parameter, plain values first (see the module's docstring)."""

    descriptor: TypeDescriptor
    read: Callable[[Any, Any, Any], Any]

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            return self.read(value, param, ctx)
        except _NotPlain:
            return build_runtime_param(self.descriptor)._coerce_value(value, param=param, ctx=ctx)


def _reader(annotation: Any, descriptor: TypeDescriptor) -> Any:
    """The function that reads one value of `annotation`, or None when this module does not know the type."""
    info = descriptor.parameter_info
    if descriptor.file_annotation is not None or info.parser is not None or getattr(info, "click_type", None):
        return None
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        read_item = _reader(item, descriptor)
        if read_item is None:
            return None
        return lambda value, param, ctx: _read_list(value, read_item, param, ctx)
    if get_origin(annotation) is not None:
        return None
    if annotation is str:
        return _read_str
    if annotation is bool:
        return _read_bool
    if annotation in (int, float):
        if info.clamp or not all(_bound_text(bound) for bound in (info.min, info.max) if bound is not None):
            return None
        return lambda value, param, ctx: _read_number(value, annotation, info.min, info.max, param, ctx)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return lambda value, param, ctx: _read_choice(value, tuple(annotation), info.case_sensitive, param, ctx)
    if isinstance(annotation, type) and issubclass(annotation, Path) and info.path_type is None:
        return lambda value, param, ctx: _read_path(value, annotation, info, param, ctx)
    return None


def _read_str(value: Any, param: Any, ctx: Any) -> str:
    if not isinstance(value, str):
        raise _NotPlain
    return value


def _read_bool(value: Any, param: Any, ctx: Any) -> bool:
    if not isinstance(value, bool):  # flags hold bools; "yes"/"0"... are Typer's to read
        raise _NotPlain
    return value


def _read_number(value: Any, kind: type, low: Any, high: Any, param: Any, ctx: Any) -> Any:
    if isinstance(value, str):
        if _surely_not_a_number(value, kind):  # in pydantic's words
            what = "a valid integer, unable to parse string as an integer" if kind is int else \
                "a valid number, unable to parse string as a number"
            raise BadParameter(f"Input should be {what}", ctx=ctx, param=param)
        if not (_INT if kind is int else _FLOAT).fullmatch(value):
            raise _NotPlain
        number = kind(value)
    elif type(value) in (int, float) and (kind is float or type(value) is int):
        number = kind(value)
    else:
        raise _NotPlain
    if not math.isfinite(number):
        raise _NotPlain
    # pydantic's words for Typer's min/max (Field ge/le)
    if low is not None and number < low:
        raise BadParameter(f"Input should be greater than or equal to {_bound_text(low)}", ctx=ctx, param=param)
    if high is not None and number > high:
        raise BadParameter(f"Input should be less than or equal to {_bound_text(high)}", ctx=ctx, param=param)
    return number


def _surely_not_a_number(text: str, kind: type) -> bool:
    """Strings no reading makes a number of `kind` (pydantic's tests show the same): ASCII without a digit,
    except the float spellings of infinity and NaN, all of which have an "n" (pydantic takes "i_nf" too);
    and for an int, a decimal with a nonzero fraction or an exponent (pydantic takes "3.0", not "1.5" or "1e3")."""
    if not text.isascii():
        return False
    if not any(c.isdigit() for c in text):
        return kind is int or "n" not in text.lower()
    if kind is int and _FLOAT.fullmatch(text):
        mantissa, _, exponent = text.lower().partition("e")
        return bool(exponent) or any(c in "123456789" for c in mantissa.partition(".")[2])
    return False


def _bound_text(bound: Any) -> str | None:
    """A bound as pydantic writes it, for whole numbers (1.0 is "1"); None for others (Typer reads those)."""
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not float(bound).is_integer():
        return None
    return str(int(bound)) if abs(bound) < 1e15 else None


def _read_choice(value: Any, choices: tuple[Any, ...], case_sensitive: bool, param: Any, ctx: Any) -> Any:
    if not isinstance(value, (str, Enum)):
        raise _NotPlain
    try:
        return coerce_cli_choice(value, choices=choices, case_sensitive=case_sensitive, ctx=ctx)
    except ValueError as exc:  # pydantic's wording for a validator's ValueError
        raise BadParameter(f"Value error, {exc}", ctx=ctx, param=param) from None


def _read_path(value: Any, kind: type, info: Any, param: Any, ctx: Any) -> Any:
    if isinstance(value, str) and value and "\0" not in value:
        value = kind(value)
    elif not isinstance(value, kind):
        raise _NotPlain
    return coerce_cli_path(value, info, path_type=kind, param=param, ctx=ctx)


def _read_list(value: Any, read_item: Any, param: Any, ctx: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise _NotPlain
    return [read_item(item, param, ctx) for item in value]
