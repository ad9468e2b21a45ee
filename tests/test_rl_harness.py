"""GRPO through TRL into a checkpoint series, evaluation, and the CLI around them (tiny models)."""

import json

import pytest

from rlextra.analysis.probes import load_checkpoint
from rlextra.checkpoints import load_series, read_values
from rlextra.cli import main
from rlextra.decoding import SamplingConfig
from rlextra.evaluation import evaluate, generations_path
from rlextra.rl.models import build_tiny_model
from rlextra.evaluation import heldout_accuracy
from rlextra.rl import TrainConfig, train
from rlextra.tasks import TaskSpec, load_task

SPEC = TaskSpec("arithmetic", ops="+", digits=1, n_train=60, n_test=20, seed=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder, acc = build_tiny_model(tmp_path_factory.mktemp("m") / "tiny", SPEC, warmup_steps=30, progress=False)
    # the accuracy reported is the saved model's: recomputed greedily from the folder
    again = evaluate(folder, SPEC, None, sampling=SamplingConfig(k=1, temperature=0, max_new_tokens=SPEC.digits * 2 + 2),
                     progress=False)
    assert again["metrics"]["avg@1"] == acc
    assert json.loads((folder / "rlextra_model.json").read_text())["warmup_steps"] == 30
    return folder


@pytest.mark.slow
def test_grpo_run_is_a_loadable_series_and_resumes(tiny, tmp_path):
    cfg = TrainConfig(model=str(tiny), output_dir=str(tmp_path / "run"), task=SPEC, max_steps=4, save_every=2,
                      learning_rate=1e-4, prompts_per_step=4, num_generations=4, max_completion_length=3,
                      eval_problems=10, progress=False)
    run = train(cfg)
    series = load_series(run)
    assert series.steps == [0, 2, 4]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 4]
    # each line is about the checkpoint saved at its step: held-out accuracy recomputed from the
    # folder, mean reward recomputed from the trainer's own log history
    task = load_task(SPEC)
    for r in rows:
        model, tok = load_checkpoint(run / f"checkpoint-{r['step']}")
        assert heldout_accuracy(model, tok, task, 10, 3) == r["heldout_accuracy"]
    history = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    for prev, r in zip(rows, rows[1:]):
        logged = [h["reward"] for h in history if "reward" in h and prev["step"] < h["step"] <= r["step"]]
        assert len(logged) == 2 and r["mean_reward"] == pytest.approx(sum(logged) / 2, abs=1e-12)
    assert rows[0]["mean_reward"] is None
    # weights moved, and the series is analysable
    a, b = (series.checkpoints[i].tensors["model.layers.0.mlp.up_proj.weight"] for i in (0, 2))
    assert (read_values(a, 0, a.numel) != read_values(b, 0, b.numel)).any()
    before = (run / "checkpoint-4" / "model.safetensors").stat().st_mtime_ns
    cfg.max_steps = 6
    train(cfg)  # resumes from checkpoint-4
    assert load_series(run).steps == [0, 2, 4, 6]
    assert (run / "checkpoint-4" / "model.safetensors").stat().st_mtime_ns == before
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 4, 6]
    state = json.loads((run / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6


def test_eval_writes_summary_and_generations(tiny, tmp_path):
    out = tmp_path / "e.json"
    s = evaluate(tiny, SPEC, out, sampling=SamplingConfig(k=3, temperature=0.6, max_new_tokens=3), progress=False)
    assert s["metrics"]["n_problems"] == 20 and s["metrics"]["k"] == 3
    lines = [json.loads(x) for x in generations_path(out).read_text().splitlines()]
    assert len(lines) == 60
    assert sum(x["correct"] for x in lines) == round(s["metrics"]["avg@3"] * 60)
    # pass@3 with 3 samples: the fraction of problems with at least one correct sample
    per_problem = [s_["n_correct"] for s_ in s["per_problem"]]
    assert per_problem == [sum(x["correct"] for x in lines[3 * i:3 * i + 3]) for i in range(20)]
    assert s["metrics"]["pass@3"] == pytest.approx(sum(c > 0 for c in per_problem) / 20)
    assert json.loads(out.read_text())["metrics"] == s["metrics"]
    greedy = evaluate(tiny, SPEC, None, sampling=SamplingConfig(k=1, temperature=0, max_new_tokens=3), progress=False)
    greedy2 = evaluate(tiny, SPEC, None, sampling=SamplingConfig(k=1, temperature=0, max_new_tokens=3), progress=False)
    assert greedy["metrics"] == greedy2["metrics"]


def test_eval_cli(tiny, tmp_path, capsys):
    rc = main(["eval", str(tiny), "--task", "arithmetic", "--digits", "1", "--n-train", "60", "--n-test", "20",
               "--k", "2", "--max-new-tokens", "3", "-o", str(tmp_path / "r.json"), "-q"])
    assert rc == 0
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["task"]["digits"] == 1 and summary["metrics"]["k"] == 2 and summary["metrics"]["n_problems"] == 20
    assert f"avg@2 {summary['metrics']['avg@2']:.4f}" in capsys.readouterr().out  # the printed figure is the file's


def test_cli_errors_are_one_line(tiny, tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--task", "arithmetic", "-o", str(tmp_path / "e.json"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a model folder" in err
    (tmp_path / "m").mkdir()
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        (tmp_path / "m" / f).write_bytes((tiny / f).read_bytes())
    assert main(["eval", str(tmp_path / "m"), "--task", "arithmetic", "-o", str(tmp_path / "e.json"), "-q"]) == 2
    assert "cannot load a tokenizer" in capsys.readouterr().err
    assert main(["train", "--model", str(tiny), "-o", str(tmp_path / "r"), "--grpo-arg", "nonsense_field=1",
                 "--steps", "1", "-q"]) == 2
    assert "GRPOConfig" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["train", "--model", str(tiny), "-o", str(tmp_path / "r"), "--rl-extra", "3", "-q"]) == 2
    assert "--rl-extra expects M,N" in capsys.readouterr().err
