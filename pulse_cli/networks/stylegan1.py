"""StyleGAN v1 (Karras et al. 2019) in PULSE's PyTorch layout.

Loads PULSE's `synthesis.pt` / `mapping.pt` state dicts unchanged. The architecture (resolution and
channels per block) is read off the tensor shapes, so the FFHQ 1024 model and small test networks go
through the same code. Weights are stored raw; the equalised learning-rate multiplier is applied at run
time, as in the original.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .generator import Generator
from .stylegan1_fast import make_synthesizer
from .stylegan1_ops import FUSED_UPSCALE_MIN_RES, SQRT2, fold_transposed, he_scale

MAPPING_LR_MULTIPLIER = 0.01


class ScaledLinear(nn.Module):
    """Dense layer with equalised learning rate and a learning-rate multiplier."""

    def __init__(self, in_features: int, out_features: int, *, gain: float, lr_multiplier: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.weight_gain = he_scale(in_features, gain) * lr_multiplier
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)


class Blur(nn.Module):
    """Depthwise [1,2,1]x[1,2,1] blur; its kernel is a buffer in the checkpoint (`intermediate.kernel`)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", torch.empty(1, 1, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.kernel.expand(x.shape[1], -1, -1, -1)
        return F.conv2d(x, kernel, padding=1, groups=x.shape[1])


