"""vLLM's plugin hook (entry point ``vllm.general_plugins``): registers rlextra's Logits
Extrapolation model and its weight loader in every process vLLM starts. Cheap and idempotent, as
vLLM asks of plugins; the model module is imported only when vLLM loads that architecture."""

from __future__ import annotations


def register() -> None:
    from vllm import ModelRegistry

    if "RLExtraExtrapolatedLM" not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model("RLExtraExtrapolatedLM", "rlextra.decoding.vllm_model:RLExtraExtrapolatedLM")
    import rlextra.decoding.vllm_model  # noqa: F401 - registers the rlextra_extrapolate load format
