"""The compiled helpers against what they replace (numpy/torch), with numba and without."""

import numpy as np
import pytest
import torch

from rlextra import fused


@pytest.mark.parametrize("compiled", [True, False])
def test_bf16_widening_matches_torch(monkeypatch, compiled):
    if compiled and not fused.AVAILABLE:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(fused, "AVAILABLE", compiled)
    values = torch.tensor([0.0, -0.0, 1.5, -3.25e-30, 6.5e37, float("inf"), float("-inf"), float("nan"), 1e-40])
    raw = values.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    out = np.empty(len(raw), dtype=np.float32)
    fused.bf16_to_float32(raw, out)
    expect = values.to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(out.view(np.uint32), expect.view(np.uint32))  # bit for bit, NaN too


def test_numba_is_imported_on_first_use_only():
    """Importing rlextra (and its analysis) must not pay numba's import."""
    import subprocess
    import sys

    code = "import rlextra.cli, rlextra.analysis, rlextra.extrapolate, sys; print('numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


@pytest.mark.skipif(not fused.AVAILABLE, reason="numba not installed")
@pytest.mark.parametrize("alpha", [0.3, -0.45, 1.0, 2.5, 7.3])
def test_compiled_two_point_kernels_equal_torch_lerp_bit_for_bit(alpha):
    """The CPU two-point line without torch is torch's lerp to the bit: fused multiply-add, the
    |w| < 0.5 switch, bf16 rounded once from fp32; lengths cover vector tails and tiles; specials
    (Inf, signed zeros, subnormals, the largest floats) included; at alpha = 1 a zero's sign may
    differ (torch's own loops differ there). A plain a + w (b - a) differs
    in thousands of these entries (it rounds twice)."""
    rng = np.random.default_rng(0)
    special = np.array([np.inf, -np.inf, 0.0, -0.0, 3e38, -3e38, 1e-45, 1e-39], np.float32)

    def same_bits(got, want, value):  # at alpha = 1 torch's own loops differ in the sign of a zero
        check = np.isfinite(value) & ((value != 0) | (alpha != 1.0))  # NaN bits differ; NaN is refused anyway
        np.testing.assert_array_equal(got[check], want[check])

    for n in (1, 7, 9, 255, 257, 100_003):
        a = np.concatenate([special, rng.standard_normal(n).astype(np.float32)])
        b = np.concatenate([special[::-1], a[8:] + 1e-3 * rng.standard_normal(n).astype(np.float32)])
        want = torch.from_numpy(a).lerp(torch.from_numpy(b), alpha).numpy()
        got = fused.lerp_into(a, b, alpha, np.empty_like(a))
        np.testing.assert_array_equal(got, want)
        same_bits(got.view(np.uint32), want.view(np.uint32), want)
        a64, b64 = a.astype(np.float64) / 3, b.astype(np.float64) / 3
        want = torch.from_numpy(a64).lerp(torch.from_numpy(b64), alpha).numpy()
        got = fused.lerp_into(a64, b64, alpha, np.empty_like(a64))
        np.testing.assert_array_equal(got, want)
        same_bits(got.view(np.uint64), want.view(np.uint64), want)
        ab, bb = (torch.from_numpy(x).bfloat16() for x in (a, b))
        bits = [x.view(torch.int16).numpy().view(np.uint16) for x in (ab, bb)]
        want = ab.lerp(bb, alpha)
        got = fused.lerp_bf16_into(*bits, alpha, np.empty(a.size, np.uint16))
        same_bits(got, want.view(torch.int16).numpy().view(np.uint16), want.float().numpy())
    if alpha != 1.0:  # at 1 both give b
        a, b = a[8:], b[8:]
        plain = (a + np.float32(alpha) * (b - a)).astype(np.float32)
        assert (plain != torch.from_numpy(a).lerp(torch.from_numpy(b), alpha).numpy()).sum() > 50


def test_bf16_encoding_without_torch_matches_torch():
    """from_float64 rounds to bf16 as torch's .to(torch.bfloat16) does (through float32: ties of the
    float32 rounding included), so the lsq path writes the same bytes without importing torch."""
    from rlextra.checkpoints.reader import from_float64

    rng = np.random.default_rng(2)
    x = rng.standard_normal(200_000) * 10.0 ** rng.integers(-30, 30, 200_000)
    tie = ((rng.standard_normal(50_000).astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000))
           | np.uint32(0x8000)).view(np.float32).astype(np.float64)  # halfway between two bf16 values
    x = np.concatenate([x, tie, tie * (1 + 1e-12), tie * (1 - 1e-12), [0.0, -0.0, 1e39, -1e39, 3.39e38, np.inf, -np.inf]])
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(from_float64(x, "BF16"), want)
