"""The lr headroom (rlextra's heuristic) in monitor rows and watch, and --lr-auto (AdaptiveLR)."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlextra.errors import RLExtraError
from rlextra.extrapolate.headroom import describe, lr_headroom, predict_multiplier
from rlextra.extrapolate.inflight import finalize_window, window_sums
from rlextra.rl.config import TrainConfig
from rlextra.rl.lr_auto import LOG_FILE, STATE_FILE, AdaptiveLR, decide, reward_drop
from rlextra.rl.monitor import LinearityMonitor
from rlextra.tasks import TaskSpec
from conftest import TINY_SPEC_FIELDS

torch.set_num_threads(1)


def _row(step, errors, segment=0):
    return {"step": step, "segment": segment, "backtest_ladder": {"two-point": [
        {"alpha": a, "weight_error": e} for a, e in errors.items()]}}


def test_headroom_is_the_largest_alpha_below_the_threshold_over_the_mean_of_rows():
    rows = [_row(4, {1.5: 0.5, 2.0: 0.7, 3.0: 0.9}), _row(6, {1.5: 0.6, 2.0: 0.85, 3.0: 0.7})]
    h = lr_headroom(rows, threshold=0.8)
    # means: 1.5 -> 0.55, 2 -> 0.775, 3 -> 0.8 (not below)
    assert h["multiplier"] == 2.0
    assert h["weight_error"] == {"1.5": 0.55, "2": 0.775, "3": 0.8} and h["rows"] == [4, 6]
    assert describe(h) == "lr headroom x2 (in-flight error 0.78 at alpha 2)"
    none = lr_headroom([_row(4, {1.5: 1.2, 2.0: None})], threshold=0.8)
    assert none["multiplier"] == 1.0 and none["weight_error"] == {"1.5": 1.2}  # None errors skipped
    assert describe(lr_headroom([])) == "lr headroom: not measured yet"
    events = [{"step": 5, "event": "jump"}]
    assert lr_headroom(events + rows)["multiplier"] == 2.0  # events are not rows


def test_prediction_reads_the_first_segment_up_to_step_20_only():
    early = [_row(s, {2.0: 0.5, 6.0: 0.7}) for s in (4, 10, 20)]
    late = [_row(22, {2.0: 5.0, 6.0: 5.0}), _row(24, {2.0: 5.0}, segment=0)]
    jumped = [_row(12, {2.0: 9.0, 6.0: 9.0}, segment=1)]
    p = predict_multiplier(early + late + jumped)
    assert p["multiplier"] == 6.0 and p["rows"] == [4, 10, 20]
    assert predict_multiplier(early + late, first_steps=24)["multiplier"] == 1.0


def test_relative_update_is_the_newest_step_against_the_weights():
    rng = np.random.default_rng(0)
    snaps = [rng.normal(size=300) for _ in range(4)]
    steps = [0, 2, 4, 6]
    row = finalize_window(6, steps, window_sums(steps, {"model.layers.0.mlp.w": snaps}))
    expect = np.linalg.norm(snaps[3] - snaps[2]) / np.linalg.norm(snaps[2]) / 2
    assert row["relative_update"] == pytest.approx(expect, rel=1e-12)


def test_reward_drop_needs_two_standard_errors_and_the_floor():
    assert reward_drop([0.5], [0.4, 0.4]) is None
    flat = reward_drop([0.5, 0.5, 0.5], [0.49, 0.49, 0.49])
    assert flat["bar"] == 0.02 and not flat["fell"]  # no noise: the floor decides
    fell = reward_drop([0.6, 0.62, 0.58], [0.3, 0.32, 0.28])
    assert fell["fell"] and fell["drop"] == pytest.approx(0.3)
    noisy = reward_drop([0.9, 0.1, 0.9, 0.1], [0.1, 0.9, 0.1, 0.5])
    assert not noisy["fell"]  # a drop of 0.1 inside the noise
    assert decide({"multiplier": 3.0}, None) == "raise"
    assert decide({"multiplier": 1.5}, None) == "keep"
    assert decide({"multiplier": 1.0}, None) == "cut"
    assert decide({"multiplier": 6.0}, fell) == "cut"


class _Vec(torch.nn.Module):
    def __init__(self, n=400):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(n))


def _drive(grad_fn, steps, tmp_path, *, every=4, start=0, model=None, opt=None, sched=None, mon=None, cb=None,
           save_at=(), reward_fn=None, **kw):
    """SGD on a toy vector under a monitor and AdaptiveLR; the lr moves the path by lr * grad."""
    model = model or _Vec()
    opt = opt or torch.optim.SGD(model.parameters(), lr=0.1)
    sched = sched or torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    args = SimpleNamespace(output_dir=str(tmp_path), learning_rate=0.1)
    mon = mon or LinearityMonitor(1, sample=1.0, window=8)
    cb = cb or AdaptiveLR(mon, every=every, **kw)
    state = lambda s: SimpleNamespace(global_step=s, is_world_process_zero=True)  # noqa: E731
    mon.on_train_begin(args, state(start), None, model=model)
    cb.on_train_begin(args, state(start), None, model=model, optimizer=opt, lr_scheduler=sched)
    lrs = []
    for step in range(start + 1, start + steps + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        model.w.grad = grad_fn(step)
        opt.step()
        sched.step()
        mon.on_step_end(args, state(step), None, model=model)
        cb.on_step_end(args, state(step), None, model=model, optimizer=opt, lr_scheduler=sched)
        if reward_fn is not None:
            cb.on_log(args, state(step), None, logs={"reward": reward_fn(step)})
        if step in save_at:
            mon.on_save(args, state(step), None)
            cb.on_save(args, state(step), None)
    return model, opt, sched, mon, cb, lrs


def test_a_straight_path_raises_the_lr_x2_per_decision_up_to_the_cap(tmp_path):
    g = torch.linspace(-1, 1, 400)
    _, opt, sched, mon, cb, lrs = _drive(lambda s: g, 24, tmp_path, every=4, max_multiplier=4.0)
    # decisions at 4, 8, ...: the first needs 3 rows in the segment (steps 2, 3, 4); each change restarts it
    assert [d["decision"] for d in cb.decisions][:2] == ["raise", "raise"]
    assert cb.multiplier == 4.0 and all(d["multiplier"] <= 4.0 for d in cb.decisions)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4) and sched.base_lrs == pytest.approx([0.4])
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.4)
    logged = [json.loads(x) for x in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [d["step"] for d in logged] == [d["step"] for d in cb.decisions]
    assert logged[0]["lr"] == pytest.approx(0.2) and logged[0]["headroom"]["multiplier"] >= 2
    events = [(r["step"], r["event"]) for r in mon.rows if "event" in r]
    assert events == [(4, "lr_change"), (8, "lr_change")]
    rows = [r for r in mon.rows if "event" not in r]
    assert rows[-1]["lr_multiplier"] == 4.0 and "lr_headroom" in rows[-1]


def test_a_random_walk_cuts_the_lr_to_the_floor(tmp_path):
    gen = torch.Generator().manual_seed(0)
    _, opt, _, _, cb, _ = _drive(lambda s: torch.randn(400, generator=gen), 40, tmp_path, every=4,
                                 min_multiplier=0.25)
    assert cb.decisions[0]["decision"] == "cut" and cb.multiplier == 0.25
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)


def test_a_falling_reward_cuts_even_on_a_straight_path(tmp_path):
    g = torch.linspace(-1, 1, 400)
    _, _, _, _, cb, _ = _drive(lambda s: g, 12, tmp_path, every=4, reward_fn=lambda s: 0.9 if s <= 4 else 0.2)
    assert [d["decision"] for d in cb.decisions][:2] == ["raise", "cut"]
    assert cb.decisions[1]["reward"]["fell"] and cb.decisions[1]["headroom"]["multiplier"] >= 2


def test_lr_auto_state_resumes_exactly(tmp_path):
    g = torch.linspace(-1, 1, 400)
    grad = lambda s: g * (1 + 0.3 * math.sin(s))  # noqa: E731
    full = _drive(grad, 16, tmp_path / "a", every=4, save_at=(8,))
    # a new process resumes from checkpoint-8: weights, optimizer and scheduler as saved there
    part = _drive(grad, 8, tmp_path / "b", every=4, save_at=(8,))
    model, opt, sched = part[0], part[1], part[2]
    mon = LinearityMonitor(1, sample=1.0, window=8)
    resumed = AdaptiveLR(mon, every=4)
    sched.base_lrs = [0.1]  # a scheduler state without the multiplier: the callback's own state restores it
    out = _drive(grad, 8, tmp_path / "b", start=8, model=model, opt=opt, sched=sched, mon=mon, cb=resumed)
    assert out[4].multiplier == full[4].multiplier
    assert [d["decision"] for d in out[4].decisions] == [d["decision"] for d in full[4].decisions]
    torch.testing.assert_close(out[0].w.detach(), full[0].w.detach())
    logged = [json.loads(x)["step"] for x in (tmp_path / "b" / LOG_FILE).read_text().splitlines()]
    assert logged == [d["step"] for d in full[4].decisions]
    st = json.loads((tmp_path / "b" / "checkpoint-8" / STATE_FILE).read_text())
    with pytest.raises(RLExtraError, match="saved with --lr-auto-every 4"):
        AdaptiveLR(LinearityMonitor(1, sample=1.0), every=6).on_train_begin(
            SimpleNamespace(output_dir=str(tmp_path / "b")), SimpleNamespace(global_step=8), None, optimizer=opt,
            lr_scheduler=sched)
    assert st["multiplier"] == full[4].decisions[1]["multiplier"]


def test_config_refuses_what_cannot_compose():
    ok = dict(model="m", output_dir="o")
    with pytest.raises(RLExtraError, match="--lr-auto with --rl-extra"):
        TrainConfig(**ok, lr_auto=True, rl_extra=(20, 20))
    with pytest.raises(RLExtraError, match="--lr-auto with --optimizer prodigy"):
        TrainConfig(**ok, lr_auto=True, optimizer="prodigy", learning_rate=1.0)
    with pytest.raises(RLExtraError, match="pass --lr 1.0"):
        TrainConfig(**ok, optimizer="prodigy")
    for bad, match in ((dict(lr_auto_max=0.5), "--lr-auto-max"), (dict(lr_auto_min=2.0), "--lr-auto-min"),
                       (dict(lr_auto_every=1), "--lr-auto-every"), (dict(lr_auto_max=float("inf")), "--lr-auto-max")):
        with pytest.raises(RLExtraError, match=match):
            TrainConfig(**ok, lr_auto=True, **bad)
    assert TrainConfig(**ok, lr_auto=True).monitor_period() == 2
    # options of a feature that is off are refused, not silently ignored
    for quiet, match in ((dict(lr_auto_max=4.0), "--lr-auto-max 4: has no effect without --lr-auto"),
                         (dict(rl_extra_auto_threshold=0.5), "without --rl-extra-auto"),
                         (dict(monitor_sample=0.01), "--monitor-sample 0.01: has no effect without --monitor-every"),
                         (dict(monitor_window=4), "--monitor-window"), (dict(monitor_seed=3), "--monitor-seed")):
        with pytest.raises(RLExtraError, match=match):
            TrainConfig(**ok, **quiet)
    TrainConfig(**ok, lr_auto=True, lr_auto_max=4.0, monitor_sample=0.01, monitor_window=4, monitor_seed=3)
    with pytest.raises(RLExtraError, match="needs a LinearityMonitor"):
        AdaptiveLR(None)


SPEC = TaskSpec(**TINY_SPEC_FIELDS)  # the spec of conftest's tiny model


@pytest.mark.slow
def test_grpo_with_lr_auto_logs_each_lr_and_resumes(tiny, tmp_path):
    from rlextra.rl import train

    cfg = TrainConfig(model=str(tiny), output_dir=str(tmp_path / "run"), task=SPEC, max_steps=8, save_every=4,
                      learning_rate=1e-3, warmup_steps=2, prompts_per_step=4, num_generations=4,
                      max_completion_length=3, eval_problems=0, progress=False, lr_auto=True, lr_auto_every=2,
                      monitor_every=1, monitor_sample=1.0)
    run = train(cfg)
    decisions = [json.loads(x) for x in (run / LOG_FILE).read_text().splitlines()]
    assert decisions and all(d["step"] % 2 == 0 and d["step"] >= 4 for d in decisions)
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["learning_rate"] is None  # checkpoint-0: no step ran
    # the lr the step before each checkpoint ran at: the multiplier decided before it, times the base lr
    for m in metrics[1:]:
        last = max((d for d in decisions if d["step"] < m["step"]), key=lambda d: d["step"], default=None)
        assert m["learning_rate"] == pytest.approx(1e-3 * (last["multiplier"] if last else 1.0), rel=1e-9)
    events = [json.loads(x) for x in (run / "linearity.jsonl").read_text().splitlines() if '"event"' in x]
    assert events[0]["step"] == 2 and events[0]["event"] == "lr_warmup_end"
    cfg.max_steps = 10
    train(cfg)
    again = [json.loads(x) for x in (run / LOG_FILE).read_text().splitlines()]
    assert again[:len(decisions)] == decisions and again[-1]["step"] == 10
    train(cfg)  # a finished run: nothing trains (the Trainer would have run and saved step 11)
    assert [json.loads(x) for x in (run / LOG_FILE).read_text().splitlines()] == again
    assert not (run / "checkpoint-11").exists()
    (run / "checkpoint-10" / "trainer_state.json").write_text("{")
    with pytest.raises(RLExtraError, match="checkpoint-10/trainer_state.json: not a Trainer state"):
        train(cfg)


@pytest.mark.slow
def test_grpo_with_prodigy_trains_and_records_its_lr(tiny, tmp_path):
    from rlextra.rl import train

    cfg = TrainConfig(model=str(tiny), output_dir=str(tmp_path / "run"), task=SPEC, max_steps=2, save_every=2,
                      learning_rate=1.0, prompts_per_step=4, num_generations=4, max_completion_length=3,
                      eval_problems=0, progress=False, optimizer="prodigy")
    run = train(cfg)
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["learning_rate"] == 1.0
    from safetensors.torch import load_file

    a = load_file(str(run / "checkpoint-0" / "model.safetensors"))
    b = load_file(str(run / "checkpoint-2" / "model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # Prodigy moved the weights
    opt = torch.load(run / "checkpoint-2" / "optimizer.pt", weights_only=True)
    assert "d" in opt["param_groups"][0]  # Prodigy's own step estimate, saved for a resume


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_every_rank_steps_with_rank_0s_decision(tmp_path, mode):
    from test_rl_extra import _torchrun

    # CPU and gloo explicitly, so the test behaves the same on a machine with a CUDA GPU
    _torchrun("ddp_lr_auto_worker.py", tmp_path, mode, ACCELERATE_USE_CPU="true")
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert ranks[0]["multipliers"] == ranks[1]["multipliers"] == [2.0, 4.0, 8.0]
    assert ranks[0]["lr"] == ranks[1]["lr"] == pytest.approx(8e-3)
    assert ranks[0]["params_sha"] == ranks[1]["params_sha"]
    logged = [json.loads(x) for x in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [d["step"] for d in logged] == [4, 8, 12]  # rank 0 writes; each decision needs 3 rows of its segment


def test_passed_through_trl_fields_are_checked_in_one_line():
    from rlextra.rl.grpo import grpo_config

    def build(**extra):
        return grpo_config(TrainConfig(model="m", output_dir="/tmp/rlextra-unused", extra=extra))

    with pytest.raises(RLExtraError, match=r"--grpo-arg epsilon=-1.0: must be a number > 0"):
        build(epsilon=-1.0)
    with pytest.raises(RLExtraError, match="--grpo-arg num_iterations=0: must be a number >= 1"):
        build(num_iterations=0)
    from transformers.integrations import get_available_reporting_integrations

    if "tensorboard" not in get_available_reporting_integrations():
        with pytest.raises(RLExtraError, match="report_to=tensorboard: that integration's package is not installed"):
            build(report_to="tensorboard")
    assert build(epsilon=0.3, num_iterations=2, report_to="none").epsilon == 0.3
