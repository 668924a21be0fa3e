"""A sweep that is stopped or killed leaves nothing running (issue 32).

- `stop_on_sigterm()`: SIGTERM (`kill`, a scheduler's stop) ends the sweep as Ctrl-C does, through its `finally`
  blocks, so local workers are terminated and Ray tasks cancelled on the way out.
- `die_with_driver(driver)`: a Ray task exits within half a second of the sweep process that submitted it (on the
  same host), so no run goes on (and finishes) after its sweep was killed.
- `RayReaper`: a local Ray instance started by a sweep dies with it. Ray's head processes share the sweep's fate,
  but its agents (DashboardAgent, RuntimeEnvAgent) and task workers outlive a SIGKILLed driver; a small process of
  its own watches the sweep (a pipe that closes when the sweep ends, however it ends) and then kills every Ray
  process the sweep had started (`python -m rankwise.stopping PID`).

Local worker processes die with their sweep through PR_SET_PDEATHSIG and a parent watch (sweep._die_with_parent).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator

POLL_S = 0.5


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """While the block runs (in the main thread), SIGTERM raises SystemExit(143) instead of ending the process at
    once, so the sweep's `finally` blocks stop its workers and tasks."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    global _handler
    previous, _handler = signal.signal(signal.SIGTERM, _stop), _stop
    _received.clear()
    try:
        yield
    except BaseException:
        if _received:  # Ray turns the handler's SystemExit into SystemExit(1) inside ray.wait: say it was SIGTERM
            raise SystemExit(128 + _received[0]) from None
        raise
    finally:
        _handler = None
        signal.signal(signal.SIGTERM, previous)


_received: list[int] = []


def _stop(signum, _frame):
    _received.append(signum)
    raise SystemExit(128 + signum)


_handler = None  # stop_on_sigterm's, while its block runs


def claim_sigterm() -> None:
    """Inside `stop_on_sigterm`: take SIGTERM back from a library that set its own C handler meanwhile (ray.init
    installs one that aborts the process, which would skip every `finally`)."""
    if _handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _handler)


def driver_identity() -> tuple[str, int, float]:
    """(host, pid, start time) of this process, for `die_with_driver` in the tasks it submits."""
    import psutil

    return socket.gethostname(), os.getpid(), psutil.Process().create_time()


_watched: set[tuple] = set()  # drivers this (Ray worker) process already watches: Ray reuses its workers


def die_with_driver(driver: tuple[str, int, float] | None) -> None:
    """In a Ray task: exit this worker process once the sweep process `driver` is gone. Only on the driver's host
    (elsewhere Ray ends a dead driver's tasks itself)."""
    if driver is None or driver[0] != socket.gethostname() or tuple(driver) in _watched:
        return
    _watched.add(tuple(driver))
    import psutil

    def watch() -> None:
        while True:
            time.sleep(POLL_S)
            try:
                alive = psutil.Process(driver[1]).create_time() == driver[2]
            except psutil.NoSuchProcess:
                alive = False
            if not alive:
                os._exit(1)  # the run's lock is released with the process; its files are written atomically

    threading.Thread(target=watch, daemon=True, name="rankwise-driver-watch").start()


class RayReaper:
    """Kills what is left of the local Ray instance this process started once it ends (see the module docstring).
    `close()` after `ray.shutdown()`: the normal end, when there is usually nothing left to kill."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-m", "rankwise.stopping", str(os.getpid())],
                                        stdin=subprocess.PIPE, start_new_session=True)  # not in the sweep's group

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _ray_descendants(root, seen: dict[int, float]) -> None:
    """Add every Ray process below `root` (pid -> start time) to `seen`; the reaper itself is not one."""
    import psutil

    for child in root.children(recursive=True):
        try:
            if child.pid != os.getpid() and "ray" in " ".join(child.cmdline()):
                seen[child.pid] = child.create_time()
        except psutil.Error:
            continue


def reap(driver_pid: int) -> None:
    """The reaper's loop: note the driver's Ray processes every POLL_S while its pipe (our stdin) is open, then kill
    the ones still alive (the same processes: pid and start time match) and whatever they started since."""
    import psutil

    seen: dict[int, float] = {}
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return
    while True:
        with contextlib.suppress(psutil.Error):
            _ray_descendants(driver, seen)
        if select.select([sys.stdin], [], [], POLL_S)[0] and not os.read(sys.stdin.fileno(), 1):
            break  # EOF: the sweep closed the pipe or died
    alive = []
    for pid, started in seen.items():
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if process.create_time() == started:
                alive.append(process)
    for process in list(alive):
        with contextlib.suppress(psutil.Error):
            alive += [p for p in process.children(recursive=True) if "ray" in " ".join(p.cmdline())]
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()  # Ray's agents ignore SIGTERM
    psutil.wait_procs(alive, timeout=5)


if __name__ == "__main__":
    reap(int(sys.argv[1]))
