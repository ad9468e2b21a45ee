"""``--backend vllm`` for real: run where vLLM is installed (scripts/setup-vllm.sh makes .venv-vllm,
on a CPU; `scripts/test-vllm.sh` runs these there), skipped elsewhere with the reason.

Greedy text must equal HF ``generate`` and rlextra's engine token for token (fp32); sampled accuracy
must agree with HF's within its standard error; what vLLM is given is checked first, like any model.
"""

from __future__ import annotations

import json
import logging
import math

import pytest

from rlextra.decoding.backends import vllm_installed

logging.raiseExceptions = False  # vLLM's exit handler logs after pytest has closed its capture streams

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not vllm_installed(), reason="vLLM not installed (bash scripts/setup-vllm.sh; "
                                                            "bash scripts/test-vllm.sh runs these)")]


def _eval(model, spec, out, backend: str, **sampling) -> tuple[dict, list[dict]]:
    from rlextra.decoding import SamplingConfig
    from rlextra.evaluation import evaluate_checkpoint, generations_path

    cfg = SamplingConfig(max_new_tokens=6, **sampling)
    summary = evaluate_checkpoint(model, spec, out, sampling=cfg, backend=backend, progress=False)
    rows = [json.loads(line) for line in generations_path(out).read_text().splitlines()]
    return summary, rows


def test_greedy_equals_hf_and_rlextra_token_for_token(tiny, tiny_spec, tmp_path):
    texts = {}
    for backend in ("vllm", "hf", "rlextra"):
        _, rows = _eval(tiny, tiny_spec, tmp_path / f"{backend}.json", backend, k=2, temperature=0.0)
        texts[backend] = [r["completion"] for r in rows]
    assert len(texts["vllm"]) == 2 * tiny_spec.n_test
    assert texts["vllm"] == texts["hf"] == texts["rlextra"]


def test_sampled_accuracy_agrees_with_hf_within_its_error(tiny, tiny_spec, tmp_path):
    accs = {}
    for backend in ("vllm", "hf"):
        summary, rows = _eval(tiny, tiny_spec, tmp_path / f"{backend}.json", backend, k=8, temperature=1.0, seed=3)
        accs[backend] = [r["correct"] for r in rows]
    n = len(accs["hf"])
    p_v, p_h = sum(accs["vllm"]) / n, sum(accs["hf"]) / n
    se = math.sqrt(max(p_v * (1 - p_v) + p_h * (1 - p_h), 1e-9) / n)
    assert abs(p_v - p_h) <= 3 * se, (p_v, p_h, se)


def test_vllm_refuses_what_it_cannot_read_in_one_line(tmp_path, capsys):
    from rlextra.cli import main

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"not a pickle")
    code = main(["eval", str(tmp_path / "m"), "--task", "arithmetic", "--backend", "vllm", "-o",
                 str(tmp_path / "e.json"), "-q"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "pickle checkpoint refused" in err and len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, tiny_spec):
    """The tiny model's architecture after fewer warm-up steps: an earlier checkpoint of a short run."""
    from rlextra.rl.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("m") / "earlier", tiny_spec, warmup_steps=15, progress=False)[0]


@pytest.mark.parametrize("stop", [(), ("0",)])
def test_logits_extrapolation_inside_vllm_equals_rlextras_engine(tiny, earlier, tiny_spec, tmp_path, stop):
    """Two checkpoints as one vLLM model, read from their own folders: greedy text equals rlextra's own
    mix token for token (fp32), with a stop string and the length limit applied alike."""
    from rlextra.decoding import SamplingConfig, load_decoder
    from rlextra.tasks import load_task

    prompts = [p.prompt for p in load_task(tiny_spec).test]
    cfg = SamplingConfig(k=1, temperature=0.0, max_new_tokens=4, stop=stop)
    series = [f"0={earlier}", f"10={tiny}"]
    ours = load_decoder(series, to_step=15, backend="rlextra", device="cpu", dtype="float32")
    theirs = load_decoder(series, to_step=15, backend="vllm", dtype="float32")
    assert theirs.weights == ours.weights == [-0.5, 1.5]
    a, b = ours.generate(prompts, cfg, progress=False), theirs.generate(prompts, cfg, progress=False)
    assert a == b
    if stop:
        assert all("0" not in x[0] for x in b) and any(x[0] == "1" for x in b)  # '10' cut at its '0'
    else:
        assert len({x[0] for x in a}) >= 3  # the mix decodes different answers for different problems


