"""Run by test_fsdp_shards under torch.distributed.run: checkpoints written as verl writes them.

The calls follow verl's ``FSDPCheckpointManager.save_checkpoint`` (verl/utils/checkpoint/
fsdp_checkpoint_manager.py): under FSDP1 a SHARDED_STATE_DICT context (a no-op under FSDP2), then on
every rank ``torch.save(model.state_dict(), model_world_size_W_rank_R.pt)`` and the same for the
optimizer and the extra state; rank 0 writes ``huggingface/`` (config and tokenizer only) and
``fsdp_config.json``; after a barrier the trainer writes ``latest_checkpointed_iteration.txt``.
Beside each checkpoint, rank 0 writes the gathered fp32 weights as safetensors (``reference/``): what
rlextra must read out of the shards, exactly.

Usage: verl_fsdp_worker.py OUT FSDP_VERSION(1|2) STEPS(comma-separated steps to save at)
       [HIDDEN,LAYERS,INTERMEDIATE] (the model's sizes; bench/bench_fsdp_shards.py uses larger ones)
"""

import json
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from rlextra.rl.models import char_tokenizer, tiny_llama
from worker_exit import arm_watchdog, leave


def wrap(model, version: int, mesh):
    if version == 2:
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        return fully_shard(model, mesh=mesh)
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return FSDP(model, device_mesh=mesh, device_id=torch.device("cpu"), use_orig_params=True)


def state_ctx(model, version: int):
    """verl's get_fsdp_state_ctx: SHARDED_STATE_DICT under FSDP1, nothing under FSDP2."""
    from contextlib import nullcontext

    if version == 2:
        return nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import ShardedOptimStateDictConfig, ShardedStateDictConfig, StateDictType

    return FSDP.state_dict_type(model, StateDictType.SHARDED_STATE_DICT, ShardedStateDictConfig(offload_to_cpu=False),
                                ShardedOptimStateDictConfig(offload_to_cpu=False))


def full_weights(model, version: int) -> dict:
    """Every rank takes part; rank 0 keeps the gathered fp32 tensors."""
    if version == 2:
        return {k: v.full_tensor().detach().clone() for k, v in model.state_dict().items()}
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, FullStateDictConfig(rank0_only=False)):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}


def main(out: str, version: int, steps: list[int], sizes: tuple[int, int, int] = (38, 2, 70)) -> None:
    arm_watchdog()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("fsdp",))
    tok = char_tokenizer()
    # odd sizes, so that dim 0 splits unevenly over the ranks (FSDP pads; the files keep the padding)
    hidden, layers, intermediate = sizes
    model = tiny_llama(tok, hidden=hidden, layers=layers, heads=1, intermediate=intermediate, seed=0)
    config = model.config
    config.architectures = [type(model).__name__]  # as in a pretrained model's config, which verl saves
    model = wrap(model, version, mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.tensor([tok(f"{a}+{a}={2 * a}")["input_ids"][:5] for a in range(8)])
    for step in range(1, max(steps) + 1):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        if step not in steps:
            continue
        path = os.path.join(out, "run", f"global_step_{step}", "actor")
        os.makedirs(path, exist_ok=True)
        dist.barrier()
        with state_ctx(model, version):
            torch.save(model.state_dict(), os.path.join(path, f"model_world_size_{world}_rank_{rank}.pt"))
            torch.save(opt.state_dict(), os.path.join(path, f"optim_world_size_{world}_rank_{rank}.pt"))
            torch.save({"lr_scheduler": None, "rng": torch.get_rng_state()},
                       os.path.join(path, f"extra_state_world_size_{world}_rank_{rank}.pt"))
        if rank == 0:
            hf = os.path.join(path, "huggingface")
            config.save_pretrained(hf)
            tok.save_pretrained(hf)
            with open(os.path.join(path, "fsdp_config.json"), "w") as f:
                json.dump({"FSDP_version": version, "world_size": world}, f, indent=4)
        weights = full_weights(model, version)
        dist.barrier()
        if rank == 0:
            from safetensors.torch import save_file

            ref = os.path.join(out, "reference", f"step{step}")
            os.makedirs(ref, exist_ok=True)
            save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(ref, "model.safetensors"))
            config.save_pretrained(ref)
            tok.save_pretrained(ref)
            with open(os.path.join(out, "run", "latest_checkpointed_iteration.txt"), "w") as f:
                f.write(str(step))
    leave(dist)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), [int(s) for s in sys.argv[3].split(",")],
         *([tuple(int(x) for x in sys.argv[4].split(","))] if len(sys.argv) > 4 else []))
