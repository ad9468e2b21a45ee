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
