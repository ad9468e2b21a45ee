"""The embedded demo in --quick mode: every stage runs and the report states what was measured."""

import json

from rlextra.cli import main


def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(f"[demo {i}/6]" in printed for i in range(1, 7))
    res = json.loads((out / "results.json").read_text())
    frac = res["linearity"]["frac_r2_above_0.7"]
    assert 0 <= frac <= 1
    report = (out / "report.md").read_text()
    assert f"{100 * frac:.1f}% have R² > 0.7" in report
    steps = sorted(int(s) for s in res["eval"]["real"])
    assert steps == [0, 5, 10, 15, 20]
    assert sorted(int(s) for s in res["eval"]["extrapolated"]) == [15, 20, 30]
    assert sorted(int(s) for s in res["eval"]["logits"]) == [15, 20, 30]
    assert sorted(int(s) for s in res["eval"]["rl_extra"]) == steps
    assert "RL-Extra" in report
    assert res["output_linearity"]["n_tokens"] > 0
    for kind in ("real", "extrapolated", "logits", "rl_extra"):
        for m in res["eval"][kind].values():
            assert 0 <= m["avg@4"] <= m["pass@4"] <= 1
    for png in ("accuracy_vs_step.png", "weights/r2_histogram.png", "weights/r2_heatmap.png"):
        assert (out / png).stat().st_size > 1000
    assert (out / "extrapolated" / "step-30" / "rlextra.json").exists()
    assert main(["demo", "--quick", "-o", str(out)]) == 2  # exists: needs --overwrite
