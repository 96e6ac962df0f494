"""`--search robust`: PULSE's search plus what later work found to help, and the measures used to judge it.

PULSE optimises the W+ latents on their sphere and only the 5 coarsest noise maps. `robust` keeps that
(same latents, same GEOCROSS, same spherical Adam) and changes five things:

- every noise layer (except the zeroed "bad" ones) whose maps are at most `max_noise_ratio` times the
  target's size is trained, each on its own sphere; finer maps cannot change the downscaled image much,
  so they keep PULSE's fixed random noise (this also keeps the cost per step down at 1024 px);
- so that trained noise stays noise, the StyleGAN2 projector's regulariser is added (the squared lag-1
  autocorrelation of each map along x and y, at every scale down to 8x8), and after every step each
  trained map is re-centred (mean 0) and put back on its sphere (the projector's renormalisation);
- the L2 (or L1) term is a hinge at a fraction of eps instead of at eps, so the search aims well inside
  eps rather than stopping at its edge; below the hinge, only the realism terms pull;
- the learning rate is twice SearchConfig.lr (0.8 by default), with a schedule that peaks at 10% of the
  steps and decays along a cosine, instead of PULSE's peak at 45%;
- the trained noise maps step at three times the latents' rate (PULSE: the same rate).

Each of these is a field of `RobustOptions`, so the benchmark can switch them one by one. The trained
maps of one size are one tensor and Adam runs multi-tensor (`foreach`): fewer small ops per step.

For a generator with one Gaussian latent (the DCGAN: no W+ rows, no noise) `RobustOptions.for_latent`
adds five more, measured on the DCGAN's own faces (bench/quality.py, docs/search-robust.md; issue 27):

- **a start near the crop**: 1024 random z on the sphere are rendered and downscaled once per crop size
  (`start_bank`, seeded: the same bank for every search); a search starts from one of the 8 whose crops are
  nearest its target (which one, and in which order on restarts, drawn from the image's seed), plus 0.6 times
  the seed's own N(0, I) draw, so that two seeds (two `--samples`) never start alike. The start decides the
  basin: from random starts the same searches miss eps 2-3 times as often, and meet it later;
- **Adam steps along the principal axes** of the crop's sensitivity to z: the eigenvectors of E[JᵀJ], J
  the Jacobian of the downscaled image with respect to z, estimated once per crop size from random probes
  (`principal_axes`). Adam scales each coordinate by its own gradient history; in z's own coordinates every
  one mixes stiff and soft directions (the singular values of J span three orders of magnitude), along
  these axes each coordinate is one of them. A rotation of coordinates: the sphere and the start are unchanged;
- **a shorter memory** (Adam's betas 0.8 and 0.8 instead of 0.9 and 0.999): as the search nears its answer
  the gradients shrink tenfold and more, and with beta2 0.999 the early, large ones keep the steps far
  smaller than the learning rate asks;
- **the latent's norm may move** within the range where that of N(0, I) samples lies (±3.09 standard
  deviations of it, 99.8% of them), by a per-image scale trained at a fortieth of the latents' rate: some
  faces' latents lie far from the sphere, where the nearest answer on it is marginal;
- **a search that has not met eps after 100 steps starts again** from its next start when its budget allows
  (300 steps: up to two restarts), with the schedule restarted: the searches that miss at 100 steps are in
  the wrong basin more often than slow (more steps of the same search reach eps less often than a new
  start). One that has met eps ends there: another start would make another face, not a better one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..networks.generator import Generator, LatentStats
from .config import SearchConfig
from .optim import lr_multiplier


def _warmup_linear(peak: float) -> Callable[[int, int], float]:
    """PULSE's linear1cycledrop with its peak moved to `peak` of the steps: up from 0.1 to 1 at `peak`,
    down to 0.1 at 90% of the steps, then a linear drop towards 0.001."""
    def multiplier(step: int, steps: int) -> float:
        rise, drop = peak * steps, 0.9 * steps
        if step < rise:
            return 0.1 + 0.9 * step / rise
        if step < drop:
            return 1 - 0.9 * (step - rise) / (drop - rise)
        return 0.1 + (step - drop) / (steps - drop) * (1 / 1000 - 1 / 10)
    return multiplier


def _warmup_cosine(peak: float, hold: float | None = None) -> Callable[[int, int], float]:
    """Up from 0.1 to 1 over the first `peak` of the steps, held at 1 until `hold` of them (if given), then
    a cosine down to 0.001 at the end."""
    def multiplier(step: int, steps: int) -> float:
        rise, held = peak * steps, (hold or peak) * steps
        if step < rise:
            return 0.1 + 0.9 * step / rise
        if step < held:
            return 1.0
        return 0.001 + 0.999 * (1 + math.cos(math.pi * (step - held) / (steps - held))) / 2
    return multiplier


# Schedules robust may use on top of PULSE's (`pulse` means: SearchConfig.lr_schedule, as PULSE).
ROBUST_SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "warmup20-linear": _warmup_linear(0.2),
    "warmup10-cosine": _warmup_cosine(0.1),
    "warmup10-hold70-cosine": _warmup_cosine(0.1, hold=0.7),
}


@dataclass(frozen=True)
class RobustOptions:
    """What `--search robust` changes; the defaults are what `robust` means (chosen by bench/search.py)."""

    train_all_noise: bool = True  # every non-zeroed noise layer trainable (PULSE: the 5 coarsest) ...
    max_noise_ratio: int | None = 8  # ... up to maps this many times the target's size (None: all)
    noise_reg_weight: float = 5.0  # weight of the NOISE term (0 switches it off)
    renormalise_noise: bool = True  # re-centre trained noise maps after each step (then back on the sphere)
    hinge: float = 0.5  # the L2/L1 term is clamped at hinge * eps (PULSE: 1, i.e. at eps)
    lr_factor: float = 2.0  # robust's learning rate is SearchConfig.lr times this
    lr_schedule: str = "warmup10-cosine"  # one of ROBUST_SCHEDULES, or "pulse": SearchConfig.lr_schedule
    noise_lr_factor: float = 3.0  # trained noise maps step at this many times the latents' rate
    # Gaussian latents only (see `for_latent`):
    principal_axes: int = 0  # probes estimating the axes Adam steps along (0: the latent's own coordinates)
    adam_betas: tuple[float, float] | None = None  # Adam's moment decays (None: torch's (0.9, 0.999))
    radius_spread: float | None = None  # the latent's norm may move this many of its standard deviations
    radius_lr_factor: float = 0.025  # ... at this multiple of the latents' rate
    cycle_steps: int | None = None  # a search not within eps after this many steps starts again (None: never)
    start_bank: int = 0  # random z whose crops a start is chosen among, nearest the target first (0: random starts)
    start_choices: int = 8  # ... among this many of the nearest, in an order drawn from the image's seed
    start_jitter: float = 0.0  # ... plus this times the seed's own N(0, I) draw: no two seeds start alike

    @classmethod
    def for_latent(cls, latent_kind: str) -> RobustOptions:
        """What `--search robust` means for a generator whose latent is `latent_kind` ("w+" or "gaussian")."""
        if latent_kind == "gaussian":
            return cls(**GAUSSIAN_LATENT)
        return cls()

    def validate(self) -> None:
        if not 0 < self.hinge <= 1:
            raise ValueError(f"hinge must be above 0 and at most 1 (a fraction of eps), got {self.hinge}")
        if not 0 <= self.noise_reg_weight < float("inf"):
            raise ValueError(f"noise regularisation weight must be >= 0, got {self.noise_reg_weight}")
        if not 0 < self.lr_factor < float("inf"):
            raise ValueError(f"lr factor must be above 0, got {self.lr_factor}")
        if not 0 < self.noise_lr_factor < float("inf"):
            raise ValueError(f"noise lr factor must be above 0, got {self.noise_lr_factor}")
        if self.lr_schedule != "pulse" and self.lr_schedule not in ROBUST_SCHEDULES:
            raise ValueError(f"unknown robust lr schedule {self.lr_schedule!r}; known: pulse, "
                             f"{', '.join(ROBUST_SCHEDULES)}")
        if self.max_noise_ratio is not None and self.max_noise_ratio < 1:
            raise ValueError(f"max noise ratio must be at least 1 (or None: every layer), got {self.max_noise_ratio}")
        if self.principal_axes < 0:
            raise ValueError(f"principal axes probes must be >= 0, got {self.principal_axes}")
        if self.adam_betas is not None and not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"Adam's betas must be from 0 to below 1, got {self.adam_betas}")
        if self.radius_spread is not None and not 0 < self.radius_spread < float("inf"):
            raise ValueError(f"radius spread must be above 0, got {self.radius_spread}")
        if not 0 < self.radius_lr_factor < float("inf"):
            raise ValueError(f"radius lr factor must be above 0, got {self.radius_lr_factor}")
        if self.cycle_steps is not None and self.cycle_steps < 1:
            raise ValueError(f"cycle steps must be at least 1 (or None: no restarts), got {self.cycle_steps}")
        if self.start_bank < 0 or self.start_choices < 1 or 0 < self.start_bank < self.start_choices:
            raise ValueError(f"start bank must be >= 0 and start choices from 1 to the bank's size, got "
                             f"{self.start_bank} and {self.start_choices}")
        if not 0 <= self.start_jitter < float("inf"):
            raise ValueError(f"start jitter must be at least 0, got {self.start_jitter}")

    def overrides(self) -> dict[str, object]:
        """The SearchConfig fields this search does not use, each with what records say instead: its own
        learning-rate schedule; and, training every noise layer up to `max_noise_ratio` times the target's
        size, no `trainable_noise_layers` (null). The command line refuses them (see `pulse upsample`)."""
        used: dict[str, object] = {}
        if self.lr_schedule != "pulse":
            used["lr_schedule"] = self.lr_schedule
        if self.train_all_noise:
            used["trainable_noise_layers"] = None
        return used

    def check_latent(self, latent_kind: str) -> None:
        """The options that only a Gaussian latent can use (one z: its Jacobian is small enough to probe,
        its norm has a known spread); ValueError otherwise."""
        if latent_kind != "gaussian" and (self.principal_axes or self.radius_spread is not None or self.start_bank):
            raise ValueError("principal axes, a free radius and a start bank are for a generator with one Gaussian "
                             "latent")

    def cycles(self, steps: int) -> list[int]:
        """The steps at which each start may begin, for a budget of `steps`: every `cycle_steps`, except
        that a last cycle shorter than half of one joins the one before it."""
        if self.cycle_steps is None:
            return [0]
        starts = list(range(0, steps, self.cycle_steps))
        if len(starts) > 1 and steps - starts[-1] < self.cycle_steps / 2:
            starts.pop()
        return starts

    def learning_rate(self, config: SearchConfig, step: int, steps: int | None = None) -> float:
        """Robust's learning rate at optimiser step `step` (0-based) of a schedule of `steps` (default
        `config.steps`; a cycle's own length when the search restarts)."""
        steps = config.steps if steps is None else steps
        if self.lr_schedule == "pulse":
            multiplier = lr_multiplier(config.lr_schedule, step, steps)
        else:
            multiplier = ROBUST_SCHEDULES[self.lr_schedule](step, steps)
        return config.lr * self.lr_factor * multiplier


