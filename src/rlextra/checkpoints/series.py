"""Find checkpoints, tell their steps, and check that they form one series.

Layouts recognised: an HF model folder (config.json + model.safetensors, or sharded
model-0000x-of-0000y.safetensors + model.safetensors.index.json), HF/TRL Trainer
``checkpoint-N/``, verl's FSDP shards ``global_step_N/actor/model_world_size_W_rank_R.pt`` (read in
place, fp32; ``fsdp_shards``), verl's merged ``global_step_N/actor/huggingface/``, and folders whose
names end in a step number. A run folder holding such checkpoints can be given instead of a list.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from rlextra.checkpoints.fsdp_shards import is_fsdp_checkpoint, read_fsdp_checkpoint
from rlextra.checkpoints.reader import TensorRef, read_pickle_checkpoint, read_safetensors_index
from rlextra.errors import RLExtraError

SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
PICKLE_NAMES = ("pytorch_model.bin", "model.pt", "pytorch_model.pt")
PICKLE_INDEX = "pytorch_model.bin.index.json"
# "checkpoint-100", "global_step_100", "step100", "ckpt_100", "run-7": a number after a separator
# or a step-like word. "Qwen2.5-1.5B" or "llama3" are not steps.
_STEP_NAME = re.compile(r"(?:^|[-_.]|step|ckpt|checkpoint|iter)(\d+)$", re.IGNORECASE)
_SPEC = re.compile(r"^(\d+)=(.+)$")
MAX_STEP = 2**53  # steps are fitted as float64: beyond this, consecutive integers collide


@dataclass
class Checkpoint:
    """One model folder of a series: its step and an index of its tensors."""

    step: int
    path: Path
    tensors: dict[str, TensorRef]
    layout: str


@dataclass
class CheckpointSeries:
    """Checkpoints of one run, sorted by step, with identical tensor names and shapes."""

    checkpoints: list[Checkpoint]

    @property
    def steps(self) -> list[int]:
        return [c.step for c in self.checkpoints]

    @property
    def newest(self) -> Checkpoint:
        return self.checkpoints[-1]

    @property
    def names(self) -> list[str]:
        """Tensor names in a canonical (sorted) order."""
        return sorted(self.newest.tensors)

    @property
    def input_folders(self) -> list[Path]:
        """Every folder a command on this series reads, for the output guard: each checkpoint and the
        run folder holding it (a checkpoint named by its step sits in a run folder that analyses,
        backtests and resumes read whole; an output planted there would join the series)."""
        out = []
        for c in self.checkpoints:
            out.append(c.path)
            ckpt = c.path.parent.parent if c.path.name == "huggingface" and c.path.parent.name == "actor" \
                else c.path.parent if c.path.name == "actor" else c.path
            if step_from_name(ckpt) is not None:
                out.append(ckpt.parent)
        return list(dict.fromkeys(out))

    def refs(self, name: str) -> list[TensorRef]:
        """The tensor called name in every checkpoint, oldest first."""
        return [c.tensors[name] for c in self.checkpoints]

    def __len__(self) -> int:
        return len(self.checkpoints)


def step_from_name(path: Path) -> int | None:
    """Step number that ends a folder name (or a parent's, for verl's actor/huggingface)."""
    parts = [path.name]
    if path.name == "huggingface" and path.parent.name == "actor":
        parts = [path.parent.parent.name]
    elif path.name == "actor":
        parts = [path.parent.name]
    m = _STEP_NAME.search(parts[0])
    return int(m.group(1)) if m else None


def step_from_trainer_state(path: Path) -> int | None:
    state = path / "trainer_state.json"
    if not state.is_file():
        return None
    try:
        return int(json.loads(state.read_text())["global_step"])
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise RLExtraError(f"{state}: cannot read global_step ({exc})") from None


def resolve_model_dir(path: Path) -> tuple[Path, str]:
    """The folder that holds the weights for a given path, and the layout's name."""
    if not path.exists():
        raise RLExtraError(f"{path}: no such file or folder")
    if not path.is_dir():
        raise RLExtraError(f"{path}: expected a model folder, got a file")
    # verl's shards first: they hold the fp32 master weights; a merged huggingface/ copy is bf16
    for folder in (path, path / "actor"):
        if is_fsdp_checkpoint(folder):
            return folder, "verl-fsdp"
    candidates = [(path, "hf"), (path / "actor" / "huggingface", "verl"), (path / "huggingface", "verl")]
    for folder, layout in candidates:
        if folder.is_dir() and _weight_files(folder):
            if layout == "hf" and re.match(r"checkpoint-\d+$", folder.name):
                layout = "trainer"
            return folder, layout
    verl_hf = path / "actor" / "huggingface"
    if verl_hf.is_dir() or path.name == "huggingface":
        raise RLExtraError(
            f"{path}: verl checkpoint without weights rlextra reads (FSDP shards model_world_size_W_rank_R.pt "
            "or merged safetensors); Megatron checkpoints: merge them first (python -m verl.model_merger "
            "merge --backend megatron --local_dir <global_step_N>/actor --target_dir <global_step_N>/actor/huggingface)")
    raise RLExtraError(f"{path}: no model weights found ({SAFE_SINGLE}, {SAFE_INDEX} or a pickle)")


