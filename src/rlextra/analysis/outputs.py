"""Output-space linearity: R^2 of each response token's log-prob (and raw logit) over steps.

A fixed probe set of prompt/response pairs is teacher-forced through every checkpoint, one model
in memory at a time, in padding-aware batches. Each response token's log-prob and logit at each
step feed the streaming line-fit kernel, as weights do. As in the paper, tokens whose log-prob
moves less than 0.2 over the run are left out (configurable, reported).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

import rlextra
from rlextra.analysis.report import r2_summary
from rlextra.checkpoints.series import CheckpointSeries, load_series
from rlextra.checkpoints.writer import atomic_output_dir
from rlextra.errors import RLExtraError
from rlextra.jsonl import read_jsonl
from rlextra.linefit import LineFit

LOGITS_BUDGET_BYTES = 256 * 2**20  # cap on one batch's kept logits (rows x positions x vocab x 4)
N_EXAMPLES = 6


def load_probes(path: str | Path) -> list[dict]:
    """JSONL rows with 'prompt' and 'response' strings (the prompt exactly as the model sees it)."""
    probes = []
    for i, row in read_jsonl(path):
        if not (isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str)):
            raise RLExtraError(f"{path}:{i}: needs 'prompt' and 'response' strings")
        if not row["prompt"] or not row["response"]:
            raise RLExtraError(f"{path}:{i}: empty prompt or response")
        probes.append({"prompt": row["prompt"], "response": row["response"]})
    if not probes:
        raise RLExtraError(f"{path}: no probes")
    return probes


def generate_probes(model_dir: str | Path, task, n: int, sampling) -> list[dict]:
    """n responses sampled from one checkpoint on the task's held-out prompts (k=1 each)."""
    from rlextra.evaluation.generate import format_prompts, generate_hf
    from rlextra.evaluation.run import load_model

    model, tok = load_model(model_dir)
    prompts = format_prompts(tok, [p.prompt for p in task.test[:n]], task.conversational)
    outs = generate_hf(model, tok, prompts, sampling, progress=False)
    return [{"prompt": p, "response": o[0]} for p, o in zip(prompts, outs) if o[0]]


def encode_probes(tokenizer, probes: Sequence[dict]) -> list[tuple[list[int], list[int]]]:
    """Token ids of each prompt and response (tokenised separately, then concatenated)."""
    special = not getattr(tokenizer, "chat_template", None)
    enc = []
    for p in probes:
        prompt = tokenizer(p["prompt"], add_special_tokens=special)["input_ids"]
        response = tokenizer(p["response"], add_special_tokens=False)["input_ids"]
        if prompt and response:
            enc.append((prompt, response))
    if not enc:
        raise RLExtraError("no probe has both prompt and response tokens")
    return enc


