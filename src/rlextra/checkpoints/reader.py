"""Lazy reads of one chunk of one tensor from a checkpoint file.

safetensors' own ``safe_open`` validates each file (header, offsets, size). Reads then map just
the byte window of one chunk (mmap, private, read-only use) and view it as an array: no copy for
full reads, and a sampled read touches only the pages holding its samples. A window is unmapped
as soon as its array is dropped, so resident memory is bounded by the chunk size, not by the
model. Pickle checkpoints (.bin/.pt) are only read when the user opts in, fully in memory,
since pickle cannot be streamed.
"""

from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlextra.errors import RLExtraError

# safetensors dtype -> (numpy storage dtype, is floating point)
STORAGE = {
    "F64": (np.float64, True), "F32": (np.float32, True), "F16": (np.float16, True),
    "BF16": (np.uint16, True),
    "I64": (np.int64, False), "I32": (np.int32, False), "I16": (np.int16, False),
    "I8": (np.int8, False), "U64": (np.uint64, False), "U32": (np.uint32, False),
    "U16": (np.uint16, False), "U8": (np.uint8, False), "BOOL": (np.bool_, False),
    "F8_E4M3": (np.uint8, False), "F8_E5M2": (np.uint8, False),
}


def to_float64(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Decode raw storage values of a float dtype to float64 (exact). bf16 is the high half of a
    float32, so it widens by a shift, without torch (1-2 s to import)."""
    if dtype == "BF16":
        with np.errstate(invalid="ignore"):  # signalling NaNs stay NaN, quietly
            return np.left_shift(raw.astype(np.uint32), 16).view(np.float32).astype(np.float64)
    return raw.astype(np.float64)


def from_float64(values: np.ndarray, dtype: str) -> np.ndarray:
    """Encode float64 (or float32) values to the raw storage of dtype, rounding to nearest even, as
    torch does: bf16 through float32 (torch's own double -> bf16 path, so bytes match), without torch."""
    if dtype == "BF16":
        return float32_to_bf16(values)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught by the caller's check
        return values.astype(STORAGE[dtype][0])


def float32_to_bf16(values: np.ndarray) -> np.ndarray:
    """bf16 storage (uint16) of float values, rounded to float32 first, then to nearest even on the
    top 16 bits (torch's rounding; a NaN stays a NaN, its bits unspecified: callers refuse NaN)."""
    with np.errstate(over="ignore", invalid="ignore"):
        bits = np.asarray(values, dtype=np.float32).view(np.uint32)
    out = (bits >> 16) & 1
    out += 0x7FFF
    out += bits
    out >>= 16
    return out.astype(np.uint16)


def to_torch(raw: np.ndarray, dtype: str):
    """A torch view of raw float storage (bf16 reinterpreted), without copying."""
    import torch

    if dtype == "BF16":
        return torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(raw)


def torch_dtype(dtype: str):
    """The torch dtype of a float storage dtype ('BF16' -> torch.bfloat16)."""
    import torch

    return {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype]


def from_torch(values, dtype: str) -> np.ndarray:
    """Raw storage of dtype from a torch float tensor, rounding to nearest even once."""
    import torch

    if dtype == "BF16":
        return values.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return values.to(torch_dtype(dtype)).numpy()


def decoded_is_finite(raw: np.ndarray, dtype: str) -> bool:
    """True when every value of a float chunk in storage form is finite."""
    if dtype == "BF16":  # exponent bits all set: Inf or NaN (one pass and one temporary, not three)
        return int(np.bitwise_and(raw, 0x7F80).max(initial=0)) != 0x7F80
    return bool(np.isfinite(raw).all())


@dataclass
class TensorRef:
    """Where one tensor of one checkpoint lives, and how to read slices of it (flat order)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    offset: int = 0  # absolute byte offset of the tensor's data in file
    in_memory: np.ndarray | None = field(default=None, repr=False)  # pickle-loaded storage

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def is_float(self) -> bool:
        return STORAGE[self.dtype][1]

    @property
    def itemsize(self) -> int:
        return np.dtype(STORAGE[self.dtype][0]).itemsize

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    def read_raw(self, start: int, stop: int) -> np.ndarray:
        """Elements [start, stop) of the flattened tensor, in storage dtype."""
        if self.in_memory is not None:
            return self.in_memory[start:stop]
        np_dtype = STORAGE[self.dtype][0]
        if stop <= start:
            return np.empty(0, dtype=np_dtype)
        begin = self.offset + start * self.itemsize
        aligned = begin - begin % mmap.ALLOCATIONGRANULARITY
        length = begin - aligned + (stop - start) * self.itemsize
        try:
            with open(self.file, "rb") as f:
                window = mmap.mmap(f.fileno(), length, offset=aligned, access=mmap.ACCESS_COPY)
        except (ValueError, OSError) as exc:
            raise RLExtraError(f"{self.file}: cannot read tensor '{self.name}' ({exc}); "
                               "truncated or changed while reading?") from None
        # writable (copy-on-write, never written back) so torch.from_numpy accepts it silently
        return np.frombuffer(window, dtype=np_dtype, count=stop - start, offset=begin - aligned)

    def open_files(self):
        """A handle for ``read_into`` (None for an in-memory tensor); the caller closes it."""
        return None if self.in_memory is not None else open(self.file, "rb", buffering=0)

    def read_into(self, start: int, out: np.ndarray, f=None) -> np.ndarray:
        """Elements [start, start + out.size) into ``out`` (storage dtype), through ``f`` (this file,
        opened unbuffered) or a fresh handle. Why, beside ``read_raw``: one copy from the page cache
        into a buffer the caller reuses, with no mapping to fault in and tear down per chunk."""
        if self.in_memory is not None:
            out[...] = self.in_memory[start:start + out.size]
            return out
        try:
            handle = f if f is not None else open(self.file, "rb", buffering=0)
            try:
                handle.seek(self.offset + start * self.itemsize)
                got = handle.readinto(out)
            finally:
                if f is None:
                    handle.close()
        except OSError as exc:
            raise RLExtraError(f"{self.file}: cannot read tensor '{self.name}' ({exc.strerror or exc})") from None
        if got != out.nbytes:
            raise RLExtraError(f"{self.file}: cannot read tensor '{self.name}' (the file ended early); "
                               "truncated or changed while reading?")
        return out


class _Handles(list):
    """One handle per part of a ``PartsTensorRef``, closed together."""

    def close(self) -> None:
        for f in self:
            if f is not None:
                f.close()


@dataclass
class PartsTensorRef(TensorRef):
    """A tensor stored as consecutive pieces of its flat order in several files: shards of dim 0
    (FSDP's ``Shard(0)``), one per rank. Why a flat concatenation: splitting dim 0 splits the
    row-major order into consecutive runs, so a chunk read touches one or two parts and never
    assembles the whole tensor. ``file`` names the checkpoint folder in messages."""

    parts: list[TensorRef] = field(default_factory=list)

    def _spans(self, start: int, stop: int):
        """(index, part, start within it, stop within it, position in the output) over [start, stop)."""
        base = 0
        for i, part in enumerate(self.parts):
            lo, hi = max(start, base), min(stop, base + part.numel)
            if lo < hi:
                yield i, part, lo - base, hi - base, lo - start
            base += part.numel

    def read_raw(self, start: int, stop: int) -> np.ndarray:
        pieces = [(part.read_raw(a, b), at) for _, part, a, b, at in self._spans(start, stop)]
        if len(pieces) == 1:
            return pieces[0][0]
        out = np.empty(max(stop - start, 0), dtype=STORAGE[self.dtype][0])
        for raw, at in pieces:
            out[at:at + raw.size] = raw
        return out

    def open_files(self):
        handles = _Handles()
        try:
            for part in self.parts:
                handles.append(part.open_files())
        except OSError:
            handles.close()
            raise
        return handles

    def read_into(self, start: int, out: np.ndarray, f=None) -> np.ndarray:
        handles = f if f is not None else [None] * len(self.parts)
        for i, part, a, b, at in self._spans(start, start + out.size):
            part.read_into(a, out[at:at + b - a], handles[i])
        return out


def read_safetensors_index(path: Path) -> dict[str, TensorRef]:
    """Validate one .safetensors file and index its tensors; one-line error if malformed."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:  # the system's own reason first (safetensors says "No such file" for a file it may not read)
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise RLExtraError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        with safe_open(str(path), framework="numpy") as f:  # the header only: no torch needed (1.2 s to import)
            names = set(f.keys())
    except (SafetensorError, OSError, ValueError) as exc:  # corrupt header, truncated data
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RLExtraError(f"{path}: not a valid safetensors file ({msg})") from None
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    data_start = 8 + header_len
    file_size = path.stat().st_size
    refs: dict[str, TensorRef] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = meta["dtype"]
        if dtype not in STORAGE:
            raise RLExtraError(f"{path}: tensor '{name}' has unsupported dtype {dtype}")
        begin, end = meta["data_offsets"]
        ref = TensorRef(name, dtype, tuple(meta["shape"]), path, data_start + begin)
        if end - begin != ref.nbytes or data_start + end > file_size:
            raise RLExtraError(f"{path}: tensor '{name}' data is truncated or inconsistent")
        refs[name] = ref
    if set(refs) != names:
        raise RLExtraError(f"{path}: header lists tensors the safetensors library does not")
    return refs


def read_pickle_checkpoint(path: Path) -> dict[str, TensorRef]:
    """Load a .bin/.pt state dict fully (weights_only) into in-memory refs. Opt-in only."""
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad pickles
        raise RLExtraError(f"{path}: cannot load pickle checkpoint ({str(exc).splitlines()[0]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise RLExtraError(f"{path}: pickle does not hold a state dict")
    names = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
             torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
             torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
    refs = {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor) or t.dtype not in names:
            raise RLExtraError(f"{path}: entry '{name}' is not a supported tensor")
        dtype = names[t.dtype]
        t = t.detach().contiguous().reshape(-1)
        arr = t.view(torch.int16).numpy().view(np.uint16) if dtype == "BF16" else t.numpy()
        refs[name] = TensorRef(name, dtype, tuple(state[name].shape), Path(path), 0, arr)
    return refs
