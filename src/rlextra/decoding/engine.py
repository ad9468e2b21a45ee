"""One decoding engine for K >= 1 models: K = 1 is plain decoding, K >= 2 mixes their logits.

Each token, every model scores the batch with its own KV cache; the logits move to the first
model's device and mix as z_T = sum_k w_k z_k, the least-squares line through the K checkpoints'
logits evaluated at the target step T (``rlextra.linefit.line_weights``; for K = 2 the paper's
z_b + alpha (z_s - z_b)). Then temperature, top-k, top-p and sampling (argmax at temperature 0),
with the random generator and the eos ids on that device. The sampled tokens and their eos flags
come to the host in one transfer per token (the only synchronisation); stop strings are searched
in the newly decoded text of each row only.

Two ways to run the per-token step (``mode``):
- eager: dynamic KV caches; prompts are prefilled once and their caches repeated for the k
  samples; rows that finish leave the batch and their cache rows are dropped. The CPU default.
- compiled: static KV caches (transformers' StaticCache) and the model's compiled step
  (``torch.compile(mode="reduce-overhead")``: CUDA graphs on GPUs). Shapes are bucketed (rows up
  to a power of two, cache length up to a multiple of 128) so graphs are reused across batches;
  finished rows keep their slot until the batch ends. The GPU default; a model or setup that
  cannot run it falls back to eager with one warning. ``static`` is the same path uncompiled.
Sampled (not greedy) completions differ between the two paths, as rows draw random numbers in
different batch layouts; their distribution is the same.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from rlextra.checkpoints import CheckpointSeries
from rlextra.decoding.config import SamplingConfig, check_prompt_lengths
from rlextra.errors import RLExtraError
from rlextra.hf import model_device, prepare_tokenizer, prompt_special_tokens
from rlextra.linefit import line_weights, resolve_target

MODES = ("auto", "eager", "static", "compiled")
CACHE_LEN_BUCKET = 128


def filter_logits(z, temperature: float, top_k: int, top_p: float):
    """Temperature, then top-k, then top-p (nucleus), as HF generate orders them."""
    import torch

    if temperature > 0 and temperature != 1.0:
        z = z / temperature
    if top_k and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sorted_z, order = torch.sort(z, descending=True, dim=-1)
        cum = torch.softmax(sorted_z, dim=-1).cumsum(dim=-1)
        drop = cum > top_p
        drop[..., 1:] = drop[..., :-1].clone()  # keep the token that crosses top_p
        drop[..., 0] = False
        z = z.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return z


def _cache_kwarg(model) -> str:
    """transformers >= 5.2x names the KV cache argument 'cache'; older versions 'past_key_values'."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _out_cache(out):
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


def _select(cache, idx) -> None:
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(idx)
    else:
        cache.reorder_cache(idx)


