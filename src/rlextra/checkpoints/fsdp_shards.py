"""verl's FSDP checkpoints read as they are saved: one ``model_world_size_W_rank_R.pt`` per rank.

Why: verl's merger (``verl.model_merger``) writes a full bf16 copy of every checkpoint, and at lr 1e-6
most entries move by less than one bf16 step in hundreds of steps. The shards hold the fp32 master
weights, the real trajectory. Each tensor is assembled from its ranks' pieces along dim 0 without
being loaded: the pieces are read from the files in chunks, like safetensors.

Safe by construction, so on by default (unlike ``--allow-pickle``): the pickle is read by rlextra's
own unpickler, whose only constructors are inert records for the types a sharded state dict holds
(``ALLOWED_GLOBALS``, each named). No class or function of torch or of anything else is called while
reading; a shard naming any other global is refused with the file and the name. Tensors become
(file, byte offset, shape) references, checked against the archive's records. No torch import either:
the commands stay as quick to start as on safetensors.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from rlextra.checkpoints.reader import STORAGE, PartsTensorRef, TensorRef
from rlextra.errors import RLExtraError

FSDP_CONFIG = "fsdp_config.json"
TRACKER = "latest_checkpointed_iteration.txt"  # verl's trainer writes it after a whole checkpoint
SHARD_NAME = re.compile(r"^model_world_size_(\d+)_rank_(\d+)\.pt$")

# torch's storage classes and dtypes, by the names a pickle uses, as safetensors dtype names
_STORAGE_DTYPES = {"DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
                   "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
                   "ByteStorage": "U8", "BoolStorage": "BOOL"}
_DTYPE_NAMES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
                "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}
# records standing for the objects of a DTensor's spec: their state is kept, nothing is called
_RECORDS = ("torch.distributed.device_mesh DeviceMesh", "torch.distributed._mesh_layout _MeshLayout",
            "torch.distributed._mesh_layout _FlatLayout", "torch.distributed.tensor._dtensor_spec DTensorSpec",
            "torch.distributed.tensor._dtensor_spec TensorMeta",
            "torch.distributed.tensor._dtensor_spec ShardOrderEntry",
            "torch.distributed.tensor.placement_types Shard", "torch.distributed.tensor.placement_types Replicate",
            "torch.distributed._tensor.placement_types Shard", "torch.distributed._tensor.placement_types Replicate",
            "torch.distributed.tensor DTensor", "torch.distributed._tensor.api DTensor",
            "torch.distributed.tensor._api DTensor")


@dataclass
class _Storage:
    key: str
    dtype: str
    numel: int


@dataclass
class _Tensor:
    """A tensor as the pickle describes it: where its elements are, not the elements."""

    storage: _Storage
    offset: int
    shape: tuple
    stride: tuple


class _Record:
    """An inert stand-in for one of ``_RECORDS``: the arguments and state the pickle gives it."""

    kind = ""

    def __new__(cls, *args):
        obj = object.__new__(cls)
        obj.args, obj.state = args, {}
        return obj

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.state.update(state)


def _record_type(glob: str) -> type:
    name = glob.split()[-1]
    return type(name, (_Record,), {"kind": name})


class _StateDict(dict):
    """collections.OrderedDict as a state dict pickles it: entries, plus attributes (``_metadata``)
    that are kept aside and never used."""

    def __setstate__(self, state) -> None:
        self.attributes = state


def _rebuild_tensor(storage, offset, shape, stride, *rest):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    return _Tensor(storage, int(offset), tuple(shape), tuple(stride))


def _rebuild_parameter(data, *rest):
    return data


def _rebuild_wrapper_subclass(cls, dtype, size, *rest):
    wrapper = cls() if callable(cls) else _Record()
    wrapper.args = (dtype, tuple(size))
    return wrapper


def _rebuild_from_type(func, new_type, args, state):
    obj = func(*args)
    if isinstance(obj, _Record):
        obj.__setstate__(state)  # (attributes, slots): DTensor's _local_tensor and _spec are slots
    return obj


def _constant(value):
    return lambda *args: value


ALLOWED_GLOBALS: dict[str, object] = {
    "collections OrderedDict": _StateDict,
    "torch._utils _rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils _rebuild_parameter": _rebuild_parameter,
    "torch._utils _rebuild_wrapper_subclass": _rebuild_wrapper_subclass,
    "torch._tensor _rebuild_from_type_v2": _rebuild_from_type,
    "torch.serialization _get_layout": lambda name: str(name),
    "torch Size": lambda dims=(): tuple(dims),
    "torch device": lambda *args: ":".join(map(str, args)),
    **{f"torch {name}": name for name in _STORAGE_DTYPES},
    **{f"torch {name}": _DTYPE_NAMES[name] for name in _DTYPE_NAMES},
    **{glob: _record_type(glob) for glob in _RECORDS},
}


class _ShardUnpickler(pickle._Unpickler):
    """Builds only what ``ALLOWED_GLOBALS`` maps to; storages become (key, dtype, numel) records.

    Python's own unpickler, with two doors narrowed: ``find_class`` (every global) and BUILD, which
    may set the state of a record only (not of a function or a class the table hands out)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.path = path

    def _build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if not isinstance(target, (_Record, _StateDict)):
            raise RLExtraError(f"{self.path}: refused: the pickle sets the state of a {type(target).__name__}")
        target.__setstate__(state)

    dispatch[pickle.BUILD[0]] = _build

    def find_class(self, module: str, name: str):
        found = ALLOWED_GLOBALS.get(f"{module} {name}")
        if found is None:
            raise RLExtraError(f"{self.path}: refused: the pickle names '{module}.{name}', which a sharded "
                               "state dict does not hold (nothing in the file was run)")
        return found

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise RLExtraError(f"{self.path}: refused: an unknown persistent id in the pickle")
        _, storage_type, key, _location, numel = pid
        if storage_type not in _STORAGE_DTYPES:
            raise RLExtraError(f"{self.path}: refused: storage of type {storage_type!r}")
        return _Storage(str(key), _STORAGE_DTYPES[storage_type], int(numel))


