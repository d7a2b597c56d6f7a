#!/usr/bin/env python3
"""How long a RocksDb channel holding a backlog takes to open and deliver its first batch.

    backlog-open.py [--flumen PATH] [--sizes 100000,1000000,10000000] [-r REPEAT] [--json FILE]
                    [--work-root DIR] [--data PATH] [--keep]

For each size N:

1. Fill. A fresh channel directory is filled by a real agent (`backlog-fill.ron`: Netcat ->
   RocksDb(sync: false) -> an Http sink whose endpoint does not exist, so nothing leaves the
   channel): N Loghub lines (every `*.log` of `--data`, default ../shared/data/loghub, CR removed,
   empty lines dropped, cycled to N, as e2e.py's workload) over one TCP connection, then the agent
   is stopped with SIGTERM once the channel's `ChannelSize` (its monitoring server) is N. A stopped
   agent flushes the channel's memtables, so the backlog lies in table files, as an agent that was
   stopped with a backlog leaves it. Not timed beyond being reported (`fill_s`).
2. Open, REPEAT times (runs of all sizes interleaved: 10^5, 10^6, 10^7, 10^5, ...): the filled
   directory is copied with hard links (RocksDB never modifies a table file, and the copy's new
   MANIFEST, WAL and CURRENT are its own), and `flumen run` starts on `backlog-drain.ron` (that
   channel -> FileRoll). Measured from just before the process is started:
   - `open_log_s`: when the agent's log line saying the channel opened (`RocksDb channel opened`
     or `... (re)opened`) reached this process (stderr is read as it comes; the whole line is kept
     in the JSON as `open_log_line`, with any timing it states);
   - `first_batch_s`: when the output directory first holds a byte (polled every millisecond with
     `stat`; FileRoll writes a batch with one `write(2)`, so that is the first batch whole);
   - `drain_s`: when the output holds all N lines (polled every 10 ms), then the output is checked
     line for line against the input (as a multiset, e2e.py's verification);
   - `rss_first_batch_kib` / `peak_rss_kib`: the agent's `VmRSS` at the first batch and its
     `VmHWM` at the end.
   The agent then gets SIGTERM (SIGKILL after 15 s) and the copy is removed.

The filled directories are in the page cache when they are opened (they were just written and are
re-read every run); a cold open after a reboot also reads them from the disk. Each size's fill
directory is removed at the end (`--keep` keeps them and prints where).

Works with any flumen whose RocksDb channel takes `dir`, `capacity`, `transaction_capacity` and
`sync` and whose monitoring serves Flume's JSON `/metrics`; the open log line is matched loosely
(`RocksDb channel` and `opened` in one line) and its absence is reported, not an error.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstatus import poll_until, status_kib  # noqa: E402  (shared with the other bench scripts)

HERE = Path(__file__).resolve().parent
BENCH = Path(os.environ.get("E2E_BENCH_DIR", HERE.parents[2] / "shared" / "bench"))
sys.path.insert(0, str(BENCH))
import e2e  # noqa: E402  (workload, verification, process handling)

HOST = "127.0.0.1"
OPEN_LINE = re.compile(r"RocksDb channel.*opened")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def default_flumen() -> str:
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache" / "flumen-target"))
    return str(Path(target) / "release" / "flumen")


def render(template: Path, dest: Path, values: dict) -> Path:
    text = template.read_text()
    for k, v in values.items():
        text = text.replace("{" + k + "}", str(v))
    dest.write_text(text)
    return dest


class LogReader(threading.Thread):
    """Reads the agent's stderr line by line, stamping each with its arrival (monotonic)."""

    def __init__(self, stream, path: Path, t0: float):
        super().__init__(daemon=True)
        self.stream, self.path, self.t0 = stream, path, t0
        self.open_at: float | None = None
        self.open_line: str | None = None

    def run(self) -> None:
        with open(self.path, "w") as log:
            for raw in self.stream:
                now = time.monotonic()
                line = ANSI.sub("", raw.decode(errors="replace")).rstrip("\n")
                log.write(f"{now - self.t0:10.4f} {line}\n")
                log.flush()
                if self.open_at is None and OPEN_LINE.search(line):
                    self.open_at, self.open_line = now, line


