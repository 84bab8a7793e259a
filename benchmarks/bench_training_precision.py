"""CPU seconds per training step by precision and memory layout (robust under machine load).

One process per call: the default U-Net resnet34 (``LandCoverModule`` of the default config,
cross-entropy), AdamW, batch 4 x 4 x 288 x 288 (the default training crop), ``--threads`` torch
threads; ``bf16`` runs the step under ``torch.autocast("cpu", torch.bfloat16)`` (what Lightning's
``bf16-mixed`` does), ``cl`` the network and input channels-last. Prints one JSON line: CPU seconds
(``time.process_time``) and wall seconds of each timed step after a warm-up step, peak RSS (MiB).
Run the variants interleaved::

    for r in 1 2; do for v in "fp32 nchw" "bf16 cl" "fp32 cl" "bf16 nchw"; do
        python benchmarks/bench_training_precision.py $v 2; done; done
"""

import json
import resource
import sys
import time

import torch

from s2landcover.config import validate_config
from s2landcover.training.module import LandCoverModule
from s2landcover.training.tasks import task_from_config


def main() -> None:
    prec, layout, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    cfg = validate_config({})
    torch.manual_seed(0)
    names = [str(i) for i in range(6)]
    module = LandCoverModule(
        task_from_config(cfg), cfg["model"], cfg["training"], 4, names, None, layout == "cl"
    )
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    x, y = torch.randn(4, 4, 288, 288), torch.randint(0, 6, (4, 288, 288))
    cpu, wall = [], []
    for _ in range(steps + 1):
        c, w = time.process_time(), time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
            loss = module.loss(module(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    record = {
        "variant": f"{prec} {layout}",
        "cpu_s_per_step": [round(t, 2) for t in cpu[1:]],
        "wall_s": [round(t, 1) for t in wall[1:]],
        "peak_rss_mib": round(peak),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
