#!/usr/bin/env python3
"""RSS of a flumen agent (Netcat -> Memory, sink down) while N connections each hold one 512-byte event, and while N idle connections are open.
usage: pinned.py BINARY N [extra Netcat options, e.g. ", max_connections: 4000"]"""
import os
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../topologies/data/loghub")
import os, subprocess, sys, time, socket, resource
binary, n = sys.argv[1], int(sys.argv[2]); extra = sys.argv[3] if len(sys.argv) > 3 else ""
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
import tempfile; work = tempfile.mkdtemp()
port = 19000 + os.getpid() % 1000
topo = f'''Topology(
    agent: "pinned",
    sources: {{ "r1": (kind: Netcat(bind: "127.0.0.1:{port}", max_line_length: 1024{extra}), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 100000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: FileRoll(dir: "/proc/no/such/dir"), channel: "c1") }},
)'''
open(f"{work}/pinned.ron", "w").write(topo)
p = subprocess.Popen([binary, "run", f"{work}/pinned.ron"], stderr=open(f"{work}/pinned.log", "w"), stdout=subprocess.DEVNULL)
def rss():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS:"): return int(l.split()[1])
for _ in range(300):
    try: socket.create_connection(("127.0.0.1", port)).close(); break
    except OSError: time.sleep(0.05)
time.sleep(0.5)
base = rss()
line = open(DATA + "/" + sorted(f for f in os.listdir(DATA) if f.endswith(".log"))[0], "rb").readline().rstrip()
def mk(i):
    l = (b"%d " % i + line + b" ." * 300)[:511] + b"\n"
    return l
idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
time.sleep(1.0)
idle_rss = rss()
for s in idle: s.close()
time.sleep(1.0)
base2 = rss()
conns = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(mk(i)); conns.append(s)
for s in conns:
    assert s.recv(3) == b"OK\n"
held = rss()
p.terminate(); p.wait()
print(f"{os.path.basename(binary)}: idle {n} connections: {base} -> {idle_rss} KiB ({(idle_rss-base)*1024//n} B/conn); "
      f"{n} connections holding one 512-byte event: {base2} -> {held} KiB ({(held-base2)*1024//n} B/conn)")
