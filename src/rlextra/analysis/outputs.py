"""Output-space linearity: R^2 of each response token's log-prob (and raw logit) over steps.

A fixed probe set of prompt/response pairs is teacher-forced through every checkpoint, one model
in memory at a time, in padding-aware batches. Each response token's log-prob and logit at each
step feed the streaming line-fit kernel, as weights do.

Token filters (both kept counts and both summaries are reported, whichever one is chosen):
- ``endpoints`` (default, the paper's, as its published script does it): keep tokens whose
  log-prob changes by more than 0.2 between the first and the last checkpoint,
  |lp_last - lp_first| > 0.2.
- ``range`` (rlextra's own): keep tokens whose log-prob spans at least 0.2 over the run,
  max - min >= 0.2. It also keeps tokens that rise and fall back, which pull R^2 down, so its
  figures are not comparable with the paper's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from rlextra.analysis.probes import (Encoded, encode_probes, example_candidates, load_probes, open_probe_run,
                                     padded_batches, write_probe_report)
from rlextra.analysis.report import r2_summary
from rlextra.checkpoints.series import CheckpointSeries
from rlextra.errors import RLExtraError
from rlextra.hf import model_device
from rlextra.linefit import LineFit

__all__ = ["TOKEN_FILTERS", "analyze_outputs", "encode_probes", "load_probes", "teacher_force", "token_filter_mask"]

LOGITS_BUDGET_BYTES = 256 * 2**20  # cap on one batch's kept logits (rows x positions x vocab x 4)
N_EXAMPLES = 6
TOKEN_FILTERS = ("endpoints", "range")  # the paper's, rlextra's own


def teacher_force(model, encoded: Encoded, pad_id: int, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Log-prob and raw logit of every response token (concatenated in probe order), float64."""
    import torch

    vocab = model.config.get_text_config().vocab_size if hasattr(model.config, "get_text_config") \
        else model.config.vocab_size
    device = model_device(model)
    lps, lgs = [], []
    with torch.no_grad():
        for batch, ids, mask, pos in padded_batches(
                encoded, pad_id, batch_size, lambda rmax: LOGITS_BUDGET_BYTES // ((rmax + 1) * vocab * 4)):
            keep = max(len(r) for _, r in batch) + 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                           position_ids=pos.to(device), logits_to_keep=keep).logits.float()
            for j, (_, r) in enumerate(batch):
                z = logits[j, keep - len(r) - 1:keep - 1]  # positions predicting the response tokens
                target = torch.tensor(r, device=z.device)[:, None]
                lps.append(torch.log_softmax(z, -1).gather(-1, target).squeeze(-1).double().cpu().numpy())
                lgs.append(z.gather(-1, target).squeeze(-1).double().cpu().numpy())
    return np.concatenate(lps), np.concatenate(lgs)


def token_filter_mask(fit: LineFit, kind: str, min_change: float) -> np.ndarray:
    """Tokens kept by a filter: 'endpoints' |last - first| > min_change (the paper's), 'range'
    max - min >= min_change (rlextra's own). ``fit`` must track the range."""
    if kind == "endpoints":
        return np.abs(fit.endpoint_change()) > min_change
    if kind == "range":
        return fit.value_range() >= min_change
    raise RLExtraError(f"--token-filter must be one of {', '.join(TOKEN_FILTERS)}, got '{kind}'")


