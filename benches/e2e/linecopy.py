#!/usr/bin/env python3
"""A minimal router for the e2e harness: TCP connections in, whole lines appended to one file.

    linecopy.py HOST PORT OUTFILE

One thread, one epoll loop: accepts every connection (listen backlog 4096), reads each readable
socket with `recv` of up to 256 KiB, and appends to OUTFILE every complete line it has of that
connection with one `write(2)` (the bytes after a connection's last LF wait for its next read), so
lines of different connections never interleave and the harness's line-for-line verification
applies. No queue, no parsing beyond finding the last LF, no acknowledgement.

It is the reference of `bench_all.py`'s connections section: how fast the harness's sender and
the kernel deliver N lines over C connections to a reader that does almost nothing, beside
`socat` (which forks a process per connection) and the routers. When a router at C connections
is far below this copy's rate at C connections, the router is the limit, not the sender.
"""

import os
import select
import socket
import sys


def main(host: str, port: int, outfile: str) -> int:
    out = os.open(outfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(4096)
    ls.setblocking(False)
    ep = select.epoll()
    ep.register(ls.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    rest: dict[int, bytes] = {}
    while True:
        for fd, _ in ep.poll():
            if fd == ls.fileno():
                while True:
                    try:
                        c, _ = ls.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    conns[c.fileno()] = c
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            c = conns[fd]
            for _ in range(4):  # a few reads per wake-up, then the next connection
                try:
                    data = c.recv(1 << 18)
                except BlockingIOError:
                    break
                except ConnectionError:
                    data = b""
                if not data:
                    tail = rest.pop(fd, b"")
                    if tail:
                        os.write(out, tail)
                    ep.unregister(fd)
                    del conns[fd]
                    c.close()
                    break
                if fd in rest:
                    data = rest.pop(fd) + data
                cut = data.rfind(b"\n") + 1
                if cut < len(data):
                    rest[fd] = data[cut:]
                if cut:
                    view = memoryview(data)[:cut]
                    while view:
                        view = view[os.write(out, view):]


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
