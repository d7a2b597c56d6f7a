"""A Thrift peer of flumen's tests, built from Apache Thrift's Python library and the code the
Apache Thrift compiler generated from tests/peers/flume.thrift (Flume's ThriftSourceProtocol).
No flumen code is involved: framing, protocols and the generated client and processor are
Apache Thrift's.

    thrift_peer.py GEN_DIR client HOST PORT compact|binary BATCH LINES_FILE [--no-retry]
            [--append] [--tls CA [CERT KEY]]
        Sends every line of LINES_FILE (one event per line, body = the line's bytes, header
        "n" = its index) in appendBatch calls of BATCH events over TSocket (with --tls:
        TSSLSocket, checking the server's certificate against CA and the host name HOST,
        presenting CERT and KEY when given) + TFramedTransport. A call answered FAILED is sent
        again after 50 ms (with --no-retry: not sent again). With --append, each event is sent
        alone in an append call instead.
        Prints one JSON line: {"ok": calls answered OK, "failed": calls answered FAILED,
        "ok_events": events of OK calls, "failed_events": events of FAILED calls}.

    thrift_peer.py GEN_DIR server PORT compact|binary OUT_FILE MODE
        Serves ThriftSourceProtocol (TThreadedServer, framed transport) on 127.0.0.1:PORT and
        appends the body of every event it keeps, one per line, to OUT_FILE (flushed before it
        answers). MODE: "ok" keeps every event and answers OK; "fail-once" answers the first
        appendBatch FAILED without keeping it; "drop-once" answers the first appendBatch OK
        without keeping it (a server that loses an acknowledged batch). Every call is logged
        on stderr as "call N appendBatch EVENTS -> STATUS".
"""

import json
import sys
import threading
import time


def main():
    gen_dir, mode = sys.argv[1], sys.argv[2]
    sys.path.insert(0, gen_dir)
    from thrift.protocol import TBinaryProtocol, TCompactProtocol
    from thrift.transport import TSocket, TTransport

    from flume import ThriftSourceProtocol
    from flume.ttypes import Status, ThriftFlumeEvent

    def protocol_factory(name):
        if name == "compact":
            return TCompactProtocol.TCompactProtocolFactory()
        if name == "binary":
            return TBinaryProtocol.TBinaryProtocolFactory()
        raise SystemExit("protocol must be compact or binary, not %r" % name)

    if mode == "client":
        host, port, proto, batch, path = sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), sys.argv[7]
        options = sys.argv[8:]
        retry = "--no-retry" not in options
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        if "--tls" in options:
            import ssl

            from thrift.transport import TSSLSocket

            tls = options[options.index("--tls") + 1 :]
            context = ssl.create_default_context(cafile=tls[0])
            if len(tls) >= 3:
                context.load_cert_chain(tls[1], tls[2])
            socket = TSSLSocket.TSSLSocket(host, port, ssl_context=context, server_hostname=host)
        else:
            socket = TSocket.TSocket(host, port)
        socket.setTimeout(60000)
        transport = TTransport.TFramedTransport(socket)
        client = ThriftSourceProtocol.Client(protocol_factory(proto).getProtocol(transport))
        transport.open()
        summary = {"ok": 0, "failed": 0, "ok_events": 0, "failed_events": 0}
        for start in range(0, len(lines), batch):
            events = [
                ThriftFlumeEvent(headers={"n": str(start + i), "peer": "python-thrift"}, body=line)
                for i, line in enumerate(lines[start : start + batch])
            ]
            while True:
                if "--append" in options:
                    status = client.append(events[0]) if len(events) == 1 else None
                    if status is None:
                        raise SystemExit("--append sends one event per call: BATCH must be 1")
                else:
                    status = client.appendBatch(events)
                if status == Status.OK:
                    summary["ok"] += 1
                    summary["ok_events"] += len(events)
                    break
                summary["failed"] += 1
                summary["failed_events"] += len(events)
                if not retry:
                    break
                time.sleep(0.05)
        transport.close()
        print(json.dumps(summary), flush=True)
        return

    if mode == "server":
        from thrift.server import TServer

        port, proto, out_path, behaviour = int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
        out = open(out_path, "ab")
        lock = threading.Lock()
        calls = [0]

        class Handler:
            def keep(self, events):
                out.write(b"".join(e.body + b"\n" for e in events))
                out.flush()

            def answer(self, method, events):
                with lock:
                    calls[0] += 1
                    n = calls[0]
                    if behaviour == "fail-once" and n == 1:
                        status = Status.FAILED
                    elif behaviour == "drop-once" and n == 1:
                        status = Status.OK
                    else:
                        self.keep(events)
                        status = Status.OK
                    print("call %d %s %d -> %s" % (n, method, len(events), Status._VALUES_TO_NAMES[status]),
                          file=sys.stderr, flush=True)
                    return status

            def append(self, event):
                return self.answer("append", [event])

            def appendBatch(self, events):
                return self.answer("appendBatch", events)

        server = TServer.TThreadedServer(
            ThriftSourceProtocol.Processor(Handler()),
            TSocket.TServerSocket(host="127.0.0.1", port=port),
            TTransport.TFramedTransportFactory(),
            protocol_factory(proto),
            daemon=True,
        )
        print("serving on 127.0.0.1:%d (%s)" % (port, proto), file=sys.stderr, flush=True)
        server.serve()
        return

    raise SystemExit("mode must be client or server, not %r" % mode)


if __name__ == "__main__":
    main()
