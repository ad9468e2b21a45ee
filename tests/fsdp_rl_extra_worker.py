"""Run by test_rl_extra under torch.distributed.run: FSDP2 (fully_shard) on CPU with gloo.

A real optimizer moves the sharded model; the callback jumps each process's local shard. The
worker gathers full parameters before and after each jump and checks them against the same
jump computed on the full tensors.
"""

import json
import os
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from rlextra.errors import RLExtraError
from rlextra.extrapolate.methods import predict_tensor
from rlextra.rl.models import char_tokenizer, tiny_llama
from rlextra.rl.rl_extra import RLExtraCallback


def full(model) -> dict:
    return {k: v.full_tensor().detach().clone() for k, v in model.named_parameters()}


def main(out: str, method: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    tok = char_tokenizer()
    model = tiny_llama(tok, hidden=32, layers=2, intermediate=64, seed=0)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.tensor([tok(f"{a}+{a}={2 * a}")["input_ids"][:5] for a in range(8)])
    args = SimpleNamespace(output_dir=out)
    m, n = 2, 3
    cb = RLExtraCallback(m, n, method=method, snapshots=3 if method == "lsq" else 2)
    state = lambda s: SimpleNamespace(global_step=s, is_world_process_zero=dist.get_rank() == 0)  # noqa: E731
    cb.on_train_begin(args, state(0), None, model=model)
    seen = {0: full(model)}
    errors = []
    for step in range(1, 5):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        seen[step] = full(model)
        try:
            cb.on_step_end(args, state(step), None, model=model, optimizer=opt)
        except RLExtraError as exc:
            errors.append(str(exc))
            break
        if step % m == 0:
            after = full(model)
            steps = list(range(step - m, step + 1)) if method == "lsq" else [step - m, step]
            for k, v in after.items():
                want = seen[step][k] if "norm" in k else predict_tensor(
                    method, steps, [seen[s][k] for s in steps], step + n)
                torch.testing.assert_close(v, want, rtol=1e-5, atol=1e-6, msg=lambda s: f"{k} at step {step}: {s}")
            seen[step] = after  # the next cycle starts from the jumped weights
    rank = dist.get_rank()
    digest = float(sum(v.double().sum() for v in full(model).values()))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"errors": errors, "jumps": [j["real_step"] for j in cb.jumps], "digest": digest}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
