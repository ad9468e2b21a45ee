"""Run by test_lr_auto under torch.distributed.run: --lr-auto (AdaptiveLR) on 2 CPU processes.

``ddp``: the HF Trainer with DDP; ``fsdp2``: fully_shard with a plain loop. Rank 0 alone computes
the monitor's rows; the decision must reach every rank, so every rank steps with the same lr.
"""

import hashlib
import json
import os
import sys
from types import SimpleNamespace

import torch

from rlextra.rl.lr_auto import AdaptiveLR
from rlextra.rl.models import char_tokenizer, tiny_llama
from rlextra.rl.monitor import LinearityMonitor
from ddp_rl_extra_worker import Toy  # the same toy data as the RL-Extra worker
from worker_exit import arm_watchdog, leave


def ddp(out, tok, model, mon, cb):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=out, max_steps=12, per_device_train_batch_size=4, learning_rate=1e-3,
                             lr_scheduler_type="constant", use_cpu=True, report_to=[], save_strategy="no",
                             logging_steps=1, ddp_backend="gloo", disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=Toy(tok), callbacks=[mon, cb])
    trainer.train()
    return trainer.optimizer, None, model


def fsdp2(out, tok, model, mon, cb):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ids = torch.tensor([tok(f"{a}+{a}={2 * a}")["input_ids"][:5] for a in range(8)])
    args = SimpleNamespace(output_dir=out, learning_rate=1e-3)
    state = lambda s: SimpleNamespace(global_step=s, is_world_process_zero=dist.get_rank() == 0)  # noqa: E731
    mon.on_train_begin(args, state(0), None, model=model)
    cb.on_train_begin(args, state(0), None, model=model, optimizer=opt, lr_scheduler=sched)
    for step in range(1, 13):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        mon.on_step_end(args, state(step), None, model=model)
        cb.on_step_end(args, state(step), None, model=model, optimizer=opt, lr_scheduler=sched)
    return opt, None, model


def main(out: str, mode: str) -> None:
    arm_watchdog()
    torch.set_num_threads(1)
    tok = char_tokenizer()
    model = tiny_llama(tok, hidden=32, layers=2, intermediate=64, seed=0)
    mon = LinearityMonitor(1, sample=0.2, window=4, output_dir=out)
    cb = AdaptiveLR(mon, every=2, max_multiplier=8.0, threshold=1e6)  # every window passes: raise, raise, raise
    opt, _, model = (ddp if mode == "ddp" else fsdp2)(out, tok, model, mon, cb)
    h = hashlib.sha256()
    for _, p in sorted(model.named_parameters()):
        full = p.full_tensor() if hasattr(p, "full_tensor") else p
        h.update(full.detach().float().numpy().tobytes())
    rank = int(os.environ.get("RANK", "0"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"lr": opt.param_groups[0]["lr"], "params_sha": h.hexdigest(),
                   "multipliers": [d["multiplier"] for d in cb.decisions]}, f)
    import torch.distributed as dist

    leave(dist)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