def _weight_files(folder: Path) -> bool:
    names = (SAFE_SINGLE, SAFE_INDEX, PICKLE_INDEX) + PICKLE_NAMES
    return any((folder / n).is_file() for n in names)


def index_model_dir(folder: Path, *, allow_pickle: bool = False,
                    pickle_flag: str | None = "--allow-pickle") -> dict[str, TensorRef]:
    """Tensor index of one model folder, from safetensors (single or sharded), verl's FSDP shards (safe
    by construction: ``fsdp_shards``), or an opt-in pickle.

    ``pickle_flag`` is the option that opts in, named in the refusal; None where there is none.
    """
    if is_fsdp_checkpoint(folder):
        return read_fsdp_checkpoint(folder)
    if (folder / SAFE_INDEX).is_file():
        return _index_sharded(folder / SAFE_INDEX, read_safetensors_index)
    if (folder / SAFE_SINGLE).is_file():
        return read_safetensors_index(folder / SAFE_SINGLE)
    pickles = [folder / n for n in (PICKLE_INDEX,) + PICKLE_NAMES if (folder / n).is_file()]
    if not allow_pickle:
        how = (f"pass {pickle_flag} (allow_pickle=True) only if you trust it, or convert it to safetensors"
               if pickle_flag else "this command reads safetensors only; convert it to safetensors")
        raise RLExtraError(f"{pickles[0]}: pickle checkpoint refused (loading a pickle can run code); {how}")
    if pickles[0].name == PICKLE_INDEX:
        return _index_sharded(pickles[0], read_pickle_checkpoint)
    return read_pickle_checkpoint(pickles[0])


