"""The decoding package on CPU: config checks, eager vs static steps, stop strings, devices, dtypes."""

import json
import shutil

import pytest
import torch

from rlextra.cli import main
from rlextra.decoding import DecodingEngine, HFGenerate, SamplingConfig, load_decoder, load_engine
from rlextra.errors import RLExtraError
from rlextra.evaluation import evaluate
from rlextra.hf import is_norm_weight, load_model, resolve_device, resolve_devices, resolve_dtype
from rlextra.rl.models import char_tokenizer, save_model, tiny_llama
from rlextra.tasks import TaskSpec

PROMPTS = ["12+3=", "7+7=", "123+456=", "9*9=", "1="]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")


@pytest.fixture(scope="module")
def pair():
    tok = char_tokenizer()
    return tok, [tiny_llama(tok, hidden=32, layers=2, intermediate=64, seed=s).eval() for s in (0, 1)]


@pytest.fixture(scope="module")
def folders(pair, tmp_path_factory):
    tok, models = pair
    root = tmp_path_factory.mktemp("models")
    return [save_model(m, tok, root / f"step_{s}") for s, m in zip((0, 10), models)]


@pytest.mark.parametrize("kw,option", [({"k": 0}, "--k"), ({"max_new_tokens": 0}, "--max-new-tokens"),
                                       ({"temperature": -0.1}, "--temperature"),
                                       ({"temperature": float("nan")}, "--temperature"),
                                       ({"temperature": float("inf")}, "--temperature"),
                                       ({"top_p": 0.0}, "--top-p"), ({"top_p": 1.5}, "--top-p"),
                                       ({"top_k": -1}, "--top-k"), ({"stop": [""]}, "--stop"),
                                       ({"batch_size": 0}, "--batch-size")])
def test_sampling_config_rejects_bad_values_naming_the_option(kw, option):
    with pytest.raises(RLExtraError) as e:
        SamplingConfig(**kw)
    assert str(e.value).startswith(option) and "\n" not in str(e.value)


def test_sampling_config_accepts_edges():
    cfg = SamplingConfig(k=1, temperature=0, top_p=1.0, top_k=0, max_new_tokens=1, stop=["\n"])
    assert cfg.greedy and cfg.to_dict()["stop"] == ["\n"]


@pytest.mark.parametrize("k,stop", [(1, []), (3, []), (2, ["4"]), (1, ["7-1", "*"])])
def test_static_step_equals_eager_step(pair, k, stop):
    """The static-cache path (bucketed rows, rows kept to the end) decodes exactly as the eager one."""
    tok, models = pair
    cfg = SamplingConfig(k=k, temperature=0, max_new_tokens=12, stop=stop, batch_size=6)
    eager = DecodingEngine(models, [0, 10], tok, to_step=25, mode="eager").generate(PROMPTS, cfg, progress=False)
    static = DecodingEngine(models, [0, 10], tok, to_step=25, mode="static")
    assert static.mode == "static"
    assert static.generate(PROMPTS, cfg, progress=False) == eager
    assert static.generate(PROMPTS[:3], cfg, progress=False) == eager[:3]  # a cached bucket, reset and reused


def test_one_model_engine_equals_hf_greedy(pair):
    tok, (m, _) = pair
    cfg = SamplingConfig(k=2, temperature=0, max_new_tokens=8)
    ours = DecodingEngine([m], None, tok).generate(PROMPTS, cfg, progress=False)
    hf = HFGenerate(m, tok).generate(PROMPTS, cfg, progress=False)
    assert ours == hf and ours[0][0] == ours[0][1]


def test_multi_character_stop_strings_are_cut_like_the_unstopped_text(pair):
    tok, models = pair
    ex = DecodingEngine(models, [0, 10], tok, to_step=25)
    free = [g[0] for g in ex.generate(PROMPTS, SamplingConfig(temperature=0, max_new_tokens=12), progress=False)]
    stop = free[0][3:5]  # two characters = two tokens: found across the token boundary
    got = [g[0] for g in ex.generate(PROMPTS, SamplingConfig(temperature=0, max_new_tokens=12, stop=[stop]),
                                     progress=False)]
    assert got == [t[:t.find(stop)] if stop in t else t for t in free]
    assert got[0] == free[0][:3]


