"""Evaluate a model folder on a task: sample k completions per held-out problem, grade, summarise."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Sequence

from rlextra.errors import RLExtraError
from rlextra.io import atomic_output_file, check_output
from rlextra.evaluation.generate import SamplingConfig, format_prompts, generate_hf, generate_vllm, vllm_available
from rlextra.metrics import summarize
from rlextra.tasks import Task, TaskSpec, load_task


def load_model(path: str | Path):
    """A causal LM and its tokenizer from a local folder (safetensors), in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlextra.checkpoints import check_model_dir

    path = check_model_dir(path)  # safetensors only, read through the checked reader first
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto", use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise RLExtraError(f"{path}: cannot load the model ({str(exc).splitlines()[0]})") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as exc:
        raise RLExtraError(f"{path}: cannot load a tokenizer; copy the tokenizer files of the run into it "
                           f"({str(exc).splitlines()[0]})") from None
    return model.eval(), tokenizer


def _decode_config(sampling: SamplingConfig):
    from rlextra.extrapolate.logits import DecodeConfig

    return DecodeConfig(k=sampling.k, temperature=sampling.temperature, top_p=sampling.top_p,
                        top_k=sampling.top_k, max_new_tokens=sampling.max_new_tokens,
                        batch_size=sampling.batch_size, seed=sampling.seed)


def generations_path(out_file: Path) -> Path:
    """Where the per-generation JSONL of a summary file goes: beside it, same stem."""
    return out_file.with_suffix(".generations.jsonl")


def evaluate(model: str | Path | tuple, task: Task | TaskSpec, out_file: str | Path | None = None, *,
             sampling: SamplingConfig | None = None, backend: str = "auto", split: str = "test",
             limit: int | None = None, progress: bool = True,
             completions: Sequence[Sequence[str]] | None = None, label: str | None = None,
             extrapolate_from: str | Path | None = None, to_step: float | None = None,
             alpha: float | None = None, steps: Sequence[int] | None = None, overwrite: bool = False) -> dict:
    """Sample, grade and summarise; with out_file, write the summary JSON and a generations JSONL.

    ``model`` is a folder, or a (model, tokenizer) pair already loaded. With ``extrapolate_from``
    (an earlier checkpoint b of the same run, ``model`` being s), completions come from Logits
    Extrapolation decoding to ``to_step`` (or ``alpha``). ``completions`` skips generation.
    Existing output files are replaced only with ``overwrite``.
    """
    sampling = sampling or SamplingConfig()
    inputs = [p for p in (model, extrapolate_from) if isinstance(p, (str, Path))]
    if completions is None:
        from rlextra.checkpoints import check_model_dir

        for p in inputs:  # before anything loads or is written
            check_model_dir(p)
    if out_file is not None:
        out_file = check_output(out_file, inputs=inputs, overwrite=overwrite, kind="file")
        check_output(generations_path(out_file), inputs=inputs, overwrite=overwrite, kind="file")
    task = load_task(task) if isinstance(task, TaskSpec) else task
    pool = task.test if split == "test" else task.train
    problems = pool[:limit] if limit else pool
    t0 = time.perf_counter()
    used = backend
    if completions is None and extrapolate_from is not None:
        from rlextra.extrapolate.logits import load_extrapolator

        ex = load_extrapolator([extrapolate_from, model], to_step=to_step, alpha=alpha, steps=steps)
        prompts = format_prompts(ex.tokenizer, [p.prompt for p in problems], task.conversational)
        completions = ex.generate(prompts, _decode_config(sampling), progress=progress)
        used = f"logits-extrapolation (steps {ex.steps[0]:g}, {ex.steps[-1]:g} -> {ex.target:g})"
        label = label or f"{extrapolate_from} + {model} -> step {ex.target:g}"
    if completions is None:
        if backend == "auto":
            used = "vllm" if isinstance(model, (str, Path)) and vllm_available() else "hf"
        if used == "vllm":
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(model)
            prompts = format_prompts(tok, [p.prompt for p in problems], task.conversational)
            completions = generate_vllm(str(model), prompts, sampling)
        elif used in ("hf", "rlextra"):
            m, tok = load_model(model) if isinstance(model, (str, Path)) else model
            prompts = format_prompts(tok, [p.prompt for p in problems], task.conversational)
            if used == "hf":
                completions = generate_hf(m, tok, prompts, sampling, progress=progress)
            else:  # rlextra's own decoder with one model: one prefill per prompt for its k samples
                from rlextra.extrapolate.logits import LogitExtrapolator

                completions = LogitExtrapolator([m], [0], tok).generate(prompts, _decode_config(sampling), progress)
        else:
            raise RLExtraError(f"unknown backend '{backend}' (auto, hf, rlextra, vllm)")
    correct = [[task.grade(c, p.answer) for c in comps] for comps, p in zip(completions, problems)]
    metrics = summarize(correct, ks=[1, sampling.k])
    summary = {
        "model": label or (str(model) if isinstance(model, (str, Path)) else "in-memory"),
        "task": task.spec.to_dict(), "split": split, "sampling": sampling.to_dict(), "backend": used,
        "metrics": metrics, "seconds": round(time.perf_counter() - t0, 3),
        "per_problem": [{"index": i, "answer": p.answer, "n_correct": sum(c)}
                        for i, (p, c) in enumerate(zip(problems, correct))],
    }
    if out_file is not None:
        out_file = Path(out_file)
        lines = [json.dumps({"problem": i, "sample": j, "prompt": p.prompt, "answer": p.answer,
                             "completion": c, "extracted": task.extract(c), "correct": ok})
                 for i, (p, comps, oks) in enumerate(zip(problems, completions, correct))
                 for j, (c, ok) in enumerate(zip(comps, oks))]
        with contextlib.ExitStack() as stack:
            gen_tmp, sum_tmp = (stack.enter_context(atomic_output_file(f, inputs=inputs, overwrite=overwrite))
                                for f in (generations_path(out_file), out_file))
            gen_tmp.write_text("\n".join(lines) + "\n")
            sum_tmp.write_text(json.dumps(summary, indent=1) + "\n")
    return summary
