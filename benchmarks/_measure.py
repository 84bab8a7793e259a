"""Shared helpers of the benchmarks: run a measured job in its own process, wall time, peak RSS.

Every measured stage runs in a fresh child process so that its peak memory is its own:

- with GNU ``/usr/bin/time`` present, the peak is what it reports (``%M``, the child's
  ``ru_maxrss`` from ``wait4``). ``time`` is a small C program, so the child does not inherit a
  large high-water mark from this Python process (``ru_maxrss`` survives ``exec``, and a child
  forked straight from a big parent starts at the parent's peak);
- without it, the child's ``VmHWM`` is polled from ``/proc/<pid>/status`` (Linux);
- elsewhere ``getrusage(RUSAGE_CHILDREN)`` is the last resort (an upper bound).

A Python child prints one JSON object as its last line of stdout (its figures, e.g. the seconds the
stage function itself took, without interpreter start and imports).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GNU_TIME = "/usr/bin/time"


@dataclass
class Measured:
    """One child process: wall seconds (start to exit), peak RSS in MiB, its JSON result."""

    wall_s: float
    peak_mib: float
    result: dict[str, Any] = field(default_factory=dict)
    load_before: float = 0.0

    @property
    def seconds(self) -> float:
        """The stage's own time when the child reported one (``seconds``), else the wall time."""
        return float(self.result.get("seconds", self.wall_s))


def load_average() -> float:
    """1-minute load average of the machine (0 where unknown)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def _gnu_time_works() -> bool:
    if not os.path.exists(GNU_TIME):
        return False
    probe = subprocess.run(
        [GNU_TIME, "-f", "%M", "true"], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0 and probe.stderr.strip().splitlines()[-1:] != []


_HAS_GNU_TIME: bool | None = None


def run_measured(command: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run ``command``; wall seconds, peak RSS (MiB) and the JSON of its last stdout line (if any).

    Raises RuntimeError with the tail of stderr when the command fails.
    """
    global _HAS_GNU_TIME
    if _HAS_GNU_TIME is None:
        _HAS_GNU_TIME = _gnu_time_works()
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="measure_") as tmp:
        rss_file = Path(tmp) / "rss"
        out_file, err_file = Path(tmp) / "out", Path(tmp) / "err"
        full = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *command] if _HAS_GNU_TIME else command
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        with out_file.open("w") as out, err_file.open("w") as err:
            started = time.perf_counter()
            process = subprocess.Popen(full, stdout=out, stderr=err, env=env)
            peak_kib = 0
            status = Path(f"/proc/{process.pid}/status")
            while process.poll() is None:
                if not _HAS_GNU_TIME:
                    try:
                        for line in status.read_text().splitlines():
                            if line.startswith("VmHWM:"):
                                peak_kib = max(peak_kib, int(line.split()[1]))
                    except OSError:
                        pass
                time.sleep(0.02)
            wall = time.perf_counter() - started
        stdout, stderr = out_file.read_text(), err_file.read_text()
        if process.returncode != 0:
            raise RuntimeError(
                f"command failed (exit {process.returncode}): {' '.join(command)[:300]}\n"
                f"{stderr[-3000:]}"
            )
        if _HAS_GNU_TIME:
            peak_kib = int(rss_file.read_text().split()[-1])
        elif peak_kib == 0:  # no /proc: an upper bound
            peak_kib = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    result: dict[str, Any] = {}
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            break
    return Measured(wall, peak_kib / 1024, result, load)


def python_command(script: str | Path, *args: str) -> list[str]:
    """``python script args...`` with this interpreter."""
    return [sys.executable, str(script), *args]


def megapixels_per_s(pixels: float, seconds: float) -> float:
    """Throughput in megapixels (10^6 px) per second."""
    return pixels / 1e6 / seconds if seconds > 0 else float("nan")


def folder_mib(path: Path) -> float:
    """Size of the files under ``path`` (or of the file ``path``) in MiB."""
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def which(command: str) -> str | None:
    """Path of an executable on PATH, or None."""
    return shutil.which(command)
