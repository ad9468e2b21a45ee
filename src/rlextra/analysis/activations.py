"""Activation linearity: R^2 over steps of each hidden-state coordinate at each layer's output.

The v3 paper reports that intermediate activations move linearly in the step, as weights and
token log-probs do. Its published scripts hold no activation analysis, so the definition here is
rlextra's own, built like the token analysis:

- the probe set (prompt/response pairs) is teacher-forced through every checkpoint, one model in
  memory at a time, with the padding-aware batches of the token analysis;
- at each layer ``l = 1..L`` the hidden state Hugging Face returns (``output_hidden_states``:
  entry ``l`` is the output of decoder layer ``l``; for most models the last entry is taken after
  the final norm) is read at the position of every response token;
- every scalar (layer, token, dimension) is one trajectory over the steps, fitted by the
  streaming line-fit kernel; coordinates that never change are counted as constant, no other
  filter applies;
- to bound memory (five float64 arrays per coordinate), a seeded random subset of ``max_tokens``
  response tokens is used (all of them with ``max_tokens=None``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

import rlextra
from rlextra.analysis.probes import Encoded, load_checkpoint, padded_batches, prepare_probes, probe_inputs
from rlextra.analysis.report import r2_summary
from rlextra.checkpoints.series import CheckpointSeries, load_series
from rlextra.errors import RLExtraError
from rlextra.hf import model_device
from rlextra.io import atomic_output_dir, check_output
from rlextra.linefit import LineFit

DEFAULT_MAX_TOKENS = 256
N_EXAMPLES = 6


def hidden_states(model, encoded: Encoded, pad_id: int, tokens: np.ndarray,
                  batch_size: int = 8) -> list[np.ndarray]:
    """Per layer 1..L, the hidden states at the chosen response tokens: (len(tokens), hidden) float64.

    ``tokens`` are sorted indices into the response tokens of all probes, concatenated in probe order.
    """
    import torch

    device = model_device(model)
    per_layer: list[list[np.ndarray]] = []
    offset = 0
    with torch.no_grad():
        for batch, ids, mask, pos in padded_batches(encoded, pad_id, batch_size):
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                        output_hidden_states=True, logits_to_keep=1)
            states = out.hidden_states[1:]
            if not per_layer:
                per_layer = [[] for _ in states]
            width = ids.shape[1]
            for j, (_, r) in enumerate(batch):
                lo, hi = np.searchsorted(tokens, [offset, offset + len(r)])
                if hi > lo:
                    cols = torch.as_tensor(width - len(r) + (tokens[lo:hi] - offset), device=device)
                    for layer, h in enumerate(states):
                        per_layer[layer].append(h[j].index_select(0, cols).double().cpu().numpy())
                offset += len(r)
    return [np.concatenate(chunks) for chunks in per_layer]


def analyze_activations(checkpoints: CheckpointSeries | str | Path | Sequence[str | Path],
                        out_dir: str | Path | None = None, *, probes: str | Path | list[dict] | None = None,
                        generate: int | None = None, task=None, sampling=None,
                        steps: Sequence[int] | None = None, max_tokens: int | None = DEFAULT_MAX_TOKENS,
                        batch_size: int = 8, seed: int = 0, plots: bool = True, progress: bool = True,
                        overwrite: bool = False,
                        device: str | None = "auto", dtype: str | None = "auto", allow_pickle: bool = False) -> dict:
    """Teacher-force the probes through every checkpoint; report the linearity of each layer's output.

    Returns (and with out_dir writes, as activations.json plus PNG plots) a report whose
    ``activation`` entry summarises every analysed coordinate and ``per_layer`` each layer's.
    """
    if max_tokens is not None and max_tokens < 1:
        raise RLExtraError(f"--max-tokens must be at least 1, got {max_tokens}")
    load = dict(device=device, dtype=dtype, allow_pickle=allow_pickle)  # where each checkpoint runs
    series = load_series(checkpoints, steps, allow_pickle=allow_pickle, min_checkpoints=3)
    inputs = probe_inputs(series, probes, task)
    if out_dir is not None:
        check_output(out_dir, inputs=inputs, overwrite=overwrite)
    if batch_size < 1:
        raise RLExtraError(f"--batch-size must be at least 1, got {batch_size}")
    probes, encoded, pad = prepare_probes(series, probes=probes, generate=generate, task=task,
                                          sampling=sampling, seed=seed, **load)
    n_tok = sum(len(r) for _, r in encoded)
    rng = np.random.default_rng(seed)
    tokens = np.arange(n_tok) if max_tokens is None or max_tokens >= n_tok \
        else np.sort(rng.choice(n_tok, size=max_tokens, replace=False))
    fits: list[LineFit] = []
    cand: list[np.ndarray] = []
    traj: list[list[np.ndarray]] = []
    hidden = 0
    for cp in tqdm(series.checkpoints, desc="teacher-forcing checkpoints", disable=not progress):
        model, _ = load_checkpoint(cp.path, **load)
        states = hidden_states(model, encoded, pad, tokens, batch_size)
        del model
        if not fits:
            hidden = states[0].shape[1]
            fits = [LineFit(series.steps, h.size) for h in states]
            cand = [rng.choice(h.size, size=min(8, h.size), replace=False) for h in states]
            traj = [[] for _ in states]
        elif len(states) != len(fits) or states[0].shape[1] != hidden:
            raise RLExtraError(f"{cp.path}: {len(states)} layers x {states[0].shape[1]} dimensions, "
                               f"the first checkpoint has {len(fits)} x {hidden}")
        for layer, h in enumerate(states):
            flat = h.reshape(-1)
            if not np.isfinite(flat).all():
                raise RLExtraError(f"{cp.path}: NaN/Inf hidden states at layer {layer + 1} on the probes")
            fits[layer].add(flat)
            traj[layer].append(flat[cand[layer]])
    r2 = [f.result().r2() for f in fits]
    per_layer = []
    for layer, v in enumerate(r2):
        s = r2_summary(v)
        per_layer.append({"layer": layer + 1, "n_coordinates": int(v.size),
                          "n_constant": int((~np.isfinite(v)).sum()),
                          **{k: s[k] for k in ("n_analyzed", "mean_r2", "median_r2", "frac_r2_above_0.7")}})
    examples = []
    for layer in np.linspace(0, len(r2) - 1, min(N_EXAMPLES, len(r2))).round().astype(int):
        values = np.stack(traj[layer])
        for j, c in enumerate(cand[layer]):
            if np.isfinite(r2[layer][c]):
                tok, dim = divmod(int(c), hidden)
                examples.append({"tensor": f"layer {layer + 1}", "index": int(c),
                                 "label": f"layer {layer + 1}, token {int(tokens[tok])}, dim {dim}",
                                 "r2": float(r2[layer][c]), "values": values[:, j].tolist()})
                break
    report = {
        "rlextra_version": rlextra.__version__, "kind": "activations", "steps": series.steps,
        "checkpoints": [{"step": c.step, "path": str(c.path)} for c in series.checkpoints],
        "n_probes": len(encoded), "n_tokens": n_tok, "n_tokens_used": int(tokens.size),
        "n_layers": len(r2), "hidden_size": hidden,
        "options": {"max_tokens": max_tokens, "seed": seed, "positions": "response tokens",
                    "hidden_states": "output of each decoder layer (Hugging Face output_hidden_states[1:])"},
        "n_coordinates": int(sum(v.size for v in r2)),
        "activation": r2_summary(np.concatenate(r2)),
        "per_layer": per_layer,
    }
    if out_dir is not None:
        _write(report, probes, examples, Path(out_dir), plots, overwrite, inputs)
    return report


def _write(report: dict, probes: list[dict], examples: list[dict], out: Path, plots: bool,
           overwrite: bool, inputs: Sequence[Path]) -> None:
    from rlextra.analysis import plots as P

    with atomic_output_dir(out, inputs=inputs, overwrite=overwrite) as tmp:
        (tmp / "activations.json").write_text(json.dumps(report, indent=1) + "\n")
        (tmp / "probes.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probes))
        if plots:
            if report["activation"]["n_analyzed"]:
                P.plot_r2_histogram(report["activation"], tmp / "r2_activation_histogram.png",
                                    title="Activations (layer outputs)")
            P.plot_layer_r2(report["per_layer"], tmp / "r2_per_layer.png")
            P.plot_trajectories(report["steps"], examples, tmp / "activation_trajectories.png",
                                ylabel="hidden-state value")
