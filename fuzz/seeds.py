#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into OUT/<target>/ (OUT is the first argument).

The seeds are real Loghub lines (topologies/data/loghub/) wrapped the way each parser reads them
(RFC 5424 and RFC 3164 syslog, octet-counted and LF-framed syslog streams, Flume JSON, NDJSON,
text lines, flumen's binary event codec, Taildir position files) and the example topologies
(topologies/*.ron). A few kilobytes per seed, a few hundred seeds per target.
"""
import hashlib
import json
import os
import pathlib
import struct
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOGHUB = ROOT / "topologies" / "data" / "loghub"
PER_FILE = 40  # lines taken from each Loghub file

FORMATS = {"FlumeJson": 0, "Ndjson": 1, "Lines": 2, "Events": 3}


def loghub():
    """(file stem, lines) for each Loghub sample: PER_FILE lines spread over the file."""
    for path in sorted(LOGHUB.glob("*.log")):
        lines = path.read_bytes().split(b"\n")
        lines = [l.rstrip(b"\r") for l in lines if l.strip()]
        step = max(1, len(lines) // PER_FILE)
        yield path.stem.split("_")[0].lower(), lines[::step][:PER_FILE]


def rfc5424(i, app, line):
    pri = (i * 7) % 192
    sd = [b"-", b'[origin ip="10.0.0.%d"]' % (i % 255), b'[exampleSDID@32473 iut="3" eventSource="App\\]x"][b@1 k="v"]'][i % 3]
    ts = [b"2005-12-04T04:47:44Z", b"2015-07-29T17:41:44.747+02:00", b"-", b"2008-11-09T20:36:15.123456-07:00"][i % 4]
    bom = b"\xef\xbb\xbf" if i % 5 == 0 else b""
    return b"<%d>1 %s host%d %s %d ID%d %s %s%s" % (pri, ts, i % 9, app.encode(), 1000 + i, i % 47, sd, bom, line)


def rfc3164(i, app, line):
    pri = (i * 11) % 192
    if app in ("linux", "openssh"):  # already "Mmm dd hh:mm:ss host tag[pid]: msg"
        return b"<%d>%s" % (pri, line)
    day = b"%2d" % (i % 28 + 1)
    month = [b"Jan", b"Feb", b"Mar", b"Dec"][i % 4]
    return b"<%d>%s %s 12:%02d:%02d host%d %s[%d]: %s" % (pri, month, day, i % 60, i % 60, i % 9, app.encode(), i, line)


def encode_event(headers, body):
    """flumen's codec (src/event.rs): u32le counts and lengths."""
    out = struct.pack("<I", len(headers))
    for k, v in sorted(headers.items()):
        k, v = k.encode(), v.encode()
        out += struct.pack("<I", len(k)) + k + struct.pack("<I", len(v)) + v
    return out + struct.pack("<I", len(body)) + body


def headers_of(i, app):
    h = {"host": "host%d" % (i % 9), "app": app}
    if i % 2:
        h["timestamp"] = str(1133671664000 + i)
    return h


def text(b):
    return b.decode("utf-8", "replace")


def main():
    out = pathlib.Path(sys.argv[1])
    corpora = {}

    def seed(target, data):
        d = out / target
        d.mkdir(parents=True, exist_ok=True)
        (d / hashlib.sha1(data).hexdigest()).write_bytes(data)
        corpora[target] = corpora.get(target, 0) + 1

    samples = list(loghub())
    for app, lines in samples:
        for i, line in enumerate(lines):
            seed("syslog_parse", rfc5424(i, app, line))
            seed("syslog_parse", rfc3164(i, app, line))
            seed("syslog_parse", line)
        # Streams: octet counting, LF and CRLF framing, mixed; limits and read sizes vary.
        for n in range(0, len(lines), 8):
            msgs = [rfc5424(n + j, app, l) if j % 2 else rfc3164(n + j, app, l) for j, l in enumerate(lines[n : n + 8])]
            counted = b"".join(b"%d %s" % (len(m), m) for m in msgs)
            lf = b"".join(m + b"\n" for m in msgs)
            crlf = b"".join(m + b"\r\n" for m in msgs) + b"\r\n"
            mixed = b"".join((b"%d %s" % (len(m), m)) if j % 2 else m + b"\n" for j, m in enumerate(msgs))
            for k, stream in enumerate([counted, lf, crlf, mixed]):
                limit = [0, 200, 64, 1][(n // 8 + k) % 4]
                read = [255, 16, 1, 100][(n // 8 + k) % 4]
                seed("syslog_frame", bytes([limit, read]) + stream)
        # Http bodies: 8 events per body in each format.
        for n in range(0, len(lines), 8):
            events = [(headers_of(n + j, app), l) for j, l in enumerate(lines[n : n + 8])]
            flume = json.dumps([{"headers": h, "body": text(b)} for h, b in events]).encode()
            nd = b"".join(json.dumps({"headers": h, "body": text(b)}).encode() + b"\n" for h, b in events)
            bare = json.dumps([{"body": text(b)} for _, b in events]).encode()
            lf = b"".join(b + b"\n" for _, b in events)
            codec = b"".join(encode_event(h, b) for h, b in events)
            seed("http_body", bytes([FORMATS["FlumeJson"]]) + flume)
            seed("http_body", bytes([FORMATS["FlumeJson"]]) + bare)
            seed("http_body", bytes([FORMATS["Ndjson"]]) + nd)
            seed("http_body", bytes([FORMATS["Lines"]]) + lf.replace(b"\n", b"\r\n", n % 3))
            seed("http_body", bytes([FORMATS["Events"]]) + codec)
            seed("event_codec", codec)
        for i, line in enumerate(lines):
            seed("event_codec", encode_event(headers_of(i, app) if i % 3 else {}, line))
    # Taildir position files: Flume's (inode, pos, file) and flumen's (dev, fingerprint).
    for app, lines in samples:
        for n in range(1, 6):
            entries = []
            for j in range(n):
                head = b"\n".join(lines[: j + 1])[:256]
                e = {"inode": 2496001 + j, "pos": sum(len(l) + 1 for l in lines[: j + 3]), "file": "/var/log/%s/%s.log.%d" % (app, app, j)}
                if (n + j) % 2:
                    fnv = 0xCBF29CE484222325
                    for b in head:
                        fnv = ((fnv ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
                    e["dev"] = 2049
                    e["fingerprint"] = "fnv1a64:%d:%016x" % (len(head), fnv)
                entries.append(e)
            seed("taildir_position", json.dumps(entries).encode())
    seed("taildir_position", b"[]")
    seed("taildir_position", b"  \n")
    # Topologies: the examples as shipped.
    for path in sorted((ROOT / "topologies").glob("*.ron")):
        seed("topology_ron", path.read_bytes())
    for target, n in sorted(corpora.items()):
        print("%-18s %4d seeds in %s" % (target, n, out / target))


if __name__ == "__main__":
    main()
