"""`/proc/PID/status` fields, and waiting on a running router, for the bench scripts beside this
file (backlog-open.py, connections.py)."""

from __future__ import annotations

import time


def status_kib(pid: int, key: str) -> int:
    """The `key` field (`VmRSS`, `VmHWM`, ...) of process `pid` in KiB; 0 when the process has
    exited. Raises when /proc cannot be read otherwise or lacks the field, so a measurement never
    passes as 0 on a machine without it."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    raise RuntimeError(f"/proc/{pid}/status has no {key} field")


def poll_until(proc, done, timeout: float, describe, error: type[Exception], interval: float = 0.01) -> None:
    """Polls `done()` every `interval` s until it holds; raises `error` naming `describe()` (the
    state reached) when process `proc` exits first or `timeout` s pass."""
    t_end = time.monotonic() + timeout
    while not done():
        if proc.poll() is not None:
            raise error(f"exited with code {proc.returncode}: {describe()}")
        if time.monotonic() > t_end:
            raise error(f"{describe()} after {timeout:g} s")
        time.sleep(interval)