def is_fsdp_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` looks like verl's ``global_step_N/actor``: its FSDP config or a rank file."""
    folder = Path(folder)
    return (folder / FSDP_CONFIG).is_file() or any(SHARD_NAME.match(p.name) for p in _listing(folder))


def _listing(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir()) if folder.is_dir() else []
    except OSError:
        return []


def shard_files(folder: Path) -> list[Path]:
    """The W rank files of one checkpoint, in rank order; one-line errors for a missing config, a
    missing rank, or world sizes that disagree."""
    folder = Path(folder)
    config = folder / FSDP_CONFIG
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
        world = int(meta["world_size"])
    except FileNotFoundError:
        raise RLExtraError(f"{config}: missing (verl writes it with the shards; the checkpoint is "
                           "incomplete or not verl's)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RLExtraError(f"{config}: cannot read world_size ({type(exc).__name__}: {exc})") from None
    if world < 1:
        raise RLExtraError(f"{config}: world_size {world} is not a positive number")
    found = {}
    for p in _listing(folder):
        m = SHARD_NAME.match(p.name)
        if m:
            found[(int(m.group(1)), int(m.group(2)))] = p
    other = sorted({w for w, _ in found} - {world})
    if other:
        raise RLExtraError(f"{folder}: shards for world size {other[0]} beside {FSDP_CONFIG}'s {world}; "
                           "the world sizes disagree")
    files = []
    for rank in range(world):
        path = found.get((world, rank))
        if path is None or not path.is_file():
            raise RLExtraError(f"{folder / f'model_world_size_{world}_rank_{rank}.pt'}: missing "
                               f"(world size {world}); every rank's shard is needed")
        files.append(path)
    extra = sorted(r for w, r in found if w == world and r >= world)
    if extra:
        raise RLExtraError(f"{folder}: a shard for rank {extra[0]} in a world of size {world}")
    return files


@dataclass
class _Shard:
    """One rank's file: its state dict as the pickle describes it, and where each storage lies."""

    path: Path
    rank: int
    state: dict
    records: dict[str, tuple[int, int]] = field(default_factory=dict)  # storage key -> (byte offset, bytes)


def _read_shard(path: Path, rank: int) -> _Shard:
    """Index one rank's archive: the pickle through ``_ShardUnpickler``, the storages' byte ranges
    from the zip's own headers (torch.save stores them uncompressed)."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            pkl = [i for i in infos if i.filename == "data.pkl" or i.filename.endswith("/data.pkl")]
            if len(pkl) != 1:
                raise RLExtraError(f"{path}: not a torch.save archive (no data.pkl)")
            prefix = pkl[0].filename[:-len("data.pkl")] + "data/"
            data = z.read(pkl[0])
            records = {}
            with open(path, "rb") as f:
                for info in infos:
                    if not info.filename.startswith(prefix):
                        continue
                    if info.compress_type != zipfile.ZIP_STORED:
                        raise RLExtraError(f"{path}: tensor data '{info.filename}' is compressed; torch.save "
                                           "stores it uncompressed")
                    f.seek(info.header_offset)
                    head = f.read(30)
                    if len(head) != 30 or head[:4] != b"PK\x03\x04":
                        raise RLExtraError(f"{path}: record '{info.filename}' has no local header; damaged archive")
                    name_len, extra_len = struct.unpack("<HH", head[26:30])
                    records[info.filename[len(prefix):]] = (info.header_offset + 30 + name_len + extra_len,
                                                            info.file_size)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise RLExtraError(f"{path}: not a complete torch.save archive ({exc}); truncated, or still being "
                           "written?") from None
    try:
        state = _ShardUnpickler(data, path).load()
    except RLExtraError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed pickle fails in many ways, all of them here
        raise RLExtraError(f"{path}: not a readable shard ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise RLExtraError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return _Shard(path, rank, state, records)


def _piece(shard: _Shard, name: str, t) -> TensorRef:
    """Where one rank's piece of a tensor lies: its storage's record plus the view's offset, checked."""
    if not isinstance(t, _Tensor):
        raise RLExtraError(f"{shard.path}: entry '{name}' is not a tensor")
    dtype = t.storage.dtype
    itemsize = STORAGE[dtype][0]().itemsize
    record = shard.records.get(t.storage.key)
    if record is None:
        raise RLExtraError(f"{shard.path}: tensor '{name}' refers to storage '{t.storage.key}', which is not in "
                           "the archive")
    start, size = record
    if size != t.storage.numel * itemsize:
        raise RLExtraError(f"{shard.path}: storage '{t.storage.key}' holds {size} bytes, not "
                           f"{t.storage.numel} x {itemsize}")
    numel, expected = 1, []
    for dim in reversed(t.shape):
        expected.insert(0, numel)
        numel *= dim
    if numel > 1 and tuple(st for st, d in zip(t.stride, t.shape) if d > 1) != \
            tuple(st for st, d in zip(expected, t.shape) if d > 1):
        raise RLExtraError(f"{shard.path}: tensor '{name}' is stored non-contiguous; cannot read it in place")
    if t.offset < 0 or (t.offset + numel) * itemsize > size:
        raise RLExtraError(f"{shard.path}: tensor '{name}' lies outside its storage")
    return TensorRef(name, dtype, tuple(t.shape), shard.path, start + t.offset * itemsize)


def _dtensor(shard: _Shard, name: str, value) -> tuple[tuple, list[str], object, object]:
    """(full shape, placement per mesh dim as 'S'/'R', the local tensor, the mesh) of one DTensor."""
    spec = value.state.get("_spec")
    local = value.state.get("_local_tensor")
    if not isinstance(spec, _Record) or not isinstance(local, _Tensor) or len(value.args) < 2:
        raise RLExtraError(f"{shard.path}: tensor '{name}' is a DTensor without its local tensor or spec")
    kinds = []
    for p in spec.state.get("placements", ()):
        dim = p.state.get("dim", p.args[0] if p.args else None) if isinstance(p, _Record) else None
        if isinstance(p, _Record) and p.kind == "Replicate":
            kinds.append("R")
        elif isinstance(p, _Record) and p.kind == "Shard" and dim == 0:
            kinds.append("S")
        else:
            what = f"Shard(dim={dim})" if isinstance(p, _Record) and p.kind == "Shard" else getattr(p, "kind", p)
            raise RLExtraError(f"{shard.path}: tensor '{name}' is placed as {what}; rlextra reads FSDP's Shard(0) "
                               "and Replicate only (tensor parallel and Megatron layouts are not read)")
    if not kinds or kinds.count("S") > 1:
        raise RLExtraError(f"{shard.path}: tensor '{name}' is sharded over {kinds.count('S')} mesh dimensions "
                           "(2-D sharding, e.g. FSDP with tensor parallel); not read")
    if value.args[0] != local.storage.dtype:
        raise RLExtraError(f"{shard.path}: tensor '{name}' says {value.args[0]} but stores {local.storage.dtype}")
    return tuple(value.args[1]), kinds, local, spec.state.get("mesh")


def _coordinate(shard: _Shard, name: str, mesh, dims: int) -> tuple:
    """This rank's coordinate on the device mesh, as its DeviceMesh recorded it (a 1-D mesh of an
    older torch without the record: the rank itself)."""
    coord = mesh.state.get("_coordinate_on_dim") if isinstance(mesh, _Record) else None
    if coord is None and dims == 1:
        return (shard.rank,)
    if not isinstance(coord, (tuple, list)) or len(coord) != dims:
        raise RLExtraError(f"{shard.path}: tensor '{name}': cannot tell this rank's place on a {dims}-D device mesh")
    return tuple(coord)


def read_fsdp_checkpoint(folder: Path) -> dict[str, TensorRef]:
    """Index one verl FSDP checkpoint folder (``global_step_N/actor``): each tensor of the full model,
    as the pieces its ranks hold, in flat order. Reads archive headers and pickles only, no tensor data."""
    folder = Path(folder)
    shards = [_read_shard(path, rank) for rank, path in enumerate(shard_files(folder))]
    names = list(shards[0].state)
    for shard in shards[1:]:
        if list(shard.state) != names:
            differ = sorted(set(names) ^ set(shard.state))
            raise RLExtraError(f"{shard.path}: holds different tensors than {shards[0].path.name}"
                               + (f" ('{differ[0]}')" if differ else " (in another order)"))
    refs: dict[str, TensorRef] = {}
    for name in names:
        first = shards[0].state[name]
        if isinstance(first, _Tensor):  # a plain tensor (an unsharded buffer): the same on every rank
            refs[name] = _piece(shards[0], name, first)
            continue
        if not (isinstance(first, _Record) and first.kind == "DTensor"):
            raise RLExtraError(f"{shards[0].path}: entry '{name}' is not a tensor")
        full_shape, kinds, local, _ = _dtensor(shards[0], name, first)
        if "S" not in kinds:
            refs[name] = _piece(shards[0], name, local)
            if refs[name].shape != full_shape:
                raise RLExtraError(f"{shards[0].path}: tensor '{name}' is replicated but holds {list(local.shape)}")
            continue
        # the ranks at coordinate 0 on every replicated mesh dimension hold the pieces, in the order of
        # their coordinate on the sharded one
        at = kinds.index("S")
        pieces: dict[int, TensorRef] = {}
        for shard in shards:
            shape, their_kinds, their_local, mesh = _dtensor(shard, name, shard.state[name])
            if shape != full_shape or their_kinds != kinds:
                raise RLExtraError(f"{shard.path}: tensor '{name}' disagrees with rank 0's shape or placement")
            coord = _coordinate(shard, name, mesh, len(kinds))
            if all(c == 0 for d, c in enumerate(coord) if kinds[d] == "R"):
                if coord[at] in pieces:
                    raise RLExtraError(f"{shard.path}: tensor '{name}': two ranks hold piece {coord[at]}")
                pieces[coord[at]] = _piece(shard, name, their_local)
        if sorted(pieces) != list(range(len(pieces))):
            raise RLExtraError(f"{folder}: tensor '{name}': pieces {sorted(pieces)} on the mesh; some are missing")
        parts = [pieces[i] for i in range(len(pieces))]
        dtype = parts[0].dtype
        rows = sum(p.shape[0] if p.shape else 1 for p in parts)
        if any(p.dtype != dtype for p in parts) or not full_shape or rows != full_shape[0] \
                or any(tuple(p.shape[1:]) != full_shape[1:] for p in parts):
            raise RLExtraError(f"{folder}: the pieces of tensor '{name}' do not add up to {list(full_shape)}")
        refs[name] = PartsTensorRef(name, dtype, full_shape, folder, parts=parts)
    return refs


def checkpoint_saved(folder: Path, run: Path, step: int) -> str | None:
    """Why the shard checkpoint ``folder`` (step ``step`` of the run folder ``run``) is not complete
    yet, or None. verl's trainer writes every rank's file, then ``huggingface/`` and
    ``fsdp_config.json`` (rank 0), then ``latest_checkpointed_iteration.txt`` in the run folder; a rank
    file being written has no zip directory yet (torch.save writes it last)."""
    folder = Path(folder)
    if not (folder / FSDP_CONFIG).is_file():
        return f"waiting for {FSDP_CONFIG}"
    if not (folder / "huggingface" / "config.json").is_file():
        return "waiting for huggingface/config.json"
    tracker = Path(run) / TRACKER
    if tracker.is_file():
        try:
            last = int(tracker.read_text().strip())
        except (OSError, ValueError):
            last = None
        if last is not None and last < step:
            return f"waiting for {TRACKER} to reach step {step} (verl writes it last)"
    return None

