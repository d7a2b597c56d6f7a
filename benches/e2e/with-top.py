#!/usr/bin/env python3
"""Run a flumen agent with `flumen top` watching it, as ONE process tree, for the e2e harness.

    with-top.py [--no-top] FLUMEN TOPOLOGY.ron

TOPOLOGY.ron is a topology already rendered by the harness (`{render:...}`) with the placeholder
`{monitoring_port}` still in it (the harness leaves unknown placeholders alone). This script picks
a free port on 127.0.0.1, writes it into the file, and forks a child that runs
`FLUMEN top --url http://127.0.0.1:PORT` on a pseudo-terminal of 200 columns by 50 lines, reading
(and discarding) what top draws, as a terminal would. Then it exec()s the agent in its own place,
so the harness's router PID is the agent and top is in its process tree: the tree's CPU covers the
agent, top and the pseudo-terminal's reader. The child gets SIGTERM when the agent exits
(PR_SET_PDEATHSIG); closing the pseudo-terminal then hangs top up. With --no-top only the port is
written in and the agent exec()ed: the same agent with its monitoring server, unwatched.
"""

import ctypes
import fcntl
import os
import pty
import signal
import socket
import struct
import sys
import termios

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def watch(flumen: str, port: int) -> None:
    """In the forked child: top on a pseudo-terminal, its output read until it ends."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    pid, master = pty.fork()
    if pid == 0:
        fcntl.ioctl(sys.stdout.fileno(), termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        os.execv(flumen, [flumen, "top", "--url", f"http://127.0.0.1:{port}"])
    signal.signal(signal.SIGTERM, lambda *_: (os.kill(pid, signal.SIGHUP), os._exit(0)))
    while True:
        try:
            if not os.read(master, 65536):
                break
        except OSError:
            break
    os._exit(0)


def main(argv: list[str]) -> int:
    top = argv[:1] != ["--no-top"]
    argv = argv if top else argv[1:]
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    flumen, topology = argv
    port = free_port()
    with open(topology) as f:
        text = f.read()
    with open(topology, "w") as f:
        f.write(text.replace("{monitoring_port}", str(port)))
    sys.stdout.flush()
    sys.stderr.flush()
    if top and os.fork() == 0:
        watch(flumen, port)
    os.execv(flumen, [flumen, "run", "--quiet", topology])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
