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

from pathlib import Path
from typing import Sequence

import numpy as np

from rlextra.analysis.probes import Encoded, open_probe_run, padded_batches, write_probe_report
from rlextra.analysis.report import r2_summary
from rlextra.checkpoints.series import CheckpointSeries
from rlextra.errors import RLExtraError
from rlextra.hf import model_device
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
    run = open_probe_run(checkpoints, out_dir, probes=probes, generate=generate, task=task, sampling=sampling,
                         steps=steps, seed=seed, batch_size=batch_size, overwrite=overwrite, device=device,
                         dtype=dtype, allow_pickle=allow_pickle)
    series, n_tok = run.series, run.n_tokens
    rng = np.random.default_rng(seed)
    tokens = np.arange(n_tok) if max_tokens is None or max_tokens >= n_tok \
        else np.sort(rng.choice(n_tok, size=max_tokens, replace=False))
    fits: list[LineFit] = []
    cand: list[np.ndarray] = []
    traj: list[list[np.ndarray]] = []
    hidden = 0
    for cp, model in run.models(progress):
        states = hidden_states(model, run.encoded, run.pad, tokens, batch_size)
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
        **run.header("activations"), "n_tokens_used": int(tokens.size),
        "n_layers": len(r2), "hidden_size": hidden,
        "options": {"max_tokens": max_tokens, "seed": seed, "positions": "response tokens",
                    "hidden_states": "output of each decoder layer (Hugging Face output_hidden_states[1:])"},
        "n_coordinates": int(sum(v.size for v in r2)),
        "activation": r2_summary(np.concatenate(r2)),
        "per_layer": per_layer,
    }
    if out_dir is not None:
        write_probe_report(Path(out_dir), "activations.json", report, run, overwrite,
                           (lambda tmp: _plots(report, examples, tmp)) if plots else None)
    return report


def _plots(report: dict, examples: list[dict], tmp: Path) -> None:
    from rlextra.analysis import plots as P

    if report["activation"]["n_analyzed"]:
        P.plot_r2_histogram(report["activation"], tmp / "r2_activation_histogram.png",
                            title="Activations (layer outputs)")
    P.plot_layer_r2(report["per_layer"], tmp / "r2_per_layer.png")
    P.plot_trajectories(report["steps"], examples, tmp / "activation_trajectories.png",
                        ylabel="hidden-state value")
