"""A faster evaluation of the StyleGAN v1 synthesis network for the latent search.

It computes the same function as `StyleGAN1Generator.synthesize` (same layers, order, gains, fused
upsampling, borders); only how is different, measured with bench/bench.py on a 2-core CPU:

- the frozen weights are multiplied by their gains (and the fused 4x4 transposed-conv kernels folded)
  once, not on every call;
- the 128-1024 px layers run channels-last (NHWC), where oneDNN's kernels for 16-64 channels are 2.5-5x
  faster; the 256/512-channel layers stay NCHW (no faster there, and less accurate);
- noise -> LeakyReLU -> instance norm -> style modulation is one autograd.Function with a hand-written
  backward (two passes over each full-resolution map instead of ~5, one saved tensor instead of ~5), with
  per-channel statistics from sums (torch.var_mean's Welford reduction is ~15x slower here) — and it
  avoids F.instance_norm's backward, which is wrong on channels-last CPU tensors in torch 2.13.

It computes in the generator's dtype (float32; float64 after `G.double()`). The result agrees with the
reference path to ~2e-5 max abs in float32 (the reference itself differs from float64 by as much).

This module holds only what the product ships. The benchmark's experiments (bfloat16, plain-op epilogue,
all-NCHW, torch.compile) are subclasses of `SG1Plan` in bench/variants.py: the layout and precision
choices are the plan's overridable methods (`activation_dtype`, `memory_format`, `torgb_dtype`,
`epilogue`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .stylegan1_ops import FUSED_UPSCALE_MIN_RES, SQRT2, fold_transposed, he_scale

IN_EPS = 1e-5
SLOPE = 0.2
# From this resolution up the layers run channels-last (16-128 channels: where oneDNN's NHWC kernels pay).
CHANNELS_LAST_MIN_RES = 128


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics and reductions: float32 for float32 (or lower-precision) activations, float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


@dataclass
class Epilogue:
    noise_weight: torch.Tensor  # [C]
    style_weight: torch.Tensor  # [2C, w_dim], gain applied
    style_bias: torch.Tensor  # [2C]


@dataclass
class Conv:
    weight: torch.Tensor  # scaled; [O, I, k, k] or, for fused upscale, the [I, O, 4, 4] transposed kernel
    bias: torch.Tensor  # [O]
    mode: str  # "conv", "up_nearest", "up_fused"
    blur: torch.Tensor | None  # [O, 1, 3, 3] depthwise kernel after upsampling


@dataclass
class Layer:
    conv: Conv | None  # None for the first layer (const + bias)
    epi: Epilogue
    res: int
    dtype: torch.dtype  # activation dtype of this layer's conv output and epilogue
    memory_format: torch.memory_format


class SG1Plan:
    """The synthesis network as flat, precomputed tensors read from the PULSE state dict; callable as
    `plan(ws, noise) -> image` (NCHW, in the generator's dtype).

    Built from the generator's weights on their current device and in their dtype (`self.dtype`):
    styles, statistics and the output are in that dtype; each layer's convs and epilogue run in
    `activation_dtype(res)` and `memory_format(res)`. Subclasses (the benchmark's variants) override those
    methods, `torgb_dtype` and `epilogue`; they must set their own attributes before calling
    `SG1Plan.__init__`, which calls the methods.
    """

    def __init__(self, G):
        sd = {k: v.detach() for k, v in G.synthesis.state_dict().items()}
        self.dtype = sd["torgb.weight"].dtype
        self.device = sd["torgb.weight"].device
        self.resolution = G.resolution
        self.num_ws = G.num_ws
        res_list = [2**i for i in range(2, int(math.log2(G.resolution)) + 1)]
        base = self.dtype

        def cw(t, res):  # conv weight in the compute dtype/layout
            return t.to(self.activation_dtype(res)).contiguous(memory_format=self.memory_format(res))

        def epi(prefix):
            w = sd[f"{prefix}.style_mod.lin.weight"]
            return Epilogue(
                noise_weight=sd[f"{prefix}.noise.weight"].to(base),
                style_weight=(w * he_scale(w.shape[1], 1.0)).to(base),
                style_bias=sd[f"{prefix}.style_mod.lin.bias"].to(base),
            )

        def layer(conv, prefix, res):
            return Layer(conv, epi(prefix), res, self.activation_dtype(res), self.memory_format(res))

        self.const = (sd["blocks.4x4.const"] + sd["blocks.4x4.bias"].view(1, -1, 1, 1)).to(base)
        self.layers: list[Layer] = []
        for res in res_list:
            p = f"blocks.{res}x{res}"
            dt = self.activation_dtype(res)
            if res == 4:
                self.layers.append(layer(None, f"{p}.epi1", res))
                w = sd[f"{p}.conv.weight"]
                conv = Conv(cw(w * he_scale(w[0].numel(), SQRT2), res), sd[f"{p}.conv.bias"].to(dt),
                            "conv", None)
                self.layers.append(layer(conv, f"{p}.epi2", res))
                continue
            w = sd[f"{p}.conv0_up.weight"] * he_scale(sd[f"{p}.conv0_up.weight"][0].numel(), SQRT2)
            fused = res >= FUSED_UPSCALE_MIN_RES
            kernel = sd[f"{p}.conv0_up.intermediate.kernel"]
            blur = kernel.expand(w.shape[0], 1, 3, 3).clone()
            conv = Conv(cw(fold_transposed(w) if fused else w, res), sd[f"{p}.conv0_up.bias"].to(dt),
                        "up_fused" if fused else "up_nearest", cw(blur, res))
            self.layers.append(layer(conv, f"{p}.epi1", res))
            w = sd[f"{p}.conv1.weight"]
            conv = Conv(cw(w * he_scale(w[0].numel(), SQRT2), res), sd[f"{p}.conv1.bias"].to(dt),
                        "conv", None)
            self.layers.append(layer(conv, f"{p}.epi2", res))
        w = sd["torgb.weight"]
        rgb_dtype = self.torgb_dtype()
        self.torgb_weight = (w * he_scale(w[0].numel(), 1.0)).to(rgb_dtype).contiguous(
            memory_format=self.memory_format(self.resolution))
        self.torgb_bias = sd["torgb.bias"].to(rgb_dtype)

    # The product's layout and precision; the benchmark's variants override these.

    def activation_dtype(self, res: int) -> torch.dtype:
        """dtype of the convs and epilogue at `res`: the generator's."""
        return self.dtype

    def memory_format(self, res: int) -> torch.memory_format:
        """NHWC from CHANNELS_LAST_MIN_RES up, where it pays (16-128 channels). oneDNN's NHWC kernels for
        the 256/512-channel layers are no faster here and 5x less accurate (relative error ~1e-6 instead
        of ~2e-7 per conv), so those stay NCHW."""
        return torch.channels_last if res >= CHANNELS_LAST_MIN_RES else torch.contiguous_format

    def torgb_dtype(self) -> torch.dtype:
        return self.dtype

    def epilogue(self, x, noise_weight, noise, scale, shift):
        """noise -> LeakyReLU(0.2) -> instance norm -> style modulation."""
        return FusedEpilogue.apply(x, noise_weight, noise, scale, shift)

    def styles(self, ws: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (scale, shift), each [B, C] in the plan's dtype: scale already includes StyleGAN's +1."""
        out = []
        for i, layer in enumerate(self.layers):
            s = F.linear(ws[:, i], layer.epi.style_weight, layer.epi.style_bias)
            c = s.shape[1] // 2
            out.append((s[:, :c] + 1.0, s[:, c:]))
        return out

    def conv(self, x: torch.Tensor, conv: Conv, add_bias: bool = True) -> torch.Tensor:
        """The layer's conv; with add_bias=False the bias of an upsampling conv is left to the epilogue."""
        if conv.mode == "conv":
            return F.conv2d(x, conv.weight, conv.bias, padding=conv.weight.shape[-1] // 2)
        if conv.mode == "up_fused":
            x = F.conv_transpose2d(x, conv.weight, stride=2, padding=1)
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = F.conv2d(x, conv.weight, padding=1)
        return F.conv2d(x, conv.blur, conv.bias if add_bias else None, padding=1, groups=x.shape[1])

    def __call__(self, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """synthesize(ws, noise) -> NCHW image in the plan's dtype, equal to G.synthesize up to rounding."""
        styles = self.styles(ws)
        batch = ws.shape[0]
        first = self.layers[0]
        x = self.const.to(first.dtype).expand(batch, -1, -1, -1).contiguous(memory_format=first.memory_format)
        for i, layer in enumerate(self.layers):
            if layer.conv is not None:
                x = self.conv(x.to(layer.dtype).contiguous(memory_format=layer.memory_format), layer.conv)
            scale, shift = styles[i]
            x = self.epilogue(x, layer.epi.noise_weight, noise[i], scale, shift)
        x = F.conv2d(x.to(self.torgb_weight.dtype), self.torgb_weight, self.torgb_bias)
        return x.to(self.dtype).contiguous()


# ----------------------------------------------------------------------------------------------------------
# The fused epilogue: noise -> LeakyReLU(0.2) -> instance norm -> style modulation


class FusedEpilogue(torch.autograd.Function):
    """y = lrelu(x + nw*noise); out = (y - mean) * rstd * scale + shift, with a hand-written backward.

    Saves y (in the activation dtype) and per-channel statistics (float32, float64 for float64
    activations); the backward makes two passes over full-resolution tensors (reductions, then one fused
    affine + LeakyReLU mask).
    """

    @staticmethod
    def forward(ctx, x, noise_weight, noise, scale, shift):
        nw = noise_weight.to(x.dtype).view(1, -1, 1, 1)
        y = torch.addcmul(x, nw, noise.to(x.dtype))
        y = F.leaky_relu_(y, SLOPE)
        mean, var = channel_stats(y)
        rstd = torch.rsqrt(var + IN_EPS)
        a = rstd * scale[:, :, None, None]
        # Centred before scaling: y*a - mean*a would cancel where a channel's mean dwarfs its spread.
        # out= keeps y's layout: with the [B, C, 1, 1] operand first, TensorIterator picks NCHW for the
        # output when B > 1, and every later op on the mixed layouts runs ~4x slower.
        centred = torch.sub(y, mean.to(y.dtype), out=torch.empty_like(y))
        out = torch.addcmul(shift[:, :, None, None].to(x.dtype), centred, a.to(x.dtype), out=centred)
        ctx.save_for_backward(y, mean, rstd, scale, noise_weight)
        ctx.noise_needs_grad = ctx.needs_input_grad[2]
        ctx.noise_dtype = noise.dtype
        return out

    @staticmethod
    def backward(ctx, dout):
        y, mean, rstd, scale, noise_weight = ctx.saved_tensors
        n = y.shape[2] * y.shape[3]
        dout = dout.contiguous(memory_format=_memory_format(y))
        dtype = y.dtype
        # Everything in terms of the centred activations c = y - mean, for the same reason as forward.
        centred = torch.sub(y, mean.to(dtype), out=torch.empty_like(y))
        # Reductions (float32 accumulation, float64 for float64): sum(dout), sum(dout * c).
        acc = accumulation_dtype(dtype)
        ds = plane_sums(dout, acc)
        dcc = plane_sums(dout * centred, acc)
        dshift = ds[:, :, 0, 0]
        dg = dcc * rstd  # sum(dout * yhat), yhat = c * rstd
        dscale = dg[:, :, 0, 0]
        # dy = rstd*scale*(dout - ds/n - yhat*dg/n)  =  p*dout + q*c + r
        p = rstd * scale[:, :, None, None]
        q = -p * rstd * dg / n
        r = -p * ds / n
        dy = torch.addcmul(r.to(dtype), dout, p.to(dtype), out=torch.empty_like(y))
        dy.addcmul_(centred, q.to(dtype))
        dx = torch.ops.aten.leaky_relu_backward(dy, y, SLOPE, True)
        dnoise = None
        if ctx.noise_needs_grad:
            dnoise = (dx.to(acc) * noise_weight.to(acc).view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
            dnoise = dnoise.to(ctx.noise_dtype)
        return dx, None, dnoise, dscale.to(scale.dtype), dshift.to(scale.dtype)


def plane_sums(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per-(sample, channel) sums over H, W, [B, C, 1, 1], accumulated in `dtype`, in two passes (one
    spatial dimension, then the other), each vectorised along the dimension contiguous in memory.

    One float32 pass over a whole map accumulates each channel serially on some CPUs' kernels (measured:
    with ATen's AVX2 and default kernels the float32 gradients were 4-10x further from float64 than the
    reference path's; this order makes them closer than the reference's on AVX-512, AVX2 and SSE4.1).
    """
    if _memory_format(t) == torch.channels_last:  # [B, H, W, C] in memory: H, then W, vectorised over C
        return t.permute(0, 2, 3, 1).sum(dim=1, dtype=dtype).sum(dim=1)[:, :, None, None]
    return t.sum(dim=3, keepdim=True, dtype=dtype).sum(dim=2, keepdim=True)


def channel_stats(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(sample, channel) mean and biased variance over H, W, [B, C, 1, 1] (float32; float64 for float64).

    Two passes of plain reductions: torch.var_mean over (2, 3) is a slow Welford reduction on CPU (~36 ms
    for a 16x1024x1024 float32 map vs a few ms here), and E[y^2] - E[y]^2 cancels catastrophically when a
    channel's mean is large against its spread (seen on real layers: 2e-3 error at the output).
    """
    n = y.shape[2] * y.shape[3]
    acc = accumulation_dtype(y.dtype)
    mean = plane_sums(y, acc) / n
    centred = y - mean.to(y.dtype)
    # Not linalg.vector_norm or one pass over the map: their float32 errors this network amplifies 30x;
    # float64 is 3x slower.
    var = plane_sums(centred.square_(), acc) / n
    return mean, var


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def make_synthesizer(G) -> SG1Plan:
    """The fast synthesize(ws, noise) for G's weights on their current device, in their dtype."""
    return SG1Plan(G)
