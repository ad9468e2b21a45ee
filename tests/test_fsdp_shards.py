"""verl's FSDP shard checkpoints, read in place: produced here as verl produces them (FSDP1 and FSDP2 on
CPU/gloo, 2 and 4 ranks, verl_fsdp_worker.py), checked against the gathered fp32 weights, through
every command that reads a series, and against hostile files."""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rlextra.checkpoints import load_series
from rlextra.cli import main
from rlextra.errors import RLExtraError

STEPS = (2, 4, 6)
pytestmark = pytest.mark.slow


def _verl_run(tmp_path_factory, version: int, world: int) -> Path:
    from test_rl_extra import _torchrun

    out = tmp_path_factory.mktemp(f"verl-fsdp{version}-w{world}")
    _torchrun("verl_fsdp_worker.py", out, str(version), ",".join(map(str, STEPS)), nproc=world)
    return out


@pytest.fixture(scope="module")
def verl2(tmp_path_factory) -> Path:
    """FSDP2, 2 ranks: ``run/global_step_{2,4,6}/actor`` and the gathered weights in ``reference/``."""
    return _verl_run(tmp_path_factory, 2, 2)


def _reference(out: Path):
    return load_series([out / "reference" / f"step{s}" for s in STEPS], steps=list(STEPS))


def _assert_same_tensors(a, b) -> None:
    assert a.steps == b.steps and a.names == b.names
    for x, y in zip(a.checkpoints, b.checkpoints):
        for name in a.names:
            rx, ry = x.tensors[name], y.tensors[name]
            assert (rx.dtype, rx.shape) == (ry.dtype, ry.shape), name
            assert np.array_equal(rx.read_raw(0, rx.numel), ry.read_raw(0, ry.numel)), name


