"""A small Flask app behind signoff, with no login of its own.

signoff (as a reverse proxy, or as forward-auth behind nginx, Caddy or
Traefik) signs users in and out. This app only reads who is signed in from
the X-Signoff-User header, and believes it only from the proxy's address.

    python3 app.py [--host 127.0.0.1] [--port 5000]

Pages:
    /public      anyone; browsers may cache it
    /            the signed-in user's home
    /private/a   private pages that carelessly ask to be cached for an hour;
    /private/b   signoff (or the proxy config) turns that into no-store
    /whoami      JSON: the user and the session handle
    /debug/headers  JSON of every request header received, only when
                 SIGNOFF_EXAMPLE_DEBUG=1 (the tests use it to prove that
                 spoofed identity headers never arrive)

Settings (environment):
    SIGNOFF_TRUSTED_PROXIES  comma-separated addresses or networks allowed to
                             talk to this app [default: 127.0.0.1/32,::1/128]
"""

import argparse
import functools
import html
import ipaddress
import os

from flask import Flask, abort, jsonify, request

app = Flask(__name__)

TRUSTED_PROXIES = [
    ipaddress.ip_network(n.strip())
    for n in os.environ.get("SIGNOFF_TRUSTED_PROXIES", "127.0.0.1/32,::1/128").split(",")
    if n.strip()
]


# ---- The ten lines that replace Flask-Login's current_user ----------------
def current_user():
    """The signed-in user's name as signoff vouches for it, or None."""
    peer = ipaddress.ip_address(request.remote_addr)
    if not any(peer in net for net in TRUSTED_PROXIES):
        abort(403)  # not through the proxy: the header could be anyone's
    return request.headers.get("X-Signoff-User") or None


def login_required(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if current_user() is None:
            abort(401)  # the proxy sends browsers to /.signoff/login first
        return view(*args, **kwargs)
    return wrapper
# ---------------------------------------------------------------------------


@app.before_request
def only_through_the_proxy():
    current_user()  # aborts with 403 unless the request came via the proxy


# Shows whether a page came from the back/forward cache: the guard's job
# is to make sure a private page never does after sign-out.
PAGESHOW = (
    "<script>window.__pageshowRecorder=true;addEventListener('pageshow',function(e){"
    "var c=(window.__pageshow?window.__pageshow.count:0)+1;"
    "window.__pageshow={count:c,persisted:e.persisted,at:Date.now()};"
    "var s=document.getElementById('pageshow');"
    "if(s){s.textContent='pageshow #'+c+(e.persisted?' (from the back/forward cache)':'');}"
    "});</script>"
)


def layout(title, body, private=True):
    # signoff's guard: when a page is restored from the back/forward cache
    # it asks signoff whether the session is still alive, and leaves for the
    # login page if not. (`signoff serve` injects it by itself.)
    guard = '<script src="/.signoff/guard.js"></script>' if private else ""
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title>{guard}{PAGESHOW}</head><body>"
        '<nav><a href="/">Home</a> · <a href="/public">Public page</a> · '
        '<a href="/private/a">Private page A</a> · <a href="/private/b">Private page B</a></nav>'
        f'{body}<p><small id="pageshow"></small></p></body></html>\n'
    )


def logout_form():
    # signoff checks the CSRF token (and the Origin); the proxy passes the
    # token for this session in X-Signoff-Csrf.
    csrf = html.escape(request.headers.get("X-Signoff-Csrf", ""))
    return (
        '<form method="post" action="/.signoff/logout">'
        f'<input type="hidden" name="csrf" value="{csrf}">'
        '<button id="logout" type="submit">Sign out</button></form>'
    )


@app.get("/public")
def public():
    page = layout(
        "Public page",
        "<h1>Public page</h1><p>Anyone may see this page, and browsers may cache it.</p>",
        private=False,
    )
    return page, 200, {"Cache-Control": "public, max-age=60"}


@app.get("/")
@login_required
def home():
    user = html.escape(current_user())
    return layout(
        "Flask behind signoff",
        f'<h1>Hello, <span id="user">{user}</span></h1>'
        "<p>This Flask app has no login code: signoff owns sign-in and sign-out.</p>"
        + logout_form(),
    )


@app.get("/private/<which>")
@login_required
def private(which):
    if which not in ("a", "b"):
        abort(404)
    name = which.upper()
    user = html.escape(current_user())
    body = (
        f"<h1>Private page {name}</h1>"
        f'<p>Signed in as <b id="user">{user}</b>. PRIVATE-{name}: this text must never be '
        "visible after sign-out, not even with Back.</p>" + logout_form()
    )
    # What a careless app sends; the proxy replaces it with no-store.
    return layout(f"Private page {name}", body), 200, {
        "Cache-Control": "public, max-age=3600",
        "ETag": f'"page-{which}"',
    }


@app.get("/whoami")
@login_required
def whoami():
    return jsonify(user=current_user(), session=request.headers.get("X-Signoff-Session"))


if os.environ.get("SIGNOFF_EXAMPLE_DEBUG") == "1":

    @app.route("/debug/headers", methods=["GET", "POST"])
    def debug_headers():
        return jsonify(
            user=request.headers.get("X-Signoff-User"),
            headers=[[k, v] for k, v in request.headers.items()],
        )


def main():
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port")
    args = parser.parse_args()
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"flask example listening on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
