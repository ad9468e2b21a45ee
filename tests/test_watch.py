"""``rlextra watch``: follow a run folder, report equal to analyze weights on the same sample."""

import json
import shutil
import threading
import time

import pytest

from rlextra.analysis.watch import complete_checkpoints, watch
from rlextra.analysis.weights import analyze_weights
from rlextra.cli import main
from synthetic import checkpoint_dir, tiny_llama_config, write_synthetic_series

STEPS = [0, 10, 20, 30, 40, 50]
KEYS = ("steps", "n_params", "n_params_analyzed", "n_params_constant", "global", "tensors")


def _same_report(watched: dict, analyzed: dict) -> None:
    for key in KEYS:
        assert watched[key] == analyzed[key], key


@pytest.mark.parametrize("layout", ["trainer", "verl"])
def test_once_equals_analyze_weights_on_the_same_sample(tmp_path, layout):
    run = tmp_path / "run"
    write_synthetic_series(run, tiny_llama_config(), STEPS, layout=layout, noise=3e-3)
    res = watch(run, tmp_path / "live", sample=0.1, seed=2, once=True, plots=False, progress=False)
    assert res["steps"] == STEPS
    watched = json.loads((tmp_path / "live" / "weights.json").read_text())
    _same_report(watched, analyze_weights(run, sample=0.1, seed=2, plots=False, progress=False))
    rows = [json.loads(x) for x in (tmp_path / "live" / "linearity.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == STEPS[2:]
    assert 0 < rows[-1]["mean_r2"] < 1 and rows[-1]["backtest"]["two-point"]["weight_error"] > 0
    bt = json.loads((tmp_path / "live" / "backtest.json").read_text())
    assert {p["method"] for p in bt["predictions"]} == {"two-point", "lsq"}


def test_a_folder_filled_while_watch_runs(tmp_path):
    """Checkpoints appear one by one, each first half-written; watch takes each once complete, and
    its final report equals analyze weights over the finished series."""
    src, run = tmp_path / "src", tmp_path / "run"
    write_synthetic_series(src, tiny_llama_config(), STEPS, noise=3e-3)
    run.mkdir()

    def trainer():
        for step in STEPS:
            time.sleep(0.15)
            dest = checkpoint_dir(run, step, "trainer")
            dest.mkdir()
            shutil.copy(src / f"checkpoint-{step}" / "config.json", dest)
            data = (src / f"checkpoint-{step}" / "model.safetensors").read_bytes()
            (dest / "model.safetensors").write_bytes(data[: len(data) // 2])  # a write in progress
            time.sleep(0.15)
            (dest / "model.safetensors").write_bytes(data)
            time.sleep(0.1)
            shutil.copy(src / f"checkpoint-{step}" / "trainer_state.json", dest)  # the Trainer's last file

    writer = threading.Thread(target=trainer)
    writer.start()
    res = watch(run, tmp_path / "live", sample=0.2, seed=1, until_step=STEPS[-1], poll_seconds=0.05,
                plots=False, progress=False, max_polls=2000)
    writer.join()
    assert res["steps"] == STEPS  # every checkpoint, each once, in order
    watched = json.loads((tmp_path / "live" / "weights.json").read_text())
    _same_report(watched, analyze_weights(run, sample=0.2, seed=1, plots=False, progress=False))


def test_incomplete_checkpoints_are_not_taken(tmp_path):
    run = tmp_path / "run"
    folders = write_synthetic_series(run, tiny_llama_config(), [0, 10, 20])
    (folders[1] / "trainer_state.json").unlink()  # the Trainer has not finished this one
    data = (folders[2] / "model.safetensors").read_bytes()
    (folders[2] / "model.safetensors").write_bytes(data[:-100])  # truncated
    assert [c.step for c in complete_checkpoints(run)] == [0]


def test_cli_once_and_one_line_errors(tmp_path, capsys):
    run = tmp_path / "run"
    write_synthetic_series(run, tiny_llama_config(), STEPS)
    assert main(["watch", str(run), "-o", str(tmp_path / "live"), "--once", "--sample", "1", "-q"]) == 0
    out = capsys.readouterr().out
    assert "6 checkpoints (steps 0..50)" in out and "in-flight weight error" in out
    for name in ("weights.json", "linearity.jsonl", "backtest.json", "linearity_vs_step.png", "r2_histogram.png"):
        assert (tmp_path / "live" / name).is_file(), name
    before = sorted(p.name for p in run.iterdir())
    for argv, needle in ((["watch", str(tmp_path / "nope"), "-o", str(tmp_path / "o2"), "--once"], "no such run"),
                         (["watch", str(run), "-o", str(run / "live"), "--once"], "into or over input"),
                         (["watch", str(run), "-o", str(tmp_path / "live"), "--once"], "exists"),
                         (["watch", str(run), "-o", str(tmp_path / "o3"), "--sample", "0"], "--sample")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    assert sorted(p.name for p in run.iterdir()) == before
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_sigterm_leaves_the_last_complete_report(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    write_synthetic_series(run, tiny_llama_config(), STEPS[:4])
    out = tmp_path / "live"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rlextra.cli", "watch", str(run), "-o", str(out), "--sample", "1",
                             "--poll-seconds", "0.2", "-q"], stderr=subprocess.PIPE, text=True, env=env)
    def steps():
        try:
            return json.loads((out / "watch.json").read_text())["steps"]
        except (OSError, ValueError):
            return []

    deadline = time.time() + 120
    while steps() != STEPS[:4] and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # now it is waiting for the next checkpoint
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "last complete report" in err and len(err.strip().splitlines()) == 1
    assert steps() == STEPS[:4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live", "run"]  # no temporary or lock left


def test_watch_reports_the_lr_headroom_of_each_window(tmp_path, capsys):
    """A nearly straight series has headroom (rlextra's heuristic: the largest alpha whose in-flight
    error stays below 0.8); a noisy one has none. The headroom is in every row, watch.json and the CLI."""
    from rlextra.extrapolate.headroom import lr_headroom

    for noise, room in ((1e-5, True), (3e-1, False)):
        run, live = tmp_path / f"run{noise}", tmp_path / f"live{noise}"
        write_synthetic_series(run, tiny_llama_config(), [0, 2, 4, 6, 8, 10, 12], noise=noise)
        assert main(["watch", str(run), "-o", str(live), "--once", "--sample", "0.1", "--no-plots", "-q"]) == 0
        rows = [json.loads(x) for x in (live / "linearity.jsonl").read_text().splitlines()]
        assert all("lr_headroom" in r for r in rows)
        last = rows[-1]["lr_headroom"]
        assert last == lr_headroom(rows[-3:]) and last["rows"] == [8, 10, 12]
        assert (last["multiplier"] >= 2) if room else (last["multiplier"] == 1.0)
        assert json.loads((live / "watch.json").read_text())["lr_headroom"] == last
        assert f"lr headroom x{last['multiplier']:g}" in capsys.readouterr().out


def test_watch_names_what_it_skipped_and_why(tmp_path, capsys):
    run = tmp_path / "run"
    folders = write_synthetic_series(run, tiny_llama_config(), [0, 10, 20, 30, 40], noise=3e-3)
    weights = folders[2] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # checkpoint-20 cut short
    (folders[3] / "trainer_state.json").unlink()  # checkpoint-30 not finished by the Trainer
    res = watch(run, tmp_path / "live", sample=0.1, once=True, plots=False, progress=False)
    assert res["steps"] == [0, 10, 40]
    skipped = {s["path"].rsplit("/", 1)[1]: s["why"] for s in
               json.loads((tmp_path / "live" / "watch.json").read_text())["skipped"]}
    assert set(skipped) == {"checkpoint-20", "checkpoint-30"}
    assert "model.safetensors" in skipped["checkpoint-20"] and "trainer_state.json" in skipped["checkpoint-30"]
    err = capsys.readouterr().err
    assert "skipped" in err and "checkpoint-20" in err and "checkpoint-30" in err


def test_watch_once_reads_save_pretrained_folders_without_the_trainers_marker(tmp_path):
    run = tmp_path / "run"
    for folder in write_synthetic_series(run, tiny_llama_config(), STEPS, noise=3e-3):
        (folder / "trainer_state.json").unlink()  # save_pretrained folders: no checkpoint has the marker
    res = watch(run, tmp_path / "live", sample=0.1, once=True, plots=False, progress=False)
    assert res["steps"] == STEPS


def test_a_stop_before_watch_wrote_anything_says_nothing_was_written(tmp_path, monkeypatch, capsys):
    import rlextra.cli as cli
    from rlextra.io import Terminated

    def stopped(*a, **k):
        raise Terminated(15)

    monkeypatch.setattr(cli, "watch", stopped)
    (tmp_path / "run").mkdir()
    assert main(["watch", str(tmp_path / "run"), "-o", str(tmp_path / "live")]) == 143
    assert "terminated by SIGTERM; nothing was written" in capsys.readouterr().err
