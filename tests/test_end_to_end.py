"""A real transformers model saved as a checkpoint series in each layout, through the CLI."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlextra.cli import main
from synthetic import tiny_llama_config, write_synthetic_series

STEPS = [0, 10, 20, 30]


@pytest.mark.parametrize("layout,dtype,shard", [("trainer", "float32", "5GB"), ("verl", "bfloat16", "5GB"),
                                                ("plain", "float32", "30KB")])
def test_series_analyze_extrapolate_load_generate(tmp_path, capsys, layout, dtype, shard):
    cfg = tiny_llama_config(tie=(layout == "verl"))
    folders = write_synthetic_series(tmp_path / "run", cfg, STEPS, dtype=dtype, layout=layout,
                                     max_shard_size=shard)
    if shard != "5GB":
        assert (folders[0] / "model.safetensors.index.json").exists()
    assert main(["analyze", "weights", str(tmp_path / "run"), "-o", str(tmp_path / "rep"), "-q"]) == 0
    rep = json.loads((tmp_path / "rep" / "weights.json").read_text())
    assert rep["steps"] == STEPS
    n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    assert rep["n_params"] == n_params
    assert 0.5 < rep["global"]["frac_r2_above_0.7"] <= 1.0  # planted drift dominates the noise
    assert "fraction > 0.7" in capsys.readouterr().out

    given = [str(f if layout != "verl" else f.parent.parent) for f in folders[:2]]
    assert main(["extrapolate", *given, "--to-step", "30", "-o", str(tmp_path / "x"), "-q"]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "x")
    assert model.dtype == getattr(torch, dtype)
    out = model.generate(torch.tensor([[1, 5, 7]]), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)
    real = AutoModelForCausalLM.from_pretrained(folders[-1])
    extra = dict(model.named_parameters())
    # planted lines: the step-30 extrapolation lands near the real step-30 weights
    w = "model.layers.0.mlp.up_proj.weight"
    err = (extra[w] - real.get_parameter(w)).float().norm()
    span = (real.get_parameter(w) - AutoModelForCausalLM.from_pretrained(folders[0]).get_parameter(w)).float().norm()
    assert err < 0.5 * span


def test_console_script_help_and_one_line_errors(tmp_path):
    exe = [sys.executable, "-m", "rlextra.cli"]
    for sub in (["analyze", "weights"], ["analyze", "merge"], ["extrapolate"], ["demo"]):
        r = subprocess.run(exe + sub + ["--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "example:" in r.stdout, sub
    r = subprocess.run(exe + ["extrapolate", str(tmp_path / "nope"), str(tmp_path / "nope2"),
                              "--to-step", "3", "-o", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "nope" in r.stderr and r.stderr.startswith("rlextra: error:")
    assert not (tmp_path / "o").exists()