def test_fsdp2_shards_equal_the_gathered_fp32_weights(verl2):
    series = load_series(verl2 / "run")
    assert [c.layout for c in series.checkpoints] == ["verl-fsdp"] * 3
    assert {series.newest.tensors[n].dtype for n in series.names} == {"F32"}
    # dim 0 of 38 rows splits 19/19; the pieces are read where torch.save put them, padding and all
    assert [p.shape for p in series.newest.tensors["model.layers.0.input_layernorm.weight"].parts] == [(19,), (19,)]
    _assert_same_tensors(series, _reference(verl2))
    # a chunk that straddles two ranks' pieces, read both ways
    ref = series.newest.tensors["model.embed_tokens.weight"]
    full = _reference(verl2).newest.tensors["model.embed_tokens.weight"].read_raw(0, ref.numel)
    out = np.empty(200, dtype=np.float32)
    handles = ref.open_files()
    try:
        ref.read_into(ref.numel // 2 - 100, out, handles)
    finally:
        handles.close()
    assert np.array_equal(out, full[ref.numel // 2 - 100:ref.numel // 2 + 100])
    assert np.array_equal(ref.read_raw(ref.numel // 2 - 7, ref.numel // 2 + 5), full[ref.numel // 2 - 7:ref.numel // 2 + 5])


@pytest.mark.parametrize("version, world", [(1, 2), (2, 4)])
def test_fsdp1_and_four_ranks_equal_the_gathered_weights(tmp_path_factory, version, world):
    out = _verl_run(tmp_path_factory, version, world)
    series = load_series(out / "run")
    if world == 4:  # 38 rows over 4 ranks: 10, 10, 10, 8
        assert [p.shape for p in series.newest.tensors["model.norm.weight"].parts] == [(10,), (10,), (10,), (8,)]
    _assert_same_tensors(series, _reference(out))


def test_commands_read_the_run_as_they_read_merged_weights(verl2, tmp_path):
    run, ref = verl2 / "run", [f"{s}={verl2 / 'reference' / f'step{s}'}" for s in STEPS]
    for extra in ([], ["--sample", "0.3"]):
        assert main(["analyze", "weights", str(run), "-o", str(tmp_path / "a"), "--no-plots", "-q", *extra]) == 0
        assert main(["analyze", "weights", *ref, "-o", str(tmp_path / "b"), "--no-plots", "-q", *extra]) == 0
        assert (tmp_path / "a" / "weights.csv").read_bytes() == (tmp_path / "b" / "weights.csv").read_bytes()
        shutil.rmtree(tmp_path / "a"), shutil.rmtree(tmp_path / "b")
    # extrapolate: the same weights, and a servable folder (config and tokenizer from huggingface/)
    assert main(["extrapolate", str(run), "--to-step", "10", "-o", str(tmp_path / "x")]) == 0
    assert main(["extrapolate", *ref, "--to-step", "10", "-o", str(tmp_path / "y")]) == 0
    _assert_same_tensors(load_series([tmp_path / "x"], steps=[10]), load_series([tmp_path / "y"], steps=[10]))
    assert {"config.json", "tokenizer.json"} <= {p.name for p in (tmp_path / "x").iterdir()}
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "x")
    assert main(["backtest", str(run), "--methods", "two-point,lsq", "-o", str(tmp_path / "bt")]) == 0
    assert main(["watch", str(run), "-o", str(tmp_path / "w"), "--once", "--no-plots"]) == 0
    assert json.loads((tmp_path / "w" / "watch.json").read_text())["steps"] == list(STEPS)


def test_shards_are_not_loaded_as_a_model(verl2, capsys):
    code = main(["eval", str(verl2 / "run" / "global_step_6"), "--task", "add2", "--n-test", "4", "-q",
                 "-o", str(verl2 / "eval.json")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "verl FSDP shards" in err and len(err.splitlines()) == 1


def test_watch_waits_for_a_whole_checkpoint(verl2, tmp_path):
    from rlextra.analysis.watch import complete_checkpoints

    run = tmp_path / "run"
    shutil.copytree(verl2 / "run", run)
    (run / "latest_checkpointed_iteration.txt").write_text("4")  # step 6 is still being saved
    skipped: dict = {}
    assert [c.step for c in complete_checkpoints(run, skipped=skipped)] == [2, 4]
    assert "latest_checkpointed_iteration.txt" in skipped[str(run / "global_step_6")]
    (run / "latest_checkpointed_iteration.txt").write_text("6")
    (run / "global_step_6" / "actor" / "fsdp_config.json").unlink()
    skipped = {}
    assert [c.step for c in complete_checkpoints(run, skipped=skipped)] == [2, 4]
    assert "fsdp_config.json" in skipped[str(run / "global_step_6")]
    shutil.copy(verl2 / "run" / "global_step_6" / "actor" / "fsdp_config.json", run / "global_step_6" / "actor")
    shard = run / "global_step_6" / "actor" / "model_world_size_2_rank_1.pt"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # a rank still writing: no zip directory yet
    skipped = {}
    assert [c.step for c in complete_checkpoints(run, skipped=skipped)] == [2, 4]
    assert "truncated" in skipped[str(run / "global_step_6")]
    shard.write_bytes(data)
    assert [c.step for c in complete_checkpoints(run)] == [2, 4, 6]


class _RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _hostile_copy(verl2: Path, tmp_path: Path) -> Path:
    actor = tmp_path / "global_step_6" / "actor"
    shutil.copytree(verl2 / "run" / "global_step_6" / "actor", actor)
    return actor


@pytest.mark.parametrize("case", ["os.system", "outside the allowlist", "truncated", "missing rank",
                                  "world sizes disagree", "extra rank"])
def test_hostile_shards_are_refused_in_one_line_and_nothing_runs(verl2, tmp_path, capsys, case):
    actor = _hostile_copy(verl2, tmp_path)
    rank1 = actor / "model_world_size_2_rank_1.pt"
    marker = tmp_path / "ran"
    expect = {"os.system": "system", "outside the allowlist": "datetime.date", "truncated": "truncated",
              "missing rank": "rank_1.pt: missing", "world sizes disagree": "disagree",
              "extra rank": "rank 2"}[case]
    if case == "os.system":
        torch.save({"model.norm.weight": _RunsACommand(marker)}, rank1)
    elif case == "outside the allowlist":
        torch.save({"model.norm.weight": datetime.date(2026, 1, 1)}, rank1)
    elif case == "truncated":
        rank1.write_bytes(rank1.read_bytes()[:-100])
    elif case == "missing rank":
        rank1.unlink()
    elif case == "world sizes disagree":
        (actor / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 2, "world_size": 1}))
    else:
        shutil.copy(rank1, actor / "model_world_size_2_rank_2.pt")
    with pytest.raises(RLExtraError, match=expect):
        load_series([f"6={actor}"])
    out = tmp_path / "out"
    assert main(["extrapolate", f"4={verl2 / 'run' / 'global_step_4'}", f"6={actor}", "--to-step", "8",
                 "-o", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1, err
    assert not marker.exists() and not out.exists()


def test_loop_takes_the_shard_folders_its_training_command_leaves(verl2, tmp_path):
    """A stand-in for verl: the "training" copies the shards of step 4 as the cycle's step 2, from a
    base model holding step 2's weights; the loop's jump equals extrapolate on the gathered weights."""
    import sys

    copy = (f"{sys.executable} -c \"import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2] + "
            f"'/global_step_2/actor')\" {verl2 / 'run' / 'global_step_4' / 'actor'} {{output_dir}}")
    base = verl2 / "reference" / "step2"
    assert main(["loop", "--model", str(base), "--workdir", str(tmp_path / "loop"), "--rl-extra", "2,3",
                 "--cycles", "1", "--train-command", copy, "-q"]) == 0
    state = json.loads((tmp_path / "loop" / "loop_state.json").read_text())
    assert main(["extrapolate", f"0={base}", f"2={verl2 / 'reference' / 'step4'}", "--to-step", "5",
                 "-o", str(tmp_path / "y")]) == 0
    _assert_same_tensors(load_series([state["final_model"]], steps=[5]), load_series([tmp_path / "y"], steps=[5]))


def test_a_pickle_cannot_set_state_on_what_the_allowlist_hands_out(verl2, tmp_path):
    """BUILD on an allowed callable (here torch.Size's stand-in) would change it for later reads."""
    import pickle
    import zipfile

    actor = _hostile_copy(verl2, tmp_path)
    rank1 = actor / "model_world_size_2_rank_1.pt"
    with zipfile.ZipFile(rank1) as z:
        names = z.namelist()
        records = {n: z.read(n) for n in names}
    pkl = next(n for n in names if n.endswith("data.pkl"))
    records[pkl] = (b"\x80\x02ctorch\nSize\n}X\x0c\x00\x00\x00__defaults__(K\x01\x85tsb" + pickle.STOP)
    with zipfile.ZipFile(rank1, "w", zipfile.ZIP_STORED) as z:
        for n in names:
            z.writestr(n, records[n])
    with pytest.raises(RLExtraError, match="sets the state of a function"):
        load_series([f"6={actor}"])


def test_reading_shards_imports_no_torch(verl2):
    import subprocess
    import sys

    code = ("import sys; from rlextra.checkpoints import load_series; s = load_series(sys.argv[1]); "
            "r = s.newest.tensors['model.norm.weight']; r.read_raw(0, r.numel); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(verl2 / "run")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


MERGE_WITH_VERL = """
import sys, types, importlib.util
# verl/__init__.py imports ray and the trainer; the merger needs neither: its package is entered directly
spec = importlib.util.find_spec("verl")
pkg = types.ModuleType("verl"); pkg.__path__ = list(spec.submodule_search_locations); sys.modules["verl"] = pkg
from verl.model_merger.base_model_merger import ModelMergerConfig
from verl.model_merger.fsdp_model_merger import FSDPModelMerger
FSDPModelMerger(ModelMergerConfig(operation="merge", backend="fsdp", local_dir=sys.argv[1], target_dir=sys.argv[2],
                                  hf_model_config_path=sys.argv[1] + "/huggingface")).merge_and_save()
"""


def test_verls_own_merger_equals_our_fp32_after_its_bf16_cast(verl2, tmp_path):
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("verl") is None:
        pytest.skip("verl not installed (scripts/test.sh installs it)")
    actor = verl2 / "run" / "global_step_6" / "actor"
    subprocess.run([sys.executable, "-c", MERGE_WITH_VERL, str(actor), str(tmp_path / "merged")], check=True,
                   capture_output=True)
    ours = load_series([actor], steps=[6]).newest.tensors
    theirs = load_series([tmp_path / "merged"], steps=[6]).newest.tensors
    assert sorted(ours) == sorted(theirs) and {t.dtype for t in theirs.values()} == {"BF16"}
    for name, ref in ours.items():
        cast = torch.from_numpy(ref.read_raw(0, ref.numel).copy()).to(torch.bfloat16).view(torch.int16).numpy()
        assert np.array_equal(cast.view(np.uint16), theirs[name].read_raw(0, ref.numel)), name