def teacher_force(model, encoded: Sequence[tuple[list[int], list[int]]], pad_id: int,
                  batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Log-prob and raw logit of every response token (concatenated in probe order), float64."""
    import torch

    vocab = model.config.get_text_config().vocab_size if hasattr(model.config, "get_text_config") \
        else model.config.vocab_size
    device = next(model.parameters()).device
    lps, lgs = [], []
    i = 0
    with torch.no_grad():
        while i < len(encoded):
            rmax = max(len(r) for _, r in encoded[i:i + batch_size])
            rows = max(1, min(batch_size, LOGITS_BUDGET_BYTES // ((rmax + 1) * vocab * 4)))
            batch = encoded[i:i + rows]
            i += rows
            width = max(len(p) + len(r) for p, r in batch)
            keep = max(len(r) for _, r in batch) + 1
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for j, (p, r) in enumerate(batch):  # left padded: every response ends at the last column
                ids[j, width - len(p) - len(r):] = torch.tensor(p + r)
                mask[j, width - len(p) - len(r):] = 1
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                           position_ids=pos.to(device), logits_to_keep=keep).logits.float()
            for j, (_, r) in enumerate(batch):
                z = logits[j, keep - len(r) - 1:keep - 1]  # positions predicting the response tokens
                target = torch.tensor(r, device=z.device)[:, None]
                lps.append(torch.log_softmax(z, -1).gather(-1, target).squeeze(-1).double().cpu().numpy())
                lgs.append(z.gather(-1, target).squeeze(-1).double().cpu().numpy())
    return np.concatenate(lps), np.concatenate(lgs)


def analyze_outputs(checkpoints: CheckpointSeries | str | Path | Sequence[str | Path],
                    out_dir: str | Path | None = None, *, probes: str | Path | list[dict] | None = None,
                    generate: int | None = None, task=None, sampling=None, steps: Sequence[int] | None = None,
                    min_logprob_change: float = 0.2, batch_size: int = 8, seed: int = 0,
                    plots: bool = True, progress: bool = True, overwrite: bool = False) -> dict:
    """Teacher-force the probes through every checkpoint; report token log-prob/logit linearity."""
    from rlextra.evaluation.run import load_model

    series = checkpoints if isinstance(checkpoints, CheckpointSeries) else load_series(checkpoints, steps)
    if len(series) < 3:
        raise RLExtraError(f"analysis needs at least 3 checkpoints, got {len(series)}")
    if (probes is None) == (generate is None):
        raise RLExtraError("give probes (--probes FILE) or a number of responses to generate (--generate N)")
    if generate is not None:
        from rlextra.evaluation.generate import SamplingConfig
        from rlextra.tasks import TaskSpec, load_task

        task = load_task(task or TaskSpec())
        probes = generate_probes(series.checkpoints[0].path, task, generate, sampling or SamplingConfig(seed=seed))
    elif not isinstance(probes, list):
        probes = load_probes(probes)
    first_model, tokenizer = load_model(series.checkpoints[0].path)
    del first_model
    encoded = encode_probes(tokenizer, probes)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    n_tok = sum(len(r) for _, r in encoded)
    lp_fit = LineFit(series.steps, n_tok, track_range=True)
    lg_fit = LineFit(series.steps, n_tok)
    rng = np.random.default_rng(seed)
    cand = rng.choice(n_tok, size=min(64, n_tok), replace=False)
    traj, mean_lp = [], []
    for cp in tqdm(series.checkpoints, desc="teacher-forcing checkpoints", disable=not progress):
        model, _ = load_model(cp.path)
        lp, lg = teacher_force(model, encoded, pad, batch_size)
        del model
        if not (np.isfinite(lp).all() and np.isfinite(lg).all()):
            raise RLExtraError(f"{cp.path}: NaN/Inf log-probs or logits on the probes")
        lp_fit.add(lp)
        lg_fit.add(lg)
        traj.append(lp[cand])
        mean_lp.append(float(lp.mean()))
    keep = lp_fit.value_range() >= min_logprob_change
    r2_lp, r2_lg = lp_fit.result().r2(), lg_fit.result().r2()
    traj = np.stack(traj)
    examples = [{"tensor": "token", "index": int(c), "label": f"probe token {int(c)}",
                 "r2": float(r2_lp[c]), "values": traj[:, j].tolist()}
                for j, c in enumerate(cand) if keep[c] and np.isfinite(r2_lp[c])][:N_EXAMPLES]
    report = {
        "rlextra_version": rlextra.__version__, "kind": "outputs", "steps": series.steps,
        "checkpoints": [{"step": c.step, "path": str(c.path)} for c in series.checkpoints],
        "n_probes": len(encoded), "n_tokens": n_tok,
        "filter": {"min_logprob_change": min_logprob_change, "n_tokens_kept": int(keep.sum()),
                   "n_tokens_dropped": int((~keep).sum())},
        "logprob": r2_summary(r2_lp[keep]), "logit": r2_summary(r2_lg[keep]),
        "logprob_unfiltered": r2_summary(r2_lp),
        "mean_token_logprob": mean_lp,
    }
    if out_dir is not None:
        _write(report, probes, examples, Path(out_dir), plots, overwrite, [c.path for c in series.checkpoints])
    return report


def _write(report: dict, probes: list[dict], examples: list[dict], out: Path, plots: bool,
           overwrite: bool, inputs: Sequence[Path]) -> None:
    from rlextra.analysis import plots as P

    with atomic_output_dir(out, inputs=inputs, overwrite=overwrite) as tmp:
        (tmp / "outputs.json").write_text(json.dumps(report, indent=1) + "\n")
        (tmp / "probes.jsonl").write_text("".join(json.dumps(p) + "\n" for p in probes))
        if plots:
            if report["logprob"]["n_analyzed"]:
                P.plot_r2_histogram(report["logprob"], tmp / "r2_logprob_histogram.png", title="Token log-probs")
                P.plot_r2_histogram(report["logit"], tmp / "r2_logit_histogram.png", title="Token logits")
            P.plot_trajectories(report["steps"], examples, tmp / "token_trajectories.png", ylabel="log-prob")
            P.plot_series(report["steps"], report["mean_token_logprob"], tmp / "mean_logprob_vs_step.png",
                          ylabel="mean token log-prob of the probes")