def _index_sharded(index_file: Path, read_one) -> dict[str, TensorRef]:
    try:
        weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RLExtraError(f"{index_file}: not a valid shard index ({type(exc).__name__}: {exc})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in weight_map.items()):
        raise RLExtraError(f"{index_file}: 'weight_map' must map tensor names to shard file names")
    for shard in weight_map.values():
        if Path(shard).name != shard or shard in ("", ".", ".."):
            raise RLExtraError(f"{index_file}: shard '{shard}' is not a file name in the same folder")
    refs: dict[str, TensorRef] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_file.parent / shard
        if not shard_path.is_file():
            raise RLExtraError(f"{shard_path}: shard listed in {index_file.name} is missing")
        for name, ref in read_one(shard_path).items():
            if weight_map.get(name) == shard:
                refs[name] = ref
    missing = sorted(set(weight_map) - set(refs))
    if missing:
        raise RLExtraError(f"{index_file}: tensor '{missing[0]}' is listed but not in its shard")
    return refs


def spec_path(item: str | Path) -> Path:
    """The folder of one checkpoint argument: STEP=PATH names a step, unless the whole text is a path."""
    text = str(item)
    m = _SPEC.match(text) if not Path(text).exists() else None
    return Path(m.group(2)) if m else Path(text)


def _expand(items: Sequence[str | Path]) -> list[tuple[Path, int | None]]:
    """Paths with any STEP=PATH prefix split off; a lone run folder is expanded to its checkpoints."""
    out = []
    for item in items:
        text = str(item)
        m = _SPEC.match(text) if not Path(text).exists() else None
        out.append((Path(m.group(2)), int(m.group(1))) if m else (Path(text), None))
    if len(out) == 1 and out[0][1] is None and out[0][0].is_dir():
        children = _run_children(out[0][0])
        if children:
            return [(c, None) for c in children]
    return out


def _run_children(run_dir: Path) -> list[Path]:
    """Sub-folders of a run folder that are checkpoints (their names end in a step)."""
    found = []
    for child in sorted(run_dir.iterdir()):
        if child.is_dir() and step_from_name(child) is not None:
            try:
                resolve_model_dir(child)
            except RLExtraError:
                continue
            found.append(child)
    return found


def load_series(paths_or_run_dir: CheckpointSeries | str | Path | Sequence[str | Path],
                steps: Sequence[int] | None = None, *, allow_pickle: bool = False,
                allow_mixed_dtypes: bool = False, min_checkpoints: int = 1,
                pickle_flag: str | None = "--allow-pickle") -> CheckpointSeries:
    """Discover, index and validate a checkpoint series, sorted by step.

    ``paths_or_run_dir``: one run folder, or model folders (``STEP=PATH`` names a step, e.g. a
    base model as ``0=path/to/base``). Steps come from ``steps``, else the ``STEP=`` prefix, else
    the folder name, else trainer_state.json. A series already loaded is returned as it is, once
    checked against ``min_checkpoints`` (its dtypes were checked as its loader asked; ``steps``
    does not apply to it).
    """
    if isinstance(paths_or_run_dir, CheckpointSeries):
        validate_series(paths_or_run_dir, allow_mixed_dtypes=True, min_checkpoints=min_checkpoints)
        return paths_or_run_dir
    items = [paths_or_run_dir] if isinstance(paths_or_run_dir, (str, Path)) else list(paths_or_run_dir)
    if not items:
        raise RLExtraError("no checkpoints given")
    expanded = _expand(items)
    if steps is not None and len(steps) != len(expanded):
        raise RLExtraError(f"--steps gives {len(steps)} steps for {len(expanded)} checkpoints")
    checkpoints = []
    for i, (given, named_step) in enumerate(expanded):
        folder, layout = resolve_model_dir(given)
        step = steps[i] if steps is not None else named_step
        if step is None:
            step = step_from_name(folder) if folder != given else step_from_name(given)
            step = step if step is not None else step_from_name(given)
        if step is None:
            step = step_from_trainer_state(folder)
        if step is None:
            raise RLExtraError(f"{given}: cannot tell its step; name it as STEP={given} "
                               "(e.g. 0=... for the base model) or pass --steps")
        if not 0 <= int(step) < MAX_STEP:
            raise RLExtraError(f"{given}: step {step} is out of range (0 <= step < 2^53)")
        tensors = index_model_dir(folder, allow_pickle=allow_pickle, pickle_flag=pickle_flag)
        if not tensors:
            raise RLExtraError(f"{folder}: holds no tensors")
        checkpoints.append(Checkpoint(int(step), folder, tensors, layout))
    checkpoints.sort(key=lambda c: c.step)
    series = CheckpointSeries(checkpoints)
    validate_series(series, allow_mixed_dtypes=allow_mixed_dtypes, min_checkpoints=min_checkpoints)
    return series


def validate_series(series: CheckpointSeries, *, allow_mixed_dtypes: bool = False,
                    min_checkpoints: int = 1) -> None:
    """One-line errors for series that cannot be fitted: duplicates, too few, mismatches."""
    cps = series.checkpoints
    if len(cps) < min_checkpoints:
        raise RLExtraError(f"needs at least {min_checkpoints} checkpoints, got {len(cps)}")
    for a, b in zip(cps, cps[1:]):
        if a.step == b.step:
            raise RLExtraError(f"duplicate step {a.step}: {a.path} and {b.path}")
        if a.step < 0:
            raise RLExtraError(f"{a.path}: negative step {a.step}")
    ref = series.newest
    for cp in cps:
        for name in _sorted_diff(ref.tensors, cp.tensors):
            raise RLExtraError(f"{cp.path}: tensor '{name}' is missing (present in {ref.path})")
        for name in _sorted_diff(cp.tensors, ref.tensors):
            raise RLExtraError(f"{ref.path}: tensor '{name}' is missing (present in {cp.path})")
        for name, t in cp.tensors.items():
            r = ref.tensors[name]
            if t.shape != r.shape:
                raise RLExtraError(f"{t.file}: tensor '{name}' has shape {list(t.shape)}, "
                                   f"but {list(r.shape)} in {r.file}")
            if t.dtype != r.dtype and not (allow_mixed_dtypes and t.is_float and r.is_float):
                raise RLExtraError(f"{t.file}: tensor '{name}' has dtype {t.dtype}, but {r.dtype} in "
                                   f"{r.file} (pass --allow-mixed-dtypes to fit across float dtypes)")


def check_model_dir(path: str | Path, *, allow_pickle: bool = False,
                    pickle_flag: str | None = None) -> Path:
    """Pre-flight check of a model folder before a library loads it: config.json present, every
    weight file read through the checked reader (headers, offsets, sizes), pickles only on opt-in.

    Returns the folder holding the weights. One-line errors name the file at fault.
    """
    path = Path(path)
    if path.is_dir() and not any((path / n).exists() for n in ("config.json", "actor", "huggingface")):
        raise RLExtraError(f"{path}: not a model folder (no config.json)")
    folder, layout = resolve_model_dir(path)
    if layout == "verl-fsdp":
        check_loadable(CheckpointSeries([Checkpoint(0, folder, {}, layout)]))
    if not (folder / "config.json").is_file():
        raise RLExtraError(f"{folder}: not a model folder (no config.json)")
    if not index_model_dir(folder, allow_pickle=allow_pickle, pickle_flag=pickle_flag):
        raise RLExtraError(f"{folder}: holds no tensors")
    return folder


def side_files_dir(checkpoint: Checkpoint) -> Path:
    """Where a checkpoint's config and tokenizer files are: beside the weights, or, for verl's FSDP
    shards, in ``huggingface/`` (rank 0 writes config and tokenizer there)."""
    return Path(checkpoint.path) / "huggingface" if checkpoint.layout == "verl-fsdp" else Path(checkpoint.path)


def check_loadable(series: CheckpointSeries) -> CheckpointSeries:
    """A series whose folders a library can load as models: load_series read every header already,
    so only config.json is left to ask for (what check_model_dir adds for one folder)."""
    for c in series.checkpoints:
        if c.layout == "verl-fsdp":
            raise RLExtraError(f"{c.path}: verl FSDP shards are read by analyze, extrapolate, backtest and "
                               "watch, not loaded as a model here; `rlextra extrapolate` on the run writes a model folder "
                               "(safetensors, config, tokenizer)")
        if not (Path(c.path) / "config.json").is_file():
            raise RLExtraError(f"{c.path}: not a model folder (no config.json)")
    return series


def _sorted_diff(a: Iterable[str], b: Iterable[str]) -> list[str]:
    return sorted(set(a) - set(b))
