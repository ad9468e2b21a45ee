import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlextra.errors import RLExtraError
from rlextra.rl.models import build_tiny_model, char_tokenizer, tiny_llama
from rlextra.rl.rl_extra import ANCHOR_FILE, STATE_FILE, RLExtraCallback
from rlextra.rl import TrainConfig, train
from rlextra.tasks import TaskSpec
from conftest import TINY_SPEC_FIELDS

NORM = "model.layers.0.input_layernorm.weight"
MAT = "model.layers.0.mlp.up_proj.weight"


def _state(step):
    return SimpleNamespace(global_step=step, is_world_process_zero=True)


def test_jump_is_the_two_point_formula_and_spares_norms(tmp_path):
    tok = char_tokenizer()
    model = tiny_llama(tok, hidden=32, layers=2, intermediate=64)
    args = SimpleNamespace(output_dir=str(tmp_path))
    cb = RLExtraCallback(m=4, n=6, optimizer="keep")
    cb.on_train_begin(args, _state(0), None, model=model)
    w0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    delta = {k: 0.01 * torch.randn_like(v) for k, v in w0.items()}
    opt = torch.optim.AdamW(model.parameters())
    opt.state[next(model.parameters())] = {"step": torch.tensor(3.0)}
    for step in (1, 2, 3, 4):  # "optimizer steps" move every weight by delta/4
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.add_(delta[k] / 4)
        cb.on_step_end(args, _state(step), None, model=model, optimizer=opt)
    p = dict(model.named_parameters())
    torch.testing.assert_close(p[MAT], w0[MAT] + delta[MAT] + (6 / 4) * delta[MAT])
    torch.testing.assert_close(p[NORM], w0[NORM] + delta[NORM])  # norms copied, not jumped
    assert len(cb.jumps) == 1 and cb.jumps[0]["real_step"] == 4 and cb.jumps[0]["effective_step"] == 10
    assert cb.cycle_start == 4 and opt.state  # optimizer state kept on request
    torch.testing.assert_close(cb.anchor[MAT], p[MAT].detach())
    cb2 = RLExtraCallback(m=1, n=1, exclude=r"lm_head")  # the default: the paper's reset
    cb2.on_train_begin(args, _state(0), None, model=model)
    head = p["lm_head.weight"].detach().clone()
    with torch.no_grad():
        p["lm_head.weight"].add_(1.0)
    cb2.on_step_end(args, _state(1), None, model=model, optimizer=opt)
    torch.testing.assert_close(p["lm_head.weight"], head + 1.0)  # excluded from the jump
    assert not opt.state


def test_m_comma_zero_is_the_reset_only_control(tmp_path):
    """(m, 0) with the reset policy restarts the optimizer every m steps and moves no weight: the
    control that separates the jump's effect from the restart's; with keep it does nothing."""
    tok = char_tokenizer()
    model = tiny_llama(tok, hidden=32, layers=2, intermediate=64)
    for policy, cleared in (("reset", True), ("keep", False)):
        (tmp_path / policy).mkdir()
        args = SimpleNamespace(output_dir=str(tmp_path / policy))  # one run folder each
        cb = RLExtraCallback(m=2, n=0, optimizer=policy)
        cb.on_train_begin(args, _state(0), None, model=model)
        opt = torch.optim.AdamW(model.parameters())
        opt.state[next(model.parameters())] = {"step": torch.tensor(3.0)}
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        for step in (1, 2):
            cb.on_step_end(args, _state(step), None, model=model, optimizer=opt)
        assert (not opt.state) == cleared and cb.extra_steps == 0
        for k, v in model.named_parameters():
            torch.testing.assert_close(v, before[k])  # no jump
    logged = [json.loads(x) for x in (tmp_path / "reset" / "rl_extra.jsonl").read_text().splitlines()]
    assert [(r["real_step"], r["n"], r["decision"]) for r in logged] == [(2, 0, "optimizer reset only")]
    assert not (tmp_path / "keep" / "rl_extra.jsonl").exists()


SPEC = TaskSpec(**TINY_SPEC_FIELDS)  # the spec of conftest's tiny model