def test_fallback_to_eager_warns_once(pair):
    tok, models = pair
    m = tiny_llama(tok, hidden=32, layers=2, intermediate=64, seed=0).eval()
    m._can_compile_fullgraph = False
    with pytest.warns(RuntimeWarning, match="does not support static caches"):
        ex = DecodingEngine([m], None, tok, mode="compiled")
    assert ex.mode == "eager"
    cfg = SamplingConfig(temperature=0, max_new_tokens=4)
    assert ex.generate(PROMPTS, cfg, progress=False) == HFGenerate(m, tok).generate(PROMPTS, cfg, progress=False)


def test_auto_mode_is_eager_on_cpu(pair):
    tok, models = pair
    assert DecodingEngine(models, [0, 1], tok, alpha=2.0).mode == "eager"


def test_device_and_dtype_resolution_on_cpu():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == "auto"  # the checkpoint's own dtype
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(RLExtraError, match="--device gpu"):
        resolve_device("gpu")
    with pytest.raises(RLExtraError, match="--devices: 1 device"):
        resolve_devices("cpu", 2)
    assert [d.type for d in resolve_devices("cpu,cpu", 2)] == ["cpu", "cpu"]


@no_cuda
def test_asking_for_cuda_without_it_is_a_one_line_error(folders, tmp_path, capsys):
    for name in ("cuda", "cuda:1"):
        with pytest.raises(RLExtraError, match="CUDA is not available"):
            resolve_device(name)
    (tmp_path / "p.jsonl").write_text('"1+1="\n')
    rc = main(["generate", str(folders[1]), "--prompts", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "g.jsonl"),
               "--device", "cuda", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "CUDA is not available" in err
    rc = main(["generate", *map(str, folders), "--to-step", "20", "--devices", "cuda:0,cuda:1",
               "--prompts", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "g.jsonl"), "-q"])
    assert rc == 2 and "--devices cuda:0: CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "g.jsonl").exists()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_models_load_in_the_dtype_asked_and_decode(folders, dtype):
    m, tok = load_model(folders[0], device="cpu", dtype=dtype)
    assert {p.dtype for p in m.parameters()} == {getattr(torch, dtype)}
    assert {p.device.type for p in m.parameters()} == {"cpu"}
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    ex = load_engine(folders, to_step=20, device="cpu", dtype=dtype)
    assert ex.mix_device.type == "cpu" and ex._eos.device == ex.mix_device
    out = ex.generate(PROMPTS[:2], SamplingConfig(k=2, temperature=1.0, max_new_tokens=4), progress=False)
    assert len(out) == 2 and all(len(x) == 2 for x in out)


def test_pickle_only_folders_are_refused_unless_allowed(pair, tmp_path):
    tok, (m, _) = pair
    save_model(m, tok, tmp_path / "pk")
    (tmp_path / "pk" / "model.safetensors").unlink()
    torch.save(m.state_dict(), tmp_path / "pk" / "pytorch_model.bin")
    with pytest.raises(RLExtraError, match="pickle checkpoint refused.*--allow-pickle"):
        load_model(tmp_path / "pk", device="cpu")
    loaded, _ = load_model(tmp_path / "pk", device="cpu", allow_pickle=True)
    assert torch.equal(loaded.lm_head.weight, m.lm_head.weight)


def test_load_decoder_backends_agree_greedily(folders):
    cfg = SamplingConfig(k=1, temperature=0, max_new_tokens=6)
    hf = load_decoder(folders[1], backend="hf", device="cpu")
    ours = load_decoder(folders[1], backend="rlextra", device="cpu")
    ext = load_decoder(folders, to_step=10, device="cpu")  # alpha 1: the newer model alone
    assert (hf.name, ours.name) == ("hf", "rlextra") and ext.name.startswith("logits-extrapolation")
    assert hf.generate(PROMPTS, cfg, progress=False) == ours.generate(PROMPTS, cfg, progress=False) \
        == ext.generate(PROMPTS, cfg, progress=False)
    with pytest.raises(RLExtraError, match="--backend hf decodes one model"):
        load_decoder(folders, backend="hf", to_step=20)
    with pytest.raises(RLExtraError, match="--backend nope"):
        load_decoder(folders[1], backend="nope")


