"""Backtest on planted series: the methods' weight errors and the recommendation."""

import json

import numpy as np
import pytest
import torch

from conftest import assert_plot, planted_series, write_ckpt
from rlextra.cli import main
from rlextra.errors import RLExtraError
from rlextra.extrapolate.backtest import backtest, merge_backtests, module_type, plan_windows, recommend

STEPS = [0, 10, 20, 30, 40, 50]
ATTN, MLP = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight"
EMB = "model.embed_tokens.weight"
NORM, BIAS = "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.q_proj.bias"
SHAPES = {ATTN: (24, 16), MLP: (32, 16), EMB: (40, 16)}


def _write_run(root, values):
    """values[name]: array (K, *shape) over STEPS; one trainer checkpoint per step."""
    for k, s in enumerate(STEPS):
        write_ckpt(root / f"checkpoint-{s}", {n: v[k] for n, v in values.items()})
    return root


def _rank1_drift(noise, seed=0):
    """Each matrix moves along one fixed rank-1 direction, linearly in the step, plus iid noise."""
    rng = np.random.default_rng(seed)
    t = np.asarray(STEPS, dtype=float).reshape(-1, 1, 1)
    out = {}
    for name, (m, n) in SHAPES.items():
        w0 = rng.normal(0, 0.02, (m, n))
        direction = np.outer(rng.normal(size=m), rng.normal(size=n)) / np.sqrt(m * n)
        out[name] = w0 + 2e-4 * t * direction + rng.normal(0, noise, (len(STEPS), m, n))
    lines = planted_series(STEPS, {BIAS: (24,)}, noise=0.0, seed=seed + 1)
    out[BIAS] = lines[BIAS]
    out[NORM] = 1.0 + 1e-4 * np.asarray(STEPS, dtype=float).reshape(-1, 1) * np.ones((1, 16))
    return out


def _by(rows, method):
    return {(r["b"], r["s"], r["target"]): r for r in rows if r["method"] == method}


def test_rank1_drift_with_noise_rank1_beats_two_point(tmp_path):
    run = _write_run(tmp_path / "run", _rank1_drift(noise=2e-4))
    res = backtest(run, tmp_path / "bt", progress=False)
    low_rank, two = _by(res["rows"], "low-rank"), _by(res["rows"], "two-point")
    common = sorted(set(low_rank) & set(two))  # windows starting at step 0: same (b, s, T)
    assert len(common) == len(low_rank) == 10
    ratios = [low_rank[c]["weight_error"] / two[c]["weight_error"] for c in common]
    assert max(ratios) < 1.0 and np.median(ratios) < 0.7, ratios
    assert all(r["weight_error"] < 1 for r in low_rank.values())
    assert res["recommendation"]["low-rank"]["max_safe_alpha"] == max(r["alpha"] for r in low_rank.values())
    # per module: attention/mlp/embeddings all measured; norms are copied from s, error exactly 1
    r = next(iter(low_rank.values()))
    assert set(r["per_module"]) == {"attention", "mlp", "embeddings", "norms"}
    assert r["per_module"]["norms"] == pytest.approx(1.0)


def test_pure_linear_drift_every_method_is_far_below_one(tmp_path):
    vals = _rank1_drift(noise=0.0)
    run = _write_run(tmp_path / "run", vals)
    res = backtest(run, tmp_path / "bt", norms="extrapolate", progress=False)
    assert {r["method"] for r in res["rows"]} == {"two-point", "lsq", "low-rank"}
    worst = {m: max(r["weight_error"] for r in res["rows"] if r["method"] == m)
             for m in ("two-point", "lsq", "low-rank")}
    assert all(w < 0.02 for w in worst.values()), worst
    assert all(v["verdict"].startswith("safe up to alpha") for v in res["recommendation"].values())


def test_full_rank_linear_drift_rank1_only_removes_its_directions(tmp_path):
    """rlextra's low-rank keeps the residual at s: on a full-rank drift it helps, but far less than lsq."""
    vals = planted_series(STEPS, SHAPES, noise=0.0)
    res = backtest(_write_run(tmp_path / "run", vals), tmp_path / "bt", methods=["lsq", "low-rank"],
                   progress=False)
    lsq = [r["weight_error"] for r in res["rows"] if r["method"] == "lsq"]
    low_rank = [r["weight_error"] for r in res["rows"] if r["method"] == "low-rank"]
    assert max(lsq) < 0.01 and 0.5 < min(low_rank) and max(low_rank) < 1.0


