"""The argmax of one window's channels-last logits on the host, by the ways NumPy and torch offer.

What :class:`s2landcover.predict.HostStripAccumulator` does for the pixels one window alone covers
(planar copy by blocks of 64 rows, then :func:`s2landcover.predict.argmax_planes`), against
``torch.argmax(dim=-1)`` and NumPy's ``argmax(axis=-1)`` on the channels-last array and a
per-channel compare on strided views. One thread, median of ``--repeats`` calls, milliseconds per
window; every way is checked to give the same classes first.

    python benchmarks/bench_host_argmax.py --window 1024 --classes 6
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from s2landcover.predict import HOST_ADD_ROWS, argmax_planes


def ways(logits: np.ndarray) -> dict[str, Callable[[], np.ndarray]]:
    """The argmax (uint8, (h, w)) of channels-last ``logits`` (h, w, K), each way a function."""
    h, w, k = logits.shape
    planar = logits.transpose(2, 0, 1)  # (K, h, w) view of channels-last memory
    scratch = np.empty((k, HOST_ADD_ROWS, w), np.float32)

    def planes_by_blocks() -> np.ndarray:
        out = np.empty((h, w), np.uint8)
        for top in range(0, h, HOST_ADD_ROWS):
            block = planar[:, top : top + HOST_ADD_ROWS]
            planes = scratch[:, : block.shape[1]]
            np.copyto(planes, block)
            out[top : top + HOST_ADD_ROWS] = argmax_planes(planes)
        return out

    def copy_only() -> np.ndarray:  # the planar copy alone (returns nothing comparable)
        for top in range(0, h, HOST_ADD_ROWS):
            block = planar[:, top : top + HOST_ADD_ROWS]
            np.copyto(scratch[:, : block.shape[1]], block)
        return np.empty(0)

    def torch_last_axis() -> np.ndarray:
        return torch.from_numpy(logits).argmax(dim=-1).to(torch.uint8).numpy()

    def numpy_last_axis() -> np.ndarray:
        return logits.argmax(axis=-1).astype(np.uint8)

    def strided_compare() -> np.ndarray:
        best = logits[..., 0].copy()
        index = np.zeros((h, w), np.uint8)
        for c in range(1, k):
            index[logits[..., c] > best] = c
            np.maximum(best, logits[..., c], out=best)
        return index

    return {
        "planar copy + argmax_planes (this tree)": planes_by_blocks,
        "  of which the planar copy": copy_only,
        "torch.argmax(dim=-1)": torch_last_axis,
        "numpy argmax(axis=-1)": numpy_last_axis,
        "per-channel compare, strided views": strided_compare,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=int, default=1024, help="window side in px")
    parser.add_argument("--classes", type=int, default=6, help="K, logit channels")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(args.window, args.window, args.classes)).astype(np.float32)
    functions = ways(logits)
    expected = functions["planar copy + argmax_planes (this tree)"]()
    print(f"window {args.window}^2, K = {args.classes}, channels-last float32, 1 thread\n")
    print("| way | ms per window |\n|---|---:|")
    for name, function in functions.items():
        result = function()
        if result.size:
            assert np.array_equal(result, expected), name
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            function()
            times.append(time.perf_counter() - started)
        print(f"| {name} | {1000 * statistics.median(times):.1f} |")


if __name__ == "__main__":
    main()
