#!/usr/bin/env python3
"""Memory per TCP connection of routers, beside the throughput harness `e2e.py`.

    connections.py [e2e.py's router arguments] [--conns 1000] [-r REPEAT] [--json FILE]

The routers are named as for `e2e.py` (presets such as `rsyslog-mem`, or `custom:LABEL` with a
`--cmd`; `--set`, `--rsyslogd`, `--syslog-ng` work the same) and started the same way from the
same templates, one run per router and repeat, interleaved. Each run:

1. starts the router and waits until it accepts connections;
2. warms it up: 10,000 Loghub lines over one connection, waits until its output holds them, closes
   that connection (so that threads, queues and the output file exist before the first reading);
3. waits until the router's resident size is steady (unchanged over 0.5 s, at most 10 s) and reads
   it: the sum of `VmRSS` over its process tree (`rss_before_kib`);
4. opens `--conns` TCP connections from this process and keeps them open without sending; waits
   until the router's process tree holds that many more sockets (`/proc/PID/fd`, so the router
   has accepted every one) and its RSS is steady again (`rss_idle_kib`);
5. sends one Loghub line (LF-terminated, at most 200 bytes) on every connection, waits until the
   output holds all of them and the RSS is steady (`rss_used_kib`): the memory of connections
   that have read something (read buffers allocated and kept);
6. closes the connections and stops the router as e2e.py does (SIGTERM, then SIGKILL).

Reported per router (medians over the repeats): RSS before, KiB per idle connection
((idle - before) / conns) and per used connection ((used - before) / conns), and the tree's peak
RSS (`VmHWM`). Memory is what the kernel counts as resident: pages a router allocated but never
touched do not count, pages it freed to its allocator but the allocator kept do.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procstatus import poll_until, status_kib  # noqa: E402  (shared with the other bench scripts)

BENCH = Path(os.environ.get("E2E_BENCH_DIR", Path(__file__).resolve().parents[3] / "shared" / "bench"))
sys.path.insert(0, str(BENCH))
import e2e  # noqa: E402  (the harness: routers, templates, process handling)

WARMUP = 10_000


def tree_pids(root: int) -> list[int]:
    return e2e.descendants(root, e2e.all_stats())


def tree_rss_kib(root: int) -> int:
    return sum(status_kib(p, "VmRSS") for p in tree_pids(root))


def tree_hwm_kib(root: int) -> int:
    return sum(status_kib(p, "VmHWM") for p in tree_pids(root))


def tree_sockets(root: int) -> int:
    n = 0
    for pid in tree_pids(root):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                        n += 1
                except OSError:
                    pass
        except OSError:
            pass
    return n


def steady_rss(root: int, timeout: float = 10.0, quiet: float = 0.5) -> int:
    """The tree's RSS once it has not changed for `quiet` seconds (or after `timeout`)."""
    t_end = time.monotonic() + timeout
    last, since = tree_rss_kib(root), time.monotonic()
    while time.monotonic() < t_end:
        time.sleep(0.05)
        now = tree_rss_kib(root)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def wait_lines(outdir: Path, n: int, proc: subprocess.Popen, timeout: float) -> int:
    counter, lines = e2e.LineCounter(outdir), [0]

    def all_out() -> bool:
        lines[0] = counter.update()
        return lines[0] >= n

    poll_until(proc, all_out, timeout, lambda: f"{lines[0]} of {n} lines out", e2e.HarnessError, interval=0.02)
    return lines[0]


