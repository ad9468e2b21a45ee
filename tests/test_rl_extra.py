import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlextra.errors import RLExtraError
from rlextra.rl.models import build_tiny_model, char_tokenizer, tiny_llama
from rlextra.rl.rl_extra import ANCHOR_FILE, STATE_FILE, RLExtraCallback
from rlextra.rl.train import TrainConfig, train
from rlextra.tasks import TaskSpec

NORM = "model.layers.0.input_layernorm.weight"
MAT = "model.layers.0.mlp.up_proj.weight"


def _state(step):
    return SimpleNamespace(global_step=step, is_world_process_zero=True)


def test_jump_is_the_two_point_formula_and_spares_norms(tmp_path):
    tok = char_tokenizer()
    model = tiny_llama(tok, hidden=32, layers=2, intermediate=64)
    args = SimpleNamespace(output_dir=str(tmp_path))
    cb = RLExtraCallback(m=4, n=6)
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
    assert cb.cycle_start == 4 and opt.state  # optimizer state kept by default
    torch.testing.assert_close(cb.anchor[MAT], p[MAT].detach())
    cb2 = RLExtraCallback(m=1, n=1, reset_optimizer=True, exclude=r"lm_head")
    cb2.on_train_begin(args, _state(0), None, model=model)
    head = p["lm_head.weight"].detach().clone()
    with torch.no_grad():
        p["lm_head.weight"].add_(1.0)
    cb2.on_step_end(args, _state(1), None, model=model, optimizer=opt)
    torch.testing.assert_close(p["lm_head.weight"], head + 1.0)  # excluded from the jump
    assert not opt.state


SPEC = TaskSpec("arithmetic", ops="+", digits=1, n_train=60, n_test=20, seed=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("m") / "tiny", SPEC, warmup_steps=30, progress=False)[0]


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


def test_ddp_two_processes_apply_the_same_jumps(tmp_path):
    worker = Path(__file__).with_name("ddp_rl_extra_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(worker.parent)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "29517", str(worker), str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert all(x["world_size"] == 2 for x in ranks)
    assert ranks[0]["params_sha"] == ranks[1]["params_sha"]
    assert ranks[0]["jump_steps"] == ranks[1]["jump_steps"] == [2, 4, 6]


def test_zero_length_jumps_leave_grpo_unchanged(tiny, tmp_path):
    """RL-Extra with n = 0 must reproduce plain GRPO exactly: the callback touches nothing else."""
    from safetensors.torch import load_file

    def run(name, rl_extra):
        cfg = TrainConfig(model=str(tiny), output_dir=str(tmp_path / name), task=SPEC, max_steps=4, save_every=4,
                          learning_rate=1e-3, prompts_per_step=4, num_generations=4, max_completion_length=3,
                          eval_problems=0, progress=False, rl_extra=rl_extra)
        return load_file(str(train(cfg) / "checkpoint-4" / "model.safetensors"))

    plain, extra = run("plain", None), run("extra", (2, 0))
    base = load_file(str(tiny / "model.safetensors"))
    assert any(not torch.equal(plain[k], base[k]) for k in plain)  # training moved the weights
    for k in plain:
        torch.testing.assert_close(extra[k], plain[k], rtol=0, atol=0)
