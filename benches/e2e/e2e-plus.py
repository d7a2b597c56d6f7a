#!/usr/bin/env python3
"""The e2e harness (../shared/bench/e2e.py) with fan-out output, count-only checks and the sender's CPU.

    e2e-plus.py [--copies K] [--count-only LABEL]... [--prestart] [e2e.py options and routers ...]

Loads e2e.py (from $E2E_HARNESS, else ../../../shared/bench/e2e.py from this file) and runs its own
main() with the rest of the command line: same sender, interleaving, clock, process-tree CPU and
RSS accounting and verification, with these changes:

- `--copies K` (default 1: unchanged): the router writes K copies of the input, one per
  subdirectory of `{outdir}` (a fan-out: flumen's `fanout-mem.ron` writes `k1/` ... `k4/`, the peer
  configs in `peers/*-fanout.conf` write `o1/out.log` ... `o4/out.log`). While the clock runs, the
  output's size and its line count are those of the *smallest* of the K subdirectories (0 while
  fewer than K exist), so the clock stops when the last copy is complete; the verification checks
  each subdirectory on its own against the input (every line exactly once per subdirectory, so
  exactly K times in all) and fails on a file directly under `{outdir}` or a number of
  subdirectories other than K. The JSON's `verify` has one entry per subdirectory in `outputs`.
- `--count-only LABEL` (repeatable): for that router the verification checks only that the output
  holds exactly the payload's bytes and N LFs, not which lines. For `socat` with more than one
  connection: its forked copies append each `read()` as it comes, so lines of different
  connections interleave mid-line and no longer equal input lines, while no byte is lost.
- Every run records the sender's CPU seconds (`sender_cpu_s`, user+sys of the `e2e.py --sender`
  child from "go" to its exit, sampled from /proc every 20 ms; the sender is idle after the last
  byte, waiting for the router to close) and prints it; the JSON summary rows get its median
  (`sender_cpu_s`) and the median of the router's CPU per wall second (`router_cpu_per_wall`).
  With C connections the sender is one process with C threads each in `sendfile()`; on loopback
  the sender's CPU includes the kernel's TCP work of both ends of the transfer, part of it done in
  the sender's context.
- `--prestart`: the sender (this file run as `--sender-prestart`, otherwise e2e.py's own sender
  line for line) creates and starts its 2 × C threads (one sending, one reading back per
  connection) *before* it reports ready; "go" releases them all at once. e2e.py's sender starts
  them after "go", inside the clock: with 1,000 connections that is 2,000 thread starts timed as
  the router's. Same connections, same `sendfile()` per connection, same half-close and drain.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = Path(os.environ.get("E2E_HARNESS", HERE.parents[2] / "shared" / "bench" / "e2e.py"))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def load_harness():
    """e2e.py as the module `e2e` (so that latency.py-style imports see the same one)."""
    if "e2e" in sys.modules:
        return sys.modules["e2e"]
    spec = importlib.util.spec_from_file_location("e2e", HARNESS)
    e2e = importlib.util.module_from_spec(spec)
    sys.modules["e2e"] = e2e
    spec.loader.exec_module(e2e)
    return e2e


def cpu_s(pid: int) -> float | None:
    """user+sys seconds of one process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class SenderWatch:
    """The sender's CPU: a snapshot when the harness writes "go", the last value seen before it
    exited."""

    current: "SenderWatch | None" = None

    def __init__(self, pid: int):
        self.pid = pid
        self.at_go: float | None = None
        self.last: float | None = cpu_s(pid)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while (v := cpu_s(self.pid)) is not None:
            self.last = v
            time.sleep(0.02)

    def go(self) -> None:
        self.at_go = cpu_s(self.pid)

    def used(self) -> float | None:
        if self.at_go is None or self.last is None:
            return None
        return round(self.last - self.at_go, 3)


class StdinProxy:
    """The sender's stdin: notes the sender's CPU when "go" is written."""

    def __init__(self, inner, watch: SenderWatch):
        self._inner, self._watch = inner, watch

    def write(self, data):
        if data.strip() == b"go":
            self._watch.go()
        return self._inner.write(data)

    def __getattr__(self, name):
        return getattr(self._inner, name)


PRESTART = {"on": False}


