"""One engine: a generator loaded once, ready for PULSE searches and renders.

Built from a checkpoint (any supported format, or a folder holding one), a device and the search options,
an `Engine` owns the generator, its latent statistics, the evaluation path and the batch size, and runs
searches through one pool: as a search finishes, the next input takes its place. `pulse upsample`,
`pulse render` and notebooks hold one; scripts are loops around it.

    engine = Engine.load("weights/pulse", device="cpu", config=SearchConfig(steps=100))
    [result] = engine.search(target[None], seeds=[0])
    again = engine.render(result.ws, result.noise)  # equals result.image, bit for bit
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch

from . import threads as _threads
from .checkpoints.loading import load_generator as _load_generator
from .device import auto_batch_size, configure_cpu_allocator, resolve_device
from .lanes import WAIT_FOR_ITEMS, Finished, FrameCallback, StepCallback, _Items, _LocalSearches
from .networks.generator import Generator
from .search.pulse import SearchConfig, SearchResult, render
from .threads import ThreadPlan, Threads, parse_threads, plan_threads
from .weights.local import family_from_name
from .weights.locations import cache_dir as default_cache_dir

Synthesis = Literal["auto", "fast", "reference"]
# "auto": the fast evaluation where it has been verified, which is only the CPU (no GPU was available to
# verify CUDA or MPS against the reference path).
_FAST = {"auto": None, "fast": True, "reference": False}


def load_generator(path: str | Path, device: str | torch.device = "cpu", *,
                   gaussian_fit: str | Path | None = None, cache_dir: str | Path | None = None,
                   notify: Callable[[str], None] | None = None, fast: bool | None = None) -> Generator:
    """A generator ready for the latent search (weights frozen, latent statistics attached).

    `path` is any supported checkpoint or a folder holding one. Statistics computed from the mapping
    network are cached in `cache_dir` (default: the user cache, or `PULSE_HOME`). `fast`: the generator's
    fast evaluation where it has one (None: where verified, i.e. on the CPU).
    """
    return _load_generator(path, device, gaussian_fit=gaussian_fit,
                           cache_dir=cache_dir if cache_dir is not None else default_cache_dir(),
                           notify=notify, fast=fast, name_family=family_from_name)


class Engine:
    """A generator on a device, with the search options and batch size every search uses."""

    def __init__(self, generator: Generator, *, device: str | torch.device | None = None,
                 config: SearchConfig | None = None, batch_size: int = 1, batch_size_auto: bool = False,
                 notify: Callable[[str], None] | None = None, threads: Threads | None = None,
                 processes: int | None = None):
        """Wrap a loaded generator (see `Engine.load` to read a checkpoint). Searching needs its latent
        statistics (`generator.latent_stats`); rendering does not. No `config`: PULSE's defaults as they
        apply to this generator (`SearchConfig.for_latent`: a DCGAN's loss has no GEOCROSS).

        `threads`: torch threads while this engine searches (None: the process's setting, as it is); `auto`
        chooses them from the generator's size and the machine, and on a CPU may search small generators'
        inputs side by side in worker processes (see `pulse_cli.threads`). `processes`: that many searching
        processes on a CPU (this one and `processes - 1` workers, each with `threads` threads), started once
        this one has taken a step and there is work for them. A search's result is the same in any of them:
        that of a plain engine with the same threads and batch size.

        ValueError with a one-line reason for options this generator cannot use (e.g. noise layers).
        """
        if config is None:
            config = SearchConfig().for_latent(generator.latent_kind)
        config.validate()
        config.check_generator(len(generator.noise_shapes(1)), generator.latent_kind)
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.device = torch.device(device) if device is not None else generator.device
        self.generator = generator.to(self.device)
        self.config = config
        self.batch_size = batch_size
        self.batch_size_auto = batch_size_auto
        self.notify = notify  # told when the batch size has to shrink, and when worker processes start
        self.threads_plan = self._plan(threads, processes)

    def _plan(self, threads: Threads | None, processes: int | None) -> ThreadPlan | None:
        if processes is not None and (not isinstance(processes, int) or isinstance(processes, bool)
                                      or processes < 1):
            raise ValueError(f"processes must be a whole number of at least 1, got {processes!r}")
        if processes not in (None, 1) and self.device.type != "cpu":
            raise ValueError(f"searches side by side in processes run on the CPU, not on {self.device}")
        if threads is None:
            if processes not in (None, 1):
                raise ValueError("processes side by side need a thread count (threads=N or 'auto')")
            return None
        plan = plan_threads(threads, device_type=self.device.type, resolution=self.generator.resolution)
        if processes is not None:
            plan = ThreadPlan(plan.threads, processes)
        return plan

    def _threads_for_a_search(self) -> int:
        """The torch threads of the next search (set here; each result records its own): the plan's, as many as
        cores are free for an adaptive plan, or the process's own setting without a plan."""
        plan = self.threads_plan
        if plan is None:
            return torch.get_num_threads()
        torch.set_num_threads(_threads.free_cores(plan.threads) if plan.adaptive else plan.threads)
        return torch.get_num_threads()

    @classmethod
    def load(cls, checkpoint: str | Path, device: str | torch.device = "auto", *,
             config: SearchConfig | None = None, synthesis: Synthesis = "auto",
             batch_size: int | Literal["auto"] = "auto", gaussian_fit: str | Path | None = None,
             cache_dir: str | Path | None = None, notify: Callable[[str], None] | None = None,
             threads: Threads | None = "auto", processes: int | None = None) -> Engine:
        """Load a checkpoint once. Every option is checked before the weights are read; ValueError
        (CheckpointError for the file itself) with a one-line reason otherwise. No `config`: the defaults as
        they apply to the generator; `threads` and `processes`: see `Engine`."""
        if config is not None:
            config.validate()
        if threads is not None:
            parse_threads(threads)
        if synthesis not in _FAST:
            raise ValueError(f"unknown synthesis path {synthesis!r}; use auto, fast or reference")
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch size must be a whole number of at least 1 or 'auto', got {batch_size!r}")
        torch_device = device if isinstance(device, torch.device) else resolve_device(device)
        if torch_device.type == "cpu":
            configure_cpu_allocator()
        generator = load_generator(checkpoint, torch_device, gaussian_fit=gaussian_fit, cache_dir=cache_dir,
                                   notify=notify, fast=_FAST[synthesis])
        auto = batch_size == "auto"
        size = auto_batch_size(torch_device, family=generator.family, resolution=generator.resolution) \
            if auto else batch_size
        return cls(generator, device=torch_device, config=config, batch_size=size, batch_size_auto=auto,
                   notify=notify, threads=threads, processes=processes)

    # -- what it is -----------------------------------------------------------------------------

    @property
    def checkpoint(self) -> str | None:
        """The checkpoint file the generator came from (None for a generator built in memory)."""
        return self.generator.source

    @property
    def checkpoint_sha256(self) -> str | None:
        return self.generator.source_sha256

    @property
    def latent_stats_origin(self) -> str | None:
        """Where the latent statistics came from ("in the file", "cached", "computed", ...)."""
        return self.generator.latent_stats_origin

    @property
    def synthesis_path(self) -> str:
        """"fast" or "reference": how the generator is evaluated (recorded so renders match)."""
        return self.generator.synthesis_path

    @property
    def resolution(self) -> int:
        return self.generator.resolution

    # -- searching ------------------------------------------------------------------------------

    def searches(self, items: Iterable[tuple[object, torch.Tensor, int] | None], *, stop_at_eps: bool = False,
                 save_every: int | None = None, on_step: StepCallback | None = None,
                 on_frame: FrameCallback | None = None, total: int | None = None) -> Iterator[Finished]:
        """Search every `(key, target [3, h, w] in [0, 1], seed)`, at most `batch_size` at a time, and yield
        each as it finishes.

        Items are drawn lazily, so a long list costs nothing until its turn; an item may be None, meaning
        nothing is ready yet (the active searches go on, or, with none, the engine waits briefly and asks
        again). A target the generator cannot
        use fails alone. When a step runs out of device memory, the batch is split: its searches start
        again (same seeds, so the same results) in batches of half the size, and `batch_size` stays
        reduced; only a search that does not fit alone fails, with a one-line reason. Another device
        error fails that batch's searches and the rest go on. `on_step` sees the searches that just took a
        step, after every step of every searching process (this process's as `ImageSearch` objects, a
        worker's as objects with their `step` and `history`); with `save_every=K`, `on_frame(key, step,
        image)` gets every K-th iterate's image as it is made (nothing is kept). Each `Finished` says the
        torch threads its search ran with.

        With several processes (see `Engine`), worker processes search some items side by side with this one
        (`pulse_cli.workers`); `total` (how many items there are, when known) lets `auto` start them only when
        the work pays for their start-up. A worker that dies has its searches started again here (same seeds,
        same results).
        """
        local = _LocalSearches(self, stop_at_eps=stop_at_eps, save_every=save_every, on_step=on_step,
                               on_frame=on_frame)
        source = _Items(items)
        with self._restoring_threads():
            plan = self.threads_plan
            if plan is not None and plan.processes > 1 and self.device.type == "cpu":
                from .workers import side_by_side

                yield from side_by_side(self, local, source, total=total, stop_at_eps=stop_at_eps,
                                        save_every=save_every, on_step=on_step, on_frame=on_frame)
                return
            while True:
                yield from local.fill(source.draw)
                if not local.busy:
                    if source.exhausted:
                        return
                    if source.waiting:
                        time.sleep(WAIT_FOR_ITEMS)
                    continue
                yield from local.step()

    @contextmanager
    def _restoring_threads(self) -> Iterator[None]:
        """The process's own torch threads back afterwards (while searching, each search sets its threads as it
        starts: `_threads_for_a_search`; a render, those of the search it repeats)."""
        previous = torch.get_num_threads()
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def search(self, targets: torch.Tensor, seeds: Sequence[int], *, stop_at_eps: bool = False) -> list[SearchResult]:
        """PULSE on targets [B, 3, h, w] in [0, 1], `seeds[b]` fixing target b's start; results in order.

        Raises RuntimeError (with the reason) if a search fails. Batch-mates and order do not change a
        result (bit for bit within one batch size; other batch sizes round differently, so only the first
        step is equal to float rounding).
        """
        assert targets.ndim == 4 and targets.shape[1] == 3, targets.shape
        assert len(seeds) == targets.shape[0], (len(seeds), targets.shape)
        results: dict[object, SearchResult] = {}
        for done in self.searches(zip(range(len(seeds)), targets, seeds, strict=True), stop_at_eps=stop_at_eps,
                                  total=len(seeds)):
            if done.result is None:
                raise RuntimeError(f"target {done.key}: {done.error}")
            results[done.key] = done.result
        return [results[b] for b in range(len(seeds))]

    # -- rendering ------------------------------------------------------------------------------

    def render(self, ws: torch.Tensor, noise: Sequence[torch.Tensor], *, threads: int | None = None) -> torch.Tensor:
        """The image [3, R, R] in [0, 1] for one result's W+ latents [num_ws, w_dim] and noise ([1, r, r]
        per layer), rendered alone as the search renders its results: bit for bit on the same device, with the
        torch threads its search ran with (a thread count may round differently). `threads`: that count (its
        `Finished.threads`, or `threads` in its record); default: the engine's (`threads=N`, or what `auto` gives
        every search of a small generator), else the process's own."""
        G = self.generator
        shapes = G.noise_shapes(1)
        if tuple(ws.shape) != (G.num_ws, G.w_dim):
            raise ValueError(f"latents are {tuple(ws.shape)}, this generator takes {G.num_ws}x{G.w_dim}")
        if len(noise) != len(shapes) or any(tuple(n.shape) != s[1:] for n, s in zip(noise, shapes, strict=False)):
            raise ValueError(f"noise does not fit this generator ({len(shapes)} layers, "
                             f"{'/'.join(str(s[-1]) for s in shapes)} px)")
        if threads is None and self.threads_plan is not None and not self.threads_plan.adaptive:
            threads = self.threads_plan.threads
        with self._restoring_threads():
            if threads is not None:
                torch.set_num_threads(threads)
            image = render(G, ws[None].to(self.device), [n[None].to(self.device) for n in noise])
        return image[0]
