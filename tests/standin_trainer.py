"""A stand-in for verl in the loop tests: 'trains' by moving every float weight 0.01 per step.

Writes OUT/global_step_N/actor/huggingface like verl + model_merger. Fails with exit code 3 when
the environment variable STANDIN_FAIL_AT equals the start step. Appends each call to OUT/../calls.
"""

import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

model, out, start, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with open(out.parent.parent / "calls", "a") as f:
    f.write(f"{start}\n")
if os.environ.get("STANDIN_FAIL_AT") == str(start):
    print("simulated crash", file=sys.stderr)
    sys.exit(3)
state = load_file(str(model / "model.safetensors"))
state = {k: v + 0.01 * steps if v.is_floating_point() else v for k, v in state.items()}
dest = out / f"global_step_{steps}" / "actor" / "huggingface"
dest.mkdir(parents=True)
save_file({k: v.contiguous() for k, v in state.items()}, str(dest / "model.safetensors"), metadata={"format": "pt"})
shutil.copy(model / "config.json", dest / "config.json")
print(f"trained {steps} steps from {start}; max |w| {max(float(v.abs().max()) for v in state.values()):.3f}")
torch.set_num_threads(1)
