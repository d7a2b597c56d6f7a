#!/usr/bin/env python3
"""How the CPU and RSS of the two-agent tier split between the edge and the collector.

    tier-split.py FLUMEN [N [REPEAT]]

Outside the e2e harness (which reports the tree's sum only): renders tier-edge.ron and
tier-collector.ron into a scratch directory, starts them with tier.py, sends N Loghub lines
(default 4,000,000, cycled from ../shared/data/loghub/*.log) over one TCP connection, waits until
the collector's output holds N lines, and prints each agent's user+sys CPU seconds over that time
(from /proc/PID/stat) and its peak RSS (VmHWM). The wall time is only indicative: the output is
polled every 50 ms and counted by re-reading it.
"""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[2] / "shared" / "data" / "loghub"
TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    data = open(f"/proc/{pid}/stat", "rb").read()
    st = data[data.rfind(b")") + 2:].split()
    return (int(st[11]) + int(st[12])) / TCK


def hwm_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(flumen: str, n: int, repeat: int) -> int:
    lines = []
    for f in sorted(glob.glob(str(DATA / "*.log"))):
        lines += [x for x in Path(f).read_bytes().replace(b"\r", b"").split(b"\n") if x]
    work = Path(tempfile.mkdtemp(prefix="tier-split-"))
    try:
        payload = work / "payload"
        with open(payload, "wb") as f:
            f.write(b"".join(lines[i % len(lines)] + b"\n" for i in range(n)))
        for rep in range(repeat):
            out = work / f"out{rep}"
            out.mkdir()
            port = free_port()
            for t in ("tier-edge", "tier-collector"):
                text = (HERE / f"{t}.ron").read_text()
                for k, v in (("host", "127.0.0.1"), ("port", port), ("max_line", 65536), ("outdir", out)):
                    text = text.replace("{" + k + "}", str(v))
                (work / f"{t}.ron").write_text(text)
            log = open(work / "log", "ab")
            edge = subprocess.Popen([str(HERE / "tier.py"), flumen, str(work / "tier-collector.ron"),
                                     str(work / "tier-edge.ron")], stdout=log, stderr=subprocess.STDOUT)
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port)).close()
                    break
                except OSError:
                    time.sleep(0.05)
            collector = int(open(f"/proc/{edge.pid}/task/{edge.pid}/children").read().split()[0])
            e0, c0, t0 = cpu_s(edge.pid), cpu_s(collector), time.monotonic()
            with socket.create_connection(("127.0.0.1", port)) as s:
                with open(payload, "rb") as f:
                    s.sendfile(f)
                s.shutdown(socket.SHUT_WR)
                while sum(p.read_bytes().count(b"\n") for p in out.iterdir()) < n:
                    time.sleep(0.05)
                wall = time.monotonic() - t0
                e1, c1 = cpu_s(edge.pid), cpu_s(collector)
                print(f"run {rep + 1}: {n:,} events in ~{wall:.2f} s; edge: CPU {e1 - e0:.2f} s, RSS "
                      f"{hwm_mib(edge.pid):.1f} MiB; collector: CPU {c1 - c0:.2f} s, RSS "
                      f"{hwm_mib(collector):.1f} MiB", flush=True)
            edge.terminate()
            edge.wait()
            shutil.rmtree(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3, 4):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4_000_000,
                  int(sys.argv[3]) if len(sys.argv) > 3 else 3))
