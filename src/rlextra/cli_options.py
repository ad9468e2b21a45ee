"""Command-line option groups derived once from the config dataclasses and the API's signatures.

A group names the fields (or parameters) it exposes; the flag, default, type and help come from
the dataclass field (``rlextra.fields.option``) or the function's signature, so the CLI restates
none of them. ``values(args)`` gives back the keyword arguments for the dataclass or function.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from typing import Any, Callable, Sequence

_TYPES = {"int": int, "float": float, "str": str}


def _base_type(annotation: Any) -> str:
    """'int | None' -> 'int'; 'tuple[int, int] | None' -> 'tuple[int, int]'."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts = [t.strip() for t in text.split("|") if t.strip() != "None"]
    return parts[0] if len(parts) == 1 else text


class Options:
    """Some fields of a dataclass (or parameters of a function) as argparse options."""

    def __init__(self, source: type | Callable, names: Sequence[str], *, title: str | None = None,
                 flags: dict[str, str] | None = None, helps: dict[str, str] | None = None,
                 types: dict[str, Callable] | None = None, choices: dict[str, Sequence] | None = None) -> None:
        self.source, self.title = source, title
        self.specs: dict[str, dict] = {}
        known = self._known(source)
        for name in names:
            if name not in known:
                raise KeyError(f"{getattr(source, '__name__', source)} has no field or parameter {name!r}")
            annotation, default, meta = known[name]
            spec = {"flag": (flags or {}).get(name) or meta.get("flag") or "--" + name.replace("_", "-"),
                    "default": default, "help": (helps or {}).get(name, meta.get("help", "")),
                    "type": (types or {}).get(name), "choices": (choices or {}).get(name) or meta.get("choices"),
                    "metavar": meta.get("metavar"), "kind": _base_type(annotation)}
            spec["dest"] = spec["flag"].lstrip("-").replace("-", "_")
            self.specs[name] = spec

    @staticmethod
    def _known(source) -> dict[str, tuple[Any, Any, dict]]:
        if dataclasses.is_dataclass(source):
            out = {}
            for f in dataclasses.fields(source):
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                out[f.name] = (f.type, None if default is dataclasses.MISSING else default, dict(f.metadata))
            return out
        return {n: (p.annotation, None if p.default is inspect.Parameter.empty else p.default, {})
                for n, p in inspect.signature(source).parameters.items()}

    def add(self, parser: argparse.ArgumentParser, *, defaults: dict[str, Any] | None = None,
            helps: dict[str, str] | None = None) -> None:
        """Add the options to ``parser`` (in a titled group when the group has a title).

        ``defaults`` / ``helps`` change a command's own default or wording of a field.
        """
        target = parser.add_argument_group(self.title) if self.title else parser
        for name, spec in self.specs.items():
            default = (defaults or {}).get(name, spec["default"])
            text = (helps or {}).get(name, spec["help"])
            kw: dict[str, Any] = {"dest": spec["dest"], "default": default}
            if spec["kind"] == "bool":
                kw["action"] = "store_true"
            elif spec["kind"] == "list[str]":
                kw.update(action="append", default=list(default or []))
            else:
                kw["type"] = spec["type"] or _TYPES.get(spec["kind"], str)
                if spec["choices"]:
                    kw["choices"] = list(spec["choices"])
                kw["metavar"] = spec["metavar"] or {"int": "N", "float": "X"}.get(spec["kind"])
                if default is not None and "default" not in text:
                    text = f"{text} (default {default})" if text else f"default {default}"
            kw["help"] = text.replace("%", "%%") or None
            target.add_argument(spec["flag"], **kw)

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The parsed options as keyword arguments of the dataclass or function."""
        return {name: getattr(args, spec["dest"]) for name, spec in self.specs.items()}
