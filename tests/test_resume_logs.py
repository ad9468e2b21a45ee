"""A run stopped after a checkpoint and resumed keeps every log as the uninterrupted run's: the rows
the stopped run wrote past the checkpoint it resumes from are dropped, then written again."""

import json
import shutil

import pytest

from rlextra.rl import TrainConfig, train
from rlextra.tasks import TaskSpec
from conftest import TINY_SPEC_FIELDS


SPEC = TaskSpec(**TINY_SPEC_FIELDS)  # the spec of conftest's tiny model
VOLATILE = ("train_seconds", "monitor_seconds")  # wall-clock figures, not the run's content


def _logs(run):
    out = {}
    for name in ("metrics.jsonl", "linearity.jsonl", "rl_extra.jsonl", "lr_auto.jsonl"):
        if (run / name).exists():
            rows = [json.loads(x) for x in (run / name).read_text().splitlines()]
            out[name] = [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("options", [dict(rl_extra=(2, 2), rl_extra_auto=True, rl_extra_auto_threshold=1e6),
                                     dict(lr_auto=True, lr_auto_every=2, monitor_every=1)],
                         ids=["rl-extra-auto", "lr-auto"])
def test_a_resumed_run_logs_what_the_uninterrupted_run_logs(tiny, tmp_path, options):
    def cfg(out):
        return TrainConfig(model=str(tiny), output_dir=str(out), task=SPEC, max_steps=6, save_every=2,
                           learning_rate=1e-3, prompts_per_step=4, num_generations=4, max_completion_length=3,
                           eval_problems=0, progress=False, monitor_sample=1.0, **options)

    whole = _logs(train(cfg(tmp_path / "whole")))
    assert len(whole) == 3  # metrics, linearity, and rl_extra or lr_auto
    stopped = train(cfg(tmp_path / "stopped"))
    # stopped while checkpoint-6 was written: its rows are in the logs, the checkpoint is not complete
    (stopped / "checkpoint-6" / "trainer_state.json").unlink()
    assert _logs(stopped) == whole
    train(cfg(stopped))  # resumes from checkpoint-4 and trains steps 5 and 6 again
    assert _logs(stopped) == whole
    # stopped before its first checkpoint: every row after step 0 goes
    shutil.rmtree(stopped / "checkpoint-2"), shutil.rmtree(stopped / "checkpoint-4"), shutil.rmtree(stopped / "checkpoint-6")
    train(cfg(stopped))
    assert _logs(stopped) == whole


def test_a_damaged_monitor_window_is_one_line_naming_the_file(tmp_path):
    from types import SimpleNamespace

    import torch
    from safetensors.torch import load_file, save_file

    from rlextra.errors import RLExtraError
    from rlextra.rl.models import char_tokenizer, tiny_llama
    from rlextra.rl.monitor import WINDOW_FILE, WINDOW_STATE, LinearityMonitor

    model = tiny_llama(char_tokenizer(), hidden=32, layers=2, intermediate=64, seed=0)
    args = SimpleNamespace(output_dir=str(tmp_path))
    state = lambda s: SimpleNamespace(global_step=s, is_world_process_zero=True)  # noqa: E731
    mon = LinearityMonitor(1, sample=0.05, window=4)
    mon.on_train_begin(args, state(0), None, model=model)
    for step in (1, 2, 3):
        with torch.no_grad():
            next(model.parameters()).add_(0.01)
        mon.on_step_end(args, state(step), None, model=model)
    mon.on_save(args, state(3), None)
    ckpt = tmp_path / "checkpoint-3"
    good_state, good_window = (ckpt / WINDOW_STATE).read_text(), (ckpt / WINDOW_FILE).read_bytes()

    def resume():
        LinearityMonitor(1, sample=0.05, window=4).on_train_begin(args, state(3), None, model=model)

    resume()  # intact: resumes
    for damage, match in (
            (lambda: (ckpt / WINDOW_STATE).write_text("{"), "linearity_state.json: not valid JSON"),
            (lambda: (ckpt / WINDOW_STATE).write_text("[]"), "linearity_state.json: not a monitor state"),
            (lambda: (ckpt / WINDOW_FILE).write_bytes(good_window[:100]), "the monitor's window cannot be read"),
            (lambda: save_file({k: torch.full_like(v, float("nan")) for k, v in load_file(str(ckpt / WINDOW_FILE)).items()},
                               str(ckpt / WINDOW_FILE)), "the monitor's window holds NaN or Inf")):
        (ckpt / WINDOW_STATE).write_text(good_state)
        (ckpt / WINDOW_FILE).write_bytes(good_window)
        damage()
        with pytest.raises(RLExtraError, match=match):
            resume()