def stop(proc: subprocess.Popen, grace: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def metrics(port: int) -> dict:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as r:
        return json.loads(r.read())


def wait_port(port: int, proc: subprocess.Popen, timeout: float, what: str) -> None:
    t_end = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise e2e.HarnessError(f"{what} exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > t_end:
                raise e2e.HarnessError(f"{what} does not listen on {port} after {timeout:g} s")
            time.sleep(0.05)


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def fill(flumen: str, lines: list[bytes], n: int, chan: Path, work: Path, capacity: int) -> dict:
    """Fills `chan` with the first n of the cycled lines through a real agent (see the docstring)."""
    port, mport, dead = e2e.free_port(), e2e.free_port(), e2e.free_port()
    topo = render(HERE / "backlog-fill.ron", work / f"fill-{n}.ron",
                  {"host": HOST, "port": port, "monitoring_port": mport, "dead_port": dead,
                   "dir": chan, "capacity": capacity})
    log = work / f"fill-{n}.log"
    t0 = time.monotonic()
    with open(log, "wb") as logf:
        proc = subprocess.Popen([flumen, "run", str(topo)], stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(port, proc, 60, "the filling agent")
        block = b"\n".join(lines) + b"\n"
        q, r = divmod(n, len(lines))
        with socket.create_connection((HOST, port)) as s:
            for _ in range(q):
                s.sendall(block)
            if r:
                s.sendall(b"\n".join(lines[:r]) + b"\n")
            s.shutdown(socket.SHUT_WR)
            size, t_end = -1, time.monotonic() + max(120, n / 20_000)
            while True:
                m = metrics(mport)
                size = int(m["CHANNEL.c1"]["ChannelSize"])
                if size >= n:
                    break
                if proc.poll() is not None or time.monotonic() > t_end:
                    raise e2e.HarnessError(f"filling {chan}: the channel holds {size} of {n} events "
                                           f"(agent exit {proc.returncode}); see {log}")
                time.sleep(0.2)
        put = float(m["CHANNEL.c1"].get("EventPutSuccessCount", "nan"))
        t_sent = time.monotonic() - t0
    finally:
        stop(proc, 120)
    if size != n:
        raise e2e.HarnessError(f"filling {chan}: the channel holds {size} events, not {n}")
    return {"fill_s": round(time.monotonic() - t0, 2), "fill_put_s": round(t_sent, 2),
            "fill_put_success": put, "fill_exit": proc.returncode, "dir_bytes": dir_bytes(chan)}


def expected_counts(lines: list[bytes], n: int) -> collections.Counter:
    q, r = divmod(n, len(lines))
    expected: collections.Counter = collections.Counter()
    for i, line in enumerate(lines):
        c = q + (1 if i < r else 0)
        if c:
            expected[line] += c
    return expected


def open_once(flumen: str, filled: Path, n: int, lines: list[bytes], work: Path, rep: int,
              capacity: int, timeout: float) -> dict:
    run = Path(tempfile.mkdtemp(prefix=f"open-{n}-", dir=work))
    chan, out = run / "c1", run / "out"
    out.mkdir()
    subprocess.run(["cp", "-al", str(filled), str(chan)], check=True)
    topo = render(HERE / "backlog-drain.ron", run / "drain.ron",
                  {"host": HOST, "port": e2e.free_port(), "dir": chan, "outdir": out,
                   "capacity": capacity})
    rec: dict = {"n": n, "rep": rep, "ok": False, "error": None}
    os.sync()
    t0 = time.monotonic()
    proc = subprocess.Popen([flumen, "run", str(topo)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    reader = LogReader(proc.stderr, run / "agent.log", t0)
    reader.start()
    try:
        poll_until(proc, lambda: e2e.output_size(out) > 0, timeout, lambda: "no output yet",
                   e2e.HarnessError, interval=0.001)
        rec["first_batch_s"] = round(time.monotonic() - t0, 4)
        rec["rss_first_batch_kib"] = status_kib(proc.pid, "VmRSS")
        counter, got = e2e.LineCounter(out), [0]

        def all_out() -> bool:
            got[0] = counter.update()
            return got[0] >= n

        poll_until(proc, all_out, t0 + timeout - time.monotonic(), lambda: f"{got[0]} of {n} lines out",
                   e2e.HarnessError)
        rec["drain_s"] = round(time.monotonic() - t0, 3)
        rec["peak_rss_kib"] = status_kib(proc.pid, "VmHWM")
    except e2e.HarnessError as e:
        rec["error"] = str(e)
    finally:
        stop(proc)
        reader.join(timeout=5)
    if reader.open_at is not None:
        rec["open_log_s"] = round(reader.open_at - t0, 4)
        rec["open_log_line"] = reader.open_line
    else:
        rec["open_log_s"] = None
    if rec["error"] is None:
        v = e2e.verify_output(out, expected_counts(lines, n), n)
        rec["verify"] = {k: v[k] for k in ("ok", "lines", "missing", "duplicated", "unexpected")}
        if not v["ok"]:
            rec["error"] = (f"output differs: {v['lines']} lines, {v['missing']} missing, "
                            f"{v['duplicated']} duplicated, {v['unexpected']} unexpected")
    rec["ok"] = rec["error"] is None
    if rec["error"]:
        rec["agent_log_tail"] = (run / "agent.log").read_text(errors="replace").splitlines()[-20:]
    shutil.rmtree(run, ignore_errors=True)
    return rec


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flumen", default=default_flumen(),
                   help="the flumen binary (default $CARGO_TARGET_DIR/release/flumen)")
    p.add_argument("--sizes", default="100000,1000000,10000000",
                   help="backlog sizes in events, comma-separated (default 10^5, 10^6, 10^7)")
    p.add_argument("-r", "--repeat", type=int, default=3, help="opens per size (default 3)")
    p.add_argument("--data", action="append", metavar="PATH",
                   help=f"log file or directory of *.log files (default {e2e.DEFAULT_DATA})")
    p.add_argument("--work-root", default=tempfile.gettempdir())
    p.add_argument("--timeout", type=float, default=600, help="per open, until drained (600 s)")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--keep", action="store_true", help="keep the filled directories")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x]
    flumen = str(Path(args.flumen).resolve())
    if not os.access(flumen, os.X_OK):
        print(f"backlog-open.py: {flumen} is not an executable (build it: make build)", file=sys.stderr)
        return 2
    lines = e2e.load_lines(e2e.source_files(args.data or [str(e2e.DEFAULT_DATA)]), None)
    capacity = max(sizes) * 2
    work = Path(tempfile.mkdtemp(prefix="backlog-open-", dir=args.work_root))
    fills, runs = {}, []
    try:
        for n in sizes:
            chan = work / f"filled-{n}"
            fills[n] = fill(flumen, lines, n, chan, work, capacity)
            print(f"[fill {n:,}] {fills[n]['fill_s']:.1f} s ({fills[n]['fill_put_s']:.1f} s until all "
                  f"were put), {fills[n]['dir_bytes'] / 1e6:,.0f} MB on disk", flush=True)
        for rep in range(args.repeat):
            for n in sizes:
                rec = open_once(flumen, work / f"filled-{n}", n, lines, work, rep, capacity, args.timeout)
                runs.append(rec)
                if rec["ok"]:
                    log = (f"open log line {rec['open_log_s']:.3f} s" if rec["open_log_s"] is not None
                           else "no open log line")
                    print(f"[open {n:,} #{rep + 1}] {log}, first batch {rec['first_batch_s']:.3f} s, all "
                          f"{n:,} out {rec['drain_s']:.2f} s, RSS {rec['rss_first_batch_kib'] / 1024:.1f} MiB at "
                          f"the first batch, peak {rec['peak_rss_kib'] / 1024:.1f} MiB", flush=True)
                else:
                    print(f"[open {n:,} #{rep + 1}] FAILED: {rec['error']}\n  " +
                          "\n  ".join(rec.get("agent_log_tail", [])), flush=True)
    finally:
        if args.keep:
            print(f"filled directories kept under {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary = []
    for n in sizes:
        ok = [r for r in runs if r["n"] == n and r["ok"]]

        def med(key):
            xs = [r[key] for r in ok if r.get(key) is not None]
            return statistics.median(xs) if xs else None
        summary.append({"n": n, "runs": sum(r["n"] == n for r in runs), "ok": len(ok),
                        "dir_bytes": fills.get(n, {}).get("dir_bytes"),
                        "open_log_s": med("open_log_s"), "first_batch_s": med("first_batch_s"),
                        "drain_s": med("drain_s"),
                        "rss_first_batch_mib": (med("rss_first_batch_kib") or 0) / 1024,
                        "peak_rss_mib": (med("peak_rss_kib") or 0) / 1024,
                        "drain_events_per_s": n / med("drain_s") if med("drain_s") else None})
    print()
    print("| events | on disk MB | open log line s | first batch s | all delivered s | RSS at first batch MiB | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for row in summary:
        def f(v, spec):
            return "-" if v is None else format(v, spec)
        print(f"| {row['n']:,} | {f(row['dir_bytes'] and row['dir_bytes'] / 1e6, ',.0f')} | "
              f"{f(row['open_log_s'], '.3f')} | {f(row['first_batch_s'], '.3f')} | {f(row['drain_s'], '.2f')} | "
              f"{row['rss_first_batch_mib']:.1f} | {row['peak_rss_mib']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"flumen": flumen, "sizes": sizes, "fills": fills,
                                               "summary": summary, "runs": runs}, indent=1) + "\n")
    return 0 if runs and all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
