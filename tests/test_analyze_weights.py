import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import numpy_r2, planted_series, write_ckpt
from rlextra import fused
from rlextra.analysis import analyze_weights, merge_weight_reports
from rlextra.analysis.weights import sample_indices
from rlextra.errors import RLExtraError


def test_matches_direct_numpy_computation(series_dir, tmp_path):
    run, steps, vals = series_dir
    rep = analyze_weights(run, tmp_path / "out", progress=False)
    all_r2 = []
    for row in rep["tensors"]:
        r2 = numpy_r2(steps, vals[row["name"]])
        all_r2.append(r2)
        assert row["n_analyzed"] == r2.size
        assert row["mean_r2"] == pytest.approx(r2.mean(), rel=1e-9)
        assert abs(row["median_r2"] - np.median(r2)) <= 1e-4
        assert row["frac_r2_above_0.7"] == pytest.approx((r2 > 0.7).mean())
        v32 = vals[row["name"]]
        assert row["rel_change"] == pytest.approx(np.linalg.norm(v32[-1] - v32[0]) / np.linalg.norm(v32[0]), rel=1e-6)
    all_r2 = np.concatenate(all_r2)
    g = rep["global"]
    assert rep["n_params"] == rep["n_params_analyzed"] == all_r2.size
    assert g["mean_r2"] == pytest.approx(all_r2.mean(), rel=1e-9)
    assert abs(g["median_r2"] - np.median(all_r2)) <= 1e-4
    assert g["frac_r2_above_0.7"] == pytest.approx((all_r2 > 0.7).mean())
    assert sum(g["histogram"]["counts"]) == all_r2.size
    out = tmp_path / "out"
    # the returned report is the file's, plus where it was written
    assert {**json.loads((out / "weights.json").read_text()), "output": str(out)} == json.loads(json.dumps(rep))
    assert len((out / "weights.csv").read_text().strip().splitlines()) == len(vals) + 1
    for png in ("r2_histogram.png", "r2_heatmap.png", "trajectories.png"):
        assert (out / png).stat().st_size > 1000


def test_planted_noise_free_series_is_perfectly_linear(tmp_path):
    steps = [0, 5, 10, 20]
    vals = planted_series(steps, {"w": (50,)}, noise=0.0)
    for k, s in enumerate(steps):
        write_ckpt(tmp_path / "run" / f"step_{s}", {"w": vals["w"][k]}, dtype=torch.float64)
    rep = analyze_weights(tmp_path / "run", None, progress=False)
    assert rep["global"]["mean_r2"] == pytest.approx(1.0, abs=1e-9)
    assert rep["global"]["frac_r2_above_0.7"] == 1.0


def test_chunking_does_not_change_results(series_dir):
    run, _, _ = series_dir
    a = analyze_weights(run, None, progress=False)
    b = analyze_weights(run, None, progress=False, chunk_size=7)
    for ra, rb in zip(a["tensors"], b["tensors"]):
        assert ra["mean_r2"] == pytest.approx(rb["mean_r2"], rel=1e-12)
        assert ra["median_r2"] == rb["median_r2"]


def test_sampling_fits_the_sampled_entries(series_dir):
    run, steps, vals = series_dir
    rep = analyze_weights(run, None, progress=False, sample=0.1, seed=3, chunk_size=50)
    for row in rep["tensors"]:
        v = vals[row["name"]].reshape(len(steps), -1)
        idx = sample_indices(row["name"], v.shape[1], 0.1, 3)
        assert row["n_fitted"] == min(v.shape[1], max(math.ceil(0.1 * v.shape[1]), 50)) == len(idx)
        assert row["mean_r2"] == pytest.approx(numpy_r2(steps, v[:, idx]).mean(), rel=1e-9)
    assert rep["options"]["sample"] == 0.1


