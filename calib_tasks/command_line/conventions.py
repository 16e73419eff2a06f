"""The command-line conventions of calib-report, calib-study and calib-tune.

Exit statuses: ``EXIT_OK`` (everything asked for was done), ``EXIT_SOME_FAILED`` (some of it
failed, e.g. a point or an evaluation; the rest was done and reported), ``EXIT_BAD_INPUT`` (the
input is unusable, or nothing could be reported) and ``EXIT_INTERRUPTED`` (Ctrl-C).

A dataclass field becomes an option ``--field-name`` when its metadata holds an ``Option``
(``option(...)`` makes such a field): its default is the field's default, so that it exists
once. ``add_options`` adds the options of a dataclass to an argument group, and
``option_values`` takes their values from the parsed arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
OPTION = "option"  # the metadata key of a field's Option


def positive_int(text: str) -> int:
    """An argument type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argument type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


@dataclass(frozen=True)
class Option:
    """How a dataclass field is given on the command line: parsed by ``parse`` (None: kept as
    the string given), among ``choices`` when given, explained by ``help``."""

    help: str
    parse: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None


def option(
    default: Any,
    help: str,
    parse: Callable[[str], Any] | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field with ``default`` that is also the option ``--field-name``."""
    return dataclasses.field(default=default, metadata={OPTION: Option(help, parse, choices)})


def _options(cls: type) -> list[tuple[dataclasses.Field, Option]]:
    fields = dataclasses.fields(cls)
    return [(f, f.metadata[OPTION]) for f in fields if OPTION in f.metadata]


def add_options(group: argparse._ArgumentGroup, cls: type) -> None:
    """Add to ``group`` the option of every field of the dataclass ``cls`` made with
    ``option``, in field order, its default (when not None) named in its help."""
    for field, spec in _options(cls):
        shown = "" if field.default is None else f" (default {field.default})"
        group.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=spec.parse,
            choices=spec.choices,
            default=field.default,
            help=spec.help + shown,
        )


def option_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The values that parsed ``args`` hold for the options of ``cls`` (``add_options``), by
    field name: keyword arguments of ``cls``."""
    return {field.name: getattr(args, field.name) for field, _ in _options(cls)}
