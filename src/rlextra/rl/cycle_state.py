"""RL-Extra's cycle state in a checkpoint: the schedule (rl_extra_state.json) and the cycle's weight
snapshots (rl_extra_anchor.safetensors), so that a resumed run continues the same cycles."""

from __future__ import annotations

import json
from pathlib import Path

from rlextra.errors import RLExtraError

STATE_FILE = "rl_extra_state.json"
ANCHOR_FILE = "rl_extra_anchor.safetensors"


def save_cycle_state(ckpt: Path, state: dict, snapshots: list[tuple[int, dict]]) -> None:
    """Write the schedule and the snapshots (keys "i/name") into the checkpoint folder."""
    from safetensors.torch import save_file

    ckpt = Path(ckpt)
    ckpt.mkdir(parents=True, exist_ok=True)
    tensors = {f"{i}/{k}": v.contiguous() for i, (_, snap) in enumerate(snapshots) for k, v in snap.items()}
    save_file(tensors, str(ckpt / ANCHOR_FILE))
    (ckpt / STATE_FILE).write_text(json.dumps({**state, "snapshot_steps": [s for s, _ in snapshots]}, indent=1) + "\n")


def read_cycle_state(ckpt: Path) -> dict | None:
    """The saved schedule, None when the checkpoint has none, or a one-line error when it is malformed."""
    from rlextra.io import read_json

    path = Path(ckpt) / STATE_FILE
    if not path.is_file():
        return None
    st = read_json(path, "RL-Extra state file")
    if not (isinstance(st, dict) and all(k in st for k in ("m", "n", "cycle_start", "extra_steps", "jumps"))):
        raise RLExtraError(f"{path}: malformed RL-Extra state (needs m, n, cycle_start, extra_steps, jumps)")
    return st


def load_snapshots(ckpt: Path, state: dict) -> list[tuple[int, dict]]:
    """The snapshots saved beside ``state``: (step, {name: tensor}), the anchor first."""
    from safetensors.torch import load_file

    path = Path(ckpt) / ANCHOR_FILE
    if not path.is_file():
        raise RLExtraError(f"{path}: missing; an RL-Extra run resumes from the checkpoint that holds its anchor "
                           "(with --keep-optimizer last, the newest only)")
    flat = load_file(str(path))
    steps = state.get("snapshot_steps", [state["cycle_start"]])
    if not any("/" in k for k in flat):  # written before snapshots were indexed: the anchor alone
        flat = {f"0/{k}": v for k, v in flat.items()}
    return [(s, {k.split("/", 1)[1]: v for k, v in flat.items() if k.split("/", 1)[0] == str(i)})
            for i, s in enumerate(steps)]
