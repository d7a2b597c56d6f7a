#!/usr/bin/env python3
"""`make bench-e2e`: every end-to-end comparison of the README's performance tables, in one command.

    bench_all.py [--flumen PATH] [--quick] [--bench-sections LIST] [--readme | --no-readme] [--bench-n N ...]

Runs, against the peers that are installed (rsyslog, syslog-ng, socat; a missing one is left out
and named in the output), from the repository's root:

| section       | what                                                                                   |
|---------------|----------------------------------------------------------------------------------------|
| `peaks`       | e2e-plus.py: flumen-mem, flumen-disk, rsyslog-mem, syslog-ng-mem, syslog-ng-disk, socat |
| `latency`     | latency.py at 10/50/90 % of each router's peak measured by `peaks` in this run           |
| `backlog`     | backlog-open.py: open time and first batch of a RocksDb channel holding a backlog        |
| `connections` | e2e-plus.py at 1 and at BENCH_CONNS connections (flumen-mem, the peers, linecopy, socat), the latter with e2e.py's sender and with `--prestart`; connections.py (KiB per connection) |
| `sizes`       | e2e-plus.py with every event BENCH_LINE_BYTES long (1 KiB, 16 KiB): MB/s and RSS        |
| `fanout`      | e2e-plus.py --copies 4: one source replicated to four file outputs                        |

Each section writes its raw JSON and its console output (txt) to BENCH_OUT (default
benches/e2e/results) as TAG-SECTION[-VARIANT].json/.txt, TAG being `DATE-bench-e2e` (with `-quick`
in quick mode); then all tables go, as Markdown, to TAG.md and (full mode, or --readme) into
README.md between the lines `<!-- bench-e2e:begin -->` and `<!-- bench-e2e:end -->`, headed by
the date, the machine (nproc, memory, kernel, CPU), the load average and the versions.

Sizes are options, as environment variables (or the option of the same name in lower case,
`--bench-n 1000000`); quick mode (`--quick`, BENCH_QUICK=1) changes the defaults to the second
value, for trying the command (about 5 minutes instead of about 30 on a 2-core machine):

| variable              | full          | quick      | meaning                                             |
|-----------------------|---------------|------------|-----------------------------------------------------|
| BENCH_REPEAT          | 3             | 1          | interleaved runs per router (every section)         |
| BENCH_N               | 2000000       | 200000     | events per run, `peaks`                             |
| BENCH_LATENCY_SECONDS | 10            | 2          | seconds of paced sending per router and load        |
| BENCH_LATENCY_LOADS   | 10,50,90      | 10,50,90   | loads in % of the peak                              |
| BENCH_BACKLOG_SIZES   | 100000,1000000,10000000 | 10000,100000 | backlogs in events                    |
| BENCH_CONN_N          | 2000000       | 1000000    | events per run, `connections` (fewer than ~1,000 per connection measure the sender's start) |
| BENCH_CONNS           | 1000          | 1000       | connections of the many-connection runs and of connections.py |
| BENCH_SIZE_BYTES      | 1000000000    | 100000000  | payload bytes per run, `sizes` (events = bytes / line bytes) |
| BENCH_LINE_BYTES      | 1024,16384    | 1024,16384 | event sizes, `sizes`                                |
| BENCH_FANOUT_N        | 1000000       | 100000     | events per run, `fanout`                            |
| BENCH_TIMEOUT         | 900           | 300        | seconds per e2e run until all events must be out    |
| BENCH_SECTIONS        | all           | all        | comma-separated subset of the sections above        |
| BENCH_OUT             | benches/e2e/results | $TMPDIR/bench-e2e-quick | where the raw results go          |
| BENCH_README          | 1             | 0          | 1: write the tables into README.md                  |

Exit status: 0 when every run of every section passed, 1 when some failed (the tables still show
what passed, and name what failed), 2 on a set-up error (no flumen binary, no README markers).
Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BEGIN, END = "<!-- bench-e2e:begin -->", "<!-- bench-e2e:end -->"

FULL = {
    "BENCH_REPEAT": "3", "BENCH_N": "2000000", "BENCH_LATENCY_SECONDS": "10",
    "BENCH_LATENCY_LOADS": "10,50,90", "BENCH_BACKLOG_SIZES": "100000,1000000,10000000",
    "BENCH_CONN_N": "2000000", "BENCH_CONNS": "1000", "BENCH_SIZE_BYTES": "1000000000",
    "BENCH_LINE_BYTES": "1024,16384", "BENCH_FANOUT_N": "1000000", "BENCH_TIMEOUT": "900",
    "BENCH_SECTIONS": "peaks,latency,backlog,connections,sizes,fanout",
    "BENCH_OUT": str(HERE / "results"), "BENCH_README": "1",
}
QUICK = {
    **FULL, "BENCH_REPEAT": "1", "BENCH_N": "200000", "BENCH_LATENCY_SECONDS": "2",
    "BENCH_BACKLOG_SIZES": "10000,100000", "BENCH_CONN_N": "1000000",
    "BENCH_SIZE_BYTES": "100000000", "BENCH_FANOUT_N": "100000", "BENCH_TIMEOUT": "300",
    "BENCH_README": "0", "BENCH_OUT": str(Path(tempfile.gettempdir()) / "bench-e2e-quick"),
}
SECTIONS = FULL["BENCH_SECTIONS"].split(",")

SOCAT = ("socat -u -b 1048576 TCP-LISTEN:{port},bind={host},reuseaddr,fork,backlog=1024 "
         "OPEN:{outfile},creat,append")
RSYSLOG_FANOUT = "{rsyslogd} -n -f {render:benches/e2e/peers/rsyslog-fanout.conf} -i {workdir}/rsyslogd.pid"
SYSLOG_NG_FANOUT = ("{syslog_ng} -F --stderr -f {render:benches/e2e/peers/syslog-ng-fanout.conf} "
                    "--persist-file={data}/syslog-ng.persist --pidfile={workdir}/syslog-ng.pid "
                    "--control={workdir}/syslog-ng.ctl")


# --------------------------------------------------------------------------------------------
# Configuration, machine, peers
# --------------------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Every end-to-end comparison of the README's "
                                            "performance tables (see this file's docstring).")
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache" / "flumen-target"))
    p.add_argument("--flumen", default=os.environ.get("FLUMEN", str(Path(target) / "release" / "flumen")),
                   help="the flumen binary (default $FLUMEN, else $CARGO_TARGET_DIR/release/flumen)")
    p.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
                   help="small sizes, one run each, no README update (BENCH_QUICK=1)")
    readme = p.add_mutually_exclusive_group()
    readme.add_argument("--readme", dest="readme", action="store_const", const="1")
    readme.add_argument("--no-readme", dest="readme", action="store_const", const="0")
    for key in FULL:
        p.add_argument("--" + key.lower().replace("_", "-"), dest=key, metavar="VALUE",
                       help=f"{key} (full: {FULL[key]}, quick: {QUICK[key]})")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key in FULL:
        if getattr(args, key) is None:
            setattr(args, key, os.environ.get(key) or defaults[key])
    if args.readme is not None:
        args.BENCH_README = args.readme
    args.sections = [s.strip() for s in args.BENCH_SECTIONS.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    return args


def first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def find_peer(prog: str, env: str) -> str | None:
    """As e2e.py looks for its peers ($ENV, PATH plus /usr/sbin and /sbin, $E2E_PEERS_DIR/bin), then
    the copy `make test` unpacks under the target dir."""
    explicit = os.environ.get(env)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which(prog, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin",
                                                     "/usr/sbin", "/sbin"]))
    if found:
        return found
    wrapper = Path(os.environ.get("E2E_PEERS_DIR", Path.home() / ".cache" / "e2e-peers")) / "bin" / prog
    if os.access(wrapper, os.X_OK):
        return str(wrapper)
    # the syslog-ng that `make test` unpacks for the TLS tests (tests/peers/syslog-ng.sh)
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "flumen-target"))
    unpacked = target / "peers" / prog / "bin" / prog
    return str(unpacked) if os.access(unpacked, os.X_OK) else None


def machine() -> dict:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1])
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "mem_gib": round(mem / (1 << 20), 1),
            "kernel": platform.release(), "cpu": model, "host": platform.node(),
            "loadavg": os.getloadavg()}


def git_revision() -> str:
    rev = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) or "unknown"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return rev + ("+changes" if dirty else "")


# --------------------------------------------------------------------------------------------
# Running the scripts
# --------------------------------------------------------------------------------------------

class Runner:
    def __init__(self, args: argparse.Namespace, tag: str, out: Path):
        self.args, self.tag, self.out = args, tag, out
        self.failures: list[str] = []

    def run(self, name: str, argv: list[str]) -> dict | None:
        """Runs one script (cwd: the repository's root), its output to the console and NAME.txt,
        its --json to NAME.json; returns the parsed JSON (None if the script wrote none)."""
        js, txt = self.out / f"{self.tag}-{name}.json", self.out / f"{self.tag}-{name}.txt"
        if js.exists():
            js.unlink()
        cmd = [sys.executable, *map(str, argv), "--json", str(js)]
        shown = " ".join(str(a) if " " not in str(a) else repr(str(a)) for a in cmd[1:])
        print(f"\n=== {name}: {shown}", flush=True)
        t = time.monotonic()
        with open(txt, "w") as log:
            log.write(f"$ {shown}\n")
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1)
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
            proc.wait()
            log.write(f"(exit {proc.returncode}, {time.monotonic() - t:.0f} s)\n")
        if proc.returncode != 0:
            self.failures.append(f"{name} (exit {proc.returncode}; see {txt.name})")
        try:
            return json.loads(js.read_text())
        except (OSError, ValueError):
            return None


def e2e_plus(*rest) -> list[str]:
    return [str(HERE / "e2e-plus.py"), *map(str, rest)]


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------

def fmt(v, spec: str, missing: str = "–") -> str:
    return missing if v is None else format(v, spec)


def ratio(a, b) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def rows_by_router(d: dict | None) -> dict:
    return {r["router"]: r for r in (d or {}).get("summary", [])}


def e2e_table(d: dict | None, bases: list[str], extra: tuple = ()) -> list[str]:
    """The summary of an e2e(-plus) JSON as a Markdown table with ratios to each of `bases`."""
    if not d:
        return ["(no result)"]
    rows = d["summary"]
    by = rows_by_router(d)
    n = d["meta"]["payload"]["n"]
    bases = [b for b in bases if b in by and by[b].get("events_per_s")]
    head = ["router", "ok/runs", "events/s (min–max)", "MB/s", "CPU s", "CPU µs/event", "peak RSS MiB",
            *[f"vs {b}" for b in bases], *[e[0] for e in extra]]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        eps = r.get("events_per_s")
        cells = [r["router"], f"{r['ok']}/{r['runs']}",
                 (f"{eps:,.0f} ({r['events_per_s_min']:,.0f}–{r['events_per_s_max']:,.0f})" if eps else "failed"),
                 fmt(r.get("mb_per_s"), ".1f"), fmt(r.get("cpu_s"), ".2f"),
                 fmt(r.get("cpu_s") and r["cpu_s"] / n * 1e6, ".2f"), fmt(r.get("peak_rss_mib"), ".1f"),
                 *[ratio(eps, by[b]["events_per_s"]) for b in bases],
                 *[e[1](r) for e in extra]]
        out.append("| " + " | ".join(cells) + " |")
    return out


def payload_line(d: dict | None, connections: bool = True) -> str:
    if not d:
        return ""
    p = d["meta"]["payload"]
    lb = f", every event {p['line_bytes']:,} bytes" if p.get("line_bytes") else ""
    runs = max(r["runs"] for r in d["summary"])
    conn = f" over {p['connections']:,} connection{'s' if p['connections'] > 1 else ''}" if connections else ""
    return (f"{p['n']:,} events ({p['bytes'] / 1e6:,.0f} MB{lb}){conn}, {runs} interleaved "
            f"run{'s' if runs > 1 else ''} per router")


def section_peaks(d: dict | None) -> list[str]:
    out = ["#### Peaks", "",
           f"{payload_line(d)}. flumen-mem: `fileroll-mem.ron` (Netcat → Memory → FileRoll); flumen-disk: "
           "`fileroll-disk.ron` (`RocksDb(sync: true)`, fsync per group of puts); socat: "
           "`socat -u -b 1048576` into one file (a plain copy, the ceiling). syslog-ng-disk writes every "
           "event to its disk buffer but never fsyncs.", ""]
    out += e2e_table(d, ["rsyslog-mem", "syslog-ng-disk", "socat"])
    by = rows_by_router(d)

    def eps(name):
        return by.get(name, {}).get("events_per_s")

    def rss(name):
        return by.get(name, {}).get("peak_rss_mib")
    notes = []
    if eps("flumen-mem") and eps("socat"):
        notes.append(f"flumen-mem moves {eps('flumen-mem') / eps('socat'):.2f}× the plain copy's events/s")
    if eps("flumen-disk") and eps("syslog-ng-disk"):
        notes.append(f"flumen-disk {eps('flumen-disk') / eps('syslog-ng-disk'):.1f}× syslog-ng-disk's events/s "
                     f"at {rss('flumen-disk') / rss('syslog-ng-disk'):.1f}× its peak RSS")
    if notes:
        out += ["", "; ".join(notes) + "."]
    return out


def section_latency(d: dict | None, peaks: dict) -> list[str]:
    out = ["#### Latency", ""]
    if not d:
        return out + ["(no result)"]
    out.append(f"latency.py: one connection, paced in 1 ms bursts at 10/50/90 % of each router's peak "
               f"above, {d.get('seconds', 0):g} s per router and load; latency from the send time stamped "
               "in the last line of each burst to the time the reader saw it in the output (resolution "
               "about 1 ms). `behind`: the sender did not reach 95 % of the rate asked; `incomplete`: "
               "lines missing at the end.")
    out += ["", "| router | load | peak events/s | events/s sent | p50 ms | p99 ms | p99.9 ms | max ms | note |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in d["runs"]:
        note = ", ".join(x for x in ("behind" if r.get("sender_behind") else "",
                                     "" if r.get("ok") else "incomplete") if x)
        out.append(f"| {r['router']} | {r['load_percent']} % | {fmt(peaks.get(r['router']), ',.0f')} | "
                   f"{fmt(r.get('sent_rate'), ',')} | {fmt(r.get('p50_ms'), '')} | {fmt(r.get('p99_ms'), '')} | "
                   f"{fmt(r.get('p999_ms'), '')} | {fmt(r.get('max_ms'), '')} | {note} |")
    return out


def section_backlog(d: dict | None) -> list[str]:
    out = ["#### A backlog opening", ""]
    if not d:
        return out + ["(no result)"]
    reps = max((r["rep"] for r in d["runs"]), default=0) + 1
    out.append("backlog-open.py: a `RocksDb` channel filled by a real agent with N Loghub lines and stopped "
               "(the backlog in table files), then `flumen run` on it → FileRoll; times from the process "
               f"start, medians of {reps} run(s) per size (directories in the page cache).")
    out += ["", "| events | on disk MB | open log line s | first batch s | all delivered s | events/s, start to all delivered "
            "| RSS at first batch MiB | peak RSS MiB | ok/runs |", "|---|---|---|---|---|---|---|---|---|"]
    for s in d["summary"]:
        out.append(f"| {s['n']:,} | {fmt(s.get('dir_bytes') and s['dir_bytes'] / 1e6, ',.0f')} | "
                   f"{fmt(s.get('open_log_s'), '.3f')} | {fmt(s.get('first_batch_s'), '.3f')} | "
                   f"{fmt(s.get('drain_s'), '.2f')} | {fmt(s.get('drain_events_per_s'), ',.0f')} | "
                   f"{fmt(s.get('rss_first_batch_mib'), '.1f')} | {fmt(s.get('peak_rss_mib'), '.1f')} | "
                   f"{s['ok']}/{s['runs']} |")
    lines = {r.get("open_log_line") for r in d["runs"] if r.get("open_log_line")}
    if lines:
        out += ["", "The open log line (last run): `" + sorted(lines)[-1][-200:].replace("`", "'") + "`"]
    return out


def section_connections(one: dict | None, stock: dict | None, many: dict | None, mem: dict | None,
                        conns: int, nproc: int) -> list[str]:
    out = ["#### Many connections", ""]
    b1, bs, bm = rows_by_router(one), rows_by_router(stock), rows_by_router(many)
    out.append(f"The same events over 1 and over {conns:,} connections ({payload_line(many or one, False)}). "
               "Sender: e2e.py's (its 2 × C threads are started after \"go\", inside the clock) or the same "
               "sender with its threads started before the clock (`e2e-plus.py --prestart`; the 1-connection "
               "runs too). linecopy: `linecopy.py`, one Python epoll loop appending whole lines to a file (a "
               "reader doing almost nothing: what the sender and the kernel deliver); socat forks a process per "
               "connection (checked by bytes and lines only with many connections). Sender CPU: the sending "
               "process, whose CPU includes loopback TCP work of both ends.")
    out += ["", f"| router | events/s, 1 connection | events/s, {conns:,}, e2e.py sender | events/s, {conns:,} "
            f"| {conns:,} vs 1 | CPU s, {conns:,} | sender CPU s, {conns:,} | peak RSS MiB, 1 | peak RSS MiB, {conns:,} "
            f"| vs rsyslog-mem, {conns:,} |", "|---|---|---|---|---|---|---|---|---|---|"]
    base = bm.get("rsyslog-mem", {}).get("events_per_s")
    for name in dict.fromkeys([*b1, *bs, *bm]):
        a, st, m = b1.get(name, {}), bs.get(name, {}), bm.get(name, {})
        out.append(f"| {name} | {fmt(a.get('events_per_s'), ',.0f')} | {fmt(st.get('events_per_s'), ',.0f')} | "
                   f"{fmt(m.get('events_per_s'), ',.0f')} | {ratio(m.get('events_per_s'), a.get('events_per_s'))} | "
                   f"{fmt(m.get('cpu_s'), '.2f')} | {fmt(m.get('sender_cpu_s'), '.2f')} | "
                   f"{fmt(a.get('peak_rss_mib'), '.1f')} | {fmt(m.get('peak_rss_mib'), '.1f')} | "
                   f"{ratio(m.get('events_per_s'), base)} |")
    f, lc = bm.get("flumen-mem", {}), bm.get("linecopy", {})
    if f.get("events_per_s") and lc.get("events_per_s") and many:
        n = many["meta"]["payload"]["n"]
        wall_f, wall_l = n / f["events_per_s"], n / lc["events_per_s"]
        busy_f = ((f.get("cpu_s") or 0) + (f.get("sender_cpu_s") or 0)) / wall_f
        busy_l = ((lc.get("cpu_s") or 0) + (lc.get("sender_cpu_s") or 0)) / wall_l
        verdict = ("a reader doing almost nothing is not clearly faster, so at this count the sender and the "
                   "kernel set the rate, not flumen" if lc["events_per_s"] < 1.25 * f["events_per_s"]
                   else "a reader doing almost nothing takes the events faster, so at this count flumen is the limit")
        sf = f.get("sender_cpu_s") or 0
        out += ["", f"Who is the limit at {conns:,} connections (sender started before the clock): linecopy took "
                f"{lc['events_per_s']:,.0f} events/s ({lc['events_per_s'] / f['events_per_s']:.2f}× flumen-mem's "
                f"{f['events_per_s']:,.0f}); the sender used {sf / wall_f:.2f} CPUs while flumen-mem ran, and router "
                f"plus sender {busy_f:.2f} of {nproc} CPUs with flumen-mem, {busy_l:.2f} with linecopy: {verdict}."]
        fs = bs.get("flumen-mem", {}).get("events_per_s")
        if fs:
            out[-1] += (f" With e2e.py's own sender flumen-mem reached {fs:,.0f} events/s at {conns:,} connections, "
                        f"{fs / f['events_per_s']:.2f}× its rate with the threads started beforehand.")
    out += ["", f"Memory per connection (connections.py): {conns:,} connections opened to a running router after a "
            "warm-up of 10,000 lines, RSS (`VmRSS` of the process tree) before, with every connection idle, and "
            "after each sent one line; the difference divided by the connections.", ""]
    if not mem:
        return out + ["(no result)"]
    out += ["| router | RSS before MiB | KiB per idle connection | KiB per connection after one line | peak RSS MiB | ok/runs |",
            "|---|---|---|---|---|---|"]
    for r in mem["summary"]:
        out.append(f"| {r['router']} | {fmt(r.get('rss_before_mib') or None, '.1f')} | "
                   f"{fmt(r.get('idle_kib_per_conn'), '.1f')} | {fmt(r.get('used_kib_per_conn'), '.1f')} | "
                   f"{fmt(r.get('peak_rss_mib') or None, '.1f')} | {r['ok']}/{r['runs']} |")
    return out


def section_sizes(results: dict) -> list[str]:
    out = ["#### Big events", ""]
    if not any(results.values()):
        return out + ["(no result)"]
    out.append("Every event padded (with its own text) or cut to the same size, one connection; MB/s of "
               "payload. A `Memory` channel is bounded in events (`capacity`) and in bytes (`byte_capacity`).")
    out += ["", "| event bytes | router | events | MB/s | vs rsyslog-mem | vs syslog-ng-mem | CPU s | peak RSS MiB "
            "| RSS vs rsyslog-mem | ok/runs |", "|---|---|---|---|---|---|---|---|---|---|"]
    for size, d in results.items():
        if not d:
            out.append(f"| {size:,} | (no result) | | | | | | | | |")
            continue
        by = rows_by_router(d)
        rs, sn = by.get("rsyslog-mem", {}), by.get("syslog-ng-mem", {})
        for r in d["summary"]:
            out.append(f"| {size:,} | {r['router']} | {d['meta']['payload']['n']:,} | {fmt(r.get('mb_per_s'), '.1f')} | "
                       f"{ratio(r.get('mb_per_s'), rs.get('mb_per_s'))} | {ratio(r.get('mb_per_s'), sn.get('mb_per_s'))} | "
                       f"{fmt(r.get('cpu_s'), '.2f')} | {fmt(r.get('peak_rss_mib'), '.1f')} | "
                       f"{ratio(r.get('peak_rss_mib'), rs.get('peak_rss_mib'))} | {r['ok']}/{r['runs']} |")
    return out


def section_fanout(d: dict | None) -> list[str]:
    out = ["#### Fan-out", "",
           f"One source replicated to four file outputs ({payload_line(d)}): flumen `fanout-mem.ron` "
           "(Replicating selector → four Memory channels → four FileRolls), rsyslog four `omfile` actions "
           "with their own in-memory queues, syslog-ng four `file()` destinations on one flow-controlled "
           "path (`peers/*-fanout.conf`). The clock stops when the last of the four outputs holds every "
           "event; each output is checked line for line. events/s and MB/s count input events.", ""]
    return out + e2e_table(d, ["rsyslog-fanout", "syslog-ng-fanout"])


def header(meta: dict) -> list[str]:
    m = meta["machine"]
    peers = ", ".join(f"{k} {v}" for k, v in meta["peers"].items() if v) or "none"
    missing = ", ".join(k for k, v in meta["peers"].items() if not v)
    return [f"Generated by `make bench-e2e` (`benches/e2e/bench_all.py`, {meta['mode']} mode) on "
            f"{meta['date']}, {meta['minutes']:.1f} minutes: {m['nproc']} CPUs ({m['cpu']}), "
            f"{m['mem_gib']} GiB memory, Linux {m['kernel']}; load average {m['loadavg'][0]:.2f} at the start, "
            f"{meta['loadavg_end']:.2f} at the end. flumen {meta['flumen_version']} (revision {meta['revision']}); "
            f"peers: {peers}" + (f"; not installed: {missing}" if missing else "") +
            f". Raw runs: `{meta['results']}/{meta['tag']}-*.json` and `.txt`. Ratios are between routers "
            "run interleaved in one invocation." +
            (f" **Failed:** {'; '.join(meta['failures'])}." if meta["failures"] else "")]


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    args = parse_args(argv)
    flumen = str(Path(args.flumen).resolve())
    if not os.access(flumen, os.X_OK):
        print(f"bench_all.py: no flumen binary at {flumen} (make build)", file=sys.stderr)
        return 2
    readme = ROOT / "README.md"
    if args.BENCH_README == "1" and (BEGIN not in readme.read_text() or END not in readme.read_text()):
        print(f"bench_all.py: README.md lacks the markers {BEGIN} / {END}", file=sys.stderr)
        return 2
    out = Path(args.BENCH_OUT)
    if not out.is_absolute():
        out = ROOT / out
    out.mkdir(parents=True, exist_ok=True)
    date = time.strftime("%Y-%m-%d", time.gmtime())
    tag = f"{date}-bench-e2e" + ("-quick" if args.quick else "")
    started = time.monotonic()
    rsyslogd = find_peer("rsyslogd", "E2E_RSYSLOGD")
    syslog_ng = find_peer("syslog-ng", "E2E_SYSLOG_NG")
    socat = shutil.which("socat")
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "tag": tag,
        "mode": "quick" if args.quick else "full", "machine": machine(), "revision": git_revision(),
        "flumen": flumen, "flumen_version": (first_line([flumen, "--version"]) or "?").replace("flumen ", ""),
        "peers": {"rsyslogd": rsyslogd and (first_line([rsyslogd, "-v"]) or "?").split(" (")[0].replace("rsyslogd ", "").strip(),
                  "syslog-ng": syslog_ng and re.sub(r"^syslog-ng \d+ \((.*)\)$", r"\1",
                                                    first_line([syslog_ng, "--version"]) or "?"),
                  "socat": None},
        "options": {k: getattr(args, k) for k in FULL},
    }
    # socat -V prints a banner first, then `socat version X on DATE`
    if socat:
        v = subprocess.run([socat, "-V"], capture_output=True, text=True).stdout
        m = re.search(r"socat version (\S+)", v)
        meta["peers"]["socat"] = m.group(1) if m else "?"
    print(f"bench-e2e ({meta['mode']}): {flumen}; peers {meta['peers']}; results to {out}/{tag}-*", flush=True)
    runner = Runner(args, tag, out)
    rep, timeout = args.BENCH_REPEAT, args.BENCH_TIMEOUT
    F = flumen
    mem_cmd = f"{F} run --quiet {{render:benches/e2e/fileroll-mem.ron}}"
    disk_cmd = f"{F} run --quiet {{render:benches/e2e/fileroll-disk.ron}}"

    def routers(*names) -> list[str]:
        """e2e router arguments for the named routers that are installed."""
        spec = {
            "flumen-mem": ["custom:flumen-mem", "--cmd", mem_cmd],
            "flumen-disk": ["custom:flumen-disk", "--cmd", disk_cmd],
            "flumen-fanout": ["custom:flumen-fanout", "--cmd", f"{F} run --quiet {{render:benches/e2e/fanout-mem.ron}}"],
            "rsyslog-mem": ["rsyslog-mem"] if rsyslogd else None,
            "syslog-ng-mem": ["syslog-ng-mem"] if syslog_ng else None,
            "syslog-ng-disk": ["syslog-ng-disk"] if syslog_ng else None,
            "rsyslog-fanout": ["custom:rsyslog-fanout", "--cmd", RSYSLOG_FANOUT] if rsyslogd else None,
            "syslog-ng-fanout": ["custom:syslog-ng-fanout", "--cmd", SYSLOG_NG_FANOUT] if syslog_ng else None,
            "socat": ["custom:socat", "--cmd", SOCAT] if socat else None,
            "linecopy": ["custom:linecopy", "--cmd", f"{HERE / 'linecopy.py'} {{host}} {{port}} {{outfile}}"],
        }
        argv = []
        for name in names:
            argv += spec[name] or []
        return argv

    peer_env = []
    if syslog_ng:
        peer_env = ["--syslog-ng", syslog_ng]
    if rsyslogd:
        peer_env += ["--rsyslogd", rsyslogd]
    common = ["-r", rep, "--timeout", timeout, *peer_env]
    results: dict = {}
    md: list[str] = []

    if "peaks" in args.sections:
        results["peaks"] = runner.run("peaks", e2e_plus(
            "-n", args.BENCH_N, *common,
            *routers("flumen-mem", "flumen-disk", "rsyslog-mem", "syslog-ng-mem", "syslog-ng-disk", "socat")))
    peaks = {r["router"]: r["events_per_s"] for r in (results.get("peaks") or {}).get("summary", [])
             if r.get("events_per_s")}
    if "latency" in args.sections:
        names = [n for n in ("flumen-mem", "flumen-disk", "rsyslog-mem", "syslog-ng-mem", "syslog-ng-disk")
                 if n in peaks]
        if names:
            results["latency"] = runner.run("latency", [
                str(HERE / "latency.py"), *routers(*names), *peer_env, "--loads", args.BENCH_LATENCY_LOADS,
                "--seconds", args.BENCH_LATENCY_SECONDS, *[f"--peak={n}={peaks[n]:.0f}" for n in names]])
        else:
            runner.failures.append("latency (no peaks measured: run it with the peaks section)")
    if "backlog" in args.sections:
        results["backlog"] = runner.run("backlog", [
            str(HERE / "backlog-open.py"), "--flumen", F, "--sizes", args.BENCH_BACKLOG_SIZES, "-r", rep])
    conns = int(args.BENCH_CONNS)
    if "connections" in args.sections:
        names = ("flumen-mem", "rsyslog-mem", "syslog-ng-mem", "linecopy", "socat")
        results["conn-1"] = runner.run("connections-1", e2e_plus(
            "--prestart", "-n", args.BENCH_CONN_N, "-c", 1, *common, *routers(*names)))
        results["conn-many-stock"] = runner.run(f"connections-{conns}-e2e-sender", e2e_plus(
            "-n", args.BENCH_CONN_N, "-c", conns, "--count-only", "socat", *common, *routers(*names)))
        results["conn-many"] = runner.run(f"connections-{conns}", e2e_plus(
            "--prestart", "-n", args.BENCH_CONN_N, "-c", conns, "--count-only", "socat", *common,
            *routers(*names)))
        results["conn-memory"] = runner.run("connection-memory", [
            str(HERE / "connections.py"), "--conns", conns, "-r", rep, *peer_env,
            *routers("flumen-mem", "rsyslog-mem", "syslog-ng-mem")])
    sizes = {}
    if "sizes" in args.sections:
        for size in [int(x) for x in args.BENCH_LINE_BYTES.split(",") if x]:
            n = max(1000, int(args.BENCH_SIZE_BYTES) // size)
            sizes[size] = runner.run(f"sizes-{size}", e2e_plus(
                "-n", n, "--line-bytes", size, *common, *routers("flumen-mem", "rsyslog-mem", "syslog-ng-mem")))
    if "fanout" in args.sections:
        results["fanout"] = runner.run("fanout", e2e_plus(
            "--copies", 4, "-n", args.BENCH_FANOUT_N, *common,
            *routers("flumen-fanout", "rsyslog-fanout", "syslog-ng-fanout")))

    meta["failures"] = runner.failures
    meta["results"] = str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out)
    meta["minutes"] = (time.monotonic() - started) / 60
    meta["loadavg_end"] = os.getloadavg()[0]
    md += header(meta)
    if "peaks" in args.sections:
        md += [""] + section_peaks(results.get("peaks"))
    if "latency" in args.sections:
        md += [""] + section_latency(results.get("latency"), peaks)
    if "backlog" in args.sections:
        md += [""] + section_backlog(results.get("backlog"))
    if "connections" in args.sections:
        md += [""] + section_connections(results.get("conn-1"), results.get("conn-many-stock"),
                                         results.get("conn-many"), results.get("conn-memory"), conns,
                                         meta["machine"]["nproc"])
    if "sizes" in args.sections:
        md += [""] + section_sizes(sizes)
    if "fanout" in args.sections:
        md += [""] + section_fanout(results.get("fanout"))
    text = "\n".join(md) + "\n"
    (out / f"{tag}.md").write_text(text)
    (out / f"{tag}-meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("\n" + text)
    if args.BENCH_README == "1":
        body = readme.read_text()
        i, j = body.index(BEGIN) + len(BEGIN), body.index(END)
        readme.write_text(body[:i] + "\n" + text + body[j:])
        print(f"README.md: tables written between {BEGIN} and {END}")
    print(f"results: {out}/{tag}-*  ({meta['minutes']:.1f} min)")
    return 1 if runner.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
