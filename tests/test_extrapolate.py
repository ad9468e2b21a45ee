import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import numpy_r2, planted_series, write_ckpt
from rlextra import fused
from rlextra.errors import RLExtraError
from rlextra.extrapolate import extrapolate_weights, is_norm_weight

NORM = "model.layers.0.input_layernorm.weight"
MAT = "model.layers.0.mlp.up_proj.weight"


def _load(folder):
    return {k: v.double().numpy() for k, v in load_file(str(folder / "model.safetensors")).items()}


def test_two_point_matches_formula_and_copies_norms(series_dir, tmp_path):
    run, steps, vals = series_dir
    out = extrapolate_weights([run / "checkpoint-10", run / "checkpoint-30"], tmp_path / "x",
                              to_step=70, progress=False).path
    got = _load(out)
    alpha = (70 - 10) / (30 - 10)
    want = vals[MAT][1] + alpha * (vals[MAT][3] - vals[MAT][1])
    np.testing.assert_allclose(got[MAT], want, rtol=1e-6, atol=1e-9)  # fp32 arithmetic, as the paper
    np.testing.assert_array_equal(got[NORM], vals[NORM][3])  # copied from the newest
    prov = json.loads((out / "rlextra.json").read_text())
    assert prov["alpha"] == alpha and prov["steps"] == [10, 30] and prov["method"] == "two-point"
    assert prov["tensors"]["copied_norm"] == 1 and (out / "config.json").exists()


def test_alpha_and_norm_extrapolation(series_dir, tmp_path):
    run, steps, vals = series_dir
    out = extrapolate_weights([run / "checkpoint-0", run / "checkpoint-20"], tmp_path / "x",
                              alpha=2.5, norms="extrapolate", progress=False).path
    got = _load(out)
    want = vals[NORM][0] + 2.5 * (vals[NORM][2] - vals[NORM][0])
    np.testing.assert_allclose(got[NORM], want, rtol=1e-6)
    assert json.loads((out / "rlextra.json").read_text())["target_step"] == 50


def test_lsq_matches_polyfit_and_min_r2_gates(series_dir, tmp_path):
    run, steps, vals = series_dir
    out = extrapolate_weights(run, tmp_path / "lsq", to_step=100, fit="lsq", progress=False).path
    got = _load(out)
    y = vals[MAT].reshape(len(steps), -1)
    coef = np.polyfit(steps, y, 1)
    np.testing.assert_allclose(got[MAT].reshape(-1), coef[0] * 100 + coef[1], rtol=2e-6, atol=1e-8)
    gated = _load(extrapolate_weights(run, tmp_path / "g", to_step=100, min_r2=0.9, progress=False).path)
    r2 = numpy_r2(steps, y)
    low = r2 < 0.9
    assert 0 < low.sum() < low.size
    np.testing.assert_array_equal(gated[MAT].reshape(-1)[low], y[-1][low].astype(np.float32))
    np.testing.assert_array_equal(gated[MAT].reshape(-1)[~low], got[MAT].reshape(-1)[~low])


def test_bf16_kept_nonfloat_copied_and_sharded(tmp_path):
    steps = [0, 10]
    vals = planted_series(steps, {"a.weight": (64, 64), "b.weight": (64, 64)})
    for k, s in enumerate(steps):
        write_ckpt(tmp_path / "run" / f"step_{s}", {**{n: v[k] for n, v in vals.items()},
                                                    "pos_ids": torch.arange(5)}, dtype=torch.bfloat16)
    out = extrapolate_weights([tmp_path / "run" / "step_0", tmp_path / "run" / "step_10"], tmp_path / "x", to_step=20,
                              max_shard_size="10KB", chunk_size=1000, progress=False).path
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert all((out / f).stat().st_size < 10_000 + 1000 for f in shards)  # data + header
    merged = {}
    for f in shards:
        merged.update(load_file(str(out / f)))
    assert merged["a.weight"].dtype == torch.bfloat16
    torch.testing.assert_close(merged["pos_ids"], torch.arange(5))
    b0, b1 = (torch.tensor(vals["a.weight"][k]).bfloat16().double() for k in (0, 1))
    want = b0 + 2 * (b1 - b0)
    torch.testing.assert_close(merged["a.weight"].double(), want, rtol=2 ** -8, atol=1e-6)  # 1 bf16 ulp