class Popen(subprocess.Popen):
    """subprocess.Popen that watches the e2e sender child (and, with --prestart, runs this file's
    sender instead of e2e.py's)."""

    def __init__(self, args, *rest, **kw):
        sender = isinstance(args, (list, tuple)) and "--sender" in [str(a) for a in args]
        if sender and PRESTART["on"]:
            args = list(args)
            i = [str(a) for a in args].index("--sender")
            args[i - 1:i + 1] = [str(Path(__file__).resolve()), "--sender-prestart"]
        super().__init__(args, *rest, **kw)
        if sender:
            watch = SenderWatch(self.pid)
            SenderWatch.current = watch
            if self.stdin is not None:
                self.stdin = StdinProxy(self.stdin, watch)


class SubprocessProxy:
    """The `subprocess` module as e2e.py sees it: the same, with the watching Popen."""

    Popen = Popen

    def __getattr__(self, name):
        return getattr(subprocess, name)


def sender_prestart(port: int, files: list[str]) -> int:
    """e2e.py's sender_main with every thread started before `ready` (see --prestart)."""
    import json
    import socket
    host = "127.0.0.1"
    socks = []
    try:
        for _ in files:
            socks.append(socket.create_connection((host, port), timeout=30))
    except OSError as e:
        print(json.dumps({"error": f"connect {host}:{port}: {e}"}), flush=True)
        return 2
    for s in socks:
        s.settimeout(None)
    results: list[dict] = [{} for _ in files]
    received = [0] * len(files)
    go = threading.Event()

    def drain(i: int) -> None:
        try:
            while data := socks[i].recv(1 << 16):
                received[i] += len(data)
        except OSError:
            pass

    def send(i: int) -> None:
        go.wait()
        try:
            with open(files[i], "rb") as fh:
                sent = socks[i].sendfile(fh)
            socks[i].shutdown(socket.SHUT_WR)
            results[i] = {"bytes": sent, "t_done": time.monotonic()}
        except OSError as e:
            results[i] = {"error": str(e), "t_done": time.monotonic()}

    readers = [threading.Thread(target=drain, args=(i,), daemon=True) for i in range(len(files))]
    senders = [threading.Thread(target=send, args=(i,)) for i in range(len(files))]
    for t in readers + senders:
        t.start()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        go.set()
        return 3
    go.set()
    for t in senders:
        t.join()
    errors = [r["error"] for r in results if "error" in r]
    summary = {"bytes": sum(r.get("bytes", 0) for r in results),
               "t_done": max(r["t_done"] for r in results)}
    print(json.dumps(summary), flush=True)
    for t in readers:
        t.join()
    for s in socks:
        s.close()
    summary["received_bytes"] = sum(received)
    if errors:
        summary["error"] = "; ".join(errors)
    print(json.dumps(summary), flush=True)
    return 1 if errors else 0


def subdirs(outdir: Path) -> tuple[list[Path], list[Path]]:
    """The directories and the plain files directly under `outdir`."""
    dirs, files = [], []
    try:
        for e in sorted(os.scandir(outdir), key=lambda e: e.name):
            if e.is_dir(follow_symlinks=False):
                dirs.append(Path(e.path))
            else:
                files.append(Path(e.path))
    except FileNotFoundError:
        pass
    return dirs, files


