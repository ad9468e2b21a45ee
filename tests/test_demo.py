"""The embedded demo in --quick mode: every stage runs and the report states what was measured."""

import json

import numpy as np
import pytest

from conftest import assert_plot, numpy_r2
from rlextra.checkpoints import load_series, read_values
from rlextra.cli import main


@pytest.mark.slow
def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(f"[demo {i}/7]" in printed for i in range(1, 8))
    res = json.loads((out / "results.json").read_text())
    frac = res["linearity"]["frac_r2_above_0.7"]
    # the fraction the demo reports is the one of its own run: recomputed over every parameter
    series = load_series(out / "run")
    floats = [n for n in series.names if series.newest.tensors[n].is_float]
    r2 = np.concatenate([numpy_r2(series.steps, np.stack([read_values(ref, 0, ref.numel) for ref in series.refs(n)]))
                         for n in floats])
    assert frac == pytest.approx(float(np.mean(r2[np.isfinite(r2)] > 0.7)), abs=1e-4)
    report = (out / "report.md").read_text()
    assert f"**{100 * frac:.1f}%**" in report  # rlextra's full-coverage figure
    paper = res["linearity_paper_filters"]
    assert paper["n_params_analyzed"] < res["linearity"]["n_params_analyzed"]  # the paper's filters drop some
    assert f"**{100 * paper['frac_r2_above_0.7']:.1f}%**" in report
    assert res["output_linearity"]["filter"]["token_filter"] == "endpoints"
    assert 0 < res["activation_linearity"]["n_analyzed"]
    steps = sorted(int(s) for s in res["eval"]["real"])
    assert steps == [0, 5, 10, 15, 20]
    assert sorted(int(s) for s in res["eval"]["extrapolated"]) == [15, 20, 30]
    assert sorted(int(s) for s in res["eval"]["logits"]) == [15, 20, 30]
    assert sorted(int(s) for s in res["eval"]["rl_extra"]) == steps
    assert "RL-Extra" in report
    from rlextra.rl.models import char_tokenizer

    tok = char_tokenizer()  # every response token of the probes is counted, once
    probes = [json.loads(x) for x in (out / "outputs" / "probes.jsonl").read_text().splitlines()]
    assert res["output_linearity"]["n_tokens"] == sum(
        len(tok(p["response"], add_special_tokens=False)["input_ids"]) for p in probes) > 0
    for kind in ("real", "extrapolated", "logits", "rl_extra"):
        for m in res["eval"][kind].values():
            assert 0 <= m["avg@4"] <= m["pass@4"] <= 1
    for png in ("accuracy_vs_step.png", "weights/r2_histogram.png", "weights/r2_heatmap.png",
                "linearity_vs_step.png"):
        assert_plot(out / png)
    prov = json.loads((out / "extrapolated" / "step-30" / "rlextra.json").read_text())
    assert (prov["method"], prov["steps"], prov["target_step"], prov["alpha"]) == ("two-point", [0, 10], 30.0, 3.0)
    # every scored model went through the same decoder (rlextra's engine) with the same sampling
    evals = [json.loads(p.read_text()) for p in (out / "eval").glob("*.json")]
    assert len(evals) == 5 + 5 + 3 + 3 + 6 + 6  # real, RL-Extra, weights, logits, and 6 + 6 past the end
    beyond = res["beyond_the_end"]
    assert [(r["b"], r["alpha"], r["target_step"]) for r in beyond] == [
        (0, 1.25, 25), (0, 1.5, 30), (0, 2.0, 40), (10, 1.25, 22.5), (10, 1.5, 25), (10, 2.0, 30)]
    for r in beyond:  # each difference is the accuracies' difference, with a finite paired error
        for kind in ("weights", "logits"):
            c = r[kind]
            assert c["minus_last"] == pytest.approx(c["avg@4"] - res["eval"]["real"]["20"]["avg@4"], abs=1e-12)
            assert 0 <= c["se"] < 0.2
    assert "## 5. Beyond the end of the run" in report and "| (10, 20) | 1.25 | 22.5 |" in report
    assert all(e["backend"] == "rlextra" or e["backend"].startswith("logits-extrapolation") for e in evals)
    assert len({json.dumps(e["sampling"], sort_keys=True) for e in evals}) == 1
    bt = json.loads((out / "backtest" / "backtest.json").read_text())
    assert set(res["backtest_recommendation"]) == {"two-point", "lsq", "low-rank"} == set(bt["recommendation"])
    assert main(["demo", "--quick", "-o", str(out)]) == 2  # exists: needs --overwrite