def _own_mask_kind(model) -> str | None:
    """'sdpa' or 'eager' when a plain padding mask is right for every layer (full attention only)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    impl = getattr(cfg, "_attn_implementation", None) or getattr(model.config, "_attn_implementation", None)
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types:
        full = all(t == "full_attention" for t in layer_types)
    else:
        full = getattr(cfg, "sliding_window", None) is None
    return impl if impl in ("sdpa", "eager") and full else None


def _bucket_rows(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _raise_recompile_limit(at_least: int = 64) -> None:
    """Each (row bucket, cache length) is its own static graph; torch's default of 8 graphs per
    function would silently send later buckets back to eager."""
    import torch._dynamo

    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    setattr(cfg, name, max(getattr(cfg, name), at_least))


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return text if cut < 0 else text[:cut]


class _StopScanner:
    """Finds stop strings in each row's newly decoded text only.

    Tokens are detokenised incrementally (the previous token as context, so merged spaces and
    multi-byte characters come out right); the new text is searched together with the last
    len(longest stop) - 1 characters before it, so a stop string split across tokens is found.
    """

    def __init__(self, tokenizer, stops: Sequence[str], rows: list[list[int]]) -> None:
        self.tok, self.stops, self.rows = tokenizer, list(stops), rows
        self.keep = max(map(len, self.stops)) - 1
        self.prefix = [0] * len(rows)
        self.read = [0] * len(rows)
        self.tail = [""] * len(rows)

    def hit(self, r: int) -> bool:
        """Call after appending a token to row r; True when a stop string has appeared."""
        ids, p, q = self.rows[r], self.prefix[r], self.read[r]
        before = self.tok.decode(ids[p:q], skip_special_tokens=True)
        text = self.tok.decode(ids[p:], skip_special_tokens=True)
        if len(text) <= len(before) or text.endswith("\ufffd"):
            return False  # no complete new character yet
        window = self.tail[r] + text[len(before):]
        self.prefix[r], self.read[r] = q, len(ids)
        self.tail[r] = window[len(window) - self.keep:] if self.keep else ""
        return any(s in window for s in self.stops)


class DecodingEngine:
    """Decode with K loaded models of one run (same tokenizer); K = 1 is plain decoding.

    ``steps`` are the models' training steps (oldest first) and ``to_step`` (or ``alpha``,
    relative to the first and last step) the step whose logits to extrapolate to. ``mode``:
    auto (compiled when every model is on CUDA, else eager), eager, static or compiled.
    """

    def __init__(self, models: Sequence, steps: Sequence[float] | None, tokenizer, *,
                 to_step: float | None = None, alpha: float | None = None, mode: str = "auto",
                 label: str | None = None) -> None:
        import torch

        models = list(models)
        steps = [0.0] * len(models) if steps is None and len(models) == 1 else steps
        if not models or steps is None or len(models) != len(steps):
            raise RLExtraError("decoding needs at least one model and one step per model")
        if len(models) > 1 and (to_step is None) == (alpha is None):
            raise RLExtraError("give exactly one of --to-step T or --alpha A")
        if mode not in MODES:
            raise RLExtraError(f"--decode-mode {mode}: expected one of {', '.join(MODES)}")
        self.models = models
        self.steps = [float(s) for s in steps]
        self.target = resolve_target(self.steps, to_step, alpha)[0] if len(models) > 1 else \
            float(self.steps[0] if to_step is None else to_step)
        self.weights = line_weights(self.steps, self.target).tolist()
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.devices = [model_device(m) for m in models]
        self.mix_device = self.devices[0]
        eos = set()
        for m in models:
            e = getattr(getattr(m, "generation_config", None), "eos_token_id", None)
            eos.update(e if isinstance(e, (list, tuple)) else [e] if e is not None else [])
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        self.eos_ids = sorted(eos)
        self._eos = torch.tensor(self.eos_ids, dtype=torch.long, device=self.mix_device)
        self._cache_kw = [_cache_kwarg(m) for m in models]
        self._mask_kinds = [_own_mask_kind(m) for m in models]
        if len(models) == 1:
            self.name = "rlextra"
        else:
            self.name = (f"logits-extrapolation (steps {', '.join(f'{s:g}' for s in self.steps)} "
                         f"-> {self.target:g})")
        self.label = label or "in-memory"
        self.mode = self._resolve_mode(mode)
        self._static_caches: dict = {}
        self._warned = False

    @property
    def alpha(self) -> float:
        """Target relative to the first and last steps: (T - b) / (s - b)."""
        if len(self.steps) < 2:
            return 1.0
        return (self.target - self.steps[0]) / (self.steps[-1] - self.steps[0])

    def _resolve_mode(self, mode: str) -> str:
        on_cuda = all(d.type == "cuda" for d in self.devices)
        if mode == "auto":
            mode = "compiled" if on_cuda else "eager"
        if mode in ("static", "compiled"):
            unsupported = [type(m).__name__ for m in self.models
                           if not getattr(m, "_can_compile_fullgraph", False) or not hasattr(m, "get_compiled_call")]
            if unsupported:
                self._fallback(f"{unsupported[0]} does not support static caches")
                return "eager"
        if mode == "compiled":
            _raise_recompile_limit()
        return mode

    def _fallback(self, why: str) -> None:
        if not getattr(self, "_warned", False):
            warnings.warn(f"rlextra decoding: {why}; decoding eagerly (dynamic caches, no CUDA graphs)",
                          RuntimeWarning, stacklevel=3)
            self._warned = True

    def _mix(self, logits: list):
        """fp32 sum_k w_k z_k on the mixing device; zero weights skipped (0 * -inf would be NaN)."""
        z = None
        for w, lg in zip(self.weights, logits):
            if w == 0.0:
                continue
            lg = lg.to(self.mix_device, non_blocking=True).float()
            term = lg * w if w != 1.0 else lg
            z = term if z is None else z + term
        return z

    def _sample(self, z, cfg: SamplingConfig, gen):
        import torch

        if cfg.greedy:
            return z.argmax(-1)
        z = filter_logits(z, cfg.temperature, cfg.top_k, cfg.top_p)
        return torch.multinomial(torch.softmax(z, -1), 1, generator=gen).squeeze(-1)

    def _is_eos(self, nxt):
        import torch

        return torch.isin(nxt, self._eos) if len(self.eos_ids) else torch.zeros_like(nxt, dtype=torch.bool)

    def generate(self, prompts: Sequence[str], cfg: SamplingConfig | None = None,
                 progress: bool = True) -> list[list[str]]:
        """cfg.k completions per prompt, in prompt order.

        Batches hold whole prompts with their k samples (cfg.batch_size rows at most, at least
        one prompt); prompts of different lengths are left padded.
        """
        import torch

        cfg = cfg or SamplingConfig()
        check_prompt_lengths(self.tokenizer, prompts, self.models[0].config)
        per_batch = max(1, cfg.batch_size // cfg.k)
        gen = torch.Generator(device=self.mix_device).manual_seed(cfg.seed)
        texts: list[str] = []
        desc = "decoding" if len(self.models) == 1 else "extrapolated decoding"
        for i in tqdm(range(0, len(prompts), per_batch), desc=desc, disable=not progress):
            texts.extend(self._batch(list(prompts[i:i + per_batch]), cfg, gen))
        return [texts[j * cfg.k:(j + 1) * cfg.k] for j in range(len(prompts))]

    def _batch(self, prompts: list[str], cfg: SamplingConfig, gen) -> list[str]:
        import torch

        tok = self.tokenizer
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=prompt_special_tokens(tok))
        ids, mask = enc["input_ids"], enc["attention_mask"]
        out_ids: list[list[int]] = [[] for _ in range(len(prompts) * cfg.k)]
        with torch.no_grad():
            if self.mode in ("static", "compiled"):
                try:
                    self._decode_static(ids, mask, cfg, gen, out_ids)
                except (RuntimeError, TypeError, ValueError, AttributeError, NotImplementedError) as exc:
                    if isinstance(exc, torch.cuda.OutOfMemoryError):
                        raise
                    self._fallback(f"the {self.mode} step failed ({str(exc).splitlines()[0][:200]})")
                    self.mode = "eager"
                    self._static_caches.clear()
                    out_ids = [[] for _ in out_ids]
            if self.mode == "eager":
                self._decode_eager(ids, mask, cfg, gen, out_ids)
        texts = [tok.decode(row, skip_special_tokens=True) for row in out_ids]
        return [_cut_at_stop(t, cfg.stop) for t in texts]

    def _take(self, nxt, rows: list[int], slots: Sequence[int], out_ids: list[list[int]], scanner) -> list[bool]:
        """The token's one host transfer: row r's token sits at slots[i]; returns which rows finished."""
        import torch

        toks, flags = torch.stack([nxt, self._is_eos(nxt).to(nxt.dtype)]).tolist()
        finished = []
        for r, s in zip(rows, slots):
            if not flags[s]:
                out_ids[r].append(toks[s])
            finished.append(bool(flags[s]) or (scanner is not None and scanner.hit(r)))
        return finished

    def _decode_eager(self, ids, mask, cfg: SamplingConfig, gen, out_ids: list[list[int]]) -> None:
        """Dynamic caches; one prefill per prompt repeated for its k samples; finished rows leave."""
        import torch

        k = cfg.k
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        caches, logits = [], []
        for m, dev in zip(self.models, self.devices):
            o = m(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev),
                  use_cache=True, logits_to_keep=1)
            cache = _out_cache(o)
            if k > 1:
                cache.batch_repeat_interleave(k)
            caches.append(cache)
            logits.append(o.logits[:, -1, :])
        mix = self.mix_device
        masks = [mask.repeat_interleave(k, dim=0).to(d) for d in self.devices]
        last_pos = positions[:, -1:].repeat_interleave(k, dim=0).to(mix)
        active = list(range(len(out_ids)))
        scanner = _StopScanner(self.tokenizer, cfg.stop, out_ids) if cfg.stop else None
        for step in range(cfg.max_new_tokens):
            z = self._mix(logits)
            if step == 0 and k > 1:
                z = z.repeat_interleave(k, dim=0)  # mixed once per prompt, shared by its samples
            nxt = self._sample(z, cfg, gen)
            finished = self._take(nxt, active, range(len(active)), out_ids, scanner)
            if all(finished) or step == cfg.max_new_tokens - 1:
                break
            if any(finished):  # finished rows leave the batch and the caches
                keep_rows = [j for j, f in enumerate(finished) if not f]
                keep = torch.tensor(keep_rows, device=mix)
                for c, d in zip(caches, self.devices):
                    _select(c, keep.to(d))
                masks = [mk[keep.to(mk.device)] for mk in masks]
                active = [active[j] for j in keep_rows]
                nxt, last_pos = nxt[keep], last_pos[keep]
            masks = [torch.cat([mk, mk.new_ones((len(active), 1))], dim=1) for mk in masks]
            last_pos = last_pos + 1
            logits = []
            for i, (m, c, kw, mk, d) in enumerate(zip(self.models, caches, self._cache_kw, masks, self.devices)):
                o = m(input_ids=nxt[:, None].to(d), attention_mask=self._step_mask(i, mk),
                      position_ids=last_pos.to(d), use_cache=True, **{kw: c})
                logits.append(o.logits[:, -1, :])

    def _static_cache(self, i: int, rows: int, length: int):
        """Model i's static cache for (rows, length), reused across batches of the same bucket."""
        from transformers import StaticCache

        key = (i, rows, length)
        cache = self._static_caches.get(key)
        if cache is None:
            cache = self._static_caches[key] = StaticCache(config=self.models[i].config, max_cache_len=length)
        else:
            cache.reset()
        return cache

    def _step_mask(self, i: int, mask2d):
        """Model i's attention mask for a one-token step over the kv positions of ``mask2d``.

        For SDPA and eager attention the 4D mask is built here: transformers' own mask
        preparation reads mask values on the host (a synchronisation per model per token). The
        new token may attend to every kept position, so the padding mask is the whole mask.
        Other attention kernels get the 2D mask and prepare their own.
        """
        import torch

        kind = self._mask_kinds[i]
        if kind is None:
            return mask2d
        keep = mask2d[:, None, None, :].bool()
        if kind == "sdpa":
            return keep
        dtype = self.models[i].dtype
        return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, torch.finfo(dtype).min)

    def _decode_static(self, ids, mask, cfg: SamplingConfig, gen, out_ids: list[list[int]]) -> None:
        """Static caches and bucketed shapes; the per-token step compiled in 'compiled' mode."""
        import torch

        k, n = cfg.k, len(out_ids)
        ids, mask = ids.repeat_interleave(k, dim=0), mask.repeat_interleave(k, dim=0)
        rows = _bucket_rows(n)
        if rows > n:  # filler rows copy the last real row; their tokens are never read
            ids = torch.cat([ids, ids[-1:].expand(rows - n, -1)])
            mask = torch.cat([mask, mask[-1:].expand(rows - n, -1)])
        width = ids.shape[1]
        length = -(-(width + cfg.max_new_tokens) // CACHE_LEN_BUCKET) * CACHE_LEN_BUCKET
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        full = torch.zeros((rows, length), dtype=mask.dtype)
        full[:, :width] = mask
        compiled = self.mode == "compiled"
        cuda_graphs = compiled and self.mix_device.type == "cuda"
        caches, steps, masks, logits = [], [], [], []
        for i, (m, dev) in enumerate(zip(self.models, self.devices)):
            cache = self._static_cache(i, rows, length)
            o = m(input_ids=ids.to(dev), attention_mask=full[:, :width].to(dev), position_ids=positions.to(dev),
                  use_cache=True, logits_to_keep=1, **{self._cache_kw[i]: cache})
            caches.append(cache)
            steps.append(m.get_compiled_call(None) if compiled else m.__call__)
            masks.append(full.to(dev))
            logits.append(o.logits[:, -1, :])
        last_pos = positions[:, -1:].to(self.mix_device)
        active = list(range(n))
        finished = [False] * n
        scanner = _StopScanner(self.tokenizer, cfg.stop, out_ids) if cfg.stop else None
        for step in range(cfg.max_new_tokens):
            nxt = self._sample(self._mix(logits), cfg, gen)
            for r, d in zip(active, self._take(nxt[:n], active, active, out_ids, scanner)):
                finished[r] = d
            active = [r for r in range(n) if not finished[r]]
            if not active or step == cfg.max_new_tokens - 1:
                break
            # finished rows keep decoding in their slots (static shapes); _take ignores them
            col = width + step
            last_pos = last_pos + 1
            if cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            logits = []
            for i, (dev, cache, fn) in enumerate(zip(self.devices, caches, steps)):
                masks[i][:, col] = 1
                o = fn(input_ids=nxt[:, None].to(dev), attention_mask=self._step_mask(i, masks[i]),
                       position_ids=last_pos.to(dev),
                       use_cache=True, logits_to_keep=1, **{self._cache_kw[i]: cache})
                logits.append(o.logits[:, -1, :])


def load_engine(checkpoints: str | Path | Sequence[str | Path] | CheckpointSeries, *, to_step: float | None = None,
                alpha: float | None = None, steps: Sequence[int] | None = None, device: str | None = "auto",
                dtype: str | None = "auto", devices: str | Sequence[str] | None = None,
                allow_pickle: bool = False, mode: str = "auto") -> DecodingEngine:
    """Load the checkpoints of a run (oldest first) onto their devices, tokenizer from the newest.

    ``devices`` ('cuda:0,cuda:1' or a list) puts model i on devices[i]; otherwise all go to
    ``device``. One checkpoint is plain decoding.
    """
    from rlextra.checkpoints import check_loadable, load_series
    from rlextra.hf import load_model, resolve_devices

    if isinstance(checkpoints, CheckpointSeries):  # checked by the caller (check_loadable)
        series = checkpoints
    else:
        items = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
        if steps is None and len(items) == 1 and (Path(str(items[0])) / "config.json").is_file():
            steps = [0]  # one model folder: plain decoding, its step does not matter
        series = check_loadable(load_series(items, steps, allow_pickle=allow_pickle))
    target = resolve_target(series.steps, to_step, alpha)[0] if len(series) > 1 else series.steps[0]
    placed = resolve_devices(devices, len(series), device)
    loaded = [load_model(c.path, device=str(d), dtype=dtype, allow_pickle=allow_pickle, checked=True)
              for c, d in zip(series.checkpoints, placed)]
    paths = [str(c.path) for c in series.checkpoints]
    label = paths[0] if len(paths) == 1 else f"{' + '.join(paths)} -> step {target:g}"
    engine = DecodingEngine([m for m, _ in loaded], series.steps, loaded[-1][1], to_step=target, mode=mode,
                            label=label)
    engine.paths = [c.path for c in series.checkpoints]  # the inputs, for output guards
    return engine
