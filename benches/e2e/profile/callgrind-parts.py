#!/usr/bin/env python3
# callgrind-parts.py CALLGRIND_OUT EVENTS: instructions per event of each part of the memory path
# (inclusive counts from callgrind_annotate). See "The memory path against a plain copy" in README.md.
import re, subprocess, sys
f, n = sys.argv[1], int(sys.argv[2])
out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", f], capture_output=True, text=True).stdout
incl = {}
for line in out.splitlines():
    m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)", line)
    if m:
        v = int(m.group(1).replace(",", "")); name = m.group(2)
        incl.setdefault(name, v)
def find(pat):
    best = 0
    for k, v in incl.items():
        if re.search(pat, k): best = max(best, v)
    return best
total = find(r"PROGRAM TOTALS")
rows = [
  ("line splitting (LineBuffer::next_line)", r"lines::LineBuffer::next_line \["),
  ("batch copy (lines::compact)", r"lines::compact \["),
  ("event construction (lines::to_events)", r"lines::to_events \["),
  ("selector (route, put_part)", r"selector::route::\{\{closure\}\} \["),
  ("Memory put (Handler<Put>/<PutReturning>)", r"Handler<flumen::channel::Put(Returning)?>>::handle \["),
  ("Memory take (Handler<Take>)", r"Handler<flumen::channel::Take>>::handle \["),
  ("Memory commit (Handler<Commit>)", r"Handler<flumen::channel::Commit>>::handle \["),
  ("FileRoll deliver (copy into the write buffer)", r"FileRollSink as flumen::sink::Sink>::deliver::\{\{closure\}\} \["),
  ("dropping events (drop_in_place<Event>)", r"drop_in_place<flumen::event::Event> \["),
  ("memcpy (all callers)", r"__memcpy_avx_unaligned_erms \["),
  ("malloc+free+realloc", None),
]
print(f"{'part':48} {'Ir/event':>9}")
for name, pat in rows:
    if pat is None:
        v = sum(find(p) for p in [r"malloc.c:malloc \[", r"malloc.c:free \[", r"malloc.c:realloc \["])
    else:
        v = find(pat)
    print(f"{name:48} {v/n:9.0f}")
print(f"{'whole process':48} {total/n:9.0f}")
