#!/usr/bin/env python3
"""Medians and ratios from an e2e.py --json file, against any router of the run.

    ratios.py RUN.json BASELINE_LABEL

Per router: median events/s (min-max), median CPU seconds and CPU microseconds per event, median
peak RSS, median bytes written by the router's process tree (`wchar`), and the ratios of the
medians of events/s, CPU seconds and peak RSS to those of BASELINE_LABEL. e2e.py's own table gives
the events/s ratio to the first router only.
"""

import json
import statistics as st
import sys


def main(path: str, base: str) -> int:
    d = json.load(open(path))
    names = [r["router"] for r in d["summary"]]
    if base not in names:
        print(f"no router {base!r} in {path}; there are {', '.join(names)}", file=sys.stderr)
        return 2
    by = {name: [r for r in d["runs"] if r["router"] == name and r["ok"]] for name in names}
    n = d["meta"]["payload"]["n"]
    print(f"{d['meta']['started']}: {n:,} events, {d['meta']['payload']['bytes']:,} bytes; ratios to {base}")
    print(f"{'router':16} {'events/s':>10} {'(min-max)':>21} {'CPU s':>6} {'us/event':>8} {'RSS MiB':>7} "
          f"{'wrote MB':>8} {'x ev/s':>6} {'x CPU':>6} {'x RSS':>6}")

    def med(runs, key):
        return st.median(r[key] for r in runs)

    for name in names:
        rs, b = by[name], by[base]
        if not rs:
            print(f"{name:16} (no successful run)")
            continue
        eps = [r["events_per_s"] for r in rs]
        print(f"{name:16} {st.median(eps):>10,.0f} {f'{min(eps):,.0f}-{max(eps):,.0f}':>21} "
              f"{med(rs, 'cpu_s'):>6.2f} {med(rs, 'cpu_s') / n * 1e6:>8.2f} "
              f"{med(rs, 'peak_rss_kib') / 1024:>7.1f} {st.median(r['io']['wchar'] for r in rs) / 1e6:>8.1f} "
              f"{st.median(eps) / med(b, 'events_per_s'):>6.3f} {med(rs, 'cpu_s') / med(b, 'cpu_s'):>6.2f} "
              f"{med(rs, 'peak_rss_kib') / med(b, 'peak_rss_kib'):>6.2f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
