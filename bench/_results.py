"""The one place the benchmarks write their sections: appended to bench/RESULTS.md (``--write-results``)."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def append_to_results(text: str) -> None:
    """Append ``text`` (a section, as the script printed it) to bench/RESULTS.md, as it is."""
    with open(RESULTS, "a") as f:
        f.write(text)
