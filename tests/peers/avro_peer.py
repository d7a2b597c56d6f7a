"""A peer of flumen's Avro source and sink written with Apache Avro's Python library.

The handshake, the protocol and the encoding of every datum are avro.ipc's (Requestor,
Responder) and avro.protocol's; this file adds only what Java's Netty transport does around
them, which the Python library does not have:

- Netty framing: each message is a frame of a big-endian int32 serial number, an int32 buffer
  count, then each buffer as an int32 length and its bytes (Java's NettyTransceiver splits a
  message into 8 KiB buffers; so does this client). An answer carries its call's serial.
- compression "deflate" (Flume's compression-type): one zlib stream per direction over the
  whole connection, sync-flushed after every frame.
- On the server side, the handshake of a stateful connection. Python's Responder expects a
  handshake in front of every request, while on a Netty connection the client sends it only
  until the server answered BOTH or CLIENT (Java's NettyServer keeps that state per connection).
  Once a connection is established, this transceiver puts in front of each request the
  handshake the client would have sent (its client hash, our hash, no protocol text) and takes
  the Responder's handshake answer off the response, as NettyServer's stateful Responder does.

Usage:
  avro_peer.py client HOST PORT none|deflate LINES_FILE BATCH [--ignore-failed]
      sends every line of LINES_FILE (without its LF) in appendBatch calls of BATCH events, each
      with header "peer: python"; a FAILED answer is sent again after a pause (with
      --ignore-failed it is counted and the batch dropped: a client not waiting for OK).
      Prints "sent N failed F" at the end.
  avro_peer.py server PORT none|deflate OUT_FILE [--fail-batch K] [--drop-batch K]
      [--stall-first SECONDS]
      listens on 127.0.0.1:PORT (printing "listening" once it does), answers append/appendBatch
      writing each event body as a line to OUT_FILE (flushed before the answer) and OK;
      --fail-batch K answers the K-th appendBatch (1-based) FAILED without writing;
      --drop-batch K answers it OK without writing (a responder acknowledging what it lost);
      --stall-first S waits S seconds before answering the first appendBatch.
  avro_peer.py foreign HOST PORT
      calls a message of another protocol (org.example.Mail's send); prints "refused: ..."
      when the server closes the connection instead of answering.
"""

import io
import socket
import struct
import sys
import threading
import time
import zlib

import avro.io
import avro.ipc
import avro.protocol

# Flume's AvroSourceProtocol (flume-ng-sdk/src/main/avro/flume.avdl) as protocol JSON.
PROTOCOL_JSON = """
{
  "protocol": "AvroSourceProtocol",
  "namespace": "org.apache.flume.source.avro",
  "types": [
    {"type": "enum", "name": "Status", "symbols": ["OK", "FAILED", "UNKNOWN"]},
    {"type": "record", "name": "AvroFlumeEvent", "fields": [
      {"name": "headers", "type": {"type": "map", "values": "string"}},
      {"name": "body", "type": "bytes"}
    ]}
  ],
  "messages": {
    "append": {"request": [{"name": "event", "type": "AvroFlumeEvent"}], "response": "Status"},
    "appendBatch": {
      "request": [{"name": "events", "type": {"type": "array", "items": "AvroFlumeEvent"}}],
      "response": "Status"
    }
  }
}
"""

PROTOCOL = avro.protocol.parse(PROTOCOL_JSON)
BUFFER_SIZE = 8192


