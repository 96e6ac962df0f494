"""Searches side by side: one engine's searches shared between this process and worker processes.

A small generator's step is thousands of small operations that two threads cannot share well, and on a busy
machine threads that wait for each other stall; one single-threaded search per core keeps every core busy
instead (see `pulse_cli.threads`). `Engine.searches` with several processes runs `side_by_side` here: this
process searches as always, and each worker searches the items it is handed.

How a worker starts: on Linux, with one thread per search, it is a fork of this process (in milliseconds,
sharing the loaded generator; as PyTorch's DataLoader workers, it runs one thread, which is what keeps OpenMP
usable after a fork); elsewhere, or with more threads, it is a fresh interpreter (`python -m
pulse_cli.worker_main`, a second or more to load torch) that reads its thread count and OpenMP's wait policy from
its environment and receives the generator, search options and batch size once. Either way it searches with
the same engine code as this process, so a search's result is bit for bit what this process gives with the
same threads and batch size, and sends back each step's progress, the frames asked for and each result. It
writes no file, holds no claim and never returns into the code that started it (it ends with `os._exit`):
whoever drives the engine (the runner) writes and records every result, so what a plain run guarantees (one
record per input, nothing half-written, claims, resuming) holds unchanged.

A worker ends when the engine's searching ends, and dies with this process (the parent-death signal on Linux;
elsewhere at its next message). A worker that dies has its searches started again in this process, once (same
seeds: the same results); one that dies again fails with the worker's last line of stderr.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lanes import Finished, FrameCallback, StepCallback, _Items, _LocalSearches, _Slot

# `auto`: a worker starts once the searches not yet started would keep this process busy at least this long
# (measured with bench/threads.py: a forked worker starts in milliseconds, a fresh interpreter in ~2 s).
WORKER_WORTH_SECONDS = 4.0
STOP_WAIT_SECONDS = 5.0  # for a worker to exit when asked, before it is killed
PROBE_INTERVAL_SECONDS = 10.0  # auto: how long after finding no free core for a worker to look again
# How workers start: "fork" where that is safe (Linux, one thread per search), else "spawn" (a fresh interpreter).
START = "fork" if sys.platform.startswith("linux") else "spawn"


def _send(conn: Any, message: object) -> None:
    # plain pickle, not multiprocessing's: tensors go by value, not through shared memory handles
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _receive(conn: Any) -> Any:
    # only ever from the other end of a socket pair this process made with its own worker
    return pickle.loads(conn.recv_bytes())


class _Remote:
    """A search in a worker as `on_step` sees it: its step count and its log lines so far."""

    def __init__(self) -> None:
        self.step = 0
        self.history: list[Any] = []


class WorkerProcess:
    """One worker: its process, its connection and the searches it holds (`in_flight`: id -> slot)."""

    def __init__(self, engine: Any, *, stop_at_eps: bool, save_every: int | None,
                 others: list[WorkerProcess], setup: Callable[[], bytes]):
        import socket
        import tempfile

        assert engine.threads_plan is not None
        threads = engine.threads_plan.threads
        self.ready = False
        self.dead = False
        self.fatal: str | None = None  # what the worker said before it gave up
        self.in_flight: dict[int, _Slot] = {}
        self.progress: dict[int, _Remote] = {}
        self.stderr = tempfile.TemporaryFile()
        ours, theirs = socket.socketpair()
        try:
            if START == "fork" and threads == 1:
                self.pid = self._fork(ours, theirs, engine, stop_at_eps, save_every, others)
            else:
                self.pid = self._spawn(theirs, threads, engine.threads_plan.auto, setup)
        except BaseException:
            ours.close()
            self.stderr.close()
            raise
        finally:
            theirs.close()
        from multiprocessing.connection import Connection

        self.conn = Connection(ours.detach())
        self.exit_status: int | None = None
        if START != "fork" or threads != 1:
            # the setup (the generator: megabytes) goes while the worker loads torch, without holding this
            # process up; nothing else is sent before the worker says it is ready
            import threading

            threading.Thread(target=self._send_setup, args=(setup(),), daemon=True).start()

    def _fork(self, ours: Any, theirs: Any, engine: Any, stop_at_eps: bool, save_every: int | None,
              others: list[WorkerProcess]) -> int:
        parent = os.getpid()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:  # the worker: it never returns into the code that started it
            import gc

            gc.freeze()  # what was garbage in the parent stays untouched here (no finalizer closes its files)
            _become_worker(parent, self.stderr.fileno())
            ours.close()
            for other in others:  # their connections are the parent's: a copy here would keep them open
                os.close(other.conn.fileno())
            from multiprocessing.connection import Connection

            code = serve(Connection(theirs.detach()), type(engine), engine.generator, config=engine.config,
                         batch_size=engine.batch_size, threads=1, stop_at_eps=stop_at_eps, save_every=save_every)
        except BaseException as exc:  # noqa: BLE001 - said on the worker's stderr, which the parent reads
            _say(exc)
        finally:
            os._exit(code)

    def _spawn(self, theirs: Any, threads: int, auto: bool, setup: Callable[[], bytes]) -> int:
        import subprocess

        from .threads import worker_environment

        env = worker_environment(threads, auto=auto)
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pulse_cli.worker_main", str(theirs.fileno()), str(os.getpid())],
            pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.stderr)
        return self.process.pid

    def _send_setup(self, setup: bytes) -> None:
        try:
            self.conn.send_bytes(setup)
        except (OSError, ValueError):  # the worker died, or was stopped: found by the receiving side
            pass

    def room(self, batch_size: int) -> bool:
        return self.ready and not self.dead and len(self.in_flight) < batch_size

    def start_search(self, search_id: int, slot: _Slot) -> None:
        self.in_flight[search_id] = slot
        self.progress[search_id] = _Remote()
        _send(self.conn, ("search", search_id, slot.target.cpu(), slot.seed))

    def _wait(self, block: bool) -> int | None:
        """The exit status once the worker has ended (reaped), else None."""
        if self.exit_status is None:
            try:
                pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return -1
            if pid:
                self.exit_status = os.waitstatus_to_exitcode(status)
                if hasattr(self, "process"):  # reaped here: its Popen must not wait for it again
                    self.process.returncode = self.exit_status
        return self.exit_status

    def last_words(self) -> str:
        """What the worker said as it gave up, its last line on stderr, or how it ended."""
        if self.fatal:
            return self.fatal
        try:
            self.stderr.seek(0, os.SEEK_END)
            self.stderr.seek(max(0, self.stderr.tell() - 4096))
            lines = [line for line in self.stderr.read().decode(errors="replace").splitlines() if line.strip()]
        except (OSError, ValueError):
            lines = []
        if lines:
            return lines[-1].strip()
        deadline = time.monotonic() + 1.0
        while (code := self._wait(False)) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if code is None:
            return "connection lost"
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"

    def stop(self) -> None:
        """Let the worker go (it exits when told, or when its connection closes); killed if it does not."""
        if not self.dead:
            self.dead = True
            try:
                _send(self.conn, ("stop",))
            except (OSError, ValueError):
                pass
        try:
            self.conn.close()
        except OSError:
            pass
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        try:
            while self._wait(False) is None and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:  # not gone in time, or this process is being interrupted: it must not outlive the run
            if self._wait(False) is None:
                try:
                    os.kill(self.pid, 9)
                except ProcessLookupError:
                    pass
                self._wait(True)
            self.stderr.close()


def side_by_side(engine: Any, local: _LocalSearches, source: _Items, *, total: int | None, stop_at_eps: bool,
                 save_every: int | None, on_step: StepCallback | None, on_frame: FrameCallback | None
                 ) -> Iterator[Finished]:
    """`Engine.searches` with worker processes: see the module's docstring."""
    from multiprocessing.connection import wait

    from .lanes import WAIT_FOR_ITEMS
    from .threads import free_cores

    plan = engine.threads_plan
    assert plan is not None
    workers: list[WorkerProcess] = []
    unstarted: deque[_Slot] = deque()  # drawn from the items, not yet handed to anyone
    pickled: list[bytes] = []
    gave_up = False  # a worker died: no more are started
    probe_after = [0.0]  # when the machine was too busy for another process: when to look again
    ids = iter(range(1 << 62))

    def setup() -> bytes:  # what a fresh interpreter needs, made once
        if not pickled:
            pickled.append(pickle.dumps({"generator": engine.generator, "config": engine.config,
                                         "batch_size": engine.batch_size, "threads": plan.threads,
                                         "stop_at_eps": stop_at_eps, "save_every": save_every},
                                        protocol=pickle.HIGHEST_PROTOCOL))
        return pickled[0]

    def next_slot() -> _Slot | None:
        return unstarted.popleft() if unstarted else source.draw()

    def worth_a_worker() -> bool:
        if gave_up or len(workers) + 1 >= plan.processes:
            return False
        # after this process's first step (a fork then inherits what it loaded and set up); with auto, once
        # it is known how long a step takes
        if not local.warmed_up or (plan.auto and len(local.step_seconds) < 2):
            return False
        if not unstarted:  # is there anything to hand over? (the items' count may be unknown)
            slot = source.draw()
            if slot is None:
                return False
            unstarted.append(slot)
        if not plan.auto:
            return True
        not_drawn = max(0, total - source.drawn) if total is not None else 0
        step = sum(local.step_seconds) / len(local.step_seconds)
        if (len(unstarted) + not_drawn) * engine.config.steps * step < WORKER_WORTH_SECONDS:
            return False
        # a core for it: on a busy machine a second process only shares this one's (measured, bench/threads.py)
        if time.monotonic() < probe_after[0]:
            return False
        if free_cores(plan.processes, ours=[w.pid for w in workers]) >= len(workers) + 2:
            return True
        probe_after[0] = time.monotonic() + PROBE_INTERVAL_SECONDS
        return False

    def died(worker: WorkerProcess) -> Iterator[Finished]:
        nonlocal gave_up
        reason = worker.last_words()
        worker.stop()
        workers.remove(worker)
        gave_up = True
        if engine.notify is not None:
            engine.notify(f"a search process died ({reason}); its searches start again in this one")
        for slot in worker.in_flight.values():
            if slot.retried:
                yield _finished(slot, None, f"the search process died twice on it ({reason})", slot.seconds, None)
            else:
                slot.retried = True
                slot.seconds = 0.0
                local.retry.append(slot)

    def receive(timeout: float | None) -> Iterator[Finished]:
        by_conn = {worker.conn: worker for worker in workers}
        for conn in wait(list(by_conn), timeout):
            worker = by_conn[conn]
            while True:  # every message there is now
                try:
                    message = _receive(conn)
                except (EOFError, OSError, pickle.UnpicklingError):
                    message = ("fatal", None)
                if message[0] == "fatal":
                    worker.fatal = message[1]
                    yield from died(worker)
                    break
                yield from _handle(worker, message, on_step, on_frame)
                if not conn.poll():
                    break

    try:
        while True:
            yield from local.fill(next_slot)
            for worker in list(workers):
                while worker.room(engine.batch_size):
                    slot = next_slot()
                    if slot is None:
                        break
                    try:
                        worker.start_search(next(ids), slot)
                    except OSError:
                        yield from died(worker)
            if worth_a_worker():
                try:
                    workers.append(WorkerProcess(engine, stop_at_eps=stop_at_eps, save_every=save_every,
                                                 others=workers, setup=setup))
                except (OSError, ValueError) as exc:  # no process can be started here: this one goes on alone
                    gave_up = True
                    if engine.notify is not None:
                        engine.notify(f"cannot start a search process ({exc}); searching in this one")
                else:
                    if engine.notify is not None:
                        engine.notify(f"searching side by side: {len(workers) + 1} processes, "
                                      f"{plan.threads} thread(s) each")
            if len(local.pool):
                yield from local.step()
                yield from receive(0)
            elif any(worker.in_flight for worker in workers):
                yield from receive(WAIT_FOR_ITEMS if source.waiting else None)
            elif local.retry or unstarted:
                continue
            elif source.exhausted:
                return
            elif source.waiting:
                time.sleep(WAIT_FOR_ITEMS)
    finally:
        for worker in workers:
            worker.stop()