def test_sampled_reads_group_picks_and_any_group_size_gives_the_same_report(series_dir, monkeypatch):
    """A sampled analysis reads its picks in groups of chunk_size picks (one read per group and
    checkpoint): every group size gives the same report, and every pick is read exactly once."""
    import rlextra.analysis.weights as weights_mod
    from rlextra.sampling import pick_chunks

    idx = np.array([3, 4, 9, 100, 101, 250, 251, 252])
    groups = list(pick_chunks(idx, 3))
    assert groups == [(3, 10, 0, 3), (100, 251, 3, 6), (251, 253, 6, 8)]
    assert list(pick_chunks(idx, 3, span=100)) == [(3, 10, 0, 3), (100, 102, 3, 5), (250, 253, 5, 8)]
    assert list(pick_chunks(idx, 100, span=1)) == [(i, i + 1, k, k + 1) for k, i in enumerate(idx.tolist())]
    assert list(pick_chunks(idx[:0], 3)) == []
    with pytest.raises(RLExtraError, match="chunk size must be positive"):
        list(pick_chunks(idx, 0))
    run, _, _ = series_dir
    reads = []
    real = weights_mod.read_values
    monkeypatch.setattr(weights_mod, "read_values", lambda ref, start, stop, pick=None: (
        reads.append((ref.name, stop - start, len(pick))), real(ref, start, stop, pick))[1])
    whole = analyze_weights(run, None, progress=False, sample=0.2, seed=1)
    n_reads = len(reads)
    reads.clear()
    small = analyze_weights(run, None, progress=False, sample=0.2, seed=1, chunk_size=3)
    for a, b in zip(whole["tensors"], small["tensors"]):
        assert a["n_fitted"] == b["n_fitted"]
        assert b["mean_r2"] == pytest.approx(a["mean_r2"], rel=1e-12)
    assert whole["global"]["histogram"] == small["global"]["histogram"]
    k = len(whole["steps"])
    assert n_reads == k * len(whole["tensors"])  # the default group holds every pick of these tensors
    assert sum(p for _, _, p in reads) == k * whole["n_params_fitted"] and max(p for _, _, p in reads) <= 3


def test_a_sampled_analysis_runs_on_one_thread_by_default(series_dir, monkeypatch):
    """Its reads are memory maps, slower on several threads of one process (bench/RESULTS.md);
    full coverage takes every core, and --threads still decides when given."""
    import rlextra.analysis.weights as weights_mod

    seen = []
    real = weights_mod.stream_weight_stats
    monkeypatch.setattr(weights_mod, "stream_weight_stats", lambda *a, **kw: (seen.append(kw["threads"]),
                                                                              real(*a, **kw))[1])
    monkeypatch.setattr(weights_mod, "available_cores", lambda: 4)
    run, _, _ = series_dir
    analyze_weights(run, None, progress=False, sample=0.5)
    analyze_weights(run, None, progress=False)
    analyze_weights(run, None, progress=False, sample=0.5, threads=2)
    assert seen == [1, 4, 2]


def test_paper_filters_drop_what_numpy_drops(tmp_path):
    steps = [0, 1, 2, 3, 4, 5]
    rng = np.random.default_rng(0)
    n = 300
    base = rng.normal(0, 1, n)
    # bf16-like staircases: a few distinct values per parameter, some moving < 1e-4
    levels = rng.integers(1, 6, n)
    moves = np.where(rng.random(n) < 0.3, 1e-5, 1e-2)
    vals = np.stack([base + moves * np.minimum(k, levels) for k in steps])
    for k, s in enumerate(steps):
        write_ckpt(tmp_path / "run" / f"step_{s}", {"w": vals[k]}, dtype=torch.float64)
    rep = analyze_weights(tmp_path / "run", None, progress=False, min_change=1e-4, min_distinct=4)
    span = vals.max(0) - vals.min(0)
    distinct = np.array([len(np.unique(vals[:, j])) for j in range(n)])
    keep = (span > 1e-4) & (distinct >= 4)
    assert rep["n_params_analyzed"] == keep.sum()
    assert rep["filters"] == {"min_change": 1e-4, "min_distinct": 4, "n_params_filtered": int((~keep).sum())}
    assert rep["global"]["mean_r2"] == pytest.approx(numpy_r2(steps, vals)[keep].mean(), rel=1e-9)