def test_logits_extrapolation_in_eval_through_the_cli(tiny, earlier, tmp_path):
    from rlextra.cli import main

    args = ["eval", str(tiny), "--extrapolate-from", str(earlier), "--steps", "0,10", "--to-step", "15", "--task",
            "arithmetic", "--digits", "1", "--ops", "+", "--n-train", "60", "--n-test", "20", "--k", "1",
            "--temperature", "0", "--max-new-tokens", "4", "--dtype", "float32", "-q"]
    assert main(args + ["--backend", "vllm", "-o", str(tmp_path / "v.json")]) == 0
    assert main(args + ["--backend", "rlextra", "-o", str(tmp_path / "r.json")]) == 0
    v, r = (json.loads((tmp_path / f).read_text()) for f in ("v.json", "r.json"))
    assert v["per_problem"] == r["per_problem"]


def test_generate_with_vllm_writes_what_rlextras_engine_writes(tiny, earlier, tmp_path):
    from rlextra.cli import main

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(f"{a}+{b}=") + "\n" for a in range(4) for b in range(3)))
    args = ["generate", f"0={earlier}", f"10={tiny}", "--to-step", "15", "--prompts", str(prompts), "--k", "1",
            "--temperature", "0", "--max-new-tokens", "4", "--dtype", "float32", "-q"]
    assert main(args + ["--backend", "vllm", "-o", str(tmp_path / "v.jsonl")]) == 0
    assert main(args + ["-o", str(tmp_path / "r.jsonl")]) == 0
    v, r = ([json.loads(x) for x in (tmp_path / f).read_text().splitlines()] for f in ("v.jsonl", "r.jsonl"))
    assert v == r and v[0]["weights"] == [-0.5, 1.5]


def test_train_with_vllm_samples_from_the_trainers_weights_after_every_step_and_jump(tiny, tmp_path):
    """GRPO with --vllm (TRL's colocate mode, rlextra's in-place sync) and RL-Extra 2,2: after every
    optimizer step, and after every jump, vLLM's next-token log-probs on a fixed prompt equal the
    trainer model's (the sync the next generation makes, made here at once)."""
    import torch
    from transformers import TrainerCallback

    from rlextra.rl import TrainConfig, train
    from rlextra.rl.vllm_sync import active_generation
    from rlextra.tasks import TaskSpec
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    checks, previous = [], {}

    class SyncCheck(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            gen = active_generation()
            gen.sync_weights()  # what the next generation does first
            ids = processing_class("3+4=")["input_ids"]
            vocab = len(processing_class)
            out = gen.llm.generate([TokensPrompt(prompt_token_ids=ids)],
                                   SamplingParams(max_tokens=1, temperature=1.0, logprobs=min(vocab, 20)),
                                   use_tqdm=False)
            theirs = {t: lp.logprob for t, lp in out[0].outputs[0].logprobs[0].items()}
            with torch.no_grad():
                ours = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)
            moved = max(abs(ours[t].item() - previous[t]) for t in theirs) if previous else float("nan")
            previous.clear()
            previous.update({t: ours[t].item() for t in theirs})
            checks.append((state.global_step, max(abs(ours[t].item() - v) for t, v in theirs.items()), moved))

    cfg = TrainConfig(model=str(tiny), output_dir=str(tmp_path / "run"), max_steps=4, save_every=2,
                      learning_rate=1e-3, prompts_per_step=4, num_generations=4, max_completion_length=4,
                      rl_extra=(2, 2), vllm=True, task=TaskSpec(name="arithmetic", ops="+", digits=1, n_train=60,
                                                                  n_test=20, seed=0), progress=False)
    train(cfg, callbacks=[SyncCheck()])
    assert [s for s, _, _ in checks] == [1, 2, 3, 4]
    # equal to the weights of this step, and not to the last step's: the sync carried the step (and the jump)
    assert max(d for _, d, _ in checks) < 1e-4 < min(moved for _, _, moved in checks[1:]), checks