def _finished(slot: _Slot, result: Any, error: str | None, seconds: float, threads: int | None) -> Finished:
    from .lanes import Finished

    return Finished(slot.key, result, error, seconds, threads)


def _handle(worker: WorkerProcess, message: tuple, on_step: StepCallback | None,
            on_frame: FrameCallback | None) -> Iterator[Finished]:
    kind = message[0]
    if kind == "ready":
        worker.ready = True
    elif kind == "step":
        stepped = []
        for search_id, step, line in message[1]:
            remote = worker.progress[search_id]
            remote.step = step
            remote.history.append(line)
            stepped.append(remote)
        if on_step is not None:
            on_step(stepped)  # type: ignore[arg-type]
    elif kind == "frame":
        _, search_id, step, image = message
        if on_frame is not None:
            on_frame(worker.in_flight[search_id].key, step, image)
    elif kind == "done":
        _, search_id, result, error, seconds, threads = message
        slot = worker.in_flight.pop(search_id)
        worker.progress.pop(search_id, None)
        yield _finished(slot, result, error, seconds, threads)


# -- the worker's side -------------------------------------------------------------------------------------------


def _become_worker(parent: int, stderr: int | None = None) -> None:
    """Signals and streams of a worker: Ctrl-C is the parent's to handle (it stops the workers), SIGTERM ends it
    plainly, its stderr goes where the parent reads it, and it dies with the parent (Linux: the parent-death
    signal)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if stderr is not None:
        os.dup2(stderr, 2)
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before the signal was asked for
        os._exit(0)


def _say(exc: BaseException) -> None:
    """One line on the worker's stderr (straight to the file: no lock of a stream copied from the parent)."""
    os.write(2, f"{type(exc).__name__}: {exc}".splitlines()[0].encode(errors="replace") + b"\n")


