import json

import numpy as np
import pytest
import torch

from rlextra.analysis.outputs import analyze_outputs, encode_probes, load_probes, teacher_force
from rlextra.cli import main
from rlextra.errors import RLExtraError
from rlextra.rl.models import char_tokenizer, save_model, tiny_llama
from rlextra.tasks import TaskSpec, load_task

PROBES = [{"prompt": "12+3=", "response": "15"}, {"prompt": "7+7=", "response": "14\n7+"},
          {"prompt": "123+456=", "response": "579"}]


def test_teacher_forcing_batched_equals_direct_per_sequence():
    tok = char_tokenizer()
    model = tiny_llama(tok, hidden=32, layers=2, intermediate=64).eval()
    enc = encode_probes(tok, PROBES)
    lp, lg = teacher_force(model, enc, tok.pad_token_id, batch_size=3)
    want_lp, want_lg = [], []
    with torch.no_grad():
        for p, r in enc:
            z = model(torch.tensor([p + r])).logits[0, len(p) - 1:-1].double()
            want_lp.append(torch.log_softmax(z, -1).gather(-1, torch.tensor(r)[:, None]).squeeze(-1).numpy())
            want_lg.append(z.gather(-1, torch.tensor(r)[:, None]).squeeze(-1).numpy())
    np.testing.assert_allclose(lp, np.concatenate(want_lp), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lg, np.concatenate(want_lg), rtol=1e-4, atol=1e-5)
    assert len(lp) == sum(len(r) for _, r in enc) == 2 + 5 + 3


def _linear_head_series(root):
    """Checkpoints identical except lm_head moving on a line: every logit is exactly linear in t."""
    tok = char_tokenizer()
    base = tiny_llama(tok, hidden=32, layers=2, intermediate=64, seed=0)
    direction = torch.randn_like(base.lm_head.weight) * 0.05
    w0 = base.lm_head.weight.detach().clone()
    for t in (0, 10, 20, 30):
        with torch.no_grad():
            base.lm_head.weight.copy_(w0 + t * direction)
        save_model(base, tok, root / f"step_{t}")
    return tok


def test_planted_linear_logits_have_r2_one(tmp_path):
    _linear_head_series(tmp_path / "run")
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROBES))
    # float32 on any device: --dtype auto means bfloat16 on a GPU, too coarse for an exact R^2 of 1
    rep = analyze_outputs(tmp_path / "run", tmp_path / "out", probes=tmp_path / "p.jsonl",
                          min_logprob_change=0.0, dtype="float32", progress=False)
    assert rep["steps"] == [0, 10, 20, 30] and rep["n_tokens"] == 10
    assert rep["logit"]["n_analyzed"] == 10
    assert rep["logit"]["mean_r2"] == pytest.approx(1.0, abs=1e-6)
    assert rep["filter"] == {"token_filter": "endpoints", "min_logprob_change": 0.0, "n_tokens_kept": 10,
                             "n_tokens_dropped": 0, "n_tokens_kept_endpoints": 10, "n_tokens_kept_range": 10}
    assert len(rep["mean_token_logprob"]) == 4
    out = tmp_path / "out"
    assert json.loads((out / "outputs.json").read_text())["logit"] == rep["logit"]
    assert len((out / "probes.jsonl").read_text().splitlines()) == 3
    for png in ("r2_logprob_histogram.png", "r2_logit_histogram.png", "token_trajectories.png",
                "mean_logprob_vs_step.png"):
        assert (out / png).stat().st_size > 1000
    strict = analyze_outputs(tmp_path / "run", None, probes=tmp_path / "p.jsonl", min_logprob_change=100.0,
                             progress=False)
    assert strict["filter"]["n_tokens_kept"] == 0 and strict["logprob"]["mean_r2"] is None


def test_generate_probes_via_cli(tmp_path, capsys):
    _linear_head_series(tmp_path / "run")
    rc = main(["analyze", "outputs", str(tmp_path / "run"), "--generate", "5", "--digits", "1",
               "--n-train", "20", "--n-test", "10", "--max-new-tokens", "4", "-o", str(tmp_path / "o"), "-q"])
    assert rc == 0
    assert "logit: R^2" in capsys.readouterr().out
    probes = [json.loads(x) for x in (tmp_path / "o" / "probes.jsonl").read_text().splitlines()]
    held_out = [p.prompt for p in load_task(TaskSpec(digits=1, n_train=20, n_test=10)).test[:5]]
    # one sampled response per held-out prompt, in order; a prompt drops out only if its response is empty
    assert [p["prompt"] for p in probes] == [q for q in held_out if q in {p["prompt"] for p in probes}]
    assert probes and all(p["response"] for p in probes)
    assert json.loads((tmp_path / "o" / "outputs.json").read_text())["n_probes"] == len(probes)


def test_bad_probes(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a"}\n')
    with pytest.raises(RLExtraError, match=r"p.jsonl:1: needs 'prompt' and 'response'"):
        load_probes(f)
    f.write_text("")
    with pytest.raises(RLExtraError, match="no probes"):
        load_probes(f)


def test_token_filters_endpoints_vs_range():
    from rlextra.analysis.outputs import token_filter_mask
    from rlextra.linefit import LineFit

    # columns: rises and falls back; steady rise; endpoint change exactly 0.2; flat
    ys = np.array([[0.0, 0.0, 0.0, 1.0], [0.5, 0.15, 0.1, 1.0], [0.0, 0.3, 0.2, 1.0]])
    fit = LineFit([0, 1, 2], 4, track_range=True)
    for y in ys:
        fit.add(y)
    assert token_filter_mask(fit, "endpoints", 0.2).tolist() == [False, True, False, False]
    assert token_filter_mask(fit, "range", 0.2).tolist() == [True, True, True, False]
    with pytest.raises(RLExtraError, match="--token-filter"):
        token_filter_mask(fit, "bogus", 0.2)


def test_report_gives_both_filters(tmp_path):
    _linear_head_series(tmp_path / "run")
    rep = analyze_outputs(tmp_path / "run", None, probes=PROBES, token_filter="range", progress=False)
    f, bf = rep["filter"], rep["by_filter"]
    assert f["token_filter"] == "range" and f["n_tokens_kept"] == f["n_tokens_kept_range"]
    assert bf["range"]["n_tokens_kept"] == f["n_tokens_kept_range"]
    assert bf["endpoints"]["n_tokens_kept"] == f["n_tokens_kept_endpoints"] <= f["n_tokens_kept_range"]
    assert rep["logprob"] == bf["range"]["logprob"]
    with pytest.raises(RLExtraError, match="--token-filter"):
        analyze_outputs(tmp_path / "run", None, probes=PROBES, token_filter="max", progress=False)
