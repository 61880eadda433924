"""What decides a run's numbers besides its config: the thread count, deterministic kernels, and the
software and machine that made it.

A float sum split over more threads adds in another order, so a functional run's trained weights, and
every count that follows from them, depend on the thread count. :func:`pinned` fixes it for the span of a
run (torch's intra-op pool, the OpenMP and BLAS pools that numpy, scipy and torch load, numba's parallel
loops) and asks torch for deterministic kernels; the caller's settings are put back afterwards, so a
notebook keeps its own. :func:`environment` is what a report records of the software and the machine.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator
from importlib import metadata
from typing import Any

RECORDED_PACKAGES = ("torch", "numpy", "numba", "scipy", "pydantic")
"""The packages whose versions a report and a golden file record (those that compute or validate its
numbers)."""

CUBLAS_DETERMINISTIC = ":4096:8"
"""cuBLAS workspace setting under which its GEMMs are reproducible (CUDA's documentation, 'Results
reproducibility'); read when CUDA starts."""


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def versions() -> dict[str, str]:
    """Python's and each recorded package's version ('absent' for one not installed)."""
    found = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def environment(threads: int, device: str) -> dict[str, Any]:
    """What a report records of the run's software and machine: versions, threads, device, processor."""
    return {**versions(), "threads": threads, "device": device, "cpu": cpu_model(),
            "platform": f"{sys.platform}-{platform.machine()}"}


@contextlib.contextmanager
def pinned(threads: int, device: str = "cpu") -> Iterator[None]:
    """Run the body on ``threads`` threads with torch's deterministic kernels; restore the caller's settings.

    ``threads`` must be 1..:func:`available_cores` (the config refuses others, naming ``run.threads``).
    """
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    if device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
    torch_threads = torch.get_num_threads()
    numba_threads = numba.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    # warn_only: an op with no deterministic kernel (a few CUDA scatters) warns instead of failing the run
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        numba.set_num_threads(numba_threads)
        torch.set_num_threads(torch_threads)
