"""Options dataclasses and their flags, one style for the three tools.

Each default is written once, in a frozen dataclass (as TF Serving's
`ServerCore::Options`): `option()` makes a field that carries its flag's help, its
group, its valid range or choices and any other `add_argument` keyword; `add_arguments`
binds one flag to every field (`--batch-size` for `batch_size`, its default shown in
`--help`), `from_args` reads them back, and `check` refuses a value out of range with
one line naming the field.  The library takes the same dataclass, or its fields as
keywords.

Only the standard library is imported here, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any


def option(default: Any, help: str, *, group: str | None = None,
           at_least: float | None = None, above: float | None = None,
           below: float | None = None, at_most: float | None = None,
           choices: tuple | None = None, **flag: Any) -> Any:
    """A field: its default, its flag's help (argparse's `help`, the flag's `group`, and
    any other `add_argument` keyword in `flag`), and its valid range or choices."""
    return dataclasses.field(default=default, metadata={
        "help": help, "group": group, "at_least": at_least, "above": above, "below": below,
        "at_most": at_most, "choices": choices, "flag": flag})


def field_types(options: type) -> Mapping[str, type]:
    """Each field's value type, `None` taken out of optional ones."""
    hints = typing.get_type_hints(options)
    return {name: next(a for a in typing.get_args(hint) or (hint,) if a is not type(None))
            for name, hint in hints.items()}


def check(options: Any, error: Callable[[str], Exception]) -> None:
    """Raises `error(message)` for the first field whose value is not one of its choices
    or lies outside its range; the message names the field, the bound and the value."""
    for field in dataclasses.fields(options):
        value, rules = getattr(options, field.name), field.metadata
        if value is None or isinstance(value, bool) or "choices" not in rules:
            continue
        # (A choice is a name or a number; anything else, as a Strategy object, is taken.)
        if rules["choices"] and isinstance(value, str | int) and value not in rules["choices"]:
            raise error(f"{field.name} must be one of {rules['choices']}, got {value!r}")
        if not isinstance(value, int | float):
            continue
        low, above, below, high = (rules["at_least"], rules["above"], rules["below"],
                                   rules["at_most"])
        if ((low is not None and value < low) or (above is not None and value <= above)
                or (below is not None and value >= below)
                or (high is not None and value > high)):
            bound = " and ".join(text for text in (
                f"at least {low}" if low is not None else "",
                f"more than {above}" if above is not None else "",
                f"less than {below}" if below is not None else "",
                f"at most {high}" if high is not None else "") if text)
            raise error(f"{field.name} must be {bound}, got {value!r}")


def flag_name(field: str) -> str:
    """A field's flag: `--batch-size` for `batch_size`."""
    return "--" + field.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, options: type, *,
                  fields: tuple[str, ...] | None = None, exclude: tuple[str, ...] = (),
                  spelling: Callable[[str], str] = flag_name,
                  boolean: Mapping[str, Any] | None = None) -> None:
    """One flag per field of `options` (those named in `fields`, default all, but
    `exclude`): its default, type, help, choices and group read from the field.  A flag
    is spelled `spelling(field)`; a boolean is `--name/--no-name`, or takes `boolean`'s
    `add_argument` keywords (`--enable_batching=true`, as tensorflow_model_server's
    flags); a tuple field takes several values."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    types = field_types(options)
    for field in dataclasses.fields(options):
        if field.name in exclude or (fields is not None and field.name not in fields):
            continue
        rules = field.metadata
        target = parser
        if rules["group"] is not None:
            if rules["group"] not in groups:
                groups[rules["group"]] = parser.add_argument_group(rules["group"])
            target = groups[rules["group"]]
        kind = types[field.name]
        shown = field.default
        if isinstance(shown, bool):
            shown = ("true" if shown else "false") if boolean else ("on" if shown else "off")
        elif isinstance(shown, tuple):
            shown = " ".join(map(str, shown))
        help_text = (f"{rules['help']} (default: {shown})" if field.default is not None
                     else rules["help"])
        flag = dict(rules["flag"])
        names = flag.pop("names", (spelling(field.name),))
        keywords = {"dest": field.name, "default": field.default, "help": help_text, **flag}
        if kind is bool:
            keywords.update(boolean or {"action": argparse.BooleanOptionalAction})
        else:
            if typing.get_origin(kind) is tuple:
                keywords.setdefault("nargs", "+")
                kind = typing.get_args(kind)[0]
            keywords.setdefault("type", kind)
            if rules["choices"]:
                keywords["choices"] = rules["choices"]
        target.add_argument(*names, **keywords)


def from_args(options: type, args: argparse.Namespace) -> Any:
    """The `options` that parsed `add_arguments` flags give (other attributes ignored;
    several values as a tuple)."""
    values = {}
    for field in dataclasses.fields(options):
        if hasattr(args, field.name):
            value = getattr(args, field.name)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return options(**values)
