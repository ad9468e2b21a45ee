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
