import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import write_ckpt
from rlextra.cli import main

STANDIN = Path(__file__).with_name("standin_trainer.py")
W = {"model.layers.0.mlp.up_proj.weight": np.arange(6.0).reshape(2, 3),
     "model.norm.weight": np.ones(3), "pos": torch.arange(3)}


def _cmd():
    return f"{sys.executable} {STANDIN} {{model}} {{output_dir}} {{start_step}} {{num_steps}}"


def _run(tmp_path, cycles):
    return main(["loop", "--model", str(tmp_path / "base"), "--workdir", str(tmp_path / "loop"),
                 "--rl-extra", "2,2", "--cycles", str(cycles), "--train-command", _cmd(), "-q"])


def test_loop_alternates_training_and_extrapolation(tmp_path):
    write_ckpt(tmp_path / "base", W)
    assert _run(tmp_path, 2) == 0
    state = json.loads((tmp_path / "loop" / "loop_state.json").read_text())
    assert state["final_step"] == 8 and [c["start_step"] for c in state["cycles"]] == [0, 4]
    final = load_file(str(Path(state["final_model"]) / "model.safetensors"))
    # drift 0.01 per real step, extrapolated along its line: 8 effective steps -> +0.08; norms are
    # copied from each cycle's trained checkpoint, so they only get the 2 x 2 real steps: +0.04
    np.testing.assert_allclose(final["model.layers.0.mlp.up_proj.weight"].numpy(),
                               W["model.layers.0.mlp.up_proj.weight"] + 0.08, rtol=1e-6)
    np.testing.assert_allclose(final["model.norm.weight"].numpy(), 1 + 0.02 + 0.02, rtol=1e-6)
    assert torch.equal(final["pos"], torch.arange(3))
    assert (tmp_path / "loop" / "calls").read_text().split() == ["0", "4"]


@pytest.mark.slow
def test_failing_command_stops_with_its_code_and_rerun_resumes(tmp_path, monkeypatch, capsys):
    write_ckpt(tmp_path / "base", W)
    monkeypatch.setenv("STANDIN_FAIL_AT", "4")
    assert _run(tmp_path, 3) == 3
    err = capsys.readouterr().err
    assert "exit code 3" in err and "cycle_001/train.log" in err
    assert "simulated crash" in (tmp_path / "loop" / "cycle_001" / "train.log").read_text()
    monkeypatch.delenv("STANDIN_FAIL_AT")
    assert _run(tmp_path, 3) == 0
    # cycle 0 was not trained again; cycle 1 was retried once
    assert (tmp_path / "loop" / "calls").read_text().split() == ["0", "4", "4", "8"]
    state = json.loads((tmp_path / "loop" / "loop_state.json").read_text())
    assert state["final_step"] == 12


def test_bad_template(tmp_path, capsys):
    write_ckpt(tmp_path / "base", W)
    rc = main(["loop", "--model", str(tmp_path / "base"), "--workdir", str(tmp_path / "l"), "--rl-extra", "2,2",
               "--cycles", "1", "--train-command", "train {modle}", "-q"])
    assert rc == 2 and "unknown placeholder" in capsys.readouterr().err
