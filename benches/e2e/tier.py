#!/usr/bin/env python3
"""Start a two-agent flumen tier as ONE process tree, for the e2e harness.

    tier.py FLUMEN COLLECTOR.ron EDGE.ron

COLLECTOR.ron and EDGE.ron are topologies already rendered by the harness (`{render:...}`); the
placeholder `{collector_port}` is still in them (the harness leaves unknown placeholders in
templates alone). This script picks a free port on 127.0.0.1, writes it into both files, starts
the collector as a child, waits until it accepts connections, and then exec()s the edge agent in
its own place. The harness's router PID is therefore the edge agent itself and the collector is
its child, so the harness's process-tree accounting (user+sys CPU of the tree, VmHWM summed over
the tree) covers exactly the two flumen processes and nothing else: this script's own Python
process is replaced by the edge before the clock starts. The collector gets SIGTERM when the edge
exits (PR_SET_PDEATHSIG), so it drains and stops cleanly too.

When a template holds the placeholder `{pki}` (tier-edge-tls.ron, tier-collector-tls.ron), this
script first makes a throw-away CA, a server certificate for `localhost` and a client certificate
with the `openssl` command in a temporary folder, and writes that folder's path in its place: the
edge then posts over https with mutual TLS.
"""

import ctypes
import os
import socket
import subprocess
import sys
import tempfile
import time

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_pki() -> str:
    """A CA (ca.pem), server.pem/server.key for localhost and client.pem/client.key, made with the
    openssl command in a new temporary folder; answers the folder."""
    d = tempfile.mkdtemp(prefix="flumen-tier-pki-")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=tier test CA", "-keyout", "ca.key", "-out", "ca.pem")
    for name, ext in (("server", "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext + "\n")
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return d


def die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, 15)  # SIGTERM


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    flumen, collector, edge = argv
    port = free_port()
    texts = {}
    for path in (collector, edge):
        with open(path) as f:
            texts[path] = f.read()
    pki = make_pki() if any("{pki}" in t for t in texts.values()) else None
    for path, text in texts.items():
        text = text.replace("{collector_port}", str(port))
        if pki:
            text = text.replace("{pki}", pki)
        with open(path, "w") as f:
            f.write(text)
    child = subprocess.Popen([flumen, "run", "--quiet", collector], preexec_fn=die_with_parent)
    deadline = time.monotonic() + 30
    while True:
        if child.poll() is not None:
            print(f"tier.py: the collector exited with code {child.returncode}", file=sys.stderr)
            return 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                print("tier.py: the collector did not listen within 30 s", file=sys.stderr)
                child.kill()
                return 1
            time.sleep(0.02)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(flumen, [flumen, "run", "--quiet", edge])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
