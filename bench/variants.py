"""Bench-only pieces around the project's fast path (pulse_cli/model/fast_stylegan1.py).

The fast StyleGAN v1 evaluation and the allocator setting that this benchmark first prototyped now live
in the package (`pulse_cli.networks.stylegan1_fast.make_synthesizer`, `pulse_cli.device.
configure_cpu_allocator`); the benchmark measures those, plus the ablations and the modes the product
does not ship (bfloat16, torch.compile, autocast).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pulse_cli.device import configure_cpu_allocator as configure_allocator  # noqa: F401  (used by bench.py)
from pulse_cli.networks.stylegan1_fast import make_synthesizer  # noqa: F401  (used by bench.py)


def malloc_trim() -> None:
    """Give freed heap memory back to the OS (before a peak-memory measurement; glibc only)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class FastGenerator:
    """Duck-typed stand-in for a Generator whose synthesize is replaced; everything else is delegated."""

    def __init__(self, G, synthesize: Callable):
        self._G = G
        self._synthesize = synthesize

    def synthesize(self, ws, noise):
        return self._synthesize(ws, noise)

    def __getattr__(self, name):
        return getattr(self._G, name)


def autocast_synthesizer(G) -> Callable:
    """The model as it is, under torch.autocast('cpu', bfloat16): convs and linears in bfloat16."""

    def synthesize(ws, noise):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            image = G.synthesize(ws, noise)
        return image.float()

    return synthesize
