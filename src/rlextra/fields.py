"""Config dataclass fields that carry their own help text, so the CLI derives its options from the
dataclasses (defaults and help written once, beside the field) instead of restating them."""

from __future__ import annotations

from dataclasses import MISSING, field
from typing import Any, Callable


def option(default: Any = MISSING, help: str = "", *, flag: str | None = None, choices: tuple | None = None,
           metavar: str | None = None, default_factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its command-line help (and, when it differs from the field name, its flag)."""
    meta = {"help": help, "flag": flag, "choices": choices, "metavar": metavar}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)
