#!/usr/bin/env python3
# perf-parts.py PERF_DATA EVENTS: CPU ns per event of each part (user and kernel), from a
# `perf record -e cpu-clock -F 4999` profile (perf-wrap.sh). See README.md, Performance.
import re, subprocess, sys
f, n = sys.argv[1], int(sys.argv[2])
out = subprocess.run(["perf", "report", "-i", f, "--stdio", "--sort", "dso,sym", "-F", "sample,dso,sym"], capture_output=True, text=True).stdout
groups = [
 ("kernel: socket receive (tcp_recvmsg, copy to user)", r"\[k\] .*(tcp_|_copy_to_iter|skb|sock_|inet_|__skb|copy_user|recvmsg|datagram)"),
 ("kernel: file write (ext4, page cache, copy from user)", r"\[k\] .*(ext4|folio|filemap|copy_folio|generic_perform_write|jbd2|dquot|es_|block_|mark_buffer|clear_page|page_fault|exc_page|xas_|lru|mem_cgroup|memcg)"),
 ("kernel: scheduling, wake-ups, epoll, futex", r"\[k\] .*(sched|task_switch|spin_unlock|futex|wake|epoll|ep_|schedule|irq|softirq|enqueue|dequeue|update_|pick_|switch|hrtimer|tick|rcu|ttwu|select_task|idle)"),
 ("kernel: other", r"\[k\]"),
 ("line splitting (next_line, take_body, memchr, BytesMut split/advance)", r"(next_line|take_body|memchr|split_to|advance_unchecked|BytesMut::split|read_batch|lines::compact|poll_fn::PollFn)"),
 ("event construction, batch vectors (to_events, from_iter, into_iter fold)", r"(to_events|from_iter|IntoIter<T,A> as core::iter|Map<I,F>)"),
 ("Vec<Event> clones (selector put, channel take)", r"as core::clone::Clone>::clone|shared_v_clone"),
 ("dropping events (BTreeMap, Bytes refcounts)", r"(drop_in_place<flumen::event|dying_next|shared_v_drop|drop_in_place<alloc::vec::Vec<flumen)"),
 ("memcpy (user: copies of bodies and batch vectors)", r"memmove|memcpy"),
 ("malloc/free", r"malloc|_int_free|\bfree\b|realloc|cfree|tcache"),
 ("Memory channel, selector, sink runner, FileRoll", r"flumen::(channel|selector|sink)"),
 ("actix/tokio runtime, rest", r"."),
]
tot = {g: 0 for g, _ in groups}; all_ = 0
for line in out.splitlines():
    m = re.match(r"\s*(\d+)\s+(\S+)\s+(\[.\].*)", line)
    if not m: continue
    c = int(m.group(1)); sym = m.group(3); all_ += c
    for g, p in groups:
        if re.search(p, sym):
            tot[g] += c; break
hz = 4999
for g, _ in groups:
    print(f"{g:75} {tot[g]/hz/n*1e9:6.0f} ns")
print(f"{'total (CPU per event)':75} {all_/hz/n*1e9:6.0f} ns")
