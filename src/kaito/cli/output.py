"""Output the way ``kubectl get`` does it: plain columns that fit the terminal, or JSON/YAML.

Tables are plain text (upper-case headers, columns separated by three spaces) so that they read
the same in a terminal, a pipe and a CI log. When a table is wider than the terminal, columns are
dropped from the right, lowest priority first, rather than squeezing every column into a sliver;
``-o wide`` asks for the extra columns and prints them all. Machine-readable output is one JSON or
YAML document that never depends on the terminal, with camelCase field names as Kubernetes
objects have (``instanceType``, ``maxModelLen``): the Python field names are turned, so a script
reading ``kaito estimate -o json`` and ``kubectl get workspace -o json`` meets one key style.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TextIO

import yaml

GAP = "   "
#: A Python field name (``max_model_len``); SKU names (``Standard_NC6s_v3``), label keys and
#: hyphenated preset names used as keys are data and stay as they are.
_SNAKE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")


class Format(StrEnum):
    """``-o`` values, as kubectl spells them."""

    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"


@dataclass(frozen=True)
class Column:
    header: str
    #: 0 = always shown; higher numbers are dropped first when the terminal is too narrow.
    priority: int = 0
    #: Only with ``-o wide``.
    wide: bool = False


def terminal_width(stream: TextIO | None = None) -> int | None:
    """The width to fit, or None for "do not fit" (a pipe or file, as kubectl does)."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    out = stream or sys.stdout
    if hasattr(out, "isatty") and out.isatty():
        return shutil.get_terminal_size((80, 24)).columns
    return None


def _width(cols: Sequence[int], widths: Sequence[int]) -> int:
    return sum(widths[i] for i in cols) + len(GAP) * max(len(cols) - 1, 0)


def render_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], *, wide: bool, width: int | None
) -> str:
    """The table as text; columns are dropped (highest priority number first) to fit ``width``."""
    shown = [i for i, c in enumerate(columns) if wide or not c.wide]
    widths = [max([len(c.header), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    if width is not None and not wide:
        by_drop_order = sorted(
            (i for i in shown if columns[i].priority > 0), key=lambda i: (-columns[i].priority, -i)
        )
        for i in by_drop_order:
            if _width(shown, widths) <= width:
                break
            shown.remove(i)
    lines = []
    for cells in [[c.header for c in columns], *rows]:
        parts = [cells[i].ljust(widths[i]) for i in shown]
        lines.append(GAP.join(parts).rstrip())
    return "\n".join(lines)


def camel_keys(data: Any) -> Any:
    """``data`` with every snake_case field name in camelCase, at any depth."""
    if isinstance(data, dict):
        return {(_camel(k) if isinstance(k, str) else k): camel_keys(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [camel_keys(v) for v in data]
    return data


def _camel(key: str) -> str:
    if not _SNAKE.match(key):
        return key
    first, *rest = key.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def dump(data: Any, fmt: Format, out: TextIO | None = None) -> None:
    """One JSON (indented, keys in insertion order) or YAML document, keys in camelCase."""
    stream = out or sys.stdout
    data = camel_keys(data)
    if fmt is Format.json:
        stream.write(json.dumps(data, indent=2) + "\n")
    else:
        stream.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def print_table(columns: Sequence[Column], rows: Sequence[Sequence[str]], fmt: Format) -> None:
    text = render_table(columns, rows, wide=fmt is Format.wide, width=terminal_width())
    sys.stdout.write(text + "\n")
