"""Every command, run in-process on bad input: a non-zero exit, one line naming the file or option,
no traceback, nothing new on disk and every input byte-identical. Then signals and races."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_ckpt
from rlextra.cli import main
from rlextra.errors import RLExtraError

W = {"model.layers.0.mlp.up_proj.weight": np.arange(12.0).reshape(3, 4), "model.norm.weight": np.ones(4)}


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under root with the hash of its bytes (links by target): what 'unchanged' means."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace of inputs, good and bad, shared by every case (the cases never change it)."""
    from rlextra.rl.models import char_tokenizer, save_model, tiny_llama

    root = tmp_path_factory.mktemp("bad")
    tok = char_tokenizer()
    save_model(tiny_llama(tok, hidden=16, layers=1, heads=2, intermediate=32), tok, root / "model")
    for k in range(3):
        write_ckpt(root / "run" / f"checkpoint-{10 * k}", {n: v + k for n, v in W.items()}, trainer_step=10 * k)
    (root / "prompts.jsonl").write_text('"1+1="\n{"prompt": "2+2="}\n')
    (root / "empty.jsonl").write_text("\n")
    (root / "latin1.jsonl").write_bytes('"caf\xe9"\n'.encode("latin-1"))
    (root / "long.jsonl").write_text(json.dumps("1+1=" * 40) + "\n")
    (root / "probes.jsonl").write_text('{"prompt": "1+1=", "response": "2"}\n')
    (root / "file.txt").write_text("a file\n")
    (root / "existing").mkdir()
    (root / "here").mkdir()  # the working folder of every case: "-o ." points here, never at the repo
    (root / "existing" / "keep.txt").write_text("keep\n")
    (root / "out.jsonl").write_text("old\n")
    # bad model folders
    for name in ("trunc", "nonjson", "listmap", "intmap", "bin"):
        (root / name).mkdir()
        (root / name / "config.json").write_bytes((root / "model" / "config.json").read_bytes())
    st = (root / "model" / "model.safetensors").read_bytes()
    (root / "trunc" / "model.safetensors").write_bytes(st[: len(st) // 2])
    (root / "nonjson" / "model.safetensors").write_bytes((16).to_bytes(8, "little") + b"not json at all!" + st[200:])
    (root / "listmap" / "model.safetensors.index.json").write_text('{"weight_map": ["a", "b"]}')
    (root / "intmap" / "model.safetensors.index.json").write_text('{"weight_map": {"a": 1}}')
    torch.save({"w": torch.ones(2)}, root / "bin" / "pytorch_model.bin")
    for k in range(3):  # a pickle-only series, a series with no float tensors, one with no tensors
        d = root / "binrun" / f"checkpoint-{k}"
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        torch.save({"w": torch.ones(2) * k}, d / "pytorch_model.bin")
        write_ckpt(root / "intrun" / f"checkpoint-{k}", {"ids": torch.arange(4) + k})
        write_ckpt(root / "emptyrun" / f"checkpoint-{k}", {})
    # analyze merge inputs
    for name, weights, acc in (("badjson", "{not json", "{}"), ("listjson", "[]", "{}"),
                               ("badhist", json.dumps({"shard": {"index": 0, "count": 1}, "steps": [0, 1, 2],
                                                       "options": {"min_change": None, "min_distinct": None},
                                                       "tensors": []}),
                                json.dumps({"hist_fine": [1, 2], "tensors": [], "examples": []}))):
        (root / name).mkdir()
        (root / name / "weights.json").write_text(weights)
        (root / name / "accumulators.json").write_text(acc)
    (root / "badstate").mkdir()
    (root / "badstate" / "loop_state.json").write_text("{truncated")
    (root / "loopy").symlink_to(root / "loopy2")
    (root / "loopy2").symlink_to(root / "loopy")
    return root


S = ["{R}/run/checkpoint-0", "{R}/run/checkpoint-10", "{R}/run/checkpoint-20"]
TWO = S[:2]
GEN = ["generate", "{R}/model", "--prompts", "{R}/prompts.jsonl", "-q"]
EVAL = ["eval", "{R}/model", "--task", "arithmetic", "--digits", "1", "--n-train", "10", "--n-test", "4",
        "--max-new-tokens", "2", "-q"]
TRAIN = ["train", "--model", "{R}/model", "--steps", "1", "--digits", "1", "--n-train", "10", "-q"]
LOOP = ["loop", "--model", "{R}/run/checkpoint-0", "--rl-extra", "1,1", "--cycles", "1",
        "--train-command", "touch {R}/ran", "-q"]
NEW = "{R}/new/out"
EX = ["extrapolate", *TWO, "-q"]
AW = ["analyze", "weights", *S, "-q", "--no-plots"]
AO = ["analyze", "outputs", *S, "-q", "--no-plots"]
AA = ["analyze", "activations", *S, "-q", "--no-plots"]

# (id, argv, words the one-line error must contain, words it must not contain, environment)
CASES = [
    # output guard: never into or over an input, never over an existing target without --overwrite
    ("generate-o-model-file", GEN + ["-o", "{R}/model/model.safetensors"], ["into or over input"], [], {}),
    ("generate-o-prompts", GEN + ["-o", "{R}/prompts.jsonl"], ["into or over input"], [], {}),
    ("generate-o-existing", GEN + ["-o", "{R}/out.jsonl"], ["already exists", "--overwrite"], [], {}),
    ("generate-o-dir", GEN + ["-o", "{R}/existing", "--overwrite"], ["not a file"], [], {}),
    ("generate-o-under-file", GEN + ["-o", "{R}/file.txt/g.jsonl"], ["file.txt: not a folder"], [], {}),
    ("eval-o-config", EVAL + ["-o", "{R}/model/config.json"], ["into or over input"], [], {}),
    ("eval-o-cwd", EVAL + ["-o", "."], ["-o"], [], {}),
    ("train-o-model", TRAIN + ["-o", "{R}/model"], ["into or over input"], [], {}),
    ("train-o-file", TRAIN + ["-o", "{R}/file.txt"], ["not a folder"], [], {}),
    ("train-o-foreign-dir", TRAIN + ["-o", "{R}/existing"], ["not an rlextra run folder"], [], {}),
    ("extrapolate-o-input", EX + ["--to-step", "20", "-o", "{R}/run/checkpoint-10/x"], ["into or over input"], [], {}),
    ("extrapolate-o-holds-input", EX + ["--to-step", "20", "-o", "{R}/run", "--overwrite"],
     ["into or over input"], [], {}),
    ("extrapolate-o-existing", EX + ["--to-step", "20", "-o", "{R}/existing"], ["already exists"], [], {}),
    ("extrapolate-o-dot", EX + ["--to-step", "20", "-o", ".", "--overwrite"], ["current folder"], [], {}),
    ("extrapolate-o-under-file", EX + ["--to-step", "20", "-o", "{R}/file.txt/x"], ["file.txt: not a folder"], [], {}),
    ("extrapolate-o-proc", EX + ["--to-step", "20", "-o", "/proc/rlextra-no/x"], ["/proc/rlextra-no"], [], {}),
    ("extrapolate-o-too-long", EX + ["--to-step", "20", "-o", "{R}/" + "n" * 300], ["longer than 255"], [], {}),
    ("extrapolate-o-symlink-loop", EX + ["--to-step", "20", "-o", "{R}/loopy/x"], ["loopy"], [], {}),
    ("weights-o-input", AW + ["-o", "{R}/run/checkpoint-0"], ["into or over input"], [], {}),
    ("outputs-o-input", AO + ["--probes", "{R}/probes.jsonl", "-o", "{R}/run/checkpoint-0/r"],
     ["into or over input"], [], {}),
    ("outputs-o-probes", AO + ["--probes", "{R}/probes.jsonl", "-o", "{R}/probes.jsonl", "--overwrite"],
     ["into or over input"], [], {}),
    ("activations-o-input", AA + ["--probes", "{R}/probes.jsonl", "-o", "{R}/run/checkpoint-20/r"],
     ["into or over input"], [], {}),
    ("activations-o-probes", AA + ["--probes", "{R}/probes.jsonl", "-o", "{R}/probes.jsonl", "--overwrite"],
     ["into or over input"], [], {}),
    ("backtest-o-input", ["backtest", *S, "-o", "{R}/run/checkpoint-0/b", "-q"], ["into or over input"], [], {}),
    ("backtest-o-holds-input", ["backtest", *S, "-o", "{R}/run", "--overwrite", "-q"], ["into or over input"], [], {}),
    ("merge-o-shard", ["analyze", "merge", "{R}/badhist", "-o", "{R}/badhist"], ["into or over input"], [], {}),
    ("tiny-model-o-existing", ["tiny-model", "-o", "{R}/existing", "-q"], ["already exists"], [], {}),
    ("demo-o-file", ["demo", "-o", "{R}/file.txt"], ["not a folder"], [], {}),
    ("demo-o-existing", ["demo", "-o", "{R}/existing"], ["already exists"], [], {}),
    ("loop-workdir-file", LOOP + ["--workdir", "{R}/file.txt"], ["not a folder"], [], {}),
    ("loop-workdir-model", LOOP + ["--workdir", "{R}/run/checkpoint-0/loop"], ["into or over input"], [], {}),
    # unreadable or malformed inputs
    ("eval-truncated", [*EVAL[:1], "{R}/trunc", *EVAL[2:], "-o", "{R}/e.json"], ["trunc", "not a valid safetensors"], [], {}),
    ("eval-nonjson-header", [*EVAL[:1], "{R}/nonjson", *EVAL[2:], "-o", "{R}/e.json"], ["nonjson", "safetensors"], [], {}),
    ("eval-weight-map-list", [*EVAL[:1], "{R}/listmap", *EVAL[2:], "-o", "{R}/e.json"], ["weight_map"], [], {}),
    ("eval-weight-map-int", [*EVAL[:1], "{R}/intmap", *EVAL[2:], "-o", "{R}/e.json"], ["weight_map"], [], {}),
    ("eval-pickle", [*EVAL[:1], "{R}/bin", *EVAL[2:], "-o", "{R}/e.json"], ["pickle checkpoint refused", "--allow-pickle"],
     [], {}),
    ("generate-pickle", ["generate", "{R}/bin", "--prompts", "{R}/prompts.jsonl", "-o", "{R}/g.jsonl", "-q"],
     ["pickle checkpoint refused", "--allow-pickle"], [], {}),
    ("outputs-pickle", ["analyze", "outputs", "{R}/binrun", "--probes", "{R}/probes.jsonl", "-o", NEW, "-q"],
     ["pickle checkpoint refused", "--allow-pickle"], [], {}),
    ("activations-pickle", ["analyze", "activations", "{R}/binrun", "--probes", "{R}/probes.jsonl", "-o", NEW, "-q"],
     ["pickle checkpoint refused", "--allow-pickle"], [], {}),
    ("weights-pickle-names-flag", ["analyze", "weights", "{R}/binrun", "-o", NEW, "-q"], ["--allow-pickle"], [], {}),
    ("train-truncated", ["train", "--model", "{R}/trunc", "-o", NEW, "-q"], ["not a valid safetensors"], [], {}),
    ("train-model-missing", ["train", "--model", "{R}/missing", "-o", NEW, "-q"], ["missing"], [], {}),
    ("extrapolate-weight-map", ["extrapolate", "0={R}/listmap", "10={R}/intmap", "--to-step", "5", "-o", NEW],
     ["weight_map"], [], {}),
    ("extrapolate-no-tensors", ["extrapolate", "{R}/emptyrun", "--to-step", "5", "-o", NEW, "-q"],
     ["holds no tensors", "emptyrun"], [".tmp-"], {}),
    ("weights-no-float", ["analyze", "weights", "{R}/intrun", "-o", NEW, "-q"], ["no floating-point tensors"], [], {}),
    ("merge-bad-json", ["analyze", "merge", "{R}/badjson", "-o", NEW], ["badjson", "not valid JSON"], [], {}),
    ("merge-list-json", ["analyze", "merge", "{R}/listjson", "-o", NEW], ["listjson", "malformed"], [], {}),
    ("merge-bad-histogram", ["analyze", "merge", "{R}/badhist", "-o", NEW], ["hist_fine"], [], {}),
    ("generate-non-utf8", ["generate", "{R}/model", "--prompts", "{R}/latin1.jsonl", "-o", NEW], ["latin1.jsonl", "UTF-8"], [], {}),
    ("generate-empty-prompts", ["generate", "{R}/model", "--prompts", "{R}/empty.jsonl", "-o", NEW], ["no prompts"], [], {}),
    ("generate-long-prompt", ["generate", "{R}/model", "--prompts", "{R}/long.jsonl", "-o", NEW, "-q"],
     ["long.jsonl: prompt 1", "max_position_embeddings"], [], {}),
    ("loop-bad-state", LOOP + ["--workdir", "{R}/badstate"], ["loop_state.json", "not valid JSON"], [], {}),
    ("loop-model-missing", ["loop", "--model", "{R}/missing", "--workdir", NEW, "--rl-extra", "1,1", "--cycles", "1",
                            "--train-command", "touch {R}/ran"], ["missing"], [], {}),
    ("loop-bad-template", LOOP + ["--workdir", NEW, "--train-command", "echo {"], ["--train-command"], [], {}),
    ("convert-gguf-dir", ["convert-gguf", "{R}/existing", "-o", NEW], ["is a folder"], [], {}),
    # numbers out of range
    ("generate-alpha-nan", ["generate", "{R}/model", "{R}/model", "--steps", "0,10", "--alpha", "nan",
                            "--prompts", "{R}/prompts.jsonl", "-o", NEW], ["--alpha"], [], {}),
    ("generate-k-0", GEN + ["-o", NEW, "--k", "0"], ["--k"], [], {}),
    ("generate-max-new-tokens", GEN + ["-o", NEW, "--max-new-tokens", "-5"], ["--max-new-tokens"], [], {}),
    ("generate-temperature-neg", GEN + ["-o", NEW, "--temperature", "-1"], ["--temperature"], [], {}),
    ("generate-temperature-nan", GEN + ["-o", NEW, "--temperature", "nan"], ["--temperature"], [], {}),
    ("generate-top-p-big", GEN + ["-o", NEW, "--top-p", "1.5"], ["--top-p"], [], {}),
    ("generate-top-p-neg", GEN + ["-o", NEW, "--top-p", "-1"], ["--top-p"], [], {}),
    ("generate-empty-stop", GEN + ["-o", NEW, "--stop", ""], ["--stop"], [], {}),
    ("eval-k-0", EVAL + ["-o", NEW, "--k", "0"], ["--k"], [], {}),
    ("eval-n-test-0", EVAL + ["-o", NEW, "--n-test", "0"], ["--n-test"], [], {}),
    ("eval-to-step-inf", EVAL + ["-o", NEW, "--extrapolate-from", "{R}/model", "--steps", "0,10", "--to-step", "inf"],
     ["--to-step"], [], {}),
    ("extrapolate-alpha-huge", EX + ["--alpha", "1e39", "-o", NEW], ["--alpha"], [], {}),
    ("extrapolate-to-step-nan", EX + ["--to-step", "nan", "-o", NEW], ["--to-step"], [], {}),
    ("extrapolate-step-1e19", ["extrapolate", *TWO, "--steps", "0,10000000000000000000", "--to-step", "5", "-o", NEW],
     ["out of range"], [], {}),
    ("extrapolate-min-r2-nan", ["extrapolate", *S, "--fit", "lsq", "--min-r2", "nan", "--to-step", "30", "-o", NEW],
     ["--min-r2"], [], {}),
    ("backtest-min-r2-nan", ["backtest", *S, "--min-r2", "nan", "-o", NEW, "-q"], ["--min-r2"], [], {}),
    ("weights-min-change-nan", AW + ["-o", NEW, "--min-change", "nan"], ["--min-change"], [], {}),
    ("weights-min-distinct-huge", AW + ["-o", NEW, "--min-distinct", "1000000"], ["--min-distinct"], [], {}),
    ("weights-world-size-abc", AW + ["-o", NEW], ["WORLD_SIZE"], [], {"WORLD_SIZE": "abc"}),
    ("weights-rank-5-of-2", AW + ["-o", NEW], ["RANK=5"], [], {"WORLD_SIZE": "2", "RANK": "5"}),
    ("outputs-generate-negative", AO + ["--generate", "-195", "-o", NEW], ["--generate"], [], {}),
    ("activations-generate-negative", AA + ["--generate", "-195", "-o", NEW], ["--generate"], [], {}),
    ("activations-max-tokens-negative", AA + ["--probes", "{R}/probes.jsonl", "--max-tokens", "-3", "-o", NEW],
     ["--max-tokens"], [], {}),
    ("outputs-min-change-nan", AO + ["--probes", "{R}/probes.jsonl", "--min-logprob-change", "nan", "-o", NEW],
     ["--min-logprob-change"], [], {}),
    ("train-num-generations-1", TRAIN + ["-o", NEW, "--num-generations", "1"], ["--num-generations"], [], {}),
    ("train-steps-0", TRAIN + ["-o", NEW, "--steps", "0"], ["--steps"], [], {}),
    ("train-save-every-0", TRAIN + ["-o", NEW, "--save-every", "0"], ["--save-every"], [], {}),
    ("train-top-p-0", TRAIN + ["-o", NEW, "--top-p", "0"], ["--top-p"], [], {}),
    ("train-auto-without-cycle", TRAIN + ["-o", NEW, "--rl-extra-auto"], ["--rl-extra-auto needs --rl-extra"], [], {}),
    ("train-auto-rank1", TRAIN + ["-o", NEW, "--rl-extra", "2,2", "--rl-extra-auto", "--rl-extra-method", "rank1"],
     ["no rank1"], [], {}),
    ("train-auto-threshold-nan", TRAIN + ["-o", NEW, "--rl-extra", "2,2", "--rl-extra-auto",
                                          "--rl-extra-auto-threshold", "nan"], ["--rl-extra-auto-threshold"], [], {}),
    ("train-monitor-every-0", TRAIN + ["-o", NEW, "--monitor-every", "0"], ["--monitor-every"], [], {}),
    ("train-monitor-window-2", TRAIN + ["-o", NEW, "--monitor-every", "1", "--monitor-window", "2"],
     ["--monitor-window"], [], {}),
    ("train-monitor-sample-2", TRAIN + ["-o", NEW, "--monitor-every", "1", "--monitor-sample", "2"],
     ["--monitor-sample"], [], {}),
    ("watch-o-run", ["watch", "{R}/run", "-o", "{R}/run/live", "--once", "-q"], ["into or over input"], [], {}),
    ("watch-no-run", ["watch", "{R}/missing", "-o", NEW, "--once", "-q"], ["no such run folder"], [], {}),
    ("watch-window-2", ["watch", "{R}/run", "-o", NEW, "--once", "--window", "2", "-q"], ["--window"], [], {}),
    ("watch-poll-0", ["watch", "{R}/run", "-o", NEW, "--poll-seconds", "0", "-q"], ["--poll-seconds"], [], {}),
    ("watch-no-checkpoint", ["watch", "{R}/existing", "-o", NEW, "--once", "-q"], ["no complete checkpoint"], [], {}),
    ("tiny-model-warmup-neg", ["tiny-model", "-o", NEW, "--warmup-steps", "-1", "-q"], ["--warmup-steps"], [], {}),
    ("generate-threads-0", GEN + ["-o", NEW, "--threads", "0"], ["--threads"], [], {}),
    ("eval-seed-negative", EVAL + ["-o", NEW, "--seed", "-1"], ["--seed"], [], {}),
    ("weights-seed-negative", AW + ["-o", NEW, "--seed", "-1"], ["--seed"], [], {}),
    ("outputs-seed-negative", AO + ["--probes", "{R}/probes.jsonl", "--seed", "-1", "-o", NEW], ["--seed"], [], {}),
    ("extrapolate-chunk-size-0", EX + ["--to-step", "20", "--chunk-size", "0", "-o", NEW], ["--chunk-size"], [], {}),
    ("extrapolate-shard-size", EX + ["--to-step", "20", "--max-shard-size", "lots", "-o", NEW], ["lots"], [], {}),
    ("eval-top-k-negative", EVAL + ["-o", NEW, "--top-k", "-1"], ["--top-k"], [], {}),
    ("eval-batch-size-0", EVAL + ["-o", NEW, "--batch-size", "0"], ["--batch-size"], [], {}),
    ("loop-cycles-0", LOOP + ["--workdir", NEW, "--cycles", "0"], ["--cycles"], [], {}),
]


@pytest.mark.parametrize("argv,must,must_not,env", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_cleanly(ws, argv, must, must_not, env, capsys, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(ws / "here")
    argv = [a.replace("{R}", str(ws)) for a in argv]
    before = _snapshot(ws)
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc not in (0, None), out
    assert err.endswith("\n") and err.count("rlextra:") == 1, err
    err = err.splitlines()[-1]  # above it, at most a library's progress bar
    assert err.startswith("rlextra: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    for word in must:
        assert word.replace("{R}", str(ws)) in err, err
    for word in must_not:
        assert word not in err, err
    assert _snapshot(ws) == before  # nothing new, nothing removed, every input byte-identical


# ----------------------------------------------------------------------------- signals
def _big_series(root: Path, k: int) -> list[str]:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2048, 1024)).astype(np.float32)
    return [str(write_ckpt(root / f"checkpoint-{10 * i}", {"model.layers.0.w": base + i, "model.norm.weight": np.ones(4)}))
            for i in range(k)]


def _default_signals() -> None:
    """In the child: default SIGTERM/SIGHUP, whatever the suite inherited (nohup ignores SIGHUP,
    and an ignored signal stays ignored across exec, which rlextra then rightly respects)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _signal_mid_write(argv: list[str], watch: Path, pattern: str, signum: int) -> subprocess.CompletedProcess:
    """Start the CLI, wait for its temporary output to appear, then send signum."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                       os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "rlextra.cli", *argv], env=env, preexec_fn=_default_signals,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.is_dir() and any(p.iterdir()) for p in watch.glob(pattern)):
        assert proc.poll() is None, f"finished before the signal: {proc.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("command,signum", [("extrapolate", signal.SIGTERM), ("weights-maps", signal.SIGHUP)])
def test_signal_mid_write_leaves_nothing(tmp_path, command, signum):
    inputs = _big_series(tmp_path / "run", 3)
    before = _snapshot(tmp_path)
    out = tmp_path / "out"
    if command == "extrapolate":
        argv = ["extrapolate", *inputs, "--fit", "lsq", "--to-step", "40", "--chunk-size", "512", "-q", "-o", str(out)]
    else:
        argv = ["analyze", "weights", *inputs, "--save-maps", "--chunk-size", "512", "-q", "-o", str(out)]
    for _ in range(3):  # on a loaded machine the run can finish between the check and the signal
        res = _signal_mid_write(argv, tmp_path, ".out.tmp-*", signum)
        if res.returncode != 0:
            break
        shutil.rmtree(out)  # that run beat the signal: its output is complete; try again
    name = signal.Signals(signum).name
    assert res.returncode == 128 + signum, res.stderr
    assert res.stderr.strip().splitlines()[-1] == f"rlextra: terminated by {name}; nothing was written", res.stderr
    assert "Traceback" not in res.stderr
    assert _snapshot(tmp_path) == before  # no .out.tmp-*, no lock file, no output, inputs unchanged


# ----------------------------------------------------------------------------- races
def test_two_writers_one_target_exactly_one_succeeds(tmp_path):
    from rlextra.extrapolate import extrapolate_weights

    ckpts = [str(write_ckpt(tmp_path / "run" / f"checkpoint-{s}", {"w": np.full((64, 64), float(s))}))
             for s in (0, 10)]
    for trial in range(4):
        out = tmp_path / f"out{trial}"
        results: list[object] = [None, None]
        gate = threading.Barrier(2)

        def write(i: int, target: float) -> None:
            gate.wait()
            try:
                extrapolate_weights(ckpts, out, to_step=target, chunk_size=256, progress=False)
                results[i] = target
            except RLExtraError as exc:
                results[i] = str(exc)

        threads = [threading.Thread(target=write, args=(i, 20.0 + i)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wins = [r for r in results if isinstance(r, float)]
        losses = [r for r in results if isinstance(r, str)]
        assert len(wins) == 1 and len(losses) == 1, results
        assert "already exists" in losses[0] or "being written by another process" in losses[0]
        from safetensors.torch import load_file

        got = load_file(str(out / "model.safetensors"))["w"]
        assert torch.all(got == wins[0])  # the winner's content, whole
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_disk_full_mid_write_is_one_line_and_leaves_nothing(ws, capsys, monkeypatch):
    import errno

    from rlextra.checkpoints.writer import StreamingSafetensorsWriter

    def full(self, name, raw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.folder / self.files[0]))

    monkeypatch.setattr(StreamingSafetensorsWriter, "write", full)
    monkeypatch.chdir(ws / "here")
    before = _snapshot(ws)
    rc = main(["extrapolate", *[a.replace("{R}", str(ws)) for a in TWO], "--to-step", "20", "-q",
               "-o", str(ws / "new" / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.rstrip() == f"rlextra: error: {ws / 'new' / 'out' / 'model.safetensors'}: {os.strerror(errno.ENOSPC)}"
    assert _snapshot(ws) == before