def test_overflow_to_inf_is_an_error_and_nothing_is_written(tmp_path):
    write_ckpt(tmp_path / "run" / "step_0", {"w": np.zeros(4)}, dtype=torch.float16)
    write_ckpt(tmp_path / "run" / "step_1", {"w": np.full(4, 1000.0)}, dtype=torch.float16)
    with pytest.raises(RLExtraError, match="'w'.*NaN/Inf"):
        extrapolate_weights([tmp_path / "run" / "step_0", tmp_path / "run" / "step_1"], tmp_path / "x", alpha=100,
                            progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["step_0", "step_1"]


def test_option_errors(series_dir, tmp_path):
    run, _, _ = series_dir
    two = [run / "checkpoint-0", run / "checkpoint-10"]
    with pytest.raises(RLExtraError, match="exactly one"):
        extrapolate_weights(two, tmp_path / "x", progress=False)
    with pytest.raises(RLExtraError, match="lsq needs at least 3"):
        extrapolate_weights(two, tmp_path / "x", to_step=5, fit="lsq", progress=False)
    with pytest.raises(RLExtraError, match="exactly 2"):
        extrapolate_weights(run, tmp_path / "x", to_step=5, fit="two-point", progress=False)
    with pytest.raises(RLExtraError, match="min-r2 needs"):
        extrapolate_weights(two, tmp_path / "x", to_step=5, min_r2=0.5, progress=False)
    with pytest.raises(RLExtraError, match="at least 2"):
        extrapolate_weights(two[:1], tmp_path / "x", to_step=5, progress=False)
    with pytest.raises(RLExtraError, match="into or over input"):
        extrapolate_weights(two, run / "checkpoint-10", to_step=5, overwrite=True, progress=False)
    extrapolate_weights(two, tmp_path / "x", to_step=5, progress=False)
    with pytest.raises(RLExtraError, match="--overwrite"):
        extrapolate_weights(two, tmp_path / "x", to_step=5, progress=False)


def test_norm_names():
    for n in ("model.norm.weight", "model.layers.3.input_layernorm.weight", "transformer.ln_f.weight",
              "h.0.ln_1.bias", "model.layers.0.self_attn.q_norm.weight"):
        assert is_norm_weight(n), n
    for n in ("model.layers.0.mlp.up_proj.weight", "lm_head.weight", "model.layers.0.linear_fc1.weight"):
        assert not is_norm_weight(n), n


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_lerp_equals_the_fp32_path(dtype):
    """The two-point fast path relies on torch computing half-precision lerp in fp32."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(10_000, generator=g).to(dtype)
    b = (a.float() + 0.01 * torch.randn(10_000, generator=g)).to(dtype)
    for alpha in (0.5, 1.7, 3.0, -0.4):
        assert torch.equal(a.lerp(b, alpha), a.float().lerp(b.float(), alpha).to(dtype))


@pytest.mark.skipif(not fused.AVAILABLE, reason="numba not installed")
@pytest.mark.parametrize("dtypes", [("F32", "F32"), ("BF16", "BF16"), ("F16", "F16"), ("F64", "F64"),
                                    ("BF16", "F32"), ("F32", "BF16"), ("F64", "F32"), ("F16", "BF16")])
def test_extrapolate_without_torch_writes_the_bytes_of_the_torch_path(tmp_path, dtypes):
    """Two-point on the CPU runs compiled, without torch; --device cpu runs torch's lerp. Every
    dtype pair (the output takes the newest's) gives the same file bytes, chunk tails included."""
    names = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((37, 29))
    for t, (w, dt) in enumerate(((w0, dtypes[0]), (w0 + 1e-2 * rng.standard_normal(w0.shape), dtypes[1]))):
        write_ckpt(tmp_path / "run" / f"checkpoint-{10 * t}", {MAT: w, NORM: np.ones(29) + t / 10}, dtype=names[dt])
    pair = [str(tmp_path / "run" / "checkpoint-0"), str(tmp_path / "run" / "checkpoint-10")]
    for to_step in (3, 47):  # alpha 0.3 (the small-weight branch) and 4.7
        opts = dict(to_step=to_step, method="two-point", chunk_size=100, progress=False, allow_mixed_dtypes=True)
        extrapolate_weights(pair, tmp_path / f"numba-{to_step}", **opts)
        extrapolate_weights(pair, tmp_path / f"torch-{to_step}", device="cpu", **opts)
        assert (tmp_path / f"numba-{to_step}" / "model.safetensors").read_bytes() == \
            (tmp_path / f"torch-{to_step}" / "model.safetensors").read_bytes()


def test_nan_in_input_is_named(series_dir, tmp_path):
    run, steps, vals = series_dir
    bad = {n: v[1].copy() for n, v in vals.items()}
    bad[MAT][0, 0] = np.inf
    write_ckpt(run / "checkpoint-10", bad, trainer_step=10)
    with pytest.raises(RLExtraError, match=rf"checkpoint-10.*{MAT}.*NaN or Inf"):
        extrapolate_weights([run / "checkpoint-0", run / "checkpoint-10"], tmp_path / "x", alpha=2,
                            progress=False)
    with pytest.raises(RLExtraError, match=rf"checkpoint-10.*{MAT}.*NaN or Inf"):
        extrapolate_weights(run, tmp_path / "x", alpha=2, progress=False)
    assert not (tmp_path / "x").exists()


def _rank1_run(tmp_path, steps=(0, 10, 20, 30), dtype=torch.float32):
    """A run whose matrix drifts along one rank-1 direction, exactly linearly; a 1-D bias too."""
    g = torch.Generator().manual_seed(0)
    w0, bias0 = torch.randn(12, 8, generator=g) * 0.02, torch.randn(8, generator=g) * 0.02
    drift = torch.outer(torch.randn(12, generator=g), torch.randn(8, generator=g)) * 1e-3
    bias_slope = torch.randn(8, generator=g) * 1e-3
    for t in steps:
        write_ckpt(tmp_path / "run" / f"checkpoint-{t}", {MAT: w0 + t * drift, "model.layers.0.mlp.up_proj.bias":
                   bias0 + t * bias_slope, NORM: torch.ones(8) + t * 1e-3}, dtype=dtype)
    return tmp_path / "run", w0, drift, bias0, bias_slope


def test_rank1_cli_recovers_a_planted_rank1_line_and_records_method(tmp_path, capsys):
    from rlextra.cli import main

    run, w0, drift, bias0, bias_slope = _rank1_run(tmp_path)
    assert main(["extrapolate", str(run), "--method", "low-rank", "--rank", "1", "--to-step", "60",
                 "-o", str(tmp_path / "r1"), "-q"]) == 0
    assert "low-rank extrapolation" in capsys.readouterr().out
    got = _load(tmp_path / "r1")
    np.testing.assert_allclose(got[MAT], (w0 + 60 * drift).double().numpy(), atol=1e-6)
    np.testing.assert_allclose(got["model.layers.0.mlp.up_proj.bias"], (bias0 + 60 * bias_slope).double().numpy(),
                               atol=1e-6)
    np.testing.assert_array_equal(got[NORM], np.float32(1 + 30e-3))  # copied from the newest
    prov = json.loads((tmp_path / "r1" / "rlextra.json").read_text())
    assert prov["method"] == "low-rank" and prov["method_params"] == {"rank": 1}
    assert prov["target_step"] == 60 and "U_r" in prov["formula"]
    lsq = extrapolate_weights(run, tmp_path / "l", to_step=60, method="lsq", min_r2=0.5, progress=False)
    assert json.loads((lsq.path / "rlextra.json").read_text()) == lsq.provenance  # returned as written
    assert lsq.provenance["method_params"] == {"min_r2": 0.5} and (lsq.method, lsq.target_step) == ("lsq", 60)


def test_the_older_names_rank1_and_fit_still_work_everywhere(tmp_path, capsys):
    """Scripts written before the rename keep running: --method rank1, --fit, backtest --methods rank1 and
    a run config naming rank1 all resolve to low-rank, and outputs carry the current name."""
    from rlextra.cli import main
    from rlextra.extrapolate.backtest import backtest
    from rlextra.rl.config import TrainConfig

    run = _rank1_run(tmp_path)[0]
    assert main(["extrapolate", str(run), "--fit", "rank1", "--to-step", "60", "-o", str(tmp_path / "old"), "-q"]) == 0
    assert "low-rank extrapolation" in capsys.readouterr().out
    assert main(["extrapolate", str(run), "--method", "low-rank", "--to-step", "60", "-o", str(tmp_path / "new"), "-q"]) == 0
    assert _load(tmp_path / "old")[MAT].tolist() == _load(tmp_path / "new")[MAT].tolist()
    assert json.loads((tmp_path / "old" / "rlextra.json").read_text())["method"] == "low-rank"
    rows = backtest(run, tmp_path / "bt", methods=["rank1", "two-point"], pairs="first", progress=False)["rows"]
    assert {r["method"] for r in rows} == {"low-rank", "two-point"}
    cfg = TrainConfig(model="m", output_dir=str(tmp_path / "r"), rl_extra=(2, 2), rl_extra_method="rank1")
    assert cfg.rl_extra_method == "low-rank"
    with pytest.raises(SystemExit):
        main(["extrapolate", str(run), "--method", "rank2", "--to-step", "60", "-o", str(tmp_path / "x")])
    assert "invalid choice: 'rank2'" in capsys.readouterr().err


def test_rank1_bf16_and_two_checkpoints(tmp_path):
    run, w0, drift, _, _ = _rank1_run(tmp_path, steps=(0, 20), dtype=torch.bfloat16)
    out = extrapolate_weights(run, tmp_path / "x", alpha=2, method="low-rank", progress=False).path
    got = load_file(str(out / "model.safetensors"))[MAT]
    assert got.dtype == torch.bfloat16
    w_b, w_s = (load_file(str(run / f"checkpoint-{t}" / "model.safetensors"))[MAT].float() for t in (0, 20))
    u, s, vh = torch.linalg.svd(w_s - w_b)
    want = w_s + s[0] * torch.outer(u[:, 0], vh[0])  # alpha - 1 = 1
    assert torch.allclose(got.float(), want, atol=1e-3)


def test_method_errors_through_the_cli(tmp_path, capsys):
    from rlextra.cli import main

    run, *_ = _rank1_run(tmp_path, steps=(0, 10))
    assert main(["extrapolate", str(run), "--method", "lsq", "--to-step", "30", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--method lsq needs at least 3 checkpoints, got 2" in err
    assert main(["extrapolate", str(run), "--method", "low-rank", "--device", "nonsense", "--to-step", "30",
                 "-o", str(tmp_path / "x")]) == 2
    assert "--device nonsense: expected auto, cpu, cuda or cuda:N" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("k,fit", [(2, "two-point"), (3, "lsq"), (3, "low-rank")])
def test_zero_element_tensors_are_written(tmp_path, k, fit):
    """A tensor of shape [0, 128] (and one ending a shard) gets no chunk, yet must be written."""
    ckpts = [write_ckpt(tmp_path / f"c{s}", {"a.weight": np.full((3, 4), float(s)), "b.empty": np.zeros((0, 128)),
                                             "z.empty": np.zeros((0,))}) for s in range(k)]
    out = extrapolate_weights([f"{s}={c}" for s, c in enumerate(ckpts)], tmp_path / "out", to_step=k + 1,
                              method=fit, max_shard_size=8, progress=False).path
    from rlextra.checkpoints import load_series, read_values

    got = load_series([f"0={out}"]).newest.tensors
    assert got["b.empty"].shape == (0, 128) and got["z.empty"].shape == (0,)
    np.testing.assert_allclose(read_values(got["a.weight"], 0, 12), k + 1, rtol=1e-6)  # low-rank: fp32 SVD


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA here"))])
def test_streamed_methods_run_their_chunk_arithmetic_on_a_device(tmp_path, device):
    """--device moves each chunk's two-point / lsq arithmetic: two-point is the same lerp (bit-equal on
    the CPU), lsq the same float64 line as the kernel (to rounding), with --min-r2 keeping the same
    entries."""
    run, *_ = _rank1_run(tmp_path, steps=(0, 10, 20, 30))
    rng = np.random.default_rng(0)
    noisy = tmp_path / "noisy"
    for t in (0, 10, 20, 30):  # a planted mix: lines with and without noise, so --min-r2 keeps some
        w = {MAT: torch.from_numpy(np.where(np.arange(64 * 48).reshape(64, 48) % 2 == 0, 1e-3 * t,
                                            rng.normal(size=(64, 48)))).float()}
        write_ckpt(noisy / f"checkpoint-{t}", w)
    pair = [str(run / "checkpoint-0"), str(run / "checkpoint-30")]
    for series, method, extra in ((pair, "two-point", {}), (run, "lsq", {}), (noisy, "lsq", {"min_r2": 0.9})):
        here = extrapolate_weights(series, tmp_path / f"h-{method}-{len(extra)}", to_step=55, method=method,
                                   chunk_size=500, progress=False, **extra)
        there = extrapolate_weights(series, tmp_path / f"d-{method}-{len(extra)}", to_step=55, method=method,
                                    chunk_size=500, device=device, progress=False, **extra)
        a, b = _load(here.path), _load(there.path)
        for k in a:
            if method == "two-point" and device == "cpu":
                np.testing.assert_array_equal(a[k], b[k])
            else:
                np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)
        assert here.provenance["params_kept_low_r2"] == there.provenance["params_kept_low_r2"]
        assert there.provenance["options"]["device"] == device
    assert 0.9 * 64 * 48 // 2 < there.provenance["params_kept_low_r2"] <= 64 * 48 // 2  # most of the noisy half


@pytest.mark.parametrize("method", ["two-point", "lsq"])
def test_chunks_computed_ahead_on_threads_write_the_same_bytes(series_dir, tmp_path, method):
    """--threads computes chunks ahead of the writer: the files and counts are those of one thread
    (a NaN met on threads: test_nan_in_input_is_named runs with the default, every core)."""
    run, steps, vals = series_dir
    inputs = sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    inputs = inputs[-2:] if method == "two-point" else inputs
    opts = dict(to_step=90, method=method, chunk_size=5, progress=False)
    if method == "lsq":
        opts["min_r2"] = 0.5
    one = extrapolate_weights(inputs, tmp_path / "t1", threads=1, **opts)
    many = extrapolate_weights(inputs, tmp_path / "t3", threads=3, **opts)
    a, b = load_file(str(tmp_path / "t1" / "model.safetensors")), load_file(str(tmp_path / "t3" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for key in ("tensors", "params_kept_low_r2"):
        assert one.provenance[key] == many.provenance[key]
    assert method == "two-point" or one.provenance["params_kept_low_r2"] > 0
    with pytest.raises(RLExtraError, match="--threads 0: must be an integer >= 1"):
        extrapolate_weights(inputs, tmp_path / "t0", threads=0, **opts)
