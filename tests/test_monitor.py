"""The linearity monitor (in-flight R^2 and backtest) and adaptive RL-Extra."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlextra.analysis.weights import analyze_weights
from rlextra.errors import RLExtraError
from rlextra.extrapolate.inflight import finalize_window, pick_window, window_sums
from rlextra.rl.models import char_tokenizer, tiny_llama
from rlextra.rl.config import AUTO_THRESHOLD
from rlextra.rl.monitor import LOG_FILE, WINDOW_STATE, LinearityMonitor
from rlextra.rl.rl_extra import AutoJump, RLExtraCallback
from rlextra.tasks import TaskSpec
from conftest import TINY_SPEC_FIELDS

torch.set_num_threads(1)


def _state(step):
    return SimpleNamespace(global_step=step, is_world_process_zero=True)


def _small_model(seed=0):
    return tiny_llama(char_tokenizer(), hidden=32, layers=2, intermediate=64, seed=seed)


def test_pick_window_takes_the_longest_span_at_exact_alpha():
    steps = [0, 2, 4, 6, 8, 10, 12, 14]
    assert pick_window(steps, 2.0, "two-point") == (1, 4)  # T - b = 12 = 2 (s - b): b=2, s=8
    assert pick_window(steps, 6.0, "two-point") == (1, 2)  # 14 - 2 = 12 = 6 (4 - 2)
    assert pick_window(steps, 1.25, "two-point") == (2, 6)  # 14 - 4 = 10 = 1.25 * 8
    assert pick_window(steps, 6.0, "lsq") is None  # lsq needs 3 snapshots from b to s: s - b >= 2 intervals
    assert pick_window([0, 1, 2], 3.0, "two-point") is None


def test_window_backtest_is_the_backtest_formula_on_the_sample():
    rng = np.random.default_rng(0)
    steps = [0, 1, 2, 3, 4]
    base, drift = rng.normal(size=20), rng.normal(size=20)
    curve = rng.normal(size=20)
    ys = [base + t * drift + 0.1 * t * t * curve for t in steps]
    sums = window_sums(steps, {"model.layers.0.mlp.up_proj.weight": ys}, alphas=(2.0,), methods=("two-point", "lsq"))
    row = finalize_window(4, steps, sums, alphas=(2.0,), methods=("two-point", "lsq"))
    # two-point at alpha 2 over the longest span: b=0, s=2 -> T=4
    pred = ys[0] + 2.0 * (ys[2] - ys[0])
    want = np.linalg.norm(pred - ys[4]) / np.linalg.norm(ys[4] - ys[2])
    e = row["backtest"]["two-point"]
    assert (e["alpha"], e["weight_error"]) == (2.0, pytest.approx(want, rel=1e-12))
    # lsq reads snapshots 0..2 and its line at 4
    t = np.array([0.0, 1.0, 2.0])
    slope = [np.polyfit(t, [y[i] for y in ys[:3]], 1) for i in range(20)]
    pred_lsq = np.array([p[0] * 4 + p[1] for p in slope])
    want_lsq = np.linalg.norm(pred_lsq - ys[4]) / np.linalg.norm(ys[4] - ys[2])
    assert row["backtest"]["lsq"]["weight_error"] == pytest.approx(want_lsq, rel=1e-9)
    assert row["per_module"]["mlp"]["mean_r2"] == pytest.approx(row["mean_r2"])
    # a straight path is predicted exactly
    lin = [base + t * drift for t in steps]
    exact = finalize_window(4, steps, window_sums(steps, {"w": lin}, alphas=(2.0,)), alphas=(2.0,))
    assert exact["backtest"]["two-point"]["weight_error"] < 1e-9 and exact["mean_r2"] == pytest.approx(1.0)


def _drive(model, monitor, steps, tmp_path, save_at=(), move=None, rng=None):
    """Fake optimizer steps: move the weights (a curved path plus noise) and fire the callbacks."""
    args = SimpleNamespace(output_dir=str(tmp_path))
    gen = torch.Generator().manual_seed(1)
    dirs = {k: torch.randn(v.shape, generator=gen) for k, v in model.named_parameters()}
    for step in steps:
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.add_(1e-3 * dirs[k] * (1 + 0.2 * step) + 3e-4 * torch.randn(p.shape, generator=gen))
        monitor.on_step_end(args, _state(step), None, model=model)
        if step in save_at:
            model.save_pretrained(tmp_path / f"checkpoint-{step}")
            monitor.on_save(args, _state(step), None)


def test_window_r2_equals_analyze_weights_on_the_same_sample_and_steps(tmp_path):
    model = _small_model()
    model.save_pretrained(tmp_path / "checkpoint-0")
    mon = LinearityMonitor(2, sample=0.05, seed=3, window=5)
    mon.on_train_begin(SimpleNamespace(output_dir=str(tmp_path)), _state(0), None, model=model)
    _drive(model, mon, range(1, 9), tmp_path, save_at=(2, 4, 6, 8))
    row = mon.rows[-1]
    assert row["window_steps"] == [0, 2, 4, 6, 8]
    rep = analyze_weights(tmp_path, sample=0.05, seed=3, plots=False, progress=False)
    assert rep["steps"] == [0, 2, 4, 6, 8]
    assert row["n_analyzed"] == rep["n_params_analyzed"]
    assert row["mean_r2"] == pytest.approx(rep["global"]["mean_r2"], rel=1e-12)
    assert row["frac_r2_above_0.7"] == rep["global"]["frac_r2_above_0.7"]
    logged = [json.loads(x) for x in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in logged] == [4, 6, 8]  # from the third snapshot on


def test_window_survives_a_resume(tmp_path):
    model = _small_model()
    args = SimpleNamespace(output_dir=str(tmp_path))
    mon = LinearityMonitor(1, sample=0.02, window=4)
    mon.on_train_begin(args, _state(0), None, model=model)
    _drive(model, mon, range(1, 6), tmp_path, save_at=(3,))
    # the run stops after step 5; a new process resumes from checkpoint-3 and replays steps 4, 5
    rows_at_3 = [r for r in mon.rows if r["step"] <= 3]
    resumed = LinearityMonitor(1, sample=0.02, window=4)
    resumed.on_train_begin(args, _state(3), None, model=model)
    assert [s for s, _ in resumed.snapshots] == [0, 1, 2, 3]
    assert resumed.rows == json.loads(json.dumps(rows_at_3))
    on_disk = [json.loads(x) for x in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in on_disk] == [2, 3]  # rows past the checkpoint are dropped, then replayed
    assert json.loads((tmp_path / "checkpoint-3" / WINDOW_STATE).read_text())["snapshot_steps"] == [0, 1, 2, 3]
    with pytest.raises(RLExtraError, match="saved with monitor every 1"):
        LinearityMonitor(2, sample=0.02, window=4).on_train_begin(args, _state(3), None, model=model)


class _Vec(torch.nn.Module):
    def __init__(self, n=200):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(n))


def _auto_run(grad_fn, m, n, cycles, threshold=AUTO_THRESHOLD):
    """SGD on a toy vector with a given gradient per step, under auto RL-Extra; returns (model, callback, path)."""
    model = _Vec()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = LinearityMonitor(1, sample=1.0, window=8)
    cb = RLExtraCallback(m, n, auto=AutoJump(mon, threshold))
    args = SimpleNamespace(output_dir=None)
    import tempfile

    tmp = tempfile.mkdtemp()
    args.output_dir = tmp
    mon.on_train_begin(args, _state(0), None, model=model)
    cb.on_train_begin(args, _state(0), None, model=model)
    path = [model.w.detach().clone()]
    for step in range(1, m * cycles + 1):
        opt.zero_grad()
        model.w.grad = grad_fn(step)
        opt.step()
        mon.on_step_end(args, _state(step), None, model=model)
        cb.on_step_end(args, _state(step), None, model=model, optimizer=opt)
        path.append(model.w.detach().clone())
    return model, cb, path


def test_auto_takes_the_largest_jump_on_a_straight_path_and_lands_where_real_steps_would():
    g = torch.linspace(-1, 1, 200)
    model, cb, _ = _auto_run(lambda step: g, m=8, n=40, cycles=2)
    chosen = [j["n"] for j in cb.jumps]
    assert chosen == [40, 40]  # the ladder's top (5m = 40): every in-flight error is ~0
    assert all(j["auto"]["weight_error"]["40"] < 1e-6 for j in cb.jumps)
    # 16 real SGD steps and two jumps of 40: the weights of 96 real steps of the constant gradient
    torch.testing.assert_close(model.w.detach(), -0.1 * 96 * g, rtol=1e-5, atol=1e-5)
    assert cb.extra_steps == 80 and cb.monitor.segment == 2


def test_auto_never_jumps_on_a_random_walk():
    gen = torch.Generator().manual_seed(0)
    model, cb, path = _auto_run(lambda step: torch.randn(200, generator=gen), m=8, n=40, cycles=4)
    assert [j["decision"] for j in cb.jumps] == ["no jump (auto)"] * 4
    assert cb.extra_steps == 0
    assert all(min(v for v in j["auto"]["weight_error"].values() if v is not None) > AUTO_THRESHOLD
               for j in cb.jumps)


def test_auto_evidence_is_capped_by_n_and_needs_a_monitor():
    mon = LinearityMonitor(1, sample=1.0)
    auto = AutoJump(mon, 0.5)
    assert auto.candidates(20, 20) == [20, 10, 5]
    assert auto.candidates(20, 100) == [100, 40, 20, 10, 5]
    assert auto.candidates(3, 100) == [15, 6, 3, 1]  # m/4 rounds down to 0 and is dropped
    RLExtraCallback(20, 20, auto=auto)
    assert {1.25, 1.5, 2.0} <= set(mon.alphas)  # the monitor now measures every horizon on the ladder
    with pytest.raises(RLExtraError, match="no low-rank"):
        RLExtraCallback(20, 20, method="low-rank", snapshots=3, auto=AutoJump(mon))
    with pytest.raises(RLExtraError, match="threshold"):
        AutoJump(mon, threshold=float("nan"))
    for bad in (dict(every=0), dict(window=2), dict(sample=0.0), dict(seed=-1), dict(alphas=(1.0,))):
        with pytest.raises(RLExtraError):
            LinearityMonitor(**{"every": 1, **bad})


def test_jumps_and_rollbacks_are_marked_in_the_series(tmp_path):
    model = _Vec()
    args = SimpleNamespace(output_dir=str(tmp_path))
    mon = LinearityMonitor(1, sample=1.0, window=8)
    from rlextra.rl.rl_extra import SafeMode

    scores = iter([1.0, 0.0, 1.0, 1.0])  # first jump loses (rolled back), second is accepted
    cb = RLExtraCallback(2, 4, optimizer="keep", safe=SafeMode(lambda m: next(scores), tolerance=0.1), monitor=mon)
    mon.on_train_begin(args, _state(0), None, model=model)
    cb.on_train_begin(args, _state(0), None, model=model)
    for step in range(1, 5):
        with torch.no_grad():
            model.w.add_(1.0)
        mon.on_step_end(args, _state(step), None, model=model)
        cb.on_step_end(args, _state(step), None, model=model, optimizer=None)
    events = [(r["step"], r["event"]) for r in mon.rows if "event" in r]
    assert events == [(2, "rollback"), (4, "jump")]
    assert [s for s, _ in mon.snapshots] == [4] and mon.segment == 1
    # the snapshot after the jump holds the jumped weights (4 real + 2 extrapolated steps of +1)
    assert float(mon.snapshots[0][1]["w"][0]) == pytest.approx(6.0)
    assert math.isclose(cb.n, 2)  # halved by the rollback


SPEC = TaskSpec(**TINY_SPEC_FIELDS)  # the spec of conftest's tiny model


@pytest.mark.slow
def test_grpo_run_logs_the_monitor_equal_to_analyze_weights_and_resumes_it(tiny, tmp_path):
    from transformers import TrainerCallback

    from rlextra.rl import TrainConfig, train

    seen = []

    class Recorder(TrainerCallback):  # stands for TensorBoard / W&B: runs after rlextra's callbacks
        def on_log(self, args, state, control, logs=None, **kw):
            seen.append(dict(logs or {}))

    cfg = TrainConfig(model=str(tiny), output_dir=str(tmp_path / "run"), task=SPEC, max_steps=4, save_every=1,
                      learning_rate=1e-3, prompts_per_step=4, num_generations=4, max_completion_length=3,
                      eval_problems=0, progress=False, monitor_every=1, monitor_sample=1.0)
    run = train(cfg, callbacks=[Recorder()])
    rows = [json.loads(x) for x in (run / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3, 4]
    rep = analyze_weights(run, sample=1.0, plots=False, progress=False)
    assert rep["steps"] == [0, 1, 2, 3, 4] == rows[-1]["window_steps"]
    assert rows[-1]["mean_r2"] == pytest.approx(rep["global"]["mean_r2"], rel=1e-12)
    assert rows[-1]["n_analyzed"] == rep["n_params_analyzed"]
    logged = [x for x in seen if "linearity/mean_r2" in x]
    assert [x["linearity/mean_r2"] for x in logged] == pytest.approx([r["mean_r2"] for r in rows])
    assert all("backtest/two-point/weight_error" in x for x in logged[1:])
    cfg.max_steps = 6
    train(cfg)  # resumes from checkpoint-4 with the window it saved
    rows = [json.loads(x) for x in (run / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3, 4, 5, 6]
    assert rows[-1]["window_steps"] == [0, 1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_grpo_with_auto_rl_extra_records_each_decision_with_its_evidence(tiny, tmp_path):
    from rlextra.rl import TrainConfig, train

    cfg = TrainConfig(model=str(tiny), output_dir=str(tmp_path / "run"), task=SPEC, max_steps=8, save_every=4,
                      learning_rate=1e-3, prompts_per_step=4, num_generations=4, max_completion_length=3,
                      eval_problems=0, progress=False, rl_extra=(4, 4), rl_extra_auto=True,
                      rl_extra_auto_threshold=1e6, monitor_sample=1.0)
    assert cfg.monitor_period() == 1  # max(1, M // 10)
    run = train(cfg)
    decisions = [json.loads(x) for x in (run / "rl_extra.jsonl").read_text().splitlines()]
    assert [d["real_step"] for d in decisions] == [4, 8]
    # with a threshold nothing fails, the largest measured n is taken: the ladder's 4 (alpha 2)
    assert [d["n"] for d in decisions] == [4, 4] and all(d["auto"]["chosen_n"] == 4 for d in decisions)
    assert all(set(d["auto"]["weight_error"]) == {"4", "2", "1"} for d in decisions)
    events = [json.loads(x) for x in (run / LOG_FILE).read_text().splitlines() if '"event"' in x]
    assert [(e["step"], e["event"]) for e in events] == [(4, "jump"), (8, "jump")]
    with pytest.raises(RLExtraError, match="needs --rl-extra"):
        TrainConfig(model="m", output_dir="o", rl_extra_auto=True)


def test_attach_puts_the_monitor_first():
    trainer = SimpleNamespace(callback_handler=SimpleNamespace(callbacks=["printer", "tensorboard"]))
    mon = LinearityMonitor(5).attach(trainer)
    assert trainer.callback_handler.callbacks == [mon, "printer", "tensorboard"]
    mon._pending = {"linearity/mean_r2": 0.5}
    logs = {"loss": 1.0}
    mon.on_log(None, None, None, logs=logs)
    assert logs == {"loss": 1.0, "linearity/mean_r2": 0.5} and mon._pending == {}


def test_nonfinite_entries_are_counted_and_void_the_backtest():
    steps = [0, 1, 2, 3, 4]
    ys = [np.arange(6, dtype=float) + t for t in steps]
    ys[3] = ys[3].copy()
    ys[3][2] = np.nan
    row = finalize_window(4, steps, window_sums(steps, {"w": ys}, alphas=(2.0,)), alphas=(2.0,))
    assert row["n_nonfinite"] == 1 and row["n_analyzed"] == 5 and row["mean_r2"] == pytest.approx(1.0)
    assert row["backtest"]["two-point"]["weight_error"] is None


def test_a_monitor_given_in_callbacks_reaches_the_reporting_integrations(tmp_path):
    """Passed the usual TRL way, after a reporting integration, the monitor moves itself first, so the
    integration logs its values (without it, TensorBoard and W&B never saw them)."""
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    seen = []

    class Reporter(TrainerCallback):  # stands for TensorBoard / W&B
        def on_log(self, args, state, control, logs=None, **kw):
            seen.append(dict(logs or {}))

    Reporter.__module__ = "transformers.integrations.stand_in"
    tok = char_tokenizer()

    class Toy(Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            ids = torch.tensor(tok(f"{i % 10}+1=")["input_ids"][:4])
            return {"input_ids": ids, "labels": ids}

    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-3,
                             use_cpu=True, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True)
    mon = LinearityMonitor(1, sample=0.2, window=4)
    trainer = Trainer(model=_small_model(), args=args, train_dataset=Toy(), callbacks=[Reporter(), mon])
    trainer.train()
    assert trainer.callback_handler.callbacks[0] is mon
    assert any("linearity/mean_r2" in x for x in seen)