def upscale2d(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 upscale written as the original's view/expand/copy, not `F.interpolate`.

    Both give the same values, but their backward passes sum each 2x2 block of gradients in different
    orders (the expand's backward reduces over the two inserted dims). Matching the original here is
    what makes a search on the reference path follow the original's trajectory bit for bit.
    """
    n, c, h, w = x.shape
    x = x.reshape(n, c, h, 1, w, 1).expand(-1, -1, -1, 2, -1, 2)
    return x.contiguous().view(n, c, 2 * h, 2 * w)


class ScaledConv(nn.Module):
    """3x3 (or 1x1) conv with equalised learning rate; optionally upsampling x2 then blurring."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, gain: float,
                 upscale: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.weight_gain = he_scale(in_channels * kernel_size**2, gain)
        self.upscale = upscale
        # PULSE's key name for the blur that follows the upsampling conv.
        self.intermediate = Blur() if upscale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.weight_gain
        if not self.upscale:
            return F.conv2d(x, weight, self.bias, padding=self.weight.shape[-1] // 2)
        if x.shape[-1] * 2 >= FUSED_UPSCALE_MIN_RES:
            w = fold_transposed(weight)
            x = F.conv_transpose2d(x, w, stride=2, padding=(w.shape[-1] - 1) // 2)
        else:
            x = upscale2d(x)
            x = F.conv2d(x, weight, padding=self.weight.shape[-1] // 2)
        x = self.intermediate(x)
        return x + self.bias.view(1, -1, 1, 1)


class NoiseInjection(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight.view(1, -1, 1, 1) * noise


class StyleModulation(nn.Module):
    def __init__(self, w_dim: int, channels: int):
        super().__init__()
        self.lin = ScaledLinear(w_dim, channels * 2, gain=1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.lin(w).view(-1, 2, x.shape[1], 1, 1)
        return x * (style[:, 0] + 1.0) + style[:, 1]


class LayerEpilogue(nn.Module):
    """noise -> LeakyReLU(0.2) -> instance norm -> style modulation, after every conv."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.noise = NoiseInjection(channels)
        self.style_mod = StyleModulation(w_dim, channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = self.noise(x, noise)
        x = F.leaky_relu(x, 0.2)
        x = F.instance_norm(x, eps=1e-5)
        return self.style_mod(x, w)


class InputBlock(nn.Module):
    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.const = nn.Parameter(torch.empty(1, channels, 4, 4))
        self.bias = nn.Parameter(torch.empty(channels))
        self.epi1 = LayerEpilogue(channels, w_dim)
        self.conv = ScaledConv(channels, channels, 3, gain=SQRT2)
        self.epi2 = LayerEpilogue(channels, w_dim)

    def forward(self, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        x = self.const.expand(ws.shape[0], -1, -1, -1) + self.bias.view(1, -1, 1, 1)
        x = self.epi1(x, ws[:, 0], noise[0])
        x = self.conv(x)
        return self.epi2(x, ws[:, 1], noise[1])


class UpBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.conv0_up = ScaledConv(in_channels, out_channels, 3, gain=SQRT2, upscale=True)
        self.epi1 = LayerEpilogue(out_channels, w_dim)
        self.conv1 = ScaledConv(out_channels, out_channels, 3, gain=SQRT2)
        self.epi2 = LayerEpilogue(out_channels, w_dim)

    def forward(self, x: torch.Tensor, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        x = self.epi1(self.conv0_up(x), ws[:, 0], noise[0])
        return self.epi2(self.conv1(x), ws[:, 1], noise[1])


class Synthesis(nn.Module):
    def __init__(self, channels: dict[int, int], w_dim: int):
        super().__init__()
        resolutions = sorted(channels)
        blocks: dict[str, nn.Module] = {}
        for res in resolutions:
            if res == 4:
                blocks["4x4"] = InputBlock(channels[4], w_dim)
            else:
                blocks[f"{res}x{res}"] = UpBlock(channels[res // 2], channels[res], w_dim)
        self.blocks = nn.ModuleDict(blocks)
        self.torgb = ScaledConv(channels[resolutions[-1]], 3, 1, gain=1.0)

    def forward(self, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        x = None
        for i, block in enumerate(self.blocks.values()):
            layer_ws, layer_noise = ws[:, 2 * i: 2 * i + 2], noise[2 * i: 2 * i + 2]
            x = block(layer_ws, layer_noise) if i == 0 else block(x, layer_ws, layer_noise)
        return self.torgb(x)


class Mapping(nn.Module):
    """Pixel norm, then dense layers with LeakyReLU(0.2), lr multiplier 0.01 (PULSE's `G_mapping`)."""

    def __init__(self, dims: list[int]):
        super().__init__()
        for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            self.add_module(f"dense{i}", ScaledLinear(fan_in, fan_out, gain=SQRT2,
                                                      lr_multiplier=MAPPING_LR_MULTIPLIER))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.children():
            x = F.leaky_relu(layer(x), 0.2)
        return x


_BLOCK_KEY = re.compile(r"^blocks\.(\d+)x\1\.")


def infer_synthesis_channels(state_dict: dict[str, torch.Tensor]) -> dict[int, int]:
    """Channels per resolution, read from PULSE synthesis key names and shapes."""
    if "blocks.4x4.const" not in state_dict or "torgb.weight" not in state_dict:
        raise ValueError("not a StyleGAN v1 synthesis state dict (no blocks.4x4.const / torgb.weight)")
    resolutions = sorted({int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))})
    expected = [2**i for i in range(2, 2 + len(resolutions))]
    if resolutions != expected:
        raise ValueError(f"StyleGAN v1 blocks must double from 4x4 upward, found {resolutions}")
    channels = {4: int(state_dict["blocks.4x4.const"].shape[1])}
    for res in resolutions[1:]:
        key = f"blocks.{res}x{res}.conv0_up.weight"
        if key not in state_dict:
            raise ValueError(f"StyleGAN v1 synthesis state dict lacks {key}")
        channels[res] = int(state_dict[key].shape[0])
    return channels


def infer_mapping_dims(state_dict: dict[str, torch.Tensor]) -> list[int]:
    n_layers = sum(1 for k in state_dict if re.fullmatch(r"dense\d+\.weight", k))
    if n_layers == 0:
        raise ValueError("not a StyleGAN v1 mapping state dict (no dense0.weight)")
    dims = [int(state_dict["dense0.weight"].shape[1])]
    for i in range(n_layers):
        dims.append(int(state_dict[f"dense{i}.weight"].shape[0]))
    return dims


def _load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    ours = module.state_dict()
    missing = sorted(set(ours) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(ours))
    if missing or unexpected:
        raise ValueError(f"{what} state dict does not match the StyleGAN v1 layout "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, tensor in state_dict.items():
        if tuple(tensor.shape) != tuple(ours[key].shape):
            raise ValueError(f"{what} tensor {key} has shape {tuple(tensor.shape)}, "
                             f"expected {tuple(ours[key].shape)}")
    module.load_state_dict({k: v.float() for k, v in state_dict.items()})


class StyleGAN1Generator(Generator):
    family = "stylegan1"

    def __init__(self, channels: dict[int, int], w_dim: int, mapping_dims: list[int] | None):
        super().__init__()
        self.w_dim = w_dim
        self.resolution = max(channels)
        self.num_ws = 2 * int(math.log2(self.resolution)) - 2
        self.synthesis = Synthesis(channels, w_dim)
        # PULSE only needs the mapping network to compute latent statistics; it may be absent.
        self.mapping = Mapping(mapping_dims) if mapping_dims is not None else None
        self.z_dim = mapping_dims[0] if mapping_dims is not None else None
        self._fast_enabled = False  # see use_fast_path
        # (weights key, synthesizer built from those weights, the synthesis tensors the key watches)
        self._fast: tuple[list, Callable, list[torch.Tensor]] | None = None

    @classmethod
    def from_state_dicts(cls, synthesis: dict[str, torch.Tensor],
                         mapping: dict[str, torch.Tensor] | None = None) -> StyleGAN1Generator:
        channels = infer_synthesis_channels(synthesis)
        style_key = "blocks.4x4.epi1.style_mod.lin.weight"
        if style_key not in synthesis:
            raise ValueError(f"StyleGAN v1 synthesis state dict lacks {style_key}")
        w_dim = int(synthesis[style_key].shape[1])
        dims = infer_mapping_dims(mapping) if mapping is not None else None
        if dims is not None and dims[-1] != w_dim:
            raise ValueError(f"mapping output size {dims[-1]} does not match synthesis w size {w_dim}")
        gen = cls(channels, w_dim, dims)
        _load_strict(gen.synthesis, synthesis, "synthesis")
        if gen.mapping is not None:
            _load_strict(gen.mapping, mapping, "mapping")
        return gen.eval().requires_grad_(False)

    def noise_shapes(self, batch: int) -> list[tuple[int, ...]]:
        return [(batch, 1, 2 ** (i // 2 + 2), 2 ** (i // 2 + 2)) for i in range(self.num_ws)]

    def use_fast_path(self, enabled: bool = True) -> StyleGAN1Generator:
        """Evaluate `synthesize` with the fast path of stylegan1_fast.py (same function, 2-3x faster on a
        CPU in float32, bench/README.md). Off: the reference modules, exactly as the original."""
        self._fast_enabled = bool(enabled)
        self._fast = None
        return self

    @property
    def synthesis_path(self) -> str:
        return "fast" if self._fast_enabled else "reference"

    def _apply(self, fn, *args, **kwargs):
        # .to(), .double(), .float(), .cuda(), ...: the fast path's precomputed weights are stale.
        self._fast = None
        return super()._apply(fn, *args, **kwargs)

    def _weights_key(self) -> tuple:
        """What the fast path's precomputed weights depend on: device, dtype and in-place edits of any
        synthesis weight (load_state_dict, copy_ under no_grad: each bumps the tensor's version)."""
        if self._fast is None:
            tensors = [*self.synthesis.parameters(), *self.synthesis.buffers()]
        else:
            tensors = self._fast[2]
        weight = self.synthesis.torgb.weight
        return weight.device, weight.dtype, sum(t._version for t in tensors), tensors

    def synthesize(self, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        assert ws.ndim == 3 and ws.shape[1:] == (self.num_ws, self.w_dim), ws.shape
        assert len(noise) == self.num_ws, len(noise)
        if not self._fast_enabled:
            return self.synthesis(ws, noise)
        *key, tensors = self._weights_key()
        if self._fast is None or self._fast[0] != key:
            self._fast = (key, make_synthesizer(self), tensors)  # from the weights as they are now
        return self._fast[1](ws, noise)

    def map(self, z: torch.Tensor) -> torch.Tensor:
        if self.mapping is None:
            raise ValueError("this generator was loaded without its mapping network")
        return self.mapping(z)