def install(e2e, copies: int, count_only: set[str]) -> None:
    plain_counter = e2e.LineCounter
    plain_verify = e2e.verify_output
    plain_size = e2e.output_size
    plain_measure = e2e.measure
    plain_summarize = e2e.summarize
    plain_fmt_run = e2e.fmt_run
    state = {"router": None}

    e2e.subprocess = SubprocessProxy()

    if copies > 1:
        def output_size(outdir):
            dirs, _ = subdirs(outdir)
            if len(dirs) < copies:
                return 0
            return min(plain_size(d) for d in dirs)

        class LineCounter:
            """Lines of the smallest of the `copies` subdirectories (0 while fewer exist)."""

            def __init__(self, outdir):
                self.outdir = outdir
                self.counters: dict[Path, object] = {}

            def update(self) -> int:
                dirs, _ = subdirs(self.outdir)
                for d in dirs:
                    self.counters.setdefault(d, plain_counter(d))
                counts = [self.counters[d].update() for d in dirs]
                return min(counts) if len(counts) >= copies else 0

        e2e.output_size = output_size
        e2e.LineCounter = LineCounter

    def count_only_verify(outdir, n, payload_bytes):
        lines = total = partial = 0
        files = e2e.output_files(outdir)
        for path in files:
            last = b""
            with open(path, "rb") as f:
                while chunk := f.read(16 << 20):
                    lines += chunk.count(b"\n")
                    total += len(chunk)
                    last = chunk[-1:]
            if last and last != b"\n":
                partial += 1
        return {"ok": lines == n and total == payload_bytes and partial == 0, "lines": lines,
                "bytes": total, "files": len(files), "missing": max(0, n - lines),
                "duplicated": 0, "unexpected": max(0, lines - n), "partial_last_lines": partial,
                "count_only": True}

    def verify_output(outdir, expected, n):
        router = state["router"]
        one = ((lambda d: count_only_verify(d, n, state["payload_bytes"]))
               if router in count_only else (lambda d: plain_verify(d, expected, n)))
        if copies == 1:
            return one(outdir)
        dirs, files = subdirs(outdir)
        outputs = {d.name: one(d) for d in dirs}
        keys = ("lines", "bytes", "files", "missing", "duplicated", "unexpected",
                "partial_last_lines")
        v = {k: sum(o.get(k, 0) for o in outputs.values()) for k in keys}
        v["files"] += len(files)
        v["missing"] += n * max(0, copies - len(dirs))  # outputs that do not exist miss every line
        v["ok"] = (len(dirs) == copies and not files and all(o["ok"] for o in outputs.values()))
        v["copies_expected"] = copies
        v["copies_found"] = len(dirs)
        v["stray_files"] = [f.name for f in files]
        v["outputs"] = outputs
        for o in outputs.values():
            for k in ("unexpected_examples", "missing_examples"):
                if o.get(k):
                    v.setdefault(k, o[k])
        return v

    def measure(router, payload, args, workdir, rep):
        state["router"] = router.name
        state["payload_bytes"] = payload.bytes
        SenderWatch.current = None
        rec = plain_measure(router, payload, args, workdir, rep)
        watch = SenderWatch.current
        if watch is not None:
            watch.thread.join(timeout=2)
            rec["sender_cpu_s"] = watch.used()
        if copies > 1:
            rec["copies"] = copies
        rec["sender"] = "prestart" if PRESTART["on"] else "e2e.py"
        return rec

    def summarize(routers, runs):
        rows = plain_summarize(routers, runs)
        for row in rows:
            ok = [r for r in runs if r["router"] == row["router"] and r["ok"]]
            s = [r["sender_cpu_s"] for r in ok if r.get("sender_cpu_s") is not None]
            row["sender_cpu_s"] = statistics.median(s) if s else None
            w = [r["cpu_s"] / r["wall_s"] for r in ok if r.get("wall_s")]
            row["router_cpu_per_wall"] = statistics.median(w) if w else None
            if copies > 1:
                row["copies"] = copies
        return rows

    def fmt_run(r):
        s = plain_fmt_run(r)
        if r.get("sender_cpu_s") is not None:
            head, sep, tail = s.partition("\n")
            s = f"{head}, sender cpu {r['sender_cpu_s']:.2f} s{sep}{tail}"
        return s

    e2e.verify_output = verify_output
    e2e.measure = measure
    e2e.summarize = summarize
    e2e.fmt_run = fmt_run


def split_own(argv: list[str]) -> tuple[int, set[str], list[str]]:
    copies, count_only, rest = 1, set(), []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--prestart":
            PRESTART["on"] = True
            i += 1
            continue
        if a in ("--copies", "--count-only") and i + 1 < len(argv):
            if a == "--copies":
                copies = int(argv[i + 1])
            else:
                count_only.add(argv[i + 1])
            i += 2
            continue
        if a.startswith("--copies="):
            copies = int(a.split("=", 1)[1])
        elif a.startswith("--count-only="):
            count_only.add(a.split("=", 1)[1])
        else:
            rest.append(a)
        i += 1
    if copies < 1:
        raise SystemExit("e2e-plus.py: --copies must be at least 1")
    return copies, count_only, rest


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sender-prestart"]:
        sys.exit(sender_prestart(int(sys.argv[2]), sys.argv[3:]))
    harness = load_harness()
    k, only, rest = split_own(sys.argv[1:])
    install(harness, k, only)
    sys.exit(harness.main(rest))
