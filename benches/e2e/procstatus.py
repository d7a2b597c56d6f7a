"""`/proc/PID/status` fields for the bench scripts beside this file (backlog-open.py, connections.py)."""

from __future__ import annotations


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
