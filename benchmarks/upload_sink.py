"""Upload target for the file-output scenario: a local HTTP server that reads and discards
PUT/POST bodies and answers 201 (no Location header, so the output URL is the request URL).

Usage: python upload_sink.py PORT. GET /stats returns {"requests": n, "bytes": total} since the
last GET /reset. Binds 127.0.0.1 only.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATS = {"requests": 0, "bytes": 0}
CHUNK = 1 << 20


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _discard(self):
        n = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                left = size
                while left:
                    got = self.rfile.read(min(CHUNK, left))
                    if not got:
                        return n
                    left -= len(got)
                    n += len(got)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                got = self.rfile.read(min(CHUNK, left))
                if not got:
                    break
                left -= len(got)
                n += len(got)
        return n

    def _reply(self, code, body=b""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        if body:
            self.send_header("Content-Type", "application/json")
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_PUT(self):
        n = self._discard()
        with LOCK:
            STATS["requests"] += 1
            STATS["bytes"] += n
        self._reply(201)

    do_POST = do_PUT

    def do_GET(self):
        if self.path.startswith("/reset"):
            with LOCK:
                STATS["requests"] = STATS["bytes"] = 0
        with LOCK:
            body = json.dumps(STATS).encode()
        self._reply(200, body)


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    srv.daemon_threads = True
    print("upload_sink listening on %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
