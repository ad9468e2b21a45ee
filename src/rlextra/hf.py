"""What every model-touching module shares: device and dtype choice, model and tokenizer loading.

Models load straight onto their device (no CPU copy first) from safetensors only, unless the
caller allows pickle files it trusts. Tokenizers are prepared once for batched decoding: left
padding, a pad token (eos when the tokenizer has none), and special tokens added to prompts only
when there is no chat template (a template already writes them).
"""

from __future__ import annotations

import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

from rlextra.errors import RLExtraError

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N (default auto)"
DTYPES = ("auto", "bfloat16", "float16", "float32")
DTYPE_HELP = "auto (bfloat16 on GPUs that support it, else the checkpoint's own dtype), bfloat16, float16, float32"

_NORM = re.compile(r"norm|(^|\.)ln(_\w*)?\.", re.IGNORECASE)


@contextmanager
def hf_progress_bars(enabled: bool):
    """Transformers' own bars (loading weights, writing shards) follow rlextra's --quiet; without
    this they print on stderr under -q. The previous setting comes back afterwards."""
    if enabled:
        yield
        return
    if "transformers" not in sys.modules:  # not loaded (yet): say it through the hub's switch, read at import,
        import os                           # so a command that never needs transformers never imports it (0.4 s)

        before = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        try:
            yield
        finally:
            if before is None:
                del os.environ["HF_HUB_DISABLE_PROGRESS_BARS"]
                if "transformers.utils.logging" in sys.modules:  # loaded inside: bars back on for later use
                    sys.modules["transformers.utils.logging"].enable_progress_bar()
            else:
                os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = before
        return
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def is_norm_weight(name: str) -> bool:
    """LayerNorm/RMSNorm parameters by name (input_layernorm, model.norm, ln_f, q_norm, ...)."""
    return bool(_NORM.search(name))


def resolve_device(device: str | None = "auto", option: str = "--device"):
    """A torch.device from 'auto', 'cpu', 'cuda' or 'cuda:N'; CUDA without CUDA is a one-line error."""
    import torch

    name = (device or "auto").strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not m:
        raise RLExtraError(f"{option} {name}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise RLExtraError(f"{option} {name}: CUDA is not available on this machine (use --device cpu)")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise RLExtraError(f"{option} {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device(name)


def resolve_devices(devices: str | Sequence[str] | None, n: int, device: str | None = "auto") -> list:
    """One torch.device per model: a comma list of exactly n devices, or ``device`` for all."""
    if devices is None or devices == "":
        return [resolve_device(device)] * n
    names = [d.strip() for d in devices.split(",")] if isinstance(devices, str) else list(devices)
    if len(names) != n:
        raise RLExtraError(f"--devices: {len(names)} device(s) for {n} model(s); give one per model")
    return [resolve_device(d, "--devices") for d in names]


def resolve_dtype(dtype: str | None, device) -> object:
    """A torch dtype, or 'auto' (the checkpoint's own dtype) where no choice is needed."""
    import torch

    name = dtype or "auto"
    if name not in DTYPES:
        raise RLExtraError(f"--dtype {name}: expected one of {', '.join(DTYPES)}")
    if name == "auto":
        if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return "auto"
    return getattr(torch, name)


def model_device(model):
    """The device of a model's first parameter (where its inputs go)."""
    return next(model.parameters()).device


def load_model(path: str | Path, *, device: str | None = "auto", dtype: str | None = "auto",
               allow_pickle: bool = False, place: bool = True, checked: bool = False):
    """(model, tokenizer) from a local folder, the model in eval mode directly on ``device``
    (``place=False``: left where transformers loads it, for a trainer that places it itself).

    Every weight file is read through rlextra's checked reader first (headers, offsets, sizes;
    pickles only with ``allow_pickle``), so a damaged folder is a one-line error, not a crash. A
    tensor the folder lacks, or one whose shape disagrees with config.json, is refused: transformers
    would fill it with random values and carry on. So are NaN and Inf in the weights.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from rlextra.checkpoints import check_model_dir

    # checked: the caller ran check_model_dir (or load_series) on this weights folder already
    path = Path(path) if checked else check_model_dir(path, allow_pickle=allow_pickle, pickle_flag="--allow-pickle")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    placement = {"device_map": str(dev)} if place else {}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its multi-line load report: the one-line refusals below say it
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, use_safetensors=None if allow_pickle else True, output_loading_info=True,
            ignore_mismatched_sizes=True, **placement)  # so that mismatches reach the check below
    except (OSError, ValueError, RuntimeError) as exc:
        raise RLExtraError(f"{path}: cannot load the model ({_first_line(exc)})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    mismatched = sorted(info.get("mismatched_keys") or (), key=str)
    if mismatched:
        k = mismatched[0]
        shapes = f" (checkpoint {tuple(k[1])}, config.json {tuple(k[2])})" if isinstance(k, tuple) and len(k) == 3 \
            else ""
        raise RLExtraError(f"{path}: config.json does not match the weights: tensor "
                           f"'{k if isinstance(k, str) else k[0]}'{shapes}" +
                           (f" and {len(mismatched) - 1} more" if len(mismatched) > 1 else ""))
    missing = sorted(map(str, info.get("missing_keys") or ()))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise RLExtraError(f"{path}: the checkpoint lacks tensor '{missing[0]}'{more}; transformers would "
                           "initialize it at random, so it is refused")
    with torch.no_grad():
        bad = next((n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())), None)
    if bad is not None:
        raise RLExtraError(f"{path}: tensor '{bad}' contains NaN or Inf")
    return model.eval(), load_tokenizer(path)


def _first_line(exc: BaseException) -> str:
    """An exception's first non-empty line (transformers' mismatch reports run to many lines)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def load_tokenizer(path: str | Path):
    """The folder's tokenizer, prepared for batched decoding (see ``prepare_tokenizer``)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as exc:
        raise RLExtraError(f"{path}: cannot load a tokenizer; copy the tokenizer files of the run into it "
                           f"({str(exc).splitlines()[0]})") from None
    return prepare_tokenizer(tokenizer)


def prepare_tokenizer(tokenizer):
    """Left padding (decoding appends on the right) and a pad token (eos when there is none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise RLExtraError("the tokenizer has neither a pad token nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def prompt_special_tokens(tokenizer) -> bool:
    """Whether encoding a prompt should add special tokens: not when a chat template wrote them."""
    return not getattr(tokenizer, "chat_template", None)


def format_prompts(tokenizer, prompts: Sequence[str], conversational: bool) -> list[str]:
    """Chat-template conversational prompts when the tokenizer has a template; plain text otherwise."""
    if conversational and getattr(tokenizer, "chat_template", None):
        return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                              add_generation_prompt=True) for p in prompts]
    return list(prompts)
