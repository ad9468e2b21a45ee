import numpy as np
import pytest
import torch

from rlextra.errors import RLExtraError
from rlextra.linefit import LineFit, fit_lines, resolve_target


def test_matches_numpy_polyfit_and_correlation():
    rng = np.random.default_rng(1)
    t = np.array([0, 50, 100, 200, 300, 450.0])
    y = rng.normal(size=(6, 200)) + np.outer(t, rng.normal(size=200)) * 0.01
    res = fit_lines(t, y)
    for j in range(0, 200, 17):
        slope, icpt = np.polyfit(t, y[:, j], 1)
        assert res.slope[j] == pytest.approx(slope, rel=1e-9, abs=1e-12)
        assert res.value_at(1000)[j] == pytest.approx(icpt + slope * 1000, rel=1e-9)
        assert res.r2()[j] == pytest.approx(np.corrcoef(t, y[:, j])[0, 1] ** 2, rel=1e-9)


def test_two_points_is_the_papers_formula():
    y = np.array([[1.0, -2.0, 0.5], [3.0, -1.0, 0.5]])
    res = fit_lines([100, 300], y)
    alpha = (700 - 100) / (300 - 100)
    np.testing.assert_allclose(res.value_at(700), y[0] + alpha * (y[1] - y[0]), rtol=1e-13)


def test_tiny_moves_around_one_keep_their_r2():
    # bf16-free float64 values near 1.0 moving by 1e-9 per step: naive sums would lose them
    t = np.arange(8.0)
    y = 1.0 + 1e-9 * t[:, None] * np.array([1.0, -2.0])
    r2 = fit_lines(t, y).r2()
    np.testing.assert_allclose(r2, [1.0, 1.0], atol=1e-6)


def test_constant_parameter_has_nan_r2_and_flat_line():
    res = fit_lines([0, 1, 2], np.full((3, 2), 0.25))
    assert np.isnan(res.r2()).all()
    np.testing.assert_array_equal(res.value_at(10), [0.25, 0.25])


def test_range_and_capped_distinct_counts_match_numpy():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=(7, 500)).astype(float)
    fit = LineFit(range(7), 500, track_range=True, distinct_cap=4)
    for row in y:
        fit.add(row)
    np.testing.assert_array_equal(fit.value_range(), y.max(0) - y.min(0))
    expect = np.minimum([len(np.unique(y[:, j])) for j in range(500)], 4)
    np.testing.assert_array_equal(fit.n_distinct_capped(), expect)


def test_rejects_bad_steps():
    with pytest.raises(ValueError):
        LineFit([5], 3)
    with pytest.raises(ValueError):
        LineFit([1, 1, 2], 3)


def test_resolve_target_converts_both_ways_and_refuses_ambiguity():
    assert resolve_target([10, 20, 30], to_step=50) == (50.0, 2.0)
    assert resolve_target([10, 30], alpha=1.5) == (40.0, 1.5)
    for kw in ({}, {"to_step": 5, "alpha": 1.0}):
        with pytest.raises(RLExtraError, match="exactly one of --to-step T or --alpha A"):
            resolve_target([0, 10], **kw)
    with pytest.raises(RLExtraError, match="alpha needs 2 or more steps"):
        resolve_target([5], alpha=2.0)


@pytest.mark.parametrize("where", ["numpy", "torch-cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_a_block_of_all_steps_gives_the_step_by_step_fit(where):
    """add_block (the full-coverage analysis's kernel) against K add calls: same sums, range,
    distinct counts, first and last values, and NaN still propagates to all_finite."""
    rng = np.random.default_rng(1)
    steps = [0, 3, 10, 11, 25, 40]
    y = 1.0 + 1e-3 * np.arange(6.0)[:, None] * rng.standard_normal(300) + 1e-5 * rng.standard_normal((6, 300))
    y[:, :20] = rng.integers(0, 3, size=(6, 20))  # repeats, for the distinct counter
    y[:, 20] = 0.5  # never moves
    y[4, 21] = np.nan
    step_by_step = LineFit(steps, 300, track_range=True, distinct_cap=4)
    for row in y:
        step_by_step.add(row)
    block = LineFit(steps, 300, track_range=True, distinct_cap=4)
    ys = y.copy() if where == "numpy" else torch.tensor(y, device="cpu" if where == "torch-cpu" else where)
    block.add_block(ys)
    assert not block.all_finite() and not step_by_step.all_finite()
    for fit in (step_by_step, block):
        fit.s_dd[21] = fit.s_d[21] = fit.s_td[21] = 0.0  # leave the NaN column out of the comparison
    a, b = step_by_step.result(), block.result()
    for name in ("y_mean", "slope", "sxy", "syy"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-12, atol=1e-20, err_msg=name)
    np.testing.assert_allclose(b.r2()[22:], a.r2()[22:], rtol=1e-10)
    assert np.isnan(b.r2()[20]) and np.isnan(a.r2()[20])
    np.testing.assert_array_equal(block.value_range()[22:], step_by_step.value_range()[22:])
    np.testing.assert_array_equal(block.n_distinct_capped(), step_by_step.n_distinct_capped())
    np.testing.assert_array_equal(block.y0, y[0])
    np.testing.assert_array_equal(block.last, y[-1])
    with pytest.raises(ValueError, match="no steps added yet"):
        block.add_block(ys)
    with pytest.raises(ValueError, match=r"expected a \(6, 300\) block"):
        LineFit(steps, 300).add_block(np.zeros((5, 300)))
