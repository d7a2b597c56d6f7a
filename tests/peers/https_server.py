"""An HTTPS server (Python's http.server wrapped with the ssl module) that appends every posted
body to a file.

Usage: https_server.py PORT CERT KEY CLIENT_CA|- BASIC_AUTH|- OUT_FILE

CERT and KEY are the server's PEM certificate and key. With CLIENT_CA the server requires a client
certificate that chains to it (mutual TLS); `-` asks for none. With BASIC_AUTH (`user:password`)
a post without that `Authorization: Basic` header is answered 401. Every other POST is answered
200 after its body was appended to OUT_FILE (flushed). GET /stats answers `accepted=N refused=R`.
Handshake failures are printed on stderr.
"""

import base64
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, CERT, KEY, CLIENT_CA, BASIC, OUT = sys.argv[1:7]
lock = threading.Lock()
stats = {"accepted": 0, "refused": 0}
expected = None if BASIC == "-" else "Basic " + base64.b64encode(BASIC.encode()).decode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, code, text=b""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def do_GET(self):
        with lock:
            text = "accepted={accepted} refused={refused}".format(**stats).encode()
        self.answer(200, text)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if expected is not None and self.headers.get("Authorization") != expected:
            with lock:
                stats["refused"] += 1
            self.answer(401, b"wrong credentials\n")
            return
        with lock:
            with open(OUT, "ab") as f:
                f.write(body)
                f.flush()
            stats["accepted"] += 1
        self.answer(200, b"ok\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        print("handshake or request failed:", sys.exc_info()[1], file=sys.stderr, flush=True)


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
if CLIENT_CA != "-":
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(CLIENT_CA)


class TlsServer(Server):
    def get_request(self):
        sock, addr = self.socket.accept()
        try:
            return context.wrap_socket(sock, server_side=True), addr
        except (ssl.SSLError, OSError) as e:
            print("handshake failed:", e, file=sys.stderr, flush=True)
            sock.close()
            raise


server = TlsServer(("127.0.0.1", int(PORT)), Handler)
print("listening", flush=True)
server.serve_forever()
