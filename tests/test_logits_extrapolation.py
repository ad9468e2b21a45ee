import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rlextra.cli import main
from rlextra.decoding import DecodingEngine, SamplingConfig, filter_logits
from rlextra.linefit import line_weights
from rlextra.rl.models import char_tokenizer, save_model, tiny_llama

PROMPTS = ["12+3=", "7+7=", "123+456=", "9*9="]
GREEDY = SamplingConfig(k=1, temperature=0, max_new_tokens=8)


@pytest.fixture(scope="module")
def pair():
    tok = char_tokenizer()
    return tok, [tiny_llama(tok, hidden=32, layers=2, intermediate=64, seed=s).eval() for s in (0, 1)]


def hf_greedy(model, tok, prompts, n=8):
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id)
    return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("alpha,which", [(1.0, 1), (0.0, 0)])
def test_alpha_endpoints_equal_each_models_own_greedy_generate(pair, alpha, which):
    tok, models = pair
    got = DecodingEngine(models, [100, 300], tok, alpha=alpha).generate(PROMPTS, GREEDY, progress=False)
    assert [g[0] for g in got] == hf_greedy(models[which], tok, PROMPTS)


def test_batch_equals_one_by_one_with_rows_finishing_early(pair):
    tok, models = pair
    ex = DecodingEngine(models, [0, 10], tok, to_step=25)
    cfg = SamplingConfig(k=1, temperature=0, max_new_tokens=10, stop=["="], batch_size=4)
    batch = [g[0] for g in ex.generate(PROMPTS, cfg, progress=False)]
    single = [ex.generate([p], cfg, progress=False)[0][0] for p in PROMPTS]
    assert batch == single
    assert all("=" not in t for t in batch)


def test_k_model_variant_with_collinear_logits_equals_two_point(pair):
    tok, (m0, m1) = pair
    # identical bodies, lm_head moving on a line: logits are exactly linear in the step
    a, b = m0.lm_head.weight.detach().clone(), (m1.lm_head.weight - m0.lm_head.weight).detach() / 10
    ms = []
    for t in (0, 10, 20):
        m = tiny_llama(tok, hidden=32, layers=2, intermediate=64, seed=0).eval()
        with torch.no_grad():
            m.lm_head.weight.copy_(a + t * b)
        ms.append(m)
    three = DecodingEngine(ms, [0, 10, 20], tok, to_step=35)
    two = DecodingEngine([ms[0], ms[2]], [0, 20], tok, to_step=35)
    x = tok(PROMPTS[:1], return_tensors="pt")["input_ids"]
    z3 = three._mix([m(x).logits[:, -1] for m in ms])
    z2 = two._mix([m(x).logits[:, -1] for m in (ms[0], ms[2])])
    torch.testing.assert_close(z3, z2, rtol=1e-5, atol=1e-5)
    assert three.generate(PROMPTS, GREEDY, progress=False) == two.generate(PROMPTS, GREEDY, progress=False)


def test_line_weights():
    assert np.allclose(line_weights([100, 300], 700), [1 - 3.0, 3.0])
    t, y = np.array([0, 5, 20.0]), np.array([1.0, 2.0, 2.5])
    slope, icpt = np.polyfit(t, y, 1)
    assert line_weights(t, 40) @ y == pytest.approx(icpt + 40 * slope)


def test_filter_logits_top_k_and_top_p():
    z = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(z, 1.0, 2, 1.0)).sum() == 2
    kept = torch.isfinite(filter_logits(z, 1.0, 0, 0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7, +0.3 crosses it
    assert torch.isfinite(filter_logits(z, 1.0, 0, 0.4)).sum() == 1


def test_generate_cli_and_eval_backend(pair, tmp_path):
    tok, models = pair
    for s, m in zip((0, 10), models):
        save_model(m, tok, tmp_path / f"step_{s}")
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS) + "\n")
    rc = main(["generate", str(tmp_path / "step_0"), str(tmp_path / "step_10"), "--to-step", "10",
               "--prompts", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "g.jsonl"), "--temperature", "0",
               "--max-new-tokens", "8", "-q"])
    assert rc == 0
    rows = [json.loads(x) for x in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in rows] == hf_greedy(models[1], tok, PROMPTS)
    assert rows[0]["weights"] == [0.0, 1.0]
    rc = main(["eval", str(tmp_path / "step_10"), "--extrapolate-from", str(tmp_path / "step_0"),
               "--to-step", "20", "--digits", "1", "--n-train", "20", "--n-test", "10", "--k", "2",
               "--max-new-tokens", "3", "-o", str(tmp_path / "e.json"), "-q"])
    assert rc == 0
    summary = json.loads((tmp_path / "e.json").read_text())
    assert summary["backend"].startswith("logits-extrapolation") and summary["metrics"]["k"] == 2
    assert main(["generate", str(tmp_path / "step_0"), str(tmp_path / "step_10"), "--prompts",
                 str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "x.jsonl")]) == 2  # no target


def test_k_samples_share_one_prefill_and_are_seeded(pair):
    tok, models = pair
    ex = DecodingEngine(models, [0, 10], tok, to_step=15)
    one = ex.generate(PROMPTS, GREEDY, progress=False)
    three = ex.generate(PROMPTS, SamplingConfig(k=3, temperature=0, max_new_tokens=8, batch_size=6), progress=False)
    assert three == [[o[0]] * 3 for o in one]
    hot = SamplingConfig(k=2, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=7)
    a, b = ex.generate(PROMPTS, hot, progress=False), ex.generate(PROMPTS, hot, progress=False)
    assert a == b and len(a) == len(PROMPTS) and all(len(x) == 2 for x in a)


@pytest.mark.parametrize("extrapolate", [True, False])
def test_eval_checks_each_folder_and_output_once(pair, tmp_path, monkeypatch, extrapolate):
    """`eval [--extrapolate-from]` validates at its entry and passes checked values down: each model
    folder's headers are read once, and the summary and generations files are each checked once."""
    import importlib

    series_mod = importlib.import_module("rlextra.checkpoints.series")
    evaluate_mod = importlib.import_module("rlextra.evaluation.evaluate")  # the module, not its function

    tok, models = pair
    for s, m in zip((0, 10), models):
        save_model(m, tok, tmp_path / f"step_{s}")
    indexed, outputs = [], []
    real_index, real_check = series_mod.index_model_dir, evaluate_mod.check_output
    monkeypatch.setattr(series_mod, "index_model_dir", lambda folder, **kw: indexed.append(Path(folder).name)
                        or real_index(folder, **kw))
    monkeypatch.setattr(evaluate_mod, "check_output", lambda path, **kw: outputs.append(Path(path).name)
                        or real_check(path, **kw))
    target = ["--extrapolate-from", str(tmp_path / "step_0"), "--to-step", "20"] if extrapolate else []
    assert main(["eval", str(tmp_path / "step_10"), *target, "--digits", "1", "--n-train", "20", "--n-test", "4",
                 "--k", "1", "--max-new-tokens", "2", "-o", str(tmp_path / "e.json"), "-q"]) == 0
    assert sorted(indexed) == (["step_0", "step_10"] if extrapolate else ["step_10"])
    assert sorted(outputs) == ["e.generations.jsonl", "e.json"]
    summary = json.loads((tmp_path / "e.json").read_text())
    assert summary["backend"].startswith("logits-extrapolation") == extrapolate