# What robust adds for a Gaussian latent (the module docstring says why; docs/search-robust.md measures it).
GAUSSIAN_LATENT = {"principal_axes": 256, "adam_betas": (0.8, 0.8), "radius_spread": 3.09, "cycle_steps": 100,
                   "start_bank": 1024, "start_choices": 8, "start_jitter": 0.6}


def onto_sphere(z: torch.Tensor) -> torch.Tensor:
    """Gaussian latents z [..., dim] scaled onto the sphere of radius sqrt(dim), where N(0, I_dim) draws
    concentrate: PULSE's start for a Gaussian latent, and every draw robust makes for one."""
    return z * (z.shape[-1] ** 0.5 / z.norm(dim=-1, keepdim=True))


def _images(G: Generator, z: torch.Tensor) -> torch.Tensor:
    """G's images of latents z in [0, 1] (not clamped), with its noise inputs (if any) at zero."""
    noise = [torch.zeros(shape, device=G.device) for shape in G.noise_shapes(len(z))]
    return (G.synthesize(z, noise) + 1) / 2


def radius_bounds(spread: float, dim: int) -> tuple[float, float]:
    """Bounds on log(|z| / sqrt(dim)) within `spread` standard deviations of the norm of z ~ N(0, I_dim)
    (the norm is about sqrt(dim) with standard deviation about 1/sqrt(2))."""
    half = spread / math.sqrt(2 * dim)
    return math.log(max(1 - half, 1e-3)), math.log(1 + half)