def test_random_walk_is_not_safe(tmp_path):
    rng = np.random.default_rng(5)
    vals = {n: np.cumsum(rng.normal(0, 1e-3, (len(STEPS),) + s), axis=0) for n, s in SHAPES.items()}
    res = backtest(_write_run(tmp_path / "run", vals), tmp_path / "bt", progress=False)
    errors = [r["weight_error"] for r in res["rows"]]
    assert min(errors) >= 1.0, min(errors)
    assert {v["verdict"] for v in res["recommendation"].values()} == {"not safe"}
    assert all(v["max_safe_alpha"] is None for v in res["recommendation"].values())


def test_outputs_cli_and_nothing_written_into_the_run(tmp_path, capsys):
    run = _write_run(tmp_path / "run", _rank1_drift(noise=1e-4))
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    out = tmp_path / "bt"
    assert main(["backtest", str(run), "-o", str(out), "--methods", "two-point,low-rank", "--pairs", "first",
                 "--rank", "2", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "low-rank" in printed and "alpha" in printed
    res = json.loads((out / "backtest.json").read_text())
    assert {r["method"] for r in res["rows"]} == {"two-point", "low-rank"}
    assert all(r["b"] == 0 for r in res["rows"]) and res["options"]["rank"] == 2
    row = res["rows"][0]
    assert set(row) >= {"method", "b", "s", "target", "alpha", "window", "weight_error", "per_module"}
    assert row["alpha"] == (row["target"] - row["b"]) / (row["s"] - row["b"])
    csv_lines = (out / "backtest.csv").read_text().splitlines()
    assert csv_lines[0].startswith("method,b,s,target,alpha,window,weight_error")
    assert len(csv_lines) == len(res["rows"]) + 1
    assert_plot(out / "weight_error.png")
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert main(["backtest", str(run), "-o", str(run / "bt")]) == 2  # refuses to write into the run
    assert "into or over input" in capsys.readouterr().err
    assert not (run / "bt").exists()


def test_errors_and_grid():
    assert [w.idx for w in plan_windows(4, ["two-point"])] == [(0, 1), (0, 2), (1, 2)]
    assert [w.idx for w in plan_windows(4, ["lsq", "low-rank"])] == [(0, 1, 2), (0, 1), (0, 1, 2)]
    assert plan_windows(3, ["lsq"]) == []
    assert [module_type(n) for n in (ATTN, MLP, EMB, NORM, "lm_head.weight", "model.layers.0.mlp.down_proj.weight",
                                     "transformer.h.0.attn.c_attn.weight", "score.weight")] == \
        ["attention", "mlp", "embeddings", "norms", "embeddings", "mlp", "attention", "other"]
    rows = [{"method": "lsq", "alpha": a, "weight_error": e}
            for a, e in ((1.5, 0.4), (2.0, 0.9), (3.0, 1.2), (4.0, 0.5))]
    assert recommend(rows)["lsq"]["max_safe_alpha"] == 2.0 and recommend(rows)["lsq"]["max_safe_n_over_m"] == 1.0


def test_too_few_checkpoints_and_bad_methods(tmp_path):
    for s in (0, 10):
        write_ckpt(tmp_path / "run" / f"checkpoint-{s}", {"w": np.ones((2, 2)) * s})
    with pytest.raises(RLExtraError, match="at least 3 checkpoints"):
        backtest(tmp_path / "run", tmp_path / "bt", progress=False)
    with pytest.raises(RLExtraError, match="unknown method 'svd'"):
        backtest(tmp_path / "run", tmp_path / "bt", methods=["svd"], progress=False)
    assert not (tmp_path / "bt").exists()


def test_accuracy_rows_through_the_cli(tmp_path, capsys):
    """A tiny Llama drifting exactly linearly: the two-point prediction of step 20 is the real step
    20 (greedy, same sampler), so their accuracies agree; logits extrapolation is its own row."""
    import torch

    from rlextra.rl.models import char_tokenizer, save_model, tiny_llama

    tok = char_tokenizer()
    model = tiny_llama(tok, hidden=32, layers=1, intermediate=64, seed=0)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(1)
    slope = {n: 2e-3 * torch.randn(p.shape, generator=g) for n, p in base.items()}
    for s in (0, 10, 20):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(base[n] + s * slope[n])
        save_model(model, tok, tmp_path / "run" / f"checkpoint-{s}")
    out = tmp_path / "bt"
    assert main(["backtest", str(tmp_path / "run"), "-o", str(out), "--methods", "two-point,low-rank",
                 "--task", "arithmetic", "--digits", "1", "--n-train", "10", "--n-test", "6", "--k", "1",
                 "--temperature", "0", "--max-new-tokens", "3", "--norms", "extrapolate", "-q"]) == 0
    res = json.loads((out / "backtest.json").read_text())
    assert res["real_accuracy"]["metric"] == "avg@1" and set(res["real_accuracy"]["by_step"]) == {"0", "10", "20"}
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"two-point", "low-rank", "logits"}
    assert rows["logits"]["weight_error"] is None and rows["logits"]["target"] == 20
    assert rows["two-point"]["weight_error"] < 1e-3
    real_20 = res["real_accuracy"]["by_step"]["20"]
    assert rows["two-point"]["accuracy"] == real_20 == rows["two-point"]["accuracy_real_target"]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows.values())
    assert_plot(out / "accuracy.png")
    assert "logits" in capsys.readouterr().out


