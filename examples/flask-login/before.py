"""A Flask-Login app as many are written: the starting point of
docs/migrate-from-flask-login.md.

    python3 before.py --db users.db adduser alice [--admin] [--inactive]  # password on stdin
    python3 before.py --db users.db serve [--port 5000]

It keeps users in SQLite with Werkzeug password hashes, signs them in with
Flask-Login (with "remember me"), asks for a fresh login before the
settings page, and signs out with a GET link. Everything the guide says
goes wrong after logout goes wrong here: that is the point.
"""

import argparse
import os
import sqlite3
import sys

from flask import Flask, g, redirect, render_template_string, request, url_for
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    fresh_login_required,
    login_required,
    login_user,
    logout_user,
)
from werkzeug.security import check_password_hash, generate_password_hash

app = Flask(__name__)
app.secret_key = os.environ.get("SECRET_KEY", "change-me")
login_manager = LoginManager(app)
login_manager.login_view = "login"
login_manager.refresh_view = "login"

SCHEMA = """CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    password_hash TEXT NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0,
    active INTEGER NOT NULL DEFAULT 1
)"""


def db():
    if "db" not in g:
        g.db = sqlite3.connect(app.config["DATABASE"])
        g.db.row_factory = sqlite3.Row
    return g.db


class User(UserMixin):
    def __init__(self, row):
        self.id = str(row["id"])
        self.name = row["name"]
        self.is_admin = bool(row["is_admin"])
        self._active = bool(row["active"])

    @property
    def is_active(self):
        return self._active


@login_manager.user_loader
def load_user(user_id):
    row = db().execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
    return User(row) if row else None


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{{ title }}</title></head><body>
<nav><a href="{{ url_for('home') }}">Home</a> · <a href="{{ url_for('settings') }}">Settings</a>
{% if current_user.is_authenticated %} · <a id="logout" href="{{ url_for('logout') }}">Sign out</a>{% endif %}</nav>
<h1>{{ title }}</h1>{{ body|safe }}</body></html>"""

LOGIN = """<form method="post">
<input type="hidden" name="next" value="{{ next }}">
<label>User name <input name="username" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<label><input type="checkbox" name="remember" value="1"> Remember me</label>
<button type="submit">Sign in</button>{% if error %}<p>{{ error }}</p>{% endif %}</form>"""


def page(title, body):
    return render_template_string(PAGE, title=title, body=body)


@app.route("/login", methods=["GET", "POST"])
def login():
    error = None
    if request.method == "POST":
        row = db().execute(
            "SELECT * FROM users WHERE name = ?", (request.form.get("username", ""),)
        ).fetchone()
        if row and check_password_hash(row["password_hash"], request.form.get("password", "")):
            login_user(User(row), remember=request.form.get("remember") == "1")
            return redirect(request.form.get("next") or url_for("home"))
        error = "Wrong user name or password."
    form = render_template_string(LOGIN, next=request.args.get("next", ""), error=error)
    return page("Sign in", form)


@app.get("/logout")
def logout():
    logout_user()
    return redirect(url_for("login"))


@app.get("/")
@login_required
def home():
    return page("Home", render_template_string(
        '<p>Signed in as <b id="user">{{ name }}</b>.</p>', name=current_user.name))


@app.get("/settings")
@fresh_login_required
def settings():
    return page("Settings", render_template_string(
        '<p id="settings">Settings of {{ name }}.</p>', name=current_user.name))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="users.db")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("adduser")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true")
    add.add_argument("--inactive", action="store_true", help="cannot sign in")
    serve = sub.add_parser("serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    app.config["DATABASE"] = args.db
    with sqlite3.connect(args.db) as conn:
        conn.execute(SCHEMA)
        if args.command == "adduser":
            password = sys.stdin.readline().rstrip("\n")
            conn.execute(
                "INSERT INTO users (name, password_hash, is_admin, active) VALUES (?, ?, ?, ?)",
                (args.name, generate_password_hash(password), int(args.admin), int(not args.inactive)),
            )
            return
    from werkzeug.serving import make_server

    server = make_server(args.host, args.port, app, threaded=True)
    print(f"listening on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
