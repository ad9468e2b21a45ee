"""Tensor-level extrapolation methods: two-point, lsq, low-rank."""

import numpy as np
import pytest
import torch

from rlextra.errors import RLExtraError
from rlextra.extrapolate import methods
from rlextra.extrapolate.methods import WindowPredictor, check_method, predict_tensor
from rlextra.linefit import fit_lines


def _rank1_series(steps, shape=(24, 16), noise=0.0, seed=0, rank=1):
    """W_k = W0 + t_k * (sum of `rank` outer products) + noise: a planted low-rank linear drift."""
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(shape, generator=g) * 0.02
    drift = sum(torch.outer(torch.randn(shape[0], generator=g), torch.randn(shape[1], generator=g))
                for _ in range(rank)) * 1e-3
    vals = [w0 + t * drift + noise * torch.randn(shape, generator=g) for t in steps]
    return w0, drift, vals


def test_two_point_is_the_lerp_of_first_and_last():
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    got = predict_tensor("two-point", [10, 20], [a, b], 40)
    assert torch.allclose(got, a + 3 * (b - a), atol=1e-6)
    assert got.dtype == torch.float32


def test_lsq_matches_the_float64_kernel_and_bf16_inputs_give_fp32():
    steps = [0, 10, 20, 35]
    rng = np.random.default_rng(1)
    vals = rng.normal(size=(4, 50))
    got = predict_tensor("lsq", steps, [torch.tensor(v) for v in vals], 70)
    want = fit_lines(steps, vals).value_at(70)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    bf = predict_tensor("lsq", steps, [torch.tensor(v).bfloat16() for v in vals], 70)
    assert bf.dtype == torch.float32


def test_lsq_min_r2_keeps_newest_value_of_noisy_coordinates():
    steps = [0, 1, 2, 3]
    vals = [torch.tensor([(-1.0) ** k, float(k)]) for k in steps]
    got = predict_tensor("lsq", steps, vals, 6, min_r2=0.9)
    assert got[0] == vals[-1][0]  # R^2 of an alternating sequence is low: kept
    assert got[1] == pytest.approx(6.0)  # a clean line: extrapolated


def test_rank1_recovers_an_exact_low_rank_line_and_beats_two_point_under_noise():
    steps = [0, 10, 20, 30]
    w0, drift, vals = _rank1_series(steps)
    got = predict_tensor("low-rank", steps, vals, 80)
    assert torch.allclose(got, w0 + 80 * drift, atol=1e-5)
    w0, drift, vals = _rank1_series(steps, noise=3e-4, seed=3)
    truth = w0 + 80 * drift
    err = {m: float((predict_tensor(m, steps if m != "two-point" else steps[::3],
                                    vals if m != "two-point" else vals[::3], 80) - truth).norm())
           for m in ("low-rank", "two-point")}
    assert err["low-rank"] < 0.5 * err["two-point"], err


def test_rank_r_core_and_k2_formula():
    steps = [0, 10, 20]
    w0, drift, vals = _rank1_series(steps, rank=2)
    assert torch.allclose(predict_tensor("low-rank", steps, vals, 50, rank=2), w0 + 50 * drift, atol=1e-5)
    # with K = 2: W_s + (alpha - 1) * trunc_r(W_s - W_b)
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    u, s, vh = torch.linalg.svd(b - a)
    trunc = s[0] * torch.outer(u[:, 0], vh[0])
    assert torch.allclose(predict_tensor("low-rank", [0, 4], [a, b], 10), b + 1.5 * trunc, atol=1e-5)


def test_rank1_one_dimensional_tensors_get_their_own_line():
    steps = [0, 1, 2]
    vals = [torch.tensor([1.0, 2.0]) + k * torch.tensor([0.5, -1.0]) for k in steps]
    assert torch.allclose(predict_tensor("low-rank", steps, vals, 4), torch.tensor([3.0, -2.0]))


