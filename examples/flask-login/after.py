"""before.py after moving to signoff (docs/migrate-from-flask-login.md).

    python3 after.py [--port 5000]
    signoff serve --upstream http://127.0.0.1:5000

No login code is left: signoff signs users in (with their old passwords,
imported by export_users.py), remembers devices if the operator allows it,
and signs them out everywhere. The app reads who is signed in from
X-Signoff-User and when they last entered their password from
X-Signoff-Auth-Time, and believes both only from the proxy's address.
"""

import argparse
import functools
import ipaddress
import os
import time
from urllib.parse import quote

from flask import Flask, abort, redirect, render_template_string, request

app = Flask(__name__)

TRUSTED_PROXIES = [
    ipaddress.ip_network(n.strip())
    for n in os.environ.get("SIGNOFF_TRUSTED_PROXIES", "127.0.0.1/32,::1/128").split(",")
    if n.strip()
]
# How recent a password entry the settings page needs, in seconds.
FRESH_SECONDS = int(os.environ.get("FRESH_SECONDS", "300"))


# ---- What replaces Flask-Login ----------------------------------------------
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
            abort(401)  # signoff sends browsers to its login page first
        return view(*args, **kwargs)
    return wrapper


def fresh_login_required(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if current_user() is None:
            abort(401)
        auth_time = request.headers.get("X-Signoff-Auth-Time", "")
        if not auth_time.isdigit() or time.time() - int(auth_time) > FRESH_SECONDS:
            back = quote(request.full_path.rstrip("?"), safe="")
            return redirect("/.signoff/reauth?next=" + back)
        return view(*args, **kwargs)
    return wrapper
# -----------------------------------------------------------------------------


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{{ title }}</title></head><body>
<nav><a href="/">Home</a> · <a href="/settings">Settings</a>
<form method="post" action="/.signoff/logout" style="display:inline">
<input type="hidden" name="csrf" value="{{ csrf }}">
<button id="logout" type="submit">Sign out</button></form></nav>
<h1>{{ title }}</h1>{{ body|safe }}</body></html>"""


def page(title, body):
    csrf = request.headers.get("X-Signoff-Csrf", "")
    return render_template_string(PAGE, title=title, body=body, csrf=csrf)


@app.get("/")
@login_required
def home():
    return page("Home", render_template_string(
        '<p>Signed in as <b id="user">{{ name }}</b>.</p>', name=current_user()))


@app.get("/settings")
@fresh_login_required
def settings():
    return page("Settings", render_template_string(
        '<p id="settings">Settings of {{ name }}.</p>', name=current_user()))


def main():
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port")
    args = parser.parse_args()
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"listening on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
