#!/usr/bin/env python3
"""End-to-end latency of routers under a paced load, beside the throughput harness `e2e.py`.

    latency.py [e2e.py's router arguments] --peak LABEL=EVENTS_PER_S ... [--loads 10,50,90]
               [--seconds 10] [--json FILE] [--series DIR]

The routers are named as for `e2e.py` (presets such as `rsyslog-mem`, or `custom:LABEL` with a
`--cmd`; `--set`, `--rsyslogd`, `--syslog-ng` work the same), started the same way from the same
templates, one run per router and load, interleaved (every router at 10 %, then every router at
50 %, ...). `--peak LABEL=N` gives each router's peak events/s (measure it with `e2e.py` in the
same session); each run sends at LOAD % of it.

The sender (a child process) sends Loghub lines over one TCP connection in bursts, one burst per
millisecond; the last line of each burst starts with its send time (`T`, CLOCK_MONOTONIC in
microseconds, 16 digits, a space), taken after the rest of the burst was written to the socket.
The reader (this process) reads the output files as they grow, every millisecond, counts every
line, and takes each stamped line's latency as the time it read the line minus its stamp: one
sample per millisecond of sending, the last line of its burst (so the burst's worst). Latency is
measured to about 1 ms (the read interval), and p50 values under 1 ms mean "within the
resolution". A run whose output misses lines or whose sender fell behind its rate (it reports the rate it
reached) is marked so, and each run reports how busy the reader was (the fraction of the run it
spent reading and parsing: near 1, the reader is the limit and the latencies are its own) and the
longest time between two of its reads (a latency up to that long may be the reader's, not the
router's). The sender and the reader run under SCHED_FIFO (as root; a run without it is marked):
on two cores a router at millions of events/s otherwise delays the reader's reads by up to a few
hundred milliseconds, which then show as the router's tail.

Output: one table (p50, p99, p99.9, max in milliseconds, per router and load), the raw runs in
`--json`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(os.environ.get("E2E_BENCH_DIR", Path(__file__).resolve().parents[3] / "shared" / "bench"))
sys.path.insert(0, str(BENCH))
import e2e  # noqa: E402  (the harness: routers, templates, process handling)



def sender_main(port: int, rate: float, seconds: float, data: list[str]) -> int:
    """Child: connect, print `ready`, wait for `go`, send `rate` lines/s for `seconds` in 1 ms
    bursts, the last line of each burst stamped; print `sent LINES RATE` at the end."""
    lines = []
    for f in e2e.source_files(data):
        lines.extend(l[:2000] for l in Path(f).read_bytes().splitlines() if l and not l.startswith(b"T"))
    block = b"\n".join(lines) + b"\n"
    offsets = [0]
    for l in lines:
        offsets.append(offsets[-1] + len(l) + 1)
    ring_view = memoryview(block + block)
    count = len(lines)
    realtime()
    sock = socket.create_connection((e2e.HOST, port))
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    total = int(rate * seconds)
    sent, i = 0, 0
    t0 = time.monotonic()
    while sent < total:
        due = min(total, int(rate * (time.monotonic() - t0)) + 1)
        k = due - sent
        if k > 0:
            plain = k - 1
            while plain > 0:  # bursts longer than the samples go out in pieces of at most `count`
                n = min(plain, count)
                if i + n <= count:
                    length = offsets[i + n] - offsets[i]
                else:  # wraps: the rest of the block, then the start of its copy
                    length = offsets[count] - offsets[i] + offsets[i + n - count]
                sock.sendall(ring_view[offsets[i]:offsets[i] + length])
                i = (i + n) % count
                plain -= n
            stamp = b"T%016d " % (time.monotonic_ns() // 1000)
            sock.sendall(stamp + lines[i] + b"\n")
            i = (i + 1) % count
            sent = due
        # The next burst at the next millisecond (not as soon as one more line is due: that
        # made a burst of a few lines per loop and a sender as busy as the router under test).
        time.sleep(0.001 - (time.monotonic() - t0) % 0.001)
    elapsed = time.monotonic() - t0
    sock.shutdown(socket.SHUT_WR)
    print(f"sent {sent} {sent / elapsed:.0f}", flush=True)
    sock.close()
    return 0


def realtime() -> bool:
    """Puts the calling thread under SCHED_FIFO (priority 10), so that the sender and the reader run
    when they are due, not when the router's threads let them: on a small machine a router busy on
    every core otherwise delays the reader's polls by tens of milliseconds, and those delays
    show as the router's latency. False when the system refuses (not root)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return True
    except (OSError, AttributeError):
        return False