def run(router: e2e.Router, args: argparse.Namespace, payload: e2e.Payload, conns: int, line: bytes,
        work_root: Path, rep: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"conns-{router.name}-", dir=work_root))
    data, outdir = workdir / "data", workdir / "out"
    data.mkdir()
    outdir.mkdir()
    port = e2e.free_port()
    rec: dict = {"router": router.name, "rep": rep, "conns": conns, "ok": False, "error": None}
    values = e2e.placeholder_values(router, args, payload, workdir, port, outdir, data)
    r = e2e.Renderer(values, workdir)
    if router.config is not None:
        values["config"] = r.render_file(router.config, router.name)
    argv, env = e2e.split_command(r.render(router.cmd, f"command of {router.name}", strict=True))
    log = workdir / "router.log"
    socks: list[socket.socket] = []
    with open(log, "wb") as logf:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        e2e.wait_for_port(port, proc, args.start_timeout, log)
        with socket.create_connection((e2e.HOST, port)) as s:
            with open(payload.files[0], "rb") as f:
                s.sendfile(f)
            s.shutdown(socket.SHUT_WR)
            wait_lines(outdir, WARMUP, proc, 60)
            s.settimeout(5)
            try:
                while s.recv(1 << 16):
                    pass
            except OSError:
                pass
        base_sockets = None
        t_end = time.monotonic() + 10
        while time.monotonic() < t_end:  # the warm-up connection closed on the router's side too
            base_sockets = tree_sockets(proc.pid)
            time.sleep(0.1)
            if tree_sockets(proc.pid) == base_sockets:
                break
        rec["rss_before_kib"] = steady_rss(proc.pid)
        rec["sockets_before"] = base_sockets
        t = time.monotonic()
        for _ in range(conns):
            socks.append(socket.create_connection((e2e.HOST, port), timeout=30))
        held = [0]

        def all_held() -> bool:
            held[0] = tree_sockets(proc.pid) - base_sockets
            return held[0] >= conns

        poll_until(proc, all_held, 30, lambda: f"the router holds {held[0]} of {conns} connections",
                   e2e.HarnessError, interval=0.05)
        rec["accept_s"] = round(time.monotonic() - t, 3)
        rec["rss_idle_kib"] = steady_rss(proc.pid)
        for s in socks:
            s.sendall(line)
        wait_lines(outdir, WARMUP + conns, proc, 60)
        rec["rss_used_kib"] = steady_rss(proc.pid)
        rec["peak_rss_kib"] = tree_hwm_kib(proc.pid)
        rec["processes"] = len(tree_pids(proc.pid))
        rec["idle_kib_per_conn"] = round((rec["rss_idle_kib"] - rec["rss_before_kib"]) / conns, 2)
        rec["used_kib_per_conn"] = round((rec["rss_used_kib"] - rec["rss_before_kib"]) / conns, 2)
        rec["ok"] = True
    except (e2e.HarnessError, OSError) as e:
        rec["error"] = str(e)
        rec["router_log_tail"] = e2e.log_tail(log, 20)
    finally:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        rec.update(e2e.stop_process(proc, e2e.ProcTree(proc.pid), args.grace))
        for s in socks:
            s.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return rec


def main(argv: list[str]) -> int:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--conns", type=int, default=1000)
    mine, rest = own.parse_known_args(argv)
    args = e2e.parse_args(rest + ["-n", str(WARMUP), "--connections", "1"])
    # routers that cap connections ({max_conn}: syslog-ng's max-connections) get room for all
    args.connections = mine.conns + 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < mine.conns + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, mine.conns + 1000), hard))
    routers = e2e.parse_routers(args)
    work_root = Path(args.work_root).resolve()
    args.connections = 1
    payload = e2e.make_payload(args, work_root)
    args.connections = mine.conns + 1
    line = b"Connection line from an idle client that finally sends one event\n"
    for f in e2e.source_files(args.data or [str(e2e.DEFAULT_DATA)]):
        first = next((x for x in f.read_bytes().splitlines() if x.strip()), b"")
        if first:
            line = first.replace(b"\r", b"")[:199] + b"\n"
            break
    records = []
    try:
        for rep in range(args.repeat):
            for router in routers:
                rec = run(router, args, payload, mine.conns, line, work_root, rep)
                records.append(rec)
                if rec["ok"]:
                    print(f"[{router.name} #{rep + 1}] {mine.conns} connections: RSS "
                          f"{rec['rss_before_kib'] / 1024:.1f} -> {rec['rss_idle_kib'] / 1024:.1f} MiB idle "
                          f"({rec['idle_kib_per_conn']:.1f} KiB each) -> {rec['rss_used_kib'] / 1024:.1f} MiB "
                          f"after one line each ({rec['used_kib_per_conn']:.1f} KiB each); accepted in "
                          f"{rec['accept_s']:.2f} s; peak {rec['peak_rss_kib'] / 1024:.1f} MiB", flush=True)
                else:
                    print(f"[{router.name} #{rep + 1}] FAILED: {rec['error']}\n{rec.get('router_log_tail', '')}",
                          flush=True)
    finally:
        shutil.rmtree(payload.dir, ignore_errors=True)
    rows = []
    for router in routers:
        ok = [r for r in records if r["router"] == router.name and r["ok"]]

        def med(key):
            return statistics.median(r[key] for r in ok) if ok else None
        rows.append({"router": router.name, "runs": sum(r["router"] == router.name for r in records),
                     "ok": len(ok), "conns": mine.conns, "rss_before_mib": ok and med("rss_before_kib") / 1024,
                     "idle_kib_per_conn": med("idle_kib_per_conn"), "used_kib_per_conn": med("used_kib_per_conn"),
                     "peak_rss_mib": ok and med("peak_rss_kib") / 1024})
    print()
    print(f"| router | RSS before MiB | KiB per idle connection | KiB per connection after one line | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for row in rows:
        if not row["ok"]:
            print(f"| {row['router']} | failed | | | |")
            continue
        print(f"| {row['router']} | {row['rss_before_mib']:.1f} | {row['idle_kib_per_conn']:.1f} | "
              f"{row['used_kib_per_conn']:.1f} | {row['peak_rss_mib']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"conns": mine.conns, "summary": rows, "runs": records},
                                              indent=1, default=str) + "\n")
    return 0 if all(r["ok"] for r in records) else 1


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main(sys.argv[1:]))