class Stream:
    """A socket read and written in whole frames, optionally through zlib streams."""

    def __init__(self, sock, deflate):
        self.sock = sock
        self.deflate = deflate
        self.compress = zlib.compressobj(6) if deflate else None
        self.decompress = zlib.decompressobj() if deflate else None
        self.buffer = b""

    def _fill(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            if self.decompress is not None:
                chunk = self.decompress.decompress(chunk)
            self.buffer += chunk

    def _read(self, n):
        self._fill(n)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_frame(self):
        serial, count = struct.unpack("!ii", self._read(8))
        parts = []
        for _ in range(count):
            (length,) = struct.unpack("!i", self._read(4))
            parts.append(self._read(length))
        return serial, b"".join(parts)

    def write_frame(self, serial, message):
        buffers = [message[i:i + BUFFER_SIZE] for i in range(0, len(message), BUFFER_SIZE)] or [b""]
        frame = struct.pack("!ii", serial, len(buffers))
        frame += b"".join(struct.pack("!i", len(b)) + b for b in buffers)
        if self.compress is not None:
            frame = self.compress.compress(frame) + self.compress.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(frame)


class NettyClientTransceiver:
    """The client side: one call, one answer, on a kept connection."""

    def __init__(self, host, port, deflate):
        self.sock = socket.create_connection((host, port))
        self.stream = Stream(self.sock, deflate)
        self.serial = 0
        self.remote_name = f"{host}:{port}"

    def transceive(self, request):
        self.serial += 1
        self.stream.write_frame(self.serial, request)
        serial, answer = self.stream.read_frame()
        if serial != self.serial:
            raise RuntimeError(f"answer serial {serial} to call {self.serial}")
        return answer

    def close(self):
        self.sock.close()


def client(host, port, compression, lines_file, batch, ignore_failed):
    with open(lines_file, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    transceiver = NettyClientTransceiver(host, int(port), compression == "deflate")
    requestor = avro.ipc.Requestor(PROTOCOL, transceiver)
    sent = failed = 0
    for start in range(0, len(lines), batch):
        events = [{"headers": {"peer": "python"}, "body": body} for body in lines[start:start + batch]]
        while True:
            status = requestor.request("appendBatch", {"events": events})
            if status == "OK":
                sent += len(events)
                break
            failed += 1
            if ignore_failed:
                break
            time.sleep(0.05)
    transceiver.close()
    print(f"sent {sent} failed {failed}", flush=True)


class Writer(avro.ipc.Responder):
    """Answers appendBatch and append, writing each body as a line."""

    def __init__(self, out, fail_batch, drop_batch, stall_first):
        super().__init__(PROTOCOL)
        self.out = out
        self.fail_batch = fail_batch
        self.drop_batch = drop_batch
        self.stall_first = stall_first
        self.batches = 0
        self.lock = threading.Lock()

    def invoke(self, local_message, request):
        with self.lock:
            if local_message.name == "appendBatch":
                self.batches += 1
                if self.batches == 1 and self.stall_first:
                    time.sleep(self.stall_first)
                if self.batches == self.fail_batch:
                    return "FAILED"
                events = request["events"]
            else:
                events = [request["event"]]
            if self.batches != self.drop_batch or local_message.name != "appendBatch":
                for e in events:
                    self.out.write(e["body"] + b"\n")
                self.out.flush()
            return "OK"


def handshake_response_length(response):
    """Bytes of the handshake response at the front of a Responder's answer, and its match."""
    reader = io.BytesIO(response)
    record = avro.ipc.HANDSHAKE_REQUESTOR_READER.read(avro.io.BinaryDecoder(reader))
    return reader.tell(), record["match"]


def serve_connection(sock, deflate, responder):
    stream = Stream(sock, deflate)
    client_hash = None  # set once the connection is established (BOTH or CLIENT)
    try:
        while True:
            serial, request = stream.read_frame()
            if client_hash is None:
                # Still handshaking: the request starts with the client's handshake.
                handshake = avro.ipc.HANDSHAKE_RESPONDER_READER.read(avro.io.BinaryDecoder(io.BytesIO(request)))
                answer = responder.respond(request)
                _, match = handshake_response_length(answer)
                if match in ("BOTH", "CLIENT"):
                    client_hash = handshake["clientHash"]
                stream.write_frame(serial, answer)
            else:
                prefix = io.BytesIO()
                avro.ipc.HANDSHAKE_REQUESTOR_WRITER.write(
                    {"clientHash": client_hash, "serverHash": responder.local_hash, "clientProtocol": None, "meta": None},
                    avro.io.BinaryEncoder(prefix),
                )
                answer = responder.respond(prefix.getvalue() + request)
                length, _ = handshake_response_length(answer)
                stream.write_frame(serial, answer[length:])
    except EOFError:
        pass
    finally:
        sock.close()


def server(port, compression, out_file, fail_batch, drop_batch, stall_first):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(port)))
    listener.listen(16)
    print("listening", flush=True)
    out = open(out_file, "ab")
    responder = Writer(out, fail_batch, drop_batch, stall_first)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve_connection, args=(sock, compression == "deflate", responder), daemon=True).start()


FOREIGN_JSON = """
{
  "protocol": "Mail",
  "namespace": "org.example",
  "types": [{"type": "record", "name": "Message", "fields": [{"name": "to", "type": "string"}]}],
  "messages": {"send": {"request": [{"name": "message", "type": "Message"}], "response": "string"}}
}
"""


def foreign(host, port):
    transceiver = NettyClientTransceiver(host, int(port), False)
    requestor = avro.ipc.Requestor(avro.protocol.parse(FOREIGN_JSON), transceiver)
    try:
        answer = requestor.request("send", {"message": {"to": "collector"}})
        print(f"answered: {answer!r}", flush=True)
    except (EOFError, ConnectionError) as e:
        print(f"refused: {e!r}", flush=True)


def option(args, name, default):
    if name in args:
        return type(default)(args[args.index(name) + 1])
    return default


def main(argv):
    if argv[1] == "client":
        client(argv[2], argv[3], argv[4], argv[5], int(argv[6]), "--ignore-failed" in argv)
    elif argv[1] == "server":
        server(
            argv[2],
            argv[3],
            argv[4],
            option(argv, "--fail-batch", 0),
            option(argv, "--drop-batch", 0),
            option(argv, "--stall-first", 0.0),
        )
    elif argv[1] == "foreign":
        foreign(argv[2], argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
