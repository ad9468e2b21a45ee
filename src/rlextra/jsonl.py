"""JSON Lines input with one-line errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path

from rlextra.errors import RLExtraError


def read_jsonl(path: str | Path) -> list[tuple[int, object]]:
    """(line number, parsed value) for every non-blank line of a JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise RLExtraError(f"{path}: no such file")
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append((i, json.loads(line)))
                except ValueError as exc:
                    raise RLExtraError(f"{path}:{i}: not valid JSON ({exc})") from None
    return rows
