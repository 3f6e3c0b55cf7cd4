"""The Flask login of the tutorials: the session in Flask's signed
cookie, sign-out with session.pop() on a GET route, `next` followed as
given. Most of what `signoff check` looks for goes wrong here: that is the
point (docs/check.md, tests/check.rs).

    python3 app.py [--no-store] [--port 5000]

--no-store adds `Cache-Control: no-store` to every response, the fix most
answers give. Prints "listening on URL", then serves. The user is alice,
password alice-password-1.
"""

import argparse

from flask import Flask, redirect, render_template_string, request, session, url_for

app = Flask(__name__)
app.secret_key = "plain-flask-test-secret"
USERS = {"alice": "alice-password-1"}

LOGIN = """<!doctype html><html><head><title>Sign in</title></head><body>
<form method="post">
<input type="hidden" name="next" value="{{ next }}">
<label>User name <input name="username"></label>
<label>Password <input name="password" type="password"></label>
<button type="submit">Sign in</button></form></body></html>"""

HOME = """<!doctype html><html><head><title>Home</title></head><body>
<p>Hello {{ user }}, here is your private page.</p>
<a href="{{ url_for('logout') }}">Log out</a></body></html>"""


@app.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "POST":
        name = request.form.get("username", "")
        if USERS.get(name) == request.form.get("password"):
            session["user"] = name
            return redirect(request.form.get("next") or url_for("home"))
    return render_template_string(LOGIN, next=request.args.get("next", ""))


@app.get("/logout")
def logout():
    session.pop("user", None)
    return redirect(url_for("login"))


@app.get("/")
def home():
    if "user" not in session:
        return redirect(url_for("login", next=request.path))
    return render_template_string(HOME, user=session["user"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--no-store", action="store_true")
    args = parser.parse_args()
    if args.no_store:

        @app.after_request
        def no_store(resp):
            resp.headers["Cache-Control"] = "no-store"
            return resp

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", args.port, app, threaded=True)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