def test_backtest_scores_with_the_same_decoder_as_eval(tmp_path, capsys):
    """One sampler for every score: a backtest's real-checkpoint accuracy is what `rlextra eval
    --backend rlextra` gives on that checkpoint with the same sampling and seed (sampled, T=0.6)."""
    from rlextra.rl.models import char_tokenizer, save_model, tiny_llama

    tok = char_tokenizer()
    for s in (0, 10, 20):
        save_model(tiny_llama(tok, hidden=32, layers=1, intermediate=64, seed=s), tok, tmp_path / "run" / f"checkpoint-{s}")
    sampling = ["--task", "arithmetic", "--digits", "1", "--n-train", "10", "--n-test", "8", "--k", "4",
                "--temperature", "0.6", "--max-new-tokens", "3", "--seed", "3"]
    assert main(["backtest", str(tmp_path / "run"), "-o", str(tmp_path / "bt"), "--methods", "two-point",
                 *sampling, "-q"]) == 0
    res = json.loads((tmp_path / "bt" / "backtest.json").read_text())
    assert res["backend"] == "rlextra"
    for s in (0, 10):
        assert main(["eval", str(tmp_path / "run" / f"checkpoint-{s}"), *sampling, "--backend", "rlextra", "-q",
                     "-o", str(tmp_path / f"e{s}.json")]) == 0
        summary = json.loads((tmp_path / f"e{s}.json").read_text())
        assert res["real_accuracy"]["by_step"][str(s)] == summary["metrics"]["avg@4"]
    # the generations differ between the two checkpoints (random models), so the equality is not trivial
    gens = [[json.loads(x)["completion"] for x in (tmp_path / f"e{s}.generations.jsonl").read_text().splitlines()]
            for s in (0, 10)]
    assert gens[0] != gens[1]


def test_streamed_rows_equal_a_direct_computation(tmp_path):
    """Two-point and lsq stream chunk by chunk (a chunk of 7 elements here, so every tensor spans many
    chunks and ends mid-chunk); their rows equal the errors computed directly, whole tensors in
    float64, and low-rank (read whole) is the same whatever the chunk size."""
    steps = [0, 10, 20, 30, 40]
    shapes = {"model.layers.0.mlp.up_proj.weight": (9, 13), "model.layers.0.self_attn.q_proj.weight": (8, 8),
              "model.norm.weight": (8,)}
    vals = planted_series(steps, shapes, noise=3e-3)
    for k, s in enumerate(steps):
        write_ckpt(tmp_path / "run" / f"checkpoint-{s}", {n: v[k] for n, v in vals.items()})
    small = backtest(tmp_path / "run", tmp_path / "a", methods=("two-point", "lsq", "low-rank"), plots=False,
                     progress=False, chunk_size=7)
    big = backtest(tmp_path / "run", tmp_path / "b", methods=("two-point", "lsq", "low-rank"), plots=False,
                   progress=False, chunk_size=1 << 20)
    f32 = {n: v.astype(np.float32).astype(np.float64) for n, v in vals.items()}  # what the files hold
    moving = [n for n in shapes if "norm" not in n]  # norms are copied from s, as the paper does
    checked = 0
    for r_small, r_big in zip(small["rows"], big["rows"]):
        assert (r_small["method"], r_small["window"], r_small["target"]) == (r_big["method"], r_big["window"],
                                                                           r_big["target"])
        assert r_small["weight_error"] == pytest.approx(r_big["weight_error"], rel=1e-9)
        if r_small["method"] == "low-rank":
            continue
        idx = [steps.index(s) for s in r_small["window"]]
        t = steps.index(r_small["target"])
        num = den = 0.0
        for n in shapes:
            y = f32[n]
            if n in moving:
                x = np.asarray([steps[i] for i in idx], dtype=np.float64)
                if r_small["method"] == "two-point":
                    b, s_ = idx[0], idx[-1]
                    pred = y[b] + (steps[t] - steps[b]) / (steps[s_] - steps[b]) * (y[s_] - y[b])
                else:
                    slope, icpt = np.polyfit(x, y[idx].reshape(len(idx), -1), 1)
                    pred = (icpt + slope * steps[t]).reshape(y[t].shape)
            else:
                pred = y[idx[-1]]
            num += float(((pred - y[t]) ** 2).sum())
            den += float(((y[t] - y[idx[-1]]) ** 2).sum())
        assert r_small["weight_error"] == pytest.approx(np.sqrt(num / den), rel=1e-5)  # fp32 arithmetic
        checked += 1
    assert checked >= 6


