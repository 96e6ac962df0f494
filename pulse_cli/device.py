"""Device choice, in one place: 'auto' prefers CUDA, then Apple's MPS, then the CPU.

torch is imported by the functions that need it, so that a misspelt --device is refused at once.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"


def check_device_spec(spec: str) -> str:
    """The device string normalised, its spelling checked but not its availability (a Ray driver: the
    workers resolve it on their machines); ValueError with a one-line reason."""
    spec = spec.strip().lower()
    if spec in ("auto", "cpu", "mps") or re.fullmatch(r"cuda(?::\d+)?", spec):
        return spec
    raise ValueError(f"unknown device {spec!r}; use one of: {DEVICE_CHOICES}")


def resolve_device(spec: str) -> torch.device:
    """Turn a user's device string into an available torch.device; ValueError with a one-line reason."""
    import torch

    spec = check_device_spec(spec)
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if match := re.fullmatch(r"cuda(?::(\d+))?", spec):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but no CUDA GPU is available (use --device cpu)")
        index = int(match.group(1) or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA GPU(s) exist")
        return torch.device("cuda", index)
    if spec == "mps":
        if not _mps_available():
            raise ValueError("device 'mps' requested but Apple's MPS backend is not available")
        return torch.device("mps")
    raise AssertionError(spec)  # check_device_spec let through a spelling this function does not handle


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def configure_cpu_allocator() -> bool:
    """Keep freed memory in the process instead of returning it to the OS (glibc only; process-wide).

    By default glibc serves every block above its mmap threshold (at most 32 MiB; one 16x1024x1024
    float32 map is 64 MiB) with a fresh mmap and unmaps it on free, so each step page-faults every large
    tensor in again: measured on a 2-core CPU, that was 60% of a 1024x1024 StyleGAN step. M_MMAP_MAX=0
    serves large blocks from the heap and M_TRIM_THRESHOLD=-1 stops the heap being trimmed after each
    backward pass. The process then keeps its peak memory, which every step reaches anyway.
    Returns False where it cannot be applied (not glibc).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, -1))


# Peak memory of one image's optimisation step at 1024x1024, measured on the CPU with bench/bench.py
# (fast float32 path for StyleGAN v1; the reference path for StyleGAN2), with a margin for the allocator.
STEP_BYTES_1024 = {"stylegan1": 1.2 * 2**30, "stylegan2": 3.5 * 2**30}
MAX_AUTO_BATCH = 16


def auto_batch_size(device: torch.device, *, family: str, resolution: int, free_bytes: int | None = None) -> int:
    """Batch size for `--batch-size auto`: 1 on a CPU (batching buys nothing per image there), else as
    many images as fit in 80% of the device's free memory by the measured per-image footprint."""
    if device.type != "cuda":
        return 1
    if free_bytes is None:
        import torch

        free_bytes, _ = torch.cuda.mem_get_info(device)
    per_image = STEP_BYTES_1024.get(family, STEP_BYTES_1024["stylegan2"]) * (resolution / 1024) ** 2
    return max(1, min(MAX_AUTO_BATCH, int(0.8 * free_bytes // per_image)))
