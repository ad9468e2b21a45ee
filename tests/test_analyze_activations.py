import json

import numpy as np
import pytest
import torch

from rlextra.analysis.activations import analyze_activations, hidden_states
from rlextra.analysis.probes import encode_probes
from rlextra.cli import main
from rlextra.errors import RLExtraError
from rlextra.rl.models import char_tokenizer, save_model, tiny_llama

PROBES = [{"prompt": "12+3=", "response": "15"}, {"prompt": "7+7=", "response": "14\n7+"},
          {"prompt": "123+456=", "response": "579"}]


def _series(root, steps, path_of_t):
    """Checkpoints identical except layer 0's down_proj, set to W0 + path_of_t(t) * D.

    Layer 0's output is h + attn + down_proj(x) with x fixed (nothing before it changes), so it
    moves exactly as path_of_t(t) in every coordinate."""
    tok = char_tokenizer()
    model = tiny_llama(tok, hidden=32, layers=2, intermediate=64, seed=0)
    w = model.model.layers[0].mlp.down_proj.weight
    w0 = w.detach().clone()
    direction = torch.randn(w.shape, generator=torch.Generator().manual_seed(1)) * 0.5
    for t in steps:
        with torch.no_grad():
            w.copy_(w0 + path_of_t(t) * direction)
        save_model(model, tok, root / f"step_{t}")
    return tok, model


def test_batched_hidden_states_equal_direct_per_sequence():
    tok = char_tokenizer()
    model = tiny_llama(tok, hidden=32, layers=2, intermediate=64).eval()
    enc = encode_probes(tok, PROBES)
    n_tok = sum(len(r) for _, r in enc)
    picked = np.array([0, 2, 3, 6, 8, 9])
    got = hidden_states(model, enc, tok.pad_token_id, picked, batch_size=2)
    want = [[] for _ in range(2)]
    with torch.no_grad():
        for p, r in enc:
            hs = model(torch.tensor([p + r]), output_hidden_states=True).hidden_states[1:]
            for layer, h in enumerate(hs):
                want[layer].append(h[0, len(p):].double().numpy())
    assert n_tok == 10 and len(got) == 2
    for layer in range(2):
        np.testing.assert_allclose(got[layer], np.concatenate(want[layer])[picked], rtol=1e-4, atol=1e-5)


def test_planted_linear_and_quadratic_layer_outputs(tmp_path):
    steps = [0, 10, 30, 60]
    _series(tmp_path / "lin", steps, lambda t: t / 60)
    # float32 on any device: --dtype auto means bfloat16 on a GPU, too coarse for an exact R^2 of 1
    rep = analyze_activations(tmp_path / "lin", tmp_path / "out", probes=PROBES, dtype="float32", progress=False)
    assert rep["steps"] == steps and rep["n_layers"] == 2 and rep["hidden_size"] == 32
    assert rep["n_tokens"] == rep["n_tokens_used"] == 10
    first = rep["per_layer"][0]
    assert first["n_coordinates"] == 320 and first["n_constant"] == 0
    assert first["mean_r2"] == pytest.approx(1.0, abs=1e-6) and first["frac_r2_above_0.7"] == 1.0
    assert rep["activation"]["n_analyzed"] == rep["n_coordinates"] - sum(r["n_constant"] for r in rep["per_layer"])
    out = tmp_path / "out"
    assert json.loads((out / "activations.json").read_text())["per_layer"] == rep["per_layer"]
    for png in ("r2_activation_histogram.png", "r2_per_layer.png", "activation_trajectories.png"):
        assert (out / png).stat().st_size > 1000
    # quadratic in the step: every coordinate of layer 0's output has R^2 = corr(t, t^2)^2 exactly
    qsteps = [0, 1, 2, 3, 4]
    _series(tmp_path / "quad", qsteps, lambda t: (t / 4) ** 2)
    q = analyze_activations(tmp_path / "quad", None, probes=PROBES, dtype="float32", progress=False)
    t = np.array(qsteps, float)
    want = np.corrcoef(t, t ** 2)[0, 1] ** 2
    assert q["per_layer"][0]["mean_r2"] == pytest.approx(want, abs=1e-5)
    assert q["per_layer"][0]["frac_r2_above_0.7"] == 1.0 and want < 0.97


def test_token_subset_is_seeded_and_bounded(tmp_path):
    _series(tmp_path / "run", [0, 1, 2], lambda t: t)
    a = analyze_activations(tmp_path / "run", None, probes=PROBES, max_tokens=4, seed=3, progress=False)
    b = analyze_activations(tmp_path / "run", None, probes=PROBES, max_tokens=4, seed=3, progress=False)
    assert a["n_tokens_used"] == 4 and a["per_layer"][0]["n_coordinates"] == 4 * 32
    assert a["per_layer"] == b["per_layer"]
    with pytest.raises(RLExtraError, match="--max-tokens"):
        analyze_activations(tmp_path / "run", None, probes=PROBES, max_tokens=0, progress=False)


def test_cli_end_to_end_with_generated_probes(tmp_path, capsys):
    _series(tmp_path / "run", [0, 10, 20], lambda t: t / 20)
    rc = main(["analyze", "activations", str(tmp_path / "run"), "--generate", "4", "--digits", "1",
               "--n-train", "20", "--n-test", "10", "--max-new-tokens", "4", "--max-tokens", "0",
               "--dtype", "float32", "-o", str(tmp_path / "a"), "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "2 layers x 32 dimensions" in out and "per layer mean R^2" in out
    rep = json.loads((tmp_path / "a" / "activations.json").read_text())
    assert rep["kind"] == "activations" and rep["options"]["max_tokens"] is None
    assert rep["per_layer"][0]["mean_r2"] == pytest.approx(1.0, abs=1e-6)
    assert 1 <= len((tmp_path / "a" / "probes.jsonl").read_text().splitlines()) <= 4
    assert main(["analyze", "activations", str(tmp_path / "run"), "--probes", str(tmp_path / "nope.jsonl"),
                 "-o", str(tmp_path / "b"), "-q"]) == 2
    assert not (tmp_path / "b").exists()
