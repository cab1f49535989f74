"""Latency statistics, resource use and the machine description every benchmark result carries.

Percentiles use numpy's default (linear interpolation between order statistics), so
p50 <= p90 <= p99 holds by construction for any sample. Memory is the kernel's high-water mark
of the resident set (`ru_maxrss`); CPU use is process CPU time (user + system, all threads)
over wall time, so 100 % = one core busy.
"""
from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def summarize(samples_ms) -> dict[str, float]:
    """{"n", "mean", "min", "p50", "p90", "p99", "max"} of latency samples in milliseconds.

    ValueError if there are no samples or any is not finite (a NaN latency is a harness bug).
    """
    values = np.asarray(list(samples_ms), dtype=np.float64)
    if values.size == 0:
        raise ValueError("no latency samples to summarize")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"latency samples must be finite, got {values[~np.isfinite(values)][:5].tolist()}")
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"n": int(values.size), "mean": float(values.mean()), "min": float(values.min()),
            "p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(values.max())}


def peak_rss_mb() -> float:
    """High-water mark of this process's resident set, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _total_ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3
    except (ValueError, OSError):
        return float("nan")


def machine_info() -> dict:
    """CPU model, cores, RAM, load, Python / torch / numpy versions and torch's thread counts."""
    import torch

    load1, load5, load15 = os.getloadavg()
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": round(_total_ram_gb(), 1),
        "load_average": [round(load1, 2), round(load5, 2), round(load15, 2)],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda": torch.cuda.is_available(),
    }


def code_version(directory: Path | str | None = None) -> dict:
    """{"commit": HEAD of the git checkout at `directory` (default: this package's) or None,
    "modified": paths under vla3d_ros/ with uncommitted changes}.

    On a working tree shared by several engineers the figures belong to the tree as it was, which
    the commit alone does not name.
    """
    directory = Path(directory) if directory is not None else Path(__file__).resolve().parents[2]

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "--verify", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "modified": []}
        status = git("status", "--porcelain", "--untracked-files=no", "--", "vla3d_ros")
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "modified": []}
    return {"commit": head.stdout.strip(), "modified": sorted(line[3:] for line in status.stdout.splitlines())}


@dataclass
class CpuWindow:
    """Process CPU time over a wall-clock window: `start()`, then `percent()` (100 = one core)."""

    wall_start: float = 0.0
    cpu_start: float = 0.0

    @staticmethod
    def _cpu() -> float:
        times = os.times()
        return times.user + times.system

    def start(self) -> "CpuWindow":
        self.wall_start, self.cpu_start = time.perf_counter(), self._cpu()
        return self

    def percent(self) -> float:
        wall = time.perf_counter() - self.wall_start
        return 100.0 * (self._cpu() - self.cpu_start) / wall if wall > 0 else 0.0
