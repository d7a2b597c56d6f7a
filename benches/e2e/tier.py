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
"""

import ctypes
import os
import socket
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, 15)  # SIGTERM


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    flumen, collector, edge = argv
    port = free_port()
    for path in (collector, edge):
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace("{collector_port}", str(port)))
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