@pytest.mark.slow
def test_grpo_with_rl_extra_logs_saves_and_resumes_the_schedule(tiny, tmp_path):
    cfg = TrainConfig(model=str(tiny), output_dir=str(tmp_path / "run"), task=SPEC, max_steps=4, save_every=2,
                      learning_rate=1e-4, prompts_per_step=4, num_generations=4, max_completion_length=3,
                      eval_problems=5, progress=False, rl_extra=(3, 3))
    run = train(cfg)
    jumps = [json.loads(x) for x in (run / "rl_extra.jsonl").read_text().splitlines()]
    assert [(j["real_step"], j["effective_step"]) for j in jumps] == [(3, 6)]
    st = json.loads((run / "checkpoint-4" / STATE_FILE).read_text())
    assert st["cycle_start"] == 3 and st["extra_steps"] == 3
    assert (run / "checkpoint-4" / ANCHOR_FILE).is_file()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["effective_step"]) for r in rows] == [(0, 0), (2, 2), (4, 7)]
    cfg.max_steps = 7
    train(cfg)  # resumes at step 4 inside the cycle that started at 3: next jump at 6
    jumps = [json.loads(x) for x in (run / "rl_extra.jsonl").read_text().splitlines()]
    assert [(j["real_step"], j["effective_step"]) for j in jumps] == [(3, 6), (6, 12)]
    with pytest.raises(RLExtraError, match="m=3, n=3"):
        cfg.rl_extra = (2, 2)
        cfg.max_steps = 8
        train(cfg)
    # refused before anything was written: run.json still records the settings the run has
    assert json.loads((run / "run.json").read_text())["config"]["rl_extra"] == [3, 3]


def _free_port() -> int:
    """A port nothing listens on now, so concurrent test runs on one machine do not collide."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(worker_name: str, tmp_path: Path, *args: str, nproc: int = 2, **env_extra: str) -> None:
    """Run a test worker on ``nproc`` CPU processes (gloo); on failure, show each rank's own stderr
    (torchrun's summary only says which rank died and with which signal)."""
    worker = Path(__file__).with_name(worker_name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **env_extra,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(worker.parent), os.environ.get("PYTHONPATH")]))}
    logs = tmp_path / "torchrun-logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(_free_port()),
           "--log-dir", str(logs), "--redirects", "3", str(worker), str(tmp_path), *args]
    # its own session, so a timeout kills the ranks too (killing torchrun alone left a hung rank running)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          start_new_session=True) as p:
        try:
            _, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate()
            err = "timed out after 300 s\n" + err
    if p.returncode != 0:
        ranks = "\n".join(f"--- {f.relative_to(logs)}\n{f.read_text()[-3000:]}"
                          for f in sorted(logs.rglob("stderr.log")))
        pytest.fail(f"torchrun exited {p.returncode}\n{err[-1500:]}\n{ranks}")


