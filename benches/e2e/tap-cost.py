#!/usr/bin/env python3
"""What an active `flumen tap` costs the agent: Netcat -> Memory -> Null, with and without a tap.

    tap-cost.py FLUMEN [N [REPEAT]]

Outside the e2e harness (a Null sink writes no output for it to count): renders tap-null.ron into
a scratch directory and, REPEAT times, runs these modes interleaved (A B C D A B C D ...), each on a
fresh agent:

  no-tap       no tap connected
  tap          `flumen tap` on every source and sink, its stdout to /dev/null (a reading client)
  tap-idle     `flumen tap --component nothing`: a tap connected that matches no component
  tap-stalled  a client that sends `GET /tap` and never reads (its buffer overflows at once)

Each run sends N Loghub lines (default 4,000,000, cycled from ../shared/data/loghub/*.log, CR removed,
empty lines dropped: the e2e workload) over one TCP connection and stops the clock when the sink's
EventDrainSuccessCount (GET /metrics, polled every 10 ms) reaches N. It prints per run and as
medians: wall time, events/s, the agent's user+sys CPU seconds over that time (/proc/PID/stat),
the tap client's CPU seconds, the events the tap showed (its own count, on its stderr), and TapDroppedCount (source + sink).
"""

import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[2] / "shared" / "data" / "loghub"
TCK = os.sysconf("SC_CLK_TCK")
MODES = ["no-tap", "tap", "tap-idle", "tap-stalled"]


def cpu_s(pid: int) -> float:
    data = open(f"/proc/{pid}/stat", "rb").read()
    st = data[data.rfind(b")") + 2:].split()
    return (int(st[11]) + int(st[12])) / TCK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(mport: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
        return json.load(r)


def wait_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the agent did not start (exit {proc.poll()})")
            time.sleep(0.02)


def run(flumen: str, work: Path, payload: Path, n: int, mode: str) -> dict:
    port, mport = free_port(), free_port()
    text = (HERE / "tap-null.ron").read_text()
    for k, v in (("host", "127.0.0.1"), ("port", port), ("monitoring_port", mport), ("max_line", 65536)):
        text = text.replace("{" + k + "}", str(v))
    topology = work / "tap-null.ron"
    topology.write_text(text)
    log = open(work / "agent.log", "ab")
    agent = subprocess.Popen([flumen, "run", "--quiet", str(topology)], stdout=log, stderr=log)
    tap = stalled = None
    shown = 0
    try:
        wait_port(port, agent)
        wait_port(mport, agent)
        if mode in ("tap", "tap-idle"):
            args = [flumen, "tap", "--url", f"http://127.0.0.1:{mport}"]
            if mode == "tap-idle":
                args += ["--component", "nothing"]
            tap = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(work / "tap.log", "ab"))
            while not (work / "tap.log").read_text().count("flumen tap: tapping") > run.taps:
                time.sleep(0.01)
            run.taps += 1
        elif mode == "tap-stalled":
            stalled = socket.create_connection(("127.0.0.1", mport))
            stalled.sendall(b"GET /tap HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = b""
            while b'"notice":"tapping"' not in head:
                head += stalled.recv(1)
        a0 = cpu_s(agent.pid)
        t0c = cpu_s(tap.pid) if tap else 0.0
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port)) as s:
            with open(payload, "rb") as f:
                s.sendfile(f)
            s.shutdown(socket.SHUT_WR)
            while True:
                m = metrics(mport)
                if int(m["SINK.k1"]["EventDrainSuccessCount"]) >= n:
                    break
                time.sleep(0.01)
        wall = time.monotonic() - t0
        agent_cpu = cpu_s(agent.pid) - a0
        tap_cpu = (cpu_s(tap.pid) - t0c) if tap else 0.0
        dropped = int(m["SOURCE.r1"]["TapDroppedCount"]) + int(m["SINK.k1"]["TapDroppedCount"])
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        if stalled:
            stalled.close()
        if tap:
            tap.wait(timeout=60)
            # "flumen tap: the agent stopped (N events shown, M not shown ...)"
            last = (work / "tap.log").read_text().rsplit("the agent stopped (", 1)[-1]
            shown = int(last.split(" events shown")[0])
    return {"mode": mode, "wall_s": wall, "events_s": n / wall, "agent_cpu_s": agent_cpu,
            "tap_cpu_s": tap_cpu, "shown": shown, "dropped": dropped}


run.taps = 0


def main(flumen: str, n: int, repeat: int) -> int:
    lines = []
    for f in sorted(glob.glob(str(DATA / "*.log"))):
        lines += [x for x in Path(f).read_bytes().replace(b"\r", b"").split(b"\n") if x]
    work = Path(tempfile.mkdtemp(prefix="tap-cost-"))
    try:
        payload = work / "payload"
        with open(payload, "wb") as f:
            f.write(b"".join(lines[i % len(lines)] + b"\n" for i in range(n)))
        print(f"{n} events, {payload.stat().st_size / 1e6:.0f} MB, {repeat} interleaved runs per mode, "
              f"load average {os.getloadavg()[0]:.2f}")
        runs = []
        for rep in range(repeat):
            for mode in MODES:
                r = run(flumen, work, payload, n, mode)
                runs.append(r)
                print(f"  {rep + 1} {mode:<12} {r['wall_s']:6.2f} s {r['events_s'] / 1e6:5.2f} M/s "
                      f"agent {r['agent_cpu_s']:5.2f} CPU s  tap client {r['tap_cpu_s']:5.2f} CPU s  "
                      f"shown {r['shown']:>9}  dropped {r['dropped']:>9}", flush=True)
        base = statistics.median(r["agent_cpu_s"] for r in runs if r["mode"] == "no-tap")
        print(f"\n{'mode':<12} {'events/s':>10} {'agent CPU s':>12} {'vs no-tap':>9} {'tap client CPU s':>17} "
              f"{'shown':>10} {'dropped':>10}")
        for mode in MODES:
            mine = [r for r in runs if r["mode"] == mode]
            med = {k: statistics.median(r[k] for r in mine) for k in mine[0] if k != "mode"}
            print(f"{mode:<12} {med['events_s']:>10,.0f} {med['agent_cpu_s']:>12.2f} "
                  f"{med['agent_cpu_s'] / base:>8.2f}x {med['tap_cpu_s']:>17.2f} {med['shown']:>10,.0f} "
                  f"{med['dropped']:>10,.0f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4_000_000,
                  int(sys.argv[3]) if len(sys.argv) > 3 else 5))