def test_evaluate_takes_a_decoder(folders, tmp_path):
    spec = TaskSpec("arithmetic", digits=1, n_train=20, n_test=6, seed=0)
    dec = load_decoder(folders, to_step=20, device="cpu")
    s = evaluate(dec, spec, tmp_path / "e.json", sampling=SamplingConfig(k=2, max_new_tokens=3), progress=False)
    assert s["backend"] == dec.name and s["model"] == dec.label and "-> step 20" in s["model"]
    assert json.loads((tmp_path / "e.json").read_text())["metrics"]["k"] == 2
    again = evaluate(None, spec, completions=[["1"]] * 6, sampling=SamplingConfig(k=1))
    assert again["backend"] == "given"


def test_is_norm_weight_lives_in_hf():
    from rlextra.extrapolate import is_norm_weight as reexported

    assert reexported is is_norm_weight and is_norm_weight("model.norm.weight")


@needs_cuda
@pytest.mark.parametrize("mode", ["eager", "static", "compiled"])
def test_cuda_engine_matches_cpu_greedy(folders, mode):
    cfg = SamplingConfig(k=2, temperature=0, max_new_tokens=6)
    cpu = load_engine(folders, to_step=20, device="cpu", dtype="float32").generate(PROMPTS, cfg, progress=False)
    gpu = load_engine(folders, to_step=20, device="cuda", dtype="float32", mode=mode)
    assert gpu._eos.device.type == "cuda"
    assert gpu.generate(PROMPTS, cfg, progress=False) == cpu
    hot = SamplingConfig(k=2, temperature=1.0, max_new_tokens=6, seed=3)
    assert gpu.generate(PROMPTS, hot, progress=False) == gpu.generate(PROMPTS, hot, progress=False)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_mix_on_the_first(folders):
    cfg = SamplingConfig(k=1, temperature=0, max_new_tokens=6)
    one = load_engine(folders, to_step=20, device="cuda:0", dtype="float32", mode="eager")
    two = load_engine(folders, to_step=20, devices="cuda:0,cuda:1", dtype="float32", mode="eager")
    assert [d.index for d in two.devices] == [0, 1] and two.mix_device.index == 0
    assert two.generate(PROMPTS, cfg, progress=False) == one.generate(PROMPTS, cfg, progress=False)


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_eager_attention_models_decode_like_hf(pair, mode):
    """The per-step 4D masks rlextra builds (to avoid host syncs) match transformers' for eager attention."""
    tok, _ = pair
    m = tiny_llama(tok, hidden=32, layers=2, intermediate=64, seed=2).eval()
    m.config._attn_implementation = "eager"
    cfg = SamplingConfig(k=1, temperature=0, max_new_tokens=8)
    ours = DecodingEngine([m], None, tok, mode=mode)
    assert ours._mask_kinds == ["eager"]
    assert ours.generate(PROMPTS, cfg, progress=False) == HFGenerate(m, tok).generate(PROMPTS, cfg, progress=False)


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")),
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_step_on_cpu_equals_eager_and_reuses_buckets(pair):
    """The GPU default path (static caches + torch.compile'd step) traced and run by inductor on CPU."""
    tok, models = pair
    cfg = SamplingConfig(k=1, temperature=0, max_new_tokens=6, batch_size=4)
    eager = DecodingEngine(models, [0, 10], tok, to_step=25, mode="eager").generate(PROMPTS[:3], cfg, progress=False)
    compiled = DecodingEngine(models, [0, 10], tok, to_step=25, mode="compiled")
    assert compiled.generate(PROMPTS[:3], cfg, progress=False) == eager
    assert compiled.mode == "compiled"  # no fallback happened
    assert compiled.generate(PROMPTS[:3], cfg, progress=False) == eager


def test_a_prompt_too_long_for_any_tokenizer_is_refused_before_tokenizing():
    from types import SimpleNamespace

    from rlextra.decoding import check_prompt_lengths
    from rlextra.errors import RLExtraError

    calls = []

    def tokenizer(text, add_special_tokens=True):
        calls.append(len(text))
        return {"input_ids": list(range(len(text)))}

    config = SimpleNamespace(max_position_embeddings=16)
    with pytest.raises(RLExtraError, match=r"prompt 2: 4097 bytes, longer than the model's context of 16 tokens"):
        check_prompt_lengths(tokenizer, ["short", "x" * (16 * 256 + 1)], config)
    assert calls == [5]  # the long one was never tokenized
    with pytest.raises(RLExtraError, match="prompt 1: 17 tokens"):
        check_prompt_lengths(tokenizer, ["y" * 17], config)
