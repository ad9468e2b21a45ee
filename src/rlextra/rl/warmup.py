"""The supervised warm-up that gives a tiny model partial competence before RL.

Real RLVR starts from an SFT model that is partly right; the warm-up gives the tiny model that
partial competence so GRPO has reward signal from its first step.
"""

from __future__ import annotations

import math
from typing import Sequence

from rlextra.errors import RLExtraError
from rlextra.tasks import Problem


def off_by_one(answer: str, sign: int) -> str:
    """A near miss of an integer answer: answer + sign (the classic slip a noisy teacher makes)."""
    return str(int(answer) + sign)


def warmup_sft(model, tokenizer, problems: Sequence[Problem], steps: int = 300, batch_size: int = 64,
               lr: float = 3e-3, seed: int = 0, progress: bool = True, label_noise: float = 0.0) -> list[float]:
    """Supervised warm-up on prompt+answer+eos (loss on the answer only); returns the loss curve.

    With ``label_noise`` q, each training answer is replaced, with probability q and afresh at every
    draw, by an off-by-one near miss (answer - 1 or + 1). The model then learns a distribution in
    which the right answer is the most likely but far from certain: the starting point RLVR
    sharpens (the right answer is in the distribution, not reliably picked).
    """
    import torch
    from tqdm.auto import tqdm

    if not 0.0 <= label_noise < 1.0:
        raise RLExtraError(f"label_noise {label_noise}: must be in [0, 1)")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(steps, 1))))
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    enc = [(encode(p.prompt), encode(p.answer) + [tokenizer.eos_token_id]) for p in problems]
    noisy = [tuple(encode(off_by_one(p.answer, s)) + [tokenizer.eos_token_id] for s in (-1, 1))
             for p in problems] if label_noise else None
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="warm-up (SFT)", disable=not progress):
        idx = torch.randint(len(enc), (batch_size,), generator=g).tolist()
        draws = torch.rand(batch_size, generator=g).tolist() if label_noise else [1.0] * batch_size
        pairs = [(enc[i][0], noisy[i][int(u * 2 / label_noise)] if noisy and u < label_noise else enc[i][1])
                 for i, u in zip(idx, draws)]
        seqs = [p + a for p, a in pairs]
        width = max(map(len, seqs))
        ids = torch.full((batch_size, width), tokenizer.pad_token_id)
        labels = torch.full((batch_size, width), -100)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for r, (p, a) in enumerate(pairs):
            n = len(p) + len(a)
            ids[r, width - n:] = torch.tensor(p + a)  # left padded, as generation sees it
            labels[r, width - len(a):] = torch.tensor(a)
            mask[r, width - n:] = 1
        dev = next(model.parameters()).device
        loss = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev)).loss
        if not math.isfinite(loss.item()):
            raise RLExtraError(f"warm-up diverged at step {len(losses) + 1}: the loss is {loss.item()} "
                               f"({next(model.parameters()).dtype}); nothing was written")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses
