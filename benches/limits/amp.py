#!/usr/bin/env python3
"""RSS of a flumen agent with an Http source while C clients each post one 10 MiB body of empty lines.
usage: amp.py BINARY CONCURRENT [extra Http options, e.g. ", max_events_per_request: 20000000"]"""
import os, subprocess, sys, time, threading, http.client, socket
binary, conc = sys.argv[1], int(sys.argv[2])
extra = sys.argv[3] if len(sys.argv) > 3 else ""
port = 18000 + os.getpid() % 1000
mon = port + 1
topo = f'''Topology(
    agent: "amp",
    monitoring: Some(Http(bind: "127.0.0.1:{mon}")),
    sources: {{ "r1": (kind: Http(bind: "127.0.0.1:{port}", format: Lines{extra}), channels: ["c1"]) }},
    channels: {{ "c1": Memory(capacity: 10000, transaction_capacity: 1000) }},
    sinks: {{ "k1": (kind: Null(), channel: "c1") }},
)'''
import tempfile; work = tempfile.mkdtemp(); open(f"{work}/amp.ron", "w").write(topo)
p = subprocess.Popen([binary, "run", f"{work}/amp.ron"], stderr=open(f"{work}/amp.log", "w"), stdout=subprocess.DEVNULL)
def rss(kind):
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith(kind): return int(l.split()[1])
    raise SystemExit("no " + kind)
for _ in range(300):
    try: socket.create_connection(("127.0.0.1", port)).close(); break
    except OSError: time.sleep(0.05)
base = rss("VmRSS:")
body = b"\n" * (10 * 1024 * 1024)
results = []
def post():
    t = time.time()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/", body=body, headers={"Content-Type": "text/plain"})
    r = c.getresponse()
    results.append((r.status, r.getheader("X-Flumen-Committed"), r.read()[:120], round(time.time() - t, 2)))
ts = [threading.Thread(target=post) for _ in range(conc)]
[t.start() for t in ts]; [t.join() for t in ts]
peak = rss("VmHWM:")
p.terminate(); p.wait()
print(f"{os.path.basename(binary)} concurrent={conc} {extra!r}: RSS before {base/1024:.0f} MiB, peak {peak/1024:.0f} MiB; answers {results}")
