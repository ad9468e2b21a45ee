"""Run by test_rl_extra under torch.distributed.run: HF Trainer + RLExtraCallback with DDP on CPU."""

import hashlib
import json
import os
import sys

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from rlextra.rl.models import char_tokenizer, tiny_llama
from rlextra.rl.monitor import LinearityMonitor
from rlextra.rl.rl_extra import RLExtraCallback
from worker_exit import arm_watchdog, leave


class Toy(Dataset):
    def __init__(self, tok):
        self.rows = [tok(f"{a}+{b}={a + b}")["input_ids"] for a in range(10) for b in range(10)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        ids = torch.tensor(self.rows[i][:5])
        return {"input_ids": ids, "labels": ids}


def main(out: str) -> None:
    arm_watchdog()
    torch.set_num_threads(1)
    tok = char_tokenizer()
    model = tiny_llama(tok, hidden=32, layers=2, intermediate=64, seed=0)
    args = TrainingArguments(output_dir=out, max_steps=6, per_device_train_batch_size=4, learning_rate=1e-3,
                             lr_scheduler_type="constant", use_cpu=True, report_to=[], save_strategy="no",
                             logging_steps=1, ddp_backend="gloo", disable_tqdm=True, seed=0)
    mon = LinearityMonitor(1, sample=0.2, window=4)
    cb = RLExtraCallback(2, 2, monitor=mon)
    trainer = Trainer(model=model, args=args, train_dataset=Toy(tok), callbacks=[mon, cb])
    trainer.train()
    h = hashlib.sha256()
    for _, p in sorted(model.named_parameters()):
        h.update(p.detach().float().numpy().tobytes())
    rank = int(os.environ.get("RANK", "0"))
    snap = hashlib.sha256()
    for _, weights in mon.snapshots:
        for k in sorted(weights):
            snap.update(weights[k].tobytes())
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"world_size": args.world_size, "params_sha": h.hexdigest(),
                   "jump_steps": [j["real_step"] for j in cb.jumps],
                   "monitor_sha": snap.hexdigest(), "monitor_steps": [r["step"] for r in mon.rows if "event" not in r]}, f)
    leave(torch.distributed)


if __name__ == "__main__":
    main(sys.argv[1])