def test_rank1_lowrank_svd_path_is_used_for_large_matrices(monkeypatch):
    monkeypatch.setattr(methods, "LOWRANK_ABOVE", 8)
    steps = [0, 10, 20, 30]
    w0, drift, vals = _rank1_series(steps, shape=(40, 30))
    pred = WindowPredictor("low-rank", steps, vals)
    assert torch.allclose(pred.at(60), w0 + 60 * drift, atol=1e-5)
    assert torch.equal(pred.at(60), WindowPredictor("low-rank", steps, vals).at(60))  # seeded: repeatable


@pytest.mark.parametrize("method,k,kw,msg", [
    ("lsq", 2, {}, "--method lsq needs at least 3 checkpoints, got 2"),
    ("two-point", 3, {}, "--method two-point takes exactly 2 checkpoints"),
    ("low-rank", 3, {"min_r2": 0.5}, "--min-r2 needs --method lsq"),
    ("low-rank", 3, {"rank": 0}, "--rank must be a positive integer"),
    ("svd", 3, {}, "unknown --method 'svd'"),
])
def test_bad_method_options_are_one_line_errors(method, k, kw, msg):
    vals = [torch.zeros(3, 2)] * k
    with pytest.raises(RLExtraError, match=msg.replace("+", r"\+")) as e:
        predict_tensor(method, list(range(k)), vals, k + 1, **kw)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    steps = [0, 10, 20, 30]
    _, _, vals = _rank1_series(steps, shape=(300, 280), noise=1e-4)
    for method, vs, st in (("low-rank", vals, steps), ("lsq", vals, steps), ("two-point", vals[::3], steps[::3])):
        cpu = predict_tensor(method, st, vs, 70)
        gpu = predict_tensor(method, st, [v.cuda() for v in vs], 70)
        assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-5), method


def test_one_registry_feeds_every_layer():
    """The CLI's choices, TrainConfig's, the backtest's and RL-Extra's all read the registry."""
    from dataclasses import fields

    from rlextra.cli import build_parser
    from rlextra.extrapolate.registry import ALIASES, FORMULAS, METHODS, NORMS, REGISTRY
    from rlextra.rl.config import TrainConfig

    assert METHODS == ("two-point", "lsq", "low-rank") and set(FORMULAS) == set(METHODS)
    train_fields = {f.name: f for f in fields(TrainConfig)}
    assert ALIASES == {"rank1": "low-rank"}  # the older name of low-rank, accepted where a method is named
    assert train_fields["rl_extra_method"].metadata["choices"] == (*METHODS, *ALIASES)
    assert train_fields["rl_extra_norms"].metadata["choices"] == NORMS
    sub = build_parser()._subparsers._group_actions[0].choices
    method = next(a for a in sub["extrapolate"]._actions if a.dest == "method")
    assert tuple(method.choices) == ("auto", *METHODS, *ALIASES)
    for name, m in REGISTRY.items():  # the counts a window needs are the registry's
        check_method(name, m.min_checkpoints)
        with pytest.raises(RLExtraError, match=f"at least {m.min_checkpoints}"):
            check_method(name, m.min_checkpoints - 1)
        if m.max_checkpoints is not None:
            with pytest.raises(RLExtraError, match="takes exactly"):
                check_method(name, m.max_checkpoints + 1)


def test_the_torch_r2_twin_equals_linefit():
    """lsq's --min-r2 reads R^2 through a torch twin of linefit (fp32, on the values' device): it must
    be linefit's R^2, constant coordinates NaN in both."""
    rng = np.random.default_rng(3)
    steps = [0.0, 7.0, 20.0, 31.0, 40.0]
    vals = np.cumsum(rng.normal(size=(5, 300)), axis=0) + 1.0 + 0.05 * np.arange(5)[:, None] * rng.normal(size=300)
    vals[:, :4] = 2.5  # constant coordinates
    vals = vals.astype(np.float32)
    got = methods.line_r2([torch.from_numpy(v) for v in vals], steps).numpy()
    want = fit_lines(steps, vals.astype(np.float64)).r2()
    assert np.isnan(got[:4]).all() and np.isnan(want[:4]).all()
    np.testing.assert_allclose(got[4:], want[4:], rtol=1e-4, atol=1e-5)
