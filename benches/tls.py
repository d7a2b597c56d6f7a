#!/usr/bin/env python3
"""What TLS costs the sources: plain against TLS throughput of one Netcat connection, and TLS
handshakes per second on the Http source (openssl s_time), through the real flumen binary.

    benches/tls.py --flumen target/release/flumen --certs DIR [--lines 1000000] [--seconds 10]

DIR holds ca.pem, server.pem/.key (for 127.0.0.1) and client.pem/.key, e.g. made with the
openssl commands of the README's TLS section. Netcat: one connection sends the Loghub lines of
topologies/data/loghub (repeated to --lines) with ack_every_event: false into a Memory channel
and a FileRoll sink; the clock stops when the output holds every byte. Handshakes: s_time makes
new connections (full handshakes, no session reuse) for --seconds, without and with a client
certificate. Python 3 standard library only; prints one line per figure.
"""

import argparse
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def payload(n):
    lines = []
    for f in sorted((ROOT / "topologies/data/loghub").glob("*.log")):
        lines += [l.rstrip("\r") for l in f.read_text(errors="replace").split("\n") if l.rstrip("\r")]
    out = [lines[i % len(lines)] for i in range(n)]
    return ("\n".join(out) + "\n").encode()


def tls_option(certs, client_ca):
    ca = f'client_ca: Some("{certs}/ca.pem"), ' if client_ca else ""
    return f'tls: Some(TlsServer(cert: "{certs}/server.pem", key: "{certs}/server.key", {ca}))'


def start(flumen, work, source):
    topo = work / "bench.ron"
    topo.write_text(f"""Topology(
    agent: "bench",
    sources: {{ "r1": (kind: {source}, channels: ["c1"], batch_size: 1000) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "{work}/out", roll_interval: "0s"), channel: "c1", batch_size: 1000) }},
)""")
    log = open(work / "flumen.log", "w")
    return subprocess.Popen([flumen, "run", "--quiet", str(topo)], stdout=subprocess.DEVNULL, stderr=log)


def wait_listening(port, proc):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit("flumen exited")
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit("flumen does not listen")


def out_bytes(work):
    return sum(p.stat().st_size for p in (work / "out").rglob("*") if p.is_file())


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def netcat(flumen, certs, data, tls):
    with tempfile.TemporaryDirectory() as w:
        work, port = Path(w), free_port()
        opt = ", " + tls_option(certs, False) if tls else ""
        proc = start(flumen, work, f'Netcat(bind: "127.0.0.1:{port}", max_line_length: 65536, ack_every_event: false{opt})')
        try:
            wait_listening(port, proc)
            time.sleep(0.2)  # the probe connections above are closed
            cpu0 = cpu_seconds(proc.pid)
            sock = socket.create_connection(("127.0.0.1", port))
            if tls:
                ctx = ssl.create_default_context(cafile=f"{certs}/ca.pem")
                sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
            t0 = time.time()
            sock.sendall(data)
            while out_bytes(work) < len(data):
                time.sleep(0.005)
            took = time.time() - t0
            cpu = cpu_seconds(proc.pid) - cpu0
            sock.close()
            return took, cpu
        finally:
            proc.terminate()
            proc.wait()


def handshakes(flumen, certs, seconds, mutual):
    with tempfile.TemporaryDirectory() as w:
        work, port = Path(w), free_port()
        proc = start(flumen, work, f'Http(bind: "127.0.0.1:{port}", {tls_option(certs, mutual)})')
        try:
            wait_listening(port, proc)
            cmd = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(seconds),
                   "-CAfile", f"{certs}/ca.pem"]
            if mutual:
                cmd += ["-cert", f"{certs}/client.pem", "-key", f"{certs}/client.key"]
            cpu0 = cpu_seconds(proc.pid)
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            cpu = cpu_seconds(proc.pid) - cpu0
            m = re.search(r"(\d+) connections in (\d+) real seconds", out)
            if not m:
                sys.exit(f"unexpected s_time output:\n{out}")
            return int(m.group(1)) / int(m.group(2)), cpu
        finally:
            proc.terminate()
            proc.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flumen", required=True)
    p.add_argument("--certs", required=True)
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    certs = str(Path(a.certs).resolve())
    data = payload(a.lines)
    for tls in [False, True] * a.repeat:
        took, cpu = netcat(a.flumen, certs, data, tls)
        print(f"netcat {'tls  ' if tls else 'plain'} {a.lines} lines {len(data) / 1e6:.0f} MB: {took:.2f} s, "
              f"{a.lines / took:,.0f} events/s, {len(data) / took / 1e6:.1f} MB/s, agent CPU {cpu:.2f} s")
    for mutual in [False, True]:
        rate, cpu = handshakes(a.flumen, certs, a.seconds, mutual)
        print(f"http handshakes {'mutual TLS' if mutual else 'TLS       '}: {rate:,.0f} /s "
              f"(openssl s_time -new, {a.seconds} s), agent CPU {cpu:.2f} s")


if __name__ == "__main__":
    main()
