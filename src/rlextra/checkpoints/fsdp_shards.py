"""verl's FSDP checkpoints read as they are saved: one ``model_world_size_W_rank_R.pt`` per rank.

Why: verl's merger (``verl.model_merger``) writes a full bf16 copy of every checkpoint, and at lr 1e-6
most entries move by less than one bf16 step in hundreds of steps. The shards hold the fp32 master
weights, the real trajectory. Each tensor is assembled from its ranks' pieces along dim 0 without
being loaded: the pieces are read from the files in chunks, like safetensors.

Safe by construction, so on by default (unlike ``--allow-pickle``):
1. the pickle's opcodes are scanned (nothing runs) and every global it names must be on
   ``ALLOWED_GLOBALS``, the types a sharded state dict holds, each named; anything else is refused
   with the file and the name;
2. torch then unpickles with ``weights_only=True`` (its own allowlist, a second layer) onto the meta
   device: no tensor data is read, and torch reports where each storage lies in the file.
"""

from __future__ import annotations

import json
import logging
import pickletools
import re
import zipfile
from pathlib import Path

from rlextra.checkpoints.reader import PartsTensorRef, TensorRef
from rlextra.errors import RLExtraError

FSDP_CONFIG = "fsdp_config.json"
TRACKER = "latest_checkpointed_iteration.txt"  # verl's trainer writes it after a whole checkpoint
SHARD_NAME = re.compile(r"^model_world_size_(\d+)_rank_(\d+)\.pt$")

# Every global a verl FSDP1/FSDP2 sharded model state dict needs (torch 2.4-2.13): containers, the
# tensor rebuilders, storage and dtype names, and DTensor with its mesh and placements.
_STORAGES = ("Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
ALLOWED_GLOBALS = frozenset({
    "collections OrderedDict",
    "torch._utils _rebuild_tensor_v2", "torch._utils _rebuild_parameter",
    "torch._utils _rebuild_wrapper_subclass", "torch._tensor _rebuild_from_type_v2",
    "torch.serialization _get_layout", "torch Size", "torch device", "torch.nn.parameter Parameter",
    *(f"torch {t}Storage" for t in _STORAGES), "torch UntypedStorage",
    *(f"torch {d}" for d in ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16",
                             "int8", "uint8", "bool")),
    "torch.distributed.tensor DTensor", "torch.distributed._tensor.api DTensor",
    "torch.distributed.tensor._api DTensor",
    "torch.distributed.device_mesh DeviceMesh",
    "torch.distributed._mesh_layout _MeshLayout", "torch.distributed._mesh_layout _FlatLayout",
    "torch.distributed.tensor._dtensor_spec DTensorSpec", "torch.distributed.tensor._dtensor_spec TensorMeta",
    "torch.distributed.tensor._dtensor_spec ShardOrderEntry",
    "torch.distributed.tensor.placement_types Shard", "torch.distributed.tensor.placement_types Replicate",
    "torch.distributed._tensor.placement_types Shard", "torch.distributed._tensor.placement_types Replicate",
})
_DTYPES = {"torch.float64": "F64", "torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16",
           "torch.int64": "I64", "torch.int32": "I32", "torch.int16": "I16", "torch.int8": "I8",
           "torch.uint8": "U8", "torch.bool": "BOOL"}


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


def check_globals(path: Path) -> None:
    """Refuse a shard whose pickle names any global off ``ALLOWED_GLOBALS``. Nothing is unpickled:
    the opcodes are only listed (``pickletools.genops``)."""
    data = _pickle_bytes(path)
    ops = []
    try:
        for op, arg, _ in pickletools.genops(data):
            ops.append((op.name, arg))
    except Exception as exc:  # noqa: BLE001 - a malformed stream, of any kind
        raise RLExtraError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    strings = ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8")
    for i, (name, arg) in enumerate(ops):
        if name in ("GLOBAL", "INST"):
            glob = str(arg)
        elif name == "STACK_GLOBAL":
            # torch.save pushes module and name as two literal strings just before (each possibly
            # memoized); a global built any other way cannot be checked and is refused
            attr, module = _previous_string(ops, i, 1, strings), _previous_string(ops, i, 2, strings)
            if module is None or attr is None:
                raise RLExtraError(f"{path}: refused: the pickle builds a global this reader cannot check")
            glob = f"{module} {attr}"
        elif name in ("EXT1", "EXT2", "EXT4"):
            raise RLExtraError(f"{path}: refused: the pickle uses the extension registry ({name})")
        else:
            continue
        if glob not in ALLOWED_GLOBALS:
            raise RLExtraError(f"{path}: refused: the pickle names '{glob.replace(' ', '.')}', which a "
                               "sharded state dict does not hold (nothing in the file was run)")


