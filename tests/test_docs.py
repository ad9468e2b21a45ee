"""Docs that cannot rot: every `rlextra ...` command line in README.md parses with the current CLI (the
parser only, nothing runs), and every relative link and #anchor resolves."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from rlextra.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md") if (ROOT / "docs").is_dir() else [])


def command_lines(text: str) -> list[str]:
    """The `rlextra ...` lines of the fenced code blocks, continuation lines (a trailing backslash)
    joined, comments and shell decorations (`&`, `; wait`, `[...]` optional parts) removed."""
    out, blocks, current, lang = [], [], None, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if current is None:
                current, lang = [], line.strip()[3:].strip()
            else:
                if lang in ("", "bash", "sh", "console", "shell"):
                    blocks.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if not line.startswith("rlextra "):
                continue
            line = re.sub(r"\s+#.*$", "", line)  # a comment after the command
            line = re.sub(r"\s*\[[^\]]*\]", "", line)  # [--device cuda]: an optional part shown in brackets
            line = re.sub(r"\s*(&|; wait)\s*$", "", line)
            out.append(line)
    return out


def parses(line: str) -> str | None:
    """None when the CLI parses ``line``; else what argparse said."""
    import contextlib
    import io

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args(shlex.split(line)[1:])
    except SystemExit as exc:
        return err.getvalue().strip().splitlines()[-1] if exc.code else None
    return None


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_the_checker_catches_a_broken_command_and_a_broken_link(tmp_path):
    assert parses("rlextra analyze weights runs/grpo/ -o out") is None
    assert "unrecognized arguments: --no-such-flag" in parses("rlextra analyze weights runs/ -o o --no-such-flag")
    assert parses("rlextra no-such-command") is not None
    broken = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# A heading\n")
    broken.write_text("[x](missing.md) [y](#nowhere) [z](other.md#a-heading) [w](other.md#gone)\n# Here\n")
    assert set(bad_links(broken)) == {"missing.md", "#nowhere", "other.md#gone"}


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_documented_command_parses(doc):
    lines = command_lines(doc.read_text())
    assert lines or doc.name != "README.md", f"{doc}: no command found (the extraction broke?)"
    bad = {line: parses(line) for line in lines if parses(line)}
    assert not bad, bad


def bad_links(doc: Path) -> list[str]:
    text = doc.read_text()
    anchors = {slug(h) for h in re.findall(r"^#+\s+(.*)$", text, re.MULTILINE)}
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        if path and not (doc.parent / path).exists():
            bad.append(target)
        elif anchor:
            other = anchors if not path else {slug(h) for h in re.findall(
                r"^#+\s+(.*)$", (doc.parent / path).read_text(), re.MULTILINE)} if path.endswith(".md") else None
            if other is not None and anchor not in other:
                bad.append(target)
    return bad


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_relative_link_and_anchor_resolves(doc):
    assert bad_links(doc) == []


def test_the_readme_findings_come_from_committed_files():
    """Each number of the README's findings table is recomputed from the committed record it cites."""
    import json

    readme = (ROOT / "README.md").read_text()
    runs = json.loads((ROOT / "bench/results/batch_sweep.json").read_text())["runs"]
    last = {k: r["curve"][-1]["acc"] for k, r in runs.items()}
    cells = [(b, s) for b in ("32x8", "128x16", "512x16") for s in (1, 2) if f"{b}-grpo-lr2-seed{s}" in runs]
    gains = [last[f"{b}-grpo-lr2-seed{s}"] - last[f"{b}-grpo-seed{s}"] for b, s in cells]
    assert f"+{min(gains):.3f} to +{max(gains):.3f} over GRPO" in readme
    losses = [last[f"{b}-grpo-seed{s}"] - last[f"{b}-paper-seed{s}"] for b, s in cells
              if b != "512x16" and f"{b}-paper-seed{s}" in runs]
    assert f"lost {min(losses):.2f}-{max(losses):.2f} at small batches" in readme
    assert f"gained +{last['512x16-paper-seed1'] - last['512x16-grpo-seed1']:.3f} at 512 x 16" in readme
    curves = json.loads((ROOT / "experiments/smollm2/long/curves.json").read_text())
    paper, lr6 = (curves["runs"][k]["150"]["acc"] for k in ("rlextra-20-100-lr1e-06", "grpo-lr6e-06"))
    assert f"({paper:.3f} vs {lr6:.3f} at 150)" in readme
    a = curves["analysis"]
    kept = a["weights_paper_filters"]["n_params_analyzed"] / a["weights"]["n_params_analyzed"]
    assert f"{a['weights_paper_filters']['frac_r2_above_0.7']:.0%} of the {kept:.2%} of entries its filters keep" \
        in readme
    assert f"{a['weights']['frac_r2_above_0.7']:.0%} of all entries with R² > 0.7" in readme