def principal_axes(G: Generator, downsample: Callable[[torch.Tensor], torch.Tensor], size: int, probes: int, *,
                   seed: int = 0, batch: int = 32) -> torch.Tensor:
    """The axes [dim, dim] (columns, by decreasing eigenvalue) of E[JᵀJ], J the Jacobian of the
    `downsample`d image (size x size, as the search sees it) with respect to a Gaussian latent z on its sphere.

    Estimated from `probes` random pairs (z, v), v ~ N(0, I) over the downscaled image: the gradient g of
    <v, downsample(G(z))> is Jᵀv, and E[ggᵀ] = E[JᵀJ]. The draws are seeded on the CPU and the sum and its
    eigendecomposition are in float64 on the CPU, in fixed batches: the same axes for every search.
    """
    dim = G.w_dim
    device = G.device
    rng = torch.Generator().manual_seed(seed)
    total = torch.zeros(dim, dim, dtype=torch.float64)
    for first in range(0, probes, batch):
        n = min(batch, probes - first)
        z = onto_sphere(torch.randn(n, 1, dim, generator=rng))
        v = torch.randn(n, 3, size, size, generator=rng)
        z = z.to(device).requires_grad_(True)
        (downsample(_images(G, z)) * v.to(device)).sum().backward()
        g = z.grad.reshape(n, dim).double().cpu()
        total += g.T @ g
    _, vectors = torch.linalg.eigh(total / max(probes, 1))
    return vectors.flip(1).to(torch.get_default_dtype())  # the dtype the starts are drawn in


