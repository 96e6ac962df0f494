"""The PULSE latent search, importable without the CLI.

`pulse_search(G, targets, seeds=..., ...)` optimises each target's own W+ latents and noise on their
spheres so that the generated image, bicubic-downscaled, matches the target. Images in one batch share
the generator's forward and backward passes only: each keeps its own parameters, optimiser state,
schedule and best iterate, so its result does not depend on its batch-mates (bit for bit within one batch
size; the batch size itself changes float rounding, README "Reproducibility").
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..networks.generator import Generator, LatentStats
from .config import SearchConfig
from .downsample import BicubicDownsample
from .losses import LossTerm, loss_terms, mean_squared_error, parse_loss
from .optim import SphericalOptimizer, lr_multiplier
from .robust import RobustOptions, noise_regularisation, onto_sphere, principal_axes, radius_bounds, start_bank

NON_FINITE = "the generator produced non-finite values (NaN or infinity)"
# Smaller targets make the downsampler's reflect padding larger than the generated image.
MIN_TARGET_SIZE = 4


@dataclass
class StepRecord:
    """One optimisation step of one image, as written to its log."""

    step: int
    lr: float
    losses: dict[str, float]
    l2: float
    total: float


@dataclass
class SearchResult:
    image: torch.Tensor  # [3, R, R] in [0, 1]: the best iterate, rendered alone (see `render`)
    ws: torch.Tensor  # [num_ws, w_dim]: the best iterate's W+ latents
    noise: list[torch.Tensor]  # the best iterate's noise, one [1, r, r] per layer
    converged: bool
    best_step: int
    best_l2: float
    best_total: float
    steps_run: int
    history: list[StepRecord] = field(default_factory=list)
    restarts: list[int] = field(default_factory=list)  # steps at which the search began again from a new start


@dataclass
class _Iterate:
    """What is kept of a candidate best iterate: its parameters, not its image."""

    step: int
    l2: float
    total: float
    latent: torch.Tensor  # in the search space (robust's Gaussian latent: z itself, its axes and radius applied)
    noise: list[torch.Tensor]


def map_latents(latent: torch.Tensor, stats: LatentStats, num_ws: int, kind: str = "w+") -> torch.Tensor:
    """PULSE's learned-Gaussian mapping from search space to W+: LeakyReLU(0.2)(x * std + mean).

    For a Gaussian latent (`kind="gaussian"`, e.g. DCGAN's z) the search space is the latent itself."""
    latent = latent.expand(-1, num_ws, -1)
    if kind == "gaussian":
        return latent
    return F.leaky_relu(latent * stats.std + stats.mean, 0.2)


@torch.no_grad()
def render(G: Generator, ws: torch.Tensor, noise: Sequence[torch.Tensor]) -> torch.Tensor:
    """Image in [0, 1] for W+ latents [B, num_ws, w_dim] and noise, as the search sees it.

    Results are rendered one at a time through this function, so `pulse render` on saved latents
    reproduces a result bit for bit on the same device, whatever batch it was found in.
    """
    return ((G.synthesize(ws, list(noise)) + 1) / 2).clamp(0, 1)


class ImageSearch:
    """One image's search state: latents, noise, optimiser, learning-rate schedule and best iterates."""

    def __init__(self, G: Generator, target: torch.Tensor, seed: int, config: SearchConfig,
                 device: torch.device, save_every: int | None = None,
                 on_frame: Callable[[int, torch.Tensor], None] | None = None,
                 robust: RobustOptions | None = None, axes: torch.Tensor | None = None,
                 bank: tuple[torch.Tensor, torch.Tensor] | None = None):
        """With `save_every=K`, `on_frame(step, image [3, R, R] on the CPU)` gets every K-th iterate as it
        is made: frames are handed on, never held for the whole search. In `robust` mode, `robust`
        overrides the default `RobustOptions.for_latent` (the benchmark's ablations); for a Gaussian latent,
        `axes` [dim, dim] are the principal axes robust steps it along (`principal_axes`) and `bank` the
        (z, crop) pairs its starts are chosen among (`start_bank`), both one per target size, from the pool.
        In `pulse` mode all three are ignored."""
        assert target.ndim == 3 and target.shape[0] == 3, target.shape
        self.config = config
        self.robust = (robust or RobustOptions.for_latent(G.latent_kind)) if config.mode == "robust" else None
        self.axes = axes if self.robust is not None else None
        self.target = target.to(device)
        self.G, self.device = G, device
        # Start drawn on the CPU from the image's own seed, so it is the same on every device.
        self._rng = torch.Generator().manual_seed(seed)
        self._bank_starts: list[torch.Tensor] = []
        if bank is not None and self.robust is not None:  # the nearest crops' z, in an order the seed draws
            z, crops = bank
            distance = (crops - target.cpu()[None]).pow(2).flatten(1).mean(1)
            nearest = distance.argsort()[:self.robust.start_choices]
            self._bank_starts = [z[nearest[i]] for i in torch.randperm(len(nearest), generator=self._rng)]
        self.cycle_start = 0
        self.restarts: list[int] = []
        self._ended = False  # met eps by the end of a cycle: another start would make another face
        self._begin()
        self.step = 0
        self.save_every = save_every if on_frame is not None else None
        self.on_frame = on_frame
        self.history: list[StepRecord] = []
        self._best_converged: _Iterate | None = None  # lowest total among iterates meeting eps
        self._best_l2: _Iterate | None = None  # lowest L2 overall
        self.error: str | None = None  # why the search failed (it is then done, with no result)

    def _begin(self) -> None:
        """A start (the first, or a restart's) drawn from the image's own random stream: latents, noise,
        optimiser."""
        G, config, device, rng = self.G, self.config, self.device, self._rng
        latent_rows = 1 if config.tile_latent else G.num_ws
        start = torch.randn((1, latent_rows, G.w_dim), generator=rng)
        if self._bank_starts:  # near a crop like the target's, moved by the seed's own draw
            start = self._bank_starts.pop(0).reshape(1, latent_rows, G.w_dim) + self.robust.start_jitter * start
        if G.latent_kind == "gaussian":  # PULSE for a Gaussian latent: z on the sphere of radius sqrt(dim)
            start = onto_sphere(start)
        start = start.to(device)
        if self.axes is not None:  # the same start, in the coordinates of the axes Adam steps along
            start = start @ self.axes
        self.latent = start.requires_grad_(True)
        self.log_radius: torch.Tensor | None = None
        if self.robust is not None and self.robust.radius_spread is not None:
            self.log_radius = torch.zeros(1, 1, 1, device=device, requires_grad=True)
        shapes = G.noise_shapes(1)
        zeroed = config.zeroed_noise_layers(len(shapes)) if shapes else set()
        if self.robust is not None:
            self._init_robust_noise(shapes, zeroed, rng, device)
        else:
            self._noise: list[torch.Tensor] = []
            self.trainable_layers: list[int] = []
            trainable: list[torch.Tensor] = []
            for i, shape in enumerate(shapes):
                if config.noise_type == "zero" or i in zeroed:
                    tensor = torch.zeros(shape, device=device)
                else:
                    tensor = torch.randn(shape, generator=rng).to(device)
                    if config.noise_type == "trainable" and i < config.trainable_noise_layers:
                        tensor.requires_grad_(True)
                        trainable.append(tensor)
                        self.trainable_layers.append(i)
                self._noise.append(tensor)
            self.optimizer = SphericalOptimizer(config.optimizer, [self.latent, *trainable], lr=config.lr)

    def _init_robust_noise(self, shapes: list[tuple[int, ...]], zeroed: set[int], rng: torch.Generator,
                           device: torch.device) -> None:
        """Robust mode's noise: the same draws as PULSE's, but the trained maps of one size are one tensor
        [1, k, r, r] (one Adam update, sphere projection and renormalisation for all k: each map keeps its
        own sphere, as the per-[b, i] radius and mean are taken over the map alone)."""
        config, robust = self.config, self.robust
        assert robust is not None
        limit = None if robust.max_noise_ratio is None else robust.max_noise_ratio * self.target.shape[-1]
        maps: list[torch.Tensor] = []
        self.trainable_layers = []
        for i, shape in enumerate(shapes):
            if config.noise_type == "zero" or i in zeroed:
                maps.append(torch.zeros(shape, device=device))
                continue
            maps.append(torch.randn(shape, generator=rng).to(device))
            if config.noise_type == "trainable" and (
                    (i < config.trainable_noise_layers) if not robust.train_all_noise
                    else (limit is None or shape[-1] <= limit)):
                self.trainable_layers.append(i)
        by_size: dict[int, list[int]] = {}
        for i in self.trainable_layers:
            by_size.setdefault(maps[i].shape[-1], []).append(i)
        self._fixed_noise = [None if i in self.trainable_layers else m for i, m in enumerate(maps)]
        self._noise_groups: list[tuple[torch.Tensor, list[int]]] = []
        for layers in by_size.values():
            group = torch.cat([maps[i] for i in layers], 1)
            if robust.renormalise_noise:
                group = _centred(group, _map_norm(group))
            self._noise_groups.append((group.requires_grad_(True), layers))
        free = [] if self.log_radius is None else [(self.log_radius, robust.radius_lr_factor)]
        self.optimizer = SphericalOptimizer(config.optimizer, [self.latent, *(g for g, _ in self._noise_groups)],
                                            lr=config.lr, foreach=True,
                                            lr_scales=[1.0] + [robust.noise_lr_factor] * len(self._noise_groups),
                                            betas=robust.adam_betas, free=free)

    @property
    def noise(self) -> list[torch.Tensor]:
        """One [1, 1, r, r] tensor per noise layer (trained ones require grad)."""
        if self.robust is None:
            return self._noise
        noise = list(self._fixed_noise)
        for group, layers in self._noise_groups:
            for i, view in zip(layers, group.split(1, dim=1), strict=True):
                noise[i] = view
        return noise

    def search_latent(self) -> torch.Tensor:
        """The latent [1, rows, dim] in PULSE's search space that this step evaluates: `latent` itself, or
        for robust's Gaussian latent, its coordinates along the axes turned back into z and scaled by its
        radius (the sphere's, until trained)."""
        latent = self.latent
        if self.axes is not None:
            latent = latent @ self.axes.T
        if self.log_radius is not None:
            latent = latent * self.log_radius.exp()
        return latent

    @property
    def done(self) -> bool:
        return self.step >= self.config.steps or self.error is not None or self._ended

    @property
    def converged(self) -> bool:
        """Some iterate so far met eps."""
        return self._best_converged is not None

    def _cycle_end(self) -> int:
        """The step at which the current start's schedule ends (the budget's end without restarts)."""
        later = [c for c in self.robust.cycles(self.config.steps) if c > self.cycle_start] if self.robust else []
        return later[0] if later else self.config.steps

    def current_lr(self) -> float:
        if self.robust is not None:
            return self.robust.learning_rate(self.config, self.step - self.cycle_start,
                                             self._cycle_end() - self.cycle_start)
        return self.config.lr * lr_multiplier(self.config.lr_schedule, self.step, self.config.steps)

    def _snapshot(self, l2: float, total: float) -> _Iterate:
        return _Iterate(self.step, l2, total, self.search_latent().detach().clone(),
                        [n.detach().clone() if n.requires_grad else n for n in self.noise])

    def record(self, image: torch.Tensor, l2: float, total: float, losses: dict[str, float]) -> None:
        """Keep the best iterate: among those meeting eps the lowest total loss, else the lowest L2. A
        non-finite loss fails the search: no later step can be trusted, and its image is no result."""
        if not (math.isfinite(l2) and math.isfinite(total)):
            self.error = NON_FINITE
            return
        self.history.append(StepRecord(self.step, self.current_lr(), losses, l2, total))
        if l2 <= self.config.eps and (self._best_converged is None or total < self._best_converged.total):
            self._best_converged = self._snapshot(l2, total)
        if self._best_l2 is None or l2 < self._best_l2.l2:
            self._best_l2 = self._snapshot(l2, total)
        if self.save_every and self.step % self.save_every == 0:
            self.on_frame(self.step, image.detach().clamp(0, 1).cpu())

    def advance(self) -> None:
        self.optimizer.set_lr(self.current_lr())
        self.optimizer.step()
        self.optimizer.zero_grad()
        if self.robust is not None and self.robust.renormalise_noise:
            # the projector's renormalisation, kept on each map's sphere: mean 0, initial radius
            with torch.no_grad():
                for param, radius in zip(self.optimizer.params[1:], self.optimizer.radii[1:], strict=True):
                    param.copy_(_centred(param, radius))
        if self.log_radius is not None:
            with torch.no_grad():
                self.log_radius.clamp_(*radius_bounds(self.robust.radius_spread, self.latent.shape[-1]))
        self.step += 1
        if self.robust is not None and self.step == self._cycle_end() < self.config.steps:
            if self.converged:
                self._ended = True
            else:  # the next cycle: a new start, a new optimiser, the schedule from its beginning
                self.cycle_start = self.step
                self.restarts.append(self.step)
                self._begin()

    def result(self, G: Generator, stats: LatentStats) -> SearchResult:
        """The best iterate, rendered. ValueError (NON_FINITE) if the search failed or its image is not
        finite."""
        if self.error is not None:
            raise ValueError(self.error)
        assert self._best_l2 is not None, "no step was run"
        best = self._best_converged or self._best_l2
        ws = map_latents(best.latent, stats, G.num_ws, G.latent_kind)
        image = render(G, ws, best.noise)
        if not bool(torch.isfinite(image).all()):
            raise ValueError(NON_FINITE)
        return SearchResult(image=image[0].cpu(), ws=ws[0].cpu(), noise=[n[0].cpu() for n in best.noise],
                            converged=self.converged, best_step=best.step, best_l2=best.l2,
                            best_total=best.total, steps_run=self.step, history=self.history,
                            restarts=list(self.restarts))


def _map_norm(noise: torch.Tensor) -> torch.Tensor:
    return (noise.pow(2).sum((2, 3), keepdim=True) + 1e-9).sqrt()


def _centred(noise: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Each map [b, c] with its mean removed, scaled to `radius` (its sphere)."""
    centred = noise - noise.mean((2, 3), keepdim=True)
    return centred * (radius / _map_norm(centred))


StepCallback = Callable[[int, Sequence[ImageSearch]], None]


def check_target_size(size: tuple[int, int], resolution: int) -> None:
    height, width = size
    if width < MIN_TARGET_SIZE:
        raise ValueError(f"targets must be at least {MIN_TARGET_SIZE}x{MIN_TARGET_SIZE}, got {width}x{height}")
    if height != width or resolution % width:
        raise ValueError(f"targets must be square with a size dividing {resolution}, got {(height, width)}")


def run_step(G: Generator, searches: Sequence[ImageSearch], *, stats: LatentStats,
             downsamplers: dict[int, BicubicDownsample], terms: tuple[LossTerm, ...]) -> None:
    """One forward/backward/optimiser step for every search in the batch.

    Searches may be at different steps of their own schedules, and their targets may differ in size
    (each size gets its own downsampler); they share only the generator's forward and backward pass.
    """
    latent = torch.cat([s.search_latent() for s in searches])  # one config per pool: tiled or not for all
    ws = map_latents(latent, stats, G.num_ws, G.latent_kind)
    per_search = [s.noise for s in searches]
    noise = [torch.cat([n[i] for n in per_search]) for i in range(len(per_search[0]))]
    image = (G.synthesize(ws, noise) + 1) / 2
    totals: list[torch.Tensor] = []
    for size, members in _by_target_size(searches).items():
        index = torch.tensor(members, device=image.device)
        generated_lr = downsamplers[size](image.index_select(0, index))
        target = torch.stack([searches[i].target for i in members])
        first = searches[members[0]]  # one config per pool
        eps = first.config.eps
        robust = first.robust
        clamp = eps if robust is None else eps * robust.hinge
        total, values = loss_terms(terms, ws=ws.index_select(0, index), generated_lr=generated_lr,
                                   target=target, eps=clamp)
        if robust is not None and first.trainable_layers:
            whole = len(members) == len(searches)  # one target size in the batch: no copies needed
            regulariser = noise_regularisation([noise[i] if whole else noise[i].index_select(0, index)
                                                for i in first.trainable_layers])
            values["NOISE"] = regulariser
            if robust.noise_reg_weight:
                total = total + robust.noise_reg_weight * regulariser
        totals.append(total)
        with torch.no_grad():
            l2 = mean_squared_error(generated_lr, target).tolist()
            total_values = total.tolist()
            named = {name: value.tolist() for name, value in values.items()}
        for j, i in enumerate(members):
            searches[i].record(image[i], l2[j], total_values[j], {name: v[j] for name, v in named.items()})
    # Sum over the batch: each image's gradient is the one it would get alone.
    torch.stack([t.sum() for t in totals]).sum().backward()
    for search in searches:
        search.advance()


def _by_target_size(searches: Sequence[ImageSearch]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, search in enumerate(searches):
        groups.setdefault(search.target.shape[-1], []).append(i)
    return groups


# Robust's axes and start banks per generator, made once per process: a pool made later (another run in a
# notebook, a forked worker, which inherits them) starts at once.
_PREPARED: weakref.WeakKeyDictionary[Generator, dict[tuple, tuple]] = weakref.WeakKeyDictionary()


class SearchPool:
    """Searches sharing the generator's passes; a finished one leaves and a new one can take its place.

    Each search keeps its own step count, schedule and best iterate, so what it produces does not
    depend on when it joined or on who else is in the pool. With `stop_at_eps`, a search finishes at
    its first iterate that meets eps instead of running all its steps.
    """

    def __init__(self, G: Generator, *, config: SearchConfig | None = None, device: torch.device | str = "cpu",
                 stop_at_eps: bool = False, save_every: int | None = None,
                 on_frame: Callable[[object, int, torch.Tensor], None] | None = None,
                 robust: RobustOptions | None = None):
        """`on_frame(key, step, image)` gets every `save_every`-th iterate of each search as it is made.
        `robust` overrides the default `RobustOptions` of `mode="robust"` (benchmark ablations). No `config`:
        PULSE's defaults as they apply to G (`SearchConfig.for_latent`)."""
        if config is None:
            config = SearchConfig().for_latent(G.latent_kind)
        config.validate()
        if G.latent_kind == "gaussian":  # GEOCROSS and the noise options cannot apply (see SearchConfig.for_latent)
            config.check_generator(0, G.latent_kind)
        if robust is not None:
            robust.validate()
        # robust's options, resolved once for every search of the pool (None in pulse mode)
        self.robust = (robust or RobustOptions.for_latent(G.latent_kind)) if config.mode == "robust" else None
        if self.robust is not None:
            self.robust.check_latent(G.latent_kind)
        if G.latent_stats is None:
            raise ValueError("the generator has no latent statistics (gaussian fit)")
        self.G = G
        self.config = config
        self.device = torch.device(device)
        self.stop_at_eps = stop_at_eps
        self.save_every = save_every
        self.on_frame = on_frame
        self.stats = G.latent_stats.to(self.device)
        self.terms = parse_loss(config.loss)
        self.downsamplers: dict[int, BicubicDownsample] = {}
        self.active: list[tuple[object, ImageSearch]] = []
        self._failed: list[tuple[object, str]] = []  # finished without a result, until `pop_failed`

    def __len__(self) -> int:
        return len(self.active)

    def add(self, key: object, target: torch.Tensor, seed: int) -> None:
        """Start a search for `target` [3, h, w] in [0, 1]; `key` comes back with its result."""
        assert target.ndim == 3 and target.shape[0] == 3, target.shape
        check_target_size(tuple(target.shape[-2:]), self.G.resolution)
        size = target.shape[-1]
        if size not in self.downsamplers:
            self.downsamplers[size] = BicubicDownsample(self.G.resolution // size).to(self.device)
        frame = (lambda step, image: self.on_frame(key, step, image)) if self.on_frame is not None else None
        axes, bank = self._prepared(size)
        search = ImageSearch(self.G, target, seed, self.config, self.device, self.save_every, frame,
                             robust=self.robust, axes=axes, bank=bank)
        self.active.append((key, search))

    def _prepared(self, size: int) -> tuple[torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """Robust's principal axes and start bank for targets of this size (a Gaussian latent; None where
        unused): they depend on the generator, the size, the options and the thread count (rounding) alone,
        not on the batch, so they are made once per process (`_PREPARED`)."""
        options = self.robust
        if options is None or not (options.principal_axes or options.start_bank):
            return None, None
        made = _PREPARED.setdefault(self.G, {})
        key = (size, options.principal_axes, options.start_bank, str(self.device), torch.get_num_threads())
        if key not in made:
            down = self.downsamplers[size]
            axes = principal_axes(self.G, down, size, options.principal_axes) if options.principal_axes else None
            bank = start_bank(self.G, down, options.start_bank) if options.start_bank else None
            made[key] = (None if axes is None else axes.to(self.device), bank)
        return made[key]

    def step(self) -> None:
        run_step(self.G, [s for _, s in self.active], stats=self.stats, downsamplers=self.downsamplers,
                 terms=self.terms)

    def _finished(self, search: ImageSearch) -> bool:
        return search.done or (self.stop_at_eps and search.converged)

    def pop_finished(self) -> list[tuple[object, SearchResult]]:
        """The searches that finished with a result; those that failed (non-finite values) wait in
        `pop_failed`."""
        finished = [(key, s) for key, s in self.active if self._finished(s)]
        self.active = [(key, s) for key, s in self.active if not self._finished(s)]
        results = []
        for key, search in finished:
            try:
                results.append((key, search.result(self.G, self.stats)))
            except ValueError as exc:
                self._failed.append((key, str(exc)))
        return results

    def pop_failed(self) -> list[tuple[object, str]]:
        """The searches that finished without a result, with the one-line reason."""
        failed, self._failed = self._failed, []
        return failed

    def clear(self) -> list[object]:
        """Drop every active search (e.g. after a device error); returns their keys."""
        keys = [key for key, _ in self.active]
        self.active = []
        return keys


def pulse_search(G: Generator, targets: torch.Tensor, *, seeds: Sequence[int],
                 config: SearchConfig | None = None, device: torch.device | str = "cpu",
                 on_step: StepCallback | None = None, save_every: int | None = None,
                 on_frame: Callable[[int, int, torch.Tensor], None] | None = None,
                 stop_at_eps: bool = False, robust: RobustOptions | None = None) -> list[SearchResult]:
    """Run PULSE on a batch of targets [B, 3, h, w] in [0, 1]; one result per target, in order.

    `seeds[b]` fixes target b's random start. The generator's resolution must be a multiple of the
    targets' size. With `save_every=K`, `on_frame(b, step, image)` gets target b's iterate every K steps;
    with `stop_at_eps` a target stops at its first iterate that meets eps. No `config`: PULSE's defaults as
    they apply to G (`SearchConfig.for_latent`: a DCGAN's loss has no GEOCROSS).
    """
    assert targets.ndim == 4 and targets.shape[1] == 3, targets.shape
    assert len(seeds) == targets.shape[0], (len(seeds), targets.shape)
    pool = SearchPool(G, config=config, device=device, stop_at_eps=stop_at_eps, save_every=save_every,
                      on_frame=on_frame, robust=robust)
    for b, (target, seed) in enumerate(zip(targets, seeds, strict=True)):
        pool.add(b, target, seed)
    results: dict[object, SearchResult] = {}
    step = 0
    while len(pool):
        pool.step()
        if on_step is not None:
            on_step(step, [s for _, s in pool.active])
        results.update(pool.pop_finished())
        for b, reason in pool.pop_failed():
            raise RuntimeError(f"target {b}: {reason}")
        step += 1
    return [results[b] for b in range(len(seeds))]
