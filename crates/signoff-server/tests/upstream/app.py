"""A real upstream app for the gateway's tests: Python's standard library
only, so it runs wherever python3 does. Prints its port, then serves.

GET  /echo, /public/echo   JSON: method, path, headers received, body size
POST /echo                 the same, after reading the body
GET  /cacheable            HTML the app wants cached for an hour
GET  /csp                  HTML under a strict Content-Security-Policy
GET  /gzip                 gzip-compressed HTML, whatever the client accepts
GET  /dcz                  HTML labelled with a coding no gateway reads (dcz)
GET  /negotiated           HTML compressed like a server that prefers codings the
                           gateway may not read: dcz if accepted, else gzip, else
                           plain
GET  /download             HTML sent as an attachment
GET  /utf16                UTF-16LE HTML with a byte-order mark
GET  /binary               4096 bytes 0..255 repeated, application/octet-stream
GET  /set-cookie           tries to set signoff's cookie and one of its own
GET  /public, /public/page  a public page with caching headers
GET  /public/big           a public 2 MiB text body
GET  /redirect-absolute    302 to this app's own absolute URL /private, with
                           Content-Location and Refresh on the same origin
GET  /redirect-elsewhere   302 to another origin
GET  /slow                 waits 3 s, then a small page
anything else              a small HTML page naming the path

Routes are matched on the raw request target, encoded as it arrived
(like Express, Node's URL or Go's RawPath): /private/..%2Fpublic is not
/public here.
"""
import gzip
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = (
    "<!doctype html><html><head><title>t</title></head>"
    "<body><p>PRIVATE upstream page {path}</p></body></html>"
)
STRICT_CSP = "default-src 'none'; script-src 'self'; style-src 'self'"
BINARY = bytes(range(256)) * 16


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this, Nagle's
    # algorithm and delayed ACKs add 40 ms to many responses.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def send(self, status, body, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def echo(self, body_size):
        data = {
            "method": self.command,
            "path": self.path,
            "headers": [[k.lower(), v] for k, v in self.headers.items()],
            "body_size": body_size,
        }
        self.send(200, json.dumps(data).encode(), [("Content-Type", "application/json")])

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        size = 0
        while size < length:
            chunk = self.rfile.read(min(65536, length - size))
            if not chunk:
                break
            size += len(chunk)
        self.echo(size)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?")[0]
        if path in ("/echo", "/public/echo"):
            return self.echo(0)
        html = [("Content-Type", "text/html; charset=utf-8")]
        if path == "/cacheable":
            return self.send(200, PAGE.format(path=path).encode(), html + [
                ("Cache-Control", "public, max-age=3600"),
                ("ETag", '"v1"'),
                ("Last-Modified", "Wed, 21 Oct 2026 07:28:00 GMT"),
                ("Expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
            ])
        if path == "/csp":
            return self.send(200, PAGE.format(path=path).encode(), html + [
                ("Content-Security-Policy", STRICT_CSP),
            ])
        if path == "/gzip":
            return self.send(200, gzip.compress(PAGE.format(path=path).encode()), html + [
                ("Content-Encoding", "gzip"),
            ])
        if path == "/dcz":
            return self.send(200, b"\x5e\x2a\x4d\x18 not really dcz", html + [
                ("Content-Encoding", "dcz"),
            ])
        if path == "/negotiated":
            accepted = self.headers.get("Accept-Encoding", "")
            codings = [c.split(";")[0].strip().lower() for c in accepted.split(",")]
            body = PAGE.format(path=path).encode()
            if "dcz" in codings:
                return self.send(200, b"\x5e\x2a\x4d\x18 not really dcz", html + [
                    ("Content-Encoding", "dcz"), ("Vary", "Accept-Encoding"),
                ])
            if "gzip" in codings:
                return self.send(200, gzip.compress(body), html + [
                    ("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding"),
                ])
            return self.send(200, body, html + [("Vary", "Accept-Encoding")])
        if path == "/download":
            return self.send(200, PAGE.format(path=path).encode(), html + [
                ("Content-Disposition", 'attachment; filename="page.html"'),
            ])
        if path == "/utf16":
            return self.send(200, PAGE.format(path=path).encode("utf-16"), html)
        if path == "/binary":
            return self.send(200, BINARY, [("Content-Type", "application/octet-stream")])
        if path == "/set-cookie":
            self.send_response(200)
            self.send_header("Set-Cookie", "signoff=planted-by-upstream; Path=/")
            self.send_header("Set-Cookie", "theme=dark; Path=/")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        if path == "/redirect-absolute":
            own = "http://127.0.0.1:%d" % self.server.server_address[1]
            return self.send(302, b"", [
                ("Location", own + "/private?from=redirect#top"),
                ("Content-Location", own + "/redirect-absolute"),
                ("Refresh", "0; url=" + own + "/private"),
            ])
        if path == "/redirect-elsewhere":
            return self.send(302, b"", [("Location", "http://127.0.0.1:1/elsewhere")])
        if path == "/slow":
            time.sleep(3)
            return self.send(200, b"<p>slow</p>", html)
        if path == "/public/big":
            return self.send(200, b"x" * (2 * 1024 * 1024), [("Content-Type", "text/plain")])
        if path in ("/public", "/public/page"):
            return self.send(200, b"<p>public</p>", html + [("Cache-Control", "public, max-age=600")])
        return self.send(200, PAGE.format(path=path).encode(), html)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
