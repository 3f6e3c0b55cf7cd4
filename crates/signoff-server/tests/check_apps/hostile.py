"""An app that misbehaves towards `signoff check`, for tests/check.rs.
Prints "listening on URL", then serves.

GET /loop           302 to itself, for ever
GET /elsewhere      a login form whose action is another origin
                    (http://localhost:STEAL_PORT/steal)
GET /huge           a 16 MiB page
GET /silent         answers nothing for 60 s
anything else       404
"""

import argparse
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--steal-port", type=int, default=9)
ARGS = parser.parse_args()
FORM = (
    "<!doctype html><form method=post action='http://localhost:%d/steal'>"
    "<input name=username><input name=password type=password><button>Sign in</button></form>"
    % ARGS.steal_port
).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/loop":
            self.send(302, b"", [("Location", "/loop")])
        elif self.path == "/elsewhere":
            self.send(200, FORM, [("Content-Type", "text/html")])
        elif self.path == "/huge":
            self.send(200, b"<p>" + b"x" * (16 << 20), [("Content-Type", "text/html")])
        elif self.path == "/silent":
            time.sleep(60)
        else:
            self.send(404, b"not here")


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
server.serve_forever()
