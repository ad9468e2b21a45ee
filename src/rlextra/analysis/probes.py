"""Probe sets for the teacher-forced analyses (outputs, activations): read or sample them, encode
them, batch them left-padded, and load the checkpoints they are forced through.

Every model these analyses load goes through ``load_checkpoint`` here, one model at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from rlextra.checkpoints.series import CheckpointSeries
from rlextra.errors import RLExtraError
from rlextra.sampling import check_seed
from rlextra.io import read_jsonl

Encoded = Sequence[tuple[list[int], list[int]]]


def load_checkpoint(path: str | Path, *, device: str | None = "auto", dtype: str | None = "auto",
                    allow_pickle: bool = False):
    """(model, tokenizer) of one checkpoint folder, in eval mode on ``device``: the analyses' only model loader."""
    from rlextra.hf import load_model

    return load_model(path, device=device, dtype=dtype, allow_pickle=allow_pickle)


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


def generate_probes(model_dir: str | Path, task, n: int, sampling, backend: str = "rlextra", **load) -> list[dict]:
    """n responses sampled from one checkpoint on the task's held-out prompts (k=1 each; rlextra's
    engine, the decoder of every score, unless ``backend`` is "hf").

    ``load``: device, dtype, allow_pickle, as ``load_checkpoint`` takes them.
    """
    from rlextra.evaluation import in_memory_decoder
    from rlextra.hf import format_prompts

    model, tok = load_checkpoint(model_dir, **load)
    prompts = format_prompts(tok, [p.prompt for p in task.test[:n]], task.conversational)
    outs = in_memory_decoder(model, tok, backend).generate(prompts, sampling, progress=False)
    return [{"prompt": p, "response": o[0]} for p, o in zip(prompts, outs) if o[0]]


def encode_probes(tokenizer, probes: Sequence[dict]) -> list[tuple[list[int], list[int]]]:
    """Token ids of each prompt and response (tokenised separately, then concatenated)."""
    from rlextra.hf import prompt_special_tokens

    special = prompt_special_tokens(tokenizer)
    enc = []
    for p in probes:
        prompt = tokenizer(p["prompt"], add_special_tokens=special)["input_ids"]
        response = tokenizer(p["response"], add_special_tokens=False)["input_ids"]
        if prompt and response:
            enc.append((prompt, response))
    if not enc:
        raise RLExtraError("no probe has both prompt and response tokens")
    return enc


def probe_inputs(series: CheckpointSeries, probes, task=None) -> list[Path]:
    """Everything an analysis reads, for the output guard: the checkpoints and their run folder, a
    probes file, and a task file."""
    from rlextra.tasks import task_inputs

    return series.input_folders + ([Path(probes)] if isinstance(probes, (str, Path)) else []) + task_inputs(task)


def prepare_probes(series: CheckpointSeries, *, probes: str | Path | list[dict] | None, generate: int | None,
                   task=None, sampling=None, seed: int = 0, **load) -> tuple[list[dict], Encoded, int]:
    """The probe rows (read, given, or sampled from the first checkpoint), their token ids, and the
    pad id, with the first checkpoint's tokenizer. ``load``: device, dtype, allow_pickle."""
    from rlextra.hf import load_tokenizer

    if (probes is None) == (generate is None):
        raise RLExtraError("give probes (--probes FILE) or a number of responses to generate (--generate N)")
    check_seed(seed)
    source = probes if isinstance(probes, (str, Path)) else "probes"
    if generate is not None and generate < 1:
        raise RLExtraError(f"--generate must be at least 1, got {generate}")
    if generate is not None:
        from rlextra.decoding import SamplingConfig
        from rlextra.tasks import TaskSpec, load_task

        task = load_task(task or TaskSpec())
        probes = generate_probes(series.checkpoints[0].path, task, generate, sampling or SamplingConfig(seed=seed),
                                 **load)
    elif not isinstance(probes, list):
        probes = load_probes(probes)
    tokenizer = load_tokenizer(series.checkpoints[0].path)
    encoded = encode_probes(tokenizer, probes)
    _check_context(series.checkpoints[0].path, encoded, source)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return probes, encoded, pad


