import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import write_ckpt
from rlextra.checkpoints import load_series, read_values
from rlextra.errors import RLExtraError

T = {"a.weight": np.ones((2, 3)), "b.norm.weight": np.zeros(3)}


def test_run_folder_sorted_by_step_from_names(series_dir):
    run, steps, _ = series_dir
    s = load_series(run)
    assert s.steps == steps
    assert all(c.layout == "trainer" for c in s.checkpoints)


def test_layouts_and_step_sources(tmp_path):
    write_ckpt(tmp_path / "base", T)  # no step in name: must be named
    write_ckpt(tmp_path / "global_step_20" / "actor" / "huggingface", T)
    write_ckpt(tmp_path / "step_10", T)
    write_ckpt(tmp_path / "final", T, trainer_step=30)
    s = load_series([f"0={tmp_path / 'base'}", tmp_path / "global_step_20", tmp_path / "step_10",
                     tmp_path / "final"])
    assert s.steps == [0, 10, 20, 30]
    assert s.checkpoints[2].layout == "verl"
    s2 = load_series([tmp_path / "step_10", tmp_path / "final"], steps=[5, 7])
    assert s2.steps == [5, 7]


def test_sharded_safetensors_with_index(tmp_path):
    d = tmp_path / "checkpoint-5"
    d.mkdir()
    save_file({"a.weight": torch.ones(2, 3)}, str(d / "model-00001-of-00002.safetensors"))
    save_file({"b.norm.weight": torch.zeros(3)}, str(d / "model-00002-of-00002.safetensors"))
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a.weight": "model-00001-of-00002.safetensors", "b.norm.weight": "model-00002-of-00002.safetensors"}}))
    s = load_series([d])
    assert s.steps == [5] and sorted(s.newest.tensors) == ["a.weight", "b.norm.weight"]
    np.testing.assert_array_equal(read_values(s.newest.tensors["a.weight"], 0, 6), np.ones(6))


def _err(*args, **kw):
    with pytest.raises(RLExtraError) as e:
        load_series(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_tensor_names_file_and_tensor(tmp_path):
    write_ckpt(tmp_path / "step_1", T)
    write_ckpt(tmp_path / "step_2", {"a.weight": np.ones((2, 3))})
    msg = _err([tmp_path / "step_1", tmp_path / "step_2"])
    assert "b.norm.weight" in msg and "step_2" in msg


def test_shape_and_dtype_mismatch(tmp_path):
    write_ckpt(tmp_path / "step_1", T)
    write_ckpt(tmp_path / "step_2", {**T, "a.weight": np.ones((3, 2))})
    assert "shape" in _err([tmp_path / "step_1", tmp_path / "step_2"])
    write_ckpt(tmp_path / "step_3", T, dtype=torch.bfloat16)
    msg = _err([tmp_path / "step_1", tmp_path / "step_3"])
    assert "dtype" in msg and "a.weight" in msg
    s = load_series([tmp_path / "step_1", tmp_path / "step_3"], allow_mixed_dtypes=True)
    assert s.steps == [1, 3]


def test_duplicate_and_unparseable_steps(tmp_path):
    write_ckpt(tmp_path / "a" / "step_1", T)
    write_ckpt(tmp_path / "b" / "step_1", T)
    assert "duplicate step 1" in _err([tmp_path / "a" / "step_1", tmp_path / "b" / "step_1"])
    write_ckpt(tmp_path / "base", T)
    assert "cannot tell its step" in _err([tmp_path / "base", tmp_path / "a" / "step_1"])
    assert "--steps gives 1" in _err([tmp_path / "base", tmp_path / "a" / "step_1"], steps=[0])


def test_too_few(tmp_path):
    write_ckpt(tmp_path / "step_1", T)
    assert "at least 2" in _err([tmp_path / "step_1"], min_checkpoints=2)
    loaded = load_series([tmp_path / "step_1"])
    assert load_series(loaded) is loaded  # a loaded series passes through, checked again
    assert "at least 2" in _err(loaded, min_checkpoints=2)


def test_truncated_and_corrupt_files(tmp_path):
    d = write_ckpt(tmp_path / "step_1", T)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:-5])
    msg = _err([d])
    assert "model.safetensors" in msg
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    assert "not a valid safetensors" in _err([d])