def test_the_readme_lr_sweep_row_comes_from_the_sweeps_summary():
    import json

    readme = (ROOT / "README.md").read_text()
    summary = json.loads((ROOT / "bench/results/lr_sweep_summary.json").read_text())
    n = summary["n"]
    assert f"within 2x of the sweep's best in {summary['hits']} of {n} cells (a constant x2 did in " \
           f"{summary['constant_hits']['x2']})" in readme
    auto = summary["lr_auto"]
    within = sum(r["last_minus_best"] >= -r["se"] for r in auto)
    assert len(auto) == n and f"within one SE of the sweep-best in {within} of {n}" in readme
    worst = sorted(-r["worst_vs_x1_in_se"] for r in auto if r["worst_vs_x1_in_se"] < -1)
    assert f"fell {worst[0]:.1f}-{worst[-1]:.1f} SE below GRPO x1" in readme
    from rlextra.extrapolate.headroom import HEURISTIC

    assert f"in {summary['hits']} of {n} tiny-model cells" in HEURISTIC


def test_the_readme_and_docs_fp32_bf16_numbers_come_from_the_committed_measurement():
    import json

    res = json.loads((ROOT / "experiments/smollm2/long/bf16_staircase_lr1e-06.json").read_text())
    fp32, bf16 = f"{100 * res['fp32']['constant']:.2f}%", f"{100 * res['bf16']['constant']:.2f}%"
    for doc in ("README.md", "docs/measure.md"):
        text = (ROOT / doc).read_text()
        assert fp32 in text and bf16 in text, doc
    assert f"{res['fp32']['mean_r2']:.3f} / {res['bf16']['mean_r2']:.3f}" in (ROOT / "docs/measure.md").read_text()
    x12 = json.loads((ROOT / "experiments/smollm2/long/bf16_staircase_lr1.2e-05.json").read_text())
    row = (f"{100 * x12['fp32']['constant']:.2f}% | {100 * x12['bf16']['constant']:.2f}% | "
           f"{x12['fp32']['mean_r2']:.3f} / {x12['bf16']['mean_r2']:.3f}")
    assert row in (ROOT / "docs/measure.md").read_text()


def test_the_readme_whole_command_times_are_the_benchs():
    import json

    r = json.loads((ROOT / "bench/results/whole_commands.json").read_text())["median_s"]
    readme = (ROOT / "README.md").read_text()
    for key in ("rlextra --help", "135m: analyze weights", "135m: backtest two-point,lsq", "135m: watch --once",
                "135m: cat (read floor)", "135m: extrapolate", "tiny: extrapolate", "1.5b: analyze weights",
                "1.5b: cat (read floor)"):
        assert f"{r[key]:.2f} s" in readme, key


def test_the_readme_vllm_numbers_are_the_benchs():
    import json

    d = json.loads((ROOT / "bench/results/vllm_decoding.json").read_text())
    rate = {(r["decoder"], r["batch"]): r["tok_per_s"] for r in d["rows"]}
    readme = (ROOT / "README.md").read_text()
    one, two = rate[("vllm", 64)] / rate[("rlextra", 64)], rate[("vllm K=2", 64)] / rate[("rlextra K=2", 64)]
    assert f"decoded {one:.1f}x (one model) and {two:.1f}x" in readme
    assert f"after a {d['vllm_engine_start_s']} s" in readme
