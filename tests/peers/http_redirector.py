"""An HTTP server (Python's http.server) that answers the first N posts with redirects.

Usage: http_redirector.py PORT REDIRECTS OUT_FILE

POST / is answered, in turn, 301, 302, 303, 307 and 308 with `Location: /landing` for the first
REDIRECTS requests, and 200 after that; the body of every post answered 200 is appended to
OUT_FILE. Any request to /landing (a GET or a POST that followed a redirect) answers 200 and is
counted. GET /stats answers `redirected=R landing=L accepted=A`.
"""

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, REDIRECTS, OUT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
CODES = [301, 302, 303, 307, 308]
lock = threading.Lock()
stats = {"redirected": 0, "landing": 0, "accepted": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def answer(self, code, text=b"", location=None):
        self.send_response(code)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def do_GET(self):
        if self.path == "/stats":
            with lock:
                text = "redirected={redirected} landing={landing} accepted={accepted}".format(**stats)
            return self.answer(200, text.encode())
        with lock:
            stats["landing"] += 1
        self.answer(200, b"welcome\n")

    def do_POST(self):
        data = self.body()
        if self.path != "/":
            with lock:
                stats["landing"] += 1
            return self.answer(200, b"welcome\n")
        with lock:
            if stats["redirected"] < REDIRECTS:
                code = CODES[stats["redirected"] % len(CODES)]
                stats["redirected"] += 1
            else:
                code = 200
                stats["accepted"] += 1
                with open(OUT, "ab") as f:
                    f.write(data)
        if code == 200:
            self.answer(200)
        else:
            self.answer(code, b"moved\n", "http://127.0.0.1:%d/landing" % PORT)


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
