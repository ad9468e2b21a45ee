"""Logits Extrapolation inside vLLM: K checkpoints of one architecture as one vLLM model.

``RLExtraExtrapolatedLM`` holds K stacks of the checkpoints' own vLLM model class (prefixes
``ckpt_a``, ``ckpt_b``, ...: vLLM takes a layer's index from the one integer in its name). ``forward`` runs every stack on the same tokens and returns their
hidden states side by side; ``compute_logits`` splits them and returns sum_k w_k z_k, the line through
the K checkpoints' logits at the target step (``rlextra.linefit.line_weights``, the weights rlextra's
own engine mixes with, in the same order, in fp32). vLLM's sampler, stop strings, length limits and
logprobs then act on the mixed logits as on any model's. Each stack's attention layers get their own
KV cache, so the cache holds 1/K of the tokens it would for one model.

The weights come from the checkpoints' own folders (the ``rlextra_extrapolate`` load format below):
no combined copy on disk. vLLM finds both through the ``vllm.general_plugins`` entry point
(``rlextra.decoding.vllm_plugin``), in every process it starts. This module is imported by vLLM only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from vllm.config import ModelConfig, VllmConfig
from vllm.model_executor.model_loader import register_model_loader
from vllm.model_executor.model_loader.base_loader import BaseModelLoader
from vllm.model_executor.model_loader.weight_utils import safetensors_weights_iterator

ARCHITECTURE = "RLExtraExtrapolatedLM"
LOAD_FORMAT = "rlextra_extrapolate"


class RLExtraExtrapolatedLM(nn.Module):
    """K stacks, one set of mixed logits. The config (written by rlextra) names the stacks' own
    architecture (``rlextra_architectures``), their folders (``rlextra_checkpoints``, oldest first)
    and the logit weights (``rlextra_logit_weights``)."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        from vllm.model_executor.models.registry import ModelRegistry

        cfg = vllm_config.model_config.hf_config
        self.logit_weights = [float(w) for w in cfg.rlextra_logit_weights]
        stack_cls, _ = ModelRegistry.resolve_model_cls(list(cfg.rlextra_architectures), vllm_config.model_config)
        # vLLM reads a layer's index from the one integer in its name: the stacks are named by letters
        self.stack_names = [f"ckpt_{chr(ord('a') + i)}" for i in range(len(self.logit_weights))]
        for name in self.stack_names:
            self.add_module(name, stack_cls(vllm_config=vllm_config, prefix=f"{prefix}{name}"))
        self.hidden_size = cfg.hidden_size

    @property
    def stacks(self) -> list[nn.Module]:
        return [getattr(self, name) for name in self.stack_names]

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        # only for prompt embeddings, which a mix of K models cannot take (each has its own table)
        raise NotImplementedError("Logits Extrapolation takes token ids, not embeddings")

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, intermediate_tensors=None,
                inputs_embeds=None, **kwargs) -> torch.Tensor:
        return torch.cat([s(input_ids, positions, None, None) for s in self.stacks], dim=-1)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        z = None
        for w, stack, h in zip(self.logit_weights, self.stacks, hidden_states.split(self.hidden_size, dim=-1)):
            if w == 0.0:  # skipped, as in rlextra's engine (0 * -inf would be NaN)
                continue
            lg = stack.compute_logits(h).float()
            term = lg * w if w != 1.0 else lg
            z = term if z is None else z + term
        return z


@register_model_loader(LOAD_FORMAT)
class ExtrapolationLoader(BaseModelLoader):
    """Fills stack k from checkpoint k's own safetensors files."""

    def download_model(self, model_config: ModelConfig) -> None:
        return None

    def load_weights(self, model: nn.Module, model_config: ModelConfig) -> None:
        folders = list(model_config.hf_config.rlextra_checkpoints)
        for stack, folder in zip(model.stacks, folders):
            files = sorted(str(f) for f in Path(folder).glob("*.safetensors"))
            if not files:
                raise ValueError(f"{folder}: no safetensors weights")
            stack.load_weights(safetensors_weights_iterator(files, use_tqdm_on_load=False))
