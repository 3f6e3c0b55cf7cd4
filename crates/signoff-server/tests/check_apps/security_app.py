"""Flask-Security-Too with its defaults, for tests/check.rs and
docs/check.md: a user in SQLite (in memory), the login and logout views
Flask-Security gives, and one page behind @auth_required(). Nothing is
changed from the defaults but what it needs to start (a secret key, a
salt) and email addresses at example.com being accepted.

    python3 security_app.py [--port 0]

Needs Flask-Security-Too with its `fsqla` and `common` extras (.ci/run
installs them into a virtualenv of their own). Prints "listening on URL",
then serves. The user is alice@example.com, password alice-password-1.
"""

import argparse

from flask import Flask, render_template_string
from flask_security import Security, SQLAlchemyUserDatastore, auth_required, hash_password
from flask_security.models import fsqla_v3 as fsqla
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import generate_csrf

app = Flask(__name__)
app.config["SECRET_KEY"] = "flask-security-check-secret"
app.config["SECURITY_PASSWORD_SALT"] = "flask-security-check-salt"
app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
app.config["SECURITY_EMAIL_VALIDATOR_ARGS"] = {"check_deliverability": False}

db = SQLAlchemy(app)
fsqla.FsModels.set_db_info(db)


class Role(db.Model, fsqla.FsRoleMixin):
    pass


class User(db.Model, fsqla.FsUserMixin):
    pass


users = SQLAlchemyUserDatastore(db, User, Role)
app.security = Security(app, users)

# Flask-Security 5 signs out with a POST only (SECURITY_LOGOUT_METHODS),
# carrying Flask-WTF's CSRF token, as its own templates do.
HOME = """<!doctype html><html><head><title>Home</title></head><body>
<p>Hello {{ current_user.email }}, this is your private page.</p>
<form action="{{ url_for_security('logout') }}" method="post">
<input type="hidden" name="csrf_token" value="{{ csrf }}">
<button type="submit">Log out</button></form></body></html>"""


@app.get("/")
@auth_required()
def home():
    return render_template_string(HOME, csrf=generate_csrf())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    with app.app_context():
        db.create_all()
        users.create_user(email="alice@example.com", password=hash_password("alice-password-1"))
        db.session.commit()
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", args.port, app, threaded=True)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