def _previous_string(ops, i: int, back: int, strings) -> str | None:
    """The string pushed ``back`` pushes before op i, skipping memo puts (None if it is not a literal)."""
    j, seen = i - 1, 0
    while j >= 0:
        name, arg = ops[j]
        if name in ("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"):
            j -= 1
            continue
        seen += 1
        if seen == back:
            return arg if name in strings else None
        j -= 1
    return None


def _pickle_bytes(path: Path) -> bytes:
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(names) != 1:
                raise RLExtraError(f"{path}: not a torch.save archive (no data.pkl)")
            for info in z.infolist():
                if "/data/" in info.filename and info.compress_type != zipfile.ZIP_STORED:
                    raise RLExtraError(f"{path}: tensor data '{info.filename}' is compressed; torch.save "
                                       "stores it uncompressed")
            return z.read(names[0])
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise RLExtraError(f"{path}: not a complete torch.save archive ({exc}); truncated, or still being "
                           "written?") from None


def _load_meta(path: Path) -> dict:
    """The state dict on the meta device (structure and storage offsets, no data)."""
    import torch
    import torch.distributed.tensor  # noqa: F401 - registers DTensor with the weights-only unpickler

    quiet = logging.getLogger("torch.distributed.device_mesh")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "unpickling of the DeviceMesh occurred before the PGs were created"
    try:
        state = torch.load(str(path), map_location="meta", weights_only=True, mmap=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad archives
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RLExtraError(f"{path}: cannot load shard ({msg})") from None
    finally:
        quiet.setLevel(level)
    if not isinstance(state, dict):
        raise RLExtraError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def _piece(path: Path, name: str, local, file_size: int) -> TensorRef:
    """Where one rank's piece of a tensor lies in its file (storage offset + view offset)."""
    dtype = _DTYPES.get(str(local.dtype))
    if dtype is None:
        raise RLExtraError(f"{path}: tensor '{name}' has unsupported dtype {local.dtype}")
    if not local.is_contiguous():
        raise RLExtraError(f"{path}: tensor '{name}' is stored non-contiguous; cannot read it in place")
    base = getattr(local.untyped_storage(), "_checkpoint_offset", None)
    if base is None:
        raise RLExtraError(f"{path}: this torch does not report storage offsets; cannot read shards in place")
    ref = TensorRef(name, dtype, tuple(local.shape), path, int(base) + local.storage_offset() * local.element_size())
    if ref.offset + ref.nbytes > file_size:
        raise RLExtraError(f"{path}: tensor '{name}' lies past the end of the file; truncated?")
    return ref


def _placement(path: Path, name: str, value) -> tuple[str, list]:
    """('shard', mesh ranks in shard order) or ('replicate', [])."""
    from torch.distributed.tensor import DTensor

    if not isinstance(value, DTensor):
        return "replicate", []  # a plain tensor (an unsharded buffer): the same on every rank
    kinds = []
    for p in value.placements:
        if p.is_replicate():
            kinds.append("R")
        elif p.is_shard() and type(p).__name__ == "Shard" and p.dim == 0:
            kinds.append("S")
        else:
            raise RLExtraError(f"{path}: tensor '{name}' is placed as {p}; rlextra reads FSDP's Shard(0) "
                               "and Replicate only (tensor parallel and Megatron layouts are not read)")
    if kinds.count("S") > 1:
        raise RLExtraError(f"{path}: tensor '{name}' is sharded over {kinds.count('S')} mesh dimensions "
                           "(2-D sharding, e.g. FSDP with tensor parallel); not read")
    return ("shard" if "S" in kinds else "replicate"), kinds


def read_fsdp_checkpoint(folder: Path) -> dict[str, TensorRef]:
    """Index one verl FSDP checkpoint folder (``global_step_N/actor``): each tensor of the full model,
    as the pieces its ranks hold, in flat order. Reads headers and pickles only, no tensor data."""
    folder = Path(folder)
    files = shard_files(folder)
    states = []
    for path in files:
        check_globals(path)
        states.append((path, path.stat().st_size, _load_meta(path)))
    names = list(states[0][2])
    for path, _, state in states[1:]:
        if list(state) != names:
            missing = sorted(set(names) ^ set(state))
            raise RLExtraError(f"{path}: holds different tensors than {files[0].name}"
                               + (f" ('{missing[0]}')" if missing else " (in another order)"))
    refs: dict[str, TensorRef] = {}
    for name in names:
        first = states[0][2][name]
        kind, kinds = _placement(files[0], name, first)
        local = first.to_local() if kind == "shard" or kinds else first
        full_shape = tuple(first.shape)
        if kind == "replicate":
            refs[name] = _piece(files[0], name, local, states[0][1])
            if refs[name].shape != full_shape:
                raise RLExtraError(f"{files[0]}: tensor '{name}' is replicated but holds {list(local.shape)}")
            continue
        # the ranks whose coordinate is 0 on every replicated mesh dimension hold the pieces, in order
        # of their coordinate on the sharded one (torch's DeviceMesh is row-major over the ranks)
        mesh_shape = tuple(first.device_mesh.shape)
        order = _shard_ranks(mesh_shape, kinds.index("S"), len(files))
        parts = []
        for rank in order:
            path, size, state = states[rank]
            value = state[name]
            if tuple(value.shape) != full_shape or list(map(str, value.placements)) != list(map(str, first.placements)):
                raise RLExtraError(f"{path}: tensor '{name}' disagrees with rank 0's shape or placement")
            parts.append(_piece(path, name, value.to_local(), size))
        dtype = parts[0].dtype
        rows = sum(p.shape[0] if p.shape else 1 for p in parts)
        if any(p.dtype != dtype for p in parts) or (full_shape and rows != full_shape[0]) \
                or any(tuple(p.shape[1:]) != full_shape[1:] for p in parts):
            raise RLExtraError(f"{folder}: the pieces of tensor '{name}' do not add up to {list(full_shape)}")
        refs[name] = PartsTensorRef(name, dtype, full_shape, folder, parts=parts)
    return refs


def _shard_ranks(mesh_shape: tuple[int, ...], shard_dim: int, world: int) -> list[int]:
    """Ranks holding consecutive pieces: coordinate 0 on every other mesh dimension."""
    size = 1
    for s in mesh_shape:
        size *= s
    if size != world:
        raise RLExtraError(f"a device mesh of shape {list(mesh_shape)} in a world of size {world}; not read")
    strides = [1] * len(mesh_shape)
    for d in range(len(mesh_shape) - 2, -1, -1):
        strides[d] = strides[d + 1] * mesh_shape[d + 1]
    return [i * strides[shard_dim] for i in range(mesh_shape[shard_dim])]


def checkpoint_saved(folder: Path) -> str | None:
    """Why a shard checkpoint is not complete yet, or None. verl's trainer writes every rank's file,
    then ``huggingface/`` and ``fsdp_config.json`` (rank 0), then ``latest_checkpointed_iteration.txt``
    in the run folder; a rank file being written has no zip directory yet (torch.save writes it last)."""
    folder = Path(folder)
    if not (folder / FSDP_CONFIG).is_file():
        return f"waiting for {FSDP_CONFIG}"
    if not (folder / "huggingface" / "config.json").is_file():
        return "waiting for huggingface/config.json"
    run = folder.parent.parent if folder.name == "actor" else folder.parent
    step = _step_of(folder)
    tracker = run / TRACKER
    if tracker.is_file() and step is not None:
        try:
            last = int(tracker.read_text().strip())
        except (OSError, ValueError):
            last = None
        if last is not None and last < step:
            return f"waiting for {TRACKER} to reach step {step} (verl writes it last)"
    return None


def _step_of(folder: Path) -> int | None:
    m = re.search(r"(\d+)$", (folder.parent if folder.name == "actor" else folder).name)
    return int(m.group(1)) if m else None