def start_bank(G: Generator, downsample: Callable[[torch.Tensor], torch.Tensor], count: int, *, seed: int = 1,
               batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` Gaussian latents z [count, 1, dim] on their sphere, drawn on the CPU from `seed`, and their images
    `downsample`d [count, 3, h, w] in [0, 1] (CPU): the starts a search chooses among by their crop's distance."""
    dim = G.w_dim
    rng = torch.Generator().manual_seed(seed)
    z = onto_sphere(torch.randn(count, 1, dim, generator=rng))
    crops = []
    with torch.no_grad():
        for first in range(0, count, batch):
            crops.append(downsample(_images(G, z[first:first + batch].to(G.device)).clamp(0, 1)).cpu())
    return z, torch.cat(crops)


def noise_regularisation(noise: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-image [B] multi-scale autocorrelation penalty over noise maps [B, 1, r, r] (StyleGAN2 projector).

    For each map and each scale (halved by 2x2 average pooling down to 8x8): the squared mean of the map
    times itself shifted by one pixel, along x and along y (wrapping around). White noise scores near 0.
    """
    # The pyramids of all maps go down together: at each size, the maps of that size and those pooled
    # from above it are one tensor (as channels). The same sums as one pyramid per map, far fewer ops.
    by_size: dict[int, list[torch.Tensor]] = {}
    for n in noise:
        by_size.setdefault(n.shape[-1], []).append(n)
    total = noise[0].new_zeros(noise[0].shape[0])
    carried: torch.Tensor | None = None  # maps from larger sizes whose pyramid goes on, pooled to this size
    while by_size or carried is not None:
        size = carried.shape[-1] if carried is not None else max(by_size)
        if any(s > size for s in by_size):  # a size off the halving chain (not a power of 2): its own pyramid
            total = total + noise_regularisation([m for s in list(by_size) if s > size for m in by_size.pop(s)])
        maps = ([carried] if carried is not None else []) + by_size.pop(size, [])
        n = torch.cat(maps, 1) if len(maps) > 1 else maps[0]
        x = (n * torch.roll(n, shifts=1, dims=3)).mean((2, 3)).pow(2)
        y = (n * torch.roll(n, shifts=1, dims=2)).mean((2, 3)).pow(2)
        total = total + (x + y).sum(1)
        carried = F.avg_pool2d(n, kernel_size=2) if size > 8 else None  # each map's pyramid ends at 8x8
    return total


# --- measures (bench/search.py and the tests) ----------------------------------------------------------


def lag1_autocorrelation(noise: torch.Tensor) -> float:
    """Normalised lag-1 autocorrelation of one noise map [..., r, r], mean of x and y (white noise: ~0)."""
    n = noise.reshape(noise.shape[-2:]).double()
    n = n - n.mean()
    var = n.pow(2).mean()
    if var == 0:
        return 0.0
    x = (n * torch.roll(n, 1, dims=1)).mean() / var
    y = (n * torch.roll(n, 1, dims=0)).mean() / var
    return float((x + y) / 2)


def w_distance(ws: torch.Tensor, stats: LatentStats) -> float:
    """Mean over W+ rows [num_ws, w_dim] of the RMS z-score of LeakyReLU(5)(w) under the gaussian fit.

    PULSE's search space is exactly these z-scores (w = LeakyReLU(0.2)(x * std + mean)), so a row the
    mapping network could have made scores about 1.
    """
    x = (F.leaky_relu(ws.double(), 5.0) - stats.mean.double().to(ws.device)) / stats.std.double().to(ws.device)
    return float(x.pow(2).mean(-1).sqrt().mean())
