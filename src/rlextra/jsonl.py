"""JSON Lines input; the reader lives in ``rlextra.io`` with the rest of rlextra's file handling."""

from rlextra.io import read_jsonl

__all__ = ["read_jsonl"]