class _Requests:
    """The items a worker is handed, drawn as `Engine.searches` draws its own: waiting for one only when the
    worker has nothing to search."""

    def __init__(self, conn: Any, idle: Callable[[], bool]):
        self.conn, self.idle = conn, idle
        self.exhausted = False
        self.waiting = False
        self.drawn = 0

    def draw(self) -> _Slot | None:
        from .lanes import _Slot

        if self.exhausted or (not self.idle() and not self.conn.poll()):
            return None
        try:
            message = _receive(self.conn)
        except (EOFError, OSError):  # the parent died
            message = ("stop",)
        if message[0] != "search":
            self.exhausted = True
            return None
        _, search_id, target, seed = message
        self.drawn += 1
        return _Slot(search_id, target, seed)


def serve(conn: Any, engine_class: type, generator: Any, *, config: Any, batch_size: int, threads: int,
          stop_at_eps: bool, save_every: int | None) -> int:
    """A worker's searches: the items it is handed, with an engine of its own (an `engine_class`, that is
    `pulse_cli.engine.Engine`, passed in so that this module does not import the engine that imports it);
    0 when told to stop."""
    import torch

    from .device import configure_cpu_allocator
    from .lanes import _LocalSearches

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # a fork of a process that used them: it does not use them here either
        pass
    configure_cpu_allocator()
    engine = engine_class(generator, device="cpu", config=config, batch_size=batch_size, threads=threads)

    def on_step(searches: list) -> None:
        keys = {id(search): slot.key for slot, search in lane.pool.active}
        _send(conn, ("step", [(keys[id(s)], s.step, s.history[-1]) for s in searches if s.history]))

    def on_frame(search_id: object, step: int, image: torch.Tensor) -> None:
        _send(conn, ("frame", search_id, step, image))

    lane = _LocalSearches(engine, stop_at_eps=stop_at_eps, save_every=save_every, on_step=on_step,
                          on_frame=on_frame if save_every else None)
    requests = _Requests(conn, idle=lambda: not lane.busy)
    _send(conn, ("ready", os.getpid()))
    try:
        with engine._restoring_threads():
            while True:
                for done in lane.fill(requests.draw):
                    _send(conn, ("done", done.key, done.result, done.error, done.seconds, done.threads))
                if not lane.busy:
                    if requests.exhausted:
                        return 0
                    continue
                for done in lane.step():
                    _send(conn, ("done", done.key, done.result, done.error, done.seconds, done.threads))
    except (BrokenPipeError, ConnectionResetError):  # the parent stopped listening: nothing is owed to anyone
        return 0
