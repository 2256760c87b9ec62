"""Command-line flags made from the settings dataclasses: one default, in one place.

Each command lists the fields it exposes (``Flag``: the field, its flag, what
it means, how to read its value). ``add_flags`` declares them with the
dataclass's own default in the ``--help`` text; ``build`` makes the settings
object from the flags given, so a flag left out takes the dataclass's default
and nothing restates it.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from takealook.errors import UsageError


@dataclass(frozen=True)
class Flag:
    field: str  # the settings dataclass's field (a dotted path for a nested one: "connect.lock_timeout_ms")
    flag: str  # "--lock-timeout"
    help: str  # what it means; "(default ...)" is added from the dataclass
    metavar: str = "N"
    parse: Optional[Callable[[str, str], Any]] = None  # (text, flag) -> value; default: the default's type
    show: Optional[Callable[[Any], str]] = None  # how the default reads in --help

    @property
    def dest(self) -> str:
        return "setting_" + self.field.replace(".", "__")


def default_of(settings_type: type, field: str) -> Any:
    """The default of ``field`` (dotted for nested dataclasses) as the dataclass declares it."""
    head, _, rest = field.partition(".")
    spec = {f.name: f for f in dataclasses.fields(settings_type)}[head]
    value = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()  # type: ignore[misc]
    if not rest:
        return value
    return default_of(type(value), rest)


def add_flags(parser, settings_type: type, flags: tuple[Flag, ...]) -> None:
    for flag in flags:
        default = default_of(settings_type, flag.field)
        shown = flag.show(default) if flag.show else _show(default)
        parser.add_argument(flag.flag, dest=flag.dest, default=None, metavar=flag.metavar,
                            help=f"{flag.help} (default {shown})".replace("%", "%%"))


def build(settings_type: type, args: argparse.Namespace, flags: tuple[Flag, ...], **fixed: Any):
    """``settings_type`` with the values of the flags given; the others keep the dataclass's defaults."""
    given: dict[str, Any] = {}
    for flag in flags:
        text = getattr(args, flag.dest, None)
        if text is None:
            continue
        parse = flag.parse or _parser_for(default_of(settings_type, flag.field))
        given[flag.field] = parse(str(text), flag.flag)
    return _make(settings_type, given, fixed)


def _make(settings_type: type, given: dict[str, Any], fixed: dict[str, Any]):
    nested: dict[str, dict[str, Any]] = {}
    top = dict(fixed)
    for field, value in given.items():
        head, _, rest = field.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            top[field] = value
    for head, values in nested.items():
        inner_type = type(default_of(settings_type, head))
        top[head] = _make(inner_type, values, {})
    return settings_type(**top)


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _parser_for(default: Any) -> Callable[[str, str], Any]:
    if isinstance(default, bool):
        raise TypeError("boolean settings are switches, not valued flags")
    if isinstance(default, int):
        return non_negative_int
    return non_negative_float


def _non_negative(text: str, flag: str, kind: type, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected {what}") from None
    if value < 0 or value != value:  # NaN is not a threshold either
        raise UsageError(f"{flag} must not be negative")
    return value


def non_negative_int(text: str, flag: str) -> int:
    return _non_negative(text, flag, int, "a whole number")


def positive_int(text: str, flag: str) -> int:
    value = non_negative_int(text, flag)
    if value < 1:
        raise UsageError(f"{flag} must be at least 1")
    return value


def non_negative_float(text: str, flag: str) -> float:
    return _non_negative(text, flag, float, "a number")


def percentage(text: str, flag: str) -> float:
    try:
        value = float(text.strip().rstrip("%").strip())
    except ValueError:
        raise UsageError(f"{flag} {text!r}: use a percentage such as 50") from None
    if not 0 <= value <= 100:
        raise UsageError(f"{flag} must be between 0 and 100")
    return value


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def age_seconds(text: str, flag: str) -> float:
    """``7d``, ``36h``, ``2w``, ``0`` (no minimum); a bare number is days."""
    match = _AGE.match(text)
    if not match:
        raise UsageError(f"{flag} {text!r}: expected an age such as 7d, 36h or 2w")
    return float(match.group(1)) * _AGE_UNITS[(match.group(2) or "d").lower()]


def show_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