def test_device_runs_every_method_there(tmp_path):
    """--device moves the streamed arithmetic too; on CPU it gives the rows of the default, and on a
    machine with CUDA the same rows within fp32 rounding."""
    import torch

    steps = [0, 10, 20, 30]
    vals = planted_series(steps, {"model.layers.0.mlp.up_proj.weight": (16, 8)}, noise=2e-3)
    for k, s in enumerate(steps):
        write_ckpt(tmp_path / "run" / f"checkpoint-{s}", {n: v[k] for n, v in vals.items()})
    base = backtest(tmp_path / "run", tmp_path / "a", methods=("two-point", "lsq"), plots=False, progress=False)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for i, dev in enumerate(devices):
        got = backtest(tmp_path / "run", tmp_path / f"d{i}", methods=("two-point", "lsq"), plots=False,
                       progress=False, device=dev)
        assert [r["weight_error"] for r in got["rows"]] == pytest.approx([r["weight_error"] for r in base["rows"]],
                                                                           rel=1e-5)


def test_shards_in_two_processes_merge_into_the_single_run(tmp_path):
    """backtest --shard i/N in two processes at once, then backtest-merge: the rows of one run (sums
    added in another order: equal to 1e-12), the same recommendation; a relabelled or missing shard
    is refused."""
    import json as _json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    steps = [0, 10, 20, 30, 40]
    shapes = {"model.layers.0.mlp.up_proj.weight": (24, 16), "model.layers.0.self_attn.q_proj.weight": (16, 16),
              "model.embed_tokens.weight": (40, 16), "model.norm.weight": (16,)}
    vals = planted_series(steps, shapes, noise=2e-3)
    for k, s in enumerate(steps):
        write_ckpt(tmp_path / "run" / f"checkpoint-{s}", {n: v[k] for n, v in vals.items()})
    single = backtest(tmp_path / "run", tmp_path / "one", methods=("two-point", "lsq", "low-rank"), plots=False,
                      progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-m", "rlextra.cli", "backtest", str(tmp_path / "run"), "--methods",
                               "two-point,lsq,low-rank", "--shard", f"{i}/2", "-o", str(tmp_path / f"s{i}"), "-q",
                               "--no-plots"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    shard_tensors = [set(_json.loads((tmp_path / f"s{i}" / "backtest.json").read_text())["shard"]["tensors"])
                     for i in range(2)]
    assert shard_tensors[0] and shard_tensors[1] and not shard_tensors[0] & shard_tensors[1]
    assert main(["backtest-merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "-o", str(tmp_path / "m"),
                 "--no-plots"]) == 0
    merged = _json.loads((tmp_path / "m" / "backtest.json").read_text())
    assert len(merged["rows"]) == len(single["rows"])
    for a, b in zip(merged["rows"], single["rows"]):
        assert (a["method"], a["window"], a["target"]) == (b["method"], b["window"], b["target"])
        assert a["weight_error"] == pytest.approx(b["weight_error"], rel=1e-12)
        assert a["per_module"] == pytest.approx(b["per_module"], rel=1e-12)
    assert merged["recommendation"] == single["recommendation"]
    shutil.copytree(tmp_path / "s0", tmp_path / "relabel")
    rep = _json.loads((tmp_path / "relabel" / "backtest.json").read_text())
    rep["shard"]["index"] = 1
    (tmp_path / "relabel" / "backtest.json").write_text(_json.dumps(rep))
    assert main(["backtest-merge", str(tmp_path / "s0"), str(tmp_path / "relabel"), "-o", str(tmp_path / "x")]) == 2
    assert main(["backtest-merge", str(tmp_path / "s0"), "-o", str(tmp_path / "y")]) == 2
    for name, value in (("negative", -1.0), ("nan", float("nan"))):  # not sums of squares: refused by file
        shutil.copytree(tmp_path / "s1", tmp_path / name)
        rep = _json.loads((tmp_path / name / "backtest.json").read_text())
        rep["rows"][0]["sums"]["num"]["mlp"] = value
        (tmp_path / name / "backtest.json").write_text(_json.dumps(rep))
        with pytest.raises(RLExtraError, match=f"{name}/backtest.json: row .*sums.num.mlp is"):
            merge_backtests([tmp_path / "s0", tmp_path / name], tmp_path / f"out-{name}")
    with pytest.raises(RLExtraError, match="accuracy rows need the whole model"):
        backtest(tmp_path / "run", tmp_path / "z", shard="0/2", task="arithmetic", progress=False)


@pytest.mark.parametrize("norms,dtype,chunk", [("copy", "bfloat16", 16), ("extrapolate", "bfloat16", 16),
                                               ("copy", "bfloat16", 600), ("copy", "float32", 600)])
def test_the_compiled_pass_gives_the_torch_rows(tmp_path, monkeypatch, norms, dtype, chunk):
    """The compiled float64 pass (every row a fixed combination of checkpoints) against the torch
    path (fp32 predictions): the same rows within fp32 rounding, per module too; a NaN still names
    its file. bf16 reaches the pass as its bits; chunks of 600 run it over several tiles, the last
    one partial."""
    from rlextra import fused

    if not fused.AVAILABLE:
        pytest.skip("numba is not installed: only the torch path runs here")
    steps = [0, 10, 25, 30, 45, 60]
    shapes = {"model.layers.0.mlp.up_proj.weight": (40, 33), "model.layers.0.self_attn.q_proj.weight": (8, 8),
              "model.norm.weight": (8,), "model.embed_tokens.weight": (11, 8)}
    assert 600 % fused.TILE and 40 * 33 > 2 * 600
    vals = planted_series(steps, shapes, noise=3e-3)
    for k, s in enumerate(steps):
        write_ckpt(tmp_path / "run" / f"checkpoint-{s}", {n: v[k] for n, v in vals.items()}, dtype=getattr(torch, dtype))
    opts = dict(methods=("two-point", "lsq"), norms=norms, plots=False, progress=False, chunk_size=chunk)
    compiled = backtest(tmp_path / "run", tmp_path / "c", **opts)
    monkeypatch.setattr(fused, "AVAILABLE", False)
    plain = backtest(tmp_path / "run", tmp_path / "p", **opts)
    assert len(compiled["rows"]) == len(plain["rows"]) > 20
    for a, b in zip(plain["rows"], compiled["rows"]):
        assert (a["method"], a["window"], a["target"]) == (b["method"], b["window"], b["target"])
        assert b["weight_error"] == pytest.approx(a["weight_error"], rel=1e-5)
        assert b["per_module"] == pytest.approx(a["per_module"], rel=1e-5)
    verdicts = lambda res: {m: {k: r[k] for k in ("max_safe_alpha", "verdict", "rows")}  # noqa: E731
                            for m, r in res["recommendation"].items()}
    assert verdicts(compiled) == verdicts(plain)
    monkeypatch.setattr(fused, "AVAILABLE", True)
    bad = vals["model.norm.weight"][2].copy()
    bad[3] = np.nan
    write_ckpt(tmp_path / "run" / "checkpoint-25", {**{n: v[2] for n, v in vals.items()}, "model.norm.weight": bad},
               dtype=getattr(torch, dtype))
    with pytest.raises(RLExtraError, match=r"checkpoint-25/model.safetensors: tensor 'model.norm.weight' \(step 25\)"):
        backtest(tmp_path / "run", tmp_path / "n", **opts)