def analyze_outputs(checkpoints: CheckpointSeries | str | Path | Sequence[str | Path],
                    out_dir: str | Path | None = None, *, probes: str | Path | list[dict] | None = None,
                    generate: int | None = None, task=None, sampling=None, steps: Sequence[int] | None = None,
                    token_filter: str = "endpoints", min_logprob_change: float = 0.2, batch_size: int = 8,
                    seed: int = 0, plots: bool = True, progress: bool = True, overwrite: bool = False,
                    device: str | None = "auto", dtype: str | None = "auto", allow_pickle: bool = False) -> dict:
    """Teacher-force the probes through every checkpoint; report token log-prob/logit linearity.

    ``logprob``/``logit`` summarise the tokens ``token_filter`` keeps; ``by_filter`` holds the
    kept count and both summaries under each filter, so the two can be compared from one run.
    """
    if token_filter not in TOKEN_FILTERS:
        raise RLExtraError(f"--token-filter must be one of {', '.join(TOKEN_FILTERS)}, got '{token_filter}'")
    if not (np.isfinite(min_logprob_change) and min_logprob_change >= 0):
        raise RLExtraError(f"--min-logprob-change must be a finite number >= 0, got {min_logprob_change}")
    run = open_probe_run(checkpoints, out_dir, probes=probes, generate=generate, task=task, sampling=sampling,
                         steps=steps, seed=seed, batch_size=batch_size, overwrite=overwrite, device=device,
                         dtype=dtype, allow_pickle=allow_pickle)
    series, n_tok = run.series, run.n_tokens
    lp_fit = LineFit(series.steps, n_tok, track_range=True)
    lg_fit = LineFit(series.steps, n_tok)
    cand = example_candidates(n_tok, seed)
    traj, mean_lp = [], []
    for cp, model in run.models(progress):
        lp, lg = teacher_force(model, run.encoded, run.pad, batch_size)
        if not (np.isfinite(lp).all() and np.isfinite(lg).all()):
            raise RLExtraError(f"{cp.path}: NaN/Inf log-probs or logits on the probes")
        lp_fit.add(lp)
        lg_fit.add(lg)
        traj.append(lp[cand])
        mean_lp.append(float(lp.mean()))
    r2_lp, r2_lg = lp_fit.result().r2(), lg_fit.result().r2()
    masks = {kind: token_filter_mask(lp_fit, kind, min_logprob_change) for kind in TOKEN_FILTERS}
    keep = masks[token_filter]
    traj = np.stack(traj)
    examples = [{"tensor": "token", "index": int(c), "label": f"probe token {int(c)}",
                 "r2": float(r2_lp[c]), "values": traj[:, j].tolist()}
                for j, c in enumerate(cand) if keep[c] and np.isfinite(r2_lp[c])][:N_EXAMPLES]
    report = {
        **run.header("outputs"),
        "filter": {"token_filter": token_filter, "min_logprob_change": min_logprob_change,
                   "n_tokens_kept": int(keep.sum()), "n_tokens_dropped": int((~keep).sum()),
                   "n_tokens_kept_endpoints": int(masks["endpoints"].sum()),
                   "n_tokens_kept_range": int(masks["range"].sum())},
        "logprob": r2_summary(r2_lp[keep]), "logit": r2_summary(r2_lg[keep]),
        "logprob_unfiltered": r2_summary(r2_lp),
        "by_filter": {kind: {"n_tokens_kept": int(m.sum()), "logprob": r2_summary(r2_lp[m]),
                             "logit": r2_summary(r2_lg[m])} for kind, m in masks.items()},
        "mean_token_logprob": mean_lp,
    }
    if out_dir is not None:
        write_probe_report(Path(out_dir), "outputs.json", report, run, overwrite,
                           (lambda tmp: _plots(report, examples, tmp)) if plots else None)
    return report


def _plots(report: dict, examples: list[dict], tmp: Path) -> None:
    from rlextra.analysis import plots as P

    if report["logprob"]["n_analyzed"]:
        P.plot_r2_histogram(report["logprob"], tmp / "r2_logprob_histogram.png", title="Token log-probs")
        P.plot_r2_histogram(report["logit"], tmp / "r2_logit_histogram.png", title="Token logits")
    P.plot_trajectories(report["steps"], examples, tmp / "token_trajectories.png", ylabel="log-prob")
    P.plot_series(report["steps"], report["mean_token_logprob"], tmp / "mean_logprob_vs_step.png",
                  ylabel="mean token log-prob of the probes")
