"""A Flask app with server-side sessions done carelessly, for tests/check.rs:
what `signoff check` must catch besides the classic Flask mistakes.

- The session id (`sid`) is kept at sign-in, and any id a browser brings
  is adopted (fixation).
- Sign-out deletes the record but leaves the cookie in the browser.
- Sign-out is a POST that needs `_method=delete` and no token (forgeable).
- After sign-in, `ReturnUrl` is followed by a meta refresh, unchecked.
- Token mode (/api/login, /api/token, /api/logout) the stateless way:
  logout forgets nothing, so an access token works until it expires (here:
  for ever), and a refresh token can be used again and again.

    python3 careless.py [--get-login] [--rate-limit N]

--get-login makes the login form a GET (the password lands in the URL);
--rate-limit N answers 429 to the N+1th sign-in. Prints "listening on URL",
then serves. The user is alice, password alice-password-1.
"""

import argparse
import html
import secrets

from flask import Flask, abort, g, jsonify, request

app = Flask(__name__)
SESSIONS = {}
ARGS = None
SIGN_INS = [0]
ACCESS = {}
REFRESH = {}


@app.before_request
def load_session():
    sid = request.cookies.get("sid")
    if not sid:
        sid = secrets.token_urlsafe(16)
    SESSIONS.setdefault(sid, {})
    g.sid = sid


@app.after_request
def save_session(resp):
    if request.cookies.get("sid") != g.sid:
        resp.headers.add("Set-Cookie", f"sid={g.sid}; HttpOnly; Path=/")
    return resp


def signed_in():
    bearer = request.headers.get("Authorization", "")
    if bearer.startswith("Bearer "):
        return ACCESS.get(bearer[len("Bearer "):])
    return SESSIONS.get(g.sid, {}).get("user")


def token_pair(user):
    access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    ACCESS[access] = user
    REFRESH[refresh] = user
    return jsonify(access_token=access, token_type="Bearer", refresh_token=refresh)


@app.post("/api/login")
def api_login():
    body = request.get_json(silent=True) or {}
    if body.get("username") == "alice" and body.get("password") == "alice-password-1":
        return token_pair("alice")
    return jsonify(error="invalid_grant"), 400


@app.post("/api/token")
def api_token():
    user = REFRESH.get(request.form.get("refresh_token", ""))
    if request.form.get("grant_type") != "refresh_token" or not user:
        return jsonify(error="invalid_grant"), 400
    return token_pair(user)


@app.post("/api/logout")
def api_logout():
    return jsonify(ok=True)


@app.route("/login", methods=["GET", "POST"])
def login():
    form = request.form if request.method == "POST" else request.args
    if "password" in form:
        SIGN_INS[0] += 1
        if ARGS.rate_limit and SIGN_INS[0] > ARGS.rate_limit:
            abort(429)
        if form.get("username") == "alice" and form.get("password") == "alice-password-1":
            SESSIONS[g.sid]["user"] = "alice"
            to = html.escape(form.get("ReturnUrl") or "/", quote=True)
            return f'<!doctype html><meta http-equiv="refresh" content="0;url={to}"><p>Signed in.</p>'
    method = "get" if ARGS.get_login else "post"
    back = html.escape(request.args.get("ReturnUrl", ""), quote=True)
    return (
        f'<!doctype html><form method="{method}" action="/login">'
        f'<input type="hidden" name="ReturnUrl" value="{back}">'
        '<input name="username"><input name="password" type="password">'
        "<button>Sign in</button></form>"
    )


@app.get("/")
def home():
    if not signed_in():
        return "", 302, {"Location": "/login?ReturnUrl=%2F"}
    return (
        "<!doctype html><h1>Dashboard</h1><p>Welcome back, here are your private reports.</p>"
        '<form method="post" action="/logout"><input type="hidden" name="_method" value="delete">'
        "<button>Log out</button></form>"
    )


@app.post("/logout")
def logout():
    if request.form.get("_method") != "delete":
        abort(400)
    SESSIONS.pop(g.sid, None)
    return "", 303, {"Location": "/login"}


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--get-login", action="store_true")
    parser.add_argument("--rate-limit", type=int, default=0)
    ARGS = parser.parse_args()
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
