"""Write a checkpoint folder atomically: streamed, sharded safetensors plus the model's side files.

safetensors' ``save_file`` needs every tensor of a shard in memory at once; for a 70B model that
is gigabytes per shard. Here the header is written first (all shapes are known in advance) and
tensor data is streamed chunk by chunk, so memory stays at one chunk. Every finished shard is
re-opened with the safetensors library to prove it is valid. Folders are built beside the
target and renamed into place only when complete (``rlextra.io.atomic_output_dir``).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from rlextra.checkpoints.reader import read_safetensors_index
from rlextra.errors import RLExtraError
from rlextra.io import atomic_output_dir  # noqa: F401  (re-exported: where callers found it)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
# Side files worth carrying to a new model folder: config, generation config, tokenizer, template.
SIDE_FILE_PATTERNS = ("config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json",
                      "added_tokens.json", "vocab.json", "merges.txt", "*.model", "chat_template*",
                      "*.tiktoken", "preprocessor_config.json")


def parse_size(text: str | int) -> int:
    """'5GB' -> 5e9 bytes, '500MiB' -> 500 * 2**20; plain integers are bytes (HF conventions)."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    unit = (m.group(2) or "").upper() if m else None
    if not m or unit not in _UNITS:
        raise RLExtraError(f"cannot read size '{text}' (use e.g. 5GB, 500MB, 2GiB)")
    return int(float(m.group(1)) * _UNITS[unit])


@dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def plan_shards(specs: Sequence[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Consecutive groups of tensors, each at most max_shard_bytes unless one tensor is larger."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and size + spec.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards


class StreamingSafetensorsWriter:
    """Writes tensors in plan order, chunk by chunk, into one or more safetensors shards."""

    def __init__(self, folder: Path, specs: Sequence[TensorSpec], max_shard_bytes: int,
                 metadata: dict[str, str] | None = None, prefix: str = "model") -> None:
        self.folder = Path(folder)
        self.prefix = prefix
        self.shards = plan_shards(list(specs), max_shard_bytes)
        n = len(self.shards)
        self.files = [f"{prefix}.safetensors"] if n == 1 else \
            [f"{prefix}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self.metadata = {"format": "pt", **(metadata or {})}
        self._order = [(i, s) for i, shard in enumerate(self.shards) for s in shard]
        self._pos = 0  # index into _order of the tensor being written
        self._written = 0  # bytes of that tensor written so far
        self._handle = None
        self._shard = -1
        self._skip_empty()

    def _skip_empty(self) -> None:
        """Zero-element tensors get no write calls (a chunked reader yields no chunk for them)."""
        while self._pos < len(self._order) and self._order[self._pos][1].nbytes == 0:
            self._pos += 1

    def write(self, name: str, raw: np.ndarray) -> None:
        """Append the next chunk (storage dtype, flat) of tensor name; tensors in plan order."""
        if raw.size == 0:  # nothing to append (zero-element tensors are complete from the start)
            return
        if self._pos >= len(self._order):
            raise RuntimeError(f"tensor {name} written past the plan")
        shard, spec = self._order[self._pos]
        if spec.name != name:
            raise RuntimeError(f"expected tensor {spec.name}, got {name}")
        if shard != self._shard:
            self._open_shard(shard)
        data = memoryview(np.ascontiguousarray(raw)).cast("B")  # no copy
        self._written += data.nbytes
        if self._written > spec.nbytes:
            raise RuntimeError(f"tensor {name}: more bytes than its shape holds")
        self._handle.write(data)
        if self._written == spec.nbytes:
            self._pos += 1
            self._written = 0
            self._skip_empty()

    def _open_shard(self, shard: int) -> None:
        while self._shard + 1 < shard:  # shards holding only zero-element tensors: header only
            self._open_one(self._shard + 1)
        self._open_one(shard)

    def _open_one(self, shard: int) -> None:
        self._close_handle()
        header: dict = {"__metadata__": self.metadata}
        offset = 0
        for spec in self.shards[shard]:
            header[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape),
                                 "data_offsets": [offset, offset + spec.nbytes]}
            offset += spec.nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self._handle = open(self.folder / self.files[shard], "wb")
        self._handle.write(len(blob).to_bytes(8, "little"))
        self._handle.write(blob)
        self._shard = shard

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def close(self) -> None:
        """Finish: check completeness, validate every shard, write the index when sharded."""
        if self._pos != len(self._order):
            self._close_handle()
            raise RuntimeError(f"only {self._pos} of {len(self._order)} tensors written")
        if self._shard < len(self.shards) - 1:
            self._open_shard(len(self.shards) - 1)
        self._close_handle()
        for f in self.files:
            read_safetensors_index(self.folder / f)
        if len(self.files) > 1:
            weight_map = {s.name: self.files[i] for i, s in self._order}
            total = sum(s.nbytes for _, s in self._order)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.folder / f"{self.prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def copy_side_files(sources: Sequence[Path], dest: Path) -> list[str]:
    """Copy config/tokenizer/generation files, each from the first source (newest first) that has it."""
    copied: list[str] = []
    for src in sources:
        for pattern in SIDE_FILE_PATTERNS:
            for f in sorted(Path(src).glob(pattern)):
                if f.is_file() and f.name not in copied and not f.name.endswith(".index.json"):
                    shutil.copy2(f, dest / f.name)
                    copied.append(f.name)
    return copied
