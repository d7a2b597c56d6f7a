#!/usr/bin/env python3
"""The e2e harness (../shared/bench/e2e.py), able to read gzip and zstd output.

    e2e-compressed.py [e2e.py options and routers ...]

Takes exactly e2e.py's command line and runs e2e.py's own main(): same sender, same interleaving,
same process-tree CPU and RSS accounting, same clock, same verification. The only change is how
output files whose name ends in `.gz`, `.zst`, `.gz.tmp` or `.zst.tmp` (the Hdfs sink's `format:
Gzip` or `Zstd`, finished or still in use) are read:

- while the clock runs, e2e.py polls the total size of the output files, and counts lines only
  once that size reaches the payload's size or has not grown for `--stall` seconds (1 s). A compressed
  file never reaches the payload's size, so for it the count always comes from the stall rule:
  the clock stops at the first poll that saw the final size (as for any router), but the harness
  notices it `--stall` seconds later, and the CPU sample closing the run is taken then (the
  agent's idle CPU over that second is included in its CPU seconds).
- counting lines decompresses such files (gzip incrementally with zlib, zstd by running
  `zstd -dcq` on the whole file when its size changed; in the harness's process or its child,
  outside the router's process tree) instead of reading their bytes;
- verification (after the router stopped, not timed) decompresses each such file to a plain file
  beside it and removes it, then runs e2e.py's verification unchanged.

Plain files are read exactly as e2e.py reads them, so routers writing plain files measure the
same under this script as under e2e.py, and both kinds can be compared in one invocation.

The harness is found at $E2E_HARNESS, else ../../../shared/bench/e2e.py from this file.
"""

import importlib.util
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = Path(os.environ.get("E2E_HARNESS", HERE.parents[2] / "shared" / "bench" / "e2e.py"))

GZ = re.compile(r"\.gz(\.tmp)?$")
ZST = re.compile(r"\.zst(\.tmp)?$")
ZSTD = os.environ.get("E2E_ZSTD", "zstd")


def zstd_lines(path: str, dst=None) -> int:
    """LFs in the decompressed zstd file (written to `dst` too if given). A file still being
    written ends in an unfinished frame: zstd then exits non-zero after writing what it could."""
    lines = 0
    with open(path, "rb") as src:
        p = subprocess.Popen([ZSTD, "-dcq"], stdin=src, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        while chunk := p.stdout.read(16 << 20):
            lines += chunk.count(b"\n")
            if dst is not None:
                dst.write(chunk)
        p.wait()
    return lines


def load_harness():
    spec = importlib.util.spec_from_file_location("e2e", HARNESS)
    e2e = importlib.util.module_from_spec(spec)
    sys.modules["e2e"] = e2e
    spec.loader.exec_module(e2e)
    return e2e


def install(e2e) -> None:
    plain_counter = e2e.LineCounter
    plain_verify = e2e.verify_output

    class LineCounter(plain_counter):
        """e2e.LineCounter (same reads for plain files), decompressing gzip and zstd files."""

        def __init__(self, outdir):
            super().__init__(outdir)
            self.gz: dict = {}  # path -> (compressed bytes read, LFs, decompressor)
            self.zst: dict = {}  # path -> (size when counted, LFs)

        def update(self) -> int:
            state, gz, zst = {}, {}, {}
            for path in e2e.output_files(self.outdir):
                if ZST.search(path):
                    try:
                        size = os.stat(path).st_size
                    except FileNotFoundError:
                        continue
                    seen = self.zst.get(path)
                    zst[path] = seen if seen and seen[0] == size else (size, zstd_lines(path))
                    continue
                compressed = bool(GZ.search(path))
                if compressed:
                    off, lines, d = self.gz.get(path, (0, 0, None))
                else:
                    (off, lines), d = self.state.get(path, (0, 0)), None
                try:
                    with open(path, "rb") as f:
                        if os.fstat(f.fileno()).st_size < off:  # truncated or replaced: recount
                            off, lines, d = 0, 0, None
                        if compressed and d is None:
                            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                        f.seek(off)
                        while chunk := f.read(16 << 20):
                            off += len(chunk)
                            if not compressed:
                                lines += chunk.count(b"\n")
                            elif not d.eof:
                                lines += d.decompress(chunk).count(b"\n")
                except FileNotFoundError:
                    continue
                if compressed:
                    gz[path] = (off, lines, d)
                else:
                    state[path] = (off, lines)
            self.state, self.gz, self.zst = state, gz, zst
            return (sum(lines for _, lines in state.values()) + sum(lines for _, lines, _ in gz.values())
                    + sum(lines for _, lines in zst.values()))

    def verify_output(outdir, expected, n):
        for path in e2e.output_files(outdir):
            if ZST.search(path):
                with open(path + ".plain", "wb") as dst:
                    zstd_lines(path, dst)
                os.remove(path)
            elif GZ.search(path):
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                with open(path, "rb") as src, open(path + ".plain", "wb") as dst:
                    while chunk := src.read(16 << 20):
                        if not d.eof:
                            dst.write(d.decompress(chunk))
                    if not d.eof:
                        dst.write(d.flush())
                os.remove(path)
        return plain_verify(outdir, expected, n)

    e2e.LineCounter = LineCounter
    e2e.verify_output = verify_output


if __name__ == "__main__":
    harness = load_harness()
    install(harness)
    sys.exit(harness.main(sys.argv[1:]))
