"""One process's share of an engine's searches: the pool it steps and the items it draws.

`Engine.searches` runs a `_LocalSearches` in its own process; a worker process (`pulse_cli.workers`) runs
another, with an engine of its own. Both take their items as `_Slot`s and give back `Finished` searches. This
module knows an engine only by what it uses of one (its generator, options, device, batch size, notices and
thread choice), so that the engine and its workers both build on it and neither on the other.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import first_line
from .search.pulse import ImageSearch, SearchPool, SearchResult

WAIT_FOR_ITEMS = 0.5  # seconds between asks when the items have nothing ready and no search is active


@dataclass
class Finished:
    """One search out of `Engine.searches`: its result, or the one-line reason it failed."""

    key: object
    result: SearchResult | None
    error: str | None
    seconds: float  # this search's share of the pool's step times
    threads: int | None = None  # the torch threads it ran with (its float rounding may depend on them)


@dataclass(eq=False)
class _Slot:
    key: object
    target: torch.Tensor
    seed: int
    seconds: float = 0.0
    retried: bool = False  # started again once already (its worker process died)
    threads: int | None = None  # set as it starts


StepCallback = Callable[[Sequence[ImageSearch]], None]
FrameCallback = Callable[[object, int, torch.Tensor], None]


def _out_of_memory(exc: BaseException) -> bool:
    # CUDA raises torch.OutOfMemoryError; MPS and some allocators a RuntimeError that says so.
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _release_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


class _Items:
    """The items of `Engine.searches`, drawn one at a time: `draw()` gives a slot, or None when nothing is
    ready now (`waiting`) or nothing is left (`exhausted`)."""

    def __init__(self, items: Iterable[tuple[object, torch.Tensor, int] | None]):
        self._pending = iter(items)
        self.exhausted = False
        self.waiting = False
        self.drawn = 0

    def draw(self) -> _Slot | None:
        self.waiting = False
        if self.exhausted:
            return None
        try:
            item = next(self._pending)
        except StopIteration:
            self.exhausted = True
            return None
        if item is None:
            self.waiting = True
            return None
        self.drawn += 1
        return _Slot(*item)


class _LocalSearches:
    """The searches of this process: one pool, filled up to the engine's batch size, stepped one step at a time.
    Searches of a batch that ran out of device memory start again (`retry`) before new items are drawn."""

    def __init__(self, engine: Any, *, stop_at_eps: bool, save_every: int | None,
                 on_step: StepCallback | None, on_frame: FrameCallback | None):
        self.engine = engine
        self.on_step = on_step
        self.pool = SearchPool(engine.generator, config=engine.config, device=engine.device, stop_at_eps=stop_at_eps,
                               save_every=save_every,
                               on_frame=(lambda slot, step, image: on_frame(slot.key, step, image)) if on_frame
                               else None)
        self.retry: deque[_Slot] = deque()  # searches to start again (out of memory, or their worker died)
        self.threads: int | None = None  # of the searches in the pool: chosen when one starts in an empty pool
        self.step_seconds: deque[float] = deque(maxlen=8)  # the latest steps' wall time, per search in them
        self.warmed_up = False  # a step was taken (the first, which warms up, is not counted)

    @property
    def busy(self) -> bool:
        return bool(len(self.pool) or self.retry)

    @property
    def room(self) -> bool:
        return len(self.pool) < self.engine.batch_size

    def fill(self, draw: Callable[[], _Slot | None]) -> Iterator[Finished]:
        """Take searches up to the batch size, those to retry first, then what `draw` gives until it gives None;
        yields those that cannot start."""
        while self.room:
            slot = self.retry.popleft() if self.retry else draw()
            if slot is None:
                return
            yield from self.add(slot)

    def add(self, slot: _Slot) -> Iterator[Finished]:
        if not len(self.pool):  # a search's thread count never changes while it runs
            self.threads = self.engine._threads_for_a_search()
        slot.threads = self.threads
        try:
            self.pool.add(slot, slot.target, slot.seed)
        except ValueError as exc:
            yield Finished(slot.key, None, first_line(exc), 0.0, slot.threads)

    def step(self) -> Iterator[Finished]:
        """One step of the pool; yields the searches that finished or failed with it."""
        engine, pool = self.engine, self.pool
        if not len(pool):
            return
        started = time.monotonic()
        try:
            pool.step()
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                yield from fail_all(pool, f"search failed on {engine.device}: {first_line(exc)}")
                return
            size = len(pool)
            slots = pool.clear()
            _release_cached_memory(engine.device)
            if size == 1:
                yield Finished(slots[0].key, None, f"out of memory on {engine.device} even for one image; "
                                                   f"try --device cpu", slots[0].seconds, slots[0].threads)
                return
            engine.batch_size = max(1, size // 2)
            if engine.notify is not None:
                engine.notify(f"out of memory on {engine.device} with a batch of {size}: continuing with "
                              f"batches of {engine.batch_size}")
            self.retry.extendleft(reversed(slots))
            return
        share = (time.monotonic() - started) / len(pool)
        if self.warmed_up:
            self.step_seconds.append(share)
        self.warmed_up = True
        for slot, _ in pool.active:
            slot.seconds += share
        if self.on_step is not None:
            self.on_step([search for _, search in pool.active])
        for slot, result in pool.pop_finished():
            yield Finished(slot.key, result, None, slot.seconds, slot.threads)
        for slot, reason in pool.pop_failed():  # non-finite values: that search alone fails
            yield Finished(slot.key, None, reason, slot.seconds, slot.threads)


def fail_all(pool: SearchPool, reason: str) -> Iterator[Finished]:
    """Every search of `pool` ends, failed for `reason`."""
    for slot in pool.clear():
        yield Finished(slot.key, None, reason, slot.seconds, slot.threads)
