"""Decoding: one sampling config, one K-model engine (K = 1 is plain decoding), single-model backends."""

from rlextra.decoding.backends import HFGenerate, VLLMGenerate, load_decoder, vllm_available
from rlextra.decoding.config import Decoder, SamplingConfig, check_prompt_lengths, check_sampling
from rlextra.decoding.engine import DecodingEngine, filter_logits, load_engine
from rlextra.decoding.generate import generate_file, read_prompts

__all__ = ["Decoder", "DecodingEngine", "HFGenerate", "SamplingConfig", "VLLMGenerate", "check_prompt_lengths",
           "check_sampling", "filter_logits", "generate_file", "load_decoder", "load_engine", "read_prompts",
           "vllm_available"]
