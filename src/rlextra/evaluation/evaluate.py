"""Evaluate a decoder on a task: sample k completions per held-out problem, grade, summarise."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Iterator, Sequence

from rlextra.decoding import Decoder, DecodingEngine, HFGenerate, SamplingConfig, load_decoder
from rlextra.errors import RLExtraError
from rlextra.hf import format_prompts, prepare_tokenizer
from rlextra.io import atomic_output_file, check_output
from rlextra.metrics import summarize
from rlextra.tasks import Task, TaskSpec, load_task, task_inputs


def generations_path(out_file: Path) -> Path:
    """Where the per-generation JSONL of a summary file goes: beside it, same stem."""
    return out_file.with_suffix(".generations.jsonl")


def decoder_inputs(decoder) -> list[Path]:
    """The model folders a decoder reads (a folder itself, or what load_decoder recorded)."""
    if isinstance(decoder, (str, Path)):
        return [Path(decoder)]
    return [Path(p) for p in getattr(decoder, "paths", ())]


def check_summary_and_generations(out_file: str | Path, inputs: Sequence[str | Path] = (), overwrite: bool = False) -> Path:
    """Refuse an existing summary or generations file (unless overwrite) or one that is an input."""
    out_file = check_output(out_file, inputs=inputs, overwrite=overwrite, kind="file")
    check_output(generations_path(out_file), inputs=inputs, overwrite=overwrite, kind="file")
    return out_file


def evaluate(decoder: Decoder | str | Path | None, task: Task | TaskSpec, out_file: str | Path | None = None, *,
             sampling: SamplingConfig | None = None, split: str = "test", limit: int | None = None,
             progress: bool = True, completions: Sequence[Sequence[str]] | None = None,
             label: str | None = None, overwrite: bool = False) -> dict:
    """Sample, grade and summarise; with out_file, write the summary JSON and a generations JSONL.

    ``decoder`` is any decoder (``rlextra.decoding.load_decoder`` makes one from folders; a
    folder alone is loaded with the default backend). ``completions`` skips generation.
    Existing output files are replaced only with ``overwrite``; they are checked before a
    folder given as ``decoder`` is loaded.
    """
    inputs = decoder_inputs(decoder) + task_inputs(task)
    if isinstance(decoder, (str, Path)) and completions is None:
        from rlextra.checkpoints import check_model_dir

        decoder = check_model_dir(decoder)  # a bad folder is named before the outputs are checked
    if out_file is not None:  # before anything loads or is written
        out_file = check_summary_and_generations(out_file, inputs, overwrite)
    return _evaluate_checked(decoder, task, out_file, inputs, sampling=sampling, split=split, limit=limit,
                             progress=progress, completions=completions, label=label, overwrite=overwrite)


def _evaluate_checked(decoder, task: Task | TaskSpec, out_file: Path | None, inputs: list, *,
                      sampling: SamplingConfig | None, split: str, limit: int | None, progress: bool,
                      completions, label: str | None, overwrite: bool) -> dict:
    """evaluate() once its folder and outputs are checked (a folder given as decoder is a checked one)."""
    sampling = sampling or SamplingConfig()
    task = load_task(task) if isinstance(task, TaskSpec) else task
    if split not in ("test", "train"):
        raise RLExtraError(f"split '{split}': expected test or train")
    pool = task.test if split == "test" else task.train
    problems = pool[:limit] if limit else pool
    t0 = time.perf_counter()
    if isinstance(decoder, (str, Path)):
        decoder = load_decoder(decoder, checked=True)
    if completions is None:
        if decoder is None:
            raise RLExtraError("evaluate needs a decoder or the completions to grade")
        prompts = format_prompts(decoder.tokenizer, [p.prompt for p in problems], task.conversational)
        completions = decoder.generate(prompts, sampling, progress=progress)
    elif len(completions) != len(problems):
        raise RLExtraError(f"{len(completions)} completion lists for {len(problems)} problems")
    flat = task.grade_all([c for comps in completions for c in comps],
                          [p.answer for comps, p in zip(completions, problems) for _ in comps])
    correct, i = [], 0
    for comps in completions:
        correct.append(flat[i:i + len(comps)])
        i += len(comps)
    metrics = summarize(correct, ks=[1, sampling.k])
    summary = {
        "model": label or (decoder.label if decoder is not None else "given completions"),
        "task": task.spec.to_dict(), "task_source": task.source, "split": split, "sampling": sampling.to_dict(),
        "backend": decoder.name if decoder is not None else "given",
        "metrics": metrics, "seconds": round(time.perf_counter() - t0, 3),
        "per_problem": [{"index": i, "answer": p.answer, "n_correct": sum(c)}
                        for i, (p, c) in enumerate(zip(problems, correct))],
    }
    layers = next((ok.layers for ok in flat if getattr(ok, "layers", None)), None)
    if layers:  # code tasks: the sandbox's layers the programs ran under
        summary["sandbox_layers"] = layers
    if out_file is not None:
        lines = [json.dumps({"problem": i, "sample": j, "prompt": p.prompt, "answer": p.answer,
                             "completion": c, "extracted": task.extract(c), "correct": bool(ok),
                             **({"tests": ok.tests} if getattr(ok, "tests", None) is not None else {}),
                             **({"sandbox_layers": ok.layers} if getattr(ok, "layers", None) else {})})
                 for i, (p, comps, oks) in enumerate(zip(problems, completions, correct))
                 for j, (c, ok) in enumerate(zip(comps, oks))]
        with contextlib.ExitStack() as stack:
            gen_tmp, sum_tmp = (stack.enter_context(atomic_output_file(f, inputs=inputs, overwrite=overwrite))
                                for f in (generations_path(out_file), out_file))
            gen_tmp.write_text("\n".join(lines) + "\n")
            sum_tmp.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def evaluate_checkpoint(model: str | Path, task: Task | TaskSpec, out_file: str | Path | None = None, *,
                        sampling: SamplingConfig | None = None, backend: str = "auto",
                        extrapolate_from: str | Path | None = None, to_step: float | None = None,
                        alpha: float | None = None, steps: Sequence[int] | None = None, device: str | None = "auto",
                        dtype: str | None = "auto", devices: str | Sequence[str] | None = None, mode: str = "auto",
                        allow_pickle: bool = False, progress: bool = True, overwrite: bool = False) -> dict:
    """``rlextra eval``: load a model folder (or, with ``extrapolate_from``, decode with the logits
    of BASE and MODEL extrapolated to ``to_step`` / ``alpha``) and evaluate it on the task.

    The folders and outputs are checked before any model loads. Returns the summary.
    """
    from rlextra.checkpoints import check_loadable, check_model_dir, load_series, spec_path

    if (extrapolate_from is None) != (to_step is None and alpha is None):
        raise RLExtraError("--extrapolate-from goes with --to-step T or --alpha A")
    models = [str(extrapolate_from), str(model)] if extrapolate_from is not None else [str(model)]
    inputs = [spec_path(m) for m in models]
    # checked once, here: the model folders first, then the outputs, before any model loads; what is
    # checked is passed down (a series, a folder), so the layers below do not read it again
    if extrapolate_from is not None:
        checked = check_loadable(load_series(models, steps, allow_pickle=allow_pickle))
    else:
        checked = check_model_dir(inputs[0], allow_pickle=allow_pickle, pickle_flag="--allow-pickle")
    inputs += task_inputs(task)
    if out_file is not None:
        out_file = check_summary_and_generations(out_file, inputs, overwrite)
    decoder = load_decoder(checked, backend=backend, to_step=to_step, alpha=alpha, device=device, dtype=dtype,
                           devices=devices, allow_pickle=allow_pickle, mode=mode, checked=True)
    return _evaluate_checked(decoder, task, out_file, inputs, sampling=sampling, split="test", limit=None,
                             progress=progress, completions=None, label=None, overwrite=overwrite)


@contextlib.contextmanager
def eval_mode(model) -> Iterator[None]:
    """Score a model that is being trained: eval mode inside, its previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def in_memory_decoder(model, tokenizer, backend: str = "rlextra") -> Decoder:
    """A decoder for a model already in memory: rlextra's engine (the decoder of every score the
    library computes, so scores compare side by side), or HF ``generate`` with backend "hf"."""
    if backend == "hf":
        return HFGenerate(model, tokenizer)
    if backend != "rlextra":
        raise RLExtraError(f"--backend {backend}: a model in memory is decoded by rlextra or hf")
    return DecodingEngine([model], None, prepare_tokenizer(tokenizer), label="in-memory")


def heldout_accuracy(model, tokenizer, task: Task, n: int, max_new_tokens: int, backend: str = "rlextra") -> float:
    """Greedy accuracy on the first n held-out problems (rlextra's engine unless ``backend`` is "hf");
    the model keeps its mode."""
    with eval_mode(model):
        summary = evaluate(in_memory_decoder(model, tokenizer, backend), task, sampling=SamplingConfig(
            k=1, temperature=0.0, max_new_tokens=max_new_tokens, batch_size=64), limit=n, progress=False)
    return summary["metrics"]["avg@1"]