class Reader(threading.Thread):
    """Reads every file under `outdir` as it grows: counts lines, and the latency of each stamped line
    in 0.1 ms buckets."""

    def __init__(self, outdir: Path, keep_series: bool = False):
        super().__init__(daemon=True)
        self.keep_series = keep_series
        self.realtime = False
        self.max_gap = 0.0  # the longest time between two polls, in seconds
        self.outdir = outdir
        self.offsets: dict[str, int] = {}
        self.rest: dict[str, bytes] = {}
        self.hist: collections.Counter = collections.Counter()  # latency in 0.1 ms -> stamped lines
        self.series: list[tuple[int, int]] = []  # (send stamp, latency) in µs, one per stamped line
        self.lines = 0
        self.busy = 0.0  # seconds spent reading and parsing
        self.files: list[str] = []
        self.handles: dict = {}  # open output files, read on from where the last read ended
        self.next_scan = 0.0
        self.stop = threading.Event()

    def poll(self) -> None:
        now = time.monotonic()
        if now >= self.next_scan or not self.files:  # until there is output, at every poll;
            # then new files (a roll) are looked for every 50 ms
            self.files = e2e.output_files(self.outdir)
            self.next_scan = now + 0.05
        for name in self.files:
            path = self.outdir / name if not os.path.isabs(name) else Path(name)
            f = self.handles.get(name)
            try:
                if f is None:
                    f = self.handles[name] = open(path, "rb")
                chunk = f.read()
            except OSError:
                continue
            if not chunk:
                continue
            now_us = time.monotonic_ns() // 1000
            self.offsets[name] = self.offsets.get(name, 0) + len(chunk)
            chunk = self.rest.pop(name, b"") + chunk
            cut = chunk.rfind(b"\n") + 1
            if cut < len(chunk):
                self.rest[name] = chunk[cut:]
            # A stamped line starts after a LF (or at the chunk's start, which is a line's start):
            # bytes.find runs at memchr speed, and there are only ~1000 stamps per second.
            starts = [0] if chunk.startswith(b"T") else []
            j = chunk.find(b"\nT", 0, cut)
            while j != -1:
                starts.append(j + 1)
                j = chunk.find(b"\nT", j + 1, cut)
            for s in starts:
                stamp = chunk[s + 1:s + 17]
                if len(stamp) == 16 and stamp.isdigit() and chunk[s + 17:s + 18] == b" ":
                    latency = max(0, now_us - int(stamp))
                    self.hist[latency // 100] += 1
                    if self.keep_series:
                        self.series.append((int(stamp), latency))
            self.lines += chunk.count(b"\n", 0, cut)

    def run(self) -> None:
        self.realtime = realtime()
        last = None
        while not self.stop.is_set():
            t0 = time.monotonic()
            if last is not None:
                self.max_gap = max(self.max_gap, t0 - last)
            last = t0
            self.poll()
            self.busy += time.monotonic() - t0
            time.sleep(0.001)
        self.poll()


def percentile(hist: collections.Counter, q: float) -> float:
    """The q-quantile (0..1) of the histogram, in milliseconds."""
    total = sum(hist.values())
    want = q * total
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= want:
            return bucket / 10
    return max(hist) / 10 if hist else float("nan")


def run(router: e2e.Router, args: argparse.Namespace, payload: e2e.Payload, load: int, rate: float,
        work_root: Path) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"latency-{router.name}-", dir=work_root))
    data, outdir = workdir / "data", workdir / "out"
    data.mkdir()
    outdir.mkdir()
    port = e2e.free_port()
    rec = {"router": router.name, "load_percent": load, "rate": round(rate), "ok": False}
    values = e2e.placeholder_values(router, args, payload, workdir, port, outdir, data)
    r = e2e.Renderer(values, workdir)
    if router.config is not None:
        values["config"] = r.render_file(router.config, router.name)
    argv, env = e2e.split_command(r.render(router.cmd, f"command of {router.name}", strict=True))
    log = workdir / "router.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        e2e.wait_for_port(port, proc, args.start_timeout, log)
        sender = subprocess.Popen(
            [sys.executable, __file__, "--sender", str(port), str(rate), str(args.seconds),
             *(args.data or [str(e2e.DEFAULT_DATA)])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if sender.stdout.readline().strip() != "ready":
            raise e2e.HarnessError("the sender could not connect")
        reader = Reader(outdir, keep_series=bool(args.series))
        reader.start()
        started = time.monotonic()
        sender.stdin.write("go\n")
        sender.stdin.flush()
        out = sender.stdout.readline().split()
        sender.wait(timeout=60)
        sent, reached = int(out[1]), float(out[2])
        deadline = time.monotonic() + 30
        while reader.lines < sent and time.monotonic() < deadline:
            time.sleep(0.01)
        reader.stop.set()
        reader.join()
        reader.next_scan = 0.0
        reader.poll()  # files that appeared in the last 50 ms
        rec["reader_busy"] = round(reader.busy / (time.monotonic() - started), 2)
        rec["reader_max_gap_ms"] = round(reader.max_gap * 1000, 1)
        rec["realtime"] = reader.realtime
        h = reader.hist
        rec.update({
            "sent": sent, "sent_rate": round(reached), "received": reader.lines,
            "p50_ms": percentile(h, 0.5), "p99_ms": percentile(h, 0.99),
            "p999_ms": percentile(h, 0.999), "max_ms": max(h) / 10 if h else None,
            "sender_behind": reached < 0.95 * rate,
        })
        rec["ok"] = reader.lines == sent
        if args.series:
            first = reader.series[0][0] if reader.series else 0
            name = f"{router.name}-{load}.csv"
            with open(Path(args.series) / name, "w") as f:
                f.write("ms_since_first_send,latency_ms\n")
                f.writelines(f"{(t - first) / 1000:.3f},{lat / 1000:.3f}\n" for t, lat in reader.series)
    finally:
        e2e.stop_process(proc, None, args.grace)
        if not args.keep:
            import shutil
            shutil.rmtree(workdir, ignore_errors=True)
    return rec


def main(argv: list[str]) -> int:
    if argv[:1] == ["--sender"]:
        return sender_main(int(argv[1]), float(argv[2]), float(argv[3]), argv[4:])
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--peak", action="append", default=[], metavar="LABEL=EVENTS_PER_S")
    own.add_argument("--loads", default="10,50,90")
    own.add_argument("--seconds", type=float, default=10)
    own.add_argument("--series", metavar="DIR", help="write each run's samples (send time, latency) "
                     "as DIR/ROUTER-LOAD.csv, to see when the slow ones came")
    mine, rest = own.parse_known_args(argv)
    args = e2e.parse_args(rest + ["-n", "1000"])
    args.seconds = mine.seconds
    args.series = mine.series
    if args.series:
        Path(args.series).mkdir(parents=True, exist_ok=True)
    routers = e2e.parse_routers(args)
    peaks = {}
    for p in mine.peak:
        label, _, n = p.partition("=")
        peaks[label] = float(n)
    missing = [r.name for r in routers if r.name not in peaks]
    if missing:
        print(f"latency.py: --peak LABEL=N missing for {', '.join(missing)}", file=sys.stderr)
        return 2
    work_root = Path(args.work_root)
    payload = e2e.make_payload(args, work_root)
    records = []
    for load in [int(x) for x in mine.loads.split(",")]:
        for router in routers:
            rate = peaks[router.name] * load / 100
            rec = run(router, args, payload, load, rate, work_root)
            records.append(rec)
            flag = "" if rec["ok"] else " INCOMPLETE"
            flag += " (sender behind)" if rec.get("sender_behind") else ""
            flag += f" reader busy {rec.get('reader_busy')}, longest gap between its reads {rec.get('reader_max_gap_ms')} ms"
            flag += "" if rec.get("realtime") else " (sender and reader NOT real-time: run as root)"
            print(f"[{router.name} @ {load}% = {rate:,.0f} ev/s] sent {rec.get('sent')} at "
                  f"{rec.get('sent_rate', 0):,} ev/s, received {rec.get('received')}: p50 {rec.get('p50_ms')} "
                  f"p99 {rec.get('p99_ms')} p99.9 {rec.get('p999_ms')} max {rec.get('max_ms')} ms{flag}",
                  flush=True)
    print()
    print("| router | load | ev/s sent | p50 ms | p99 ms | p99.9 ms | max ms |")
    print("|---|---|---|---|---|---|---|")
    for rec in records:
        print(f"| {rec['router']} | {rec['load_percent']} % | {rec.get('sent_rate', 0):,} | {rec.get('p50_ms')} | "
              f"{rec.get('p99_ms')} | {rec.get('p999_ms')} | {rec.get('max_ms')} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": records, "seconds": mine.seconds}, indent=1))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main(sys.argv[1:]))