@pytest.mark.slow
def test_ddp_two_processes_apply_the_same_jumps(tmp_path):
    # CPU and gloo explicitly, so the test behaves the same on a machine with a CUDA GPU
    _torchrun("ddp_rl_extra_worker.py", tmp_path, ACCELERATE_USE_CPU="true")
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert all(x["world_size"] == 2 for x in ranks)
    assert ranks[0]["params_sha"] == ranks[1]["params_sha"]
    assert ranks[0]["jump_steps"] == ranks[1]["jump_steps"] == [2, 4, 6]
    # the monitor: every rank samples the same entries of the same weights; rank 0 alone logs
    assert ranks[0]["monitor_sha"] == ranks[1]["monitor_sha"]
    logged = [json.loads(x) for x in (tmp_path / "linearity.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "event" not in r] == ranks[0]["monitor_steps"] == [2, 4, 6]
    assert [r["step"] for r in logged if r.get("event") == "jump"] == [2, 4, 6]


@pytest.mark.slow
def test_zero_length_jumps_leave_grpo_unchanged(tiny, tmp_path):
    """RL-Extra with n = 0 and the optimizer kept must reproduce plain GRPO exactly: the callback
    touches nothing else. With the reset policy, (m, 0) is the control run: same data, the optimizer
    restarted at step 2, so the weights differ."""
    from safetensors.torch import load_file

    def run(name, rl_extra, optimizer="reset"):
        cfg = TrainConfig(model=str(tiny), output_dir=str(tmp_path / name), task=SPEC, max_steps=4, save_every=4,
                          learning_rate=1e-3, prompts_per_step=4, num_generations=4, max_completion_length=3,
                          eval_problems=0, progress=False, rl_extra=rl_extra, rl_extra_optimizer=optimizer)
        return load_file(str(train(cfg) / "checkpoint-4" / "model.safetensors"))

    plain, extra = run("plain", None), run("extra", (2, 0), optimizer="keep")
    base = load_file(str(tiny / "model.safetensors"))
    assert any(not torch.equal(plain[k], base[k]) for k in plain)  # training moved the weights
    for k in plain:
        torch.testing.assert_close(extra[k], plain[k], rtol=0, atol=0)
    control = run("control", (2, 0))
    assert any(not torch.equal(control[k], plain[k]) for k in plain)
    assert json.loads((tmp_path / "control" / "rl_extra.jsonl").read_text().splitlines()[0])["decision"] == \
        "optimizer reset only"


def _drive(cb, model, args, steps, delta, opt=None):
    """Pretend optimizer steps: each moves every weight by delta[name], then the callback runs."""
    for step in steps:
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.add_(delta[k])
        cb.on_step_end(args, _state(step), None, model=model, optimizer=opt)


@pytest.mark.parametrize("method", ["lsq", "low-rank"])
def test_snapshot_jumps_follow_a_linear_drift(tmp_path, method):
    """On exactly linear (and, for low-rank, rank-1) motion every jump method lands on the line."""
    tok = char_tokenizer()
    model = tiny_llama(tok, hidden=32, layers=2, intermediate=64)
    args = SimpleNamespace(output_dir=str(tmp_path))
    g = torch.Generator().manual_seed(0)
    delta = {}
    for k, v in model.named_parameters():
        if v.dim() == 2:
            delta[k] = 1e-3 * torch.outer(torch.randn(v.shape[0], generator=g), torch.randn(v.shape[1], generator=g))
        else:
            delta[k] = 1e-3 * torch.randn(v.shape, generator=g)
    cb = RLExtraCallback(m=4, n=8, method=method, snapshots=3)
    assert cb.snapshot_offsets() == [0, 2, 4]
    cb.on_train_begin(args, _state(0), None, model=model)
    w0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    _drive(cb, model, args, [1, 2, 3], delta)
    assert [s for s, _ in cb.snapshots] == [0, 2]  # anchor + the middle snapshot, CPU fp32
    _drive(cb, model, args, [4], delta)
    p = dict(model.named_parameters())
    torch.testing.assert_close(p[MAT], w0[MAT] + 12 * delta[MAT], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(p[NORM], w0[NORM] + 4 * delta[NORM])  # norms never jump by default
    assert cb.jumps[0]["method"] == method and cb.jumps[0]["effective_step"] == 12


def test_safe_mode_rolls_back_a_harmful_jump_and_halves_n(tmp_path):
    from rlextra.rl.rl_extra import SafeMode

    tok = char_tokenizer()
    model = tiny_llama(tok, hidden=32, layers=2, intermediate=64)
    args = SimpleNamespace(output_dir=str(tmp_path))
    delta = {k: 0.01 * torch.randn_like(v) for k, v in model.named_parameters()}
    w0 = {k: v.detach().clone() for k, v in model.named_parameters()}

    def scorer(m):  # reward falls with the distance of MAT from its start: any jump outward loses
        return -float((dict(m.named_parameters())[MAT].detach() - w0[MAT]).norm())

    opt = torch.optim.AdamW(model.parameters())
    opt.state[next(model.parameters())] = {"step": torch.tensor(3.0)}
    cb = RLExtraCallback(m=2, n=8, safe=SafeMode(scorer, tolerance=1e-9))
    cb.on_train_begin(args, _state(0), None, model=model)
    _drive(cb, model, args, [1, 2], delta, opt)
    p = dict(model.named_parameters())
    torch.testing.assert_close(p[MAT], w0[MAT] + 2 * delta[MAT])  # rolled back to the pre-jump weights
    assert cb.jumps[0]["decision"] == "rolled back" and cb.jumps[0]["next_n"] == 4 and cb.n == 4
    assert cb.extra_steps == 0 and cb.jumps[0]["effective_step"] == 2 and opt.state  # no reset on rollback
    log = [json.loads(x) for x in (tmp_path / "rl_extra.jsonl").read_text().splitlines()]
    assert log[0]["score_after"] < log[0]["score_before"]
    cb.safe = SafeMode(lambda m: 0.0)  # a flat reward: accepted
    _drive(cb, model, args, [3, 4], delta, opt)
    assert cb.jumps[1]["decision"] == "accepted" and cb.jumps[1]["n"] == 4 and cb.extra_steps == 4
    assert not opt.state  # the paper's reset after an accepted jump
    # the shrunk n and the snapshots survive a save and a resume
    cb.on_save(args, _state(4), None)
    cb2 = RLExtraCallback(m=2, n=8, safe=SafeMode(scorer))
    cb2.on_train_begin(args, _state(4), None, model=model)
    assert cb2.n == 4 and cb2.extra_steps == 4 and cb2.cycle_start == 4
    torch.testing.assert_close(cb2.anchor[MAT], cb.anchor[MAT])


def test_bad_rl_extra_options_are_one_line_errors():
    for kwargs, match in [(dict(m=0, n=1), "m >= 1"), (dict(m=2, n=2, optimizer="adam"), "reset"),
                          (dict(m=2, n=2, method="cubic"), "unknown"),
                          (dict(m=2, n=2, method="lsq", snapshots=2), "at least 3"),
                          (dict(m=2, n=2, method="lsq", snapshots=4), "2..m\\+1")]:
        with pytest.raises(RLExtraError, match=match):
            RLExtraCallback(**kwargs)


@pytest.mark.slow
def test_grpo_safe_mode_logs_every_decision(tiny, tmp_path):
    cfg = TrainConfig(model=str(tiny), output_dir=str(tmp_path / "run"), task=SPEC, max_steps=4, save_every=4,
                      learning_rate=1e-3, prompts_per_step=4, num_generations=4, max_completion_length=3,
                      eval_problems=0, progress=False, rl_extra=(2, 4), rl_extra_safe=True,
                      rl_extra_safe_prompts=8, rl_extra_safe_samples=2, rl_extra_method="lsq")
    run = train(cfg)
    jumps = [json.loads(x) for x in (run / "rl_extra.jsonl").read_text().splitlines()]
    assert [j["real_step"] for j in jumps] == [2, 4]
    for j in jumps:
        assert j["method"] == "lsq"
        # the decision follows from the scores and the tolerance, and n shrinks exactly when rolled back
        assert j["decision"] == ("accepted" if j["score_after"] >= j["score_before"] - 0.02 - 1e-12
                                 else "rolled back")
        assert j["next_n"] == (j["n"] if j["decision"] == "accepted" else j["n"] // 2)
        for score in (j["score_before"], j["score_after"]):  # a mean over 8 prompts x 2 samples of 0/1
            assert 0.0 <= score <= 1.0 and abs(score * 16 - round(score * 16)) < 1e-9
    with pytest.raises(RLExtraError, match="safe-prompts"):
        train(TrainConfig(model=str(tiny), output_dir=str(tmp_path / "bad"), task=SPEC, rl_extra=(2, 2),
                          rl_extra_safe=True, rl_extra_safe_prompts=60, progress=False))
    assert not (tmp_path / "bad").exists()  # refused before anything is written


@pytest.mark.slow
@pytest.mark.parametrize("method", ["two-point", "lsq", "low-rank"])
def test_fsdp2_two_processes_jump_their_local_shards(tmp_path, method):
    """FSDP2 (fully_shard) on CPU with gloo: the shard-wise jump equals the jump of the full tensors."""
    _torchrun("fsdp_rl_extra_worker.py", tmp_path, method)
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert ranks[0]["digest"] == ranks[1]["digest"]
    if method == "low-rank":  # needs whole matrices: refused on shards, nothing moved
        assert all("whole matrices" in x["errors"][0] and x["jumps"] == [] for x in ranks)
    else:
        assert all(x["errors"] == [] and x["jumps"] == [2, 4] for x in ranks)
    # the monitor on shards: rank 0 logs, after the all-reduce, what one process computes on the full tensors
    mon = ranks[0]["monitor"]
    assert mon["n_rows"] >= 1 and mon["steps"] == mon["ref_steps"]
    assert all(a == b for a, b in mon["n_analyzed"]) and max(mon["diffs"]) < 1e-9
    assert ranks[1]["monitor"]["n_rows"] == 0


@pytest.mark.slow
def test_replay_trains_every_cycle_on_grpos_first_batches(tiny, tmp_path, monkeypatch):
    """--rl-extra-replay (the paper's data order): every cycle of m steps sees the prompts of plain
    GRPO's first m steps, in the same order; without it the order runs on as in GRPO. keep_optimizer
    "last" leaves Adam's state in the newest checkpoint only, and a resume still works."""
    from rlextra.tasks import Task

    seen: list[list[str]] = []
    reward = Task.reward

    def recording(self, completions, answer, prompts=None, **kw):
        seen.append(list(dict.fromkeys(str(p) for p in prompts)))
        return reward(self, completions, answer, **kw)

    monkeypatch.setattr(Task, "reward", recording)

    def run(name, steps, **kw):
        seen.clear()
        cfg = TrainConfig(model=str(tiny), output_dir=str(tmp_path / name), task=SPEC, max_steps=steps, save_every=2,
                          learning_rate=1e-4, prompts_per_step=4, num_generations=4, max_completion_length=3,
                          eval_problems=0, progress=False, **kw)
        return cfg, train(cfg), [list(s) for s in seen]

    _, _, plain = run("plain", 6)
    cfg, out, replay = run("replay", 6, rl_extra=(2, 2), rl_extra_replay=True, keep_optimizer="last")
    assert len(plain) == len(replay) == 6 and all(len(p) == 4 for p in plain)
    assert plain[2:4] != plain[0:2]  # GRPO's order runs on
    assert replay[0:2] == replay[2:4] == replay[4:6] == plain[0:2]
    assert not (out / "checkpoint-2" / "optimizer.pt").exists() and not (out / "checkpoint-4" / "optimizer.pt").exists()
    assert (out / "checkpoint-6" / "optimizer.pt").is_file()
    assert not (out / "checkpoint-4" / ANCHOR_FILE).exists() and (out / "checkpoint-6" / ANCHOR_FILE).is_file()
    assert (out / "checkpoint-4" / "model.safetensors").is_file()
    seen.clear()
    cfg.max_steps = 8
    train(cfg)  # resumes from checkpoint-6's optimizer; the cycle of steps 7-8 replays again
    assert seen == plain[0:2]
    assert not (out / "checkpoint-6" / "optimizer.pt").exists() and (out / "checkpoint-8" / "optimizer.pt").is_file()
    assert not (out / "checkpoint-6" / ANCHOR_FILE).exists() and (out / "checkpoint-8" / ANCHOR_FILE).is_file()
    for f in ("optimizer.pt", "scheduler.pt"):  # an older checkpoint: Adam's state and the anchor both gone
        (out / "checkpoint-8" / f).rename(out / f)
    (out / "checkpoint-8").rename(out / "moved-8")
    cfg.max_steps, cfg.resume_without_optimizer = 10, True
    with pytest.raises(RLExtraError, match=r"checkpoint-6/rl_extra_anchor.safetensors: missing"):
        train(cfg)  # resumes from checkpoint-6 mid-cycle: its anchor went with --keep-optimizer last
    with pytest.raises(RLExtraError, match="--rl-extra-replay needs 400 training prompts"):
        train(TrainConfig(model=str(tiny), output_dir=str(tmp_path / "x"), task=SPEC, rl_extra=(100, 1),
                          rl_extra_replay=True, prompts_per_step=4, progress=False))
    with pytest.raises(RLExtraError, match="--rl-extra-replay needs --rl-extra"):
        TrainConfig(model=str(tiny), output_dir=str(tmp_path / "y"), rl_extra_replay=True)
    with pytest.raises(RLExtraError, match="use no warm-up"):
        TrainConfig(model=str(tiny), output_dir=str(tmp_path / "y"), rl_extra=(2, 2), rl_extra_replay=True,
                    rl_extra_warmup=2)


@pytest.mark.slow
def test_heldout_evaluation_leaves_the_training_stream_alone(tiny, tmp_path):
    """Held-out evaluation at each checkpoint (on by default) must not touch the trainer's random
    state: a run interrupted at step 2 and resumed ends on the uninterrupted run's weights, and the
    evaluation itself leaves torch's global generator where it was."""
    from safetensors.torch import load_file

    from rlextra.evaluation import heldout_accuracy
    from rlextra.hf import load_model
    from rlextra.tasks import load_task

    model, tok = load_model(tiny, device="cpu")
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    heldout_accuracy(model, tok, load_task(SPEC), 5, max_new_tokens=3)
    assert torch.equal(torch.random.get_rng_state(), before)

    def cfg(name, steps):
        return TrainConfig(model=str(tiny), output_dir=str(tmp_path / name), task=SPEC, max_steps=steps,
                           save_every=2, learning_rate=1e-3, prompts_per_step=4, num_generations=4,
                           max_completion_length=3, eval_problems=5, progress=False)

    whole = load_file(str(train(cfg("whole", 4)) / "checkpoint-4" / "model.safetensors"))
    train(cfg("parts", 2))
    parts = load_file(str(train(cfg("parts", 4)) / "checkpoint-4" / "model.safetensors"))
    for k in whole:
        torch.testing.assert_close(parts[k], whole[k], rtol=0, atol=0)
