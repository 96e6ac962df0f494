"""StyleGAN2 generator (NVIDIA config-f 'skip' architecture) in pure PyTorch, with explicit noise inputs.

The module tree mirrors NVIDIA's stylegan2-ada-pytorch `Generator`, so its parameter and buffer names are
exactly the `G_ema.state_dict()` keys (`synthesis.b8.conv0.weight`, `mapping.fc3.bias`, ...) and a state
dict loads with a strict `load_state_dict`. Everything runs in float32 with plain `torch.nn.functional`
ops (no custom CUDA kernels); fp16 and conv clamping of the original are deliberately left out.

Weights are stored raw, as in the checkpoints; the equalised-learning-rate gains are applied at run time.
Other layouts (rosinality's, TensorFlow's) are translated to these key names in `pulse_cli.checkpoints`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .generator import Generator

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
MAPPING_LR_MULTIPLIER = 0.01  # NVIDIA's default for every released StyleGAN2; not stored in the weights
DEMOD_EPS = 1e-8

_BLOCK_KEY = re.compile(r"^synthesis\.b(\d+)\.")
_FC_KEY = re.compile(r"^mapping\.fc(\d+)\.weight$")


@dataclass(frozen=True)
class StyleGAN2Config:
    """Architecture of a StyleGAN2 generator, as far as it can be read off its state dict."""

    resolution: int
    channels: dict[int, int]  # block resolution -> output channels of that block
    z_dim: int
    w_dim: int
    mapping_layers: int
    mapping_features: int  # width of the hidden mapping layers
    mapping_lr_multiplier: float = MAPPING_LR_MULTIPLIER
    architecture: str = "skip"

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    @property
    def num_noise(self) -> int:
        return 2 * int(math.log2(self.resolution)) - 3

    @property
    def num_ws(self) -> int:
        return self.num_noise + 1  # one per conv layer, plus the last block's torgb


# ----------------------------------------------------------------------------------------------------------
# Pure helpers


def setup_filter(taps: list[float] | tuple[float, ...] = (1, 3, 3, 1)) -> torch.Tensor:
    """Separable FIR filter as NVIDIA's `setup_filter`: outer product of the taps, normalised to sum 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def lrelu_agc(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU with the sqrt(2) gain that keeps activations at unit variance."""
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pixel norm of z along the feature dimension."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def fir_filter(x: torch.Tensor, f: torch.Tensor, pad0: int, pad1: int, gain: float = 1.0) -> torch.Tensor:
    """Pad (negative pads crop) then convolve each channel with the 2-D filter `f` (true convolution)."""
    channels = x.shape[1]
    x = F.pad(x, [pad0, pad1, pad0, pad1])
    # conv2d correlates, so flip to convolve (a no-op for the symmetric [1,3,3,1] filter).
    weight = (f * gain).flip([0, 1]).to(x.dtype)[None, None].expand(channels, 1, -1, -1)
    return F.conv2d(x, weight, groups=channels)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x upsampling: zero insertion, then the FIR filter with gain 4 (keeps the mean)."""
    batch, channels, height, width = x.shape
    up = x.new_zeros(batch, channels, 2 * height, 2 * width)
    up[:, :, ::2, ::2] = x
    fw = f.shape[-1]
    return fir_filter(up, f, (fw + 1) // 2, (fw - 2) // 2, gain=4.0)


def upsample_conv2d(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """'Same' conv at twice the resolution: stride-2 transposed conv, then blur to remove the checkerboard.

    Equals zero-insertion upsampling + FIR filter + conv (NVIDIA's `conv2d_resample` with up=2), computed the
    cheap way. `weight` is [O, I, k, k] in ordinary (correlation) layout.
    """
    k = weight.shape[-1]
    fw = f.shape[-1]
    x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
    # Padding of the equivalent upsample->filter->conv chain, minus what the transposed conv already added.
    pad0 = k // 2 + (fw + 1) // 2 - (k - 1)
    pad1 = k // 2 + (fw - 2) // 2 - (k - 2)
    return fir_filter(x, f, pad0, pad1, gain=4.0)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: bool = False,
    resample_filter: torch.Tensor | None = None,
) -> torch.Tensor:
    """Style-modulated conv, computed as scale-activations -> shared conv -> scale-outputs.

    Mathematically the same as modulating a per-sample weight, but it runs one ordinary conv for the whole
    batch (NVIDIA's non-fused path).
    """
    x = x * styles[:, :, None, None]
    if up:
        if resample_filter is None:
            raise ValueError("an upsampling conv needs a resample filter")
        x = upsample_conv2d(x, weight, resample_filter)
    else:
        x = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
    if demodulate:
        # sum_{i,k} (w[o,i,k] * s[i])^2 == sum_i s[i]^2 * sum_k w[o,i,k]^2, without a [B,O,I,k,k] tensor.
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + DEMOD_EPS).rsqrt()
        x = x * dcoefs[:, :, None, None]
    return x


# ----------------------------------------------------------------------------------------------------------
# Layers (names mirror NVIDIA's so that state-dict keys match)


def _frozen(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(shape), requires_grad=False)


class FullyConnectedLayer(nn.Module):
    def __init__(self, in_features: int, out_features: int, lr_multiplier: float = 1.0, lrelu: bool = False):
        super().__init__()
        self.weight = _frozen(out_features, in_features)
        self.bias = _frozen(out_features)
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return lrelu_agc(x) if self.lrelu else x


class MappingNetwork(nn.Module):
    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        widths = [cfg.z_dim] + [cfg.mapping_features] * (cfg.mapping_layers - 1) + [cfg.w_dim]
        for i in range(cfg.mapping_layers):
            layer = FullyConnectedLayer(widths[i], widths[i + 1], cfg.mapping_lr_multiplier, lrelu=True)
            setattr(self, f"fc{i}", layer)
        self.num_layers = cfg.mapping_layers
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = normalize_2nd_moment(z)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling) -> + noise * strength -> + bias -> lrelu * sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool):
        super().__init__()
        self.up = up
        self.affine = FullyConnectedLayer(w_dim, in_channels)
        self.weight = _frozen(out_channels, in_channels, 3, 3)
        self.noise_strength = _frozen()
        self.bias = _frozen(out_channels)
        self.register_buffer("resample_filter", setup_filter())
        self.register_buffer("noise_const", torch.zeros(resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(
            x, self.weight, styles, demodulate=True, up=self.up, resample_filter=self.resample_filter
        )
        x = x + noise * self.noise_strength
        return lrelu_agc(x + self.bias[None, :, None, None])


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation; the weight gain goes on the styles, as NVIDIA does."""

    def __init__(self, in_channels: int, w_dim: int, out_channels: int = 3):
        super().__init__()
        self.affine = FullyConnectedLayer(w_dim, in_channels)
        self.weight = _frozen(out_channels, in_channels, 1, 1)
        self.bias = _frozen(out_channels)
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return x + self.bias[None, :, None, None]


class SynthesisBlock(nn.Module):
    """One resolution: (const | upsampling conv0) -> conv1 -> torgb added to the upsampled rgb ('skip')."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.is_first = in_channels == 0
        if self.is_first:
            self.const = _frozen(out_channels, resolution, resolution)
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, up=False)
        self.torgb = ToRGBLayer(out_channels, w_dim)
        self.register_buffer("resample_filter", setup_filter())

    @property
    def num_conv(self) -> int:
        return 1 if self.is_first else 2

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: list[torch.Tensor],
        noise: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`ws` holds num_conv + 1 latents (the torgb one is shared with the next block's first conv)."""
        if self.is_first:
            x = self.const[None].expand(ws[0].shape[0], -1, -1, -1)
            x = self.conv1(x, ws[0], noise[0])
        else:
            x = self.conv0(x, ws[0], noise[0])
            x = self.conv1(x, ws[1], noise[1])
        y = self.torgb(x, ws[self.num_conv])
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        self.block_resolutions = cfg.block_resolutions
        in_channels = 0
        for res in self.block_resolutions:
            setattr(self, f"b{res}", SynthesisBlock(in_channels, cfg.channels[res], cfg.w_dim, res))
            in_channels = cfg.channels[res]

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def noise_layers(self) -> list[SynthesisLayer]:
        """Layers taking noise, lowest resolution first: b4.conv1, b8.conv0, b8.conv1, ..."""
        layers: list[SynthesisLayer] = []
        for block in self.blocks():
            if not block.is_first:
                layers.append(block.conv0)
            layers.append(block.conv1)
        return layers

    def forward(self, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        x: torch.Tensor | None = None
        img: torch.Tensor | None = None
        w_idx = 0  # noise index == ws index: both advance by one per conv layer
        for block in self.blocks():
            n = block.num_conv
            block_ws = list(ws[:, w_idx : w_idx + n + 1].unbind(dim=1))
            x, img = block(x, img, block_ws, noise[w_idx : w_idx + n])
            w_idx += n
        assert img is not None
        return img


# ----------------------------------------------------------------------------------------------------------
# Architecture inference


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise ValueError(f"StyleGAN2 state dict is missing {key!r}")
    return tuple(sd[key].shape)


def _diagnose_foreign_layout(sd: Mapping[str, torch.Tensor]) -> str:
    """A hint for state dicts that are clearly some other known format."""
    keys = list(sd)
    if "input.input" in sd or any(k.startswith("convs.") for k in keys):
        return " It looks like a rosinality 'g_ema' dict: convert it with rosinality_to_nvidia()."
    if any(re.match(r"^synthesis\.L\d+_", k) for k in keys):
        return " It looks like a StyleGAN3 generator, which is not supported."
    if any(k.startswith("blocks.") or k.startswith("dense") for k in keys):
        return " It looks like a StyleGAN v1 (PULSE) network."
    return ""


def infer_config(sd: Mapping[str, torch.Tensor]) -> StyleGAN2Config:
    """Read the architecture of an NVIDIA `G_ema.state_dict()` from its key names and tensor shapes."""
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError("expected a state dict mapping key names to tensors")
    if "synthesis.b4.const" not in sd or "mapping.fc0.weight" not in sd:
        sample = ", ".join(list(sd)[:5]) or "<empty>"
        raise ValueError(
            "not a stylegan2-ada-pytorch G_ema state dict (no 'synthesis.b4.const' / 'mapping.fc0.weight'; "
            f"first keys: {sample})." + _diagnose_foreign_layout(sd)
        )
    if any(k.startswith("mapping.embed.") for k in sd):
        raise ValueError("conditional StyleGAN2 generators (c_dim > 0, 'mapping.embed') are not supported")

    resolutions = sorted({int(m.group(1)) for k in sd if (m := _BLOCK_KEY.match(k))})
    expected = [2**i for i in range(2, 2 + len(resolutions))]
    if resolutions != expected:
        raise ValueError(f"synthesis blocks must be b4, b8, ... doubling up to the output; got {resolutions}")
    resolution = resolutions[-1]

    if any(re.match(r"^synthesis\.b\d+\.skip\.", k) for k in sd):
        raise ValueError("StyleGAN2 'resnet' architecture (synthesis.bR.skip) is not supported; only 'skip'")
    missing_rgb = [r for r in resolutions if f"synthesis.b{r}.torgb.weight" not in sd]
    if missing_rgb:
        arch = "'orig'" if missing_rgb == resolutions[:-1] else "an unknown"
        raise ValueError(
            f"{arch} architecture (no torgb in blocks {missing_rgb}) is not supported; only 'skip'"
        )

    channels = {4: _shape(sd, "synthesis.b4.const")[0]}
    for r in resolutions[1:]:
        channels[r] = _shape(sd, f"synthesis.b{r}.conv1.weight")[0]

    fc_indices = sorted(int(m.group(1)) for k in sd if (m := _FC_KEY.match(k)))
    if fc_indices != list(range(len(fc_indices))):
        raise ValueError(f"mapping layers must be fc0..fcN without gaps; got {fc_indices}")
    first = _shape(sd, "mapping.fc0.weight")
    last = _shape(sd, f"mapping.fc{fc_indices[-1]}.weight")
    return StyleGAN2Config(
        resolution=resolution,
        channels=channels,
        z_dim=first[1],
        w_dim=last[0],
        mapping_layers=len(fc_indices),
        mapping_features=first[0],
    )


# ----------------------------------------------------------------------------------------------------------
# The generator


class StyleGAN2Generator(Generator):
    """StyleGAN2 ('skip', e.g. FFHQ config-f) with W+ latents and explicit per-layer noise."""

    family = "stylegan2"

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        if cfg.architecture != "skip":
            raise ValueError(f"only the 'skip' StyleGAN2 architecture is supported, not {cfg.architecture!r}")
        self.config = cfg
        self.resolution = cfg.resolution
        self.num_ws = cfg.num_ws
        self.w_dim = cfg.w_dim
        self.z_dim = cfg.z_dim
        self.synthesis = SynthesisNetwork(cfg)
        self.mapping = MappingNetwork(cfg)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> StyleGAN2Generator:
        """Build from NVIDIA `G_ema.state_dict()` key names; raises ValueError on any other layout."""
        generator = cls(infer_config(sd))
        try:
            # Strict: every key present, nothing extra, every shape right. Values are cast to float32.
            generator.load_state_dict({k: v.detach() for k, v in sd.items()}, strict=True)
        except RuntimeError as err:
            raise ValueError(f"state dict does not fit a StyleGAN2 'skip' generator: {err}") from err
        return generator.eval()

    @property
    def w_avg(self) -> torch.Tensor:
        """Running mean of w from training (mapping.w_avg), used for truncation."""
        return self.mapping.w_avg

    def noise_shapes(self, batch: int) -> list[tuple[int, ...]]:
        return [
            (batch, 1, layer.noise_const.shape[0], layer.noise_const.shape[1])
            for layer in self.synthesis.noise_layers()
        ]

    def const_noise(self, batch: int = 1) -> list[torch.Tensor]:
        """The stored noise buffers as fresh [batch, 1, r, r] tensors, lowest resolution first."""
        return [
            layer.noise_const[None, None].expand(batch, 1, -1, -1).clone()
            for layer in self.synthesis.noise_layers()
        ]

    def synthesize(self, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [B, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        expected = self.noise_shapes(ws.shape[0])
        if len(noise) != len(expected):
            raise ValueError(f"expected {len(expected)} noise tensors, got {len(noise)}")
        for i, (n, shape) in enumerate(zip(noise, expected, strict=True)):
            if n.ndim != 4 or n.shape[1:] != shape[1:]:
                raise ValueError(f"noise[{i}] must be [B, 1, {shape[2]}, {shape[3]}], got {tuple(n.shape)}")
        return self.synthesis(ws, noise)

    def map(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [B, {self.z_dim}], got {tuple(z.shape)}")
        return self.mapping(z)