def test_nan_input_names_file_and_writes_nothing(series_dir, tmp_path):
    run, steps, vals = series_dir
    bad = {n: v[2].copy() for n, v in vals.items()}
    bad["model.embed_tokens.weight"][3, 4] = np.nan
    write_ckpt(run / "checkpoint-20", bad, trainer_step=20)
    with pytest.raises(RLExtraError, match=r"checkpoint-20.*model.embed_tokens.weight.*NaN"):
        analyze_weights(run, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_output_rules(series_dir, tmp_path):
    run, _, _ = series_dir
    analyze_weights(run, tmp_path / "out", progress=False, plots=False)
    with pytest.raises(RLExtraError, match="--overwrite"):
        analyze_weights(run, tmp_path / "out", progress=False, plots=False)
    analyze_weights(run, tmp_path / "out", progress=False, plots=False, overwrite=True)
    with pytest.raises(RLExtraError, match="into or over input"):
        analyze_weights(run, run / "checkpoint-0" / "report", progress=False)


@pytest.mark.slow
def test_two_processes_then_merge_equals_single_run(series_dir, tmp_path):
    run, _, _ = series_dir
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rlextra.cli", "analyze", "weights", str(run), "-q"]
    procs = [subprocess.Popen(cmd + ["--shard", f"{i}/2", "-o", str(tmp_path / f"s{i}")], env=env)
             for i in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    shard_reports = [json.loads((tmp_path / f"s{i}" / "weights.json").read_text()) for i in range(2)]
    names = [{t["name"] for t in r["tensors"]} for r in shard_reports]
    assert names[0] and names[1] and not names[0] & names[1]
    merged = merge_weight_reports([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged", plots=False)
    single = analyze_weights(run, tmp_path / "single", progress=False, plots=False)
    assert json.loads((tmp_path / "merged" / "weights.json").read_text()) == \
        json.loads((tmp_path / "single" / "weights.json").read_text())
    assert merged["global"] == single["global"]
    with pytest.raises(RLExtraError, match="shard 1/2 is missing"):
        merge_weight_reports([tmp_path / "s0"], None)


def test_shard_from_torchrun_environment(monkeypatch):
    from rlextra.analysis import parse_shard

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert parse_shard(None) == (3, 4)
    assert parse_shard("1/2") == (1, 2)
    with pytest.raises(RLExtraError):
        parse_shard("2/2")


def test_too_few_checkpoints_for_analysis(tmp_path):
    for s in (0, 1):
        write_ckpt(tmp_path / "run" / f"step_{s}", {"w": np.ones(3) * s})
    with pytest.raises(RLExtraError, match="at least 3"):
        analyze_weights(tmp_path / "run", None, progress=False)


def test_save_maps_holds_each_parameters_r2_and_slope(series_dir, tmp_path):
    from safetensors.numpy import load_file

    run, steps, vals = series_dir
    analyze_weights(run, tmp_path / "out", progress=False, plots=False, save_maps=True, chunk_size=50)
    r2, slope = (load_file(str(tmp_path / "out" / f"{k}.safetensors")) for k in ("r2", "slope"))
    assert set(r2) == set(vals) == set(slope)
    for name, v in vals.items():
        assert r2[name].shape == v.shape[1:] and r2[name].dtype == np.float32
        np.testing.assert_allclose(r2[name].reshape(-1), numpy_r2(steps, v), rtol=1e-5, atol=1e-6)
        want_slope = np.polyfit(steps, v.reshape(len(steps), -1), 1)[0]
        np.testing.assert_allclose(slope[name].reshape(-1), want_slope, rtol=1e-4, atol=1e-9)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    with pytest.raises(RLExtraError, match="save-maps"):
        analyze_weights(run, tmp_path / "o2", progress=False, sample=0.5, save_maps=True)


def test_only_weights_leaves_biases_out(tmp_path):
    steps = [0, 1, 2, 3]
    vals = planted_series(steps, {"layer.q.weight": (4, 4), "layer.q.bias": (4,), "norm.weight": (4,)})
    for k, s in enumerate(steps):
        write_ckpt(tmp_path / "run" / f"step_{s}", {n: v[k] for n, v in vals.items()}, dtype=torch.float64)
    full = analyze_weights(tmp_path / "run", None, progress=False)
    only = analyze_weights(tmp_path / "run", None, progress=False, only_weights=True)
    assert [t["name"] for t in full["tensors"]] == ["layer.q.bias", "layer.q.weight", "norm.weight"]
    assert [t["name"] for t in only["tensors"]] == ["layer.q.weight", "norm.weight"]
    assert only["skipped_tensors"] == ["layer.q.bias"] and only["options"]["only_weights"] is True
    assert only["n_params_analyzed"] == 20
    want = np.concatenate([numpy_r2(steps, vals["layer.q.weight"]), numpy_r2(steps, vals["norm.weight"])])
    assert only["global"]["mean_r2"] == pytest.approx(want.mean(), rel=1e-9)


def test_zero_element_tensor_with_save_maps(tmp_path):
    from safetensors.torch import load_file

    ckpts = [write_ckpt(tmp_path / "run" / f"checkpoint-{s}", {"a.weight": np.arange(6.0).reshape(2, 3) * s,
                                                       "b.empty": np.zeros((0, 128))}) for s in range(3)]
    rep = analyze_weights(ckpts, tmp_path / "out", save_maps=True, plots=False, progress=False)
    assert rep["n_params"] == 6
    maps = load_file(str(tmp_path / "out" / "r2.safetensors"))
    assert tuple(maps["b.empty"].shape) == (0, 128) and tuple(maps["a.weight"].shape) == (2, 3)


def test_launched_ranks_write_one_folder_each(series_dir, tmp_path, monkeypatch):
    """Under torchrun (RANK/WORLD_SIZE set) each rank analyses its own shard into out/shard-i-of-N."""
    run, _, _ = series_dir
    monkeypatch.setenv("WORLD_SIZE", "2")
    reps = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        reps.append(analyze_weights(run, tmp_path / "out", progress=False, plots=False))
        assert reps[-1]["output"] == str(tmp_path / "out" / f"shard-{rank:05d}-of-00002")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shard-00000-of-00002", "shard-00001-of-00002"]
    merged = merge_weight_reports([reps[0]["output"], reps[1]["output"]], None)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert merged["global"] == analyze_weights(run, None, progress=False)["global"]


def test_threads_give_the_single_thread_report_exactly(series_dir, tmp_path):
    """Tensors analysed on several threads: every number of the report equals the single-thread run's."""
    run, _, _ = series_dir
    one = analyze_weights(run, tmp_path / "t1", threads=1, plots=False, progress=False)
    many = analyze_weights(run, tmp_path / "t3", threads=3, plots=False, progress=False)
    assert one["global"] == many["global"] and one["tensors"] == many["tensors"]
    a1 = json.loads((tmp_path / "t1" / "accumulators.json").read_text())
    a3 = json.loads((tmp_path / "t3" / "accumulators.json").read_text())
    assert a1 == a3  # histograms, per-tensor sums and examples, in the same order
    with pytest.raises(RLExtraError, match="--threads 0"):
        analyze_weights(run, tmp_path / "t0", threads=0, progress=False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_every_storage_dtype_through_the_block_reader_matches_numpy(tmp_path, dtype):
    """The full-coverage path reads all checkpoints as one block: bf16/fp16/fp64 decode exactly."""
    steps = [0, 7, 20, 33]
    vals = planted_series(steps, {"a.weight": (30, 11), "b.bias": (5,)}, seed=4)
    stored = {n: torch.as_tensor(v).to(dtype).to(torch.float64).numpy() for n, v in vals.items()}
    for k, s in enumerate(steps):
        write_ckpt(tmp_path / "run" / f"checkpoint-{s}", {n: v[k] for n, v in stored.items()}, dtype=dtype,
                   trainer_step=s)
    rep = analyze_weights(tmp_path / "run", None, progress=False, chunk_size=64)
    for row in rep["tensors"]:
        r2 = numpy_r2(steps, stored[row["name"]])
        assert row["mean_r2"] == pytest.approx(np.nanmean(r2), rel=1e-9)
        assert row["n_constant"] == int(np.isnan(r2).sum())


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_device_arithmetic_gives_the_numpy_report(series_dir, tmp_path, device):
    """--device runs each chunk's float64 sums in torch there: the report equals numpy's."""
    run, _, _ = series_dir
    here = analyze_weights(run, tmp_path / "here", progress=False, plots=False, threads=1)
    there = analyze_weights(run, tmp_path / "there", progress=False, plots=False, threads=2, device=device)
    for a, b in zip(here["tensors"], there["tensors"]):
        assert a["name"] == b["name"] and a["n_analyzed"] == b["n_analyzed"]
        assert b["mean_r2"] == pytest.approx(a["mean_r2"], rel=1e-12)
        assert b["rel_change"] == pytest.approx(a["rel_change"], rel=1e-12)
    assert there["global"]["histogram"] == here["global"]["histogram"]
    examples = [json.loads((tmp_path / d / "accumulators.json").read_text())["examples"] for d in ("here", "there")]
    assert len(examples[0]) == len(examples[1]) > 0
    for a, b in zip(*examples):
        assert (a["tensor"], a["index"]) == (b["tensor"], b["index"])
        assert b["values"] == a["values"] and b["r2"] == pytest.approx(a["r2"], rel=1e-12)
    with pytest.raises(RLExtraError, match="--device tpu: expected auto, cpu, cuda or cuda:N"):
        analyze_weights(run, None, progress=False, device="tpu")


def test_default_chunk_fits_a_cache_and_is_recorded(series_dir):
    from rlextra.checkpoints.chunks import CACHE_BLOCK_BYTES, auto_chunk_size

    run, steps, _ = series_dir
    rep = analyze_weights(run, None, progress=False, plots=False)
    assert rep["options"]["chunk_size"] == auto_chunk_size(len(steps)) == CACHE_BLOCK_BYTES // (8 * len(steps))
    assert auto_chunk_size(10_000) == 4096  # a floor, so that very long series still read in useful pieces
    on_cpu = analyze_weights(run, None, progress=False, plots=False, device="cpu")  # torch on the CPU: cache-sized
    assert on_cpu["options"]["chunk_size"] == auto_chunk_size(len(steps)) < auto_chunk_size(len(steps), "cuda")
    assert analyze_weights(run, None, progress=False, plots=False, sample=0.5)["options"]["chunk_size"] == 1 << 18


def test_a_file_cut_short_while_reading_names_it(series_dir):
    from rlextra.checkpoints.series import load_series

    run, _, _ = series_dir
    series = load_series(run)  # validated whole, then cut: as if changed under a running analysis
    victim = run / "checkpoint-20" / "model.safetensors"
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(RLExtraError, match=r"checkpoint-20/model.safetensors: cannot read tensor .*ended early"):
        analyze_weights(series, None, progress=False, plots=False)


@pytest.mark.parametrize("dtype,chunk", [("float32", 37), ("float32", 1000), ("bfloat16", 37), ("bfloat16", 1000)])
def test_the_compiled_pass_gives_the_numpy_report(tmp_path, monkeypatch, dtype, chunk):
    """The fused (numba) pass and the numpy path agree on every number; the histogram exactly. bf16
    reaches the pass as its bits and is widened there; chunks of 1000 run the pass over several
    tiles, the last one partial (a tensor's first chunk feeds its example through numpy)."""
    from rlextra import fused

    if not fused.AVAILABLE:
        pytest.skip("numba is not installed: only the numpy path runs here")
    steps = [0, 10, 20, 30, 40]
    vals = planted_series(steps, {"w.weight": (60, 50), "x.weight": (8, 16), "b.bias": (16,)}, seed=3)
    run = tmp_path / "run"
    for k, s in enumerate(steps):
        write_ckpt(run / f"checkpoint-{s}", {n: v[k] for n, v in vals.items()}, dtype=getattr(torch, dtype),
                   trainer_step=s)
    assert 1000 % fused.TILE and 3000 > 2 * 1000  # partial tiles, and chunks after the example's
    compiled = analyze_weights(run, tmp_path / "c", progress=False, plots=False, chunk_size=chunk)
    monkeypatch.setattr(fused, "AVAILABLE", False)
    plain = analyze_weights(run, tmp_path / "p", progress=False, plots=False, chunk_size=chunk)
    for a, b in zip(plain["tensors"], compiled["tensors"]):
        for key in ("n_fitted", "n_constant", "n_analyzed", "median_r2", "frac_r2_above_0.7"):
            assert a[key] == b[key], key
        assert b["mean_r2"] == pytest.approx(a["mean_r2"], rel=1e-12)
        assert b["rel_change"] == pytest.approx(a["rel_change"], rel=1e-12)
    assert compiled["global"]["histogram"] == plain["global"]["histogram"]


def test_a_nan_in_a_bf16_series_is_refused_by_name(tmp_path):
    """The compiled pass reads bf16 as bits; a NaN there still names its file and tensor."""
    steps = [0, 10, 20]
    vals = planted_series(steps, {"a.weight": (40, 20)}, seed=2)
    vals["a.weight"][1, 13, 7] = np.nan  # past the first tile of 256 entries
    for k, s in enumerate(steps):
        write_ckpt(tmp_path / "run" / f"checkpoint-{s}", {"a.weight": vals["a.weight"][k]}, dtype=torch.bfloat16,
                   trainer_step=s)
    with pytest.raises(RLExtraError, match=r"checkpoint-10/model.safetensors: tensor 'a.weight' \(step 10\) contains NaN"):
        analyze_weights(tmp_path / "run", None, progress=False, plots=False)


@pytest.mark.skipif(not fused.AVAILABLE, reason="numba not installed: backtest and extrapolate then run in torch")
def test_the_safetensors_path_imports_neither_torch_nor_transformers(tmp_path):
    """analyze weights, watch --once, backtest's streamed methods and extrapolate (two-point, lsq)
    read safetensors with numpy and numba: torch (about 1.2 s to import here) and transformers (0.4 s) stay out of the process."""
    import subprocess
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from synthetic import tiny_llama_config, write_synthetic_series

    write_synthetic_series(tmp_path / "run", tiny_llama_config(), [0, 10, 20], noise=3e-3)
    write_synthetic_series(tmp_path / "bf16", tiny_llama_config(), [0, 10, 20], noise=3e-3, dtype="bfloat16")
    commands = [["analyze", "weights", str(tmp_path / "run"), "--shard", f"{i}/2", "-o", str(tmp_path / f"s{i}"), "-q",
                 "--no-plots"] for i in range(2)]
    commands += [["analyze", "merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "-o", str(tmp_path / "m"),
                  "--no-plots"]]
    for run in ("run", "bf16"):  # bf16 is widened by a shift, not by torch
        commands += [["analyze", "weights", str(tmp_path / run), "-o", str(tmp_path / f"aw-{run}"), "-q", "--no-plots"],
                     ["watch", str(tmp_path / run), "-o", str(tmp_path / f"w-{run}"), "--once", "-q", "--no-plots"],
                     ["backtest", str(tmp_path / run), "-o", str(tmp_path / f"b-{run}"), "--methods", "two-point,lsq",
                      "-q", "--no-plots"],
                     ["extrapolate", str(tmp_path / run / "checkpoint-10"), str(tmp_path / run / "checkpoint-20"),
                      "--to-step", "50", "-o", str(tmp_path / f"x-{run}"), "-q"],
                     ["extrapolate", str(tmp_path / run), "--method", "lsq", "--to-step", "50",
                      "-o", str(tmp_path / f"l-{run}"), "-q"]]
    for args in commands:
        code = (f"import sys\nfrom rlextra.cli import main\nassert main({args!r}) == 0\n"
                "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == "[]", (args[:2], out)


def test_the_progress_bar_says_whether_reads_or_rlextra_are_the_limit(series_dir, tmp_path, capsys):
    """The bar's closing line carries the reads' own rate and their share of the time, and calls the
    pass disk-bound or rlextra-bound; the meter counts every byte the block reader read."""
    from rlextra.checkpoints.read_meter import ReadMeter

    run, steps, vals = series_dir
    analyze_weights(run, tmp_path / "a", progress=True, plots=False)
    line = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    bar = [x for x in line if x.startswith("analyze weights: 100%")][-1]
    assert re.search(r"reads [0-9.]+ [KMG]?B/s, \d+% of the time: (disk|rlextra)-bound", bar), bar

    meter = ReadMeter(threads=2)
    meter.add(3 << 20, 0.5)
    meter.add(1 << 20, 0.5)
    assert meter.bytes == 4 << 20 and meter.rate == 4 << 20  # 4 MB in 1 s of reads
    meter.started -= 10.0  # 10 s on 2 threads: 1 s of reads is 5%
    assert 0.04 < meter.share < 0.06 and meter.summary().endswith("5% of the time: rlextra-bound")
    meter.add(0, 15.0)
    assert meter.summary().endswith(": disk-bound")
    assert ReadMeter().summary() == "reads: -"
