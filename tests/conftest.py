"""Shared helpers: small checkpoint series written straight to safetensors."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

torch.set_num_threads(1)


def write_ckpt(folder: Path, tensors: dict[str, np.ndarray | torch.Tensor], dtype=torch.float32,
               trainer_step: int | None = None) -> Path:
    """One HF-style folder with config.json and model.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, v in tensors.items():
        t = torch.as_tensor(v)
        out[k] = t.to(dtype) if t.is_floating_point() else t
    save_file(out, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "toy"}))
    if trainer_step is not None:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": trainer_step}))
    return folder


def assert_plot(path, min_side: int = 200) -> None:
    """A real plot: a PNG that decodes, at least min_side pixels each way, and not one flat colour."""
    import matplotlib.image as mpimg

    img = mpimg.imread(str(path))
    assert img.ndim == 3 and min(img.shape[:2]) >= min_side, img.shape
    assert float(img[..., :3].std()) > 0.01, f"{path}: a blank image"


def numpy_r2(t, vals):
    """The reference R^2: squared Pearson correlation of each column of vals (K, ...) with the
    steps t, computed directly in numpy; NaN for constant columns."""
    y = np.asarray(vals).reshape(len(t), -1)
    tc = np.asarray(t, float) - np.mean(t)
    yc = y - y.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (tc @ yc) ** 2 / ((tc @ tc) * (yc * yc).sum(0))


def planted_series(steps, shapes, slope_scale=1e-2, noise=1e-3, seed=0):
    """values[name] of shape (K, *shape): w0 + slope * t + noise, with known slopes."""
    rng = np.random.default_rng(seed)
    t = np.asarray(steps, dtype=np.float64)
    out = {}
    for name, shape in shapes.items():
        w0 = rng.normal(0, 0.02, shape)
        slope = rng.normal(0, slope_scale, shape) / max(t.max(), 1)
        vals = w0[None] + slope[None] * t.reshape(-1, *([1] * len(shape))) \
            + rng.normal(0, noise, (len(t),) + tuple(shape))
        out[name] = vals
    return out


@pytest.fixture
def series_dir(tmp_path):
    """A run folder of 5 trainer checkpoints (float32) with planted trends; returns (dir, values)."""
    steps = [0, 10, 20, 30, 40]
    shapes = {"model.layers.0.mlp.up_proj.weight": (8, 16), "model.layers.1.mlp.up_proj.weight": (8, 16),
              "model.layers.0.input_layernorm.weight": (16,), "model.embed_tokens.weight": (20, 16)}
    vals = {n: v.astype(np.float32).astype(np.float64)  # what float32 storage holds
            for n, v in planted_series(steps, shapes).items()}
    run = tmp_path / "run"
    for k, s in enumerate(steps):
        write_ckpt(run / f"checkpoint-{s}", {n: v[k] for n, v in vals.items()}, trainer_step=s)
    return run, steps, vals


# one tiny warmed-up model for the GRPO tests, built once per session (test_rl_harness builds its own:
# it checks the build itself)
TINY_SPEC_FIELDS = dict(name="arithmetic", ops="+", digits=1, n_train=60, n_test=20, seed=0)


@pytest.fixture(scope="session")
def tiny_spec():
    from rlextra.tasks import TaskSpec

    return TaskSpec(**TINY_SPEC_FIELDS)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, tiny_spec):
    from rlextra.rl.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("m") / "tiny", tiny_spec, warmup_steps=30, progress=False)[0]