def _check_context(model_dir: Path, encoded: Encoded, source) -> None:
    """Refuse a probe (prompt + response) longer than the model's context: positions past
    max_position_embeddings give numbers, but not the model's."""
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError):
        return  # the loader names a bad config when the model loads
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    limit = getattr(text, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit < 1:
        return
    for i, (p, r) in enumerate(encoded):
        if len(p) + len(r) > limit:
            raise RLExtraError(f"{source}: probe {i + 1}: {len(p) + len(r)} tokens, longer than the model's context "
                               f"of {limit} (max_position_embeddings)")


def padded_batches(encoded: Encoded, pad_id: int, batch_size: int, rows_for: Callable[[int], int] | None = None
                   ) -> Iterator[tuple[Encoded, object, object, object]]:
    """(batch, input_ids, attention_mask, position_ids), left padded so that every response ends at
    the last column; ``rows_for(longest_response)`` may cap a batch below batch_size (memory)."""
    import torch

    i = 0
    while i < len(encoded):
        rows = batch_size
        if rows_for is not None:
            rows = max(1, min(batch_size, rows_for(max(len(r) for _, r in encoded[i:i + batch_size]))))
        batch = encoded[i:i + rows]
        i += len(batch)
        width = max(len(p) + len(r) for p, r in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for j, (p, r) in enumerate(batch):
            ids[j, width - len(p) - len(r):] = torch.tensor(p + r)
            mask[j, width - len(p) - len(r):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        yield batch, ids, mask, pos


def example_candidates(n: int, seed: int, size: int = 64) -> np.ndarray:
    """A seeded random pick of coordinates whose trajectories may be plotted (not cherry-picked)."""
    return np.random.default_rng(seed).choice(n, size=min(size, n), replace=False)


@dataclass
class ProbeRun:
    """What both teacher-forced analyses (outputs, activations) share: the series, the guard's inputs,
    the probes and their token ids, and where each checkpoint is loaded."""

    series: CheckpointSeries
    inputs: list[Path]
    probes: list[dict]
    encoded: Encoded
    pad: int
    load: dict

    @property
    def n_tokens(self) -> int:
        return sum(len(r) for _, r in self.encoded)

    def models(self, progress: bool = True) -> Iterator[tuple[object, object]]:
        """(checkpoint, model) for each checkpoint in step order, one model in memory at a time."""
        from tqdm.auto import tqdm

        for cp in tqdm(self.series.checkpoints, desc="teacher-forcing checkpoints", disable=not progress):
            model, _ = load_checkpoint(cp.path, **self.load)
            yield cp, model
            del model

    def header(self, kind: str) -> dict:
        """The fields every probe report starts with."""
        import rlextra

        return {"rlextra_version": rlextra.__version__, "kind": kind, "steps": self.series.steps,
                "checkpoints": [{"step": c.step, "path": str(c.path)} for c in self.series.checkpoints],
                "n_probes": len(self.encoded), "n_tokens": self.n_tokens}


def open_probe_run(checkpoints, out_dir: str | Path | None, *, probes, generate: int | None, task, sampling,
                   steps: Sequence[int] | None, seed: int, batch_size: int, overwrite: bool, device: str | None,
                   dtype: str | None, allow_pickle: bool) -> ProbeRun:
    """Load the series (3 or more checkpoints), check the output against every input, then read (or
    sample) the probes: every check before any model loads, in one place."""
    from rlextra.checkpoints.series import load_series
    from rlextra.io import check_output

    load = dict(device=device, dtype=dtype, allow_pickle=allow_pickle)  # where each checkpoint runs
    series = load_series(checkpoints, steps, allow_pickle=allow_pickle, min_checkpoints=3)
    inputs = probe_inputs(series, probes, task)
    if out_dir is not None:
        check_output(out_dir, inputs=inputs, overwrite=overwrite)
    if batch_size < 1:
        raise RLExtraError(f"--batch-size must be at least 1, got {batch_size}")
    rows, encoded, pad = prepare_probes(series, probes=probes, generate=generate, task=task, sampling=sampling,
                                        seed=seed, **load)
    return ProbeRun(series, inputs, rows, encoded, pad, load)


def write_probe_report(out: Path, name: str, report: dict, run: ProbeRun, overwrite: bool,
                       draw: Callable[[Path], None] | None) -> None:
    """out/NAME (the report), out/probes.jsonl (what was teacher-forced) and, with ``draw``, its plots,
    written atomically."""
    import json

    from rlextra.io import atomic_output_dir

    with atomic_output_dir(out, inputs=run.inputs, overwrite=overwrite) as tmp:
        (tmp / name).write_text(json.dumps(report, indent=1) + "\n")
        (tmp / "probes.jsonl").write_text("".join(json.dumps(p) + "\n" for p in run.probes))
        if draw is not None:
            draw(tmp)