def test_pickle_needs_opt_in(tmp_path):
    d = tmp_path / "step_4"
    d.mkdir()
    torch.save({"a.weight": torch.ones(2, 3)}, d / "pytorch_model.bin")
    msg = _err([d])
    assert "pytorch_model.bin" in msg and "--allow-pickle" in msg
    s = load_series([d], allow_pickle=True)
    np.testing.assert_array_equal(read_values(s.newest.tensors["a.weight"], 0, 6), np.ones(6))


def test_verl_without_merged_weights_explains(tmp_path):
    hf = tmp_path / "global_step_3" / "actor" / "huggingface"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")
    assert "model_merger" in _err([tmp_path / "global_step_3"])


def test_inputs_are_not_modified(series_dir):
    run, _, _ = series_dir
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    load_series(run)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_read_into_fills_a_reused_buffer_and_names_a_file_cut_short(tmp_path):
    """read_into: the same values as read_raw, into the caller's buffer (with or without an open
    handle); a file shortened after it was indexed gives a one-line error naming file and tensor."""
    vals = np.arange(40, dtype=np.float32).reshape(8, 5)
    d = write_ckpt(tmp_path / "step_1", {"w": vals}, dtype=torch.float32)
    ref = load_series([d, write_ckpt(tmp_path / "step_2", {"w": vals}, dtype=torch.float32)]).checkpoints[0].tensors["w"]
    buf = np.full(7, -1, dtype=np.float32)
    assert ref.read_into(30, buf[:7]) is not None and buf.tolist() == list(range(30, 37))
    with open(ref.file, "rb", buffering=0) as f:
        out = ref.read_into(3, buf[:4], f)
    assert out.tolist() == ref.read_raw(3, 7).tolist() == [3, 4, 5, 6]
    data = ref.file.read_bytes()
    ref.file.write_bytes(data[:-8])  # the last two values gone
    with pytest.raises(RLExtraError, match=r"model.safetensors: cannot read tensor 'w' \(the file ended early\)"):
        ref.read_into(36, buf[:4])


def test_buffer_pool_reuses_what_it_handed_out():
    from rlextra.checkpoints.buffers import BufferPool

    pool = BufferPool(16)
    a = pool.take(np.uint16, 10)
    assert a.shape == (10,) and a.dtype == np.uint16
    pool.give(a)
    b = pool.take(np.uint16, 16)
    assert b.base is a.base  # the same memory again
    c = pool.take(np.uint16, 3)
    assert c.base is not b.base  # b is still out: a new buffer
    pool.give(np.zeros(16, dtype=np.uint16))  # not the pool's: ignored
    pool.give(b)
    pool.give(c)
    assert {id(pool.take(np.uint16, 1).base), id(pool.take(np.uint16, 1).base)} == {id(b.base), id(c.base)}
    assert pool.take(np.float32, 2).base is not b.base  # buffers are kept by dtype
    with pytest.raises(ValueError, match="larger than the pool's buffers"):
        pool.take(np.uint16, 17)


def test_bf16_decodes_without_torch_exactly_as_torch_does():
    from rlextra.checkpoints.reader import to_float64

    raw = np.arange(1 << 16, dtype=np.uint16)  # every bf16 bit pattern: zeros, subnormals, Inf, NaN
    ours = to_float64(raw, "BF16")
    theirs = torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16).to(torch.float64).numpy()
    assert np.array_equal(ours, theirs, equal_nan=True)
    assert np.array_equal(np.signbit(ours), np.signbit(theirs))
