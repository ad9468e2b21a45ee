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
    # a series with NaN in its last checkpoint; model folders that lack a tensor, disagree with their
    # config, or hold NaN; a run of real model folders (with a tokenizer) for the probe analyses
    for k in range(3):
        w = {n: v + k for n, v in W.items()}
        if k == 2:
            w["model.layers.0.mlp.up_proj.weight"] = w["model.layers.0.mlp.up_proj.weight"].copy()
            w["model.layers.0.mlp.up_proj.weight"][0, 0] = np.nan
        write_ckpt(root / "nanrun" / f"checkpoint-{10 * k}", w, trainer_step=10 * k)
        shutil.copytree(root / "model", root / "mrun" / f"checkpoint-{10 * k}")
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(root / "model" / "model.safetensors"))
    up = "model.layers.0.mlp.up_proj.weight"
    for name, edit in (("missingmodel", lambda d: d.pop(up)),
                       ("nanmodel", lambda d: d.__setitem__(up, torch.full_like(d[up], float("nan"))))):
        shutil.copytree(root / "model", root / name)
        d = dict(tensors)
        edit(d)
        save_file(d, str(root / name / "model.safetensors"), metadata={"format": "pt"})
    shutil.copytree(root / "model", root / "mismatchmodel")
    cfg = json.loads((root / "model" / "config.json").read_text())
    (root / "mismatchmodel" / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 48}))
    # shard reports: two good ones, shard 0 relabelled as 1, and one claiming a billion shards
    for i in range(2):
        assert main(["analyze", "weights", str(root / "run"), "--shard", f"{i}/2", "-o", str(root / f"shard{i}"),
                     "-q", "--no-plots"]) == 0
    shutil.copytree(root / "shard0", root / "relabel")
    rep = json.loads((root / "relabel" / "weights.json").read_text())
    (root / "relabel" / "weights.json").write_text(json.dumps({**rep, "shard": {"index": 1, "count": 2}}))
    shutil.copytree(root / "shard0", root / "bigcount")
    (root / "bigcount" / "weights.json").write_text(json.dumps({**rep, "shard": {"index": 0, "count": 10**9}}))
    # accumulators whose sums cannot come from R^2 values in [0, 1]
    acc0 = json.loads((root / "shard0" / "accumulators.json").read_text())
    for name, edit in (("nansum", {"sum_r2": float("nan")}), ("hugesum", {"sum_r2": 1e12}), ("negabove", {"n_above": -5})):
        shutil.copytree(root / "shard0", root / name)
        tensors = [{**acc0["tensors"][0], **edit}] + acc0["tensors"][1:]
        (root / name / "accumulators.json").write_text(json.dumps({**acc0, "tensors": tensors}))
    # task and prompt files
    task = '{"problem": "1+1=", "answer": "2"}\n{"problem": "2+2=", "answer": "4"}\n'
    (root / "t.jsonl").write_text(task)
    (root / "tg.generations.jsonl").write_text(task)
    (root / "taskdir").mkdir()
    (root / "taskdir" / "t.jsonl").write_text(task)
    (root / "emptyprompt.jsonl").write_text('""\n')
    (root / "surrogate.jsonl").write_text('"\\ud800abc"\n')
    (root / "deep.jsonl").write_text("[" * 100000 + "]" * 100000 + "\n")
    (root / "longprobe.jsonl").write_text(json.dumps({"prompt": "1+1=" * 40, "response": "2"}) + "\n")
    (root / "runlink").symlink_to(root / "run")
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
    ("train-auto-low-rank", TRAIN + ["-o", NEW, "--rl-extra", "2,2", "--rl-extra-auto", "--rl-extra-method", "low-rank"],
     ["no low-rank"], [], {}),
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
    # NaN/Inf is refused by name, never reported as a safe jump
    ("backtest-nan", ["backtest", "{R}/nanrun", "--methods", "two-point,lsq", "-o", NEW, "-q"],
     ["nanrun/checkpoint-20", "contains NaN or Inf"], [], {}),
    ("backtest-low-rank-nan", ["backtest", "{R}/nanrun", "--methods", "low-rank", "-o", NEW, "-q"],
     ["contains NaN or Inf"], ["internal error"], {}),
    ("extrapolate-low-rank-nan", ["extrapolate", "{R}/nanrun", "--method", "low-rank", "--to-step", "30", "-o", NEW, "-q"],
     ["contains NaN or Inf"], [], {}),
    # a model folder is what its files say, or refused
    ("eval-missing-tensor", [*EVAL[:1], "{R}/missingmodel", *EVAL[2:], "-o", NEW], ["missingmodel", "lacks tensor"],
     [], {}),
    ("eval-config-mismatch", [*EVAL[:1], "{R}/mismatchmodel", *EVAL[2:], "-o", NEW],
     ["mismatchmodel", "config.json does not match"], [], {}),
    ("generate-config-mismatch", ["generate", "{R}/mismatchmodel", "--prompts", "{R}/prompts.jsonl", "-o", NEW, "-q"],
     ["config.json does not match"], [], {}),
    ("eval-nan-model", [*EVAL[:1], "{R}/nanmodel", *EVAL[2:], "-o", NEW], ["nanmodel", "contains NaN or Inf"], [], {}),
    ("train-missing-tensor", ["train", "--model", "{R}/missingmodel", "-o", NEW, *TRAIN[3:], "--n-test", "4"], ["lacks tensor"], [], {}),
    # analyze merge checks what the shards hold, not what they claim
    ("merge-relabelled-shard", ["analyze", "merge", "{R}/shard0", "{R}/relabel", "-o", NEW], ["also in"], [], {}),
    ("merge-huge-count", ["analyze", "merge", "{R}/bigcount", "-o", NEW], ["shard 1/1000000000 is missing"], [], {}),
    ("merge-nan-sum", ["analyze", "merge", "{R}/nansum", "{R}/shard1", "-o", NEW], ["nansum", "sum_r2 nan"], [], {}),
    ("merge-huge-sum", ["analyze", "merge", "{R}/hugesum", "{R}/shard1", "-o", NEW], ["sum_r2 1000000000000"], [], {}),
    ("merge-negative-above", ["analyze", "merge", "{R}/negabove", "{R}/shard1", "-o", NEW], ["n_above -5"], [], {}),
    # a task file, and the side file an output writes, are inputs too
    ("eval-o-task", ["eval", "{R}/model", "--task", "{R}/t.jsonl", "--max-new-tokens", "2", "-q", "-o", "{R}/t.jsonl",
                     "--overwrite"], ["into or over input"], [], {}),
    ("eval-side-file-task", ["eval", "{R}/model", "--task", "{R}/tg.generations.jsonl", "--max-new-tokens", "2", "-q",
                             "-o", "{R}/tg.json", "--overwrite"], ["into or over input"], [], {}),
    ("backtest-o-holds-task", ["backtest", *S, "--task", "{R}/taskdir/t.jsonl", "-o", "{R}/taskdir", "--overwrite",
                               "-q"], ["into or over input"], [], {}),
    ("train-o-holds-task", ["train", "--model", "{R}/model", "--task", "{R}/taskdir/t.jsonl", "--steps", "1", "-q",
                            "-o", "{R}/taskdir"], ["into or over input"], [], {}),
    # the run folder a series comes from is an input
    ("extrapolate-o-checkpoint-in-run", ["extrapolate", "{R}/run", "--to-step", "30", "-o", "{R}/run/checkpoint-30",
                                         "-q"], ["into or over input"], [], {}),
    ("extrapolate-o-run-sub", EX + ["--to-step", "20", "-o", "{R}/run/newsub"], ["into or over input"], [], {}),
    ("extrapolate-o-run-symlink", ["extrapolate", "{R}/run", "--to-step", "30", "-o", "{R}/runlink/x", "-q"],
     ["into or over input"], [], {}),
    ("weights-o-run-sub", AW + ["-o", "{R}/run/newsub"], ["into or over input"], [], {}),
    ("activations-o-run-sub", ["analyze", "activations", "{R}/mrun", "--probes", "{R}/probes.jsonl", "-o",
                               "{R}/mrun/sub", "-q", "--no-plots"], ["into or over input"], [], {}),
    # --grpo-arg cannot override what rlextra's options own
    ("train-grpo-arg-output-dir", TRAIN + ["-o", NEW, "--grpo-arg", "output_dir={R}/model"],
     ["--grpo-arg output_dir", "-o"], [], {}),
    ("train-grpo-arg-max-steps", TRAIN + ["-o", NEW, "--grpo-arg", "max_steps=-5"], ["--steps"], [], {}),
    # one line each, not an internal error
    ("generate-empty-prompt", ["generate", "{R}/model", "--prompts", "{R}/emptyprompt.jsonl", "-o", NEW, "-q"],
     ["emptyprompt.jsonl:1", "empty"], [], {}),
    ("generate-lone-surrogate", ["generate", "{R}/model", "--prompts", "{R}/surrogate.jsonl", "-o", NEW, "-q"],
     ["surrogate.jsonl:1", "Unicode"], [], {}),
    ("generate-deep-json", ["generate", "{R}/model", "--prompts", "{R}/deep.jsonl", "-o", NEW, "-q"],
     ["deep.jsonl:1", "nested too deeply"], [], {}),
    ("generate-seed-huge", GEN + ["-o", NEW, "--seed", "100000000000000000000"], ["--seed"], [], {}),
    ("generate-device-meta", GEN + ["-o", NEW, "--device", "meta"], ["--device meta"], [], {}),
    ("backtest-device-meta", ["backtest", *S, "--device", "meta", "-o", NEW, "-q"], ["--device meta"], [], {}),
    ("extrapolate-o-not-utf8", EX + ["--to-step", "20", "-o", "{R}/ex\udcff"], ["not valid UTF-8"], [], {}),
    ("train-rank-0", TRAIN + ["-o", NEW, "--rl-extra", "2,2", "--rl-extra-method", "low-rank", "--rl-extra-rank", "0"],
     ["--rl-extra-rank 0"], [], {}),
    ("train-safe-samples-0", TRAIN + ["-o", NEW, "--rl-extra", "2,2", "--rl-extra-safe", "--rl-extra-safe-samples",
                                      "0"], ["--rl-extra-safe-samples 0"], [], {}),
    ("train-safe-without-cycle", TRAIN + ["-o", NEW, "--rl-extra-safe"], ["--rl-extra-safe needs --rl-extra"], [], {}),
    ("train-replay-without-cycle", TRAIN + ["-o", NEW, "--rl-extra-replay"], ["--rl-extra-replay needs --rl-extra"],
     [], {}),
    ("activations-probe-too-long", ["analyze", "activations", "{R}/mrun", "--probes", "{R}/longprobe.jsonl", "-o", NEW,
                                    "-q", "--no-plots"], ["longprobe.jsonl", "longer than the model's context"], [], {}),
    ("outputs-probe-too-long", ["analyze", "outputs", "{R}/mrun", "--probes", "{R}/longprobe.jsonl", "-o", NEW,
                                "-q", "--no-plots"], ["longprobe.jsonl", "longer than the model's context"], [], {}),
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
    """In the child: default SIGINT/SIGTERM/SIGHUP, whatever the suite inherited (nohup ignores SIGHUP,
    a shell's background job ignores SIGINT, and an ignored signal stays ignored across exec, which
    rlextra then rightly respects)."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


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


def test_a_killed_writers_temporaries_are_removed_by_the_next_run(tmp_path):
    """SIGKILL leaves .out.tmp-* (nothing can clean up); the next run on that target finds the lock
    free, removes them, says so in one line, and writes its output."""
    inputs = _big_series(tmp_path / "run", 3)
    out = tmp_path / "out"
    argv = ["extrapolate", *inputs, "--fit", "lsq", "--to-step", "40", "--chunk-size", "512", "-q", "-o", str(out)]
    for _ in range(3):
        res = _signal_mid_write(argv, tmp_path, ".out.tmp-*", signal.SIGKILL)
        if res.returncode == -signal.SIGKILL:
            break
        shutil.rmtree(out)
    assert res.returncode == -signal.SIGKILL
    assert list(tmp_path.glob(".out.tmp-*")) and not out.exists()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                       os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    again = subprocess.run([sys.executable, "-m", "rlextra.cli", *argv], env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert [line for line in again.stderr.splitlines() if line.startswith("rlextra:")] == [
        line for line in again.stderr.splitlines() if "removed 1 stale temporary" in line]
    assert (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_loop_stopped_by_sigterm_stops_its_training_command(tmp_path):
    """The training command runs in its own process group; SIGTERM to loop ends that group too, so
    no orphan goes on writing into the cycle folder."""
    write_ckpt(tmp_path / "m", {"w": np.ones(4)})
    pidfile = tmp_path / "pid"
    argv = ["loop", "--model", str(tmp_path / "m"), "--workdir", str(tmp_path / "work"), "--rl-extra", "1,1",
            "--cycles", "1", "-q", "--train-command", f"sleep 120 & echo $! > {pidfile}; wait"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                       os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "rlextra.cli", *argv], env=env, preexec_fn=_default_signals,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (pidfile.is_file() and pidfile.read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    child = int(pidfile.read_text())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_a_stop_landing_while_the_command_starts_still_stops_its_group(tmp_path, monkeypatch):
    """SIGTERM delivered inside Popen (after the child exists, before loop knows its pid) is held until
    the pid is known, so the group is stopped; without that, the command outlived loop under load."""
    import subprocess as sp

    from rlextra.io import Terminated, interruptible
    from rlextra.rl import loop

    pidfile, real = tmp_path / "pid", sp.Popen

    def popen_then_sigterm(*args, **kwargs):
        proc = real(*args, **kwargs)
        deadline = time.monotonic() + 30
        while not (pidfile.is_file() and pidfile.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)  # lands here, inside "Popen", as it did under load
        time.sleep(0.2)  # a handler that is not held runs by now
        return proc

    monkeypatch.setattr(loop.subprocess, "Popen", popen_then_sigterm)
    old = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(Terminated), interruptible():
            loop.run_command(f"sleep 120 & echo $! > {pidfile}; wait", tmp_path / "log")
    finally:
        signal.signal(signal.SIGTERM, old)
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_a_second_train_on_a_running_train_folder_is_refused(ws, tmp_path, capsys):
    from rlextra.io import claim

    run = tmp_path / "run"
    with claim(run):  # what a running train holds
        rc = main(["train", "--model", str(ws / "model"), "-o", str(run), "--steps", "1", "--digits", "1",
                   "--n-train", "10", "--n-test", "4", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "being written by another process" in err and err.count("\n") == 1
    assert not run.exists()


def test_disk_full_without_a_path_names_the_output(ws, capsys, monkeypatch):
    import errno

    from rlextra.checkpoints.writer import StreamingSafetensorsWriter

    def full(self, name, raw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as some libraries raise it: no file name

    monkeypatch.setattr(StreamingSafetensorsWriter, "write", full)
    monkeypatch.chdir(ws / "here")
    out = ws / "new" / "out"
    rc = main(["extrapolate", *[a.replace("{R}", str(ws)) for a in TWO], "--to-step", "20", "-q", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and err.rstrip() == f"rlextra: error: {out}: {os.strerror(errno.ENOSPC)}"


@pytest.mark.slow
def test_train_disk_full_and_a_corrupt_resume_file_are_one_line(ws, tmp_path, capsys, monkeypatch):
    """Disk full while train saves (safetensors raises its own error type): one line naming the run,
    exit 1, no half-written checkpoint. A damaged rng_state.pth in the checkpoint a resume reads: one
    line naming that checkpoint, not an unpickling traceback."""
    from transformers import PreTrainedModel

    argv = ["train", "--model", str(ws / "model"), "--steps", "2", "--save-every", "2", "--digits", "1",
            "--n-train", "20", "--n-test", "4", "--prompts-per-step", "2", "--num-generations", "2",
            "--max-completion-length", "2", "--eval-problems", "0", "-q"]
    real_save = PreTrainedModel.save_pretrained

    def full(self, *a, **kw):
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                           "\"No space left on device\" })")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    run = tmp_path / "run"
    rc = main([*argv, "-o", str(run)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and err.startswith(f"rlextra: error: {run}: disk full"), err
    assert not list(run.glob("*checkpoint*")) and not list(run.glob(".*tmp*"))
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", real_save)
    assert main([*argv, "-o", str(run)]) == 0
    (run / "checkpoint-2" / "rng_state.pth").write_bytes(b"not a torch file")
    argv[argv.index("--steps") + 1] = "4"
    rc = main([*argv, "-o", str(run)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "checkpoint-2: a file training resumes from cannot be read" in err, err


@pytest.mark.slow
def test_train_refuses_to_resume_without_adams_state(ws, tmp_path, capsys):
    """A checkpoint whose optimizer.pt was deleted (by hand, or by a script that pruned the wrong one):
    transformers' Trainer would resume with fresh Adam moments without a word. rlextra refuses, in one
    line naming the checkpoint and the flag that accepts it; with the flag the run goes on."""
    argv = ["train", "--model", str(ws / "model"), "--steps", "2", "--save-every", "2", "--digits", "1",
            "--n-train", "20", "--n-test", "4", "--prompts-per-step", "2", "--num-generations", "2",
            "--max-completion-length", "2", "--eval-problems", "0", "-q", "-o", str(tmp_path / "run")]
    assert main(argv) == 0
    ckpt = tmp_path / "run" / "checkpoint-2"
    (ckpt / "optimizer.pt").unlink()
    capsys.readouterr()
    argv[argv.index("--steps") + 1] = "4"
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert f"{ckpt}: has no optimizer state" in err and "--resume-without-optimizer" in err, err
    assert not (tmp_path / "run" / "checkpoint-4").exists()
    assert main([*argv, "--resume-without-optimizer"]) == 0
    assert (tmp_path / "run" / "checkpoint-4" / "optimizer.pt").is_file()


def test_optimizer_state_is_found_in_every_trainer_layout(tmp_path):
    from rlextra.rl.grpo import has_optimizer_state

    layouts = {"plain": ["optimizer.pt"], "accelerate": ["optimizer.bin"], "fsdp": ["optimizer_0/"],
               "per-rank": ["rank0-of-2-optimizer.pt"], "deepspeed": ["global_step4/"],
               "pruned": ["model.safetensors", "trainer_state.json", "rng_state.pth"]}
    for name, files in layouts.items():
        for f in files:
            path = tmp_path / name / f
            path.mkdir(parents=True) if f.endswith("/") else (path.parent.mkdir(parents=True, exist_ok=True),
                                                              path.write_bytes(b""))
        assert has_optimizer_state(tmp_path / name) == (name != "pruned"), name


def test_a_double_ctrl_c_still_ends_in_one_line(tmp_path):
    """The second Ctrl-C arrives during the cleanup of the first: it is ignored, so the cleanup
    finishes and the user sees one line, not a traceback."""
    inputs = _big_series(tmp_path / "run", 3)
    before = _snapshot(tmp_path)
    argv = ["extrapolate", *inputs, "--fit", "lsq", "--to-step", "40", "--chunk-size", "512", "-q",
            "-o", str(tmp_path / "out")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                       os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "rlextra.cli", *argv], env=env, preexec_fn=_default_signals,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not any(p.is_dir() and any(p.iterdir()) for p in tmp_path.glob(".out.tmp-*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            break
        shutil.rmtree(tmp_path / "out")
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "rlextra: interrupted; nothing was written"
    assert _snapshot(tmp_path) == before


def test_an_unreadable_weight_file_says_permission_denied(tmp_path, monkeypatch):
    """As root, chmod 000 does not stop a read, so the refusal is simulated where the file is opened."""
    import builtins

    from safetensors.torch import save_file

    from rlextra.checkpoints.reader import read_safetensors_index
    from rlextra.errors import RLExtraError

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(2)}, str(path))
    real_open = builtins.open

    def denied(file, *a, **k):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(RLExtraError, match=r"model.safetensors: cannot read \(Permission denied\)"):
        read_safetensors_index(path)


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_train_vllm_without_vllm_is_one_line(tiny, tmp_path, capsys):
    from rlextra.cli import main

    code = main(["train", "--model", str(tiny), "-o", str(tmp_path / "run"), "--vllm", "--steps", "1"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "--vllm: vLLM is not installed" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
