"""Bench-only pieces around the project's fast path (pulse_cli/networks/stylegan1_fast.py).

The product ships one configuration (`make_synthesizer(G)`: the generator's dtype, channels-last from
128 px, the fused epilogue, no torch.compile). The experiments the benchmark measures against it live
here, built on the product's building blocks rather than copies of them: `VariantPlan` is a subclass of
the product's `SG1Plan` that overrides its layout/precision methods (`activation_dtype`,
`memory_format`, `torgb_dtype`, `epilogue`), and `make_variant` optionally wraps it in torch.compile.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from pulse_cli.device import configure_cpu_allocator as configure_allocator  # noqa: F401  (used by bench.py)
from pulse_cli.networks.stylegan1_fast import (
    CHANNELS_LAST_MIN_RES,
    IN_EPS,
    SLOPE,
    SG1Plan,
    accumulation_dtype,
)
from pulse_cli.networks.stylegan1_fast import make_synthesizer as product_synthesizer  # noqa: F401


def epilogue_ops(x, noise_weight, noise, scale, shift):
    """The epilogue as plain ops, float32 statistics, the norm folded into one affine (for torch.compile;
    eager, it is the 'no fused backward' ablation)."""
    y = F.leaky_relu(x + noise_weight.to(x.dtype).view(1, -1, 1, 1) * noise.to(x.dtype), SLOPE)
    yf = y.to(accumulation_dtype(y.dtype))
    var, mean = torch.var_mean(yf, dim=(2, 3), keepdim=True, correction=0)
    a = torch.rsqrt(var + IN_EPS) * scale[:, :, None, None]
    b = shift[:, :, None, None] - mean * a
    return (yf * a + b).to(x.dtype)


class VariantPlan(SG1Plan):
    """The product's plan with the benchmark's knobs.

    `dtype`: activation dtype of the layers at `low_precision_min_res` and above (below: the generator's);
    styles, statistics and the output stay in the generator's dtype. `torgb_float32=False` runs the to-RGB
    conv in the low-precision dtype too. `channels_last=False`: all NCHW; otherwise NHWC from
    `channels_last_min_res`. `epilogue`: "fused" (the product's) or "ops" (`epilogue_ops`).
    """

    def __init__(self, G, *, dtype: torch.dtype | None = None, channels_last: bool = True,
                 channels_last_min_res: int = CHANNELS_LAST_MIN_RES, epilogue: str = "fused",
                 low_precision_min_res: int = 0, torgb_float32: bool = True):
        if epilogue not in ("fused", "ops"):
            raise ValueError(f"unknown epilogue {epilogue!r}")
        self.low_dtype = dtype
        self.channels_last_min_res = channels_last_min_res if channels_last else 1 << 30
        self.epilogue_kind = epilogue
        self.low_precision_min_res = low_precision_min_res
        self.torgb_float32 = torgb_float32
        super().__init__(G)

    def activation_dtype(self, res: int) -> torch.dtype:
        if self.low_dtype is not None and res >= self.low_precision_min_res:
            return self.low_dtype
        return super().activation_dtype(res)

    def memory_format(self, res: int) -> torch.memory_format:
        return torch.channels_last if res >= self.channels_last_min_res else torch.contiguous_format

    def torgb_dtype(self) -> torch.dtype:
        return self.dtype if self.torgb_float32 else self.activation_dtype(self.resolution)

    def epilogue(self, x, noise_weight, noise, scale, shift):
        if self.epilogue_kind == "ops":
            return epilogue_ops(x, noise_weight, noise, scale, shift)
        return super().epilogue(x, noise_weight, noise, scale, shift)


def make_variant(G, *, compile: bool = False, compile_options: dict | None = None, **plan_options) -> Callable:
    """synthesize(ws, noise) for a `VariantPlan(G, **plan_options)`, optionally under torch.compile."""
    plan = VariantPlan(G, **plan_options)
    if not compile:
        return plan
    synthesize = torch.compile(plan.__call__, dynamic=False, **(compile_options or {}))
    synthesize.plan = plan  # type: ignore[attr-defined]
    return synthesize


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
